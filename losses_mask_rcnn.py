# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Training targets and losses of MMDetection 3.3.0's Mask R-CNN (`mask-rcnn_r50_fpn` `train_cfg`), in plain PyTorch.

`MaskRCNNForInstanceSegmentation.forward(..., labels=...)` runs the network and calls these units in MMDetection's
order (`TwoStageDetector.loss`):

    ground truth per image (crowd rows dropped, masks zero-padded to the batch like `pad_mask`)
    -> RPN: valid anchors -> MaxIoU assignment -> random sampling (256, 1/2 positive) -> targets -> BCE + L1 per level
    -> train-time proposals (2000 per level, NMS 0.7, 1000 kept; no gradient)
    -> R-CNN per image: MaxIoU assignment on the proposals -> ground truth prepended -> sampling (512, 1/4 positive)
    -> box head: softmax CE + L1 on the class's deltas -> mask head: BCE against 28x28 RoIAligned mask targets.

Random draws are `torch.randperm(n)` on the CPU default generator, made only where MMDetection makes them (more
candidates than the quota) and in its order: RPN image 0 positives, negatives, image 1 ..., then R-CNN image 0
positives, negatives, ... With the same `torch.manual_seed` the same anchors and RoIs are sampled. Sampled indices
are sorted (MMDetection's `unique()`), positives first.

Label conventions: RPN foreground 0 / background 1 (one sigmoid channel); R-CNN classes 0..C-1, background C.
Assignment result per prior: -1 ignored, 0 negative, i + 1 positive for ground truth i.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align as torchvision_roi_align

try:
    from .configuration_mask_rcnn import MaskRCNNConfig
except ImportError:  # imported as a top-level module (tests, scripts)
    MaskRCNNConfig = importlib.import_module("configuration_mask_rcnn").MaskRCNNConfig

# MMDetection's weight_reduce_loss adds this to every avg_factor
_FLOAT32_EPS = torch.finfo(torch.float32).eps
# bbox_overlaps clamps the union from below by this
_UNION_EPS = 1e-6

IGNORED, NEGATIVE = -1, 0  # assignment values; positives are 1 + ground-truth index


# ================================================================================================================
# Ground truth
# ================================================================================================================


@dataclass
class GroundTruth:
    """One image's training targets in the network-input frame.

    Attributes:
        boxes: `(num_objects, 4)` float32 `(x1, y1, x2, y2)` in resized-input pixels.
        class_labels: `(num_objects,)` int64 class indices.
        masks: `(num_objects, padded_height, padded_width)` uint8 masks, zero-padded bottom/right to the batch's
            input size (MMDetection's `pad_gt_masks`).
    """

    boxes: torch.Tensor
    class_labels: torch.Tensor
    masks: torch.Tensor


def prepare_ground_truth(
    labels: Dict[str, torch.Tensor], image_index: int, image_size: Tuple[int, int],
    padded_size: Tuple[int, int], num_classes: int, device: torch.device,
) -> GroundTruth:
    """Validate one image's `labels` dict and bring it into the model's frame.

    Args:
        labels: `{"class_labels": (n,), "boxes": (n, 4) x1y1x2y2, "masks": (n, h, w)}` with `(h, w)` the resized
            image size (or the padded size); optional `"iscrowd": (n,)` — crowd rows are dropped, as MMDetection's
            `PackDetInputs` moves them to `ignored_instances`, which the Mask R-CNN losses never read.
        image_index: position in the batch (for error messages).
        image_size, padded_size: `(height, width)` of the resized image and of the padded batch input.

    Raises:
        ValueError: missing keys, inconsistent counts, class indices outside `[0, num_classes)`, masks of another
            size, or boxes that are not finite.
    """
    where = f"labels[{image_index}]"
    if not isinstance(labels, dict):
        raise ValueError(f"{where} must be a dict with 'class_labels', 'boxes' and 'masks', got {type(labels).__name__}.")
    missing = [key for key in ("class_labels", "boxes", "masks") if key not in labels]
    if missing:
        raise ValueError(f"{where} has no {', '.join(repr(key) for key in missing)}; each image needs "
                         "'class_labels' (n,), 'boxes' (n, 4) x1y1x2y2 and 'masks' (n, height, width).")
    class_labels = torch.as_tensor(labels["class_labels"]).to(device=device, dtype=torch.long).reshape(-1)
    boxes = torch.as_tensor(labels["boxes"]).to(device=device, dtype=torch.float32)
    masks = torch.as_tensor(labels["masks"]).to(device=device)
    count = class_labels.shape[0]
    if boxes.numel() == 0 and count == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4 or boxes.shape[0] != count:
        raise ValueError(f"{where}['boxes'] must have shape ({count}, 4) to match its {count} class_labels, got "
                         f"{tuple(boxes.shape)}.")
    if count == 0 and masks.numel() == 0:
        masks = masks.reshape(0, *image_size)
    if masks.dim() != 3 or masks.shape[0] != count:
        raise ValueError(f"{where}['masks'] must have shape ({count}, height, width), got {tuple(masks.shape)}.")
    if tuple(masks.shape[1:]) not in (tuple(image_size), tuple(padded_size)):
        raise ValueError(f"{where}['masks'] are {tuple(masks.shape[1:])} but the image is {tuple(image_size)} "
                         f"(padded {tuple(padded_size)}); give masks at the resized image size (image_sizes).")
    if count and (class_labels.min() < 0 or class_labels.max() >= num_classes):
        raise ValueError(f"{where}['class_labels'] must lie in [0, {num_classes}) (keys of config.id2label), got "
                         f"values {class_labels.min().item()}..{class_labels.max().item()}.")
    if count and not torch.isfinite(boxes).all():
        raise ValueError(f"{where}['boxes'] contains NaN or infinite coordinates.")
    if "iscrowd" in labels and labels["iscrowd"] is not None:
        crowd = torch.as_tensor(labels["iscrowd"]).to(device).reshape(-1).bool()
        if crowd.shape[0] != count:
            raise ValueError(f"{where}['iscrowd'] has {crowd.shape[0]} entries for {count} objects.")
        keep = ~crowd
        class_labels, boxes, masks = class_labels[keep], boxes[keep], masks[keep]
    masks = masks.to(torch.uint8)
    pad_bottom, pad_right = padded_size[0] - masks.shape[1], padded_size[1] - masks.shape[2]
    if pad_bottom or pad_right:
        masks = F.pad(masks, (0, pad_right, 0, pad_bottom), value=0)
    return GroundTruth(boxes=boxes, class_labels=class_labels, masks=masks)


# ================================================================================================================
# IoU, assignment, sampling, box encoding
# ================================================================================================================


def box_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """IoU matrix `(num_a, num_b)` with MMDetection's `bbox_overlaps` arithmetic (no +1, union clamped at 1e-6).

    The same float32 operations in the same order, so thresholds and "equal to the maximum" tests see the same bits.
    """
    area_a = (boxes_a[..., 2] - boxes_a[..., 0]) * (boxes_a[..., 3] - boxes_a[..., 1])
    area_b = (boxes_b[..., 2] - boxes_b[..., 0]) * (boxes_b[..., 3] - boxes_b[..., 1])
    top_left = torch.max(boxes_a[..., :, None, :2], boxes_b[..., None, :, :2])
    bottom_right = torch.min(boxes_a[..., :, None, 2:], boxes_b[..., None, :, 2:])
    sizes = (bottom_right - top_left).clamp(min=0)
    overlap = sizes[..., 0] * sizes[..., 1]
    union = area_a[..., None] + area_b[..., None, :] - overlap
    union = torch.max(union, union.new_tensor([_UNION_EPS]))
    return overlap / union


@dataclass
class Assignment:
    """`MaxIoUAssigner` result for `num_priors` priors.

    Attributes:
        gt_indices: `(num_priors,)` int64: -1 ignored, 0 negative, i + 1 positive for ground truth i.
        labels: `(num_priors,)` int64 class of the assigned ground truth, -1 where not positive.
    """

    gt_indices: torch.Tensor
    labels: torch.Tensor


def assign_max_iou(
    ious: torch.Tensor, gt_labels: torch.Tensor, pos_iou_threshold: float, neg_iou_threshold: float,
    min_pos_iou: float, match_low_quality: bool, gt_max_assign_all: bool,
) -> Assignment:
    """MMDetection's `MaxIoUAssigner.assign_wrt_overlaps` on an IoU matrix `(num_gts, num_priors)`.

    Priors whose best IoU is below `neg_iou_threshold` are negatives, at or above `pos_iou_threshold` positives of
    their best box (ties: lowest box index). Low-quality matching then walks the boxes in order: a box whose best
    IoU reaches `min_pos_iou` takes every prior tied at that IoU (or only the first, without `gt_max_assign_all`),
    overwriting earlier assignments. Without ground truth every prior is negative.
    """
    num_gts, num_priors = ious.shape
    gt_indices = ious.new_full((num_priors,), IGNORED, dtype=torch.long)
    if num_gts == 0 or num_priors == 0:
        if num_gts == 0:
            gt_indices[:] = NEGATIVE
        return Assignment(gt_indices, ious.new_full((num_priors,), -1, dtype=torch.long))
    max_ious, argmax_ious = ious.max(dim=0)
    gt_max_ious, gt_argmax_ious = ious.max(dim=1)
    gt_indices[(max_ious >= 0) & (max_ious < neg_iou_threshold)] = NEGATIVE
    positive = max_ious >= pos_iou_threshold
    gt_indices[positive] = argmax_ious[positive] + 1
    if match_low_quality:
        for gt_index in range(num_gts):
            if gt_max_ious[gt_index] >= min_pos_iou:
                if gt_max_assign_all:
                    gt_indices[ious[gt_index, :] == gt_max_ious[gt_index]] = gt_index + 1
                else:
                    gt_indices[gt_argmax_ious[gt_index]] = gt_index + 1
    labels = gt_indices.new_full((num_priors,), -1)
    positives = torch.nonzero(gt_indices > 0, as_tuple=False).squeeze()
    if positives.numel() > 0:
        labels[positives] = gt_labels[gt_indices[positives] - 1]
    return Assignment(gt_indices, labels)


def _random_choice(gallery: torch.Tensor, count: int) -> torch.Tensor:
    """`count` entries of `gallery` drawn by `torch.randperm` on the CPU default generator (MMDetection's
    `RandomSampler.random_choice`, which also draws on the CPU whatever the device)."""
    permutation = torch.randperm(gallery.numel())[:count].to(device=gallery.device)
    return gallery[permutation]


def sample_random(
    gt_indices: torch.Tensor, num_samples: int, pos_fraction: float, neg_pos_upper_bound: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """MMDetection's `RandomSampler`: positive and negative prior indices, each sorted ascending.

    Up to `int(num_samples * pos_fraction)` positives, then `num_samples - positives` negatives (capped at
    `neg_pos_upper_bound` per positive when that is >= 0). A draw happens only when there are more candidates than
    places: first for the positives, then for the negatives.
    """
    expected_positives = int(num_samples * pos_fraction)
    positives = torch.nonzero(gt_indices > 0, as_tuple=False)
    if positives.numel() != 0:
        positives = positives.squeeze(1)
    if positives.numel() > expected_positives:
        positives = _random_choice(positives, expected_positives)
    positives = positives.reshape(-1).unique()
    expected_negatives = num_samples - positives.numel()
    if neg_pos_upper_bound >= 0:
        upper_bound = int(neg_pos_upper_bound * max(1, positives.numel()))
        expected_negatives = min(expected_negatives, upper_bound)
    negatives = torch.nonzero(gt_indices == 0, as_tuple=False)
    if negatives.numel() != 0:
        negatives = negatives.squeeze(1)
    if len(negatives) > expected_negatives:
        negatives = _random_choice(negatives, expected_negatives)
    negatives = negatives.reshape(-1).unique()
    return positives, negatives


def encode_boxes(
    reference_boxes: torch.Tensor, target_boxes: torch.Tensor, means: Sequence[float], stds: Sequence[float]
) -> torch.Tensor:
    """Deltas `(n, 4)` that turn `reference_boxes` into `target_boxes` (MMDetection's `bbox2delta`, float32, no +1):
    `((gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph))`, then `(delta - means) / stds`."""
    reference_boxes, target_boxes = reference_boxes.float(), target_boxes.float()
    px = (reference_boxes[..., 0] + reference_boxes[..., 2]) * 0.5
    py = (reference_boxes[..., 1] + reference_boxes[..., 3]) * 0.5
    pw = reference_boxes[..., 2] - reference_boxes[..., 0]
    ph = reference_boxes[..., 3] - reference_boxes[..., 1]
    gx = (target_boxes[..., 0] + target_boxes[..., 2]) * 0.5
    gy = (target_boxes[..., 1] + target_boxes[..., 3]) * 0.5
    gw = target_boxes[..., 2] - target_boxes[..., 0]
    gh = target_boxes[..., 3] - target_boxes[..., 1]
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], dim=-1)
    return deltas.sub_(deltas.new_tensor(means).unsqueeze(0)).div_(deltas.new_tensor(stds).unsqueeze(0))


