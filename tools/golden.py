# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Loader of the MMDetection golden fixtures (format: tests/fixtures/README.md). numpy + torch only.

    from tools.golden import golden_cases, load_golden, load_preprocessed_input, pixel_values_from_preprocessed

    for variant, stem in golden_cases():
        golden = load_golden(variant, stem)            # boxes, scores, labels, masks (bool N,H,W), rpn_*, ...
        # other machines' MMDetection outputs of the same case, where they differ: golden_recordings(variant, stem)
        pixel_values, meta = pixel_values_from_preprocessed(stem, golden["normalization"])
        assert inputs_sha256(pixel_values) == meta["sha256"]   # exactly MMDetection's model input
        state_dict = load_synthetic_state_dict(variant)        # MMDetection key names
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

FIXTURES_DIR = os.path.join(REPO_ROOT, "tests", "fixtures")
IMAGES_DIR = os.path.join(FIXTURES_DIR, "images")
PREPROCESSED_DIR = os.path.join(FIXTURES_DIR, "preprocessed")
GOLDEN_DIR = os.path.join(FIXTURES_DIR, "golden")
MANIFEST_PATH = os.path.join(GOLDEN_DIR, "manifest.json")

NORMALIZATIONS = ("pytorch", "caffe", "c2")


def load_manifest() -> dict:
    """The manifest written by tools/make_golden.py (versions, variants, per-case statistics)."""
    with open(MANIFEST_PATH) as handle:
        return json.load(handle)


def golden_cases(variant: Optional[str] = None) -> List[Tuple[str, str]]:
    """(variant, image_stem) of every golden file listed in the manifest and present on disk."""
    if not os.path.exists(MANIFEST_PATH):
        return []
    cases = []
    for name, entry in sorted(load_manifest().get("variants", {}).items()):
        if variant is not None and name != variant:
            continue
        for stem in sorted(entry.get("cases", {})):
            if os.path.exists(os.path.join(GOLDEN_DIR, name, stem + ".npz")):
                cases.append((name, stem))
    return cases


def image_path(image_stem: str) -> str:
    """Path of the original fixture image (PNG or JPEG) of a stem."""
    for file_name in os.listdir(IMAGES_DIR):
        if os.path.splitext(file_name)[0] == image_stem:
            return os.path.join(IMAGES_DIR, file_name)
    raise FileNotFoundError(f"no fixture image with stem '{image_stem}' in {IMAGES_DIR}")


def normalization_of(variant: str) -> str:
    """Normalisation preset ("pytorch", "caffe" or "c2") of a golden variant."""
    return load_manifest()["variants"][variant]["normalization"]


def unpack_masks(packed: np.ndarray, shape) -> np.ndarray:
    """Inverse of np.packbits(masks, axis=-1): bool (N, H, W)."""
    n, h, w = (int(v) for v in shape)
    if n == 0:
        return np.zeros((0, h, w), dtype=bool)
    return np.unpackbits(packed, axis=-1, count=w).astype(bool).reshape(n, h, w)


def golden_recordings(variant: str, image_stem: str) -> List[str]:
    """Names of MMDetection's recorded outputs of one case: "primary" first, then the alternates.

    MMDetection's float32 results depend on the CPU kernels PyTorch picks on a machine (even with the instruction set
    pinned to AVX2, see tools/reference_kernels.py, oneDNN can choose another blocking, and so another summation
    order, for some convolutions). When `tools/make_golden.py --alternates` ran MMDetection on another machine and
    got other bits for a case, that output is stored beside the primary one as `<stem>@<name>.npz`, and the
    manifest describes the machine it came from (`cases[stem]["alternates"][name]`).
    """
    case = load_manifest()["variants"][variant].get("cases", {}).get(image_stem, {})
    alternates = sorted(name for name in case.get("alternates", {})
                        if os.path.exists(os.path.join(GOLDEN_DIR, variant, f"{image_stem}@{name}.npz")))
    return ["primary"] + alternates


