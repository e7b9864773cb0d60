# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The batch job behind `python segment.py`: instance segmentation of image files, folders and globs with this
repository's Mask R-CNN, written as COCO results (RLE masks), overlays and a failure list; in this process or on Ray.

Modules (importing the package imports none of them, and nothing here imports Ray until `--ray` runs):

* `options`     `RunOptions` / `BatchOptions` / `RayOptions`: what a run is asked to do (typed, frozen).
* `inputs`      files, folders, globs -> `InputItem`s; header sizes; batches planned by shape; decoding.
* `model`       loading the model and processor (the shared precision rule), decoding as the processor does,
                `predict_images`.
* `records`     COCO results records: boxes, official COCO category ids, stable image ids, RLE masks.
* `overlays`    `draw_overlay(rgb, result, label_names)`, `class_colour(label)`.
* `outputs`     the output folder: journal or shards, atomic JSON, overlays, resume; `OutputWriteError`.
* `runner`      the single-process run (`run(options)`), model work kept apart from writing.
* `ray_runner`  the same run as a Ray Data pipeline.
* `cli`         `segment.py`'s arguments -> `RunOptions` -> `run`; exit statuses.
* `errors`      `SegmentError`, `OutputWriteError`, `WorkerError`.
"""
