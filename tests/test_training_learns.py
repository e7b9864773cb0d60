"""It learns: tools/finetune.py fine-tunes the synthetic (untrained) R50-FPN on generated shapes and reaches a stated
mask AP on held-out generated images (issue 16, item 6; the curve is in docs/finetune.md, "It learns").

The backbone is random (synthetic weights), so it is frozen whole (`backbone_frozen_stages=4`): the FPN, the RPN and
the RoI heads learn from fixed random features, which still separate big coloured shapes from textured backgrounds.
Small images (128 px), fewer sampled anchors/RoIs and proposals keep each step cheap. Fixed seeds (dataset, class
layers, data order, samplers), so the run is deterministic on one machine; the thresholds keep a margin below the
measured values for other CPUs' rounding.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import finetune
from make_shapes_dataset import make_dataset
from synthetic_model_folder import lean_synthetic_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_IMAGES, VAL_IMAGES, IMAGE_SIZE = 32, 16, 128
EPOCHS = 8
RECIPE = ["--resize-scale", str(IMAGE_SIZE), str(IMAGE_SIZE), "--batch-size", "2", "--epochs", str(EPOCHS),
          "--lr", "0.0025", "--warmup-iterations", "20", "--max-grad-norm", "35", "--num-workers", "0",
          "--logging-steps", "4", "--save-total-limit", "1", "--seed", "0",
          "--set", "backbone_frozen_stages=4", "roi_train_num_samples=128", "rpn_train_max_proposals=300",
          "rpn_train_pre_nms_top_k=500"]
# measured on a shared 2-core AMD EPYC, AVX2 kernels (docs/finetune.md, "It learns"): after 8 epochs mask AP50
# 0.071, mask AP 0.017, loss (mean of the first two / last two logged values) 5.65 -> 1.53 (3.7x); other runs
# (other kernels, earlier processor code) ended at AP50 0.041-0.056, AP 0.017-0.029: wide margins
MIN_FINAL_MASK_AP50 = 0.015
MIN_FINAL_MASK_AP = 0.005
MIN_LOSS_DROP_FACTOR = 2.0


def test_from_pretrained_keeps_the_configured_backbone_stages_frozen(tmp_path_factory):
    # transformers 5 loads tensors into new Parameters (requires_grad=True): the model freezes them again
    from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation

    folder = lean_synthetic_folder(tmp_path_factory.mktemp("models"))
    model = MaskRCNNForInstanceSegmentation.from_pretrained(folder)
    trainable = {name.split(".")[0] for name, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable == {"layer2", "layer3", "layer4"}  # stem and layer1 frozen (backbone_frozen_stages=1)
    model = MaskRCNNForInstanceSegmentation.from_pretrained(folder, backbone_frozen_stages=4)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    # tools/finetune.py --set backbone_frozen_stages=4 (applied before the model is built)
    model = finetune.load_model_for_classes(str(folder), ["disc", "square", "triangle"], {"backbone_frozen_stages": 4})
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert model.fpn.lateral_convs[0].weight.requires_grad


def test_finetuning_on_generated_shapes_reaches_the_stated_mask_ap(tmp_path_factory):
    base = tmp_path_factory.mktemp("learns")
    dataset = make_dataset(str(base / "shapes"), train=TRAIN_IMAGES, val=VAL_IMAGES, size=IMAGE_SIZE, seed=0)
    model = lean_synthetic_folder(tmp_path_factory.mktemp("models"))
    output = base / "run"
    command = [sys.executable, str(REPO_ROOT / "tools" / "finetune.py"), "--model", str(model),
               "--output-dir", str(output), "--train-images", dataset["train_images"],
               "--train-annotations", dataset["train_annotations"], "--val-images", dataset["val_images"],
               "--val-annotations", dataset["val_annotations"], *RECIPE]
    completed = subprocess.run(command, cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True,
                               timeout=1800)
    assert completed.returncode == 0, completed.stderr[-3000:]

    metrics = [json.loads(line) for line in (output / "val_metrics.jsonl").read_text().splitlines()]
    assert [entry["epoch"] for entry in metrics] == list(range(1, EPOCHS + 1))
    state_files = sorted(output.glob("checkpoint-*/trainer_state.json"))
    losses = [entry["loss"] for entry in json.loads(state_files[-1].read_text())["log_history"] if "loss" in entry]
    curve = {"loss": losses, "segm_AP": [m["segm_AP"] for m in metrics], "segm_AP50": [m["segm_AP50"] for m in metrics]}
    print(json.dumps(curve))  # `pytest -s` shows the learning curve
    first, last = sum(losses[:2]) / 2, sum(losses[-2:]) / 2
    assert first / last >= MIN_LOSS_DROP_FACTOR, curve
    assert metrics[-1]["segm_AP50"] >= MIN_FINAL_MASK_AP50, curve
    assert metrics[-1]["segm_AP"] >= MIN_FINAL_MASK_AP, curve
