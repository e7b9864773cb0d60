"""The public entry points answer what they answered before the code was consolidated (issue 15).

tests/fixtures/public_outputs/public_outputs.json was recorded by tools/record_public_outputs_golden.py from commit
373a37b (before the consolidation): the `image-segmentation` and `object-detection` pipelines loaded with
`trust_remote_code=True` from a neutral folder, and handler.py's `EndpointHandler` (png and rle masks, detection),
on the lean synthetic folder built by that checkout's own tools, float32, 1 torch thread, AVX2 kernels. Here the
same recorder runs, as a subprocess, against this tree and must reproduce every answer exactly: labels, boxes,
scores (same float32 path) and the digests of every mask.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from record_public_outputs_golden import GOLDEN_PATH, HANDLER_REQUESTS, IMAGES, REPO_ROOT

pytest.importorskip("pycocotools")


@pytest.fixture(scope="module")
def golden():
    return json.loads(GOLDEN_PATH.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    output = tmp_path_factory.mktemp("public-outputs") / "now.json"
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "record_public_outputs_golden.py"), str(REPO_ROOT), "--output",
         str(output)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    return json.loads(output.read_text(encoding="utf-8"))


def test_golden_holds_instances_with_masks(golden):
    """An empty golden would let any later version pass."""
    assert golden["images"] == list(IMAGES)
    assert golden["pipelines"]["torch_threads"] == 1
    for name in IMAGES:
        assert golden["pipelines"]["segmentation"][name], name
        assert any(item["mask"]["pixels"] > 0 for item in golden["pipelines"]["segmentation"][name]), name
    assert set(golden["handler"]) == set(HANDLER_REQUESTS)


@pytest.mark.parametrize("task", ["segmentation", "detection"])
def test_pipeline_answers_equal_the_golden(task, golden, recorded):
    for name in IMAGES:
        assert recorded["pipelines"][task][name] == golden["pipelines"][task][name], (task, name)


def test_batched_segmentation_pipeline_equals_the_golden(golden, recorded):
    assert recorded["pipelines"]["segmentation_batch2"] == golden["pipelines"]["segmentation_batch2"]


@pytest.mark.parametrize("request_name", sorted(HANDLER_REQUESTS))
def test_handler_answers_equal_the_golden(request_name, golden, recorded):
    for name in IMAGES:
        assert recorded["handler"][request_name][name] == golden["handler"][request_name][name], (request_name, name)


def test_recordings_are_otherwise_identical(golden, recorded):
    assert recorded == golden
