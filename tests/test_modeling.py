"""Unit tests of the model's stages against MMDetection's documented semantics (no mmdet needed)."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from configuration_mask_rcnn import MaskRCNNConfig
from modeling_mask_rcnn import (
    MaskRCNNForInstanceSegmentation,
    MaskRCNNFrozenBatchNorm2d,
    batched_non_maximum_suppression,
    decode_boxes,
    make_cell_anchors,
    make_grid_anchors,
    map_rois_to_levels,
    non_maximum_suppression,
    roi_align_levels,
    stem_max_pool,
)


# ----------------------------------------------------------------------------------------------------- anchors
def test_cell_anchors_are_mmdetection_values_without_rounding():
    anchors = make_cell_anchors(4, [8.0], [0.5, 1.0, 2.0])
    expected = torch.tensor(
        [[-22.627417, -11.313708, 22.627417, 11.313708], [-16.0, -16.0, 16.0, 16.0],
         [-11.313708, -22.627417, 11.313708, 22.627417]]
    )
    torch.testing.assert_close(anchors, expected, rtol=0, atol=1e-5)
    # every level scales linearly with its stride
    torch.testing.assert_close(make_cell_anchors(64, [8.0], [0.5, 1.0, 2.0]), expected * 16, rtol=1e-6, atol=0)


def test_grid_anchors_are_corner_centred_and_height_width_anchor_ordered():
    cell = make_cell_anchors(8, [8.0], [0.5, 1.0, 2.0])
    grid = make_grid_anchors(cell, (3, 5), 8)
    assert grid.shape == (3 * 5 * 3, 4)
    for y, x, anchor in [(0, 0, 0), (1, 2, 1), (2, 4, 2)]:
        index = (y * 5 + x) * 3 + anchor
        shift = torch.tensor([x * 8.0, y * 8.0, x * 8.0, y * 8.0])
        assert torch.equal(grid[index], cell[anchor] + shift)


# ----------------------------------------------------------------------------------------------------- box coder
def test_decode_boxes_multiplies_by_stds_and_uses_midpoint_centres():
    reference = torch.tensor([[10.0, 20.0, 50.0, 100.0]])
    deltas = torch.tensor([[1.0, -1.0, 0.0, 0.0]])
    decoded = decode_boxes(reference, deltas, [0, 0, 0, 0], [0.1, 0.1, 0.2, 0.2], 4.135, (1000, 1000))
    # centre (30, 60) moves by 0.1 * width 40 = 4 and -0.1 * height 80 = -8; size unchanged
    torch.testing.assert_close(decoded, torch.tensor([[14.0, 12.0, 54.0, 92.0]]))


def test_decode_boxes_clamps_log_size_deltas_on_both_sides_and_clips_to_width_height():
    config = MaskRCNNConfig()
    reference = torch.tensor([[100.0, 100.0, 200.0, 200.0], [100.0, 100.0, 200.0, 200.0]])
    deltas = torch.tensor([[0.0, 0.0, 50.0, 50.0], [0.0, 0.0, -50.0, -50.0]])
    decoded = decode_boxes(reference, deltas, [0] * 4, [1] * 4, config.box_delta_clamp, None)
    huge = 100 * math.exp(config.box_delta_clamp)
    tiny = 100 * math.exp(-config.box_delta_clamp)
    torch.testing.assert_close(decoded[0], torch.tensor([150 - huge / 2, 150 - huge / 2, 150 + huge / 2, 150 + huge / 2]))
    torch.testing.assert_close(decoded[1], torch.tensor([150 - tiny / 2, 150 - tiny / 2, 150 + tiny / 2, 150 + tiny / 2]))
    clipped = decode_boxes(reference, deltas, [0] * 4, [1] * 4, config.box_delta_clamp, (300, 250))
    # upper bounds are the width and height themselves, not width - 1
    assert clipped[0].tolist() == [0.0, 0.0, 250.0, 300.0]


def test_default_delta_clamp_is_mmdetection_constant():
    assert MaskRCNNConfig().box_delta_clamp == pytest.approx(4.135166556742356, abs=1e-15)


# ----------------------------------------------------------------------------------------------------- NMS
def test_nms_suppresses_strictly_above_threshold_only():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0], [0.0, 0.0, 10.0, 6.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    # IoU(0, 1) = 0.5 exactly: kept at threshold 0.5; IoU(0, 2) = 0.6: suppressed
    assert non_maximum_suppression(boxes, scores, 0.5).tolist() == [0, 1]


def test_nms_orders_ties_like_the_default_unstable_sort():
    generator = torch.Generator().manual_seed(0)
    centres = torch.rand(300, 2, generator=generator) * 1000
    boxes = torch.cat([centres, centres + 5], dim=1)  # disjoint tiny boxes: nothing is suppressed
    scores = torch.randint(0, 4, (300,), generator=generator).float() / 4  # heavy ties
    kept = non_maximum_suppression(boxes, scores, 0.5)
    assert torch.equal(kept, scores.sort(descending=True)[1])


def test_batched_nms_keeps_overlapping_boxes_of_different_groups_and_sorts_by_score():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
    scores = torch.tensor([0.5, 0.9, 0.4])
    groups = torch.tensor([0, 1, 0])
    assert batched_non_maximum_suppression(boxes, scores, groups, 0.5, 10000).tolist() == [1, 0]


def test_batched_nms_per_group_loop_above_split_threshold_keeps_same_set():
    generator = torch.Generator().manual_seed(1)
    top_left = torch.rand(400, 2, generator=generator) * 200
    boxes = torch.cat([top_left, top_left + 20 + torch.rand(400, 2, generator=generator) * 40], dim=1)
    scores = torch.rand(400, generator=generator)
    groups = torch.randint(0, 5, (400,), generator=generator)
    single_call = batched_non_maximum_suppression(boxes, scores, groups, 0.5, 10000)
    looped = batched_non_maximum_suppression(boxes, scores, groups, 0.5, 10)
    assert set(single_call.tolist()) == set(looped.tolist())
    assert torch.all(scores[looped][:-1] >= scores[looped][1:])


# ----------------------------------------------------------------------------------------------------- RoI levels
@pytest.mark.parametrize(
    "side, level", [(16.0, 0), (111.9, 0), (112.0, 1), (223.9, 1), (224.0, 2), (447.0, 2), (448.0, 3), (1300.0, 3)]
)
def test_roi_level_mapping_follows_finest_scale_rule(side, level):
    rois = torch.tensor([[0.0, 10.0, 10.0, 10.0 + side, 10.0 + side]])
    assert map_rois_to_levels(rois, 56, 4).tolist() == [level]


# ----------------------------------------------------------------------------------------------------- model
def _detecting_model(seed: int = 0) -> MaskRCNNForInstanceSegmentation:
    """An R50 model whose box classifier is scaled so random features give confident detections."""
    torch.manual_seed(seed)
    model = MaskRCNNForInstanceSegmentation(MaskRCNNConfig()).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0, math.sqrt(2.0 / fan_in))
        # small regressions keep proposals and detections near their anchors, inside the image
        model.rpn_head.box_deltas.weight.normal_(0, 1e-4)
        model.box_head.box_deltas.weight.normal_(0, 1e-4)
        model.box_head.class_logits.weight.mul_(3.0)
        model.mask_head.mask_logits.weight.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def detecting_model():
    return _detecting_model()


def test_forward_returns_typed_per_image_detections(detecting_model):
    torch.manual_seed(3)
    pixel_values = torch.randn(2, 3, 96, 128)
    image_sizes = torch.tensor([[96, 128], [70, 100]])
    with torch.inference_mode():
        output = detecting_model(pixel_values, image_sizes=image_sizes, output_hidden_states=True)
    config = detecting_model.config
    assert len(output.pred_boxes) == len(output.scores) == len(output.labels) == len(output.mask_probs) == 2
    assert [tuple(level.shape) for level in output.hidden_states] == [
        (2, 256, 24, 32), (2, 256, 12, 16), (2, 256, 6, 8), (2, 256, 3, 4), (2, 256, 2, 2)
    ]
    for image_index, (height, width) in enumerate(image_sizes.tolist()):
        boxes, scores = output.pred_boxes[image_index], output.scores[image_index]
        labels, masks = output.labels[image_index], output.mask_probs[image_index]
        assert boxes.shape[0] > 0, "the scaled model must detect something"
        assert boxes.shape[0] <= config.max_detections_per_image
        assert boxes.shape == (scores.shape[0], 4) and masks.shape == (scores.shape[0], 28, 28)
        assert labels.dtype == torch.int64 and labels.min() >= 0 and labels.max() < config.num_labels
        assert torch.all(scores > config.score_threshold) and torch.all(scores[:-1] >= scores[1:])
        assert boxes[:, 0::2].min() >= 0 and boxes[:, 0::2].max() <= width
        assert boxes[:, 1::2].min() >= 0 and boxes[:, 1::2].max() <= height
        assert masks.min() >= 0 and masks.max() <= 1
        assert output.proposal_boxes[image_index].shape[0] <= config.rpn_max_proposals


def test_return_dict_false_gives_tuple_in_field_order(detecting_model):
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        as_tuple = detecting_model(pixel_values, return_dict=False)
        as_output = detecting_model(pixel_values)
    assert torch.equal(as_tuple[0][0], as_output.pred_boxes[0])
    assert torch.equal(as_tuple[1][0], as_output.scores[0])


def test_no_detection_gives_empty_tensors_of_the_right_shapes(detecting_model):
    model = MaskRCNNForInstanceSegmentation(MaskRCNNConfig()).eval()
    model.load_state_dict(detecting_model.state_dict())
    with torch.no_grad():  # everything is background
        model.box_head.class_logits.weight.zero_()
        model.box_head.class_logits.bias.zero_()
        model.box_head.class_logits.bias[-1] = 20.0
    with torch.inference_mode():
        output = model(torch.randn(1, 3, 64, 96))
    assert output.pred_boxes[0].shape == (0, 4) and output.scores[0].shape == (0,)
    assert output.labels[0].shape == (0,) and output.labels[0].dtype == torch.int64
    assert output.mask_probs[0].shape == (0, 28, 28)


def test_pixel_values_of_wrong_rank_raise_a_clear_error(detecting_model):
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        detecting_model(torch.randn(3, 64, 64))


def test_labels_without_the_required_keys_are_a_clear_error():
    model = MaskRCNNForInstanceSegmentation(MaskRCNNConfig())
    with pytest.raises(ValueError, match=r"labels\[0\] has no 'class_labels', 'boxes', 'masks'"):
        model(torch.randn(1, 3, 64, 64), labels=[{}])


# ----------------------------------------------------------------------------------------------------- loading
def test_save_and_load_round_trip_keeps_every_tensor_and_output(tmp_path, detecting_model):
    with torch.no_grad():
        for module in detecting_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.9, 1.1)
    detecting_model.save_pretrained(tmp_path)
    loaded, info = MaskRCNNForInstanceSegmentation.from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    original, reloaded = detecting_model.state_dict(), loaded.state_dict()
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[key], reloaded[key]) for key in original)
    assert not loaded.training
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        first, second = detecting_model(pixel_values), loaded(pixel_values)
    assert torch.equal(first.pred_boxes[0], second.pred_boxes[0]) and torch.equal(first.scores[0], second.scores[0])


def test_folder_without_weights_says_how_to_get_them(tmp_path):
    MaskRCNNConfig(mmdet_config_name="mask-rcnn_r101_fpn_1x_coco", backbone_depth=101).save_pretrained(tmp_path)
    with pytest.raises(OSError, match=r"convert_mmdet_checkpoint\.py --config mask-rcnn_r101_fpn_1x_coco"):
        MaskRCNNForInstanceSegmentation.from_pretrained(tmp_path)


def test_weights_missing_a_key_fail_at_load_time(tmp_path):
    MaskRCNNForInstanceSegmentation(MaskRCNNConfig()).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["box_head.fc1.weight"]
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing keys \(1\): box_head\.fc1\.weight"):
        MaskRCNNForInstanceSegmentation.from_pretrained(tmp_path)


def test_config_with_another_class_count_than_the_weights_fails_at_load_time(tmp_path):
    MaskRCNNForInstanceSegmentation(MaskRCNNConfig()).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["id2label"] = {str(i): f"class {i}" for i in range(3)}
    config.pop("label2id", None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises((ValueError, RuntimeError), match="(?i)mismatch|size"):
        MaskRCNNForInstanceSegmentation.from_pretrained(tmp_path)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"anchor_strides": [4, 8, 16, 32]}, "one stride per FPN level"),
        ({"anchor_strides": [4, 8, 16, 32, 100]}, "do not match the FPN levels"),
        ({"nms_iou_threshold": -0.1}, "nms_iou_threshold must lie in"),
        ({"score_threshold": 1.5}, "score_threshold must lie in"),
        ({"backbone_depth": 34}, "backbone_depth must be one of"),
        ({"backbone_style": "tf"}, "backbone_style"),
        ({"numerics": "turbo"}, "numerics"),
        ({"max_detections_per_image": 0}, "max_detections_per_image must be a positive integer"),
    ],
)
def test_nonsense_config_values_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        MaskRCNNConfig(**overrides)


# ----------------------------------------------------------------------------------------------------- numerics
def test_numerics_is_chosen_at_load_time_and_exact_refuses_fusion(tmp_path):
    MaskRCNNForInstanceSegmentation(MaskRCNNConfig()).save_pretrained(tmp_path)
    assert MaskRCNNForInstanceSegmentation.from_pretrained(tmp_path).config.numerics == "fast"
    exact = MaskRCNNForInstanceSegmentation.from_pretrained(tmp_path, numerics="exact")
    assert exact.config.numerics == "exact" and not exact.config.fuse_batch_norms
    fused = MaskRCNNForInstanceSegmentation.from_pretrained(tmp_path, fuse_batch_norms=True)
    assert fused.config.fuse_batch_norms
    with pytest.raises(ValueError, match="cannot be combined with numerics='exact'"):
        MaskRCNNConfig(numerics="exact", fuse_batch_norms=True)


def test_fused_batch_norms_change_rounding_only(detecting_model):
    """Folding is an exact identity in real arithmetic: float32 outputs stay within rounding of the unfused ones."""
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.inference_mode():
        unfused = detecting_model.backbone(pixel_values, fold_batch_norms=False)
        fused = detecting_model.backbone(pixel_values, fold_batch_norms=True)
    for plain, folded in zip(unfused, fused):
        torch.testing.assert_close(folded, plain, rtol=1e-4, atol=1e-4 * float(plain.abs().max()))


# ----------------------------------------------------------------------------------------------------- stem, batch norm
@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 4, 2, 2), (1, 64, 40, 56), (1, 2, 5, 8), (1, 2, 8, 7)])
def test_stem_max_pool_is_bit_identical_to_max_pool2d_with_nan_and_infinities(shape):
    """Even sizes take the separable path, odd ones fall back; both must equal ATen's max-pool bit for bit."""
    generator = torch.Generator().manual_seed(0)
    hidden_states = torch.randn(shape, generator=generator)
    hidden_states.view(-1)[::7] = float("nan")
    hidden_states.view(-1)[3::11] = float("-inf")
    hidden_states.view(-1)[5::13] = float("inf")
    max_pool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    with torch.inference_mode():
        pooled = stem_max_pool(hidden_states, max_pool)
    expected = torch.nn.functional.max_pool2d(hidden_states, 3, 2, 1)
    assert pooled.shape == expected.shape and pooled.is_contiguous()
    assert torch.equal(pooled.isnan(), expected.isnan())
    assert torch.equal(pooled.nan_to_num(0.0), expected.nan_to_num(0.0))


