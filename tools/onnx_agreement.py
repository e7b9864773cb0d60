# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Agreement of the ONNX export + torch-free runtime with the PyTorch model + image processor, on the fixtures.

    python tools/onnx_agreement.py [--variant NAME] [--resize 300 200 | --full] [--kernel-spread] [--threads 1]

One row per (variant, image). `--kernel-spread` adds the same comparison between PyTorch and itself with its other
CPU convolution kernel (oneDNN off): the spread of two valid float32 implementations, to read the ONNX errors against.

Folders are converted from the synthetic checkpoints of the golden variants (tools/synthetic_weights.py) with lean
settings (`tools/synthetic_model_folder.py`: small images, few proposals) so that a test session exports each
backbone once in seconds. The weights are not trained: they show agreement, never what a COCO model predicts.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

FIXTURE_VARIANTS = ("mask-rcnn_r50_fpn_1x_coco", "mask-rcnn_r50-caffe_fpn_1x_coco", "mask-rcnn_x101-32x4d_fpn_1x_coco")
IMAGES = REPO_ROOT / "tests" / "fixtures" / "images"


def synthetic_variant_folder(base_dir: Path, variant: str, config_changes: Optional[Dict[str, Any]] = None,
                             resize_scale: Optional[Sequence[int]] = None) -> Path:
    """`base_dir/<variant>`: the synthetic checkpoint of `variant` converted, with the lean settings by default."""
    from convert_mmdet_checkpoint import convert_checkpoint
    from synthetic_model_folder import LEAN_CONFIG, LEAN_RESIZE_SCALE
    from synthetic_weights import config_name_of, save_synthetic_checkpoint

    folder = Path(base_dir) / variant
    if (folder / "model.safetensors").is_file():
        return folder
    with tempfile.TemporaryDirectory(prefix="synthetic-checkpoint-") as scratch:
        checkpoint = save_synthetic_checkpoint(str(Path(scratch) / "synthetic.pth"), variant)
        convert_checkpoint(config_name_of(variant), checkpoint=checkpoint, output_dir=folder)
    _update_json(folder / "config.json", {**LEAN_CONFIG, **(config_changes or {})})
    _update_json(folder / "preprocessor_config.json", {"resize_scale": list(resize_scale or LEAN_RESIZE_SCALE)})
    return folder


