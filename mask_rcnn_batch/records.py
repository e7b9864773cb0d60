# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""COCO results records of post-processed detections: boxes, category ids, image ids, RLE masks (no file system,
no model). Reusable by Ray workers, an endpoint, tools/evaluate_coco.py."""

from __future__ import annotations

import hashlib
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from configuration_mask_rcnn import COCO_CATEGORY_IDS, COCO_CLASSES
from image_processing_mask_rcnn import encode_masks_rle
from inference_mask_rcnn import label_names

IMAGE_ID_BITS = 52  # < 2**53: exact in JSON doubles and JavaScript numbers
# COCO 2017's 80 categories as (official category_id, name) in the model's label order (MMDetection's CocoDataset).
COCO_CATEGORIES: Tuple[Tuple[int, str], ...] = tuple(zip(COCO_CATEGORY_IDS, COCO_CLASSES))


def to_numpy(array: Any) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array."""
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def boxes_to_xywh(boxes: Any) -> List[List[float]]:
    """(N, 4) x1, y1, x2, y2 -> N COCO boxes [x, y, width, height] as Python floats (MMDetection's xyxy2xywh)."""
    boxes = to_numpy(boxes).reshape(-1, 4)
    return [[float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1)] for x1, y1, x2, y2 in boxes.tolist()]


def coco_category_ids(id2label: Mapping[Any, str]) -> Optional[Dict[int, int]]:
    """{label index: official COCO category_id} when the model's classes are COCO's 80 in MMDetection's order, else
    None (callers then write the label index itself as `category_id`)."""
    if label_names(id2label) != list(COCO_CLASSES):
        return None
    return dict(enumerate(COCO_CATEGORY_IDS))


def category_list(id2label: Mapping[Any, str], category_ids: Optional[Mapping[int, int]] = None) -> List[Dict]:
    """COCO `categories` entries `{"id", "name"}` for the model's labels under a label -> category_id mapping."""
    return [{"id": int(category_ids[index]) if category_ids is not None else index, "name": name}
            for index, name in enumerate(label_names(id2label))]


def stable_image_id(file_name: str) -> int:
    """Deterministic COCO `image_id` of a file name: first 52 bits of SHA-256 of its UTF-8 bytes, as an int."""
    digest = hashlib.sha256(file_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - IMAGE_ID_BITS)


def detections_to_coco_records(result: Mapping[str, Any], image_id: int, category_ids: Optional[Mapping[int, int]]
                               = None, file_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """One image's post-processed detections -> COCO results records (one per instance, in the result's order).

    Args:
        result: one entry of `MaskRCNNImageProcessor.post_process_instance_segmentation`: `boxes` (N, 4) x1y1x2y2,
            `scores` (N,), `labels` (N,), `masks` (N, H, W) bool (tensors or arrays). Without `masks` the records
            have no `segmentation` (detection-only results).
        image_id: the COCO image id to write.
        category_ids: label index -> category_id (e.g. `coco_category_ids(config.id2label)`); None writes the label
            index.
        file_name: written into every record when given (ignored by pycocotools).

    Returns:
        `[{"image_id", ("file_name",) "category_id", "bbox": [x, y, w, h], "score", ("segmentation": RLE)}]`.
    """
    labels = to_numpy(result["labels"]).reshape(-1).tolist()
    scores = to_numpy(result["scores"]).reshape(-1).tolist()
    boxes = boxes_to_xywh(result["boxes"])
    rles = encode_masks_rle(result["masks"]) if result.get("masks") is not None else None
    records = []
    for index, (label, score, box) in enumerate(zip(labels, scores, boxes)):
        record: Dict[str, Any] = {"image_id": int(image_id)}
        if file_name is not None:
            record["file_name"] = file_name
        record["category_id"] = int(category_ids[int(label)]) if category_ids is not None else int(label)
        record["bbox"] = box
        record["score"] = float(score)
        if rles is not None:
            record["segmentation"] = rles[index]
        records.append(record)
    return records
