# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Regenerate the parity fixtures with REAL MMDetection 3.3.0 (CPU).

One command regenerates every golden file (fixture images and the stored calibration are reused):

    /work/venv-mmdet-sys/bin/python tools/make_golden.py

The reference venv comes from ``bash tools/setup_mmdet_reference.sh /work/venv-mmdet-sys`` (it shares torch,
numpy and OpenCV with the test environment). Options:

    --images                 redraw tests/fixtures/images/* (procedural; pixels depend on numpy/PIL/OpenCV/libjpeg)
    --calibrate              redo the per-variant calibration (BN running stats, head biases/gains) before goldens
    --variants V [V ...]     only these synthetic variants (names in tools/synthetic_weights.VARIANTS)
    --images-only S [S ...]  only these image stems
    --no-golden              stop after images/calibration/preprocessed inputs
    --alternates             keep the stored goldens; where MMDetection gives other bits on this machine, store
                             them as golden/<variant>/<stem>@<machine>.npz (tests accept either recording)

What it writes (format in tests/fixtures/README.md):

    tests/fixtures/synthetic/<variant>_bn_stats.npz      calibration (BN stats + head biases/gains)
    tests/fixtures/preprocessed/<stem>.png / .json       resized BGR uint8 image after Resize + metadata + sha256
                                                         of DetDataPreprocessor's float32 input per normalisation
    tests/fixtures/golden/<variant>/<stem>.npz           outputs of inference_detector + RPN proposals,
                                                         resized-frame detections and 28x28 mask probabilities
    tests/fixtures/golden/manifest.json                  versions, state-dict sha256, per-case statistics

Models are built with mmdet's ``init_detector(config_file, checkpoint_file, device="cpu")`` from a synthetic
checkpoint written in MMDetection's layout, and run with ``inference_detector(model, image_path)`` (mmdet's own
file pipeline: cv2 decode, Resize, PackDetInputs, DetDataPreprocessor). Intermediate results are captured by
wrapping methods of the model instance (nothing of mmdet is modified).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools.reference_kernels import active_kernels, pin_reference_kernels  # noqa: E402

if __name__ == "__main__":  # before torch loads: the goldens are made with the kernels the tests check them with
    pin_reference_kernels()

from tools import synthetic_weights as sw  # noqa: E402

from tools.golden import FIXTURES_DIR as FIXTURES  # noqa: E402  (one definition of the fixture layout)
from tools.golden import GOLDEN_DIR, IMAGES_DIR, PREPROCESSED_DIR  # noqa: E402
from tools.golden import MANIFEST_PATH as MANIFEST  # noqa: E402

# normalisation presets by zoo style (values as in the mmdet configs' data_preprocessor)
NORMALIZATIONS = {
    "pytorch": dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True),
    "caffe": dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], bgr_to_rgb=False),
    "c2": dict(mean=[103.53, 116.28, 123.675], std=[57.375, 57.12, 58.395], bgr_to_rgb=False),
}

# images each variant is run on (None = all)
VARIANT_IMAGES: Dict[str, Optional[List[str]]] = {
    "mask-rcnn_r50_fpn_1x_coco": None,
    "mask-rcnn_r50-caffe_fpn_1x_coco": None,
    # X101 is ~2x slower on CPU: six images (all odd decode paths but the 16-bit/RGBA/palette ones)
    "mask-rcnn_x101-32x4d_fpn_1x_coco": ["photo_640x480", "portrait_427x640", "gray_500x375", "wide_2000x500",
                                         "exif_rot6_480x320", "tiny_97x61"],
    "mask-rcnn_r50_fpn_1x_coco-ties": ["photo_640x480", "portrait_427x640", "gray_500x375"],
}


def normalization_of(variant: str) -> str:
    return sw.ZOO[sw.config_name_of(variant)].style


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str) -> str:
    with open(path, "rb") as handle:
        return sha256_bytes(handle.read())


# ------------------------------------------------------------------------------------------------------------------
# Fixture images (procedural, no downloads)
# ------------------------------------------------------------------------------------------------------------------

def photo_like(width: int, height: int, seed: int, n_shapes: int = 40, noise: float = 3.0) -> np.ndarray:
    """RGB uint8 photo-like scene: sky/ground gradients, colour fields, shapes, stripes, shading, noise."""
    import cv2
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.Generator(np.random.PCG64(seed))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    horizon = height * rng.uniform(0.35, 0.6)
    sky_top, sky_bottom = rng.uniform(60, 255, 3), rng.uniform(60, 255, 3)
    ground_top, ground_bottom = rng.uniform(20, 200, 3), rng.uniform(20, 200, 3)
    t_sky = np.clip(yy / max(horizon, 1), 0, 1)[..., None]
    t_ground = np.clip((yy - horizon) / max(height - horizon, 1), 0, 1)[..., None]
    img = np.where((yy < horizon)[..., None], sky_top * (1 - t_sky) + sky_bottom * t_sky,
                   ground_top * (1 - t_ground) + ground_bottom * t_ground)
    for cell in (max(width, height) / 6, max(width, height) / 20):
        grid_h, grid_w = int(height / cell) + 2, int(width / cell) + 2
        field = rng.normal(0, 18, (grid_h, grid_w, 3)).astype(np.float32)
        img = img + cv2.resize(field, (width, height), interpolation=cv2.INTER_CUBIC)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    diag = (width * width + height * height) ** 0.5
    for _ in range(n_shapes):
        size = diag * np.exp(rng.uniform(np.log(0.015), np.log(0.35)))
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        aspect = np.exp(rng.uniform(-0.8, 0.8))
        half_w, half_h = size * aspect ** 0.5 / 2, size / aspect ** 0.5 / 2
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        kind = rng.integers(0, 4)
        box = [cx - half_w, cy - half_h, cx + half_w, cy + half_h]
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        elif kind == 2:
            n = int(rng.integers(3, 8))
            angles = np.sort(rng.uniform(0, 2 * np.pi, n))
            radii = rng.uniform(0.4, 1.0, n)
            draw.polygon([(cx + half_w * r * np.cos(a), cy + half_h * r * np.sin(a)) for a, r in zip(angles, radii)],
                         fill=colour)
        else:  # striped patch
            stencil = Image.new("L", pil.size, 0)
            stencil_draw = ImageDraw.Draw(stencil)
            (stencil_draw.ellipse if rng.random() < 0.5 else stencil_draw.rectangle)(box, fill=255)
            period, theta = rng.uniform(4, 30), rng.uniform(0, np.pi)
            stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period) > 0
            texture = np.where(stripes[..., None], np.array(colour), rng.integers(0, 256, 3)).astype(np.uint8)
            pil.paste(Image.fromarray(texture), (0, 0), stencil)
    arr = np.asarray(pil.filter(ImageFilter.GaussianBlur(0.8))).astype(np.float32)
    light_x, light_y = rng.uniform(0, width), rng.uniform(0, height)
    shade = 1.0 - 0.35 * np.sqrt((xx - light_x) ** 2 + (yy - light_y) ** 2) / diag
    arr = arr * shade[..., None]
    if noise > 0:
        arr = arr + rng.normal(0, noise, arr.shape)
    return np.clip(arr + 0.5, 0, 255).astype(np.uint8)


def _exif_with_orientation(orientation: int) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def make_images() -> Dict[str, dict]:
    """Draw all fixture images; returns {file name: description}."""
    import cv2
    from PIL import Image

    os.makedirs(IMAGES_DIR, exist_ok=True)
    described: Dict[str, dict] = {}

    def save_png(name: str, image: "Image.Image", what: str) -> None:
        image.save(os.path.join(IMAGES_DIR, name), "PNG", compress_level=9)
        described[name] = {"what": what, "pil_mode": image.mode, "size_wh": list(image.size)}

    save_png("photo_640x480.png", Image.fromarray(photo_like(640, 480, seed=1)), "RGB photo-like, 640x480 (WxH)")
    save_png("gray_500x375.png", Image.fromarray(photo_like(500, 375, seed=2)).convert("L"),
             "8-bit grayscale (mode L); cv2 IMREAD_COLOR replicates it to 3 channels")
    save_png("portrait_427x640.png", Image.fromarray(photo_like(427, 640, seed=3)), "RGB portrait 427x640 (WxH)")
    save_png("wide_2000x500.png", Image.fromarray(photo_like(2000, 500, seed=4, n_shapes=60, noise=1.5)),
             "RGB very wide 2000x500: the long side limits the resize (1333x333)")
    save_png("large_2400x1800.png", Image.fromarray(photo_like(2400, 1800, seed=5, n_shapes=80, noise=0.0)),
             "RGB large 2400x1800: downscaled to 1067x800")
    save_png("tiny_97x61.png", Image.fromarray(photo_like(97, 61, seed=10, n_shapes=8, noise=2.0)),
             "RGB tiny 97x61 with odd sizes: upscaled ~13x to 1272x800")

    rgb = photo_like(480, 360, seed=6)
    rng = np.random.Generator(np.random.PCG64(60))
    alpha = np.clip(np.linspace(0, 400, 480)[None, :] + rng.normal(0, 10, (360, 480)), 0, 255).astype(np.uint8)
    alpha[:, :60] = 0  # fully transparent strip whose colour is still non-zero (cv2 drops alpha, no compositing)
    save_png("rgba_480x360.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"),
             "RGBA with alpha gradient and a fully transparent strip; cv2 drops alpha")

    palette = Image.fromarray(photo_like(400, 300, seed=7)).quantize(colors=48, method=Image.Quantize.MEDIANCUT,
                                                                      dither=Image.Dither.NONE)
    save_png("palette_400x300.png", palette, "palette (mode P, 48 colours); cv2 expands it to BGR")

    low = photo_like(320, 240, seed=8).astype(np.uint16)
    rng = np.random.Generator(np.random.PCG64(80))
    deep = (low * 257 + rng.integers(0, 256, low.shape)).clip(0, 65535).astype(np.uint16)  # low byte random
    name = "deep16_320x240.png"
    cv2.imwrite(os.path.join(IMAGES_DIR, name), deep[..., ::-1].copy())  # cv2 writes BGR order -> RGB file
    described[name] = {"what": "16-bit RGB PNG (48 bpp) with random low bytes; cv2 IMREAD_COLOR keeps value >> 8",
                       "pil_mode": "RGB;16 (PIL cannot open 16-bit RGB losslessly)", "size_wh": [320, 240]}

    stored = photo_like(480, 320, seed=9)  # stored landscape; orientation 6 -> displayed 320x480 portrait
    name = "exif_rot6_480x320.jpg"
    Image.fromarray(stored).save(os.path.join(IMAGES_DIR, name), "JPEG", quality=92, subsampling=0,
                                 exif=_exif_with_orientation(6))
    described[name] = {"what": "baseline JPEG 480x320 stored, EXIF orientation 6 (rotate 90 CW): cv2 decodes "
                               "320x480... see README for the measured decode", "pil_mode": "RGB",
                       "size_wh": [480, 320]}
    return described


def image_files() -> List[str]:
    return sorted(f for f in os.listdir(IMAGES_DIR) if f.lower().endswith((".png", ".jpg", ".jpeg")))


def stem_of(file_name: str) -> str:
    return os.path.splitext(file_name)[0]


# ------------------------------------------------------------------------------------------------------------------
# MMDetection model building and capture
# ------------------------------------------------------------------------------------------------------------------

def mmdet_config_file(config_name: str) -> str:
    import mmdet

    path = os.path.join(os.path.dirname(mmdet.__file__), ".mim", "configs", "mask_rcnn", config_name + ".py")
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    return path


def build_model(variant: str, workdir: str, calibration: Optional[Dict[str, np.ndarray]] = None):
    """init_detector on a synthetic checkpoint written in MMDetection's layout (legacy torch pickle)."""
    from mmdet.apis import init_detector
    import torch

    ckpt = os.path.join(workdir, f"{variant}.pth")
    if calibration is None:
        sw.save_synthetic_checkpoint(ckpt, variant)
    else:  # calibration in progress: same layout, explicit calibration arrays
        state_dict = sw.make_synthetic_state_dict(variant, calibration=calibration)
        torch.save({"meta": {"dataset_meta": {"classes": tuple(sw.COCO_CLASSES)}}, "state_dict": state_dict}, ckpt,
                   _use_new_zipfile_serialization=False)
    model = init_detector(mmdet_config_file(sw.config_name_of(variant)), ckpt, device="cpu")
    model._synthetic_config = sw.config_name_of(variant)
    model.eval()
    return model


class Capture:
    """Wraps methods of one model instance to record intermediate results of the last inference."""

    def __init__(self, model):
        import torch

        self.model = model
        self.records: Dict[str, object] = {}
        records = self.records

        original_test_step = model.test_step

        def test_step(data):
            records["packed_inputs"] = data["inputs"][0].clone()  # uint8 3xHxW BGR after Resize/PackDetInputs
            records["packed_sample"] = data["data_samples"][0]
            return original_test_step(data)

        model.test_step = test_step

        preprocessor = model.data_preprocessor
        original_pre_forward = preprocessor.forward

        def pre_forward(data, training=False):
            out = original_pre_forward(data, training)
            records["inputs"] = out["inputs"].detach().clone()
            records["metainfo"] = dict(out["data_samples"][0].metainfo)
            return out

        preprocessor.forward = pre_forward

        rpn_head = model.rpn_head
        original_rpn_predict = rpn_head.predict

        def rpn_predict(*args, **kwargs):
            results = original_rpn_predict(*args, **kwargs)
            records["rpn_boxes"] = results[0].bboxes.detach().clone()
            records["rpn_scores"] = results[0].scores.detach().clone()
            return results

        rpn_head.predict = rpn_predict

        roi_head = model.roi_head
        original_predict_bbox = roi_head.predict_bbox

        def predict_bbox(*args, **kwargs):
            results = original_predict_bbox(*args, **kwargs)
            records["det_boxes_resized"] = results[0].bboxes.detach().clone()
            records["det_scores_resized"] = results[0].scores.detach().clone()
            records["det_labels_resized"] = results[0].labels.detach().clone()
            return results

        roi_head.predict_bbox = predict_bbox

        mask_head = roi_head.mask_head
        original_mask_predict_by_feat = mask_head.predict_by_feat

        def mask_predict_by_feat(mask_preds, results_list, *args, **kwargs):
            logits = mask_preds[0].detach()
            labels = results_list[0].labels
            records["mask_logits_label"] = logits[torch.arange(len(labels)), labels].clone()
            records["mask_probs"] = logits.sigmoid()[torch.arange(len(labels)), labels].clone()
            return original_mask_predict_by_feat(mask_preds, results_list, *args, **kwargs)

        mask_head.predict_by_feat = mask_predict_by_feat

        # features entering fc_cls / conv_logits (for calibration)
        self.hooks = []

    def add_feature_hooks(self):
        records = self.records

        def keep(name, limit=None):
            def hook(module, inputs):
                records[name] = inputs[0].detach()[:limit].clone()
            return hook

        self.hooks.append(self.model.roi_head.bbox_head.fc_cls.register_forward_pre_hook(keep("fc_cls_input")))
        self.hooks.append(self.model.roi_head.bbox_head.fc_reg.register_forward_pre_hook(keep("fc_reg_input")))
        self.hooks.append(
            self.model.roi_head.mask_head.conv_logits.register_forward_pre_hook(keep("conv_logits_input", 40)))
        return self

    def remove_hooks(self):
        for hook in self.hooks:
            hook.remove()
        self.hooks = []


# ------------------------------------------------------------------------------------------------------------------
# Preprocessed inputs (per image, shared by all variants with the same normalisation)
# ------------------------------------------------------------------------------------------------------------------

def run_pipeline(config_name: str, image_path: str):
    """mmdet's test pipeline on a file, exactly as inference_detector builds it."""
    from mmcv.transforms import Compose
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmdet.utils import get_test_pipeline_cfg

    cfg = Config.fromfile(mmdet_config_file(config_name))
    init_default_scope(cfg.get("default_scope", "mmdet"))
    pipeline = Compose(get_test_pipeline_cfg(cfg))
    data = pipeline(dict(img_path=image_path, img_id=0))
    return data


def preprocess_all_presets(packed: dict) -> Dict[str, dict]:
    """Run DetDataPreprocessor of each normalisation preset on one packed sample."""
    import torch
    from mmdet.models.data_preprocessors import DetDataPreprocessor

    out = {}
    for name, preset in NORMALIZATIONS.items():
        pre = DetDataPreprocessor(mean=preset["mean"], std=preset["std"], bgr_to_rgb=preset["bgr_to_rgb"],
                                  pad_size_divisor=32)
        with torch.no_grad():
            result = pre({"inputs": [packed["inputs"]], "data_samples": [packed["data_samples"]]}, False)
        inputs = result["inputs"].contiguous()
        out[name] = {
            "inputs": inputs,
            "sha256": sha256_bytes(inputs.numpy().astype("<f4").tobytes()),
            "shape": list(inputs.shape),
            "metainfo": dict(result["data_samples"][0].metainfo),
        }
    return out


def write_preprocessed(file_name: str) -> dict:
    """Resized BGR uint8 (PNG) + metadata JSON of one fixture image; returns the metadata."""
    import cv2

    os.makedirs(PREPROCESSED_DIR, exist_ok=True)
    stem = stem_of(file_name)
    packed = run_pipeline("mask-rcnn_r50_fpn_1x_coco", os.path.join(IMAGES_DIR, file_name))
    resized_bgr = packed["inputs"].permute(1, 2, 0).contiguous().numpy()  # HxWx3 uint8 BGR
    png_path = os.path.join(PREPROCESSED_DIR, stem + ".png")
    cv2.imwrite(png_path, resized_bgr, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert np.array_equal(cv2.imread(png_path, cv2.IMREAD_UNCHANGED), resized_bgr)
    sample_meta = packed["data_samples"].metainfo
    presets = preprocess_all_presets(packed)
    decoded = cv2.imdecode(np.fromfile(os.path.join(IMAGES_DIR, file_name), np.uint8), cv2.IMREAD_COLOR)
    first = next(iter(presets.values()))["metainfo"]
    meta = {
        "image": file_name,
        "ori_shape": list(sample_meta["ori_shape"]),
        "img_shape": list(sample_meta["img_shape"]),
        "scale_factor": [float(v) for v in sample_meta["scale_factor"]],
        "batch_input_shape": list(first["batch_input_shape"]),
        "pad_shape": list(first["pad_shape"]),
        "decoded_bgr_sha256": sha256_bytes(np.ascontiguousarray(decoded).tobytes()),
        "resized_bgr_sha256": sha256_bytes(np.ascontiguousarray(resized_bgr).tobytes()),
        "inputs": {name: {"sha256": p["sha256"], "shape": p["shape"], **NORMALIZATIONS[name]}
                   for name, p in presets.items()},
    }
    with open(os.path.join(PREPROCESSED_DIR, stem + ".json"), "w") as handle:
        json.dump(meta, handle, indent=1)
    return meta


# ------------------------------------------------------------------------------------------------------------------
# Calibration
# ------------------------------------------------------------------------------------------------------------------

def _bn_modules(model):
    import torch

    return [(name, module) for name, module in model.backbone.named_modules()
            if isinstance(module, torch.nn.BatchNorm2d)]


def calibrate_bn(variant: str, workdir: str, files: List[str], crop: int = 320, crops_per_image: int = 2):
    """Running stats = per-channel mean/var of each BN's input, set in forward order during ONE backbone pass
    over a batch of crops of the normalised fixture images (a forward pre-hook sets the stats of a BN right
    before it runs, so every BN sees inputs already normalised by the calibrated BNs before it)."""
    import torch

    model = build_model(variant, workdir, calibration={})
    rng = np.random.Generator(np.random.PCG64(1234))
    crops = []
    for file_name in files:
        packed = run_pipeline(sw.config_name_of(variant), os.path.join(IMAGES_DIR, file_name))
        with torch.no_grad():
            inputs = model.data_preprocessor({"inputs": [packed["inputs"]],
                                              "data_samples": [packed["data_samples"]]}, False)["inputs"]
        h, w = packed["data_samples"].metainfo["img_shape"]
        for _ in range(crops_per_image):
            y = int(rng.integers(0, max(h - crop, 0) + 1))
            x = int(rng.integers(0, max(w - crop, 0) + 1))
            patch = inputs[:, :, y:y + crop, x:x + crop]
            if patch.shape[-2:] != (crop, crop):
                continue
            crops.append(patch)
    batch = torch.cat(crops)
    stats: Dict[str, np.ndarray] = {}

    def make_hook(name):
        def hook(module, args):
            x = args[0].double()
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            module.running_mean.copy_(mean.float())
            module.running_var.copy_(var.float())
            stats[f"backbone.{name}.running_mean"] = mean.float().numpy()
            stats[f"backbone.{name}.running_var"] = var.float().numpy()
        return hook

    handles = [module.register_forward_pre_hook(make_hook(name)) for name, module in _bn_modules(model)]
    with torch.no_grad():
        outs = model.backbone(batch)
    for handle in handles:
        handle.remove()
    print(f"  BN calibration on {batch.shape[0]} crops of {crop}x{crop}: C2..C5 rms "
          + ", ".join(f"{o.pow(2).mean().sqrt().item():.2f}" for o in outs), flush=True)
    return stats


def _features_and_rpn(model, file_name):
    """FPN features and raw (bias-free) RPN outputs of one image."""
    import torch

    packed = run_pipeline(model._synthetic_config, os.path.join(IMAGES_DIR, file_name))
    with torch.no_grad():
        data = model.data_preprocessor({"inputs": [packed["inputs"]], "data_samples": [packed["data_samples"]]},
                                       False)
        feats = model.extract_feat(data["inputs"])
    return feats


def calibrate_rpn(model, files: List[str]) -> Dict[str, np.ndarray]:
    """rpn_cls / rpn_reg biases = minus the mean bias-free output over all anchors of all levels and images."""
    import torch
    import torch.nn.functional as F

    head = model.rpn_head
    cls_sum, reg_sum, count = 0.0, 0.0, 0
    cls_values = []
    for file_name in files:
        feats = _features_and_rpn(model, file_name)
        with torch.no_grad():
            for level, feat in enumerate(feats):
                hidden = F.relu(head.rpn_conv(feat))
                cls = F.conv2d(hidden, head.rpn_cls.weight).double()
                reg = F.conv2d(hidden, head.rpn_reg.weight).double()
                cls_sum = cls_sum + cls.sum(dim=(0, 2, 3))
                reg_sum = reg_sum + reg.sum(dim=(0, 2, 3))
                count += cls.shape[2] * cls.shape[3]
                cls_values.append(cls.flatten(2)[0])
    cls_bias = (-cls_sum / count).float().numpy()
    reg_bias = (-reg_sum / count).float().numpy()
    all_cls = torch.cat(cls_values, dim=1)
    print(f"  RPN: objectness logit std {all_cls.std().item():.2f}, bias {np.round(cls_bias, 3)}", flush=True)
    return {"rpn_head.rpn_cls.bias": cls_bias, "rpn_head.rpn_reg.bias": reg_bias}


def capture_heads(model, files: List[str]) -> List[dict]:
    """Run inference_detector on each image and keep the box-head / mask-head inputs."""
    from mmdet.apis import inference_detector

    capture = model._capture
    capture.add_feature_hooks()
    cases = []
    for file_name in files:
        capture.records.clear()
        result = inference_detector(model, os.path.join(IMAGES_DIR, file_name))
        rec = dict(capture.records)
        rec["result"] = result
        rec["file_name"] = file_name
        cases.append(rec)
    capture.remove_hooks()
    return cases


def _simulate_detections(model, case, fc_cls_w, fc_cls_b, fc_reg_w, fc_reg_b):
    """Detections mmdet's bbox head would produce from the captured fc inputs with other fc_cls/fc_reg params."""
    import torch
    from mmengine.structures import InstanceData  # noqa: F401

    x = case["fc_cls_input"]
    cls_score = x @ fc_cls_w.T + fc_cls_b
    bbox_pred = x @ fc_reg_w.T + fc_reg_b
    rois = torch.cat([torch.zeros(len(case["rpn_boxes"]), 1), case["rpn_boxes"]], dim=1)
    meta = case["metainfo"]
    with torch.no_grad():
        results = model.roi_head.bbox_head.predict_by_feat(
            rois=(rois,), cls_scores=(cls_score,), bbox_preds=(bbox_pred,), batch_img_metas=[meta],
            rcnn_test_cfg=model.roi_head.test_cfg, rescale=False)
    return results[0]


def _uncapped_detection_count(model, case, fc_cls_w, fc_cls_b, fc_reg_w, fc_reg_b):
    cfg = model.roi_head.test_cfg
    saved = cfg.max_per_img
    cfg.max_per_img = 100000
    try:
        return len(_simulate_detections(model, case, fc_cls_w, fc_cls_b, fc_reg_w, fc_reg_b))
    finally:
        cfg.max_per_img = saved


@__import__("torch").no_grad()
def calibrate_box_head(model, cases, target_count: float = 100.0, class_logit_std: float = 7.0,
                       background_logit: float = 25.0) -> Dict[str, np.ndarray]:
    """Box head calibration (see synthetic_weights._project_box_head for the weight parametrisation).

    * direction u = mean fc input over all proposals of all images (normalised);
    * fc_cls class rows: projected off u, gain so the within-image per-class logit std is `class_logit_std`,
      per-class bias centres every class at 0 over all proposals;
    * background row = beta * u with beta * median(u.x) = `background_logit`; background bias bisected so the
      median image has ~`target_count` detections before the cap of 100 (simulated with mmdet's own
      `bbox_head.predict_by_feat` on the captured features);
    * fc_reg: projected off u, zero-mean deltas with std 0.5 (x0.1/0.2 by the coder).
    """
    import torch

    head = model.roi_head.bbox_head
    xs = [c["fc_cls_input"].double() for c in cases]
    x_all = torch.cat(xs)
    u = x_all.mean(0)
    u = u / u.norm()
    calib = {sw.BOX_HEAD_DIRECTION: u.numpy(), sw.BOX_HEAD_BACKGROUND_SCALE: np.float64(0.0)}
    w_cls = torch.from_numpy(sw._project_box_head("roi_head.bbox_head.fc_cls.weight",
                                                  head.fc_cls.weight.double().numpy(), calib))
    w_reg = torch.from_numpy(sw._project_box_head("roi_head.bbox_head.fc_reg.weight",
                                                  head.fc_reg.weight.double().numpy(), calib))
    within = torch.cat([(x @ w_cls[:-1].T) - (x @ w_cls[:-1].T).mean(0) for x in xs]).std(0).median().item()
    cls_gain = class_logit_std / within
    beta = background_logit / (x_all @ u).median().item()
    cls_bias = -((x_all @ w_cls.T).mean(0) * cls_gain)
    cls_bias[-1] = 0.0
    raw_reg = x_all @ w_reg.T
    reg_gain = 0.5 / raw_reg.std(dim=0).median().item()
    reg_bias = -(raw_reg.mean(dim=0) * reg_gain)
    fc_cls_w = torch.cat([w_cls[:-1] * cls_gain, beta * u[None]]).float()
    fc_reg_w = (w_reg * reg_gain).float()
    fc_reg_b = reg_bias.float()

    def median_count(bg_bias):
        b = cls_bias.clone()
        b[-1] = bg_bias
        counts = [_uncapped_detection_count(model, c, fc_cls_w, b.float(), fc_reg_w, fc_reg_b) for c in cases]
        return float(np.median(counts)), counts

    lo, hi = -30.0, 30.0
    for _ in range(14):
        mid = 0.5 * (lo + hi)
        count, counts = median_count(mid)
        if count > target_count:
            lo = mid
        else:
            hi = mid
    bg_bias = 0.5 * (lo + hi)
    count, counts = median_count(bg_bias)
    print(f"  box head: cls gain {cls_gain:.4f}, background scale {beta:.4f}, background bias {bg_bias:.3f}, "
          f"reg gain {reg_gain:.4f}, uncapped detections per image {counts}", flush=True)
    cls_bias[-1] = bg_bias
    return {
        sw.BOX_HEAD_DIRECTION: u.numpy(),
        sw.BOX_HEAD_BACKGROUND_SCALE: np.float64(beta),
        "gain:roi_head.bbox_head.fc_cls.weight": np.float64(cls_gain),
        "roi_head.bbox_head.fc_cls.bias": cls_bias.float().numpy(),
        "gain:roi_head.bbox_head.fc_reg.weight": np.float64(reg_gain),
        "roi_head.bbox_head.fc_reg.bias": reg_bias.float().numpy(),
    }


@__import__("torch").no_grad()
def calibrate_mask_head(model, cases, target_std: float = 3.0) -> Dict[str, np.ndarray]:
    """conv_logits: per-class zero-mean logits over all mask pixels of all detections, pixel std ~`target_std`."""
    import torch
    import torch.nn.functional as F

    head = model.roi_head.mask_head
    feats = torch.cat([c["conv_logits_input"] for c in cases if "conv_logits_input" in c])
    with torch.no_grad():
        raw = F.conv2d(feats, head.conv_logits.weight).double()  # (N, 80, 28, 28)
    gain = target_std / raw.std(dim=(0, 2, 3)).median().item()
    bias = -(raw.mean(dim=(0, 2, 3)) * gain)
    per_roi_mean_std = (raw.mean(dim=(2, 3)) * gain).std().item()
    within_std = (raw * gain).std(dim=(2, 3)).mean().item()
    print(f"  mask head: gain {gain:.4f}, per-RoI mean logit std {per_roi_mean_std:.2f}, "
          f"within-RoI std {within_std:.2f}", flush=True)
    return {"gain:roi_head.mask_head.conv_logits.weight": np.float64(gain),
            "roi_head.mask_head.conv_logits.bias": bias.float().numpy()}


def save_calibration(variant: str, calibration: Dict[str, np.ndarray]) -> str:
    os.makedirs(sw.CALIBRATION_DIR, exist_ok=True)
    path = sw.calibration_path(variant)
    np.savez_compressed(path, **{k: np.asarray(v) for k, v in calibration.items()})
    return path


def calibrate(variant: str, workdir: str, files: List[str]) -> Dict[str, np.ndarray]:
    import torch

    print(f"[calibrate] {variant}", flush=True)
    torch.manual_seed(0)
    if sw.recipe_of(variant).get("ties"):
        return calibrate_ties(variant, workdir, files)
    partial = os.path.join(tempfile.gettempdir(), f"{variant}.partial_calibration.npz")
    if os.environ.get("MAKE_GOLDEN_RESUME") and os.path.exists(partial):  # developer shortcut: reuse BN + RPN
        calibration: Dict[str, np.ndarray] = dict(np.load(partial))
    else:
        calibration = dict(calibrate_bn(variant, workdir, files))
        model = build_model(variant, workdir, calibration=calibration)
        calibration.update(calibrate_rpn(model, files))
        np.savez(partial, **calibration)
    model = build_model(variant, workdir, calibration=calibration)
    model._capture = Capture(model)
    cases = capture_heads(model, files)
    calibration.update(calibrate_box_head(model, cases))
    model = build_model(variant, workdir, calibration=calibration)
    model._capture = Capture(model)
    cases = capture_heads(model, files)
    calibration.update(calibrate_mask_head(model, cases))
    print("  saved", save_calibration(variant, calibration), flush=True)
    return calibration


def calibrate_ties(variant: str, workdir: str, files: List[str], saturated_per_image: int = 150):
    """Copy of the base variant's calibration with the objectness bias of anchor TIED_RPN_ANCHOR shifted so that
    about `saturated_per_image` locations per image (P2..P6 together) have sigmoid(logit) == 1.0 exactly in
    float32: enough exact ties to exercise sort/NMS tie order, few enough that the pre-NMS top-1000 selection of
    each level is not decided by ties alone."""
    import torch
    import torch.nn.functional as F

    base = sw.config_name_of(variant)
    calibration = sw.load_calibration(base)
    if not calibration:
        raise RuntimeError(f"calibrate {base} first")
    calibration = dict(calibration)
    model = build_model(base, workdir)
    head = model.rpn_head
    a = sw.TIED_RPN_ANCHOR
    per_image = []
    for file_name in files:
        feats = _features_and_rpn(model, file_name)
        with torch.no_grad():
            logits = torch.cat([head.rpn_cls(F.relu(head.rpn_conv(f)))[0, a].flatten() for f in feats])
        per_image.append(torch.sort(logits, descending=True).values)
    # smallest float32 logit (0.01 grid) whose sigmoid is exactly 1.0
    grid = torch.arange(1500, 2500, dtype=torch.float32) / 100
    saturate_at = grid[torch.sigmoid(grid) == 1.0][0].item()
    kth = float(np.median([v[min(saturated_per_image, len(v) - 1)].item() for v in per_image]))
    shift = saturate_at - kth + 0.01
    bias = calibration["rpn_head.rpn_cls.bias"].copy()
    bias[a] += np.float32(shift)
    calibration["rpn_head.rpn_cls.bias"] = bias
    print(f"  ties: sigmoid saturates at logit {saturate_at}; anchor {a} bias shifted by {shift:.3f}", flush=True)
    print("  saved", save_calibration(variant, calibration), flush=True)
    return calibration


# ------------------------------------------------------------------------------------------------------------------
# Goldens
# ------------------------------------------------------------------------------------------------------------------

def roi_levels(boxes: np.ndarray) -> np.ndarray:
    """MMDetection's RoI level mapping (finest_scale 56, 4 levels), for statistics only."""
    import torch

    b = torch.from_numpy(boxes)
    scale = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    return torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=3).long().numpy()


def run_golden(variant: str, workdir: str, files: List[str], preprocessed: Dict[str, dict],
               alternate: Optional[str] = None) -> Dict[str, dict]:
    """Run MMDetection on each file and store its outputs; per-case statistics for the manifest.

    With `alternate` (a machine's name, `machine_name()`), the primary goldens are left as they are: a case whose
    outputs equal the stored primary ones bit for bit is only reported, one that differs is stored as
    `<stem>@<alternate>.npz` and its statistics are returned for the manifest's `alternates` entry.
    """
    from mmdet.apis import inference_detector

    out_dir = os.path.join(GOLDEN_DIR, variant)
    os.makedirs(out_dir, exist_ok=True)
    model = build_model(variant, workdir)
    capture = Capture(model)
    preset = normalization_of(variant)
    stats = {}
    for file_name in files:
        stem = stem_of(file_name)
        capture.records.clear()
        start = time.perf_counter()
        result = inference_detector(model, os.path.join(IMAGES_DIR, file_name))
        elapsed = time.perf_counter() - start
        rec = capture.records
        pred = result.pred_instances
        inputs_sha = sha256_bytes(rec["inputs"].contiguous().numpy().astype("<f4").tobytes())
        expected_sha = preprocessed[stem]["inputs"][preset]["sha256"]
        if inputs_sha != expected_sha:
            raise RuntimeError(f"{variant}/{stem}: model input sha256 differs from the stored {preset} preset")
        masks = pred.masks.numpy().astype(bool)
        boxes = pred.bboxes.numpy().astype(np.float32)
        scores = pred.scores.numpy().astype(np.float32)
        labels = pred.labels.numpy().astype(np.int64)
        det_boxes_resized = rec["det_boxes_resized"].numpy().astype(np.float32)
        meta = rec["metainfo"]
        arrays = {
            "boxes": boxes,
            "scores": scores,
            "labels": labels,
            "masks_packed": np.packbits(masks, axis=-1),
            "masks_shape": np.array(masks.shape, np.int64),
            "rpn_boxes": rec["rpn_boxes"].numpy().astype(np.float32)[:1000],
            "rpn_scores": rec["rpn_scores"].numpy().astype(np.float32)[:1000],
            "det_boxes_resized": det_boxes_resized,
            "det_scores_resized": rec["det_scores_resized"].numpy().astype(np.float32),
            "det_labels_resized": rec["det_labels_resized"].numpy().astype(np.int64),
            "mask_probs": rec["mask_probs"].numpy().astype(np.float32),
            "ori_shape": np.array(meta["ori_shape"], np.int64),
            "img_shape": np.array(meta["img_shape"], np.int64),
            "scale_factor": np.array(meta["scale_factor"], np.float64),
            "batch_input_shape": np.array(meta["batch_input_shape"], np.int64),
        }
        if alternate is not None:
            differing = differing_arrays(os.path.join(out_dir, stem + ".npz"), arrays)
            if not differing:
                print(f"  {variant}/{stem}: bit-identical to the stored golden", flush=True)
                continue
            print(f"  {variant}/{stem}: differs from the stored golden in {', '.join(differing)}: stored as "
                  f"{stem}@{alternate}.npz", flush=True)
            np.savez_compressed(os.path.join(out_dir, f"{stem}@{alternate}.npz"), **arrays)
        else:
            np.savez_compressed(os.path.join(out_dir, stem + ".npz"), **arrays)
        n = len(scores)
        probs = arrays["mask_probs"]
        straddle = float(np.mean([(p >= 0.5).any() and (p < 0.5).any() for p in probs])) if n else 0.0
        if n:
            x0, y0, x1, y1 = [np.clip(boxes[:, i], 0, None) for i in range(4)]
            box_area = np.maximum((x1 - x0) * (y1 - y0), 1e-6)
            fill = masks.reshape(n, -1).sum(1) / box_area
        else:
            fill = np.zeros(0)
        levels = np.bincount(roi_levels(det_boxes_resized), minlength=4).tolist() if n else [0, 0, 0, 0]
        stats[stem] = {
            "num_detections": n,
            "score_min": float(scores.min()) if n else None,
            "score_median": float(np.median(scores)) if n else None,
            "score_max": float(scores.max()) if n else None,
            "num_distinct_labels": int(len(np.unique(labels))),
            "num_proposals": int(len(arrays["rpn_scores"])),
            "num_rpn_score_ties": int(len(arrays["rpn_scores"]) - len(np.unique(arrays["rpn_scores"]))),
            "num_score_ties": int(n - len(np.unique(scores))),
            "mask_roi_levels": levels,
            "mask_probs_straddle_0.5_fraction": straddle,
            "mask_fill_of_box_median": float(np.median(fill)) if n else None,
            "empty_masks": int((masks.reshape(n, -1).sum(1) == 0).sum()) if n else 0,
            "inference_seconds": round(elapsed, 2),
        }
        print(f"  {variant}/{stem}: {n} dets, scores {stats[stem]['score_min']:.3f}..{stats[stem]['score_max']:.3f}"
              f", labels {stats[stem]['num_distinct_labels']}, levels {levels}, straddle {straddle:.2f}, "
              f"fill {stats[stem]['mask_fill_of_box_median']:.2f}, {elapsed:.1f}s", flush=True)
    return stats


def differing_arrays(stored_path: str, arrays: Dict[str, np.ndarray]) -> List[str]:
    """Names of the arrays that differ (shape, dtype or any bit) from those stored in `stored_path`."""
    with np.load(stored_path) as stored:
        return [name for name, array in arrays.items()
                if name not in stored.files or stored[name].dtype != array.dtype
                or stored[name].shape != array.shape or stored[name].tobytes() != array.tobytes()]


def machine_description() -> dict:
    """What decides MMDetection's float32 bits on this machine: CPU, its widest vector unit, torch and its kernels."""
    import torch

    with open("/proc/cpuinfo") as handle:
        cpuinfo = handle.read()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    widest = next((isa for isa in ("avx512f", "avx2", "avx") if isa in flags), "baseline")
    onednn = next((line.strip(" -") for line in torch.__config__.show().splitlines()
                   if "oneDNN" in line or "MKL-DNN" in line), "unknown")
    return {"cpu": model, "widest_vector_isa": widest, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "onednn": onednn, "kernels": active_kernels(), "recorded": time.strftime("%Y-%m-%d")}


def machine_name(description: dict) -> str:
    """A short file-name-safe name of a machine description: widest ISA + 8 hex digits of its sha256."""
    stable = {key: value for key, value in description.items() if key != "recorded"}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:8]
    return f"{description['widest_vector_isa']}-{digest}"


def versions() -> dict:
    import cv2
    import mmcv
    import mmdet
    import mmengine
    import PIL
    import torch

    return {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__, "mmengine": mmengine.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "cv2": cv2.__version__, "pillow": PIL.__version__,
            "python": platform.python_version(), "torch_num_threads": torch.get_num_threads(),
            "cpu_kernels": active_kernels()}


README = os.path.join(FIXTURES, "README.md")
STATS_MARKER = "## Statistics (generated by tools/make_golden.py)"


def update_readme_stats(manifest: dict) -> None:
    """Replace the statistics section at the end of tests/fixtures/README.md with the manifest's numbers."""
    lines = [STATS_MARKER, "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("versions", {}).items())), "",
             "| variant | image | ori HxW | resized HxW | dets | scores min/median/max | labels | RoI levels 0-3 |"
             " straddle 0.5 | median mask fill | RPN ties / score ties | mmdet s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, entry in sorted(manifest.get("variants", {}).items()):
        for stem, st in sorted(entry.get("cases", {}).items()):
            image = manifest["images"].get(stem, {})
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(
                f"| {variant} | {stem} | {'x'.join(map(str, image.get('ori_shape', [])))} | "
                f"{'x'.join(map(str, image.get('img_shape', [])))} | {st['num_detections']} | "
                f"{fmt(st['score_min'])} / {fmt(st['score_median'])} / {fmt(st['score_max'])} | "
                f"{st['num_distinct_labels']} | {st['mask_roi_levels']} | {st['mask_probs_straddle_0.5_fraction']:.2f} | "
                f"{fmt(st['mask_fill_of_box_median'])} | {st['num_rpn_score_ties']} / {st['num_score_ties']} | "
                f"{st['inference_seconds']} |")
    with open(README) as handle:
        text = handle.read()
    head = text.split(STATS_MARKER)[0].rstrip("\n")
    with open(README, "w") as handle:
        handle.write(head + "\n\n" + "\n".join(lines) + "\n")


def load_manifest() -> dict:
    if os.path.exists(MANIFEST):
        with open(MANIFEST) as handle:
            return json.load(handle)
    return {}


def record_alternates(manifest: dict, variants: List[str], files: List[str]) -> None:
    """Run MMDetection on this machine and store its outputs beside the primary goldens where they differ."""
    description = machine_description()
    name = machine_name(description)
    print(f"[alternates] this machine: {name} {json.dumps(description)}", flush=True)
    preprocessed = {}
    for file_name in files:
        with open(os.path.join(PREPROCESSED_DIR, stem_of(file_name) + ".json")) as handle:
            preprocessed[stem_of(file_name)] = json.load(handle)
    with tempfile.TemporaryDirectory() as workdir:
        for variant in variants:
            entry = manifest["variants"][variant]
            if entry["state_dict_sha256"] != sw.state_dict_sha256(sw.make_synthetic_state_dict(variant)):
                raise RuntimeError(f"{variant}: the synthetic weights no longer match the manifest; regenerate the "
                                   "primary goldens first")
            wanted = VARIANT_IMAGES.get(variant)
            variant_files = [f for f in files if (wanted is None or stem_of(f) in wanted)
                             and stem_of(f) in entry.get("cases", {})]
            print(f"[alternates] {variant}", flush=True)
            for stem, stats in run_golden(variant, workdir, variant_files, preprocessed, alternate=name).items():
                entry["cases"][stem].setdefault("alternates", {})[name] = {"machine": description, "stats": stats}
    with open(MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", action="store_true", help="redraw the fixture images")
    parser.add_argument("--calibrate", action="store_true", help="redo the calibration of the selected variants")
    parser.add_argument("--variants", nargs="+", default=list(VARIANT_IMAGES))
    parser.add_argument("--images-only", nargs="+", default=None, metavar="STEM")
    parser.add_argument("--no-golden", action="store_true")
    parser.add_argument("--alternates", action="store_true",
                        help="keep the stored goldens; store this machine's outputs where they differ (see "
                             "tools/golden.py golden_recordings)")
    args = parser.parse_args(argv)

    manifest = load_manifest()
    if args.alternates:
        files = [f for f in image_files() if args.images_only is None or stem_of(f) in args.images_only]
        record_alternates(manifest, args.variants, files)
        return
    if args.images or not os.path.isdir(IMAGES_DIR):
        manifest["images_described"] = make_images()
    files = image_files()
    if args.images_only:
        files = [f for f in files if stem_of(f) in args.images_only]

    manifest.setdefault("images", {})
    preprocessed = {}
    for file_name in image_files():
        stem = stem_of(file_name)
        json_path = os.path.join(PREPROCESSED_DIR, stem + ".json")
        if file_name in files or not os.path.exists(json_path):
            preprocessed[stem] = write_preprocessed(file_name)
        else:
            with open(json_path) as handle:
                preprocessed[stem] = json.load(handle)
        manifest["images"][stem] = {"file": file_name, "sha256": sha256_file(os.path.join(IMAGES_DIR, file_name)),
                                    "ori_shape": preprocessed[stem]["ori_shape"],
                                    "img_shape": preprocessed[stem]["img_shape"]}

    manifest["versions"] = versions()
    manifest["generator"] = "tools/make_golden.py"
    manifest.setdefault("variants", {})
    with tempfile.TemporaryDirectory() as workdir:
        for variant in args.variants:
            wanted = VARIANT_IMAGES.get(variant)
            variant_files = [f for f in files if wanted is None or stem_of(f) in wanted]
            if args.calibrate:  # calibrated on the images the variant's goldens use
                calibrate(variant, workdir, [f for f in image_files() if wanted is None or stem_of(f) in wanted])
            state_dict = sw.make_synthetic_state_dict(variant)
            entry = manifest["variants"].setdefault(variant, {})
            entry.update({
                "config_name": sw.config_name_of(variant),
                "mmdet_config_file": f"mmdet/.mim/configs/mask_rcnn/{sw.config_name_of(variant)}.py",
                "normalization": normalization_of(variant),
                "seed": 0,
                "state_dict_sha256": sw.state_dict_sha256(state_dict),
                "calibration_file": os.path.relpath(sw.calibration_path(variant), REPO_ROOT),
                "calibration_sha256": sha256_file(sw.calibration_path(variant)),
            })
            if args.no_golden:
                continue
            print(f"[golden] {variant}", flush=True)
            entry.setdefault("cases", {}).update(run_golden(variant, workdir, variant_files, preprocessed))
            with open(MANIFEST, "w") as handle:
                json.dump(manifest, handle, indent=1, sort_keys=True)
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    with open(MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    update_readme_stats(manifest)


if __name__ == "__main__":
    main()
