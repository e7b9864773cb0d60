# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""`image-segmentation` and `object-detection` pipelines for MMDetection's Mask R-CNN (transformers custom code).

Registered through `config.json["custom_pipelines"]`, so a Hub user gets them with

    from transformers import pipeline
    segmenter = pipeline("image-segmentation", model=REPO, trust_remote_code=True, device="cpu")
    detector = pipeline("object-detection", model=REPO, trust_remote_code=True, device="cpu")

Inputs: one image or a list of images (path, http(s) URL, base64 string / data URI, encoded bytes, PIL image of any
mode, numpy array, torch tensor). Paths, bytes and PIL images are decoded by the image processor itself (its
`load_image`: EXIF orientation applied, PIL mode kept, 16-bit data kept), so pipeline results equal
`MaskRCNNImageProcessor` + model + `post_process_*` on the same file.

`batch_size=N` runs real batched forward passes: images of different sizes are zero-padded together (right/bottom,
to a multiple of `size_divisor`) exactly as `MaskRCNNImageProcessor` pads a list of images, as MMDetection does.

`errors="return"` keeps a batch going when some inputs fail: each failed input gives `{"error": "<reason>"}` in its
place (unreadable, corrupt or too large images, bad arrays, failed downloads, or the model failing on that image alone)
and every other input keeps its normal result. The default `errors="raise"` raises the first failure.

Outputs per image, sorted by descending score:
* segmentation: `[{"score": float, "label": str, "mask": PIL.Image mode "L" (0/255, original size), "box": {...}}]`
* detection:    `[{"score": float, "label": str, "box": {"xmin", "ymin", "xmax", "ymax"}}]` (ints, truncated like
  transformers' built-in object-detection pipeline).

Serving (Inference Endpoints, the Hub widget): `MaskRCNNRequestHandler` answers requests in the Hub's wire format —
the same annotations as above with every value a plain JSON type (masks as base64 PNG or COCO RLE). `handler.py`'s
`EndpointHandler` and this module's `PreTrainedPipeline` (the toolkit's legacy entry point) are thin faces of it.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import json
import logging
import os
import re
import shutil
import sys
import urllib.request
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import transformers
from PIL import Image
from transformers import AutoImageProcessor, Pipeline

try:  # a package sibling (transformers' module cache)
    from .image_processing_mask_rcnn import encode_mask_rle as _encode_mask_rle_array
    from .inference_mask_rcnn import (DTYPE_ENVIRONMENT_VARIABLE, describe_failure, label_name,
                                      prepare_model_for_inference, resolve_compute_dtype, run_with_per_image_fallback)
except ImportError:  # a top-level module (tests, scripts, the toolkit loading this file by its location)
    _encode_mask_rle_array = importlib.import_module("image_processing_mask_rcnn").encode_mask_rle
    _inference = importlib.import_module("inference_mask_rcnn")
    DTYPE_ENVIRONMENT_VARIABLE = _inference.DTYPE_ENVIRONMENT_VARIABLE
    describe_failure, label_name = _inference.describe_failure, _inference.label_name
    prepare_model_for_inference = _inference.prepare_model_for_inference
    resolve_compute_dtype = _inference.resolve_compute_dtype
    run_with_per_image_fallback = _inference.run_with_per_image_fallback

logger = logging.getLogger(__name__)

# The two tasks this repository serves; `save_pretrained` writes both back (transformers would keep at most one).
CUSTOM_PIPELINES: Dict[str, Dict[str, Any]] = {
    "image-segmentation": {"impl": "pipeline.MaskRCNNSegmentationPipeline",
                           "pt": ["AutoModelForInstanceSegmentation"], "type": "image"},
    "object-detection": {"impl": "pipeline.MaskRCNNDetectionPipeline",
                         "pt": ["AutoModelForObjectDetection"], "type": "image"},
}
# Code files a saved folder needs for `trust_remote_code=True` loading (auto_map + custom_pipelines refer to them).
CODE_FILES = ("configuration_mask_rcnn.py", "modeling_mask_rcnn.py", "image_processing_mask_rcnn.py", "pipeline.py")
# copied too when found beside the loaded code or in the model folder: the Inference Endpoints entry point
OPTIONAL_CODE_FILES = ("handler.py",)

