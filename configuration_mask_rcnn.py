# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Configuration of MMDetection's Mask R-CNN (ResNet/ResNeXt + FPN) as a transformers model.

Every test-time constant of MMDetection 3.3.0's ``mask-rcnn_*_fpn_*_coco`` configs is a named field here, with
MMDetection's default. Field groups follow the data flow: backbone -> FPN -> anchors/RPN -> RoI extraction ->
box head -> mask head -> image pre-processing.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Optional, Sequence

try:  # transformers v5 name
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig

# transformers >= 4.56 calls the weights' dtype `dtype` (config key and from_pretrained argument); before, it was only
# `torch_dtype`. Folders written by either keep loading on both: see `MaskRCNNConfig.__init__`.
TRANSFORMERS_NAMES_DTYPE = "dtype" in inspect.signature(_BaseConfig.__init__).parameters
# Image processor settings that older config.json files also carried; they belong to preprocessor_config.json.
IMAGE_PROCESSOR_FIELDS = ("image_mean", "image_std", "input_channel_order", "resize_scale")


COCO_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip
# COCO 2017's official category_id of each class above (same order = the model's label indices 0..79): 1..90 with
# the ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 unused. Results files in COCO's format carry these ids.
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34,
    35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)  # fmt: skip

# Normalisation presets of the model zoo (values on the 0..255 scale, in the channel order the network expects).
PYTORCH_STYLE_NORMALIZATION = {"image_mean": [123.675, 116.28, 103.53], "image_std": [58.395, 57.12, 57.375],
                               "input_channel_order": "rgb"}
CAFFE_STYLE_NORMALIZATION = {"image_mean": [103.53, 116.28, 123.675], "image_std": [1.0, 1.0, 1.0],
                             "input_channel_order": "bgr"}
DETECTRON2_RESNEXT_NORMALIZATION = {"image_mean": [103.53, 116.28, 123.675], "image_std": [57.375, 57.12, 58.395],
                                    "input_channel_order": "bgr"}

# Bottleneck blocks per stage (layer1..layer4) of each ResNet depth.
BACKBONE_STAGE_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}


