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

Serving (Inference Endpoints, the Hub widget) lives in serving_mask_rcnn.py: its `MaskRCNNRequestHandler` answers
requests in the Hub's wire format with these pipelines. `handler.py`'s `EndpointHandler` and `PreTrainedPipeline`
(huggingface-inference-toolkit's legacy entry point, which looks for it in pipeline.py; this module hands it out on
first access) are thin faces of it.
"""

from __future__ import annotations

import base64
import binascii
import functools
import importlib
import io
import logging
import os
import re
import urllib.request
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, Pipeline

try:  # a package sibling (transformers' module cache)
    from .inference_mask_rcnn import describe_failure, label_name, run_with_per_image_fallback
except ImportError:  # a top-level module (tests, scripts, the toolkit loading this file by its location)
    _inference = importlib.import_module("inference_mask_rcnn")
    describe_failure, label_name = _inference.describe_failure, _inference.label_name
    run_with_per_image_fallback = _inference.run_with_per_image_fallback

# transformers < 4.51 copies into its module cache only the siblings that the entry file (this one, for the
# pipelines) names in a relative import, yet opens every module reachable from it when it hashes the code. Its scanner
# reads the text, so naming the whole closure of sibling modules here is enough; they are imported where used.
# tests/test_hub_folder.py derives the closure of every entry file and checks that the file names all of it.
if TYPE_CHECKING:
    from .configuration_mask_rcnn import MaskRCNNConfig  # noqa: F401
    from .image_processing_mask_rcnn import MaskRCNNImageProcessor  # noqa: F401
    from .image_utils_mask_rcnn import load_image  # noqa: F401
    from .losses_mask_rcnn import GroundTruth  # noqa: F401
    from .modeling_mask_rcnn import MaskRCNNForInstanceSegmentation  # noqa: F401

logger = logging.getLogger(__name__)

URL_PATTERN = re.compile(r"^https?://", re.IGNORECASE)
DATA_URI_PATTERN = re.compile(r"^data:image/[\w.+-]+;base64,", re.IGNORECASE)
_BASE64_PATTERN = re.compile(r"^[A-Za-z0-9+/\s]+={0,2}$")
# Base64-looking text up to this length that does not decode to an image file is taken for a path (folder names
# without dots are base64 characters); longer text is image data (a file name is at most 255 bytes on most
# filesystems, and a path of base64 characters only, no dot, dash or underscore, that long is not met in practice).
_LONGEST_PATH_LIKE_TEXT = 255
# `errors=` of the pipelines: "raise" the first failure (default) or "return" {"error": reason} for each failed input.
ERROR_MODES = ("raise", "return")


def fetch_image_url(url: str, timeout: Optional[float]) -> bytes:
    """Encoded bytes of an http(s) image; `timeout` in seconds (None: no limit)."""
    request = urllib.request.Request(url, headers={"User-Agent": "mask-rcnn-hub-pipeline"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except OSError as error:  # URLError, HTTPError and socket timeouts are all OSErrors
        raise OSError(f"Could not download image {url!r} (timeout={timeout}): {error}") from error


def resolve_image_source(image: Any, timeout: Optional[float] = None) -> Any:
    """What the image processor decodes: a path stays a path; URLs, base64 strings and data URIs become bytes.

    PIL images, bytes, numpy arrays and tensors are returned unchanged (the processor reads all of them). Text that
    is not a URL, a data URI or base64 of an image file is a path and is returned as given, so the processor's
    `load_image` names it in its error when it is missing or a directory.

    Raises:
        ValueError: a data URI whose base64 payload cannot be decoded.
        OSError: a URL that cannot be downloaded.
    """
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if not isinstance(image, str):
        return image
    if URL_PATTERN.match(image):
        return fetch_image_url(image, timeout)
    if os.path.exists(image):
        return image
    text = DATA_URI_PATTERN.sub("", image, count=1)
    if text != image:  # a data URI: base64 image data for certain
        return _decode_base64(text)
    if len(text) >= 16 and _BASE64_PATTERN.match(text):
        if len(text) > _LONGEST_PATH_LIKE_TEXT:  # image data (the processor says if it is not an image)
            return _decode_base64(text)
        encoded = _decoded_image_or_none(text)
        if encoded is not None:
            return encoded
    return image  # a path that does not exist: the processor says so


def _decode_base64(text: str) -> bytes:
    """Bytes of base64 `text`, or a ValueError that says the text is not valid base64."""
    try:
        return base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError) as error:
        raise ValueError(f"Could not decode the base64 image string: {error}") from error


def _decoded_image_or_none(text: str) -> Optional[bytes]:
    """The bytes of base64 `text` when they start like an image file PIL can identify, else None (e.g. a path
    that happens to consist of base64 characters)."""
    try:
        encoded = _decode_base64(text)
    except ValueError:
        return None
    try:
        with Image.open(io.BytesIO(encoded)):  # reads the header only
            return encoded
    except Image.UnidentifiedImageError:
        return None
    except Exception:  # identified, but e.g. too large or truncated: the processor reports it with its own message
        return encoded


def checked_fraction(name: str, value: Any) -> float:
    """A parameter in [0, 1] (threshold, mask_threshold) as a float, or a ValueError that names it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}.")
    return float(value)


