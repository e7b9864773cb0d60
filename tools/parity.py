# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Run our model on the MMDetection golden fixtures and measure how close it is.

Used by tests/test_parity.py and, as a script, to print the parity table quoted in the README:

    python tools/parity.py [--numerics exact|fast|both] [--variant NAME] [--dtype float32|bfloat16]
    python tools/parity.py --noise-floor [--write]
    python tools/parity.py --keep-thresholds [--numerics exact|fast] [--variant NAME]

The noise floor: MMDetection's own float32 results move when only the convolution backend changes. `--noise-floor`
runs the exact path (bit-identical to MMDetection with PyTorch's default oneDNN convolutions) with oneDNN switched
off, i.e. with PyTorch's native CPU convolutions, and compares it with the stored MMDetection outputs. That spread
is what any other valid float32 implementation can differ by on these fixtures; the synthetic weights amplify
rounding far more than trained ones (backbone relative error grows ~40x over 16 blocks; class logits reach ~70),
so it exceeds the core tolerance (score error < 1e-4) on most images. `--write` stores it in
tests/fixtures/golden/noise_floor.json, which bounds the fast path's agreement in tests/test_parity.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Tuple

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.join(REPO_ROOT, "tools")):
    if path not in sys.path:
        sys.path.insert(0, path)

if __name__ == "__main__":  # as a script, compare on the goldens' CPU kernels (tests pin them in conftest.py)
    from reference_kernels import pin_reference_kernels

    pin_reference_kernels()

import torch  # noqa: E402
from onnx_inference_mask_rcnn import box_iou  # noqa: E402  (torch-free; onnxruntime only on use)

from convert_mmdet_checkpoint import ZOO, mmdet_key_to_hf_key, zoo_config  # noqa: E402
from golden import (golden_cases, golden_recordings, image_path, inputs_sha256, load_golden,  # noqa: E402
                    pixel_values_from_preprocessed)
from image_processing_mask_rcnn import MaskRCNNImageProcessor  # noqa: E402
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation  # noqa: E402
from reference_kernels import active_kernels  # noqa: E402
from synthetic_weights import config_name_of, make_synthetic_state_dict  # noqa: E402


def build_model(variant: str, numerics: str = "exact", dtype: torch.dtype = torch.float32,
                fuse_batch_norms: bool = False, mmdet_state_dict: Optional[Dict[str, torch.Tensor]] = None):
    """Our model with the synthetic weights of a golden variant, or `mmdet_state_dict` (MMDetection key names)."""
    config = zoo_config(config_name_of(variant), numerics=numerics, fuse_batch_norms=fuse_batch_norms)
    model = MaskRCNNForInstanceSegmentation(config).eval()
    if mmdet_state_dict is None:
        mmdet_state_dict = make_synthetic_state_dict(variant)
    state_dict = {mmdet_key_to_hf_key(key): value for key, value in mmdet_state_dict.items()}
    model.load_state_dict(state_dict, strict=True)
    return model.to(dtype)


def build_processor(model: MaskRCNNForInstanceSegmentation) -> MaskRCNNImageProcessor:
    """The image processor matching a model's normalisation and resize settings."""
    return MaskRCNNImageProcessor(**ZOO[model.config.mmdet_config_name].normalization())


@dataclass(frozen=True)
class CaseResult:
    """Outputs of our model on one golden case, and the stored MMDetection outputs."""

    golden: Dict[str, object]
    outputs: object  # MaskRCNNInstanceSegmentationOutput
    final: Dict[str, torch.Tensor]  # post-processed: boxes, scores, labels, masks
    input_sha256: str


