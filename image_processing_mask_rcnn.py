# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Image processor of MMDetection's Mask R-CNN: MMDetection 3.3.0's test-time pre- and post-processing.

Pre-processing reproduces `LoadImageFromFile` -> `Resize(scale=(1333, 800), keep_ratio=True)` -> `DetDataPreprocessor`:

1. decode to 8-bit colour like OpenCV's `imdecode(IMREAD_COLOR)` (EXIF orientation applied, alpha dropped without
   compositing, grayscale replicated, palette expanded, 16-bit reduced to its high byte, CMYK with OpenCV's formula);
2. keep-ratio resize with mmcv's size rounding and pixel values bit-identical to `cv2.resize(uint8, INTER_LINEAR)`
   (a pure NumPy re-implementation of OpenCV's fixed-point arithmetic; OpenCV is used only as a faster equivalent);
3. channel order, `float32`, `(x - mean) / std`, zero padding right/bottom to a multiple of `size_divisor`.

Post-processing reproduces `FCNMaskHead._predict_by_feat_single` on CPU: boxes are divided in `float32` by the
per-axis scale factor, masks are pasted box by box inside a window with `grid_sample` and thresholded with `>=`.
"""

from __future__ import annotations

import importlib
import logging
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any, Iterator, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

try:
    from .configuration_mask_rcnn import PYTORCH_STYLE_NORMALIZATION
except ImportError:  # imported as a plain module (tests, scripts). importlib, not a from-import: the remote-code
    # scanner of transformers < 4.51 reads import lines under `except ImportError:` as required packages.
    PYTORCH_STYLE_NORMALIZATION = importlib.import_module("configuration_mask_rcnn").PYTORCH_STYLE_NORMALIZATION
try:
    from .hub_folder_mask_rcnn import module_directories, upload_hub_folder, write_hub_folder
except ImportError:  # as above
    _hub_folder = importlib.import_module("hub_folder_mask_rcnn")
    module_directories, upload_hub_folder = _hub_folder.module_directories, _hub_folder.upload_hub_folder
    write_hub_folder = _hub_folder.write_hub_folder

try:  # optional: only a faster route to the same resize result
    import cv2
except ImportError:
    cv2 = None

logger = logging.getLogger(__name__)

# The torch-free decoding, resizing and RLE helpers live in image_utils_mask_rcnn.py, shared with the ONNX runtime
# (onnx_inference_mask_rcnn.py); their names stay importable from here.
try:
    from .image_utils_mask_rcnn import (
        CONVERSION_CHUNK_ELEMENTS,
        DEFAULT_MAX_IMAGE_PIXELS,
        ImageTooLargeError,
        array_to_rgb_array,
        check_pixel_count,
        compute_rescaled_size,
        load_image,
        normalize_image,
        pil_to_rgb_array,
        resize_bilinear_uint8,
        unreadable_image_reason,
        window_rle_counts,
        _height_width,
    )
    from .image_utils_mask_rcnn import resize_image as _resize_image_with
except ImportError:  # imported as a plain module (tests, scripts). importlib, not a from-import: the remote-code
    # scanner of transformers < 4.51 reads import lines under `except ImportError:` as required packages.
    _image_utils = importlib.import_module("image_utils_mask_rcnn")
    CONVERSION_CHUNK_ELEMENTS = _image_utils.CONVERSION_CHUNK_ELEMENTS
    DEFAULT_MAX_IMAGE_PIXELS = _image_utils.DEFAULT_MAX_IMAGE_PIXELS
    ImageTooLargeError = _image_utils.ImageTooLargeError
    array_to_rgb_array = _image_utils.array_to_rgb_array
    check_pixel_count = _image_utils.check_pixel_count
    compute_rescaled_size = _image_utils.compute_rescaled_size
    load_image = _image_utils.load_image
    normalize_image = _image_utils.normalize_image
    pil_to_rgb_array = _image_utils.pil_to_rgb_array
    resize_bilinear_uint8 = _image_utils.resize_bilinear_uint8
    unreadable_image_reason = _image_utils.unreadable_image_reason
    window_rle_counts = _image_utils.window_rle_counts
    _height_width = _image_utils._height_width
    _resize_image_with = _image_utils.resize_image
# Errors whose own class is kept when the processor adds an image's position in the batch to the message (other
# OSErrors, e.g. PIL's UnidentifiedImageError, become plain OSErrors).
_CONTEXT_KEEPS_TYPE = (ImageTooLargeError, FileNotFoundError, IsADirectoryError, PermissionError)
# Mask pasting evaluates grid_sample on at most this many canvas pixels at a time (~12 bytes each).
PASTE_CHUNK_PIXELS = 1 << 20

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray, torch.Tensor]

def _tensor_to_numpy(tensor: torch.Tensor, max_pixels: Optional[int]) -> np.ndarray:
    """A CPU numpy view or copy of an image tensor (float16 stays float16; bfloat16, which numpy lacks, becomes
    float32); the pixel count is checked from the shape first. Unreadable tensors raise ValueError."""
    height, width = _height_width(tuple(tensor.shape), channels_first_preferred=True)
    check_pixel_count(height, width, max_pixels, f"the tensor of shape {tuple(tensor.shape)}")
    try:
        tensor = tensor.detach().cpu()
        if tensor.dtype == torch.bfloat16:
            tensor = tensor.float()
        return tensor.numpy()
    except (TypeError, RuntimeError, NotImplementedError) as error:
        raise ValueError(f"cannot read pixel values from a tensor of dtype {tensor.dtype}, layout {tensor.layout} "
                         f"on device {tensor.device} ({error}); pass a dense CPU or GPU tensor.") from error


def to_rgb_array(image: ImageSource, max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Any supported input -> (H, W, 3) uint8 RGB; paths, bytes and PIL images get their EXIF orientation applied.

    Images of more than `max_pixels` pixels (None: no limit) raise ImageTooLargeError before they are decoded.
    """
    if isinstance(image, torch.Tensor):
        rgb = array_to_rgb_array(_tensor_to_numpy(image, max_pixels), channels_first_preferred=True,
                                 max_pixels=max_pixels)
    elif isinstance(image, np.ndarray):
        rgb = array_to_rgb_array(image, max_pixels=max_pixels)
    else:
        rgb = pil_to_rgb_array(load_image(image, max_pixels))
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"the image is empty (height {rgb.shape[0]}, width {rgb.shape[1]}).")
    return rgb