_URL_PATTERN = re.compile(r"^https?://", re.IGNORECASE)
_DATA_URI_PATTERN = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_BASE64_PATTERN = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")
_RELATIVE_IMPORT_PATTERN = re.compile(r"^\s*from\s+\.(\w+)\s+import", re.MULTILINE)
# `errors=` of the pipelines: "raise" the first failure (default) or "return" {"error": reason} for each failed input.
ERROR_MODES = ("raise", "return")


def _fetch_url(url: str, timeout: Optional[float]) -> bytes:
    """Encoded bytes of an http(s) image; `timeout` in seconds (None: no limit)."""
    request = urllib.request.Request(url, headers={"User-Agent": "mask-rcnn-hub-pipeline"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except OSError as error:  # URLError, HTTPError and socket timeouts are all OSErrors
        raise OSError(f"Could not download image {url!r} (timeout={timeout}): {error}") from error


def resolve_image_source(image: Any, timeout: Optional[float] = None) -> Any:
    """What the image processor decodes: a path stays a path; URLs, base64 strings and data URIs become bytes.

    PIL images, bytes, numpy arrays and tensors are returned unchanged (the processor reads all of them).
    """
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if not isinstance(image, str):
        return image
    if _URL_PATTERN.match(image):
        return _fetch_url(image, timeout)
    if os.path.isfile(image):
        return image
    text = _DATA_URI_PATTERN.sub("", image, count=1)
    if text != image or (len(text) >= 16 and _BASE64_PATTERN.match(text)):
        try:
            return base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError) as error:
            raise ValueError(f"Could not decode the base64 image string: {error}") from error
    raise FileNotFoundError(f"Image file not found: {image!r} (not an http(s) URL or a base64 image either).")


def _as_size_tuple(value: Any) -> tuple:
    values = value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else list(value)
    return tuple(values)


class MaskRCNNPipelineBase(Pipeline):
    """Shared pre-processing, batched forward and result formatting of the two Mask R-CNN pipelines.

    Subclasses implement `_post_process(outputs, **postprocess_kwargs)`: one call of the image processor's
    `post_process_*` on a single-image batch, returning its result dict (`scores`, `labels`, `boxes`, ...).
    """

    _load_image_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self, "image_processor", None) is None:
            # transformers < 4.5x does not hand an image processor to a custom pipeline whose config is remote code.
            source = getattr(self.model, "name_or_path", None) or getattr(self.model.config, "_name_or_path", None)
            if not source:
                raise ValueError("No image processor: pass image_processor=MaskRCNNImageProcessor(...) to the pipeline.")
            self.image_processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=True)

    # ------------------------------------------------------------------------------------------- parameters
    def _sanitize_parameters(self, threshold=None, timeout=None, errors=None, **kwargs):
        preprocess_kwargs, forward_kwargs, postprocess_kwargs = {}, {}, {}
        if timeout is not None:
            preprocess_kwargs["timeout"] = timeout
        if errors is not None:
            if errors not in ERROR_MODES:
                raise ValueError(f"errors must be 'raise' (the default) or 'return', got {errors!r}.")
            preprocess_kwargs["errors"] = forward_kwargs["errors"] = errors
        if threshold is not None:
            postprocess_kwargs["threshold"] = self._checked_fraction("threshold", threshold)
        postprocess_kwargs.update(self._sanitize_task_parameters(**kwargs))
        return preprocess_kwargs, forward_kwargs, postprocess_kwargs

    def _sanitize_task_parameters(self, **kwargs) -> Dict[str, Any]:
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}.")
        return {}

    @staticmethod
    def _checked_fraction(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}.")
        return float(value)

    def __call__(self, inputs=None, **kwargs):
        """Run on one image (returns a list of dicts) or a list of images (returns a list of such lists).

        Args:
            inputs: path, http(s) URL, base64 string, bytes, PIL image, numpy array or tensor, or a list of them.
                `images=` is accepted as an alias.
            threshold (`float`, defaults to 0.5): keep detections with `score >= threshold`.
            timeout (`float`, *optional*): seconds to wait for URL downloads.
            batch_size (`int`, *optional*): images per forward pass (images are padded together).
            errors (`str`, defaults to `"raise"`): `"return"` gives `{"error": "<exception class>: <message>"}` in
                place of the result of each input that cannot be read or that the model fails on (a failed batch is
                retried image by image), and the normal results of all other inputs.
        """
        if "images" in kwargs:
            if inputs is not None:
                raise ValueError("Pass the images either as the first argument or as images=, not both.")
            inputs = kwargs.pop("images")
        if inputs is None:
            raise ValueError("No image given: call the pipeline with an image or a list of images.")
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list) and not inputs:
            return []
        return super().__call__(inputs, **kwargs)

    # ------------------------------------------------------------------------------------------- stages
    def preprocess(self, image, timeout=None, errors="raise"):
        try:
            features = self.image_processor(images=resolve_image_source(image, timeout), return_tensors="pt")
            if features["pixel_values"].shape[0] != 1:
                raise ValueError(f"Each input must be one image, got a stack of {features['pixel_values'].shape[0]} "
                                 "(a 4-D array or tensor); pass a list of images instead.")
        except Exception as error:  # with errors="return" any failure to read one input fails that input only
            if errors != "return":
                raise
            return {"images": [{"error": describe_failure(error)}]}
        # One list-wrapped entry per image: the DataLoader's collate gathers lists instead of concatenating
        # `pixel_values` of different sizes; `_forward` pads them together. Sizes stay Python tuples (CPU only).
        return {
            "images": [{
                "pixel_values": features["pixel_values"],
                "image_size": _as_size_tuple(features["image_sizes"]),
                "original_size": _as_size_tuple(features["original_sizes"]),
                "scale_factor": _as_size_tuple(features["scale_factors"]),
            }]
        }

    def _forward(self, model_inputs, errors="raise"):
        per_image: List[Dict[str, Any]] = []
        for entry in model_inputs["images"]:  # [feature] with batch_size=1, [[feature], [feature], ...] otherwise
            per_image.extend(entry if isinstance(entry, list) else [entry])
        readable = [item for item in per_image if "error" not in item]  # failed inputs exist with errors="return"
        if errors == "return":  # a failed batch is retried image by image; the others keep their results
            outcomes = run_with_per_image_fallback(readable, self._detect)
            outcomes = [{"error": describe_failure(outcome)} if isinstance(outcome, BaseException) else outcome
                        for outcome in outcomes]
        else:
            outcomes = self._detect(readable) if readable else []
        detections = dict(zip(map(id, readable), outcomes))
        # First key is a list: the pipeline's un-batching hands each image its own dict.
        return {"detections": [item if "error" in item else detections[id(item)] for item in per_image]}

    def _detect(self, per_image: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """One padded forward pass over preprocessed images -> per image detections and sizes (CPU tensors).

        The images are padded together by the image processor's own `pad`, so a batch equals the processor's
        padding of the same list of images.
        """
        pixel_values = self.image_processor.pad([item["pixel_values"] for item in per_image])
        image_sizes = torch.tensor([item["image_size"] for item in per_image], dtype=torch.int64)
        outputs = self.model(pixel_values=pixel_values.to(device=self.device, dtype=self.model.dtype),
                             image_sizes=image_sizes)
        results = []
        for index, item in enumerate(per_image):
            results.append({
                "pred_boxes": outputs.pred_boxes[index].float(),
                "scores": outputs.scores[index].float(),
                "labels": outputs.labels[index],
                "mask_probs": outputs.mask_probs[index].float(),
                "image_size": item["image_size"],
                "original_size": item["original_size"],
                "scale_factor": item["scale_factor"],
            })
        return results

    def postprocess(self, model_outputs, **postprocess_kwargs):
        detections = model_outputs["detections"]
        if isinstance(detections, list):  # batch_size=1: not un-batched
            detections = detections[0]
        if "error" in detections:  # errors="return": this input failed
            return {"error": detections["error"]}
        outputs = {
            "pred_boxes": [detections["pred_boxes"]],
            "scores": [detections["scores"]],
            "labels": [detections["labels"]],
            "mask_probs": [detections["mask_probs"]],
            "image_sizes": torch.tensor([detections["image_size"]], dtype=torch.int64),
            "original_sizes": torch.tensor([detections["original_size"]], dtype=torch.int64),
            "scale_factors": torch.tensor([detections["scale_factor"]], dtype=torch.float64),
        }
        result = self._post_process(outputs, **postprocess_kwargs)
        annotations = []
        for index in range(result["scores"].shape[0]):
            annotation = {"score": float(result["scores"][index]), "label": self._label(result["labels"][index])}
            annotation.update(self._extra_fields(result, index))
            annotation["box"] = self._box(result["boxes"][index])
            annotations.append(annotation)
        annotations.sort(key=lambda annotation: annotation["score"], reverse=True)  # stable: keeps ties' order
        return annotations

    def _post_process(self, outputs: Dict[str, Any], **kwargs) -> Dict[str, Any]:
        raise NotImplementedError

    def _extra_fields(self, result: Dict[str, Any], index: int) -> Dict[str, Any]:
        return {}

    def _label(self, label_id: torch.Tensor) -> str:
        return label_name(self.model.config.id2label, label_id)

    @staticmethod
    def _box(box: torch.Tensor) -> Dict[str, int]:
        xmin, ymin, xmax, ymax = box.int().tolist()  # truncation, like transformers' object-detection pipeline
        return {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}

    # ------------------------------------------------------------------------------------------- saving
    def save_pretrained(self, save_directory, **kwargs):
        """Save model, image processor, `config.json` with BOTH custom pipelines, and every code file.

        transformers' own `Pipeline.save_pretrained` keeps at most the one task a class was registered for and
        (4.46) may omit `modeling_mask_rcnn.py`; the result here always reloads with `trust_remote_code=True`.
        `push_to_hub=True` uploads the folder after it is complete.
        """
        push_to_hub = kwargs.pop("push_to_hub", False)
        hub_kwargs = {name: kwargs.pop(name) for name in ("repo_id", "token", "commit_message", "private")
                      if name in kwargs}
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory} is a file; save_pretrained needs a folder.")
        os.makedirs(save_directory, exist_ok=True)
        self.model.config.custom_pipelines = json.loads(json.dumps(CUSTOM_PIPELINES))
        super().save_pretrained(save_directory, **kwargs)
        self._copy_code_files(save_directory)
        self._complete_config_json(os.path.join(save_directory, "config.json"))
        self._complete_preprocessor_json(os.path.join(save_directory, "preprocessor_config.json"))
        if push_to_hub:
            from huggingface_hub import HfApi

            repo_id = hub_kwargs.get("repo_id") or os.path.basename(os.path.abspath(save_directory))
            api = HfApi(token=hub_kwargs.get("token"))
            api.create_repo(repo_id, private=hub_kwargs.get("private"), exist_ok=True)
            api.upload_folder(folder_path=str(save_directory), repo_id=repo_id,
                              commit_message=hub_kwargs.get("commit_message") or "Upload Mask R-CNN pipeline")

    def _code_directories(self) -> List[str]:
        directories = []
        for obj in (self, self.model, self.model.config, self.image_processor):
            module = sys.modules.get(type(obj).__module__)
            path = getattr(module, "__file__", None)
            if path and os.path.dirname(os.path.abspath(path)) not in directories:
                directories.append(os.path.dirname(os.path.abspath(path)))
        return directories

    def _copy_code_files(self, save_directory) -> None:
        target = os.path.abspath(save_directory)
        wanted = list(CODE_FILES)
        copied = set()
        while wanted:
            name = wanted.pop(0)
            if name in copied:
                continue
            source = next((os.path.join(d, name) for d in self._code_directories()
                           if os.path.isfile(os.path.join(d, name))), None)
            if source is None:
                raise FileNotFoundError(f"Cannot save the pipeline: {name} was not found next to the loaded code.")
            if os.path.abspath(source) != os.path.join(target, name):
                shutil.copyfile(source, os.path.join(target, name))
            copied.add(name)
            with open(source, encoding="utf-8") as handle:
                wanted.extend(f"{module}.py" for module in _RELATIVE_IMPORT_PATTERN.findall(handle.read()))
        model_folder = getattr(self.model, "name_or_path", "") or ""
        for name in OPTIONAL_CODE_FILES:
            for directory in [*self._code_directories(), model_folder]:
                source = os.path.join(directory, name)
                if directory and os.path.isfile(source):
                    if os.path.abspath(source) != os.path.join(target, name):
                        shutil.copyfile(source, os.path.join(target, name))
                    break

    def _complete_config_json(self, path: str) -> None:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
        auto_map = dict(config.get("auto_map") or {})
        model_ref = f"modeling_mask_rcnn.{type(self.model).__name__}"
        auto_map.setdefault("AutoConfig", f"configuration_mask_rcnn.{type(self.model.config).__name__}")
        for auto_class in ("AutoModel", "AutoModelForInstanceSegmentation", "AutoModelForObjectDetection"):
            if hasattr(transformers, auto_class):  # skip Auto classes this transformers version lacks
                auto_map.setdefault(auto_class, model_ref)
        config["auto_map"] = auto_map
        config["custom_pipelines"] = json.loads(json.dumps(CUSTOM_PIPELINES))
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2, sort_keys=True)
            handle.write("\n")


    def _complete_preprocessor_json(self, path: str) -> None:
        """An image processor built in code (not loaded) writes no auto_map; add it so AutoImageProcessor works."""
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
        class_name = type(self.image_processor).__name__
        content.setdefault("image_processor_type", class_name)
        content["auto_map"] = {**(content.get("auto_map") or {}),
                               "AutoImageProcessor": f"image_processing_mask_rcnn.{class_name}"}
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)
            handle.write("\n")


