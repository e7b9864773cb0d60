# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Export a converted Mask R-CNN folder to one ONNX file: any batch size, any image size, full detections.

    python export_onnx.py --model-dir FOLDER [--output FOLDER/model.onnx]
    python convert_mmdet_checkpoint.py --config NAME --output-dir FOLDER --onnx   # convert, then export

The graph's contract (what `onnx_inference_mask_rcnn.py` and users code against):

    inputs   pixel_values (B, 3, H, W) float32  normalised and zero-padded exactly as MaskRCNNImageProcessor does
             image_sizes  (B, 2) int64          (height, width) of each resized image inside the padded input
    outputs  boxes        (N, 4) float32        x1, y1, x2, y2 in the resized frame, clipped to the image
             scores       (N,)   float32        class probability, > config.score_threshold
             labels       (N,)   int64          class index (config.id2label)
             mask_probs   (N, 28, 28) float32   sigmoid mask of each detection's class, covering its box
             batch_index  (N,)   int64          image of each detection; detections are grouped by image, best first

Exporter: the TorchScript-tracing exporter (`torch.onnx.export(dynamo=False)`), opset 17. The dynamo exporter cannot
translate torchvision's `nms`/`roi_align` (pytorch#118884, vision#9321) and specialises data-dependent sizes; tracing
records the standard ONNX ops `NonMaxSuppression` (batched, with a score threshold and an output cap: mmcv's
`batched_nms` with its per-group coordinate offset is one call per stage) and `RoiAlign` (opset 16 is the first with
`coordinate_transformation_mode="half_pixel"`, i.e. `aligned=True`), and keeps every shape symbolic as long as the
forward reads sizes from tensors. Opset 17 runs on onnxruntime >= 1.13 (`MIN_ONNXRUNTIME_VERSION`).

The exported forward (`MaskRCNNOnnxModule`) reuses the model's submodules and its box coding, anchor and level
functions, with the per-image Python loops of the PyTorch path replaced by batched tensor code:
- per-level RPN top-k with `k = min(rpn_pre_nms_top_k, anchors of the level)` computed from the input's shape;
- NMS with mmcv's semantics: boxes of different groups (FPN levels, classes) shifted apart by
  `group * (max coordinate of the image's candidates + 1)` exactly as in PyTorch, so the IoUs are computed on the same
  float32 coordinates; images are separate batches of one `NonMaxSuppression`. mmcv's split at 10000 boxes (per-group
  NMS on the same shifted boxes, then a re-sort) keeps the same boxes: shifted groups never overlap;
- multi-level RoIAlign: each level pools only its own RoIs (dynamic `nonzero`), merged back with a scatter;
- one dummy RoI is appended before the box and mask heads and dropped after them, so images without proposals or
  detections give empty outputs instead of zero-sized convolutions.

The file is validated right after writing: `onnx.checker`, then one onnxruntime run on a random-free test image
compared with the PyTorch model; on any failure the file is removed and the error says why.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align as torchvision_roi_align

try:
    from .modeling_mask_rcnn import (MaskRCNNForInstanceSegmentation, batched_non_maximum_suppression, decode_boxes,
                                     make_cell_anchors, make_grid_anchors, map_rois_to_levels)
except ImportError:  # run as a script or imported by name. importlib, not a from-import: the remote-code scanner of
    # transformers < 4.51 reads import lines under `except ImportError:` as required packages.
    _modeling = importlib.import_module("modeling_mask_rcnn")
    MaskRCNNForInstanceSegmentation = _modeling.MaskRCNNForInstanceSegmentation
    batched_non_maximum_suppression = _modeling.batched_non_maximum_suppression
    decode_boxes, make_cell_anchors = _modeling.decode_boxes, _modeling.make_cell_anchors
    make_grid_anchors, map_rois_to_levels = _modeling.make_grid_anchors, _modeling.map_rois_to_levels

try:  # the graph contract (names, opset) lives in the torch-free runtime that reads the file
    from .onnx_inference_mask_rcnn import (INPUT_NAMES, METADATA_ID2LABEL, METADATA_PREPROCESSING,
                                           MIN_ONNXRUNTIME_VERSION, ONNX_OPSET, OUTPUT_NAMES, box_iou)
except ImportError:
    _runtime = importlib.import_module("onnx_inference_mask_rcnn")
    INPUT_NAMES, OUTPUT_NAMES, ONNX_OPSET = _runtime.INPUT_NAMES, _runtime.OUTPUT_NAMES, _runtime.ONNX_OPSET
    METADATA_ID2LABEL, METADATA_PREPROCESSING = _runtime.METADATA_ID2LABEL, _runtime.METADATA_PREPROCESSING
    MIN_ONNXRUNTIME_VERSION, box_iou = _runtime.MIN_ONNXRUNTIME_VERSION, _runtime.box_iou

