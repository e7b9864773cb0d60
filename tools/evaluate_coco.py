#!/usr/bin/env python3
# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""COCO box and mask AP of this repository's Mask R-CNN with pycocotools' COCOeval.

Run the model over a COCO-format dataset and evaluate (e.g. val2017; the published MMDetection numbers for
mask-rcnn_r50_fpn_1x_coco are 38.2 box AP / 34.7 mask AP):

    python tools/evaluate_coco.py --model DIR_OR_REPO_ID --images val2017/ \
        --annotations annotations/instances_val2017.json [--max-images N] [--batch-size N] \
        [--output predictions.json] [--device cuda] [--dtype float32]

Evaluate an existing COCO results file (from this tool, from segment.py — whose hashed image ids are matched to
the dataset by `file_name` — or from MMDetection) without running a model:

    python tools/evaluate_coco.py --predictions predictions.json --annotations instances_val2017.json

Like MMDetection's CocoMetric: all of the model's detections are kept (`--threshold 0`; the model itself drops
scores <= 0.05 and keeps at most 100 per image), masks are binarised at 0.5, `category_id` maps the model's labels
to the dataset's categories by name (COCO's official ids for the 80 COCO classes), and the images evaluated are the
dataset's images sorted by id (the first `--max-images` of them). Prints the standard 12-number summaries and one
line per IoU type, e.g. `bbox AP 38.2 | AP50 58.8 | ...`. Exit status 0, 1 when some images could not be read
(they are left out of the evaluation, and listed), 2 for unusable arguments or files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from inference_mask_rcnn import describe_failure, label_names  # noqa: E402
from mask_rcnn_batch.errors import OutputWriteError, SegmentError  # noqa: E402
from mask_rcnn_batch.inputs import plan_batches  # noqa: E402
from mask_rcnn_batch.model import decode_image, load_model_and_processor, predict_images  # noqa: E402
from mask_rcnn_batch.options import DTYPE_NAMES  # noqa: E402
from mask_rcnn_batch.outputs import write_json_atomic  # noqa: E402
from mask_rcnn_batch.records import COCO_CATEGORIES, coco_category_ids, detections_to_coco_records  # noqa: E402
from mask_rcnn_batch.runner import Progress  # noqa: E402

try:  # optional dependency of the repository, required here
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
except ImportError:  # pragma: no cover
    COCO = COCOeval = None

PYCOCOTOOLS_HINT = "tools/evaluate_coco.py needs pycocotools: pip install pycocotools"
IOU_TYPES = ("bbox", "segm")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


class EvaluationError(Exception):
    """Unusable arguments or files (one sentence, printed without traceback)."""


def _require_pycocotools() -> None:
    if COCO is None:
        raise EvaluationError(PYCOCOTOOLS_HINT)


def load_ground_truth(annotations: str) -> "COCO":
    """The annotation file as a pycocotools COCO object (its loading chatter is kept off stdout)."""
    _require_pycocotools()
    if not os.path.isfile(annotations):
        raise EvaluationError(f"--annotations {annotations!r} is not a file.")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(annotations)
    except (ValueError, KeyError, TypeError) as error:
        raise EvaluationError(f"{annotations} is not a COCO annotation file: {error}") from None


def select_image_ids(ground_truth: "COCO", max_images: Optional[int] = None) -> List[int]:
    """The dataset's image ids in ascending order, the first `max_images` of them when given."""
    image_ids = sorted(ground_truth.getImgIds())
    return image_ids[:max_images] if max_images is not None else image_ids


def dataset_category_ids(id2label: Mapping[Any, str], categories: Sequence[Mapping[str, Any]]) -> Dict[int, int]:
    """{model label index: dataset category_id}.

    COCO-80 models use COCO's official ids when the dataset agrees with them for every COCO name it has; otherwise
    labels are matched by name; a dataset with other names but as many categories as the model has labels is
    matched in ascending id order (MMDetection's convention), with a warning.
    """
    names = label_names(id2label)
    by_name = {str(category["name"]): int(category["id"]) for category in categories}
    official = coco_category_ids(id2label)
    if official is not None:
        official_by_name = {name: category_id for category_id, name in COCO_CATEGORIES}
        if all(official_by_name.get(name, category_id) == category_id for name, category_id in by_name.items()):
            return official
    if all(name in by_name for name in names):
        return {index: by_name[name] for index, name in enumerate(names)}
    ids = sorted(by_name.values())
    if len(ids) == len(names):
        print("warning: the dataset's category names differ from the model's labels; matching them in ascending "
              "category id order", file=sys.stderr)
        return dict(enumerate(ids))
    missing = [name for name in names if name not in by_name][:5]
    raise EvaluationError(f"Cannot match the model's {len(names)} labels to the dataset's {len(ids)} categories "
                          f"(e.g. {missing} are not dataset category names).")


