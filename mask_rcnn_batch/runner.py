# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The run: inputs -> planned batches -> forward passes -> records and overlays -> the output folder, in this process
(`run`), or on Ray (`ray_runner.run_ray_pipeline`, same batches, same results).

Model work and output writing are kept apart: `infer_batch` computes a batch's journal entries and overlay PNGs
without touching the disk (the per-image fallback of `--keep-going` wraps only this), and `record_batch` writes them.
A model error stops the run (or, with `--keep-going`, is retried image by image); an output write error
(`OutputWriteError`) always stops it, is never retried, and leaves a journal that `--resume` finishes.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from inference_mask_rcnn import (check_precision_allowed, describe_failure, label_names, resolve_compute_dtype,
                                 run_with_per_image_fallback)

from .errors import OutputWriteError, SegmentError
from .inputs import IMAGE_EXTENSIONS, InputItem, Report, collect_inputs, decode_batch, iter_batches
from .model import load_model_and_processor, load_model_config, predict_images
from .options import BatchOptions, RunOptions
from .outputs import OutputFolder, ShardedOutputFolder
from .overlays import draw_overlay, overlay_png
from .records import category_list, coco_category_ids, detections_to_coco_records

try:  # optional dependency: progress bar
    from tqdm import tqdm
except ImportError:  # pragma: no cover
    tqdm = None

# What a forward pass raises when the model fails on a batch (out of memory, a bad input tensor, a kernel error).
MODEL_ERRORS = (RuntimeError, ValueError, OSError)
PYCOCOTOOLS_HINT = "segment.py needs pycocotools to write RLE masks: pip install pycocotools"
GENERATOR = "segment.py"  # images.json info.generator
IMAGE_ID_RULE = "first 52 bits of sha256(file_name)"


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


@dataclass
class ImageResult:
    """One image's work, not yet written: its journal entry and its overlay PNG (None without overlays)."""

    entry: Dict[str, Any]
    overlay: Optional[bytes] = None


@dataclass
class BatchResult:
    """A batch's work, not yet written: journal entries, overlay PNGs `(file_name, png)`, images the model saw."""

    entries: List[Dict[str, Any]] = field(default_factory=list)
    overlays: List[Tuple[str, bytes]] = field(default_factory=list)
    inferred_images: int = 0


class Progress:
    """tqdm when installed (images/s), otherwise silent; messages are printed without breaking the bar."""

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


def require_pycocotools() -> None:
    """Fails before any work when RLE masks cannot be written."""
    try:
        import pycocotools.mask  # noqa: F401
    except ImportError:
        raise SegmentError(PYCOCOTOOLS_HINT) from None


def process_batch(decoded: Sequence[Tuple[InputItem, np.ndarray]], model: Any, processor: Any,
                  options: BatchOptions, category_ids: Optional[Mapping[int, int]],
                  names: Sequence[str]) -> List[ImageResult]:
    """One forward pass over decoded images -> per image its journal entry and overlay PNG (nothing is written);
    `names` are the model's label names (overlay captions)."""
    results = []
    predictions = predict_images(model, processor, [rgb for _, rgb in decoded], options.threshold,
                                 options.mask_threshold)
    for (item, rgb), prediction in zip(decoded, predictions):
        height, width = (int(size) for size in prediction["masks"].shape[-2:])
        records = detections_to_coco_records(prediction, item.image_id, category_ids, item.file_name)
        overlay = overlay_png(draw_overlay(rgb, prediction, names)) if options.overlays else None
        results.append(ImageResult({"image": {"id": item.image_id, "file_name": item.file_name, "width": width,
                                              "height": height}, "annotations": records}, overlay))
    return results


def infer_batch(decoded: Sequence[Tuple[InputItem, np.ndarray]], model: Any, processor: Any, options: BatchOptions,
                category_ids: Optional[Mapping[int, int]], names: Sequence[str], report: Report) -> BatchResult:
    """`process_batch`; a model error (`MODEL_ERRORS`) propagates and stops the run, or with `keep_going` the batch
    is retried image by image (`run_with_per_image_fallback`) and the images that still fail are reported.

    Nothing here writes files, so an output error can never be taken for a model failure."""
    result = BatchResult(inferred_images=len(decoded))
    if not decoded:
        return result

    def run_batch(batch: Sequence[Tuple[InputItem, np.ndarray]]) -> List[ImageResult]:
        return process_batch(batch, model, processor, options, category_ids, names)

    if options.keep_going:
        outcomes = run_with_per_image_fallback(list(decoded), run_batch, retry_on=MODEL_ERRORS)
    else:
        outcomes = run_batch(decoded)
    for (item, _), outcome in zip(decoded, outcomes):
        if isinstance(outcome, BaseException):
            report(item, describe_failure(outcome))
            continue
        result.entries.append(outcome.entry)
        if outcome.overlay is not None:
            result.overlays.append((item.file_name, outcome.overlay))
    return result


