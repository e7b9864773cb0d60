# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The converted folder loads and runs AS A HUB USER WOULD, and the repo's Hub files are what the converter writes.

One synthetic MMDetection checkpoint is converted once per session (`build_hub_folder`, shared with
test_pipeline.py). A fresh Python process then loads that folder from another working directory, with an empty
`HF_HOME` and `HF_HUB_OFFLINE=1`, through `pipeline(..., trust_remote_code=True)` (both tasks),
`AutoModel`/`AutoImageProcessor`, `save_pretrained` round trips, and without `trust_remote_code`. It writes what it
saw to JSON + npz; the tests below check it field by field.

Speed: the test folder keeps the real R50-FPN weights layout but caps detections/proposals and resizes images to
at most 320x224 (`TEST_SPEED_SETTINGS`), so a forward pass takes about a second instead of ten.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import convert_mmdet_checkpoint as converter  # noqa: E402

DEFAULT_CONFIG = "mask-rcnn_r50_fpn_1x_coco"
# The synthetic weights are calibrated for full-size images; at the 320x224 test size few scores reach the default
# 0.5, so the simulated user passes a lower threshold (set when the pipelines are created).
USER_THRESHOLD = 0.05
IMAGES = REPO_ROOT / "tests" / "fixtures" / "images"
# photo: 640x480 -> resized 299x224, padded 320x224. tiny: 97x61 -> resized 320x201, padded 320x224 as well, but
# wider before padding. portrait: 427x640 -> resized 214x320, padded 224x320 (another canvas than the others).
PHOTO, TINY, PORTRAIT = IMAGES / "photo_640x480.png", IMAGES / "tiny_97x61.png", IMAGES / "portrait_427x640.png"
HUB_FILES = ("config.json", "preprocessor_config.json")
TEST_SPEED_SETTINGS = {
    "config.json": {"max_detections_per_image": 8, "rpn_max_proposals": 100, "rpn_pre_nms_top_k": 200},
    "preprocessor_config.json": {"resize_scale": [320, 224]},
}


def _test_class_name(index: int, name: str) -> str:
    """Class names of the test folder: COCO names made unique to this test, to prove labels come from id2label."""
    return f"{name} #{index}"


@dataclass
class HubFolder:
    path: Path
    converter_json: Dict[str, Dict[str, Any]]  # config.json / preprocessor_config.json exactly as converted
    id2label: Dict[int, str]


_CACHE: Dict[str, HubFolder] = {}


def build_hub_folder(tmp_path_factory) -> HubFolder:
    """Convert one synthetic R50-FPN checkpoint (once per session) and apply the test speed settings."""
    if "folder" in _CACHE:
        return _CACHE["folder"]
    from synthetic_weights import save_synthetic_checkpoint

    base = tmp_path_factory.mktemp("hub")
    checkpoint = save_synthetic_checkpoint(str(base / "synthetic_r50.pth"), DEFAULT_CONFIG, seed=0)
    folder = converter.convert_checkpoint(DEFAULT_CONFIG, checkpoint, base / "mask-rcnn-synthetic")
    os.remove(checkpoint)
    converter_json = {name: json.loads((folder / name).read_text(encoding="utf-8")) for name in HUB_FILES}

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    id2label = {int(index): _test_class_name(int(index), name) for index, name in config["id2label"].items()}
    config.update(TEST_SPEED_SETTINGS["config.json"])
    config["id2label"] = {str(index): name for index, name in id2label.items()}
    config["label2id"] = {name: index for index, name in id2label.items()}
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    processor = json.loads((folder / "preprocessor_config.json").read_text(encoding="utf-8"))
    processor.update(TEST_SPEED_SETTINGS["preprocessor_config.json"])
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n", encoding="utf-8")
    _CACHE["folder"] = HubFolder(path=folder, converter_json=converter_json, id2label=id2label)
    return _CACHE["folder"]


@pytest.fixture(scope="session")
def hub_folder(tmp_path_factory) -> HubFolder:
    return build_hub_folder(tmp_path_factory)


