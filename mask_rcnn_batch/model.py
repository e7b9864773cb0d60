# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Loading the model and its processor, decoding image files as the processor does, and batched prediction
(no output files: reusable by Ray workers and tools/evaluate_coco.py)."""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from inference_mask_rcnn import prepare_model_for_inference

from .errors import SegmentError


def load_model_and_processor(model_id: str, device: str = "cpu", dtype: Any = "float32") -> Tuple[Any, Any]:
    """`AutoModel` + `AutoImageProcessor` of a local folder or Hub id (trust_remote_code=True), in eval mode on
    `device`, prepared for `dtype` by the shared precision rule (`inference_mask_rcnn.prepare_model_for_inference`)."""
    from transformers import AutoImageProcessor, AutoModel

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SegmentError(f"--device {device} was asked for, but torch sees no CUDA device.")
    try:
        model = AutoModel.from_pretrained(model_id, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise SegmentError(f"Could not load the model {model_id!r}: {error}") from None
    try:
        model = prepare_model_for_inference(model, dtype, device)
    except ValueError as error:  # an unknown dtype, or reduced precision for a numerics="exact" model
        raise SegmentError(str(error)) from None
    return model, processor


def load_model_config(model_id: str) -> Any:
    """The `AutoConfig` of a local folder or Hub id (trust_remote_code=True): labels without loading the weights."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_id, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise SegmentError(f"Could not load the model {model_id!r}: {error}") from None


def load_image_processor(model_id: str) -> Any:
    """The `AutoImageProcessor` of a local folder or Hub id (trust_remote_code=True), e.g. to decode files exactly
    as the model's processor does (`decode_image`)."""
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise SegmentError(f"Could not load the image processor of {model_id!r}: {error}") from None


def _processor_module_function(processor: Any, name: str) -> Optional[Callable]:
    """A function of the module that defines the processor class (the model repo's own code), if it has one."""
    module = sys.modules.get(type(processor).__module__)
    return getattr(module, name, None)


def open_image(path: str, processor: Any = None) -> Image.Image:
    """Decodes an image file with the image processor's own loader (EXIF orientation applied, mode kept), refusing
    files above the processor's `max_image_pixels` as the processor itself would."""
    loader = _processor_module_function(processor, "load_image") if processor is not None else None
    if loader is None:
        from image_processing_mask_rcnn import load_image as loader
    if processor is not None and hasattr(processor, "max_image_pixels"):
        return loader(path, max_pixels=processor.max_image_pixels)
    return loader(path)


def image_to_rgb_array(image: Image.Image, processor: Any = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded image, as the image processor converts it for the network."""
    converter = _processor_module_function(processor, "pil_to_rgb_array") if processor is not None else None
    if converter is None:
        return np.asarray(image.convert("RGB"))
    return converter(image)


def decode_image(path: str, processor: Any = None) -> np.ndarray:
    """An image file as the (H, W, 3) uint8 RGB array the processor would make of it (EXIF orientation applied).

    Feeding this array to the processor gives the same pixels as passing the path, and the overlay reuses it, so
    each file is decoded once."""
    with open_image(path, processor) as image:
        return image_to_rgb_array(image, processor)


def _image_outputs(outputs: Any, index: int) -> Dict[str, Any]:
    """The model outputs of image `index` as a batch of one (post-processing then holds one image's masks)."""
    single: Dict[str, Any] = {}
    for name in ("pred_boxes", "scores", "labels", "mask_probs"):
        single[name] = [getattr(outputs, name)[index]]
    for name in ("image_sizes", "original_sizes", "scale_factors"):
        value = getattr(outputs, name, None)
        single[name] = None if value is None else value[index:index + 1]
    single["keep_score_threshold"] = getattr(outputs, "keep_score_threshold", None)
    return single


def predict_images(model: Any, processor: Any, images: Sequence[Any], threshold: float = 0.5,
                   mask_threshold: float = 0.5) -> Iterator[Dict[str, torch.Tensor]]:
    """One padded batched forward pass over `images`, then post-processing image by image.

    Args:
        model: a model from `load_model_and_processor` (its precision is already set; inputs follow its dtype).
        images: anything `MaskRCNNImageProcessor` accepts (PIL images, paths, arrays), all in one forward pass.
        threshold, mask_threshold: as in `post_process_instance_segmentation` (`score >= threshold`). The model
            gets `threshold` as its `keep_score_threshold`: masks are computed only for the detections kept.

    Yields:
        per image, in input order, `{"boxes", "scores", "labels", "masks" (N, H, W) bool}` on the CPU, in original
        pixels (only one image's dense masks exist at a time).
    """
    parameter = next(model.parameters())
    inputs = processor(images=list(images), return_tensors="pt")
    inputs = {name: value.to(parameter.device) if isinstance(value, torch.Tensor) else value
              for name, value in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(parameter.dtype)
    with torch.inference_mode():
        outputs = model(**inputs, keep_score_threshold=threshold)
        for index in range(len(images)):
            result = processor.post_process_instance_segmentation(
                _image_outputs(outputs, index), threshold=threshold, mask_threshold=mask_threshold)[0]
            yield {name: result[name].cpu() for name in ("boxes", "scores", "labels", "masks")}
