# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Where one end-to-end inference spends its time: per stage of the model, and per operator.

    python tools/profile_default_path.py [--image samples/grace_hopper.jpg] [--keep ten|all|0.5] [--fuse] [--runs 3]

Builds our model with the benchmark's synthetic R50-FPN weights (`benchmark.build_our_model`, ~100 real detections
per photo), runs `--runs` timed end-to-end inferences after a warm-up (preprocess, model, post-process at the
caller's threshold: "ten" = the photo's 10th best score, "all" = every detection, or a number), and prints

* per stage the median wall time over the runs (stages timed by hooks around the model's own modules and
  functions: backbone, FPN, RPN head, proposal selection, box RoIAlign, box head, detection selection, mask
  RoIAlign, mask head, mask pasting);
* `torch.profiler`'s operators (self CPU time, calls, allocated memory) of one more run.

The script only imports the checkout it lives in, so copying it into an older checkout profiles that version (the
"before" column of docs/speed.md). The machine and its kernels are printed first: name them with every number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict
from typing import Callable, Dict, List

import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO_ROOT, os.path.join(REPO_ROOT, "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

import modeling_mask_rcnn  # noqa: E402  (the checkout's own model code, patched below for timing)
from benchmark import OurModel, cpu_description, setting_thresholds  # noqa: E402

DEFAULT_IMAGE = os.path.join(REPO_ROOT, "samples", "grace_hopper.jpg")
MODULE_STAGES = {  # stage name -> attribute of MaskRCNNForInstanceSegmentation
    "backbone": "backbone", "FPN": "fpn", "RPN head convolutions": "rpn_head", "box RoIAlign": "box_roi_align",
    "box head FCs": "box_head", "mask RoIAlign": "mask_roi_align", "mask head convolutions": "mask_head",
}
FUNCTION_STAGES = {  # stage name -> function of modeling_mask_rcnn called by the model
    "RPN top-k + NMS": "select_proposals", "box decoding + class-wise NMS": "select_detections",
}


class StageClock:
    """Adds the wall time of each stage's calls to `seconds[stage]` (hooks on modules, wrappers on functions)."""

    def __init__(self) -> None:
        self.seconds: Dict[str, float] = defaultdict(float)

    def time_module(self, name: str, module: torch.nn.Module) -> None:
        starts: List[float] = []
        module.register_forward_pre_hook(lambda *_: starts.append(time.perf_counter()))
        module.register_forward_hook(lambda *_: self._add(name, time.perf_counter() - starts.pop()))

    def time_function(self, name: str, namespace, attribute: str) -> None:
        original: Callable = getattr(namespace, attribute)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - start)

        setattr(namespace, attribute, timed)

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--keep", default="ten", help='"ten", "all" or a score threshold (default: ten)')
    parser.add_argument("--fuse", action="store_true", help="profile fuse_batch_norms=True instead of the default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--operators", type=int, default=15, help="operator rows to print (0: none)")
    args = parser.parse_args(argv)

    image = Image.open(args.image)
    image.load()
    contender = OurModel(fuse=args.fuse)
    clock = StageClock()
    for stage, attribute in MODULE_STAGES.items():
        clock.time_module(stage, getattr(contender.model, attribute))
    for stage, attribute in FUNCTION_STAGES.items():
        clock.time_function(stage, modeling_mask_rcnn, attribute)
    processor = contender.processor
    clock.time_function("mask pasting (post-processing)", processor, "post_process_instance_segmentation")

    all_scores = contender.postprocess(contender.forward(contender.preprocess(image)))[0]["scores"]  # warm-up
    threshold = setting_thresholds(args.keep, all_scores)

    def end_to_end() -> int:
        outputs = contender.forward(contender.preprocess(image, threshold))
        return len(contender.postprocess(outputs, threshold)[0]["scores"])

    per_run: List[Dict[str, float]] = []
    totals, model_totals = [], []
    for _ in range(args.runs):
        clock.seconds.clear()
        start = time.perf_counter()
        kept = end_to_end()
        totals.append(time.perf_counter() - start)
        per_run.append(dict(clock.seconds))
    print(f"machine: {cpu_description()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"image: {os.path.basename(args.image)} {image.size[0]}x{image.size[1]}; "
          f"{'fused' if args.fuse else 'default'} path; caller keeps {args.keep} (threshold "
          f"{threshold if threshold is not None else 'none'}: {kept} detections); median of {args.runs} runs")
    total = statistics.median(totals)
    print(f"{'stage':34s} {'seconds':>8s} {'share':>6s}")
    for stage in list(MODULE_STAGES)[:3] + ["RPN top-k + NMS"] + list(MODULE_STAGES)[3:5] + [
            "box decoding + class-wise NMS"] + list(MODULE_STAGES)[5:] + ["mask pasting (post-processing)"]:
        seconds = statistics.median(run.get(stage, 0.0) for run in per_run)
        print(f"{stage:34s} {seconds:8.3f} {100 * seconds / total:5.1f}%")
    print(f"{'end to end':34s} {total:8.3f}")

    if args.operators:
        with torch.profiler.profile(profile_memory=True) as profile:
            end_to_end()
        print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.operators))


if __name__ == "__main__":
    main()
