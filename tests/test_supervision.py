# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""supervision (`sv.Detections.from_transformers`, `sv.MaskAnnotator`) on the image processor's post-processing, with
real supervision calls: every instance keeps its full mask (overlaps too), its class id and its score.

supervision reads transformers' instance-segmentation format (`segmentation` + `segments_info`; a 3-D
`segmentation` is a stack of binary maps); the default `post_process_instance_segmentation` output carries it next
to our own `masks` / `boxes` / `scores` / `labels`.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from image_processing_mask_rcnn import MaskRCNNImageProcessor, decode_mask_rle
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
from test_hub_loading import PHOTO, build_hub_folder

sv = pytest.importorskip("supervision")

HEIGHT, WIDTH = 120, 160
ID2LABEL = {0: "person", 1: "bicycle", 2: "car"}


def overlapping_outputs():
    """Model outputs of one 160x120 image (not resized) with three instances whose boxes overlap; every mask
    probability is 0.9, so each pasted mask fills its box."""
    boxes = torch.tensor([[10.0, 10.0, 90.0, 80.0], [50.0, 40.0, 140.0, 110.0], [60.0, 20.0, 100.0, 60.0]])
    return SimpleNamespace(
        pred_boxes=[boxes], scores=[torch.tensor([0.9, 0.8, 0.7])], labels=[torch.tensor([0, 2, 1])],
        mask_probs=[torch.full((3, 28, 28), 0.9)], image_sizes=torch.tensor([[HEIGHT, WIDTH]]),
        original_sizes=torch.tensor([[HEIGHT, WIDTH]]), scale_factors=torch.tensor([[1.0, 1.0]], dtype=torch.float64))


def test_instance_segmentation_gives_every_full_mask_with_overlaps():
    result = MaskRCNNImageProcessor().post_process_instance_segmentation(overlapping_outputs())[0]
    masks = result["masks"].numpy()
    assert (masks.sum(axis=0) > 1).any()  # the instances do overlap

    detections = sv.Detections.from_transformers(transformers_results=result, id2label=ID2LABEL)
    assert len(detections) == 3
    np.testing.assert_array_equal(detections.mask, masks)  # every pixel of every instance, overlaps kept
    np.testing.assert_array_equal(detections.class_id, [0, 2, 1])
    np.testing.assert_allclose(detections.confidence, [0.9, 0.8, 0.7], rtol=1e-6)
    assert list(detections.data["class_name"]) == ["person", "car", "bicycle"]
    np.testing.assert_array_equal(detections.xyxy, sv.mask_to_xyxy(masks))  # supervision's boxes: mask extents


def test_transformers_format_is_kept_next_to_ours():
    result = MaskRCNNImageProcessor().post_process_instance_segmentation(overlapping_outputs())[0]
    assert result["segmentation"] is result["masks"]  # one tensor under both names, not a copy
    assert result["segments_info"] == [
        {"id": 0, "label_id": 0, "score": pytest.approx(0.9), "was_fused": False},
        {"id": 1, "label_id": 2, "score": pytest.approx(0.8), "was_fused": False},
        {"id": 2, "label_id": 1, "score": pytest.approx(0.7), "was_fused": False}]
    assert set(result) == {"scores", "labels", "boxes", "masks", "segmentation", "segments_info"}


def test_mask_annotator_draws_the_instances():
    result = MaskRCNNImageProcessor().post_process_instance_segmentation(overlapping_outputs())[0]
    detections = sv.Detections.from_transformers(transformers_results=result, id2label=ID2LABEL)
    scene = np.full((HEIGHT, WIDTH, 3), 40, dtype=np.uint8)
    annotated = sv.MaskAnnotator().annotate(scene=scene.copy(), detections=detections)
    covered = result["masks"].numpy().any(axis=0)
    changed = (annotated != scene).any(axis=2)
    np.testing.assert_array_equal(changed, covered)  # drawn exactly where the instances are


