"""`python segment.py` still writes what it wrote before the batch job became the `mask_rcnn_batch` package.

tests/fixtures/segment_cli/ holds the outputs of the single-file segment.py (recorded by
tools/record_segment_golden.py before the split: float32, 1 torch thread, AVX2 kernels, lean synthetic folder).
The CLI runs here the same way, as a subprocess, and must reproduce them exactly: every record (RLE strings, box and
score floats), the image index, the failures and the exit code.
"""

from __future__ import annotations

import json

import pytest

from record_segment_golden import GOLDEN_DIR, RUNS, run_cli
from test_segment_cli import converted_synthetic_model

pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return converted_synthetic_model(tmp_path_factory)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_cli_outputs_equal_the_recorded_golden(run, model_dir, tmp_path):
    golden = json.loads((GOLDEN_DIR / f"{run}.json").read_text(encoding="utf-8"))
    assert golden["predictions.json"], "the golden must hold records, or it proves nothing"
    written = run_cli(model_dir, tmp_path / "out", RUNS[run])
    assert written["exit_code"] == golden["exit_code"]
    assert written["images.json"] == golden["images.json"]
    assert written["failures.json"] == golden["failures.json"]
    assert written["predictions.json"] == golden["predictions.json"]
