# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""MMDetection's Mask R-CNN (ResNet/ResNeXt + FPN) as a transformers `PreTrainedModel`, in plain PyTorch.

The test-time path of MMDetection 3.3.0 is reproduced operation by operation, in this order:

    pixel_values -> ResNet/ResNeXt backbone (C2..C5) -> FPN (P2..P6) -> RPN head -> anchors + box decoding
    -> per-level top-k + NMS (proposals) -> multi-level RoIAlign -> box head (2 shared FCs) -> class-wise NMS
    (detections) -> multi-level RoIAlign -> FCN mask head -> 28x28 mask probabilities of each detection's class.

The model returns detections in the frame of its (resized, padded) input; `MaskRCNNImageProcessor` maps them back
to the original image (box rescaling and mask pasting), exactly as MMDetection's mask branch does.

Conventions: boxes are `(x1, y1, x2, y2)` float32 pixels; "levels" are FPN levels P2..P6 (strides 4..64); class
indices are 0..num_labels-1 with the background column last in the box classifier (MMDetection's layout).
"""

from __future__ import annotations

import functools
import importlib
import itertools
import math
import numbers
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

try:
    from torchvision.ops import nms as torchvision_nms
    from torchvision.ops import roi_align as torchvision_roi_align
except ImportError as error:  # pragma: no cover - torchvision is a hard requirement
    raise ImportError(
        "modeling_mask_rcnn needs torchvision for RoIAlign and NMS: pip install 'torchvision>=0.19'"
    ) from error

try:
    from .configuration_mask_rcnn import MaskRCNNConfig, bottleneck_width
except ImportError:  # imported as a top-level module (tests, scripts). importlib, not a from-import: the remote-code
    # scanner of transformers < 4.51 reads import lines under `except ImportError:` as required packages.
    _configuration_module = importlib.import_module("configuration_mask_rcnn")
    MaskRCNNConfig, bottleneck_width = _configuration_module.MaskRCNNConfig, _configuration_module.bottleneck_width

try:  # the precision rule's home (shared with the pipeline, the endpoint and the batch CLI)
    from .inference_mask_rcnn import autocast_dtype_on, warn_if_reduced_precision_is_emulated
except ImportError:  # imported as a top-level module (tests, scripts)
    _inference_module = importlib.import_module("inference_mask_rcnn")
    autocast_dtype_on = _inference_module.autocast_dtype_on
    warn_if_reduced_precision_is_emulated = _inference_module.warn_if_reduced_precision_is_emulated
try:
    from .losses_mask_rcnn import (TrainProposalSettings, box_losses, mask_loss, mask_targets, prepare_ground_truth,
                                   rpn_losses, rpn_targets, sample_rois, valid_anchor_flags)
except ImportError:  # imported as a top-level module (tests, scripts)
    _losses_module = importlib.import_module("losses_mask_rcnn")
    TrainProposalSettings, box_losses, mask_loss, mask_targets, prepare_ground_truth = (
        _losses_module.TrainProposalSettings, _losses_module.box_losses, _losses_module.mask_loss,
        _losses_module.mask_targets, _losses_module.prepare_ground_truth)
    rpn_losses, rpn_targets, sample_rois, valid_anchor_flags = (
        _losses_module.rpn_losses, _losses_module.rpn_targets, _losses_module.sample_rois,
        _losses_module.valid_anchor_flags)
try:
    from .configuration_mask_rcnn import TRANSFORMERS_NAMES_DTYPE
    from .hub_folder_mask_rcnn import (architecture_mismatch, config_name_in, module_directories, safetensors_shapes,
                                       upload_hub_folder, write_hub_folder)
except ImportError:  # as above
    TRANSFORMERS_NAMES_DTYPE = importlib.import_module("configuration_mask_rcnn").TRANSFORMERS_NAMES_DTYPE
    _hub_folder = importlib.import_module("hub_folder_mask_rcnn")
    module_directories, upload_hub_folder = _hub_folder.module_directories, _hub_folder.upload_hub_folder
    write_hub_folder = _hub_folder.write_hub_folder
    architecture_mismatch, config_name_in = _hub_folder.architecture_mismatch, _hub_folder.config_name_in
    safetensors_shapes = _hub_folder.safetensors_shapes


# ================================================================================================================
# Output
# ================================================================================================================


@dataclass
class MaskRCNNInstanceSegmentationOutput(ModelOutput):
    """Detections of [`MaskRCNNForInstanceSegmentation`], one list entry per image of the batch.

    Boxes are in pixels of the network input (resized, before padding); pass the output to
    `MaskRCNNImageProcessor.post_process_instance_segmentation` for boxes and binary masks in original pixels.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            Total training loss: the sum of the five `loss_*` terms of `loss_dict` (MMDetection's `parse_losses`).
            Detection fields are then `None` (a training forward does not run test-time post-processing).
        loss_dict (`dict[str, torch.FloatTensor]`, *optional*, returned when `labels` are given):
            `loss_rpn_cls`, `loss_rpn_bbox`, `loss_cls`, `loss_bbox`, `loss_mask` (scalars with gradient) and `acc`
            (box classifier top-1 accuracy in percent over the sampled RoIs, no gradient, not part of `loss`).
        pred_boxes (`list[torch.FloatTensor]`, each of shape `(num_detections, 4)`):
            `(x1, y1, x2, y2)` of each detection, clipped to the resized image, in descending score order.
        scores (`list[torch.FloatTensor]`, each of shape `(num_detections,)`):
            Class probability of each detection (softmax over classes + background), all > `config.score_threshold`.
        labels (`list[torch.LongTensor]`, each of shape `(num_detections,)`):
            Class index of each detection, a key of `config.id2label`.
        mask_probs (`list[torch.FloatTensor]`, each of shape `(num_detections, mask_size, mask_size)`):
            Sigmoid mask probabilities (28x28 by default) of each detection's own class, covering its box.
        proposal_boxes (`list[torch.FloatTensor]`, each of shape `(num_proposals, 4)`):
            RPN proposals after NMS, in descending objectness order (at most `config.rpn_max_proposals`).
        proposal_scores (`list[torch.FloatTensor]`, each of shape `(num_proposals,)`):
            Objectness (sigmoid) of each proposal.
        image_sizes (`torch.LongTensor` of shape `(batch_size, 2)`):
            `(height, width)` of each resized image inside the padded input; boxes are clipped to it.
        original_sizes (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*):
            `(height, width)` of each original image, passed through from the image processor.
        scale_factors (`torch.DoubleTensor` of shape `(batch_size, 2)`, *optional*):
            `(width_scale, height_scale)` = resized / original size per axis, passed through from the processor.
        hidden_states (`tuple[torch.FloatTensor]`, *optional*, returned when `output_hidden_states=True`):
            FPN feature maps P2..P6, each of shape `(batch_size, fpn_out_channels, height / stride, width / stride)`.
        keep_score_threshold (`float`, *optional*):
            The `keep_score_threshold` the forward pass ran with: the detections above hold only those with
            `score >= keep_score_threshold` (None: all of them). Post-processing refuses a lower threshold.
    """

    loss: Optional[torch.Tensor] = None
    loss_dict: Optional[Dict[str, torch.Tensor]] = None
    pred_boxes: Optional[List[torch.Tensor]] = None
    scores: Optional[List[torch.Tensor]] = None
    labels: Optional[List[torch.Tensor]] = None
    mask_probs: Optional[List[torch.Tensor]] = None
    proposal_boxes: Optional[List[torch.Tensor]] = None
    proposal_scores: Optional[List[torch.Tensor]] = None
    image_sizes: Optional[torch.Tensor] = None
    original_sizes: Optional[torch.Tensor] = None
    scale_factors: Optional[torch.Tensor] = None
    hidden_states: Optional[Tuple[torch.Tensor, ...]] = None
    keep_score_threshold: Optional[float] = None


# ================================================================================================================
# Box coding and NMS (MMDetection's DeltaXYWHBBoxCoder and mmcv's batched_nms semantics)
# ================================================================================================================


def decode_boxes(
    reference_boxes: torch.Tensor,
    deltas: torch.Tensor,
    means: Sequence[float],
    stds: Sequence[float],
    delta_clamp: float,
    image_size: Optional[Tuple[int, int]],
) -> torch.Tensor:
    """Apply `(dx, dy, dw, dh)` deltas to reference boxes (MMDetection's `delta2bbox`, float32 throughout).

    Args:
        reference_boxes: `(num_boxes, 4)` anchors or proposals.
        deltas: `(num_boxes, 4)` network regression outputs (normalised by `means`/`stds`).
        means, stds: per-component de-normalisation: `delta * std + mean`.
        delta_clamp: `dw` and `dh` are clamped to `[-delta_clamp, delta_clamp]` before `exp`.
        image_size: `(height, width)`; decoded boxes are clipped to `[0, width] x [0, height]` when given.

    Returns:
        `(num_boxes, 4)` decoded boxes.
    """
    if reference_boxes.shape[0] == 0:
        return deltas.reshape(0, 4)
    means_tensor = deltas.new_tensor(means).view(1, -1)
    stds_tensor = deltas.new_tensor(stds).view(1, -1)
    denormalized = deltas * stds_tensor + means_tensor
    center_deltas = denormalized[:, :2]
    size_deltas = denormalized[:, 2:]
    reference_centers = (reference_boxes[:, :2] + reference_boxes[:, 2:]) * 0.5
    reference_sizes = reference_boxes[:, 2:] - reference_boxes[:, :2]
    center_shifts = reference_sizes * center_deltas
    size_deltas = size_deltas.clamp(min=-delta_clamp, max=delta_clamp)
    centers = reference_centers + center_shifts
    sizes = reference_sizes * size_deltas.exp()
    top_left = centers - (sizes * 0.5)
    bottom_right = centers + (sizes * 0.5)
    boxes = torch.cat([top_left, bottom_right], dim=-1)
    if image_size is not None:
        height, width = image_size
        boxes[..., 0::2].clamp_(min=0, max=width)
        boxes[..., 1::2].clamp_(min=0, max=height)
    return boxes


def non_maximum_suppression(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS with mmcv's ordering: indices of kept boxes, in `scores.sort(descending=True)` order.

    mmcv sorts with the default (unstable) sort; torchvision's kernel sorts stably. Sorting here first, exactly as
    mmcv does, and running torchvision on the already-sorted boxes reproduces mmcv's kept set and order, ties
    included. The IoU rule (`inter / union > iou_threshold`, no +1 offset) is the same in both.

    Args:
        boxes: `(num_boxes, 4)` float boxes.
        scores: `(num_boxes,)` scores.
        iou_threshold: boxes overlapping a kept box by more than this are removed.

    Returns:
        `(num_kept,)` int64 indices into `boxes`.
    """
    order = scores.sort(descending=True)[1]
    kept_in_order = torchvision_nms(boxes[order], scores[order], iou_threshold)
    return order[kept_in_order]


def batched_non_maximum_suppression(
    boxes: torch.Tensor, scores: torch.Tensor, group_ids: torch.Tensor, iou_threshold: float, split_threshold: int
) -> torch.Tensor:
    """NMS within groups (classes or FPN levels), with mmcv 2.1.0 `batched_nms` semantics.

    Boxes of different groups are moved apart by `group_id * (max coordinate + 1)` so that one NMS call never lets
    them suppress each other (the shifted coordinates are what mmcv's IoUs are computed on). From
    `split_threshold` boxes on, NMS runs group by group on the shifted boxes and survivors are re-sorted by score.

    Args:
        boxes: `(num_boxes, 4)`; scores: `(num_boxes,)`; group_ids: `(num_boxes,)` int64.

    Returns:
        `(num_kept,)` int64 indices into `boxes`, in descending score order.
    """
    max_coordinate = boxes.max()
    offsets = group_ids.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    shifted_boxes = boxes + offsets[:, None]
    if shifted_boxes.shape[0] < split_threshold:
        return non_maximum_suppression(shifted_boxes, scores, iou_threshold)
    kept_mask = torch.zeros_like(scores, dtype=torch.bool)
    for group_id in torch.unique(group_ids):
        group_indices = (group_ids == group_id).nonzero(as_tuple=False).view(-1)
        group_kept = non_maximum_suppression(shifted_boxes[group_indices], scores[group_indices], iou_threshold)
        kept_mask[group_indices[group_kept]] = True
    kept = kept_mask.nonzero(as_tuple=False).view(-1)
    order = scores[kept].sort(descending=True)[1]
    return kept[order]


# ================================================================================================================
# Backbone: ResNet / ResNeXt with frozen (eval-mode) batch norms
# ================================================================================================================


def unrecorded(*tensors: torch.Tensor) -> bool:
    """True when no tracer or TorchScript compiles this code and autograd records no operation on `tensors`: the
    condition of every in-place or oneDNN-fused fast path below, whose results autograd and ONNX export cannot follow.
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return False
    return not (torch.is_grad_enabled() and any(tensor.requires_grad for tensor in tensors))


class MaskRCNNFrozenBatchNorm2d(nn.BatchNorm2d):
    """Batch norm that always normalises with its running statistics (MMDetection's `norm_eval=True`).

    Same parameters and state-dict keys as `nn.BatchNorm2d`. With `config.fuse_batch_norms` (fast numerics) the
    backbone folds it into the preceding convolution instead (`folded_conv_parameters`), which saves a full pass over
    every feature map.
    """

    def forward(self, hidden_states: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """`(batch_size, num_features, height, width)` -> the same shape, normalised with the running statistics.

        `in_place=True` (for a tensor nobody else reads, such as a convolution's fresh output) writes the result
        over `hidden_states` when no autograd graph or tracer watches and the tensor is a float32 NCHW-contiguous CPU
        map: the same ATen kernel on the same values (bit-identical), without allocating and page-faulting a new
        feature map (that allocation costs ~10x the normalisation itself for the large early maps). Elsewhere (GPU,
        where `F.batch_norm` may pick cuDNN; reduced precision; channels-last) it runs out of place as before.
        """
        if in_place and self._can_normalise_in_place(hidden_states):
            torch.ops.aten.native_batch_norm.out(
                hidden_states, self.weight, self.bias, self.running_mean, self.running_var, False, 0.0, self.eps,
                out=hidden_states, save_mean=hidden_states.new_empty(0), save_invstd=hidden_states.new_empty(0),
            )
            return hidden_states
        return F.batch_norm(
            hidden_states, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )

    def _can_normalise_in_place(self, hidden_states: torch.Tensor) -> bool:
        return (hidden_states.device.type == "cpu" and hidden_states.is_contiguous()
                and hidden_states.dtype == self.weight.dtype == torch.float32
                and unrecorded(hidden_states, self.weight, self.bias))

    def folded_conv_parameters(self, conv: nn.Conv2d) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weight `(out, in / groups, k, k)` and bias `(out,)` of `conv` followed by this batch norm.

        Computed in float64 once and cached; the cache is rebuilt whenever any of the tensors it was made from is
        replaced or modified in place (loading weights, `.to()`, `.half()`).
        """
        sources = (conv.weight, self.weight, self.bias, self.running_mean, self.running_var)
        cache_key = tuple((tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device) for tensor in sources)
        cached = getattr(self, "_folded_cache", None)
        if cached is not None and cached[0] == cache_key:
            return cached[1], cached[2]
        with torch.no_grad():
            scale = self.weight.double() / torch.sqrt(self.running_var.double() + self.eps)
            weight = (conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype)
            bias = (self.bias.double() - self.running_mean.double() * scale).to(conv.weight.dtype)
        self._folded_cache = (cache_key, weight, bias)
        return weight, bias


def convolution_with_batch_norm(
    hidden_states: torch.Tensor, conv: nn.Conv2d, batch_norm: MaskRCNNFrozenBatchNorm2d, fold: bool
) -> torch.Tensor:
    """`batch_norm(conv(hidden_states))`, or one convolution with the batch norm folded in when `fold` is set."""
    if not fold:
        return batch_norm(conv(hidden_states), in_place=True)  # the convolution's output is a fresh tensor
    weight, bias = batch_norm.folded_conv_parameters(conv)
    return F.conv2d(hidden_states, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


class MaskRCNNBottleneck(nn.Module):
    """ResNet/ResNeXt bottleneck: 1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, plus identity or projection shortcut.

    `style="pytorch"` strides in the 3x3 convolution (ResNet v1.5), `style="caffe"` in the first 1x1.
    Input `(batch_size, in_channels, height, width)` -> `(batch_size, 4 * planes, height / stride, width / stride)`.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int, groups: int, base_width: int, style: str,
                 batch_norm_eps: float) -> None:
        super().__init__()
        width = bottleneck_width(planes, groups, base_width)
        out_channels = planes * self.expansion
        first_stride, middle_stride = (stride, 1) if style == "caffe" else (1, stride)
        self.conv1 = nn.Conv2d(in_channels, width, 1, stride=first_stride, bias=False)
        self.bn1 = MaskRCNNFrozenBatchNorm2d(width, eps=batch_norm_eps)
        self.conv2 = nn.Conv2d(width, width, 3, stride=middle_stride, padding=1, groups=groups, bias=False)
        self.bn2 = MaskRCNNFrozenBatchNorm2d(width, eps=batch_norm_eps)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = MaskRCNNFrozenBatchNorm2d(out_channels, eps=batch_norm_eps)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: Optional[nn.Sequential] = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                MaskRCNNFrozenBatchNorm2d(out_channels, eps=batch_norm_eps),
            )

    def forward(self, hidden_states: torch.Tensor, fold_batch_norms: bool = False,
                input_is_scratch: bool = False) -> torch.Tensor:
        """`input_is_scratch=True`: nobody reads `hidden_states` after this block, so the fused path may write the
        block's output over it (see `convolution_add_relu_`)."""
        out = self.relu(convolution_with_batch_norm(hidden_states, self.conv1, self.bn1, fold_batch_norms))
        out = self.relu(convolution_with_batch_norm(out, self.conv2, self.bn2, fold_batch_norms))
        if self.downsample is not None:
            shortcut = convolution_with_batch_norm(
                hidden_states, self.downsample[0], self.downsample[1], fold_batch_norms
            )
            shortcut_is_scratch = True
        else:
            shortcut, shortcut_is_scratch = hidden_states, input_is_scratch
        if fold_batch_norms and shortcut_is_scratch and can_fuse_convolution_add_relu(out, shortcut):
            weight, bias = self.bn3.folded_conv_parameters(self.conv3)
            return convolution_add_relu_(shortcut, out, weight, bias, self.conv3)
        out = convolution_with_batch_norm(out, self.conv3, self.bn3, fold_batch_norms)
        out += shortcut
        return self.relu(out)


_ONEDNN_CONVOLUTION_ADD_RELU_AVAILABLE = (
    torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise_")
)


def can_fuse_convolution_add_relu(hidden_states: torch.Tensor, shortcut: torch.Tensor) -> bool:
    """Whether `convolution_add_relu_` can run: float32 channels-last CPU tensors, oneDNN available and enabled, no
    autograd or tracer watching."""
    return (_ONEDNN_CONVOLUTION_ADD_RELU_AVAILABLE and torch.backends.mkldnn.enabled
            and all(tensor.device.type == "cpu" and tensor.dtype == torch.float32 and _is_channels_last(tensor)
                    for tensor in (hidden_states, shortcut))
            and unrecorded(hidden_states, shortcut))


def convolution_add_relu_(
    shortcut: torch.Tensor, hidden_states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, conv: nn.Conv2d
) -> torch.Tensor:
    """`relu(conv2d(hidden_states, weight, bias) + shortcut)` written over `shortcut`, in one oneDNN convolution
    with the sum and the ReLU as post-ops (the fused path's last 1x1 convolution of every bottleneck).

    The same bits as the three separate steps wherever ATen runs that convolution through oneDNN too (inputs above
    20480 elements per image; below, ATen's own kernel rounds differently, within float32 rounding): the
    convolution's float32 accumulator plus the shortcut, rounded once either way. It skips allocating the
    convolution's output (page faults for every map above glibc's 32 MiB mmap threshold) and two more passes over
    it: the fused backbone takes 0.664 s instead of 0.739 s on samples/grace_hopper.jpg (2-core AMD EPYC,
    tools/profile_default_path.py). Falls back to the separate steps when oneDNN refuses (a build without the fused kernel) and
    stops trying.
    """
    global _ONEDNN_CONVOLUTION_ADD_RELU_AVAILABLE
    try:
        return torch.ops.mkldnn._convolution_pointwise_.binary(
            shortcut, hidden_states, weight, bias, list(conv.padding), list(conv.stride), list(conv.dilation),
            conv.groups, "add", 1.0, "relu", [], "",
        )
    except RuntimeError:
        _ONEDNN_CONVOLUTION_ADD_RELU_AVAILABLE = False
    out = F.conv2d(hidden_states, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return shortcut.add_(out).relu_()


class MaskRCNNResNetBackbone(nn.Module):
    """ResNet-50/101/152 or ResNeXt stem + 4 stages; parameter names match torchvision and MMDetection.

    Input `(batch_size, 3, height, width)` -> C2..C5 with 256, 512, 1024, 2048 channels at strides 4, 8, 16, 32.
    """

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = MaskRCNNFrozenBatchNorm2d(64, eps=config.batch_norm_eps)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for stage_index, num_blocks in enumerate(config.backbone_stage_blocks):
            planes = 64 * 2**stage_index
            blocks = []
            for block_index in range(num_blocks):
                blocks.append(
                    MaskRCNNBottleneck(
                        in_channels=in_channels,
                        planes=planes,
                        stride=(1 if stage_index == 0 else 2) if block_index == 0 else 1,
                        groups=config.backbone_groups,
                        base_width=config.backbone_base_width,
                        style=config.backbone_style,
                        batch_norm_eps=config.batch_norm_eps,
                    )
                )
                in_channels = planes * MaskRCNNBottleneck.expansion
            self.add_module(f"layer{stage_index + 1}", nn.Sequential(*blocks))

    def freeze_for_training(self, frozen_stages: int, batch_norm_trainable: bool) -> None:
        """No gradients for the stem (when `frozen_stages >= 0`) and the first `frozen_stages` stages, nor for the batch
        norms' affine parameters unless `batch_norm_trainable` (MMDetection's `ResNet._freeze_stages` /
        `norm_cfg.requires_grad`; -1 freezes nothing). Batch norms always normalise with their running statistics,
        in `train()` mode too (`norm_eval=True`)."""
        frozen_modules = [self.conv1, self.bn1] if frozen_stages >= 0 else []
        frozen_modules += [getattr(self, f"layer{stage}") for stage in range(1, frozen_stages + 1)]
        for module in frozen_modules:
            module.requires_grad_(False)
        if not batch_norm_trainable:
            for module in self.modules():
                if isinstance(module, MaskRCNNFrozenBatchNorm2d):
                    module.requires_grad_(False)

    def forward(self, pixel_values: torch.Tensor, fold_batch_norms: bool = False) -> List[torch.Tensor]:
        """`fold_batch_norms=True` runs each convolution with its batch norm folded in (fast numerics)."""
        hidden_states = convolution_with_batch_norm(pixel_values, self.conv1, self.bn1, fold_batch_norms)
        hidden_states = stem_max_pool(self.relu(hidden_states), self.maxpool)
        stage_outputs = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block_index, block in enumerate(stage):
                # a block's input is scratch after it unless it is a stage's output (the first block's input)
                hidden_states = block(hidden_states, fold_batch_norms, input_is_scratch=block_index > 0)
            stage_outputs.append(hidden_states)
        return stage_outputs


def stem_max_pool(hidden_states: torch.Tensor, max_pool: nn.MaxPool2d) -> torch.Tensor:
    """The stem's 3x3 / stride 2 / padding 1 max-pool, `(batch_size, 64, height, width)` -> `(..., height / 2,
    width / 2)`.

    For an NCHW CPU map of even height and width (every padded input: sizes are multiples of 32) and no autograd or
    tracer watching, it is taken as two separable passes of strided `torch.maximum`: along each row, the maximum of
    the pair `(2j, 2j + 1)` and then of its left neighbour `2j - 1` (absent at the border, where the padding would be
    -inf); then the same down the columns. A maximum is exact, so the result is bit-identical to
    `F.max_pool2d` (NaN included), in less than half of its time on CPU (ATen's NCHW max-pool kernel is not
    vectorised: 37 ms -> 16 ms on samples/grace_hopper.jpg, 2-core AMD EPYC, tools/profile_default_path.py). `max_pool` (the module, for its settings) runs otherwise.
    """
    height, width = hidden_states.shape[-2:]
    pool_settings = (max_pool.kernel_size, max_pool.stride, max_pool.padding, max_pool.dilation, max_pool.ceil_mode)
    if (hidden_states.dim() != 4 or height % 2 or width % 2 or height < 2 or width < 2
            or hidden_states.device.type != "cpu" or not hidden_states.is_contiguous()
            or pool_settings != (3, 2, 1, 1, False) or not unrecorded(hidden_states)):
        return max_pool(hidden_states)
    pooled_rows = torch.maximum(hidden_states[..., 0::2], hidden_states[..., 1::2])
    torch.maximum(pooled_rows[..., 1:], hidden_states[..., 1:-1:2], out=pooled_rows[..., 1:])
    pooled = torch.maximum(pooled_rows[..., 0::2, :], pooled_rows[..., 1::2, :])
    torch.maximum(pooled[..., 1:, :], pooled_rows[..., 1:-1:2, :], out=pooled[..., 1:, :])
    return pooled


# ================================================================================================================
# Feature pyramid network
# ================================================================================================================


class MaskRCNNFeaturePyramid(nn.Module):
    """FPN: 1x1 laterals, nearest top-down upsampling by size, 3x3 outputs, then max-pool (k=1, s=2) extra levels.

    C2..C5 -> P2..P6 (with `fpn_num_outs=5`), each `(batch_size, fpn_out_channels, height / stride, width / stride)`.
    """

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        channels = config.fpn_out_channels
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in config.backbone_out_channels)
        self.output_convs = nn.ModuleList(
            nn.Conv2d(channels, channels, 3, padding=1) for _ in config.backbone_out_channels
        )
        self.num_extra_levels = config.fpn_num_outs - len(config.backbone_out_channels)

    def forward(self, backbone_features: List[torch.Tensor]) -> List[torch.Tensor]:
        laterals = [conv(feature) for conv, feature in zip(self.lateral_convs, backbone_features)]
        for level in range(len(laterals) - 1, 0, -1):  # top-down pathway, coarse to fine
            laterals[level - 1] = add_nearest_upsampled(laterals[level - 1], laterals[level])
        pyramid = [conv(lateral) for conv, lateral in zip(self.output_convs, laterals)]
        for _ in range(self.num_extra_levels):
            # MMDetection's max_pool2d(kernel_size=1, stride=2) picks every other pixel: the same values as a
            # strided slice, without the pooling kernel's index bookkeeping
            coarsest = pyramid[-1]
            layout = torch.channels_last if _is_channels_last(coarsest) else torch.contiguous_format
            pyramid.append(coarsest[:, :, ::2, ::2].contiguous(memory_format=layout))
        return pyramid


def add_nearest_upsampled(finer: torch.Tensor, coarser: torch.Tensor) -> torch.Tensor:
    """`finer + F.interpolate(coarser, size=finer.shape[2:], mode="nearest")`, MMDetection's top-down step.

    `finer` `(batch_size, channels, height, width)`, `coarser` `(batch_size, channels, ~height / 2, ~width / 2)`.
    When `finer` is exactly twice `coarser` (every padded input: sizes are multiples of 32) nearest upsampling
    repeats each pixel 2x2, so the sum is added in place through a broadcasting view: the same additions of the
    same values, without building the upsampled map. Out of place otherwise, and whenever autograd or a tracer
    (ONNX export) watches.
    """
    height, width = coarser.shape[-2:]
    exact_double = finer.shape[-2:] == (2 * height, 2 * width)
    if not exact_double or not unrecorded(finer, coarser):
        return finer + F.interpolate(coarser, size=finer.shape[2:], mode="nearest")
    finer.unflatten(2, (height, 2)).unflatten(4, (width, 2)).add_(coarser[:, :, :, None, :, None])
    return finer


def _is_channels_last(tensor: torch.Tensor) -> bool:
    """True for a 4-D tensor laid out channels-last (and not also plain contiguous, as 1-channel maps are)."""
    return tensor.is_contiguous(memory_format=torch.channels_last) and not tensor.is_contiguous()


# ================================================================================================================
# Region proposal network
# ================================================================================================================


def make_cell_anchors(stride: int, scales: Sequence[float], ratios: Sequence[float]) -> torch.Tensor:
    """Anchors centred at (0, 0) for one level: `(num_ratios * num_scales, 4)`, ratio-major, no rounding.

    Ratio is height / width: `height = stride * scale * sqrt(ratio)`, `width = stride * scale / sqrt(ratio)`.
    """
    ratios_tensor = torch.tensor(ratios, dtype=torch.float32)
    scales_tensor = torch.tensor(scales, dtype=torch.float32)
    height_ratios = torch.sqrt(ratios_tensor)
    width_ratios = 1 / height_ratios
    widths = (stride * width_ratios[:, None] * scales_tensor[None, :]).view(-1)
    heights = (stride * height_ratios[:, None] * scales_tensor[None, :]).view(-1)
    return torch.stack([0.0 - 0.5 * widths, 0.0 - 0.5 * heights, 0.0 + 0.5 * widths, 0.0 + 0.5 * heights], dim=-1)


def make_grid_anchors(cell_anchors: torch.Tensor, feature_size: Tuple[int, int], stride: int) -> torch.Tensor:
    """Anchors of every feature-map cell: `(height * width * num_cell_anchors, 4)`.

    Cell anchors are shifted to the cell's top-left corner `(x * stride, y * stride)`; index = `(y * width + x) *
    num_cell_anchors + anchor`, matching the `(anchor, height, width) -> (height, width, anchor)` head flattening.
    """
    height, width = feature_size
    device = cell_anchors.device
    shift_x = torch.arange(0, width, device=device).to(cell_anchors.dtype) * stride
    shift_y = torch.arange(0, height, device=device).to(cell_anchors.dtype) * stride
    shift_xx = shift_x.repeat(shift_y.shape[0])
    shift_yy = shift_y.view(-1, 1).repeat(1, shift_x.shape[0]).view(-1)
    shifts = torch.stack([shift_xx, shift_yy, shift_xx, shift_yy], dim=-1)
    return (cell_anchors[None, :, :] + shifts[:, None, :]).view(-1, 4)


ANCHOR_CACHE_SIZE = 16  # input sizes whose anchors are kept (~4 MiB each for an 800x1344 input)


@functools.lru_cache(maxsize=ANCHOR_CACHE_SIZE)
def cached_level_anchors(
    feature_sizes: Tuple[Tuple[int, int], ...],
    strides: Tuple[int, ...],
    scales: Tuple[float, ...],
    ratios: Tuple[float, ...],
    device: torch.device,
) -> Tuple[torch.Tensor, ...]:
    """Grid anchors of every level for one input size, `(height_l * width_l * num_anchors, 4)` float32 each.

    They depend only on the feature-map sizes, so they are made once per input size and kept for the
    `ANCHOR_CACHE_SIZE` most recently used sizes (`functools.lru_cache`: bounded, safe to call from several threads;
    two threads missing at once both build the same values). Made outside inference mode so that the cached
    tensors can be used by callers in any autograd mode; callers must not modify them in place.
    """
    with torch.inference_mode(False), torch.no_grad():
        anchors = []
        for feature_size, stride in zip(feature_sizes, strides):
            cell_anchors = make_cell_anchors(stride, scales, ratios).to(device=device, dtype=torch.float32)
            anchors.append(make_grid_anchors(cell_anchors, feature_size, stride))
        return tuple(anchors)


class MaskRCNNRpnHead(nn.Module):
    """Shared 3x3 conv + ReLU, then 1x1 objectness and 1x1 box-delta convolutions, applied to every level.

    Per level `(batch_size, fpn_out_channels, height, width)` -> objectness `(batch_size, num_anchors, height,
    width)` and deltas `(batch_size, 4 * num_anchors, height, width)`.
    """

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        channels = config.fpn_out_channels
        num_anchors = config.num_anchors_per_location
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.objectness_logits = nn.Conv2d(channels, num_anchors, 1)
        self.box_deltas = nn.Conv2d(channels, 4 * num_anchors, 1)

    def forward(self, pyramid: List[torch.Tensor]) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        objectness, deltas = [], []
        for feature in pyramid:
            hidden = F.relu_(self.conv(feature))  # in place: the convolution's output is a fresh tensor
            objectness.append(self.objectness_logits(hidden))
            deltas.append(self.box_deltas(hidden))
        return objectness, deltas


def select_proposals(
    objectness_per_level: List[torch.Tensor],
    deltas_per_level: List[torch.Tensor],
    anchors_per_level: List[torch.Tensor],
    image_size: Tuple[int, int],
    config: MaskRCNNConfig,
    mmdetection_tie_order: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Turn one image's RPN outputs into proposals (MMDetection's `RPNHead._predict_by_feat_single`).

    Args:
        objectness_per_level: per level `(num_anchors, height, width)` logits.
        deltas_per_level: per level `(4 * num_anchors, height, width)`.
        anchors_per_level: per level `(height * width * num_anchors, 4)`.
        image_size: `(height, width)` of the resized image (proposals are clipped to it).
        mmdetection_tie_order: rank each level's scores with a full descending sort, as MMDetection does (its order
            of tied scores decides which tied anchors make the top k). False (the fused path): `torch.topk`, the
            same top-k score values, ~15x faster on P2's ~150k anchors; among anchors tied at the k-th score it may
            keep others, and tied scores may come in another order, so proposals can differ where scores tie.

    Returns:
        proposal_boxes `(num_proposals, 4)` and proposal_scores `(num_proposals,)`, best first,
        `num_proposals <= config.rpn_max_proposals`.
    """
    level_scores, level_deltas, level_anchors, level_ids = [], [], [], []
    for level, (logits, deltas, anchors) in enumerate(zip(objectness_per_level, deltas_per_level, anchors_per_level)):
        scores = logits.permute(1, 2, 0).reshape(-1).sigmoid()
        deltas = deltas.permute(1, 2, 0).reshape(-1, 4)
        if 0 < config.rpn_pre_nms_top_k < scores.shape[0]:
            if mmdetection_tie_order:  # a full descending sort (not topk): it decides the order of tied scores
                ranked_scores, ranked_indices = scores.sort(descending=True)
                top_indices = ranked_indices[: config.rpn_pre_nms_top_k]
                scores = ranked_scores[: config.rpn_pre_nms_top_k]
            else:
                scores, top_indices = scores.topk(config.rpn_pre_nms_top_k)
            deltas = deltas[top_indices, :]
            anchors = anchors[top_indices]
        level_scores.append(scores)
        level_deltas.append(deltas)
        level_anchors.append(anchors)
        level_ids.append(scores.new_full((scores.shape[0],), level, dtype=torch.long))

    scores = torch.cat(level_scores)
    level_ids_all = torch.cat(level_ids)
    boxes = decode_boxes(
        torch.cat(level_anchors), torch.cat(level_deltas), config.rpn_box_coder_means, config.rpn_box_coder_stds,
        config.box_delta_clamp, image_size,
    )
    widths = boxes[:, 2] - boxes[:, 0]
    heights = boxes[:, 3] - boxes[:, 1]
    large_enough = (widths > config.rpn_min_box_size) & (heights > config.rpn_min_box_size)
    if not large_enough.all():
        boxes, scores, level_ids_all = boxes[large_enough], scores[large_enough], level_ids_all[large_enough]
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 4)), scores.new_zeros((0,))
    kept = batched_non_maximum_suppression(
        boxes, scores, level_ids_all, config.rpn_nms_iou_threshold, config.nms_split_threshold
    )[: config.rpn_max_proposals]
    return boxes[kept], scores[kept]


# ================================================================================================================
# RoI feature extraction
# ================================================================================================================


def boxes_to_rois(boxes_per_image: List[torch.Tensor]) -> torch.Tensor:
    """Concatenate per-image boxes into RoIs `(total_boxes, 5)`: `(batch_index, x1, y1, x2, y2)`."""
    rois = [
        torch.cat([boxes.new_full((boxes.shape[0], 1), image_index), boxes[:, :4]], dim=-1)
        for image_index, boxes in enumerate(boxes_per_image)
    ]
    return torch.cat(rois, dim=0)


def map_rois_to_levels(rois: torch.Tensor, finest_scale: int, num_levels: int) -> torch.Tensor:
    """FPN level of each RoI: `floor(log2(sqrt(w * h) / finest_scale + 1e-6))`, clamped to `[0, num_levels - 1]`.

    With `finest_scale=56`: side < 112 -> P2, < 224 -> P3, < 448 -> P4, else P5. Returns `(num_rois,)` int64.
    """
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / finest_scale + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


_ROI_ALIGN_POOLS: dict = {}
_ROI_ALIGN_POOLS_LOCK = threading.Lock()


def roi_align_thread_pool(num_threads: int) -> ThreadPoolExecutor:
    """A process-wide pool of `num_threads` workers for CPU RoIAlign (created once per thread count)."""
    with _ROI_ALIGN_POOLS_LOCK:
        pool = _ROI_ALIGN_POOLS.get(num_threads)
        if pool is None:
            pool = ThreadPoolExecutor(max_workers=num_threads, thread_name_prefix="mask-rcnn-roi-align")
            _ROI_ALIGN_POOLS[num_threads] = pool
        return pool


ROI_LEVEL_COPY_ROWS = 8  # rows per block when a CPU level changes layout (see roi_align_levels)


def roi_align_levels(pyramid: List[torch.Tensor], num_levels: int) -> List[torch.Tensor]:
    """The first `num_levels` pyramid levels as RoIAlign reads them: float32, NCHW-contiguous.

    A no-op for the default float32 NCHW pyramid. Channels-last (fused) or bf16/fp16 levels are copied once per
    forward pass, shared by the box and mask branches. On CPU the copy goes `ROI_LEVEL_COPY_ROWS` rows at a time:
    a whole-level layout change thrashes the cache and is ~3x slower (P2 of an 800x1216 input: 25 ms instead of 80).
    """
    levels = []
    for level in pyramid[:num_levels]:
        if level.dtype == torch.float32 and level.is_contiguous():
            levels.append(level)
            continue
        converted = torch.empty(level.shape, dtype=torch.float32, device=level.device)
        if level.device.type == "cpu":
            for start in range(0, level.shape[2], ROI_LEVEL_COPY_ROWS):
                rows = slice(start, start + ROI_LEVEL_COPY_ROWS)
                converted[:, :, rows].copy_(level[:, :, rows])
        else:
            converted.copy_(level)
        levels.append(converted)
    return levels


class MaskRCNNMultiLevelRoIAlign(nn.Module):
    """RoIAlign from the FPN level matching each RoI's size (MMDetection's `SingleRoIExtractor`).

    `(total_rois, 5)` RoIs -> `(total_rois, fpn_out_channels, output_size, output_size)`; one
    `torchvision.ops.roi_align` call per level, half-pixel aligned, adaptive sampling by default.

    torchvision's CPU kernel runs on one core, so on CPU the RoIs of each level are split into
    `torch.get_num_threads()` chunks pooled in parallel threads (the kernel releases the GIL). Every RoI is computed
    by the same code on the same data either way, so the result is bit-identical to a single call.
    """

    min_rois_per_thread = 16

    def __init__(self, config: MaskRCNNConfig, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size
        self.featmap_strides = list(config.roi_featmap_strides)
        self.finest_scale = config.roi_finest_scale
        self.sampling_ratio = config.roi_sampling_ratio
        self.aligned = config.roi_aligned
        self.out_channels = config.fpn_out_channels

    def pool_level(self, feature: torch.Tensor, level_rois: torch.Tensor, stride: int) -> torch.Tensor:
        """`torchvision.ops.roi_align` of `(num_rois, 5)` RoIs on one level `(batch_size, channels, h, w)`."""
        return torchvision_roi_align(
            feature, level_rois, (self.output_size, self.output_size), spatial_scale=1 / stride,
            sampling_ratio=self.sampling_ratio, aligned=self.aligned,
        )

    def forward(self, pyramid: List[torch.Tensor], rois: torch.Tensor,
                output_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """RoIs stay float32 whatever the model dtype (bf16 would round coordinates to several pixels); reduced-
        precision features are pooled in float32 (torchvision's CPU kernel has no bf16/fp16 version) and the pooled
        features are returned in `output_dtype` (default: the pyramid's dtype). Pass the levels through
        `roi_align_levels` once per forward pass to share that conversion between the box and mask branches."""
        features = pyramid[: len(self.featmap_strides)]
        model_dtype = output_dtype or features[0].dtype
        rois = rois.float()
        # every RoI is mapped to one level below, so every row is written: no zero fill needed
        roi_features = features[0].new_empty(
            rois.shape[0], self.out_channels, self.output_size, self.output_size, dtype=model_dtype
        )
        levels = map_rois_to_levels(rois, self.finest_scale, len(features))
        num_threads = torch.get_num_threads() if rois.device.type == "cpu" else 1
        jobs = []  # (indices into rois, level feature map, stride)
        for level, (feature, stride) in enumerate(zip(features, self.featmap_strides)):
            indices = (levels == level).nonzero(as_tuple=False).squeeze(1)
            if indices.numel() == 0:
                continue
            # the kernel reads float32 NCHW: convert a level once, not once per chunk (no-op after roi_align_levels)
            feature = feature.float().contiguous()
            num_chunks = max(1, min(num_threads, indices.numel() // self.min_rois_per_thread))
            jobs.extend((chunk, feature, stride) for chunk in indices.chunk(num_chunks))
        if len(jobs) > 1 and num_threads > 1:
            pool = roi_align_thread_pool(num_threads)
            futures = [pool.submit(self.pool_level, feature, rois[chunk], stride) for chunk, feature, stride in jobs]
            pooled_chunks = [future.result() for future in futures]
        else:
            pooled_chunks = [self.pool_level(feature, rois[chunk], stride) for chunk, feature, stride in jobs]
        for (chunk, _, _), pooled in zip(jobs, pooled_chunks):
            if roi_features.device.type == "cpu":  # a plain row copy, cheaper than index_put's general kernel
                roi_features.index_copy_(0, chunk, pooled.to(model_dtype))
            else:
                roi_features[chunk] = pooled.to(model_dtype)
        return roi_features


# ================================================================================================================
# RoI box head and detection post-processing
# ================================================================================================================


class MaskRCNNBoxHead(nn.Module):
    """Two shared fully connected layers, then a classifier (classes + background last) and class-wise deltas.

    `(num_rois, fpn_out_channels, 7, 7)` -> class_logits `(num_rois, num_labels + 1)` and box_deltas
    `(num_rois, 4 * num_labels)`.
    """

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        in_features = config.fpn_out_channels * config.box_roi_output_size**2
        hidden = config.box_head_fc_channels
        self.fc1 = nn.Linear(in_features, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.class_logits = nn.Linear(hidden, config.num_labels + 1)
        self.box_deltas = nn.Linear(hidden, 4 * config.num_labels)

    def forward(self, roi_features: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        hidden = roi_features.flatten(1)
        hidden = F.relu_(self.fc1(hidden))  # in place: each layer's output is a fresh tensor
        hidden = F.relu_(self.fc2(hidden))
        return self.class_logits(hidden), self.box_deltas(hidden)


def select_detections(
    proposals: torch.Tensor,
    class_logits: torch.Tensor,
    box_deltas: torch.Tensor,
    image_size: Tuple[int, int],
    config: MaskRCNNConfig,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Final detections of one image (MMDetection's `BBoxHead._predict_by_feat_single` + `multiclass_nms`).

    Args:
        proposals: `(num_proposals, 4)`; class_logits: `(num_proposals, num_labels + 1)`;
        box_deltas: `(num_proposals, 4 * num_labels)`; image_size: `(height, width)` to clip boxes to.

    Returns:
        boxes `(num_detections, 4)`, scores `(num_detections,)`, labels `(num_detections,)` int64, best first,
        `num_detections <= config.max_detections_per_image`.
    """
    num_proposals = proposals.shape[0]
    num_classes = config.num_labels
    class_probabilities = F.softmax(class_logits, dim=-1)
    # one decoded box per (proposal, class), proposal-major
    repeated_proposals = proposals.repeat_interleave(num_classes, dim=0)
    boxes = decode_boxes(
        repeated_proposals, box_deltas.reshape(-1, 4), config.box_coder_means, config.box_coder_stds,
        config.box_delta_clamp, image_size,
    )
    boxes = boxes.view(num_proposals, num_classes, 4).reshape(-1, 4)
    scores = class_probabilities[:, :-1].reshape(-1)  # background is the last column
    labels = torch.arange(num_classes, dtype=torch.long, device=scores.device).view(1, -1)
    labels = labels.expand(num_proposals, num_classes).reshape(-1)

    candidates = (scores > config.score_threshold).nonzero(as_tuple=False).squeeze(1)
    boxes, scores, labels = boxes[candidates], scores[candidates], labels[candidates]
    if boxes.numel() == 0:
        return boxes.new_zeros((0, 4)), scores.new_zeros((0,)), labels.new_zeros((0,))
    kept = batched_non_maximum_suppression(
        boxes, scores, labels, config.nms_iou_threshold, config.nms_split_threshold
    )[: config.max_detections_per_image]
    return boxes[kept], scores[kept], labels[kept]


# ================================================================================================================
# Detections the caller keeps
# ================================================================================================================


def checked_keep_score_threshold(threshold: Optional[Union[float, torch.Tensor]]) -> Optional[float]:
    """`keep_score_threshold` as a Python float (None stays None); a one-element tensor is accepted (it arrives so
    from an image processor's `BatchFeature`). ValueError for anything that is not one finite real number."""
    if threshold is None:
        return None
    if isinstance(threshold, torch.Tensor):
        if threshold.numel() != 1 or threshold.is_complex() or threshold.dtype == torch.bool:
            raise ValueError(f"keep_score_threshold must be one real number, got a tensor of shape "
                             f"{tuple(threshold.shape)} and dtype {threshold.dtype}.")
        threshold = threshold.item()
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not math.isfinite(threshold):
        raise ValueError(f"keep_score_threshold must be a finite number (a score between 0 and 1) or None, got "
                         f"{threshold!r}.")
    return float(threshold)


def keep_confident_detections(
    boxes: List[torch.Tensor], scores: List[torch.Tensor], labels: List[torch.Tensor], threshold: float
) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
    """Per image, the detections with `score >= threshold`, in their order (best first).

    Args:
        boxes: per image `(num_detections_i, 4)`; scores: per image `(num_detections_i,)`; labels: likewise.

    Returns:
        The same three lists, each image's tensors restricted to its kept detections `(num_kept_i, ...)`.
    """
    kept = [(image_scores >= threshold).nonzero(as_tuple=False).squeeze(1) for image_scores in scores]
    return ([image_boxes[index] for image_boxes, index in zip(boxes, kept)],
            [image_scores[index] for image_scores, index in zip(scores, kept)],
            [image_labels[index] for image_labels, index in zip(labels, kept)])


# ================================================================================================================
# RoI mask head
# ================================================================================================================


class MaskRCNNMaskHead(nn.Module):
    """FCN mask head: 4 x (3x3 conv + ReLU), 2x2 stride-2 transposed conv + ReLU, 1x1 per-class logits.

    `(num_rois, fpn_out_channels, 14, 14)` -> mask logits `(num_rois, num_labels, 28, 28)`.
    """

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__()
        channels = config.mask_head_conv_channels
        self.convs = nn.ModuleList(
            nn.Conv2d(config.fpn_out_channels if index == 0 else channels, channels, 3, padding=1)
            for index in range(config.mask_head_num_convs)
        )
        self.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2)
        self.mask_logits = nn.Conv2d(channels, config.num_labels, 1)

    def forward(self, roi_features: torch.Tensor) -> torch.Tensor:
        hidden = roi_features
        for conv in self.convs:
            hidden = F.relu_(conv(hidden))  # in place: each convolution's output is a fresh tensor
        hidden = F.relu_(self.upsample(hidden))
        return self.mask_logits(hidden)


# ================================================================================================================
# The transformers model
# ================================================================================================================


class MaskRCNNPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading rules shared by the Mask R-CNN models."""

    config_class = MaskRCNNConfig
    base_model_prefix = "mask_rcnn"
    main_input_name = "pixel_values"
    input_modalities = "image"
    supports_gradient_checkpointing = False
    _no_split_modules: List[str] = []

    def _init_weights(self, module: nn.Module) -> None:
        """Random initialisation for weights absent from a checkpoint.

        Uses `torch.nn.init` only (transformers guards it so loaded tensors, BN running statistics included, are
        never overwritten).
        """
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(module.weight, mean=0.0, std=0.01)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            nn.init.zeros_(module.running_mean)
            nn.init.ones_(module.running_var)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Union[str, os.PathLike], *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, but a folder without weights, or weights that do not cover the
        model exactly, is an error that says what is wrong — never a silently random-initialised detector.

        Raises:
            OSError: no weights, or a `model.safetensors` that is empty, truncated or has a corrupt header.
            ValueError: weights with missing, extra or differently shaped tensors (all reported in one message,
                naming the config field when the class count or the backbone differs); `ignore_mismatched_sizes`
                cannot turn this into a partial random initialisation.
        """
        if not TRANSFORMERS_NAMES_DTYPE and "dtype" in kwargs:  # transformers < 4.56 only knows torch_dtype
            kwargs.setdefault("torch_dtype", kwargs.pop("dtype"))
        folder = str(pretrained_model_name_or_path)
        if os.path.isdir(folder) and not any(
            os.path.isfile(os.path.join(folder, name))
            for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
        ):
            raise OSError(
                f"{folder} has no model.safetensors: the Mask R-CNN weights are not in the repository. Create them "
                f"with `python convert_mmdet_checkpoint.py --config "
                f"{config_name_in(folder) or 'mask-rcnn_r50_fpn_1x_coco'} --output-dir {folder}`."
            )
        weights_path = os.path.join(folder, "model.safetensors")
        weight_shapes = safetensors_shapes(weights_path) if os.path.isfile(weights_path) else None
        wants_loading_info = kwargs.pop("output_loading_info", False)
        kwargs["ignore_mismatched_sizes"] = True  # report shape mismatches below, in our one message
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:  # e.g. a corrupt file downloaded from the Hub
            raise OSError(f"The weights of {folder} are not a readable safetensors file ({error}); download or "
                          "convert them again.") from error
        problems = {
            name: sorted(loading_info.get(name) or [])
            for name in ("missing_keys", "unexpected_keys", "mismatched_keys")
        }
        problems = {name: keys for name, keys in problems.items() if keys}
        if problems:
            details = "; ".join(
                f"{name.replace('_', ' ')} ({len(keys)}): {', '.join(map(str, keys[:8]))}{' ...' if len(keys) > 8 else ''}"
                for name, keys in problems.items()
            )
            reason = architecture_mismatch(model.config, weight_shapes)
            raise ValueError(
                f"The weights in {folder} do not match the Mask R-CNN described by its config.json ({reason}{details}). "
                "Re-create the folder with convert_mmdet_checkpoint.py."
            )
        if isinstance(getattr(model, "backbone", None), MaskRCNNResNetBackbone):
            # transformers 5 loads every tensor into a new Parameter with requires_grad=True, undoing the freeze that
            # __init__ applied: freeze again what the config freezes (stem + first stages, batch-norm affines)
            model.backbone.freeze_for_training(model.config.backbone_frozen_stages,
                                               model.config.backbone_batch_norm_trainable)
        return (model, loading_info) if wants_loading_info else model

    def save_pretrained(self, save_directory: Union[str, os.PathLike], *args, push_to_hub: bool = False,
                        **kwargs) -> None:
        """`PreTrainedModel.save_pretrained`, then the folder is completed into a Hub folder that loads on its own:
        every code file config.json names (model, pipelines, endpoint handler and what they import), both
        `custom_pipelines` tasks, requirements.txt and .gitattributes (`hub_folder_mask_rcnn.write_hub_folder`).
        transformers alone leaves out pipeline.py, and on 4.46/4.51 even modeling_mask_rcnn.py.
        `push_to_hub=True` (with `repo_id`, `token`, `commit_message`, `private`) uploads the completed folder.
        """
        hub_arguments = {name: kwargs.pop(name) for name in ("repo_id", "token", "commit_message", "private")
                         if name in kwargs}
        super().save_pretrained(save_directory, *args, **kwargs)
        write_hub_folder(save_directory, sources=module_directories(self, self.config),
                         name_or_path=getattr(self, "name_or_path", None) or None)
        if push_to_hub:
            repo_id = hub_arguments.pop("repo_id", None) or os.path.basename(os.path.abspath(save_directory))
            upload_hub_folder(save_directory, repo_id, **hub_arguments)


class MaskRCNNForInstanceSegmentation(MaskRCNNPreTrainedModel):
    """Mask R-CNN with a ResNet/ResNeXt-FPN backbone, numerically faithful to MMDetection 3.3.0.

    Without `labels` it detects; with `labels` it returns MMDetection's training losses (`loss`, `loss_dict`). The
    stem and first stage are frozen (`config.backbone_frozen_stages`) and batch norms always use their running
    statistics, as in MMDetection's `mask-rcnn_*_fpn` recipes.

    Example:

    ```python
    >>> from transformers import AutoImageProcessor, AutoModel
    >>> processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    >>> model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    >>> inputs = processor(images=image, return_tensors="pt")
    >>> outputs = model(**inputs)
    >>> results = processor.post_process_instance_segmentation(outputs, threshold=0.5)
    >>> results[0]["boxes"], results[0]["labels"], results[0]["masks"].shape  # masks: (N, H, W) bool
    ```
    """

    def __init__(self, config: MaskRCNNConfig) -> None:
        super().__init__(config)
        self.backbone = MaskRCNNResNetBackbone(config)
        self.fpn = MaskRCNNFeaturePyramid(config)
        self.rpn_head = MaskRCNNRpnHead(config)
        self.box_roi_align = MaskRCNNMultiLevelRoIAlign(config, config.box_roi_output_size)
        self.box_head = MaskRCNNBoxHead(config)
        self.mask_roi_align = MaskRCNNMultiLevelRoIAlign(config, config.mask_roi_output_size)
        self.mask_head = MaskRCNNMaskHead(config)
        self.post_init()
        self.backbone.freeze_for_training(config.backbone_frozen_stages, config.backbone_batch_norm_trainable)

    # -------------------------------------------------------------------------------------------- stages
    def compute_anchors(self, pyramid: List[torch.Tensor]) -> List[torch.Tensor]:
        """Grid anchors of every level, `(height_l * width_l * num_anchors, 4)`, float32 on the features' device
        (cached per input size by `cached_level_anchors`; read-only)."""
        config = self.config
        feature_sizes = tuple((int(level.shape[-2]), int(level.shape[-1])) for level in pyramid)
        strides = tuple(int(stride) for stride in config.anchor_strides[: len(pyramid)])
        return list(cached_level_anchors(feature_sizes, strides, tuple(float(scale) for scale in config.anchor_scales),
                                         tuple(float(ratio) for ratio in config.anchor_ratios), pyramid[0].device))

    def propose(self, pyramid: List[torch.Tensor], image_sizes: List[Tuple[int, int]]) -> Tuple[List, List]:
        """RPN: proposals `(num_proposals_i, 4)` and their objectness `(num_proposals_i,)` for each image."""
        objectness, deltas = self.rpn_head(pyramid)
        anchors = self.compute_anchors(pyramid)
        proposal_boxes, proposal_scores = [], []
        for image_index, image_size in enumerate(image_sizes):
            boxes, scores = select_proposals(
                [level[image_index].float() for level in objectness],
                [level[image_index].float() for level in deltas],
                anchors,
                image_size,
                self.config,
                mmdetection_tie_order=not self.config.fuse_batch_norms,
            )
            proposal_boxes.append(boxes)
            proposal_scores.append(scores)
        return proposal_boxes, proposal_scores

    def detect(
        self, pyramid: List[torch.Tensor], proposal_boxes: List[torch.Tensor], image_sizes: List[Tuple[int, int]]
    ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """Box head on all proposals of the batch, then per-image class-wise NMS (`select_detections` also returns
        empty tensors for an image without proposals). `pyramid` may hold the float32 `roi_align_levels`."""
        if sum(p.shape[0] for p in proposal_boxes) == 0:
            return (
                [p.new_zeros((0, 4)) for p in proposal_boxes],
                [p.new_zeros((0,)) for p in proposal_boxes],
                [torch.zeros((0,), dtype=torch.long, device=p.device) for p in proposal_boxes],
            )
        rois = boxes_to_rois(proposal_boxes)
        roi_features = self.box_roi_align(pyramid, rois, output_dtype=self.dtype)
        class_logits, box_deltas = self.box_head(roi_features)
        counts = [p.shape[0] for p in proposal_boxes]
        boxes, scores, labels = [], [], []
        for proposals, logits, deltas, image_size in zip(
            proposal_boxes, class_logits.float().split(counts), box_deltas.float().split(counts), image_sizes
        ):
            image_boxes, image_scores, image_labels = select_detections(
                proposals, logits, deltas, image_size, self.config
            )
            boxes.append(image_boxes)
            scores.append(image_scores)
            labels.append(image_labels)
        return boxes, scores, labels

    def segment(
        self, pyramid: List[torch.Tensor], boxes: List[torch.Tensor], labels: List[torch.Tensor],
        channels_last: bool = False,
    ) -> List[torch.Tensor]:
        """Mask head on all detections: per image `(num_detections_i, mask_size, mask_size)` probabilities of
        each detection's own class. `channels_last` runs the mask head's convolutions channels-last (fused fast
        path: ~15% faster on CPU, different rounding)."""
        counts = [b.shape[0] for b in boxes]
        mask_size = 2 * self.config.mask_roi_output_size
        if sum(counts) == 0:
            return [b.new_zeros((0, mask_size, mask_size)) for b in boxes]
        rois = boxes_to_rois(boxes)
        roi_features = self.mask_roi_align(pyramid, rois, output_dtype=self.dtype)
        if channels_last:
            roi_features = roi_features.contiguous(memory_format=torch.channels_last)
        mask_logits = self.mask_head(roi_features).float()
        all_labels = torch.cat(labels)
        # sigmoid over all classes first, then pick each detection's class, as MMDetection does: the vectorised
        # and scalar code paths of `sigmoid` round differently, so the element positions must match too
        mask_probs = mask_logits.sigmoid()
        own_class_probs = mask_probs[torch.arange(mask_probs.shape[0], device=mask_probs.device), all_labels]
        return list(own_class_probs.split(counts))

    def check_exact_numerics(self, pixel_values: torch.Tensor) -> None:
        """Raise `ValueError` when `numerics="exact"` cannot hold: weights or buffers, `pixel_values`, or an active
        `torch.autocast` on the input's or the weights' device type in anything but float32."""
        problems = []
        reduced_weights = sorted({str(tensor.dtype).replace("torch.", "")
                                  for tensor in itertools.chain(self.parameters(), self.buffers())
                                  if tensor.is_floating_point() and tensor.dtype != torch.float32})
        if reduced_weights:
            problems.append(f"the model's weights are {'/'.join(reduced_weights)}")
        if pixel_values.dtype != torch.float32:
            problems.append(f"pixel_values is {str(pixel_values.dtype).replace('torch.', '')}")
        for device_type in sorted({pixel_values.device.type, self.device.type}):
            autocast_dtype = autocast_dtype_on(device_type)
            if autocast_dtype not in (None, torch.float32):
                problems.append(f"torch.autocast is active on {device_type} with "
                                f"{str(autocast_dtype).replace('torch.', '')}")
        if problems:
            raise ValueError(
                f"numerics='exact' reproduces MMDetection's float32 results, but {' and '.join(problems)}. Run it "
                "in float32 outside torch.autocast (float32 weights and pixel_values from MaskRCNNImageProcessor), "
                "or use numerics='fast' for reduced precision."
            )

    # -------------------------------------------------------------------------------------------- training
    def reset_class_heads(self, id2label: Dict[int, str]) -> None:
        """Switch to a new class set: replace the class-specific layers, initialised as MMDetection initialises them
        (box classifier Normal(0, 0.01), box deltas Normal(0, 0.001), mask logits Kaiming-normal fan-out/ReLU, biases
        0), and update `config.id2label`/`label2id`. Everything else (backbone, FPN, RPN, shared layers) is kept.

        Args:
            id2label: class index -> name, indices 0..num_classes-1.
        """
        id2label = {int(index): str(name) for index, name in id2label.items()}
        if sorted(id2label) != list(range(len(id2label))) or not id2label:
            raise ValueError(f"id2label must map 0..num_classes-1 to names, got keys {sorted(id2label)[:10]}.")
        self.config.id2label = id2label
        self.config.label2id = {name: index for index, name in id2label.items()}
        num_classes = len(id2label)
        reference = self.box_head.class_logits.weight
        hidden = self.box_head.class_logits.in_features
        self.box_head.class_logits = nn.Linear(hidden, num_classes + 1).to(reference)
        self.box_head.box_deltas = nn.Linear(hidden, 4 * num_classes).to(reference)
        self.mask_head.mask_logits = nn.Conv2d(self.mask_head.mask_logits.in_channels, num_classes, 1).to(reference)
        nn.init.normal_(self.box_head.class_logits.weight, mean=0.0, std=0.01)
        nn.init.normal_(self.box_head.box_deltas.weight, mean=0.0, std=0.001)
        nn.init.kaiming_normal_(self.mask_head.mask_logits.weight, mode="fan_out", nonlinearity="relu")
        for layer in (self.box_head.class_logits, self.box_head.box_deltas, self.mask_head.mask_logits):
            nn.init.zeros_(layer.bias)

    def compute_losses(
        self, pixel_values: torch.Tensor, image_sizes: List[Tuple[int, int]], labels: List[dict]
    ) -> Dict[str, torch.Tensor]:
        """MMDetection's `TwoStageDetector.loss` for one batch: the five loss terms and the accuracy.

        Args:
            pixel_values: `(batch_size, 3, padded_height, padded_width)` float32.
            image_sizes: `(height, width)` of each resized image.
            labels: one dict per image (see `forward`).

        Returns:
            `{"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "acc", "loss_bbox", "loss_mask"}` in MMDetection's order.
        """
        config = self.config
        padded_size = tuple(pixel_values.shape[-2:])
        ground_truths = [
            prepare_ground_truth(image_labels, index, size, padded_size, config.num_labels, pixel_values.device)
            for index, (image_labels, size) in enumerate(zip(labels, image_sizes))
        ]
        # 1. backbone + FPN (never batch-norm-folded here: the folded weights are constants without gradient).
        # Fast numerics on CPU train channels-last: oneDNN's NHWC convolutions skip the NCHW <-> blocked reorders
        # of every layer and its backward (about 1.2x faster steps, less memory); their sums round in another
        # order, so losses move in the last bits (docs/finetune.md). Exact mode keeps MMDetection's layout.
        if self.config.numerics != "exact" and pixel_values.device.type == "cpu":
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)
        pyramid = self.fpn(self.backbone(pixel_values))
        # 2. RPN losses on the sampled anchors of each image
        objectness, deltas = self.rpn_head(pyramid)
        level_anchors = self.compute_anchors(pyramid)
        anchors = torch.cat(level_anchors)
        feature_sizes = [tuple(level.shape[-2:]) for level in pyramid]
        divisor = config.size_divisor
        anchor_targets = []
        for (height, width), ground_truth in zip(image_sizes, ground_truths):
            own_padded_size = (-(-height // divisor) * divisor, -(-width // divisor) * divisor)
            valid = valid_anchor_flags(feature_sizes, own_padded_size, config.anchor_strides,
                                       config.num_anchors_per_location, anchors.device)
            anchor_targets.append(rpn_targets(anchors, valid, ground_truth.boxes, config))
        loss_rpn_cls, loss_rpn_bbox = rpn_losses(objectness, deltas, anchor_targets, config)
        # 3. train-time proposals (detached), then RoI sampling per image with the ground truth added
        proposal_settings = TrainProposalSettings(config)
        samples = []
        with torch.no_grad():
            for image_index, (size, ground_truth) in enumerate(zip(image_sizes, ground_truths)):
                proposals, _ = select_proposals(
                    [level[image_index].detach().float() for level in objectness],
                    [level[image_index].detach().float() for level in deltas],
                    level_anchors, size, proposal_settings,
                )
                samples.append(sample_rois(proposals, ground_truth, config))
        # 4. box head on the sampled RoIs
        roi_features = self.box_roi_align(pyramid, boxes_to_rois([sample.boxes for sample in samples]))
        class_logits, box_deltas = self.box_head(roi_features)
        loss_cls, loss_bbox, accuracy = box_losses(class_logits, box_deltas, samples, ground_truths, config)
        # 5. mask head on the positives, against RoIAligned ground truth masks
        mask_features = self.mask_roi_align(pyramid, boxes_to_rois([sample.positive_boxes for sample in samples]))
        mask_logits = self.mask_head(mask_features)
        with torch.no_grad():
            targets = mask_targets(samples, ground_truths, mask_logits.shape[-1],
                                   config.mask_target_binarize_threshold).to(mask_logits.device)
        positive_labels = torch.cat([sample.positive_labels for sample in samples])
        loss_mask = mask_loss(mask_logits, targets, positive_labels, config)
        return {"loss_rpn_cls": loss_rpn_cls, "loss_rpn_bbox": loss_rpn_bbox, "loss_cls": loss_cls, "acc": accuracy,
                "loss_bbox": loss_bbox, "loss_mask": loss_mask}

    # -------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor,
        image_sizes: Optional[torch.Tensor] = None,
        original_sizes: Optional[torch.Tensor] = None,
        scale_factors: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        keep_score_threshold: Optional[Union[float, torch.Tensor]] = None,
        **kwargs,
    ) -> Union[MaskRCNNInstanceSegmentationOutput, Tuple]:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, padded_height, padded_width)`):
                Normalised images from [`MaskRCNNImageProcessor`], zero-padded right/bottom to a multiple of 32.
            image_sizes (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*):
                `(height, width)` of each resized image before padding. Defaults to the padded size.
            original_sizes (`torch.LongTensor` of shape `(batch_size, 2)`, *optional*):
                Passed through to the output for post-processing.
            scale_factors (`torch.DoubleTensor` of shape `(batch_size, 2)`, *optional*):
                Passed through to the output for post-processing.
            labels (`list[dict]`, *optional*):
                Training targets, one dict per image: `"class_labels"` `torch.LongTensor` `(num_objects,)` (keys of
                `config.id2label`), `"boxes"` `torch.FloatTensor` `(num_objects, 4)` x1y1x2y2 in resized-input
                pixels, `"masks"` `torch.BoolTensor` `(num_objects, height, width)` at the resized image size
                (`image_sizes`; padded inside the model), optional `"iscrowd"` `(num_objects,)` (crowd objects are
                left out of the losses, as MMDetection does). With labels the output carries `loss` and `loss_dict`
                (MMDetection 3.3.0's Mask R-CNN training losses) and no detections.
            output_hidden_states (`bool`, *optional*):
                Also return the FPN feature maps.
            return_dict (`bool`, *optional*):
                Return a [`MaskRCNNInstanceSegmentationOutput`] (default) instead of a tuple.
            keep_score_threshold (`float`, *optional*):
                Return only detections with `score >= keep_score_threshold`, and run RoIAlign and the mask head
                for those alone: pass the threshold you will post-process with (e.g. 0.5) to skip the mask work for
                every detection you would throw away (the mask head costs about 1 GFLOP per detection, up to
                `max_detections_per_image` of them). The detections kept are bit for bit those of the full
                computation (boxes, scores, labels, mask probabilities): each detection's mask is computed on its
                own. None (default): all detections with `score > config.score_threshold`, as MMDetection returns
                them. The image processor's `keep_score_threshold` argument passes it along with the inputs.
        """
        labels = kwargs.pop("labels", None)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        if pixel_values.dim() != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                "pixel_values must have shape (batch_size, 3, height, width), got "
                f"{tuple(pixel_values.shape)}; use MaskRCNNImageProcessor to prepare images."
            )
        batch_size = pixel_values.shape[0]
        keep_score_threshold = checked_keep_score_threshold(keep_score_threshold)
        if image_sizes is None:
            image_sizes = torch.tensor([pixel_values.shape[-2:]] * batch_size, dtype=torch.long)
        sizes = [(int(height), int(width)) for height, width in image_sizes.tolist()]
        if len(sizes) != batch_size:
            raise ValueError(f"image_sizes has {len(sizes)} rows for a batch of {batch_size} images.")
        exact = self.config.numerics == "exact"
        if exact:
            self.check_exact_numerics(pixel_values)
        if labels is not None:
            if len(labels) != batch_size:
                raise ValueError(f"labels has {len(labels)} entries for a batch of {batch_size} images; give one dict "
                                 "per image (an image without objects gets empty tensors).")
            loss_dict = self.compute_losses(pixel_values.to(self.dtype), sizes, labels)
            loss = sum(value for name, value in loss_dict.items() if name.startswith("loss"))
            output = MaskRCNNInstanceSegmentationOutput(loss=loss, loss_dict=loss_dict, image_sizes=image_sizes)
            return output if return_dict else output.to_tuple()
        # the dtype the convolutions run in: the model's, or autocast's (segment.py --dtype, user code)
        warn_if_reduced_precision_is_emulated(autocast_dtype_on(self.device.type) or self.dtype, self.device)
        pixel_values = pixel_values.to(self.dtype)
        fuse = self.config.fuse_batch_norms and not exact
        if fuse:
            pixel_values = pixel_values.contiguous(memory_format=torch.channels_last)

        # 1. backbone and feature pyramid: P2..P6 (optionally with batch norms folded into the convolutions)
        pyramid = self.fpn(self.backbone(pixel_values, fold_batch_norms=fuse))
        # 2. region proposals per image
        proposal_boxes, proposal_scores = self.propose(pyramid, sizes)
        # 3. box head + class-wise NMS -> detections in the resized frame (RoIAlign reads float32 NCHW levels)
        roi_levels = roi_align_levels(pyramid, len(self.config.roi_featmap_strides))
        hidden_states = tuple(pyramid) if output_hidden_states else None
        del pyramid  # where roi_levels are copies (fused, bf16/fp16), the originals are no longer needed
        boxes, scores, labels = self.detect(roi_levels, proposal_boxes, sizes)
        # 4. only the detections the caller keeps, then the mask head on them
        if keep_score_threshold is not None:
            boxes, scores, labels = keep_confident_detections(boxes, scores, labels, keep_score_threshold)
        mask_probs = self.segment(roi_levels, boxes, labels, channels_last=fuse)
        del roi_levels

        output = MaskRCNNInstanceSegmentationOutput(
            pred_boxes=boxes,
            scores=scores,
            labels=labels,
            mask_probs=mask_probs,
            proposal_boxes=proposal_boxes,
            proposal_scores=proposal_scores,
            image_sizes=image_sizes,
            original_sizes=original_sizes,
            scale_factors=scale_factors,
            hidden_states=hidden_states,
            keep_score_threshold=keep_score_threshold,
        )
        return output if return_dict else output.to_tuple()
