# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Mask R-CNN from `model.onnx` without PyTorch: onnxruntime + NumPy + Pillow (+ pycocotools for RLE masks).

    pip install onnxruntime numpy pillow pycocotools      # opencv-python-headless optional (faster resize, same pixels)

    >>> from onnx_inference_mask_rcnn import MaskRCNNOnnxRuntime
    >>> runtime = MaskRCNNOnnxRuntime("model.onnx")      # written by export_onnx.py
    >>> annotations = runtime("photo.jpg", threshold=0.5)  # [{"score", "label", "box", "mask"}, ...] best first

It reproduces the transformers pipeline (`pipeline.py`) around the exported graph: decoding, keep-ratio resize
(bit-exact OpenCV INTER_LINEAR), normalisation and padding come from `image_utils_mask_rcnn.py`, the module the
PyTorch image processor uses, so `pixel_values` are the same bits; boxes are mapped back by the same float32
division and masks pasted at the original size with the same float32 arithmetic as the processor's `grid_sample`
paste, so given the same detections the binary masks are identical. Everything it needs (labels, preprocessing
settings) is stored in the ONNX file's metadata by `export_onnx.py`.

Also usable as a script: `python onnx_inference_mask_rcnn.py model.onnx photo.jpg [--threshold 0.5]` prints JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
from PIL import Image

try:
    from .image_utils_mask_rcnn import (DEFAULT_MAX_IMAGE_PIXELS, array_to_rgb_array, compute_rescaled_size,
                                        load_image, normalize_image, pad_batch, paste_mask_window, pil_to_rgb_array,
                                        resize_image, window_rle_counts)
except ImportError:  # imported as a plain module (tests, scripts). importlib, not a from-import: the remote-code
    # scanner of transformers < 4.51 reads import lines under `except ImportError:` as required packages.
    _image_utils = importlib.import_module("image_utils_mask_rcnn")
    DEFAULT_MAX_IMAGE_PIXELS, array_to_rgb_array = _image_utils.DEFAULT_MAX_IMAGE_PIXELS, _image_utils.array_to_rgb_array
    compute_rescaled_size, load_image = _image_utils.compute_rescaled_size, _image_utils.load_image
    normalize_image, pad_batch = _image_utils.normalize_image, _image_utils.pad_batch
    paste_mask_window, pil_to_rgb_array = _image_utils.paste_mask_window, _image_utils.pil_to_rgb_array
    resize_image, window_rle_counts = _image_utils.resize_image, _image_utils.window_rle_counts

# The graph contract shared with export_onnx.py (which imports these): names, ranks and element types.
ONNX_OPSET = 17
# onnxruntime's compatibility table lists opset 17 from release 1.13 on (tested here: 1.32)
MIN_ONNXRUNTIME_VERSION = "1.13"
INPUT_NAMES = ("pixel_values", "image_sizes")
OUTPUT_NAMES = ("boxes", "scores", "labels", "mask_probs", "batch_index")
EXPECTED_INPUTS = {"pixel_values": ("tensor(float)", 4), "image_sizes": ("tensor(int64)", 2)}
EXPECTED_OUTPUTS = {"boxes": ("tensor(float)", 2), "scores": ("tensor(float)", 1), "labels": ("tensor(int64)", 1),
                    "mask_probs": ("tensor(float)", 3), "batch_index": ("tensor(int64)", 1)}
METADATA_PREPROCESSING = "preprocessing"
METADATA_ID2LABEL = "id2label"
# graph optimisation levels by name (onnxruntime's default is "all")
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")

ImageInput = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]


class OnnxModelError(ValueError):
    """model.onnx cannot be used by this runtime (wrong inputs/outputs, unreadable, or an onnxruntime too old)."""


def version_tuple(version: str) -> tuple:
    """"1.14.1" -> (1, 14, 1); pre-release or local suffixes are ignored ("1.15.0.dev20230101" -> (1, 15, 0))."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = "".join(character for character in piece if character.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def check_onnxruntime_version(installed: str, required: str = MIN_ONNXRUNTIME_VERSION) -> None:
    """Raises OnnxModelError when onnxruntime `installed` is older than `required` for this graph's opset."""
    if version_tuple(installed) < version_tuple(required):
        raise OnnxModelError(
            f"onnxruntime {installed} is too old for this model.onnx: it uses ONNX opset {ONNX_OPSET}, which needs "
            f"onnxruntime >= {required}. Upgrade it: pip install -U 'onnxruntime>={required}'.")


