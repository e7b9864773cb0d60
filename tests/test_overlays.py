# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The one overlay renderer (batch CLI overlays and the Space demo): overlaps, captions, colours, inputs untouched."""

from __future__ import annotations

import numpy as np
import torch

from mask_rcnn_batch.overlays import DEFAULT_MASK_ALPHA, class_colour, draw_overlay

HEIGHT, WIDTH, GREY = 120, 160, 100
LABEL = 3
NAMES = [f"class {index}" for index in range(10)]


def _two_overlapping_instances_of_one_class():
    """A grey image and two overlapping rectangular masks of the same class: A (rows 30..89, columns 20..89) scored
    0.9 and B (rows 50..109, columns 60..139) scored 0.6, each box 5 pixels outside its mask."""
    rgb = np.full((HEIGHT, WIDTH, 3), GREY, dtype=np.uint8)
    masks = np.zeros((2, HEIGHT, WIDTH), dtype=bool)
    masks[0, 30:90, 20:90] = True
    masks[1, 50:110, 60:140] = True
    result = {"boxes": np.array([[15, 25, 94, 94], [55, 45, 144, 114]], dtype=np.float32),
              "scores": np.array([0.9, 0.6], dtype=np.float32), "labels": np.array([LABEL, LABEL]),
              "masks": masks}
    return rgb, result


def test_overlapping_instances_of_one_class_stay_apart():
    rgb, result = _two_overlapping_instances_of_one_class()
    picture = np.asarray(draw_overlay(rgb, result, NAMES)).astype(int)
    colour = np.array(class_colour(LABEL))
    once = np.round(GREY * (1 - DEFAULT_MASK_ALPHA) + colour * DEFAULT_MASK_ALPHA)
    # inside A only, and deep inside both (filled twice): the class colour blended in
    assert np.abs(picture[40, 40] - once).max() <= 1
    both = picture[70, 75]
    assert np.abs(both - colour).max() > 10 and np.abs(both - once).max() > 10
    # B's left edge runs through A's interior in the full class colour: where one instance ends is visible
    # even though both have the same colour
    assert (np.abs(picture[55:85, 60] - colour).max(axis=1) <= 1).all()
    assert np.abs(picture[55:85, 57] - once).max() <= 1  # A's fill just left of that edge


def test_captions_sit_on_a_box_of_the_class_colour_with_contrasting_text():
    rgb, result = _two_overlapping_instances_of_one_class()
    picture = np.asarray(draw_overlay(rgb, result, NAMES)).astype(int)
    colour = np.array(class_colour(LABEL))
    above_a = picture[:25, 15:95]  # A's caption "class 3 0.90" goes above its box (there is room)
    background = (np.abs(above_a - colour).max(axis=2) <= 1).sum()
    text = (np.abs(above_a - np.array([0, 0, 0])).max(axis=2) <= 60).sum() + \
        (np.abs(above_a - np.array([255, 255, 255])).max(axis=2) <= 60).sum()
    assert background > 100 and text > 10
    assert (picture[:5, 100:] == GREY).all()  # nothing drawn far from the instances


def test_the_callers_arrays_are_not_changed_and_outside_boxes_are_clipped():
    rgb, result = _two_overlapping_instances_of_one_class()
    result["boxes"][1] = [55, 45, 400, 300]  # beyond the image: clipped for drawing only
    copies = {name: value.copy() for name, value in result.items()}
    rgb_copy = rgb.copy()
    torch_result = {name: torch.from_numpy(value) for name, value in result.items()}
    draw_overlay(rgb, result, NAMES)
    draw_overlay(rgb, torch_result, NAMES)
    assert all(np.array_equal(result[name], copies[name]) for name in copies)
    assert all(np.array_equal(torch_result[name].numpy(), copies[name]) for name in copies)
    assert np.array_equal(rgb, rgb_copy)


def test_no_instances_give_the_image_back_and_colours_are_fixed_per_class():
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    empty = {"boxes": np.zeros((0, 4), np.float32), "scores": np.zeros(0, np.float32),
             "labels": np.zeros(0, np.int64), "masks": np.zeros((0, 40, 50), bool)}
    assert np.array_equal(np.asarray(draw_overlay(rgb, empty, NAMES)), rgb)
    assert [class_colour(label) for label in range(80)] == [class_colour(label) for label in range(80)]
    assert len({class_colour(label) for label in range(80)}) == 80