class MaskRCNNSegmentationPipeline(MaskRCNNPipelineBase):
    """Instance segmentation: one mask (PIL "L", 0/255, original size), box, label and score per instance.

    Call arguments: `threshold` (0.5), `mask_threshold` (0.5: a pixel belongs to the instance when its pasted
    probability is >= this), `subtask` (only `"instance"`), `timeout`, `batch_size`. Unlike transformers'
    built-in image-segmentation pipeline, overlapping instances each keep their full mask.
    """

    def _sanitize_task_parameters(self, mask_threshold=None, subtask=None, overlap_mask_area_threshold=None,
                                  **kwargs) -> Dict[str, Any]:
        super()._sanitize_task_parameters(**kwargs)
        if subtask is not None and subtask != "instance":
            raise ValueError(
                f"Mask R-CNN does instance segmentation only: subtask must be 'instance' (or left out), got "
                f"{subtask!r}. For semantic or panoptic maps use a model trained for that task.")
        # overlap_mask_area_threshold (a parameter of the Hub's image-segmentation API) only matters when instances
        # are cut out of one id map; here every instance keeps its own mask, so it is accepted and has no effect.
        return {"mask_threshold": self._checked_fraction("mask_threshold", mask_threshold)} \
            if mask_threshold is not None else {}

    def _post_process(self, outputs, threshold=0.5, mask_threshold=0.5):
        return self.image_processor.post_process_instance_segmentation(
            outputs, threshold=threshold, mask_threshold=mask_threshold)[0]

    def _extra_fields(self, result, index):
        mask = result["masks"][index].to(torch.uint8).mul_(255).numpy()
        return {"mask": Image.fromarray(np.ascontiguousarray(mask))}  # uint8 (H, W) -> mode "L"


