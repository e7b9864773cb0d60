# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Unit tests of pipeline.py, in-process on the repo's own modules (the Hub-user view is in test_hub_loading.py).

The converted synthetic folder comes from `test_hub_loading.build_hub_folder` (one conversion per session); forward
passes are kept to a handful on images resized to at most 320x224.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import hub_folder_mask_rcnn as hub_folder
import pipeline as repo_pipeline
from image_processing_mask_rcnn import MaskRCNNImageProcessor
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
from pipeline import MaskRCNNDetectionPipeline, MaskRCNNSegmentationPipeline, resolve_image_source
from test_hub_loading import IMAGES, PHOTO, REPO_ROOT, build_hub_folder

PALETTE, EXIF, DEEP16 = IMAGES / "palette_400x300.png", IMAGES / "exif_rot6_480x320.jpg", IMAGES / "deep16_320x240.png"


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    folder = build_hub_folder(tmp_path_factory).path
    model = MaskRCNNForInstanceSegmentation.from_pretrained(folder).eval()
    processor = MaskRCNNImageProcessor.from_pretrained(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def segmenter(loaded):
    _, model, processor = loaded
    return MaskRCNNSegmentationPipeline(model=model, image_processor=processor, device="cpu")


@pytest.fixture(scope="module")
def detector(loaded):
    _, model, processor = loaded
    return MaskRCNNDetectionPipeline(model=model, image_processor=processor, device="cpu")


@pytest.fixture(scope="module")
def photo_forward(segmenter):
    """One forward pass on the photo, as `_forward` returns it (batch_size=1 form: a one-element list), with every
    detection's mask computed (keep_score_threshold=0), so that the tests can post-process it at any threshold."""
    with torch.no_grad():
        return segmenter.forward(segmenter.preprocess(str(PHOTO)), keep_score_threshold=0.0)


def by_hand(processor, model, images, threshold=0.5):
    """Processor on the list + model + post-processing, formatted like the pipeline."""
    with torch.no_grad():
        outputs = model(**processor(images, return_tensors="pt"))
    results = []
    for result in processor.post_process_instance_segmentation(outputs, threshold=threshold):
        results.append([
            {"score": float(score), "label": model.config.id2label[int(label)],
             "mask": mask.numpy(), "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), box.int().tolist()))}
            for score, label, mask, box in zip(result["scores"], result["labels"], result["masks"], result["boxes"])])
    return results


def assert_same(pipeline_result, hand_result):
    assert len(pipeline_result) == len(hand_result)
    for got, expected in zip(pipeline_result, hand_result):
        assert (got["score"], got["label"], got["box"]) == (expected["score"], expected["label"], expected["box"])
        assert np.array_equal(np.asarray(got["mask"]) > 0, expected["mask"])


# ------------------------------------------------------------------------------------------------ registration


def test_custom_pipelines_of_the_root_config_name_this_modules_classes():
    root_config = json.loads((REPO_ROOT / "config.json").read_text(encoding="utf-8"))
    assert root_config["custom_pipelines"] == hub_folder.CUSTOM_PIPELINES
    for task in hub_folder.CUSTOM_PIPELINES.values():
        module, class_name = task["impl"].split(".")
        assert module == "pipeline" and hasattr(repo_pipeline, class_name)


def test_both_pipelines_share_one_base_class():
    assert MaskRCNNSegmentationPipeline.__mro__[1] is repo_pipeline.MaskRCNNPipelineBase
    assert MaskRCNNDetectionPipeline.__mro__[1] is repo_pipeline.MaskRCNNPipelineBase
    for name in ("preprocess", "_forward", "postprocess", "save_pretrained"):
        assert name not in vars(MaskRCNNSegmentationPipeline) and name not in vars(MaskRCNNDetectionPipeline)


# ------------------------------------------------------------------------------------------------ parameters


def test_subtask_other_than_instance_is_a_clear_error(segmenter):
    for subtask in ("panoptic", "semantic"):
        with pytest.raises(ValueError, match="instance segmentation only.*subtask"):
            segmenter(str(PHOTO), subtask=subtask)
    assert segmenter._sanitize_parameters(subtask="instance", threshold=0.3, mask_threshold=0.4, timeout=2.0) == (
        {"timeout": 2.0}, {"keep_score_threshold": 0.3}, {"threshold": 0.3, "mask_threshold": 0.4})  # it reaches the model
    assert segmenter._sanitize_parameters(overlap_mask_area_threshold=0.8) == ({}, {}, {})


@pytest.mark.parametrize("arguments", [{"threshold": 1.5}, {"threshold": "high"}, {"mask_threshold": -0.1}])
def test_out_of_range_thresholds_are_rejected(segmenter, arguments):
    with pytest.raises(ValueError, match="between 0 and 1"):
        segmenter(str(PHOTO), **arguments)


def test_detection_pipeline_rejects_segmentation_only_arguments(detector):
    with pytest.raises(TypeError, match="mask_threshold"):
        detector(str(PHOTO), mask_threshold=0.5)


def test_call_argument_forms(segmenter):
    assert segmenter([]) == []
    with pytest.raises(ValueError, match="No image"):
        segmenter()
    with pytest.raises(ValueError, match="not both"):
        segmenter(str(PHOTO), images=str(PHOTO))
    with pytest.raises(ValueError, match="pass a list of images"):
        segmenter(np.zeros((2, 40, 60, 3), np.uint8))


def test_image_processor_is_loaded_when_transformers_hands_none(loaded, monkeypatch):
    """transformers 4.46 gives custom pipelines no image processor; the pipeline then loads it from the model's
    folder itself."""
    folder, model, processor = loaded
    calls = []

    class FakeAuto:
        @staticmethod
        def from_pretrained(source, **kwargs):
            calls.append((source, kwargs))
            return processor

    monkeypatch.setattr(repo_pipeline, "AutoImageProcessor", FakeAuto)
    pipe = MaskRCNNDetectionPipeline(model=model, device="cpu")
    assert pipe.image_processor is processor
    assert calls == [(str(folder), {"trust_remote_code": True})]


# ------------------------------------------------------------------------------------------------ image loading


def test_resolve_image_source_forms(tmp_path):
    encoded = PALETTE.read_bytes()
    assert resolve_image_source(str(PALETTE)) == str(PALETTE)
    assert resolve_image_source(PALETTE) == str(PALETTE)
    assert resolve_image_source(encoded) is encoded
    assert resolve_image_source(base64.b64encode(encoded).decode()) == encoded
    assert resolve_image_source("data:image/png;base64," + base64.b64encode(encoded).decode()) == encoded
    image, array = Image.open(PALETTE), np.zeros((4, 4, 3), np.uint8)
    assert resolve_image_source(image) is image and resolve_image_source(array) is array
    missing = str(tmp_path / "not-there.png")
    assert resolve_image_source(missing) == missing  # a path: the processor says it does not exist
    assert resolve_image_source(str(tmp_path)) == str(tmp_path)
    path_of_base64_characters = str(tmp_path / "photos" / "holiday")
    assert resolve_image_source(path_of_base64_characters) == path_of_base64_characters  # not read as base64
    not_an_image = b"GIF89a but truncated" * 20
    assert resolve_image_source(base64.b64encode(not_an_image).decode()) == not_an_image  # long: data, not a path


def test_a_directory_or_a_missing_path_is_named_as_given(segmenter, detector, tmp_path):
    """Issue 20: a folder given to the pipeline is called a directory, with its path; a missing path is called
    missing (never "<12 bytes>: not an image", which came from reading the path as base64)."""
    folder = tmp_path / "photos" / "holiday"
    folder.mkdir(parents=True)
    for given in (str(folder), folder):
        with pytest.raises(IsADirectoryError, match=f"Could not read image '{folder}': it is a directory"):
            segmenter(given)
    missing = str(tmp_path / "photos" / "summer")
    with pytest.raises(FileNotFoundError, match=f"Could not read image '{missing}': the file does not exist"):
        detector(missing)
    failures = detector([str(folder), missing], errors="return")
    assert failures[0]["error"].startswith("IsADirectoryError: ") and str(folder) in failures[0]["error"]
    assert failures[1]["error"].startswith("FileNotFoundError: ") and missing in failures[1]["error"]
    processor = segmenter.image_processor
    with pytest.raises(IsADirectoryError, match=f"'{folder}': it is a directory, not an image file"):
        processor([str(PHOTO), folder])
    with pytest.raises(FileNotFoundError, match="image 1 of the batch .*the file does not exist"):
        processor([str(PHOTO), missing])


def test_urls_are_fetched_with_the_timeout(segmenter, monkeypatch):
    seen = []

    class Response(io.BytesIO):
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def fake_urlopen(request, timeout=None):
        seen.append((request.full_url, timeout))
        if "missing" in request.full_url:
            raise urllib.error.URLError("connection refused")
        return Response(PALETTE.read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    preprocess_kwargs, _, _ = segmenter._sanitize_parameters(timeout=3.5)
    from_url = segmenter.preprocess("https://example.com/palette.png", **preprocess_kwargs)["images"][0]
    from_file = segmenter.preprocess(str(PALETTE))["images"][0]
    assert seen == [("https://example.com/palette.png", 3.5)]
    assert torch.equal(from_url["pixel_values"], from_file["pixel_values"])
    assert from_url["original_size"] == from_file["original_size"] == (300, 400)
    with pytest.raises(OSError, match="Could not download image 'https://example.com/missing.png'"):
        segmenter.preprocess("https://example.com/missing.png", timeout=1)


@pytest.mark.parametrize("path", sorted(IMAGES.iterdir()), ids=lambda path: path.name)
def test_paths_are_decoded_by_the_processor_itself(segmenter, loaded, path):
    """Every fixture file gives exactly the processor's tensors (EXIF, palette, RGBA, gray, 16-bit...)."""
    processor = loaded[2]
    item = segmenter.preprocess(str(path))["images"][0]
    expected = processor(str(path), return_tensors="pt")
    assert torch.equal(item["pixel_values"], expected["pixel_values"])
    assert item["image_size"] == tuple(expected["image_sizes"][0].tolist())
    assert item["original_size"] == tuple(expected["original_sizes"][0].tolist())
    assert item["scale_factor"] == tuple(expected["scale_factors"][0].tolist())


def test_sixteen_bit_files_keep_their_data(segmenter, loaded, tmp_path):
    """transformers.image_utils.load_image converts to RGB, which clips 16-bit gray to 255; the pipeline does not."""
    from transformers.image_utils import load_image as transformers_load_image

    path = tmp_path / "gray16.png"
    values = np.random.default_rng(0).integers(0, 65536, size=(60, 90), dtype=np.uint16)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I;16")
    ours = segmenter.preprocess(str(path))["images"][0]["pixel_values"]
    assert torch.equal(ours, loaded[2](str(path), return_tensors="pt")["pixel_values"])
    via_rgb = segmenter.preprocess(transformers_load_image(str(path)))["images"][0]["pixel_values"]
    assert not torch.equal(ours, via_rgb)


def test_exif_rotated_file_gives_masks_at_the_displayed_size(segmenter):
    displayed_width, displayed_height = 320, 480  # 480x320 stored, EXIF orientation 6 (rotate 90)
    results = segmenter(str(EXIF), threshold=0.0)
    assert results and all(item["mask"].size == (displayed_width, displayed_height) for item in results)
    assert all(item["box"]["xmax"] <= displayed_width and item["box"]["ymax"] <= displayed_height for item in results)


# ------------------------------------------------------------------------------------------------ batching


def test_processor_pad_of_single_images_equals_its_batch_padding(segmenter, loaded):
    """The pipeline pads a batch with the processor's own `pad`: padding single-image results together equals
    preprocessing the list at once."""
    processor = loaded[2]
    paths = [str(PHOTO), str(IMAGES / "portrait_427x640.png"), str(IMAGES / "wide_2000x500.png")]
    singles = [segmenter.preprocess(path)["images"][0]["pixel_values"] for path in paths]
    assert len({tuple(t.shape) for t in singles}) == 3  # three different sizes
    assert torch.equal(segmenter.image_processor.pad(singles), processor(paths, return_tensors="pt")["pixel_values"])
    assert not hasattr(segmenter, "pad_pixel_values")  # one padding implementation: the processor's


def test_numpy_and_pil_inputs_in_a_real_batch(segmenter, loaded):
    """A numpy array and a PIL image of different sizes run in one forward pass, equal to the processor's batch."""
    _, model, processor = loaded
    images = [np.asarray(Image.open(PHOTO).convert("RGB")), Image.open(IMAGES / "portrait_427x640.png")]
    results = segmenter(images, batch_size=2)
    expected = by_hand(processor, model, images)
    assert len(results) == 2
    for got, hand in zip(results, expected):
        assert_same(got, hand)


# ------------------------------------------------------------------------------------------------ post-processing


def test_postprocess_accepts_both_batching_forms_and_filters_by_threshold(segmenter, photo_forward):
    wrapped = photo_forward  # batch_size=1: {"detections": [d]}
    assert isinstance(wrapped["detections"], list) and len(wrapped["detections"]) == 1
    unwrapped = {"detections": wrapped["detections"][0]}  # batch_size>1 after un-batching: {"detections": d}
    everything = segmenter.postprocess(wrapped, threshold=0.0)
    assert len(everything) == wrapped["detections"][0]["scores"].shape[0] > 0
    assert_same(segmenter.postprocess(unwrapped, threshold=0.0),
                [dict(item, mask=np.asarray(item["mask"]) > 0) for item in everything])
    cut = float(np.median([item["score"] for item in everything]))
    summary = lambda items: [(item["score"], item["label"], item["box"]) for item in items]  # noqa: E731
    assert summary(segmenter.postprocess(wrapped, threshold=cut)) == summary(
        [item for item in everything if item["score"] >= cut])


def test_mask_threshold_controls_mask_pixels(segmenter, photo_forward):
    loose = segmenter.postprocess(photo_forward, threshold=0.0, mask_threshold=0.1)
    strict = segmenter.postprocess(photo_forward, threshold=0.0, mask_threshold=0.9)
    for a, b in zip(loose, strict):
        loose_mask, strict_mask = np.asarray(a["mask"]) > 0, np.asarray(b["mask"]) > 0
        assert not np.any(strict_mask & ~loose_mask)
    assert sum(int((np.asarray(a["mask"]) > 0).sum()) for a in loose) > \
        sum(int((np.asarray(b["mask"]) > 0).sum()) for b in strict)


def test_detection_results_are_segmentation_results_without_masks(segmenter, detector, photo_forward):
    segmentation = segmenter.postprocess(photo_forward, threshold=0.0)
    detection = detector.postprocess(photo_forward, threshold=0.0)
    assert detection == [{"score": item["score"], "label": item["label"], "box": item["box"]} for item in segmentation]
    assert all(list(item) == ["score", "label", "box"] for item in detection)


# ------------------------------------------------------------------------------------------------ saving


def test_save_pretrained_keeps_both_tasks_even_when_registered(loaded, tmp_path, monkeypatch):
    """A registered pipeline class would make transformers write only its own task; ours writes both back. The
    image processor here is built in code (it carries no auto_map of its own)."""
    from transformers import AutoModelForInstanceSegmentation

    _, model, processor = loaded
    fresh_processor = MaskRCNNImageProcessor(resize_scale=processor.resize_scale)
    segmenter = MaskRCNNSegmentationPipeline(model=model, image_processor=fresh_processor, device="cpu")

    monkeypatch.setattr(MaskRCNNSegmentationPipeline, "_registered_impl", {
        "image-segmentation": {"impl": MaskRCNNSegmentationPipeline, "pt": (AutoModelForInstanceSegmentation,),
                               "type": "image"}}, raising=False)
    segmenter.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text(encoding="utf-8"))
    assert config["custom_pipelines"] == hub_folder.CUSTOM_PIPELINES
    assert set(config["auto_map"]) >= set(hub_folder.CONFIG_AUTO_MAP)
    processor_config = json.loads((tmp_path / "saved" / "preprocessor_config.json").read_text(encoding="utf-8"))
    assert processor_config["auto_map"] == hub_folder.IMAGE_PROCESSOR_AUTO_MAP
    code_files = hub_folder.code_files(hub_folder.referenced_modules(config, processor_config),
                                       lambda name: REPO_ROOT / name if (REPO_ROOT / name).is_file() else None)
    assert {"pipeline.py", "modeling_mask_rcnn.py", "handler.py", "hub_folder_mask_rcnn.py"} <= set(code_files)
    names = {path.name for path in (tmp_path / "saved").iterdir()}
    assert {"config.json", "preprocessor_config.json", "model.safetensors", *code_files} <= names
    for code_file in code_files:
        assert (tmp_path / "saved" / code_file).read_bytes() == (REPO_ROOT / code_file).read_bytes()


def test_numerics_reaches_the_model_through_pipeline_model_kwargs(loaded, tmp_path, monkeypatch):
    from transformers import pipeline

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    folder = loaded[0]
    segmenter = pipeline("image-segmentation", model=str(folder), trust_remote_code=True, device="cpu",
                         model_kwargs={"numerics": "exact"})
    assert segmenter.model.config.numerics == "exact"
    assert type(segmenter).__name__ == "MaskRCNNSegmentationPipeline"


# ------------------------------------------------------------------------------------------------ threshold to model
@pytest.mark.parametrize("threshold", [None, "median", 1.0], ids=["default-0.5", "median-score", "keeps-nothing"])
def test_threshold_reaches_the_model_which_computes_masks_only_for_kept_detections(segmenter, loaded, threshold):
    """The mask head sees exactly the detections the call keeps, and the results equal post-processing of the full
    computation at that threshold."""
    _, model, processor = loaded
    with torch.no_grad():
        scores = model(**processor(str(PHOTO), return_tensors="pt")).scores[0]
    value = {None: 0.5, "median": float(scores.median()), 1.0: 1.0}[threshold]
    kept = int((scores >= value).sum())
    assert threshold == 1.0 or 0 < kept < scores.numel()
    mask_head_rois = []
    hook = model.mask_head.register_forward_hook(lambda module, args, output: mask_head_rois.append(args[0].shape[0]))
    try:
        instances = segmenter(str(PHOTO)) if threshold is None else segmenter(str(PHOTO), threshold=value)
    finally:
        hook.remove()
    assert mask_head_rois == ([kept] if kept else [])  # no RoIAlign or mask head at all when nothing is kept
    assert_same(instances, by_hand(processor, model, [str(PHOTO)], threshold=value)[0])


def test_stages_run_by_hand_refuse_a_threshold_below_the_models(segmenter):
    forwarded = segmenter.forward(segmenter.preprocess(str(PHOTO)), keep_score_threshold=0.6)
    with pytest.raises(ValueError, match="keep_score_threshold=0.6"):
        segmenter.postprocess(forwarded, threshold=0.5)
    assert all(item["score"] >= 0.6 for item in segmenter.postprocess(forwarded, threshold=0.6))
