"""Training parity with MMDetection 3.3.0: every loss term and the gradient norm of our model, with the same weights,
batch, ground truth and torch seed, against MMDetection's `MaskRCNN.loss()` recorded by tools/make_training_golden.py
(tests/fixtures/training). No mmdet needed here.

Cases (tools/training_golden.TRAINING_CASES): a batch of two images of different sizes with a crowd object, and an
image without objects next to a crowded one (150 objects: more positives than either sampler keeps, so the random
draws of positives happen too), for the four fixture variants (R50, R50-caffe, X101-32x4d, R50 "ties").
"""

import functools

import pytest

from training_golden import LOSS_NAMES, TRAINING_CASES, TRAINING_VARIANTS, case_batch, load_training_golden
from training_parity import golden_gradient_norms_by_our_name, relative_errors, run_training_case

LOSS_TOLERANCE = 1e-5  # relative, per loss term (float32 rounding)
GRADIENT_NORM_TOLERANCE = 1e-4  # relative, global L2 norm over trainable parameters

CASES = [(variant, case) for variant in TRAINING_VARIANTS for case in TRAINING_CASES]


@functools.lru_cache(maxsize=None)
def _ours(variant, case, numerics="exact"):
    return run_training_case(variant, case, numerics, load_training_golden(variant, case))


@pytest.mark.parametrize("variant, case", CASES)
def test_loss_terms_and_gradient_norm_equal_mmdetection(variant, case):
    golden = load_training_golden(variant, case)
    pixel_values, image_sizes = case_batch(variant, case)
    assert list(pixel_values.shape) == golden["batch_input_shape"]
    assert [list(size) for size in image_sizes] == golden["image_sizes"]
    ours = _ours(variant, case)
    errors = relative_errors(ours, golden)
    for name in LOSS_NAMES:
        assert errors[name] <= LOSS_TOLERANCE, (name, ours["losses"][name], golden["losses"][name])
    assert errors["gradient_norm"] <= GRADIENT_NORM_TOLERANCE, (ours["gradient_norm"], golden["gradient_norm"])
    # the same number and sizes of random draws were consumed: the next draw of the generator agrees
    assert ours["rng_after"] == golden["rng_after"]


@pytest.mark.parametrize("variant, case", CASES)
def test_the_same_parameters_receive_gradients_as_in_mmdetection(variant, case):
    golden = load_training_golden(variant, case)
    assert golden["trainable_without_gradient"] == []
    theirs = golden_gradient_norms_by_our_name(golden)
    ours = _ours(variant, case)["parameter_gradient_norms"]
    assert set(ours) == set(theirs)


def test_crowded_case_really_exceeds_both_sampler_quotas():
    golden = load_training_golden("mask-rcnn_r50_fpn_1x_coco", "empty_and_crowded")
    (rpn_empty, rpn_crowded), (rcnn_empty, rcnn_crowded) = golden["sampling_counts"]["rpn"], \
        golden["sampling_counts"]["rcnn"]
    assert rpn_empty == [0, 256] and rcnn_empty[0] == 0  # no objects: negatives only
    assert rpn_crowded[0] == 128 and rcnn_crowded[0] == 128  # positives capped: a random draw picked them


# Fast numerics train channels-last on CPU (oneDNN's NHWC kernels, ~1.2x faster steps): the sums round in another
# order, and on these synthetic fixtures (class logits up to ~70, which amplify rounding) that can move a proposal
# across an NMS or sampling decision. Measured on the 8 cases (AMD EPYC, AVX2 kernels): loss terms within 3.4e-3
# relative (loss_cls; the others within 2.3e-5), gradient norm within 5.6e-3, the same random draws.
FAST_LOSS_TOLERANCE = 1e-2
FAST_GRADIENT_NORM_TOLERANCE = 2e-2


@pytest.mark.parametrize("variant, case", CASES)
def test_default_fast_numerics_train_close_to_exact_mode(variant, case):
    golden = load_training_golden(variant, case)
    ours = _ours(variant, case, "fast")
    errors = relative_errors(ours, golden)
    for name in LOSS_NAMES:
        assert errors[name] <= FAST_LOSS_TOLERANCE, (name, ours["losses"][name], golden["losses"][name])
    assert errors["gradient_norm"] <= FAST_GRADIENT_NORM_TOLERANCE, (ours["gradient_norm"], golden["gradient_norm"])
    assert ours["rng_after"] == golden["rng_after"]


@pytest.mark.parametrize("numerics, channels_last", [("exact", False), ("fast", True)])
def test_fast_training_runs_channels_last_and_exact_keeps_mmdetections_layout(numerics, channels_last):
    import torch

    from parity import build_model

    model = build_model("mask-rcnn_r50_fpn_1x_coco", numerics=numerics).train()
    seen = []
    model.backbone.conv1.register_forward_hook(
        lambda module, inputs, output: seen.append(inputs[0].is_contiguous(memory_format=torch.channels_last)
                                                   and not inputs[0].is_contiguous()))
    pixel_values = torch.zeros(1, 3, 64, 64)
    labels = [{"class_labels": torch.tensor([1]), "boxes": torch.tensor([[4.0, 4.0, 40.0, 40.0]]),
               "masks": torch.ones(1, 64, 64, dtype=torch.bool)}]
    loss = model(pixel_values, torch.tensor([[64, 64]]), labels=labels).loss
    assert torch.isfinite(loss)
    assert seen == [channels_last]