logger = logging.getLogger(__name__)

ONNX_FILE_NAME = "model.onnx"
PREPROCESSING_KEYS = ("image_mean", "image_std", "input_channel_order", "resize_scale", "size_divisor", "pad_value",
                      "do_resize", "do_normalize", "do_pad")
# the validation run: one padded image of this (height, width), a smooth deterministic pattern
VALIDATION_IMAGE_SIZE = (320, 480)
# Agreement required between onnxruntime and the export forward run in PyTorch on the validation image. They differ
# only by the rounding of other kernels (onnxruntime's MLAS convolutions vs oneDNN): measured up to 0.02 px and 5e-4
# in score on the synthetic test weights, which amplify rounding ~40x over trained ones (docs/export.md). A wrong
# graph (a misplaced offset, level or coordinate mode) moves boxes by pixels and scores by tenths.
VALIDATION_BOX_TOLERANCE = 0.25
VALIDATION_SCORE_TOLERANCE = 1e-2
VALIDATION_MASK_PROB_TOLERANCE = 0.05
# rounding flips decisions at boundaries (score threshold, NMS IoU, the top-k and detection caps): up to this many
# detections, or this fraction, may lack a partner on either side
VALIDATION_MAX_UNMATCHED = 2
VALIDATION_UNMATCHED_FRACTION = 0.1
VALIDATION_MATCH_IOU = 0.9


class ExportError(RuntimeError):
    """The export could not be written or did not validate; no file was left at the output path."""


# ================================================================================================================
# ONNX operators with a PyTorch reference (used while tracing, and to compare)
# ================================================================================================================


class BatchedNonMaxSuppression(torch.autograd.Function):
    """ONNX `NonMaxSuppression` (one class per batch): `(num_selected, 3)` int64 rows `(batch, 0, box_index)`.

    Per batch: boxes with `score > score_threshold`, greedy by descending score (ties: lower index first, as
    onnxruntime and a stable sort do), a box is suppressed when its IoU with a kept box is `> iou_threshold`, at most
    `max_output` kept. PyTorch side: torchvision's NMS on the stably sorted candidates — mmcv's rule.
    """

    @staticmethod
    def forward(ctx, boxes: torch.Tensor, scores: torch.Tensor, max_output: int, iou_threshold: float,
                score_threshold: float) -> torch.Tensor:
        from torchvision.ops import nms

        selected = []
        for batch in range(boxes.shape[0]):
            candidates = (scores[batch, 0] > score_threshold).nonzero().view(-1)
            order = candidates[scores[batch, 0, candidates].sort(descending=True, stable=True)[1]]
            kept = order[nms(boxes[batch, order], scores[batch, 0, order], iou_threshold)][:max_output]
            rows = torch.zeros((kept.shape[0], 3), dtype=torch.long)
            rows[:, 0] = batch
            rows[:, 2] = kept
            selected.append(rows)
        return torch.cat(selected) if selected else torch.zeros((0, 3), dtype=torch.long)

    @staticmethod
    def symbolic(g, boxes, scores, max_output: int, iou_threshold: float, score_threshold: float):
        return g.op(
            "NonMaxSuppression", boxes, scores,
            g.op("Constant", value_t=torch.tensor([max_output], dtype=torch.long)),
            g.op("Constant", value_t=torch.tensor([iou_threshold], dtype=torch.float32)),
            g.op("Constant", value_t=torch.tensor([score_threshold], dtype=torch.float32)),
        )


def dynamic_top_k_size(scores: torch.Tensor, k: int) -> Union[int, torch.Tensor]:
    """`min(k, scores.shape[1])`, kept symbolic while tracing (a 1-element tensor) so the graph fits any input size."""
    if not torch.jit.is_tracing():
        return min(k, scores.shape[1])
    length = torch._shape_as_tensor(scores)[1].unsqueeze(0)
    return torch.min(torch.cat([torch.tensor([k], dtype=length.dtype), length]))