class MaskRCNNDetectionPipeline(MaskRCNNPipelineBase):
    """Object detection: `[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}]` per image, like
    transformers' built-in object-detection pipeline. Call arguments: `threshold` (0.5), `timeout`, `batch_size`."""

    def _post_process(self, outputs, threshold=0.5):
        return self.image_processor.post_process_object_detection(outputs, threshold=threshold)[0]


# ==================================================================================================================
# Serving from the Hub: the wire format, Inference Endpoints requests (handler.py) and the toolkit's legacy entry point
# ==================================================================================================================

SERVING_TASKS = ("image-segmentation", "object-detection")
MASK_FORMATS = ("png", "rle")
URL_TIMEOUT_SECONDS = 10.0
# Request parameters accepted per task. `overlap_mask_area_threshold` and `subtask` are parameters of the Hub's
# image-segmentation API; they are checked and have no effect (every instance keeps its own full mask).
TASK_PARAMETERS: Dict[str, Tuple[str, ...]] = {
    "image-segmentation": ("task", "threshold", "mask_threshold", "mask_format", "overlap_mask_area_threshold",
                           "subtask"),
    "object-detection": ("task", "threshold"),
}
_FRACTION_PARAMETERS = ("threshold", "mask_threshold", "overlap_mask_area_threshold")
_PIPELINE_PARAMETERS = ("threshold", "mask_threshold")
_BOX_KEYS = ("xmin", "ymin", "xmax", "ymax")
_BASE64_TEXT_PATTERN = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


