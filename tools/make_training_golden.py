# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Record MMDetection 3.3.0's Mask R-CNN training losses and gradient norms for the training parity tests.

    /work/venv-mmdet-sys/bin/python tools/make_training_golden.py [--variants V ...] [--cases C ...] [--keep-gt]

For every variant of tools/training_golden.TRAINING_VARIANTS (the synthetic checkpoints of the inference goldens)
and every case of TRAINING_CASES, it builds MMDetection's `MaskRCNN` from the zoo config (train_cfg included),
loads the synthetic weights, puts the model in train mode (ResNet `norm_eval` + `frozen_stages` as in training),
builds the padded batch with `training_golden.case_batch` and the data samples DetDataPreprocessor would produce
(img_shape, pad_shape, batch_input_shape; masks zero-padded to the batch like `pad_gt_masks`; crowd objects in
`ignored_instances`), then

    torch.manual_seed(case seed); losses = model.loss(inputs, data_samples); loss, log_vars = model.parse_losses(losses)
    draw one torch.randint (so tests can check the same number of random draws was consumed); loss.backward()

and writes tests/fixtures/training/<variant>/<case>.json (every log_vars term, per-level RPN terms, the global L2
norm of the gradients over the parameters that received one, each parameter's gradient norm, sampling counts) and
<case>.npz (the ground truth, drawn once with numpy from a fixed seed; `--keep-gt` reuses the stored one).
Runs on the reference CPU kernels (tools/reference_kernels.py), like the tests that check the recordings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import Dict, List

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools.reference_kernels import active_kernels, pin_reference_kernels  # noqa: E402

if __name__ == "__main__":
    pin_reference_kernels()

from tools import synthetic_weights as sw  # noqa: E402
from tools.training_golden import (TRAINING_CASES, TRAINING_VARIANTS, case_batch, golden_paths,  # noqa: E402
                                   gradient_norm, load_ground_truth, save_ground_truth)


def draw_object_mask(rng: np.random.Generator, height: int, width: int, min_side: float, max_side: float,
                     touch_edge: bool) -> np.ndarray:
    """One object's bool mask: an ellipse or a star-shaped polygon, optionally touching the bottom/right edge."""
    side_w, side_h = rng.uniform(min_side, max_side, 2)
    if touch_edge:
        cx = width - side_w / 2 * rng.uniform(0.3, 1.0) if rng.random() < 0.5 else rng.uniform(0, width)
        cy = height - side_h / 2 * rng.uniform(0.3, 1.0) if cx >= width - side_w / 2 or rng.random() < 0.5 \
            else rng.uniform(0, height)
    else:
        cx, cy = rng.uniform(side_w / 2, width - side_w / 2), rng.uniform(side_h / 2, height - side_h / 2)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    dx, dy = (xx - cx) / (side_w / 2), (yy - cy) / (side_h / 2)
    if rng.random() < 0.5:
        return dx * dx + dy * dy <= 1.0
    angle = np.arctan2(dy, dx)
    radius = np.sqrt(dx * dx + dy * dy)
    lobes, depth, phase = int(rng.integers(3, 7)), rng.uniform(0.1, 0.4), rng.uniform(0, 2 * np.pi)
    return radius <= 1.0 - depth * (0.5 + 0.5 * np.sin(lobes * angle + phase))


def draw_ground_truth(case: str, image_sizes: List[tuple]) -> List[dict]:
    """Objects of every image of a case: masks, tight boxes (x2 = last column + 1), random COCO classes."""
    spec = TRAINING_CASES[case]
    rng = np.random.Generator(np.random.PCG64(1000 + spec["seed"]))
    images = []
    for (height, width), count, crowd in zip(image_sizes, spec["objects"], spec["crowd"]):
        crowded = count > 50
        masks, boxes = [], []
        while len(masks) < count + crowd:
            short = min(height, width)
            mask = draw_object_mask(rng, height, width, 8 if crowded else 0.08 * short,
                                    0.12 * short if crowded else 0.6 * short, touch_edge=rng.random() < 0.25)
            if mask.sum() < 16:
                continue
            rows, cols = np.nonzero(mask)
            masks.append(mask)
            boxes.append([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        images.append({
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "class_labels": rng.integers(0, len(sw.COCO_CLASSES), len(masks)).astype(np.int64),
            "iscrowd": np.asarray([False] * count + [True] * crowd, bool),
            "masks": np.asarray(masks, bool).reshape(-1, height, width),
        })
    return images


def build_mmdet_model(variant: str):
    """MMDetection's MaskRCNN of the variant's zoo config (train_cfg kept), with the synthetic weights."""
    import mmdet
    from mmengine.config import Config
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    config_file = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "mask_rcnn",
                               sw.config_name_of(variant) + ".py")
    config = Config.fromfile(config_file)
    config.model.backbone.init_cfg = None  # weights come from the synthetic state dict, nothing is downloaded
    model = MODELS.build(config.model)
    model.load_state_dict(sw.make_synthetic_state_dict(variant), strict=True)
    return model.train()


def data_samples_for(ground_truth: List[dict], image_sizes: List[tuple], batch_shape: tuple, divisor: int = 32):
    """DetDataSamples as DetDataPreprocessor(training=True) leaves them for this batch."""
    import torch
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    samples = []
    for image, (height, width) in zip(ground_truth, image_sizes):
        pad_shape = (-(-height // divisor) * divisor, -(-width // divisor) * divisor)
        sample = DetDataSample(metainfo={"img_shape": (height, width), "ori_shape": (height, width),
                                         "pad_shape": pad_shape, "batch_input_shape": tuple(batch_shape),
                                         "scale_factor": (1.0, 1.0)})
        padded = np.zeros((len(image["masks"]),) + tuple(batch_shape), np.uint8)
        padded[:, :height, :width] = image["masks"]
        for field, keep in (("gt_instances", ~image["iscrowd"]), ("ignored_instances", image["iscrowd"])):
            instances = InstanceData()
            instances.bboxes = torch.from_numpy(image["boxes"][keep]).reshape(-1, 4)
            instances.labels = torch.from_numpy(image["class_labels"][keep])
            instances.masks = BitmapMasks(padded[keep], *batch_shape)
            setattr(sample, field, instances)
        samples.append(sample)
    return samples


def capture_sampling(model) -> Dict[str, list]:
    """Record (positives, negatives) of every sampler call, in call order."""
    counts: Dict[str, list] = {"rpn": [], "rcnn": []}
    for name, sampler in (("rpn", model.rpn_head.sampler), ("rcnn", model.roi_head.bbox_sampler)):
        original = sampler.sample

        def sample(*args, _original=original, _name=name, **kwargs):
            result = _original(*args, **kwargs)
            counts[_name].append([int(result.pos_inds.numel()), int(result.neg_inds.numel())])
            return result

        sampler.sample = sample
    return counts


def record_case(variant: str, case: str, keep_ground_truth: bool) -> dict:
    import mmcv
    import mmdet
    import mmengine
    import torch

    json_path, npz_path = golden_paths(variant, case)
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    pixel_values, image_sizes = case_batch(variant, case)
    if keep_ground_truth and os.path.exists(npz_path):
        ground_truth = load_ground_truth(npz_path)
    else:
        ground_truth = draw_ground_truth(case, image_sizes)
        save_ground_truth(npz_path, ground_truth)
        ground_truth = load_ground_truth(npz_path)
    model = build_mmdet_model(variant)
    counts = capture_sampling(model)
    samples = data_samples_for(ground_truth, image_sizes, tuple(pixel_values.shape[-2:]))
    torch.manual_seed(TRAINING_CASES[case]["seed"])
    losses = model.loss(pixel_values, samples)
    loss, log_vars = model.parse_losses(losses)
    rng_after = int(torch.randint(0, 2**62, (1,)).item())
    model.zero_grad()
    loss.backward()
    gradients = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    result = {
        "variant": variant,
        "case": case,
        "seed": TRAINING_CASES[case]["seed"],
        "images": TRAINING_CASES[case]["images"],
        "image_sizes": [list(size) for size in image_sizes],
        "batch_input_shape": list(pixel_values.shape),
        "losses": {name: float(value.detach()) for name, value in log_vars.items()},
        "rpn_levels": {name: [float(level) for level in losses[name]] for name in ("loss_rpn_cls", "loss_rpn_bbox")},
        "gradient_norm": gradient_norm(gradients),
        "parameter_gradient_norms": {name: float(grad.double().norm()) for name, grad in gradients},
        "trainable_without_gradient": [name for name, p in model.named_parameters()
                                       if p.requires_grad and p.grad is None],
        "sampling_counts": counts,
        "rng_after": rng_after,
        "versions": {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__, "mmengine": mmengine.__version__,
                     "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "kernels": active_kernels(),
        "machine": platform.machine(),
        "state_dict_sha256": sw.state_dict_sha256(sw.make_synthetic_state_dict(variant)),
    }
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1, sort_keys=False)
        handle.write("\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(TRAINING_VARIANTS), choices=list(TRAINING_VARIANTS))
    parser.add_argument("--cases", nargs="+", default=list(TRAINING_CASES), choices=list(TRAINING_CASES))
    parser.add_argument("--keep-gt", action="store_true", help="reuse the stored ground truth of each case")
    args = parser.parse_args()
    for variant in args.variants:
        for case in args.cases:
            result = record_case(variant, case, args.keep_gt)
            print(variant, case, {k: round(v, 6) for k, v in result["losses"].items()},
                  "grad", round(result["gradient_norm"], 6), "samples", result["sampling_counts"], flush=True)


if __name__ == "__main__":
    main()
