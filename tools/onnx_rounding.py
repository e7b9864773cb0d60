# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Where the ONNX export's last bits come from: convolution kernels, batch-norm folding, onnxruntime's rewrites.

    python tools/onnx_rounding.py [--variant NAME] [--detections]

On one fixture backbone (synthetic weights, lean settings, tests/fixtures/images/photo_640x480.png), the backbone +
FPN features of:
- PyTorch with oneDNN convolutions (the reference: what the pipeline runs), with its native ones (oneDNN off), and
  in float64 (the exact value both round);
- onnxruntime on the graph exported with the batch norms folded into the convolutions (what export_onnx writes) and
  kept as BatchNormalization nodes, at each optimisation level and with single rewrites disabled.
Each row: the largest difference over all FPN levels relative to the largest feature magnitude, and which sessions
give bit-identical features. `--detections` also runs the whole graph exported both ways on every fixture image
(tools/onnx_agreement.py's comparison) and prints the worst case per setting.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

# (graph, optimisation level, onnxruntime rewrites disabled); "folded" is what export_onnx writes
SESSIONS = (
    ("folded", "disable", ()), ("folded", "basic", ()), ("folded", "all", ()), ("folded", "all", ("NchwcTransformer",)),
    ("kept", "disable", ()), ("kept", "basic", ()), ("kept", "basic", ("ConvBNFusion",)), ("kept", "all", ()),
    ("kept", "all", ("ConvBNFusion",)), ("kept", "all", ("ConvBNFusion", "ConvAddActivationFusion")),
    ("kept", "all", ("ConvBNFusion", "NchwcTransformer")),
)
DETECTION_SESSIONS = (("folded", "all", ()), ("kept", "all", ("ConvBNFusion",)), ("kept", "disable", ()))


def session(path: Path, level: str, disabled: Sequence[str], threads: int = 1):
    """An onnxruntime CPU session at `level` without the named graph rewrites."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = {
        "disable": onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "all": onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=list(disabled) or None)


def relative_error(actual: List[np.ndarray], expected: List[np.ndarray]) -> float:
    """Largest |actual - expected| over all levels, over the largest |expected|."""
    return max(float(np.abs(a.astype(np.float64) - e).max() / np.abs(e).max()) for a, e in zip(actual, expected))


def feature_rounding(model, pixel_values: np.ndarray, work: Path) -> None:
    import onnx
    import torch

    class Features(torch.nn.Module):
        """Backbone + FPN: (B, 3, H, W) -> the FPN levels."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixels):
            return tuple(self.inner.fpn(self.inner.backbone(pixels)))

    features = Features(model).eval()
    pixels = torch.from_numpy(pixel_values)
    with torch.inference_mode():
        onednn = [level.numpy() for level in features(pixels)]
        torch.backends.mkldnn.enabled = False
        native = [level.numpy() for level in features(pixels)]
        torch.backends.mkldnn.enabled = True
        exact = [level.numpy() for level in Features(model.double()).eval()(pixels.double())]
        model.float()
    print(f"{'features of':58} {'vs PyTorch oneDNN':>17} {'vs float64':>11}")
    print(f"{'PyTorch, oneDNN convolutions (the pipeline)':58} {0.0:17.3g} {relative_error(onednn, exact):11.3g}")
    print(f"{'PyTorch, native convolutions':58} {relative_error(native, onednn):17.3g} "
          f"{relative_error(native, exact):11.3g}")
    paths = {}
    for graph, fold in (("folded", True), ("kept", False)):
        paths[graph] = work / f"features-{graph}.onnx"
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(features, (pixels,), str(paths[graph]), dynamo=False, opset_version=17,
                              input_names=["pixel_values"], do_constant_folding=True,
                              dynamic_axes={"pixel_values": {0: "batch_size", 2: "height", 3: "width"}},
                              **({} if fold else {"training": torch.onnx.TrainingMode.PRESERVE}))
        count = sum(node.op_type == "BatchNormalization" for node in onnx.load(str(paths[graph])).graph.node)
        print(f"  graph '{graph}': {count} BatchNormalization nodes")
    outputs: Dict[str, List[np.ndarray]] = {}
    for graph, level, disabled in SESSIONS:
        name = f"onnxruntime, BN {graph}, {level}" + (f" without {'+'.join(disabled)}" if disabled else "")
        outputs[name] = session(paths[graph], level, disabled).run(None, {"pixel_values": pixel_values})
        print(f"{name:58} {relative_error(outputs[name], onednn):17.3g} {relative_error(outputs[name], exact):11.3g}")
    groups: List[List[str]] = []
    for name, values in outputs.items():
        for group in groups:
            if all(np.array_equal(a, b) for a, b in zip(outputs[group[0]], values)):
                group.append(name)
                break
        else:
            groups.append([name])
    print("bit-identical onnxruntime features:")
    for group in groups:
        print("  " + " == ".join(name.replace("onnxruntime, ", "") for name in group))
    batch_norm_alone(model, work)


def batch_norm_alone(model, work: Path) -> None:
    """The model's first batch norm on one input: onnxruntime's BatchNormalization against ATen's batch_norm."""
    import torch

    batch_norm = next(module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d))
    inputs = torch.randn(1, batch_norm.num_features, 64, 96, generator=torch.Generator().manual_seed(0))
    path = work / "batch-norm.onnx"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = batch_norm(inputs).numpy()
        torch.onnx.export(batch_norm, (inputs,), str(path), dynamo=False, opset_version=17, input_names=["x"],
                          training=torch.onnx.TrainingMode.PRESERVE)
    actual = session(path, "disable", ()).run(None, {"x": inputs.numpy()})[0]
    print(f"one BatchNormalization ({batch_norm.num_features} channels) vs ATen batch_norm: "
          f"{np.mean(actual != expected):.1%} of the values differ, by at most "
          f"{np.abs(actual - expected).max() / np.abs(expected).max():.2g} of the largest")