def test_stem_max_pool_under_autograd_routes_gradients_like_max_pool2d():
    """torch.maximum splits the gradient of ties; under autograd the module's max-pool runs, so ties (here: zeros
    after a ReLU) get max_pool2d's gradient."""
    hidden_states = torch.randn(1, 2, 8, 8).relu().requires_grad_()
    max_pool = torch.nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
    stem_max_pool(hidden_states, max_pool).sum().backward()
    reference = hidden_states.detach().clone().requires_grad_()
    max_pool(reference).sum().backward()
    assert torch.equal(hidden_states.grad, reference.grad)


def _batch_norm_with_statistics(channels: int) -> MaskRCNNFrozenBatchNorm2d:
    generator = torch.Generator().manual_seed(1)
    batch_norm = MaskRCNNFrozenBatchNorm2d(channels)
    with torch.no_grad():
        batch_norm.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
        batch_norm.bias.copy_(torch.randn(channels, generator=generator))
        batch_norm.running_mean.copy_(torch.randn(channels, generator=generator))
        batch_norm.running_var.copy_(torch.rand(channels, generator=generator) + 0.1)
    return batch_norm


def test_in_place_batch_norm_overwrites_its_input_with_the_out_of_place_bits():
    batch_norm = _batch_norm_with_statistics(16).requires_grad_(False)
    hidden_states = torch.randn(2, 16, 24, 40) * 3
    expected = batch_norm(hidden_states)
    with torch.inference_mode():
        overwritten = hidden_states.clone()
        result = batch_norm(overwritten, in_place=True)
    assert result.data_ptr() == overwritten.data_ptr()
    assert torch.equal(result, expected)


