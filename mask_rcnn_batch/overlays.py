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
from PIL import Image

from .records import to_numpy

GOLDEN_RATIO_HUE_STEP = 0.618033988749895  # consecutive class indices get well separated hues
OVERLAY_SATURATION, OVERLAY_VALUE = 0.85, 1.0
DEFAULT_MASK_ALPHA = 0.45
BOX_WIDTH = 2


def class_colour(label: int) -> Tuple[int, int, int]:
    """A fixed bright (red, green, blue) 0..255 colour per class index (golden-ratio hue steps)."""
    red, green, blue = colorsys.hsv_to_rgb((label * GOLDEN_RATIO_HUE_STEP) % 1.0, OVERLAY_SATURATION, OVERLAY_VALUE)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_overlay(rgb: np.ndarray, result: Mapping[str, Any], label_names: Sequence[str],
                 alpha: float = DEFAULT_MASK_ALPHA) -> Image.Image:
    """(H, W, 3) uint8 RGB image + one post-processed result -> RGB PIL image with masks, boxes and captions.

    `result` is one entry of `post_process_instance_segmentation` (`boxes` (N, 4) x1y1x2y2 in the image's pixels,
    `scores` (N,), `labels` (N,), optional `masks` (N, H, W) bool); captions read "name score" with
    `label_names[label]` (the label index when it has no name).
    """
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    canvas = torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")).permute(2, 0, 1)
    labels = [int(label) for label in to_numpy(result["labels"]).reshape(-1)]
    if labels:
        colours = [class_colour(label) for label in labels]
        masks = result.get("masks")
        if masks is not None:
            canvas = draw_segmentation_masks(canvas, torch.as_tensor(masks, dtype=torch.bool), alpha=alpha,
                                             colors=colours)
        height, width = rgb.shape[:2]
        boxes = torch.as_tensor(to_numpy(result["boxes"]), dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
        scores = to_numpy(result["scores"]).reshape(-1).tolist()
        captions = [f"{label_names[label] if label < len(label_names) else label} {score:.2f}"
                    for label, score in zip(labels, scores)]
        canvas = draw_bounding_boxes(canvas, boxes, labels=captions, colors=colours, width=BOX_WIDTH)
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


def overlay_png(overlay: Image.Image) -> bytes:
    """An overlay encoded as PNG bytes (what a worker sends back and the output folder writes)."""
    buffer = io.BytesIO()
    overlay.save(buffer, format="PNG")
    return buffer.getvalue()
