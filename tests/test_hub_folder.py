# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""hub_folder_mask_rcnn: which files a Hub folder holds (derived, never listed by hand), the honest card, and uploads.

* The code files come from the configs (auto_map, custom_pipelines), the endpoint entry point and relative imports.
* Every Hub-served module imports its siblings in a form transformers' remote-code scanner accepts on 4.46 too.
* The repository's card carries no widget outputs; a converted folder's card carries the outputs of ITS weights,
  equal to what its own handler.py answers in a fresh process.
* `--push-to-hub` / `upload_hub_folder` upload exactly the Hub files, also from a project checkout.
* Folders written before (preprocessor_config.json with image_processor_type, config.json from older versions)
  keep loading, and re-saving them writes today's form.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import hub_folder_mask_rcnn as hub_folder  # noqa: E402
from test_hub_loading import DEFAULT_CONFIG, hub_user_env  # noqa: E402


def _repo_locate(name: str):
    return REPO_ROOT / name if (REPO_ROOT / name).is_file() else None


def _root_json(name: str):
    return json.loads((REPO_ROOT / name).read_text(encoding="utf-8"))


def served_code_files():
    """The code files of the repository's own Hub folder, derived from its configs."""
    return hub_folder.code_files(
        hub_folder.referenced_modules(_root_json("config.json"), _root_json("preprocessor_config.json")), _repo_locate)


# ------------------------------------------------------------------------------------------------ derived code files


def test_code_files_are_derived_from_configs_entry_point_and_relative_imports():
    files = served_code_files()
    assert files[:1] == ["configuration_mask_rcnn.py"]  # auto_map order: AutoConfig first
    assert {"configuration_mask_rcnn.py", "modeling_mask_rcnn.py", "image_processing_mask_rcnn.py", "pipeline.py",
            "handler.py", "hub_folder_mask_rcnn.py"} <= set(files)
    # every relative import of every listed file is listed, and nothing else is
    imported = {f"{module}.py" for name in files for module in
                hub_folder.relative_imports((REPO_ROOT / name).read_text(encoding="utf-8"))}
    named = {f"{module}.py" for module in hub_folder.referenced_modules(_root_json("config.json"),
                                                                        _root_json("preprocessor_config.json"))}
    assert set(files) == imported | named
    assert "segment.py" not in files and "convert_mmdet_checkpoint.py" not in files  # tools, not model files


def test_every_entry_file_names_its_whole_closure_of_sibling_modules():
    # transformers < 4.51 copies into its module cache only the siblings an entry file names itself, but opens every
    # module reachable from it: a sibling reached only through another one is a FileNotFoundError on 4.46-4.50.
    entry_modules = [module for module in hub_folder.referenced_modules(_root_json("config.json"),
                                                                         _root_json("preprocessor_config.json"))
                     if module not in hub_folder.ENTRY_POINT_MODULES]  # handler.py: loaded by path, not by transformers
    assert {"configuration_mask_rcnn", "modeling_mask_rcnn", "image_processing_mask_rcnn", "pipeline"} <= set(entry_modules)
    locate = lambda name: REPO_ROOT / name if (REPO_ROOT / name).is_file() else None  # noqa: E731
    for module in entry_modules:
        closure = {name[:-3] for name in hub_folder.code_files([module], locate)} - {module}
        named = set(hub_folder.relative_imports((REPO_ROOT / f"{module}.py").read_text(encoding="utf-8")))
        assert closure <= named, f"{module}.py reaches {sorted(closure - named)} only through other modules"


def test_relative_imports_of_served_modules_have_no_cycle():
    # transformers < 4.51's get_relative_import_files never marks a module as seen, so an import cycle between
    # served modules (a imports b, b imports a) makes every remote-code load loop forever on 4.46-4.50.
    graph = {path.stem: set(hub_folder.relative_imports(path.read_text(encoding="utf-8")))
             for path in REPO_ROOT.glob("*.py")}

    def visit(module, trail):
        assert module not in trail, f"relative-import cycle: {' -> '.join(trail + [module])}"
        for sibling in sorted(graph.get(module, ())):
            visit(sibling, trail + [module])

    for module in sorted(graph):
        visit(module, [])


def test_a_missing_code_file_is_named_and_the_entry_point_is_optional(tmp_path):
    (tmp_path / "modeling_x.py").write_text("from .configuration_x import C\n")
    config = {"auto_map": {"AutoModel": "modeling_x.M"}}
    locate = lambda name: tmp_path / name if (tmp_path / name).is_file() else None  # noqa: E731
    with pytest.raises(hub_folder.HubFolderError, match=r"configuration_x\.py is needed"):
        hub_folder.code_files(hub_folder.referenced_modules(config, None), locate)
    (tmp_path / "configuration_x.py").write_text("C = 1\n")
    assert hub_folder.code_files(hub_folder.referenced_modules(config, None), locate) == [
        "modeling_x.py", "configuration_x.py"]  # no handler.py here: optional


