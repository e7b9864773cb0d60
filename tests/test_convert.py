# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Tests of convert_mmdet_checkpoint: names, downloads, safe loading, validation, output folder, CLI.

Checkpoints are synthetic but laid out exactly like MMDetection's (keys and shapes from
`mmdet_state_dict_shapes`, checked against tests/fixtures/mmdet_state_dict_layouts.json; zeros unless a test needs values), saved with torch.save in the zip and the legacy
format, with 2.x-style (`CLASSES`, `mmcv_version`, `time`, `config`) and 3.x-style (`dataset_meta`) meta.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
import urllib.error
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import pytest
import torch
from safetensors import safe_open

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import convert_mmdet_checkpoint as convert  # noqa: E402
import hub_folder_mask_rcnn as hub_folder  # noqa: E402
from configuration_mask_rcnn import COCO_CLASSES  # noqa: E402
from convert_mmdet_checkpoint import (  # noqa: E402
    ZOO,
    ConversionError,
    convert_checkpoint,
    hf_key_to_mmdet_key,
    load_mmdet_checkpoint,
    mmdet_key_to_hf_key,
    mmdet_state_dict_shapes,
    prepare_conversion,
    resolve_config_name,
    zoo_config,
)

R50 = "mask-rcnn_r50_fpn_1x_coco"
R50_CAFFE = "mask-rcnn_r50-caffe_fpn_1x_coco"
R101 = "mask-rcnn_r101_fpn_1x_coco"
OUTPUT_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")


# ------------------------------------------------------------------------------------------------ helpers


def synthetic_state_dict(config_name: str, class_names: Tuple[str, ...] = COCO_CLASSES,
                         dtype: torch.dtype = torch.float32) -> Dict[str, torch.Tensor]:
    """MMDetection-layout state dict of zeros for a zoo config and a class list."""
    config = zoo_config(config_name, id2label=dict(enumerate(class_names)))
    return {
        key: torch.zeros(shape, dtype=torch.int64 if key.endswith("num_batches_tracked") else dtype)
        for key, shape in mmdet_state_dict_shapes(config).items()
    }


def meta_2x(class_names: Tuple[str, ...] = COCO_CLASSES, config_text: Optional[str] = None) -> dict:
    meta = {"mmcv_version": "1.3.17", "time": "Wed Feb  5 12:34:56 2020", "CLASSES": tuple(class_names),
            "epoch": 12, "iter": 87960, "mmdet_version": "2.0.0", "env_info": "sys.platform: linux"}
    if config_text is not None:
        meta["config"] = config_text
    return meta


def meta_3x(class_names: Tuple[str, ...] = COCO_CLASSES) -> dict:
    palette = [(220, 20, 60)] * len(class_names)
    return {"mmengine_version": "0.10.3", "time": "20231010_101010", "epoch": 12, "iter": 87960, "seed": 0,
            "experiment_name": "mask-rcnn", "dataset_meta": {"classes": tuple(class_names), "palette": palette}}


def save_checkpoint(path: Path, state_dict: dict, meta: Optional[dict], legacy: bool = False) -> Path:
    payload = state_dict if meta is None else {"meta": meta, "state_dict": state_dict}
    torch.save(payload, path, _use_new_zipfile_serialization=not legacy)
    return path


def architecture_key(config_name: str) -> Tuple[int, int, int]:
    kwargs = ZOO[config_name].config_kwargs()
    return kwargs["backbone_depth"], kwargs["backbone_groups"], kwargs["backbone_base_width"]


def _memory_backed_folder(prefix: str) -> Optional[Path]:
    """A fresh folder on /dev/shm when it has room: the full-size checkpoints (up to 430 MB each) are written and
    read there at memory speed instead of disk speed. None where there is no such file system."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 6 * 2**30:
            return Path(tempfile.mkdtemp(prefix=prefix, dir=shm))
    except OSError:
        pass
    return None


@pytest.fixture(scope="session")
def fast_folder_root(tmp_path_factory):
    """Root for big files: /dev/shm if possible (removed at the end of the session), else pytest's tmp dir."""
    folder = _memory_backed_folder("test_convert-")
    if folder is None:
        yield tmp_path_factory.mktemp("big")
        return
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def fast_tmp(fast_folder_root, request):
    """Per-test folder for big outputs, deleted after the test so memory-backed space is given back."""
    folder = Path(tempfile.mkdtemp(prefix=request.node.name[:40].replace("/", "_") + "-", dir=fast_folder_root))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def zoo_checkpoint_file(fast_folder_root):
    """Path of a synthetic zip-format checkpoint (2.x meta, COCO classes) for a zoo config; one file per backbone
    (configs that differ only in style/normalisation/schedule share shapes, so they share the file)."""
    cache: Dict[Tuple[int, int, int], Path] = {}
    folder = fast_folder_root / "zoo_checkpoints"
    folder.mkdir()

    def get(config_name: str) -> Path:
        key = architecture_key(config_name)
        if key not in cache:
            path = folder / ("arch_%d_%d_%d.pth" % key)
            cache[key] = save_checkpoint(path, synthetic_state_dict(config_name), meta_2x())
        return cache[key]

    return get


@pytest.fixture(scope="session")
def r50_state_dict():
    """In-memory R50 state dict (zeros) for validation tests; copy before changing entries."""
    return synthetic_state_dict(R50)


@pytest.fixture(autouse=True)
def isolated_cache(fast_tmp, monkeypatch):
    """Never touch the user's download cache."""
    monkeypatch.setenv(convert.CACHE_DIR_ENV, str(fast_tmp / "cache"))


def read_safetensors_header(path: Path) -> Tuple[Dict[str, Tuple[str, Tuple[int, ...]]], Dict[str, str]]:
    """{name: (dtype, shape)} and metadata of a safetensors file, without loading the tensors."""
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(length))
    metadata = header.pop("__metadata__", {})
    return {name: (info["dtype"], tuple(info["shape"])) for name, info in header.items()}, metadata


# ------------------------------------------------------------------------------------------------ config names


