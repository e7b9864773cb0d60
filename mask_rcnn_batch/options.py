# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""What a batch run is asked to do: `RunOptions` (the whole run) and `BatchOptions` (what every forward pass needs),
typed and frozen (the CLI builds them from its arguments; library callers build them directly)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

DTYPE_NAMES = ("bfloat16", "float16", "float32")
DEFAULT_IMAGES_PER_SHARD = 1000
RAY_LOCAL = "local"  # `--ray` without an address: a Ray instance on this machine, started and stopped by the run


@dataclass(frozen=True)
class BatchOptions:
    """The settings of each forward pass and its records, shipped to every worker.

    threshold, mask_threshold: as in `post_process_instance_segmentation` (`score >= threshold`).
    dtype: compute precision name ("float32", "bfloat16", "float16").
    overlays: draw an overlay per image.
    keep_going: on a model error, retry the batch image by image and report the images that still fail.
    """

    threshold: float = 0.5
    mask_threshold: float = 0.5
    dtype: str = "float32"
    overlays: bool = True
    keep_going: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold <= 1.0 or not 0.0 <= self.mask_threshold <= 1.0:
            raise ValueError("--threshold and --mask-threshold must be between 0 and 1")
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, not {self.dtype!r}")


@dataclass(frozen=True)
class RayOptions:
    """`--ray`: where (`address`: "local", "auto", "HOST:PORT", "ray://HOST:PORT") and how big the actor pool is
    (None: planned from the cluster, see `ray_runner.plan_ray_resources`)."""

    address: str = RAY_LOCAL
    workers: Optional[int] = None
    cpus_per_worker: Optional[float] = None
    gpus_per_worker: Optional[float] = None

    def __post_init__(self) -> None:
        if (self.workers is not None and self.workers < 1) or (
                self.cpus_per_worker is not None and self.cpus_per_worker <= 0) or (
                self.gpus_per_worker is not None and self.gpus_per_worker < 0):
            raise ValueError("--workers and --cpus-per-worker must be positive, --gpus-per-worker not negative")


@dataclass(frozen=True)
class RunOptions:
    """One batch run: inputs, model, output folder and how to process them.

    model: converted model folder or Hub id. inputs: files, folders, glob patterns. output_dir: the results folder.
    batch: per-forward-pass settings. batch_size: images per forward pass. device: torch device ("cpu", "cuda",
    "cuda:N"; with Ray None means "cpu" unless GPUs are asked for). resume: keep finished images. shard_output /
    images_per_shard: JSON-lines shards instead of one predictions.json. ray: run on Ray (None: in this process).
    """

    model: str
    inputs: Tuple[str, ...]
    output_dir: str
    batch: BatchOptions = BatchOptions()
    batch_size: int = 1
    device: Optional[str] = "cpu"
    resume: bool = False
    shard_output: bool = False
    images_per_shard: int = DEFAULT_IMAGES_PER_SHARD
    ray: Optional[RayOptions] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not self.inputs:
            raise ValueError("at least one INPUT is needed")
        if self.batch_size < 1:
            raise ValueError("--batch-size must be at least 1")
        if self.images_per_shard < 1:
            raise ValueError("--images-per-shard must be at least 1")
