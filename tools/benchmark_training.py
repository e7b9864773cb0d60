#!/usr/bin/env python3
# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""One training step (forward + losses + backward + SGD update) of our model vs MMDetection 3.3.0, same machine, one run.

    python tools/benchmark_training.py [--steps 3] [--warmup 1] [--device cpu|cuda] [--mmdet-python PATH]

Batch of 2 images of 1333x800 (padded 800x1344 input), R50-FPN with the synthetic weights, 8 objects per image,
SGD(momentum 0.9, wd 1e-4) at lr 0.02 x 0.001 = 2e-5, the first iterations of MMDetection's schedule (linear warm-up
from 0.001): at the full 0.02 these untrained synthetic weights diverge to NaN in two steps, and NaN arithmetic has
other timings than a real step's, so every timed step's losses must be finite or the run fails. Each side runs in its
own fresh process (ours with this interpreter, MMDetection with the reference venv's, default
/work/venv-mmdet-sys/bin/python), so the peak memory of one is not inflated by the other: peak RSS (CPU) or
`torch.cuda.max_memory_allocated` (GPU). Prints the median step time of `--steps` steps after `--warmup` steps, the
peak memory and the ratios ours / MMDetection, with the CPU model name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MMDET_PYTHON = "/work/venv-mmdet-sys/bin/python"
HEIGHT, WIDTH, OBJECTS = 800, 1333, 8


def make_batch(seed: int = 0):
    """Padded normalised batch (2, 3, 800, 1344), image sizes and per-image ground truth (numpy)."""
    import numpy as np
    import torch

    rng = np.random.Generator(np.random.PCG64(seed))
    pixel_values = torch.zeros(2, 3, 800, 1344)
    pixel_values[:, :, :HEIGHT, :WIDTH] = torch.from_numpy(rng.standard_normal((2, 3, HEIGHT, WIDTH)).astype("float32"))
    ground_truth = []
    for _ in range(2):
        boxes, masks = [], np.zeros((OBJECTS, HEIGHT, WIDTH), bool)
        for index in range(OBJECTS):
            x1, y1 = rng.uniform(0, WIDTH - 300), rng.uniform(0, HEIGHT - 300)
            w, h = rng.uniform(40, 300, 2)
            boxes.append([x1, y1, x1 + w, y1 + h])
            masks[index, int(y1):int(y1 + h), int(x1):int(x1 + w)] = True
        ground_truth.append({"boxes": np.asarray(boxes, np.float32), "labels": rng.integers(0, 80, OBJECTS),
                             "masks": masks})
    return pixel_values, [(HEIGHT, WIDTH)] * 2, ground_truth


