"""Training losses: MMDetection's assigner, sampler, targets and normalisers as units, and the model's loss output."""

import math

import pytest
import torch

from configuration_mask_rcnn import MaskRCNNConfig
from losses_mask_rcnn import (
    assign_max_iou,
    box_iou,
    encode_boxes,
    mask_targets,
    prepare_ground_truth,
    sample_random,
    GroundTruth,
    RoiSample,
    valid_anchor_flags,
)
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation, decode_boxes


# ------------------------------------------------------------------------------------------------ assignment
def test_iou_matches_the_hand_computed_value_without_plus_one():
    iou = box_iou(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([[5.0, 0.0, 15.0, 10.0], [20.0, 20, 30, 30]]))
    assert iou[0, 0].item() == pytest.approx(50 / 150) and iou[0, 1].item() == 0.0


def test_assigner_thresholds_ignore_band_and_low_quality_overwrite_in_gt_order():
    # priors: 0 best for gt0 at 0.8 (positive), 1 at 0.5 (ignored band), 2 at 0.1 (negative),
    # 3 and 4 tie at gt1's maximum 0.4 -> both low-quality positives of gt1 (gt_max_assign_all); with only the
    # first one matched, prior 4 stays in the ignored band
    ious = torch.tensor([[0.8, 0.5, 0.1, 0.2, 0.2],
                         [0.1, 0.2, 0.05, 0.4, 0.4]])
    result = assign_max_iou(ious, torch.tensor([7, 9]), 0.7, 0.3, 0.3, True, True)
    assert result.gt_indices.tolist() == [1, -1, 0, 2, 2]
    assert result.labels.tolist() == [7, -1, -1, 9, 9]
    only_first = assign_max_iou(ious, torch.tensor([7, 9]), 0.7, 0.3, 0.3, True, False)
    assert only_first.gt_indices.tolist() == [1, -1, 0, 2, -1]


def test_low_quality_matching_reassigns_a_positive_to_a_later_gt_with_the_same_maximum():
    ious = torch.tensor([[0.9, 0.6], [0.9, 0.2]])  # prior 0 ties for both gts; gt 1 comes later and takes it
    result = assign_max_iou(ious, torch.tensor([0, 1]), 0.5, 0.5, 0.5, True, True)
    assert result.gt_indices.tolist() == [2, 1]


def test_assigner_without_ground_truth_makes_everything_negative():
    result = assign_max_iou(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 0.7, 0.3, 0.3, True, True)
    assert result.gt_indices.tolist() == [0, 0, 0, 0] and result.labels.tolist() == [-1] * 4


# ------------------------------------------------------------------------------------------------ sampling
def test_sampler_draws_with_randperm_only_when_candidates_exceed_the_quota_positives_first():
    gt_indices = torch.tensor([1, 0, 2, 0, 0, -1, 1, 0, 0, 0])  # 3 positives, 6 negatives
    torch.manual_seed(0)
    positives, negatives = sample_random(gt_indices, num_samples=6, pos_fraction=0.5, neg_pos_upper_bound=-1)
    # positives fit (3 <= 3): no draw; negatives 6 > 3: one randperm(6) on the CPU generator
    torch.manual_seed(0)
    expected_negatives = torch.tensor([1, 3, 4, 7, 8, 9])[torch.randperm(6)[:3]].sort().values
    assert positives.tolist() == [0, 2, 6]
    assert negatives.tolist() == expected_negatives.tolist()
    assert torch.equal(negatives, negatives.sort().values)


def test_sampler_consumes_no_random_numbers_when_everything_fits():
    torch.manual_seed(3)
    sample_random(torch.tensor([1, 0, 0]), num_samples=256, pos_fraction=0.5, neg_pos_upper_bound=-1)
    after = torch.rand(1)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(1))


def test_sampler_caps_negatives_per_positive_when_asked():
    gt_indices = torch.tensor([1] + [0] * 20)
    _, negatives = sample_random(gt_indices, num_samples=16, pos_fraction=0.25, neg_pos_upper_bound=3)
    assert negatives.numel() == 3


