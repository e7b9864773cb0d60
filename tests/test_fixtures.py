"""The parity fixtures are intact: synthetic weights regenerate bit-identically, goldens are well-formed.

Fixture format: tests/fixtures/README.md. Regenerate with tools/make_golden.py (needs the MMDetection venv).
"""

import hashlib
import json
import os

import numpy as np
import pytest
import torch

from convert_mmdet_checkpoint import mmdet_state_dict_shapes, zoo_config
from tools import golden as G
from tools import synthetic_weights as sw

MANIFEST = G.load_manifest() if os.path.exists(G.MANIFEST_PATH) else None
needs_manifest = pytest.mark.skipif(MANIFEST is None, reason="no golden manifest yet")
VARIANTS = sorted(MANIFEST["variants"]) if MANIFEST else []
IMAGE_STEMS = sorted(MANIFEST["images"]) if MANIFEST else []
CASES = G.golden_cases()


def _sha256_file(path):
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


@pytest.mark.parametrize("variant", sorted(sw.VARIANTS))
def test_synthetic_state_dict_layout_is_mmdetection(variant):
    state_dict = sw.make_synthetic_state_dict(variant)
    expected = mmdet_state_dict_shapes(zoo_config(sw.config_name_of(variant)))
    assert list(state_dict) == list(expected)
    for key, shape in expected.items():
        assert tuple(state_dict[key].shape) == tuple(shape), key
        if key.endswith("num_batches_tracked"):
            assert state_dict[key].dtype == torch.int64
        else:
            assert state_dict[key].dtype == torch.float32, key
            assert torch.isfinite(state_dict[key]).all(), key


def test_key_draws_are_deterministic_and_key_specific():
    a = sw.standard_normal(0, "backbone.conv1.weight", (4,))
    assert np.array_equal(a, sw.standard_normal(0, "backbone.conv1.weight", (4,)))
    assert not np.array_equal(a, sw.standard_normal(1, "backbone.conv1.weight", (4,)))
    assert not np.array_equal(a, sw.standard_normal(0, "backbone.bn1.weight", (4,)))


@needs_manifest
@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_regenerates_bit_identically(variant):
    entry = MANIFEST["variants"][variant]
    assert _sha256_file(os.path.join(G.REPO_ROOT, entry["calibration_file"])) == entry["calibration_sha256"]
    state_dict = sw.make_synthetic_state_dict(variant, seed=entry["seed"])
    assert sw.state_dict_sha256(state_dict) == entry["state_dict_sha256"], (
        "synthetic weights differ from the ones the goldens were made with (numpy/torch change?)")


def test_ties_variant_duplicates_class_rows():
    state_dict = sw.make_synthetic_state_dict("mask-rcnn_r50_fpn_1x_coco-ties")
    weight = state_dict["roi_head.bbox_head.fc_cls.weight"]
    for a, b in sw.TIED_CLASS_PAIRS:
        assert torch.equal(weight[a], weight[b])


@needs_manifest
def test_manifest_records_versions():
    for name in ("mmdet", "mmcv", "mmengine", "torch", "numpy", "cv2"):
        assert MANIFEST["versions"].get(name), name
    assert MANIFEST["versions"]["mmdet"] == "3.3.0"


@needs_manifest
@pytest.mark.parametrize("stem", IMAGE_STEMS)
def test_images_and_preprocessed_inputs(stem):
    entry = MANIFEST["images"][stem]
    assert _sha256_file(os.path.join(G.IMAGES_DIR, entry["file"])) == entry["sha256"]
    for normalization in G.NORMALIZATIONS:
        image, meta = G.load_preprocessed_input(stem, normalization)  # checks the PNG against its sha256
        assert image.dtype == np.uint8 and image.shape == (*meta["img_shape"], 3)
        h, w = meta["ori_shape"]
        new_h, new_w = meta["img_shape"]
        assert meta["scale_factor"] == [new_w / w, new_h / h]
        pixel_values, meta = G.pixel_values_from_preprocessed(stem, normalization)
        assert list(pixel_values.shape) == meta["inputs_shape"]
        assert list(pixel_values.shape[-2:]) == meta["batch_input_shape"]
        assert G.inputs_sha256(pixel_values) == meta["sha256"], (
            f"rebuilt {normalization} pixel values are not MMDetection's inputs tensor")