@pytest.mark.parametrize("spelling, expected", [
    ("mask-rcnn_r50_fpn_1x_coco", "mask-rcnn_r50_fpn_1x_coco"),
    ("mask-rcnn_r50_fpn_1x_coco.py", "mask-rcnn_r50_fpn_1x_coco"),
    ("configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py", "mask-rcnn_r50_fpn_1x_coco"),
    ("mask-rcnn_r50_fpn_fp16_1x_coco", "mask-rcnn_r50_fpn_amp-1x_coco"),
    ("mask-rcnn_r50_fpn_mstrain-poly_3x_coco", "mask-rcnn_r50_fpn_ms-poly-3x_coco"),
    ("mask-rcnn_x101-64x4d_fpn_ms-poly-3x_coco", "mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco"),
    ("mask-rcnn_x101-64x4d_fpn_ms-poly-3x_coco.py", "mask-rcnn_x101-64x4d_fpn_ms-poly_3x_coco"),
])
def test_config_name_spellings_resolve_to_zoo_names(spelling, expected):
    assert resolve_config_name(spelling) == expected
    assert zoo_config(spelling).mmdet_config_name == expected


def test_unknown_config_name_lists_valid_names():
    with pytest.raises(ConversionError) as error:
        resolve_config_name("mask-rcnn_r18_fpn_1x_coco")
    message = str(error.value)
    assert "Unknown MMDetection Mask R-CNN config 'mask-rcnn_r18_fpn_1x_coco'" in message
    assert all(name in message for name in ZOO)
    assert isinstance(error.value, ValueError)


def test_zoo_has_21_configs_with_hash_prefixes():
    assert len(ZOO) == 21
    assert all(len(entry.sha256_prefix) == 8 for entry in ZOO.values())


# ------------------------------------------------------------------------------------------------ checkpoint layout

LAYOUTS = json.loads((REPO_ROOT / "tests" / "fixtures" / "mmdet_state_dict_layouts.json").read_text())["configs"]


def layout_sha256(shapes) -> str:
    return hashlib.sha256("".join(f"{key} {tuple(shape)}\n" for key, shape in shapes.items()).encode()).hexdigest()


@pytest.mark.parametrize("config_name", sorted(ZOO))
def test_layout_derived_from_the_model_matches_the_recorded_mmdetection_layout(config_name):
    """Keys, order and shapes asked from the model on the meta device equal those recorded (for every zoo config)
    from the hand-written table they replaced."""
    shapes = mmdet_state_dict_shapes(zoo_config(config_name))
    recorded = LAYOUTS[config_name]
    assert len(shapes) == recorded["num_keys"]
    assert layout_sha256(shapes) == recorded["sha256"]


@pytest.mark.parametrize(("config_name", "stage1_conv2", "stage4_conv2"), [
    (R50, (64, 64, 3, 3), (512, 512, 3, 3)),
    (R50_CAFFE, (64, 64, 3, 3), (512, 512, 3, 3)),
    ("mask-rcnn_x101-32x4d_fpn_1x_coco", (128, 4, 3, 3), (1024, 32, 3, 3)),
    ("mask-rcnn_x101-64x4d_fpn_1x_coco", (256, 4, 3, 3), (2048, 32, 3, 3)),
    ("mask-rcnn_x101-32x8d_fpn_1x_coco", (256, 8, 3, 3), (2048, 64, 3, 3)),
])
def test_grouped_convolution_shapes_follow_the_resnext_width(config_name, stage1_conv2, stage4_conv2):
    shapes = mmdet_state_dict_shapes(zoo_config(config_name))
    assert shapes["backbone.layer1.0.conv2.weight"] == stage1_conv2
    assert shapes["backbone.layer4.0.conv2.weight"] == stage4_conv2
    assert shapes["backbone.layer4.2.conv3.weight"] == (2048, stage4_conv2[0], 1, 1)


def test_layout_is_in_mmdetection_module_order_and_renames_both_ways():
    shapes = mmdet_state_dict_shapes(zoo_config(R50))
    keys = list(shapes)
    assert keys[:2] == ["backbone.conv1.weight", "backbone.bn1.weight"]
    # MMDetection's BBoxHead creates fc_cls/fc_reg before Shared2FCBBoxHead adds shared_fcs
    assert keys.index("roi_head.bbox_head.fc_reg.bias") < keys.index("roi_head.bbox_head.shared_fcs.0.weight")
    assert keys[-1] == "roi_head.mask_head.conv_logits.bias"
    assert shapes["roi_head.bbox_head.fc_cls.weight"] == (81, 1024)
    assert shapes["roi_head.bbox_head.shared_fcs.0.weight"] == (1024, 256 * 7 * 7)
    assert shapes["backbone.bn1.num_batches_tracked"] == ()
    for key in keys:
        assert hf_key_to_mmdet_key(mmdet_key_to_hf_key(key)) == key
    assert mmdet_key_to_hf_key("neck.fpn_convs.3.conv.bias") == "fpn.output_convs.3.bias"
    assert hf_key_to_mmdet_key("box_head.fc2.weight") == "roi_head.bbox_head.shared_fcs.1.weight"
    with pytest.raises(KeyError, match="roi_head.bbox_head.retina_cls.weight"):
        mmdet_key_to_hf_key("roi_head.bbox_head.retina_cls.weight")
    with pytest.raises(KeyError, match="box_roi_align.scale"):
        hf_key_to_mmdet_key("box_roi_align.scale")


def test_layout_follows_config_fields():
    """Non-zoo field values change the derived shapes as the model's modules do (no second table to update)."""
    config = zoo_config(R50, id2label={0: "a", 1: "b"}, mask_head_num_convs=2, box_head_fc_channels=512)
    shapes = mmdet_state_dict_shapes(config)
    assert shapes["roi_head.bbox_head.fc_cls.weight"] == (3, 512)
    assert shapes["roi_head.mask_head.conv_logits.weight"] == (2, 256, 1, 1)
    assert "roi_head.mask_head.convs.1.conv.weight" in shapes
    assert "roi_head.mask_head.convs.2.conv.weight" not in shapes


# ------------------------------------------------------------------------------------------------ all 21 configs


