# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Serving Mask R-CNN from the Hub: the wire format, request parsing and `MaskRCNNRequestHandler`.

`handler.py`'s `EndpointHandler` (Inference Endpoints) and `pipeline.PreTrainedPipeline` (the legacy entry point of
huggingface-inference-toolkit) are thin faces of `MaskRCNNRequestHandler`, which loads a converted folder once and
answers

    {"inputs": <PIL image | image bytes | base64 text / data URI | http(s) URL>,
     "parameters": {"task": "image-segmentation" | "object-detection", "threshold": 0.5, "mask_threshold": 0.5,
                    "mask_format": "png" | "rle"}}

with the Hub's wire format: the pipelines' annotations with every value a plain JSON type, masks as base64 PNG (what
the Hub widget draws) or COCO RLE. A request that cannot be answered raises `BadRequestError` (a `ValueError` with
one sentence; the toolkit answers HTTP 400); any other failure is logged and raised as a one-sentence RuntimeError.

The work itself is done by the transformers pipelines of pipeline.py; the dtype rule (`MASK_RCNN_DTYPE`) is
`inference_mask_rcnn.prepare_model_for_inference`, the RLE encoder the image processor's.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import io
import logging
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

try:  # package siblings (transformers' module cache)
    from .image_processing_mask_rcnn import ImageTooLargeError, MaskRCNNImageProcessor, encode_mask_rle as _encode_rle
    from .image_processing_mask_rcnn import load_image as _load_image
    from .inference_mask_rcnn import prepare_model_for_inference, resolve_compute_dtype
    from .modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
    from .pipeline import (DATA_URI_PATTERN, URL_PATTERN, MaskRCNNDetectionPipeline, MaskRCNNSegmentationPipeline,
                           checked_fraction, fetch_image_url)
except ImportError:  # top-level modules of the model folder (handler.py loaded by its location, tests, scripts)
    _processing = importlib.import_module("image_processing_mask_rcnn")
    ImageTooLargeError, MaskRCNNImageProcessor = _processing.ImageTooLargeError, _processing.MaskRCNNImageProcessor
    _encode_rle, _load_image = _processing.encode_mask_rle, _processing.load_image
    _inference = importlib.import_module("inference_mask_rcnn")
    prepare_model_for_inference = _inference.prepare_model_for_inference
    resolve_compute_dtype = _inference.resolve_compute_dtype
    MaskRCNNForInstanceSegmentation = importlib.import_module("modeling_mask_rcnn").MaskRCNNForInstanceSegmentation
    _pipeline = importlib.import_module("pipeline")
    DATA_URI_PATTERN, URL_PATTERN = _pipeline.DATA_URI_PATTERN, _pipeline.URL_PATTERN
    MaskRCNNDetectionPipeline = _pipeline.MaskRCNNDetectionPipeline
    MaskRCNNSegmentationPipeline = _pipeline.MaskRCNNSegmentationPipeline
    checked_fraction, fetch_image_url = _pipeline.checked_fraction, _pipeline.fetch_image_url

logger = logging.getLogger(__name__)

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
        return _encode_rle(np.asarray(mask) if isinstance(mask, Image.Image) else mask)
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
        return checked_fraction(name, value)
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
    if URL_PATTERN.match(text):
        try:
            return fetch_image_url(text, timeout)
        except OSError as error:
            raise BadRequestError(f"{str(error).rstrip('.')}.") from None
    payload = "".join(DATA_URI_PATTERN.sub("", text, count=1).split())  # MIME-style base64 may hold line breaks
    if not _BASE64_TEXT_PATTERN.fullmatch(payload):
        raise BadRequestError("'inputs' is text but neither an http(s) URL nor base64 image data.")
    try:
        return base64.b64decode(payload.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("'inputs' is not valid base64 (its length or padding is wrong).") from None


def decode_request_image(inputs: Any, load_image: Callable[[bytes], Image.Image] = _load_image,
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
        self.device = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = resolve_compute_dtype(dtype)
        model = prepare_model_for_inference(MaskRCNNForInstanceSegmentation.from_pretrained(path), self.dtype,
                                            self.device)
        processor = MaskRCNNImageProcessor.from_pretrained(path)
        self.model, self.image_processor = model, processor
        self.pipelines = {
            "image-segmentation": MaskRCNNSegmentationPipeline(model=model, image_processor=processor,
                                                               device=self.device),
            "object-detection": MaskRCNNDetectionPipeline(model=model, image_processor=processor, device=self.device),
        }

    def _decode_image_bytes(self, encoded: bytes) -> Image.Image:
        """The image processor's decoder with the processor's own pixel limit (`max_image_pixels`)."""
        return _load_image(encoded, self.image_processor.max_image_pixels)

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
            image = decode_request_image(data["inputs"], self._decode_image_bytes)
            annotations = self.pipelines[task](image, **pipeline_kwargs)
            return to_wire_format(annotations, mask_format)
        except BadRequestError:
            raise
        except ImageTooLargeError as error:  # e.g. a toolkit-decoded PIL image over the limit
            raise BadRequestError(f"'inputs' is refused: {error}") from None
        except Exception as error:  # never a stack trace or internal detail to the client; the log keeps both
            logger.exception("Mask R-CNN request failed")
            raise RuntimeError(f"Mask R-CNN inference failed on the server ({type(error).__name__}); the server log "
                               "has the details.") from None


class PreTrainedPipeline(MaskRCNNRequestHandler):
    """The legacy serving entry point: `pipeline.py` with `PreTrainedPipeline(path)` (pipeline.py hands out this
    class), as huggingface-inference-toolkit loads it when a repository has no handler.py (and as the Hub's former
    widget backend called it).

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


__all__ = ["MaskRCNNRequestHandler", "PreTrainedPipeline", "BadRequestError", "to_wire_format", "encode_mask_png",
           "encode_mask_rle", "decode_request_image", "parse_request_parameters", "SERVING_TASKS", "MASK_FORMATS",
           "TASK_PARAMETERS", "URL_TIMEOUT_SECONDS"]