def hub_user_env(hf_home: Path) -> Dict[str, str]:
    """Environment of a user who has nothing but the folder: empty HF_HOME, offline, no repo on PYTHONPATH."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and name != "PYTHONPATH"}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", TOKENIZERS_PARALLELISM="false",
               PYTHONDONTWRITEBYTECODE="1")
    return env


# ------------------------------------------------------------------------------------------------------------------
# The repo's own config.json / preprocessor_config.json are the converter's output for the default model
# ------------------------------------------------------------------------------------------------------------------


def _model_specific_keys() -> set:
    import inspect

    from configuration_mask_rcnn import MaskRCNNConfig

    return set(inspect.signature(MaskRCNNConfig.__init__).parameters) - {"self", "kwargs"} | {
        "auto_map", "architectures", "custom_pipelines", "id2label", "label2id", "model_type", "dtype"}


@pytest.mark.parametrize("name", HUB_FILES)
def test_root_hub_files_equal_converter_output(hub_folder, name):
    root = json.loads((REPO_ROOT / name).read_text(encoding="utf-8"))
    written = hub_folder.converter_json[name]
    if name == "config.json" and root.get("transformers_version") != written.get("transformers_version"):
        # Another transformers version writes its own set of generic PretrainedConfig fields and version stamp;
        # everything this model defines must still be identical.
        keys = _model_specific_keys()
        assert keys <= set(root) and keys <= set(written)
        root = {key: value for key, value in root.items() if key in keys}
        written = {key: value for key, value in written.items() if key in keys}
    assert root == written, (
        f"{name} at the repo root differs from convert_mmdet_checkpoint's output for {DEFAULT_CONFIG}; regenerate it "
        f"with: python convert_mmdet_checkpoint.py --config {DEFAULT_CONFIG} --output-dir <tmp> and copy {name}")


def test_root_auto_map_and_custom_pipelines_follow_the_rules():
    import transformers

    config = json.loads((REPO_ROOT / "config.json").read_text(encoding="utf-8"))
    processor = json.loads((REPO_ROOT / "preprocessor_config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "mask_rcnn"
    assert processor["auto_map"] == {"AutoImageProcessor": "image_processing_mask_rcnn.MaskRCNNImageProcessor"}
    assert set(config["auto_map"]) >= {"AutoConfig", "AutoModel", "AutoModelForObjectDetection"}
    references = list(config["auto_map"].values()) + list(processor["auto_map"].values())
    references += [task["impl"] for task in config["custom_pipelines"].values()]
    for reference in references:
        module, class_name = reference.split(".")  # exactly one dot, as the loader requires
        source = (REPO_ROOT / f"{module}.py").read_text(encoding="utf-8")
        assert re.search(rf"^class {class_name}\b", source, re.MULTILINE), reference
    assert set(config["custom_pipelines"]) == {"image-segmentation", "object-detection"}
    for task in config["custom_pipelines"].values():
        assert task["pt"] and all(name in config["auto_map"] for name in task["pt"])
        assert all(hasattr(transformers, name) for name in task["pt"])


# ------------------------------------------------------------------------------------------------------------------
# A Hub user in a fresh process
# ------------------------------------------------------------------------------------------------------------------

HUB_USER_SCRIPT = textwrap.dedent(r'''
    import inspect, json, logging, os, sys
    import numpy as np
    from PIL import Image
    import torch
    import transformers
    from transformers import AutoImageProcessor, AutoModel, pipeline

    class Recorder(logging.Handler):
        """Every warning and error transformers and huggingface_hub log (shown to a user at default verbosity)."""
        def __init__(self):
            super().__init__(logging.WARNING)
            self.records = []
        def emit(self, record):
            self.records.append({"level": record.levelname, "logger": record.name, "message": record.getMessage()})
    recorder = Recorder()
    transformers.logging.set_verbosity_warning()
    for name in ("transformers", "huggingface_hub"):
        logging.getLogger(name).addHandler(recorder)
    # transformers >= 4.56 (and pipeline()) call it dtype; 4.46-4.55 only know torch_dtype in pipeline()
    pipeline_dtype = "dtype" if "dtype" in inspect.signature(pipeline).parameters else "torch_dtype"

    folder, work, photo, tiny, portrait = sys.argv[1:6]
    threshold = float(sys.argv[6])  # a user's threshold, given to the pipelines when they are created
    report, masks = {"transformers_version": transformers.__version__, "cwd": os.getcwd()}, {}

    def record(name, annotations):
        described = []
        for index, annotation in enumerate(annotations):
            item = {"keys": list(annotation), "types": {k: type(v).__name__ for k, v in annotation.items()}}
            item.update({k: annotation[k] for k in ("score", "label", "box") if k in annotation})
            if "box" in annotation:
                item["box_types"] = [type(v).__name__ for v in annotation["box"].values()]
            if "mask" in annotation:
                mask = annotation["mask"]
                array = np.asarray(mask)
                item["mask"] = {"mode": mask.mode, "size": list(mask.size), "values": np.unique(array).tolist()}
                masks[f"{name}/{index}"] = np.packbits(array > 0)
                masks[f"{name}/{index}/shape"] = np.array(array.shape)
            described.append(item)
        report[name] = described

    # 1. without trust_remote_code: transformers must refuse with its own ValueError (stdin is not a TTY)
    for task in ("image-segmentation", "object-detection"):
        try:
            pipeline(task, model=folder, device="cpu")
            report[f"untrusted/{task}"] = {"error": None}
        except Exception as error:
            report[f"untrusted/{task}"] = {"error": type(error).__name__, "message": str(error)}

    # 2. the segmentation pipeline: single images, then real batches of two (the last batch holds one image)
    segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True, device="cpu",
                         threshold=threshold)
    report["segmenter"] = {"class": type(segmenter).__name__, "processor": type(segmenter.image_processor).__name__,
                           "model": type(segmenter.model).__name__}
    record("seg/photo", segmenter(photo))
    record("seg/tiny", segmenter(tiny))
    batch = segmenter([portrait, photo, tiny], batch_size=2)
    for name, annotations in zip(("portrait", "photo", "tiny"), batch):
        record(f"seg/batch/{name}", annotations)

    # 3. the same by hand: processor on the list (pads together) + model + post-processing
    model, info = AutoModel.from_pretrained(folder, trust_remote_code=True, output_loading_info=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    report["loading_info"] = {key: sorted(map(str, value)) for key, value in info.items()}
    report["auto_classes"] = {"model": type(model).__name__, "processor": type(processor).__name__}
    id2label = model.config.id2label
    def by_hand(images, name_list):
        with torch.no_grad():
            outputs = model(**processor(images, return_tensors="pt"))
        for name, result in zip(name_list, processor.post_process_instance_segmentation(outputs, threshold=threshold)):
            record(name, [{"score": float(s), "label": id2label[int(l)],
                           "mask": Image.fromarray(m.numpy().astype(np.uint8) * 255),
                           "box": dict(zip(("xmin", "ymin", "xmax", "ymax"), b.int().tolist()))}
                          for s, l, m, b in zip(result["scores"], result["labels"], result["masks"], result["boxes"])])
        return outputs
    by_hand([portrait, photo], ["hand/batch/portrait", "hand/batch/photo"])
    single_outputs = by_hand([photo], ["hand/photo"])

    # 4. the detection pipeline on a batch of two images that pad to the same canvas
    detector = pipeline("object-detection", model=folder, trust_remote_code=True, device="cpu", threshold=threshold)
    report["detector"] = {"class": type(detector).__name__}
    for name, annotations in zip(("photo", "tiny"), detector([photo, tiny], batch_size=2)):
        record(f"det/batch/{name}", annotations)

    # 5. round trips: model.save_pretrained / from_pretrained, pipeline.save_pretrained / pipeline()
    model.save_pretrained(f"{work}/saved-model")
    reloaded, reloaded_info = AutoModel.from_pretrained(f"{work}/saved-model", trust_remote_code=True,
                                                        output_loading_info=True)
    with torch.no_grad():
        again = reloaded(**processor([photo], return_tensors="pt"))
    report["model_round_trip"] = {
        "loading_info": {key: sorted(map(str, value)) for key, value in reloaded_info.items()},
        "identical": all(torch.equal(a, b) for field in ("pred_boxes", "scores", "labels", "mask_probs")
                         for a, b in zip(single_outputs[field], again[field])),
        "detections": int(again["scores"][0].shape[0]),
    }
    segmenter.save_pretrained(f"{work}/saved-pipeline")
    saved_config = json.load(open(f"{work}/saved-pipeline/config.json"))
    report["pipeline_saved"] = {"files": sorted(os.listdir(f"{work}/saved-pipeline")),
                                "custom_pipelines": saved_config.get("custom_pipelines"),
                                "auto_map": saved_config.get("auto_map")}
    reloaded_segmenter = pipeline("image-segmentation", model=f"{work}/saved-pipeline", trust_remote_code=True,
                                  device="cpu", threshold=threshold)
    record("reloaded/seg/photo", reloaded_segmenter(photo))
    reloaded_detector = pipeline("object-detection", model=f"{work}/saved-pipeline", trust_remote_code=True,
                                 device="cpu")
    report["reloaded_detector"] = {"class": type(reloaded_detector).__name__}

    # 6. model.save_pretrained + processor.save_pretrained into one folder: a folder both pipelines load
    model.save_pretrained(f"{work}/saved-parts")
    processor.save_pretrained(f"{work}/saved-parts")
    report["parts_saved"] = {"files": sorted(os.listdir(f"{work}/saved-parts"))}
    parts_segmenter = pipeline("image-segmentation", model=f"{work}/saved-parts", trust_remote_code=True,
                               device="cpu", threshold=threshold)
    record("parts/seg/photo", parts_segmenter(photo))
    parts_detector = pipeline("object-detection", model=f"{work}/saved-parts", trust_remote_code=True, device="cpu")
    report["parts_detector"] = {"class": type(parts_detector).__name__}

    # 7. reduced precision: from_pretrained(dtype=) on every version, save, reload with "auto"; pipeline(dtype=)
    bf16_model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.bfloat16)
    bf16_model.save_pretrained(f"{work}/saved-bf16")
    saved_config = json.load(open(f"{work}/saved-bf16/config.json"))
    reloaded_bf16 = AutoModel.from_pretrained(f"{work}/saved-bf16", trust_remote_code=True, dtype="auto")
    bf16_segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True, device="cpu",
                              threshold=threshold, **{pipeline_dtype: torch.bfloat16})
    report["bf16"] = {"loaded": str(bf16_model.dtype), "saved": saved_config.get("dtype", saved_config.get("torch_dtype")),
                      "reloaded": str(reloaded_bf16.dtype), "pipeline_model": str(bf16_segmenter.model.dtype),
                      "pipeline_instances": len(bf16_segmenter(photo))}
    report["log_records"] = recorder.records

    json.dump(report, open(f"{work}/report.json", "w"), indent=1)
    np.savez_compressed(f"{work}/masks.npz", **masks)
''')


@pytest.fixture(scope="session")
def hub_run(hub_folder, tmp_path_factory) -> Dict[str, Any]:
    work = tmp_path_factory.mktemp("hub-user")
    script = work / "hub_user.py"
    script.write_text(HUB_USER_SCRIPT, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(script), str(hub_folder.path), str(work), str(PHOTO), str(TINY), str(PORTRAIT),
         str(USER_THRESHOLD)],
        cwd=work, env=hub_user_env(work / "hf_home"), stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=600)
    assert completed.returncode == 0, f"hub-user process failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    with np.load(work / "masks.npz") as data:
        stored = {key: data[key] for key in data.files}
    report["_masks"] = {
        key: np.unpackbits(value)[: int(np.prod(stored[f"{key}/shape"]))].reshape(stored[f"{key}/shape"]).astype(bool)
        for key, value in stored.items() if not key.endswith("/shape")}
    report["_work"] = work
    return report


def _mask(run: Dict[str, Any], name: str, index: int) -> np.ndarray:
    return run["_masks"][f"{name}/{index}"]


def _without_masks(annotations: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [{key: value for key, value in item.items() if key in ("score", "label", "box")} for item in annotations]


def _same_results(run: Dict[str, Any], first: str, second: str) -> None:
    """Bit-identical results: same scores, labels, boxes and every mask pixel."""
    assert _without_masks(run[first]) == _without_masks(run[second]), (first, second)
    for index in range(len(run[first])):
        if "mask" in run[first][index]:
            assert np.array_equal(_mask(run, first, index), _mask(run, second, index)), (first, second, index)


def test_untrusted_loading_is_refused_by_transformers(hub_run):
    for task in ("image-segmentation", "object-detection"):
        outcome = hub_run[f"untrusted/{task}"]
        assert outcome["error"] == "ValueError", outcome
        assert "trust_remote_code=True" in outcome["message"], outcome["message"]


def test_pipelines_load_the_repo_classes(hub_run):
    assert hub_run["segmenter"] == {"class": "MaskRCNNSegmentationPipeline", "processor": "MaskRCNNImageProcessor",
                                    "model": "MaskRCNNForInstanceSegmentation"}
    assert hub_run["detector"] == {"class": "MaskRCNNDetectionPipeline"}
    assert hub_run["cwd"] == str(hub_run["_work"])  # ran outside the repository


def test_auto_classes_load_with_empty_loading_info(hub_run):
    assert hub_run["auto_classes"] == {"model": "MaskRCNNForInstanceSegmentation",
                                       "processor": "MaskRCNNImageProcessor"}
    assert set(hub_run["loading_info"]) >= {"missing_keys", "unexpected_keys", "mismatched_keys"}
    assert all(value == [] for value in hub_run["loading_info"].values()), hub_run["loading_info"]


IMAGE_SIZES = {"photo": (640, 480), "tiny": (97, 61), "portrait": (427, 640)}  # (width, height)
ANNOTATION_TYPES = {"score": "float", "label": "str", "mask": "Image", "box": "dict"}


@pytest.mark.parametrize("name", ["seg/photo", "seg/tiny", "seg/batch/portrait", "seg/batch/photo", "seg/batch/tiny",
                                  "det/batch/photo", "det/batch/tiny"])
def test_output_format_field_by_field(hub_run, hub_folder, name):
    annotations = hub_run[name]
    fields = ["score", "label", "mask", "box"] if name.startswith("seg/") else ["score", "label", "box"]
    width, height = IMAGE_SIZES[name.rsplit("/", 1)[-1]]
    assert annotations, f"{name}: the synthetic model must detect something"
    assert len(annotations) <= TEST_SPEED_SETTINGS["config.json"]["max_detections_per_image"]
    scores = [item["score"] for item in annotations]
    assert scores == sorted(scores, reverse=True)
    for item in annotations:
        assert item["keys"] == fields
        assert item["types"] == {field: ANNOTATION_TYPES[field] for field in fields}
        assert USER_THRESHOLD <= item["score"] <= 1.0
        assert item["label"] in hub_folder.id2label.values()
        if "mask" in fields:
            assert item["mask"]["mode"] == "L" and item["mask"]["size"] == [width, height]
            assert set(item["mask"]["values"]) <= {0, 255}
        assert list(item["box"]) == ["xmin", "ymin", "xmax", "ymax"] and item["box_types"] == ["int"] * 4
        box = item["box"]
        assert 0 <= box["xmin"] <= box["xmax"] <= width and 0 <= box["ymin"] <= box["ymax"] <= height


def test_labels_come_from_id2label(hub_run):
    labels = {item["label"] for name in ("seg/photo", "seg/tiny", "det/batch/photo") for item in hub_run[name]}
    assert labels and all(re.fullmatch(r".+ #\d+", label) for label in labels)  # the test folder's own names
    assert [item["label"] for item in hub_run["seg/photo"]] == [item["label"] for item in hub_run["hand/photo"]]


def test_single_image_call_equals_processor_model_postprocess(hub_run):
    _same_results(hub_run, "seg/photo", "hand/photo")


def test_batched_call_equals_the_processors_padded_batch(hub_run):
    """portrait (214x320 resized) and photo (299x224) differ in size: with batch_size=2 they run in ONE forward
    pass, padded together to 320x320 exactly as the image processor pads a list of images (as MMDetection does)."""
    _same_results(hub_run, "seg/batch/portrait", "hand/batch/portrait")
    _same_results(hub_run, "seg/batch/photo", "hand/batch/photo")


def test_image_alone_in_the_last_batch_equals_a_single_call(hub_run):
    _same_results(hub_run, "seg/batch/tiny", "seg/tiny")


def _matches_within_rounding(single: List[Dict[str, Any]], batched: List[Dict[str, Any]]) -> int:
    """How many single-call detections have a batched twin: same label, score within 1e-4, box within 1 px."""
    matched = 0
    for item in single:
        if any(other["label"] == item["label"] and abs(other["score"] - item["score"]) <= 1e-4
               and all(abs(other["box"][key] - item["box"][key]) <= 1 for key in item["box"]) for other in batched):
            matched += 1
    return matched


def test_batched_vs_single_calls_with_the_same_padding(hub_run):
    """photo (299x224) and tiny (320x201) both pad to 320x224, alone or together, so batching them adds no padding.

    The detections then agree up to float32 rounding: oneDNN may pick other convolution kernels for a batch of 2
    than for 1 (FPN features differ by ~1e-5, or not at all). Every detection keeps a twin (same label, score within
    1e-4, box within 1 px), except at most one that a rounding difference moves across the threshold or the
    detection cap. Images padded further than on their own (photo next to portrait above) see other features near
    their right/bottom border and may get different detections -- the same holds in MMDetection.
    """
    for name in ("photo", "tiny"):
        single, batched = hub_run[f"seg/{name}"], hub_run[f"det/batch/{name}"]
        assert abs(len(single) - len(batched)) <= 1, (name, len(single), len(batched))
        assert _matches_within_rounding(single, batched) >= len(single) - 1, (name, single, batched)


def test_model_save_pretrained_round_trip_is_identical(hub_run):
    round_trip = hub_run["model_round_trip"]
    assert round_trip["identical"] and round_trip["detections"] > 0
    assert all(value == [] for value in round_trip["loading_info"].values()), round_trip["loading_info"]


def test_pipeline_save_pretrained_keeps_both_tasks_and_all_code(hub_run, hub_folder):
    saved = hub_run["pipeline_saved"]
    import hub_folder_mask_rcnn

    assert saved["custom_pipelines"] == hub_folder_mask_rcnn.CUSTOM_PIPELINES
    code_files = {name for name in os.listdir(hub_folder.path) if name.endswith(".py")}
    assert set(saved["files"]) >= {"config.json", "preprocessor_config.json", "model.safetensors", *code_files}
    assert set(saved["auto_map"]) >= set(hub_folder_mask_rcnn.CONFIG_AUTO_MAP)
    assert hub_run["reloaded_detector"] == {"class": "MaskRCNNDetectionPipeline"}
    _same_results(hub_run, "reloaded/seg/photo", "seg/photo")


def test_model_and_processor_save_pretrained_make_a_folder_both_pipelines_load(hub_run, hub_folder):
    code_files = {name for name in os.listdir(hub_folder.path) if name.endswith(".py")}
    assert set(hub_run["parts_saved"]["files"]) >= {"config.json", "preprocessor_config.json", "model.safetensors",
                                                   "requirements.txt", ".gitattributes", *code_files}
    assert hub_run["parts_detector"] == {"class": "MaskRCNNDetectionPipeline"}
    _same_results(hub_run, "parts/seg/photo", "seg/photo")


def test_reduced_precision_loads_saves_and_reloads(hub_run):
    assert hub_run["bf16"] == {"loaded": "torch.bfloat16", "saved": "bfloat16", "reloaded": "torch.bfloat16",
                               "pipeline_model": "torch.bfloat16",
                               "pipeline_instances": hub_run["bf16"]["pipeline_instances"]}


# Warnings transformers itself prints on every healthy pipeline() call in some versions (4.x: "Device set to use
# cpu" even with device="cpu"); anything else a healthy run logs at WARNING or above is a defect of this repository.
NEUTRAL_TRANSFORMERS_WARNINGS = (r"Device set to use \w+",)


def test_a_healthy_run_logs_no_error_and_no_unexpected_warning(hub_run):
    records = hub_run["log_records"]
    assert not [record for record in records if record["level"] in ("ERROR", "CRITICAL")], records
    unexpected = [record for record in records
                  if not any(re.fullmatch(pattern, record["message"]) for pattern in NEUTRAL_TRANSFORMERS_WARNINGS)]
    assert not unexpected, unexpected


# ------------------------------------------------------------------------------------------------------------------
# --push-to-hub: clear failures, nothing lost
# ------------------------------------------------------------------------------------------------------------------


def _run_converter(arguments: List[str], cwd: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "convert_mmdet_checkpoint.py"), *arguments], cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)


def test_push_to_hub_without_token_fails_before_any_work(tmp_path):
    env = hub_user_env(tmp_path / "hf_home")
    env.pop("HF_HUB_OFFLINE")
    missing_checkpoint = tmp_path / "not-downloaded-yet.pth"
    completed = _run_converter(["--config", DEFAULT_CONFIG, "--checkpoint", str(missing_checkpoint),
                                "--output-dir", str(tmp_path / "out"), "--push-to-hub", "someone/mask-rcnn"],
                               tmp_path, env)
    assert completed.returncode == 1
    assert "needs a Hugging Face token" in completed.stderr and "Traceback" not in completed.stderr
    assert not (tmp_path / "out").exists()


def test_push_to_hub_without_network_keeps_the_converted_folder(tmp_path):
    from synthetic_weights import save_synthetic_checkpoint

    checkpoint = save_synthetic_checkpoint(str(tmp_path / "synthetic.pth"), DEFAULT_CONFIG)
    env = hub_user_env(tmp_path / "hf_home")
    env.update(HF_TOKEN="hf_" + "x" * 34, HF_ENDPOINT="http://127.0.0.1:9")  # nothing listens on port 9
    completed = _run_converter(["--config", DEFAULT_CONFIG, "--checkpoint", checkpoint, "--output-dir",
                                str(tmp_path / "out"), "--push-to-hub", "someone/mask-rcnn"], tmp_path, env)
    assert completed.returncode == 1
    assert "was written and kept" in completed.stderr and "someone/mask-rcnn" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert {"config.json", "preprocessor_config.json", "model.safetensors", "pipeline.py"} <= {
        path.name for path in (tmp_path / "out").iterdir()}


# ------------------------------------------------------------------------------------------------------------------
# The model card
# ------------------------------------------------------------------------------------------------------------------

README = REPO_ROOT / "README.md"


def _front_matter() -> Dict[str, Any]:
    import yaml

    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def test_model_card_front_matter():
    meta = _front_matter()
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "image-segmentation"
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["coco"]
    assert {"custom_code", "object-detection", "vision", "mask-rcnn", "instance-segmentation"} <= set(meta["tags"])
    for example in meta["widget"]:
        assert (REPO_ROOT / example["src"]).is_file(), example["src"]
    results = meta["model-index"][0]["results"]
    metrics = {result["metrics"][0]["name"]: result["metrics"][0]["value"] for result in results}
    entry = converter.ZOO[DEFAULT_CONFIG]
    assert metrics == {"box AP": entry.box_ap, "mask AP": entry.mask_ap} == {"box AP": 38.2, "mask AP": 34.7}


def test_model_card_commands():
    text = README.read_text(encoding="utf-8")
    body = text.split("---\n", 2)[2]
    first_blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", body, re.DOTALL)[:2]
    assert "convert_mmdet_checkpoint.py --config mask-rcnn_r50_fpn_1x_coco" in first_blocks[0]
    assert first_blocks[1].strip() == TEST_COMMAND
    assert TEST_COMMAND in (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for sample in re.findall(r"samples/[\w.-]+", first_blocks[0]):
        assert (REPO_ROOT / sample).is_file(), sample


TEST_COMMAND = ("python3 -m pip install -r requirements-test.txt && python3 -m pytest -q tests && "
                "bash tools/transformers_matrix.sh")


def _fmt_ap(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def zoo_table_rows() -> List[str]:
    """The README's zoo table rows, generated from convert_mmdet_checkpoint.ZOO."""
    style_names = {"pytorch": "pytorch", "caffe": "caffe", "c2": "pytorch (detectron2 weights)"}
    rows = []
    for name, entry in converter.ZOO.items():
        schedule = {12: "1x", 24: "2x", 36: "3x"}[entry.epochs]
        variant = " ms-poly" if "ms-poly" in name else " AMP" if "amp" in name else ""
        rows.append(f"| `{name}` | {entry.backbone}-FPN | {style_names[entry.style]} | {schedule}{variant} | "
                    f"{_fmt_ap(entry.box_ap)} | {_fmt_ap(entry.mask_ap)} |")
    return rows


def test_model_card_zoo_table_matches_converter_zoo():
    text = README.read_text(encoding="utf-8")
    table_rows = [line for line in text.splitlines() if re.match(r"\| `mask-rcnn_", line)]
    assert table_rows == zoo_table_rows()
    assert len(table_rows) == len(converter.ZOO) == 21
