# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Writing a Hub folder: the one place that knows which files make a complete model repository.

`write_hub_folder` is used by `convert_mmdet_checkpoint.py` and by every `save_pretrained` (model, image processor,
both pipelines). It writes or completes, in one folder:

* `config.json` (what the model reads, plus `auto_map`, `architectures` and BOTH `custom_pipelines` tasks) and
  `preprocessor_config.json` (the image processor's fields and its `auto_map`);
* `model.safetensors` when a state dict is given (the converter; `save_pretrained` writes its own);
* every code file the folder needs, DERIVED from the two configs: the modules their `auto_map` and
  `custom_pipelines` name, the Inference Endpoints entry point `handler.py`, and every sibling module those import
  relatively (`from .x import ...`), recursively. Nothing lists the code files by hand;
* `requirements.txt` (an Inference Endpoint installs it: pycocotools for `mask_format=rle`), `.gitattributes`
  (Git LFS for the weights) and a model card (`README.md`) when the folder has none.

`hub_files(folder)` lists what a Hub repository made from a folder holds (also when the folder is a checkout of the
project, whose tests/ and tools/ are not model files); `upload_hub_folder` uploads exactly those files.

    python hub_folder_mask_rcnn.py FOLDER          # print the files of FOLDER that belong on the Hub
"""

from __future__ import annotations

import copy
import functools
import importlib
import importlib.util
import io
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from safetensors import SafetensorError, safe_open

try:
    from .configuration_mask_rcnn import COCO_CLASSES, MaskRCNNConfig, bottleneck_width
except ImportError:  # imported as a top-level module (tests, the converter). importlib, not a from-import: the
    # remote-code scanner of transformers < 4.51 reads import lines under `except ImportError:` as required packages.
    _configuration = importlib.import_module("configuration_mask_rcnn")
    COCO_CLASSES, MaskRCNNConfig = _configuration.COCO_CLASSES, _configuration.MaskRCNNConfig
    bottleneck_width = _configuration.bottleneck_width

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

CONFIG_FILE = "config.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "README.md"
REQUIREMENTS_FILE = "requirements.txt"
GITATTRIBUTES_FILE = ".gitattributes"

MODEL_CLASS_REF = "modeling_mask_rcnn.MaskRCNNForInstanceSegmentation"
# Auto classes mapped in config.json; the same class serves all three model keys.
CONFIG_AUTO_MAP: Dict[str, str] = {
    "AutoConfig": "configuration_mask_rcnn.MaskRCNNConfig",
    "AutoModel": MODEL_CLASS_REF,
    "AutoModelForInstanceSegmentation": MODEL_CLASS_REF,
    "AutoModelForObjectDetection": MODEL_CLASS_REF,
}
ARCHITECTURES = ["MaskRCNNForInstanceSegmentation"]
# Both tasks; transformers' own Pipeline.save_pretrained would keep only the task one class was registered for.
CUSTOM_PIPELINES: Dict[str, Dict[str, Any]] = {
    "image-segmentation": {"impl": "pipeline.MaskRCNNSegmentationPipeline",
                           "pt": ["AutoModelForInstanceSegmentation"], "type": "image"},
    "object-detection": {"impl": "pipeline.MaskRCNNDetectionPipeline",
                         "pt": ["AutoModelForObjectDetection"], "type": "image"},
}
IMAGE_PROCESSOR_AUTO_MAP: Dict[str, str] = {"AutoImageProcessor": "image_processing_mask_rcnn.MaskRCNNImageProcessor"}
# Found by file name, not through a config (optional: copied when present): huggingface-inference-toolkit serves
# handler.py's EndpointHandler; export_onnx.py / onnx_inference_mask_rcnn.py export and run the folder as ONNX.
ENTRY_POINT_MODULES = ("handler", "export_onnx", "onnx_inference_mask_rcnn")
# Large binary files go through Git LFS on the Hub.
LFS_PATTERNS = ("*.safetensors", "*.pth", "*.bin")
# The card's widget example(s): a file of the folder, decoded by the widget as an `image/*` request body.
WIDGET_EXAMPLES: List[Dict[str, str]] = [
    {"src": "samples/grace_hopper.jpg", "example_title": "Portrait photo (public domain)"},
]
WIDGET_MAX_INSTANCES = 3
MMDETECTION_ZOO_URL = "https://github.com/open-mmlab/mmdetection/tree/v3.3.0/configs/mask_rcnn"

_RELATIVE_IMPORT = re.compile(r"^\s*from\s+\.(\w+)\s+import\b", re.MULTILINE)


class HubFolderError(OSError):
    """A Hub folder that cannot be made complete; the message names the missing file and where it was looked for."""


# ----------------------------------------------------------------------------------------------------------------
# Which files a folder needs
# ----------------------------------------------------------------------------------------------------------------


def _module_of(reference: Any) -> List[str]:
    """Module names in an `auto_map` value: "module.Class", "org/repo--module.Class", or a [slow, fast] list."""
    references = reference if isinstance(reference, (list, tuple)) else [reference]
    modules = []
    for item in references:
        if isinstance(item, str) and "." in item:
            modules.append(item.split("--")[-1].split(".")[0])
    return modules


def referenced_modules(config: Optional[Mapping[str, Any]], preprocessor: Optional[Mapping[str, Any]]) -> List[str]:
    """Modules the configs name (auto_map values, custom_pipelines implementations) plus the endpoint entry point."""
    modules: List[str] = []
    for content in (config, preprocessor):
        for reference in ((content or {}).get("auto_map") or {}).values():
            modules.extend(_module_of(reference))
    for task in ((config or {}).get("custom_pipelines") or {}).values():
        modules.extend(_module_of(task.get("impl")))
    modules.extend(ENTRY_POINT_MODULES)
    return list(dict.fromkeys(modules))


def relative_imports(source_text: str) -> List[str]:
    """Sibling modules a file imports as `from .module import ...` (the only form transformers follows)."""
    return list(dict.fromkeys(_RELATIVE_IMPORT.findall(source_text)))


def code_files(roots: Iterable[str], locate) -> List[str]:
    """`roots` (module names) and everything they import relatively, as file names, in discovery order.

    `locate(file_name)` returns the path of a file or None; a module that cannot be found raises `HubFolderError`,
    except an entry point (handler.py), which is optional.
    """
    wanted, found = list(roots), {}
    while wanted:
        module = wanted.pop(0)
        name = f"{module}.py"
        if name in found:
            continue
        path = locate(name)
        if path is None:
            if module in ENTRY_POINT_MODULES:
                continue
            raise HubFolderError(f"{name} is needed by this Hub folder (its configs or code refer to it) but was not "
                                 "found next to the loaded code or in the model's folder.")
        found[name] = path
        wanted.extend(relative_imports(Path(path).read_text(encoding="utf-8")))
    return list(found)


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _write_json(path: Path, content: Mapping[str, Any], sort_keys: bool) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=sort_keys)
        handle.write("\n")


def hub_files(folder: PathLike) -> List[str]:
    """The files of `folder` (relative POSIX paths) that belong in its Hub repository: configs, weights, the derived
    code files, card, requirements, .gitattributes and the widget example images. Other files (a project
    checkout's tests/, tools/, docs/) are left out."""
    folder = Path(folder)
    config, preprocessor = _read_json(folder / CONFIG_FILE), _read_json(folder / PREPROCESSOR_FILE)
    names = [CONFIG_FILE, PREPROCESSOR_FILE, WEIGHTS_FILE, CARD_FILE, REQUIREMENTS_FILE, GITATTRIBUTES_FILE]
    names += code_files(referenced_modules(config, preprocessor),
                        lambda name: folder / name if (folder / name).is_file() else None)
    names += [example["src"] for example in WIDGET_EXAMPLES]
    return sorted(name for name in dict.fromkeys(names) if (folder / name).is_file())


# ----------------------------------------------------------------------------------------------------------------
# Config content
# ----------------------------------------------------------------------------------------------------------------


def complete_config(config: Mapping[str, Any]) -> Dict[str, Any]:
    """`config.json` content with the remote-code entries: `auto_map` (kept keys plus ours), `architectures` and both
    `custom_pipelines` tasks. Values transformers writes as non-JSON (a torch dtype) become their names."""
    content = copy.deepcopy(dict(config))
    content["auto_map"] = {**(content.get("auto_map") or {}), **CONFIG_AUTO_MAP}
    content["architectures"] = list(ARCHITECTURES)
    content["custom_pipelines"] = copy.deepcopy(CUSTOM_PIPELINES)
    for key in ("dtype", "torch_dtype"):
        if key in content and content[key] is not None and not isinstance(content[key], (str, int, float)):
            content[key] = str(content[key]).replace("torch.", "")
    return content


def complete_preprocessor(preprocessor: Mapping[str, Any]) -> Dict[str, Any]:
    """`preprocessor_config.json` content with the AutoImageProcessor `auto_map`, which every transformers version
    resolves. No `image_processor_type`: with one, transformers 4.51-4.57 log a `use_fast` warning on every load that
    a user cannot act on (this processor has no fast variant)."""
    content = copy.deepcopy(dict(preprocessor))
    content.pop("image_processor_type", None)
    content["auto_map"] = {**(content.get("auto_map") or {}), **IMAGE_PROCESSOR_AUTO_MAP}
    return content


# ----------------------------------------------------------------------------------------------------------------
# The model card
# ----------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _card_dumper():
    """A PyYAML dumper that indents block lists under their key (`widget:\n  - src: ...`), the cards' style."""
    import yaml

    class CardDumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False):
            return super().increase_indent(flow, False)

    return CardDumper


def dump_yaml(content: Mapping[str, Any]) -> str:
    """YAML in the card's style: block lists indented under their key, one line per scalar, keys in given order."""
    import yaml

    return yaml.dump(dict(content), Dumper=_card_dumper(), sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=float("inf"))


def split_card(card_text: str) -> "tuple[Dict[str, Any], str]":
    """(front matter as a dict, the card's body after the closing `---`)."""
    import yaml

    if not card_text.startswith("---\n"):
        raise ValueError("The model card does not start with a YAML front matter block (---).")
    front_matter, separator, body = card_text[len("---\n"):].partition("\n---\n")
    if not separator:
        raise ValueError("The model card's front matter is not closed by a --- line.")
    return yaml.safe_load(front_matter) or {}, body


def join_card(front_matter: Mapping[str, Any], body: str) -> str:
    return "---\n" + dump_yaml(front_matter) + "---\n" + body


def card_front_matter(config_name: Optional[str] = None, published: Optional[Mapping[str, Optional[float]]] = None,
                      coco_classes: bool = True, widget: Optional[Sequence[Mapping[str, Any]]] = None
                      ) -> Dict[str, Any]:
    """Front matter of a Mask R-CNN card.

    `published` ({"box AP": x, "mask AP": y}) are MMDetection's published COCO val2017 figures for `config_name`;
    give them only for MMDetection's own weights (a fine-tuned checkpoint has other figures). `widget` defaults to
    `WIDGET_EXAMPLES` without outputs; outputs are added only by `add_widget_outputs` from the folder's weights.
    """
    content: Dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "image-segmentation",
                               "license": "apache-2.0"}
    if coco_classes:
        content["datasets"] = ["coco"]
    content["tags"] = ["custom_code", "vision", "object-detection", "instance-segmentation", "mask-rcnn",
                       "mmdetection"]
    content["widget"] = [dict(example) for example in (widget if widget is not None else WIDGET_EXAMPLES)]
    results = []
    for metric, task, task_name in (("box AP", "object-detection", "Object Detection"),
                                    ("mask AP", "image-segmentation", "Instance Segmentation")):
        value = (published or {}).get(metric)
        if value is None:
            continue
        results.append({
            "task": {"type": task, "name": task_name},
            "dataset": {"type": "coco", "name": "COCO 2017 val", "split": "validation"},
            "metrics": [{"name": metric, "type": "mAP", "value": value}],
            "source": {"name": "MMDetection 3.3.0 model zoo (configs/mask_rcnn)", "url": MMDETECTION_ZOO_URL},
        })
    if results:
        content["model-index"] = [{"name": config_name or "mask-rcnn", "results": results}]
    return content


