# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Overlays: an image with its instances' coloured masks, boxes and "label score" captions.

Public API (also used by the Gradio Space): `draw_overlay(rgb, result, label_names)` and `class_colour(label)`.
Rendering only; writing the PNG files is `outputs.py`'s job.
"""

from __future__ import annotations

import colorsys
import io
from typing import Any, Mapping, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .records import to_numpy

GOLDEN_RATIO_HUE_STEP = 0.618033988749895  # consecutive class indices get well separated hues
OVERLAY_SATURATION, OVERLAY_VALUE = 0.85, 1.0
DEFAULT_MASK_ALPHA = 0.45
BOX_WIDTH = 2
OUTLINE_WIDTH = 2  # every instance's mask edge in its class colour: overlapping instances stay apart
CAPTION_HEIGHT_FRACTION = 1 / 40  # caption font size: this fraction of the image's shorter side ...
CAPTION_FONT_SIZE_RANGE = (11, 48)  # ... within these pixel sizes
DARK_TEXT_LUMINANCE = 140  # captions on backgrounds brighter than this (0..255) are written in black, else white


def class_colour(label: int) -> Tuple[int, int, int]:
    """A fixed bright (red, green, blue) 0..255 colour per class index (golden-ratio hue steps)."""
    red, green, blue = colorsys.hsv_to_rgb((label * GOLDEN_RATIO_HUE_STEP) % 1.0, OVERLAY_SATURATION, OVERLAY_VALUE)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_overlay(rgb: np.ndarray, result: Mapping[str, Any], label_names: Sequence[str],
                 alpha: float = DEFAULT_MASK_ALPHA) -> Image.Image:
    """(H, W, 3) uint8 RGB image + one post-processed result -> RGB PIL image with masks, boxes and captions.

    `result` is one entry of `post_process_instance_segmentation` (`boxes` (N, 4) x1y1x2y2 in the image's pixels,
    `scores` (N,), `labels` (N,), optional `masks` (N, H, W) bool); captions read "name score" with
    `label_names[label]` (the label index when it has no name). Each mask is filled with its class colour at
    `alpha` and outlined at full strength, so overlapping instances (also of one class) stay distinguishable;
    captions sit on a box of the class colour above their box (inside it at the top edge), the best-scoring on top.
    The caller's arrays are not modified.
    """
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    canvas = torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")).permute(2, 0, 1)
    labels = [int(label) for label in to_numpy(result["labels"]).reshape(-1)]
    if not labels:
        return Image.fromarray(canvas.permute(1, 2, 0).numpy())
    colours = [class_colour(label) for label in labels]
    height, width = rgb.shape[:2]
    masks = result.get("masks")
    if masks is not None:
        masks = torch.as_tensor(masks, dtype=torch.bool).reshape(-1, height, width)
        canvas = draw_segmentation_masks(canvas, masks, alpha=alpha, colors=colours)
        canvas = _draw_mask_outlines(canvas, masks, colours)
    boxes = torch.tensor(to_numpy(result["boxes"]), dtype=torch.float32).reshape(-1, 4)  # a copy: clamped below
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
    canvas = draw_bounding_boxes(canvas, boxes, colors=colours, width=BOX_WIDTH)
    image = Image.fromarray(canvas.permute(1, 2, 0).numpy())
    scores = to_numpy(result["scores"]).reshape(-1).tolist()
    captions = [f"{label_names[label] if label < len(label_names) else label} {score:.2f}"
                for label, score in zip(labels, scores)]
    _draw_captions(image, boxes.tolist(), captions, colours, scores)
    return image


def _draw_mask_outlines(canvas: torch.Tensor, masks: torch.Tensor, colours: Sequence[Tuple[int, int, int]]
                        ) -> torch.Tensor:
    """(3, H, W) uint8 with each mask's inner edge (`OUTLINE_WIDTH` pixels) in its colour; one mask's bounding
    window at a time, so no second N x H x W array is made."""
    canvas = canvas.clone()
    for mask, colour in zip(masks, colours):
        rows, columns = torch.nonzero(mask.any(dim=1)).flatten(), torch.nonzero(mask.any(dim=0)).flatten()
        if rows.numel() == 0:
            continue
        top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1
        window = mask[top:bottom, left:right].float()[None, None]
        # eroded by OUTLINE_WIDTH: min-pooling, with the outside of the window counted as background
        eroded = -torch.nn.functional.max_pool2d(
            torch.nn.functional.pad(-window, [OUTLINE_WIDTH] * 4, value=0.0), 2 * OUTLINE_WIDTH + 1, stride=1)
        edge = (window > 0) & (eroded <= 0)
        region = canvas[:, top:bottom, left:right]
        region[:, edge[0, 0]] = torch.tensor(colour, dtype=torch.uint8)[:, None]
    return canvas


def _caption_font(height: int, width: int) -> Any:
    low, high = CAPTION_FONT_SIZE_RANGE
    size = int(min(high, max(low, round(min(height, width) * CAPTION_HEIGHT_FRACTION))))
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 with FreeType: a scalable font
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def _draw_captions(image: Image.Image, boxes: Sequence[Sequence[float]], captions: Sequence[str],
                   colours: Sequence[Tuple[int, int, int]], scores: Sequence[float]) -> None:
    """Writes each caption on a filled box of its colour, above its box (or inside, at the top, when there is no
    room), kept within the image; lowest score first so the best-scoring captions end on top."""
    draw = ImageDraw.Draw(image)
    font = _caption_font(image.height, image.width)
    for index in sorted(range(len(captions)), key=lambda i: scores[i]):
        x1, y1 = boxes[index][0], boxes[index][1]
        left, top, right, bottom = draw.textbbox((0, 0), captions[index], font=font)
        padding = max(1, (bottom - top) // 5)
        label_width, label_height = right - left + 2 * padding, bottom - top + 2 * padding
        x = int(min(max(0, x1), max(0, image.width - label_width)))
        y = int(y1 - label_height if y1 - label_height >= 0 else y1)
        red, green, blue = colours[index]
        text_colour = (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > DARK_TEXT_LUMINANCE else (255,) * 3
        draw.rectangle([x, y, x + label_width - 1, y + label_height - 1], fill=colours[index])
        draw.text((x + padding - left, y + padding - top), captions[index], fill=text_colour, font=font)


def overlay_png(overlay: Image.Image) -> bytes:
    """An overlay encoded as PNG bytes (what a worker sends back and the output folder writes)."""
    buffer = io.BytesIO()
    overlay.save(buffer, format="PNG")
    return buffer.getvalue()
