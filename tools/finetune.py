#!/usr/bin/env python3
# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Fine-tune the Mask R-CNN on a COCO-format dataset with transformers' `Trainer` and MMDetection's 1x schedule.

    python tools/finetune.py --model DIR_OR_HUB_ID \
        --train-images train/ --train-annotations train.json \
        --val-images val/ --val-annotations val.json --output-dir runs/my-model [--epochs 12] [--batch-size 2]

Data parallel, same script (gradients averaged across processes, as MMDetection's distributed training does):

    torchrun --nproc-per-node 8 tools/finetune.py ...        # or: accelerate launch tools/finetune.py ...

What it does:
* classes come from the training annotation file: categories sorted by id become class indices 0..K-1 (MMDetection's
  `cat2label`), named by category name; when they differ from the model's, the class-specific layers (box
  classifier, box deltas, mask logits) are re-initialised as MMDetection initialises them, everything else is kept;
* training data follow MMDetection's `coco_instance` train pipeline through `MaskRCNNImageProcessor(annotations=)`:
  keep-ratio resize, random horizontal flip (p=0.5; `--no-flip`), optional multi-scale (`--multiscale`); images
  without any annotation or smaller than 32 px are skipped (`filter_empty_gt`, `min_size=32`);
* optimiser and schedule are MMDetection's defaults: SGD (momentum 0.9, weight decay 1e-4 on every trainable
  parameter), lr 0.02 per 16 images scaled linearly with the global batch (`--lr` overrides), linear warm-up over
  500 iterations from 0.001 x lr, lr x 0.1 at 8/12 and again at 11/12 of the epochs;