# ================================================================================================================
# Loss reductions (MMDetection's weight_reduce_loss with an avg_factor)
# ================================================================================================================


def _weighted_sum_over(loss: torch.Tensor, weight: torch.Tensor, average_factor: float) -> torch.Tensor:
    """`sum(loss * weight) / (average_factor + eps)` (eps = float32 machine epsilon, no effect once >= 2)."""
    return (loss * weight).sum() / (average_factor + _FLOAT32_EPS)


def sigmoid_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                          average_factor: float) -> torch.Tensor:
    """MMDetection's `binary_cross_entropy` for `(m, channels)` logits and `(m,)` class labels (`channels` = no
    class, i.e. background): one-hot targets, per-element BCE with logits, weighted sum / average factor."""
    channels = logits.shape[-1]
    targets = labels.new_zeros((labels.shape[0], channels))
    valid = (labels >= 0) & (labels < channels)
    rows = torch.nonzero(valid, as_tuple=False)
    if rows.numel() > 0:
        targets[rows, labels[rows]] = 1
    element_weights = weights.view(-1, 1).repeat(1, channels).float()
    element_weights *= ((labels >= 0) & (labels != -100)).view(-1, 1).expand(labels.shape[0], channels).float()
    loss = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none")
    return _weighted_sum_over(loss, element_weights, average_factor)


