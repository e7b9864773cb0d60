# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""End-to-end latency of the ONNX export on onnxruntime (CPU) vs this model in PyTorch vs torchvision, one run.

    python tools/benchmark_onnx.py [--image samples/grace_hopper.jpg] [--size 1333 800] [--runs 5]

Every contender carries the same synthetic R50-FPN weights as tools/benchmark.py (lowered background bias: ~100
detections, so the heads and the mask pasting do a busy image's work) and takes the same photo, resized beforehand to
`--size` (default 1333x800, MMDetection's test scale, so the network input is 1344x800 after padding):

* onnxruntime, graph optimisations off ("disable"), "basic" and "all" (onnxruntime's default), through
  `onnx_inference_mask_rcnn.MaskRCNNOnnxRuntime`: NumPy preprocessing, the graph, NumPy box rescaling and paste;
* this model in PyTorch float32: the default path and `fuse_batch_norms=True` (tools/benchmark.py's `OurModel`);
* torchvision `maskrcnn_resnet50_fpn` with the same weights (tools/benchmark.py's `TorchvisionModel`).

Runs are interleaved after a warm-up (the machine may be shared) and medians reported with ratios against our PyTorch
default. `--profile` adds onnxruntime's per-operator-type time split (where the time goes).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import tempfile
from typing import Dict, List, Optional

import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO_ROOT, os.path.join(REPO_ROOT, "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from benchmark import OurModel, TorchvisionModel, build_our_model, latency_table  # noqa: E402

DEFAULT_IMAGE = os.path.join(REPO_ROOT, "samples", "grace_hopper.jpg")


class OnnxRuntimeModel:
    """The exported graph on onnxruntime's CPU provider, with the torch-free pre- and post-processing."""

    def __init__(self, model_path: str, optimization: str) -> None:
        from onnx_inference_mask_rcnn import MaskRCNNOnnxRuntime

        self.name = f"onnxruntime CPU (optimisation {optimization})"
        self.runtime = MaskRCNNOnnxRuntime(model_path, optimization=optimization,
                                           intra_op_num_threads=torch.get_num_threads())

    def preprocess(self, image: Image.Image):
        return self.runtime.preprocess([image])

    def forward(self, inputs):
        return inputs, self.runtime.forward(inputs["pixel_values"], inputs["image_sizes"])

    def postprocess(self, outputs):
        inputs, raw = outputs
        return self.runtime.detections(raw, inputs["original_sizes"], inputs["scale_factors"], threshold=0.0)[0]

    @staticmethod
    def count(result) -> int:
        return int(len(result["scores"]))


def export_benchmark_model(directory: str) -> str:
    """model.onnx of the benchmark weights (validated against PyTorch like any export)."""
    from export_onnx import export_onnx

    model, _ = build_our_model("fast")
    return str(export_onnx(directory, os.path.join(directory, "model.onnx"), model=model))


def operator_profile(model_path: str, image: Image.Image, optimization: str) -> List[tuple]:
    """(operator type, milliseconds, share) of one onnxruntime run with profiling on, largest first."""
    import onnxruntime

    from onnx_inference_mask_rcnn import MaskRCNNOnnxRuntime

    runtime = MaskRCNNOnnxRuntime(model_path, optimization=optimization, intra_op_num_threads=torch.get_num_threads())
    inputs = runtime.preprocess([image])
    options = runtime.session.get_session_options()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="ort-profile-"), "profile")
    session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    feed = {"pixel_values": inputs["pixel_values"], "image_sizes": inputs["image_sizes"]}
    session.run(None, feed)  # warm-up
    session.run(None, feed)
    with open(session.end_profiling(), encoding="utf-8") as handle:
        events = json.load(handle)
    per_type: Dict[str, float] = collections.defaultdict(float)
    runs = [event for event in events if event.get("cat") == "Node" and event["name"].endswith("_kernel_time")]
    for event in runs[len(runs) // 2:]:  # the second (timed) run
        per_type[event["args"]["op_name"]] += event["dur"] / 1000.0
    total = sum(per_type.values())
    return sorted(((name, ms, ms / total) for name, ms in per_type.items()), key=lambda row: -row[1])


def cpu_description() -> str:
    name = platform.processor() or "unknown CPU"
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
        name = next(line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name"))
        flags = " ".join(flag for flag in ("avx512f", "avx512_bf16", "avx2", "fma") if f" {flag}" in text)
    except (OSError, StopIteration):
        pass
    return f"{name} ({flags}), {os.cpu_count()} logical CPUs"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--size", type=int, nargs=2, default=(1333, 800), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="also print onnxruntime's time per operator type")
    arguments = parser.parse_args(argv)
    if arguments.threads:
        torch.set_num_threads(arguments.threads)
    import onnxruntime

    image = Image.open(arguments.image).convert("RGB").resize(tuple(arguments.size), Image.BILINEAR)
    print(f"CPU: {cpu_description()}; torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime "
          f"{onnxruntime.__version__}; image {os.path.basename(arguments.image)} resized to {image.width}x"
          f"{image.height}; median of {arguments.runs} interleaved runs after {arguments.warmup} warm-up")
    directory = tempfile.mkdtemp(prefix="onnx-benchmark-")
    model_path = export_benchmark_model(directory)
    contenders = [OurModel("fast"), OurModel("fast", fuse=True), TorchvisionModel()]
    contenders += [OnnxRuntimeModel(model_path, level) for level in ("disable", "basic", "all")]
    table = latency_table(contenders, image, arguments.runs, arguments.warmup)
    baseline = table[contenders[0].name]["total"]
    print(f"{'contender':44} {'pre ms':>8} {'model ms':>9} {'post ms':>8} {'total ms':>9} {'dets':>5} "
          f"{'vs ours default':>16}")
    for name, row in table.items():
        print(f"{name:44} {row['preprocess'] * 1e3:8.1f} {row['model'] * 1e3:9.1f} {row['postprocess'] * 1e3:8.1f} "
              f"{row['total'] * 1e3:9.1f} {row['detections']:5.0f} {baseline / row['total']:15.2f}x")
    if arguments.profile:
        print("onnxruntime (optimisation all), time per operator type in one run:")
        for name, milliseconds, share in operator_profile(model_path, image, "all")[:12]:
            print(f"  {name:24} {milliseconds:9.1f} ms {share * 100:5.1f}%")


if __name__ == "__main__":
    main()
