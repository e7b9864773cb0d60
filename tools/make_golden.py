# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Regenerate the parity fixtures with REAL MMDetection 3.3.0 (CPU).

One command regenerates every golden file (fixture images and the stored calibration are reused):

    /work/venv-mmdet-sys/bin/python tools/make_golden.py

The reference venv comes from ``bash tools/setup_mmdet_reference.sh /work/venv-mmdet-sys`` (it shares torch,
numpy and OpenCV with the test environment). Options:

    --images                 redraw tests/fixtures/images/* (procedural; pixels depend on numpy/PIL/OpenCV/libjpeg)
    --calibrate              redo the per-variant calibration (BN running stats, head biases/gains) before goldens
    --variants V [V ...]     only these synthetic variants (names in tools/synthetic_weights.VARIANTS)
    --images-only S [S ...]  only these image stems
    --no-golden              stop after images/calibration/preprocessed inputs
    --alternates             keep the stored goldens; where MMDetection gives other bits on this machine, store
                             them as golden/<variant>/<stem>@<machine>.npz (tests accept either recording)

What it writes (format in tests/fixtures/README.md):

    tests/fixtures/synthetic/<variant>_bn_stats.npz      calibration (BN stats + head biases/gains)
    tests/fixtures/preprocessed/<stem>.png / .json       resized BGR uint8 image after Resize + metadata + sha256
                                                         of DetDataPreprocessor's float32 input per normalisation
    tests/fixtures/golden/<variant>/<stem>.npz           outputs of inference_detector + RPN proposals,
                                                         resized-frame detections and 28x28 mask probabilities
    tests/fixtures/golden/manifest.json                  versions, state-dict sha256, per-case statistics

Models are built with mmdet's ``init_detector(config_file, checkpoint_file, device="cpu")`` from a synthetic
checkpoint written in MMDetection's layout, and run with ``inference_detector(model, image_path)`` (mmdet's own
file pipeline: cv2 decode, Resize, PackDetInputs, DetDataPreprocessor).

This file runs the jobs and writes the goldens and the manifest; the jobs live beside it:

    tools/golden_images.py       the procedural fixture images
    tools/mmdet_capture.py       MMDetection's model on a synthetic checkpoint, its captured intermediate results,
                                 the preprocessed inputs
    tools/calibrate_weights.py   the calibration of the synthetic weights
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

from tools.reference_kernels import active_kernels, pin_reference_kernels  # noqa: E402

if __name__ == "__main__":  # before torch loads: the goldens are made with the kernels the tests check them with
    pin_reference_kernels()

from tools import synthetic_weights as sw  # noqa: E402

from tools.calibrate_weights import calibrate  # noqa: E402
from tools.golden import FIXTURES_DIR as FIXTURES  # noqa: E402  (one definition of the fixture layout)
from tools.golden import GOLDEN_DIR, IMAGES_DIR, PREPROCESSED_DIR, inputs_sha256, sha256_file  # noqa: E402
from tools.golden import MANIFEST_PATH as MANIFEST  # noqa: E402
from tools.golden_images import image_files, make_images, stem_of  # noqa: E402
from tools.mmdet_capture import Capture, build_model, write_preprocessed  # noqa: E402

# images each variant is run on (None = all)
VARIANT_IMAGES: Dict[str, Optional[List[str]]] = {
    "mask-rcnn_r50_fpn_1x_coco": None,
    "mask-rcnn_r50-caffe_fpn_1x_coco": None,
    # X101 is ~2x slower on CPU: six images (all odd decode paths but the 16-bit/RGBA/palette ones)
    "mask-rcnn_x101-32x4d_fpn_1x_coco": ["photo_640x480", "portrait_427x640", "gray_500x375", "wide_2000x500",
                                         "exif_rot6_480x320", "tiny_97x61"],
    "mask-rcnn_r50_fpn_1x_coco-ties": ["photo_640x480", "portrait_427x640", "gray_500x375"],
}


def normalization_of(variant: str) -> str:
    """Zoo style of a variant's config ("pytorch", "caffe" or "c2"): its DetDataPreprocessor preset."""
    return sw.ZOO[sw.config_name_of(variant)].style


# ------------------------------------------------------------------------------------------------------------------
# Goldens
# ------------------------------------------------------------------------------------------------------------------

def roi_levels(boxes: np.ndarray) -> np.ndarray:
    """MMDetection's RoI level mapping (finest_scale 56, 4 levels), for statistics only."""
    import torch

    b = torch.from_numpy(boxes)
    scale = torch.sqrt((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))
    return torch.floor(torch.log2(scale / 56 + 1e-6)).clamp(min=0, max=3).long().numpy()


def run_golden(variant: str, workdir: str, files: List[str], preprocessed: Dict[str, dict],
               alternate: Optional[str] = None) -> Dict[str, dict]:
    """Run MMDetection on each file and store its outputs; per-case statistics for the manifest.

    With `alternate` (a machine's name, `machine_name()`), the primary goldens are left as they are: a case whose
    outputs equal the stored primary ones bit for bit is only reported, one that differs is stored as
    `<stem>@<alternate>.npz` and its statistics are returned for the manifest's `alternates` entry.
    """
    from mmdet.apis import inference_detector

    out_dir = os.path.join(GOLDEN_DIR, variant)
    os.makedirs(out_dir, exist_ok=True)
    model = build_model(variant, workdir)
    capture = Capture(model)
    preset = normalization_of(variant)
    stats = {}
    for file_name in files:
        stem = stem_of(file_name)
        capture.records.clear()
        start = time.perf_counter()
        result = inference_detector(model, os.path.join(IMAGES_DIR, file_name))
        elapsed = time.perf_counter() - start
        rec = capture.records
        pred = result.pred_instances
        inputs_sha = inputs_sha256(rec["inputs"])
        expected_sha = preprocessed[stem]["inputs"][preset]["sha256"]
        if inputs_sha != expected_sha:
            raise RuntimeError(f"{variant}/{stem}: model input sha256 differs from the stored {preset} preset")
        masks = pred.masks.numpy().astype(bool)
        boxes = pred.bboxes.numpy().astype(np.float32)
        scores = pred.scores.numpy().astype(np.float32)
        labels = pred.labels.numpy().astype(np.int64)
        det_boxes_resized = rec["det_boxes_resized"].numpy().astype(np.float32)
        meta = rec["metainfo"]
        arrays = {
            "boxes": boxes,
            "scores": scores,
            "labels": labels,
            "masks_packed": np.packbits(masks, axis=-1),
            "masks_shape": np.array(masks.shape, np.int64),
            "rpn_boxes": rec["rpn_boxes"].numpy().astype(np.float32)[:1000],
            "rpn_scores": rec["rpn_scores"].numpy().astype(np.float32)[:1000],
            "det_boxes_resized": det_boxes_resized,
            "det_scores_resized": rec["det_scores_resized"].numpy().astype(np.float32),
            "det_labels_resized": rec["det_labels_resized"].numpy().astype(np.int64),
            "mask_probs": rec["mask_probs"].numpy().astype(np.float32),
            "ori_shape": np.array(meta["ori_shape"], np.int64),
            "img_shape": np.array(meta["img_shape"], np.int64),
            "scale_factor": np.array(meta["scale_factor"], np.float64),
            "batch_input_shape": np.array(meta["batch_input_shape"], np.int64),
        }
        if alternate is not None:
            differing = differing_arrays(os.path.join(out_dir, stem + ".npz"), arrays)
            if not differing:
                print(f"  {variant}/{stem}: bit-identical to the stored golden", flush=True)
                continue
            print(f"  {variant}/{stem}: differs from the stored golden in {', '.join(differing)}: stored as "
                  f"{stem}@{alternate}.npz", flush=True)
            np.savez_compressed(os.path.join(out_dir, f"{stem}@{alternate}.npz"), **arrays)
        else:
            np.savez_compressed(os.path.join(out_dir, stem + ".npz"), **arrays)
        n = len(scores)
        probs = arrays["mask_probs"]
        straddle = float(np.mean([(p >= 0.5).any() and (p < 0.5).any() for p in probs])) if n else 0.0
        if n:
            x0, y0, x1, y1 = [np.clip(boxes[:, i], 0, None) for i in range(4)]
            box_area = np.maximum((x1 - x0) * (y1 - y0), 1e-6)
            fill = masks.reshape(n, -1).sum(1) / box_area
        else:
            fill = np.zeros(0)
        levels = np.bincount(roi_levels(det_boxes_resized), minlength=4).tolist() if n else [0, 0, 0, 0]
        stats[stem] = {
            "num_detections": n,
            "score_min": float(scores.min()) if n else None,
            "score_median": float(np.median(scores)) if n else None,
            "score_max": float(scores.max()) if n else None,
            "num_distinct_labels": int(len(np.unique(labels))),
            "num_proposals": int(len(arrays["rpn_scores"])),
            "num_rpn_score_ties": int(len(arrays["rpn_scores"]) - len(np.unique(arrays["rpn_scores"]))),
            "num_score_ties": int(n - len(np.unique(scores))),
            "mask_roi_levels": levels,
            "mask_probs_straddle_0.5_fraction": straddle,
            "mask_fill_of_box_median": float(np.median(fill)) if n else None,
            "empty_masks": int((masks.reshape(n, -1).sum(1) == 0).sum()) if n else 0,
            "inference_seconds": round(elapsed, 2),
        }
        print(f"  {variant}/{stem}: {n} dets, scores {stats[stem]['score_min']:.3f}..{stats[stem]['score_max']:.3f}"
              f", labels {stats[stem]['num_distinct_labels']}, levels {levels}, straddle {straddle:.2f}, "
              f"fill {stats[stem]['mask_fill_of_box_median']:.2f}, {elapsed:.1f}s", flush=True)
    return stats


def differing_arrays(stored_path: str, arrays: Dict[str, np.ndarray]) -> List[str]:
    """Names of the arrays that differ (shape, dtype or any bit) from those stored in `stored_path`."""
    with np.load(stored_path) as stored:
        return [name for name, array in arrays.items()
                if name not in stored.files or stored[name].dtype != array.dtype
                or stored[name].shape != array.shape or stored[name].tobytes() != array.tobytes()]


def machine_description() -> dict:
    """What decides MMDetection's float32 bits on this machine: CPU, its widest vector unit, torch and its kernels."""
    import torch

    with open("/proc/cpuinfo") as handle:
        cpuinfo = handle.read()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or platform.machine())
    flags = set(next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), []))
    widest = next((isa for isa in ("avx512f", "avx2", "avx") if isa in flags), "baseline")
    onednn = next((line.strip(" -") for line in torch.__config__.show().splitlines()
                   if "oneDNN" in line or "MKL-DNN" in line), "unknown")
    return {"cpu": model, "widest_vector_isa": widest, "logical_cpus": os.cpu_count(), "torch": torch.__version__,
            "onednn": onednn, "kernels": active_kernels(), "recorded": time.strftime("%Y-%m-%d")}


def machine_name(description: dict) -> str:
    """A short file-name-safe name of a machine description: widest ISA + 8 hex digits of its sha256."""
    stable = {key: value for key, value in description.items() if key != "recorded"}
    digest = hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()[:8]
    return f"{description['widest_vector_isa']}-{digest}"


def versions() -> dict:
    import cv2
    import mmcv
    import mmdet
    import mmengine
    import PIL
    import torch

    return {"mmdet": mmdet.__version__, "mmcv": mmcv.__version__, "mmengine": mmengine.__version__,
            "torch": torch.__version__, "numpy": np.__version__, "cv2": cv2.__version__, "pillow": PIL.__version__,
            "python": platform.python_version(), "torch_num_threads": torch.get_num_threads(),
            "cpu_kernels": active_kernels()}


README = os.path.join(FIXTURES, "README.md")
STATS_MARKER = "## Statistics (generated by tools/make_golden.py)"


def update_readme_stats(manifest: dict) -> None:
    """Replace the statistics section at the end of tests/fixtures/README.md with the manifest's numbers."""
    lines = [STATS_MARKER, "",
             "Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(manifest.get("versions", {}).items())), "",
             "| variant | image | ori HxW | resized HxW | dets | scores min/median/max | labels | RoI levels 0-3 |"
             " straddle 0.5 | median mask fill | RPN ties / score ties | mmdet s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for variant, entry in sorted(manifest.get("variants", {}).items()):
        for stem, st in sorted(entry.get("cases", {}).items()):
            image = manifest["images"].get(stem, {})
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(
                f"| {variant} | {stem} | {'x'.join(map(str, image.get('ori_shape', [])))} | "
                f"{'x'.join(map(str, image.get('img_shape', [])))} | {st['num_detections']} | "
                f"{fmt(st['score_min'])} / {fmt(st['score_median'])} / {fmt(st['score_max'])} | "
                f"{st['num_distinct_labels']} | {st['mask_roi_levels']} | {st['mask_probs_straddle_0.5_fraction']:.2f} | "
                f"{fmt(st['mask_fill_of_box_median'])} | {st['num_rpn_score_ties']} / {st['num_score_ties']} | "
                f"{st['inference_seconds']} |")
    with open(README) as handle:
        text = handle.read()
    head = text.split(STATS_MARKER)[0].rstrip("\n")
    with open(README, "w") as handle:
        handle.write(head + "\n\n" + "\n".join(lines) + "\n")


def load_manifest() -> dict:
    if os.path.exists(MANIFEST):
        with open(MANIFEST) as handle:
            return json.load(handle)
    return {}


def record_alternates(manifest: dict, variants: List[str], files: List[str]) -> None:
    """Run MMDetection on this machine and store its outputs beside the primary goldens where they differ."""
    description = machine_description()
    name = machine_name(description)
    print(f"[alternates] this machine: {name} {json.dumps(description)}", flush=True)
    preprocessed = {}
    for file_name in files:
        with open(os.path.join(PREPROCESSED_DIR, stem_of(file_name) + ".json")) as handle:
            preprocessed[stem_of(file_name)] = json.load(handle)
    with tempfile.TemporaryDirectory() as workdir:
        for variant in variants:
            entry = manifest["variants"][variant]
            if entry["state_dict_sha256"] != sw.state_dict_sha256(sw.make_synthetic_state_dict(variant)):
                raise RuntimeError(f"{variant}: the synthetic weights no longer match the manifest; regenerate the "
                                   "primary goldens first")
            wanted = VARIANT_IMAGES.get(variant)
            variant_files = [f for f in files if (wanted is None or stem_of(f) in wanted)
                             and stem_of(f) in entry.get("cases", {})]
            print(f"[alternates] {variant}", flush=True)
            for stem, stats in run_golden(variant, workdir, variant_files, preprocessed, alternate=name).items():
                entry["cases"][stem].setdefault("alternates", {})[name] = {"machine": description, "stats": stats}
    with open(MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", action="store_true", help="redraw the fixture images")
    parser.add_argument("--calibrate", action="store_true", help="redo the calibration of the selected variants")
    parser.add_argument("--variants", nargs="+", default=list(VARIANT_IMAGES))
    parser.add_argument("--images-only", nargs="+", default=None, metavar="STEM")
    parser.add_argument("--no-golden", action="store_true")
    parser.add_argument("--alternates", action="store_true",
                        help="keep the stored goldens; store this machine's outputs where they differ (see "
                             "tools/golden.py golden_recordings)")
    args = parser.parse_args(argv)

    manifest = load_manifest()
    if args.alternates:
        files = [f for f in image_files() if args.images_only is None or stem_of(f) in args.images_only]
        record_alternates(manifest, args.variants, files)
        return
    if args.images or not os.path.isdir(IMAGES_DIR):
        manifest["images_described"] = make_images()
    files = image_files()
    if args.images_only:
        files = [f for f in files if stem_of(f) in args.images_only]

    manifest.setdefault("images", {})
    preprocessed = {}
    for file_name in image_files():
        stem = stem_of(file_name)
        json_path = os.path.join(PREPROCESSED_DIR, stem + ".json")
        if file_name in files or not os.path.exists(json_path):
            preprocessed[stem] = write_preprocessed(file_name)
        else:
            with open(json_path) as handle:
                preprocessed[stem] = json.load(handle)
        manifest["images"][stem] = {"file": file_name, "sha256": sha256_file(os.path.join(IMAGES_DIR, file_name)),
                                    "ori_shape": preprocessed[stem]["ori_shape"],
                                    "img_shape": preprocessed[stem]["img_shape"]}

    manifest["versions"] = versions()
    manifest["generator"] = "tools/make_golden.py"
    manifest.setdefault("variants", {})
    with tempfile.TemporaryDirectory() as workdir:
        for variant in args.variants:
            wanted = VARIANT_IMAGES.get(variant)
            variant_files = [f for f in files if wanted is None or stem_of(f) in wanted]
            if args.calibrate:  # calibrated on the images the variant's goldens use
                calibrate(variant, workdir, [f for f in image_files() if wanted is None or stem_of(f) in wanted])
            state_dict = sw.make_synthetic_state_dict(variant)
            entry = manifest["variants"].setdefault(variant, {})
            entry.update({
                "config_name": sw.config_name_of(variant),
                "mmdet_config_file": f"mmdet/.mim/configs/mask_rcnn/{sw.config_name_of(variant)}.py",
                "normalization": normalization_of(variant),
                "seed": 0,
                "state_dict_sha256": sw.state_dict_sha256(state_dict),
                "calibration_file": os.path.relpath(sw.calibration_path(variant), REPO_ROOT),
                "calibration_sha256": sha256_file(sw.calibration_path(variant)),
            })
            if args.no_golden:
                continue
            print(f"[golden] {variant}", flush=True)
            entry.setdefault("cases", {}).update(run_golden(variant, workdir, variant_files, preprocessed))
            with open(MANIFEST, "w") as handle:
                json.dump(manifest, handle, indent=1, sort_keys=True)
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    with open(MANIFEST, "w") as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    update_readme_stats(manifest)


if __name__ == "__main__":
    main()