def model_card(config: Mapping[str, Any], config_name: Optional[str] = None,
               published: Optional[Mapping[str, Optional[float]]] = None, source: Optional[str] = None) -> str:
    """A short, honest card for a folder this code wrote (converted or saved): what it is, how to load it, the
    published figures only when given, limitations, citation and licence. The project's README has the manual."""
    id2label = config.get("id2label") or {}
    names = [str(id2label[key]) for key in sorted(id2label, key=lambda key: int(key))]
    coco_classes = _is_coco(names)
    title = f"Mask R-CNN `{config_name}`" if config_name else "Mask R-CNN"
    origin = (f"converted from MMDetection's `{config_name}` checkpoint" if config_name else "saved with save_pretrained")
    if source:
        origin += f" (`{source}`)"
    lines = [
        f"# {title} for 🤗 transformers",
        "",
        f"Mask R-CNN ([He et al., 2017](https://arxiv.org/abs/1703.06870)) weights {origin}, run by plain PyTorch + "
        "torchvision code in this folder (MMDetection 3.3.0's test-time path, no mmcv/mmdet needed). "
        f"{len(names)} classes{' (COCO)' if coco_classes else ''}.",
        "",
        "## Usage",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        'segmenter = pipeline("image-segmentation", model="<this repo or folder>", trust_remote_code=True,'
        ' device="cpu")',
        'for instance in segmenter("samples/grace_hopper.jpg", threshold=0.5):',
        '    print(instance["label"], round(instance["score"], 3), instance["box"])  # + instance["mask"] (PIL)',
        "```",
        "",
        '`pipeline("object-detection", ...)` gives boxes only; `AutoModel` / `AutoImageProcessor` (both with '
        "`trust_remote_code=True`) load the model and its image processor. `handler.py` serves the folder on an "
        "Inference Endpoint (`requirements.txt` is installed there).",
        "",
        "## Metrics",
        "",
    ]
    if published and any(value is not None for value in published.values()):
        figures = ", ".join(f"{name} {value:.1f}" for name, value in published.items() if value is not None)
        lines.append(f"MMDetection's published COCO 2017 val figures for `{config_name}`: {figures} "
                     f"([MMDetection model zoo]({MMDETECTION_ZOO_URL})). They were not re-measured for this folder.")
    else:
        lines.append("No metrics are published for these weights.")
    lines += [
        "",
        "## Limitations",
        "",
        "* Single-scale test path (no test-time augmentation).",
        "* The Hub's serverless widget does not run custom code; use the pipelines, a Space or an Inference "
        "Endpoint. Widget example outputs, when present, were computed with this folder's weights by `handler.py`.",
        "* `dtype=torch.bfloat16` / `float16` is not bit-identical to MMDetection; it is fast only on hardware with "
        "native support.",
        "",
        "## Citation",
        "",
        "```bibtex",
        "@inproceedings{he2017maskrcnn,",
        "  title = {Mask {R-CNN}}, author = {He, Kaiming and Gkioxari, Georgia and Doll{\\'a}r, Piotr and "
        "Girshick, Ross},",
        "  booktitle = {ICCV}, pages = {2961--2969}, year = {2017}",
        "}",
        "```",
        "",
        "## License",
        "",
        "Code Apache-2.0. MMDetection's weights are released by OpenMMLab under Apache-2.0; weights of other origin "
        "keep their own licence.",
        "",
    ]
    front = card_front_matter(config_name, published, coco_classes)
    return join_card(front, "\n" + "\n".join(lines))


