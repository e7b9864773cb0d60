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


def test_default_fast_numerics_train_like_exact_mode():
    variant, case = "mask-rcnn_r50_fpn_1x_coco", "two_sizes"
    golden = load_training_golden(variant, case)
    errors = relative_errors(_ours(variant, case, "fast"), golden)
    assert max(errors[name] for name in LOSS_NAMES) <= LOSS_TOLERANCE
    assert errors["gradient_norm"] <= GRADIENT_NORM_TOLERANCE