def _as_size_tuple(value: Any) -> tuple:
    values = value.reshape(-1).tolist() if isinstance(value, torch.Tensor) else list(value)
    return tuple(values)


DEFAULT_THRESHOLD = 0.5  # the pipelines' score threshold when the call gives none (model and post-processing)


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
            # the model computes masks only for the detections this threshold keeps (bit for bit the same ones)
            postprocess_kwargs["threshold"] = forward_kwargs["keep_score_threshold"] = checked_fraction(
                "threshold", threshold)
        postprocess_kwargs.update(self._sanitize_task_parameters(**kwargs))
        return preprocess_kwargs, forward_kwargs, postprocess_kwargs

    def _sanitize_task_parameters(self, **kwargs) -> Dict[str, Any]:
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected arguments {sorted(kwargs)}.")
        return {}

    def __call__(self, inputs=None, **kwargs):
        """Run on one image (returns a list of dicts) or a list of images (returns a list of such lists).

        Args:
            inputs: path, http(s) URL, base64 string, bytes, PIL image, numpy array or tensor, or a list of them.
                `images=` is accepted as an alias.
            threshold (`float`, defaults to 0.5): keep detections with `score >= threshold`; the model runs RoIAlign
                and the mask head only for those (`keep_score_threshold`; the kept results are bit for bit the same).
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

    def _forward(self, model_inputs, errors="raise", keep_score_threshold=DEFAULT_THRESHOLD):
        detect = functools.partial(self._detect, keep_score_threshold=keep_score_threshold)
        per_image: List[Dict[str, Any]] = []
        for entry in model_inputs["images"]:  # [feature] with batch_size=1, [[feature], [feature], ...] otherwise
            per_image.extend(entry if isinstance(entry, list) else [entry])
        readable = [item for item in per_image if "error" not in item]  # failed inputs exist with errors="return"
        if errors == "return":  # a failed batch is retried image by image; the others keep their results
            outcomes = run_with_per_image_fallback(readable, detect)
            outcomes = [{"error": describe_failure(outcome)} if isinstance(outcome, BaseException) else outcome
                        for outcome in outcomes]
        else:
            outcomes = detect(readable) if readable else []
        detections = dict(zip(map(id, readable), outcomes))
        # First key is a list: the pipeline's un-batching hands each image its own dict.
        return {"detections": [item if "error" in item else detections[id(item)] for item in per_image]}

    def _detect(self, per_image: List[Dict[str, Any]],
                keep_score_threshold: Optional[float] = DEFAULT_THRESHOLD) -> List[Dict[str, Any]]:
        """One padded forward pass over preprocessed images -> per image detections and sizes (CPU tensors).

        Only the detections with `score >= keep_score_threshold` (the call's `threshold`) are computed to the end:
        RoIAlign and the mask head skip the others (the model's `keep_score_threshold`).

        The images are padded together by the image processor's own `pad`, so a batch equals the processor's
        padding of the same list of images.
        """
        pixel_values = self.image_processor.pad([item["pixel_values"] for item in per_image])
        image_sizes = torch.tensor([item["image_size"] for item in per_image], dtype=torch.int64)
        outputs = self.model(pixel_values=pixel_values.to(device=self.device, dtype=self.model.dtype),
                             image_sizes=image_sizes, keep_score_threshold=keep_score_threshold)
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
                "keep_score_threshold": keep_score_threshold,
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
            # lets post-processing refuse a threshold below the one the masks were computed for
            "keep_score_threshold": detections.get("keep_score_threshold"),
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
        """Save model and image processor into one Hub folder that reloads with both pipelines.

        The folder is completed by `hub_folder_mask_rcnn.write_hub_folder` (both `custom_pipelines` tasks — transformers
        alone keeps the one this class was registered for — and every code file the configs name, with what they
        import). `push_to_hub=True` (with `repo_id`, `token`, `commit_message`, `private`) uploads the completed folder.
        """
        try:
            from .hub_folder_mask_rcnn import module_directories, upload_hub_folder, write_hub_folder
        except ImportError:  # a top-level module (importlib: transformers < 4.51 reads from-imports here as packages)
            hub_folder = importlib.import_module("hub_folder_mask_rcnn")
            module_directories, upload_hub_folder = hub_folder.module_directories, hub_folder.upload_hub_folder
            write_hub_folder = hub_folder.write_hub_folder
        push_to_hub = kwargs.pop("push_to_hub", False)
        hub_arguments = {name: kwargs.pop(name) for name in ("repo_id", "token", "commit_message", "private")
                         if name in kwargs}
        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory} is a file; save_pretrained needs a folder.")
        super().save_pretrained(save_directory, **kwargs)
        write_hub_folder(save_directory,
                         sources=module_directories(self, self.model, self.model.config, self.image_processor),
                         name_or_path=getattr(self.model, "name_or_path", None) or None)
        if push_to_hub:
            repo_id = hub_arguments.pop("repo_id", None) or os.path.basename(os.path.abspath(save_directory))
            upload_hub_folder(save_directory, repo_id, **hub_arguments)


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
        return {"mask_threshold": checked_fraction("mask_threshold", mask_threshold)} \
            if mask_threshold is not None else {}

    def _post_process(self, outputs, threshold=DEFAULT_THRESHOLD, mask_threshold=0.5):
        return self.image_processor.post_process_instance_segmentation(
            outputs, threshold=threshold, mask_threshold=mask_threshold)[0]

    def _extra_fields(self, result, index):
        mask = result["masks"][index].to(torch.uint8).mul_(255).numpy()
        return {"mask": Image.fromarray(np.ascontiguousarray(mask))}  # uint8 (H, W) -> mode "L"


class MaskRCNNDetectionPipeline(MaskRCNNPipelineBase):
    """Object detection: `[{"score", "label", "box": {"xmin", "ymin", "xmax", "ymax"}}]` per image, like
    transformers' built-in object-detection pipeline. Call arguments: `threshold` (0.5), `timeout`, `batch_size`."""

    def _post_process(self, outputs, threshold=DEFAULT_THRESHOLD):
        return self.image_processor.post_process_object_detection(outputs, threshold=threshold)[0]


def __getattr__(name: str) -> Any:
    """`pipeline.PreTrainedPipeline`, huggingface-inference-toolkit's legacy entry point (a repository without
    handler.py), is the serving code's class; it is imported on first use, so loading the pipelines never loads the
    serving code (which itself imports the pipelines)."""
    if name != "PreTrainedPipeline":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # importlib, never a relative from-import line: the serving code imports this module, and the
    # remote-code scanner of transformers < 4.51 follows relative-import lines round such a cycle forever.
    try:
        serving = importlib.import_module(".serving_mask_rcnn", __package__) if __package__ else None
    except ImportError:
        serving = None
    if serving is None:  # loaded by its location (the toolkit) or as a top-level module
        serving = importlib.import_module("serving_mask_rcnn")
    return serving.PreTrainedPipeline


__all__ = ["MaskRCNNSegmentationPipeline", "MaskRCNNDetectionPipeline", "MaskRCNNPipelineBase",
           "resolve_image_source", "fetch_image_url", "checked_fraction"]
