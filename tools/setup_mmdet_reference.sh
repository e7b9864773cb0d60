#!/usr/bin/env bash
# Builds the MMDetection 3.3.0 + mmcv 2.1.0 reference environment (CPU) used ONLY to
# regenerate golden fixtures (tools/make_golden.py). Never needed by the model or CI.
#
#   bash tools/setup_mmdet_reference.sh [VENV_DIR]      (default: .venv-mmdet, ~15 min on 2 cores)
#
# mmcv 2.1.0 ships no wheel for recent torch, so it is built from the sdist with C++20
# (newer torch headers need it) and only the CPU ops.
set -euo pipefail
VENV=${1:-.venv-mmdet}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "torch>=2.4" "torchvision>=0.19" "setuptools<70" wheel numpy opencv-python-headless \
  "mmengine==0.10.7" six tqdm pycocotools scipy shapely terminaltables pillow safetensors
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  BUILD=$(mktemp -d)
  (cd "$BUILD" && "$VENV/bin/pip" download -q --no-deps --no-build-isolation --no-binary :all: mmcv==2.1.0)
  tar -xzf "$BUILD"/mmcv-2.1.0.tar.gz -C "$BUILD"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-2.1.0/setup.py"
  (cd "$BUILD/mmcv-2.1.0" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=2 "$VENV/bin/pip" install --no-build-isolation .)
  rm -rf "$BUILD"
fi
"$VENV/bin/pip" install -q --no-deps mmdet==3.3.0
"$VENV/bin/python" - <<'PY'
import mmcv, mmdet, torch
from mmcv.ops import nms, RoIAlign  # noqa: F401  (fails if the ops were not built)
print("reference env ready: mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "torch", torch.__version__)
PY
