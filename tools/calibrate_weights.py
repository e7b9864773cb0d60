# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Calibration of the synthetic weights with MMDetection's own model on the fixture images (reference venv).

Writes tests/fixtures/synthetic/<variant>_bn_stats.npz, read by tools/synthetic_weights.py: backbone batch-norm
running statistics, RPN biases, box-head direction/gains/biases and mask-head gain/bias, chosen so that the synthetic
detector produces a realistic number of detections on every fixture image (see tests/fixtures/README.md).

    /work/venv-mmdet-sys/bin/python tools/make_golden.py --calibrate
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Dict, List

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools import synthetic_weights as sw  # noqa: E402
from tools.golden import IMAGES_DIR  # noqa: E402
from tools.mmdet_capture import Capture, build_model, run_pipeline  # noqa: E402


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

