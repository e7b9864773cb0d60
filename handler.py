# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Inference Endpoints entry point: `EndpointHandler`, found and loaded by huggingface-inference-toolkit.

The toolkit imports this file by its location, with the model folder first on `sys.path`, builds
`EndpointHandler(model_dir)` once and calls it from a thread pool with one request per call:

    {"inputs": <PIL image | image bytes | base64 text / data URI | http(s) URL>,
     "parameters": {"task": "image-segmentation" | "object-detection", "threshold": 0.5, "mask_threshold": 0.5,
                    "mask_format": "png" | "rle"}}

It answers with the Hub's wire format, plain JSON types only, sorted by score:

* image-segmentation: `[{"score": float, "label": str, "box": {"xmin", "ymin", "xmax", "ymax"}, "mask": str}]`,
  the mask a base64 PNG (mode "L", 0/255, original image size) or COCO RLE `{"size": [h, w], "counts": str}`;
* object-detection: `[{"score": float, "label": str, "box": {...}}]`.

A bad request raises a `ValueError` with one sentence (the toolkit answers HTTP 400 with it). The work is done by
`serving_mask_rcnn.MaskRCNNRequestHandler`, shared with the legacy `pipeline.PreTrainedPipeline`; it runs the
transformers pipelines of pipeline.py.
Model and image processor come from this folder's own code files (no `trust_remote_code` lookup); the device is CUDA
when present, the dtype comes from the MASK_RCNN_DTYPE environment variable (float32 by default).
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Dict, List

try:  # a package sibling (e.g. loaded from transformers' module cache)
    from .serving_mask_rcnn import MaskRCNNRequestHandler
except ImportError:  # loaded by file location with the model folder on sys.path, as the toolkit does
    MaskRCNNRequestHandler = importlib.import_module("serving_mask_rcnn").MaskRCNNRequestHandler


class EndpointHandler(MaskRCNNRequestHandler):
    """Mask R-CNN for Inference Endpoints; thread-safe, one request per call.

    Args:
        path: the model folder the toolkit hands over; empty means the folder of this file.
    """

    def __init__(self, path: str = ""):
        super().__init__(path or os.path.dirname(os.path.abspath(__file__)))

    def __call__(self, data: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Answer one request `{"inputs": ..., "parameters": {...}}` in the Hub's wire format."""
        return self.handle(data)


__all__ = ["EndpointHandler"]
