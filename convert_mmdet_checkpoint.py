# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Convert an MMDetection 3.x Mask R-CNN checkpoint into a transformers Hub folder.

    python convert_mmdet_checkpoint.py --config mask-rcnn_r50_fpn_1x_coco [--checkpoint PATH_OR_URL] --output-dir DIR
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

try:
    from .configuration_mask_rcnn import (
        CAFFE_STYLE_NORMALIZATION,
        DETECTRON2_RESNEXT_NORMALIZATION,
        PYTORCH_STYLE_NORMALIZATION,
        MaskRCNNConfig,
    )
except ImportError:  # run as a script: python convert_mmdet_checkpoint.py
    from configuration_mask_rcnn import (
        CAFFE_STYLE_NORMALIZATION,
        DETECTRON2_RESNEXT_NORMALIZATION,
        PYTORCH_STYLE_NORMALIZATION,
        MaskRCNNConfig,
    )


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


# ----------------------------------------------------------------------------------------------------------------
# The model zoo: the 21 Mask R-CNN checkpoints of MMDetection 3.3.0's configs/mask_rcnn/metafile.yml
# ----------------------------------------------------------------------------------------------------------------

ZOO_URL_PREFIX = "https://download.openmmlab.com/mmdetection/v2.0/"


@dataclass(frozen=True)
class ZooEntry:
    """One published Mask R-CNN checkpoint: what to build for it and where its weights live."""

    config_name: str
    backbone: str  # "R-50", "R-101", "X-101-32x4d", ...
    style: str  # "pytorch", "caffe" or "c2" (detectron2 ResNeXt weights: pytorch style, BGR input with std)
    epochs: int
    box_ap: float
    mask_ap: Optional[float]
    weights_path: str  # relative to ZOO_URL_PREFIX

    @property
    def url(self) -> str:
        return ZOO_URL_PREFIX + self.weights_path

    @property
    def sha256_prefix(self) -> str:
        """The 8 hex digits MMDetection's publish_model.py appends to the file name (start of its sha256)."""
        return re.search(r"-([0-9a-f]{8})\.pth$", self.weights_path).group(1)

    def config_kwargs(self) -> Dict[str, object]:
        """Keyword arguments of `MaskRCNNConfig` that this checkpoint fixes (backbone, style, normalisation)."""
        depth = 50 if self.backbone == "R-50" else 101
        groups, base_width = 1, 4
        match = re.fullmatch(r"X-101-(\d+)x(\d+)d", self.backbone)
        if match:
            groups, base_width = int(match.group(1)), int(match.group(2))
        if self.style == "caffe":
            normalization = CAFFE_STYLE_NORMALIZATION
        elif self.style == "c2":
            normalization = DETECTRON2_RESNEXT_NORMALIZATION
        else:
            normalization = PYTORCH_STYLE_NORMALIZATION
        return {
            "backbone_depth": depth,
            "backbone_groups": groups,
            "backbone_base_width": base_width,
            "backbone_style": "caffe" if self.style == "caffe" else "pytorch",
            **{key: list(value) if isinstance(value, list) else value for key, value in normalization.items()},
            "mmdet_config_name": self.config_name,
        }