# Hub-served files and the converter import siblings relatively; their by-name fallback must use importlib, or
# transformers < 4.51 (which keeps `except ImportError:` bodies when scanning) reports the sibling as a missing package.
@pytest.mark.parametrize("name", served_code_files() + ["convert_mmdet_checkpoint.py"])
def test_served_modules_never_import_a_sibling_by_name(name):
    siblings = "|".join(re.escape(path.stem) for path in REPO_ROOT.glob("*.py"))
    source = (REPO_ROOT / name).read_text(encoding="utf-8")
    plain = re.findall(rf"^\s*(?:from\s+(?:{siblings})\s+import|import\s+(?:{siblings})\b).*$", source, re.MULTILINE)
    assert not plain, f"{name}: {plain} -- write the fallback as importlib.import_module(...)"


# ------------------------------------------------------------------------------------------------ the cards


def test_repository_card_has_no_widget_outputs_and_its_front_matter_is_the_converters():
    from convert_mmdet_checkpoint import ZOO

    front, _ = hub_folder.split_card((REPO_ROOT / "README.md").read_text(encoding="utf-8"))
    assert all("output" not in example for example in front["widget"])
    entry = ZOO[DEFAULT_CONFIG]
    assert front == hub_folder.card_front_matter(DEFAULT_CONFIG, {"box AP": entry.box_ap, "mask AP": entry.mask_ap})
    assert "output:" not in (REPO_ROOT / "README.md").read_text(encoding="utf-8")


HANDLER_SCRIPT = textwrap.dedent(r'''
    import importlib.util, json, sys
    from PIL import Image
    folder, src = sys.argv[1], sys.argv[2]
    sys.path.insert(0, folder)  # as huggingface-inference-toolkit: handler.py by location, its folder on sys.path
    spec = importlib.util.spec_from_file_location("handler", f"{folder}/handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    image = Image.open(f"{folder}/{src}").convert("RGB")  # the toolkit's image/* body decoding
    print(json.dumps(module.EndpointHandler(folder)({"inputs": image})))
''')


@pytest.fixture(scope="module")
def converted_with_outputs(tmp_path_factory):
    """The synthetic R50 checkpoint converted with widget outputs (the CLI default), at the full 1333x800 size."""
    from convert_mmdet_checkpoint import convert_checkpoint
    from synthetic_weights import save_synthetic_checkpoint

    base = tmp_path_factory.mktemp("widget")
    checkpoint = save_synthetic_checkpoint(str(base / "synthetic.pth"), DEFAULT_CONFIG)
    return convert_checkpoint(DEFAULT_CONFIG, checkpoint, base / "folder", widget_outputs=True)


def test_converted_card_outputs_are_the_handlers_answers_for_its_own_weights(converted_with_outputs, tmp_path):
    folder = converted_with_outputs
    front, body = hub_folder.split_card((folder / "README.md").read_text(encoding="utf-8"))
    (example,) = front["widget"]
    assert (folder / example["src"]).is_file()
    script = tmp_path / "serve.py"
    script.write_text(HANDLER_SCRIPT, encoding="utf-8")
    completed = subprocess.run([sys.executable, str(script), str(folder), example["src"]], cwd=tmp_path,
                               env=hub_user_env(tmp_path / "hf_home"), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-4000:]
    answer = json.loads(completed.stdout.strip().splitlines()[-1])
    assert answer, "the synthetic weights detect something on the portrait"
    assert example["output"] == answer[:hub_folder.WIDGET_MAX_INSTANCES]
    # not MMDetection's weights: no published figures are claimed for them
    assert "model-index" not in front and "No metrics are published" in body


def test_converted_folder_is_a_complete_hub_repository(converted_with_outputs):
    folder = converted_with_outputs
    files = set(hub_folder.hub_files(folder))
    assert {"config.json", "preprocessor_config.json", "model.safetensors", "README.md", "requirements.txt",
            ".gitattributes", "samples/grace_hopper.jpg", *served_code_files()} == files
    assert "pycocotools" in (folder / "requirements.txt").read_text(encoding="utf-8")
    assert "*.safetensors filter=lfs" in (folder / ".gitattributes").read_text(encoding="utf-8")
    assert sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()) == sorted(files)


def test_official_weights_get_mmdetections_published_figures_labelled_as_such():
    from convert_mmdet_checkpoint import ZOO

    entry = ZOO["mask-rcnn_x101-32x4d_fpn_1x_coco"]
    card = hub_folder.model_card({"id2label": {"0": "person"}}, entry.config_name,
                                 {"box AP": entry.box_ap, "mask AP": entry.mask_ap}, source="x.pth")
    front, body = hub_folder.split_card(card)
    values = [result["metrics"][0]["value"] for result in front["model-index"][0]["results"]]
    assert values == [41.9, 37.5]
    assert all(result["source"]["name"].startswith("MMDetection") for result in front["model-index"][0]["results"])
    assert "MMDetection's published COCO 2017 val figures" in body and "datasets" not in front  # not COCO classes


