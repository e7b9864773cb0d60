# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Convert an MMDetection 3.x Mask R-CNN checkpoint into a transformers Hub folder.

    python convert_mmdet_checkpoint.py --config mask-rcnn_r50_fpn_1x_coco [--checkpoint PATH_OR_URL] --output-dir DIR
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Dict, Tuple

try:
    from .configuration_mask_rcnn import MaskRCNNConfig
except ImportError:  # run as a script: python convert_mmdet_checkpoint.py
    from configuration_mask_rcnn import MaskRCNNConfig


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint layout: MMDetection key names and shapes, and their names in MaskRCNNForInstanceSegmentation
# ----------------------------------------------------------------------------------------------------------------

# (MMDetection pattern, our replacement). Backbone names are identical (torchvision/MMDetection ResNet names).
MMDET_TO_HF_KEY_RULES: Tuple[Tuple[str, str], ...] = (
    (r"^backbone\.", "backbone."),
    (r"^neck\.lateral_convs\.(\d+)\.conv\.", r"fpn.lateral_convs.\1."),
    (r"^neck\.fpn_convs\.(\d+)\.conv\.", r"fpn.output_convs.\1."),
    (r"^rpn_head\.rpn_conv\.", "rpn_head.conv."),
    (r"^rpn_head\.rpn_cls\.", "rpn_head.objectness_logits."),
    (r"^rpn_head\.rpn_reg\.", "rpn_head.box_deltas."),
    (r"^roi_head\.bbox_head\.shared_fcs\.0\.", "box_head.fc1."),
    (r"^roi_head\.bbox_head\.shared_fcs\.1\.", "box_head.fc2."),
    (r"^roi_head\.bbox_head\.fc_cls\.", "box_head.class_logits."),
    (r"^roi_head\.bbox_head\.fc_reg\.", "box_head.box_deltas."),
    (r"^roi_head\.mask_head\.convs\.(\d+)\.conv\.", r"mask_head.convs.\1."),
    (r"^roi_head\.mask_head\.upsample\.", "mask_head.upsample."),
    (r"^roi_head\.mask_head\.conv_logits\.", "mask_head.mask_logits."),
)


def mmdet_key_to_hf_key(mmdet_key: str) -> str:
    """Name of an MMDetection state-dict entry in `MaskRCNNForInstanceSegmentation`.

    Raises `KeyError` for a key that belongs to no part of a Mask R-CNN (ResNet + FPN) model.
    """
    for pattern, replacement in MMDET_TO_HF_KEY_RULES:
        if re.match(pattern, mmdet_key):
            return re.sub(pattern, replacement, mmdet_key, count=1)
    raise KeyError(f"'{mmdet_key}' is not a key of an MMDetection Mask R-CNN (ResNet + FPN) checkpoint")


