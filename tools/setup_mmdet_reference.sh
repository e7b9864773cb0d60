#!/usr/bin/env bash
# Builds the MMDetection 3.3.0 + mmcv 2.1.0 reference environment (CPU) used ONLY to
# regenerate golden fixtures (tools/make_golden.py). Never needed by the model or CI.
#
#   bash tools/setup_mmdet_reference.sh [VENV_DIR]      (default: .venv-mmdet, ~15-20 min on 2 cores)
#
# The venv is created with --system-site-packages and installs NO torch/numpy/opencv of its own:
# the goldens must be produced by the very same torch (sort tie order, conv kernels), numpy
# (synthetic weights are drawn with numpy's PCG64) and OpenCV (decode, resize) builds that the
# parity tests run with. Set MMDET_OWN_TORCH=1 to get an isolated venv with its own torch instead
# (goldens from such a venv may differ from the test env in float ulps and tie order).
#
# mmcv 2.1.0 ships no wheel for recent torch, so it is built from the sdist with C++20
# (newer torch headers need it) and only the CPU ops. CFLAGS "-g0 -O1" (override: MMCV_CFLAGS) roughly
# halves the ~75-file compile on 2 cores; results do not depend on it: without -ffast-math GCC never
# reassociates float math at any -O level, and the baseline x86-64 target has no FMA to contract into. mmengine/mmcv/mmdet are installed with
# --no-deps so that pip does not pull a second OpenCV (opencv-python) over the system one.
set -euo pipefail
VENV=${1:-.venv-mmdet}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  if [ "${MMDET_OWN_TORCH:-0}" = "1" ]; then
    "$PY" -m venv "$VENV"
  else
    "$PY" -m venv --system-site-packages "$VENV"
  fi
fi
if [ "${MMDET_OWN_TORCH:-0}" = "1" ]; then
  "$VENV/bin/pip" install -q "torch>=2.4" "torchvision>=0.19" numpy opencv-python-headless pillow
fi
"$VENV/bin/python" -c "import torch, numpy, cv2, PIL" || {
  echo "the base python needs torch, numpy, opencv (cv2) and pillow installed" >&2; exit 1; }
"$VENV/bin/pip" install -q "setuptools<70" wheel
# runtime deps of mmengine 0.10.7 / mmcv 2.1.0 / mmdet 3.3.0, minus torch/numpy/opencv
"$VENV/bin/pip" install -q addict pyyaml rich termcolor yapf packaging matplotlib \
  six tqdm pycocotools scipy shapely terminaltables
"$VENV/bin/pip" install -q --no-deps "mmengine==0.10.7"
if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
  BUILD=$(mktemp -d)
  (cd "$BUILD" && "$VENV/bin/pip" download -q --no-deps --no-build-isolation --no-binary :all: mmcv==2.1.0)
  tar -xzf "$BUILD"/mmcv-2.1.0.tar.gz -C "$BUILD"
  sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$BUILD/mmcv-2.1.0/setup.py"
  (cd "$BUILD/mmcv-2.1.0" && MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
    CFLAGS="${MMCV_CFLAGS:--g0 -O1}" \
    "$VENV/bin/pip" install --no-deps --no-build-isolation .)
  rm -rf "$BUILD"
fi
"$VENV/bin/pip" install -q --no-deps mmdet==3.3.0
"$VENV/bin/python" - <<'PY'
import cv2, mmcv, mmdet, mmengine, numpy, torch
from mmcv.ops import nms, RoIAlign  # noqa: F401  (fails if the ops were not built)
print("reference env ready: mmdet", mmdet.__version__, "mmcv", mmcv.__version__, "mmengine", mmengine.__version__,
      "torch", torch.__version__, "numpy", numpy.__version__, "cv2", cv2.__version__)
PY