def align_results(records: List[Dict[str, Any]], ground_truth: "COCO") -> List[Dict[str, Any]]:
    """Records whose `image_id` is not a dataset id but which carry a `file_name` (segment.py output) get the id of
    the dataset image with that file name (exact, else the same base name); records matching nothing are dropped
    with a warning."""
    known = set(ground_truth.getImgIds())
    if all(record.get("image_id") in known for record in records):
        return records
    images = ground_truth.dataset.get("images", [])
    by_name = {image["file_name"]: image["id"] for image in images}
    by_base = {os.path.basename(image["file_name"]): image["id"] for image in images}
    aligned, dropped = [], 0
    for record in records:
        image_id = record.get("image_id")
        if image_id not in known:
            file_name = record.get("file_name")
            image_id = by_name.get(file_name, by_base.get(os.path.basename(file_name or ""))) if file_name else None
        if image_id is None:
            dropped += 1
            continue
        aligned.append({**record, "image_id": image_id})
    if dropped:
        print(f"warning: {dropped} result records match no image of the annotation file and are ignored",
              file=sys.stderr)
    return aligned


def evaluate(ground_truth: "COCO", records: List[Dict[str, Any]], image_ids: Sequence[int],
             iou_types: Sequence[str] = IOU_TYPES, verbose: bool = True) -> Dict[str, List[float]]:
    """COCOeval `summarize()` stats (12 numbers, fractions) per IoU type over `image_ids`.

    `segm` is skipped when the records have no `segmentation`; no records at all gives zeros.
    """
    _require_pycocotools()
    image_set = set(image_ids)
    records = [record for record in records if record["image_id"] in image_set]
    if records and not all("segmentation" in record for record in records):
        iou_types = [iou_type for iou_type in iou_types if iou_type != "segm"]
    stats: Dict[str, List[float]] = {}
    for iou_type in iou_types:
        if not records:
            stats[iou_type] = [0.0] * len(STAT_NAMES)
            continue
        # Like MMDetection's CocoMetric: box results without masks, mask results without boxes (with a bbox,
        # loadRes would take the box area as the instance area and shift APs/APm/APl of segm). Copies: loadRes
        # adds keys to the records it gets.
        dropped_key = "segmentation" if iou_type == "bbox" else "bbox"
        with contextlib.redirect_stdout(io.StringIO()):
            detections = ground_truth.loadRes([{key: value for key, value in record.items() if key != dropped_key}
                                               for record in records])
        evaluator = COCOeval(ground_truth, detections, iou_type)
        evaluator.params.imgIds = list(image_ids)
        quiet = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
        with quiet:
            if verbose:
                print(f"\nEvaluating {iou_type} on {len(image_ids)} images:")
            with contextlib.redirect_stdout(io.StringIO()):
                evaluator.evaluate()
                evaluator.accumulate()
            evaluator.summarize()
        stats[iou_type] = [float(value) for value in evaluator.stats]
    return stats


def format_stats(iou_type: str, values: Sequence[float]) -> str:
    """`bbox AP 38.2 | AP50 58.8 | ...` (percent, one decimal, like MMDetection's tables)."""
    return f"{iou_type} " + " | ".join(f"{name} {100 * value:.1f}" for name, value in zip(STAT_NAMES[:6], values))


