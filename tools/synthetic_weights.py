# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Synthetic MMDetection Mask R-CNN checkpoints that regenerate bit-identically anywhere.

No real MMDetection checkpoint can be downloaded here, so parity with MMDetection is proven on synthetic
weights. Every tensor is a pure function of (variant, seed, key):

* weights and biases: ``scale * z`` with ``z`` drawn in float64 from
  ``np.random.Generator(np.random.PCG64(key_seed))``, cast to float32. ``key_seed`` is the first 8 bytes of
  ``sha256(f"mask-rcnn-synthetic/{seed}/{key}")`` (so the same key draws the same ``z`` in every variant);
  ``scale`` is the He/LeCun standard deviation of the layer times a per-layer gain (``_scale``);
* batch-norm running statistics, a few head biases and output gains come from a small calibration file
  ``tests/fixtures/synthetic/<variant>_bn_stats.npz`` written once by ``tools/make_golden.py --calibrate``
  with MMDetection's own model on the fixture images (see ``tests/fixtures/README.md``). Without the file
  the defaults are mean 0 / var 1 and gain 1 (usable for shape tests, but activations are not calibrated).

Runs in the plain test environment and in the MMDetection reference venv (imports only numpy, torch and the
repo's config/converter modules).

    from tools.synthetic_weights import make_synthetic_state_dict, make_synthetic_checkpoint
    state_dict = make_synthetic_state_dict("mask-rcnn_r50_fpn_1x_coco")
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import time
from collections import OrderedDict
from typing import Dict, Optional, Tuple

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from configuration_mask_rcnn import COCO_CLASSES  # noqa: E402
from convert_mmdet_checkpoint import ZOO, mmdet_state_dict_shapes, zoo_config  # noqa: E402

CALIBRATION_DIR = os.path.join(REPO_ROOT, "tests", "fixtures", "synthetic")

# variant name -> (MMDetection zoo config it uses, recipe options)
VARIANTS: Dict[str, Tuple[str, Dict[str, object]]] = {
    "mask-rcnn_r50_fpn_1x_coco": ("mask-rcnn_r50_fpn_1x_coco", {}),
    "mask-rcnn_r50-caffe_fpn_1x_coco": ("mask-rcnn_r50-caffe_fpn_1x_coco", {}),
    "mask-rcnn_x101-32x4d_fpn_1x_coco": ("mask-rcnn_x101-32x4d_fpn_1x_coco", {}),
    # Tie-breaking variant: the R50 weights and calibration, except (1) anchor 1 (ratio 1.0) of the RPN gets an
    # objectness bias shift (stored in its calibration file) so that its sigmoid saturates to exactly 1.0 for
    # ~150 locations per image (all levels together), and (2) fc_cls/fc_reg rows of class pairs are duplicated so both classes
    # of a pair get bit-identical scores and boxes (TIED_CLASS_PAIRS).
    "mask-rcnn_r50_fpn_1x_coco-ties": ("mask-rcnn_r50_fpn_1x_coco", {"ties": True}),
}

# (a, b): fc_cls row b and fc_cls.bias[b] are copies of row/bias a in the "ties" variant, so class b's softmax
# score equals class a's bit for bit; fc_reg rows of b are copies too, so the two detections share the box.
TIED_CLASS_PAIRS = tuple((2 * k, 2 * k + 1) for k in range(16))  # classes 0..31 in pairs
TIED_RPN_ANCHOR = 1  # anchor index (ratio 1.0) whose objectness bias is shifted towards sigmoid saturation


def config_name_of(variant: str) -> str:
    """MMDetection zoo config name a synthetic variant uses (variant names are zoo names plus optional suffix)."""
    if variant in VARIANTS:
        return VARIANTS[variant][0]
    if variant in ZOO:
        return variant
    raise ValueError(f"Unknown synthetic variant '{variant}'. Known: {sorted(VARIANTS)} or any of {sorted(ZOO)}")


def recipe_of(variant: str) -> Dict[str, object]:
    return dict(VARIANTS[variant][1]) if variant in VARIANTS else {}


def calibration_path(variant: str) -> str:
    return os.path.join(CALIBRATION_DIR, f"{variant}_bn_stats.npz")


def key_seed(seed: int, key: str) -> int:
    """64-bit PCG64 seed of one state-dict entry."""
    digest = hashlib.sha256(f"mask-rcnn-synthetic/{seed}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def standard_normal(seed: int, key: str, shape: Tuple[int, ...]) -> np.ndarray:
    """float64 N(0, 1) draws of one key (deterministic for a numpy version; checked by the manifest sha256)."""
    rng = np.random.Generator(np.random.PCG64(key_seed(seed, key)))
    return rng.standard_normal(shape)  # float64


# Output scale of P2..P5 (P6 = max-pool of P5). Larger features on coarse levels make their objectness and class
# logits more extreme, so large anchors/RoIs compete with the ~60x more numerous P2 anchors and all four RoI
# levels occur among the final detections.
FPN_LEVEL_GAINS = (0.5, 0.7, 1.0, 1.6)


def _fan_in(shape: Tuple[int, ...], key: str) -> int:
    if key.endswith("upsample.weight"):  # ConvTranspose2d [in, out, kh, kw]: each output sums in*kh*kw/stride^2
        return shape[0]
    return int(np.prod(shape[1:]))


def _scale(key: str, shape: Tuple[int, ...]) -> Tuple[float, float]:
    """(std, mean) of a weight or bias before calibration gains. See module docstring."""
    if key.endswith(".bias"):
        if ".bn" in key or ".downsample.1." in key or key.startswith("backbone.bn1"):
            return 0.1, 0.0  # BN beta
        if "rpn_cls" in key or "fc_cls" in key or "fc_reg" in key or "rpn_reg" in key or "conv_logits" in key:
            return 0.0, 0.0  # set by calibration
        if key.startswith("neck.fpn_convs."):
            return 0.05 * FPN_LEVEL_GAINS[int(key.split(".")[2])], 0.0
        return 0.05, 0.0
    if key.endswith(".weight") and len(shape) == 1:  # BN gamma
        if ".bn3." in key or ".downsample.1." in key:
            return 0.1, 0.5  # residual-branch / shortcut gammas smaller so deep stages stay O(1)
        return 0.15, 1.0
    fan_in = _fan_in(shape, key)
    if key.startswith("backbone.") or "rpn_conv" in key or "shared_fcs" in key or "mask_head.convs" in key \
            or "upsample" in key:
        return math.sqrt(2.0 / fan_in), 0.0  # He normal (ReLU follows)
    if key.startswith("neck.fpn_convs."):
        return FPN_LEVEL_GAINS[int(key.split(".")[2])] * math.sqrt(1.0 / fan_in), 0.0
    if key.startswith("neck."):
        return math.sqrt(1.0 / fan_in), 0.0  # linear layers keep the variance
    if "rpn_cls" in key:
        return 1.5 / math.sqrt(fan_in), 0.0
    if "rpn_reg" in key:
        return 0.15 / math.sqrt(fan_in), 0.0
    if "fc_cls" in key:
        return 1.0 / math.sqrt(fan_in), 0.0  # times a calibrated gain -> logit std ~3
    if "fc_reg" in key:
        return 0.5 / math.sqrt(fan_in), 0.0  # times a calibrated gain -> delta std ~0.5 (x0.1/0.2 by the coder)
    if "conv_logits" in key:
        return 1.0 / math.sqrt(fan_in), 0.0  # times a calibrated gain -> logit std ~3
    raise KeyError(key)


def load_calibration(variant: str) -> Dict[str, np.ndarray]:
    path = calibration_path(variant)
    if not os.path.exists(path):
        return {}
    with np.load(path) as data:
        return {name: data[name] for name in data.files}


def make_synthetic_state_dict(
    config_name: str, seed: int = 0, calibration: Optional[Dict[str, np.ndarray]] = None
) -> "OrderedDict[str, torch.Tensor]":
    """State dict of a synthetic variant, in MMDetection's exact key order and shapes.

    Args:
        config_name: a key of `VARIANTS` (a zoo config name, or a zoo name with a suffix such as "-ties").
        seed: base seed of the random draws.
        calibration: override of the calibration arrays (default: the stored `<variant>_bn_stats.npz`).
            Entries are full tensors by state-dict key, or scalar gains named "gain:<key>".
    """
    variant = config_name
    shapes = mmdet_state_dict_shapes(zoo_config(config_name_of(variant)))
    calib = load_calibration(variant) if calibration is None else calibration
    ties = bool(recipe_of(variant).get("ties", False))
    state: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, shape in shapes.items():
        shape = tuple(shape)
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.int64)
            continue
        if key in calib:
            value = np.asarray(calib[key], dtype=np.float32).reshape(shape)
        elif key.endswith("running_mean"):
            value = np.zeros(shape, np.float32)
        elif key.endswith("running_var"):
            value = np.ones(shape, np.float32)
        else:
            std, mean = _scale(key, shape)
            gain = float(calib.get(f"gain:{key}", 1.0))
            if std == 0.0:
                value = np.full(shape, mean, np.float32)
            else:
                value64 = standard_normal(seed, key, shape) * (std * gain) + mean
                if key in BOX_HEAD_OUTPUT_WEIGHTS and BOX_HEAD_DIRECTION in calib:
                    value64 = _project_box_head(key, value64, calib)
                value = value64.astype(np.float32)
        if ties:
            value = _apply_ties(key, value)
        state[key] = torch.from_numpy(np.ascontiguousarray(value))
    return state


BOX_HEAD_DIRECTION = "box_head_feature_direction"
BOX_HEAD_BACKGROUND_SCALE = "box_head_background_scale"
BOX_HEAD_OUTPUT_WEIGHTS = ("roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_reg.weight")


def _project_box_head(key: str, value: np.ndarray, calib: Dict[str, np.ndarray]) -> np.ndarray:
    """Make the box head's class logits/deltas insensitive to the overall feature magnitude of an image.

    The box-head features x (post-ReLU) of different images differ mostly by a scale along their mean direction u
    (calibration "box_head_feature_direction", unit vector). Class rows of fc_cls and all fc_reg rows get their
    component along u removed; the background row of fc_cls becomes ``box_head_background_scale * u``, so the
    background logit grows with the feature scale like the spread of the class logits does. Without this the
    number of detections varied from 0 to ~1000 between fixture images.
    """
    u = np.asarray(calib[BOX_HEAD_DIRECTION], np.float64)
    value = value - np.outer(value @ u, u)
    if key.endswith("fc_cls.weight"):
        value[-1] = float(calib[BOX_HEAD_BACKGROUND_SCALE]) * u
    return value


def _apply_ties(key: str, value: np.ndarray) -> np.ndarray:
    value = value.copy()
    if key in ("roi_head.bbox_head.fc_cls.weight", "roi_head.bbox_head.fc_cls.bias"):
        for a, b in TIED_CLASS_PAIRS:
            value[b] = value[a]
    elif key in ("roi_head.bbox_head.fc_reg.weight", "roi_head.bbox_head.fc_reg.bias"):
        for a, b in TIED_CLASS_PAIRS:
            value[4 * b:4 * b + 4] = value[4 * a:4 * a + 4]
    return value


def state_dict_sha256(state_dict: "OrderedDict[str, torch.Tensor]") -> str:
    """sha256 over key names, dtypes, shapes and raw little-endian bytes, in order."""
    digest = hashlib.sha256()
    for key, tensor in state_dict.items():
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{key}|{array.dtype.str}|{tuple(array.shape)}\n".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _palette(num_classes: int) -> list:
    rng = np.random.Generator(np.random.PCG64(20260101))
    return [tuple(int(c) for c in rng.integers(0, 256, 3)) for _ in range(num_classes)]


def make_synthetic_checkpoint(config_name: str, seed: int = 0, meta_style: str = "3.x") -> Dict[str, object]:
    """{"meta", "state_dict"} like a published MMDetection checkpoint (3.x runner meta or 2.x mmcv-runner meta)."""
    variant = config_name
    zoo_name = config_name_of(variant)
    state_dict = make_synthetic_state_dict(variant, seed)
    synthetic = {"variant": variant, "seed": seed, "generator": "tools/synthetic_weights.py",
                 "state_dict_sha256": state_dict_sha256(state_dict)}
    stamp = time.strftime("%Y%m%d_%H%M%S", time.gmtime(0))
    if meta_style == "3.x":
        meta = {
            "mmdet_version": "3.3.0",
            "mmengine_version": "0.10.7",
            "experiment_name": f"{zoo_name}_{stamp}",
            "time": stamp,
            "epoch": 12,
            "iter": 87960,
            "seed": seed,
            "dataset_meta": {"classes": tuple(COCO_CLASSES), "palette": _palette(len(COCO_CLASSES))},
            "synthetic": synthetic,
        }
    elif meta_style == "2.x":
        meta = {
            "mmdet_version": "2.0.0",
            "mmcv_version": "0.5.1",
            "time": "Thu Jan  1 00:00:00 1970",
            "epoch": 12,
            "iter": 87960,
            "CLASSES": tuple(COCO_CLASSES),
            "synthetic": synthetic,
        }
    else:
        raise ValueError(f"meta_style must be '3.x' or '2.x', got {meta_style!r}")
    return {"meta": meta, "state_dict": state_dict}


def save_synthetic_checkpoint(path: str, config_name: str, seed: int = 0, meta_style: str = "3.x",
                              legacy_format: bool = True) -> str:
    """Write a synthetic checkpoint; `legacy_format` uses torch's pre-zip pickle like MMDetection's zoo files."""
    checkpoint = make_synthetic_checkpoint(config_name, seed, meta_style)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy_format)
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=sorted(VARIANTS))
    parser.add_argument("output")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--meta-style", default="3.x", choices=["3.x", "2.x"])
    args = parser.parse_args()
    print(save_synthetic_checkpoint(args.output, args.variant, args.seed, args.meta_style))
