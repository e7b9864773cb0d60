"""Tests of MaskRCNNImageProcessor: MMDetection-equal decoding, resize, normalisation, padding and post-processing.

OpenCV is MMDetection's reference for decoding and resizing; the tests that compare against it are skipped when cv2
is not installed. Everything runs on CPU in a few seconds.
"""

from __future__ import annotations

import io
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import image_processing_mask_rcnn as processing
from configuration_mask_rcnn import CAFFE_STYLE_NORMALIZATION, PYTORCH_STYLE_NORMALIZATION
from image_processing_mask_rcnn import (
    PASTE_CHUNK_PIXELS,
    MaskRCNNImageProcessor,
    compute_rescaled_size,
    iter_pasted_masks,
    load_image,
    paste_masks,
    resize_bilinear_uint8,
)

try:
    import cv2
except ImportError:
    cv2 = None

needs_cv2 = pytest.mark.skipif(cv2 is None, reason="OpenCV (the reference implementation) is not installed")
EXIF_ORIENTATION_TAG = 0x0112
MASK_SIZE = 28


def random_image(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def encode(image: Image.Image, image_format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def opencv_decode_rgb(data: bytes) -> np.ndarray:
    """MMDetection's LoadImageFromFile (cv2.imdecode IMREAD_COLOR, BGR) turned to RGB."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]


def opencv_resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)


@pytest.fixture
def pure_numpy_resize(monkeypatch):
    """Makes the processor use its own resize instead of OpenCV."""
    monkeypatch.setattr(processing, "cv2", None)


# ----------------------------------------------------------------------------------------------------------------
# Resize: pixel values
# ----------------------------------------------------------------------------------------------------------------
RESIZE_CASES = [
    (480, 640, 800, 1067),  # COCO-like upscale
    (375, 500, 800, 1067),
    (640, 427, 1199, 800),
    (100, 2000, 67, 1333),  # extreme aspect ratio, downscale
    (1600, 2666, 800, 1333),  # exact 2x downscale: OpenCV switches to INTER_AREA
    (37, 41, 74, 82),  # exact 2x upscale
    (90, 120, 30, 40),  # exact 3x downscale
    (800, 1333, 800, 1333),  # same size
    (1, 1, 5, 7),
    (1, 50, 1, 13),
    (50, 1, 3, 1),
    (7, 9, 1, 1),
    (2, 3, 800, 1200),
    (31, 17, 29, 19),
]


@needs_cv2
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("height, width, new_height, new_width", RESIZE_CASES)
def test_resize_is_bit_exact_with_opencv(height, width, new_height, new_width, channels):
    image = random_image(height, width, channels, seed=height * 7 + width)
    expected = opencv_resize(image, new_width, new_height)
    np.testing.assert_array_equal(resize_bilinear_uint8(image, new_width, new_height), expected)


@needs_cv2
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(1, 96), width=st.integers(1, 96), new_height=st.integers(1, 160),
       new_width=st.integers(1, 160), channels=st.sampled_from([1, 3, 4]), seed=st.integers(0, 2**31),
       extremes_only=st.booleans())
def test_resize_matches_opencv_property(height, width, new_height, new_width, channels, seed, extremes_only):
    image = random_image(height, width, channels, seed)
    if extremes_only:  # only 0 and 255: largest intermediate sums, saturation
        image = np.where(image >= 128, 255, 0).astype(np.uint8)
    expected = opencv_resize(image, new_width, new_height)
    np.testing.assert_array_equal(resize_bilinear_uint8(image, new_width, new_height), expected)


@needs_cv2
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(height=st.integers(1, 700), width=st.integers(1, 700), seed=st.integers(0, 2**31))
def test_resize_matches_opencv_at_mmdetection_sizes(height, width, seed):
    new_width, new_height = compute_rescaled_size(width, height, (1333, 800))
    image = random_image(height, width, 3, seed)
    expected = opencv_resize(image, new_width, new_height)
    np.testing.assert_array_equal(resize_bilinear_uint8(image, new_width, new_height), expected)


def test_resize_without_opencv_keeps_constant_images_and_averages_exact_halving():
    constant = np.full((13, 17, 3), 201, dtype=np.uint8)
    assert (resize_bilinear_uint8(constant, 40, 29) == 201).all()
    assert (resize_bilinear_uint8(constant, 5, 3) == 201).all()
    image = random_image(6, 8, 3, seed=3).astype(np.int32)
    halved = resize_bilinear_uint8(image.astype(np.uint8), 4, 3)
    blocks = image[0::2, 0::2] + image[0::2, 1::2] + image[1::2, 0::2] + image[1::2, 1::2]
    np.testing.assert_array_equal(halved, (blocks + 2) >> 2)


@needs_cv2
def test_resize_accepts_two_dimensional_images_and_rejects_bad_ones():
    image = random_image(11, 23, 1, seed=7)[:, :, 0]
    np.testing.assert_array_equal(resize_bilinear_uint8(image, 30, 17), cv2.resize(image, (30, 17)))
    with pytest.raises(ValueError, match="uint8"):
        resize_bilinear_uint8(image.astype(np.float32), 30, 17)
    with pytest.raises(ValueError, match="1x1"):
        resize_bilinear_uint8(image, 0, 17)


def test_resize_speed_of_pure_implementation():
    image = random_image(480, 640, 3)
    durations = []
    for _ in range(3):
        start = time.perf_counter()
        resize_bilinear_uint8(image, 1067, 800)
        durations.append(time.perf_counter() - start)
    # Typically ~30 ms on one idle core; the bound leaves room for a loaded CI machine.
    assert min(durations) < 0.5


# ----------------------------------------------------------------------------------------------------------------
# Resize: sizes and scale factors (mmcv.rescale_size)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width, height, new_width, new_height, scale_factor", [
    (640, 480, 1067, 800, (1.6671875, 1.6666666666666667)),
    (500, 375, 1067, 800, (2.134, 800 / 375)),
    (427, 640, 800, 1199, (800 / 427, 1.8734375)),
    (2000, 100, 1333, 67, (0.6665, 0.67)),
])
def test_sizes_and_scale_factors_follow_mmcv(width, height, new_width, new_height, scale_factor):
    assert compute_rescaled_size(width, height, (1333, 800)) == (new_width, new_height)
    assert compute_rescaled_size(width, height, (800, 1333)) == (new_width, new_height)
    outputs = MaskRCNNImageProcessor()(np.zeros((height, width, 3), dtype=np.uint8))
    assert outputs["image_sizes"].tolist() == [[new_height, new_width]]
    assert outputs["original_sizes"].tolist() == [[height, width]]
    assert outputs["scale_factors"].dtype == torch.float64
    assert outputs["scale_factors"].tolist() == [list(scale_factor)]


def test_too_elongated_image_keeps_one_pixel():
    assert compute_rescaled_size(100000, 1, (1333, 800)) == (1333, 1)


# ----------------------------------------------------------------------------------------------------------------
# Normalisation, channel order, padding
# ----------------------------------------------------------------------------------------------------------------
def test_normalisation_values_and_zero_padding():
    colour = np.array([10, 20, 30], dtype=np.uint8)
    image = np.broadcast_to(colour, (45, 70, 3)).copy()
    outputs = MaskRCNNImageProcessor(do_resize=False)(image)
    pixel_values = outputs["pixel_values"]
    assert pixel_values.shape == (1, 3, 64, 96) and pixel_values.dtype == torch.float32
    mean = torch.tensor(PYTORCH_STYLE_NORMALIZATION["image_mean"], dtype=torch.float32)
    std = torch.tensor(PYTORCH_STYLE_NORMALIZATION["image_std"], dtype=torch.float32)
    expected = (torch.tensor(colour, dtype=torch.float32) - mean) / std
    assert torch.equal(pixel_values[0, :, 44, 69], expected)
    assert (pixel_values[0, :, 45:, :] == 0).all() and (pixel_values[0, :, :, 70:] == 0).all()


def test_caffe_style_flips_to_bgr_on_uint8_then_subtracts_mean():
    image = random_image(32, 32, 3, seed=5)
    processor = MaskRCNNImageProcessor(do_resize=False, **CAFFE_STYLE_NORMALIZATION)
    pixel_values = processor(image)["pixel_values"][0]
    bgr = torch.from_numpy(image[:, :, ::-1].copy()).permute(2, 0, 1).float()
    mean = torch.tensor(CAFFE_STYLE_NORMALIZATION["image_mean"], dtype=torch.float32).view(3, 1, 1)
    assert torch.equal(pixel_values, (bgr - mean) / torch.ones(3, 1, 1))


@needs_cv2
def test_end_to_end_preprocessing_equals_mmdetection_recipe(tmp_path):
    """LoadImageFromFile -> Resize(1333, 800, keep_ratio) -> DetDataPreprocessor written with OpenCV directly."""
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(Image.fromarray(random_image(240, 320, 3, seed=9)), "JPEG", quality=90))
    bgr = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_COLOR)
    resized = cv2.resize(bgr, (1067, 800), interpolation=cv2.INTER_LINEAR)
    tensor = torch.from_numpy(resized).permute(2, 0, 1)[[2, 1, 0]].float()
    mean = torch.tensor(PYTORCH_STYLE_NORMALIZATION["image_mean"]).view(3, 1, 1)
    std = torch.tensor(PYTORCH_STYLE_NORMALIZATION["image_std"]).view(3, 1, 1)
    expected = F.pad((tensor - mean) / std, (0, 1088 - 1067, 0, 0), value=0)
    for source in (path, str(path), path.read_bytes()):
        assert torch.equal(MaskRCNNImageProcessor()(source)["pixel_values"][0], expected)


def test_pure_resize_gives_the_same_pixel_values_as_opencv_route(monkeypatch):
    image = random_image(300, 410, 3, seed=11)
    with_default = MaskRCNNImageProcessor()(image)["pixel_values"]
    monkeypatch.setattr(processing, "cv2", None)
    assert torch.equal(MaskRCNNImageProcessor()(image)["pixel_values"], with_default)


def test_batch_pads_each_axis_to_the_rounded_maximum(pure_numpy_resize):
    processor = MaskRCNNImageProcessor()
    first, second = random_image(480, 640, seed=1), random_image(100, 2000, seed=2)
    batch = processor([first, second])
    assert batch["pixel_values"].shape == (2, 3, 800, 1344)
    assert batch["image_sizes"].tolist() == [[800, 1067], [67, 1333]]
    for index, image in enumerate((first, second)):
        single = processor(image)["pixel_values"][0]
        height, width = batch["image_sizes"][index].tolist()
        assert torch.equal(batch["pixel_values"][index, :, :height, :width], single[:, :height, :width])
        assert (batch["pixel_values"][index, :, height:, :] == 0).all()
        assert (batch["pixel_values"][index, :, :, width:] == 0).all()


def test_switches_and_per_call_overrides():
    image = random_image(50, 70, seed=4)
    raw = MaskRCNNImageProcessor(do_resize=False, do_normalize=False, do_pad=False)(image)
    assert torch.equal(raw["pixel_values"][0], torch.from_numpy(image).permute(2, 0, 1).float())
    assert raw["scale_factors"].tolist() == [[1.0, 1.0]]
    padded = MaskRCNNImageProcessor()(image, do_resize=False, size_divisor=64, pad_value=-1.0)
    assert padded["pixel_values"].shape == (1, 3, 64, 128) and (padded["pixel_values"][0, :, 50:] == -1).all()
    with pytest.raises(ValueError, match="do_pad=False"):
        MaskRCNNImageProcessor(do_pad=False, do_resize=False)([image, random_image(20, 30)])
    assert MaskRCNNImageProcessor()(image, return_tensors="np")["pixel_values"].dtype == np.float32


# ----------------------------------------------------------------------------------------------------------------
# Input decoding (OpenCV IMREAD_COLOR semantics)
# ----------------------------------------------------------------------------------------------------------------
def make_mode_image(mode: str) -> Image.Image:
    rgb = Image.fromarray(random_image(9, 13, 3, seed=21))
    if mode == "RGBA":
        return Image.fromarray(random_image(9, 13, 4, seed=22), mode="RGBA")
    if mode == "LA":
        return Image.merge("LA", [rgb.convert("L"), rgb.getchannel(1)])
    if mode == "P":
        palette_image = rgb.quantize(16)
        palette_image.info["transparency"] = 3
        return palette_image
    if mode == "I;16":
        return Image.fromarray(np.random.default_rng(23).integers(0, 65536, (9, 13), dtype=np.uint16))
    return rgb.convert(mode)


@needs_cv2
@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "1", "P", "I;16"])
def test_png_modes_decode_like_opencv(mode, pure_numpy_resize):
    data = encode(make_mode_image(mode), "PNG", **({"transparency": 3} if mode == "P" else {}))
    expected = opencv_decode_rgb(data)
    processor = MaskRCNNImageProcessor(do_resize=False, do_normalize=False, do_pad=False)
    for source in (data, load_image(data)):
        pixel_values = processor(source)["pixel_values"][0]
        assert torch.equal(pixel_values, torch.from_numpy(expected.copy()).permute(2, 0, 1).float())


def test_pil_modes_without_opencv():
    to_rgb = processing.pil_to_rgb_array
    rgba = make_mode_image("RGBA")
    np.testing.assert_array_equal(to_rgb(rgba), np.asarray(rgba)[:, :, :3])  # alpha dropped, not composited
    la = make_mode_image("LA")
    np.testing.assert_array_equal(to_rgb(la), np.repeat(np.asarray(la)[:, :, :1], 3, axis=2))
    bilevel = make_mode_image("1")
    assert set(np.unique(to_rgb(bilevel))) <= {0, 255}
    palette = make_mode_image("P")
    np.testing.assert_array_equal(to_rgb(palette), np.asarray(palette.convert("RGB")))
    sixteen = make_mode_image("I;16")
    np.testing.assert_array_equal(to_rgb(sixteen)[:, :, 0], (np.asarray(sixteen) >> 8).astype(np.uint8))
    integer = Image.fromarray(np.array([[-5, 255, 65535, 70000]], dtype=np.int32))
    np.testing.assert_array_equal(to_rgb(integer)[0, :, 1], [0, 0, 255, 255])
    floating = Image.fromarray(np.array([[-3.0, 0.5, 1.5, 254.6, 300.0]], dtype=np.float32))
    np.testing.assert_array_equal(to_rgb(floating)[0, :, 2], [0, 0, 2, 255, 255])
    for mode in ("YCbCr", "HSV", "RGBX"):
        assert to_rgb(make_mode_image(mode)).shape == (9, 13, 3)


def test_cmyk_uses_opencv_arithmetic():
    ink = np.random.default_rng(31).integers(0, 256, (7, 9, 4), dtype=np.uint8)
    rgb = processing.pil_to_rgb_array(Image.fromarray(ink, mode="CMYK"))
    white = 255 - ink[:, :, 3:4].astype(np.int32)
    np.testing.assert_array_equal(rgb, white - ((ink[:, :, :3].astype(np.int32) * white) >> 8))
    if cv2 is not None:
        data = encode(Image.fromarray(ink, mode="CMYK"), "JPEG", quality=95)
        np.testing.assert_array_equal(processing.pil_to_rgb_array(load_image(data)), opencv_decode_rgb(data))


def test_sixteen_bit_png_keeps_the_high_byte(tmp_path):
    values = np.array([[0, 255, 256, 511, 65535, 32767]], dtype=np.uint16)
    path = tmp_path / "depth.png"
    Image.fromarray(values).save(path)
    pixel_values = MaskRCNNImageProcessor(do_resize=False, do_normalize=False, do_pad=False)(path)["pixel_values"]
    assert pixel_values[0, 0, 0].tolist() == [0, 0, 1, 1, 255, 127]
    if cv2 is not None:
        assert opencv_decode_rgb(path.read_bytes())[0, :, 0].tolist() == [0, 0, 1, 1, 255, 127]


def test_exif_orientation_is_applied_to_files_and_pil_images(tmp_path):
    pixels = random_image(61, 83, 3, seed=41)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    path.write_bytes(encode(Image.fromarray(pixels), "JPEG", quality=95, exif=exif.tobytes()))
    processor = MaskRCNNImageProcessor(do_resize=False, do_normalize=False, do_pad=False)
    from_file = processor(str(path))
    assert from_file["original_sizes"].tolist() == [[83, 61]]
    from_pil = processor(Image.open(path))
    assert torch.equal(from_file["pixel_values"], from_pil["pixel_values"])
    assert load_image(path).size == (61, 83)
    if cv2 is not None:
        expected = torch.from_numpy(opencv_decode_rgb(path.read_bytes()).copy()).permute(2, 0, 1).float()
        assert torch.equal(from_file["pixel_values"][0], expected)


def test_array_and_tensor_layouts_and_dtypes_agree():
    image = random_image(20, 30, 3, seed=51)
    processor = MaskRCNNImageProcessor()
    reference = processor(image)["pixel_values"]
    variants = [
        image.transpose(2, 0, 1),
        image.astype(np.float32) / 255.0,
        image.astype(np.uint16) * 257,
        np.concatenate([image, np.full((20, 30, 1), 7, np.uint8)], axis=2),
        torch.from_numpy(image).permute(2, 0, 1),
        torch.from_numpy(image),
        Image.fromarray(image),
        [image],
    ]
    for variant in variants:
        assert torch.equal(processor(variant)["pixel_values"], reference)
    gray = image[:, :, 0]
    assert torch.equal(processor(gray)["pixel_values"], processor(np.stack([gray] * 3, axis=2))["pixel_values"])
    assert processor(np.stack([image, image]))["pixel_values"].shape[0] == 2


@pytest.mark.parametrize("bad_input, error, message", [
    (np.zeros((0, 5, 3), np.uint8), ValueError, "empty"),
    (torch.zeros((3, 0, 5)), ValueError, "empty"),
    (np.zeros((5, 0), np.float32), ValueError, "empty"),
    (np.zeros((5, 5, 3), np.float32) + 2.0, ValueError, r"\[0, 1\]"),
    (np.full((5, 5, 3), np.nan, np.float32), ValueError, "finite"),
    (np.zeros((5, 5, 3), np.int32) - 1, ValueError, "0..255"),
    (np.zeros((5, 5, 5, 5, 5), np.uint8), ValueError, "dimensions"),
    (np.zeros((7, 7, 7), np.uint8), ValueError, "channel axis"),
    (12345, TypeError, "int"),
])
def test_bad_inputs_raise_clear_errors(bad_input, error, message):
    with pytest.raises(error, match=message):
        MaskRCNNImageProcessor()([random_image(8, 8), bad_input])
    with pytest.raises(error, match="image 1 of the batch"):
        MaskRCNNImageProcessor()([random_image(8, 8), bad_input])


def test_missing_or_broken_files_name_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(OSError, match="missing.jpg"):
        MaskRCNNImageProcessor()(missing)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(OSError, match="broken.png"):
        MaskRCNNImageProcessor()([random_image(8, 8), broken])
    with pytest.raises(ValueError, match="empty list"):
        MaskRCNNImageProcessor()([])
    with pytest.raises(ValueError, match="empty"):
        MaskRCNNImageProcessor()(Image.new("RGB", (0, 4)))


# ----------------------------------------------------------------------------------------------------------------
# Post-processing
# ----------------------------------------------------------------------------------------------------------------
def fake_outputs(boxes_per_image, image_sizes, original_sizes=None, scale_factors=None, seed=0):
    """Model-like outputs with per-image lists, scores descending, random mask probabilities."""
    generator = torch.Generator().manual_seed(seed)
    scores = [torch.sort(torch.rand(len(boxes), generator=generator) * 0.9 + 0.05, descending=True).values
              for boxes in boxes_per_image]
    return SimpleNamespace(
        pred_boxes=[torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) for boxes in boxes_per_image],
        scores=scores,
        labels=[torch.randint(0, 80, (len(boxes),), generator=generator) for boxes in boxes_per_image],
        mask_probs=[torch.rand(len(boxes), MASK_SIZE, MASK_SIZE, generator=generator) for boxes in boxes_per_image],
        image_sizes=torch.tensor(image_sizes),
        original_sizes=None if original_sizes is None else torch.tensor(original_sizes),
        scale_factors=None if scale_factors is None else torch.tensor(scale_factors, dtype=torch.float64),
    )


def reference_full_canvas_paste(mask_probs, boxes, height, width, threshold=0.5):
    """MMDetection's GPU-style paste (skip_empty=False): every mask sampled over the whole canvas at once."""
    count = boxes.shape[0]
    left, top, right, bottom = torch.split(boxes, 1, dim=1)
    ys = (torch.arange(0, height, dtype=torch.float32) + 0.5 - top) / (bottom - top) * 2 - 1
    xs = (torch.arange(0, width, dtype=torch.float32) + 0.5 - left) / (right - left) * 2 - 1
    xs[torch.isinf(xs)] = 0
    ys[torch.isinf(ys)] = 0
    grid = torch.stack([xs[:, None, :].expand(count, height, width), ys[:, :, None].expand(count, height, width)], 3)
    return F.grid_sample(mask_probs[:, None].float(), grid, align_corners=False)[:, 0] >= threshold


def test_boxes_are_divided_in_float32_without_clipping():
    outputs = fake_outputs([[[10.3, 20.7, 1066.9, 799.99], [0.0, 0.0, 5.5, 6.5]]], [[800, 1067]],
                           original_sizes=[[480, 640]], scale_factors=[[1067 / 640, 800 / 480]])
    result = MaskRCNNImageProcessor().post_process_object_detection(outputs, threshold=0.0)[0]
    factors = torch.tensor([1067 / 640, 800 / 480] * 2, dtype=torch.float32)
    assert torch.equal(result["boxes"], outputs.pred_boxes[0] / factors)
    assert result["boxes"].dtype == torch.float32 and result["boxes"][0, 2] > 639.9


def test_paste_equals_full_canvas_grid_sample_reference():
    generator = torch.Generator().manual_seed(3)
    height, width = 97, 131
    corners = torch.rand(60, 2, generator=generator) * torch.tensor([width + 40.0, height + 40.0]) - 20
    sizes = torch.rand(60, 2, generator=generator) * torch.tensor([80.0, 60.0])
    boxes = torch.cat([corners, corners + sizes], dim=1)
    boxes[0] = torch.tensor([10.0, 10.0, 10.5, 10.25])  # tiny
    boxes[1] = torch.tensor([-5.0, -5.0, 200.0, 150.0])  # larger than the canvas
    boxes[2] = torch.tensor([50.25, 40.5, 51.0, 41.0])  # smaller than a pixel
    mask_probs = torch.rand(60, MASK_SIZE, MASK_SIZE, generator=generator)
    for threshold in (0.5, 0.3):
        pasted = paste_masks(mask_probs, boxes, height, width, threshold)
        assert pasted.dtype == torch.bool and pasted.shape == (60, height, width)
        assert torch.equal(pasted, reference_full_canvas_paste(mask_probs, boxes, height, width, threshold))


def test_rle_masks_equal_pycocotools_encoding_of_the_pasted_masks():
    coco_mask = pytest.importorskip("pycocotools.mask")
    generator = torch.Generator().manual_seed(11)
    height, width = 83, 117
    corners = torch.rand(40, 2, generator=generator) * torch.tensor([width + 30.0, height + 30.0]) - 15
    boxes = torch.cat([corners, corners + torch.rand(40, 2, generator=generator) * 70], dim=1)
    boxes[0] = torch.tensor([-5.0, -5.0, 200.0, 150.0])  # covers the whole canvas: no zero columns around it
    boxes[1] = torch.tensor([0.0, 0.0, 3.0, 83.0])  # touches the left edge and spans every row
    boxes[2] = torch.tensor([300.0, 300.0, 310.0, 310.0])  # outside the canvas: empty mask
    boxes[3] = torch.tensor([110.0, 0.0, 117.0, 83.0])  # touches the right edge
    mask_probs = torch.rand(40, MASK_SIZE, MASK_SIZE, generator=generator)
    mask_probs[0] = 1.0
    for threshold in (0.5, 0.2):
        dense = paste_masks(mask_probs, boxes, height, width, threshold).numpy()
        rles = processing.encode_pasted_masks_rle(mask_probs, boxes, height, width, threshold)
        expected = coco_mask.encode(np.asfortranarray(dense.transpose(1, 2, 0).astype(np.uint8)))
        assert [rle["counts"] for rle in rles] == [rle["counts"].decode("ascii") for rle in expected]
        assert all(rle["size"] == [height, width] for rle in rles)
    assert not dense[2].any() and dense[0].all()
    assert processing.encode_pasted_masks_rle(mask_probs[:0], boxes[:0], height, width) == []


def test_post_processing_returns_rle_masks_when_asked():
    pytest.importorskip("pycocotools.mask")
    outputs = fake_outputs([[[10.0, 20.0, 300.0, 200.0], [0.0, 0.0, 50.5, 60.5]]], [[400, 533]],
                           original_sizes=[[300, 400]], scale_factors=[[533 / 400, 400 / 300]])
    processor = MaskRCNNImageProcessor()
    dense = processor.post_process_instance_segmentation(outputs, threshold=0.0)[0]
    encoded = processor.post_process_instance_segmentation(outputs, threshold=0.0, return_rle=True)[0]
    assert "masks" not in encoded and len(encoded["rle_masks"]) == 2
    assert torch.equal(encoded["boxes"], dense["boxes"]) and torch.equal(encoded["scores"], dense["scores"])
    from pycocotools import mask as coco_mask

    decoded = np.stack([coco_mask.decode({"size": rle["size"], "counts": rle["counts"].encode()})
                        for rle in encoded["rle_masks"]])
    assert np.array_equal(decoded.astype(bool), dense["masks"].numpy())
    with pytest.raises(ValueError, match="cannot be combined with return_binary_maps=False"):
        processor.post_process_instance_segmentation(outputs, return_rle=True, return_binary_maps=False)


def test_zero_width_box_is_pasted_inside_its_window_like_mmdetection_on_cpu():
    """x2 == x1 gives +-inf grid coordinates, which MMDetection sets to 0 (the mask's centre column). On CPU
    (skip_empty) only the window columns floor(x1) - 1 .. ceil(x2) + 1 are sampled; a full-canvas paste (MMDetection
    on GPU) would instead fill the whole row band. We follow the CPU path."""
    mask_probs = torch.ones(1, MASK_SIZE, MASK_SIZE)
    boxes = torch.tensor([[10.0, 10.0, 10.0, 30.0]])
    pasted = paste_masks(mask_probs, boxes, 40, 50)
    assert pasted[0].nonzero()[:, 1].unique().tolist() == [9, 10]
    assert pasted[0].nonzero()[:, 0].unique().tolist() == list(range(10, 30))
    assert reference_full_canvas_paste(mask_probs, boxes, 40, 50)[0, 10:30].all()


def test_paste_row_chunking_gives_identical_masks(monkeypatch):
    mask_probs = torch.rand(3, MASK_SIZE, MASK_SIZE, generator=torch.Generator().manual_seed(8))
    boxes = torch.tensor([[3.2, 4.1, 120.7, 90.3], [0.0, 0.0, 140.0, 100.0], [60.5, 20.5, 61.5, 21.5]])
    whole = paste_masks(mask_probs, boxes, 100, 140)
    monkeypatch.setattr(processing, "PASTE_CHUNK_PIXELS", 500)
    assert torch.equal(paste_masks(mask_probs, boxes, 100, 140), whole)


def test_paste_on_a_large_canvas_samples_only_box_windows_in_bounded_chunks(monkeypatch):
    """100 boxes on a 4000x3000 canvas: every grid_sample call covers at most PASTE_CHUNK_PIXELS pixels."""
    sampled_pixel_counts = []
    original_grid_sample = F.grid_sample

    def recording_grid_sample(mask, grid, **options):
        sampled_pixel_counts.append(grid.shape[0] * grid.shape[1] * grid.shape[2])
        return original_grid_sample(mask, grid, **options)

    monkeypatch.setattr(processing.F, "grid_sample", recording_grid_sample)
    generator = torch.Generator().manual_seed(5)
    corners = torch.rand(100, 2, generator=generator) * torch.tensor([3800.0, 2800.0])
    boxes = torch.cat([corners, corners + 5 + torch.rand(100, 2, generator=generator) * 150], dim=1)
    boxes[0] = torch.tensor([0.0, 0.0, 4000.0, 3000.0])
    mask_probs = torch.rand(100, MASK_SIZE, MASK_SIZE, generator=generator)
    windows = list(iter_pasted_masks(mask_probs, boxes, 3000, 4000, 0.5))
    assert len(windows) == 100
    assert max(sampled_pixel_counts) <= PASTE_CHUNK_PIXELS
    full_window_pixels = windows[0][3].numel()
    assert full_window_pixels == 3000 * 4000
    assert sum(sampled_pixel_counts) < 3000 * 4000 + 100 * 160 * 160


def test_instance_segmentation_threshold_order_and_fields():
    outputs = fake_outputs([[[10, 10, 50, 60], [20, 5, 70, 40], [0, 0, 30, 30]]], [[100, 133]],
                           original_sizes=[[60, 80]])
    outputs.scores = [torch.tensor([0.9, 0.5, 0.2])]
    processor = MaskRCNNImageProcessor()
    kept = processor.post_process_instance_segmentation(outputs, threshold=0.5)[0]
    assert kept["scores"].tolist() == pytest.approx([0.9, 0.5])  # inclusive threshold: 0.5 is kept
    assert kept["masks"].shape == (2, 60, 80) and kept["masks"].dtype == torch.bool
    everything = processor.post_process_instance_segmentation(outputs, threshold=0.0)[0]
    assert everything["labels"].dtype == torch.int64 and len(everything["scores"]) == 3
    expected_boxes = outputs.pred_boxes[0] / torch.tensor([133 / 80, 100 / 60] * 2, dtype=torch.float32)
    assert torch.equal(everything["boxes"], expected_boxes)
    expected_masks = reference_full_canvas_paste(outputs.mask_probs[0], expected_boxes, 60, 80)
    assert torch.equal(everything["masks"], expected_masks)


def test_unsorted_scores_are_sorted_and_masks_follow_their_detection():
    outputs = fake_outputs([[[10, 10, 50, 60], [20, 5, 70, 40]]], [[100, 100]], original_sizes=[[100, 100]])
    outputs.scores = [torch.tensor([0.3, 0.8])]
    result = MaskRCNNImageProcessor().post_process_instance_segmentation(outputs, threshold=0.0)[0]
    assert result["scores"].tolist() == pytest.approx([0.8, 0.3])
    assert torch.equal(result["boxes"][0], outputs.pred_boxes[0][1])
    single = paste_masks(outputs.mask_probs[0][1:], outputs.pred_boxes[0][1:], 100, 100)
    assert torch.equal(result["masks"][0], single[0])


def test_segmentation_map_matches_binary_masks():
    outputs = fake_outputs([[[10, 10, 50, 60], [20, 5, 70, 40], [30, 30, 90, 95]]], [[100, 100]],
                           original_sizes=[[100, 100]], seed=4)
    processor = MaskRCNNImageProcessor()
    binary = processor.post_process_instance_segmentation(outputs, threshold=0.0)[0]["masks"]
    result = processor.post_process_instance_segmentation(outputs, threshold=0.0, return_binary_maps=False)[0]
    segmentation = result["segmentation"]
    expected = torch.full((100, 100), -1)
    for index in reversed(range(3)):
        expected[binary[index]] = index
    assert torch.equal(segmentation, expected)
    assert [info["id"] for info in result["segments_info"]] == [0, 1, 2]


def test_target_sizes_override_and_object_detection_pipeline_call():
    outputs = fake_outputs([[[10, 10, 50, 60]], [[5, 5, 20, 20]]], [[800, 1067], [800, 1200]])
    processor = MaskRCNNImageProcessor()
    with pytest.raises(ValueError, match="target_sizes"):
        processor.post_process_instance_segmentation(outputs)
    results = processor.post_process_instance_segmentation(outputs, threshold=0.0,
                                                           target_sizes=torch.tensor([[480, 640], [400, 600]]))
    assert results[1]["masks"].shape == (1, 400, 600)
    factors = torch.tensor([1067 / 640, 800 / 480] * 2, dtype=torch.float32)
    assert torch.equal(results[0]["boxes"], outputs.pred_boxes[0] / factors)
    as_list = processor.post_process_object_detection(outputs, 0.0, [(480, 640), (400, 600)])
    assert torch.equal(as_list[0]["boxes"], results[0]["boxes"])
    with pytest.raises(ValueError, match="2 images"):
        processor.post_process_object_detection(outputs, 0.0, [(480, 640)])


def test_original_sizes_without_scale_factors_use_size_ratios():
    outputs = fake_outputs([[[10, 10, 50, 60]]], [[800, 1067]], original_sizes=[[480, 640]])
    with_factors = fake_outputs([[[10, 10, 50, 60]]], [[800, 1067]], original_sizes=[[480, 640]],
                                scale_factors=[[1067 / 640, 800 / 480]])
    processor = MaskRCNNImageProcessor()
    first = processor.post_process_object_detection(outputs, 0.0)[0]["boxes"]
    assert torch.equal(first, processor.post_process_object_detection(with_factors, 0.0)[0]["boxes"])


def test_empty_detections_have_typed_empty_results():
    outputs = fake_outputs([[]], [[800, 1067]], original_sizes=[[480, 640]])
    processor = MaskRCNNImageProcessor()
    result = processor.post_process_instance_segmentation(outputs, threshold=0.0)[0]
    assert result["boxes"].shape == (0, 4) and result["scores"].shape == (0,) and result["labels"].shape == (0,)
    assert result["labels"].dtype == torch.int64
    assert result["masks"].shape == (0, 480, 640) and result["masks"].dtype == torch.bool
    filtered = fake_outputs([[[1, 2, 3, 4]]], [[800, 1067]], original_sizes=[[480, 640]])
    filtered.scores = [torch.tensor([0.1])]
    assert processor.post_process_instance_segmentation(filtered)[0]["masks"].shape == (0, 480, 640)
    assert processor.post_process_object_detection(filtered)[0]["boxes"].shape == (0, 4)


def test_model_output_class_is_accepted():
    from transformers.utils import ModelOutput

    fields = vars(fake_outputs([[[10, 10, 50, 60]]], [[100, 100]], original_sizes=[[100, 100]]))
    outputs = ModelOutput({name: value for name, value in fields.items() if value is not None})
    result = MaskRCNNImageProcessor().post_process_instance_segmentation(outputs, threshold=0.0)[0]
    assert result["masks"].shape == (1, 100, 100)


# ----------------------------------------------------------------------------------------------------------------
# Serialisation
# ----------------------------------------------------------------------------------------------------------------
def test_save_and_load_round_trip(tmp_path):
    processor = MaskRCNNImageProcessor(size_divisor=64, resize_scale=[1000, 600], **CAFFE_STYLE_NORMALIZATION)
    processor.save_pretrained(tmp_path)
    loaded = MaskRCNNImageProcessor.from_pretrained(tmp_path)
    saved = loaded.to_dict()
    # the Hub-folder writer adds the AutoImageProcessor auto_map so the folder loads with trust_remote_code
    assert saved.pop("auto_map") == {"AutoImageProcessor": "image_processing_mask_rcnn.MaskRCNNImageProcessor"}
    assert saved == processor.to_dict()
    assert loaded.input_channel_order == "bgr" and loaded.resize_scale == [1000, 600]
    image = random_image(40, 50, seed=61)
    assert torch.equal(loaded(image)["pixel_values"], processor(image)["pixel_values"])


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="input_channel_order"):
        MaskRCNNImageProcessor(input_channel_order="rbg")
    with pytest.raises(ValueError, match="std"):
        MaskRCNNImageProcessor(image_std=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="size_divisor"):
        MaskRCNNImageProcessor()(random_image(8, 8), size_divisor=0)
    assert math.isclose(MaskRCNNImageProcessor().pad_value, 0.0)