def run_case(model, processor, variant: str, image_stem: str, end_to_end: bool) -> CaseResult:
    """Run one case: from MMDetection's own model input (`end_to_end=False`) or from the image file."""
    golden = load_golden(variant, image_stem)
    if end_to_end:
        inputs = processor(images=image_path(image_stem), return_tensors="pt")
        pixel_values, image_sizes = inputs["pixel_values"], inputs["image_sizes"]
        original_sizes, scale_factors = inputs["original_sizes"], inputs["scale_factors"]
    else:
        pixel_values, meta = pixel_values_from_preprocessed(image_stem, golden["normalization"])
        image_sizes = torch.tensor([meta["img_shape"][:2]], dtype=torch.long)
        original_sizes = torch.tensor([meta["ori_shape"][:2]], dtype=torch.long)
        scale_factors = torch.tensor([meta["scale_factor"]], dtype=torch.float64)
    with torch.inference_mode():
        outputs = model(pixel_values, image_sizes=image_sizes, original_sizes=original_sizes,
                        scale_factors=scale_factors)
    final = processor.post_process_instance_segmentation(outputs, threshold=0.0)[0]
    return CaseResult(golden=golden, outputs=outputs, final=final, input_sha256=inputs_sha256(pixel_values))


def match_detections(ours: Dict[str, np.ndarray], theirs: Dict[str, np.ndarray]) -> List[tuple]:
    """Pair each MMDetection detection with ours: same label, best box IoU (> 0.9), one to one.

    Pairs in the same position are taken first (the normal case: identical order), then the rest greedily.
    """
    pairs, used = [], set()
    iou = box_iou(theirs["boxes"], ours["boxes"]) if len(ours["boxes"]) and len(theirs["boxes"]) else None
    for index in range(len(theirs["labels"])):
        if (index < len(ours["labels"]) and ours["labels"][index] == theirs["labels"][index]
                and iou[index, index] > 0.9):
            pairs.append((index, index))
            used.add(index)
    paired_theirs = {pair[0] for pair in pairs}
    for index in range(len(theirs["labels"])):
        if index in paired_theirs or iou is None:
            continue
        candidates = [j for j in range(len(ours["labels"]))
                      if j not in used and ours["labels"][j] == theirs["labels"][index] and iou[index, j] > 0.9]
        if candidates:
            best = max(candidates, key=lambda j: iou[index, j])
            pairs.append((index, best))
            used.add(best)
    return pairs


