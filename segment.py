#!/usr/bin/env python3
# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Batch instance segmentation of image files and folders with the Mask R-CNN of this repository.

    python segment.py --model DIR_OR_REPO_ID INPUT [INPUT ...] --output-dir OUT [--threshold 0.5]
        [--mask-threshold 0.5] [--batch-size N] [--device cpu|cuda] [--dtype float32|bfloat16|float16]
        [--resume] [--no-overlays] [--keep-going] [--shard-output [--images-per-shard N]]
        [--ray [ADDRESS] [--workers N] [--cpus-per-worker C] [--gpus-per-worker G]]

INPUT is an image file (any extension), a folder (searched recursively for image extensions) or a glob pattern
(`**` allowed). Every image gets a `file_name`: its path relative to the input root, the deepest folder common to
all inputs (a folder input is its own root, a file's root is its folder, a glob's root is the folder before its
first wildcard), with `/` separators.

Outputs in OUT:

* `predictions.json`   COCO results format, one record per instance: `image_id`, `file_name`, `category_id`,
                       `bbox` [x, y, w, h] (original pixels, float), `score`, `segmentation` compressed RLE
                       `{"size": [h, w], "counts": str}` — loadable with `pycocotools.coco.COCO.loadRes`.
* `predictions.jsonl`  the journal: one line per finished image (`{"image": {...}, "annotations": [...]}`),
                       appended and fsync'ed after every batch; `predictions.json` is assembled from it at the end
                       (also after an error or Ctrl-C), and `--resume` reads it back after a hard kill.
* `images.json`        COCO-style `{"info", "images", "categories"}` of every processed image (also the images
                       without detections, which `predictions.json` cannot list).
* `failures.json`      `[{"file_name", "path", "error"}]` of inputs that could not be processed.
* `overlays/<file_name>.png`  the image with coloured masks, boxes and "label score" captions.

With `--shard-output` (runs too large for one JSON file) the results are JSON-lines shards
`predictions/part-NNNNN.jsonl` (the journal's lines, `--images-per-shard` images each, written as results come in)
plus `predictions/info.json`, instead of the journal, `predictions.json` and `images.json` (`read_shards(OUT)`).
`--resume` skips the images already written in either form.

`--ray [ADDRESS]` runs the same job as a Ray Data pipeline (`pip install -r requirements-ray.txt`): header reading,
batch planning and decoding in parallel tasks, one forward pass per planned batch in an actor pool whose actors load
the model once (`--workers`, `--cpus-per-worker`, `--gpus-per-worker`), and this process writing the same outputs
as results stream in. Batches are planned window by window exactly as here, so the results are the same as the
single-process run's at the same torch thread count. Without ADDRESS a local instance is started (this machine's
cores, 127.0.0.1 only, no dashboard); `auto`, `HOST:PORT` or `ray://HOST:10001` joins a cluster; a Ray instance the
calling process already has is reused. Ray is imported only on this path.

`image_id` is stable across runs, machines and shards: the first 52 bits of SHA-256 of `file_name` as an integer
(`stable_image_id`); it fits a JSON/JavaScript double exactly. `category_id` is COCO's official id (1..90 with gaps)
when the model's classes are COCO's 80 classes in MMDetection's order, else the model's label index.

Exit status: 0 all images done, 1 some inputs failed (their reasons are in failures.json and on stderr; the other
images' results are written), 2 the run could not start (bad arguments, no inputs, model not loadable).
Unreadable/undecodable files are always skipped and reported. An error of the model itself (e.g. out of memory)
stops the run after writing the finished work (with --ray: the first such error a worker reports), unless
`--keep-going` is given: then the batch is retried image by image and images that still fail are reported and
skipped.

The per-image record building is reusable (Ray `map_batches`, an Inference Endpoint handler, tools/evaluate_coco.py):
`load_model_and_processor`, `decode_image`, `predict_images`, `detections_to_coco_records`, `encode_rle(s)`,
`boxes_to_xywh`, `coco_category_ids`, `stable_image_id`.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import hashlib
import io
import json
import logging
import math
import os
import pickle
import socket
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Set, Tuple

# A script next to the Hub files: make its own folder importable so the siblings can be imported absolutely.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from image_processing_mask_rcnn import decode_mask_rle, encode_mask_rle, encode_masks_rle  # noqa: E402

try:  # optional dependency: progress bar
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

PYCOCOTOOLS_HINT = "segment.py needs pycocotools to write RLE masks: pip install pycocotools"

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif",
                              ".ppm", ".pgm", ".pbm", ".pnm"})
GLOB_CHARACTERS = frozenset("*?[")
IMAGE_ID_BITS = 52  # < 2**53: exact in JSON doubles and JavaScript numbers
SORT_WINDOW_BATCHES = 16  # size grouping looks this many batches ahead
EXIT_OK, EXIT_FAILURES, EXIT_FATAL = 0, 1, 2