def load_golden(variant: str, image_stem: str, recording: str = "primary") -> Dict[str, object]:
    """All arrays of one golden case, masks unpacked to bool (N, H, W).

    Keys: boxes (N,4) f32 original frame, scores (N,) f32, labels (N,) i64, masks (N,H,W) bool,
    rpn_boxes (P,4) f32 / rpn_scores (P,) f32 (resized frame, P <= 1000, MMDetection's order),
    det_boxes_resized (N,4) f32 / det_scores_resized / det_labels_resized (before rescale; same order as boxes),
    mask_probs (N,28,28) f32 (sigmoid of the predicted class' mask logits), ori_shape, img_shape, scale_factor
    (f64, (w_scale, h_scale)), batch_input_shape, plus "variant", "image_stem", "recording", "normalization",
    "stats". `recording` is one of `golden_recordings(variant, image_stem)`.
    """
    file_name = image_stem + ".npz" if recording == "primary" else f"{image_stem}@{recording}.npz"
    path = os.path.join(GOLDEN_DIR, variant, file_name)
    with np.load(path) as data:
        golden: Dict[str, object] = {name: data[name] for name in data.files}
    golden["masks"] = unpack_masks(golden.pop("masks_packed"), golden["masks_shape"])
    golden["variant"] = variant
    golden["image_stem"] = image_stem
    golden["recording"] = recording
    manifest = load_manifest()
    entry = manifest["variants"][variant]
    golden["normalization"] = entry["normalization"]
    golden["stats"] = entry.get("cases", {}).get(image_stem, {})
    return golden


def load_preprocessed_input(image_stem: str, normalization: str = "pytorch") -> Tuple[np.ndarray, dict]:
    """The image as MMDetection's `Resize` left it (uint8 HxWx3) and its metadata.

    The array is in the channel order the network of `normalization` expects: RGB for "pytorch" (the data
    preprocessor flips BGR->RGB), BGR for "caffe" and "c2". meta: ori_shape, img_shape, scale_factor
    (w_scale, h_scale as exact Python floats), batch_input_shape, pad_shape, channel_order, mean, std,
    sha256 and shape of MMDetection's float32 `inputs` tensor for this normalisation.
    """
    import cv2

    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    with open(os.path.join(PREPROCESSED_DIR, image_stem + ".json")) as handle:
        meta = json.load(handle)
    bgr = cv2.imread(os.path.join(PREPROCESSED_DIR, image_stem + ".png"), cv2.IMREAD_UNCHANGED)
    if hashlib.sha256(np.ascontiguousarray(bgr).tobytes()).hexdigest() != meta["resized_bgr_sha256"]:
        raise RuntimeError(f"{image_stem}.png does not decode to the stored resized image")
    preset = meta["inputs"][normalization]
    out_meta = {key: meta[key] for key in ("image", "ori_shape", "img_shape", "scale_factor", "batch_input_shape",
                                           "pad_shape")}
    out_meta.update({"normalization": normalization, "channel_order": "rgb" if preset["bgr_to_rgb"] else "bgr",
                     "mean": preset["mean"], "std": preset["std"], "sha256": preset["sha256"],
                     "inputs_shape": preset["shape"]})
    image = np.ascontiguousarray(bgr[..., ::-1]) if preset["bgr_to_rgb"] else bgr
    return image, out_meta


def pixel_values_from_preprocessed(image_stem: str, normalization: str = "pytorch", size_divisor: int = 32):
    """Rebuild MMDetection's float32 model input (1,3,Hp,Wp): ((x.float() - mean) / std), zero pad right/bottom.

    Follows DetDataPreprocessor's operation order (channel flip on uint8, float32 mean/std buffers of shape
    (3,1,1), true division, pad after normalisation) so the sha256 matches `meta["sha256"]` bit for bit.
    """
    import torch
    import torch.nn.functional as F

    image, meta = load_preprocessed_input(image_stem, normalization)
    x = torch.from_numpy(image).permute(2, 0, 1).float()
    mean = torch.tensor(meta["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(meta["std"], dtype=torch.float32).view(-1, 1, 1)
    x = (x - mean) / std
    h, w = x.shape[-2:]
    pad_h = (h + size_divisor - 1) // size_divisor * size_divisor - h
    pad_w = (w + size_divisor - 1) // size_divisor * size_divisor - w
    x = F.pad(x, (0, pad_w, 0, pad_h), value=0.0)
    return x[None].contiguous(), meta


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes (how the manifest and the preprocessed JSON files record contents)."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    """Hex sha256 of a file's contents."""
    with open(path, "rb") as handle:
        return sha256_bytes(handle.read())


def inputs_sha256(tensor) -> str:
    """sha256 of a float32 tensor's C-order little-endian bytes (how the fixtures hash model inputs)."""
    return sha256_bytes(tensor.detach().cpu().contiguous().numpy().astype("<f4").tobytes())


def load_synthetic_state_dict(variant: str):
    """The synthetic MMDetection state dict (MMDetection key names) a golden variant was generated with."""
    from tools.synthetic_weights import make_synthetic_state_dict

    return make_synthetic_state_dict(variant, seed=load_manifest()["variants"][variant].get("seed", 0))