# ------------------------------------------------------------------------------------------------ uploads


class RecordingApi:
    """Stands in for huggingface_hub.HfApi: records calls and which files upload_folder would send (filtered with
    huggingface_hub's own filter_repo_objects), no network."""

    calls: list = []

    def __init__(self, token=None):
        RecordingApi.calls.append(("token", token))

    def create_repo(self, repo_id, repo_type=None, private=None, exist_ok=False):
        RecordingApi.calls.append(("create", repo_id, exist_ok))

    def upload_folder(self, folder_path, repo_id, repo_type=None, allow_patterns=None, commit_message=None, **_):
        from huggingface_hub.utils import filter_repo_objects

        every_file = [path.relative_to(folder_path).as_posix() for path in Path(folder_path).rglob("*") if path.is_file()]
        sent = sorted(filter_repo_objects(every_file, allow_patterns=allow_patterns))
        RecordingApi.calls.append(("upload", repo_id, sent))


def test_uploading_the_project_checkout_sends_only_model_files(monkeypatch):
    import huggingface_hub

    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    files = hub_folder.upload_hub_folder(REPO_ROOT, "me/mask-rcnn", token="hf_test")
    assert RecordingApi.calls == [("token", "hf_test"), ("create", "me/mask-rcnn", True),
                                  ("upload", "me/mask-rcnn", files)]
    assert not [name for name in files if name.startswith(("tests/", "tools/", "docs/", ".ci/", "space/"))]
    assert {"README.md", "config.json", "requirements.txt", *served_code_files()} <= set(files)


def test_push_to_hub_uploads_exactly_the_converted_folder(converted_with_outputs, monkeypatch):
    import huggingface_hub

    from convert_mmdet_checkpoint import push_folder_to_hub

    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    push_folder_to_hub(converted_with_outputs, "me/mask-rcnn", "hf_test", DEFAULT_CONFIG)
    every_file = sorted(path.relative_to(converted_with_outputs).as_posix()
                        for path in converted_with_outputs.rglob("*") if path.is_file())
    assert RecordingApi.calls[-1] == ("upload", "me/mask-rcnn", every_file)


# ------------------------------------------------------------------------------------------------ older folders


OLD_FOLDER_SCRIPT = textwrap.dedent(r'''
    import json, os, sys
    from transformers import AutoImageProcessor, AutoModel, pipeline
    folder, work = sys.argv[1:3]
    segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True, device="cpu")
    model = AutoModel.from_pretrained(folder, trust_remote_code=True)
    processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
    model.save_pretrained(f"{work}/resaved")
    processor.save_pretrained(f"{work}/resaved")
    print(json.dumps({"pipeline": type(segmenter).__name__, "model": type(model).__name__,
                      "preprocessor": json.load(open(f"{work}/resaved/preprocessor_config.json")),
                      "config": json.load(open(f"{work}/resaved/config.json"))}))
''')


def test_a_folder_written_before_keeps_loading_and_resaves_in_todays_form(converted_with_outputs, tmp_path):
    import shutil

    old = tmp_path / "old-folder"
    shutil.copytree(converted_with_outputs, old)
    preprocessor = json.loads((old / "preprocessor_config.json").read_text(encoding="utf-8"))
    (old / "preprocessor_config.json").write_text(json.dumps(
        {"image_processor_type": "MaskRCNNImageProcessor", **preprocessor}), encoding="utf-8")
    config = json.loads((old / "config.json").read_text(encoding="utf-8"))
    config.update(transformers_version="4.46.3", torch_dtype="float32")  # how 4.x wrote it
    # config.json used to repeat the image processor's settings
    config.update({key: preprocessor[key] for key in ("image_mean", "image_std", "input_channel_order",
                                                      "resize_scale", "size_divisor")})
    config.pop("dtype")
    (old / "config.json").write_text(json.dumps(config), encoding="utf-8")

    script = tmp_path / "old.py"
    script.write_text(OLD_FOLDER_SCRIPT, encoding="utf-8")
    completed = subprocess.run([sys.executable, str(script), str(old), str(tmp_path)], cwd=tmp_path,
                               env=hub_user_env(tmp_path / "hf_home"), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report["pipeline"] == "MaskRCNNSegmentationPipeline" and report["model"] == "MaskRCNNForInstanceSegmentation"
    assert "image_processor_type" not in report["preprocessor"]
    assert report["config"]["custom_pipelines"] == hub_folder.CUSTOM_PIPELINES
    assert "image_mean" not in report["config"] and report["preprocessor"]["image_mean"] == preprocessor["image_mean"]