@pytest.mark.parametrize("config_name", sorted(ZOO))
def test_every_zoo_config_converts(config_name, zoo_checkpoint_file, fast_tmp):
    output = convert_checkpoint(config_name, zoo_checkpoint_file(config_name), fast_tmp / "out")

    assert output == (fast_tmp / "out").resolve()
    for file_name in OUTPUT_FILES:
        assert (output / file_name).is_file()
    assert [path.name for path in fast_tmp.iterdir()] == ["out"]  # no staging folder left behind

    config = json.loads((output / "config.json").read_text())
    expected = zoo_config(config_name)
    assert config["model_type"] == "mask_rcnn"
    assert config["mmdet_config_name"] == config_name
    for field in ("backbone_depth", "backbone_groups", "backbone_base_width", "backbone_style"):
        assert config[field] == getattr(expected, field), field
    assert len(config["id2label"]) == 80 and config["id2label"]["0"] == "person"
    # config.json holds what the model reads; the image processor's settings are in preprocessor_config.json only
    assert not set(config) & {"image_mean", "image_std", "input_channel_order", "resize_scale"}

    preprocessor = json.loads((output / "preprocessor_config.json").read_text())
    normalization = ZOO[config_name].normalization()
    assert {key: preprocessor[key] for key in normalization} == normalization

    tensors, metadata = read_safetensors_header(output / "model.safetensors")
    shapes = mmdet_state_dict_shapes(expected)
    assert metadata == {"format": "pt"}
    assert set(tensors) == {mmdet_key_to_hf_key(key) for key in shapes}
    for key, shape in shapes.items():
        dtype, stored_shape = tensors[mmdet_key_to_hf_key(key)]
        assert stored_shape == tuple(shape)
        assert dtype == ("I64" if key.endswith("num_batches_tracked") else "F32")


# ------------------------------------------------------------------------------------------------ formats and meta


