# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The batch run's exceptions: what stops it before it starts, what stops it while writing, what a worker reports."""

from __future__ import annotations

from inference_mask_rcnn import DescribedFailure


class SegmentError(Exception):
    """A problem that stops the run before any image is processed (one sentence, printed without traceback)."""


class OutputWriteError(Exception):
    """Writing an output file failed (disk full, permission denied, read-only folder, a file in the way).

    Never a model failure, never retried image by image: the run stops, the images finished before are kept in the
    journal (or shards), and a rerun with `--resume` does the rest. `path` is the file, `reason` the operating
    system's words (e.g. "[Errno 28] No space left on device")."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"could not write {path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # picklable with its two arguments (Ray, multiprocessing)
        return type(self), (self.path, self.reason)


class WorkerError(DescribedFailure):
    """A model or pipeline error reported by a Ray worker; its text is already `Type: message` (a `DescribedFailure`:
    `describe_failure` passes it on unchanged)."""
