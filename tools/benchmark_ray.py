# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Throughput of the batch CLI: one process vs `--ray` with 1 and 2 workers, same images, same machine.

    python tools/benchmark_ray.py [--model DIR] [--images 16] [--batch-size 1] [--repeats 3] [--workers 1,2]
        [--threshold 0.05] [--no-overlays] [--json results.json]

Every contender is `mask_rcnn_batch.runner.run` (what `python segment.py ...` does) in a fresh Python process, one
after the other (A B C A B C ... with --repeats): the single-process run with torch's default thread count, then
`--ray --workers N` for each N, each starting its own local Ray instance (this machine's cores, 127.0.0.1 only) and
shutting it down again. Reported per contender (median over repeats):

* wall s: the whole process — Python and torch imports, model loading, Ray start and actor start-up, every image;
* startup s: from the start of processing to the first finished batch (for Ray: starting Ray, the workers loading
  the model, the first batch);
* steady img/s: the images finished after each worker's first batch (the first W batches, W = workers, 1 for one
  process) divided by the time from the W-th to the last batch: start-up excluded, what a long run converges to
  (use enough images: at least 8 per worker);
* torch threads per worker, and whether predictions.json is identical to the single-process run (on CPU a 1-thread
  worker can differ from a multi-thread process in the last float bits, see the README).

`--model` defaults to the synthetic R50-FPN checkpoint converted with this repository's converter (full 1333x800
test scale, untrained weights, cached under `--cache-dir`): the compute of the real model, not its detections.
Inputs are `--images` copies of the 640x480 and 427x640 fixture photos (alternating, some mirrored) unless
`--inputs FOLDER` is given. Needs the optional extra: `pip install -r requirements-ray.txt`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SYNTHETIC_CONFIG = "mask-rcnn_r50_fpn_1x_coco"
SOURCE_PHOTOS = (REPO_ROOT / "tests" / "fixtures" / "images" / "photo_640x480.png",
                 REPO_ROOT / "tests" / "fixtures" / "images" / "portrait_427x640.png")
CHILD_FLAG = "--child-run"  # internal: run one contender in this process and print its summary as JSON


def synthetic_model_folder(cache_dir: Path) -> Path:
    """The synthetic R50-FPN checkpoint (`tools/synthetic_weights.py`) converted into `cache_dir` once, with the
    converter's default (full-scale) settings."""
    folder = cache_dir / "synthetic-r50-fpn-full-scale"
    if (folder / "model.safetensors").is_file():
        return folder
    from convert_mmdet_checkpoint import convert_checkpoint
    from synthetic_weights import save_synthetic_checkpoint

    with tempfile.TemporaryDirectory(prefix="benchmark-checkpoint-") as scratch:
        checkpoint = save_synthetic_checkpoint(str(Path(scratch) / "synthetic.pth"), SYNTHETIC_CONFIG)
        convert_checkpoint(SYNTHETIC_CONFIG, checkpoint=checkpoint, output_dir=folder)
    return folder