def test_in_place_batch_norm_stays_out_of_place_where_it_would_be_wrong():
    batch_norm = _batch_norm_with_statistics(8)  # trainable affine parameters: autograd needs the input
    hidden_states = torch.randn(1, 8, 6, 10)
    kept = hidden_states.clone()
    result = batch_norm(hidden_states, in_place=True)  # grad mode, weights require grad
    assert torch.equal(hidden_states, kept) and result.requires_grad
    result.sum().backward()
    assert batch_norm.weight.grad is not None
    channels_last = hidden_states.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        normalised = batch_norm(channels_last, in_place=True)
        assert torch.equal(channels_last, hidden_states) and torch.equal(normalised, result.detach())
        half = hidden_states.bfloat16()
        batch_norm.to(torch.bfloat16)(half, in_place=True)
        assert torch.equal(half, hidden_states.bfloat16())


def test_fused_path_residual_convolution_add_relu_gives_the_separate_steps_bits(detecting_model, monkeypatch):
    """The fused path's last 1x1 convolution of each bottleneck runs with the shortcut sum and the ReLU as oneDNN
    post-ops, written over the shortcut: C2..C5 must equal the three separate steps, bit for bit, and a stage's
    output (the next stage's input) must not be overwritten."""
    import modeling_mask_rcnn

    # 256x384: every 1x1 convolution's input holds more than 20480 elements, so ATen's separate convolution runs
    # oneDNN's kernel too (below that it runs its own, which rounds differently)
    pixel_values = torch.randn(1, 3, 256, 384).contiguous(memory_format=torch.channels_last)
    calls = []
    original = modeling_mask_rcnn.convolution_add_relu_
    monkeypatch.setattr(modeling_mask_rcnn, "convolution_add_relu_",
                        lambda *args: calls.append(1) or original(*args))
    with torch.inference_mode():
        fused_steps = detecting_model.backbone(pixel_values, fold_batch_norms=True)
        assert len(calls) == sum(config_blocks for config_blocks in detecting_model.config.backbone_stage_blocks)
        monkeypatch.setattr(modeling_mask_rcnn, "can_fuse_convolution_add_relu", lambda *args: False)
        separate_steps = detecting_model.backbone(pixel_values, fold_batch_norms=True)
    for fused, separate in zip(fused_steps, separate_steps):
        assert torch.equal(fused, separate)