def peak_memory_mb(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def first_iterations_optimizer(model):
    """MMDetection's SGD at the lr of its schedule's first iterations (base lr x warm-up start factor)."""
    sys.path[:0] = [os.path.join(REPO_ROOT, "tools")]
    from mmdet_schedule import BASE_LEARNING_RATE, WARMUP_START_FACTOR, build_optimizer

    return build_optimizer(model, BASE_LEARNING_RATE * WARMUP_START_FACTOR)


def time_steps(step, steps: int, warmup: int, device: str) -> dict:
    """Run `warmup + steps` steps (`step()` returns the total loss); the times and losses of the timed ones.

    Raises:
        RuntimeError: a step's loss is not finite (a diverged run would time NaN arithmetic).
    """
    import math

    import torch

    times, losses = [], []
    for index in range(warmup + steps):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = float(step())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if not math.isfinite(loss):
            raise RuntimeError(f"step {index + 1} gave a non-finite loss ({loss}): the timing would not be a real "
                               "training step's.")
        if index >= warmup:
            times.append(time.perf_counter() - start)
            losses.append(loss)
    return {"times": times, "losses": losses}


def run_ours(steps: int, warmup: int, device: str) -> dict:
    sys.path[:0] = [REPO_ROOT, os.path.join(REPO_ROOT, "tools")]
    import torch
    from parity import build_model

    model = build_model("mask-rcnn_r50_fpn_1x_coco", numerics="fast").train().to(device)
    pixel_values, sizes, ground_truth = make_batch()
    pixel_values = pixel_values.to(device)
    labels = [{"class_labels": torch.from_numpy(g["labels"]).to(device), "boxes": torch.from_numpy(g["boxes"]).to(device),
               "masks": torch.from_numpy(g["masks"]).to(device)} for g in ground_truth]
    optimizer = first_iterations_optimizer(model)
    image_sizes = torch.tensor(sizes)

    def step():
        optimizer.zero_grad()
        loss = model(pixel_values, image_sizes, labels=labels).loss
        loss.backward()
        optimizer.step()
        return loss.detach()

    return {**time_steps(step, steps, warmup, device), "peak_mb": peak_memory_mb(device)}


def run_mmdet(steps: int, warmup: int, device: str) -> dict:
    sys.path[:0] = [REPO_ROOT]
    import numpy as np
    from tools.make_training_golden import build_mmdet_model, data_samples_for

    model = build_mmdet_model("mask-rcnn_r50_fpn_1x_coco").to(device)
    pixel_values, sizes, ground_truth = make_batch()
    ground_truth = [{"boxes": g["boxes"], "class_labels": g["labels"].astype(np.int64),
                     "iscrowd": np.zeros(OBJECTS, bool), "masks": g["masks"]} for g in ground_truth]
    samples = [sample.to(device) for sample in data_samples_for(ground_truth, sizes, tuple(pixel_values.shape[-2:]))]
    pixel_values = pixel_values.to(device)
    optimizer = first_iterations_optimizer(model)

    def step():
        optimizer.zero_grad()
        loss, _ = model.parse_losses(model.loss(pixel_values, samples))
        loss.backward()
        optimizer.step()
        return loss.detach()

    return {**time_steps(step, steps, warmup, device), "peak_mb": peak_memory_mb(device)}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--mmdet-python", default=DEFAULT_MMDET_PYTHON)
    parser.add_argument("--side", choices=["ours", "mmdet"], help=argparse.SUPPRESS)  # one side, in a child process
    args = parser.parse_args(argv)
    if args.side:
        result = (run_ours if args.side == "ours" else run_mmdet)(args.steps, args.warmup, args.device)
        print("RESULT " + json.dumps(result))
        return 0
    results = {}
    for side, python in (("ours", sys.executable), ("mmdet", args.mmdet_python)):
        completed = subprocess.run([python, os.path.abspath(__file__), "--side", side, "--steps", str(args.steps),
                                    "--warmup", str(args.warmup), "--device", args.device],
                                   capture_output=True, text=True)
        lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULT ")]
        if completed.returncode != 0 or not lines:
            print(f"{side} failed:\n{completed.stderr[-3000:]}", file=sys.stderr)
            return 1
        results[side] = json.loads(lines[-1][len("RESULT "):])
    print(f"One training step, batch 2 x 1333x800, R50-FPN, {args.device} ({cpu_name()}, "
          f"{os.cpu_count()} logical CPUs), median of {args.steps} after {args.warmup} warm-up:")
    print("| | step time (s) | peak memory (MiB) | total loss of the timed steps |\n|---|---|---|---|")
    for side in ("ours", "mmdet"):
        losses = ", ".join(f"{loss:.3f}" for loss in results[side]["losses"])
        print(f"| {side} | {statistics.median(results[side]['times']):.2f} | {results[side]['peak_mb']:.0f} | "
              f"{losses} |")
    time_ratio = statistics.median(results["ours"]["times"]) / statistics.median(results["mmdet"]["times"])
    memory_ratio = results["ours"]["peak_mb"] / results["mmdet"]["peak_mb"]
    print(f"| ours / MMDetection | {time_ratio:.2f}x | {memory_ratio:.2f}x | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