def test_config_json_has_remote_code_entries(zoo_checkpoint_file, fast_tmp):
    output = convert_checkpoint(R50, zoo_checkpoint_file(R50), fast_tmp / "out")
    config = json.loads((output / "config.json").read_text())
    model = "modeling_mask_rcnn.MaskRCNNForInstanceSegmentation"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_mask_rcnn.MaskRCNNConfig", "AutoModel": model,
        "AutoModelForInstanceSegmentation": model, "AutoModelForObjectDetection": model,
    }
    assert config["custom_pipelines"]["image-segmentation"]["impl"] == "pipeline.MaskRCNNSegmentationPipeline"
    assert config["custom_pipelines"]["image-segmentation"]["pt"] == ["AutoModelForInstanceSegmentation"]
    assert config["custom_pipelines"]["object-detection"]["impl"] == "pipeline.MaskRCNNDetectionPipeline"
    assert config["custom_pipelines"]["object-detection"]["pt"] == ["AutoModelForObjectDetection"]
    assert config["architectures"] == ["MaskRCNNForInstanceSegmentation"]
    preprocessor = json.loads((output / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"] == {"AutoImageProcessor": "image_processing_mask_rcnn.MaskRCNNImageProcessor"}
    assert preprocessor["resize_scale"] == [1333, 800] and preprocessor["size_divisor"] == 32
    assert {"configuration_mask_rcnn.py", "modeling_mask_rcnn.py", "image_processing_mask_rcnn.py", "pipeline.py",
            "handler.py", "hub_folder_mask_rcnn.py", "requirements.txt", ".gitattributes", "README.md",
            "model.safetensors"} <= {path.name for path in output.iterdir()}


def test_output_loads_with_auto_classes(zoo_checkpoint_file, fast_tmp):
    """The folder loads through transformers' remote-code path; the model and image processor parts run when
    their code files exist at the repository root (they are written alongside this converter)."""
    from transformers import AutoConfig

    output = convert_checkpoint(R50_CAFFE, zoo_checkpoint_file(R50_CAFFE), fast_tmp / "caffe_out")
    config = AutoConfig.from_pretrained(output, trust_remote_code=True)
    assert type(config).__name__ == "MaskRCNNConfig"
    assert config.backbone_style == "caffe"
    assert config.id2label[79] == "toothbrush" and config.label2id["person"] == 0

    if (output / "modeling_mask_rcnn.py").is_file():
        from transformers import AutoModelForInstanceSegmentation

        model, info = AutoModelForInstanceSegmentation.from_pretrained(output, trust_remote_code=True,
                                                                       output_loading_info=True)
        assert type(model).__name__ == "MaskRCNNForInstanceSegmentation"
        assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    if (output / "image_processing_mask_rcnn.py").is_file():
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(output, trust_remote_code=True)
        assert type(processor).__name__ == "MaskRCNNImageProcessor"
        assert processor.input_channel_order == "bgr" and processor.image_std == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.parametrize("meta_style", ["2.x", "3.x"])
def test_class_names_come_from_meta(legacy, meta_style, fast_tmp):
    classes = ("balloon", "kite", "cat")
    meta = meta_2x(classes) if meta_style == "2.x" else meta_3x(classes)
    path = save_checkpoint(fast_tmp / "custom.pth", synthetic_state_dict(R50, classes), meta, legacy=legacy)
    output = convert_checkpoint(R50, path, fast_tmp / "out")
    config = json.loads((output / "config.json").read_text())
    assert config["id2label"] == {"0": "balloon", "1": "kite", "2": "cat"}
    assert config["label2id"] == {"balloon": 0, "kite": 1, "cat": 2}
    tensors, _ = read_safetensors_header(output / "model.safetensors")
    assert tensors["box_head.class_logits.weight"][1] == (4, 1024)
    assert tensors["mask_head.mask_logits.weight"][1] == (3, 256, 1, 1)


def test_values_are_moved_to_hf_names(r50_state_dict, fast_tmp):
    generator = torch.Generator().manual_seed(0)
    state_dict = dict(r50_state_dict)
    chosen = ["backbone.layer3.5.conv2.weight", "neck.fpn_convs.2.conv.weight", "rpn_head.rpn_reg.bias",
              "roi_head.bbox_head.fc_cls.weight", "roi_head.mask_head.conv_logits.weight",
              "backbone.bn1.running_var"]
    for key in chosen:
        state_dict[key] = torch.randn(state_dict[key].shape, generator=generator)
    state_dict["backbone.bn1.num_batches_tracked"] = torch.tensor(7)
    # 3.x training checkpoints keep DataParallel's "module." prefix on some tools; plain state dict, no meta
    path = save_checkpoint(fast_tmp / "plain.pth", {f"module.{k}": v for k, v in state_dict.items()}, None)
    output = convert_checkpoint(R50, path, fast_tmp / "out")
    with safe_open(str(output / "model.safetensors"), framework="pt") as stored:
        for key in chosen:
            torch.testing.assert_close(stored.get_tensor(mmdet_key_to_hf_key(key)), state_dict[key], rtol=0, atol=0)
        assert stored.get_tensor("backbone.bn1.num_batches_tracked").item() == 7


def test_half_precision_weights_are_written_as_float32(fast_tmp):
    # the 2.x fp16 zoo checkpoint was trained with model.half(); its weights may be stored in float16
    state_dict = synthetic_state_dict(R50, dtype=torch.float16)
    path = save_checkpoint(fast_tmp / "fp16.pth", state_dict, meta_2x(), legacy=True)
    output = convert_checkpoint("mask-rcnn_r50_fpn_fp16_1x_coco", path, fast_tmp / "out")
    tensors, _ = read_safetensors_header(output / "model.safetensors")
    assert {dtype for name, (dtype, _) in tensors.items() if "num_batches_tracked" not in name} == {"F32"}


def test_missing_batch_norm_counters_are_added(r50_state_dict):
    state_dict = {k: v for k, v in r50_state_dict.items() if not k.endswith("num_batches_tracked")}
    prepared = prepare_conversion(R50, state_dict, {})
    counter = prepared.hf_state_dict["backbone.layer1.0.bn1.num_batches_tracked"]
    assert counter.dtype == torch.int64 and counter.shape == () and counter.item() == 0


def test_training_checkpoint_3x_with_message_hub_loads_without_mmengine(fast_tmp, monkeypatch):
    """mmengine's HistoryBuffer and numpy arrays/scalars are allowed as data; mmengine itself is never needed."""
    module = types.ModuleType("mmengine.logging.history_buffer")

    class HistoryBuffer:  # same pickled name and state as mmengine's
        def __init__(self):
            self._log_history = np.array([0.5, 0.25])
            self._count_history = np.array([1, 1])
            self.max_length = 1000000

    HistoryBuffer.__module__, HistoryBuffer.__qualname__ = module.__name__, "HistoryBuffer"
    module.HistoryBuffer = HistoryBuffer
    for name in ("mmengine", "mmengine.logging"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, module.__name__, module)
    checkpoint = {
        "meta": {**meta_3x(("a", "b")), "cfg": "model = dict(type='MaskRCNN')", "seed": np.int64(42)},
        "state_dict": {"backbone.conv1.weight": torch.ones(2, 3)},
        "message_hub": {"log_scalars": {"train/loss": HistoryBuffer()},
                        "runtime_info": {"epoch": 12, "best": np.float64(0.38)}, "resumed_keys": {"epoch": True}},
        "optimizer": {"state": {0: {"momentum_buffer": torch.zeros(2)}}, "param_groups": [{"lr": 0.02}]},
        "param_schedulers": [{"last_step": 12, "milestones": {8: 1, 11: 1}}],
    }
    path = fast_tmp / "training.pth"
    torch.save(checkpoint, path)
    monkeypatch.delitem(sys.modules, module.__name__)  # loading must not import it

    state_dict, meta = load_mmdet_checkpoint(path)
    assert list(state_dict) == ["backbone.conv1.weight"]
    assert meta["dataset_meta"]["classes"] == ("a", "b") and int(meta["seed"]) == 42
    assert module.__name__ not in sys.modules


# ------------------------------------------------------------------------------------------------ unreadable files


@pytest.mark.parametrize("contents, expected", [
    (b"", r"is empty \(0 bytes\)"),
    (b"model = dict(type='MaskRCNN')\n", "is not a readable PyTorch checkpoint"),
])
def test_files_that_are_not_checkpoints(contents, expected, fast_tmp):
    path = fast_tmp / "weights.pth"
    path.write_bytes(contents)
    with pytest.raises(ConversionError, match=expected) as error:
        load_mmdet_checkpoint(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_checkpoint(legacy, fast_tmp):
    path = save_checkpoint(fast_tmp / "full.pth", {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)},
                           meta_2x(), legacy=legacy)
    truncated = fast_tmp / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ConversionError, match="is not a readable PyTorch checkpoint") as error:
        load_mmdet_checkpoint(truncated)
    assert str(truncated) in str(error.value)


def test_missing_file_and_non_dict_pickle(fast_tmp):
    with pytest.raises(ConversionError, match="does not exist"):
        load_mmdet_checkpoint(fast_tmp / "nope.pth")
    torch.save([torch.zeros(1)], fast_tmp / "list.pth")
    with pytest.raises(ConversionError, match="holds a list, not a checkpoint dictionary"):
        load_mmdet_checkpoint(fast_tmp / "list.pth")
    torch.save({"model": {"x": torch.zeros(1)}, "epoch": 3}, fast_tmp / "d2.pth")
    with pytest.raises(ConversionError, match="no 'state_dict' entry.*model, epoch"):
        load_mmdet_checkpoint(fast_tmp / "d2.pth")


class _CreatesFileWithOpen:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return builtins.open, (str(self.target), "w")


class _CreatesFileWithSystem:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return os.system, (f"touch {self.target}",)


@pytest.mark.parametrize("payload_class, legacy, needed", [
    (_CreatesFileWithOpen, False, "open"),
    (_CreatesFileWithSystem, True, "system"),
])
def test_pickle_with_code_is_rejected_not_executed(payload_class, legacy, needed, fast_tmp):
    target = fast_tmp / "pwned"
    path = fast_tmp / "evil.pth"
    torch.save({"meta": {"CLASSES": ("a",), "hook": payload_class(target)},
                "state_dict": {"backbone.conv1.weight": torch.zeros(1)}}, path, _use_new_zipfile_serialization=not legacy)
    assert not target.exists()
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(R50, path, fast_tmp / "out")
    message = str(error.value)
    assert message.startswith(f"Refusing to load {path}")
    assert needed in message and "Nothing was executed" in message
    assert not target.exists()
    assert not (fast_tmp / "out").exists()


def _numpy_meta_checkpoint(path: Path, numpy_module: str) -> Path:
    """Legacy-format checkpoint whose meta holds numpy scalars and an array, pickled under `numpy_module`
    ("numpy._core.multiarray" as numpy 2 writes it, "numpy.core.multiarray" as numpy 1.x did: protocol-2 GLOBAL
    opcodes are text lines, so the name can be swapped in the file)."""
    meta = {"CLASSES": ("a", "b"), "seed": np.int64(42), "best": np.float64(0.38), "hist": np.arange(3.0)}
    torch.save({"meta": meta, "state_dict": {"backbone.conv1.weight": torch.ones(2)}}, path,
               _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    written = b"numpy._core.multiarray" if b"numpy._core.multiarray" in data else b"numpy.core.multiarray"
    path.write_bytes(data.replace(written, numpy_module.encode()))
    assert numpy_module.encode() in path.read_bytes()
    return path


def _objects_only_allow_list():
    """torch 2.4/2.5's `_get_user_allowed_globals`: objects only, keyed by `__module__.__name__` (a tuple entry
    fails with AttributeError there)."""
    return {f"{entry.__module__}.{entry.__name__}": entry for entry in torch.serialization.get_safe_globals()}


@pytest.mark.parametrize("numpy_module", ["numpy.core.multiarray", "numpy._core.multiarray"])
@pytest.mark.parametrize("torch_api", ["current", "torch-2.5", "torch-2.4"])
def test_checkpoints_with_numpy_meta_load_on_every_torch_api(torch_api, numpy_module, fast_tmp, monkeypatch):
    """torch 2.4 has only the process-wide `add_safe_globals` and 2.5 no `(object, "name")` aliases: loading
    works with what each has, and the process-wide list is left as it was."""
    path = _numpy_meta_checkpoint(fast_tmp / "numpy_meta.pth", numpy_module)
    unpickler = torch._weights_only_unpickler
    if torch_api != "current":
        if not hasattr(unpickler, "_get_user_allowed_globals"):
            pytest.skip("this torch has no _get_user_allowed_globals to simulate the older allow-list with")
        monkeypatch.setattr(unpickler, "_get_user_allowed_globals", _objects_only_allow_list)
    if torch_api == "torch-2.4":
        monkeypatch.delattr(torch.serialization, "safe_globals", raising=False)
    before = set(torch.serialization.get_safe_globals())

    state_dict, meta = load_mmdet_checkpoint(path)

    assert list(state_dict) == ["backbone.conv1.weight"]
    assert int(meta["seed"]) == 42 and float(meta["best"]) == 0.38 and meta["hist"].tolist() == [0.0, 1.0, 2.0]
    assert set(torch.serialization.get_safe_globals()) == before


def test_allow_list_entries_are_objects_named_as_pickles_name_them():
    names = set()
    for entry in convert._extra_safe_globals():
        assert not isinstance(entry, tuple)  # the (object, "name") form needs torch >= 2.6
        names.add(f"{entry.__module__}.{entry.__qualname__}")
        assert entry.__name__ == entry.__qualname__
    assert {"mmengine.logging.history_buffer.HistoryBuffer", "numpy.core.multiarray._reconstruct",
            "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype", "_codecs.encode"} <= names


@pytest.mark.parametrize("error", [
    MemoryError(),
    ImportError("cannot import name 'safe_globals' from 'torch.serialization'"),
    AttributeError("module 'torch.serialization' has no attribute 'safe_globals'"),
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
    PermissionError(13, "Permission denied"),
    OSError(5, "Input/output error"),
], ids=lambda error: type(error).__name__ + (f"-{error.errno}" if isinstance(error, OSError) else ""))
def test_environment_errors_keep_their_own_message(error, zoo_checkpoint_file, monkeypatch):
    """Only damaged files are reported as damaged: an error of the environment reaches the caller unchanged."""
    def failing_load(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", failing_load)
    with pytest.raises(type(error)) as raised:
        load_mmdet_checkpoint(zoo_checkpoint_file(R50))
    assert raised.value is error


def test_a_file_that_cannot_be_opened_says_why(zoo_checkpoint_file, monkeypatch):
    def refused_open(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(convert, "open", refused_open, raising=False)
    with pytest.raises(ConversionError, match=r"Cannot open .*\.pth: Permission denied\.$") as error:
        load_mmdet_checkpoint(zoo_checkpoint_file(R50))
    assert "corrupt" not in str(error.value)


@pytest.mark.parametrize("cut", ["start", "middle", "end"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_files_cut_anywhere_are_reported_as_damaged(cut, legacy, fast_tmp):
    """A zip cut near its end makes torch's reader seek outside the file (OSError EINVAL); elsewhere it raises
    RuntimeError, the legacy reader EOFError or RuntimeError: all are a damaged file, named as such."""
    path = save_checkpoint(fast_tmp / "full.pth", {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)},
                           meta_2x(), legacy=legacy)
    data = path.read_bytes()
    length = {"start": 40, "middle": len(data) // 2, "end": len(data) - 30}[cut]
    damaged = fast_tmp / "damaged.pth"
    damaged.write_bytes(data[:length])
    with pytest.raises(ConversionError, match=r"is not a readable PyTorch checkpoint") as error:
        load_mmdet_checkpoint(damaged)
    assert str(damaged) in str(error.value)


# ------------------------------------------------------------------------------------------------ validation


def _without(state_dict: dict, prefix: str) -> dict:
    return {k: v for k, v in state_dict.items() if not k.startswith(prefix)}


def test_missing_key(r50_state_dict):
    state_dict = _without(r50_state_dict, "rpn_head.rpn_cls.weight")
    with pytest.raises(ConversionError, match=r"does not match config mask-rcnn_r50_fpn_1x_coco .*"
                                              r"1 missing: rpn_head\.rpn_cls\.weight\."):
        prepare_conversion(R50, state_dict, {})


def test_unexpected_keys_are_listed_with_counts(r50_state_dict):
    state_dict = dict(r50_state_dict)
    for index in range(20):
        state_dict[f"roi_head.extra.{index}.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError) as error:
        prepare_conversion(R50, state_dict, {})
    message = str(error.value)
    assert "20 unexpected: roi_head.extra.0.weight" in message
    assert "(8 more, 20 in all)" in message
    assert "roi_head.extra.19.weight" not in message


def test_wrong_shape(r50_state_dict):
    state_dict = dict(r50_state_dict)
    state_dict["neck.lateral_convs.1.conv.weight"] = torch.zeros(256, 256, 1, 1)
    with pytest.raises(ConversionError, match=r"1 with the wrong shape: neck\.lateral_convs\.1\.conv\.weight "
                                              r"\(256, 256, 1, 1\) \(expected \(256, 512, 1, 1\)\)"):
        prepare_conversion(R50, state_dict, {})


def test_integer_weights_are_rejected(r50_state_dict):
    state_dict = dict(r50_state_dict)
    state_dict["rpn_head.rpn_conv.bias"] = torch.zeros(256, dtype=torch.int32)
    with pytest.raises(ConversionError, match=r"1 not floating point: rpn_head\.rpn_conv\.bias \(torch\.int32\)"):
        prepare_conversion(R50, state_dict, {})


def test_class_count_must_match_classifier(r50_state_dict):
    with pytest.raises(ConversionError, match=r"Class count mismatch: the checkpoint meta has 3 classes, but "
                                              r"roi_head\.bbox_head\.fc_cls\.weight has 81 rows"):
        prepare_conversion(R50, r50_state_dict, meta_2x(("a", "b", "c")))


def test_head_without_class_names_and_not_coco():
    state_dict = synthetic_state_dict(R50, ("a", "b"))
    with pytest.raises(ConversionError, match=r"the COCO default \(no class names in the checkpoint meta\) has 80"):
        prepare_conversion(R50, state_dict, {})
    prepared = prepare_conversion(R50, state_dict, {}, class_names=["a", "b"])
    assert prepared.config.id2label == {0: "a", 1: "b"}


def test_faster_rcnn_checkpoint(r50_state_dict):
    with pytest.raises(ConversionError, match="This is a Faster R-CNN checkpoint.*no mask head"):
        prepare_conversion(R50, _without(r50_state_dict, "roi_head.mask_head."), {})


def test_cascade_mask_rcnn_checkpoint(r50_state_dict):
    state_dict = {}
    for key, value in r50_state_dict.items():
        for head in ("roi_head.bbox_head.", "roi_head.mask_head."):
            if key.startswith(head):
                for stage in range(3):
                    state_dict[key.replace(head, f"{head}{stage}.")] = value
                break
        else:
            state_dict[key] = value
    with pytest.raises(ConversionError, match=r"This is a Cascade Mask R-CNN \(or HTC\) checkpoint"):
        prepare_conversion(R50, state_dict, {})


def test_retinanet_checkpoint(r50_state_dict):
    state_dict = _without(_without(r50_state_dict, "roi_head."), "rpn_head.")
    state_dict.update({"bbox_head.retina_cls.weight": torch.zeros(720, 256, 3, 3),
                       "bbox_head.retina_reg.weight": torch.zeros(36, 256, 3, 3)})
    with pytest.raises(ConversionError, match="This is a RetinaNet checkpoint"):
        prepare_conversion(R50, state_dict, {})


def test_r101_weights_with_r50_config():
    state_dict = synthetic_state_dict(R101)
    with pytest.raises(ConversionError) as error:
        prepare_conversion(R50, state_dict, {})
    message = str(error.value)
    assert message.startswith("Backbone mismatch: the checkpoint holds a ResNet-101 (blocks 3-4-23-3) backbone, "
                              "but config mask-rcnn_r50_fpn_1x_coco expects a ResNet-50 (blocks 3-4-6-3).")
    assert "Configs with that backbone: mask-rcnn_r101-caffe_fpn_1x_coco, mask-rcnn_r101_fpn_1x_coco" in message


def test_resnext_weights_with_resnet_config():
    state_dict = synthetic_state_dict("mask-rcnn_x101-32x4d_fpn_1x_coco")
    with pytest.raises(ConversionError, match=r"holds a ResNeXt-101 32x4d .* expects a ResNet-101 .*"
                                              r"Configs with that backbone: mask-rcnn_x101-32x4d_fpn_1x_coco"):
        prepare_conversion(R101, state_dict, {})


def test_training_config_style_must_match(r50_state_dict):
    caffe_text = ("model = dict(backbone=dict(type='ResNet', depth=50, style='caffe'))\n"
                  "img_norm_cfg = dict(mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)\n")
    with pytest.raises(ConversionError, match=r"trained with backbone style 'caffe' \(config: 'pytorch'\); "
                                              r"mean=\[103\.53, 116\.28, 123\.675\]"):
        prepare_conversion(R50, r50_state_dict, meta_2x(config_text=caffe_text))
    prepare_conversion(R50_CAFFE, r50_state_dict, meta_2x(config_text=caffe_text))  # the right config passes


def test_failed_conversion_writes_nothing(r50_state_dict, fast_tmp):
    path = save_checkpoint(fast_tmp / "bad.pth", _without(r50_state_dict, "roi_head.mask_head.conv_logits"),
                           meta_2x())
    with pytest.raises(ConversionError, match="2 missing"):
        convert_checkpoint(R50, path, fast_tmp / "out")
    assert [path.name for path in fast_tmp.iterdir()] == ["bad.pth"]  # no output, no staging folder


# ------------------------------------------------------------------------------------------------ output folder


def test_converting_again_replaces_only_the_converters_own_files(zoo_checkpoint_file, fast_tmp):
    checkpoint = zoo_checkpoint_file(R50)
    output = convert_checkpoint(R50, checkpoint, fast_tmp / "out")
    (output / "notes.txt").write_text("the user's own file")
    (output / "model.safetensors").write_bytes(b"stale weights")
    convert_checkpoint(R50, checkpoint, fast_tmp / "out")
    assert (output / "notes.txt").read_text() == "the user's own file"
    assert (output / "model.safetensors").stat().st_size > 1000
    assert not [path.name for path in output.iterdir() if path.name.startswith(".convert-partial")]


def test_converting_into_a_repository_checkout_keeps_everything_else(zoo_checkpoint_file, fast_tmp):
    """`--output-dir .` from the repository root must only add the weights and refresh the configs."""
    checkout = fast_tmp / "checkout"
    (checkout / "tests").mkdir(parents=True)
    (checkout / ".git").mkdir()
    (checkout / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (checkout / "tests" / "test_something.py").write_text("def test(): pass\n")
    card = "---\nlicense: apache-2.0\nwidget:\n  - src: samples/old.jpg\n---\n# The project's own card\n"
    (checkout / "README.md").write_text(card)
    (checkout / ".gitattributes").write_text("*.png binary\n")
    for path in convert.REPO_ROOT.glob("*.py"):
        shutil.copyfile(path, checkout / path.name)
    convert_checkpoint(R50, zoo_checkpoint_file(R50), checkout)
    assert (checkout / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (checkout / "tests" / "test_something.py").is_file()
    assert (checkout / "model.safetensors").is_file() and (checkout / "config.json").is_file()
    # the card keeps its text; only its widget examples are the converter's (without outputs: none were computed)
    front, body = hub_folder.split_card((checkout / "README.md").read_text())
    assert body == "# The project's own card\n" and front["license"] == "apache-2.0"
    assert front["widget"] == hub_folder.WIDGET_EXAMPLES
    # .gitattributes keeps its lines and gains the LFS rules
    assert (checkout / ".gitattributes").read_text().startswith("*.png binary\n*.safetensors filter=lfs")


def test_a_folder_holding_another_models_config_is_refused(zoo_checkpoint_file, fast_tmp):
    other = fast_tmp / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ConversionError, match="not a Mask R-CNN config"):
        convert_checkpoint(R50, zoo_checkpoint_file(R50), other)
    assert json.loads((other / "config.json").read_text()) == {"model_type": "bert"}
    assert sorted(path.name for path in other.iterdir()) == ["config.json"]


# ------------------------------------------------------------------------------------------------ downloads


def _publish_locally(monkeypatch, fast_tmp: Path, config_name: str, source: Path, sha256_prefix: str) -> Path:
    """Serve `source` as the official file of `config_name` from a file:// zoo whose file name carries
    `sha256_prefix`; returns the served path."""
    entry = ZOO[config_name]
    weights_path = entry.weights_path.rsplit("-", 1)[0] + f"-{sha256_prefix}.pth"
    served = fast_tmp / "zoo" / weights_path
    served.parent.mkdir(parents=True)
    served.write_bytes(source.read_bytes())
    monkeypatch.setitem(ZOO, config_name, dataclasses.replace(entry, weights_path=weights_path))
    monkeypatch.setattr(convert, "ZOO_URL_PREFIX", (fast_tmp / "zoo").as_uri() + "/")
    return served


def test_zoo_download_checks_sha256_and_is_cached(zoo_checkpoint_file, fast_tmp, monkeypatch):
    checkpoint = zoo_checkpoint_file(R50)
    served = _publish_locally(monkeypatch, fast_tmp, R50, checkpoint, convert.sha256_of_file(checkpoint)[:8])
    output = convert_checkpoint(R50, None, fast_tmp / "out")
    assert (output / "model.safetensors").is_file()
    cached = fast_tmp / "cache" / served.name
    assert cached.is_file()

    downloads = []
    monkeypatch.setattr(convert, "_download_url", lambda url, destination: downloads.append(url))
    assert convert.fetch_checkpoint(R50) == cached and downloads == []  # verified cache hit, no download


def test_zoo_download_with_wrong_checksum_fails(zoo_checkpoint_file, fast_tmp, monkeypatch):
    checkpoint = zoo_checkpoint_file(R50)
    actual = convert.sha256_of_file(checkpoint)
    wrong = "00000000" if not actual.startswith("00000000") else "11111111"
    _publish_locally(monkeypatch, fast_tmp, R50, checkpoint, wrong)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(R50, None, fast_tmp / "out")
    message = str(error.value)
    assert f"should start with {wrong}" in message and actual in message
    assert not (fast_tmp / "out").exists()
    assert list((fast_tmp / "cache").iterdir()) == []  # the bad download is not kept


def test_wrong_published_hash_can_be_overridden_by_the_flag_the_error_names(zoo_checkpoint_file, fast_tmp,
                                                                           monkeypatch, caplog):
    checkpoint = zoo_checkpoint_file(R50)
    actual = convert.sha256_of_file(checkpoint)
    wrong = "00000000" if not actual.startswith("00000000") else "11111111"
    served = _publish_locally(monkeypatch, fast_tmp, R50, checkpoint, wrong)
    with pytest.raises(ConversionError, match="--allow-hash-mismatch"):
        convert_checkpoint(R50, None, fast_tmp / "out")

    with caplog.at_level("WARNING", logger=convert.logger.name):
        output = convert_checkpoint(R50, None, fast_tmp / "out", allow_hash_mismatch=True)
    assert (output / "model.safetensors").is_file()
    assert any(wrong in record.getMessage() and actual in record.getMessage() for record in caplog.records)
    cached = fast_tmp / "cache" / served.name
    assert cached.is_file()  # kept: the next run with the flag reuses it instead of downloading again
    downloads = []
    monkeypatch.setattr(convert, "_download_url", lambda url, destination: downloads.append(url))
    assert convert.fetch_checkpoint(R50, allow_hash_mismatch=True) == cached and downloads == []


def test_cli_flag_accepts_a_local_official_file_with_a_wrong_hash(zoo_checkpoint_file, fast_tmp):
    copy = fast_tmp / ZOO[R50].url.rsplit("/", 1)[-1]
    copy.write_bytes(zoo_checkpoint_file(R50).read_bytes())
    arguments = ["--config", R50, "--checkpoint", str(copy), "--output-dir", str(fast_tmp / "out")]
    assert convert.main(arguments) == 1
    assert not (fast_tmp / "out").exists()
    assert convert.main([*arguments, "--allow-hash-mismatch"]) == 0
    assert (fast_tmp / "out" / "model.safetensors").is_file()


def test_official_file_name_given_locally_is_checked(zoo_checkpoint_file, fast_tmp):
    official_name = ZOO[R50].url.rsplit("/", 1)[-1]
    copy = fast_tmp / official_name
    copy.write_bytes(zoo_checkpoint_file(R50).read_bytes())
    with pytest.raises(ConversionError, match=f"should start with {ZOO[R50].sha256_prefix}"):
        convert_checkpoint(R50, copy, fast_tmp / "out")


def test_offline_download_gives_one_clear_sentence(fast_tmp, monkeypatch):
    def no_network(url, destination):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(convert, "_download_url", no_network)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(R50, None, fast_tmp / "out")
    assert str(error.value) == (
        f"Could not download {ZOO[R50].url} ([Errno -3] Temporary failure in name resolution; no network?) — "
        "pass --checkpoint PATH to a local copy.")
    assert not (fast_tmp / "out").exists()


def test_checkpoint_urls(zoo_checkpoint_file, fast_tmp, monkeypatch):
    checkpoint = zoo_checkpoint_file(R50)
    output = convert_checkpoint(R50, checkpoint.as_uri(), fast_tmp / "from_file_url")
    assert (output / "model.safetensors").is_file()

    requested = []

    def fake_http(url, destination):
        requested.append(url)
        Path(destination).write_bytes(checkpoint.read_bytes())

    monkeypatch.setattr(convert, "_download_url", fake_http)
    output = convert_checkpoint(R50, "https://example.org/weights/my_mask_rcnn.pth", fast_tmp / "from_http")
    assert requested == ["https://example.org/weights/my_mask_rcnn.pth"]
    assert (output / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------ push to hub


def test_push_without_token_fails_before_converting(zoo_checkpoint_file, fast_tmp, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(ConversionError, match="--push-to-hub needs a Hugging Face token.*Nothing was converted"):
        convert_checkpoint(R50, zoo_checkpoint_file(R50), fast_tmp / "out", push_to_hub="me/mask-rcnn")
    assert not (fast_tmp / "out").exists()


def test_push_uploads_folder_and_keeps_it_when_upload_fails(zoo_checkpoint_file, fast_tmp, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        fail = False

        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
            calls.append(("create", repo_id))

        def upload_folder(self, folder_path, repo_id, repo_type=None, allow_patterns=None, commit_message=None):
            if FakeApi.fail:
                raise RuntimeError("401 Unauthorized")
            calls.append(("upload", folder_path, repo_id, allow_patterns))

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test")
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    output = convert_checkpoint(R50, zoo_checkpoint_file(R50), fast_tmp / "out", push_to_hub="me/mask-rcnn")
    assert calls == [("token", "hf_test"), ("create", "me/mask-rcnn"),
                     ("upload", str(output), "me/mask-rcnn", hub_folder.hub_files(output))]

    FakeApi.fail = True
    with pytest.raises(ConversionError, match="was written and kept, but uploading it to me/mask-rcnn failed: "
                                              "401 Unauthorized"):
        convert_checkpoint(R50, zoo_checkpoint_file(R50), fast_tmp / "out2", push_to_hub="me/mask-rcnn")
    assert (fast_tmp / "out2" / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------ command line


def _run_cli(*arguments: str, cache: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, convert.CACHE_DIR_ENV: str(cache)}
    return subprocess.run([sys.executable, str(REPO_ROOT / "convert_mmdet_checkpoint.py"), *arguments],
                          capture_output=True, text=True, env=environment, timeout=300)


def test_cli_success_and_unknown_config(zoo_checkpoint_file, fast_tmp):
    result = _run_cli("--config", "mask-rcnn_r50_fpn_mstrain-poly_3x_coco.py", "--checkpoint",
                      str(zoo_checkpoint_file(R50)), "--output-dir", str(fast_tmp / "out"), cache=fast_tmp)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str((fast_tmp / "out").resolve())
    assert json.loads((fast_tmp / "out" / "config.json").read_text())["mmdet_config_name"] == \
        "mask-rcnn_r50_fpn_ms-poly-3x_coco"

    result = _run_cli("--config", "mask-rcnn_r18_fpn_1x_coco", "--output-dir", str(fast_tmp / "x"), cache=fast_tmp)
    assert result.returncode == 1
    assert result.stderr.startswith("error: Unknown MMDetection Mask R-CNN config 'mask-rcnn_r18_fpn_1x_coco'")
    assert "mask-rcnn_r50_fpn_1x_coco" in result.stderr and "Traceback" not in result.stderr


def test_cli_main_reports_errors_in_one_message(fast_tmp, capsys):
    text_file = fast_tmp / "notes.pth"
    text_file.write_text("not a checkpoint")
    exit_code = convert.main(["--config", R50, "--checkpoint", str(text_file), "--output-dir", str(fast_tmp / "y")])
    captured = capsys.readouterr()
    assert exit_code == 1
    assert captured.err.strip().splitlines()[-1].startswith(f"error: {text_file} is not a readable PyTorch checkpoint")
    assert "Traceback" not in captured.err and not (fast_tmp / "y").exists()


def test_write_failure_leaves_no_partial_folder(zoo_checkpoint_file, fast_tmp, monkeypatch):
    def disk_full(prepared, folder, code_dir=convert.REPO_ROOT, card=None):
        (folder / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert, "write_hf_folder", disk_full)
    with pytest.raises(ConversionError, match=r"Writing .*out failed \(No space left on device\)"):
        convert_checkpoint(R50, zoo_checkpoint_file(R50), fast_tmp / "out")
    assert list(fast_tmp.iterdir()) == []
