#!/usr/bin/env bash
# The Hub-surface tests on every transformers version the requirements allow: the floor, 4.51 (the first whose
# remote-code scanner ignores except-bodies), the newest 4.x and the newest 5.x.
#
# Each version runs in its own venv made from this environment with --system-site-packages (torch, torchvision,
# pytest, ... come from here; nothing large is downloaded) plus the pinned transformers, which pip installs into the
# venv together with the huggingface_hub / tokenizers versions it needs -- the system packages are not touched.
# The venvs are kept between runs in $TRANSFORMERS_MATRIX_DIR (default ~/.cache/mask_rcnn_hub/transformers-venvs).
# A pinned version equal to the one installed here is skipped: the main `pytest tests` run already covered it.
#
# What runs: tests/test_hub_loading.py (without the --push-to-hub CLI and model-card checks, which do not depend on
# transformers):
# a synthetic checkpoint converted with that version, then a fresh process started in another folder loads it with
# both pipelines, AutoModel / AutoImageProcessor, dtype=, and the save_pretrained round trips.
#
#   bash tools/transformers_matrix.sh                      # all versions
#   TRANSFORMERS_VERSIONS="4.46.3" bash tools/transformers_matrix.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VERSIONS=${TRANSFORMERS_VERSIONS:-"4.46.3 4.51.3 4.57.6 5.25.0"}
MATRIX_DIR=${TRANSFORMERS_MATRIX_DIR:-"${XDG_CACHE_HOME:-$HOME/.cache}/mask_rcnn_hub/transformers-venvs"}
installed=$(python3 -c "import transformers; print(transformers.__version__)")

for version in $VERSIONS; do
    if [ "$version" = "$installed" ]; then
        echo "transformers $version: the installed version, tested by the main pytest run"
        continue
    fi
    venv="$MATRIX_DIR/transformers-$version"
    if ! "$venv/bin/python" -c "import sys, transformers; sys.exit(transformers.__version__ != '$version')" \
            >/dev/null 2>&1; then
        echo "transformers $version: creating $venv"
        rm -rf "$venv"
        python3 -m venv --system-site-packages "$venv"
        # pip's resolver warns about system packages that want a newer huggingface_hub (gradio, ...): they are not
        # used by these tests, and the system environment itself keeps its versions.
        "$venv/bin/python" -m pip install -q --disable-pip-version-check "transformers==$version" 2>&1 \
            | grep -v -e "dependency resolver does not currently" -e "which is incompatible" -e "is ignored" || true
        "$venv/bin/python" -c "import sys, transformers; sys.exit(transformers.__version__ != '$version')"
    fi
    echo "transformers $version: tests/test_hub_loading.py"
    "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/test_hub_loading.py -k "not push_to_hub and not model_card"
done
