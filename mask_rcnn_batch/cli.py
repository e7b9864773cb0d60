# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The batch CLI (`python segment.py ...`): arguments -> `RunOptions` -> `runner.run` -> summary and exit status.

INPUT is an image file (any extension), a folder (searched recursively for image extensions) or a glob pattern
(`**` allowed). Every image gets a `file_name`: its path relative to the input root, the deepest folder common to
all inputs (a folder input is its own root, a file's root is its folder, a glob's root is the folder before its
first wildcard), with `/` separators.

Outputs in OUT:

* `predictions.json`   COCO results format, one record per instance: `image_id`, `file_name`, `category_id`,
                       `bbox` [x, y, w, h] (original pixels, float), `score`, `segmentation` compressed RLE
                       `{"size": [h, w], "counts": str}` — loadable with `pycocotools.coco.COCO.loadRes`.
* `predictions.jsonl`  the journal: one line per finished image (`{"image": {...}, "annotations": [...]}`),
                       appended and fsync'ed after every batch (after the batch's overlays are written);
                       `predictions.json` is assembled from it at the end (also after an error or Ctrl-C), and
                       `--resume` reads it back after a hard kill.
* `images.json`        COCO-style `{"info", "images", "categories"}` of every processed image (also the images
                       without detections, which `predictions.json` cannot list).
* `failures.json`      `[{"file_name", "path", "error"}]` of inputs that could not be processed.
* `overlays/<file_name>.png`  the image with coloured masks, boxes and "label score" captions.

With `--shard-output` (runs too large for one JSON file) the results are JSON-lines shards
`predictions/part-NNNNN.jsonl` (the journal's lines, `--images-per-shard` images each, written as results come in)
plus `predictions/info.json`, instead of the journal, `predictions.json` and `images.json`
(`mask_rcnn_batch.outputs.read_shards(OUT)`). `--resume` skips the images already written in either form.

`--ray [ADDRESS]` runs the same job as a Ray Data pipeline (`pip install -r requirements-ray.txt`, see
`ray_runner`): same planned batches, same results at the same torch thread count. Without ADDRESS a local instance
is started (this machine's cores, 127.0.0.1 only, no dashboard); `auto`, `HOST:PORT` or `ray://HOST:10001` joins a
cluster; a Ray instance the calling process already has is reused.

`image_id` is stable across runs, machines and shards: the first 52 bits of SHA-256 of `file_name` as an integer
(`records.stable_image_id`). `category_id` is COCO's official id (1..90 with gaps) when the model's classes are
COCO's 80 classes in MMDetection's order, else the model's label index.

Exit status: 0 all images done; 1 some inputs failed (their reasons are in failures.json and on stderr; the other
images' results are written) or the run stopped with the finished images written: a model error (e.g. out of
memory; with --ray the first one a worker reports) without `--keep-going`, or an output file that could not be
written (disk full, permission denied, a file in the way: the message names the file and the reason; rerun with
--resume once fixed); 2 the run could not start (bad arguments, no inputs, model not loadable); 130 interrupted.
Unreadable files are always skipped and reported. With `--keep-going` a batch the model fails on is retried image
by image and the images that still fail are reported and skipped; output errors are never retried.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from inference_mask_rcnn import describe_failure

from . import runner
from .errors import OutputWriteError, SegmentError
from .options import DEFAULT_IMAGES_PER_SHARD, DTYPE_NAMES, RAY_LOCAL, BatchOptions, RayOptions, RunOptions
from .outputs import FAILURES, PREDICTIONS

EXIT_OK, EXIT_FAILURES, EXIT_FATAL, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segment.py",
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
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPE_NAMES),
                        help="compute precision (float32)")
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


def options_from_arguments(arguments: argparse.Namespace) -> RunOptions:
    """Parsed arguments -> `RunOptions` (a `ValueError` names the offending flags)."""
    ray = None
    if arguments.ray is None:
        if any(value is not None for value in (arguments.workers, arguments.cpus_per_worker,
                                               arguments.gpus_per_worker)):
            raise ValueError("--workers, --cpus-per-worker and --gpus-per-worker need --ray")
    else:
        ray = RayOptions(address=arguments.ray, workers=arguments.workers, cpus_per_worker=arguments.cpus_per_worker,
                         gpus_per_worker=arguments.gpus_per_worker)
    batch = BatchOptions(threshold=arguments.threshold, mask_threshold=arguments.mask_threshold,
                         dtype=arguments.dtype, overlays=not arguments.no_overlays, keep_going=arguments.keep_going)
    return RunOptions(model=arguments.model, inputs=tuple(arguments.inputs), output_dir=arguments.output_dir,
                      batch=batch, batch_size=arguments.batch_size,
                      device=arguments.device if ray is not None else arguments.device or "cpu",
                      resume=arguments.resume, shard_output=arguments.shard_output,
                      images_per_shard=arguments.images_per_shard, ray=ray)


def parse_options(argv: Optional[Sequence[str]] = None) -> RunOptions:
    """Command-line arguments -> `RunOptions`; usage errors exit 2 with argparse's message."""
    parser = build_argument_parser()
    try:
        return options_from_arguments(parser.parse_args(argv))
    except ValueError as error:
        parser.error(str(error))


def main(argv: Optional[Sequence[str]] = None) -> int:
    options = parse_options(argv)
    try:
        summary, output = runner.run(options)
    except SegmentError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_FATAL
    except KeyboardInterrupt:
        print(f"interrupted; the finished images are written to {options.output_dir} (--resume continues)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except OutputWriteError as error:
        print(f"error: {error}. The images finished before it are kept in {options.output_dir}; free space or fix "
              "the folder, then rerun with --resume to finish the run", file=sys.stderr)
        return EXIT_FAILURES
    except (RuntimeError, ValueError, OSError) as error:  # a model error without --keep-going
        print(f"error: {describe_failure(error)}; the images finished before it are written to {options.output_dir} "
              "(rerun with --resume to continue, or --keep-going to skip such images)", file=sys.stderr)
        return EXIT_FAILURES
    rate = summary.done / summary.seconds if summary.seconds > 0 else 0.0
    kept = f" ({summary.skipped} kept from before)" if summary.skipped else ""
    print(f"{summary.done} images done{kept}, {summary.failed} failed, {summary.instances} instances, "
          f"{rate:.2f} images/s -> {os.path.join(output.output_dir, PREDICTIONS)}", file=sys.stderr)
    if summary.failed:
        print(f"failed inputs are listed in {os.path.join(output.output_dir, FAILURES)}", file=sys.stderr)
    return EXIT_FAILURES if summary.failed else EXIT_OK