def record_batch(result: BatchResult, output: Any, summary: RunSummary, progress: Progress) -> None:
    """Writes one batch's overlays, then adds its entries to the results (so a finished image has its overlay)."""
    for file_name, png in result.overlays:
        output.write_overlay(file_name, png)
    if result.entries:
        summary.finished_batches.append((time.perf_counter() - summary.started_at, len(result.entries)))
    output.add(result.entries)
    summary.inferred_images += result.inferred_images
    summary.done += len(result.entries)
    summary.instances += sum(len(entry["annotations"]) for entry in result.entries)
    progress.update(len(result.entries), failed=summary.failed, instances=summary.instances)


def run(options: RunOptions) -> Tuple[RunSummary, Any]:
    """Processes the inputs in this process, or with `options.ray` on a Ray cluster; returns the summary and the
    output folder (`OutputFolder`, or `ShardedOutputFolder` with `shard_output`)."""
    require_pycocotools()
    if options.ray is not None:  # without Ray, fail before any work with the sentence saying how to install it
        from .ray_runner import ray_session, require_ray

        require_ray(options.ray.address)
    items, input_problems = collect_inputs(options.inputs, exclude=options.output_dir)
    if not items and not input_problems:
        raise SegmentError(f"No image files found in {' '.join(options.inputs)} (extensions: "
                           f"{', '.join(sorted(IMAGE_EXTENSIONS))}).")
    if options.ray is not None:  # the workers load the model; the driver only needs its labels
        config = load_model_config(options.model)
        try:  # refused here, before any worker loads the model
            check_precision_allowed(config, resolve_compute_dtype(options.batch.dtype), f"The model {options.model!r}")
        except ValueError as error:
            raise SegmentError(str(error)) from None
        model, processor, id2label = None, None, config.id2label
    else:
        model, processor = load_model_and_processor(options.model, options.device or "cpu", options.batch.dtype)
        id2label = model.config.id2label
    category_ids = coco_category_ids(id2label)
    info = {"model": options.model, "threshold": options.batch.threshold,
            "mask_threshold": options.batch.mask_threshold,
            "category_ids": "coco" if category_ids is not None else "label_index",
            "image_id": IMAGE_ID_RULE, "generator": GENERATOR}
    categories = category_list(id2label, category_ids)
    with contextlib.ExitStack() as ray_connection:
        if options.ray is not None and not options.resume:
            # Start or join Ray before the output folder replaces earlier results: a cluster that cannot be reached
            # then leaves them as they were. (With --resume nothing is replaced, and Ray is needed only if work is
            # left.)
            ray_connection.enter_context(ray_session(options.ray.address))
        try:
            if options.shard_output:
                output = ShardedOutputFolder(options.output_dir, options.resume, info, categories,
                                             options.images_per_shard)
            else:
                output = OutputFolder(options.output_dir, options.resume, info, categories)
        except OutputWriteError as error:  # nothing was processed: the run could not start
            raise SegmentError(f"The output folder cannot be used: {error}") from None
        summary = _process(items, input_problems, output, options, model, processor, category_ids,
                           label_names(id2label), info, ray_connection)
    return summary, output


def _process(items: Sequence[InputItem], input_problems: Sequence[Dict[str, str]], output: Any, options: RunOptions,
             model: Any, processor: Any, category_ids: Optional[Mapping[int, int]], names: Sequence[str],
             info: Dict[str, Any], ray_connection: contextlib.ExitStack) -> RunSummary:
    """The images not finished yet, in this process or (model None) on Ray; always leaves the output complete."""
    summary = RunSummary()
    if output.previous_info and any(output.previous_info.get(key) != info[key]
                                    for key in ("threshold", "mask_threshold")):
        print(f"warning: resuming a run made with threshold {output.previous_info.get('threshold')} / "
              f"mask threshold {output.previous_info.get('mask_threshold')}; kept images are not redone.",
              file=sys.stderr)
    todo = [item for item in items if not output.is_finished(item.file_name)]
    summary.skipped = len(items) - len(todo)
    progress = Progress(len(todo))

    def report(item: InputItem, error: str) -> None:
        output.fail(item.file_name, item.path, error)
        summary.failed += 1
        progress.message(f"skipped {item.file_name}: {error}")
        progress.update(1)

    try:
        for problem in input_problems:
            output.fail(**problem)
            summary.failed += 1
            progress.message(f"skipped {problem['file_name']}: {problem['error']}")
        summary.started_at = time.perf_counter()
        if model is not None:
            for batch in iter_batches(todo, options.batch_size, report):
                decoded = decode_batch(batch, processor, report)
                record_batch(infer_batch(decoded, model, processor, options.batch, category_ids, names, report),
                             output, summary, progress)
        elif todo:  # nothing left to do (--resume): no cluster is started or joined
            from .ray_runner import ray_session, run_ray_pipeline

            ray_connection.enter_context(ray_session(options.ray.address))
            run_ray_pipeline(todo, options, output, summary, progress, report)
        summary.seconds = time.perf_counter() - summary.started_at
    except BaseException:
        progress.close()
        _finish_after_error(output, progress)
        raise
    progress.close()
    output.finish()
    return summary


def _finish_after_error(output: Any, progress: Progress) -> None:
    """Assembles what was finished after the run stopped; if that write fails too (the disk is still full), the
    journal keeps the finished images and the first error is the one reported."""
    try:
        output.finish()
    except OutputWriteError as error:
        progress.message(f"note: {error}; the journal keeps the finished images for --resume")
