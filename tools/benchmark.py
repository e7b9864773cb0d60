# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""End-to-end Mask R-CNN latency, throughput and memory: this model vs torchvision vs MMDetection, one run.

    python tools/benchmark.py [--images PATH ...] [--runs 3] [--settings ten,0.5] [--batch-sizes-cpu 1,2,4]

* this model: synthetic R50-FPN weights (tests/fixtures) that yield ~100 real detections per photo: the default
  (float32 results identical to MMDetection) and `fuse_batch_norms=True` (plus bfloat16 with --bf16); the caller's
  threshold reaches the model (`keep_score_threshold`), so masks are computed only for the detections kept;
* torchvision `maskrcnn_resnet50_fpn` (frozen BN as with pretrained weights) carrying the SAME synthetic
  weights (classes moved to torchvision's background-first 91-class layout), 1000 proposals, 100 detections, and
  masks for all of them (as it always computes them);
* MMDetection 3.3.0 (`inference_detector`, masks for all detections) when importable — run this script with the
  reference venv's python (tools/setup_mmdet_reference.sh, plus `pip install transformers`) to include it.

Latency: end to end (preprocess, model, post-process at the caller's threshold) on real photos (default:
samples/ and tests/fixtures/images, resized to the 1333x800 scale by each framework), for each caller setting:
"ten" keeps about ten detections per photo (with synthetic weights the scores are not a trained model's, so the
threshold is each photo's 10th best score in our default run), a number (e.g. 0.5) is that threshold, "all" keeps
every detection. Runs are interleaved (A B C A B C ...) after a warm-up; per photo the median over runs, then the
mean over photos, with ratios against each peer. The peers compute every mask whatever the threshold, so one run of
theirs serves every setting. Throughput: images/s over batches of 1, 2, 4 mixed-size photos (zero-padded together
by each framework), ours at 0.5 against torchvision. Peak memory is the peak resident-set growth over a loaded
model, sampled every 2 ms, each contender in a fresh subprocess. `--paste-memory` adds the post-processing memory
check on a 4000x3000 canvas.
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
import threading
import time
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from PIL import Image

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _path in (REPO_ROOT, os.path.join(REPO_ROOT, "tools")):
    if _path not in sys.path:
        sys.path.insert(0, _path)

VARIANT = "mask-rcnn_r50_fpn_1x_coco"
# The parity fixtures' synthetic R50 weights give 57 detections on the benchmark photo; lowering the classifier's
# background bias by 2 raises every class score and gives the full 100 detections, so the mask branch and the
# mask pasting do the work of a busy real image. All contenders carry these same weights.
BACKGROUND_BIAS_SHIFT = 2.0
DEFAULT_IMAGE = os.path.join(REPO_ROOT, "tests", "fixtures", "images", "portrait_427x640.png")


# ------------------------------------------------------------------------------------------------ measurement
class PeakMemorySampler:
    """Context manager: peak growth of this process' resident memory (bytes) while the block runs."""

    def __init__(self, interval_s: float = 0.002) -> None:
        self.interval_s = interval_s
        self.peak_growth = 0

    @staticmethod
    def resident_bytes() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_growth = max(self.peak_growth, self.resident_bytes() - self.baseline)
            time.sleep(self.interval_s)

    def __enter__(self) -> "PeakMemorySampler":
        self.baseline = self.resident_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_growth = max(self.peak_growth, self.resident_bytes() - self.baseline)


def timed(function: Callable, *args):
    start = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - start


# ------------------------------------------------------------------------------------------------ contenders
def benchmark_state_dict() -> Dict[str, torch.Tensor]:
    """The synthetic R50 weights (MMDetection key names) with the background bias lowered (see above)."""
    from synthetic_weights import make_synthetic_state_dict

    state_dict = dict(make_synthetic_state_dict(VARIANT))
    class_bias = state_dict["roi_head.bbox_head.fc_cls.bias"].clone()
    class_bias[-1] -= BACKGROUND_BIAS_SHIFT  # background is the last class in MMDetection's layout
    state_dict["roi_head.bbox_head.fc_cls.bias"] = class_bias
    return state_dict


def build_our_model(numerics: str = "fast", dtype: torch.dtype = torch.float32, fuse: bool = False,
                    device: str = "cpu"):
    """Our model with the benchmark weights, and its image processor."""
    from parity import build_model, build_processor

    model = build_model(VARIANT, numerics, dtype, fuse, mmdet_state_dict=benchmark_state_dict()).to(device)
    return model, build_processor(model)


class OurModel:
    """This repository's model + image processor; the caller's threshold reaches the model."""

    computes_masks_for_all = False

    def __init__(self, numerics: str = "fast", dtype: torch.dtype = torch.float32, fuse: bool = False) -> None:
        self.name = f"ours ({numerics}{'+fused BN' if fuse else ''}, {str(dtype).replace('torch.', '')})"
        self.model, self.processor = build_our_model(numerics, dtype, fuse)

    def preprocess(self, image, threshold: Optional[float] = None):
        return self.processor(images=image, return_tensors="pt", keep_score_threshold=threshold)

    def forward(self, inputs):
        with torch.inference_mode():
            return self.model(**inputs)

    def postprocess(self, outputs, threshold: Optional[float] = None):
        return self.processor.post_process_instance_segmentation(outputs, threshold=threshold or 0.0)

    @staticmethod
    def scores(results) -> List[torch.Tensor]:
        return [result["scores"] for result in results]


def torchvision_state_dict_from_synthetic() -> Dict[str, torch.Tensor]:
    """The benchmark weights renamed to torchvision's Mask R-CNN, classes moved to 91 background-first."""
    source = benchmark_state_dict()
    renamed: Dict[str, torch.Tensor] = {}
    for key, value in source.items():
        if key.startswith("backbone."):
            renamed["backbone.body." + key[len("backbone."):]] = value
    for level in range(4):
        for ours, theirs in (("lateral_convs", "inner_blocks"), ("fpn_convs", "layer_blocks")):
            for part in ("weight", "bias"):
                renamed[f"backbone.fpn.{theirs}.{level}.0.{part}"] = source[f"neck.{ours}.{level}.conv.{part}"]
    for part in ("weight", "bias"):
        renamed[f"rpn.head.conv.0.0.{part}"] = source[f"rpn_head.rpn_conv.{part}"]
        renamed[f"rpn.head.cls_logits.{part}"] = source[f"rpn_head.rpn_cls.{part}"]
        renamed[f"rpn.head.bbox_pred.{part}"] = source[f"rpn_head.rpn_reg.{part}"]
        renamed[f"roi_heads.box_head.fc6.{part}"] = source[f"roi_head.bbox_head.shared_fcs.0.{part}"]
        renamed[f"roi_heads.box_head.fc7.{part}"] = source[f"roi_head.bbox_head.shared_fcs.1.{part}"]
        for index in range(4):
            renamed[f"roi_heads.mask_head.{index}.0.{part}"] = source[f"roi_head.mask_head.convs.{index}.conv.{part}"]
        renamed[f"roi_heads.mask_predictor.conv5_mask.{part}"] = source[f"roi_head.mask_head.upsample.{part}"]
    # classes: ours 0..79 + background last -> torchvision background 0, classes 1..80, 10 unused slots
    cls_weight, cls_bias = source["roi_head.bbox_head.fc_cls.weight"], source["roi_head.bbox_head.fc_cls.bias"]
    new_weight = torch.zeros(91, cls_weight.shape[1])
    new_bias = torch.full((91,), -1e4)
    new_weight[0], new_bias[0] = cls_weight[80], cls_bias[80]
    new_weight[1:81], new_bias[1:81] = cls_weight[:80], cls_bias[:80]
    renamed["roi_heads.box_predictor.cls_score.weight"], renamed["roi_heads.box_predictor.cls_score.bias"] = (
        new_weight, new_bias)
    # torchvision divides deltas by (10, 10, 5, 5); MMDetection multiplies by (0.1, 0.1, 0.2, 0.2): same scale
    reg_weight, reg_bias = source["roi_head.bbox_head.fc_reg.weight"], source["roi_head.bbox_head.fc_reg.bias"]
    new_reg_weight = torch.zeros(91 * 4, reg_weight.shape[1])
    new_reg_bias = torch.zeros(91 * 4)
    new_reg_weight[4:324], new_reg_bias[4:324] = reg_weight, reg_bias
    renamed["roi_heads.box_predictor.bbox_pred.weight"] = new_reg_weight
    renamed["roi_heads.box_predictor.bbox_pred.bias"] = new_reg_bias
    mask_weight = source["roi_head.mask_head.conv_logits.weight"]
    mask_bias = source["roi_head.mask_head.conv_logits.bias"]
    new_mask_weight = torch.zeros(91, *mask_weight.shape[1:])
    new_mask_bias = torch.zeros(91)
    new_mask_weight[1:81], new_mask_bias[1:81] = mask_weight, mask_bias
    renamed["roi_heads.mask_predictor.mask_fcn_logits.weight"] = new_mask_weight
    renamed["roi_heads.mask_predictor.mask_fcn_logits.bias"] = new_mask_bias
    return {key: value for key, value in renamed.items() if not key.endswith("num_batches_tracked")}


class TorchvisionModel:
    """torchvision's maskrcnn_resnet50_fpn with frozen BN (as with pretrained weights) and our synthetic weights."""

    name = "torchvision maskrcnn_resnet50_fpn"

    def __init__(self) -> None:
        from torchvision.models import resnet50
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
        from torchvision.ops.misc import FrozenBatchNorm2d

        backbone = _resnet_fpn_extractor(resnet50(weights=None, norm_layer=FrozenBatchNorm2d), 3)
        self.model = MaskRCNN(backbone, num_classes=91, min_size=800, max_size=1333, rpn_pre_nms_top_n_test=1000,
                              rpn_post_nms_top_n_test=1000, box_score_thresh=0.05, box_nms_thresh=0.5,
                              box_detections_per_img=100).eval()
        missing, unexpected = self.model.load_state_dict(torchvision_state_dict_from_synthetic(), strict=False)
        if unexpected or missing:
            raise RuntimeError(f"torchvision weight mapping is incomplete: missing {missing}, unexpected {unexpected}")

    computes_masks_for_all = True

    def preprocess(self, images, threshold: Optional[float] = None):
        import torchvision.transforms.functional as TF

        batch = images if isinstance(images, list) else [images]
        tensors = [TF.pil_to_tensor(image.convert("RGB")).float().div_(255) for image in batch]
        with torch.inference_mode():
            transformed, _ = self.model.transform(tensors)
        return {"images": transformed, "original_sizes": [tuple(tensor.shape[-2:]) for tensor in tensors]}

    def forward(self, inputs):
        model = self.model
        with torch.inference_mode():
            images = inputs["images"]
            features = model.backbone(images.tensors)
            proposals, _ = model.rpn(images, features)
            detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        return {"detections": detections, "image_sizes": images.image_sizes, "original_sizes": inputs["original_sizes"]}

    def postprocess(self, outputs, threshold: Optional[float] = None):
        """torchvision pastes every detection's mask; the caller then keeps those with score >= threshold."""
        with torch.inference_mode():
            results = self.model.transform.postprocess(
                outputs["detections"], outputs["image_sizes"], outputs["original_sizes"])
        for result in results:
            result["masks"] = result["masks"][:, 0] >= 0.5
            if threshold is not None:
                keep = result["scores"] >= threshold
                for key in ("boxes", "scores", "labels", "masks"):
                    result[key] = result[key][keep]
        return results

    @staticmethod
    def scores(results) -> List[torch.Tensor]:
        return [result["scores"] for result in results]


class MMDetectionModel:
    """MMDetection 3.3.0's inference_detector on the same synthetic checkpoint (needs the reference venv)."""

    name = "MMDetection 3.3.0"

    def __init__(self) -> None:
        from mmdet.apis import init_detector  # noqa: F401  (import error = not available)
        from mmengine.dataset import Compose, pseudo_collate
        from mmdet_capture import mmdet_config_file
        from synthetic_weights import make_synthetic_checkpoint

        self._compose, self._collate = Compose, pseudo_collate
        self._workdir = tempfile.mkdtemp(prefix="mmdet-bench-")
        checkpoint = os.path.join(self._workdir, "synthetic.pth")
        checkpoint_dict = make_synthetic_checkpoint(VARIANT)
        checkpoint_dict["state_dict"] = benchmark_state_dict()
        torch.save(checkpoint_dict, checkpoint)
        from mmdet.apis import init_detector

        self.model = init_detector(mmdet_config_file(VARIANT), checkpoint, device="cpu")
        pipeline_config = self.model.cfg.test_dataloader.dataset.pipeline.copy()
        pipeline_config[0] = dict(type="mmdet.LoadImageFromNDArray")
        self.pipeline = Compose(pipeline_config)

    computes_masks_for_all = True

    def preprocess(self, image: Image.Image, threshold: Optional[float] = None):
        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
        data = self._collate([self.pipeline(dict(img=bgr, img_id=0))])
        with torch.no_grad():
            return self.model.data_preprocessor(data, False)

    def forward(self, inputs):
        with torch.no_grad():  # MMDetection's predict includes box rescaling and mask pasting
            return self.model(**inputs, mode="predict")

    def postprocess(self, outputs, threshold: Optional[float] = None):
        instances = outputs[0].pred_instances
        return [instances[instances.scores >= threshold] if threshold is not None else instances]

    @staticmethod
    def scores(results) -> List[torch.Tensor]:
        return [result.scores for result in results]


def make_contenders(include_bf16: bool, peers: List[str]) -> List[object]:
    contenders: List[object] = [OurModel("fast"), OurModel("fast", fuse=True)]
    if include_bf16:
        contenders.append(OurModel("fast", torch.bfloat16, fuse=True))
    if "torchvision" in peers:
        contenders.append(TorchvisionModel())
    if "mmdet" in peers:
        try:
            contenders.append(MMDetectionModel())
        except ImportError as error:
            print(f"MMDetection not importable here ({error}); run with the reference venv to include it.")
    return contenders


# ------------------------------------------------------------------------------------------------ runs
def run_once(contender, image, threshold: Optional[float] = None) -> Dict[str, object]:
    """One end-to-end pass; `threshold` is the caller's (None: keep everything)."""
    inputs, preprocess_s = timed(contender.preprocess, image, threshold)
    outputs, model_s = timed(contender.forward, inputs)
    results, postprocess_s = timed(contender.postprocess, outputs, threshold)
    return {"preprocess": preprocess_s, "model": model_s, "postprocess": postprocess_s,
            "total": preprocess_s + model_s + postprocess_s, "scores": contender.scores(results)}


def setting_thresholds(setting: str, reference_scores: torch.Tensor) -> Optional[float]:
    """The caller's threshold for one photo: "ten" -> its 10th best score (all when fewer), "all" -> None, else the
    number given."""
    if setting == "all":
        return None
    if setting == "ten":
        ranked = reference_scores.sort(descending=True).values
        return float(ranked[min(9, ranked.numel() - 1)]) if ranked.numel() else 0.0
    return float(setting)


def latency_table(contenders: List[object], images: Dict[str, Image.Image], settings: List[str], runs: int,
                  warmup: int) -> Dict[str, Dict[str, dict]]:
    """`{setting: {contender name: {preprocess, model, postprocess, total, detections}}}`: per photo the median of
    `runs` interleaved runs, then the mean over photos (seconds per photo; detections kept per photo)."""
    reference = contenders[0]  # our default: it defines the "ten" thresholds
    thresholds = {name: {setting: setting_thresholds(setting, run_once(reference, image)["scores"][0])
                         for setting in settings} for name, image in images.items()}
    first_image = next(iter(images.values()))
    for contender in contenders:
        for _ in range(warmup):
            run_once(contender, first_image)
    samples: Dict[str, Dict[str, Dict[str, List[dict]]]] = {
        setting: {contender.name: {name: [] for name in images} for contender in contenders} for setting in settings}
    for _ in range(runs):  # interleaved, so drifting machine load hits every contender alike
        for image_name, image in images.items():
            for contender in contenders:
                if contender.computes_masks_for_all:  # the threshold changes nothing in its computation
                    row = run_once(contender, image)
                    for setting in settings:
                        threshold = thresholds[image_name][setting]
                        kept = sum(int((scores >= threshold).sum()) if threshold is not None else scores.numel()
                                   for scores in row["scores"])
                        samples[setting][contender.name][image_name].append(dict(row, detections=kept))
                    continue
                for setting in settings:
                    row = run_once(contender, image, thresholds[image_name][setting])
                    kept = sum(scores.numel() for scores in row["scores"])
                    samples[setting][contender.name][image_name].append(dict(row, detections=kept))
    table: Dict[str, Dict[str, dict]] = {}
    keys = ("preprocess", "model", "postprocess", "total", "detections")
    for setting, per_contender in samples.items():
        table[setting] = {}
        for contender_name, per_image in per_contender.items():
            medians = [{key: statistics.median(run[key] for run in image_runs) for key in keys}
                       for image_runs in per_image.values()]
            table[setting][contender_name] = {key: statistics.mean(median[key] for median in medians)
                                              for key in keys}
    return table


def print_latency_table(table: Dict[str, Dict[str, dict]]) -> None:
    for setting, rows in table.items():
        label = {"ten": "keeps ~10 detections per photo (threshold = its 10th best score)",
                 "all": "keeps every detection"}.get(setting, f"threshold {setting}")
        print(f"\ncaller {label}; seconds per photo (mean over photos of the median over runs)")
        peers = {name: row["total"] for name, row in rows.items() if not name.startswith("ours")}
        header = f"{'contender':36} {'preproc s':>9} {'model s':>8} {'postproc s':>10} {'total s':>8} {'dets':>6}"
        header += "".join(f" {'/ ' + name.split()[0]:>13}" for name in peers)
        print(header)
        for name, row in rows.items():
            line = (f"{name:36} {row['preprocess']:9.3f} {row['model']:8.3f} {row['postprocess']:10.3f} "
                    f"{row['total']:8.3f} {row['detections']:6.1f}")
            if name.startswith("ours"):  # ratio of this row's total to each peer's: < 1 means faster
                line += "".join(f" {row['total'] / total:13.2f}" for total in peers.values())
            print(line)
        ours = [name for name in rows if name.startswith("ours")]
        for index, name in enumerate(ours):  # each of our rows against each of our float32 rows before it
            for baseline in ours[:index]:
                if baseline.endswith("float32)"):
                    print(f"{name} / {baseline}: {rows[name]['total'] / rows[baseline]['total']:.2f}")


def throughput_table(contenders: List[object], images: List[Image.Image], batch_sizes: List[int], runs: int,
                     threshold: float) -> Dict[int, Dict[str, float]]:
    """Images/s over all `images` in consecutive batches of each size (mixed sizes, padded together), median of
    `runs` interleaved runs; ours with `threshold` as keep_score_threshold, peers computing every mask."""
    def process_all(contender, batch_size: int) -> float:
        start = time.perf_counter()
        for first in range(0, len(images), batch_size):
            batch = images[first:first + batch_size]
            inputs = contender.preprocess(batch, threshold)
            contender.postprocess(contender.forward(inputs), threshold)
        return len(images) / (time.perf_counter() - start)

    for contender in contenders:  # warm-up: lazily built caches and kernels exist before measuring
        contender.postprocess(contender.forward(contender.preprocess(images[:1], threshold)), threshold)
    rates: Dict[int, Dict[str, List[float]]] = {size: {c.name: [] for c in contenders} for size in batch_sizes}
    for _ in range(runs):
        for batch_size in batch_sizes:
            for contender in contenders:
                rates[batch_size][contender.name].append(process_all(contender, batch_size))
    return {size: {name: statistics.median(values) for name, values in per.items()} for size, per in rates.items()}


def print_throughput_table(table: Dict[int, Dict[str, float]], images: List[Image.Image], threshold: float) -> None:
    sizes = ", ".join(f"{image.size[0]}x{image.size[1]}" for image in images)
    print(f"\nthroughput, images/s over {len(images)} mixed-size photos ({sizes}) in batches; ours with "
          f"keep_score_threshold={threshold}, torchvision computing every mask")
    names = list(next(iter(table.values())))
    peer = next((name for name in names if not name.startswith("ours")), None)
    ratio_labels = ["our time / torchvision, " + ("fused" if "fused" in name else "default")
                    for name in names if peer and name.startswith("ours")]
    print(f"{'batch':>5} " + " ".join(f"{name:>36}" for name in names) + "".join(f" {label:>36}" for label in ratio_labels))
    for size, row in table.items():
        line = f"{size:5d} " + " ".join(f"{row[name]:36.4g}" for name in names)  # 4 digits even when slow
        if peer:  # time ratio = peer's rate / ours: < 1 means we are faster
            line += "".join(f" {row[peer] / row[name]:36.2f}" for name in names if name.startswith("ours"))
        print(line)


def memory_probe(name: str, image_path: str) -> int:
    """Peak memory growth of one end-to-end inference, measured in a fresh subprocess."""
    command = [sys.executable, os.path.abspath(__file__), "--memory-probe", name, "--image", image_path,
               "--threads", str(torch.get_num_threads())]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(json.loads(completed.stdout.strip().splitlines()[-1])["peak_growth"])


def _probe(name: str, image_path: str) -> None:
    contender = {
        "ours-fast": lambda: OurModel("fast"),
        "ours-fused": lambda: OurModel("fast", fuse=True),
        "ours-bf16": lambda: OurModel("fast", torch.bfloat16, fuse=True),
        "torchvision": TorchvisionModel,
        "mmdet": MMDetectionModel,
    }[name]()
    image = Image.open(image_path)
    image.load()
    run_once(contender, image)  # warm-up: allocator pools and lazily built caches exist before measuring
    with PeakMemorySampler() as sampler:
        run_once(contender, image)
    print(json.dumps({"peak_growth": sampler.peak_growth}))


def paste_memory_check() -> None:
    """Post-processing of 100 detections on a 4000x3000 image: peak growth beyond the N x H x W bool result."""
    model, processor = build_our_model("fast")
    image = Image.open(DEFAULT_IMAGE).convert("RGB").resize((3000, 4000))
    inputs = processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        outputs = model(**inputs)
    count = int(outputs.scores[0].numel())
    with PeakMemorySampler() as sampler:
        result = processor.post_process_instance_segmentation(outputs, threshold=0.0)[0]
    result_bytes = result["masks"].numel() * result["masks"].element_size()
    extra = sampler.peak_growth - result_bytes
    print(f"\npost-processing {count} detections on a 3000x4000 image: peak growth {sampler.peak_growth / 2**20:.0f} MiB"
          f" = result {result_bytes / 2**20:.0f} MiB (bool N x H x W) + {extra / 2**20:.0f} MiB working memory")
    del result
    start = time.perf_counter()
    with PeakMemorySampler() as sampler:
        encoded = processor.post_process_instance_segmentation(outputs, threshold=0.0, return_rle=True)[0]
    seconds = time.perf_counter() - start
    rle_bytes = sum(len(rle["counts"]) for rle in encoded["rle_masks"])
    print(f"the same with return_rle=True: peak growth {sampler.peak_growth / 2**20:.0f} MiB, {seconds:.2f} s, "
          f"{rle_bytes / 2**10:.0f} KiB of RLE counts")


# ------------------------------------------------------------------------------------------------ accelerator
PRECISIONS = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def accelerator_table(device: str, image_path: str, batch_sizes: str, precisions: str, runs: int,
                      warmup: int) -> None:
    """Images/s and peak device memory of our model (fast numerics, fused batch norms) for each batch size and
    precision; reduced precision = the model loaded in that dtype (box decoding, NMS and pasting stay float32)."""
    sizes = [int(size) for size in batch_sizes.split(",")]
    names = [name.strip() for name in precisions.split(",")]
    unknown = [name for name in names if name not in PRECISIONS]
    if unknown:
        raise SystemExit(f"unknown precision(s) {unknown}; choose from {sorted(PRECISIONS)}")
    image = Image.open(image_path).convert("RGB")
    on_cuda = device.startswith("cuda")
    label = torch.cuda.get_device_name(device) if on_cuda else f"{device} ({platform.processor() or platform.machine()})"
    print(f"\nthroughput on {label}: images/s (end to end: preprocess, forward, post-process), "
          f"median of {runs} runs after {warmup} warm-up")
    print(f"{'precision':10} {'batch':>5} {'images/s':>9} {'s/batch':>8} {'peak device MiB':>16} {'dets/img':>8}")
    for name in names:
        if on_cuda:
            torch.backends.cuda.matmul.allow_tf32 = name == "tf32"
            torch.backends.cudnn.allow_tf32 = name == "tf32"
        model, processor = build_our_model("fast", PRECISIONS[name], fuse=True, device=device)
        for batch_size in sizes:
            batch = [image] * batch_size

            def end_to_end():
                inputs = processor(images=batch, return_tensors="pt").to(device)
                with torch.inference_mode():
                    outputs = model(**inputs)
                results = processor.post_process_instance_segmentation(outputs, threshold=0.0)
                if on_cuda:
                    torch.cuda.synchronize(device)
                return results

            for _ in range(warmup):
                end_to_end()
            if on_cuda:
                torch.cuda.reset_peak_memory_stats(device)
            durations, results = [], None
            for _ in range(runs):
                start = time.perf_counter()
                results = end_to_end()
                durations.append(time.perf_counter() - start)
            seconds = statistics.median(durations)
            peak = f"{torch.cuda.max_memory_allocated(device) / 2**20:16.0f}" if on_cuda else f"{'n/a':>16}"
            detections = sum(int(result["scores"].numel()) for result in results) / batch_size
            print(f"{name:10} {batch_size:5d} {batch_size / seconds:9.2f} {seconds:8.3f} {peak} {detections:8.1f}",
                  flush=True)
        del model
        if on_cuda:
            torch.cuda.empty_cache()


# ------------------------------------------------------------------------------------------------ main
def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bfloat16 natively (the model's own check, which also warns where it is emulated)."""
    from inference_mask_rcnn import missing_native_cpu_support

    return missing_native_cpu_support(torch.bfloat16) is None


def default_photos() -> List[str]:
    """The repository's photos: samples/ and the golden fixtures' images."""
    folders = [os.path.join(REPO_ROOT, "samples"), os.path.join(REPO_ROOT, "tests", "fixtures", "images")]
    return [os.path.join(folder, name) for folder in folders for name in sorted(os.listdir(folder))
            if name.lower().endswith((".jpg", ".jpeg", ".png"))]


def load_photos(paths: List[str]) -> Dict[str, Image.Image]:
    photos = {}
    for path in paths:
        image = Image.open(path)
        image.load()
        photos[os.path.basename(path)] = image
    return photos


def cpu_description() -> str:
    """`lscpu`'s model name and the vector extensions that decide PyTorch's CPU kernels."""
    from inference_mask_rcnn import cpu_feature_flags

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    flags = cpu_feature_flags() or frozenset()
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_fp16")
    return f"{name} ({', '.join(flag for flag in wanted if flag in flags) or 'flags unknown'})"


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", nargs="+", default=None,
                        help="photos for the latency and throughput tables (default: samples/ and tests/fixtures/images)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help="photo for the memory and accelerator checks")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--settings", default="ten,0.5",
                        help="caller thresholds, comma-separated: 'ten' (keeps ~10 per photo), a number, 'all' ('' skips the "
                             "latency tables)")
    parser.add_argument("--peers", default="torchvision,mmdet", help="comma-separated: torchvision, mmdet")
    parser.add_argument("--bf16", action="store_true", help="also our fused bfloat16 path")
    parser.add_argument("--batch-sizes-cpu", default="1,2,4",
                        help="throughput of mixed-size photo batches, ours vs torchvision ('' to skip)")
    parser.add_argument("--batch-photos", type=int, default=4, help="how many of the photos the batches cover")
    parser.add_argument("--batch-threshold", type=float, default=0.5, help="our keep_score_threshold in batches")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-contender memory subprocesses")
    parser.add_argument("--memory-repeats", type=int, default=3, help="fresh processes per memory reading")
    parser.add_argument("--paste-memory", action="store_true", help="also check mask-pasting memory at 4000x3000")
    parser.add_argument("--accelerator", default="cuda" if torch.cuda.is_available() else "none",
                        help="device for the accelerator table (default: cuda when present, else none; 'cpu' runs "
                             "the same table on the CPU)")
    parser.add_argument("--batch-sizes", default="1,8", help="accelerator table batch sizes")
    parser.add_argument("--precisions", default="fp32,tf32,bf16,fp16", help="accelerator table precisions")
    parser.add_argument("--skip-latency", action="store_true", help="only the accelerator table")
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_probe:
        _probe(args.memory_probe, args.image)
        return

    if args.skip_latency:
        accelerator_table(args.accelerator, args.image, args.batch_sizes, args.precisions, args.runs, args.warmup)
        return
    photos = load_photos(args.images or default_photos())
    settings = [setting.strip() for setting in args.settings.split(",") if setting.strip()]
    contenders = make_contenders(args.bf16, [peer.strip() for peer in args.peers.split(",") if peer.strip()])
    print(f"machine: {cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads; "
          f"{len(photos)} photos ({', '.join(photos)}) at the 1333x800 scale; median of {args.runs} interleaved "
          f"runs after {args.warmup} warm-up")
    if settings:
        print_latency_table(latency_table(contenders, photos, settings, args.runs, args.warmup))
    batch_sizes = [int(size) for size in args.batch_sizes_cpu.split(",") if size.strip()]
    if batch_sizes:
        batch_photos = list(photos.values())[: args.batch_photos]
        batch_contenders = [c for c in contenders if isinstance(c, (OurModel, TorchvisionModel))]
        table = throughput_table(batch_contenders, batch_photos, batch_sizes, args.runs, args.batch_threshold)
        print_throughput_table(table, batch_photos, args.batch_threshold)
    if not args.no_memory:
        print(f"\npeak memory growth of one end-to-end inference (fresh process each, model loaded): median of "
              f"{args.memory_repeats} processes (min-max); the allocator makes single readings vary by ~15%")
        probes = ["ours-fast", "ours-fused"] + (["ours-bf16"] if args.bf16 else [])
        probes += [name for name, cls in (("torchvision", TorchvisionModel), ("mmdet", MMDetectionModel))
                   if any(isinstance(c, cls) for c in contenders)]
        for probe in probes:
            readings = [memory_probe(probe, args.image) / 2**20 for _ in range(args.memory_repeats)]
            print(f"  {probe:12} {statistics.median(readings):8.0f} MiB ({min(readings):.0f}-{max(readings):.0f})")
    if args.paste_memory:
        paste_memory_check()
    if args.accelerator != "none":
        accelerator_table(args.accelerator, args.image, args.batch_sizes, args.precisions, args.runs, args.warmup)


if __name__ == "__main__":
    main()