def test_no_instance_is_an_empty_detections():
    result = MaskRCNNImageProcessor().post_process_instance_segmentation(overlapping_outputs(), threshold=0.95)[0]
    assert result["masks"].shape == (0, HEIGHT, WIDTH) and result["segmentation"].shape == (HEIGHT, WIDTH)
    detections = sv.Detections.from_transformers(transformers_results=result, id2label=ID2LABEL)
    assert len(detections) == 0 and detections.mask.shape == (0, HEIGHT, WIDTH)
    scene = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
    assert np.array_equal(sv.MaskAnnotator().annotate(scene=scene.copy(), detections=detections), scene)


def test_object_detection_gives_our_boxes():
    result = MaskRCNNImageProcessor().post_process_object_detection(overlapping_outputs())[0]
    detections = sv.Detections.from_transformers(transformers_results=result, id2label=ID2LABEL)
    np.testing.assert_array_equal(detections.xyxy, result["boxes"].numpy())
    np.testing.assert_array_equal(detections.class_id, [0, 2, 1])
    np.testing.assert_array_equal(detections.confidence, result["scores"].numpy())
    assert detections.mask is None
    box_annotated = sv.BoxAnnotator().annotate(scene=np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8),
                                               detections=detections)
    assert box_annotated.any()


def test_one_instance_per_pixel_map_loses_overlaps_as_documented():
    """return_binary_maps=False is transformers' id map: supervision gets each instance without the pixels a
    higher-scoring instance covers."""
    result = MaskRCNNImageProcessor().post_process_instance_segmentation(overlapping_outputs(),
                                                                         return_binary_maps=False)[0]
    detections = sv.Detections.from_transformers(transformers_results=result, id2label=ID2LABEL)
    assert len(detections) == 3 and (detections.mask.sum(axis=0) <= 1).all()


def test_rle_results_have_no_dense_masks_and_decode_to_them():
    """return_rle=True holds no N x H x W array, so supervision sees boxes only (documented); decoding the RLEs
    gives supervision the same masks as the default output."""
    processor = MaskRCNNImageProcessor()
    rle_result = processor.post_process_instance_segmentation(overlapping_outputs(), return_rle=True)[0]
    assert "masks" not in rle_result and "segmentation" not in rle_result
    assert sv.Detections.from_transformers(transformers_results=rle_result, id2label=ID2LABEL).mask is None
    dense = processor.post_process_instance_segmentation(overlapping_outputs())[0]
    masks = np.stack([decode_mask_rle(rle) for rle in rle_result["rle_masks"]])
    detections = sv.Detections(xyxy=rle_result["boxes"].numpy(), mask=masks, confidence=rle_result["scores"].numpy(),
                               class_id=rle_result["labels"].numpy())
    np.testing.assert_array_equal(detections.mask, dense["masks"].numpy())


def test_docs_example_on_the_model(tmp_path_factory):
    """docs/supervision.md's example, on the synthetic model's forward pass (an image resized to 320 pixels)."""
    folder = build_hub_folder(tmp_path_factory).path
    model = MaskRCNNForInstanceSegmentation.from_pretrained(folder).eval()
    processor = MaskRCNNImageProcessor.from_pretrained(folder)
    image = Image.open(PHOTO).convert("RGB")
    with torch.no_grad():
        outputs = model(**processor(image, resize_scale=[320, 240], return_tensors="pt"))
    result = processor.post_process_instance_segmentation(outputs, threshold=0.05)[0]
    detections = sv.Detections.from_transformers(transformers_results=result, id2label=model.config.id2label)
    annotated = sv.MaskAnnotator().annotate(scene=np.array(image), detections=detections)
    assert len(detections) == len(result["scores"]) > 0
    assert detections.mask.shape == (len(detections), image.height, image.width)
    np.testing.assert_array_equal(detections.mask, result["masks"].numpy())
    assert annotated.shape == (image.height, image.width, 3)
    assert list(detections.data["class_name"]) == [model.config.id2label[int(label)] for label in result["labels"]]
