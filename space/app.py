# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Gradio demo of the Mask R-CNN port: upload, paste or pick an image and see its instances.

    python space/app.py --model .                      # this folder's converted weights, http://127.0.0.1:7860
    python space/app.py --model USER/REPO --port 7861  # a Hub repository (its code runs: trust_remote_code=True)
    MODEL_ID=USER/REPO python app.py                   # what a Space runs (see docs/space.md)

The model is chosen by `--model`, else the `MODEL_ID` environment variable, else the first entry of `models:` in the
front matter of the README.md next to this file (what `tools/prepare_space.py --model-id` writes). It is loaded once
per process; forward passes run one at a time under a lock, while every browser session keeps its own results in
`gr.State`. Each image runs through the network once, keeping the detections down to the slider's lowest threshold
with COCO RLE masks (the processor's `return_rle=True` encoder); moving the slider or the class filter only filters
those and redraws, with the batch CLI's overlay renderer. The page binds to 127.0.0.1 unless `--host`, Gradio's own
`GRADIO_SERVER_NAME` or a Space (`SPACE_ID` set: 0.0.0.0 behind the Hub's proxy) says otherwise.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# The renderer, the COCO record helpers and the RLE decoder are the batch CLI's and the processor's own: next to this
# file in a Space folder assembled by tools/prepare_space.py, one folder up in the repository.
SPACE_DIR = Path(__file__).resolve().parent
for _folder in (SPACE_DIR, SPACE_DIR.parent):
    if str(_folder) not in sys.path:
        sys.path.append(str(_folder))

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from image_processing_mask_rcnn import decode_mask_rle  # noqa: E402  (the project's one RLE home)
from inference_mask_rcnn import label_names  # noqa: E402
from mask_rcnn_batch.errors import SegmentError  # noqa: E402
from mask_rcnn_batch.model import decode_image, load_model_and_processor  # noqa: E402
from mask_rcnn_batch.overlays import draw_overlay  # noqa: E402
from mask_rcnn_batch.records import (  # noqa: E402
    category_list,
    coco_category_ids,
    detections_to_coco_records,
    stable_image_id,
)

LOG = logging.getLogger("mask_rcnn_space")

MIN_THRESHOLD = 0.05  # the slider's lowest value: each image's detections are kept down to this score
DEFAULT_THRESHOLD = 0.5
DEFAULT_MAX_IMAGE_PIXELS = 40_000_000  # e.g. 8000 x 5000; the processor's own limit applies when it is lower
DEFAULT_MAX_FILE_SIZE = "20mb"
JSON_MAX_AGE_S = 3600  # downloads older than this are deleted from the app's scratch folder
SESSION_TTL_S = 7200  # a session's image and detections are dropped this long after its last change (or tab close)
TABLE_HEADERS = ["#", "label", "score", "x1", "y1", "x2", "y2", "mask area (px)"]
EXAMPLE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


# ================================================================================================================
# The model: loaded once per process, one forward pass at a time
# ================================================================================================================


@dataclasses.dataclass(frozen=True)
class ImageDetections:
    """One image and all its detections with `score >= MIN_THRESHOLD`, by descending score (a session's state).

    `rgb` (H, W, 3) uint8, `scores` (N,) float32, `labels` (N,) int64, `boxes` (N, 4) float32 x1, y1, x2, y2 in
    image pixels, `rles` N COCO compressed RLEs `{"size": [H, W], "counts": str}` (compact: no N x H x W array is
    kept; the selected masks are decoded when drawn).
    """

    sha256: str
    file_name: str
    rgb: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    rles: Tuple[Dict[str, Any], ...]


class Detector:
    """The model and its image processor, loaded once; `detect` serialises forward passes with a lock."""

    def __init__(self, model_id: str, device: str, max_image_pixels: int) -> None:
        self.model_id = model_id
        self.model, self.processor = load_model_and_processor(model_id, device)
        processor_limit = getattr(self.processor, "max_image_pixels", None)
        self.max_image_pixels = max_image_pixels if processor_limit is None else min(processor_limit,
                                                                                      max_image_pixels)
        self.processor.max_image_pixels = self.max_image_pixels  # decode_image refuses larger files from the header
        id2label = self.model.config.id2label
        self.label_names = label_names(id2label)
        self.category_ids = coco_category_ids(id2label)
        self.categories = category_list(id2label, self.category_ids)
        self.too_large_error = getattr(sys.modules.get(type(self.processor).__module__), "ImageTooLargeError", ())
        self._lock = threading.Lock()
        self.forward_passes = 0

    def decode(self, path: str) -> np.ndarray:
        """(H, W, 3) uint8 RGB of an image file, decoded by the model's own processor code."""
        return decode_image(path, self.processor)

    def detect(self, rgb: np.ndarray, file_name: str, sha256: str) -> ImageDetections:
        """One forward pass; the detections with `score >= MIN_THRESHOLD`, masks as COCO RLE."""
        device = next(self.model.parameters()).device
        with self._lock:
            started = time.perf_counter()
            inputs = self.processor(images=[rgb], return_tensors="pt")
            inputs = {name: value.to(device) if isinstance(value, torch.Tensor) else value
                      for name, value in inputs.items()}
            with torch.inference_mode():
                outputs = self.model(**inputs)
                result = self.processor.post_process_instance_segmentation(outputs, threshold=MIN_THRESHOLD,
                                                                           return_rle=True)[0]
            self.forward_passes += 1
            elapsed = time.perf_counter() - started
            count = self.forward_passes
        LOG.info("forward pass %d: %s (%dx%d) in %.2f s, %d detections with score >= %s", count, file_name,
                 rgb.shape[1], rgb.shape[0], elapsed, len(result["rle_masks"]), MIN_THRESHOLD)
        return ImageDetections(
            sha256=sha256, file_name=file_name, rgb=rgb,
            scores=result["scores"].detach().cpu().numpy().astype(np.float32),
            labels=result["labels"].detach().cpu().numpy().astype(np.int64),
            boxes=result["boxes"].detach().cpu().numpy().astype(np.float32).reshape(-1, 4),
            rles=tuple(result["rle_masks"]))


# ================================================================================================================
# Filtering, drawing, table and COCO JSON (no network)
# ================================================================================================================


def selected_indices(detections: ImageDetections, threshold: float, classes: Sequence[str],
                     names: Sequence[str]) -> np.ndarray:
    """Indices of the detections with `score >= threshold` whose class is in `classes` (empty: every class)."""
    keep = detections.scores >= float(threshold)
    if classes:
        wanted = {index for index, name in enumerate(names) if name in set(classes)}
        keep &= np.isin(detections.labels, sorted(wanted))
    return np.flatnonzero(keep)


def decode_masks(detections: ImageDetections, indices: np.ndarray) -> np.ndarray:
    """(len(indices), H, W) bool masks of the selected detections, decoded from their RLE."""
    height, width = detections.rgb.shape[:2]
    if not len(indices):
        return np.zeros((0, height, width), dtype=bool)
    return np.stack([decode_mask_rle(detections.rles[index]) for index in indices])


def render(detections: ImageDetections, indices: np.ndarray, masks: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """The image with the selected instances' masks, boxes and captions, drawn by the batch CLI's renderer."""
    result = {"labels": detections.labels[indices], "scores": detections.scores[indices],
              "boxes": detections.boxes[indices], "masks": masks}
    return np.asarray(draw_overlay(detections.rgb, result, names))


def table_rows(detections: ImageDetections, indices: np.ndarray, areas: np.ndarray,
               names: Sequence[str]) -> List[List[Any]]:
    """One row per selected detection: rank, label, score, box x1, y1, x2, y2 (image pixels), mask area."""
    rows = []
    for rank, (index, area) in enumerate(zip(indices, areas), start=1):
        x1, y1, x2, y2 = (round(float(value), 1) for value in detections.boxes[index])
        label = int(detections.labels[index])
        rows.append([rank, names[label] if label < len(names) else str(label),
                     round(float(detections.scores[index]), 3), x1, y1, x2, y2, int(area)])
    return rows


def coco_document(detector: Detector, detections: ImageDetections, indices: np.ndarray, areas: np.ndarray,
                  threshold: float, classes: Sequence[str]) -> Dict[str, Any]:
    """The selected detections as a COCO dataset (`info`, `images`, `categories`, `annotations`): loadable with
    `pycocotools.coco.COCO`, and each annotation is also a COCO results record (`loadRes`)."""
    image_id = stable_image_id(detections.file_name)
    subset = {"labels": detections.labels[indices], "scores": detections.scores[indices],
              "boxes": detections.boxes[indices]}
    records = detections_to_coco_records(subset, image_id, detector.category_ids)
    annotations = []
    for number, (record, index, area) in enumerate(zip(records, indices, areas), start=1):
        annotations.append({"id": number, **record, "area": int(area), "segmentation": detections.rles[index],
                            "iscrowd": 0})
    height, width = detections.rgb.shape[:2]
    return {
        "info": {"description": f"Mask R-CNN instance segmentation by {detector.model_id}",
                 "score_threshold": float(threshold), "classes": list(classes) or "all"},
        "images": [{"id": image_id, "file_name": detections.file_name, "width": width, "height": height}],
        "categories": detector.categories,
        "annotations": annotations,
    }


class JsonFolder:
    """Scratch folder of the COCO JSON downloads (Gradio serves copies): removed at exit, old files pruned."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="mask-rcnn-space-"))
        atexit.register(shutil.rmtree, self.path, True)

    def write(self, document: Dict[str, Any], file_name: str) -> str:
        now = time.time()
        for old in self.path.glob("*/*.json"):
            if now - old.stat().st_mtime > JSON_MAX_AGE_S:
                shutil.rmtree(old.parent, ignore_errors=True)
        folder = self.path / uuid.uuid4().hex
        folder.mkdir()
        path = folder / f"{Path(file_name).stem or 'image'}.coco.json"
        path.write_text(json.dumps(document), encoding="utf-8")
        return str(path)


# ================================================================================================================
# The page
# ================================================================================================================


class DemoApp:
    """The Gradio callbacks around one `Detector` (shared by all sessions; per-session data lives in gr.State)."""

    def __init__(self, detector: Detector, examples: Sequence[str]) -> None:
        self.detector = detector
        self.examples = list(examples)
        self.json_folder = JsonFolder()
        self._example_cache: Dict[str, ImageDetections] = {}
        self._example_lock = threading.Lock()

    # -- reading the upload ------------------------------------------------------------------------------------

    def _read_upload(self, payload: Any) -> Tuple[str, str, str]:
        """(path on the server, the user's file name, sha256 of the bytes) of an uploaded image payload."""
        if isinstance(payload, dict):
            path, file_name = payload.get("path"), payload.get("orig_name")
        else:
            path, file_name = payload, None
        if not path or not os.path.isfile(path):
            raise gr.Error("The upload did not arrive; please try again.")
        file_name = os.path.basename(file_name or path)
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
        sha256 = digest.hexdigest()
        return path, file_name, sha256

    def _decode(self, path: str, file_name: str) -> np.ndarray:
        try:
            return self.detector.decode(path)
        except self.detector.too_large_error:
            raise gr.Error(f"{file_name} is too large: this demo accepts images of at most "
                           f"{self.detector.max_image_pixels:,} pixels. Please resize it and try again.") from None
        except (OSError, ValueError, SyntaxError) as error:
            # The processor's sentence names the file by its path on the server: name it as the user knows it.
            raise gr.Error(str(error).replace(path, file_name)) from None

    def _example_detections(self, path: str) -> ImageDetections:
        """An example's detections, computed once per process (every session opening the page reuses them)."""
        with self._example_lock:
            if path not in self._example_cache:
                _, file_name, sha256 = self._read_upload(path)
                rgb = self._decode(path, file_name)
                self._example_cache[path] = self.detector.detect(rgb, file_name, sha256)
            return self._example_cache[path]

    # -- callbacks ---------------------------------------------------------------------------------------------

    def show(self, detections: Optional[ImageDetections], threshold: float, classes: Sequence[str]):
        """(annotated image, table rows, JSON download, summary) of a session's detections under the filters."""
        if detections is None:
            return None, [], None, "No image yet (or this session's results have expired): upload or pick one."
        names = self.detector.label_names
        indices = selected_indices(detections, threshold, classes or [], names)
        masks = decode_masks(detections, indices)
        areas = masks.reshape(len(indices), -1).sum(axis=1)
        document = coco_document(self.detector, detections, indices, areas, threshold, classes or [])
        json_path = self.json_folder.write(document, detections.file_name)
        height, width = detections.rgb.shape[:2]
        scope = ", ".join(classes) if classes else "all classes"
        summary = (f"**{len(indices)}** of {len(detections.scores)} detections in {detections.file_name} "
                   f"({width}x{height}) with score ≥ {float(threshold):.2f} ({scope}).")
        return (render(detections, indices, masks, names), table_rows(detections, indices, areas, names), json_path,
                summary)

    def detect(self, payload: Any, threshold: float, classes: Sequence[str],
               detections: Optional[ImageDetections], progress=gr.Progress()):
        """A new image: decode, one forward pass (none when this session already has this image), show."""
        if payload is None:
            return None, [], None, "", None
        try:
            progress(0.05, desc="Reading the image")
            path, file_name, sha256 = self._read_upload(payload)
            cached = detections if detections is not None and detections.sha256 == sha256 else None
            if cached is None:
                cached = next((found for found in self._example_cache.values() if found.sha256 == sha256), None)
            if cached is None:
                rgb = self._decode(path, file_name)
                progress(0.2, desc="Running Mask R-CNN")
                cached = self.detector.detect(rgb, file_name, sha256)
            if cached.file_name != file_name:  # the same pixels under another name: the JSON uses this one
                cached = dataclasses.replace(cached, file_name=file_name)
            progress(0.9, desc="Drawing the instances")
            return (*self.show(cached, threshold, classes), cached)
        except gr.Error:
            raise
        except Exception:
            LOG.exception("detection failed")
            raise gr.Error("Something went wrong while running the model on this image (the error is in the "
                           "app's log).") from None

    def refilter(self, detections: Optional[ImageDetections], threshold: float, classes: Sequence[str]):
        """A new threshold or class filter: the session's cached detections, filtered and redrawn (no network)."""
        try:
            return self.show(detections, threshold, classes)
        except Exception:
            LOG.exception("filtering failed")
            raise gr.Error("Something went wrong while drawing the detections (the error is in the app's log).") \
                from None

    def first_example(self):
        """On page load: the first example in the input, its detections (computed once) in the session state."""
        if not self.examples:
            return None, None
        return self.examples[0], self._example_detections(self.examples[0])

    # -- layout ------------------------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        names = self.detector.label_names
        with gr.Blocks(title="Mask R-CNN instance segmentation", analytics_enabled=False,
                       delete_cache=(JSON_MAX_AGE_S, JSON_MAX_AGE_S)) as demo:
            gr.Markdown(
                f"# Mask R-CNN instance segmentation\n"
                f"Model: `{self.detector.model_id}` (MMDetection's Mask R-CNN in plain PyTorch). Upload or paste an "
                f"image, or pick an example. The slider and the class filter work on the detections already "
                f"found, without running the network again.")
            state = gr.State(None, time_to_live=SESSION_TTL_S)
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(type="filepath", sources=["upload", "clipboard"], label="Image", height=360)
                    threshold = gr.Slider(MIN_THRESHOLD, 1.0, value=DEFAULT_THRESHOLD, step=0.01,
                                          label="Score threshold")
                    classes = gr.Dropdown(choices=names, value=[], multiselect=True, label="Classes",
                                          info="Show only these classes (empty: all).")
                    if self.examples:
                        gr.Examples(examples=[[path] for path in self.examples], inputs=[image], label="Examples")
                with gr.Column(scale=1):
                    annotated = gr.Image(label="Instances", type="numpy", format="png", interactive=False,
                                         height=480, elem_id="annotated")
                    summary = gr.Markdown(elem_id="summary")
            table = gr.Dataframe(headers=TABLE_HEADERS, label="Detections", interactive=False, wrap=True)
            download = gr.File(label="COCO JSON (RLE masks)", interactive=False)

            outputs = [annotated, table, download, summary]
            image.change(self.detect, [image, threshold, classes, state], [*outputs, state], api_name="detect",
                         preprocess=False, concurrency_limit=1)
            gr.on([threshold.release, classes.change], self.refilter, [state, threshold, classes], outputs,
                  api_name="filter", concurrency_limit=4, show_progress="minimal")
            demo.load(self.first_example, None, [image, state], api_visibility="private")
        return demo


# ================================================================================================================
# Command line
# ================================================================================================================


def default_model_id() -> Optional[str]:
    """`MODEL_ID`, else the first `models:` entry of the README.md next to this file (a Space's front matter)."""
    if os.environ.get("MODEL_ID"):
        return os.environ["MODEL_ID"]
    readme = SPACE_DIR / "README.md"
    if readme.is_file():
        from huggingface_hub import metadata_load

        models = (metadata_load(readme) or {}).get("models") or []
        if models:
            return str(models[0])
    return None


def default_host() -> str:
    """Gradio's GRADIO_SERVER_NAME when set; else 0.0.0.0 inside a Hugging Face Space (it sets SPACE_ID and proxies
    the page), else 127.0.0.1: on anyone's own machine the demo is never reachable from the network by default."""
    if os.environ.get("GRADIO_SERVER_NAME"):
        return os.environ["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"


def find_examples(folders: Sequence[Path]) -> List[str]:
    """Image files of the first of `folders` that exists, sorted by name."""
    for folder in folders:
        if folder.is_dir():
            return sorted(str(path) for path in folder.iterdir() if path.suffix.lower() in EXAMPLE_EXTENSIONS)
    return []


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="local folder or Hub id (default: MODEL_ID, else README.md)")
    parser.add_argument("--host", default=default_host(),
                        help="address to bind (default: GRADIO_SERVER_NAME, else 0.0.0.0 in a Space, else 127.0.0.1)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-image-pixels", type=int,
                        default=int(os.environ.get("MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS)),
                        help="larger images are refused from their header (default %(default)s)")
    parser.add_argument("--max-file-size", default=os.environ.get("MAX_FILE_SIZE", DEFAULT_MAX_FILE_SIZE),
                        help="largest upload, e.g. 20mb (default %(default)s)")
    parser.add_argument("--examples", type=Path, default=None,
                        help="folder of example images (default: examples/ next to app.py, else samples/)")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stdout)
    args = parse_args(argv)
    model_id = args.model or default_model_id()
    if not model_id:
        sys.exit("No model: pass --model DIR_OR_HUB_ID, set MODEL_ID, or list it under models: in README.md.")
    try:
        detector = Detector(model_id, args.device, args.max_image_pixels)
    except SegmentError as error:
        sys.exit(str(error))
    example_folders = [args.examples] if args.examples else [SPACE_DIR / "examples", SPACE_DIR.parent / "samples"]
    app = DemoApp(detector, find_examples(example_folders))
    if app.examples:
        app._example_detections(app.examples[0])  # warm up: the first page load shows it at once
    demo = app.build()
    demo.queue(default_concurrency_limit=1)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=args.max_file_size,
                allowed_paths=[str(Path(path).parent) for path in app.examples], show_error=False, ssr_mode=False)


if __name__ == "__main__":
    main()
