# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Records what `python segment.py` writes for a few fixture images, as the golden that tests/test_segment_golden.py
holds every later version of the batch CLI to (same records, same image index, same failures, bit for bit).

The CLI runs in a subprocess exactly as a user starts it, on the lean synthetic model folder
(`synthetic_model_folder.lean_synthetic_folder`), float32 (the default), 1 torch thread and PyTorch's AVX2 kernels
(`reference_kernels`), so that the floats do not depend on the core count or the CPU's widest instruction set.
Two runs: `--batch-size 1` (the defaults) and `--batch-size 2` (padded batches). The folder-dependent `info.model`
is replaced by `MODEL_PLACEHOLDER` before saving. The synthetic weights are untrained: the records show formats and
numerics, never what the COCO model detects.

    python tools/record_segment_golden.py            # rewrites tests/fixtures/segment_cli/*.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from reference_kernels import REFERENCE_KERNELS  # noqa: E402

GOLDEN_DIR = REPO_ROOT / "tests" / "fixtures" / "segment_cli"
FIXTURE_IMAGES = REPO_ROOT / "tests" / "fixtures" / "images"
# Different shapes, modes and an EXIF rotation; all small enough for the lean folder's 300x200 resize to be cheap.
IMAGES = ("photo_640x480.png", "exif_rot6_480x320.jpg", "palette_400x300.png",
          "tiny_97x61.png")
THRESHOLD = "0.05"  # the untrained weights' scores are low; keep what the model returns above its own 0.05 floor
RUNS: Dict[str, List[str]] = {"bs1": [], "bs2": ["--batch-size", "2"]}
OUTPUT_FILES = ("predictions.json", "images.json", "failures.json")
MODEL_PLACEHOLDER = "<synthetic-r50-hub-folder>"


def cli_environment() -> Dict[str, str]:
    """The subprocess environment: 1 thread, the reference kernels (unless the caller set others), offline."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    for name, value in REFERENCE_KERNELS.items():
        environment.setdefault(name, value)
    return environment


def run_cli(model_dir: Path, output_dir: Path, extra: Sequence[str]) -> Dict[str, Any]:
    """`python segment.py` on the fixture images -> {"exit_code", file name: parsed JSON} (info.model replaced)."""
    inputs = [str(FIXTURE_IMAGES / name) for name in IMAGES]
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "segment.py"), "--model", str(model_dir), *inputs, "--output-dir",
         str(output_dir), "--threshold", THRESHOLD, "--no-overlays", *extra],
        capture_output=True, text=True, env=cli_environment(), cwd=output_dir.parent, timeout=600)
    if completed.returncode not in (0, 1):
        raise RuntimeError(f"segment.py exited with {completed.returncode}:\n{completed.stderr}")
    written: Dict[str, Any] = {"exit_code": completed.returncode}
    for name in OUTPUT_FILES:
        written[name] = json.loads((output_dir / name).read_text(encoding="utf-8"))
    written["images.json"]["info"]["model"] = MODEL_PLACEHOLDER
    return written


def main() -> None:
    from synthetic_model_folder import lean_synthetic_folder

    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segment-golden-") as scratch:
        model_dir = lean_synthetic_folder(Path(scratch))
        for name, extra in RUNS.items():
            written = run_cli(model_dir, Path(scratch) / name, extra)
            path = GOLDEN_DIR / f"{name}.json"
            path.write_text(json.dumps(written, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
            print(f"{path}: {sum(1 for _ in written['predictions.json'])} records, exit {written['exit_code']}")


if __name__ == "__main__":
    main()