def resize_image(image: np.ndarray, new_width: int, new_height: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (new_height, new_width, 3) uint8 (`image_utils_mask_rcnn.resize_image` with this module's
    `cv2`, so setting `cv2 = None` here forces the NumPy path)."""
    return _resize_image_with(image, new_width, new_height, opencv=cv2)


# --------------------------------------------------------------------------------------------------------------
# Training annotations: COCO format -> MMDetection's train pipeline (CocoDataset, LoadAnnotations, Resize, RandomFlip)
# --------------------------------------------------------------------------------------------------------------
class AnnotationError(ValueError):
    """A COCO annotation that cannot be read (missing or malformed fields, unknown category); the message names the
    image and the annotation."""


def resize_mask_nearest(masks: np.ndarray, new_width: int, new_height: int) -> np.ndarray:
    """(n, H, W) -> (n, new_height, new_width) like `cv2.resize(INTER_NEAREST)` (MMDetection's `BitmapMasks.rescale`):
    target pixel x takes source pixel `min(floor(x * (W / new_width)), W - 1)`, the scale in double precision."""
    height, width = masks.shape[-2:]
    inverse_x = 1.0 / (new_width / width)
    inverse_y = 1.0 / (new_height / height)
    columns = np.minimum(np.floor(np.arange(new_width) * inverse_x).astype(np.int64), width - 1)
    rows = np.minimum(np.floor(np.arange(new_height) * inverse_y).astype(np.int64), height - 1)
    return masks[:, rows[:, None], columns[None, :]]


def decode_segmentation(segmentation: Any, height: int, width: int) -> Optional[np.ndarray]:
    """(height, width) uint8 mask of a COCO segmentation (polygon list, uncompressed or compressed RLE), decoded with
    pycocotools like MMDetection's `LoadAnnotations._poly2mask`. Polygons of odd length or < 6 values are skipped as
    MMDetection skips them; None when nothing valid is left (MMDetection then ignores the object)."""
    coco_mask = _coco_mask_module()
    if isinstance(segmentation, (list, tuple)):
        polygons = [list(map(float, polygon)) for polygon in segmentation
                    if isinstance(polygon, (list, tuple, np.ndarray)) and len(polygon) % 2 == 0 and len(polygon) >= 6]
        if not polygons:
            return None
        rle = coco_mask.merge(coco_mask.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, Mapping):
        counts, size = segmentation.get("counts"), segmentation.get("size")
        if counts is None or size is None or not isinstance(counts, (list, str, bytes)):
            return None
        if [int(v) for v in size] != [height, width]:
            raise ValueError(f"its RLE size {list(size)} is not the image size [{height}, {width}]")
        if not isinstance(counts, list):  # compressed RLE
            return decode_mask_rle(segmentation).astype(np.uint8)
        rle = coco_mask.frPyObjects(dict(segmentation), height, width)
    else:
        return None
    return coco_mask.decode(rle).astype(np.uint8)


def parse_coco_annotations(target: Mapping[str, Any], image_index: int, height: int, width: int,
                           category_to_class: Optional[Mapping[int, int]]) -> dict:
    """One image's COCO annotations as MMDetection's `CocoDataset.parse_data_info` + `LoadAnnotations` +
    `PackDetInputs` keep them, at the original size.

    Dropped silently, as MMDetection drops them: `ignore` annotations, boxes with no overlap with the image, `area <= 0`,
    width or height < 1, crowd annotations (`iscrowd=1` become ignored instances, which the Mask R-CNN losses never
    read) and objects without a valid polygon/RLE. Raises `AnnotationError` (naming image and annotation) for a
    missing or malformed `bbox`, a `category_id` outside `category_to_class` (or not a non-negative integer without a
    mapping), or an RLE of another size.

    Returns:
        {"image_id", "class_labels" (n,) int64, "boxes" (n, 4) float32 x1y1x2y2, "masks" (n, height, width) uint8}.
    """
    if not isinstance(target, Mapping) or not isinstance(target.get("annotations"), (list, tuple)):
        raise AnnotationError(f"annotations for image {image_index} must be a dict {{'image_id': ..., 'annotations': "
                              f"[...]}} in COCO format, got {type(target).__name__}.")
    image_id = target.get("image_id", image_index)
    classes, boxes, masks = [], [], []
    for annotation_index, annotation in enumerate(target["annotations"]):
        where = f"image {image_index} (image_id {image_id}), annotation {annotation_index}"
        if not isinstance(annotation, Mapping):
            raise AnnotationError(f"{where}: an annotation must be a dict, got {type(annotation).__name__}.")
        if annotation.get("ignore", False):
            continue
        bbox = annotation.get("bbox")
        try:
            x1, y1, box_width, box_height = (float(v) for v in bbox)
        except (TypeError, ValueError):
            raise AnnotationError(f"{where}: 'bbox' must be [x, y, width, height] numbers, got {bbox!r}.") from None
        if not all(math.isfinite(v) for v in (x1, y1, box_width, box_height)):
            raise AnnotationError(f"{where}: 'bbox' has a NaN or infinite value: {bbox!r}.")
        overlap_width = max(0.0, min(x1 + box_width, width) - max(x1, 0.0))
        overlap_height = max(0.0, min(y1 + box_height, height) - max(y1, 0.0))
        area = annotation.get("area", box_width * box_height)
        if overlap_width * overlap_height == 0 or area <= 0 or box_width < 1 or box_height < 1:
            continue
        category = annotation.get("category_id")
        if category_to_class is not None:
            if category not in category_to_class:
                raise AnnotationError(f"{where}: category_id {category!r} is not one of the dataset's categories "
                                      f"{sorted(category_to_class)[:20]}.")
            class_index = int(category_to_class[category])
        elif isinstance(category, (int, np.integer)) and not isinstance(category, bool) and category >= 0:
            class_index = int(category)
        else:
            raise AnnotationError(f"{where}: category_id must be a class index (a key of the model's id2label) or be "
                                  f"mapped with category_to_class, got {category!r}.")
        if annotation.get("iscrowd", 0):
            continue
        try:
            mask = decode_segmentation(annotation.get("segmentation"), height, width)
        except ValueError as error:
            raise AnnotationError(f"{where}: {error}.") from error
        if mask is None:
            continue
        classes.append(class_index)
        boxes.append([x1, y1, x1 + box_width, y1 + box_height])
        masks.append(mask)
    return {
        "image_id": image_id,
        "class_labels": np.asarray(classes, np.int64),
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "masks": np.asarray(masks, np.uint8).reshape(-1, height, width),
    }


def resize_annotations(parsed: dict, new_width: int, new_height: int) -> dict:
    """Boxes times float32 `(w_scale, h_scale)` then clipped to the new size; masks nearest-resized (MMDetection's
    `Resize._resize_bboxes` / `_resize_masks`). Scales are new / old size, from the rounded new size."""
    height, width = parsed["masks"].shape[-2:]
    scale = np.asarray([new_width / width, new_height / height] * 2, np.float32)
    boxes = parsed["boxes"] * scale
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, new_width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, new_height)
    masks = resize_mask_nearest(parsed["masks"], new_width, new_height) if (new_height, new_width) != (height, width) \
        else parsed["masks"]
    return {**parsed, "boxes": boxes.astype(np.float32), "masks": masks}


def flip_annotations_horizontally(parsed: dict) -> dict:
    """`x1' = W - x2`, `x2' = W - x1` (no -1) and masks mirrored (MMDetection's `RandomFlip`, horizontal)."""
    width = parsed["masks"].shape[-1]
    boxes = parsed["boxes"].copy()
    boxes[:, 0], boxes[:, 2] = width - parsed["boxes"][:, 2], width - parsed["boxes"][:, 0]
    return {**parsed, "boxes": boxes, "masks": np.ascontiguousarray(parsed["masks"][:, :, ::-1])}


def annotations_to_labels(parsed: dict) -> dict:
    """The model's `labels` entry of one image: torch tensors, masks as bool."""
    return {"class_labels": torch.from_numpy(parsed["class_labels"]), "boxes": torch.from_numpy(parsed["boxes"]),
            "masks": torch.from_numpy(parsed["masks"]).bool(), "image_id": parsed["image_id"]}


# --------------------------------------------------------------------------------------------------------------
# Mask pasting: MMDetection's `_do_paste_mask` with skip_empty, one box at a time
# --------------------------------------------------------------------------------------------------------------
def _paste_window(box: torch.Tensor, canvas_height: int, canvas_width: int) -> tuple[int, int, int, int]:
    """MMDetection's skip_empty window `(y_start, y_end, x_start, x_end)`: floor(x1) - 1 clamped at 0, ceil(x2) + 1
    clamped at the canvas size, computed on the float32 box like `_do_paste_mask`. May be empty."""
    start = torch.clamp(box[:2].floor() - 1, min=0).to(torch.int32)
    x_end = torch.clamp(box[2].ceil() + 1, max=canvas_width).to(torch.int32)
    y_end = torch.clamp(box[3].ceil() + 1, max=canvas_height).to(torch.int32)
    return int(start[1]), int(y_end), int(start[0]), int(x_end)


def _normalized_pixel_centres(start: int, end: int, box_low: torch.Tensor, box_high: torch.Tensor) -> torch.Tensor:
    """Pixel centres `start + 0.5 .. end - 0.5` mapped to [-1, 1] over the box, float32, shape (end - start,).

    Same operation order as `_do_paste_mask`: `(c - low) / (high - low) * 2 - 1`; infinities (zero-size box) become
    0, NaN (0 / 0) is kept.
    """
    centres = torch.arange(start, end, dtype=torch.float32, device=box_low.device) + 0.5
    normalized = (centres - box_low) / (box_high - box_low) * 2 - 1
    return torch.where(torch.isinf(normalized), torch.zeros_like(normalized), normalized)


def iter_pasted_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, canvas_height: int, canvas_width: int,
                      mask_threshold: float) -> Iterator[tuple[int, slice, slice, torch.Tensor]]:
    """Pastes each mask inside its box window, yielding `(index, rows, columns, binary_window)`.

    Args:
        mask_probs: (num_detections, mask_height, mask_width) probabilities.
        boxes: (num_detections, 4) float32 x1, y1, x2, y2 in canvas pixels.
    Yields:
        the detection index, the window's row and column slices, and a bool tensor of the window's shape with
        `grid_sample(bilinear, zeros, align_corners=False) >= mask_threshold`. Empty windows are skipped. The window
        is sampled in row chunks of at most `PASTE_CHUNK_PIXELS`, so no full-canvas float tensor is allocated.
    """
    for index in range(boxes.shape[0]):
        box = boxes[index]
        y_start, y_end, x_start, x_end = _paste_window(box, canvas_height, canvas_width)
        if y_end <= y_start or x_end <= x_start:
            continue
        grid_x = _normalized_pixel_centres(x_start, x_end, box[0], box[2])
        grid_y = _normalized_pixel_centres(y_start, y_end, box[1], box[3])
        mask = mask_probs[index].to(torch.float32)[None, None]
        window = torch.empty((y_end - y_start, x_end - x_start), dtype=torch.bool, device=boxes.device)
        rows_per_chunk = max(1, PASTE_CHUNK_PIXELS // window.shape[1])
        for row in range(0, window.shape[0], rows_per_chunk):
            chunk_y = grid_y[row:row + rows_per_chunk]
            grid = torch.stack([grid_x[None, :].expand(chunk_y.shape[0], -1),
                                chunk_y[:, None].expand(-1, grid_x.shape[0])], dim=2)
            values = F.grid_sample(mask, grid[None], mode="bilinear", padding_mode="zeros", align_corners=False)
            window[row:row + rows_per_chunk] = values[0, 0] >= mask_threshold
        yield index, slice(y_start, y_end), slice(x_start, x_end), window


def paste_masks(mask_probs: torch.Tensor, boxes: torch.Tensor, canvas_height: int, canvas_width: int,
                mask_threshold: float = 0.5) -> torch.Tensor:
    """Binary masks (num_detections, canvas_height, canvas_width) bool, pasted like MMDetection's CPU path."""
    masks = torch.zeros((boxes.shape[0], canvas_height, canvas_width), dtype=torch.bool, device=boxes.device)
    for index, rows, columns, window in iter_pasted_masks(mask_probs, boxes, canvas_height, canvas_width,
                                                          mask_threshold):
        masks[index, rows, columns] = window
    return masks


# --------------------------------------------------------------------------------------------------------------
# COCO run-length encoding (pycocotools): the one RLE implementation of the project
# --------------------------------------------------------------------------------------------------------------
PYCOCOTOOLS_INSTALL_HINT = ("COCO RLE masks need pycocotools, which is not installed: pip install pycocotools "
                            "(or ask for binary masks / PNG masks instead).")


def _coco_mask_module() -> Any:
    """`pycocotools.mask`, or an ImportError whose message says how to install it."""
    try:
        from pycocotools import mask as coco_mask
    except ImportError as error:
        raise ImportError(PYCOCOTOOLS_INSTALL_HINT) from error
    return coco_mask


def _rle_as_json(rle: Mapping[str, Any]) -> dict[str, Any]:
    """pycocotools' RLE (bytes counts, numpy sizes) -> `{"size": [H, W], "counts": str}` of plain Python types."""
    return {"size": [int(value) for value in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _mask_array(mask: Any) -> np.ndarray:
    """A mask as a numpy array: tensors are moved to the CPU, PIL images read as their pixel values."""
    if isinstance(mask, torch.Tensor):
        return mask.detach().cpu().numpy()
    return np.asarray(mask)


def encode_masks_rle(masks: Any) -> list[dict[str, Any]]:
    """Binary masks (N, H, W) -> N COCO compressed RLEs `{"size": [H, W], "counts": str}`, in one pycocotools call.

    Args:
        masks: (N, H, W) bool or integer numpy array or tensor; every non-zero pixel is "in".
    Raises:
        ImportError: pycocotools is not installed (the message says how to install it).
        ValueError: `masks` is not 3-dimensional.
    """
    array = _mask_array(masks)
    if array.ndim != 3:
        raise ValueError(f"masks must have shape (N, H, W), got {array.shape}; use encode_mask_rle for one mask.")
    coco_mask = _coco_mask_module()
    if array.shape[0] == 0:
        return []
    binary = array if array.dtype == np.bool_ else array != 0
    # (N, H, W) C-order transposed to (H, W, N) is Fortran order per mask: pycocotools' layout, no copy.
    encoded = coco_mask.encode(np.asfortranarray(binary.view(np.uint8).transpose(1, 2, 0)))
    return [_rle_as_json(rle) for rle in encoded]


def encode_mask_rle(mask: Any) -> dict[str, Any]:
    """One binary mask (H, W) (numpy array, tensor or PIL image; non-zero is "in") -> `{"size": [H, W],
    "counts": str}`. Raises ImportError without pycocotools and ValueError for another shape."""
    array = _mask_array(mask)
    if array.ndim != 2:
        raise ValueError(f"mask must have shape (H, W), got {array.shape}; use encode_masks_rle for a stack.")
    return encode_masks_rle(array[None])[0]


def decode_mask_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """COCO compressed RLE `{"size": [H, W], "counts": str or bytes}` -> (H, W) bool mask (needs pycocotools)."""
    coco_mask = _coco_mask_module()
    counts = rle["counts"]
    encoded = {"size": [int(value) for value in rle["size"]],
               "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return coco_mask.decode(encoded).astype(bool)


def encode_pasted_masks_rle(mask_probs: torch.Tensor, boxes: torch.Tensor, canvas_height: int, canvas_width: int,
                            mask_threshold: float = 0.5) -> list[dict[str, Any]]:
    """The masks `paste_masks` would return, as COCO compressed RLE `{"size": [h, w], "counts": str}` each.

    Never builds the (num_detections, canvas_height, canvas_width) array: each mask's runs are read from its box's
    column band (canvas_height x window width) in column-major order, the zero runs left and right of the band are
    added arithmetically, and pycocotools compresses the counts. Raises ImportError without pycocotools.
    """
    coco_mask = _coco_mask_module()
    canvas_pixels = canvas_height * canvas_width
    counts_per_mask: list[list[int]] = [[canvas_pixels] for _ in range(boxes.shape[0])]  # empty: all zeros
    for index, rows, columns, window in iter_pasted_masks(mask_probs, boxes, canvas_height, canvas_width,
                                                          mask_threshold):
        counts_per_mask[index] = window_rle_counts(window.cpu().numpy(), rows, columns, canvas_height, canvas_width)
    if not counts_per_mask:
        return []
    encoded = coco_mask.frPyObjects([{"size": [canvas_height, canvas_width], "counts": counts}
                                     for counts in counts_per_mask], canvas_height, canvas_width)
    return [_rle_as_json(rle) for rle in encoded]


def _segments_info(scores: torch.Tensor, labels: torch.Tensor) -> list[dict[str, Any]]:
    """transformers' `segments_info` of instances 0..N-1: `{"id", "label_id", "score", "was_fused": False}`."""
    return [{"id": index, "label_id": int(labels[index]), "score": float(scores[index]), "was_fused": False}
            for index in range(scores.shape[0])]


def rescale_boxes(boxes: torch.Tensor, width_scale: float, height_scale: float) -> torch.Tensor:
    """Boxes (N, 4) from the resized frame to the original: float32 division by `[w_s, h_s, w_s, h_s]`, no clip."""
    factors = torch.tensor([width_scale, height_scale, width_scale, height_scale], dtype=torch.float32,
                           device=boxes.device)
    return boxes.to(torch.float32) / factors


def _output_field(outputs: Any, name: str) -> Any:
    """A field of a ModelOutput, dict or attribute object; None when absent."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def _number_pair(pair: Any, what: str) -> tuple[float, float]:
    """Two Python numbers from a tensor, array or sequence of length 2."""
    values = pair.tolist() if hasattr(pair, "tolist") else list(pair)
    if len(values) != 2:
        raise ValueError(f"{what} must hold 2 numbers, got {values}.")
    return values[0], values[1]


def _size_pair(size: Any, what: str) -> tuple[int, int]:
    """(height, width) as Python ints from a tensor, array or sequence of two numbers."""
    height, width = _number_pair(size, what)
    return int(height), int(width)


# --------------------------------------------------------------------------------------------------------------
# The image processor
# --------------------------------------------------------------------------------------------------------------
def _checked_score_threshold(threshold: Any, name: str, allow_none: bool = True) -> Optional[float]:
    """A score threshold as a Python float (None stays None where `allow_none`); ValueError naming `name` unless it
    is one finite real number (a one-element tensor is accepted)."""
    if threshold is None and allow_none:
        return None
    if isinstance(threshold, torch.Tensor) and threshold.numel() == 1 and not threshold.dtype == torch.bool:
        threshold = threshold.item()
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"{name} must be a finite number (a score between 0 and 1), got {threshold!r}.")
    return float(threshold)


class MaskRCNNImageProcessor(BaseImageProcessor):
    r"""Pre- and post-processing of MMDetection's Mask R-CNN with MMDetection's numerics.

    Args:
        image_mean (`list[float]`, *optional*, defaults to `[123.675, 116.28, 103.53]`):
            Per-channel mean on the 0..255 scale, in `input_channel_order`.
        image_std (`list[float]`, *optional*, defaults to `[58.395, 57.12, 57.375]`):
            Per-channel standard deviation on the 0..255 scale, in `input_channel_order`.
        input_channel_order (`str`, *optional*, defaults to `"rgb"`):
            Channel order the network expects: `"rgb"` (pytorch-style weights) or `"bgr"` (caffe/detectron2 weights).
        resize_scale (`list[int]`, *optional*, defaults to `[1333, 800]`):
            Keep-ratio resize limits: the long side at most `max(resize_scale)`, the short side at most `min(...)`.
        size_divisor (`int`, *optional*, defaults to 32):
            Padded height and width are multiples of this.
        pad_value (`float`, *optional*, defaults to 0.0):
            Value of the padding, in normalised space.
        do_resize (`bool`, *optional*, defaults to `True`), do_normalize (`bool`, *optional*, defaults to `True`),
        do_pad (`bool`, *optional*, defaults to `True`):
            Switch the three steps.
        max_image_pixels (`int`, *optional*, defaults to 89,478,485):
            Largest `height * width` accepted; larger images raise `ImageTooLargeError` (a `ValueError` and an
            `OSError`) from their file header or array shape, before anything is decoded. The default is PIL's
            decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`); None disables this check (PIL itself still
            refuses files above twice its own limit).
        do_random_flip (`bool`, *optional*, defaults to `False`):
            Training augmentation: mirror each image (and its annotations) horizontally with `flip_probability`
            (MMDetection's `RandomFlip(prob=0.5)`), drawn from NumPy's global generator as mmcv does.
        flip_probability (`float`, *optional*, defaults to 0.5):
            Probability of the horizontal flip when `do_random_flip` is on.
        multiscale_resize_scales (`list[list[int]]`, *optional*):
            Training augmentation of the ms-poly recipes (`RandomChoiceResize`): each image is resized keep-ratio to
            a scale drawn uniformly from this list (e.g. `[[1333, 640], [1333, 672], ..., [1333, 800]]`) instead of
            `resize_scale`. NumPy's global generator draws it.

    Conventions: arrays and tensors are taken as RGB (MMDetection's own ndarray path assumes BGR: flip OpenCV
    images with `image[:, :, ::-1]`). Post-processing keeps detections with `score >= threshold` and mask pixels
    with `probability >= mask_threshold` (both inclusive), maps boxes to original pixels by MMDetection's float32
    division (boxes are not clipped) and pastes masks exactly like MMDetection's CPU path, one box window at a time.
    """

    model_input_names = ["pixel_values", "image_sizes"]

    def __init__(
        self,
        image_mean: Optional[Sequence[float]] = None,
        image_std: Optional[Sequence[float]] = None,
        input_channel_order: str = "rgb",
        resize_scale: Sequence[int] = (1333, 800),
        size_divisor: int = 32,
        pad_value: float = 0.0,
        do_resize: bool = True,
        do_normalize: bool = True,
        do_pad: bool = True,
        max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS,
        do_random_flip: bool = False,
        flip_probability: float = 0.5,
        multiscale_resize_scales: Optional[Sequence[Sequence[int]]] = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if image_mean is None:
            image_mean = PYTORCH_STYLE_NORMALIZATION["image_mean"]
        if image_std is None:
            image_std = PYTORCH_STYLE_NORMALIZATION["image_std"]
        self.image_mean = [float(value) for value in image_mean]
        self.image_std = [float(value) for value in image_std]
        self.input_channel_order = input_channel_order
        self.resize_scale = [int(value) for value in resize_scale]
        self.size_divisor = int(size_divisor)
        self.pad_value = float(pad_value)
        self.do_resize = bool(do_resize)
        self.do_normalize = bool(do_normalize)
        self.do_pad = bool(do_pad)
        self.max_image_pixels = max_image_pixels
        self.do_random_flip = bool(do_random_flip)
        self.flip_probability = float(flip_probability)
        self.multiscale_resize_scales = (None if multiscale_resize_scales is None
                                         else [[int(v) for v in scale] for scale in multiscale_resize_scales])
        self._validate_settings(self.__dict__)

    @staticmethod
    def _validate_settings(settings: Mapping[str, Any]) -> None:
        """Raises ValueError for settings MMDetection's pipeline could not run with."""
        if settings["input_channel_order"] not in ("rgb", "bgr"):
            raise ValueError(f"input_channel_order must be 'rgb' or 'bgr', got {settings['input_channel_order']!r}.")
        if len(settings["image_mean"]) != 3 or len(settings["image_std"]) != 3 or min(settings["image_std"]) <= 0:
            raise ValueError(f"image_mean and image_std need 3 values each and std > 0, got {settings['image_mean']}"
                             f" / {settings['image_std']}.")
        if len(settings["resize_scale"]) != 2 or min(settings["resize_scale"]) <= 0:
            raise ValueError(f"resize_scale must be two positive sizes, got {settings['resize_scale']}.")
        if settings["size_divisor"] < 1:
            raise ValueError(f"size_divisor must be >= 1, got {settings['size_divisor']}.")
        if not 0.0 <= float(settings.get("flip_probability", 0.5)) <= 1.0:
            raise ValueError(f"flip_probability must lie in [0, 1], got {settings['flip_probability']}.")
        for scale in settings.get("multiscale_resize_scales") or []:
            if len(scale) != 2 or min(scale) <= 0:
                raise ValueError(f"multiscale_resize_scales must hold pairs of positive sizes, got {scale}.")
        max_pixels = settings.get("max_image_pixels")
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 1):
            raise ValueError(f"max_image_pixels must be a positive integer or None, got {max_pixels!r}.")

    def save_pretrained(self, save_directory: Union[str, os.PathLike], push_to_hub: bool = False, **kwargs):
        """Write `preprocessor_config.json` (with its `auto_map`) and complete the folder into a Hub folder: every
        code file the folder's configs name and what they import, requirements.txt, .gitattributes
        (`hub_folder_mask_rcnn.write_hub_folder`). `push_to_hub=True` (with `repo_id`, `token`, `commit_message`,
        `private`) uploads the completed folder."""
        hub_arguments = {name: kwargs.pop(name) for name in ("repo_id", "token", "commit_message", "private")
                         if name in kwargs}
        saved = super().save_pretrained(save_directory, **kwargs)
        write_hub_folder(save_directory, sources=module_directories(self))
        if push_to_hub:
            repo_id = hub_arguments.pop("repo_id", None) or os.path.basename(os.path.abspath(save_directory))
            upload_hub_folder(save_directory, repo_id, **hub_arguments)
        return saved

    # ---------------------------------------------------------------------------------------------------------
    # preprocess
    # ---------------------------------------------------------------------------------------------------------
    def __call__(self, images: Union[ImageSource, Sequence[ImageSource]], **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images: Union[ImageSource, Sequence[ImageSource]],
        annotations: Optional[Union[Mapping[str, Any], Sequence[Mapping[str, Any]]]] = None,
        return_tensors: Optional[str] = "pt",
        category_to_class: Optional[Mapping[int, int]] = None,
        keep_score_threshold: Optional[float] = None,
        **kwargs,
    ) -> BatchFeature:
        """Loads, resizes, normalises and pads one image or a list of images.

        Args:
            images: a path, encoded bytes, PIL image (any mode), numpy array (HWC or CHW; uint8, uint16, bool, or
                float in [0, 1]; RGB order) or torch tensor (CHW or HWC), or a list of them. A 4-D array or tensor
                is a batch. Multi-frame files give their first frame.
            annotations: training targets in COCO detection format, one dict per image: `{"image_id": ...,
                "annotations": [{"bbox": [x, y, width, height], "category_id": ..., "segmentation": polygons or
                RLE, "iscrowd": 0/1, "area": ...}, ...]}` in original-image pixels (after EXIF orientation). They are
                returned as `labels` in the model's frame, resized (and flipped) exactly like the image by
                MMDetection's train pipeline: boxes scaled by the float32 per-axis scale factor and clipped, masks
                decoded with pycocotools at the original size and nearest-resized. Objects MMDetection drops are
                dropped (no overlap with the image, `area <= 0`, width or height < 1, `ignore`, crowd, no valid
                polygon); a malformed `bbox`, an unknown category or an RLE of the wrong size raises
                `AnnotationError` naming the image and the annotation.
            return_tensors: `"pt"` (default), `"np"` or None (torch tensors).
            category_to_class: maps each `category_id` to a class index of the model (e.g. COCO's sparse ids 1..90
                to 0..79). Without it `category_id` must already be the class index.
            keep_score_threshold: the score threshold you will post-process with. Passed to the model along with
                the inputs (`model(**inputs)`), which then computes masks only for the detections with
                `score >= keep_score_threshold` (bit for bit the same detections, much less mask work). Post-
                processing those outputs with a lower threshold is an error. None (default): all detections.
            kwargs: per-call overrides of the constructor settings (`do_resize`, `resize_scale`, `image_mean`,
                `max_image_pixels`, ...).

        Raises:
            OSError: a file is missing, empty, truncated or not an image. ImageTooLargeError (a ValueError and an
            OSError): an image has more than `max_image_pixels` pixels. ValueError: an array or tensor is empty, has
            no channel axis of 1..4, NaN/infinite values, values out of range or an unsupported dtype. TypeError: an
            input of another type. Every message starts with the image's position in the batch and names the file.

        Returns:
            `BatchFeature` with `pixel_values` (batch_size, 3, padded_height, padded_width) float32, `image_sizes`
            (batch_size, 2) int64 resized (height, width) before padding, `original_sizes` (batch_size, 2) int64
            (height, width) after EXIF orientation, `scale_factors` (batch_size, 2) float64 (new_w / w, new_h / h),
            and with `annotations` also `labels`: one dict per image with `class_labels` (n,) int64, `boxes` (n, 4)
            float32 x1y1x2y2 in resized pixels, `masks` (n, new_height, new_width) bool and `image_id` — what
            `MaskRCNNForInstanceSegmentation(..., labels=...)` takes — and `flipped` (batch_size,) bool.
            With `keep_score_threshold`, also `keep_score_threshold` (a float64 scalar tensor).
        """
        keep_score_threshold = _checked_score_threshold(keep_score_threshold, "keep_score_threshold")
        settings = self._settings_with_overrides(kwargs)
        image_list = self._as_image_list(images)
        if annotations is not None:
            annotations = [annotations] if isinstance(annotations, Mapping) else list(annotations)
            if len(annotations) != len(image_list):
                raise ValueError(f"Got {len(annotations)} annotation dicts for {len(image_list)} images; give one "
                                 "per image (an image without objects has an empty 'annotations' list).")
        tensors, image_sizes, original_sizes, scale_factors, labels, flipped = [], [], [], [], [], []
        for index, image in enumerate(image_list):
            rgb = self._convert_with_context(image, index, len(image_list), settings["max_image_pixels"])
            height, width = rgb.shape[:2]
            parsed = None if annotations is None else parse_coco_annotations(
                annotations[index], index, height, width, category_to_class)
            if settings["do_resize"]:
                scale = settings["resize_scale"]
                if settings["multiscale_resize_scales"]:
                    choices = settings["multiscale_resize_scales"]
                    scale = choices[np.random.randint(len(choices))]
                new_width, new_height = compute_rescaled_size(width, height, scale)
                rgb = resize_image(rgb, new_width, new_height)
                if parsed is not None:
                    parsed = resize_annotations(parsed, new_width, new_height)
            else:
                new_width, new_height = width, height
            flip = bool(settings["do_random_flip"]) and np.random.rand() < settings["flip_probability"]
            if flip:
                rgb = np.ascontiguousarray(rgb[:, ::-1])
                if parsed is not None:
                    parsed = flip_annotations_horizontally(parsed)
            flipped.append(flip)
            if parsed is not None:
                labels.append(annotations_to_labels(parsed))
            tensors.append(self._normalize(rgb, settings))
            image_sizes.append((new_height, new_width))
            original_sizes.append((height, width))
            scale_factors.append((new_width / width, new_height / height))
        data = {
            "pixel_values": self._pad_batch(tensors, settings),
            "image_sizes": torch.tensor(image_sizes, dtype=torch.int64),
            "original_sizes": torch.tensor(original_sizes, dtype=torch.int64),
            "scale_factors": torch.tensor(scale_factors, dtype=torch.float64),
        }
        if keep_score_threshold is not None:  # float64, so that the model reads back exactly the number given
            data["keep_score_threshold"] = torch.tensor(keep_score_threshold, dtype=torch.float64)
        if annotations is not None:
            data["flipped"] = torch.tensor(flipped, dtype=torch.bool)
            batch = BatchFeature(data=data, tensor_type=return_tensors)
            batch["labels"] = labels  # a list of dicts of tensors, left as is (like DETR's processors)
            return batch
        return BatchFeature(data=data, tensor_type=return_tensors)

    def collate(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Batch per-image training examples (a `collate_fn` for `DataLoader` or `Trainer`'s `data_collator`).

        Each item is what this processor returns for one image (`pixel_values` `(1, 3, H, W)` or `(3, H, W)`,
        `image_sizes`, optional `labels`): the images are cut to their resized size and padded together exactly as
        `preprocess` pads a batch (bottom/right, `pad_value`, to a multiple of `size_divisor`).

        Returns:
            `{"pixel_values" (batch_size, 3, H, W), "image_sizes" (batch_size, 2), "labels": [dict, ...]}` (labels
            only when every item has them).
        """
        if not items:
            raise ValueError("collate got an empty list of examples.")
        tensors, sizes, labels = [], [], []
        for index, item in enumerate(items):
            if "pixel_values" not in item or "image_sizes" not in item:
                raise ValueError(f"Example {index} has no 'pixel_values'/'image_sizes'; collate takes this processor's "
                                 "output for one image.")
            pixel_values = torch.as_tensor(item["pixel_values"])
            pixel_values = pixel_values[0] if pixel_values.dim() == 4 else pixel_values
            height, width = (int(v) for v in torch.as_tensor(item["image_sizes"]).reshape(-1)[:2])
            tensors.append(pixel_values[:, :height, :width])
            sizes.append((height, width))
            item_labels = item.get("labels")
            if isinstance(item_labels, (list, tuple)):
                item_labels = item_labels[0] if len(item_labels) == 1 else None
            labels.append(item_labels)
        batch = {"pixel_values": self.pad(tensors),
                 "image_sizes": torch.tensor(sizes, dtype=torch.int64)}
        if all(item_labels is not None for item_labels in labels):
            batch["labels"] = labels
        return batch

    def _settings_with_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        names = ("image_mean", "image_std", "input_channel_order", "resize_scale", "size_divisor", "pad_value",
                 "do_resize", "do_normalize", "do_pad", "max_image_pixels", "do_random_flip", "flip_probability",
                 "multiscale_resize_scales")
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            logger.warning(f"MaskRCNNImageProcessor.preprocess ignores unknown arguments {unknown}.")
        settings = {name: overrides.get(name) if overrides.get(name) is not None else getattr(self, name)
                    for name in names}
        self._validate_settings(settings)
        return settings

    @staticmethod
    def _as_image_list(images: Any) -> list:
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError("preprocess got an empty list of images.")
            return list(images)
        if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
            if images.shape[0] == 0:
                raise ValueError(f"preprocess got an empty list of images (a 4-D batch of shape {tuple(images.shape)}).")
            return list(images)
        return [images]

    @staticmethod
    def _convert_with_context(image: Any, index: int, batch_size: int, max_pixels: Optional[int]) -> np.ndarray:
        """`to_rgb_array` with the image's position in the batch added to every error message."""
        where = f"image {index} of the batch ({batch_size} images, counted from 0)"
        try:
            return to_rgb_array(image, max_pixels)
        except (ValueError, TypeError, OSError) as error:
            if type(error) in _CONTEXT_KEEPS_TYPE:
                error_type = type(error)
            else:
                error_type = OSError if isinstance(error, OSError) else type(error)
            raise error_type(f"{where}: {error}") from error

    @staticmethod
    def _normalize(rgb: np.ndarray, settings: Mapping[str, Any]) -> torch.Tensor:
        """(H, W, 3) uint8 RGB -> (3, H, W) float32: channel flip on uint8, float, (x - mean) / std (MMDetection)."""
        return torch.from_numpy(normalize_image(rgb, settings["image_mean"], settings["image_std"],
                                                settings["input_channel_order"], settings["do_normalize"]))

    def pad(self, pixel_values: Sequence[torch.Tensor], size_divisor: Optional[int] = None,
            pad_value: Optional[float] = None) -> torch.Tensor:
        """Stacks normalised images into one batch, padding right/bottom like MMDetection's `DetDataPreprocessor`.

        Args:
            pixel_values: per image a (3, H_i, W_i) tensor, or a (1, 3, H_i, W_i) single-image batch (e.g. the
                `pixel_values` of one `preprocess` call).
            size_divisor: padded height and width are multiples of this (default: the processor's `size_divisor`).
            pad_value: the padding value in normalised space (default: the processor's `pad_value`).

        Returns:
            (batch_size, 3, H, W) float32, H and W the largest height and width rounded up to `size_divisor`; each
            image in the top-left corner. Padding single-image batches together equals preprocessing the images as
            one list.
        """
        if len(pixel_values) == 0:
            raise ValueError("pad got no images; pass a list of (3, H, W) or (1, 3, H, W) tensors.")
        images = [self._single_image(tensor, index) for index, tensor in enumerate(pixel_values)]
        divisor = self.size_divisor if size_divisor is None else int(size_divisor)
        if divisor < 1:
            raise ValueError(f"size_divisor must be >= 1, got {divisor}.")
        value = self.pad_value if pad_value is None else float(pad_value)
        padded_height = math.ceil(max(image.shape[1] for image in images) / divisor) * divisor
        padded_width = math.ceil(max(image.shape[2] for image in images) / divisor) * divisor
        batch = torch.full((len(images), 3, padded_height, padded_width), value, dtype=torch.float32,
                           device=images[0].device)
        for index, image in enumerate(images):
            batch[index, :, : image.shape[1], : image.shape[2]] = image
        return batch

    @staticmethod
    def _single_image(tensor: torch.Tensor, index: int) -> torch.Tensor:
        """(3, H, W) or (1, 3, H, W) -> (3, H, W); anything else is a ValueError naming the entry."""
        if tensor.ndim == 4 and tensor.shape[0] == 1:
            tensor = tensor[0]
        if tensor.ndim != 3 or tensor.shape[0] != 3:
            raise ValueError(f"pad needs (3, H, W) or (1, 3, H, W) tensors; entry {index} has shape "
                             f"{tuple(tensor.shape)}.")
        return tensor

    def _pad_batch(self, tensors: list[torch.Tensor], settings: Mapping[str, Any]) -> torch.Tensor:
        """Stacks (3, H_i, W_i) tensors: `pad` with this call's settings, or a plain stack with do_pad=False."""
        if not settings["do_pad"]:
            if len({tuple(tensor.shape[1:]) for tensor in tensors}) > 1:
                raise ValueError("Images of different sizes cannot be batched with do_pad=False.")
            return torch.stack(tensors)
        return self.pad(tensors, size_divisor=settings["size_divisor"], pad_value=settings["pad_value"])

    # ---------------------------------------------------------------------------------------------------------
    # post-processing
    # ---------------------------------------------------------------------------------------------------------
    def _rescale_plan(self, outputs: Any, batch_size: int, target_sizes: Any) -> list[tuple[int, int, float, float]]:
        """Per image `(canvas_height, canvas_width, width_scale, height_scale)` in Python ints/doubles.

        `target_sizes` wins: scale = resized size / target size per axis. Otherwise the outputs' `original_sizes`
        with their `scale_factors` (or, without those, resized / original sizes).
        """
        image_sizes = _output_field(outputs, "image_sizes")
        if target_sizes is not None:
            if len(target_sizes) != batch_size:
                raise ValueError(f"target_sizes has {len(target_sizes)} entries for a batch of {batch_size} images.")
            if image_sizes is None:
                raise ValueError("target_sizes needs the outputs' image_sizes (the resized input sizes).")
            canvases = [_size_pair(size, "each target size") for size in target_sizes]
            plan = []
            for canvas, image_size in zip(canvases, image_sizes):
                image_height, image_width = _size_pair(image_size, "image_sizes rows")
                plan.append((canvas[0], canvas[1], image_width / canvas[1], image_height / canvas[0]))
            return plan
        original_sizes = _output_field(outputs, "original_sizes")
        scale_factors = _output_field(outputs, "scale_factors")
        if original_sizes is None or (scale_factors is None and image_sizes is None):
            raise ValueError("Cannot map boxes to original pixels: pass target_sizes=[(height, width), ...] or "
                             "outputs that carry original_sizes (and scale_factors or image_sizes).")
        plan = []
        for index in range(batch_size):
            original_height, original_width = _size_pair(original_sizes[index], "original_sizes rows")
            if scale_factors is not None:
                width_scale, height_scale = (float(value) for value in _number_pair(scale_factors[index],
                                                                                     "scale_factors rows"))
            else:
                image_height, image_width = _size_pair(image_sizes[index], "image_sizes rows")
                width_scale, height_scale = image_width / original_width, image_height / original_height
            plan.append((original_height, original_width, width_scale, height_scale))
        return plan

    @staticmethod
    def _selected_detections(outputs: Any, index: int, threshold: float) -> tuple[torch.Tensor, ...]:
        """Image `index`'s detections with `score >= threshold`, by descending score (stable)."""
        boxes = _output_field(outputs, "pred_boxes")[index]
        scores = _output_field(outputs, "scores")[index]
        labels = _output_field(outputs, "labels")[index]
        keep = torch.nonzero(scores >= threshold).flatten()
        order = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
        return order, boxes[order], scores[order], labels[order].to(torch.int64)

    @staticmethod
    def _batch_size(outputs: Any, threshold: float) -> int:
        """Number of images in `outputs`; ValueError when fields are missing or when the model kept fewer
        detections (`keep_score_threshold`) than `threshold` asks for."""
        for name in ("pred_boxes", "scores", "labels"):
            if _output_field(outputs, name) is None:
                raise ValueError(f"The model outputs have no {name!r}; cannot post-process them.")
        kept_from = _output_field(outputs, "keep_score_threshold")
        if kept_from is not None:
            # compared as the scores are (float32): 0.3 and 0.30000001 select the same detections
            score_dtype = _output_field(outputs, "scores")[0].dtype if len(_output_field(outputs, "scores")) \
                else torch.float32
            if torch.tensor(float(threshold), dtype=score_dtype) < torch.tensor(float(kept_from), dtype=score_dtype):
                raise ValueError(
                    f"These outputs hold only the detections with score >= {float(kept_from):g} (the model ran with "
                    f"keep_score_threshold={float(kept_from):g}), so post-processing with threshold={threshold:g} "
                    "would silently miss detections; run the model with keep_score_threshold <= threshold (or None).")
        return len(_output_field(outputs, "pred_boxes"))

    def post_process_object_detection(self, outputs: Any, threshold: float = 0.5,
                                      target_sizes: Optional[Union[torch.Tensor, Sequence]] = None) -> list[dict]:
        """Detections per image in original-image pixels.

        Args:
            outputs: model outputs with per-image lists `pred_boxes` (N_i, 4), `scores` (N_i,), `labels` (N_i,), and
                `image_sizes` / `original_sizes` / `scale_factors` (batch_size, 2).
            threshold: keeps detections with `score >= threshold` (0.0 keeps all of the model's detections).
            target_sizes: (batch_size, 2) (height, width) to map the boxes to instead of the original sizes.

        Returns:
            one dict per image: `scores` (N,) float32, `labels` (N,) int64, `boxes` (N, 4) float32 x1, y1, x2, y2
            (not clipped, as in MMDetection), by descending score.
        """
        threshold = _checked_score_threshold(threshold, "threshold", allow_none=False)
        batch_size = self._batch_size(outputs, threshold)
        plan = self._rescale_plan(outputs, batch_size, target_sizes)
        results = []
        for index, (_, _, width_scale, height_scale) in enumerate(plan):
            _, boxes, scores, labels = self._selected_detections(outputs, index, threshold)
            results.append({"scores": scores, "labels": labels,
                            "boxes": rescale_boxes(boxes, width_scale, height_scale)})
        return results

    def post_process_instance_segmentation(self, outputs: Any, threshold: float = 0.5, mask_threshold: float = 0.5,
                                           target_sizes: Optional[Union[torch.Tensor, Sequence]] = None,
                                           return_binary_maps: bool = True, return_rle: bool = False) -> list[dict]:
        """Detections with masks pasted at the original image size, like MMDetection's `predict(rescale=True)`.

        Args:
            outputs: as for `post_process_object_detection`, plus `mask_probs` (N_i, 28, 28) per image.
            threshold: keeps detections with `score >= threshold` (0.0 keeps all of the model's detections).
            mask_threshold: a pixel belongs to an instance when its pasted probability is `>= mask_threshold`.
            target_sizes: (batch_size, 2) (height, width) of the canvas instead of the original sizes.
            return_binary_maps: True (default): every instance's full mask, overlaps kept, as `masks` (N, H, W) bool
                and — the format of transformers' own instance-segmentation models with `return_binary_maps=True`
                — as `segmentation` (the same tensor, not a copy: when moving results off a GPU, move it once)
                with `segments_info`; with no instance `segmentation` is an (H, W) map of -1, as in transformers. This is what
                `supervision.Detections.from_transformers` reads. False: `segmentation` (H, W) int64 with the index
                of the highest-scoring instance covering each pixel (-1 for none) and `segments_info`; pixels where
                instances overlap belong to one instance only.
            return_rle: `rle_masks`, a list of COCO compressed RLE dicts `{"size": [H, W], "counts": str}`, instead
                of dense masks — the same masks, without ever holding N x H x W (needs pycocotools). The result then
                has no `masks` and no `segmentation`: tools that read those (supervision) see boxes only; decode
                with `decode_mask_rle` first. Cannot be combined with `return_binary_maps=False`.

        Returns:
            one dict per image with `scores` (N,), `labels` (N,) int64, `boxes` (N, 4) float32 in canvas pixels and
            `masks` + `segmentation` + `segments_info`, `rle_masks`, or `segmentation` + `segments_info`, by
            descending score. `segments_info[i]` is `{"id": i, "label_id", "score", "was_fused": False}`.
        """
        if return_rle and not return_binary_maps:
            raise ValueError("return_rle=True encodes the per-instance binary masks; it cannot be combined with "
                             "return_binary_maps=False.")
        threshold = _checked_score_threshold(threshold, "threshold", allow_none=False)
        batch_size = self._batch_size(outputs, threshold)
        all_mask_probs = _output_field(outputs, "mask_probs")
        if all_mask_probs is None:
            raise ValueError("The model outputs have no 'mask_probs'; use post_process_object_detection instead.")
        plan = self._rescale_plan(outputs, batch_size, target_sizes)
        results = []
        for index, (height, width, width_scale, height_scale) in enumerate(plan):
            order, boxes, scores, labels = self._selected_detections(outputs, index, threshold)
            boxes = rescale_boxes(boxes, width_scale, height_scale)
            mask_probs = all_mask_probs[index][order]
            result = {"scores": scores, "labels": labels, "boxes": boxes}
            if return_rle:
                result["rle_masks"] = encode_pasted_masks_rle(mask_probs, boxes, height, width, mask_threshold)
            elif return_binary_maps:
                masks = paste_masks(mask_probs, boxes, height, width, mask_threshold)
                no_instance_map = torch.full((height, width), -1, dtype=torch.int64, device=boxes.device)
                result.update({"masks": masks, "segmentation": masks if len(masks) else no_instance_map,
                               "segments_info": _segments_info(scores, labels)})
            else:
                result.update(self._segmentation_map(mask_probs, boxes, scores, labels, height, width, mask_threshold))
            results.append(result)
        return results

    @staticmethod
    def _segmentation_map(mask_probs: torch.Tensor, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                          height: int, width: int, mask_threshold: float) -> dict[str, Any]:
        """(H, W) int64 instance-index map (-1 = none; higher score wins overlaps) and its `segments_info`."""
        segmentation = torch.full((height, width), -1, dtype=torch.int64, device=boxes.device)
        for index, rows, columns, window in iter_pasted_masks(mask_probs, boxes, height, width, mask_threshold):
            region = segmentation[rows, columns]
            region[window & (region < 0)] = index
        return {"segmentation": segmentation, "segments_info": _segments_info(scores, labels)}


__all__ = ["MaskRCNNImageProcessor", "ImageTooLargeError", "AnnotationError", "DEFAULT_MAX_IMAGE_PIXELS", "load_image",
           "resize_bilinear_uint8", "compute_rescaled_size", "paste_masks", "encode_mask_rle", "encode_masks_rle",
           "decode_mask_rle", "encode_pasted_masks_rle"]