# COCO 2017's 80 categories as (official category_id, name), in the order of MMDetection's CocoDataset.METAINFO
# (= the model's label indices 0..79). Ids 12, 26, 29, 30, 45, 66, 68, 69, 71, 83 are unused by COCO.
COCO_CATEGORIES: Tuple[Tuple[int, str], ...] = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"), (54, "sandwich"),
    (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"), (60, "donut"), (61, "cake"),
    (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"), (67, "dining table"), (70, "toilet"),
    (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"), (76, "keyboard"), (77, "cell phone"),
    (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"),
    (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
)  # fmt: skip


class SegmentError(Exception):
    """A problem that stops the run before any image is processed (one sentence, printed without traceback)."""


# ================================================================================================================
# Reusable record building (no file system, no model): RLE, boxes, categories, image ids
# ================================================================================================================


def _require_pycocotools() -> None:
    try:
        encode_masks_rle(np.zeros((0, 1, 1), dtype=bool))  # imports pycocotools, encodes nothing
    except ImportError:
        raise SegmentError(PYCOCOTOOLS_HINT) from None


def _to_numpy(array: Any) -> np.ndarray:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu().numpy()
    return np.asarray(array)


def encode_rles(masks: Any) -> List[Dict[str, Any]]:
    """Binary masks (N, H, W) (bool/uint8 numpy array or tensor) -> N compressed COCO RLEs `{"size": [H, W],
    "counts": str}` (the image processor's `encode_masks_rle`, one pycocotools call)."""
    _require_pycocotools()
    return encode_masks_rle(masks)


def encode_rle(mask: Any) -> Dict[str, Any]:
    """One binary mask (H, W) -> compressed COCO RLE `{"size": [H, W], "counts": str}`."""
    _require_pycocotools()
    return encode_mask_rle(mask)


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """Compressed COCO RLE (counts as str or bytes) -> (H, W) bool mask."""
    _require_pycocotools()
    return decode_mask_rle(rle)


def boxes_to_xywh(boxes: Any) -> List[List[float]]:
    """(N, 4) x1, y1, x2, y2 -> N COCO boxes [x, y, width, height] as Python floats (MMDetection's xyxy2xywh)."""
    boxes = _to_numpy(boxes).reshape(-1, 4)
    return [[float(x1), float(y1), float(x2) - float(x1), float(y2) - float(y1)] for x1, y1, x2, y2 in boxes.tolist()]


def _label_names(id2label: Mapping[Any, str]) -> List[str]:
    """Names of label indices 0..n-1 (config.id2label keys may be ints or strings)."""
    by_index = {int(key): str(value) for key, value in id2label.items()}
    return [by_index.get(index, f"LABEL_{index}") for index in range(max(by_index, default=-1) + 1)]


def coco_category_ids(id2label: Mapping[Any, str]) -> Optional[Dict[int, int]]:
    """{label index: official COCO category_id} when the model's classes are COCO's 80 in MMDetection's order, else
    None (callers then write the label index itself as `category_id`)."""
    names = _label_names(id2label)
    if names != [name for _, name in COCO_CATEGORIES]:
        return None
    return {index: category_id for index, (category_id, _) in enumerate(COCO_CATEGORIES)}


def category_list(id2label: Mapping[Any, str], category_ids: Optional[Mapping[int, int]] = None) -> List[Dict]:
    """COCO `categories` entries `{"id", "name"}` for the model's labels under a label -> category_id mapping."""
    return [{"id": int(category_ids[index]) if category_ids is not None else index, "name": name}
            for index, name in enumerate(_label_names(id2label))]


def stable_image_id(file_name: str) -> int:
    """Deterministic COCO `image_id` of a file name: first 52 bits of SHA-256 of its UTF-8 bytes, as an int."""
    digest = hashlib.sha256(file_name.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - IMAGE_ID_BITS)


def detections_to_coco_records(result: Mapping[str, Any], image_id: int, category_ids: Optional[Mapping[int, int]]
                               = None, file_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """One image's post-processed detections -> COCO results records (one per instance, in the result's order).

    Args:
        result: one entry of `MaskRCNNImageProcessor.post_process_instance_segmentation`: `boxes` (N, 4) x1y1x2y2,
            `scores` (N,), `labels` (N,), `masks` (N, H, W) bool (tensors or arrays). Without `masks` the records
            have no `segmentation` (detection-only results).
        image_id: the COCO image id to write.
        category_ids: label index -> category_id (e.g. `coco_category_ids(config.id2label)`); None writes the label
            index.
        file_name: written into every record when given (ignored by pycocotools).

    Returns:
        `[{"image_id", ("file_name",) "category_id", "bbox": [x, y, w, h], "score", ("segmentation": RLE)}]`.
    """
    labels = _to_numpy(result["labels"]).reshape(-1).tolist()
    scores = _to_numpy(result["scores"]).reshape(-1).tolist()
    boxes = boxes_to_xywh(result["boxes"])
    rles = encode_rles(result["masks"]) if result.get("masks") is not None else None
    records = []
    for index, (label, score, box) in enumerate(zip(labels, scores, boxes)):
        record: Dict[str, Any] = {"image_id": int(image_id)}
        if file_name is not None:
            record["file_name"] = file_name
        record["category_id"] = int(category_ids[int(label)]) if category_ids is not None else int(label)
        record["bbox"] = box
        record["score"] = float(score)
        if rles is not None:
            record["segmentation"] = rles[index]
        records.append(record)
    return records


# ================================================================================================================
# Model loading and batched prediction (reusable: no file system except the model itself)
# ================================================================================================================

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model_and_processor(model_id: str, device: str = "cpu") -> Tuple[Any, Any]:
    """`AutoModel` + `AutoImageProcessor` of a local folder or Hub id (trust_remote_code=True), float32 weights in
    eval mode on `device` (reduced precision is applied per forward pass, see `predict_images`)."""
    from transformers import AutoImageProcessor, AutoModel

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SegmentError(f"--device {device} was asked for, but torch sees no CUDA device.")
    try:
        model = AutoModel.from_pretrained(model_id, trust_remote_code=True)
        processor = AutoImageProcessor.from_pretrained(model_id, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise SegmentError(f"Could not load the model {model_id!r}: {error}") from None
    model = model.to(device=device).eval()
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


def _image_outputs(outputs: Any, index: int) -> Dict[str, Any]:
    """The model outputs of image `index` as a batch of one (post-processing then holds one image's masks)."""
    single: Dict[str, Any] = {}
    for name in ("pred_boxes", "scores", "labels", "mask_probs"):
        single[name] = [getattr(outputs, name)[index]]
    for name in ("image_sizes", "original_sizes", "scale_factors"):
        value = getattr(outputs, name, None)
        single[name] = None if value is None else value[index:index + 1]
    return single


def predict_images(model: Any, processor: Any, images: Sequence[Any], threshold: float = 0.5,
                   mask_threshold: float = 0.5, dtype: Any = "float32") -> Iterator[Dict[str, torch.Tensor]]:
    """One padded batched forward pass over `images`, then post-processing image by image.

    Args:
        images: anything `MaskRCNNImageProcessor` accepts (PIL images, paths, arrays), all in one forward pass.
        threshold, mask_threshold: as in `post_process_instance_segmentation` (`score >= threshold`).
        dtype: "float32", or "bfloat16"/"float16" (or the torch dtypes) to run the network under `torch.autocast`:
            convolutions and linear layers in that precision, while the weights stay float32, and RoIAlign, NMS,
            the model's own float32 steps (box decoding, scores, mask probabilities) and mask pasting run in
            float32.

    Yields:
        per image, in input order, `{"boxes", "scores", "labels", "masks" (N, H, W) bool}` on the CPU, in original
        pixels (only one image's dense masks exist at a time).
    """
    device = next(model.parameters()).device
    compute_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    inputs = processor(images=list(images), return_tensors="pt")
    inputs = {name: value.to(device) if isinstance(value, torch.Tensor) else value for name, value in inputs.items()}
    with torch.inference_mode():
        if compute_dtype == torch.float32:
            outputs = model(**inputs)
        else:
            with torch.autocast(device_type=device.type, dtype=compute_dtype):
                outputs = model(**inputs)
        for index in range(len(images)):
            result = processor.post_process_instance_segmentation(
                _image_outputs(outputs, index), threshold=threshold, mask_threshold=mask_threshold)[0]
            yield {name: value.cpu() if isinstance(value, torch.Tensor) else value for name, value in result.items()}


# ================================================================================================================
# Inputs: files, folders, globs -> sorted (path, file_name) items
# ================================================================================================================


@dataclass(frozen=True)
class InputItem:
    """One image to process: its path on disk and its `file_name` relative to the input root (POSIX separators)."""

    path: str
    file_name: str

    @property
    def image_id(self) -> int:
        return stable_image_id(self.file_name)


def _is_image_file(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _inside(path: str, folder: Optional[str]) -> bool:
    return folder is not None and (path == folder or path.startswith(folder.rstrip(os.sep) + os.sep))


def _walk_images(folder: str, exclude: Optional[str]) -> List[str]:
    """Image files under `folder`, recursively; hidden folders and the `exclude` folder (the output) are skipped."""
    found = []
    for directory, subdirectories, files in os.walk(folder, followlinks=True):
        subdirectories[:] = sorted(name for name in subdirectories if not name.startswith(".")
                                   and not _inside(os.path.join(directory, name), exclude))
        found.extend(os.path.join(directory, name) for name in files if _is_image_file(name))
    return found


def _glob_root(pattern: str) -> str:
    """The folder before a glob pattern's first wildcard component."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts:
        if GLOB_CHARACTERS & set(part):
            break
        fixed.append(part)
    return os.path.abspath(os.path.join(*fixed)) if fixed else os.path.abspath(".")


def collect_inputs(inputs: Sequence[str], exclude: Optional[str] = None) -> Tuple[List[InputItem], List[Dict]]:
    """Expands INPUT arguments into images sorted by `file_name`, and the inputs that matched nothing.

    A folder contributes its image files (recursively, by extension), a glob its matches (folders among them are
    walked), a file itself (whatever its extension). `file_name`s are relative to the deepest folder common to all
    inputs' roots. Returns `(items, problems)`, problems as `{"file_name", "path", "error"}` records.
    """
    exclude = os.path.abspath(exclude) if exclude else None
    roots, paths, problems = [], [], []
    for raw in inputs:
        if os.path.exists(raw):
            absolute = os.path.abspath(raw)
            if os.path.isdir(absolute):
                roots.append(absolute)
                paths.extend(_walk_images(absolute, exclude))
            else:
                roots.append(os.path.dirname(absolute))
                paths.append(absolute)
        elif GLOB_CHARACTERS & set(raw):
            matches = sorted(glob.glob(raw, recursive=True))
            if matches:
                roots.append(_glob_root(raw))
            for match in matches:
                match = os.path.abspath(match)
                if os.path.isdir(match):
                    paths.extend(_walk_images(match, exclude))
                elif _is_image_file(match) and not _inside(match, exclude):
                    paths.append(match)
            if not matches:
                problems.append({"file_name": raw, "path": raw, "error": "the pattern matches no file"})
        else:
            problems.append({"file_name": raw, "path": raw, "error": "no such file or folder"})
    if not roots:
        return [], problems
    root = os.path.commonpath(roots)
    unique = {}
    for path in paths:
        file_name = Path(os.path.relpath(path, root)).as_posix()
        unique.setdefault(file_name, path)
    items = [InputItem(path=unique[name], file_name=name) for name in sorted(unique)]
    ids: Dict[int, str] = {}
    for item in items:
        other = ids.setdefault(item.image_id, item.file_name)
        if other != item.file_name:  # 52-bit SHA-256 prefixes: practically impossible, but never silently merged
            raise SegmentError(f"{other!r} and {item.file_name!r} have the same image_id {item.image_id}; rename one.")
    return items, problems


def read_image_size(path: str) -> Tuple[int, int]:
    """(height, width) after EXIF orientation, from the file header only (no pixel decoding)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
    except Image.UnidentifiedImageError as error:
        from image_processing_mask_rcnn import unreadable_image_reason

        raise OSError(f"Could not read image {path!r}: {unreadable_image_reason(os.path.getsize(path))}") from error
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise OSError(f"Could not read image {path!r}: {error}") from error
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def plan_batches(sizes: Sequence[Tuple[int, int]], batch_size: int,
                 window_batches: int = SORT_WINDOW_BATCHES) -> List[List[int]]:
    """Groups item indices into batches of similar shape to keep padding small.

    Within consecutive windows of `batch_size * window_batches` items (input order elsewhere, so progress and the
    journal advance through the input in order), items are sorted by aspect ratio (height / width, which decides the
    resized shape) then by area, and cut into batches of `batch_size`.
    """
    window = max(1, batch_size * window_batches)
    batches = []
    for start in range(0, len(sizes), window):
        indices = list(range(start, min(start + window, len(sizes))))
        indices.sort(key=lambda i: (sizes[i][0] / max(sizes[i][1], 1), sizes[i][0] * sizes[i][1], i))
        batches.extend(indices[offset:offset + batch_size] for offset in range(0, len(indices), batch_size))
    return batches


# ================================================================================================================
# Overlays
# ================================================================================================================


def _class_colour(label: int) -> Tuple[int, int, int]:
    """A fixed bright colour per class index (golden-ratio hue steps)."""
    import colorsys

    red, green, blue = colorsys.hsv_to_rgb((label * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(red * 255), int(green * 255), int(blue * 255)


def draw_overlay(rgb: np.ndarray, result: Mapping[str, Any], label_names: Sequence[str],
                 alpha: float = 0.45) -> Image.Image:
    """(H, W, 3) uint8 image + one post-processed result -> PIL image with masks, boxes and "label score" captions."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    canvas = torch.from_numpy(np.array(rgb, dtype=np.uint8, order="C")).permute(2, 0, 1)
    labels = [int(label) for label in _to_numpy(result["labels"]).reshape(-1)]
    if labels:
        colours = [_class_colour(label) for label in labels]
        masks = result.get("masks")
        if masks is not None:
            canvas = draw_segmentation_masks(canvas, torch.as_tensor(masks, dtype=torch.bool), alpha=alpha,
                                             colors=colours)
        height, width = rgb.shape[:2]
        boxes = torch.as_tensor(_to_numpy(result["boxes"]), dtype=torch.float32).reshape(-1, 4)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height - 1)
        scores = _to_numpy(result["scores"]).reshape(-1).tolist()
        captions = [f"{label_names[label] if label < len(label_names) else label} {score:.2f}"
                    for label, score in zip(labels, scores)]
        canvas = draw_bounding_boxes(canvas, boxes, labels=captions, colors=colours, width=2)
    return Image.fromarray(canvas.permute(1, 2, 0).numpy())


# ================================================================================================================
# Output folder: atomic JSON, journal, resume
# ================================================================================================================

PREDICTIONS = "predictions.json"
JOURNAL = "predictions.jsonl"
IMAGES = "images.json"
FAILURES = "failures.json"
OVERLAYS = "overlays"
SHARDS = "predictions"  # --shard-output: OUT/predictions/part-NNNNN.jsonl (+ info.json)
SHARD_PREFIX, SHARD_SUFFIX = "part-", ".jsonl"
SHARD_INFO = "info.json"
DEFAULT_IMAGES_PER_SHARD = 1000


def write_json_atomic(path: str, data: Any) -> None:
    """Writes JSON to a temporary file in the same folder, fsyncs it and renames it over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(data, stream, separators=(",", ":"))
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def read_journal(path: str) -> Dict[str, Dict[str, Any]]:
    """file_name -> `{"image", "annotations"}` from a journal; a torn last line (hard kill mid-write) is ignored."""
    entries: Dict[str, Dict[str, Any]] = {}
    if not os.path.isfile(path):
        return entries
    with open(path, encoding="utf-8") as stream:
        for line in stream:
            try:
                entry = json.loads(line)
                entries[entry["image"]["file_name"]] = entry
            except (ValueError, KeyError, TypeError):
                continue
    return entries


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def shard_paths(output_dir: str) -> List[str]:
    """The `--shard-output` shards of an output folder (`OUT/predictions/part-NNNNN.jsonl`), in index order."""
    folder = os.path.join(output_dir, SHARDS)
    if not os.path.isdir(folder):
        return []
    names = [name for name in os.listdir(folder) if name.startswith(SHARD_PREFIX) and name.endswith(SHARD_SUFFIX)]
    return [os.path.join(folder, name) for name in sorted(names)]


def read_shards(output_dir: str) -> Dict[str, Dict[str, Any]]:
    """file_name -> `{"image", "annotations"}` from all `--shard-output` shards (same lines as the journal; a torn
    last line of a shard that was being written when the run was killed is ignored)."""
    entries: Dict[str, Dict[str, Any]] = {}
    for path in shard_paths(output_dir):
        entries.update(read_journal(path))
    return entries


def _shard_file_names(output_dir: str) -> Set[str]:
    """The file names in all shards, without keeping their records in memory."""
    names: Set[str] = set()
    for path in shard_paths(output_dir):
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                try:
                    names.add(json.loads(line)["image"]["file_name"])
                except (ValueError, KeyError, TypeError):
                    continue
    return names


def load_finished(output_dir: str, include_shards: bool = True) -> Dict[str, Dict[str, Any]]:
    """Images already done in an output folder: the journal (and the `--shard-output` shards unless
    `include_shards=False`), plus the `predictions.json` / `images.json` records of images none of these has (e.g. a
    folder whose journal was deleted, or results made elsewhere)."""
    entries = read_shards(output_dir) if include_shards else {}
    entries.update(read_journal(os.path.join(output_dir, JOURNAL)))
    images_path, predictions_path = os.path.join(output_dir, IMAGES), os.path.join(output_dir, PREDICTIONS)
    images = _read_json(images_path).get("images", []) if os.path.isfile(images_path) else []
    records = _read_json(predictions_path) if os.path.isfile(predictions_path) else []
    name_of_id = {image["id"]: image["file_name"] for image in images}
    recovered: Dict[str, Dict[str, Any]] = {}
    for image in images:
        if image["file_name"] not in entries:
            recovered[image["file_name"]] = {"image": image, "annotations": []}
    for record in records:
        file_name = record.get("file_name") or name_of_id.get(record.get("image_id"))
        if file_name is None or file_name in entries:
            continue
        entry = recovered.setdefault(file_name, {"image": {"id": record["image_id"], "file_name": file_name},
                                                 "annotations": []})
        entry["annotations"].append(record)
    entries.update(recovered)
    return entries


def _remove_previous_results(output_dir: str) -> None:
    """Deletes an earlier run's results of both forms (journal, COCO files, shards), so that a fresh run's folder
    holds only its own images and a later --resume does not keep stale ones; overlays are overwritten as they come."""
    single = [os.path.join(output_dir, name) for name in (JOURNAL, PREDICTIONS, IMAGES)]
    shards = shard_paths(output_dir)
    stale = [path for path in single if os.path.isfile(path)] + shards
    if not stale:
        return
    print(f"note: replacing the results in {output_dir} (pass --resume to keep them)", file=sys.stderr)
    for path in stale:
        os.unlink(path)
    shard_info = os.path.join(output_dir, SHARDS, SHARD_INFO)
    if os.path.isfile(shard_info):
        os.unlink(shard_info)


class OutputFolder:
    """The run's output folder: journal appends per batch, atomic assembly of the JSON files."""

    def __init__(self, output_dir: str, resume: bool, info: Dict[str, Any], categories: List[Dict]) -> None:
        self.output_dir = os.path.abspath(output_dir)
        os.makedirs(self.output_dir, exist_ok=True)
        self.info, self.categories = info, categories
        self.entries: Dict[str, Dict[str, Any]] = load_finished(self.output_dir) if resume else {}
        if not resume:
            _remove_previous_results(self.output_dir)
        self.failures: Dict[str, Dict[str, str]] = {}
        self.previous_info: Optional[Dict[str, Any]] = None
        images_path = os.path.join(self.output_dir, IMAGES)
        if resume and os.path.isfile(images_path):
            self.previous_info = _read_json(images_path).get("info")
        # Start the journal from what is kept (drops torn lines and, without --resume, an old run's entries).
        journal_path = os.path.join(self.output_dir, JOURNAL)
        temporary = journal_path + ".tmp"
        with open(temporary, "w", encoding="utf-8") as stream:
            for entry in self.entries.values():
                stream.write(json.dumps(entry, separators=(",", ":")) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, journal_path)
        self.journal = open(journal_path, "a", encoding="utf-8")

    def is_finished(self, file_name: str) -> bool:
        """Whether the image is already in the results (kept from before, or done in this run)."""
        return file_name in self.entries

    def add(self, entries: Iterable[Dict[str, Any]]) -> None:
        """Appends finished images to the journal and makes them durable (one fsync per batch)."""
        for entry in entries:
            self.entries[entry["image"]["file_name"]] = entry
            self.journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.journal.flush()
        os.fsync(self.journal.fileno())

    def fail(self, file_name: str, path: str, error: str) -> None:
        self.failures[file_name] = {"file_name": file_name, "path": path, "error": error}

    def finish(self) -> None:
        """Writes predictions.json, images.json and failures.json (each atomically) from everything finished."""
        self.journal.close()
        ordered = [self.entries[name] for name in sorted(self.entries)]
        write_json_atomic(os.path.join(self.output_dir, PREDICTIONS),
                          [record for entry in ordered for record in entry["annotations"]])
        write_json_atomic(os.path.join(self.output_dir, IMAGES),
                          {"info": self.info, "images": [entry["image"] for entry in ordered],
                           "categories": self.categories})
        write_json_atomic(os.path.join(self.output_dir, FAILURES),
                          [self.failures[name] for name in sorted(self.failures)])


class ShardedOutputFolder:
    """`--shard-output`: results as JSON-lines shards `OUT/predictions/part-NNNNN.jsonl`, for runs too large for one
    `predictions.json`.

    Each line is one finished image, `{"image": {"id", "file_name", "width", "height"}, "annotations": [COCO
    records]}` (the journal's format). Lines are appended and flushed as batches finish; a shard is fsync'ed and
    closed after `images_per_shard` images and the next one begins, so a crash loses at most the unsynced tail of
    the open shard (a torn last line is ignored when reading). A resumed run starts a new shard and never rewrites
    old ones. Only file names are kept in memory; `OUT/predictions/info.json` holds `{"info", "categories"}` and
    `failures.json` is written as in the single-file form. `read_shards(OUT)` reads the results back.
    """

    def __init__(self, output_dir: str, resume: bool, info: Dict[str, Any], categories: List[Dict],
                 images_per_shard: int = DEFAULT_IMAGES_PER_SHARD) -> None:
        if images_per_shard < 1:
            raise ValueError(f"images_per_shard must be at least 1, got {images_per_shard}.")
        self.output_dir = os.path.abspath(output_dir)
        self.shard_dir = os.path.join(self.output_dir, SHARDS)
        os.makedirs(self.shard_dir, exist_ok=True)
        self.info, self.categories, self.images_per_shard = info, categories, images_per_shard
        self.previous_info: Optional[Dict[str, Any]] = None
        if resume:
            self.finished_names = _shard_file_names(self.output_dir) | set(
                load_finished(self.output_dir, include_shards=False))
            info_path = os.path.join(self.shard_dir, SHARD_INFO)
            images_path = os.path.join(self.output_dir, IMAGES)
            for path in (info_path, images_path):
                if self.previous_info is None and os.path.isfile(path):
                    self.previous_info = _read_json(path).get("info")
        else:
            _remove_previous_results(self.output_dir)
            self.finished_names = set()
        existing = shard_paths(self.output_dir)
        self.next_index = 1 + max((int(os.path.basename(path)[len(SHARD_PREFIX):-len(SHARD_SUFFIX)])
                                   for path in existing), default=-1)
        self.failures: Dict[str, Dict[str, str]] = {}
        self.shard: Optional[Any] = None  # the open shard's stream
        self.images_in_shard = 0
        write_json_atomic(os.path.join(self.shard_dir, SHARD_INFO), {"info": info, "categories": categories})

    def is_finished(self, file_name: str) -> bool:
        """Whether the image is already in the results (kept from before, or done in this run)."""
        return file_name in self.finished_names

    def _close_shard(self) -> None:
        if self.shard is not None:
            self.shard.flush()
            os.fsync(self.shard.fileno())
            self.shard.close()
            self.shard, self.images_in_shard = None, 0

    def add(self, entries: Iterable[Dict[str, Any]]) -> None:
        """Appends finished images to the open shard (flushed per batch), rolling over to a new shard when full."""
        for entry in entries:
            if self.shard is None:
                name = f"{SHARD_PREFIX}{self.next_index:05d}{SHARD_SUFFIX}"
                self.shard = open(os.path.join(self.shard_dir, name), "x", encoding="utf-8")
                self.next_index += 1
            self.shard.write(json.dumps(entry, separators=(",", ":")) + "\n")
            self.finished_names.add(entry["image"]["file_name"])
            self.images_in_shard += 1
            if self.images_in_shard >= self.images_per_shard:
                self._close_shard()
        if self.shard is not None:
            self.shard.flush()

    def fail(self, file_name: str, path: str, error: str) -> None:
        self.failures[file_name] = {"file_name": file_name, "path": path, "error": error}

    def finish(self) -> None:
        """Closes the open shard (fsync) and writes failures.json."""
        self._close_shard()
        write_json_atomic(os.path.join(self.output_dir, FAILURES),
                          [self.failures[name] for name in sorted(self.failures)])


# ================================================================================================================
# The run
# ================================================================================================================


@dataclass
class RunSummary:
    done: int = 0  # images processed in this run
    skipped: int = 0  # images kept from a previous run (--resume)
    failed: int = 0
    instances: int = 0  # instances written in this run
    seconds: float = 0.0
    inferred_images: int = 0  # images handed to the model in this run (0 when all were kept from before)
    started_at: float = 0.0  # time.perf_counter() when processing began (model loaded; with --ray before Ray starts)
    # (seconds since started_at, images) of every finished batch, in arrival order: start-up cost and steady rate
    finished_batches: List[Tuple[float, int]] = field(default_factory=list)
    worker_threads: Dict[str, int] = field(default_factory=dict)  # --ray: "host:pid" of a worker -> torch threads


class _Progress:
    """tqdm when installed (images/s), otherwise silent; failures are printed without breaking the bar."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, disable=None) if tqdm is not None else None

    def update(self, count: int, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(count)

    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _error_text(error: BaseException) -> str:
    """`Type: first line of the message` (a worker's error text is passed on as it is)."""
    if isinstance(error, WorkerError):
        return str(error)
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def _overlay_path(output_dir: str, file_name: str) -> str:
    return os.path.join(output_dir, OVERLAYS, *file_name.split("/")) + ".png"


def input_windows(items: Sequence[InputItem], batch_size: int,
                  window_batches: int = SORT_WINDOW_BATCHES) -> List[Sequence[InputItem]]:
    """The consecutive windows of `batch_size * window_batches` items inside which batches are planned.

    Batches never cross a window, so every executor that plans window by window (`iter_batches` in this process, or
    one Ray task per window) forms the same batches, hence the same padded forward passes and the same results."""
    window = max(1, batch_size * window_batches)
    return [items[start:start + window] for start in range(0, len(items), window)]


def iter_batches(items: Sequence[InputItem], batch_size: int, report: Callable[[InputItem, str], None],
                 window_batches: int = SORT_WINDOW_BATCHES) -> Iterator[List[InputItem]]:
    """Batches of items with similar shapes, streamed window by window (see `plan_batches`); image sizes come from
    the file headers, and files whose header cannot be read are reported here and left out."""
    for window_items in input_windows(items, batch_size, window_batches):
        readable, sizes = [], []
        for item in window_items:
            try:
                sizes.append(read_image_size(item.path))
                readable.append(item)
            except OSError as error:
                report(item, _error_text(error))
        for indices in plan_batches(sizes, batch_size, window_batches):
            yield [readable[index] for index in indices]


def decode_image(path: str, processor: Any = None) -> np.ndarray:
    """An image file as the (H, W, 3) uint8 RGB array the processor would make of it (EXIF orientation applied).

    Feeding this array to the processor gives the same pixels as passing the path, and the overlay reuses it, so
    each file is decoded once."""
    with open_image(path, processor) as image:
        return image_to_rgb_array(image, processor)


def _decode_batch(items: Sequence[InputItem], processor: Any, report: Callable[[InputItem, str], None]):
    """Decodes a batch's files; unreadable ones are reported and left out. Returns [(item, RGB array)]."""
    decoded = []
    for item in items:
        try:
            decoded.append((item, decode_image(item.path, processor)))
        except (OSError, ValueError, TypeError, SyntaxError, Image.DecompressionBombError) as error:
            report(item, _error_text(error))
    return decoded


def save_overlay_file(output_dir: str, file_name: str, overlay: Image.Image) -> None:
    """Writes an overlay to `OUT/overlays/<file_name>.png`."""
    path = _overlay_path(output_dir, file_name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    overlay.save(path, format="PNG")


def process_batch(decoded: Sequence[Tuple[InputItem, np.ndarray]], model: Any, processor: Any,
                  arguments: argparse.Namespace, category_ids: Optional[Mapping[int, int]],
                  label_names: Sequence[str], output_dir: str,
                  save_overlay: Optional[Callable[[str, Image.Image], None]] = None) -> List[Dict[str, Any]]:
    """Forward pass, records and overlays of one batch of decoded images -> journal entries.

    Overlays go to `save_overlay(file_name, image)` when given (a Ray worker returns them to the driver), else to
    `output_dir/overlays/`."""
    entries = []
    results = predict_images(model, processor, [rgb for _, rgb in decoded], arguments.threshold,
                             arguments.mask_threshold, arguments.dtype)
    for (item, rgb), result in zip(decoded, results):
        height, width = (int(size) for size in result["masks"].shape[-2:])
        records = detections_to_coco_records(result, item.image_id, category_ids, item.file_name)
        if not arguments.no_overlays:
            overlay = draw_overlay(rgb, result, label_names)
            if save_overlay is None:
                save_overlay_file(output_dir, item.file_name, overlay)
            else:
                save_overlay(item.file_name, overlay)
        entries.append({"image": {"id": item.image_id, "file_name": item.file_name, "width": width,
                                  "height": height}, "annotations": records})
    return entries


def run(arguments: argparse.Namespace) -> Tuple[RunSummary, Any]:
    """Processes the inputs of parsed command-line arguments in this process, or with `--ray` on a Ray cluster;
    returns the summary and the output folder (`OutputFolder`, or `ShardedOutputFolder` with --shard-output)."""
    _require_pycocotools()
    use_ray = getattr(arguments, "ray", None) is not None
    if use_ray:  # without Ray, fail before any work with the sentence saying how to install it
        _import_ray(local=arguments.ray == RAY_LOCAL)
    items, input_problems = collect_inputs(arguments.inputs, exclude=arguments.output_dir)
    if not items and not input_problems:
        raise SegmentError(f"No image files found in {' '.join(arguments.inputs)} (extensions: "
                           f"{', '.join(sorted(IMAGE_EXTENSIONS))}).")
    if use_ray:  # the workers load the model; the driver only needs its labels
        model, processor, id2label = None, None, load_model_config(arguments.model).id2label
    else:
        model, processor = load_model_and_processor(arguments.model, arguments.device or "cpu")
        id2label = model.config.id2label
    category_ids = coco_category_ids(id2label)
    label_names = _label_names(id2label)
    info = {"model": arguments.model, "threshold": arguments.threshold, "mask_threshold": arguments.mask_threshold,
            "category_ids": "coco" if category_ids is not None else "label_index",
            "image_id": "first 52 bits of sha256(file_name)", "generator": "segment.py"}
    categories = category_list(id2label, category_ids)
    with contextlib.ExitStack() as ray_connection:
        if use_ray and not arguments.resume:
            # Start or join Ray before the output folder replaces earlier results: a cluster that cannot be reached
            # then leaves them as they were. (With --resume nothing is replaced, and Ray is needed only if work is
            # left.)
            ray_connection.enter_context(ray_session(arguments.ray))
        if getattr(arguments, "shard_output", False):
            output = ShardedOutputFolder(arguments.output_dir, arguments.resume, info, categories,
                                         arguments.images_per_shard)
        else:
            output = OutputFolder(arguments.output_dir, arguments.resume, info, categories)
        summary = _process(items, input_problems, output, arguments, model, processor, category_ids, label_names,
                           info, ray_connection)
    return summary, output


def _process(items: Sequence[InputItem], input_problems: Sequence[Dict[str, str]], output: Any,
             arguments: argparse.Namespace, model: Any, processor: Any, category_ids: Optional[Mapping[int, int]],
             label_names: Sequence[str], info: Dict[str, Any], ray_connection: contextlib.ExitStack) -> RunSummary:
    """The images not finished yet, in this process or (model None) on Ray; always leaves the output complete."""
    summary = RunSummary()
    progress: Optional[_Progress] = None
    try:
        if output.previous_info and any(output.previous_info.get(key) != info[key]
                                        for key in ("threshold", "mask_threshold")):
            print(f"warning: resuming a run made with threshold {output.previous_info.get('threshold')} / "
                  f"mask threshold {output.previous_info.get('mask_threshold')}; kept images are not redone.",
                  file=sys.stderr)
        todo = [item for item in items if not output.is_finished(item.file_name)]
        summary.skipped = len(items) - len(todo)
        progress = _Progress(len(todo))

        def report(item: InputItem, error: str) -> None:
            output.fail(item.file_name, item.path, error)
            summary.failed += 1
            progress.message(f"skipped {item.file_name}: {error}")
            progress.update(1)

        for problem in input_problems:
            output.fail(**problem)
            summary.failed += 1
            progress.message(f"skipped {problem['file_name']}: {problem['error']}")

        summary.started_at = time.perf_counter()
        if model is not None:
            for batch in iter_batches(todo, arguments.batch_size, report):
                decoded = _decode_batch(batch, processor, report)
                entries = _run_with_fallback(decoded, model, processor, arguments, category_ids, label_names,
                                             output.output_dir, report)
                summary.inferred_images += len(decoded)
                _record_entries(entries, output, summary, progress)
        elif todo:  # nothing left to do (--resume): no cluster is started or joined
            ray_connection.enter_context(ray_session(arguments.ray))
            run_ray_pipeline(todo, arguments, output, summary, progress, report)
        summary.seconds = time.perf_counter() - summary.started_at
    finally:
        if progress is not None:
            progress.close()
        output.finish()
    return summary


def _record_entries(entries: List[Dict[str, Any]], output: Any, summary: RunSummary, progress: _Progress) -> None:
    """Adds one batch's finished images to the output and the counts."""
    if entries:
        summary.finished_batches.append((time.perf_counter() - summary.started_at, len(entries)))
    output.add(entries)
    summary.done += len(entries)
    summary.instances += sum(len(entry["annotations"]) for entry in entries)
    progress.update(len(entries), failed=summary.failed, instances=summary.instances)


def _run_with_fallback(decoded, model, processor, arguments, category_ids, label_names, output_dir, report,
                       save_overlay=None):
    """`process_batch`; on a model error with --keep-going, retries image by image and reports those that fail."""
    if not decoded:
        return []
    try:
        return process_batch(decoded, model, processor, arguments, category_ids, label_names, output_dir,
                             save_overlay)
    except (RuntimeError, ValueError, OSError) as error:
        if not arguments.keep_going:
            raise
        if len(decoded) == 1:
            report(decoded[0][0], _error_text(error))
            return []
    entries = []
    for one in decoded:
        entries.extend(_run_with_fallback([one], model, processor, arguments, category_ids, label_names,
                                          output_dir, report, save_overlay))
    return entries


# ================================================================================================================
# Scale-out with Ray Data (--ray). Ray is optional (requirements-ray.txt) and imported only on this path.
# ================================================================================================================

RAY_HINT = ('--ray needs Ray Data, which is not installed: pip install -r requirements-ray.txt '
            '(or pip install "ray[data]").')
RAY_LOCAL = "local"  # `--ray` without an address: a Ray instance on this machine, started and stopped by the run
# Logical CPUs of a task that reads one window's headers and decodes its images: half a CPU when the forward pass
# runs on CPUs (decoding is short next to it), a whole one with GPUs (decoding is then what limits throughput).
PREPARE_TASK_CPUS = 0.5
GPU_PREPARE_TASK_CPUS = 1.0
GPU_WORKER_CPUS = 2.0  # default CPU share of a GPU worker (post-processing, RLE, overlays); the rest decodes
RAY_PAYLOAD = "payload"  # the one column of the pipeline's rows: a pickled dict of plain Python / numpy values


class WorkerError(RuntimeError):
    """A model or pipeline error reported by a Ray worker; its text is already `Type: message`."""


# Ray reads this when it is imported: "0" makes a Ray instance started here single-machine, every server bound to
# 127.0.0.1 (Ray otherwise replaces 127.0.0.1 by the machine's address and listens on all interfaces).
RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _import_ray(local: bool = False) -> Any:
    """`import ray` (with Ray Data), or a `SegmentError` saying how to install it. `local=True` (a Ray instance of
    this machine only will be started) sets `RAY_SINGLE_MACHINE_ENV` first unless Ray is already imported or the
    variable is set."""
    if local and "ray" not in sys.modules:
        os.environ.setdefault(RAY_SINGLE_MACHINE_ENV, "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SegmentError(RAY_HINT) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Ray for one run, yielding the `ray` module.

    A Ray instance this process already has (`ray.is_initialized()`, e.g. a notebook or a test) is used as it is and
    left running. Otherwise `address` "local" starts a Ray instance with this machine's cores, bound to 127.0.0.1
    and without the dashboard, and anything else ("auto", "HOST:PORT", "ray://HOST:10001") joins that cluster; what
    was started or joined here is shut down (or disconnected) at the end.
    """
    ray = _import_ray(local=address == RAY_LOCAL)
    if ray.is_initialized():
        yield ray
        return
    if address not in (RAY_LOCAL, "auto"):
        _check_reachable(address)
    try:
        if address == RAY_LOCAL:
            ray.init(num_cpus=os.cpu_count() or 1, _node_ip_address="127.0.0.1", include_dashboard=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SegmentError(f"Could not start or join Ray at {address!r}: {_error_text(error)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fails fast when nothing listens at a `HOST:PORT` or `ray://HOST:PORT` address (Ray itself keeps retrying for
    minutes)."""
    host, _, port = address[len("ray://"):].rpartition(":") if address.startswith("ray://") else address.rpartition(":")
    if not host or not port.isdigit():
        raise SegmentError(f"--ray {address!r} is not an address: use HOST:PORT, ray://HOST:PORT or auto.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise SegmentError(f"No Ray cluster answers at {address} ({error}); start one with `ray start --head` or "
                           "check the address.") from None


@dataclass(frozen=True)
class RayResources:
    """How the inference actors are sized: `workers` actors, each reserving `cpus_per_worker` logical CPUs (and
    running torch with `threads_per_worker` threads) and `gpus_per_worker` GPUs; decoding tasks reserve
    `prepare_task_cpus` each."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    prepare_task_cpus: float = PREPARE_TASK_CPUS

    @property
    def threads_per_worker(self) -> int:
        """torch threads of a worker: its CPU share rounded to the nearest whole number, at least 1."""
        return max(1, int(self.cpus_per_worker + 0.5))


def plan_ray_resources(node_cpus: Sequence[float], cluster_gpus: float, workers: Optional[int] = None,
                       cpus_per_worker: Optional[float] = None, gpus_per_worker: float = 0.0) -> RayResources:
    """Sizes the inference actor pool from the cluster's CPUs per node and GPU count; explicit values win.

    Defaults: with GPUs, one worker per `gpus_per_worker` GPUs, each with min(2, its CPU share) CPUs so that most
    CPUs decode; on CPUs only, one worker per node. A CPU share is the cluster's CPUs, less one decoding task's
    CPUs per node (`PREPARE_TASK_CPUS`, with GPUs `GPU_PREPARE_TASK_CPUS`), divided among the workers (at most a
    node's CPUs less that reserve), so on a 2-core machine one worker gets 1.5 CPUs and runs 2 torch threads, two
    workers get 0.75 CPUs and 1 thread each.
    """
    if not node_cpus:
        raise SegmentError("The Ray cluster has no node with CPUs.")
    if workers is None:
        workers = max(1, int(cluster_gpus // gpus_per_worker)) if gpus_per_worker > 0 else len(node_cpus)
    if workers < 1:
        raise SegmentError(f"--workers must be at least 1, got {workers}.")
    prepare_task_cpus = GPU_PREPARE_TASK_CPUS if gpus_per_worker > 0 else PREPARE_TASK_CPUS
    if cpus_per_worker is None:
        spare = sum(node_cpus) - prepare_task_cpus * len(node_cpus)
        share = min(spare / workers, max(node_cpus) - prepare_task_cpus)
        if gpus_per_worker > 0:
            share = min(share, GPU_WORKER_CPUS)
        cpus_per_worker = max(0.01, math.floor(share * 100) / 100)
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise SegmentError("--cpus-per-worker must be positive and --gpus-per-worker not negative.")
    return RayResources(workers=workers, cpus_per_worker=float(cpus_per_worker),
                        gpus_per_worker=float(gpus_per_worker), prepare_task_cpus=prepare_task_cpus)


def worker_name() -> str:
    """"host:pid" of this process (process ids repeat across a cluster's nodes)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pack(value: Dict[str, Any]) -> bytes:
    return pickle.dumps(value, protocol=5)


def prepare_window(rows: Dict[str, np.ndarray], model_id: str, batch_size: int) -> Iterator[Dict[str, List[bytes]]]:
    """Ray Data task: windows of input files -> their planned batches, decoded, one output row (one block) each.

    Reads the window's headers and plans its batches with `iter_batches` and decodes them with `_decode_batch`,
    exactly as the single-process run does, so the actors see the same batches. Unreadable files travel with the
    next row as failure records `{"file_name", "path", "error"}`.
    """
    processor = load_image_processor(model_id)
    for window in rows["window"]:
        failures: List[Dict[str, str]] = []

        def report(item: InputItem, error: str) -> None:
            failures.append({"file_name": item.file_name, "path": item.path, "error": error})

        items = [InputItem(path=path, file_name=file_name) for path, file_name in json.loads(window)]
        for batch in iter_batches(items, batch_size, report):
            decoded = _decode_batch(batch, processor, report)
            images = [(item.path, item.file_name, rgb) for item, rgb in decoded]
            yield {RAY_PAYLOAD: [_pack({"images": images, "failures": list(failures)})]}
            failures.clear()
        if failures:
            yield {RAY_PAYLOAD: [_pack({"images": [], "failures": list(failures)})]}


class RayInferenceWorker:
    """Ray Data actor: loads the model once, then runs each planned batch in one forward pass.

    Records and overlays are made by `_run_with_fallback` / `process_batch`, the single-process code; overlays come
    back to the driver as PNG bytes (workers need no access to the output folder). Each output row holds
    `{"entries", "failures", "overlays": [(file_name, png)], "model_error", "inferred_images", "worker": (pid,
    torch threads)}`; a model error without --keep-going is returned, not raised, so the driver can stop cleanly.
    Workers are identified as `worker_name()`, "host:pid".
    """

    def __init__(self, model_id: str, device: str, threads: int, options: Dict[str, Any]) -> None:
        torch.set_num_threads(threads)
        try:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers without the helper
            pass
        self.model, self.processor = load_model_and_processor(model_id, device)
        self.options = argparse.Namespace(**options)
        self.category_ids = coco_category_ids(self.model.config.id2label)
        self.label_names = _label_names(self.model.config.id2label)

    def __call__(self, rows: Dict[str, np.ndarray]) -> Dict[str, List[bytes]]:
        return {RAY_PAYLOAD: [_pack(self.run_batch(pickle.loads(payload))) for payload in rows[RAY_PAYLOAD]]}

    def run_batch(self, work: Dict[str, Any]) -> Dict[str, Any]:
        failures = list(work["failures"])
        overlays: List[Tuple[str, bytes]] = []
        decoded = [(InputItem(path=path, file_name=file_name), rgb) for path, file_name, rgb in work["images"]]

        def report(item: InputItem, error: str) -> None:
            failures.append({"file_name": item.file_name, "path": item.path, "error": error})

        def save_overlay(file_name: str, overlay: Image.Image) -> None:
            buffer = io.BytesIO()
            overlay.save(buffer, format="PNG")
            overlays.append((file_name, buffer.getvalue()))

        model_error = None
        try:
            entries = _run_with_fallback(decoded, self.model, self.processor, self.options, self.category_ids,
                                         self.label_names, "", report, save_overlay)
        except (RuntimeError, ValueError, OSError) as error:  # without --keep-going: the run stops
            entries, overlays, model_error = [], [], _error_text(error)
        return {"entries": entries, "failures": failures, "overlays": overlays, "model_error": model_error,
                "inferred_images": len(decoded), "worker": (worker_name(), torch.get_num_threads())}


def _ray_device_and_gpus(arguments: argparse.Namespace) -> Tuple[str, float]:
    """The workers' torch device and GPUs per worker from --device / --gpus-per-worker (Ray assigns the GPUs)."""
    device = arguments.device or "cpu"
    gpus = arguments.gpus_per_worker
    if device not in ("cpu", "cuda"):
        raise SegmentError(f"With --ray, --device is cpu or cuda (Ray gives each worker its GPUs), not {device!r}.")
    if gpus is None:
        gpus = 1.0 if device == "cuda" else 0.0
    return ("cuda" if gpus > 0 else "cpu"), float(gpus)


def run_ray_pipeline(todo: Sequence[InputItem], arguments: argparse.Namespace, output: Any, summary: RunSummary,
                     progress: _Progress, report: Callable[[InputItem, str], None]) -> None:
    """Runs `todo` as a Ray Data pipeline on the connected cluster and writes results as they stream in.

    windows of paths (one block each) -> `prepare_window` tasks (headers, batch planning, decoding; one block per
    planned batch) -> `RayInferenceWorker` actor pool (`map_batches`, one planned batch per call) -> this process,
    which writes entries, overlays and failures. Batches are planned window by window as in the single-process run,
    so every forward pass pads the same images together and the results are the same.
    """
    import ray
    import ray.cloudpickle
    import ray.data

    model_id = os.path.abspath(arguments.model) if os.path.isdir(arguments.model) else arguments.model
    device, gpus_per_worker = _ray_device_and_gpus(arguments)
    node_cpus = [float(node["Resources"].get("CPU", 0)) for node in ray.nodes()
                 if node.get("Alive") and node["Resources"].get("CPU", 0) > 0]
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    resources = plan_ray_resources(node_cpus, cluster_gpus, arguments.workers, arguments.cpus_per_worker,
                                   gpus_per_worker)
    most_batches = math.ceil(len(todo) / arguments.batch_size)
    if resources.workers > most_batches:  # no actor loads the model for nothing; the CPU share (threads) stays
        resources = replace(resources, workers=most_batches)
    wanted_cpus = resources.workers * resources.cpus_per_worker + resources.prepare_task_cpus
    wanted_gpus = resources.workers * resources.gpus_per_worker
    if wanted_cpus > sum(node_cpus) or wanted_gpus > cluster_gpus:
        progress.message(f"warning: {resources.workers} workers with {resources.cpus_per_worker:g} CPUs and "
                         f"{resources.gpus_per_worker:g} GPUs each (plus {resources.prepare_task_cpus:g} CPU to "
                         f"decode) need more than the cluster's {sum(node_cpus):g} CPUs / {cluster_gpus:g} GPUs; the "
                         "run waits until they are there (an autoscaling cluster adds nodes), Ctrl-C stops it")
    progress.message(f"ray: {resources.workers} workers x {resources.cpus_per_worker:g} CPUs "
                     f"({resources.threads_per_worker} torch threads), {resources.gpus_per_worker:g} GPUs, "
                     f"device {device}; cluster {sum(node_cpus):g} CPUs / {cluster_gpus:g} GPUs on "
                     f"{len(node_cpus)} nodes")

    windows = [json.dumps([[item.path, item.file_name] for item in window])
               for window in input_windows(todo, arguments.batch_size)]
    options = {name: getattr(arguments, name) for name in ("threshold", "mask_threshold", "dtype", "no_overlays",
                                                           "keep_going")}
    module = sys.modules[__name__]
    # Workers get this module's functions by value: no copy of segment.py is needed on the cluster's nodes.
    registered_here = module.__name__ not in ray.cloudpickle.list_registry_pickle_by_value()
    if registered_here:
        ray.cloudpickle.register_pickle_by_value(module)
    context = ray.data.DataContext.get_current()
    saved_context = (context.target_max_block_size, context.enable_progress_bars)
    # Every row (a window, a planned batch, a result) becomes its own block, so batches spread over all workers.
    context.target_max_block_size, context.enable_progress_bars = 1, False
    # Ray Data's own chatter (execution plans; "progress bars disabled": this run has its own) is kept off stderr.
    quiet_loggers = {logging.getLogger("ray.data"): logging.WARNING,
                     logging.getLogger("ray.data._internal.progress"): logging.ERROR}
    saved_levels = {logger: logger.level for logger in quiet_loggers}
    for logger, level in quiet_loggers.items():
        logger.setLevel(level)
    with warnings.catch_warnings():
        # fewer planned batches left than workers is fine; Ray Data's warning about it is advice for other pipelines
        warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
        try:
            dataset = ray.data.from_items([{"window": window} for window in windows], override_num_blocks=len(windows))
            dataset = dataset.map_batches(prepare_window, batch_size=1, num_cpus=resources.prepare_task_cpus,
                                          fn_kwargs={"model_id": model_id, "batch_size": arguments.batch_size})
            dataset = dataset.map_batches(
                RayInferenceWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=resources.workers),
                num_cpus=resources.cpus_per_worker,
                num_gpus=resources.gpus_per_worker,
                fn_constructor_kwargs={"model_id": model_id, "device": device,
                                       "threads": resources.threads_per_worker, "options": options})
            for row in dataset.iter_rows():
                result = pickle.loads(row[RAY_PAYLOAD])
                for failure in result["failures"]:
                    report(InputItem(path=failure["path"], file_name=failure["file_name"]), failure["error"])
                for file_name, png in result["overlays"]:
                    _write_bytes(_overlay_path(output.output_dir, file_name), png)
                summary.inferred_images += result["inferred_images"]
                if result["inferred_images"]:
                    worker, threads = result["worker"]
                    summary.worker_threads[worker] = threads
                _record_entries(result["entries"], output, summary, progress)
                if result["model_error"] is not None:
                    raise WorkerError(result["model_error"])
        except ray.exceptions.RayError as error:
            raise WorkerError(f"the Ray pipeline failed: {_error_text(error)}") from None
        finally:
            context.target_max_block_size, context.enable_progress_bars = saved_context
            for logger, level in saved_levels.items():
                logger.setLevel(level)
            if registered_here:
                ray.cloudpickle.unregister_pickle_by_value(module)


def _write_bytes(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as stream:
        stream.write(data)


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Instance segmentation of images, folders and globs with this Mask R-CNN; writes COCO results "
                    "(RLE masks), overlays and a failure list.",
        epilog="Exit status: 0 all done, 1 some inputs failed, 2 the run could not start.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (recursive) or glob patterns")
    parser.add_argument("--model", required=True, help="converted model folder or Hub repo id")
    parser.add_argument("--output-dir", required=True, help="folder for predictions.json, overlays/, failures.json")
    parser.add_argument("--threshold", type=float, default=0.5, help="keep instances with score >= this (0.5)")
    parser.add_argument("--mask-threshold", type=float, default=0.5,
                        help="a pixel belongs to an instance when its mask probability is >= this (0.5)")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (1)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (cpu); with --ray: cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES),
                        help="compute precision: bfloat16/float16 run the network under torch.autocast, weights and "
                             "RoIAlign/NMS/box decoding/mask pasting stay float32 (float32)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the images already in OUT (predictions.jsonl / predictions.json) and do the rest")
    parser.add_argument("--no-overlays", action="store_true", help="do not write overlays/")
    parser.add_argument("--keep-going", action="store_true",
                        help="on a model error (e.g. out of memory) retry the batch image by image and skip the "
                             "images that still fail, instead of stopping")
    parser.add_argument("--shard-output", action="store_true",
                        help="write OUT/predictions/part-NNNNN.jsonl shards as results come in instead of one "
                             "predictions.json (for very large runs)")
    parser.add_argument("--images-per-shard", type=int, default=DEFAULT_IMAGES_PER_SHARD,
                        help=f"images per shard with --shard-output ({DEFAULT_IMAGES_PER_SHARD})")
    scale_out = parser.add_argument_group("scale-out with Ray Data (pip install -r requirements-ray.txt)")
    scale_out.add_argument("--ray", nargs="?", const=RAY_LOCAL, default=None, metavar="ADDRESS",
                           help="run on Ray: without ADDRESS a local instance with this machine's cores; 'auto', "
                                "HOST:PORT or ray://HOST:10001 joins that cluster")
    scale_out.add_argument("--workers", type=int, default=None,
                           help="inference actors, each loading the model once (one per GPU with GPUs, else one "
                                "per node)")
    scale_out.add_argument("--cpus-per-worker", type=float, default=None,
                           help="logical CPUs per worker, also its torch thread count rounded (its share of the "
                                "CPUs not kept for decoding; at most 2 for GPU workers)")
    scale_out.add_argument("--gpus-per-worker", type=float, default=None,
                           help="GPUs per worker, fractions allowed (1 with --device cuda, else 0)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_argument_parser()
    arguments = parser.parse_args(argv)
    if not 0.0 <= arguments.threshold <= 1.0 or not 0.0 <= arguments.mask_threshold <= 1.0:
        parser.error("--threshold and --mask-threshold must be between 0 and 1")
    if arguments.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if arguments.images_per_shard < 1:
        parser.error("--images-per-shard must be at least 1")
    if arguments.ray is None:
        if any(value is not None for value in (arguments.workers, arguments.cpus_per_worker,
                                               arguments.gpus_per_worker)):
            parser.error("--workers, --cpus-per-worker and --gpus-per-worker need --ray")
        arguments.device = arguments.device or "cpu"
    elif (arguments.workers is not None and arguments.workers < 1) or (
            arguments.cpus_per_worker is not None and arguments.cpus_per_worker <= 0) or (
            arguments.gpus_per_worker is not None and arguments.gpus_per_worker < 0):
        parser.error("--workers and --cpus-per-worker must be positive, --gpus-per-worker not negative")
    try:
        summary, output = run(arguments)
    except SegmentError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print(f"interrupted; the finished images are written to {arguments.output_dir} (--resume continues)",
              file=sys.stderr)
        return 130
    except (RuntimeError, ValueError, OSError) as error:  # a model error without --keep-going
        print(f"error: {_error_text(error)}; the images finished before it are written to {arguments.output_dir} "
              "(rerun with --resume to continue, or --keep-going to skip such images)", file=sys.stderr)
        return EXIT_FAILURES
    rate = summary.done / summary.seconds if summary.seconds > 0 else 0.0
    kept = f" ({summary.skipped} kept from before)" if summary.skipped else ""
    print(f"{summary.done} images done{kept}, {summary.failed} failed, {summary.instances} instances, "
          f"{rate:.2f} images/s -> {os.path.join(output.output_dir, PREDICTIONS)}", file=sys.stderr)
    if summary.failed:
        print(f"failed inputs are listed in {os.path.join(output.output_dir, FAILURES)}", file=sys.stderr)
    return EXIT_FAILURES if summary.failed else EXIT_OK


if __name__ == "__main__":
    # Run the importable module `segment`, not this `__main__` copy, so that what Ray ships to its workers and the
    # exceptions main() catches are the same classes whether segment.py is run as a script or imported.
    import segment

    sys.exit(segment.main())