def _batch_norm_shapes(prefix: str, channels: int) -> Dict[str, Tuple[int, ...]]:
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def mmdet_state_dict_shapes(config: MaskRCNNConfig) -> "OrderedDict[str, Tuple[int, ...]]":
    """Every key of an MMDetection Mask R-CNN checkpoint for `config`, in MMDetection's order, with its shape.

    Built from the config alone (no MMDetection needed), so checkpoints of all zoo variants can be checked.
    """
    shapes: "OrderedDict[str, Tuple[int, ...]]" = OrderedDict()
    # backbone: stem
    shapes["backbone.conv1.weight"] = (64, 3, 7, 7)
    shapes.update({f"backbone.{k}": v for k, v in _batch_norm_shapes("bn1", 64).items()})
    # backbone: bottleneck stages
    in_channels = 64
    for stage, num_blocks in enumerate(config.backbone_stage_blocks):
        planes = 64 * 2**stage
        if config.backbone_groups == 1:
            width = planes
        else:
            width = (planes * config.backbone_base_width // 64) * config.backbone_groups
        out_channels = planes * 4
        for block in range(num_blocks):
            prefix = f"backbone.layer{stage + 1}.{block}"
            block_in = in_channels if block == 0 else out_channels
            shapes[f"{prefix}.conv1.weight"] = (width, block_in, 1, 1)
            shapes.update(_batch_norm_shapes(f"{prefix}.bn1", width))
            shapes[f"{prefix}.conv2.weight"] = (width, width // config.backbone_groups, 3, 3)
            shapes.update(_batch_norm_shapes(f"{prefix}.bn2", width))
            shapes[f"{prefix}.conv3.weight"] = (out_channels, width, 1, 1)
            shapes.update(_batch_norm_shapes(f"{prefix}.bn3", out_channels))
            if block == 0:
                shapes[f"{prefix}.downsample.0.weight"] = (out_channels, block_in, 1, 1)
                shapes.update(_batch_norm_shapes(f"{prefix}.downsample.1", out_channels))
        in_channels = out_channels
    # neck (FPN)
    fpn_channels = config.fpn_out_channels
    for level, channels in enumerate(config.backbone_out_channels):
        shapes[f"neck.lateral_convs.{level}.conv.weight"] = (fpn_channels, channels, 1, 1)
        shapes[f"neck.lateral_convs.{level}.conv.bias"] = (fpn_channels,)
    for level in range(len(config.backbone_out_channels)):
        shapes[f"neck.fpn_convs.{level}.conv.weight"] = (fpn_channels, fpn_channels, 3, 3)
        shapes[f"neck.fpn_convs.{level}.conv.bias"] = (fpn_channels,)
    # RPN head
    num_anchors = config.num_anchors_per_location
    shapes["rpn_head.rpn_conv.weight"] = (fpn_channels, fpn_channels, 3, 3)
    shapes["rpn_head.rpn_conv.bias"] = (fpn_channels,)
    shapes["rpn_head.rpn_cls.weight"] = (num_anchors, fpn_channels, 1, 1)
    shapes["rpn_head.rpn_cls.bias"] = (num_anchors,)
    shapes["rpn_head.rpn_reg.weight"] = (4 * num_anchors, fpn_channels, 1, 1)
    shapes["rpn_head.rpn_reg.bias"] = (4 * num_anchors,)
    # RoI box head (Shared2FCBBoxHead)
    num_classes = config.num_labels
    fc_channels = config.box_head_fc_channels
    roi_features = fpn_channels * config.box_roi_output_size**2
    shapes["roi_head.bbox_head.fc_cls.weight"] = (num_classes + 1, fc_channels)
    shapes["roi_head.bbox_head.fc_cls.bias"] = (num_classes + 1,)
    shapes["roi_head.bbox_head.fc_reg.weight"] = (4 * num_classes, fc_channels)
    shapes["roi_head.bbox_head.fc_reg.bias"] = (4 * num_classes,)
    shapes["roi_head.bbox_head.shared_fcs.0.weight"] = (fc_channels, roi_features)
    shapes["roi_head.bbox_head.shared_fcs.0.bias"] = (fc_channels,)
    shapes["roi_head.bbox_head.shared_fcs.1.weight"] = (fc_channels, fc_channels)
    shapes["roi_head.bbox_head.shared_fcs.1.bias"] = (fc_channels,)
    # RoI mask head (FCNMaskHead)
    mask_channels = config.mask_head_conv_channels
    for index in range(config.mask_head_num_convs):
        shapes[f"roi_head.mask_head.convs.{index}.conv.weight"] = (mask_channels, fpn_channels if index == 0 else mask_channels, 3, 3)
        shapes[f"roi_head.mask_head.convs.{index}.conv.bias"] = (mask_channels,)
    shapes["roi_head.mask_head.upsample.weight"] = (mask_channels, mask_channels, 2, 2)
    shapes["roi_head.mask_head.upsample.bias"] = (mask_channels,)
    shapes["roi_head.mask_head.conv_logits.weight"] = (num_classes, mask_channels, 1, 1)
    shapes["roi_head.mask_head.conv_logits.bias"] = (num_classes,)
    return shapes