* after each epoch: COCO box and mask AP on the validation set (tools/evaluate_coco.py's evaluator), printed and
  appended to OUTPUT_DIR/val_metrics.jsonl; a checkpoint per epoch (`--resume` continues from the latest);
* at the end OUTPUT_DIR/model: a Hub-ready folder (weights, config with the new id2label, image processor, code files)
  that `pipeline("image-segmentation", model=..., trust_remote_code=True)` and the object-detection pipeline load.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import Trainer, TrainerCallback, TrainingArguments, set_seed  # noqa: E402

import evaluate_coco  # noqa: E402
import hub_folder_mask_rcnn  # noqa: E402
from configuration_mask_rcnn import MaskRCNNConfig  # noqa: E402
from convert_mmdet_checkpoint import config_json_dict  # noqa: E402
from image_processing_mask_rcnn import MaskRCNNImageProcessor  # noqa: E402
from mmdet_schedule import (BASE_BATCH_SIZE, BASE_LEARNING_RATE, WARMUP_ITERATIONS, WEIGHT_DECAY,  # noqa: E402
                            build_optimizer, mmdetection_lr_factor)
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation  # noqa: E402

# MMDetection's coco_instance dataset settings (the schedule is in mmdet_schedule.py)
MIN_IMAGE_SIZE = 32
MULTISCALE_SCALES = [[1333, 640], [1333, 672], [1333, 704], [1333, 736], [1333, 768], [1333, 800]]


class FinetuneError(Exception):
    """Unusable arguments or files (one sentence, printed without traceback)."""


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def load_coco(annotations: str) -> Any:
    try:
        return evaluate_coco.load_ground_truth(annotations)
    except evaluate_coco.EvaluationError as error:
        raise FinetuneError(str(error)) from None


def dataset_classes(coco: Any) -> Dict[int, str]:
    """{category_id: name} in ascending id order (the order defines class indices 0..K-1)."""
    categories = sorted(coco.dataset.get("categories", []), key=lambda category: category["id"])
    if not categories:
        raise FinetuneError("The training annotation file has no 'categories'.")
    return {int(category["id"]): str(category["name"]) for category in categories}


class CocoInstanceDataset(Dataset):
    """A COCO-format instance segmentation dataset as the model's training examples (one image per item).

    Each item is `{"pixel_values" (3, H, W), "image_sizes" (2,), "labels": {...}}` from `processor(images=path,
    annotations=...)`; batch them with `processor.collate`.
    """

    def __init__(self, images_dir: str, coco: Any, processor: MaskRCNNImageProcessor,
                 category_to_class: Dict[int, int], filter_like_mmdetection: bool = True) -> None:
        self.images_dir = images_dir
        self.coco = coco
        self.processor = processor
        self.category_to_class = category_to_class
        image_ids = sorted(coco.getImgIds())
        if filter_like_mmdetection:  # CocoDataset.filter_data: filter_empty_gt=True, min_size=32
            with_annotations = {annotation["image_id"] for annotation in coco.dataset.get("annotations", [])}
            image_ids = [image_id for image_id in image_ids if image_id in with_annotations
                         and min(coco.imgs[image_id]["width"], coco.imgs[image_id]["height"]) >= MIN_IMAGE_SIZE]
        if not image_ids:
            raise FinetuneError("No training image is left: every image lacks annotations or is under 32 pixels.")
        self.image_ids = image_ids

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        image_id = self.image_ids[index]
        info = self.coco.imgs[image_id]
        target = {"image_id": image_id, "annotations": self.coco.imgToAnns.get(image_id, [])}
        path = os.path.join(self.images_dir, info["file_name"])
        encoded = self.processor(images=path, annotations=target, category_to_class=self.category_to_class)
        return {"pixel_values": encoded["pixel_values"][0], "image_sizes": encoded["image_sizes"][0],
                "labels": encoded["labels"][0]}


# ----------------------------------------------------------------------------------------------------------------
# Model, optimiser, schedule
# ----------------------------------------------------------------------------------------------------------------
def load_model_for_classes(model_id: str, class_names: Sequence[str],
                           config_overrides: Optional[Dict[str, Any]] = None) -> MaskRCNNForInstanceSegmentation:
    """The model from a converted folder or Hub id; new class-specific layers when the classes differ.

    `config_overrides` ({field: value}, `--set`) are applied to the config before the model is built, so fields read
    at construction (e.g. `backbone_frozen_stages`, which decides which parameters get gradients) take effect too."""
    try:
        config = MaskRCNNConfig.from_pretrained(model_id)
        for key, value in (config_overrides or {}).items():
            if not hasattr(config, key):
                raise FinetuneError(f"--set {key}: the model config has no such field.")
            setattr(config, key, value)
        model = MaskRCNNForInstanceSegmentation.from_pretrained(model_id, config=config)
    except (OSError, ValueError) as error:
        raise FinetuneError(f"Cannot load --model {model_id}: {error}") from None
    current = [model.config.id2label[index] for index in range(model.config.num_labels)]
    if list(class_names) != current:
        model.reset_class_heads(dict(enumerate(class_names)))
    return model


class MaskRCNNTrainer(Trainer):
    """`Trainer` that also logs the loss terms (`loss_rpn_cls`, ..., `acc`) of the last step, and can read the data
    in order (`shuffle=False`; in data-parallel runs consecutive batches then go to consecutive processes)."""

    _last_terms: Dict[str, float] = {}
    shuffle: bool = True

    def _get_train_sampler(self, *args, **kwargs):
        if self.shuffle:
            return super()._get_train_sampler(*args, **kwargs)
        return torch.utils.data.SequentialSampler(self.train_dataset)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        self._last_terms = {name: round(float(value), 4) for name, value in outputs.loss_dict.items()}
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def log(self, logs: Dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs:
            logs = {**logs, **self._last_terms}
        super().log(logs, *args, **kwargs)


class CocoEvaluationCallback(TrainerCallback):
    """COCO box/mask AP on the validation set after every epoch (main process only)."""

    def __init__(self, processor: MaskRCNNImageProcessor, coco: Any, images_dir: str, output_dir: str,
                 max_images: Optional[int]) -> None:
        self.processor = processor
        self.coco = coco
        self.images_dir = images_dir
        self.metrics_path = os.path.join(output_dir, "val_metrics.jsonl")
        self.image_ids = evaluate_coco.select_image_ids(coco, max_images)

    def evaluate(self, model: MaskRCNNForInstanceSegmentation) -> Dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                records, _ = evaluate_coco.predict_dataset(model, self.processor, self.coco, self.image_ids,
                                                           self.images_dir, threshold=0.0)
            stats = evaluate_coco.evaluate(self.coco, records, self.image_ids, verbose=False)
        finally:
            model.train(was_training)
        return {"bbox_AP": stats.get("bbox", [0.0])[0], "bbox_AP50": stats.get("bbox", [0.0, 0.0])[1],
                "segm_AP": stats.get("segm", [0.0])[0], "segm_AP50": stats.get("segm", [0.0, 0.0])[1]}

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        if not state.is_world_process_zero or model is None:
            return control
        metrics = {"epoch": round(state.epoch or 0), "step": state.global_step, **self.evaluate(model)}
        print(f"epoch {metrics['epoch']}: bbox AP {100 * metrics['bbox_AP']:.1f} | mask AP "
              f"{100 * metrics['segm_AP']:.1f} (AP50 {100 * metrics['bbox_AP50']:.1f} / "
              f"{100 * metrics['segm_AP50']:.1f})", flush=True)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(metrics) + "\n")
        return control


def parameters_digest(model: torch.nn.Module) -> str:
    """sha256 over every parameter's bytes, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_replicas_identical(model: torch.nn.Module) -> List[str]:
    """Every process's parameter digest (gathered to all); raises FinetuneError when the replicas differ."""
    digest = parameters_digest(model)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [digest]
    digests: List[Optional[str]] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(digests, digest)
    if len(set(digests)) != 1:
        raise FinetuneError(f"The data-parallel replicas ended with different parameters: {digests}")
    return digests


def parse_config_overrides(pairs: Sequence[str]) -> Dict[str, Any]:
    """`KEY=VALUE` strings (VALUE parsed as JSON when it is JSON) for config fields of the model."""
    overrides = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator:
            raise FinetuneError(f"--set takes KEY=VALUE, got {pair!r}.")
        try:
            overrides[key] = json.loads(value)
        except ValueError:
            overrides[key] = value
    return overrides


# ----------------------------------------------------------------------------------------------------------------
# Export
# ----------------------------------------------------------------------------------------------------------------
def export_hub_folder(model: MaskRCNNForInstanceSegmentation, folder: str,
                      processor: Optional[MaskRCNNImageProcessor] = None) -> None:
    """Weights, config.json (new id2label, every field written out), preprocessor_config.json and the code files: a
    complete Hub folder (hub_folder_mask_rcnn.write_hub_folder) both pipelines load with `trust_remote_code=True`."""
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    (processor or MaskRCNNImageProcessor()).save_pretrained(folder)
    hub_folder_mask_rcnn.write_hub_folder(folder, config=config_json_dict(model.config), sources=[REPO_ROOT])


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="converted model folder or Hub repo id to start from")
    parser.add_argument("--train-images", required=True, help="folder the training file_name entries are relative to")
    parser.add_argument("--train-annotations", required=True, help="COCO instances json of the training set")
    parser.add_argument("--val-images", help="folder of the validation images")
    parser.add_argument("--val-annotations", help="COCO instances json of the validation set (AP after each epoch)")
    parser.add_argument("--output-dir", required=True, help="checkpoints, val_metrics.jsonl and the final model/")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (12, MMDetection's 1x)")
    parser.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimiser steps (-1: off)")
    parser.add_argument("--batch-size", type=int, default=2, help="images per process and step (2)")
    parser.add_argument("--gradient-accumulation", type=int, default=1, help="steps accumulated per update (1)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate (default 0.02 x global batch / 16, MMDetection's linear scaling)")
    parser.add_argument("--warmup-iterations", type=int, default=WARMUP_ITERATIONS, help="linear warm-up steps (500)")
    parser.add_argument("--max-grad-norm", type=float, default=0.0,
                        help="clip the global gradient norm (0: off, MMDetection's Mask R-CNN default; 35 is the "
                             "clip_grad of several MMDetection recipes)")
    parser.add_argument("--resize-scale", type=int, nargs=2, default=None, metavar=("LONG", "SHORT"),
                        help="keep-ratio resize limits for training and the exported model (default: the model's)")
    parser.add_argument("--multiscale", action="store_true",
                        help="ms-poly recipes' multi-scale training: short side drawn from 640..800 (step 32)")
    parser.add_argument("--no-flip", action="store_true", help="no random horizontal flip")
    parser.add_argument("--num-workers", type=int, default=2, help="data loader worker processes (2)")
    parser.add_argument("--val-max-images", type=int, default=None, help="evaluate on the first N val images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output-dir")
    parser.add_argument("--save-total-limit", type=int, default=None, help="keep at most N epoch checkpoints")
    parser.add_argument("--logging-steps", type=int, default=50)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config fields for training, e.g. rpn_train_num_samples=512")
    parser.add_argument("--no-shuffle", action="store_true", help="read the training images in id order")
    parser.add_argument("--check-replicas", action="store_true",
                        help="at the end, verify that every data-parallel process holds the same parameters")
    return parser


def run(arguments: argparse.Namespace) -> Dict[str, Any]:
    """Train per the parsed arguments; returns {"model_dir", "metrics" (per-epoch list), "train_result"}."""
    if (arguments.val_images is None) != (arguments.val_annotations is None):
        raise FinetuneError("--val-images and --val-annotations go together.")
    set_seed(arguments.seed)  # the re-initialised class layers are the same in every process and every run
    train_coco = load_coco(arguments.train_annotations)
    classes = dataset_classes(train_coco)
    category_to_class = {category_id: index for index, category_id in enumerate(classes)}
    model = load_model_for_classes(arguments.model, list(classes.values()), parse_config_overrides(arguments.set))
    # the source folder's image processor settings (its checkpoint's normalisation), the resize scale as asked
    source_processor = MaskRCNNImageProcessor.from_pretrained(arguments.model)
    settings = inspect.signature(MaskRCNNImageProcessor.__init__).parameters
    processor_settings = {key: value for key, value in source_processor.to_dict().items()
                          if key in settings and key not in ("do_random_flip", "multiscale_resize_scales")}
    if arguments.resize_scale:
        processor_settings["resize_scale"] = list(arguments.resize_scale)
    eval_processor = MaskRCNNImageProcessor(**processor_settings)
    train_processor = MaskRCNNImageProcessor(
        **processor_settings, do_random_flip=not arguments.no_flip,
        multiscale_resize_scales=MULTISCALE_SCALES if arguments.multiscale else None)
    train_dataset = CocoInstanceDataset(arguments.train_images, train_coco, train_processor, category_to_class)

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    global_batch = arguments.batch_size * world_size * arguments.gradient_accumulation
    learning_rate = arguments.lr if arguments.lr is not None else BASE_LEARNING_RATE * global_batch / BASE_BATCH_SIZE
    steps_per_epoch = max(1, math.ceil(len(train_dataset) / (arguments.batch_size * world_size))
                          // arguments.gradient_accumulation)
    optimizer = build_optimizer(model, learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: mmdetection_lr_factor(step, steps_per_epoch, arguments.epochs,
                                                      arguments.warmup_iterations))
    training_arguments = TrainingArguments(
        output_dir=arguments.output_dir, per_device_train_batch_size=arguments.batch_size,
        gradient_accumulation_steps=arguments.gradient_accumulation, num_train_epochs=arguments.epochs,
        max_steps=arguments.max_steps, learning_rate=learning_rate, weight_decay=WEIGHT_DECAY,
        save_strategy="epoch", save_total_limit=arguments.save_total_limit, logging_steps=arguments.logging_steps,
        report_to=[], remove_unused_columns=False, dataloader_num_workers=arguments.num_workers,
        seed=arguments.seed, ddp_find_unused_parameters=False, max_grad_norm=arguments.max_grad_norm,
        # without CUDA, torchrun/accelerate processes train data-parallel on the CPU over gloo
        use_cpu=not torch.cuda.is_available(),
        ddp_backend="gloo" if world_size > 1 and not torch.cuda.is_available() else None,
    )
    callbacks = []
    evaluator = None
    if arguments.val_annotations:
        evaluator = CocoEvaluationCallback(eval_processor, load_coco(arguments.val_annotations), arguments.val_images,
                                           arguments.output_dir, arguments.val_max_images)
        callbacks.append(evaluator)
    trainer = MaskRCNNTrainer(model=model, args=training_arguments, train_dataset=train_dataset,
                              data_collator=train_processor.collate, optimizers=(optimizer, scheduler),
                              callbacks=callbacks)
    trainer.shuffle = not arguments.no_shuffle
    os.makedirs(arguments.output_dir, exist_ok=True)
    train_result = trainer.train(resume_from_checkpoint=True if arguments.resume else None)
    model_dir = os.path.join(arguments.output_dir, "model")
    if arguments.check_replicas:
        digests = check_replicas_identical(trainer.model)
        if trainer.is_world_process_zero():
            print(f"parameters identical on all {len(digests)} processes: {digests[0][:16]}", flush=True)
    metrics: List[dict] = []
    if trainer.is_world_process_zero():
        export_hub_folder(trainer.model, model_dir, eval_processor)
        if evaluator is not None and os.path.exists(evaluator.metrics_path):
            with open(evaluator.metrics_path, encoding="utf-8") as handle:
                metrics = [json.loads(line) for line in handle if line.strip()]
        print(f"Hub-ready model written to {model_dir}", flush=True)
    return {"model_dir": model_dir, "metrics": metrics, "train_result": train_result}


def main(argv: Optional[Sequence[str]] = None) -> int:
    arguments = build_argument_parser().parse_args(argv)
    try:
        run(arguments)
    except FinetuneError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