def _is_coco(names: Sequence[str]) -> bool:
    return tuple(names) == tuple(COCO_CLASSES)


def replace_widget(card_text: str, widget: Sequence[Mapping[str, Any]]) -> str:
    """The card with its front matter's `widget` list replaced; every other key and the body are kept."""
    front, body = split_card(card_text)
    front["widget"] = [dict(example) for example in widget]
    return join_card(front, body)


def toolkit_image(path: PathLike):
    """What huggingface-inference-toolkit makes of an `image/*` request body: `Image.open(...).convert("RGB")`."""
    from PIL import Image

    return Image.open(io.BytesIO(Path(path).read_bytes())).convert("RGB")


def load_endpoint_handler(folder: PathLike) -> Any:
    """`handler.EndpointHandler(folder)`, imported as huggingface-inference-toolkit does it: by file location, with the
    folder first on `sys.path` (restored afterwards)."""
    folder = Path(folder).resolve()
    handler_path = folder / "handler.py"
    if not handler_path.is_file():
        raise HubFolderError(f"{folder} has no handler.py, so its widget outputs cannot be computed.")
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", handler_path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(folder))
    try:
        spec.loader.exec_module(module)
        return module.EndpointHandler(str(folder))
    finally:
        sys.path.remove(str(folder))


def widget_outputs(folder: PathLike, examples: Sequence[Mapping[str, Any]] = WIDGET_EXAMPLES,
                   max_instances: int = WIDGET_MAX_INSTANCES, handler: Any = None) -> List[Dict[str, Any]]:
    """The examples with `output` = the first `max_instances` answers of the folder's own handler, called as the
    widget calls it (the image as a request body, no parameters)."""
    folder = Path(folder)
    handler = handler if handler is not None else load_endpoint_handler(folder)
    updated = []
    for example in examples:
        image_path = folder / example["src"]
        if not image_path.is_file():
            raise HubFolderError(f"Widget example {example['src']!r} is not a file of {folder}.")
        answer = handler({"inputs": toolkit_image(image_path)})
        updated.append({**{key: value for key, value in example.items() if key != "output"},
                        "output": answer[:max_instances]})
    return updated