def detection_rounding(model, folder: Path, work: Path) -> None:
    from export_onnx import add_metadata, preprocessing_settings, trace_to_onnx
    from image_processing_mask_rcnn import MaskRCNNImageProcessor
    from onnx_agreement import IMAGES, compare, pytorch_detections, runtime_detections
    from onnx_inference_mask_rcnn import MaskRCNNOnnxRuntime

    processor = MaskRCNNImageProcessor.from_pretrained(str(folder))
    images = sorted(IMAGES.iterdir())
    expected = [pytorch_detections(model, processor, [str(path)])[0] for path in images]
    for graph, level, disabled in DETECTION_SESSIONS:
        path = work / f"model-{graph}.onnx"
        if not path.exists():
            trace_to_onnx(model, path, fold_batch_norms=graph == "folded")
            add_metadata(path, model, preprocessing_settings(folder))
        runtime = MaskRCNNOnnxRuntime(path, intra_op_num_threads=1)
        runtime.session = session(path, level, disabled)  # the runtime's own pre- and post-processing around it
        stats = [compare(reference, runtime_detections(runtime, [str(image)])[0])
                 for reference, image in zip(expected, images)]
        unmatched = sum(s["pytorch"] + s["onnx"] - 2 * s["matched"] for s in stats)
        name = f"BN {graph}, {level}" + (f" without {'+'.join(disabled)}" if disabled else "")
        print(f"detections, {name:40} worst box {max(s['max_box_error'] for s in stats):.2g} px, score "
              f"{max(s['max_score_error'] for s in stats):.2g}, median mask IoU "
              f"{min(s['median_mask_iou'] for s in stats):.5f}, min {min(s['min_mask_iou'] for s in stats):.4f}, "
              f"{unmatched} unmatched", flush=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    from onnx_agreement import FIXTURE_VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default=FIXTURE_VARIANTS[-1], choices=FIXTURE_VARIANTS)
    parser.add_argument("--detections", action="store_true", help="also the whole graph on every fixture image")
    parser.add_argument("--work-dir", default=None)
    arguments = parser.parse_args(argv)
    from reference_kernels import pin_reference_kernels

    pin_reference_kernels()
    import torch

    torch.set_num_threads(1)
    from export_onnx import image_inputs
    from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
    from onnx_agreement import IMAGES, synthetic_variant_folder

    work = Path(arguments.work_dir or tempfile.mkdtemp(prefix="onnx-rounding-"))
    folder = synthetic_variant_folder(work, arguments.variant)
    model = MaskRCNNForInstanceSegmentation.from_pretrained(str(folder)).eval()
    print(f"{arguments.variant}, photo_640x480, torch {torch.__version__} "
          f"({torch.backends.cpu.get_cpu_capability()}), 1 thread")
    feature_rounding(model, image_inputs(folder, [str(IMAGES / "photo_640x480.png")])["pixel_values"], work)
    if arguments.detections:
        detection_rounding(model, folder, work)


if __name__ == "__main__":
    main()
