# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Torch-free image functions of MMDetection's Mask R-CNN pre- and post-processing: NumPy and Pillow only.

The one home of what both `image_processing_mask_rcnn.py` (the transformers image processor) and
`onnx_inference_mask_rcnn.py` (the torch-free ONNX runtime) need to produce the same pixels:

- decoding to 8-bit RGB like OpenCV's `imdecode(IMREAD_COLOR)` (`load_image`, `pil_to_rgb_array`,
  `array_to_rgb_array`), with the decompression-bomb pixel limit;
- mmcv's keep-ratio size (`compute_rescaled_size`) and a bit-exact NumPy `cv2.resize(INTER_LINEAR)`
  (`resize_bilinear_uint8`; `resize_image` uses OpenCV when importable, the identical result only faster);
- normalisation and padding of one batch (`normalize_image`, `pad_batch`);
- MMDetection's CPU mask pasting (`paste_mask_window`: float32 `grid_sample(bilinear, zeros, align_corners=False)`
  of one box window, the same bits as PyTorch's CPU kernel) and COCO RLE counts of a pasted window
  (`window_rle_counts`).
"""

from __future__ import annotations

import io
import logging
import os
import struct
from typing import Any, Optional, Sequence, Union

import numpy as np
from PIL import Image, ImageOps

try:  # optional: only a faster route to the same resize result
    import cv2
except ImportError:
    cv2 = None

logger = logging.getLogger(__name__)

# OpenCV 8-bit INTER_LINEAR (imgproc/src/resize.cpp): weights are int16 fixed point with 11 fractional bits.
RESIZE_COEF_BITS = 11
RESIZE_COEF_SCALE = 1 << RESIZE_COEF_BITS
# Its vertical pass (SIMD and scalar alike) computes ((b0 * (S0 >> 4)) >> 16) + ((b1 * (S1 >> 4)) >> 16), then
# (sum + 2) >> 2: 4 + 16 + 2 = 22 = 2 * RESIZE_COEF_BITS bits in total, but rounded in three steps.
VERTICAL_PRE_SHIFT = 4
VERTICAL_MULHI_SHIFT = 16
VERTICAL_FINAL_SHIFT = 2
UINT8_MAX = 255
UINT16_MAX = 65535
SIXTEEN_TO_EIGHT_BIT_SHIFT = 8  # libpng strip_16 / OpenCV: keep the high byte
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
MAX_CHANNELS = 4  # gray, gray+alpha, RGB, RGBA
# Largest image (height x width) decoded by default: PIL's own decompression-bomb limit `Image.MAX_IMAGE_PIXELS`
# (1 GiB / 4 / 3 = 89,478,485 pixels, e.g. 9459 x 9459; 256 MiB as 8-bit RGB). Larger images are refused from their
# header or shape, before any pixel is decoded or converted. `MaskRCNNImageProcessor(max_image_pixels=...)` changes it.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
# Array pixel values are converted to uint8 in row blocks of at most this many elements, so no full-size float64 or
# int64 copy of a large input is ever made (the temporaries stay below ~8 MiB).
CONVERSION_CHUNK_ELEMENTS = 1 << 20
# What a corrupt file can make PIL raise while decoding (besides OSError, which covers UnidentifiedImageError).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)


class ImageTooLargeError(ValueError, OSError):
    """An image with more pixels than the processor's `max_image_pixels` (or PIL's decompression-bomb limit).

    Both a `ValueError` (a refused input) and an `OSError` (what callers of `load_image` catch for unreadable files).
    """


def check_pixel_count(height: int, width: int, max_pixels: Optional[int], name: str) -> None:
    """Raises ImageTooLargeError when `height * width` exceeds `max_pixels` (None: no limit); `name` names the input."""
    if max_pixels is not None and height * width > max_pixels:
        raise ImageTooLargeError(
            f"{name} has {width}x{height} = {height * width:,} pixels, more than the limit of {max_pixels:,} "
            f"(max_image_pixels, PIL's decompression-bomb limit by default), so it was refused before decoding; "
            f"pass a larger max_image_pixels to the image processor (None: no limit) if the image is trusted.")


# --------------------------------------------------------------------------------------------------------------
# Decoding to 8-bit RGB
# --------------------------------------------------------------------------------------------------------------
def unreadable_image_reason(size_in_bytes: int) -> str:
    """Why PIL could not identify a file of this size: it is empty, or it is not in an image format PIL reads."""
    if size_in_bytes == 0:
        return "the file is empty (0 bytes)."
    return "it is not an image file (PIL cannot identify its format)."


def load_image(source: Union[str, os.PathLike, bytes, Image.Image],
               max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Opens a file path, encoded bytes or PIL image and applies its EXIF orientation; the PIL mode is kept.

    Multi-frame files (animated GIF, multi-page TIFF, ...) give their first frame, like OpenCV's `imdecode`, which
    MMDetection uses. The pixel count is checked from the file header before anything is decoded.

    Args:
        source: a path, encoded bytes or a PIL image.
        max_pixels: the largest `height * width` accepted (None: no limit of ours; PIL still refuses files above twice
            `PIL.Image.MAX_IMAGE_PIXELS`).

    Raises:
        FileNotFoundError / IsADirectoryError: the path does not exist / is a directory (the message names it).
        OSError: the file is empty, truncated or not an image (the message names the file).
        ImageTooLargeError: (an OSError and a ValueError) the image has more than `max_pixels` pixels.
        TypeError: `source` is of another type.
    """
    if isinstance(source, Image.Image):
        check_pixel_count(source.height, source.width, max_pixels, f"the PIL image (mode {source.mode})")
        return ImageOps.exif_transpose(source)
    if isinstance(source, (bytes, bytearray)):
        stream, name = io.BytesIO(source), f"<{len(source)} bytes>"
    elif isinstance(source, (str, os.PathLike)):
        stream, name = os.fspath(source), repr(os.fspath(source))
        if os.path.isdir(stream):
            raise IsADirectoryError(f"Could not read image {name}: it is a directory, not an image file; pass the "
                                    "image files in it instead.")
        if not os.path.exists(stream):
            raise FileNotFoundError(f"Could not read image {name}: the file does not exist.")
    else:
        raise TypeError(f"Cannot load an image from {type(source).__name__}; pass a path, bytes or a PIL image.")
    try:
        image = Image.open(stream)
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"Could not read image {name}: {error} (PIL.Image.MAX_IMAGE_PIXELS)") from error
    except Image.UnidentifiedImageError as error:
        size = len(source) if isinstance(source, (bytes, bytearray)) else os.path.getsize(stream)
        raise OSError(f"Could not read image {name}: {unreadable_image_reason(size)}") from error
    except _DECODE_ERRORS as error:
        raise OSError(f"Could not read image {name}: {error}") from error
    check_pixel_count(image.height, image.width, max_pixels, f"image {name}")
    try:
        image.load()  # the first frame of a multi-frame file
        return ImageOps.exif_transpose(image)
    except _DECODE_ERRORS as error:
        raise OSError(f"Could not read image {name}: {error}") from error