def make_inputs(folder: Path, count: int) -> Path:
    """`count` PNG files alternating between the two fixture photos, every third one mirrored."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(path).convert("RGB") for path in SOURCE_PHOTOS]
    for index in range(count):
        image = photos[index % len(photos)]
        if index % 3 == 2:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(folder / f"image_{index:04d}.png")
    return folder


def contender_arguments(name: str, model: str, inputs: Path, output_dir: Path,
                        options: argparse.Namespace) -> List[str]:
    """segment.py arguments of one contender ("single" or "ray-N")."""
    argv = ["--model", model, str(inputs), "--output-dir", str(output_dir), "--batch-size", str(options.batch_size),
            "--threshold", str(options.threshold)]
    if options.no_overlays:
        argv.append("--no-overlays")
    if name.startswith("ray-"):
        argv += ["--ray", "--workers", name[len("ray-"):]]
    return argv


def child_run(argv: Sequence[str]) -> None:
    """One contender in this process: `runner.run` (what `python segment.py` does), then one JSON line with its
    summary on stdout."""
    import torch

    from mask_rcnn_batch.cli import parse_options
    from mask_rcnn_batch.runner import run

    options = parse_options(list(argv))
    summary, _ = run(options)
    print(json.dumps({"done": summary.done, "failed": summary.failed, "seconds": summary.seconds,
                      "finished_batches": summary.finished_batches, "workers": (options.ray.workers if options.ray else None) or 1,
                      "worker_threads": sorted(set(summary.worker_threads.values())),
                      "process_threads": torch.get_num_threads()}))


def run_contender(name: str, argv: List[str]) -> Dict[str, Any]:
    """Runs one contender in a fresh process; its summary plus the process's wall time."""
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, *argv],
                               capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{name} failed (exit {completed.returncode}): {completed.stderr.strip()[-2000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    batches = result["finished_batches"]
    warm = min(result["workers"], len(batches))  # each worker's first batch carries its start-up
    steady_images = sum(images for _, images in batches[warm:])
    steady_seconds = batches[-1][0] - batches[warm - 1][0] if warm and steady_images else 0.0
    result.update(name=name, wall_seconds=wall, startup_seconds=batches[0][0] if batches else None,
                  steady_images_per_second=steady_images / steady_seconds if steady_seconds > 0 else None)
    return result


def median(values: List[Optional[float]]) -> Optional[float]:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def _figure(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def results_table(runs: Dict[str, List[Dict[str, Any]]], reference_predictions: bytes) -> str:
    """The Markdown table of the README: one row per contender, medians over its repeats."""
    lines = ["| contender | torch threads per worker | wall s | startup s | steady img/s | steady vs one process | "
             "predictions = one process |", "|---|---|---|---|---|---|---|"]
    single_rate = median([run["steady_images_per_second"] for run in runs["single"]])
    for name, results in runs.items():
        rate = median([run["steady_images_per_second"] for run in results])
        threads = results[0]["worker_threads"] or [results[0]["process_threads"]]
        label = "one process" if name == "single" else f"Ray, {name[len('ray-'):]} worker(s)"
        ratio = f"{rate / single_rate:.2f}x" if rate and single_rate else "-"
        same = "yes" if all(run["predictions"] == reference_predictions for run in results) else "no"
        lines.append(f"| {label} | {', '.join(map(str, threads))} | "
                     f"{_figure(median([run['wall_seconds'] for run in results]), 1)} | "
                     f"{_figure(median([run['startup_seconds'] for run in results]), 1)} | "
                     f"{_figure(rate, 3)} | {ratio} | {same} |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == CHILD_FLAG:
        child_run(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="converted model folder or Hub id (default: synthetic R50)")
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "mask-rcnn-benchmark-ray"),
                        help="where the synthetic model folder is kept between runs")
    parser.add_argument("--inputs", default=None, help="a folder of images (default: --images generated copies)")
    parser.add_argument("--images", type=int, default=16, help="number of generated input images (16)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.05,
                        help="score threshold (0.05: keep the model's detections, so RLE and overlays do real work)")
    parser.add_argument("--no-overlays", action="store_true")
    parser.add_argument("--workers", default="1,2", help="comma-separated Ray worker counts (1,2)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved repeats; the median is reported (1)")
    parser.add_argument("--json", default=None, help="also write the raw results to this file")
    options = parser.parse_args(argv)

    import ray
    import torch

    cache_dir = Path(options.cache_dir)
    model = options.model or str(synthetic_model_folder(cache_dir))
    names = ["single"] + [f"ray-{int(count)}" for count in options.workers.split(",") if count.strip()]
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="benchmark-ray-") as scratch:
        inputs = Path(options.inputs) if options.inputs else make_inputs(Path(scratch) / "inputs", options.images)
        for repeat in range(options.repeats):
            for name in names:
                output_dir = Path(scratch) / f"{name}-{repeat}"
                result = run_contender(name, contender_arguments(name, model, inputs, output_dir, options))
                result["predictions"] = (output_dir / "predictions.json").read_bytes()
                runs[name].append(result)
                print(f"repeat {repeat + 1}/{options.repeats} {name}: {result['done']} images, "
                      f"{result['wall_seconds']:.1f} s wall", file=sys.stderr)

    reference = runs["single"][0]["predictions"]
    print(f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads by default), ray {ray.__version__}; model "
          f"{model}; {runs['single'][0]['done']} images, batch size {options.batch_size}, threshold "
          f"{options.threshold}, overlays {'off' if options.no_overlays else 'on'}; median of {options.repeats}\n")
    print(results_table(runs, reference))
    if options.json:
        for results in runs.values():
            for run in results:
                run.pop("predictions")
        Path(options.json).write_text(json.dumps(runs, indent=2))


if __name__ == "__main__":
    main()