class BadRequestError(ValueError):
    """A request that cannot be answered; the message is one sentence for the client (the toolkit answers HTTP 400)."""


def encode_mask_png(mask: Union[Image.Image, np.ndarray, torch.Tensor]) -> str:
    """A binary mask -> base64 PNG of mode "L" with values 0 and 255, at the mask's own size (no data-URI prefix).

    Takes the pipeline's PIL "L" masks as they are; arrays/tensors (H, W) count every non-zero pixel as "in".
    """
    if isinstance(mask, Image.Image):
        image = mask if mask.mode == "L" else mask.convert("L")
    else:
        array = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        image = Image.fromarray(np.where(array > 0, 255, 0).astype(np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_mask_rle(mask: Union[Image.Image, np.ndarray, torch.Tensor]) -> Dict[str, Any]:
    """A binary mask (non-zero is "in") -> COCO compressed RLE `{"size": [H, W], "counts": str}`, encoded by the
    image processor's `encode_mask_rle` (pycocotools).

    Raises:
        BadRequestError: pycocotools is not installed (the message says how to get it or what to ask for instead).
    """
    try:
        return _encode_mask_rle_array(np.asarray(mask) if isinstance(mask, Image.Image) else mask)
    except ImportError:
        raise BadRequestError("mask_format 'rle' needs pycocotools, which this server does not have; ask for 'png' "
                              "or add pycocotools to the repository's requirements.txt.") from None


def to_wire_format(annotations: Sequence[Mapping[str, Any]], mask_format: str = "png") -> List[Dict[str, Any]]:
    """Pipeline annotations -> the Hub's wire format, made of plain Python types only (`json.dumps` works).

    Each item is `{"score": float, "label": str, "box": {"xmin", "ymin", "xmax", "ymax": int}}`, plus `"mask"` when
    the annotation has one: a base64 PNG (mode "L", 0/255, original image size; what the Hub widget draws) or, with
    `mask_format="rle"`, COCO compressed RLE. The order is kept (the pipelines sort by descending score).
    """
    if mask_format not in MASK_FORMATS:
        raise BadRequestError(f"Unknown mask_format {mask_format!r}: use 'png' or 'rle'.")
    encode_mask = encode_mask_png if mask_format == "png" else encode_mask_rle
    wire = []
    for annotation in annotations:
        item: Dict[str, Any] = {
            "score": float(annotation["score"]),
            "label": str(annotation["label"]),
            "box": {key: int(annotation["box"][key]) for key in _BOX_KEYS},
        }
        if "mask" in annotation:
            item["mask"] = encode_mask(annotation["mask"])
        wire.append(item)
    return wire


def _fraction_parameter(name: str, value: Any) -> float:
    """A parameter in [0, 1]; query-string parameters arrive as text ("0.3") and are read as numbers."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise BadRequestError(f"{name} must be a number between 0 and 1, got {value!r}.") from None
    try:
        return MaskRCNNPipelineBase._checked_fraction(name, value)
    except ValueError as error:
        raise BadRequestError(str(error)) from None


def parse_request_parameters(parameters: Any) -> Tuple[str, Dict[str, float], str]:
    """`data["parameters"]` -> (task, keyword arguments for the task's pipeline, mask format), or BadRequestError."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, Mapping):
        raise BadRequestError(f"'parameters' must be a JSON object, got {type(parameters).__name__}.")
    task = parameters.get("task")
    task = "image-segmentation" if task is None else task
    if task not in SERVING_TASKS:
        raise BadRequestError(f"Unknown task {task!r}: use 'image-segmentation' or 'object-detection'.")
    unknown = sorted(str(name) for name in parameters if name not in TASK_PARAMETERS[task])
    if unknown:
        raise BadRequestError(f"Unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
                              f"for task {task!r}: use {', '.join(TASK_PARAMETERS[task])}.")
    values = {name: _fraction_parameter(name, parameters[name]) for name in _FRACTION_PARAMETERS
              if parameters.get(name) is not None}
    subtask = parameters.get("subtask")
    if subtask is not None and subtask != "instance":
        raise BadRequestError(f"subtask must be 'instance' (Mask R-CNN segments object instances), got {subtask!r}.")
    mask_format = parameters.get("mask_format")
    mask_format = "png" if mask_format is None else mask_format
    if mask_format not in MASK_FORMATS:
        raise BadRequestError(f"Unknown mask_format {mask_format!r}: use 'png' or 'rle'.")
    if mask_format == "rle":
        encode_mask_rle(np.zeros((1, 1), dtype=bool))  # without pycocotools: the BadRequestError that says so
    return task, {name: value for name, value in values.items() if name in _PIPELINE_PARAMETERS}, mask_format


def _request_text_to_bytes(text: str, timeout: Optional[float]) -> bytes:
    """An http(s) URL (downloaded) or base64 image data, plain or as a data URI. Never a path on the server."""
    text = text.strip()
    if _URL_PATTERN.match(text):
        try:
            return _fetch_url(text, timeout)
        except OSError as error:
            raise BadRequestError(f"{str(error).rstrip('.')}.") from None
    payload = "".join(_DATA_URI_PATTERN.sub("", text, count=1).split())  # MIME-style base64 may hold line breaks
    if not _BASE64_TEXT_PATTERN.fullmatch(payload):
        raise BadRequestError("'inputs' is text but neither an http(s) URL nor base64 image data.")
    try:
        return base64.b64decode(payload.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("'inputs' is not valid base64 (its length or padding is wrong).") from None


def decode_request_image(inputs: Any, load_image: Callable[[bytes], Image.Image],
                         timeout: Optional[float] = URL_TIMEOUT_SECONDS) -> Image.Image:
    """`data["inputs"]` -> an image the pipelines take, or BadRequestError.

    A PIL image (what the toolkit makes of an `image/*` body) is returned as it is. Bytes, base64 text (plain or a
    data URI) and http(s) URLs are decoded with `load_image` (the image processor's decoder: EXIF orientation applied,
    16-bit data kept), so their results equal the pipelines' on the same file.
    """
    if isinstance(inputs, Image.Image):
        return inputs
    if isinstance(inputs, str):
        encoded = _request_text_to_bytes(inputs, timeout)
    elif isinstance(inputs, (bytes, bytearray, memoryview)):
        encoded = bytes(inputs)
    else:
        raise BadRequestError(f"'inputs' must be an image (base64 text, a data URI, an http(s) URL or image bytes), "
                              f"got {type(inputs).__name__}.")
    if not encoded:
        raise BadRequestError("'inputs' is empty.")
    try:
        return load_image(encoded)
    except OSError as error:
        if isinstance(error, ValueError):  # ImageTooLargeError: a readable header announcing too many pixels
            raise BadRequestError(f"'inputs' is refused: {error}") from None
        raise BadRequestError(f"'inputs' could not be decoded as an image ({len(encoded)} bytes that are not a "
                              "complete JPEG, PNG or other image file).") from None


def serving_dtype(name: Optional[str] = None) -> torch.dtype:
    """The dtype named by `name`, else by the MASK_RCNN_DTYPE environment variable, else float32
    (`inference_mask_rcnn.resolve_compute_dtype`)."""
    return resolve_compute_dtype(name)


def _serving_classes() -> Tuple[Any, Any, Callable[[bytes], Image.Image], type]:
    """Model class, image processor class, image decoder and the processor's too-many-pixels error from the code
    files next to this one.

    Imported the way this file was: as package siblings (transformers' module cache) or, when this file was loaded by
    location with its folder on `sys.path` (how Inference Endpoints load handler.py / pipeline.py), as top-level
    modules of that folder.
    """
    try:
        from .image_processing_mask_rcnn import ImageTooLargeError, MaskRCNNImageProcessor, load_image
        from .modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
    except ImportError:
        from image_processing_mask_rcnn import ImageTooLargeError, MaskRCNNImageProcessor, load_image
        from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
    return MaskRCNNForInstanceSegmentation, MaskRCNNImageProcessor, load_image, ImageTooLargeError


class MaskRCNNRequestHandler:
    """Loads a converted folder once and answers requests in the Hub's wire format; safe to call from many threads.

    `handle({"inputs": ..., "parameters": {...}})` is what `handler.EndpointHandler.__call__` and
    `PreTrainedPipeline.__call__` do. Inputs: a PIL image, image bytes, base64 text (plain or data URI) or an http(s)
    URL. Parameters: `task` ("image-segmentation", default, or "object-detection"), `threshold` (0.5),
    `mask_threshold` (0.5), `mask_format` ("png", default, or "rle"), and the Hub API's `overlap_mask_area_threshold`
    and `subtask` ("instance"), which have no effect. Bad requests raise `BadRequestError` (a `ValueError`) with one
    sentence; any other failure is logged with its traceback and raised as a one-sentence `RuntimeError`.

    Thread safety: the model runs in eval mode without autograd and keeps nothing between calls; the pipelines keep
    each call's parameters local; a request's image is decoded into its own objects. Concurrent calls therefore give
    the same answers as sequential ones (tests/test_handler.py checks it with 8 threads).

    Args:
        path: converted model folder (config.json, preprocessor_config.json, model.safetensors).
        device: "cpu", "cuda", "cuda:1"; default CUDA when torch sees a GPU, else CPU.
        dtype: "float32", "bfloat16" or "float16"; default the MASK_RCNN_DTYPE environment variable, else float32.
    """

    def __init__(self, path: str, device: Optional[Union[str, torch.device]] = None, dtype: Optional[str] = None):
        model_class, processor_class, load_image, self._image_too_large_error = _serving_classes()
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = resolve_compute_dtype(dtype)
        model = prepare_model_for_inference(model_class.from_pretrained(path), self.dtype, self.device)
        processor = processor_class.from_pretrained(path)
        self.model, self.image_processor, self._load_image = model, processor, load_image
        self.pipelines = {
            "image-segmentation": MaskRCNNSegmentationPipeline(model=model, image_processor=processor,
                                                               device=self.device),
            "object-detection": MaskRCNNDetectionPipeline(model=model, image_processor=processor, device=self.device),
        }

    def handle(self, data: Any) -> List[Dict[str, Any]]:
        """Answer one request `{"inputs": image, "parameters": {...}}` (see the class docstring)."""
        try:
            if not isinstance(data, Mapping):
                raise BadRequestError(f"The request must be a JSON object with an 'inputs' field, got "
                                      f"{type(data).__name__}.")
            if data.get("inputs") is None:
                raise BadRequestError("The request has no 'inputs': send the image as an image/* body or as JSON "
                                      "{\"inputs\": <base64 image or http(s) URL>}.")
            task, pipeline_kwargs, mask_format = parse_request_parameters(data.get("parameters"))
            image = decode_request_image(data["inputs"], self._load_image)
            annotations = self.pipelines[task](image, **pipeline_kwargs)
            return to_wire_format(annotations, mask_format)
        except BadRequestError:
            raise
        except self._image_too_large_error as error:  # e.g. a toolkit-decoded PIL image over the limit
            raise BadRequestError(f"'inputs' is refused: {error}") from None
        except Exception as error:  # never a stack trace or internal detail to the client; the log keeps both
            logger.exception("Mask R-CNN request failed")
            raise RuntimeError(f"Mask R-CNN inference failed on the server ({type(error).__name__}); the server log "
                               "has the details.") from None


class PreTrainedPipeline(MaskRCNNRequestHandler):
    """The legacy serving entry point: `pipeline.py` with `PreTrainedPipeline(path)`, as huggingface-inference-toolkit
    loads it when a repository has no handler.py (and as the Hub's former widget backend called it).

    `__call__(image)` answers with the wire format and default parameters (image segmentation, PNG masks); the
    toolkit passes the whole request instead (`{"inputs": ..., "parameters": {...}}`), which is answered like
    `handler.EndpointHandler` does.
    """

    def __init__(self, path: str = ""):
        super().__init__(path or os.path.dirname(os.path.abspath(__file__)))

    def __call__(self, inputs: Union[Image.Image, Mapping[str, Any], Any]) -> List[Dict[str, Any]]:
        if isinstance(inputs, Mapping):
            return self.handle(inputs)
        return self.handle({"inputs": inputs})


__all__ = ["MaskRCNNSegmentationPipeline", "MaskRCNNDetectionPipeline", "MaskRCNNPipelineBase", "CUSTOM_PIPELINES",
           "MaskRCNNRequestHandler", "PreTrainedPipeline", "BadRequestError", "to_wire_format", "encode_mask_png",
           "encode_mask_rle", "decode_request_image", "parse_request_parameters", "serving_dtype"]