def l1_loss(predictions: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
            average_factor: float) -> torch.Tensor:
    """MMDetection's `L1Loss` with weights: `sum(|pred - target| * weight) / average_factor`; a zero (still
    connected to the graph) when no weight is positive."""
    if not torch.any(weights > 0):
        return (predictions * weights).sum()
    if targets.numel() == 0:
        return predictions.sum() * 0
    return _weighted_sum_over(torch.abs(predictions - targets), weights, average_factor)


# ================================================================================================================
# RPN
# ================================================================================================================


def valid_anchor_flags(
    feature_sizes: Sequence[Tuple[int, int]], padded_image_size: Tuple[int, int], strides: Sequence[int],
    anchors_per_location: int, device: torch.device,
) -> torch.Tensor:
    """`(total_anchors,)` bool: anchors whose grid cell lies inside the image's own padded size
    (`ceil(pad / stride)` cells per axis; MMDetection's `AnchorGenerator.valid_flags`), in level -> y -> x -> anchor
    order. Anchors of cells that exist only because another image of the batch is larger are invalid."""
    flags = []
    for (feature_height, feature_width), stride in zip(feature_sizes, strides):
        valid_height = min(-(-padded_image_size[0] // stride), feature_height)
        valid_width = min(-(-padded_image_size[1] // stride), feature_width)
        valid_x = torch.zeros(feature_width, dtype=torch.bool, device=device)
        valid_y = torch.zeros(feature_height, dtype=torch.bool, device=device)
        valid_x[:valid_width] = True
        valid_y[:valid_height] = True
        valid = valid_y[:, None] & valid_x[None, :]
        flags.append(valid.reshape(-1, 1).expand(-1, anchors_per_location).reshape(-1))
    return torch.cat(flags)


@dataclass
class RpnTargets:
    """One image's RPN targets over all anchors (levels concatenated).

    labels `(A,)` (0 foreground, 1 background), label_weights `(A,)`, box_targets and box_weights `(A, 4)`;
    average_factor = max(#positives, 1) + max(#negatives, 1) (MMDetection's `SamplingResult.avg_factor`).
    """

    labels: torch.Tensor
    label_weights: torch.Tensor
    box_targets: torch.Tensor
    box_weights: torch.Tensor
    average_factor: int


def rpn_targets(anchors: torch.Tensor, valid: torch.Tensor, gt_boxes: torch.Tensor,
                config: MaskRCNNConfig) -> RpnTargets:
    """Assign and sample the valid anchors of one image (`AnchorHead._get_targets_single`, `allowed_border=-1`).

    Args:
        anchors: `(A, 4)` all anchors of the image; valid: `(A,)` from `valid_anchor_flags`; gt_boxes: `(G, 4)`.
    """
    num_anchors = anchors.shape[0]
    valid_anchors = anchors[valid]
    num_valid = valid_anchors.shape[0]
    if num_valid == 0:
        raise ValueError("An image has no valid anchor: its image size is smaller than one anchor stride.")
    ious = box_iou(gt_boxes, valid_anchors)
    assignment = assign_max_iou(
        ious, torch.zeros(gt_boxes.shape[0], dtype=torch.long, device=anchors.device),
        config.rpn_train_pos_iou_threshold, config.rpn_train_neg_iou_threshold, config.rpn_train_min_pos_iou,
        config.rpn_train_match_low_quality, config.rpn_train_gt_max_assign_all,
    )
    positives, negatives = sample_random(assignment.gt_indices, config.rpn_train_num_samples,
                                         config.rpn_train_pos_fraction, config.rpn_train_neg_pos_upper_bound)
    labels = torch.ones(num_valid, dtype=torch.long, device=anchors.device)  # 1 = background
    label_weights = valid_anchors.new_zeros(num_valid)
    box_targets = torch.zeros_like(valid_anchors)
    box_weights = torch.zeros_like(valid_anchors)
    if positives.numel() > 0:
        matched_boxes = gt_boxes[assignment.gt_indices[positives] - 1]
        box_targets[positives, :] = encode_boxes(valid_anchors[positives], matched_boxes,
                                                 config.rpn_box_coder_means, config.rpn_box_coder_stds)
        box_weights[positives, :] = 1.0
        labels[positives] = 0
        label_weights[positives] = 1.0
    if negatives.numel() > 0:
        label_weights[negatives] = 1.0

    def unmap(values: torch.Tensor, fill: float) -> torch.Tensor:
        full = values.new_full((num_anchors,) + values.shape[1:], fill)
        full[valid] = values
        return full

    return RpnTargets(
        labels=unmap(labels, 1), label_weights=unmap(label_weights, 0), box_targets=unmap(box_targets, 0),
        box_weights=unmap(box_weights, 0),
        average_factor=max(positives.numel(), 1) + max(negatives.numel(), 1),
    )


def rpn_losses(
    objectness: List[torch.Tensor], deltas: List[torch.Tensor], targets: List[RpnTargets],
    config: MaskRCNNConfig,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """RPN classification and box losses, summed over levels like MMDetection's `parse_losses`.

    Args:
        objectness: per level `(batch_size, A_l, H_l, W_l)` logits; deltas: per level `(batch_size, 4 A_l, H_l, W_l)`.
        targets: one `RpnTargets` per image (anchors in level -> y -> x -> anchor order).

    Every level's loss is divided by the same batch-wide average factor (sum over images); the returned terms are
    `0 + level_0 + level_1 + ...`.
    """
    average_factor = sum(target.average_factor for target in targets)
    stacked = {name: torch.stack([getattr(target, name) for target in targets])
               for name in ("labels", "label_weights", "box_targets", "box_weights")}
    classification_total, box_total = 0, 0
    start = 0
    for level_objectness, level_deltas in zip(objectness, deltas):
        count = level_objectness.shape[1] * level_objectness.shape[2] * level_objectness.shape[3]
        level = slice(start, start + count)
        start += count
        logits = level_objectness.permute(0, 2, 3, 1).reshape(-1, 1)
        predicted_deltas = level_deltas.permute(0, 2, 3, 1).reshape(-1, 4)
        classification = sigmoid_cross_entropy(
            logits, stacked["labels"][:, level].reshape(-1), stacked["label_weights"][:, level].reshape(-1),
            average_factor,
        )
        box = l1_loss(predicted_deltas, stacked["box_targets"][:, level].reshape(-1, 4),
                      stacked["box_weights"][:, level].reshape(-1, 4), average_factor)
        classification_total = classification_total + config.rpn_classification_loss_weight * classification
        box_total = box_total + config.rpn_box_loss_weight * box
    return classification_total, box_total


class TrainProposalSettings:
    """The config as `select_proposals` reads it, with the train-time proposal settings (`train_cfg.rpn_proposal`)
    in place of the test-time ones."""

    _TRAIN_FIELDS = {
        "rpn_pre_nms_top_k": "rpn_train_pre_nms_top_k",
        "rpn_nms_iou_threshold": "rpn_train_nms_iou_threshold",
        "rpn_max_proposals": "rpn_train_max_proposals",
        "rpn_min_box_size": "rpn_train_min_box_size",
    }

    def __init__(self, config: MaskRCNNConfig) -> None:
        self._config = config

    def __getattr__(self, name: str):
        return getattr(self._config, self._TRAIN_FIELDS.get(name, name))


# ================================================================================================================
# R-CNN: RoI sampling, box and mask losses
# ================================================================================================================


@dataclass
class RoiSample:
    """Sampled RoIs of one image, positives first (`SamplingResult`).

    Attributes:
        boxes: `(num_positive + num_negative, 4)` RoIs (ground truth copies first among the positives).
        num_positive: positives at the start of `boxes`.
        positive_gt_indices: `(num_positive,)` ground-truth index of each positive.
        positive_labels: `(num_positive,)` class of each positive.
    """

    boxes: torch.Tensor
    num_positive: int
    positive_gt_indices: torch.Tensor
    positive_labels: torch.Tensor

    @property
    def positive_boxes(self) -> torch.Tensor:
        return self.boxes[: self.num_positive]


def sample_rois(proposals: torch.Tensor, ground_truth: GroundTruth, config: MaskRCNNConfig) -> RoiSample:
    """Assign one image's proposals `(P, 4)` to its ground truth, prepend the ground truth boxes (when
    `roi_train_add_gt_as_proposals` and there are any) and sample `roi_train_num_samples` RoIs."""
    gt_boxes, gt_labels = ground_truth.boxes, ground_truth.class_labels
    assignment = assign_max_iou(
        box_iou(gt_boxes, proposals), gt_labels, config.roi_train_pos_iou_threshold,
        config.roi_train_neg_iou_threshold, config.roi_train_min_pos_iou, config.roi_train_match_low_quality,
        config.roi_train_gt_max_assign_all,
    )
    priors, gt_indices, labels = proposals, assignment.gt_indices, assignment.labels
    if config.roi_train_add_gt_as_proposals and gt_boxes.shape[0] > 0:
        priors = torch.cat([gt_boxes, proposals])
        own_indices = torch.arange(1, gt_boxes.shape[0] + 1, dtype=torch.long, device=gt_labels.device)
        gt_indices = torch.cat([own_indices, gt_indices])
        labels = torch.cat([gt_labels, labels])
    positives, negatives = sample_random(gt_indices, config.roi_train_num_samples, config.roi_train_pos_fraction,
                                         config.roi_train_neg_pos_upper_bound)
    return RoiSample(
        boxes=torch.cat([priors[positives], priors[negatives]]),
        num_positive=positives.numel(),
        positive_gt_indices=gt_indices[positives] - 1,
        positive_labels=labels[positives],
    )


def box_losses(
    class_logits: torch.Tensor, box_deltas: torch.Tensor, samples: List[RoiSample],
    ground_truths: List[GroundTruth], config: MaskRCNNConfig,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """R-CNN box-head losses over all sampled RoIs of the batch (`BBoxHead.loss`).

    Args:
        class_logits: `(R, C + 1)`; box_deltas: `(R, 4 C)`; rows follow `samples` (image by image, positives first).

    Returns:
        loss_cls (softmax CE averaged over the R sampled RoIs), loss_bbox (L1 on the labelled class's deltas of the
        positives, divided by R — not by the positives), acc (top-1 accuracy in percent over all R RoIs, no grad).
    """
    num_classes = config.num_labels
    labels, targets = [], []
    for sample, ground_truth in zip(samples, ground_truths):
        image_labels = torch.full((sample.boxes.shape[0],), num_classes, dtype=torch.long, device=sample.boxes.device)
        image_targets = sample.boxes.new_zeros((sample.boxes.shape[0], 4))
        if sample.num_positive > 0:
            image_labels[: sample.num_positive] = sample.positive_labels
            image_targets[: sample.num_positive] = encode_boxes(
                sample.positive_boxes, ground_truth.boxes[sample.positive_gt_indices],
                config.box_coder_means, config.box_coder_stds,
            )
        labels.append(image_labels)
        targets.append(image_targets)
    labels, targets = torch.cat(labels), torch.cat(targets)
    num_rois = labels.shape[0]
    label_weights = class_logits.new_ones(num_rois)
    classification_factor = max(float(num_rois), 1.0)
    classification = F.cross_entropy(class_logits, labels, reduction="none", ignore_index=-100)
    loss_cls = config.box_classification_loss_weight * _weighted_sum_over(
        classification, label_weights, classification_factor)
    with torch.no_grad():
        predicted = class_logits.topk(1, dim=1)[1].t()
        correct = predicted.eq(labels.view(1, -1).expand_as(predicted))
        accuracy = correct[:1].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / max(num_rois, 1))[0]
    positive = (labels >= 0) & (labels < num_classes)
    if positive.any():
        class_deltas = box_deltas.view(num_rois, num_classes, -1)[positive, labels[positive]]
        loss_bbox = config.box_regression_loss_weight * l1_loss(
            class_deltas, targets[positive], torch.ones_like(targets[positive]), num_rois)
    else:
        loss_bbox = box_deltas[positive].sum()
    return loss_cls, loss_bbox, accuracy


def mask_targets(samples: List[RoiSample], ground_truths: List[GroundTruth], mask_size: int,
                 threshold: float) -> torch.Tensor:
    """`(total_positives, mask_size, mask_size)` float32 binary targets (`mask_target_single`).

    Each positive RoI (clipped to the padded mask) is RoIAligned (`aligned=True`, adaptive sampling) out of its
    ground truth's full zero-padded mask and binarised at `threshold`. RoIs index the distinct ground-truth masks
    instead of per-RoI copies; RoIAlign computes each RoI independently, so the values are the same.
    """
    targets = []
    for sample, ground_truth in zip(samples, ground_truths):
        if sample.num_positive == 0:
            continue
        height, width = ground_truth.masks.shape[-2:]
        boxes = sample.positive_boxes.detach().clone()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        used, mask_of_roi = torch.unique(sample.positive_gt_indices, return_inverse=True)
        masks = ground_truth.masks.index_select(0, used).float()[:, None]
        rois = torch.cat([mask_of_roi.to(boxes.dtype)[:, None], boxes], dim=1)
        aligned = torchvision_roi_align(masks, rois, (mask_size, mask_size), 1.0, 0, aligned=True).squeeze(1)
        targets.append((aligned >= threshold).float())
    if not targets:
        return torch.zeros((0, mask_size, mask_size))
    return torch.cat(targets)


def mask_loss(mask_logits: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor,
              config: MaskRCNNConfig) -> torch.Tensor:
    """Mean BCE with logits between each positive's own-class mask logits `(P, C, S, S)[i, label_i]` and its target
    `(P, S, S)` (`mask_cross_entropy`); a graph-connected zero when the batch has no positive."""
    if mask_logits.shape[0] == 0:
        return mask_logits.sum()
    rows = torch.arange(0, mask_logits.shape[0], dtype=torch.long, device=mask_logits.device)
    own_class_logits = mask_logits[rows, labels].squeeze(1)
    return config.mask_loss_weight * F.binary_cross_entropy_with_logits(own_class_logits, targets,
                                                                        reduction="mean")