def top_k(scores: torch.Tensor, k: int, tie_order: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """The `min(k, n)` largest of each row of `(batch_size, n)` scores, descending.

    Exactly equal scores (sigmoid saturates at 1.0 in float32 from a logit of ~17 on) keep the lower index first in
    ONNX's `TopK` (`tie_order="onnx"`, PyTorch side: a stable sort). MMDetection, and the PyTorch model, take the
    order of PyTorch's unstable sort (`tie_order="pytorch"`, each image sorted on its own as the model does), which
    no ONNX operator reproduces: on ties the two may keep other anchors.
    """
    if torch.jit.is_tracing():
        return scores.topk(dynamic_top_k_size(scores, k), dim=1)
    if tie_order == "pytorch":
        if k >= scores.shape[1]:  # the model keeps a short level in anchor order, unsorted
            return scores, torch.arange(scores.shape[1]).expand_as(scores)
        rows = [row.sort(descending=True) for row in scores]
        return torch.stack([r[0][:k] for r in rows]), torch.stack([r[1][:k] for r in rows])
    values, indices = scores.sort(dim=1, descending=True, stable=True)
    return values[:, :k], indices[:, :k]


def group_offset_boxes(boxes: torch.Tensor, group_ids: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """mmcv's `batched_nms` shift, per image: `boxes + group_id * (max coordinate of the candidates + 1)`.

    Args:
        boxes: `(batch_size, num_boxes, 4)`; group_ids: `(batch_size, num_boxes)` or `(num_boxes,)` int64;
        candidate: `(batch_size, num_boxes)` bool, the boxes that reach NMS (their coordinates set the maximum).

    The maximum includes 0, which changes nothing for clipped boxes and keeps the reduction non-empty.
    """
    masked = torch.where(candidate[..., None], boxes, torch.zeros_like(boxes))
    max_coordinate = masked.flatten(1).max(dim=1)[0]  # (batch_size,)
    offsets = group_ids.to(boxes.dtype) * (max_coordinate[:, None] + torch.tensor(1).to(boxes))
    return boxes + offsets[..., None]


def clip_to_images(boxes: torch.Tensor, limits: torch.Tensor) -> torch.Tensor:
    """Clip `(..., 4)` boxes to `[0, width] x [0, height]`; `limits` `(..., 4)` holds `(width, height, width, height)`
    per box (as float32; the same values as PyTorch's `clamp_(min=0, max=width)`)."""
    return torch.minimum(torch.clamp(boxes, min=0), limits)


# ================================================================================================================
# The exported forward
# ================================================================================================================


class MaskRCNNOnnxModule(nn.Module):
    """Batched test-time forward of a `MaskRCNNForInstanceSegmentation` for tracing into ONNX.

    `(pixel_values (B, 3, H, W), image_sizes (B, 2))` -> `(boxes (N, 4), scores (N,), labels (N,), mask_probs
    (N, 28, 28), batch_index (N,))`. Same submodules, constants and float32 arithmetic as the model's own forward.
    """

    def __init__(self, model: MaskRCNNForInstanceSegmentation, tie_order: str = "onnx") -> None:
        """`tie_order`: how exactly equal scores are ordered when run in PyTorch (tracing always records ONNX's rule):
        "onnx" (lower index first, what onnxruntime does) or "pytorch" (the model's own unstable sorts and
        `batched_non_maximum_suppression`, its 10000-box split included: then it reproduces the model's detections)."""
        super().__init__()
        if tie_order not in ("onnx", "pytorch"):
            raise ValueError(f"tie_order must be 'onnx' or 'pytorch', got {tie_order!r}.")
        self.tie_order = tie_order
        self.model = model
        self.config = model.config
        for stride in self.config.anchor_strides:
            cell = make_cell_anchors(stride, self.config.anchor_scales, self.config.anchor_ratios)
            self.register_buffer(f"cell_anchors_{stride}", cell, persistent=False)

    # ------------------------------------------------------------------------------------------------ stages
    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        model = self.model
        pyramid = model.fpn(model.backbone(pixel_values))
        # (batch_size, 4): per-box clip limits (width, height, width, height), float32
        limits = image_sizes.flip(1).repeat(1, 2).to(torch.float32)
        proposals, proposal_batch = self.propose(pyramid, limits)
        num_levels = len(self.config.roi_featmap_strides)
        roi_levels = pyramid[:num_levels]
        boxes, scores, labels, batch_index = self.detect(roi_levels, proposals, proposal_batch, limits,
                                                         image_sizes.shape[0])
        mask_probs = self.segment(roi_levels, boxes, labels, batch_index)
        return boxes, scores, labels, mask_probs, batch_index

    def propose(self, pyramid: List[torch.Tensor], limits: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """RPN proposals of the whole batch: boxes `(P, 4)` and their image `(P,)`, grouped by image, best first."""
        config = self.config
        objectness, deltas = self.model.rpn_head(pyramid)
        batch_size = pyramid[0].shape[0]
        level_scores, level_boxes, level_ids = [], [], []
        for level, (logits, level_deltas, feature, stride) in enumerate(
                zip(objectness, deltas, pyramid, config.anchor_strides)):
            anchors = make_grid_anchors(getattr(self, f"cell_anchors_{stride}"), feature.shape[-2:], stride)
            scores = logits.permute(0, 2, 3, 1).reshape(batch_size, -1).sigmoid()  # (B, A_l)
            level_deltas = level_deltas.permute(0, 2, 3, 1).reshape(batch_size, -1, 4)
            if config.rpn_pre_nms_top_k > 0:
                scores, top = top_k(scores, config.rpn_pre_nms_top_k, self.tie_order)
                level_deltas = level_deltas.gather(1, top[..., None].expand(-1, -1, 4))
                anchors = anchors[top]  # (B, k, 4)
            else:
                anchors = anchors[None].expand(batch_size, -1, -1)
            boxes = decode_boxes(anchors.reshape(-1, 4), level_deltas.reshape(-1, 4), config.rpn_box_coder_means,
                                 config.rpn_box_coder_stds, config.box_delta_clamp, None)
            level_boxes.append(clip_to_images(boxes.view(batch_size, -1, 4), limits[:, None, :]))
            level_scores.append(scores)
            level_ids.append(torch.full_like(scores, level, dtype=torch.long))
        boxes, scores, ids = torch.cat(level_boxes, 1), torch.cat(level_scores, 1), torch.cat(level_ids, 1)
        widths = boxes[..., 2] - boxes[..., 0]
        heights = boxes[..., 3] - boxes[..., 1]
        large_enough = (widths > config.rpn_min_box_size) & (heights > config.rpn_min_box_size)
        # boxes too small get score -1: below NonMaxSuppression's score threshold of -0.5 (sigmoid scores are >= 0)
        nms_scores = torch.where(large_enough, scores, torch.full_like(scores, -1.0))
        selected = self.non_maximum_suppression(boxes, nms_scores, ids, large_enough, config.rpn_max_proposals,
                                                config.rpn_nms_iou_threshold, -0.5)
        batch, index = selected[:, 0], selected[:, 2]
        return boxes[batch, index], batch

    def non_maximum_suppression(self, boxes: torch.Tensor, scores: torch.Tensor, group_ids: torch.Tensor,
                                candidate: torch.Tensor, max_output: int, iou_threshold: float,
                                score_threshold: float) -> torch.Tensor:
        """mmcv's `batched_nms` per image: `(B, n, 4)` boxes, `(B, n)` scores, `(B or 1, n)` groups, `(B, n)` bool
        candidates (`scores > score_threshold` exactly where `candidate`) -> `(num_kept, 3)` rows `(image, 0, box)`,
        grouped by image, best first, at most `max_output` per image."""
        if self.tie_order == "pytorch" and not torch.jit.is_tracing():
            rows = []
            for image in range(boxes.shape[0]):
                indices = candidate[image].nonzero().view(-1)
                groups = group_ids[min(image, group_ids.shape[0] - 1)]
                kept = indices[batched_non_maximum_suppression(
                    boxes[image, indices], scores[image, indices], groups[indices], iou_threshold,
                    self.config.nms_split_threshold)[:max_output]]
                rows.append(torch.stack([torch.full_like(kept, image), torch.zeros_like(kept), kept], dim=1))
            return torch.cat(rows)
        shifted = group_offset_boxes(boxes, group_ids, candidate)
        return BatchedNonMaxSuppression.apply(shifted, scores[:, None, :], max_output, iou_threshold, score_threshold)

    def pool(self, roi_align_module: nn.Module, levels: List[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Multi-level RoIAlign of `(R, 5)` RoIs -> `(R, C, S, S)`: each level pools only its RoIs, then a scatter
        puts them back in RoI order (the model's `MaskRCNNMultiLevelRoIAlign` without its thread pool)."""
        size = roi_align_module.output_size
        level_of_roi = map_rois_to_levels(rois, roi_align_module.finest_scale, len(levels))
        pooled = rois.new_zeros((rois.shape[0], roi_align_module.out_channels, size, size))
        for level, (feature, stride) in enumerate(zip(levels, roi_align_module.featmap_strides)):
            indices = torch.nonzero(level_of_roi == level).view(-1)
            level_pooled = torchvision_roi_align(feature, rois[indices], (size, size), spatial_scale=1 / stride,
                                                 sampling_ratio=roi_align_module.sampling_ratio,
                                                 aligned=roi_align_module.aligned)
            pooled = pooled.scatter(0, indices.view(-1, 1, 1, 1).expand_as(level_pooled), level_pooled)
        return pooled

    def detect(self, levels: List[torch.Tensor], proposals: torch.Tensor, proposal_batch: torch.Tensor,
               limits: torch.Tensor, batch_size: Union[int, torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """Box head + class-wise NMS per image: boxes `(N, 4)`, scores `(N,)`, labels `(N,)`, batch index `(N,)`."""
        config = self.config
        num_classes = config.num_labels
        rois = torch.cat([proposal_batch.to(proposals.dtype)[:, None], proposals], dim=1)
        rois = torch.cat([rois, self.dummy_roi(rois)])  # never an empty batch for the heads
        class_logits, box_deltas = self.model.box_head(self.pool(self.model.box_roi_align, levels, rois))
        class_logits, box_deltas = class_logits[:-1], box_deltas[:-1]
        num_proposals = proposals.shape[0]
        probabilities = F.softmax(class_logits, dim=-1)[:, :-1]  # (P, C), background (last column) dropped
        repeated = proposals[:, None, :].expand(-1, num_classes, -1).reshape(-1, 4)
        boxes = decode_boxes(repeated, box_deltas.reshape(-1, 4), config.box_coder_means, config.box_coder_stds,
                             config.box_delta_clamp, None)
        boxes = clip_to_images(boxes.view(num_proposals, num_classes, 4), limits[proposal_batch][:, None, :])

        # proposals are grouped by image: scatter them into a padded (B, P_max, C) layout, one NMS batch per image
        images = torch.arange(batch_size, dtype=torch.long, device=proposals.device)
        counts = (proposal_batch[None, :] == images[:, None]).sum(1)  # (B,)
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(num_proposals, dtype=torch.long, device=proposals.device) - starts[proposal_batch]
        max_count = torch.max(torch.cat([counts, torch.zeros(1, dtype=torch.long)]))
        padded_boxes = boxes.new_zeros((batch_size, max_count, num_classes, 4))
        padded_boxes = padded_boxes.index_put((proposal_batch, slot), boxes)
        padded_scores = probabilities.new_full((batch_size, max_count, num_classes), -1.0)
        padded_scores = padded_scores.index_put((proposal_batch, slot), probabilities)
        padded_boxes = padded_boxes.view(batch_size, -1, 4)
        padded_scores = padded_scores.view(batch_size, -1)
        labels = torch.arange(num_classes, dtype=torch.long).repeat(max_count)  # (P_max * C,), class-minor
        candidate = padded_scores > config.score_threshold
        selected = self.non_maximum_suppression(padded_boxes, padded_scores, labels[None, :], candidate,
                                                config.max_detections_per_image, config.nms_iou_threshold,
                                                config.score_threshold)
        batch, index = selected[:, 0], selected[:, 2]
        return padded_boxes[batch, index], padded_scores[batch, index], labels[index], batch

    def segment(self, levels: List[torch.Tensor], boxes: torch.Tensor, labels: torch.Tensor,
                batch_index: torch.Tensor) -> torch.Tensor:
        """Mask head: `(N, 28, 28)` sigmoid probabilities of each detection's own class."""
        rois = torch.cat([batch_index.to(boxes.dtype)[:, None], boxes], dim=1)
        rois = torch.cat([rois, self.dummy_roi(rois)])
        mask_logits = self.model.mask_head(self.pool(self.model.mask_roi_align, levels, rois))[:-1]
        mask_probs = mask_logits.sigmoid()  # all classes first, then each detection's own, as MMDetection does
        return mask_probs[torch.arange(mask_probs.shape[0]), labels]

    @staticmethod
    def dummy_roi(rois: torch.Tensor) -> torch.Tensor:
        """One RoI `(0, 0, 0, 1, 1)` (image 0) appended before a head and dropped after it."""
        return torch.tensor([[0.0, 0.0, 0.0, 1.0, 1.0]], dtype=rois.dtype)


# ================================================================================================================
# Export and validation
# ================================================================================================================


def validation_inputs(settings: Optional[Mapping[str, object]] = None,
                      image_size: Tuple[int, int] = VALIDATION_IMAGE_SIZE) -> Dict[str, np.ndarray]:
    """A deterministic smooth test image, normalised and padded like the image processor with `settings`
    (default: the processor's defaults; any normalisation serves, both sides of a comparison get the same)."""
    settings = dict(settings) if settings is not None else default_preprocessing_settings()
    height, width = image_size
    rows = np.linspace(0.0, 1.0, height, dtype=np.float64)[:, None]
    columns = np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :]
    red = 127.5 + 127.5 * np.sin(7.0 * rows + 3.0 * columns)
    green = 127.5 + 127.5 * np.cos(5.0 * rows * columns + 2.0 * columns)
    blue = 255.0 * ((rows * 4).astype(int) % 2 ^ (columns * 6).astype(int) % 2)
    rgb = np.rint(np.stack([red, green, blue])).astype(np.uint8).astype(np.float32)
    if settings["input_channel_order"] == "bgr":
        rgb = rgb[::-1]
    mean = np.asarray(settings["image_mean"], dtype=np.float32)[:, None, None]
    std = np.asarray(settings["image_std"], dtype=np.float32)[:, None, None]
    pixels = ((rgb - mean) / std).astype(np.float32)
    divisor = int(settings["size_divisor"])
    padded = np.zeros((1, 3, -(-height // divisor) * divisor, -(-width // divisor) * divisor), dtype=np.float32)
    padded[0, :, :height, :width] = pixels
    return {"pixel_values": padded, "image_sizes": np.asarray([[height, width]], dtype=np.int64)}


def pytorch_reference(model: MaskRCNNForInstanceSegmentation, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The PyTorch model's detections on `inputs`, in the ONNX output layout."""
    with torch.inference_mode():
        outputs = model(torch.from_numpy(inputs["pixel_values"]), image_sizes=torch.from_numpy(inputs["image_sizes"]))
    return {
        "boxes": torch.cat(outputs.pred_boxes).numpy(), "scores": torch.cat(outputs.scores).numpy(),
        "labels": torch.cat(outputs.labels).numpy(), "mask_probs": torch.cat(outputs.mask_probs).numpy(),
        "batch_index": np.concatenate([np.full(len(s), i, dtype=np.int64) for i, s in enumerate(outputs.scores)]),
    }


def export_forward_reference(model: MaskRCNNForInstanceSegmentation, inputs: Dict[str, np.ndarray],
                             tie_order: str = "onnx") -> Dict[str, np.ndarray]:
    """`MaskRCNNOnnxModule` run in PyTorch on `inputs`: what the graph computes, in PyTorch's arithmetic."""
    module = MaskRCNNOnnxModule(model, tie_order).eval()
    with torch.inference_mode():
        values = module(torch.from_numpy(inputs["pixel_values"]), torch.from_numpy(inputs["image_sizes"]))
    return {name: value.numpy() for name, value in zip(OUTPUT_NAMES, values)}


def image_inputs(model_dir: Union[str, Path], images: Sequence) -> Dict[str, np.ndarray]:
    """The graph's inputs for `images` (paths, PIL images, arrays), prepared by the folder's image processor."""
    processor = _image_processor_class().from_pretrained(str(model_dir))
    batch = processor(images=list(images), return_tensors="np")
    return {"pixel_values": np.asarray(batch["pixel_values"], dtype=np.float32),
            "image_sizes": np.asarray(batch["image_sizes"], dtype=np.int64)}


def compare_detections(expected: Dict[str, np.ndarray], actual: Dict[str, np.ndarray],
                       match_iou: float = VALIDATION_MATCH_IOU) -> Dict[str, float]:
    """Match detections one to one (same image and label, box IoU > `match_iou`, greedy by expected order) and
    report counts, the largest box and score differences and the largest mask-probability difference of the pairs."""
    pairs, used = [], set()
    iou = box_iou(expected["boxes"], actual["boxes"]) if len(expected["boxes"]) and len(actual["boxes"]) else None
    for index in range(len(expected["scores"])):
        if iou is None:
            break
        same = (actual["labels"] == expected["labels"][index]) & (actual["batch_index"] == expected["batch_index"][index])
        candidates = iou[index] * same
        for used_index in used:
            candidates[used_index] = 0.0
        best = int(np.argmax(candidates)) if len(candidates) else -1
        if best >= 0 and candidates[best] > match_iou:
            pairs.append((index, best))
            used.add(best)
    expected_pairs = np.asarray([p[0] for p in pairs], dtype=np.int64)
    actual_pairs = np.asarray([p[1] for p in pairs], dtype=np.int64)

    def errors(name: str) -> np.ndarray:
        """Largest absolute difference of each pair, `(num_pairs,)`."""
        difference = np.abs(expected[name][expected_pairs].astype(np.float64)
                            - actual[name][actual_pairs].astype(np.float64))
        return difference.reshape(len(pairs), -1).max(axis=1) if pairs else np.zeros(0)

    box_errors, score_errors, mask_errors = errors("boxes"), errors("scores"), errors("mask_probs")
    diverged = ((box_errors > VALIDATION_BOX_TOLERANCE) | (score_errors > VALIDATION_SCORE_TOLERANCE)
                | (mask_errors > VALIDATION_MASK_PROB_TOLERANCE))
    return {"expected": len(expected["scores"]), "actual": len(actual["scores"]), "matched": len(pairs),
            "diverged": int(diverged.sum()),
            "max_box_error": float(box_errors.max()) if pairs else 0.0,
            "max_score_error": float(score_errors.max()) if pairs else 0.0,
            "max_mask_prob_error": float(mask_errors.max()) if pairs else 0.0,
            "max_box_error_of_the_rest": float(box_errors[~diverged].max()) if (~diverged).any() else 0.0,
            "max_score_error_of_the_rest": float(score_errors[~diverged].max()) if (~diverged).any() else 0.0}


def trace_to_onnx(model: MaskRCNNForInstanceSegmentation, path: Union[str, Path], opset: int = ONNX_OPSET,
                  fold_batch_norms: bool = True) -> None:
    """Trace the export forward on the validation image and write the ONNX file (weights inside) to `path`.

    The exporter folds each batch norm into the convolution before it (its eval-mode peephole pass), which onnxruntime
    would do anyway ("ConvBNFusion"). `fold_batch_norms=False` keeps them as `BatchNormalization` nodes, as the
    PyTorch model computes them (TrainingMode.PRESERVE on the eval-mode module skips that pass only). Measured on
    the fixtures, it brings onnxruntime no closer to PyTorch (docs/export.md, tools/onnx_rounding.py), so the default
    folds.
    """
    inputs = validation_inputs()
    module = MaskRCNNOnnxModule(model).eval()
    dynamic_axes = {"pixel_values": {0: "batch_size", 2: "height", 3: "width"}, "image_sizes": {0: "batch_size"},
                    "boxes": {0: "num_detections"}, "scores": {0: "num_detections"},
                    "labels": {0: "num_detections"}, "mask_probs": {0: "num_detections"},
                    "batch_index": {0: "num_detections"}}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about constants and the legacy exporter: expected here
        torch.onnx.export(
            module, (torch.from_numpy(inputs["pixel_values"]), torch.from_numpy(inputs["image_sizes"])), str(path),
            dynamo=False, opset_version=opset, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes, do_constant_folding=True,
            **({} if fold_batch_norms else {"training": torch.onnx.TrainingMode.PRESERVE}),
        )


def _image_processor_class():
    try:
        from .image_processing_mask_rcnn import MaskRCNNImageProcessor
    except ImportError:
        MaskRCNNImageProcessor = importlib.import_module("image_processing_mask_rcnn").MaskRCNNImageProcessor
    return MaskRCNNImageProcessor


def default_preprocessing_settings() -> Dict[str, object]:
    """The image processor's default settings (MMDetection's test pipeline, PyTorch-style normalisation)."""
    processor = _image_processor_class()()
    return {key: getattr(processor, key) for key in PREPROCESSING_KEYS}


def preprocessing_settings(model_dir: Optional[Path]) -> Dict[str, object]:
    """The image processor's settings the runtime needs: the folder's preprocessor_config.json over the processor's
    defaults (preprocessing belongs to the image processor; config.json holds only what the model reads)."""
    settings = default_preprocessing_settings()
    path = model_dir / "preprocessor_config.json" if model_dir is not None else None
    if path is not None and path.is_file():
        with open(path, encoding="utf-8") as handle:
            stored = json.load(handle)
        settings.update({key: stored[key] for key in PREPROCESSING_KEYS if key in stored})
    return settings


def add_metadata(path: Path, model: MaskRCNNForInstanceSegmentation, preprocessing: Dict[str, object]) -> None:
    """Store what the runtime needs to read the file without the folder: labels and preprocessing settings."""
    import onnx

    onnx_model = onnx.load(str(path))
    config = model.config
    metadata = {
        METADATA_ID2LABEL: json.dumps({int(key): value for key, value in config.id2label.items()}),
        METADATA_PREPROCESSING: json.dumps(preprocessing),
        "min_onnxruntime_version": MIN_ONNXRUNTIME_VERSION,
        "mmdet_config_name": str(getattr(config, "mmdet_config_name", "") or ""),
    }
    for key, value in metadata.items():
        entry = onnx_model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(onnx_model, str(path))


def validate_onnx(path: Union[str, Path], model: MaskRCNNForInstanceSegmentation,
                  inputs: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, float]:
    """`onnx.checker` plus one onnxruntime run on `inputs` (default: `validation_inputs`) compared with the export
    forward run in PyTorch with ONNX's tie order; raises ExportError naming what disagrees."""
    import onnx
    import onnxruntime

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"onnx.checker rejected the exported graph: {error}") from error
    inputs = validation_inputs() if inputs is None else inputs
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    values = session.run(list(OUTPUT_NAMES), inputs)
    actual = dict(zip(OUTPUT_NAMES, values))
    expected = export_forward_reference(model, inputs)
    stats = compare_detections(expected, actual)
    if stats["expected"] == 0:
        logger.warning("The model finds no detection on the validation image, so the check covered the backbone and "
                       "the RPN but not the heads' outputs; pass validation_image=/--validation-image with a photo.")
    problems = []
    # a rounding difference may flip a decision (an NMS or top-k boundary, the score threshold, a cap): a detection
    # then has no partner, or its partner comes from another proposal (errors beyond the tolerances). A few such
    # detections are allowed; a wrong graph gives many.
    allowed = max(VALIDATION_MAX_UNMATCHED, int(VALIDATION_UNMATCHED_FRACTION * stats["expected"]))
    differing = max(stats["expected"], stats["actual"]) - stats["matched"] + stats["diverged"]
    if differing > allowed:
        problems.append(
            f"{differing} detections differ (allowed {allowed}): {stats['matched']} of PyTorch's {stats['expected']} "
            f"detections have an onnxruntime partner ({stats['actual']} onnxruntime detections), "
            f"{stats['diverged']} of the pairs differ by more than {VALIDATION_BOX_TOLERANCE} px, "
            f"{VALIDATION_SCORE_TOLERANCE} in score or {VALIDATION_MASK_PROB_TOLERANCE} in mask probability (largest: "
            f"{stats['max_box_error']:.3g} px, {stats['max_score_error']:.3g}, {stats['max_mask_prob_error']:.3g})")
    if problems:
        raise ExportError("The exported graph disagrees with the PyTorch model on the validation image: "
                          + "; ".join(problems) + ".")
    return stats


def load_model_for_export(model_dir: Union[str, Path]) -> MaskRCNNForInstanceSegmentation:
    """The folder's model in float32 eval mode; OSError/ValueError with the model's own message when it cannot load."""
    model = MaskRCNNForInstanceSegmentation.from_pretrained(str(model_dir))
    return model.float().eval()


def export_onnx(model_dir: Union[str, Path], output: Optional[Union[str, Path]] = None,
                model: Optional[MaskRCNNForInstanceSegmentation] = None, validate: bool = True,
                validation_image: Optional[Union[str, Path]] = None) -> Path:
    """Export `model_dir` (a converted folder) to `output` (default `model_dir/model.onnx`) and validate it.

    The file is written next to its destination under a temporary name and renamed into place only after it
    validated, so a failed export never leaves a partial or wrong `model.onnx`.

    Raises:
        ExportError: the folder has no usable weights, the output path cannot be written, or the graph does not
            validate (the message says which).
    """
    model_dir = Path(model_dir)
    output = Path(output) if output is not None else model_dir / ONNX_FILE_NAME
    if model is None:
        if not model_dir.is_dir():
            raise ExportError(f"{model_dir} is not a folder; pass a folder made by convert_mmdet_checkpoint.py.")
        try:
            model = load_model_for_export(model_dir)
        except (OSError, ValueError) as error:
            raise ExportError(f"Cannot export {model_dir}: {error}") from error
    else:
        model = model.float().eval()
    output_folder = output.resolve().parent
    if output.is_dir():
        raise ExportError(f"The output path {output} is a folder; pass a file path such as {output / ONNX_FILE_NAME}.")
    if not output_folder.is_dir():
        raise ExportError(f"Cannot write {output}: the folder {output_folder} does not exist.")
    try:
        handle, partial_name = tempfile.mkstemp(prefix=f".{output.name}.partial-", dir=output_folder)
        os.close(handle)
    except OSError as error:
        raise ExportError(f"Cannot write {output}: {error.strerror or error} (is {output_folder} writable?).") from None
    partial = Path(partial_name)
    try:
        trace_to_onnx(model, partial)
        add_metadata(partial, model, preprocessing_settings(model_dir if model_dir.is_dir() else None))
        if validate:
            inputs = image_inputs(model_dir, [validation_image]) if validation_image is not None else None
            stats = validate_onnx(partial, model, inputs)
            logger.info("Validated %s: %d of %d detections matched, boxes within %.2g px, scores within %.2g",
                        output, stats["matched"], stats["expected"], stats["max_box_error"], stats["max_score_error"])
        os.chmod(partial, 0o644)
        os.replace(partial, output)
    except OSError as error:
        raise ExportError(f"Writing {output} failed ({error.strerror or error}); no partial file was left.") from None
    finally:
        if partial.exists():
            partial.unlink()
    return output


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Export a converted Mask R-CNN folder to ONNX (dynamic batch and "
                                                 "image size), validated against PyTorch.")
    parser.add_argument("--model-dir", required=True, help="a folder written by convert_mmdet_checkpoint.py")
    parser.add_argument("--output", default=None, help=f"ONNX file to write (default MODEL_DIR/{ONNX_FILE_NAME})")
    parser.add_argument("--validation-image", default=None,
                        help="image to compare onnxruntime with PyTorch on (default: a generated pattern)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: 0 on success, 1 with one message on stderr when the export fails."""
    arguments = build_argument_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        path = export_onnx(arguments.model_dir, arguments.output, validation_image=arguments.validation_image)
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