def _update_json(path: Path, changes: Dict[str, Any]) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    content.update(changes)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def pytorch_detections(model, processor, images: List[Any]) -> List[Dict[str, np.ndarray]]:
    """The PyTorch pipeline's detections (threshold 0) per image: scores, labels, boxes (original pixels), masks."""
    import torch

    inputs = processor(images=images, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    results = processor.post_process_instance_segmentation(outputs, threshold=0.0)
    return [{name: result[name].numpy() for name in ("scores", "labels", "boxes", "masks")} for result in results]


def pytorch_native_convolution_detections(model, processor, images: List[Any]) -> List[Dict[str, np.ndarray]]:
    """`pytorch_detections` with PyTorch's native CPU convolutions instead of oneDNN's (`torch.backends.mkldnn` off):
    the same program with another summation order in every convolution."""
    import torch

    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        return pytorch_detections(model, processor, images)
    finally:
        torch.backends.mkldnn.enabled = enabled


def runtime_detections(runtime, images: List[Any]) -> List[Dict[str, Any]]:
    """The ONNX runtime's detections (threshold 0) per image, in the same layout (masks as full canvases)."""
    batch = runtime.preprocess(images)
    outputs = runtime.forward(batch["pixel_values"], batch["image_sizes"])
    results = []
    for image in runtime.detections(outputs, batch["original_sizes"], batch["scale_factors"], threshold=0.0):
        height, width = image["size"]
        masks = np.zeros((len(image["masks"]), height, width), dtype=bool)
        for index, pasted in enumerate(image["masks"]):
            if pasted is not None:
                masks[index, pasted[0], pasted[1]] = pasted[2]
        results.append({"scores": image["scores"], "labels": image["labels"], "boxes": image["boxes"],
                        "masks": masks})
    return results


def compare(expected: Dict[str, np.ndarray], actual: Dict[str, np.ndarray], match_iou: float = 0.9) -> Dict[str, Any]:
    """One-to-one matching (same label, box IoU > `match_iou`, greedy in expected order) and the errors of the
    pairs: largest box and score difference, mask IoUs (min and median)."""
    from onnx_inference_mask_rcnn import box_iou

    pairs, used = [], set()
    if len(expected["scores"]) and len(actual["scores"]):
        iou = box_iou(expected["boxes"], actual["boxes"])
        for index in range(len(expected["scores"])):
            candidates = np.where(actual["labels"] == expected["labels"][index], iou[index], 0.0)
            candidates[list(used)] = 0.0
            best = int(np.argmax(candidates))
            if candidates[best] > match_iou:
                pairs.append((index, best))
                used.add(best)
    mask_ious = []
    for expected_index, actual_index in pairs:
        a, b = expected["masks"][expected_index], actual["masks"][actual_index]
        union = np.logical_or(a, b).sum()
        mask_ious.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    expected_indices = [pair[0] for pair in pairs]
    actual_indices = [pair[1] for pair in pairs]
    box_errors = np.abs(expected["boxes"][expected_indices].astype(np.float64)
                        - actual["boxes"][actual_indices].astype(np.float64))
    score_errors = np.abs(expected["scores"][expected_indices].astype(np.float64)
                          - actual["scores"][actual_indices].astype(np.float64))
    return {"pytorch": len(expected["scores"]), "onnx": len(actual["scores"]), "matched": len(pairs),
            "max_box_error": float(box_errors.max()) if pairs else 0.0,
            "max_score_error": float(score_errors.max()) if pairs else 0.0,
            "min_mask_iou": float(min(mask_ious)) if pairs else 1.0,
            "median_mask_iou": float(np.median(mask_ious)) if pairs else 1.0}


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default=None, choices=FIXTURE_VARIANTS)
    parser.add_argument("--resize", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"))
    parser.add_argument("--full", action="store_true",
                        help="MMDetection's settings (1333x800, 1000 proposals, 100 detections) instead of the lean ones")
    parser.add_argument("--kernel-spread", action="store_true",
                        help="also compare PyTorch with itself on its native convolutions (oneDNN off)")
    parser.add_argument("--threads", type=int, default=1, help="PyTorch and onnxruntime intra-op threads")
    parser.add_argument("--work-dir", default=None)
    arguments = parser.parse_args(argv)
    from reference_kernels import pin_reference_kernels

    pin_reference_kernels()
    import torch

    torch.set_num_threads(arguments.threads)
    from export_onnx import export_onnx
    from image_processing_mask_rcnn import MaskRCNNImageProcessor
    from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
    from onnx_inference_mask_rcnn import MaskRCNNOnnxRuntime

    work = Path(arguments.work_dir or tempfile.mkdtemp(prefix="onnx-agreement-"))
    columns = f"{'box err':>9} {'score err':>9} {'mask IoU med/min':>17}"
    print(f"{'variant':34} {'image':18} {'torch/onnx/matched':>18} {columns}"
          + (f" | torch native conv vs oneDNN: {columns}" if arguments.kernel_spread else ""))
    for variant in [arguments.variant] if arguments.variant else FIXTURE_VARIANTS:
        full = {"max_detections_per_image": 100, "rpn_max_proposals": 1000, "rpn_pre_nms_top_k": 1000}
        folder = synthetic_variant_folder(work, variant, config_changes=full if arguments.full else None,
                                          resize_scale=[1333, 800] if arguments.full else arguments.resize)
        export_onnx(folder)
        model = MaskRCNNForInstanceSegmentation.from_pretrained(str(folder)).eval()
        processor = MaskRCNNImageProcessor.from_pretrained(str(folder))
        runtime = MaskRCNNOnnxRuntime(folder / "model.onnx", intra_op_num_threads=arguments.threads)
        for path in sorted(IMAGES.iterdir()):
            expected = pytorch_detections(model, processor, [str(path)])[0]
            stats = compare(expected, runtime_detections(runtime, [str(path)])[0])
            counts = f"{stats['pytorch']:>6}/{stats['onnx']}/{stats['matched']:<7}"
            row = f"{variant:34} {path.stem:18} {counts} {_errors(stats)}"
            if arguments.kernel_spread:
                spread = compare(expected, pytorch_native_convolution_detections(model, processor, [str(path)])[0])
                unmatched = spread["pytorch"] + spread["onnx"] - 2 * spread["matched"]
                row += f" | {_errors(spread)}" + (f" ({unmatched} unmatched)" if unmatched else "")
            print(row, flush=True)


def _errors(stats: Dict[str, Any]) -> str:
    return (f"{stats['max_box_error']:>9.2g} {stats['max_score_error']:>9.2g} "
            f"{stats['median_mask_iou']:>8.5f}/{stats['min_mask_iou']:.4f}")


if __name__ == "__main__":
    main()