def predict_dataset(model: Any, processor: Any, ground_truth: "COCO", image_ids: Sequence[int], images_dir: str,
                    batch_size: int = 1, threshold: float = 0.0,
                    mask_threshold: float = 0.5) -> Tuple[List[Dict[str, Any]], List[Dict[str, str]]]:
    """Runs the model over dataset images; returns `(COCO results records, failures)`.

    Images are grouped by shape (sizes from the annotation file) into batches; a file that cannot be read is a
    failure `{"file_name", "path", "error"}` and is skipped.
    """
    category_ids = dataset_category_ids(model.config.id2label, ground_truth.dataset.get("categories", []))
    images = ground_truth.loadImgs(list(image_ids))
    sizes = [(int(image.get("height", 0)), int(image.get("width", 0))) for image in images]
    records: List[Dict[str, Any]] = []
    failures: List[Dict[str, str]] = []
    progress = Progress(len(images))
    try:
        for batch_indices in plan_batches(sizes, batch_size):
            decoded = []
            for index in batch_indices:
                image = images[index]
                path = os.path.join(images_dir, image["file_name"])
                try:
                    decoded.append((image, decode_image(path, processor)))
                except (OSError, ValueError, TypeError) as error:
                    failures.append({"file_name": image["file_name"], "path": path,
                                     "error": describe_failure(error)})
                    progress.message(f"skipped {image['file_name']}: {failures[-1]['error']}")
            if decoded:
                results = predict_images(model, processor, [rgb for _, rgb in decoded], threshold,
                                         mask_threshold)
                for (image, _), result in zip(decoded, results):
                    height, width = result["masks"].shape[-2:]
                    if (image.get("height"), image.get("width")) not in ((None, None), (height, width)):
                        progress.message(f"warning: {image['file_name']} decodes to {width}x{height}, the "
                                         f"annotation file says {image.get('width')}x{image.get('height')}")
                    records.extend(detections_to_coco_records(result, image["id"], category_ids,
                                                              image["file_name"]))
            progress.update(len(batch_indices), detections=len(records))
    finally:
        progress.close()
    return records, failures


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="COCO bbox/segm AP of the Mask R-CNN (pycocotools COCOeval).")
    parser.add_argument("--annotations", required=True, help="COCO annotation file, e.g. instances_val2017.json")
    parser.add_argument("--model", help="converted model folder or Hub repo id (runs the model)")
    parser.add_argument("--images", help="folder the annotation file's file_name entries are relative to")
    parser.add_argument("--predictions", help="evaluate this COCO results file instead of running a model")
    parser.add_argument("--max-images", type=int, default=None, help="only the first N images by id")
    parser.add_argument("--batch-size", type=int, default=1, help="images per forward pass (1)")
    parser.add_argument("--output", help="also write the model's results (COCO results format) to this file")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="score threshold of the written detections (0: all, like MMDetection's evaluation)")
    parser.add_argument("--mask-threshold", type=float, default=0.5, help="mask binarisation threshold (0.5)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cpu)")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPE_NAMES),
                        help="compute precision: the weights are cast to it (float32)")
    return parser


def _load_results(path: str) -> List[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, ValueError) as error:
        raise EvaluationError(f"Cannot read --predictions {path}: {error}") from None
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise EvaluationError(f"--predictions {path} must hold a list of COCO result records.")
    return data


def run(arguments: argparse.Namespace) -> Tuple[Dict[str, List[float]], List[Dict[str, str]]]:
    """Evaluates per the parsed arguments; returns `(stats per IoU type, failures)`."""
    if (arguments.model is None) == (arguments.predictions is None):
        raise EvaluationError("pass either --model (with --images) or --predictions.")
    if arguments.model is not None and arguments.images is None:
        raise EvaluationError("--model needs --images, the folder of the dataset's image files.")
    if arguments.max_images is not None and arguments.max_images < 1:
        raise EvaluationError("--max-images must be at least 1.")
    ground_truth = load_ground_truth(arguments.annotations)
    image_ids = select_image_ids(ground_truth, arguments.max_images)
    failures: List[Dict[str, str]] = []
    if arguments.predictions is not None:
        records = align_results(_load_results(arguments.predictions), ground_truth)
        predicted = {record["image_id"] for record in records} & set(image_ids)
        if len(predicted) < len(image_ids):
            print(f"note: the results cover {len(predicted)} of the {len(image_ids)} evaluated images (images "
                  "without records count as having no detections)", file=sys.stderr)
    else:
        try:
            model, processor = load_model_and_processor(arguments.model, arguments.device, arguments.dtype)
        except SegmentError as error:
            raise EvaluationError(str(error)) from None
        records, failures = predict_dataset(model, processor, ground_truth, image_ids, arguments.images,
                                            arguments.batch_size, arguments.threshold, arguments.mask_threshold)
        if arguments.output:
            write_json_atomic(arguments.output, records)
            print(f"wrote {len(records)} results to {arguments.output}", file=sys.stderr)
        if failures:
            failed = {failure["file_name"] for failure in failures}
            image_ids = [image["id"] for image in ground_truth.loadImgs(image_ids) if image["file_name"] not in failed]
            print(f"warning: {len(failures)} images could not be read and are left out of the evaluation",
                  file=sys.stderr)
    return evaluate(ground_truth, records, image_ids), failures


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = build_argument_parser().parse_args(argv)
    if arguments.batch_size < 1:
        print("error: --batch-size must be at least 1", file=sys.stderr)
        return 2
    try:
        stats, failures = run(arguments)
    except (EvaluationError, SegmentError, OutputWriteError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print()
    for iou_type, values in stats.items():
        print(format_stats(iou_type, values))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
