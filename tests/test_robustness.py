# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Robustness (issue #6): every odd or bad input gets a result or one clear error, memory stays bounded, nothing
runs twice or in a wrong order under threads, and a batch with one bad item loses only that item.

What other test files already cover is not repeated here: OpenCV-equal decoding of PIL modes, 16-bit PNGs and EXIF
rotation (test_image_processing.py), empty model outputs and missing weight keys (test_modeling.py), checkpoints that
carry code, are not checkpoints or belong to other architectures (test_convert.py), unreadable files in the CLI
(test_segment_cli.py).

Tests that run the model use the converted synthetic R50 folder of test_segment_cli.py (lean config, images resized to
at most 300x200) and images of at most 320x224. The processor's property tests never run the model.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as numpy_strategies
from PIL import Image
from safetensors.torch import load_file, save_file

from image_processing_mask_rcnn import (
    CONVERSION_CHUNK_ELEMENTS,
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageTooLargeError,
    MaskRCNNImageProcessor,
    compute_rescaled_size,
)
from mask_rcnn_batch import cli as segment_cli
from mask_rcnn_batch import runner as segment_runner
from mask_rcnn_batch.model import decode_image
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
from pipeline import MaskRCNNDetectionPipeline, MaskRCNNSegmentationPipeline

IMAGES = Path(__file__).resolve().parent / "fixtures" / "images"
# 97x61 RGB with ~18 detections above 0.05 on the synthetic weights: enough instances to compare results.
BUSY_IMAGE = IMAGES / "tiny_97x61.png"
GRAY_IMAGE = IMAGES / "gray_500x375.png"
THRESHOLD = 0.05  # the synthetic weights are not trained; few small-image detections reach the default 0.5
LEAN_RESIZE_SCALE = [300, 200]
# 100,000,000 pixels: above the default limit (89,478,485) but below PIL's own refusal at twice its limit.
BOMB_SIDE = 10_000