def mask_iou(mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    union = np.logical_or(mask_a, mask_b).sum()
    return 1.0 if union == 0 else float(np.logical_and(mask_a, mask_b).sum() / union)


def compare_final(result: CaseResult) -> Dict[str, float]:
    """Agreement of our post-processed detections with MMDetection's final outputs."""
    golden = result.golden
    theirs = {"boxes": golden["boxes"], "scores": golden["scores"], "labels": golden["labels"],
              "masks": golden["masks"]}
    ours = {key: result.final[key].cpu().numpy() for key in ("boxes", "scores", "labels", "masks")}
    pairs = match_detections(ours, theirs)
    box_errors = [np.abs(ours["boxes"][j] - theirs["boxes"][i]).max() for i, j in pairs]
    score_errors = [abs(float(ours["scores"][j]) - float(theirs["scores"][i])) for i, j in pairs]
    mask_ious = [mask_iou(ours["masks"][j], theirs["masks"][i]) for i, j in pairs]
    identical = (
        ours["boxes"].shape == theirs["boxes"].shape
        and np.array_equal(ours["boxes"], theirs["boxes"])
        and np.array_equal(ours["scores"], theirs["scores"])
        and np.array_equal(ours["labels"], theirs["labels"])
        and ours["masks"].shape == theirs["masks"].shape
        and np.array_equal(ours["masks"], theirs["masks"])
    )
    differing_mask_pixels = (
        int(np.sum(ours["masks"] != theirs["masks"])) if ours["masks"].shape == theirs["masks"].shape else -1
    )
    paired_ours = {j for _, j in pairs}
    paired_theirs = {i for i, _ in pairs}
    return {
        "unmatched_mmdet_scores": [float(theirs["scores"][i]) for i in range(len(theirs["labels"]))
                                   if i not in paired_theirs],
        "unmatched_our_scores": [float(ours["scores"][j]) for j in range(len(ours["labels"])) if j not in paired_ours],
        "lowest_mmdet_score": float(theirs["scores"].min()) if len(theirs["scores"]) else 0.0,
        "lowest_our_score": float(ours["scores"].min()) if len(ours["scores"]) else 0.0,
        "mmdet_detections": len(theirs["labels"]),
        "our_detections": len(ours["labels"]),
        "matched": len(pairs),
        "max_box_error": float(max(box_errors, default=0.0)),
        "max_score_error": float(max(score_errors, default=0.0)),
        "median_mask_iou": float(np.median(mask_ious)) if mask_ious else 1.0,
        "min_mask_iou": float(min(mask_ious, default=1.0)),
        "differing_mask_pixels": differing_mask_pixels,
        "bit_identical": bool(identical),
    }


def compare_stages(result: CaseResult) -> Dict[str, object]:
    """Bit-level agreement of the intermediate stages (proposals, resized-frame detections, mask probabilities)."""
    golden, outputs = result.golden, result.outputs
    stages = {
        "proposal_boxes": (outputs.proposal_boxes[0], golden["rpn_boxes"]),
        "proposal_scores": (outputs.proposal_scores[0], golden["rpn_scores"]),
        "resized_boxes": (outputs.pred_boxes[0], golden["det_boxes_resized"]),
        "mask_probs": (outputs.mask_probs[0], golden["mask_probs"]),
    }
    report = {}
    for name, (ours, theirs) in stages.items():
        ours = ours.float().cpu().numpy()
        if ours.shape != theirs.shape:
            report[name] = f"shape {ours.shape} vs {theirs.shape}"
        else:
            report[name] = float(np.abs(ours - theirs).max()) if ours.size else 0.0
    return report


def bit_identical_recording(result: CaseResult) -> Tuple[Optional[str], Dict[str, tuple]]:
    """The recording of MMDetection's outputs (`golden_recordings`) that `result` equals bit for bit, every stage
    and the final detections, or None; and the per-recording comparison `{recording: (stages, final stats)}`.

    Each recording is MMDetection's own output on one machine's CPU kernels, so matching any of them bit for bit is
    matching MMDetection; which one a machine reproduces depends on the kernels oneDNN picks there.
    """
    variant, stem = result.golden["variant"], result.golden["image_stem"]
    comparisons = {}
    for recording in golden_recordings(variant, stem):
        candidate = result if recording == result.golden["recording"] else replace(
            result, golden=load_golden(variant, stem, recording))
        stages, final = compare_stages(candidate), compare_final(candidate)
        comparisons[recording] = (stages, final)
        if all(error == 0.0 for error in stages.values()) and final["bit_identical"]:
            return recording, comparisons
    return None, comparisons


# ------------------------------------------------------------------------------------------------ kept detections
KEEP_THRESHOLD_KINDS = ("ten", "half", "nothing")


def keep_threshold_value(golden: Dict[str, object], kind: str) -> float:
    """A `keep_score_threshold` for a golden case: "ten" keeps its 10 best detections (the 10th score; more where
    scores tie, all when it has fewer), "half" is the pipelines' default 0.5, "nothing" is above every score."""
    scores = np.sort(np.asarray(golden["scores"], dtype=np.float32))[::-1]
    if kind == "ten":
        return float(scores[min(9, len(scores) - 1)])
    if kind == "half":
        return 0.5
    if kind == "nothing":
        return float(np.nextafter(np.float32(scores.max()), np.float32(np.inf))) if len(scores) else 1.0
    raise ValueError(f"unknown threshold kind {kind!r}; choose from {KEEP_THRESHOLD_KINDS}")


def run_kept_case(model, processor, variant: str, image_stem: str, threshold: float) -> Dict[str, object]:
    """End to end from the image file with `keep_score_threshold=threshold` (processor -> model -> post-processing
    at the same threshold), compared bit for bit with each recording of MMDetection's full computation restricted
    to the detections with `score >= threshold`.

    Returns `{"threshold", "kept", "full", "recording"}`: how many detections were kept of how many, and the
    recording that every kept value (resized-frame boxes, scores, labels, 28x28 mask probabilities, final boxes
    and every mask pixel) equals bit for bit, or None.
    """
    inputs = processor(images=image_path(image_stem), return_tensors="pt", keep_score_threshold=threshold)
    with torch.inference_mode():
        outputs = model(**inputs)
    final = processor.post_process_instance_segmentation(outputs, threshold=threshold)[0]
    ours = {
        "det_boxes_resized": outputs.pred_boxes[0], "det_scores_resized": outputs.scores[0],
        "det_labels_resized": outputs.labels[0], "mask_probs": outputs.mask_probs[0],
        "boxes": final["boxes"], "scores": final["scores"], "labels": final["labels"], "masks": final["masks"],
    }
    ours = {name: value.cpu().numpy() for name, value in ours.items()}
    matched, full = None, None
    for recording in golden_recordings(variant, image_stem):
        golden = load_golden(variant, image_stem, recording)
        kept = np.asarray(golden["scores"], dtype=np.float32) >= np.float32(threshold)
        full = len(kept)
        if all(np.array_equal(ours[name], np.asarray(golden[name])[kept]) for name in ours):
            matched = recording
            break
    return {"threshold": threshold, "kept": len(ours["scores"]), "full": full, "recording": matched}


def keep_thresholds_main(variant: Optional[str], numerics: str, fuse: bool) -> None:
    print(f"keep_score_threshold: kept detections vs MMDetection's full computation, end to end, numerics={numerics}"
          f"{' + fused' if fuse else ''}, torch {torch.__version__}, kernels {active_kernels()}")
    print(f"{'variant':34} {'image':18} {'kind':8} {'threshold':>10} {'kept/all':>9} {'bit-identical to':>18}")
    failures = 0
    for name in sorted({name for name, _ in golden_cases(variant)}):
        model = build_model(name, numerics, fuse_batch_norms=fuse)
        processor = build_processor(model)
        for _, stem in golden_cases(name):
            golden = load_golden(name, stem)
            for kind in KEEP_THRESHOLD_KINDS:
                row = run_kept_case(model, processor, name, stem, keep_threshold_value(golden, kind))
                failures += row["recording"] is None
                print(f"{name:34} {stem:18} {kind:8} {row['threshold']:10.6f} {row['kept']:>4}/{row['full']:<4} "
                      f"{row['recording'] or 'NO':>18}", flush=True)
    print(f"{failures} case(s) not bit-identical")


NOISE_FLOOR_PATH = os.path.join(REPO_ROOT, "tests", "fixtures", "golden", "noise_floor.json")
NOISE_FLOOR_FIELDS = ("max_box_error", "max_score_error", "median_mask_iou", "min_mask_iou", "matched",
                      "mmdet_detections", "our_detections")


def measure_noise_floor(model, processor, variant: str, image_stem: str) -> Dict[str, float]:
    """Agreement with MMDetection of an exact-mode `model` run with PyTorch's native (non-oneDNN) CPU convolutions."""
    with torch.backends.mkldnn.flags(enabled=False):
        stats = compare_final(run_case(model, processor, variant, image_stem, end_to_end=True))
    return {field: stats[field] for field in NOISE_FLOOR_FIELDS}


def load_noise_floor() -> Dict[str, Dict[str, Dict[str, float]]]:
    """`{variant: {image_stem: stats}}` as written by `python tools/parity.py --noise-floor --write`."""
    with open(NOISE_FLOOR_PATH) as handle:
        return json.load(handle)["cases"]


def fast_mode_bounds(variant: str, factor: float = 2.0) -> Dict[str, float]:
    """Agreement bounds for the fast path on one variant's fixtures: the core issue's tolerances (box 0.01 px,
    score 1e-4, median mask IoU 0.999) or `factor` times the variant's noise floor, whichever is looser. Two
    implementations that each sit within the floor of the reference can be up to twice the floor apart from it
    when their rounding errors add up, hence the default factor 2."""
    floors = list(load_noise_floor()[variant].values())
    return {
        "max_box_error": max(0.01, factor * max(floor["max_box_error"] for floor in floors)),
        "max_score_error": max(1e-4, factor * max(floor["max_score_error"] for floor in floors)),
        "median_mask_iou": min(0.999, 1 - factor * max(1 - floor["median_mask_iou"] for floor in floors)),
    }


def noise_floor_main(variant: Optional[str], write: bool) -> None:
    print(f"noise floor: exact path with PyTorch's native convolutions (oneDNN off) vs MMDetection, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'variant':34} {'image':18} {'dets ours/mmdet/matched':>23} {'box err':>9} {'score err':>9} "
          f"{'mask IoU med/min':>17}")
    cases: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name in sorted({name for name, _ in golden_cases(variant)}):
        model = build_model(name, "exact")
        processor = build_processor(model)
        for _, stem in golden_cases(name):
            stats = measure_noise_floor(model, processor, name, stem)
            cases.setdefault(name, {})[stem] = stats
            print(f"{name:34} {stem:18} {stats['our_detections']:>7}/{stats['mmdet_detections']}/{stats['matched']:<8} "
                  f"{stats['max_box_error']:9.2e} {stats['max_score_error']:9.2e} "
                  f"{stats['median_mask_iou']:8.5f}/{stats['min_mask_iou']:.5f}", flush=True)
    if write:
        document = {
            "description": "Agreement with MMDetection 3.3.0 of the exact path run with PyTorch's native CPU "
                           "convolutions (torch.backends.mkldnn disabled): the spread of valid float32 "
                           "implementations on these synthetic fixtures. Written by "
                           "`python tools/parity.py --noise-floor --write`.",
            "torch": torch.__version__,
            "cases": cases,
        }
        with open(NOISE_FLOOR_PATH, "w") as handle:
            json.dump(document, handle, indent=1, sort_keys=True)
            handle.write("\n")
        print(f"wrote {NOISE_FLOOR_PATH}")


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numerics", choices=["exact", "fast", "both"], default="both")
    parser.add_argument("--fuse-batch-norms", action="store_true", help="fast mode with batch norms folded")
    parser.add_argument("--variant", default=None)
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--noise-floor", action="store_true",
                        help="measure the exact path with PyTorch's native convolutions against MMDetection")
    parser.add_argument("--write", action="store_true", help="with --noise-floor: store it for the tests")
    parser.add_argument("--keep-thresholds", action="store_true",
                        help="check keep_score_threshold: every case at 3 thresholds against MMDetection's full run")
    args = parser.parse_args(argv)
    if args.noise_floor:
        noise_floor_main(args.variant, args.write)
        return
    if args.keep_thresholds:
        numerics = "exact" if args.numerics == "both" else args.numerics
        keep_thresholds_main(args.variant, numerics, args.fuse_batch_norms and numerics == "fast")
        return
    dtype = getattr(torch, args.dtype)
    modes = ["exact", "fast"] if args.numerics == "both" else [args.numerics]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, dtype {args.dtype}; errors against the "
          "primary recording; bit-identical: the recording matched bit for bit, if any")
    header = (f"{'numerics':10} {'variant':34} {'image':16} {'e2e':4} {'dets':>9} {'box err':>9} {'score err':>9} "
              f"{'mask IoU med/min':>17} {'bit-identical':>18}")
    print(header)
    variants = sorted({variant for variant, _ in golden_cases(args.variant)})
    for mode in modes:
        for variant in variants:
            fuse = args.fuse_batch_norms and mode == "fast"
            model = build_model(variant, "fast" if dtype != torch.float32 else mode, dtype, fuse)
            processor = build_processor(model)
            for _, stem in golden_cases(variant):
                for end_to_end in (False, True):
                    result = run_case(model, processor, variant, stem, end_to_end)
                    identical_to, comparisons = bit_identical_recording(result)
                    stats = comparisons["primary"][1]  # the primary recording is always compared first
                    identical_to = identical_to or "no"
                    label = mode + ("+fused" if fuse else "")
                    print(f"{label:10} {variant:34} {stem:16} {'yes' if end_to_end else 'no':4} "
                          f"{stats['matched']:>3}/{stats['mmdet_detections']:<3}/{stats['our_detections']:<3} "
                          f"{stats['max_box_error']:9.2e} {stats['max_score_error']:9.2e} "
                          f"{stats['median_mask_iou']:8.5f}/{stats['min_mask_iou']:.5f} "
                          f"{identical_to:>18}", flush=True)


if __name__ == "__main__":
    main()