_M = "mask_rcnn/"
ZOO: Dict[str, ZooEntry] = {entry.config_name: entry for entry in (
    ZooEntry("mask-rcnn_r50-caffe_fpn_1x_coco", "R-50", "caffe", 12, 38.0, 34.4, _M + "mask_rcnn_r50_caffe_fpn_1x_coco/mask_rcnn_r50_caffe_fpn_1x_coco_bbox_mAP-0.38__segm_mAP-0.344_20200504_231812-0ebd1859.pth"),
    ZooEntry("mask-rcnn_r50_fpn_1x_coco", "R-50", "pytorch", 12, 38.2, 34.7, _M + "mask_rcnn_r50_fpn_1x_coco/mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth"),
    ZooEntry("mask-rcnn_r50_fpn_amp-1x_coco", "R-50", "pytorch", 12, 38.1, 34.7, "fp16/mask_rcnn_r50_fpn_fp16_1x_coco/mask_rcnn_r50_fpn_fp16_1x_coco_20200205-59faf7e4.pth"),
    ZooEntry("mask-rcnn_r50_fpn_2x_coco", "R-50", "pytorch", 24, 39.2, 35.4, _M + "mask_rcnn_r50_fpn_2x_coco/mask_rcnn_r50_fpn_2x_coco_bbox_mAP-0.392__segm_mAP-0.354_20200505_003907-3e542a40.pth"),
    ZooEntry("mask-rcnn_r101-caffe_fpn_1x_coco", "R-101", "caffe", 12, 40.4, 36.4, _M + "mask_rcnn_r101_caffe_fpn_1x_coco/mask_rcnn_r101_caffe_fpn_1x_coco_20200601_095758-805e06c1.pth"),
    ZooEntry("mask-rcnn_r101_fpn_1x_coco", "R-101", "pytorch", 12, 40.0, 36.1, _M + "mask_rcnn_r101_fpn_1x_coco/mask_rcnn_r101_fpn_1x_coco_20200204-1efe0ed5.pth"),
    ZooEntry("mask-rcnn_r101_fpn_2x_coco", "R-101", "pytorch", 24, 40.8, 36.6, _M + "mask_rcnn_r101_fpn_2x_coco/mask_rcnn_r101_fpn_2x_coco_bbox_mAP-0.408__segm_mAP-0.366_20200505_071027-14b391c7.pth"),
    ZooEntry("mask-rcnn_x101-32x4d_fpn_1x_coco", "X-101-32x4d", "pytorch", 12, 41.9, 37.5, _M + "mask_rcnn_x101_32x4d_fpn_1x_coco/mask_rcnn_x101_32x4d_fpn_1x_coco_20200205-478d0b67.pth"),
    ZooEntry("mask-rcnn_x101-32x4d_fpn_2x_coco", "X-101-32x4d", "pytorch", 24, 42.2, 37.8, _M + "mask_rcnn_x101_32x4d_fpn_2x_coco/mask_rcnn_x101_32x4d_fpn_2x_coco_bbox_mAP-0.422__segm_mAP-0.378_20200506_004702-faef898c.pth"),
    ZooEntry("mask-rcnn_x101-64x4d_fpn_1x_coco", "X-101-64x4d", "pytorch", 12, 42.8, 38.4, _M + "mask_rcnn_x101_64x4d_fpn_1x_coco/mask_rcnn_x101_64x4d_fpn_1x_coco_20200201-9352eb0d.pth"),
    ZooEntry("mask-rcnn_x101-64x4d_fpn_2x_coco", "X-101-64x4d", "pytorch", 24, 42.7, 38.1, _M + "mask_rcnn_x101_64x4d_fpn_2x_coco/mask_rcnn_x101_64x4d_fpn_2x_coco_20200509_224208-39d6f70c.pth"),
    ZooEntry("mask-rcnn_x101-32x8d_fpn_1x_coco", "X-101-32x8d", "c2", 12, 42.8, 38.3, _M + "mask_rcnn_x101_32x8d_fpn_1x_coco/mask_rcnn_x101_32x8d_fpn_1x_coco_20220630_173841-0aaf329e.pth"),
    ZooEntry("mask-rcnn_r50-caffe_fpn_ms-poly-2x_coco", "R-50", "caffe", 24, 40.3, 36.5, _M + "mask_rcnn_r50_caffe_fpn_mstrain-poly_2x_coco/mask_rcnn_r50_caffe_fpn_mstrain-poly_2x_coco_bbox_mAP-0.403__segm_mAP-0.365_20200504_231822-a75c98ce.pth"),
    ZooEntry("mask-rcnn_r50-caffe_fpn_ms-poly-3x_coco", "R-50", "caffe", 36, 40.8, 37.0, _M + "mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco/mask_rcnn_r50_caffe_fpn_mstrain-poly_3x_coco_bbox_mAP-0.408__segm_mAP-0.37_20200504_163245-42aa3d00.pth"),
    ZooEntry("mask-rcnn_r50_fpn_ms-poly-3x_coco", "R-50", "pytorch", 36, 40.9, 37.1, _M + "mask_rcnn_r50_fpn_mstrain-poly_3x_coco/mask_rcnn_r50_fpn_mstrain-poly_3x_coco_20210524_201154-21b550bb.pth"),
    ZooEntry("mask-rcnn_r101_fpn_ms-poly-3x_coco", "R-101", "pytorch", 36, 42.7, 38.5, _M + "mask_rcnn_r101_fpn_mstrain-poly_3x_coco/mask_rcnn_r101_fpn_mstrain-poly_3x_coco_20210524_200244-5675c317.pth"),
    ZooEntry("mask-rcnn_r101-caffe_fpn_ms-poly-3x_coco", "R-101", "caffe", 36, 42.9, 38.5, _M + "mask_rcnn_r101_caffe_fpn_mstrain-poly_3x_coco/mask_rcnn_r101_caffe_fpn_mstrain-poly_3x_coco_20210526_132339-3c33ce02.pth"),
    ZooEntry("mask-rcnn_x101-32x4d_fpn_ms-poly-3x_coco", "X-101-32x4d", "pytorch", 36, 43.6, 39.0, _M + "mask_rcnn_x101_32x4d_fpn_mstrain-poly_3x_coco/mask_rcnn_x101_32x4d_fpn_mstrain-poly_3x_coco_20210524_201410-abcd7859.pth"),
    ZooEntry("mask-rcnn_x101-32x8d_fpn_ms-poly-1x_coco", "X-101-32x8d", "c2", 12, 43.4, 39.0, _M + "mask_rcnn_x101_32x8d_fpn_mstrain-poly_1x_coco/mask_rcnn_x101_32x8d_fpn_mstrain-poly_1x_coco_20220630_170346-b4637974.pth"),
    ZooEntry("mask-rcnn_x101-32x8d_fpn_ms-poly-3x_coco", "X-101-32x8d", "c2", 36, 44.3, None, _M + "mask_rcnn_x101_32x8d_fpn_mstrain-poly_3x_coco/mask_rcnn_x101_32x8d_fpn_mstrain-poly_3x_coco_20210607_161042-8bd2c639.pth"),
    ZooEntry("mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco", "X-101-64x4d", "pytorch", 36, 44.5, 39.7, _M + "mask_rcnn_x101_64x4d_fpn_mstrain-poly_3x_coco/mask_rcnn_x101_64x4d_fpn_mstrain-poly_3x_coco_20210526_120447-c376f129.pth"),
)}  # fmt: skip


def zoo_config(config_name: str, **overrides: object) -> MaskRCNNConfig:
    """`MaskRCNNConfig` of a zoo config name (backbone, style and normalisation fixed by the name)."""
    if config_name not in ZOO:
        known = "\n  ".join(sorted(ZOO))
        raise ValueError(f"Unknown MMDetection Mask R-CNN config '{config_name}'. Known configs:\n  {known}")
    return MaskRCNNConfig(**{**ZOO[config_name].config_kwargs(), **overrides})