def _model_opset(path: str) -> Optional[int]:
    """The default-domain opset recorded in an ONNX file, when the `onnx` package is installed (else None)."""
    try:
        import onnx
    except ImportError:
        return None
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:  # noqa: BLE001 - only used to word an error message
        return None
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def box_iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU of every pair of `(x1, y1, x2, y2)` boxes, `(len(boxes_a), len(boxes_b))` float64."""
    boxes_a, boxes_b = boxes_a.astype(np.float64), boxes_b.astype(np.float64)
    top_left = np.maximum(boxes_a[:, None, :2], boxes_b[None, :, :2])
    bottom_right = np.minimum(boxes_a[:, None, 2:], boxes_b[None, :, 2:])
    intersection = np.clip(bottom_right - top_left, 0, None).prod(-1)
    area_a = (boxes_a[:, 2:] - boxes_a[:, :2]).prod(-1)
    area_b = (boxes_b[:, 2:] - boxes_b[:, :2]).prod(-1)
    return intersection / np.maximum(area_a[:, None] + area_b[None, :] - intersection, 1e-12)


class MaskRCNNOnnxRuntime:
    """Runs an exported Mask R-CNN end to end: images in, the pipeline's annotations out.

    Args:
        model_path: the `model.onnx` written by `export_onnx.py`.
        optimization: onnxruntime graph optimisation level: "disable", "basic", "extended" or "all" (default, also
            onnxruntime's default).
        providers: onnxruntime execution providers (default CPU).
        intra_op_num_threads: threads per operator (None: onnxruntime's default, all cores).
        max_image_pixels: largest `height * width` decoded (None: no limit); larger images are refused from their
            header, like the image processor does.

    Raises:
        OnnxModelError: the file is not readable by onnxruntime, onnxruntime is too old for its opset, or its inputs
            or outputs are not those of the export contract.
    """

    def __init__(self, model_path: Union[str, os.PathLike], optimization: str = "all",
                 providers: Optional[Sequence[str]] = None, intra_op_num_threads: Optional[int] = None,
                 max_image_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("MaskRCNNOnnxRuntime needs onnxruntime: pip install onnxruntime numpy pillow "
                              "pycocotools") from error

        self.model_path = os.fspath(model_path)
        if optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {OPTIMIZATION_LEVELS}, got {optimization!r}.")
        check_onnxruntime_version(onnxruntime.__version__)
        if not os.path.isfile(self.model_path):
            raise OnnxModelError(f"{self.model_path} does not exist; write it with `python export_onnx.py "
                                 "--model-dir FOLDER`.")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = {
            "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[optimization]
        if intra_op_num_threads is not None:
            options.intra_op_num_threads = intra_op_num_threads
        try:
            self.session = onnxruntime.InferenceSession(self.model_path, options,
                                                        providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception classes
            opset = _model_opset(self.model_path)
            if opset is not None and opset != ONNX_OPSET:
                raise OnnxModelError(
                    f"onnxruntime {onnxruntime.__version__} cannot load {self.model_path}: the file uses ONNX opset "
                    f"{opset}, not the opset {ONNX_OPSET} export_onnx.py writes; re-export it with export_onnx.py or "
                    f"use an onnxruntime that supports opset {opset} ({str(error).splitlines()[0]}).") from error
            raise OnnxModelError(f"onnxruntime {onnxruntime.__version__} cannot load {self.model_path} "
                                 f"({str(error).splitlines()[0]}).") from error
        self._check_signature()
        metadata = self.session.get_modelmeta().custom_metadata_map
        try:
            self.id2label = {int(key): value for key, value in json.loads(metadata[METADATA_ID2LABEL]).items()}
            self.preprocessing = json.loads(metadata[METADATA_PREPROCESSING])
        except (KeyError, ValueError) as error:
            raise OnnxModelError(f"{self.model_path} lacks the label and preprocessing metadata export_onnx.py "
                                 f"stores ({error}); re-export it with export_onnx.py.") from error
        self.max_image_pixels = max_image_pixels

    def _check_signature(self) -> None:
        """OnnxModelError unless the graph's inputs and outputs are the export contract's (names, ranks, types)."""
        def describe(values) -> str:
            return ", ".join(f"{value.name} {value.type} rank {len(value.shape)}" for value in values) or "none"

        def matches(values, expected: Mapping[str, tuple]) -> bool:
            found = {value.name: (value.type, len(value.shape)) for value in values}
            return found == dict(expected) and (expected is not EXPECTED_INPUTS
                                                or self._channel_dimension_is_three(values))

        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if not matches(inputs, EXPECTED_INPUTS) or not matches(outputs, EXPECTED_OUTPUTS):
            raise OnnxModelError(
                f"{self.model_path} does not have the inputs and outputs this runtime expects. It has inputs "
                f"[{describe(inputs)}] and outputs [{describe(outputs)}]; expected inputs pixel_values (batch, 3, "
                f"height, width) float32 and image_sizes (batch, 2) int64, outputs boxes, scores, labels, mask_probs, "
                f"batch_index. Write the file with export_onnx.py.")

    @staticmethod
    def _channel_dimension_is_three(inputs) -> bool:
        pixel_values = next(value for value in inputs if value.name == "pixel_values")
        return pixel_values.shape[1] in (3, "3")

    # ------------------------------------------------------------------------------------------- pre-processing
    def to_rgb(self, image: ImageInput) -> np.ndarray:
        """A path, bytes, PIL image or (H, W[, C]) array -> (H, W, 3) uint8 RGB, decoded like the image processor."""
        if isinstance(image, np.ndarray):
            return array_to_rgb_array(image, max_pixels=self.max_image_pixels)
        return pil_to_rgb_array(load_image(image, self.max_image_pixels))

    def preprocess(self, images: Sequence[ImageInput]) -> Dict[str, np.ndarray]:
        """The graph's inputs for a batch of images, with `original_sizes` (B, 2) and `scale_factors` (B, 2) float64
        `(new_w / w, new_h / h)`: the image processor's output, as NumPy arrays."""
        settings = self.preprocessing
        tensors, image_sizes, original_sizes, scale_factors = [], [], [], []
        for image in images:
            rgb = self.to_rgb(image)
            height, width = rgb.shape[:2]
            if settings.get("do_resize", True):
                new_width, new_height = compute_rescaled_size(width, height, settings["resize_scale"])
                rgb = resize_image(rgb, new_width, new_height)
            else:
                new_width, new_height = width, height
            tensors.append(normalize_image(rgb, settings["image_mean"], settings["image_std"],
                                           settings["input_channel_order"], settings.get("do_normalize", True)))
            image_sizes.append((new_height, new_width))
            original_sizes.append((height, width))
            scale_factors.append((new_width / width, new_height / height))
        return {
            "pixel_values": pad_batch(tensors, settings["size_divisor"], settings.get("pad_value", 0.0),
                                      settings.get("do_pad", True)),
            "image_sizes": np.asarray(image_sizes, dtype=np.int64),
            "original_sizes": np.asarray(original_sizes, dtype=np.int64),
            "scale_factors": np.asarray(scale_factors, dtype=np.float64),
        }

    # ------------------------------------------------------------------------------------------- forward
    def forward(self, pixel_values: np.ndarray, image_sizes: np.ndarray) -> Dict[str, np.ndarray]:
        """The raw graph outputs: boxes (N, 4) in the resized frame, scores, labels, mask_probs, batch_index."""
        values = self.session.run(list(OUTPUT_NAMES), {"pixel_values": np.ascontiguousarray(pixel_values, np.float32),
                                                       "image_sizes": np.ascontiguousarray(image_sizes, np.int64)})
        return dict(zip(OUTPUT_NAMES, values))

    # ------------------------------------------------------------------------------------------- post-processing
    def detections(self, outputs: Mapping[str, np.ndarray], original_sizes: np.ndarray, scale_factors: np.ndarray,
                   threshold: float = 0.5, mask_threshold: float = 0.5) -> List[Dict[str, Any]]:
        """Per image: `scores` (N,), `labels` (N,), `boxes` (N, 4) float32 in original pixels (divided in float32 by
        the scale factors, not clipped) and `masks`, a list of `(rows, columns, window)` pasted at the original size
        (None for an empty window), by descending score (stable), `score >= threshold`."""
        results = []
        for image_index, ((height, width), (width_scale, height_scale)) in enumerate(zip(original_sizes,
                                                                                           scale_factors)):
            indices = np.flatnonzero((outputs["batch_index"] == image_index) & (outputs["scores"] >= threshold))
            indices = indices[np.argsort(-outputs["scores"][indices], kind="stable")]
            factors = np.asarray([width_scale, height_scale, width_scale, height_scale], dtype=np.float32)
            boxes = outputs["boxes"][indices].astype(np.float32) / factors
            masks = [paste_mask_window(outputs["mask_probs"][index], box, int(height), int(width), mask_threshold)
                     for box, index in zip(boxes, indices)]
            results.append({"scores": outputs["scores"][indices], "labels": outputs["labels"][indices],
                            "boxes": boxes, "masks": masks, "size": (int(height), int(width))})
        return results

    def post_process(self, outputs: Mapping[str, np.ndarray], original_sizes: np.ndarray, scale_factors: np.ndarray,
                     threshold: float = 0.5, mask_threshold: float = 0.5, return_rle: bool = False) -> List[List[dict]]:
        """Per image: annotations `{"score", "label", "box": {xmin, ymin, xmax, ymax}, "mask"}` by descending score
        (`score >= threshold`), boxes truncated to int like the pipeline, masks (`probability >= mask_threshold`) as
        mode "L" PIL images (0/255) of the original size or, with `return_rle`, COCO compressed RLE dicts
        `{"size": [h, w], "counts": str}`."""
        results = []
        for image in self.detections(outputs, original_sizes, scale_factors, threshold, mask_threshold):
            height, width = image["size"]
            annotations = []
            for score, label, box, pasted in zip(image["scores"], image["labels"], image["boxes"], image["masks"]):
                annotation = {"score": float(score), "label": self._label(label)}
                annotation["mask"] = (self._rle(pasted, height, width) if return_rle
                                      else self._mask_image(pasted, height, width))
                xmin, ymin, xmax, ymax = box.astype(np.int32).tolist()  # truncation, like the pipeline
                annotation["box"] = {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}
                annotations.append(annotation)
            results.append(annotations)
        return results

    def _label(self, label_id: Any) -> str:
        return self.id2label.get(int(label_id), f"LABEL_{int(label_id)}")

    @staticmethod
    def _mask_image(pasted, height: int, width: int) -> Image.Image:
        mask = np.zeros((height, width), dtype=np.uint8)
        if pasted is not None:
            rows, columns, window = pasted
            mask[rows, columns] = window.astype(np.uint8) * 255
        return Image.fromarray(mask)

    @staticmethod
    def _rle(pasted, height: int, width: int) -> Dict[str, Any]:
        try:
            from pycocotools import mask as coco_mask
        except ImportError as error:
            raise ImportError("RLE masks need pycocotools: pip install pycocotools") from error
        counts = [height * width] if pasted is None else window_rle_counts(pasted[2], pasted[0], pasted[1], height,
                                                                          width)
        encoded = coco_mask.frPyObjects([{"size": [height, width], "counts": counts}], height, width)[0]
        return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}

    # ------------------------------------------------------------------------------------------- end to end
    def __call__(self, images: Union[ImageInput, Sequence[ImageInput]], threshold: float = 0.5,
                 mask_threshold: float = 0.5, return_rle: bool = False) -> Union[List[dict], List[List[dict]]]:
        """Annotations for one image (a list of dicts) or a list of images (a list of lists; one padded batch)."""
        single = not isinstance(images, (list, tuple))
        batch = self.preprocess([images] if single else list(images))
        outputs = self.forward(batch["pixel_values"], batch["image_sizes"])
        results = self.post_process(outputs, batch["original_sizes"], batch["scale_factors"], threshold,
                                    mask_threshold, return_rle)
        return results[0] if single else results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Mask R-CNN instance segmentation with onnxruntime (no PyTorch).")
    parser.add_argument("model", help="model.onnx written by export_onnx.py")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--mask-threshold", type=float, default=0.5)
    arguments = parser.parse_args(argv)
    try:
        runtime = MaskRCNNOnnxRuntime(arguments.model)
        results = runtime(list(arguments.images), arguments.threshold, arguments.mask_threshold, return_rle=True)
    except (OnnxModelError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps([{"image": path, "annotations": annotations}
                      for path, annotations in zip(arguments.images, results)]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
