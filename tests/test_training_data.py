"""Training data: COCO annotations through the image processor (MMDetection's train pipeline) and the collate."""

import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask

from image_processing_mask_rcnn import AnnotationError, MaskRCNNImageProcessor, resize_mask_nearest

cv2 = pytest.importorskip("cv2")

HEIGHT, WIDTH = 97, 131


@pytest.fixture
def processor():
    return MaskRCNNImageProcessor(resize_scale=[300, 200])


def _image():
    return np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _square(x, y, w, h, category=1, **extra):
    polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
    return {"bbox": [x, y, w, h], "category_id": category, "segmentation": [polygon], "iscrowd": 0,
            "area": w * h, **extra}


def test_boxes_are_rescaled_by_the_float32_scale_factor_and_clipped(processor):
    target = {"image_id": 5, "annotations": [_square(10, 10, 30, 20, 3), _square(100, 50, 40, 60, 1)]}
    out = processor(images=_image(), annotations=target)
    new_height, new_width = out["image_sizes"][0].tolist()
    assert (new_height, new_width) == (200, 270)
    scale = np.asarray([new_width / WIDTH, new_height / HEIGHT] * 2, np.float32)
    expected = np.asarray([[10, 10, 40, 30], [100, 50, 140, 110]], np.float32) * scale
    expected[:, 0::2] = expected[:, 0::2].clip(0, new_width)
    expected[:, 1::2] = expected[:, 1::2].clip(0, new_height)
    labels = out["labels"][0]
    assert np.array_equal(labels["boxes"].numpy(), expected)
    assert labels["class_labels"].tolist() == [3, 1] and labels["image_id"] == 5
    assert labels["masks"].shape == (2, 200, 270) and labels["masks"].dtype == torch.bool


def test_masks_are_decoded_with_pycocotools_and_resized_like_cv2_nearest(processor):
    rle = coco_mask.encode(np.asfortranarray((np.random.default_rng(1).random((HEIGHT, WIDTH)) > 0.5)
                                            .astype(np.uint8)))
    annotation = {"bbox": [0, 0, WIDTH, HEIGHT], "category_id": 0, "iscrowd": 0, "area": 100.0,
                  "segmentation": {"size": [HEIGHT, WIDTH], "counts": rle["counts"].decode()}}
    out = processor(images=_image(), annotations={"image_id": 1, "annotations": [annotation]})
    original = coco_mask.decode(rle)
    expected = cv2.resize(original, (270, 200), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert np.array_equal(out["labels"][0]["masks"][0].numpy(), expected)


@pytest.mark.parametrize("size", [(297, 220), (50, 31), (393, 291), (131, 97)])
def test_nearest_mask_resize_equals_opencv(size):
    masks = (np.random.default_rng(2).random((2, HEIGHT, WIDTH)) > 0.5).astype(np.uint8)
    expected = np.stack([cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST) for mask in masks])
    assert np.array_equal(resize_mask_nearest(masks, *size), expected)


def test_annotations_mmdetection_drops_are_dropped(processor):
    annotations = [
        _square(10, 10, 30, 20),                       # kept
        _square(200, 10, 30, 20),                      # outside the image
        _square(10, 10, 0.5, 20),                      # width < 1
        {**_square(10, 10, 30, 20), "area": 0},        # zero area
        {**_square(10, 10, 30, 20), "iscrowd": 1},     # crowd: an ignored instance, unused by the losses
        {**_square(10, 10, 30, 20), "ignore": True},   # ignore flag
        {**_square(10, 10, 30, 20), "segmentation": [[1, 2, 3, 4]]},  # no polygon with >= 3 points
    ]
    out = processor(images=_image(), annotations={"image_id": 9, "annotations": annotations})
    assert out["labels"][0]["boxes"].shape == (1, 4)


@pytest.mark.parametrize("annotation, message", [
    ({"bbox": [1, 2], "category_id": 1}, r"image 0 \(image_id 9\), annotation 1: 'bbox' must be \[x, y, width"),
    ({**_square(5, 5, 10, 10), "category_id": 77}, r"annotation 1: category_id 77 is not one of"),
    ({**_square(5, 5, 10, 10), "segmentation": {"size": [10, 10], "counts": "abc"}}, r"RLE size \[10, 10\]"),
])
def test_malformed_annotations_raise_naming_image_and_annotation(processor, annotation, message):
    target = {"image_id": 9, "annotations": [_square(1, 1, 10, 10), annotation]}
    with pytest.raises(AnnotationError, match=message):
        processor(images=_image(), annotations=target, category_to_class={1: 0, 2: 1})


def test_category_ids_map_to_class_indices(processor):
    target = {"image_id": 1, "annotations": [_square(1, 1, 10, 10, 90), _square(20, 20, 10, 10, 1)]}
    out = processor(images=_image(), annotations=target, category_to_class={1: 0, 90: 79})
    assert out["labels"][0]["class_labels"].tolist() == [79, 0]


def test_random_flip_mirrors_image_boxes_and_masks_like_mmdetection():
    flipping = MaskRCNNImageProcessor(resize_scale=[300, 200], do_random_flip=True, flip_probability=1.0)
    plain = MaskRCNNImageProcessor(resize_scale=[300, 200])
    target = {"image_id": 1, "annotations": [_square(10, 10, 30, 20)]}
    flipped, reference = flipping(images=_image(), annotations=target), plain(images=_image(), annotations=target)
    assert flipped["flipped"].tolist() == [True]
    width = 270
    x1, y1, x2, y2 = reference["labels"][0]["boxes"][0].tolist()
    assert flipped["labels"][0]["boxes"][0].tolist() == pytest.approx([width - x2, y1, width - x1, y2])
    assert torch.equal(flipped["labels"][0]["masks"], reference["labels"][0]["masks"].flip(-1))
    assert torch.equal(flipped["pixel_values"][0, :, :200, :270], reference["pixel_values"][0, :, :200, :270].flip(-1))


def test_multiscale_resize_draws_one_of_the_scales():
    processor = MaskRCNNImageProcessor(multiscale_resize_scales=[[300, 100], [300, 150]])
    np.random.seed(0)
    heights = {int(processor(images=_image())["image_sizes"][0, 0]) for _ in range(12)}
    assert heights == {100, 150}


def test_annotation_count_must_match_the_images(processor):
    with pytest.raises(ValueError, match="Got 2 annotation dicts for 1 images"):
        processor(images=_image(), annotations=[{"annotations": []}, {"annotations": []}])


def test_collate_pads_like_the_processor_and_keeps_labels(processor):
    first = processor(images=_image(), annotations={"image_id": 1, "annotations": [_square(10, 10, 30, 20)]})
    other = np.zeros((200, 90, 3), np.uint8)
    second = processor(images=other, annotations={"image_id": 2, "annotations": []})
    batch = processor.collate([first, second])
    together = processor(images=[_image(), other])
    assert torch.equal(batch["pixel_values"], together["pixel_values"])
    assert torch.equal(batch["image_sizes"], together["image_sizes"])
    assert [labels["boxes"].shape[0] for labels in batch["labels"]] == [1, 0]
