"""tools/finetune.py: schedule, a short fine-tuning run with a new class set, --resume, the exported Hub folder
loaded by both pipelines from a neutral folder, and data-parallel training under torchrun (2 gloo processes)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import finetune
from make_shapes_dataset import make_dataset
from synthetic_model_folder import lean_synthetic_folder

REPO_ROOT = Path(__file__).resolve().parent.parent
SHAPES = ["disc", "square", "triangle"]
# tiny, fast settings: 64 px images, one image per step
FAST = ["--resize-scale", "64", "64", "--batch-size", "1", "--num-workers", "0", "--logging-steps", "1", "--no-flip",
        "--no-shuffle", "--warmup-iterations", "2", "--lr", "0.01"]


def test_schedule_is_mmdetections_linear_warmup_then_steps_at_8_and_11_of_12_epochs():
    factor = finetune.mmdetection_lr_factor
    assert factor(0, 100, 12, 500) == pytest.approx(0.001)
    assert factor(499, 100, 12, 500) == pytest.approx(1.0)
    assert factor(250, 100, 12, 500) == pytest.approx(0.001 + 0.999 * 250 / 499)
    assert factor(799, 100, 12, 500) == 1.0 and factor(800, 100, 12, 500) == pytest.approx(0.1)
    assert factor(1099, 100, 12, 500) == pytest.approx(0.1) and factor(1100, 100, 12, 500) == pytest.approx(0.01)
    assert factor(60, 10, 24, 1) == pytest.approx(1.0) and factor(160, 10, 24, 1) == pytest.approx(0.1)


def test_optimizer_is_sgd_with_decay_on_every_trainable_parameter():
    from configuration_mask_rcnn import MaskRCNNConfig
    from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation

    model = MaskRCNNForInstanceSegmentation(MaskRCNNConfig())
    optimizer = finetune.build_optimizer(model, 0.02)
    (group,) = optimizer.param_groups
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.02, 0.9, 1e-4)
    assert len(group["params"]) == sum(p.requires_grad for p in model.parameters())


@pytest.fixture(scope="module")
def shapes_dataset(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("shapes")), train=4, val=2, size=64, seed=1)


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    return lean_synthetic_folder(tmp_path_factory.mktemp("models"))


def _run_finetune(arguments, cwd=REPO_ROOT, launcher=None):
    command = (launcher or [sys.executable]) + [str(REPO_ROOT / "tools" / "finetune.py"), *arguments]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def _data_arguments(dataset, with_val=True):
    arguments = ["--train-images", dataset["train_images"], "--train-annotations", dataset["train_annotations"]]
    if with_val:
        arguments += ["--val-images", dataset["val_images"], "--val-annotations", dataset["val_annotations"]]
    return arguments


@pytest.fixture(scope="module")
def finetuned(shapes_dataset, start_model, tmp_path_factory):
    output = tmp_path_factory.mktemp("run")
    _run_finetune(["--model", str(start_model), "--output-dir", str(output), "--epochs", "1",
                   *_data_arguments(shapes_dataset), *FAST])
    return output


def test_finetuning_writes_checkpoints_metrics_and_a_model_with_the_new_classes(finetuned):
    assert (finetuned / "checkpoint-4").is_dir()
    metrics = [json.loads(line) for line in (finetuned / "val_metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 1 and metrics[0]["epoch"] == 1 and {"bbox_AP", "segm_AP"} <= set(metrics[0])
    config = json.loads((finetuned / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "disc", "1": "square", "2": "triangle"}
    assert config["auto_map"]["AutoModel"] == "modeling_mask_rcnn.MaskRCNNForInstanceSegmentation"
    weights = load_file(str(finetuned / "model" / "model.safetensors"))
    assert weights["box_head.class_logits.weight"].shape == (4, 1024)
    assert weights["mask_head.mask_logits.weight"].shape == (3, 256, 1, 1)
    state = json.loads((finetuned / "checkpoint-4" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert len(logged) == 4 and all("loss_mask" in entry and "loss_rpn_cls" in entry for entry in logged)


def test_resume_continues_from_the_latest_checkpoint(finetuned, shapes_dataset, start_model):
    completed = _run_finetune(["--model", str(start_model), "--output-dir", str(finetuned), "--epochs", "2",
                               "--resume", *_data_arguments(shapes_dataset, with_val=False), *FAST])
    state = json.loads((finetuned / "checkpoint-8" / "trainer_state.json").read_text())
    steps = [entry["step"] for entry in state["log_history"] if "loss" in entry]
    assert steps == list(range(1, 9)), completed.stdout[-2000:]  # steps 1-4 from the first run, 5-8 resumed


def test_exported_folder_loads_in_both_pipelines_from_a_neutral_folder(finetuned, tmp_path, shapes_dataset):
    image = Path(shapes_dataset["val_images"]) / "00000.png"
    script = textwrap.dedent(f"""
        import json
        from transformers import pipeline
        folder = {str(finetuned / "model")!r}
        segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True)
        detector = pipeline("object-detection", model=folder, trust_remote_code=True)
        assert segmenter.model.config.id2label == {{0: "disc", 1: "square", 2: "triangle"}}
        segments = segmenter({str(image)!r}, threshold=0.0)
        detections = detector({str(image)!r}, threshold=0.0)
        print(json.dumps({{"segments": [s["label"] for s in segments], "detections": [d["label"] for d in detections],
                           "module": type(segmenter.model).__module__}}))
    """)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                               timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["module"].startswith("transformers_modules")  # the folder's own code, not the repo's
    assert set(result["segments"]) <= set(SHAPES) and set(result["detections"]) <= set(SHAPES)


def test_torchrun_two_gloo_processes_match_one_process_over_the_same_global_batch(shapes_dataset, start_model,
                                                                                  tmp_path):
    # no random sampling draws (every anchor and RoI is sampled), so one process accumulating the two images of each
    # global batch computes the same averaged gradient as two processes with one image each
    deterministic = ["--set", "rpn_train_num_samples=1000000", "roi_train_num_samples=1000000"]
    common = ["--model", str(start_model), "--epochs", "1", "--max-steps", "2",
              *_data_arguments(shapes_dataset, with_val=False), *FAST, *deterministic]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                "--master-port", "29561"]
    parallel = _run_finetune([*common, "--output-dir", str(tmp_path / "ddp"), "--check-replicas"], launcher=launcher)
    assert "parameters identical on all 2 processes" in parallel.stdout
    _run_finetune([*common, "--output-dir", str(tmp_path / "single"), "--gradient-accumulation", "2"])

    def losses(folder):
        state = json.loads((folder / "checkpoint-2" / "trainer_state.json").read_text())
        return [entry["loss"] for entry in state["log_history"] if "loss" in entry]

    assert losses(tmp_path / "ddp") == pytest.approx(losses(tmp_path / "single"), rel=1e-5)
    parallel_weights = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    single_weights = load_file(str(tmp_path / "single" / "model" / "model.safetensors"))
    for name, tensor in parallel_weights.items():
        torch.testing.assert_close(tensor, single_weights[name], rtol=1e-4, atol=1e-4, msg=name)
