# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""MMDetection's 1x training schedule (schedule_1x.py + the mask-rcnn coco_instance settings): the optimiser and the
lr factor per step. Imports only torch, so the training benchmark's measuring processes can use it without the
Trainer stack that tools/finetune.py loads (it would inflate their peak memory)."""

from __future__ import annotations

import torch

BASE_LEARNING_RATE = 0.02  # per BASE_BATCH_SIZE images, scaled linearly with the global batch
BASE_BATCH_SIZE = 16
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
WARMUP_ITERATIONS = 500
WARMUP_START_FACTOR = 0.001
LR_STEP_FRACTIONS = (8 / 12, 11 / 12)
LR_STEP_GAMMA = 0.1


def mmdetection_lr_factor(step: int, steps_per_epoch: int, epochs: int, warmup_iterations: int) -> float:
    """lr multiplier at optimiser step `step`: linear warm-up (LinearLR, start 0.001, `warmup_iterations`) times
    0.1 per milestone passed (MultiStepLR at 8/12 and 11/12 of the epochs, applied at epoch boundaries)."""
    warmup = 1.0
    if warmup_iterations > 1 and step < warmup_iterations:
        warmup = WARMUP_START_FACTOR + (1 - WARMUP_START_FACTOR) * step / (warmup_iterations - 1)
    milestones = [round(fraction * epochs) * steps_per_epoch for fraction in LR_STEP_FRACTIONS]
    return warmup * LR_STEP_GAMMA ** sum(step >= milestone for milestone in milestones)


def build_optimizer(model: torch.nn.Module, learning_rate: float) -> torch.optim.Optimizer:
    """SGD over every trainable parameter, one group: weight decay on biases and norms too (no paramwise_cfg)."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    return torch.optim.SGD(parameters, lr=learning_rate, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
