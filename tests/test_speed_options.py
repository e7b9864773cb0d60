"""Speed without changing results (issue #18): masks only for the detections a caller keeps, per-size constants
cached, and a clear warning where reduced precision would be emulated.

`keep_score_threshold` is checked against the golden fixtures themselves: with it, the kept detections (resized-frame
boxes, scores, labels, 28x28 mask probabilities, final boxes and every mask pixel) must equal bit for bit
MMDetection's full computation restricted to `score >= threshold` (`parity.run_kept_case`). Every golden case is
run at the threshold that keeps its 10 best detections; the main variant also at the pipelines' 0.5, and one image
per variant at a threshold above every score (nothing kept: no RoIAlign, no mask head). The whole grid (every case
at all three thresholds) is `python tools/parity.py --keep-thresholds` (docs/speed.md).
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import pytest
import torch

from golden import golden_cases, load_golden
from parity import build_model, build_processor, keep_threshold_value, run_kept_case

IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"
CASES = golden_cases()
MAIN_VARIANT = "mask-rcnn_r50_fpn_1x_coco"
_MODELS = {}


def _model_and_processor(variant: str, numerics: str = "exact", fuse_batch_norms: bool = False):
    key = (variant, numerics, fuse_batch_norms)
    if key not in _MODELS:
        _MODELS.clear()  # one model in memory at a time (X101 is large)
        model = build_model(variant, numerics, fuse_batch_norms=fuse_batch_norms)
        _MODELS[key] = (model, build_processor(model))
    return _MODELS[key]


def _one_case_per_variant():
    first = {}
    for variant, stem in CASES:
        first.setdefault(variant, stem)
    return sorted(first.items())


KEPT_CASES = ([(variant, stem, "ten") for variant, stem in CASES]
              + [(variant, stem, "half") for variant, stem in CASES if variant == MAIN_VARIANT]
              + [(variant, stem, "nothing") for variant, stem in _one_case_per_variant()])


# ------------------------------------------------------------------------------------------- keep_score_threshold
@pytest.mark.parametrize("variant, image_stem, kind", KEPT_CASES)
def test_kept_detections_are_bit_identical_to_mmdetections_full_computation(variant, image_stem, kind):
    model, processor = _model_and_processor(variant)
    golden = load_golden(variant, image_stem)
    threshold = keep_threshold_value(golden, kind)
    row = run_kept_case(model, processor, variant, image_stem, threshold)
    # equal to the kept part of a recording: the same number of detections too (a recording made on other
    # kernels may order one pair of near-equal scores differently, so "ten" can keep 9 there)
    assert row["recording"] is not None, f"kept detections differ from MMDetection's full run: {row}"
    if kind == "ten":
        assert 0 < row["kept"] < row["full"] or row["full"] <= 10, row
    if kind == "nothing":
        assert row["kept"] == 0 < row["full"], row


@pytest.mark.parametrize("numerics, fuse", [("fast", False), ("fast", True)], ids=["default", "fused"])
def test_kept_detections_equal_the_full_run_of_the_same_model(numerics, fuse):
    """The default (fast) path, and the fused path, against their own full run: a prefix, bit for bit."""
    model, processor = _model_and_processor(MAIN_VARIANT, numerics, fuse)
    stem = "photo_640x480"
    inputs = processor(images=str(IMAGES / f"{stem}.png"), return_tensors="pt")
    with torch.inference_mode():
        full = model(**inputs)
        threshold = float(full.scores[0][9])
        kept = model(**inputs, keep_score_threshold=threshold)
    count = int((full.scores[0] >= threshold).sum())
    assert 10 <= count < full.scores[0].numel()
    for name in ("pred_boxes", "scores", "labels", "mask_probs"):
        assert torch.equal(getattr(kept, name)[0], getattr(full, name)[0][:count]), name
    for name in ("proposal_boxes", "proposal_scores"):
        assert torch.equal(getattr(kept, name)[0], getattr(full, name)[0]), name
    assert kept.keep_score_threshold == threshold and full.keep_score_threshold is None


def test_post_processing_below_the_models_keep_threshold_is_an_error():
    model, processor = _model_and_processor(MAIN_VARIANT, "fast")
    inputs = processor(images=str(IMAGES / "tiny_97x61.png"), return_tensors="pt", keep_score_threshold=0.3)
    assert inputs["keep_score_threshold"].dtype == torch.float64
    with torch.inference_mode():
        outputs = model(**inputs)
    assert outputs.keep_score_threshold == 0.3
    with pytest.raises(ValueError, match="keep_score_threshold=0.3"):
        processor.post_process_instance_segmentation(outputs, threshold=0.2)
    with pytest.raises(ValueError, match="keep_score_threshold=0.3"):
        processor.post_process_object_detection(outputs, threshold=0.0)
    # the same threshold, given as float32 by someone else, selects the same detections and is accepted
    processor.post_process_instance_segmentation(outputs, threshold=float(torch.tensor(0.3, dtype=torch.float32)))
    processor.post_process_object_detection(outputs, threshold=0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.5", True, torch.tensor([0.1, 0.2])])
def test_keep_score_threshold_must_be_one_finite_number(bad):
    model, processor = _model_and_processor(MAIN_VARIANT, "fast")
    with pytest.raises(ValueError, match="keep_score_threshold"):
        model(torch.zeros(1, 3, 64, 64), keep_score_threshold=bad)
    if not isinstance(bad, torch.Tensor):
        with pytest.raises(ValueError, match="keep_score_threshold"):
            processor(images=str(IMAGES / "tiny_97x61.png"), keep_score_threshold=bad)


# ------------------------------------------------------------------------------------------- per-size constants
def test_anchors_are_cached_per_input_size_bounded_and_shared_across_threads():
    from modeling_mask_rcnn import ANCHOR_CACHE_SIZE, cached_level_anchors, make_cell_anchors, make_grid_anchors

    model, _ = _model_and_processor(MAIN_VARIANT, "fast")
    cached_level_anchors.cache_clear()
    assert cached_level_anchors.cache_info().maxsize == ANCHOR_CACHE_SIZE
    pyramid = [torch.zeros(1, 1, 200 // stride, 304 // stride) for stride in (4, 8, 16, 32, 64)]
    results, errors = [], []

    def compute():
        try:
            results.append(model.compute_anchors(pyramid))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=compute) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    config = model.config
    for level, (feature, stride) in enumerate(zip(pyramid, config.anchor_strides)):
        expected = make_grid_anchors(make_cell_anchors(stride, config.anchor_scales, config.anchor_ratios),
                                     tuple(feature.shape[-2:]), stride)
        assert all(torch.equal(result[level], expected) for result in results)
    again = model.compute_anchors(pyramid)
    assert all(again_level is first_level for again_level, first_level in zip(again, results[0]))  # no rebuild
    assert not again[0].is_inference()  # usable outside inference mode too
    for index in range(ANCHOR_CACHE_SIZE + 3):  # more sizes than the cache holds: it stays bounded
        model.compute_anchors([torch.zeros(1, 1, 8 + index, 8) for _ in range(5)])
    assert cached_level_anchors.cache_info().currsize == ANCHOR_CACHE_SIZE


# ------------------------------------------------------------------------------------------- reduced precision
@pytest.fixture
def fresh_warning_state(monkeypatch):
    import inference_mask_rcnn  # the precision rule's home

    monkeypatch.setattr(inference_mask_rcnn, "_REDUCED_PRECISION_WARNED", set())
    return inference_mask_rcnn


AVX2_ONLY_FLAGS = frozenset("fpu sse sse2 ssse3 sse4_1 sse4_2 avx fma avx2 f16c".split())


@pytest.mark.parametrize("dtype, feature", [(torch.bfloat16, "avx512_bf16"), (torch.float16, "avx512_fp16")])
def test_reduced_precision_on_an_avx2_only_cpu_warns_once_naming_the_missing_feature(fresh_warning_state, monkeypatch,
                                                                                    dtype, feature):
    monkeypatch.setattr(fresh_warning_state, "cpu_feature_flags", lambda: AVX2_ONLY_FLAGS)
    model = build_model(MAIN_VARIANT, "fast", dtype)
    pixel_values = torch.zeros(1, 3, 64, 64)
    with pytest.warns(UserWarning, match=rf"without native .*{feature}.*several times SLOWER than float32"):
        with torch.inference_mode():
            model(pixel_values)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")
        model(pixel_values)  # once per process and dtype


def test_reduced_precision_with_native_support_or_float32_does_not_warn(fresh_warning_state, monkeypatch):
    monkeypatch.setattr(fresh_warning_state, "cpu_feature_flags", lambda: AVX2_ONLY_FLAGS | {"avx512_bf16"})
    assert fresh_warning_state.missing_native_cpu_support(torch.bfloat16) is None
    assert fresh_warning_state.missing_native_cpu_support(torch.float16) == ("avx512_fp16", "amx_fp16")
    monkeypatch.setattr(fresh_warning_state, "cpu_feature_flags", lambda: AVX2_ONLY_FLAGS | {"amx_bf16"})
    assert fresh_warning_state.missing_native_cpu_support(torch.bfloat16) is None
    monkeypatch.setattr(fresh_warning_state, "cpu_feature_flags", lambda: AVX2_ONLY_FLAGS)
    assert fresh_warning_state.missing_native_cpu_support(torch.float32) is None
    monkeypatch.setattr(fresh_warning_state, "cpu_feature_flags", lambda: None)  # flags unknown: no guess
    assert fresh_warning_state.missing_native_cpu_support(torch.bfloat16) is None
    model, _ = _model_and_processor(MAIN_VARIANT, "fast")
    monkeypatch.setattr(fresh_warning_state, "cpu_feature_flags", lambda: AVX2_ONLY_FLAGS)
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("error")
        model(torch.zeros(1, 3, 64, 64))  # float32 never warns



def test_reduced_precision_under_autocast_warns_too(fresh_warning_state, monkeypatch):
    """segment.py runs bf16/fp16 as torch.autocast over a float32 model: the same warning applies."""
    monkeypatch.setattr(fresh_warning_state, "cpu_feature_flags", lambda: AVX2_ONLY_FLAGS)
    model, _ = _model_and_processor(MAIN_VARIANT, "fast")
    with pytest.warns(UserWarning, match="runs in bfloat16 on a CPU without native bfloat16 support"):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.zeros(1, 3, 64, 64))


def test_the_batch_clis_threshold_reaches_the_model():
    """segment.py / the Ray workers: `--threshold` is the model's keep_score_threshold (mask head on kept only)."""
    from mask_rcnn_batch.model import predict_images

    model, processor = _model_and_processor(MAIN_VARIANT, "fast")
    threshold = 0.9
    expected = int((load_golden(MAIN_VARIANT, "tiny_97x61")["scores"] >= threshold).sum())
    mask_head_rois = []
    hook = model.mask_head.register_forward_hook(lambda module, args, output: mask_head_rois.append(args[0].shape[0]))
    try:
        results = list(predict_images(model, processor, [str(IMAGES / "tiny_97x61.png")], threshold=threshold))
    finally:
        hook.remove()
    assert 0 < expected < 100
    assert mask_head_rois == [expected] and results[0]["scores"].numel() == expected
    assert bool((results[0]["scores"] >= threshold).all())