# ------------------------------------------------------------------------------------------------ targets
def test_encode_inverts_decode_with_the_box_coder_stds():
    reference = torch.tensor([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 8.0, 4.0]])
    deltas = torch.tensor([[0.1, -0.2, 0.3, -0.1], [0.0, 0.5, -0.2, 0.2]])
    stds = [0.1, 0.1, 0.2, 0.2]
    boxes = decode_boxes(reference, deltas, [0, 0, 0, 0], stds, 4.135, None)
    torch.testing.assert_close(encode_boxes(reference, boxes, [0, 0, 0, 0], stds), deltas, rtol=0, atol=1e-5)


def test_valid_anchor_flags_use_the_images_own_padded_size():
    flags = valid_anchor_flags([(4, 6), (2, 3)], (32, 64), [8, 16], 1, torch.device("cpu"))
    level0 = flags[:24].view(4, 6)  # 32/8 = 4 rows valid, 64/8 = 8 -> all 6 columns
    assert level0.all()
    flags = valid_anchor_flags([(4, 6)], (16, 24), [8], 3, torch.device("cpu"))
    grid = flags.view(4, 6, 3)
    assert grid[:2, :3].all() and not grid[2:].any() and not grid[:, 3:].any()


def test_mask_targets_depend_on_the_zero_padding_at_the_bottom_edge():
    masks = torch.ones(1, 8, 8, dtype=torch.uint8)
    sample = RoiSample(boxes=torch.tensor([[0.0, 4.0, 8.0, 12.0]]), num_positive=1,
                       positive_gt_indices=torch.tensor([0]), positive_labels=torch.tensor([0]))
    unpadded = mask_targets([sample], [GroundTruth(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), masks)], 4,
                            0.5)
    padded = torch.nn.functional.pad(masks, (0, 8, 0, 8))
    with_padding = mask_targets([sample], [GroundTruth(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long), padded)],
                                4, 0.5)
    assert unpadded[0, 3].sum() == 4  # RoIAlign clamps to the last row of an unpadded mask
    assert with_padding[0, 3].sum() == 0 and with_padding[0, 0].sum() == 4


def test_ground_truth_drops_crowd_rows_and_pads_masks_to_the_batch():
    labels = {"class_labels": torch.tensor([1, 2]), "boxes": torch.tensor([[0.0, 0, 4, 4], [1.0, 1, 3, 3]]),
              "masks": torch.ones(2, 6, 5, dtype=torch.bool), "iscrowd": torch.tensor([0, 1])}
    ground_truth = prepare_ground_truth(labels, 0, (6, 5), (32, 32), 80, torch.device("cpu"))
    assert ground_truth.class_labels.tolist() == [1] and ground_truth.masks.shape == (1, 32, 32)
    assert ground_truth.masks[0, :6, :5].all() and ground_truth.masks[0, 6:].sum() == 0