def _gray_to_rgb(gray: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> (H, W, 3) uint8 with three equal channels."""
    return np.repeat(gray[:, :, None], 3, axis=2)


def _cmyk_to_rgb_like_opencv(cmyk: np.ndarray) -> np.ndarray:
    """(H, W, 4) ink values (PIL's CMYK) -> (H, W, 3) uint8 with OpenCV's `icvCvt_CMYK2BGR_8u_C4C3R` arithmetic.

    OpenCV receives Adobe-inverted samples (255 - ink) from libjpeg and computes `k - ((255 - c) * k >> 8)`; in ink
    values that is `(255 - K) - (C * (255 - K) >> 8)`. PIL's own CMYK->RGB divides by 255 and differs by 1 level.
    """
    ink = cmyk.astype(np.int32)
    white_level = UINT8_MAX - ink[:, :, 3:4]
    return (white_level - ((ink[:, :, :3] * white_level) >> 8)).astype(np.uint8)


def pil_to_rgb_array(image: Image.Image) -> np.ndarray:
    """Converts a PIL image of any mode to (H, W, 3) uint8 RGB like OpenCV's `IMREAD_COLOR` decode.

    Gray (`1`, `L`, `LA`) is replicated, alpha is dropped (not composited), palettes are expanded, 16-bit and `I`
    values are clipped to 0..65535 and keep their high byte, `F` values are taken on the 0..255 scale (rounded,
    clipped), CMYK uses OpenCV's formula, every other mode goes through PIL's `convert("RGB")`.
    """
    mode = image.mode
    if mode in SIXTEEN_BIT_MODES:
        return _convert_in_row_blocks(np.asarray(image)[:, :, None], _sixteen_bit_gray_to_uint8)
    if mode == "F":
        values = np.asarray(image)
        if not _all_finite(values):
            raise ValueError(f"the mode F image ({image.width}x{image.height}) holds NaN or infinite pixel values.")
        return _convert_in_row_blocks(values[:, :, None], _float_gray_to_uint8)
    if mode == "CMYK":
        return _cmyk_to_rgb_like_opencv(np.asarray(image))
    if mode in ("1", "L", "LA", "La"):
        return _gray_to_rgb(np.asarray(image.getchannel(0).convert("L")))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def _sixteen_bit_gray_to_uint8(values: np.ndarray) -> np.ndarray:
    """16-bit or `I` gray values: clipped to 0..65535, high byte kept."""
    return (np.clip(values.astype(np.int64), 0, UINT16_MAX) >> SIXTEEN_TO_EIGHT_BIT_SHIFT).astype(np.uint8)


def _float_gray_to_uint8(values: np.ndarray) -> np.ndarray:
    """Mode `F` gray values on the 0..255 scale: rounded half to even, clipped."""
    return np.clip(np.rint(values.astype(np.float64)), 0, UINT8_MAX).astype(np.uint8)


def _convert_in_row_blocks(colour: np.ndarray, convert: Any) -> np.ndarray:
    """(H, W, 1 or 3) values -> (H, W, 3) uint8 with `convert` applied to row blocks of at most
    `CONVERSION_CHUNK_ELEMENTS` elements (one channel is replicated), so temporaries stay small for large images."""
    height, width, num_channels = colour.shape
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rows_per_block = max(1, CONVERSION_CHUNK_ELEMENTS // max(1, width * num_channels))
    for start in range(0, height, rows_per_block):
        rgb[start:start + rows_per_block] = convert(colour[start:start + rows_per_block])
    return rgb


def _all_finite(values: np.ndarray) -> bool:
    """`np.isfinite(values).all()` evaluated in blocks along the first axis (no full-size boolean temporary)."""
    if values.ndim == 0 or values.size == 0:
        return bool(np.isfinite(values).all())
    rows_per_block = max(1, CONVERSION_CHUNK_ELEMENTS // max(1, values.size // values.shape[0]))
    return all(np.isfinite(values[start:start + rows_per_block]).all()
               for start in range(0, values.shape[0], rows_per_block))


def _channel_axis_layout(shape: Sequence[int], channels_first_preferred: bool) -> str:
    """"hw", "hwc" or "chw" for an image of `shape`; the channel axis must have 1..4 entries."""
    if len(shape) == 2:
        return "hw"
    if len(shape) != 3:
        raise ValueError(f"expected an array of 2 or 3 dimensions (H, W[, C]) or (C, H, W), got shape "
                         f"{tuple(shape)}.")
    first_is_channels = 1 <= shape[0] <= MAX_CHANNELS
    last_is_channels = 1 <= shape[2] <= MAX_CHANNELS
    if first_is_channels and (channels_first_preferred or not last_is_channels):
        return "chw"
    if last_is_channels:
        return "hwc"
    raise ValueError(f"cannot find the channel axis of shape {tuple(shape)}: the first or last axis must "
                     f"have 1 to {MAX_CHANNELS} channels.")


def _array_layout_to_hwc(array: np.ndarray, channels_first_preferred: bool) -> np.ndarray:
    """Returns an (H, W, C) view of a (H, W), (H, W, C) or (C, H, W) array; C must be 1..4."""
    layout = _channel_axis_layout(array.shape, channels_first_preferred)
    if layout == "hw":
        return array[:, :, None]
    return array.transpose(1, 2, 0) if layout == "chw" else array


def _height_width(shape: Sequence[int], channels_first_preferred: bool) -> tuple[int, int]:
    """(height, width) of an image array or tensor of `shape` (same layout rules as `array_to_rgb_array`)."""
    layout = _channel_axis_layout(shape, channels_first_preferred)
    return (int(shape[1]), int(shape[2])) if layout == "chw" else (int(shape[0]), int(shape[1]))


def _check_array_values(array: np.ndarray) -> None:
    """Raises ValueError unless the (H, W, C) values are of a supported dtype and range (all channels checked):
    bool, uint8, uint16, other integers in 0..255, finite floats in [0, 1]."""
    if array.dtype in (np.bool_, np.uint8, np.uint16):
        return
    if np.issubdtype(array.dtype, np.integer):
        if array.min() < 0 or array.max() > UINT8_MAX:
            raise ValueError(f"integer pixel values must lie in 0..255 for dtype {array.dtype} (got "
                             f"{array.min()}..{array.max()}); pass uint16 data as dtype uint16.")
        return
    if np.issubdtype(array.dtype, np.floating):
        if not _all_finite(array):
            raise ValueError("floating-point pixel values must be finite (found NaN or infinity).")
        if array.min() < 0 or array.max() > 1:
            raise ValueError(f"floating-point pixel values must lie in [0, 1] (got {array.min()}..{array.max()}); "
                             f"convert 0..255 data to uint8 first.")
        return
    raise ValueError(f"unsupported pixel dtype {array.dtype}; use uint8, uint16, bool, integers in 0..255 or floats "
                     f"in [0, 1].")


def _array_values_to_uint8(array: np.ndarray) -> np.ndarray:
    """Checked values -> uint8: bool -> 0/255, uint8 as is, uint16 -> high byte, other ints as they are (0..255),
    floats in [0, 1] -> x255 in float64, rounded half to even."""
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * UINT8_MAX
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16:
        return (array >> SIXTEEN_TO_EIGHT_BIT_SHIFT).astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.uint8)
    return np.rint(array.astype(np.float64) * UINT8_MAX).astype(np.uint8)


def array_to_rgb_array(array: np.ndarray, channels_first_preferred: bool = False,
                       max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Converts a numpy image (gray, gray+alpha, RGB or RGBA; HWC or CHW) to (H, W, 3) uint8 RGB.

    Layout: an axis of size 1..4 is the channel axis; when both the first and the last axis qualify, the last wins
    for numpy arrays and the first for torch tensors (`channels_first_preferred`). Alpha is dropped. Values: bool,
    uint8, uint16 (high byte kept), other integers in 0..255, finite floats in [0, 1] (x255, rounded). Arrays of more
    than `max_pixels` pixels (None: no limit) are refused before their values are read; the others are converted in
    row blocks, so the only full-size allocation is the (H, W, 3) uint8 result.
    """
    array = np.asarray(array)
    hwc = _array_layout_to_hwc(array, channels_first_preferred)
    if hwc.size == 0:
        raise ValueError(f"the image is empty (shape {tuple(np.shape(array))}).")
    check_pixel_count(hwc.shape[0], hwc.shape[1], max_pixels, f"the array of shape {tuple(array.shape)}")
    _check_array_values(hwc)
    colour = hwc[:, :, :1] if hwc.shape[2] in (1, 2) else hwc[:, :, :3]
    if colour.dtype == np.uint8 and colour.shape[2] == 3:
        return np.ascontiguousarray(colour)  # no copy for a contiguous RGB array
    return _convert_in_row_blocks(colour, _array_values_to_uint8)


# --------------------------------------------------------------------------------------------------------------
# Resize: mmcv.imrescale sizes, OpenCV INTER_LINEAR pixel values
# --------------------------------------------------------------------------------------------------------------
def compute_rescaled_size(width: int, height: int, scale: Sequence[int]) -> tuple[int, int]:
    """mmcv `rescale_size(keep_ratio)`: the largest size fitting `max(scale)` x `min(scale)`, in Python doubles.

    Returns `(new_width, new_height)` with `new = int(old * factor + 0.5)`; a side that would round to 0 pixels is
    kept at 1 (mmcv would fail on such an image).
    """
    long_edge_limit, short_edge_limit = max(scale), min(scale)
    factor = min(long_edge_limit / max(height, width), short_edge_limit / min(height, width))
    new_width, new_height = int(width * factor + 0.5), int(height * factor + 0.5)
    if new_width < 1 or new_height < 1:
        logger.warning(f"Image of {width}x{height} pixels is too elongated for scale {tuple(scale)}; a side is "
                       f"kept at 1 pixel.")
    return max(new_width, 1), max(new_height, 1)


def _linear_source_taps(source_length: int, target_length: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's source coordinate per output pixel: `(d + 0.5) * scale - 0.5` in double, then float32.

    Returns `(first_index, fraction)`, each of shape `(target_length,)`: int64 floor and its float32 remainder.
    `scale` is `1 / (target / source)` exactly as OpenCV computes it (not `source / target`).
    """
    scale = 1.0 / (target_length / source_length)
    positions = ((np.arange(target_length, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first_index = np.floor(positions)
    fraction = positions - first_index
    return first_index.astype(np.int64), fraction


def _fixed_point_weights(fraction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`saturate_cast<short>(w * 2048)` of the float32 weights `1 - f` and `f` (round half to even). int32 each."""
    scale = np.float32(RESIZE_COEF_SCALE)
    near = np.rint((np.float32(1.0) - fraction) * scale).astype(np.int32)
    far = np.rint(fraction * scale).astype(np.int32)
    return near, far


def _resize_halve(image: np.ndarray) -> np.ndarray:
    """Exact 2x downscale: OpenCV switches to INTER_AREA, `(a + b + c + d + 2) >> 2`, which INTER_LINEAR equals."""
    pixels = image.astype(np.uint16)
    total = pixels[0::2, 0::2] + pixels[0::2, 1::2] + pixels[1::2, 0::2] + pixels[1::2, 1::2]
    return ((total + 2) >> 2).astype(np.uint8)


def resize_bilinear_uint8(image: np.ndarray, new_width: int, new_height: int) -> np.ndarray:
    """Pure NumPy `cv2.resize(image, (new_width, new_height), interpolation=cv2.INTER_LINEAR)`, bit for bit.

    Args:
        image: (H, W, C) or (H, W) uint8.
    Returns:
        (new_height, new_width, C) or (new_height, new_width) uint8.

    Horizontal pass: `S = p[x0] * a0 + p[x0 + 1] * a1` with 11-bit weights; columns left of the first or right of
    the last source pixel use that pixel with weight (2048, 0). Vertical pass: rows are clamped to the image but keep
    their unclamped weights, and the sum is rounded in three steps like OpenCV's `VResizeLinearVec_32s8u`.
    """
    if image.dtype != np.uint8 or image.ndim not in (2, 3) or image.size == 0:
        raise ValueError(f"resize_bilinear_uint8 needs a non-empty (H, W[, C]) uint8 array, got {image.dtype} "
                         f"{image.shape}.")
    if new_width < 1 or new_height < 1:
        raise ValueError(f"The target size must be at least 1x1 pixels, got {new_width}x{new_height}.")
    if image.ndim == 2:
        return _resize_channels_last(image[:, :, None], new_width, new_height)[:, :, 0]
    return _resize_channels_last(image, new_width, new_height)


def _resize_channels_last(image: np.ndarray, new_width: int, new_height: int) -> np.ndarray:
    """`resize_bilinear_uint8` for a validated (H, W, C) image."""
    height, width = image.shape[:2]
    if (new_height, new_width) == (height, width):
        return image.copy()  # cv::resize copies when the size is unchanged
    if (height, width) == (2 * new_height, 2 * new_width):
        return _resize_halve(image)

    rows, row_fraction = _linear_source_taps(height, new_height)
    top_rows, bottom_rows = np.clip(rows, 0, height - 1), np.clip(rows + 1, 0, height - 1)
    used_rows, row_lookup = np.unique(np.concatenate([top_rows, bottom_rows]), return_inverse=True)
    horizontal = _horizontal_pass(image[used_rows], new_width)
    top_weight, bottom_weight = _fixed_point_weights(row_fraction)
    return _vertical_pass(horizontal, row_lookup[:new_height], row_lookup[new_height:], top_weight, bottom_weight)


def _horizontal_pass(rows: np.ndarray, new_width: int) -> np.ndarray:
    """(R, W, C) uint8 -> (R, new_width, C) int32 `p[x0] * a0 + p[x0 + 1] * a1`, already shifted right by 4.

    Outside the source (left of pixel 0 or from the last pixel on) OpenCV takes the edge pixel with weights (2048, 0).
    """
    width = rows.shape[1]
    columns, fraction = _linear_source_taps(width, new_width)
    outside = (columns < 0) | (columns >= width - 1)
    fraction[outside] = 0.0
    columns = np.clip(columns, 0, width - 1)
    left_weight, right_weight = _fixed_point_weights(fraction)
    horizontal = np.take(rows, columns, axis=1).astype(np.int32)
    horizontal *= left_weight[None, :, None]
    right = np.take(rows, np.minimum(columns + 1, width - 1), axis=1).astype(np.int32)
    right *= right_weight[None, :, None]
    horizontal += right
    horizontal >>= VERTICAL_PRE_SHIFT
    return horizontal


def _vertical_pass(horizontal: np.ndarray, top_index: np.ndarray, bottom_index: np.ndarray, top_weight: np.ndarray,
                   bottom_weight: np.ndarray) -> np.ndarray:
    """Blends rows of the horizontal pass: `((b0 * S0) >> 16) + ((b1 * S1) >> 16) + 2) >> 2`, saturated to uint8.

    Row indices are clamped into the image while the weights stay those of the unclamped coordinate (as in OpenCV).
    """
    top = np.take(horizontal, top_index, axis=0)
    top *= top_weight[:, None, None]
    top >>= VERTICAL_MULHI_SHIFT
    bottom = np.take(horizontal, bottom_index, axis=0)
    bottom *= bottom_weight[:, None, None]
    bottom >>= VERTICAL_MULHI_SHIFT
    top += bottom
    top += 1 << (VERTICAL_FINAL_SHIFT - 1)
    top >>= VERTICAL_FINAL_SHIFT
    np.clip(top, 0, UINT8_MAX, out=top)
    return top.astype(np.uint8)


def resize_image(image: np.ndarray, new_width: int, new_height: int, opencv: Any = cv2) -> np.ndarray:
    """(H, W, 3) uint8 -> (new_height, new_width, 3) uint8: `opencv.resize(INTER_LINEAR)` when OpenCV is given
    (default: this module's import of cv2, None when it is not installed), else the identical NumPy path."""
    if opencv is not None:
        return opencv.resize(image, (new_width, new_height), interpolation=opencv.INTER_LINEAR)
    return resize_bilinear_uint8(image, new_width, new_height)


# --------------------------------------------------------------------------------------------------------------
# Normalisation and padding (MMDetection's DetDataPreprocessor)
# --------------------------------------------------------------------------------------------------------------
def normalize_image(rgb: np.ndarray, image_mean: Sequence[float], image_std: Sequence[float], channel_order: str,
                    do_normalize: bool = True) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32: channel flip on uint8 for "bgr", float32, `(x - mean) / std`.

    Elementwise float32 subtraction and division, so the values equal PyTorch's bit for bit.
    """
    pixels = rgb.transpose(2, 0, 1)
    if channel_order == "bgr":
        pixels = pixels[::-1]
    pixels = pixels.astype(np.float32)
    if do_normalize:
        mean = np.asarray(image_mean, dtype=np.float32).reshape(-1, 1, 1)
        std = np.asarray(image_std, dtype=np.float32).reshape(-1, 1, 1)
        pixels = (pixels - mean) / std
    return np.ascontiguousarray(pixels, dtype=np.float32)


def pad_batch(images: Sequence[np.ndarray], size_divisor: int, pad_value: float, do_pad: bool = True) -> np.ndarray:
    """Stacks (3, H_i, W_i) float32 images into (B, 3, H, W), padded right/bottom with `pad_value` to the largest
    height and width rounded up to `size_divisor` (`do_pad=False`: the sizes must already agree)."""
    max_height = max(image.shape[1] for image in images)
    max_width = max(image.shape[2] for image in images)
    if not do_pad:
        if any(image.shape[1:] != (max_height, max_width) for image in images):
            raise ValueError("Images of different sizes cannot be batched with do_pad=False.")
        return np.stack(images).astype(np.float32, copy=False)
    padded_height = -(-max_height // size_divisor) * size_divisor
    padded_width = -(-max_width // size_divisor) * size_divisor
    batch = np.full((len(images), 3, padded_height, padded_width), pad_value, dtype=np.float32)
    for index, image in enumerate(images):
        batch[index, :, : image.shape[1], : image.shape[2]] = image
    return batch


# --------------------------------------------------------------------------------------------------------------
# Mask pasting: MMDetection's `_do_paste_mask` with skip_empty, one box at a time, in float32 NumPy
# --------------------------------------------------------------------------------------------------------------
def paste_window_bounds(box: np.ndarray, canvas_height: int, canvas_width: int) -> tuple[int, int, int, int]:
    """MMDetection's skip_empty window `(y_start, y_end, x_start, x_end)` of a float32 box: floor(x1) - 1 clamped at
    0, ceil(x2) + 1 clamped at the canvas size. May be empty."""
    box = np.asarray(box, dtype=np.float32)
    x_start, y_start = (max(float(np.floor(value)) - 1, 0.0) for value in box[:2])
    x_end = min(float(np.ceil(box[2])) + 1, float(canvas_width))
    y_end = min(float(np.ceil(box[3])) + 1, float(canvas_height))
    return int(y_start), int(y_end), int(x_start), int(x_end)


def _fused_multiply_add(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 `a * b + c` rounded once, like the FMA instructions PyTorch's x86-64 CPU kernels are compiled to (the
    float64 product of two float32 values is exact)."""
    return (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(np.float32)


def _grid_positions(start: int, end: int, box_low: np.float32, box_high: np.float32, mask_size: int) -> np.ndarray:
    """Sampling positions in mask pixels of the canvas pixel centres `start + 0.5 .. end - 0.5`, float32.

    First the normalised grid of `_do_paste_mask`, `(c - low) / (high - low) * 2 - 1` (infinities of a zero-size box
    become 0, NaN stays), then `grid_sample`'s unnormalisation `(g + 1) * (size / 2) - 0.5` as one FMA.
    """
    centres = np.arange(start, end, dtype=np.float32) + np.float32(0.5)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalized = (centres - box_low) / (box_high - box_low) * np.float32(2) - np.float32(1)
    normalized = np.where(np.isinf(normalized), np.float32(0), normalized).astype(np.float32)
    return _fused_multiply_add(normalized + np.float32(1), np.full_like(normalized, np.float32(mask_size / 2)),
                               np.full_like(normalized, np.float32(-0.5)))


def paste_mask_window(mask_probs: np.ndarray, box: np.ndarray, canvas_height: int, canvas_width: int,
                      mask_threshold: float) -> Optional[tuple[slice, slice, np.ndarray]]:
    """One detection's binary mask inside its box window: `(rows, columns, window)` or None for an empty window.

    Reproduces the image processor's `grid_sample(bilinear, zeros, align_corners=False) >= mask_threshold` of the
    (mask_height, mask_width) probabilities bit for bit: PyTorch's CPU kernel computes the corner weights as products
    of the distances and sums the four corners with FMAs, which this does in the same order.
    """
    box = np.asarray(box, dtype=np.float32)
    y_start, y_end, x_start, x_end = paste_window_bounds(box, canvas_height, canvas_width)
    if y_end <= y_start or x_end <= x_start:
        return None
    mask = np.asarray(mask_probs, dtype=np.float32)
    mask_height, mask_width = mask.shape
    x = _grid_positions(x_start, x_end, box[0], box[2], mask_width)[None, :]
    y = _grid_positions(y_start, y_end, box[1], box[3], mask_height)[:, None]
    x_west, y_north = np.floor(x), np.floor(y)
    west_distance, north_distance = x - x_west, y - y_north
    east_distance, south_distance = np.float32(1) - west_distance, np.float32(1) - north_distance
    weights = (south_distance * east_distance, south_distance * west_distance,   # nw, ne
               north_distance * east_distance, north_distance * west_distance)   # sw, se
    with np.errstate(invalid="ignore"):
        column = np.nan_to_num(x_west, nan=-2.0, posinf=-2.0, neginf=-2.0).astype(np.int64)
        row = np.nan_to_num(y_north, nan=-2.0, posinf=-2.0, neginf=-2.0).astype(np.int64)

    def corner(row_index: np.ndarray, column_index: np.ndarray) -> np.ndarray:
        inside = (row_index >= 0) & (row_index < mask_height) & (column_index >= 0) & (column_index < mask_width)
        values = mask[np.clip(row_index, 0, mask_height - 1), np.clip(column_index, 0, mask_width - 1)]
        return np.where(inside, values, np.float32(0))

    shape = (y_end - y_start, x_end - x_start)
    corners = [np.broadcast_to(corner(row + dy, column + dx), shape) for dy, dx in ((0, 0), (0, 1), (1, 0), (1, 1))]
    weights = [np.broadcast_to(weight, shape) for weight in weights]
    values = corners[0] * weights[0]
    for corner_values, weight in zip(corners[1:], weights[1:]):
        values = _fused_multiply_add(corner_values, weight, values)
    return slice(y_start, y_end), slice(x_start, x_end), values >= np.float32(mask_threshold)


def window_rle_counts(window: np.ndarray, rows: slice, columns: slice, canvas_height: int,
                      canvas_width: int) -> list[int]:
    """COCO RLE counts (column-major, starting with a run of zeros) of a canvas that is False except for `window`
    at `[rows, columns]`, read from the window's column band only: zero columns left and right are added
    arithmetically, so no canvas-sized array is built."""
    band = np.zeros((canvas_height, columns.stop - columns.start), dtype=bool)
    band[rows] = window
    flat = band.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat[0]:  # RLE counts start with a run of zeros
        runs.insert(0, 0)
    runs[0] += columns.start * canvas_height  # whole zero columns left of the band
    trailing_zeros = (canvas_width - columns.stop) * canvas_height
    if len(runs) % 2:  # the band ends with zeros: extend that run
        runs[-1] += trailing_zeros
    elif trailing_zeros:
        runs.append(trailing_zeros)
    return runs