def bottleneck_width(planes: int, groups: int, base_width: int) -> int:
    """Channels inside a ResNet/ResNeXt bottleneck (its 1x1 -> 3x3 -> 1x1 middle), as MMDetection computes them.

    ResNet (`groups == 1`): `planes` (64, 128, 256, 512 in stages 1-4). ResNeXt: `groups * (planes * base_width //
    64)`, e.g. 128 in stage 1 of X-101-32x4d and 2048 in stage 4 of X-101-64x4d; the 3x3 convolution then has
    `width // groups` input channels per group.
    """
    return planes if groups == 1 else (planes * base_width // 64) * groups


class MaskRCNNConfig(_BaseConfig):
    r"""Configuration for [`MaskRCNNForInstanceSegmentation`], mirroring MMDetection 3.3.0's Mask R-CNN test path.

    Defaults reproduce `mask-rcnn_r50_fpn_1x_coco`. Coordinates are in pixels of the resized network input unless
    said otherwise.

    Args:
        backbone_depth (`int`, *optional*, defaults to 50):
            ResNet depth: 50, 101 or 152 (bottleneck blocks per stage (3,4,6,3), (3,4,23,3), (3,8,36,3)).
        backbone_groups (`int`, *optional*, defaults to 1):
            Groups of the 3x3 convolution; > 1 makes the backbone a ResNeXt (e.g. 32 for X101-32x4d).
        backbone_base_width (`int`, *optional*, defaults to 4):
            ResNeXt width per group (4 for 32x4d/64x4d, 8 for 32x8d). Ignored when `backbone_groups == 1`.
        backbone_style (`str`, *optional*, defaults to `"pytorch"`):
            `"pytorch"` puts the stride-2 in the 3x3 conv of a bottleneck, `"caffe"` in the first 1x1 conv.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the (frozen, eval-mode) batch norms.
        fpn_out_channels (`int`, *optional*, defaults to 256):
            Channels of every FPN output level.
        fpn_num_outs (`int`, *optional*, defaults to 5):
            FPN outputs: P2..P5 from convolutions plus one max-pool (kernel 1, stride 2) level per extra output.
        anchor_scales (`list[float]`, *optional*, defaults to `[8]`):
            Anchor side = stride * scale (before applying the ratio).
        anchor_ratios (`list[float]`, *optional*, defaults to `[0.5, 1.0, 2.0]`):
            Anchor aspect ratios, height / width.
        anchor_strides (`list[int]`, *optional*, defaults to `[4, 8, 16, 32, 64]`):
            Stride of each FPN level; also the anchor base size. Must have `fpn_num_outs` entries.
        rpn_box_coder_means, rpn_box_coder_stds (`list[float]`, *optional*):
            Delta normalisation of the RPN box coder (defaults `[0, 0, 0, 0]` and `[1, 1, 1, 1]`).
        rpn_pre_nms_top_k (`int`, *optional*, defaults to 1000):
            Proposals kept per level (highest objectness) before NMS (`test_cfg.rpn.nms_pre`).
        rpn_nms_iou_threshold (`float`, *optional*, defaults to 0.7):
            IoU threshold of the per-level proposal NMS.
        rpn_max_proposals (`int`, *optional*, defaults to 1000):
            Proposals kept per image after NMS (`test_cfg.rpn.max_per_img`).
        rpn_min_box_size (`float`, *optional*, defaults to 0.0):
            Proposals whose width or height is not strictly greater than this are dropped.
        box_delta_wh_ratio_clip (`float`, *optional*, defaults to 0.016):
            Width/height deltas are clamped to +-|log(box_delta_wh_ratio_clip)| before `exp`.
        roi_featmap_strides (`list[int]`, *optional*, defaults to `[4, 8, 16, 32]`):
            FPN levels RoIs are pooled from (P2..P5).
        roi_finest_scale (`int`, *optional*, defaults to 56):
            RoI level mapping: level = floor(log2(sqrt(area) / finest_scale + 1e-6)), clamped to the levels.
        roi_sampling_ratio (`int`, *optional*, defaults to 0):
            RoIAlign sampling points per bin (0 = adaptive, ceil(roi_size / output_size)).
        roi_aligned (`bool`, *optional*, defaults to `True`):
            RoIAlign half-pixel alignment.
        box_roi_output_size (`int`, *optional*, defaults to 7):
            RoIAlign output size of the box branch.
        box_head_fc_channels (`int`, *optional*, defaults to 1024):
            Width of the two shared fully connected layers of the box head.
        box_coder_means, box_coder_stds (`list[float]`, *optional*):
            Delta normalisation of the R-CNN box coder (defaults `[0, 0, 0, 0]` and `[0.1, 0.1, 0.2, 0.2]`).
        score_threshold (`float`, *optional*, defaults to 0.05):
            Class scores must be strictly greater than this to enter the per-class NMS (`test_cfg.rcnn.score_thr`).
        nms_iou_threshold (`float`, *optional*, defaults to 0.5):
            IoU threshold of the per-class NMS of the final detections.
        nms_split_threshold (`int`, *optional*, defaults to 10000):
            mmcv `batched_nms` switches from one NMS over offset boxes to a per-class loop at this many boxes.
        max_detections_per_image (`int`, *optional*, defaults to 100):
            Detections kept per image after NMS.
        mask_roi_output_size (`int`, *optional*, defaults to 14):
            RoIAlign output size of the mask branch.
        mask_head_num_convs (`int`, *optional*, defaults to 4):
            3x3 convolutions (each followed by ReLU) of the FCN mask head.
        mask_head_conv_channels (`int`, *optional*, defaults to 256):
            Channels of the mask head convolutions.
        mask_threshold (`float`, *optional*, defaults to 0.5):
            Mask probability at or above which a pixel belongs to the instance (`test_cfg.rcnn.mask_thr_binary`).
        numerics (`str`, *optional*, defaults to `"fast"`):
            `"exact"` runs MMDetection's float32 operation order and refuses reduced precision: outputs are
            bit-identical to MMDetection 3.3.0 on CPU. `"fast"` allows the speed options below and bf16/fp16; with
            them off (the default) its float32 inference results equal exact mode's. Training (`labels=`) in fast
            mode on CPU runs channels-last (about 1.2x faster steps), so its losses round differently from exact
            mode's (~1e-6 relative; more where a last-bit change moves a proposal across an NMS or sampling
            decision, docs/finetune.md).
        fuse_batch_norms (`bool`, *optional*, defaults to `False`):
            Fast mode only: fold the frozen batch norms into the convolutions and run the backbone, FPN, RPN and
            mask head channels-last (the README's Speed section has the measured gain). Rounding then differs
            from MMDetection by about as much as MMDetection itself moves when PyTorch's native convolutions
            replace oneDNN's: on the synthetic parity fixtures (which amplify rounding) boxes move by up to
            ~0.06 px and scores by up to ~3e-3, within twice that noise floor but more than the core parity
            tolerance (0.01 px, 1e-4), hence opt-in.
        size_divisor (`int`, *optional*, defaults to 32):
            Padding multiple of the image processor's batches; training uses it for each image's anchor-validity
            window (the image processor's own `size_divisor` pads the inputs).
        mmdet_config_name (`str`, *optional*):
            Name of the MMDetection zoo config the weights come from (informational).

    Training (`forward(..., labels=...)`; MMDetection's `train_cfg` and loss settings of `mask-rcnn_r50_fpn`):

        backbone_frozen_stages (`int`, *optional*, defaults to 1):
            The stem and the first `backbone_frozen_stages` ResNet stages get no gradient (`frozen_stages`; as in
            MMDetection, 0 still freezes the stem and -1 freezes nothing).
        backbone_batch_norm_trainable (`bool`, *optional*, defaults to `True`):
            Whether the affine weight/bias of the (always eval-mode) backbone batch norms of the unfrozen stages are
            trained (`norm_cfg.requires_grad`; `False` in the caffe-style and detectron2 ResNeXt configs).
        rpn_train_pos_iou_threshold, rpn_train_neg_iou_threshold, rpn_train_min_pos_iou (`float`, *optional*):
            RPN `MaxIoUAssigner`: an anchor is positive at IoU >= 0.7 with its best ground truth box, negative below
            0.3; a box whose best anchor reaches 0.3 gets that anchor as a low-quality match (defaults 0.7/0.3/0.3).
        rpn_train_match_low_quality, rpn_train_gt_max_assign_all (`bool`, *optional*, default `True`):
            Low-quality matching on, and assign every anchor tied at a box's best IoU (not just the first).
        rpn_train_num_samples, rpn_train_pos_fraction (`int`/`float`, *optional*, defaults to 256 / 0.5):
            `RandomSampler`: anchors sampled per image for the RPN losses, and the largest positive share.
        rpn_train_neg_pos_upper_bound (`float`, *optional*, defaults to -1):
            At most this many negatives per positive (-1: no cap).
        rpn_train_pre_nms_top_k, rpn_train_nms_iou_threshold, rpn_train_max_proposals, rpn_train_min_box_size:
            Train-time proposals (`train_cfg.rpn_proposal`): 2000 per level before NMS, NMS IoU 0.7, 1000 kept per
            image, boxes of width or height <= 0 dropped.
        roi_train_pos_iou_threshold, roi_train_neg_iou_threshold, roi_train_min_pos_iou (`float`, *optional*):
            R-CNN `MaxIoUAssigner` on the proposals (defaults 0.5/0.5/0.5).
        roi_train_match_low_quality, roi_train_gt_max_assign_all (`bool`, *optional*, default `True`):
            As for the RPN; with `min_pos_iou == pos_iou_thr` this only re-assigns tied proposals.
        roi_train_num_samples, roi_train_pos_fraction (`int`/`float`, *optional*, defaults to 512 / 0.25):
            RoIs sampled per image for the box and mask losses, and the largest positive share.
        roi_train_neg_pos_upper_bound (`float`, *optional*, defaults to -1):
            At most this many negative RoIs per positive (-1: no cap).
        roi_train_add_gt_as_proposals (`bool`, *optional*, defaults to `True`):
            Ground truth boxes join the proposals (first, in annotation order) before sampling.
        mask_target_binarize_threshold (`float`, *optional*, defaults to 0.5):
            A 28x28 mask target cell is 1 where the RoIAligned ground truth mask is >= this.
        rpn_classification_loss_weight, rpn_box_loss_weight, box_classification_loss_weight,
        box_regression_loss_weight, mask_loss_weight (`float`, *optional*, default 1.0):
            Weights of the five loss terms (`loss_weight` of each MMDetection loss).
    """

    model_type = "mask_rcnn"

    def __init__(
        self,
        # backbone
        backbone_depth: int = 50,
        backbone_groups: int = 1,
        backbone_base_width: int = 4,
        backbone_style: str = "pytorch",
        batch_norm_eps: float = 1e-5,
        # fpn
        fpn_out_channels: int = 256,
        fpn_num_outs: int = 5,
        # anchors and rpn
        anchor_scales: Sequence[float] = (8,),
        anchor_ratios: Sequence[float] = (0.5, 1.0, 2.0),
        anchor_strides: Sequence[int] = (4, 8, 16, 32, 64),
        rpn_box_coder_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        rpn_box_coder_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        rpn_pre_nms_top_k: int = 1000,
        rpn_nms_iou_threshold: float = 0.7,
        rpn_max_proposals: int = 1000,
        rpn_min_box_size: float = 0.0,
        box_delta_wh_ratio_clip: float = 16 / 1000,
        # roi extraction
        roi_featmap_strides: Sequence[int] = (4, 8, 16, 32),
        roi_finest_scale: int = 56,
        roi_sampling_ratio: int = 0,
        roi_aligned: bool = True,
        # box head
        box_roi_output_size: int = 7,
        box_head_fc_channels: int = 1024,
        box_coder_means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        box_coder_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        score_threshold: float = 0.05,
        nms_iou_threshold: float = 0.5,
        nms_split_threshold: int = 10000,
        max_detections_per_image: int = 100,
        # mask head
        mask_roi_output_size: int = 14,
        mask_head_num_convs: int = 4,
        mask_head_conv_channels: int = 256,
        mask_threshold: float = 0.5,
        # numerics
        numerics: str = "fast",
        fuse_batch_norms: bool = False,
        mmdet_config_name: Optional[str] = None,
        # training (train_cfg and losses)
        backbone_frozen_stages: int = 1,
        backbone_batch_norm_trainable: bool = True,
        rpn_train_pos_iou_threshold: float = 0.7,
        rpn_train_neg_iou_threshold: float = 0.3,
        rpn_train_min_pos_iou: float = 0.3,
        rpn_train_match_low_quality: bool = True,
        rpn_train_gt_max_assign_all: bool = True,
        rpn_train_num_samples: int = 256,
        rpn_train_pos_fraction: float = 0.5,
        rpn_train_neg_pos_upper_bound: float = -1,
        rpn_train_pre_nms_top_k: int = 2000,
        rpn_train_nms_iou_threshold: float = 0.7,
        rpn_train_max_proposals: int = 1000,
        rpn_train_min_box_size: float = 0.0,
        roi_train_pos_iou_threshold: float = 0.5,
        roi_train_neg_iou_threshold: float = 0.5,
        roi_train_min_pos_iou: float = 0.5,
        roi_train_match_low_quality: bool = True,
        roi_train_gt_max_assign_all: bool = True,
        roi_train_num_samples: int = 512,
        roi_train_pos_fraction: float = 0.25,
        roi_train_neg_pos_upper_bound: float = -1,
        roi_train_add_gt_as_proposals: bool = True,
        mask_target_binarize_threshold: float = 0.5,
        rpn_classification_loss_weight: float = 1.0,
        rpn_box_loss_weight: float = 1.0,
        box_classification_loss_weight: float = 1.0,
        box_regression_loss_weight: float = 1.0,
        mask_loss_weight: float = 1.0,
        size_divisor: int = 32,
        **kwargs: Any,
    ) -> None:
        self.backbone_depth = int(backbone_depth)
        self.backbone_groups = int(backbone_groups)
        self.backbone_base_width = int(backbone_base_width)
        self.backbone_style = backbone_style
        self.batch_norm_eps = float(batch_norm_eps)

        self.fpn_out_channels = int(fpn_out_channels)
        self.fpn_num_outs = int(fpn_num_outs)

        self.anchor_scales = [float(s) for s in anchor_scales]
        self.anchor_ratios = [float(r) for r in anchor_ratios]
        self.anchor_strides = [int(s) for s in anchor_strides]
        self.rpn_box_coder_means = [float(v) for v in rpn_box_coder_means]
        self.rpn_box_coder_stds = [float(v) for v in rpn_box_coder_stds]
        self.rpn_pre_nms_top_k = int(rpn_pre_nms_top_k)
        self.rpn_nms_iou_threshold = float(rpn_nms_iou_threshold)
        self.rpn_max_proposals = int(rpn_max_proposals)
        self.rpn_min_box_size = float(rpn_min_box_size)
        self.box_delta_wh_ratio_clip = float(box_delta_wh_ratio_clip)

        self.roi_featmap_strides = [int(s) for s in roi_featmap_strides]
        self.roi_finest_scale = int(roi_finest_scale)
        self.roi_sampling_ratio = int(roi_sampling_ratio)
        self.roi_aligned = bool(roi_aligned)

        self.box_roi_output_size = int(box_roi_output_size)
        self.box_head_fc_channels = int(box_head_fc_channels)
        self.box_coder_means = [float(v) for v in box_coder_means]
        self.box_coder_stds = [float(v) for v in box_coder_stds]
        self.score_threshold = float(score_threshold)
        self.nms_iou_threshold = float(nms_iou_threshold)
        self.nms_split_threshold = int(nms_split_threshold)
        self.max_detections_per_image = int(max_detections_per_image)

        self.mask_roi_output_size = int(mask_roi_output_size)
        self.mask_head_num_convs = int(mask_head_num_convs)
        self.mask_head_conv_channels = int(mask_head_conv_channels)
        self.mask_threshold = float(mask_threshold)

        self.numerics = numerics
        self.fuse_batch_norms = bool(fuse_batch_norms)
        self.mmdet_config_name = mmdet_config_name
        # training pads each image's anchor-validity window to this multiple, as the image processor pads its inputs
        self.size_divisor = int(size_divisor)

        self.backbone_frozen_stages = int(backbone_frozen_stages)
        self.backbone_batch_norm_trainable = bool(backbone_batch_norm_trainable)
        self.rpn_train_pos_iou_threshold = float(rpn_train_pos_iou_threshold)
        self.rpn_train_neg_iou_threshold = float(rpn_train_neg_iou_threshold)
        self.rpn_train_min_pos_iou = float(rpn_train_min_pos_iou)
        self.rpn_train_match_low_quality = bool(rpn_train_match_low_quality)
        self.rpn_train_gt_max_assign_all = bool(rpn_train_gt_max_assign_all)
        self.rpn_train_num_samples = int(rpn_train_num_samples)
        self.rpn_train_pos_fraction = float(rpn_train_pos_fraction)
        self.rpn_train_neg_pos_upper_bound = float(rpn_train_neg_pos_upper_bound)
        self.rpn_train_pre_nms_top_k = int(rpn_train_pre_nms_top_k)
        self.rpn_train_nms_iou_threshold = float(rpn_train_nms_iou_threshold)
        self.rpn_train_max_proposals = int(rpn_train_max_proposals)
        self.rpn_train_min_box_size = float(rpn_train_min_box_size)
        self.roi_train_pos_iou_threshold = float(roi_train_pos_iou_threshold)
        self.roi_train_neg_iou_threshold = float(roi_train_neg_iou_threshold)
        self.roi_train_min_pos_iou = float(roi_train_min_pos_iou)
        self.roi_train_match_low_quality = bool(roi_train_match_low_quality)
        self.roi_train_gt_max_assign_all = bool(roi_train_gt_max_assign_all)
        self.roi_train_num_samples = int(roi_train_num_samples)
        self.roi_train_pos_fraction = float(roi_train_pos_fraction)
        self.roi_train_neg_pos_upper_bound = float(roi_train_neg_pos_upper_bound)
        self.roi_train_add_gt_as_proposals = bool(roi_train_add_gt_as_proposals)
        self.mask_target_binarize_threshold = float(mask_target_binarize_threshold)
        self.rpn_classification_loss_weight = float(rpn_classification_loss_weight)
        self.rpn_box_loss_weight = float(rpn_box_loss_weight)
        self.box_classification_loss_weight = float(box_classification_loss_weight)
        self.box_regression_loss_weight = float(box_regression_loss_weight)
        self.mask_loss_weight = float(mask_loss_weight)

        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(COCO_CLASSES))
        for field in IMAGE_PROCESSOR_FIELDS:
            # config.json written before these fields moved to preprocessor_config.json (where those folders have
            # them too): the model never read them, so they are dropped instead of kept as stray attributes
            kwargs.pop(field, None)
        if not TRANSFORMERS_NAMES_DTYPE and "dtype" in kwargs:
            # config.json written by transformers >= 4.56 says "dtype"; older versions know it as torch_dtype (left
            # as "dtype", it would also swallow a from_pretrained(dtype=...) argument as a config attribute)
            dtype = kwargs.pop("dtype")
            if kwargs.get("torch_dtype") is None:
                kwargs["torch_dtype"] = dtype
        super().__init__(**kwargs)
        self.validate_fields()

    # ------------------------------------------------------------------ derived sizes
    @property
    def backbone_stage_blocks(self) -> tuple[int, ...]:
        """Bottleneck blocks per ResNet stage (layer1..layer4)."""
        return BACKBONE_STAGE_BLOCKS[self.backbone_depth]

    @property
    def backbone_out_channels(self) -> list[int]:
        """Channels of C2..C5 (bottleneck expansion 4)."""
        return [64 * 4 * 2**stage for stage in range(4)]

    @property
    def num_anchors_per_location(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)

    @property
    def box_delta_clamp(self) -> float:
        """Bound of the width/height deltas: |log(box_delta_wh_ratio_clip)| (4.135166556742356 by default)."""
        return abs(math.log(self.box_delta_wh_ratio_clip))

    # ------------------------------------------------------------------ validation
    def validate_fields(self) -> None:
        """Raise a `ValueError` naming the first field whose value cannot describe a working Mask R-CNN."""

        def fail(message: str) -> None:
            raise ValueError(f"Invalid MaskRCNNConfig: {message}")

        if self.backbone_depth not in BACKBONE_STAGE_BLOCKS:
            fail(f"backbone_depth must be one of {sorted(BACKBONE_STAGE_BLOCKS)}, got {self.backbone_depth}.")
        if self.backbone_groups < 1 or self.backbone_base_width < 1:
            fail(f"backbone_groups ({self.backbone_groups}) and backbone_base_width ({self.backbone_base_width}) "
                 "must be positive.")
        if self.backbone_style not in ("pytorch", "caffe"):
            fail(f"backbone_style must be 'pytorch' or 'caffe', got {self.backbone_style!r}.")
        if self.fpn_num_outs < 4:
            fail(f"fpn_num_outs must be at least 4 (P2..P5), got {self.fpn_num_outs}.")
        if len(self.anchor_strides) != self.fpn_num_outs:
            fail(f"anchor_strides has {len(self.anchor_strides)} entries but the FPN has {self.fpn_num_outs} "
                 "outputs; give one stride per FPN level.")
        expected_strides = [4 * 2**level for level in range(self.fpn_num_outs)]
        if self.anchor_strides != expected_strides:
            fail(f"anchor_strides {self.anchor_strides} do not match the FPN levels, which have strides "
                 f"{expected_strides}.")
        if not set(self.roi_featmap_strides) <= set(expected_strides[:4]) or not self.roi_featmap_strides:
            fail(f"roi_featmap_strides {self.roi_featmap_strides} must be a non-empty subset of the "
                 f"convolutional FPN strides {expected_strides[:4]}.")
        if not self.anchor_scales or not self.anchor_ratios or min(self.anchor_scales + self.anchor_ratios) <= 0:
            fail("anchor_scales and anchor_ratios must be non-empty lists of positive numbers.")
        for name in ("rpn_box_coder_means", "rpn_box_coder_stds", "box_coder_means", "box_coder_stds"):
            if len(getattr(self, name)) != 4:
                fail(f"{name} must have 4 entries (dx, dy, dw, dh), got {getattr(self, name)}.")
        for name in ("rpn_nms_iou_threshold", "nms_iou_threshold", "score_threshold", "mask_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                fail(f"{name} must lie in [0, 1], got {value}.")
        if not 0.0 < self.box_delta_wh_ratio_clip < 1.0:
            fail(f"box_delta_wh_ratio_clip must lie in (0, 1), got {self.box_delta_wh_ratio_clip}.")
        for name in ("rpn_pre_nms_top_k", "rpn_max_proposals", "max_detections_per_image", "nms_split_threshold",
                     "roi_finest_scale", "box_roi_output_size", "mask_roi_output_size", "box_head_fc_channels",
                     "fpn_out_channels", "mask_head_conv_channels", "size_divisor"):
            if getattr(self, name) < 1:
                fail(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.rpn_min_box_size < 0 or self.roi_sampling_ratio < 0 or self.mask_head_num_convs < 0:
            fail("rpn_min_box_size, roi_sampling_ratio and mask_head_num_convs must not be negative.")
        if self.numerics not in ("fast", "exact"):
            fail(f"numerics must be 'fast' or 'exact', got {self.numerics!r}.")
        if self.numerics == "exact" and self.fuse_batch_norms:
            fail("fuse_batch_norms changes the rounding of every convolution, so it cannot be combined with "
                 "numerics='exact'; use numerics='fast'.")
        if not -1 <= self.backbone_frozen_stages <= 4:
            fail(f"backbone_frozen_stages must lie in -1..4 (-1: nothing frozen, else the stem + that many stages), "
                 f"got {self.backbone_frozen_stages}.")
        for stage in ("rpn", "roi"):
            for name in (f"{stage}_train_pos_iou_threshold", f"{stage}_train_neg_iou_threshold",
                         f"{stage}_train_min_pos_iou", f"{stage}_train_pos_fraction"):
                value = getattr(self, name)
                if not 0.0 <= value <= 1.0:
                    fail(f"{name} must lie in [0, 1], got {value}.")
            if getattr(self, f"{stage}_train_num_samples") < 1:
                fail(f"{stage}_train_num_samples must be a positive integer.")
        for name in ("rpn_train_pre_nms_top_k", "rpn_train_max_proposals"):
            if getattr(self, name) < 1:
                fail(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if self.num_labels < 1:
            fail("the model needs at least one class (id2label is empty).")
