"""The shared homes every way of running the model uses: RLE (image_processing_mask_rcnn), the precision rule, the
per-image batch fallback, the failure text and the label look-up (inference_mask_rcnn), and the processor's `pad`."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import image_processing_mask_rcnn as processing
import inference_mask_rcnn as inference
from configuration_mask_rcnn import MaskRCNNConfig
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation

mask_utils = pytest.importorskip("pycocotools.mask")


# ---------------------------------------------------------------------------------------------------------- RLE
def _random_masks(count=4, height=23, width=31, seed=0):
    return np.random.default_rng(seed).random((count, height, width)) > 0.55


def test_encode_masks_rle_round_trips_and_is_pycocotools_own_encoding():
    masks = _random_masks()
    rles = processing.encode_masks_rle(torch.from_numpy(masks))
    assert len(rles) == 4
    for mask, rle in zip(masks, rles):
        assert rle["size"] == [23, 31] and isinstance(rle["counts"], str)
        assert all(type(value) is int for value in rle["size"])
        np.testing.assert_array_equal(processing.decode_mask_rle(rle), mask)
        expected = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        assert rle["counts"] == expected["counts"].decode("ascii")
    assert processing.encode_mask_rle(masks[2]) == rles[2]
    assert processing.encode_masks_rle(np.zeros((0, 5, 7), dtype=bool)) == []


def test_rle_counts_every_non_zero_value_as_inside_and_accepts_bytes_counts():
    values = np.array([[0, 3, 255], [0, 0, 1]], dtype=np.uint8)
    rle = processing.encode_mask_rle(values)
    np.testing.assert_array_equal(processing.decode_mask_rle(rle), values > 0)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    np.testing.assert_array_equal(processing.decode_mask_rle(as_bytes), values > 0)


def test_rle_shapes_are_checked():
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        processing.encode_masks_rle(np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        processing.encode_mask_rle(np.zeros((1, 4, 4), dtype=bool))


def test_pasted_rle_uses_the_same_encoding_as_encode_masks_rle():
    generator = torch.Generator().manual_seed(3)
    mask_probs = torch.rand((3, 28, 28), generator=generator)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 20.0], [-5.0, 0.0, 12.0, 40.0], [10.0, 10.0, 10.5, 11.0]])
    pasted = processing.paste_masks(mask_probs, boxes, 37, 45)
    assert processing.encode_pasted_masks_rle(mask_probs, boxes, 37, 45) == processing.encode_masks_rle(pasted)


def test_missing_pycocotools_is_an_import_error_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # `import pycocotools` now raises ImportError
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    for call in (lambda: processing.encode_masks_rle(np.ones((1, 2, 2), dtype=bool)),
                 lambda: processing.decode_mask_rle({"size": [1, 1], "counts": "01"}),
                 lambda: processing.encode_pasted_masks_rle(torch.ones((1, 28, 28)), torch.tensor([[0., 0, 4, 4]]),
                                                            8, 8)):
        with pytest.raises(ImportError, match="pip install pycocotools"):
            call()


def test_other_rle_users_are_thin_users_of_the_processor_module():
    import pipeline
    import serving_mask_rcnn
    from mask_rcnn_batch import records as segment

    masks = _random_masks(count=2, seed=5)
    result = {"boxes": torch.zeros((2, 4)), "scores": torch.ones(2), "labels": torch.zeros(2, dtype=torch.long),
              "masks": torch.from_numpy(masks)}
    rles = [record["segmentation"] for record in segment.detections_to_coco_records(result, image_id=1)]
    assert rles == processing.encode_masks_rle(masks)
    assert serving_mask_rcnn.encode_mask_rle(torch.from_numpy(masks[1])) == processing.encode_mask_rle(masks[1])
    for module in (segment, pipeline, serving_mask_rcnn):
        assert "mask_utils" not in vars(module) and "coco_mask" not in vars(module)


# ---------------------------------------------------------------------------------------------------- padding
def test_pad_pads_right_and_bottom_to_the_divisor_with_the_pad_value():
    processor = processing.MaskRCNNImageProcessor(size_divisor=8, pad_value=-1.5)
    first, second = torch.ones((3, 5, 9)), torch.full((1, 3, 10, 4), 2.0)
    batch = processor.pad([first, second])
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == torch.float32
    assert torch.equal(batch[0, :, :5, :9], first) and torch.equal(batch[1, :, :10, :4], second[0])
    assert (batch[0, :, 5:] == -1.5).all() and (batch[0, :, :, 9:] == -1.5).all()
    assert (batch[1, :, 10:] == -1.5).all() and (batch[1, :, :, 4:] == -1.5).all()
    assert processor.pad([first], size_divisor=1, pad_value=0.0).shape == (1, 3, 5, 9)
    with pytest.raises(ValueError, match="entry 1"):
        processor.pad([first, torch.ones((2, 3, 5, 5))])
    with pytest.raises(ValueError, match="no images"):
        processor.pad([])


def test_preprocess_pads_with_pad():
    processor = processing.MaskRCNNImageProcessor(size_divisor=32)
    images = [np.zeros((50, 70, 3), dtype=np.uint8), np.full((90, 40, 3), 200, dtype=np.uint8)]
    together = processor(images, do_resize=False)["pixel_values"]
    singles = [processor(image, do_resize=False)["pixel_values"] for image in images]
    assert torch.equal(processor.pad(singles), together)


# -------------------------------------------------------------------------------------------------- precision
@pytest.mark.parametrize("value, expected", [
    ("float32", torch.float32), ("bfloat16", torch.bfloat16), ("FP16", torch.float16), ("torch.bfloat16",
                                                                                      torch.bfloat16),
    (torch.float16, torch.float16), (torch.float32, torch.float32), ("", torch.float32)])
def test_resolve_compute_dtype_names(value, expected):
    assert inference.resolve_compute_dtype(value) is expected


def test_resolve_compute_dtype_reads_the_environment_only_when_no_dtype_is_given(monkeypatch):
    monkeypatch.delenv(inference.DTYPE_ENVIRONMENT_VARIABLE, raising=False)
    assert inference.resolve_compute_dtype(None) is torch.float32
    monkeypatch.setenv(inference.DTYPE_ENVIRONMENT_VARIABLE, "bf16")
    assert inference.resolve_compute_dtype(None) is torch.bfloat16
    assert inference.resolve_compute_dtype("float32") is torch.float32
    monkeypatch.setenv(inference.DTYPE_ENVIRONMENT_VARIABLE, "int8")
    with pytest.raises(ValueError, match="MASK_RCNN_DTYPE='int8' is not a supported dtype"):
        inference.resolve_compute_dtype(None)
    with pytest.raises(ValueError, match="not a supported dtype"):
        inference.resolve_compute_dtype(torch.float64)


def _tiny_model(numerics):
    config = MaskRCNNConfig(numerics=numerics)
    with torch.device("meta"):
        model = MaskRCNNForInstanceSegmentation(config)
    return model.to_empty(device="cpu")


def test_prepare_model_casts_the_weights_and_sets_eval_mode():
    model = _tiny_model("fast").train()
    prepared = inference.prepare_model_for_inference(model, "bfloat16", "cpu")
    assert prepared is model and not model.training
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}


def test_prepare_model_refuses_reduced_precision_in_exact_mode():
    model = _tiny_model("exact")
    with pytest.raises(ValueError, match="numerics='exact', which runs in float32 only"):
        inference.prepare_model_for_inference(model, torch.float16)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}  # untouched
    inference.prepare_model_for_inference(model, "float32")


# --------------------------------------------------------------------------------------------------- fallback
def test_fallback_runs_the_batch_once_when_it_succeeds():
    calls = []

    def run_batch(items):
        calls.append(list(items))
        return [item * 10 for item in items]

    assert inference.run_with_per_image_fallback([1, 2, 3], run_batch) == [10, 20, 30]
    assert calls == [[1, 2, 3]]
    assert inference.run_with_per_image_fallback([], run_batch) == []


def test_fallback_retries_each_item_alone_and_keeps_the_others():
    calls = []

    def run_batch(items):
        calls.append(list(items))
        if 2 in items:
            raise RuntimeError("item 2 is bad")
        return [item * 10 for item in items]

    outcomes = inference.run_with_per_image_fallback([1, 2, 3], run_batch)
    assert outcomes[0] == 10 and outcomes[2] == 30
    assert isinstance(outcomes[1], RuntimeError) and str(outcomes[1]) == "item 2 is bad"
    assert calls == [[1, 2, 3], [1], [2], [3]]
    single = inference.run_with_per_image_fallback([2], run_batch)
    assert isinstance(single[0], RuntimeError) and calls[-1] == [2]  # a batch of one is not run twice


def test_fallback_uses_run_one_and_lets_other_errors_through():
    def failing_batch(items):
        raise ValueError("batch failed")

    assert inference.run_with_per_image_fallback(["a", "b"], failing_batch, run_one=str.upper) == ["A", "B"]

    def disk_full(items):
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        inference.run_with_per_image_fallback([1, 2], disk_full, retry_on=(RuntimeError, ValueError))


def test_describe_failure_is_one_line_with_the_class():
    assert inference.describe_failure(ValueError("bad value\nsecond line")) == "ValueError: bad value"
    assert inference.describe_failure(FileNotFoundError("x.png")) == "FileNotFoundError: x.png"
    assert inference.describe_failure(RuntimeError()) == "RuntimeError"
    assert inference.describe_failure(inference.DescribedFailure("OSError: from a worker")) == "OSError: from a worker"


def test_label_lookup_takes_int_or_string_keys():
    assert inference.label_name({0: "person", 1: "car"}, torch.tensor(1)) == "car"
    assert inference.label_name({"0": "person", "1": "car"}, np.int64(0)) == "person"
    assert inference.label_name({0: "person"}, 7) == "LABEL_7"
    assert inference.label_names({"1": "car", "0": "person", "3": "dog"}) == ["person", "car", "LABEL_2", "dog"]
    assert inference.label_names({}) == []