@pytest.mark.skipif(not CASES, reason="no golden files yet")
@pytest.mark.parametrize("variant,stem", CASES)
def test_golden_case_is_well_formed(variant, stem):
    golden = G.load_golden(variant, stem)
    n = len(golden["scores"])
    assert 0 < n <= 100
    assert golden["boxes"].shape == (n, 4) and golden["boxes"].dtype == np.float32
    assert golden["scores"].dtype == np.float32 and golden["labels"].dtype == np.int64
    assert np.all(np.diff(golden["scores"]) <= 0), "scores must come in descending order"
    assert np.all((golden["scores"] > 0.05) & (golden["scores"] <= 1))
    assert np.all((golden["labels"] >= 0) & (golden["labels"] < 80))
    h, w = (int(v) for v in golden["ori_shape"])
    assert golden["masks"].shape == (n, h, w) and golden["masks"].dtype == bool
    assert golden["mask_probs"].shape == (n, 28, 28)
    assert np.array_equal(golden["det_scores_resized"], golden["scores"])
    assert np.array_equal(golden["det_labels_resized"], golden["labels"])
    scale = golden["scale_factor"].astype(np.float32)
    rescaled = golden["det_boxes_resized"] / np.array([scale[0], scale[1], scale[0], scale[1]], np.float32)
    assert np.array_equal(rescaled, golden["boxes"]), "boxes = resized-frame boxes / float32 scale_factor"
    p = len(golden["rpn_scores"])
    assert 0 < p <= 1000 and golden["rpn_boxes"].shape == (p, 4)
    assert np.all(np.diff(golden["rpn_scores"]) <= 0)
    stats = MANIFEST["variants"][variant]["cases"][stem]
    assert stats["num_detections"] == n
    meta = json.load(open(os.path.join(G.PREPROCESSED_DIR, stem + ".json")))
    assert list(golden["img_shape"]) == meta["img_shape"] and list(golden["ori_shape"]) == meta["ori_shape"]


ALTERNATE_CASES = [(variant, stem, recording) for variant, stem in CASES
                   for recording in G.golden_recordings(variant, stem)[1:]]


def test_recordings_list_the_primary_first_and_only_alternates_that_exist():
    for variant, stem in CASES:
        recordings = G.golden_recordings(variant, stem)
        assert recordings[0] == "primary" and len(set(recordings)) == len(recordings)
    # at least the X101 wide case was recorded on a second machine whose oneDNN sums its grouped convolutions
    # in another order (tests/fixtures/README.md, "CPU kernels, and recordings from other machines")
    assert ALTERNATE_CASES, "no alternate recording is stored"


@pytest.mark.parametrize("variant, stem, recording", ALTERNATE_CASES)
def test_alternate_recordings_are_complete_other_outputs_of_the_same_case(variant, stem, recording):
    primary = G.load_golden(variant, stem)
    alternate = G.load_golden(variant, stem, recording)
    assert alternate["recording"] == recording
    array_keys = {key for key, value in primary.items() if isinstance(value, np.ndarray)}
    assert array_keys == {key for key, value in alternate.items() if isinstance(value, np.ndarray)}
    for key in ("ori_shape", "img_shape", "batch_input_shape", "scale_factor"):
        assert np.array_equal(primary[key], alternate[key]), key  # same input, only the arithmetic differs
    differing = [key for key in sorted(array_keys) if not np.array_equal(primary[key], alternate[key])]
    assert differing, "an alternate recording must differ from the primary one, else it is not stored"
    machine = MANIFEST["variants"][variant]["cases"][stem]["alternates"][recording]["machine"]
    assert {"cpu", "widest_vector_isa", "torch", "onednn", "kernels"} <= set(machine)
    assert recording.startswith(machine["widest_vector_isa"] + "-")


def test_fixture_tools_import_without_mmdetection_and_keep_the_documented_flags():
    """make_golden.py orchestrates golden_images, mmdet_capture and calibrate_weights; all of them import mmdet only
    inside their functions, and the CLI keeps the flags tests/fixtures/README.md documents."""
    import subprocess
    import sys

    script = ("import sys; sys.path.insert(0, 'tools'); import make_golden, mmdet_capture, calibrate_weights, "
              "golden_images; assert 'mmdet' not in sys.modules; "
              "assert mmdet_capture.NORMALIZATIONS['caffe'] == {'mean': [103.53, 116.28, 123.675], "
              "'std': [1.0, 1.0, 1.0], 'bgr_to_rgb': False}; make_golden.main(['--help'])")
    result = subprocess.run([sys.executable, "-c", script], cwd=G.REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    for flag in ("--images", "--calibrate", "--variants", "--images-only", "--no-golden", "--alternates"):
        assert flag in result.stdout, flag