@pytest.mark.parametrize("labels, message", [
    ({"class_labels": torch.tensor([80]), "boxes": torch.zeros(1, 4), "masks": torch.zeros(1, 6, 5)},
     r"class_labels'\] must lie in \[0, 80\)"),
    ({"class_labels": torch.tensor([1]), "boxes": torch.zeros(2, 4), "masks": torch.zeros(1, 6, 5)},
     r"'boxes'\] must have shape \(1, 4\)"),
    ({"class_labels": torch.tensor([1]), "boxes": torch.zeros(1, 4), "masks": torch.zeros(1, 7, 5)},
     r"masks'\] are \(7, 5\) but the image is \(6, 5\)"),
])
def test_bad_labels_raise_an_error_naming_the_image(labels, message):
    with pytest.raises(ValueError, match=r"labels\[3\]\['" if "masks" not in message else r"labels\[3\]"):
        prepare_ground_truth(labels, 3, (6, 5), (32, 32), 80, torch.device("cpu"))
    with pytest.raises(ValueError, match=message):
        prepare_ground_truth(labels, 3, (6, 5), (32, 32), 80, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ the model
@pytest.fixture(scope="module")
def small_training_model():
    torch.manual_seed(0)
    config = MaskRCNNConfig(id2label={0: "a", 1: "b", 2: "c"}, rpn_train_pre_nms_top_k=200,
                            rpn_train_max_proposals=100)
    return MaskRCNNForInstanceSegmentation(config).train()


def _square_labels(boxes, classes, height, width):
    masks = torch.zeros(len(boxes), height, width, dtype=torch.bool)
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        masks[index, y1:y2, x1:x2] = True
    return {"class_labels": torch.tensor(classes, dtype=torch.long),
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "masks": masks}


def test_forward_with_labels_returns_finite_losses_and_gradients_only_where_mmdetection_trains(small_training_model):
    model = small_training_model
    model.zero_grad()
    pixel_values = torch.randn(2, 3, 96, 128)
    labels = [_square_labels([[10, 12, 60, 70], [70, 8, 120, 40]], [0, 2], 96, 128),
              _square_labels([], [], 64, 96)]  # an image without objects
    torch.manual_seed(1)
    output = model(pixel_values, torch.tensor([[96, 128], [64, 96]]), labels=labels)
    assert set(output.loss_dict) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "acc", "loss_bbox", "loss_mask"}
    assert all(math.isfinite(float(value.detach())) for value in output.loss_dict.values())
    expected_total = sum(value for name, value in output.loss_dict.items() if name != "acc")
    assert float(output.loss) == pytest.approx(float(expected_total), rel=1e-6)
    assert output.pred_boxes is None and 0 <= float(output.loss_dict["acc"]) <= 100
    output.loss.backward()
    assert model.backbone.conv1.weight.grad is None and model.backbone.layer1[0].conv1.weight.grad is None
    assert model.backbone.layer2[0].conv1.weight.grad is not None
    assert model.backbone.layer2[0].bn1.weight.grad is not None  # pytorch-style recipes train BN affine
    assert model.mask_head.mask_logits.weight.grad.abs().sum() > 0
    # frozen batch norms: running statistics are not updated in train mode
    assert torch.equal(model.backbone.layer2[0].bn1.running_mean, torch.zeros(128))


def test_batch_without_any_object_gives_finite_background_losses_and_zero_box_and_mask_losses(small_training_model):
    empty = [_square_labels([], [], 64, 64)]
    output = small_training_model(torch.randn(1, 3, 64, 64), torch.tensor([[64, 64]]), labels=empty)
    assert float(output.loss_dict["loss_rpn_cls"]) > 0 and float(output.loss_dict["loss_cls"]) > 0
    assert float(output.loss_dict["loss_rpn_bbox"]) == 0 and float(output.loss_dict["loss_bbox"]) == 0
    assert float(output.loss_dict["loss_mask"]) == 0
    output.loss.backward()


def test_caffe_style_recipes_freeze_the_batch_norm_affine_parameters_too():
    from convert_mmdet_checkpoint import zoo_config

    model = MaskRCNNForInstanceSegmentation(zoo_config("mask-rcnn_r50-caffe_fpn_1x_coco"))
    assert not model.backbone.layer3[0].bn1.weight.requires_grad
    assert model.backbone.layer3[0].conv1.weight.requires_grad and not model.backbone.layer1[0].conv1.weight.requires_grad


def test_reset_class_heads_initialises_new_layers_like_mmdetection():
    model = MaskRCNNForInstanceSegmentation(MaskRCNNConfig())
    torch.manual_seed(0)
    model.reset_class_heads({0: "disc", 1: "square"})
    assert model.config.num_labels == 2 and model.config.label2id == {"disc": 0, "square": 1}
    assert model.box_head.class_logits.weight.shape == (3, 1024) and model.box_head.box_deltas.weight.shape == (8, 1024)
    assert model.mask_head.mask_logits.weight.shape == (2, 256, 1, 1)
    assert model.box_head.class_logits.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert model.box_head.box_deltas.weight.std().item() == pytest.approx(0.001, rel=0.05)
    assert model.mask_head.mask_logits.weight.std().item() == pytest.approx(math.sqrt(2 / 2), rel=0.2)  # fan_out=2
    assert model.box_head.class_logits.bias.abs().sum() == 0
    with pytest.raises(ValueError, match="id2label must map 0..num_classes-1"):
        model.reset_class_heads({1: "x"})
