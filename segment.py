#!/usr/bin/env python3
# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Batch instance segmentation of image files and folders with the Mask R-CNN of this repository.

    python segment.py --model DIR_OR_REPO_ID INPUT [INPUT ...] --output-dir OUT [--threshold 0.5]
        [--mask-threshold 0.5] [--batch-size N] [--device cpu|cuda] [--dtype float32|bfloat16|float16]
        [--resume] [--no-overlays] [--keep-going] [--shard-output [--images-per-shard N]]
        [--ray [ADDRESS] [--workers N] [--cpus-per-worker C] [--gpus-per-worker G]]

Writes OUT/predictions.json (COCO results, RLE masks), images.json, failures.json, overlays/ and the journal
predictions.jsonl (`--resume` continues from it). Exit status: 0 all images done, 1 some inputs failed or the run
stopped with the finished images written (a model error, an output file that could not be written), 2 the run could
not start. `python segment.py --help` lists every option.

This file is only the entry point: the job is the `mask_rcnn_batch` package next to it (cli, options, inputs, model,
records, overlays, outputs, runner, ray_runner), whose functions other programs import.
"""

import sys

from mask_rcnn_batch.cli import main  # run as a script, this file's folder is sys.path[0]: the package is found

if __name__ == "__main__":
    sys.exit(main())