def encode(image: Image.Image, image_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def lean_processor(**options) -> MaskRCNNImageProcessor:
    return MaskRCNNImageProcessor(resize_scale=LEAN_RESIZE_SCALE, **options)


def bomb_png(width: int, height: int) -> bytes:
    """A bilevel PNG of width x height: a few KiB on disk (all zero), `width * height` pixels decoded."""
    return encode(Image.new("1", (width, height)))


# ================================================================================================================
# Processor: decompression bombs and the pixel limit
# ================================================================================================================
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_decompression_bomb_file_is_refused_from_its_header(tmp_path):
    """A 10000x10000 PNG is over the default limit. Its truncated copy proves the check reads only the header: a
    decoding attempt would fail with "truncated" instead."""
    data = bomb_png(BOMB_SIDE, BOMB_SIDE)
    whole, truncated = tmp_path / "bomb.png", tmp_path / "bomb-truncated.png"
    whole.write_bytes(data)
    truncated.write_bytes(data[:100])
    processor = MaskRCNNImageProcessor()
    for path in (whole, truncated):
        with pytest.raises(ImageTooLargeError, match="max_image_pixels") as error:
            processor([random_rgb(8, 8), path])
        message = str(error.value)
        assert message.startswith("image 1 of the batch") and str(path) in message
        assert f"{BOMB_SIDE * BOMB_SIDE:,} pixels" in message and f"{DEFAULT_MAX_IMAGE_PIXELS:,}" in message
        assert isinstance(error.value, ValueError) and isinstance(error.value, OSError)
    with pytest.raises(ImageTooLargeError, match=r"<\d+ bytes>"):
        processor(data)


def test_file_above_pils_own_bomb_limit_is_refused_with_the_same_error(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(bomb_png(2 * BOMB_SIDE, BOMB_SIDE))  # 200M pixels: PIL itself refuses to open it
    with pytest.raises(ImageTooLargeError, match="huge.png.*decompression bomb"):
        MaskRCNNImageProcessor(max_image_pixels=None)(path)


def test_absurdly_large_arrays_tensors_and_pil_images_are_refused_before_reading_a_pixel():
    """Zero-stride views of NaN: no memory, and a value check would say "finite"; the size check must come first."""
    huge_array = np.broadcast_to(np.float32(np.nan), (BOMB_SIDE, BOMB_SIDE, 3))
    huge_tensor = torch.full((3, 1, 1), float("nan")).expand(3, BOMB_SIDE, BOMB_SIDE)
    processor = MaskRCNNImageProcessor()
    with pytest.raises(ImageTooLargeError, match=r"image 0 of the batch.*array of shape \(10000, 10000, 3\)"):
        processor(huge_array)
    with pytest.raises(ImageTooLargeError, match=r"tensor of shape \(3, 10000, 10000\)"):
        processor(huge_tensor)
    with pytest.raises(ImageTooLargeError, match=r"PIL image \(mode 1\) has 10000x10000"):
        processor(Image.new("1", (BOMB_SIDE, BOMB_SIDE)))


@pytest.mark.parametrize("container", ["path", "bytes", "pil", "array", "tensor"])
def test_pixel_limit_is_configurable_per_processor_and_per_call(container, tmp_path):
    def as_input(height: int, width: int):
        pixels = random_rgb(height, width, seed=height)
        path = tmp_path / f"{height}x{width}.png"
        Image.fromarray(pixels).save(path)
        return {"path": path, "bytes": path.read_bytes(), "pil": Image.fromarray(pixels), "array": pixels,
                "tensor": torch.from_numpy(pixels).permute(2, 0, 1)}[container]

    strict = MaskRCNNImageProcessor(max_image_pixels=1000)
    assert strict(as_input(25, 40))["original_sizes"].tolist() == [[25, 40]]  # exactly 1000 pixels
    with pytest.raises(ImageTooLargeError, match="1,025 pixels, more than the limit of 1,000"):
        strict(as_input(25, 41))
    assert strict(as_input(25, 41), max_image_pixels=2000)["original_sizes"].tolist() == [[25, 41]]
    assert MaskRCNNImageProcessor(max_image_pixels=None)(as_input(25, 41))["pixel_values"].shape[0] == 1


def test_pixel_limit_is_saved_validated_and_defaults_to_pils_limit(tmp_path):
    assert MaskRCNNImageProcessor().max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS == Image.MAX_IMAGE_PIXELS
    MaskRCNNImageProcessor(max_image_pixels=5000).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["max_image_pixels"] == 5000
    assert MaskRCNNImageProcessor.from_pretrained(tmp_path).max_image_pixels == 5000
    for bad in (0, -1, 2.5, "big", True):
        with pytest.raises(ValueError, match="max_image_pixels must be a positive integer or None"):
            MaskRCNNImageProcessor(max_image_pixels=bad)


# ================================================================================================================
# Processor: large images in bounded memory
# ================================================================================================================
LARGE_HEIGHT, LARGE_WIDTH = 4000, 6000  # a 24-megapixel camera photo
LARGE_RGB_BYTES = LARGE_HEIGHT * LARGE_WIDTH * 3


def traced_peak_bytes(function, *args) -> tuple:
    """(result, peak bytes allocated through Python/numpy while `function` ran). PIL, OpenCV and torch allocate
    outside tracemalloc's view, so this measures exactly the numpy copies our conversion code makes."""
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def large_uint8_image() -> np.ndarray:
    return random_rgb(LARGE_HEIGHT, LARGE_WIDTH, seed=6)


def test_large_float_array_and_half_tensor_are_converted_in_bounded_memory(large_uint8_image):
    """A 6000x4000 float image must not be copied to float64 (8x the uint8 RGB result) or even to uint16/bool at full
    size: the bound is the uint8 RGB result (unavoidable) plus 50% for the row-block temporaries (3 x 8 MiB at
    CONVERSION_CHUNK_ELEMENTS = 2**20). Before the row-block conversion the float32 input peaked at 16x."""
    processor = MaskRCNNImageProcessor()
    reference = processor(large_uint8_image)["pixel_values"]
    as_float32 = large_uint8_image.astype(np.float32) / 255
    as_half_chw = torch.from_numpy(large_uint8_image).permute(2, 0, 1).half() / 255
    for variant in (as_float32, as_half_chw):
        outputs, peak = traced_peak_bytes(processor, variant)
        assert peak < 1.5 * LARGE_RGB_BYTES, f"peak {peak / 2**20:.0f} MiB for {type(variant).__name__}"
        assert torch.equal(outputs["pixel_values"], reference)
    assert 3 * 8 * CONVERSION_CHUNK_ELEMENTS < 0.5 * LARGE_RGB_BYTES


def test_large_png_file_is_decoded_in_bounded_memory(large_uint8_image, tmp_path):
    """From a file, PIL's decoded copy is exported once to numpy (PIL's `tobytes` + the array: 2x the RGB size);
    nothing else of full size may appear."""
    path = tmp_path / "large.png"
    Image.fromarray(large_uint8_image).save(path, compress_level=0)
    processor = MaskRCNNImageProcessor()
    outputs, peak = traced_peak_bytes(processor, path)
    assert peak < 2.5 * LARGE_RGB_BYTES, f"peak {peak / 2**20:.0f} MiB"
    assert torch.equal(outputs["pixel_values"], processor(large_uint8_image)["pixel_values"])
    assert outputs["image_sizes"].tolist() == [[800, 1200]]


# ================================================================================================================
# Processor: bad values, dtypes and files
# ================================================================================================================
def nan_in_last_block() -> np.ndarray:
    """A float image larger than one conversion block whose only NaN is its very last value."""
    image = np.zeros((2048, 1024, 3), np.float32)
    assert image.size > 4 * CONVERSION_CHUNK_ELEMENTS
    image[-1, -1, -1] = np.nan
    return image


@pytest.mark.parametrize("make_input, message", [
    (nan_in_last_block, "must be finite"),
    (lambda: np.full((6, 7), -np.inf), "must be finite"),
    (lambda: torch.full((3, 6, 7), float("inf"), dtype=torch.float16), "must be finite"),
    (lambda: torch.full((3, 6, 7), float("nan"), dtype=torch.bfloat16), "must be finite"),
    (lambda: Image.fromarray(np.full((6, 7), np.nan, np.float32)), "mode F image .* NaN or infinite"),
    (lambda: np.zeros((6, 7, 3), np.complex64), "unsupported pixel dtype complex64"),
    (lambda: np.full((6, 7), None, dtype=object), "unsupported pixel dtype object"),
    (lambda: np.full((6, 7), "a"), "unsupported pixel dtype <U1"),
    (lambda: np.zeros((6, 7), "datetime64[s]"), "unsupported pixel dtype datetime64"),
    (lambda: np.zeros((6, 7, 3), np.uint32) + 256, r"0\.\.255 for dtype uint32"),
    (lambda: torch.zeros(3, 6, 7).to_sparse(), "layout torch.sparse_coo"),
    (lambda: torch.zeros(3, 6, 7, device="meta"), "on device meta"),
    (lambda: np.zeros(7, np.uint8), "2 or 3 dimensions"),
    (lambda: np.zeros((0, 6, 7, 3), np.uint8), "empty list of images"),
    (lambda: None, "Cannot load an image from NoneType"),
], ids=["nan-in-last-block", "minus-inf", "inf-half-tensor", "nan-bfloat16-tensor", "nan-mode-F", "complex",
        "object", "string", "datetime", "uint32-above-255", "sparse-tensor", "meta-tensor", "1-D", "empty-4-D",
        "None"])
def test_bad_values_and_dtypes_are_refused_naming_the_problem(make_input, message):
    bad_input = make_input()
    where = "" if message.startswith("empty list") else "image 1 of the batch.*"
    with pytest.raises((ValueError, TypeError), match=f"{where}{message}"):
        lean_processor()([random_rgb(8, 8), bad_input] if where else bad_input)


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


@pytest.mark.parametrize("name, contents, message", [
    ("truncated.png", truncated(encode(Image.fromarray(random_rgb(64, 80)))), "truncated"),
    ("truncated.jpg", encode(Image.fromarray(random_rgb(64, 80)), "JPEG")[:400], "[Tt]runcated"),
    ("empty.jpg", b"", r"the file is empty \(0 bytes\)"),
    ("text.png", b"model = dict(type='MaskRCNN')\n", "not an image file"),
    ("header-only.gif", encode(Image.new("P", (30, 20)), "GIF")[:13], "not an image file|truncated"),
])
def test_unreadable_files_and_bytes_name_the_input(name, contents, message, tmp_path):
    path = tmp_path / name
    path.write_bytes(contents)
    processor = lean_processor()
    with pytest.raises(OSError, match=f"image 1 of the batch.*{name}.*(?:{message})"):
        processor([random_rgb(8, 8), path])
    with pytest.raises(OSError, match=rf"<{len(contents)} bytes>"):
        processor(contents)


@pytest.mark.parametrize("height, width", [(1, 1), (1, 2), (2, 1), (1, 5000), (5000, 1), (3, 2400)])
def test_tiny_and_extremely_elongated_images_are_processed(height, width):
    processor = lean_processor()
    outputs = processor(random_rgb(height, width, seed=height + width))
    new_width, new_height = compute_rescaled_size(width, height, LEAN_RESIZE_SCALE)
    assert outputs["image_sizes"].tolist() == [[new_height, new_width]]
    assert outputs["original_sizes"].tolist() == [[height, width]]
    assert outputs["pixel_values"].shape[2] % 32 == 0 and outputs["pixel_values"].shape[3] % 32 == 0
    assert torch.isfinite(outputs["pixel_values"]).all()


# ================================================================================================================
# Processor: multi-frame files give their first frame
# ================================================================================================================
def three_frames() -> list:
    """Frames of different solid-colour layouts with few colours (GIF palettes keep them exactly)."""
    frames = []
    for index, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        pixels = np.zeros((40, 56, 3), np.uint8)
        pixels[:, index * 12:(index + 2) * 12] = colour
        pixels[index * 10:(index + 1) * 10] = (255, 255, 255)
        frames.append(pixels)
    return frames


@pytest.mark.parametrize("image_format", ["GIF", "TIFF"])
def test_multi_frame_files_give_their_first_frame(image_format, tmp_path):
    frames = three_frames()
    path = tmp_path / f"animated.{image_format.lower()}"
    first, *rest = (Image.fromarray(frame) for frame in frames)
    first.save(path, format=image_format, save_all=True, append_images=rest)
    with Image.open(path) as image:
        assert getattr(image, "n_frames", 1) == 3
    processor = lean_processor()
    from_file = processor(path)["pixel_values"]
    assert torch.equal(from_file, processor(frames[0])["pixel_values"])
    assert not torch.equal(from_file, processor(frames[-1])["pixel_values"])


# ================================================================================================================
# Processor: property tests over sizes, PIL modes, dtypes, layouts and containers (no model)
# ================================================================================================================
PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PROPERTY_PROCESSOR = MaskRCNNImageProcessor(resize_scale=[96, 64])


def expected_outputs(clean_rgb: np.ndarray):
    """What the processor must give for any odd-but-valid form of `clean_rgb` ((H, W, 3) uint8)."""
    return PROPERTY_PROCESSOR(clean_rgb)


def assert_well_formed(outputs, height: int, width: int) -> None:
    new_width, new_height = compute_rescaled_size(width, height, [96, 64])
    assert outputs["original_sizes"].tolist() == [[height, width]]
    assert outputs["image_sizes"].tolist() == [[new_height, new_width]]
    pixel_values = outputs["pixel_values"]
    assert pixel_values.dtype == torch.float32 and torch.isfinite(pixel_values).all()
    assert pixel_values.shape[2] % 32 == 0 and pixel_values.shape[3] % 32 == 0


ARRAY_DTYPES = ["uint8", "uint16", "int16", "int32", "int64", "float16", "float32", "float64", "bool"]
TENSOR_DTYPES = {"uint8": torch.uint8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
                 "float16": torch.float16, "float32": torch.float32, "float64": torch.float64, "bool": torch.bool,
                 "bfloat16": torch.bfloat16}


@PROPERTY_SETTINGS
@given(height=st.integers(1, 40), width=st.integers(1, 40), channels=st.integers(1, 4),
       dtype=st.sampled_from(ARRAY_DTYPES + ["bfloat16"]), layout=st.sampled_from(["hwc", "chw", "hw"]),
       as_tensor=st.booleans(), seed=st.integers(0, 2**31))
def test_arrays_and_tensors_of_any_dtype_and_layout_equal_their_uint8_rgb(height, width, channels, dtype, layout,
                                                                         as_tensor, seed):
    """The same picture as uint8, uint16 (x257), signed ints, bool (0/255 only), float16/32/64 or bfloat16 in [0, 1],
    HWC, CHW or 2-D, numpy or torch: the processor's output equals that of its clean (H, W, 3) uint8 RGB."""
    if layout == "hw":
        channels = 1
    if dtype == "bfloat16" or (dtype == "uint16" and as_tensor):
        as_tensor = dtype == "bfloat16"  # numpy has no bfloat16; torch's uint16 support is partial
    # Keep the layout unambiguous under the documented rule (numpy: a last axis of 1..4 is the channel axis;
    # torch: a first axis of 1..4 is).
    if layout == "chw" and not as_tensor:
        width = max(width, 5)
    if layout == "hwc" and as_tensor:
        height = max(height, 5)
    base = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    if dtype == "bool":
        base = np.where(base >= 128, 255, 0).astype(np.uint8)
    if dtype in ("float16", "float32", "float64", "bfloat16"):
        values = base.astype(np.float64) / 255  # x255 and rounding recovers base exactly (< 0.13 error for half)
    elif dtype == "uint16":
        values = base.astype(np.uint16) * 257
    elif dtype == "bool":
        values = base > 0
    else:
        values = base
    values = values.astype(dtype) if dtype != "bfloat16" else values.astype(np.float32)
    if layout == "chw":
        values = values.transpose(2, 0, 1)
    elif layout == "hw":
        values = values[:, :, 0]
    image = torch.from_numpy(np.ascontiguousarray(values)).to(TENSOR_DTYPES[dtype]) if as_tensor else values
    clean = base[:, :, :1].repeat(3, axis=2) if channels in (1, 2) else base[:, :, :3]
    outputs = PROPERTY_PROCESSOR(image)
    assert_well_formed(outputs, height, width)
    assert torch.equal(outputs["pixel_values"], expected_outputs(np.ascontiguousarray(clean))["pixel_values"])


PIL_MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I", "F"]
PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I;16"}


def pil_image_and_clean_rgb(mode: str, height: int, width: int, seed: int) -> tuple:
    """A PIL image of `mode` and the (H, W, 3) uint8 RGB that OpenCV's IMREAD_COLOR semantics give for it."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if mode == "CMYK":
        ink = rng.integers(0, 256, (height, width, 4), dtype=np.uint8).astype(np.int32)
        white = 255 - ink[:, :, 3:4]
        return Image.fromarray(ink.astype(np.uint8), mode="CMYK"), (white - ((ink[:, :, :3] * white) >> 8))
    if mode == "I;16":
        values = rng.integers(0, 65536, (height, width), dtype=np.uint16)
        return Image.fromarray(values), np.repeat((values >> 8)[:, :, None], 3, axis=2)
    if mode == "I":
        values = rng.integers(-70000, 140000, (height, width), dtype=np.int32)
        return Image.fromarray(values), np.repeat((np.clip(values, 0, 65535) >> 8)[:, :, None], 3, axis=2)
    if mode == "F":
        values = (rng.random((height, width)) * 400 - 50).astype(np.float32)
        gray = np.clip(np.rint(values.astype(np.float64)), 0, 255)
        return Image.fromarray(values), np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "RGBA":
        alpha = rng.integers(0, 256, (height, width, 1), dtype=np.uint8)
        return Image.fromarray(np.concatenate([rgb, alpha], axis=2), mode="RGBA"), rgb  # alpha dropped
    image = Image.fromarray(rgb).convert(mode)
    if mode == "P":
        image.info["transparency"] = 0  # transparency is ignored, like OpenCV
        return image, np.asarray(image.convert("RGB"))
    if mode == "RGB":
        return image, rgb
    gray = np.asarray(image.getchannel(0)).astype(np.uint8)  # "1" gives bools: 0/1 -> 0/255 below
    if mode == "1":
        gray = gray * 255
    return image, np.repeat(gray[:, :, None], 3, axis=2)


@PROPERTY_SETTINGS
@given(mode=st.sampled_from(PIL_MODES), height=st.integers(1, 48), width=st.integers(1, 48),
       seed=st.integers(0, 2**31))
def test_every_pil_mode_in_memory_and_as_a_file_equals_its_clean_rgb(mode, height, width, seed):
    image, clean = pil_image_and_clean_rgb(mode, height, width, seed)
    assert image.mode == mode
    outputs = PROPERTY_PROCESSOR(image)
    assert_well_formed(outputs, height, width)
    expected = expected_outputs(np.ascontiguousarray(clean.astype(np.uint8)))["pixel_values"]
    assert torch.equal(outputs["pixel_values"], expected)
    if mode in PNG_MODES:
        options = {"transparency": 0} if mode == "P" else {}
        assert torch.equal(PROPERTY_PROCESSOR(encode(image, "PNG", **options))["pixel_values"], expected)


GARBAGE_DTYPES = ["uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "float16", "float32",
                  "float64", "bool", "complex64"]


@PROPERTY_SETTINGS
@given(array=numpy_strategies.arrays(
    dtype=st.sampled_from(GARBAGE_DTYPES).map(np.dtype),
    shape=numpy_strategies.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
    as_tensor=st.booleans())
def test_arbitrary_arrays_give_a_result_or_one_clear_error(array, as_tensor):
    """Any shape (0-4 dimensions, empty sides), any dtype, any values (NaN, infinities, negatives, huge integers):
    either a well-formed result or a ValueError/TypeError that says which image of the batch is wrong."""
    image = array
    if as_tensor and array.dtype.name not in ("uint16", "uint32", "uint64"):
        image = torch.from_numpy(np.ascontiguousarray(array))
    try:
        outputs = PROPERTY_PROCESSOR(image)
    except (ValueError, TypeError) as error:
        message = str(error)
        names_the_image = message.startswith("image ") and " of the batch " in message
        assert names_the_image or message.startswith("preprocess got an empty list of images"), message
        return
    pixel_values = outputs["pixel_values"]
    expected_batch = array.shape[0] if array.ndim == 4 else 1
    assert pixel_values.shape[0] == expected_batch and torch.isfinite(pixel_values).all()
    assert pixel_values.shape[2] % 32 == 0 and pixel_values.shape[3] % 32 == 0


# ================================================================================================================
# Model, pipelines and CLI on the converted synthetic folder
# ================================================================================================================
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from test_segment_cli import converted_synthetic_model  # imported here: that module needs pycocotools

    return converted_synthetic_model(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(model_dir):
    model = MaskRCNNForInstanceSegmentation.from_pretrained(model_dir).eval()
    return model, MaskRCNNImageProcessor.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def segmenter(loaded):
    return MaskRCNNSegmentationPipeline(model=loaded[0], image_processor=loaded[1], device="cpu")


@pytest.fixture(scope="module")
def detector(loaded):
    return MaskRCNNDetectionPipeline(model=loaded[0], image_processor=loaded[1], device="cpu")


@pytest.fixture(scope="module")
def busy_rgb() -> np.ndarray:
    return np.array(Image.open(BUSY_IMAGE).convert("RGB"))


@pytest.fixture(scope="module")
def busy_result(segmenter, busy_rgb) -> list:
    result = segmenter(busy_rgb, threshold=THRESHOLD)
    assert len(result) >= 5, "the comparisons below need several instances"
    return result


def comparable(annotations: list) -> list:
    """Pipeline annotations as plain values (masks as bytes) for exact comparison."""
    return [(item["score"], item["label"], item["box"], np.asarray(item["mask"]).tobytes() if "mask" in item else None)
            for item in annotations]


def test_odd_but_valid_inputs_give_the_same_detections_as_their_clean_rgb(segmenter, busy_rgb, busy_result,
                                                                          tmp_path):
    height, width = busy_rgb.shape[:2]
    alpha = np.random.default_rng(3).integers(0, 256, (height, width, 1), dtype=np.uint8)
    frames_path = tmp_path / "two-frames.tiff"
    Image.fromarray(busy_rgb).save(frames_path, save_all=True, append_images=[Image.fromarray(255 - busy_rgb)])
    variants = {
        "RGBA PIL image": Image.fromarray(np.concatenate([busy_rgb, alpha], axis=2), mode="RGBA"),
        "float32 CHW tensor in [0, 1]": torch.from_numpy(busy_rgb).permute(2, 0, 1).float() / 255,
        "uint16 HWC array": busy_rgb.astype(np.uint16) * 257,
        "first frame of a 2-page TIFF": str(frames_path),
    }
    for name, variant in variants.items():
        assert comparable(segmenter(variant, threshold=THRESHOLD)) == comparable(busy_result), name


def test_gray_and_sixteen_bit_inputs_equal_their_replicated_rgb(segmenter):
    gray = np.asarray(Image.open(GRAY_IMAGE).convert("L").resize((160, 120)))
    replicated = np.repeat(gray[:, :, None], 3, axis=2)
    expected = comparable(segmenter(replicated, threshold=THRESHOLD))
    assert expected, "the gray image must give detections"
    sixteen_bit = encode(Image.fromarray(gray.astype(np.uint16) * 256 + 77))  # low byte is dropped
    for variant in (Image.fromarray(gray), gray, sixteen_bit):
        assert comparable(segmenter(variant, threshold=THRESHOLD)) == expected


@pytest.fixture(scope="module")
def blind_model(model_dir):
    """The same weights with score_threshold=1.0: no detection can pass (scores must be > the threshold)."""
    return MaskRCNNForInstanceSegmentation.from_pretrained(model_dir, score_threshold=1.0).eval()


def test_no_detections_give_empty_results_at_every_level(blind_model, loaded, busy_rgb):
    processor = loaded[1]
    inputs = processor([busy_rgb, busy_rgb[:40]], return_tensors="pt")
    with torch.no_grad():
        outputs = blind_model(**inputs)
    for index in range(2):
        assert outputs.pred_boxes[index].shape == (0, 4) and outputs.scores[index].shape == (0,)
        assert outputs.labels[index].shape == (0,) and outputs.mask_probs[index].shape == (0, 28, 28)
    height, width = busy_rgb.shape[:2]
    for result, rows in zip(processor.post_process_instance_segmentation(outputs, threshold=0.0), (height, 40)):
        assert result["boxes"].shape == (0, 4) and result["masks"].shape == (0, rows, width)
        assert result["masks"].dtype == torch.bool and result["labels"].dtype == torch.int64
    as_map = processor.post_process_instance_segmentation(outputs, threshold=0.0, return_binary_maps=False)[0]
    assert as_map["segments_info"] == [] and (as_map["segmentation"] == -1).all()
    assert processor.post_process_object_detection(outputs, threshold=0.0)[1]["boxes"].shape == (0, 4)
    segmenter = MaskRCNNSegmentationPipeline(model=blind_model, image_processor=processor, device="cpu")
    detector = MaskRCNNDetectionPipeline(model=blind_model, image_processor=processor, device="cpu")
    assert segmenter(busy_rgb, threshold=0.0) == [] and detector(busy_rgb, threshold=0.0) == []
    assert segmenter([busy_rgb, busy_rgb[:40]], batch_size=2, threshold=0.0) == [[], []]
    empty, failed = detector([busy_rgb, "missing.png"], threshold=0.0, errors="return")
    assert empty == [] and failed["error"].startswith("FileNotFoundError: ")


def test_one_pipeline_used_from_several_threads_equals_sequential_calls(segmenter, detector, busy_rgb,
                                                                         busy_result):
    """Three threads released together by a barrier, two pipelines sharing one model, different images and
    parameters per call: every result equals the same call made alone."""
    gray = np.asarray(Image.open(GRAY_IMAGE).convert("RGB").resize((160, 120)))
    calls = [(segmenter, busy_rgb, {"threshold": THRESHOLD}), (detector, gray, {"threshold": THRESHOLD}),
             (segmenter, gray, {"threshold": 0.1, "mask_threshold": 0.3})]
    sequential = [comparable(busy_result)] + [comparable(pipe(image, **options)) for pipe, image, options in calls[1:]]
    assert all(sequential), "the calls must have detections to compare"
    barrier = threading.Barrier(len(calls))

    def call(arguments):
        pipe, image, options = arguments
        barrier.wait(timeout=60)
        return comparable(pipe(image, **options))

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        concurrent = list(pool.map(call, calls))
    assert concurrent == sequential


# ================================================================================================================
# A batch with bad items: the pipelines' errors="return" and the CLI
# ================================================================================================================
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_pipeline_batch_with_bad_items_returns_their_errors_and_keeps_the_rest(segmenter, detector, busy_rgb,
                                                                               busy_result, tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(bomb_png(BOMB_SIDE, BOMB_SIDE))
    good_path = tmp_path / "good.png"
    Image.fromarray(busy_rgb).save(good_path)
    inputs = [busy_rgb, str(tmp_path / "missing.jpg"), b"not an image", str(good_path),
              np.full((20, 30, 3), np.nan, np.float32), str(bomb)]
    results = segmenter(inputs, threshold=THRESHOLD, batch_size=2, errors="return")
    assert len(results) == len(inputs)
    # Each good image shares its batch of two with a failed input only, so it runs alone: results are identical.
    assert comparable(results[0]) == comparable(results[3]) == comparable(busy_result)
    errors = {index: results[index]["error"] for index in (1, 2, 4, 5)}
    assert errors[1].startswith("FileNotFoundError: ") and "missing.jpg" in errors[1]
    assert errors[2].startswith("OSError: ") and "<12 bytes>" in errors[2]
    assert errors[4].startswith("ValueError: ") and "must be finite" in errors[4]
    assert errors[5].startswith("ImageTooLargeError: ") and "bomb.png" in errors[5]
    detections = detector(inputs, threshold=THRESHOLD, errors="return")
    assert [set(item) if isinstance(item, dict) else "list" for item in detections] == [
        "list", {"error"}, {"error"}, "list", {"error"}, {"error"}]
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        segmenter(inputs, threshold=THRESHOLD)  # the default stays errors="raise"
    with pytest.raises(ValueError, match="errors must be 'raise'"):
        segmenter(inputs, errors="ignore")


def test_pipeline_retries_a_failed_batch_image_by_image(segmenter, loaded, busy_rgb, busy_result):
    """Fault injection: the real model, with a hook that fails every forward pass containing a 5-row image (as an
    out-of-memory error would). The batch is retried image by image; only that image fails."""
    model = loaded[0]

    def fail_on_short_images(module, args, kwargs):
        image_sizes = kwargs.get("image_sizes")
        if image_sizes is not None and (image_sizes[:, 0] < 50).any():
            raise RuntimeError("simulated out of memory")

    short = busy_rgb[:5]  # resized to 300x15: image height < 50 in the network frame
    handle = model.register_forward_pre_hook(fail_on_short_images, with_kwargs=True)
    try:
        results = segmenter([busy_rgb, short], threshold=THRESHOLD, batch_size=2, errors="return")
    finally:
        handle.remove()
    assert comparable(results[0]) == comparable(busy_result)
    assert results[1] == {"error": "RuntimeError: simulated out of memory"}


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_cli_reports_only_the_bad_files_and_handles_multi_frame_tiny_and_elongated_ones(loaded, busy_rgb, tmp_path,
                                                                                       monkeypatch, capsys):
    pytest.importorskip("pycocotools")
    inputs = tmp_path / "in"
    inputs.mkdir()
    frames = [Image.fromarray(busy_rgb), Image.fromarray(255 - busy_rgb)]
    frames[0].save(inputs / "animated.tiff", save_all=True, append_images=frames[1:])
    frames[0].save(inputs / "first-frame.png")
    Image.fromarray(random_rgb(1, 1)).save(inputs / "one-pixel.png")
    Image.fromarray(random_rgb(3, 1500, seed=2)).save(inputs / "strip.png")
    (inputs / "bomb.png").write_bytes(bomb_png(BOMB_SIDE, BOMB_SIDE))
    monkeypatch.setattr(segment_runner, "load_model_and_processor", lambda *args, **kwargs: loaded)
    output = tmp_path / "out"
    code = segment_cli.main(["--model", "synthetic", str(inputs), "--output-dir", str(output), "--threshold",
                         str(THRESHOLD), "--batch-size", "1", "--no-overlays"])
    assert code == 1, capsys.readouterr().err
    failures = json.loads((output / "failures.json").read_text())
    assert [failure["file_name"] for failure in failures] == ["bomb.png"]
    assert "ImageTooLargeError" in failures[0]["error"] and "max_image_pixels" in failures[0]["error"]
    images = json.loads((output / "images.json").read_text())["images"]
    assert sorted(image["file_name"] for image in images) == ["animated.tiff", "first-frame.png", "one-pixel.png",
                                                             "strip.png"]
    records = {}
    for record in json.loads((output / "predictions.json").read_text()):
        records.setdefault(record["file_name"], []).append(
            {key: value for key, value in record.items() if key not in ("image_id", "file_name")})
    assert records["animated.tiff"] == records["first-frame.png"] and len(records["animated.tiff"]) >= 5


def test_cli_decoding_follows_the_processors_own_pixel_limit(tmp_path):
    path = tmp_path / "medium.png"
    Image.fromarray(random_rgb(60, 80)).save(path)  # 4800 pixels
    assert decode_image(str(path), MaskRCNNImageProcessor()).shape == (60, 80, 3)
    with pytest.raises(ImageTooLargeError, match="medium.png"):
        decode_image(str(path), MaskRCNNImageProcessor(max_image_pixels=4000))
    assert decode_image(str(path), MaskRCNNImageProcessor(max_image_pixels=None)).shape == (60, 80, 3)


# ================================================================================================================
# Weights and config.json: every mismatch fails at load time with one message
# ================================================================================================================
def folder_variant(model_dir: Path, target: Path, config_changes=None, weights=None) -> Path:
    """A copy of the converted folder's config.json (with `config_changes`) next to its weights (linked, unless
    `weights` gives the bytes or a callable that writes them)."""
    target.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    config.update(config_changes or {})
    if "id2label" in (config_changes or {}):
        config.pop("label2id", None)
    (target / "config.json").write_text(json.dumps(config))
    if weights is None:
        try:
            os.symlink(model_dir / "model.safetensors", target / "model.safetensors")
        except OSError:  # no symlinks on this file system
            shutil.copyfile(model_dir / "model.safetensors", target / "model.safetensors")
    elif callable(weights):
        weights(target / "model.safetensors")
    else:
        (target / "model.safetensors").write_bytes(weights)
    return target


def weights_head(model_dir: Path, size: int) -> bytes:
    with open(model_dir / "model.safetensors", "rb") as handle:
        return handle.read(size)


@pytest.mark.parametrize("name, make_weights", [
    ("empty", lambda model_dir: b""),
    ("truncated-header", lambda model_dir: weights_head(model_dir, 200)),
    ("truncated-data", lambda model_dir: weights_head(model_dir, 1 << 20)),
    ("garbage", lambda model_dir: b"\xff" * 64),
    ("corrupt-header", lambda model_dir: weights_head(model_dir, 8) + b"{not json" + weights_head(model_dir, 1 << 16)[17:]),
])
def test_unreadable_weights_fail_at_load_time_naming_the_file(model_dir, tmp_path, name, make_weights):
    folder = folder_variant(model_dir, tmp_path / name, weights=make_weights(model_dir))
    with pytest.raises(OSError, match="model.safetensors is not a readable safetensors file") as error:
        MaskRCNNForInstanceSegmentation.from_pretrained(folder)
    assert str(folder) in str(error.value) and "truncated or corrupted" in str(error.value)


def test_extra_tensor_in_the_weights_fails_at_load_time(model_dir, tmp_path):
    def with_extra_tensor(path):
        tensors = load_file(model_dir / "model.safetensors")
        tensors["roi_head.bogus.weight"] = torch.zeros(3)
        save_file(tensors, path, metadata={"format": "pt"})

    folder = folder_variant(model_dir, tmp_path / "extra", weights=with_extra_tensor)
    with pytest.raises(ValueError, match=r"do not match .*\(unexpected keys \(1\): roi_head\.bogus\.weight\)"):
        MaskRCNNForInstanceSegmentation.from_pretrained(folder)


@pytest.mark.parametrize("changes, message", [
    ({"id2label": {str(index): f"class {index}" for index in range(3)}},
     r"config\.json has 3 classes \(id2label\) but the weights were made for 80"),
    ({"backbone_depth": 101}, r"backbone_depth=101 \(23 blocks in stage 3\) but the weights have 6 blocks"),
    ({"backbone_groups": 32, "backbone_base_width": 4},
     r"backbone_groups=32, backbone_base_width=4 .* but the weights have \(64, 64, 3, 3\)"),
    ({"fpn_out_channels": 128}, r"mismatched keys \(\d+\): .*fpn\."),
])
def test_config_that_does_not_describe_the_weights_fails_at_load_time(model_dir, tmp_path, changes, message):
    folder = folder_variant(model_dir, tmp_path / "variant", config_changes=changes)
    with pytest.raises(ValueError, match=f"The weights in {folder} do not match .*{message}"):
        MaskRCNNForInstanceSegmentation.from_pretrained(folder)


@pytest.mark.parametrize("changes, message", [
    ({"score_threshold": -0.5}, r"score_threshold must lie in \[0, 1\], got -0\.5"),
    ({"rpn_nms_iou_threshold": 1.5}, r"rpn_nms_iou_threshold must lie in \[0, 1\]"),
    ({"anchor_strides": [4, 8, 16, 32, 128]}, r"anchor_strides \[4, 8, 16, 32, 128\] do not match the FPN levels"),
    ({"fpn_num_outs": 6}, "anchor_strides has 5 entries but the FPN has 6 outputs"),
    ({"max_detections_per_image": 0}, "max_detections_per_image must be a positive integer"),
])
def test_nonsense_config_json_values_fail_at_load_time(model_dir, tmp_path, changes, message):
    folder = folder_variant(model_dir, tmp_path / "nonsense", config_changes=changes)
    with pytest.raises(ValueError, match=f"Invalid MaskRCNNConfig: {message}"):
        MaskRCNNForInstanceSegmentation.from_pretrained(folder)
