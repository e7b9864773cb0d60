# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""MMDetection 3.3.0 side of the fixtures (needs the reference venv, tools/setup_mmdet_reference.sh): build
MMDetection's model on a synthetic checkpoint, capture its intermediate results, and write the preprocessed inputs.

Models are built with mmdet's ``init_detector(config_file, checkpoint_file, device="cpu")`` from a synthetic
checkpoint written in MMDetection's layout. `Capture` records intermediate results by wrapping methods of the model
instance (nothing of mmdet is modified). mmdet, mmcv and torch are imported inside the functions, so importing this
module needs neither (the kernels must be pinned before torch loads: see tools/reference_kernels.py).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Dict, Optional

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from configuration_mask_rcnn import (  # noqa: E402
    CAFFE_STYLE_NORMALIZATION,
    DETECTRON2_RESNEXT_NORMALIZATION,
    PYTORCH_STYLE_NORMALIZATION,
)
from tools import synthetic_weights as sw  # noqa: E402
from tools.golden import IMAGES_DIR, PREPROCESSED_DIR, inputs_sha256, sha256_bytes  # noqa: E402
from tools.golden_images import stem_of  # noqa: E402



def data_preprocessor_arguments(preset: Dict[str, object]) -> Dict[str, object]:
    """A model-zoo normalisation preset of configuration_mask_rcnn as arguments of MMDetection's DetDataPreprocessor
    (which receives BGR images from its cv2 decode)."""
    return {"mean": list(preset["image_mean"]), "std": list(preset["image_std"]),
            "bgr_to_rgb": preset["input_channel_order"] == "rgb"}


# DetDataPreprocessor arguments by zoo style (the values of the mmdet configs' data_preprocessor)
NORMALIZATIONS = {style: data_preprocessor_arguments(preset) for style, preset in (
    ("pytorch", PYTORCH_STYLE_NORMALIZATION), ("caffe", CAFFE_STYLE_NORMALIZATION),
    ("c2", DETECTRON2_RESNEXT_NORMALIZATION))}


def mmdet_config_file(config_name: str) -> str:
    """Path of a zoo config file inside the installed mmdet package (mmdet/.mim/configs/mask_rcnn/)."""
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

        self._record_first_result(model.rpn_head, "predict", {"rpn_boxes": "bboxes", "rpn_scores": "scores"})
        roi_head = model.roi_head
        self._record_first_result(roi_head, "predict_bbox", {"det_boxes_resized": "bboxes",
                                                             "det_scores_resized": "scores",
                                                             "det_labels_resized": "labels"})

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

    def _record_first_result(self, owner, method_name: str, fields: Dict[str, str]) -> None:
        """Wrap `owner.<method_name>` (returning a list of InstanceData) so that each call records the first
        result's `fields` values: `{record name: InstanceData field}`."""
        original = getattr(owner, method_name)
        records = self.records

        def recording(*args, **kwargs):
            results = original(*args, **kwargs)
            for record_name, field in fields.items():
                records[record_name] = getattr(results[0], field).detach().clone()
            return results

        setattr(owner, method_name, recording)

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
            "sha256": inputs_sha256(inputs),
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