def add_widget_outputs(folder: PathLike, max_instances: int = WIDGET_MAX_INSTANCES) -> None:
    """Put the outputs of the folder's own weights (via its handler) into its card's widget examples."""
    folder = Path(folder)
    card_path = folder / CARD_FILE
    front, _ = split_card(card_path.read_text(encoding="utf-8"))
    examples = front.get("widget") or WIDGET_EXAMPLES
    card_path.write_text(replace_widget(card_path.read_text(encoding="utf-8"),
                                        widget_outputs(folder, examples, max_instances)), encoding="utf-8")


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


def _locator(folder: Path, sources: Sequence[PathLike], name_or_path: Optional[str]):
    """A function file name -> path: the target folder, then `sources`, then the model's own folder or Hub repo."""
    directories = [folder] + [Path(source) for source in sources if source]
    if name_or_path and os.path.isdir(name_or_path):
        directories.append(Path(name_or_path))

    def locate(name: str) -> Optional[Path]:
        for directory in directories:
            if (directory / name).is_file():
                return directory / name
        if name_or_path and not os.path.isdir(name_or_path):
            return _hub_file(name_or_path, name)
        return None

    return locate


def _hub_file(repo_id: str, name: str) -> Optional[Path]:
    """A file of a Hub repository (from the local cache when offline), or None."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, name))
    except Exception:  # noqa: BLE001 - not there, offline, not a repo id: the caller decides what is missing
        return None


def module_directories(*objects: Any) -> List[Path]:
    """Folders of the modules that define the classes of `objects` (where transformers put the loaded code)."""
    directories: List[Path] = []
    for obj in objects:
        if obj is None:
            continue
        module = sys.modules.get(type(obj).__module__ if not isinstance(obj, type) else obj.__module__)
        path = getattr(module, "__file__", None)
        if path and Path(path).resolve().parent not in directories:
            directories.append(Path(path).resolve().parent)
    return directories


def _copy(source: Path, target: Path) -> None:
    if source.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)


def write_gitattributes(folder: Path) -> None:
    """Create `.gitattributes` with the LFS rules, or add the missing ones to an existing file (other lines kept)."""
    path = folder / GITATTRIBUTES_FILE
    existing = path.read_text(encoding="utf-8") if path.is_file() else ""
    covered = {line.split()[0] for line in existing.splitlines() if line.strip() and "filter=lfs" in line}
    missing = [f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in LFS_PATTERNS if pattern not in covered]
    if missing:
        separator = "" if not existing or existing.endswith("\n") else "\n"
        path.write_text(existing + separator + "".join(missing), encoding="utf-8")


def write_hub_folder(folder: PathLike, *, config: Optional[Mapping[str, Any]] = None,
                     preprocessor: Optional[Mapping[str, Any]] = None, state_dict: Optional[Mapping[str, Any]] = None,
                     card: Optional[str] = None, sources: Sequence[PathLike] = (),
                     name_or_path: Optional[str] = None) -> List[str]:
    """Write or complete the Hub folder `folder` and return the names of its Hub files (see `hub_files`).

    Args:
        config / preprocessor: content for `config.json` / `preprocessor_config.json`; None completes the file
            already in the folder (as written by transformers' `save_pretrained`), if any.
        state_dict: tensors to write as `model.safetensors` (float32 and int64, as converted).
        card: `README.md` text (replaces the folder's card); when None, a folder with a config but no card gets the
            short generic card of `model_card` (no metrics, no widget outputs).
        sources: folders to copy code files, requirements.txt and widget images from (the loaded code's folders).
        name_or_path: the model's own folder or Hub repo id, searched last.

    Raises:
        HubFolderError: a code file the configs need was found nowhere (named in the message).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config_path, preprocessor_path = folder / CONFIG_FILE, folder / PREPROCESSOR_FILE
    config = config if config is not None else _read_json(config_path)
    preprocessor = preprocessor if preprocessor is not None else _read_json(preprocessor_path)
    if config is not None:
        config = complete_config(config)
    if preprocessor is not None:
        preprocessor = complete_preprocessor(preprocessor)

    locate = _locator(folder, sources, name_or_path)
    # Code first, configs last: a folder never names a file that is not there yet.
    for name in code_files(referenced_modules(config, preprocessor), locate):
        _copy(locate(name), folder / name)
    requirements = locate(REQUIREMENTS_FILE)
    if requirements is not None:
        _copy(requirements, folder / REQUIREMENTS_FILE)
    else:
        logger.info("No %s found to copy into %s.", REQUIREMENTS_FILE, folder)
    write_gitattributes(folder)
    if state_dict is not None:
        from safetensors.torch import save_file

        save_file(dict(state_dict), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
        os.chmod(folder / WEIGHTS_FILE, 0o644)  # safetensors creates it owner-only
    if card is not None or (config is not None and not (folder / CARD_FILE).is_file()):
        text = card if card is not None else model_card(config, source=name_or_path)
        front, _ = split_card(text)
        for example in front.get("widget") or []:
            image = locate(example["src"])
            if image is not None:
                _copy(image, folder / example["src"])
        (folder / CARD_FILE).write_text(text, encoding="utf-8")
    if preprocessor is not None:
        _write_json(preprocessor_path, preprocessor, sort_keys=False)
    if config is not None:
        _write_json(config_path, config, sort_keys=True)
    return hub_files(folder)


# ----------------------------------------------------------------------------------------------------------------
# Uploading
# ----------------------------------------------------------------------------------------------------------------


def upload_hub_folder(folder: PathLike, repo_id: str, token: Optional[str] = None, commit_message: Optional[str] = None,
                      private: Optional[bool] = None) -> List[str]:
    """Create `repo_id` if needed and upload exactly `hub_files(folder)` in one commit; returns that list."""
    from huggingface_hub import HfApi

    files = hub_files(folder)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", allow_patterns=files,
                      commit_message=commit_message or "Upload Mask R-CNN")
    return files


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python hub_folder_mask_rcnn.py FOLDER   (prints the files of FOLDER that belong on the Hub)")
    print("\n".join(hub_files(sys.argv[1])))


# ------------------------------------------------------------------------------------------ reading a folder back


def safetensors_shapes(path: str) -> dict:
    """Tensor name -> shape from a safetensors header (no tensor data is read); OSError naming the file if the file
    is empty, truncated or its header is corrupt."""
    try:
        with safe_open(path, framework="pt") as weights:
            return {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (SafetensorError, OSError, ValueError) as error:
        raise OSError(f"{path} is not a readable safetensors file ({error}): it is empty, truncated or corrupted; "
                      "download it again or re-create it with convert_mmdet_checkpoint.py.") from error


def architecture_mismatch(config: MaskRCNNConfig, weight_shapes: Optional[dict]) -> str:
    """The config fields that disagree with the weights' shapes, as a sentence part ending in "; " (or "")."""
    if not weight_shapes:
        return ""
    reasons = []
    classifier = weight_shapes.get("box_head.class_logits.weight")
    if classifier is not None and classifier[0] != config.num_labels + 1:
        reasons.append(f"config.json has {config.num_labels} classes (id2label) but the weights were made for "
                       f"{classifier[0] - 1}")
    stage3_blocks = {name.split(".")[2] for name in weight_shapes if name.startswith("backbone.layer3.")}
    if stage3_blocks and len(stage3_blocks) != config.backbone_stage_blocks[2]:
        reasons.append(f"config.json has backbone_depth={config.backbone_depth} ({config.backbone_stage_blocks[2]} "
                       f"blocks in stage 3) but the weights have {len(stage3_blocks)} blocks there")
    first_conv = weight_shapes.get("backbone.layer1.0.conv2.weight")
    groups = config.backbone_groups
    width = bottleneck_width(64, groups, config.backbone_base_width)  # stage 1: 64 planes
    if first_conv is not None and tuple(first_conv[:2]) != (width, width // groups):
        reasons.append(f"config.json has backbone_groups={groups}, backbone_base_width={config.backbone_base_width} "
                       f"(first 3x3 convolution of shape {(width, width // groups, 3, 3)}) but the weights have "
                       f"{tuple(first_conv)}")
    return "".join(f"{reason}; " for reason in reasons)


def config_name_in(folder: str) -> Optional[str]:
    """The MMDetection config name recorded in a folder's config.json, if any."""
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return json.load(handle).get("mmdet_config_name")
    except (OSError, ValueError):
        return None
