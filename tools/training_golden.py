# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The training-loss parity cases: their batches, ground truth and stored MMDetection recordings. numpy + torch only.

A case is a padded batch of two fixture images (the resized images of tests/fixtures/preprocessed, subsampled by
an integer step to keep CPU time small), ground truth objects drawn once by tools/make_training_golden.py and
stored with the recording, and the `torch.manual_seed` set just before the loss call. Both sides build the batch
with `case_batch`, so MMDetection and our model see the same float32 tensor.

    from tools.training_golden import TRAINING_CASES, TRAINING_VARIANTS, case_batch, load_training_golden
    golden = load_training_golden(variant, case)          # losses, grad norm, ground truth (labels dicts)
    pixel_values, image_sizes = case_batch(variant, case)

Files: tests/fixtures/training/<variant>/<case>.json (losses, gradient norms, sampling counts, versions) and
<case>.npz (ground truth: boxes, classes, crowd flags, bit-packed masks per image).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, List, Tuple

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools.golden import FIXTURES_DIR, load_preprocessed_input  # noqa: E402

TRAINING_DIR = os.path.join(FIXTURES_DIR, "training")

# the four golden-fixture variants (tests/fixtures/golden/manifest.json) and their input normalisation
TRAINING_VARIANTS: Dict[str, str] = {
    "mask-rcnn_r50_fpn_1x_coco": "pytorch",
    "mask-rcnn_r50-caffe_fpn_1x_coco": "caffe",
    "mask-rcnn_x101-32x4d_fpn_1x_coco": "pytorch",
    "mask-rcnn_r50_fpn_1x_coco-ties": "pytorch",
}

# case -> images (preprocessed stem, subsampling step), objects per image, crowd objects per image, torch seed
TRAINING_CASES: Dict[str, dict] = {
    # two images of different sizes (landscape 267x356, portrait 400x267), a few objects, one crowd object
    "two_sizes": {"images": [("photo_640x480", 3), ("portrait_427x640", 3)], "objects": [7, 5], "crowd": [1, 0],
                  "seed": 1},
    # an image without objects next to a crowded one: 150 objects, more than either sampler keeps as positives
    "empty_and_crowded": {"images": [("gray_500x375", 3), ("large_2400x1800", 2)], "objects": [0, 150],
                          "crowd": [0, 0], "seed": 2},
}
SIZE_DIVISOR = 32
LOSS_NAMES = ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "acc", "loss_bbox", "loss_mask", "loss")


def case_images(case: str, normalization: str) -> List[np.ndarray]:
    """The case's images as uint8 HxWx3 arrays in the network's channel order (subsampled resized fixtures)."""
    images = []
    for stem, step in TRAINING_CASES[case]["images"]:
        image, _ = load_preprocessed_input(stem, normalization)
        images.append(np.ascontiguousarray(image[::step, ::step]))
    return images


def case_batch(variant: str, case: str):
    """`(pixel_values (2, 3, Hp, Wp) float32, image_sizes [(h, w), ...])` as MMDetection's DetDataPreprocessor builds
    them: per image `(x.float() - mean) / std`, then zero-padded bottom/right to the batch's 32-multiple size."""
    import torch
    import torch.nn.functional as F

    normalization = TRAINING_VARIANTS[variant]
    _, meta = load_preprocessed_input(TRAINING_CASES[case]["images"][0][0], normalization)
    mean = torch.tensor(meta["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(meta["std"], dtype=torch.float32).view(-1, 1, 1)
    tensors = [(torch.from_numpy(image).permute(2, 0, 1).float() - mean) / std
               for image in case_images(case, normalization)]
    sizes = [tuple(tensor.shape[-2:]) for tensor in tensors]
    height = -(-max(h for h, _ in sizes) // SIZE_DIVISOR) * SIZE_DIVISOR
    width = -(-max(w for _, w in sizes) // SIZE_DIVISOR) * SIZE_DIVISOR
    batch = torch.stack([F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1]), value=0.0) for t in tensors])
    return batch.contiguous(), sizes


def golden_paths(variant: str, case: str) -> Tuple[str, str]:
    folder = os.path.join(TRAINING_DIR, variant)
    return os.path.join(folder, case + ".json"), os.path.join(folder, case + ".npz")


def save_ground_truth(path: str, ground_truth: List[dict]) -> None:
    """Store per image boxes (n, 4) float32, classes (n,) int64, crowd (n,) bool and bit-packed masks (n, h, w)."""
    arrays = {}
    for index, image in enumerate(ground_truth):
        arrays[f"boxes_{index}"] = image["boxes"].astype(np.float32)
        arrays[f"class_labels_{index}"] = image["class_labels"].astype(np.int64)
        arrays[f"iscrowd_{index}"] = image["iscrowd"].astype(bool)
        arrays[f"masks_{index}"] = np.packbits(image["masks"].astype(bool).reshape(-1))
        arrays[f"masks_shape_{index}"] = np.asarray(image["masks"].shape, np.int64)
    np.savez_compressed(path, num_images=len(ground_truth), **arrays)


def load_ground_truth(path: str) -> List[dict]:
    """Per image {"boxes", "class_labels", "iscrowd", "masks" (n, h, w) bool} numpy arrays."""
    with np.load(path) as data:
        images = []
        for index in range(int(data["num_images"])):
            shape = tuple(int(v) for v in data[f"masks_shape_{index}"])
            bits = np.unpackbits(data[f"masks_{index}"])[: int(np.prod(shape))]
            images.append({"boxes": data[f"boxes_{index}"], "class_labels": data[f"class_labels_{index}"],
                           "iscrowd": data[f"iscrowd_{index}"], "masks": bits.reshape(shape).astype(bool)})
    return images


def labels_for_model(ground_truth: List[dict]) -> List[dict]:
    """The ground truth as `MaskRCNNForInstanceSegmentation(labels=...)` takes it (torch tensors, crowd flags)."""
    import torch

    return [{"class_labels": torch.from_numpy(image["class_labels"]), "boxes": torch.from_numpy(image["boxes"]),
             "masks": torch.from_numpy(image["masks"]), "iscrowd": torch.from_numpy(image["iscrowd"])}
            for image in ground_truth]


def load_training_golden(variant: str, case: str) -> dict:
    """The stored recording: json content plus "ground_truth" (list of per-image numpy dicts)."""
    json_path, npz_path = golden_paths(variant, case)
    with open(json_path, encoding="utf-8") as handle:
        golden = json.load(handle)
    golden["ground_truth"] = load_ground_truth(npz_path)
    return golden


def gradient_norm(named_gradients) -> float:
    """Global L2 norm (float64) over `(name, gradient)` pairs; the same reduction on both sides."""
    total = 0.0
    for _, gradient in named_gradients:
        total += float(gradient.detach().double().pow(2).sum())
    return total ** 0.5