def test_convolution_add_relu_writes_over_the_shortcut_and_matches_the_separate_steps():
    from modeling_mask_rcnn import convolution_add_relu_

    generator = torch.Generator().manual_seed(3)
    conv = torch.nn.Conv2d(32, 64, 1)
    hidden_states = torch.randn(2, 32, 20, 24, generator=generator).contiguous(memory_format=torch.channels_last)
    shortcut = torch.randn(2, 64, 20, 24, generator=generator).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = torch.relu(conv(hidden_states) + shortcut)
        result = convolution_add_relu_(shortcut, hidden_states, conv.weight, conv.bias, conv)
    assert result.data_ptr() == shortcut.data_ptr() and torch.equal(result, expected)


# ----------------------------------------------------------------------------------------------------- RoIAlign input
def test_roi_align_levels_keep_float32_nchw_levels_and_convert_the_others_exactly():
    generator = torch.Generator().manual_seed(0)
    # 19 rows: not a multiple of the copy's row block, so the last block is a partial one
    nchw = [torch.randn(2, 8, 19, 7, generator=generator), torch.randn(2, 8, 10, 4, generator=generator)]
    extra_level = torch.randn(2, 8, 5, 2, generator=generator)
    same = roi_align_levels(nchw + [extra_level], num_levels=2)
    assert len(same) == 2 and all(ours is theirs for ours, theirs in zip(same, nchw))  # no copy at all

    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        levels = [level.to(dtype).contiguous(memory_format=torch.channels_last) for level in nchw]
        converted = roi_align_levels(levels, num_levels=2)
        for ours, level in zip(converted, levels):
            assert ours.dtype == torch.float32 and ours.is_contiguous()
            assert torch.equal(ours, level.float()), dtype
