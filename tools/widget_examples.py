# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Regenerate the static `output` of the model card's widget examples with the Inference Endpoints handler.

For every `widget:` example of README.md's front matter, the example image (a file of this repository) is decoded
the way huggingface-inference-toolkit decodes the `image/*` body the widget sends (`Image.open(...).convert("RGB")`)
and given to `handler.EndpointHandler` — loaded from the model folder by file location, as the toolkit loads it —
with no parameters, as the widget calls it. The first `--max-instances` items of its answer (score-sorted, full
masks as base64 PNG) become the example's `output`.

    python tools/widget_examples.py --model .                 # print the widget block made with the converted weights
    python tools/widget_examples.py --model . --write         # and put it into README.md (only that block changes)
    python tools/widget_examples.py --synthetic --write       # with the synthetic test weights (what the card holds)

`--synthetic` builds the synthetic R50-FPN folder of the tests (tools/synthetic_model_folder.py: untrained weights,
images resized to at most 300x200) in a temporary folder: its labels and scores only show the format.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAX_INSTANCES = 3


class _IndentedListDumper(yaml.SafeDumper):
    """Indents block sequences under their key (`widget:\\n  - src: ...`), the card's style."""

    def increase_indent(self, flow: bool = False, indentless: bool = False):
        return super().increase_indent(flow, False)


def load_endpoint_handler(model_dir: Path) -> Any:
    """`handler.EndpointHandler(model_dir)`, imported exactly as huggingface-inference-toolkit does it
    (`check_and_register_custom_pipeline_from_directory`: by file location, the folder first on `sys.path`)."""
    handler_path = Path(model_dir) / "handler.py"
    if not handler_path.is_file():
        raise FileNotFoundError(f"{model_dir} has no handler.py; convert the model with convert_mmdet_checkpoint.py.")
    module_name = "handler.EndpointHandler"
    spec = importlib.util.spec_from_file_location(module_name, handler_path)
    sys.path.insert(0, str(model_dir))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(model_dir))


def split_front_matter(readme_text: str) -> Tuple[str, str]:
    """(front matter between the two `---` lines, the rest of the card after them)."""
    if not readme_text.startswith("---\n"):
        raise ValueError("README.md does not start with a YAML front matter block (---).")
    front_matter, separator, body = readme_text[len("---\n"):].partition("\n---\n")
    if not separator:
        raise ValueError("README.md's front matter is not closed by a --- line.")
    return front_matter + "\n", body


def widget_examples(readme_text: str) -> List[Dict[str, Any]]:
    """The `widget:` list of the card's front matter."""
    examples = yaml.safe_load(split_front_matter(readme_text)[0]).get("widget") or []
    if not all(isinstance(example, dict) and "src" in example for example in examples):
        raise ValueError("Every widget example must be a mapping with a `src` image.")
    return examples


def toolkit_image(path: Path) -> Image.Image:
    """What the toolkit makes of an `image/*` request body (serialization/image_utils.py: `Imager.deserialize`)."""
    return Image.open(io.BytesIO(Path(path).read_bytes())).convert("RGB")


def example_outputs(handler: Any, examples: Sequence[Dict[str, Any]], repo_root: Path = REPO_ROOT,
                    max_instances: int = DEFAULT_MAX_INSTANCES) -> List[Dict[str, Any]]:
    """The examples with `output` set to the first `max_instances` items of the handler's answer (other keys kept)."""
    updated = []
    for example in examples:
        source = Path(repo_root) / example["src"]
        if not source.is_file():
            raise FileNotFoundError(f"Widget example {example['src']!r} is not a file of the repository.")
        answer = handler({"inputs": toolkit_image(source)})
        updated.append({**{key: value for key, value in example.items() if key != "output"},
                        "output": answer[:max_instances]})
    return updated


def render_widget_block(examples: Sequence[Dict[str, Any]]) -> str:
    """The `widget:` block of the front matter, in the card's YAML style (one line per scalar, masks unfolded)."""
    return yaml.dump({"widget": list(examples)}, Dumper=_IndentedListDumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True, width=float("inf"))


def replace_widget_block(readme_text: str, block: str) -> str:
    """README text with the front matter's `widget:` block replaced by `block`; every other line is kept."""
    front_matter, body = split_front_matter(readme_text)
    lines = front_matter.splitlines(keepends=True)
    starts = [index for index, line in enumerate(lines) if line.startswith("widget:")]
    if len(starts) != 1:
        raise ValueError("README.md's front matter must hold exactly one top-level `widget:` key.")
    start = starts[0]
    end = start + 1
    while end < len(lines) and (lines[end].startswith((" ", "\t")) or not lines[end].strip()):
        end += 1
    return "---\n" + "".join(lines[:start]) + block + "".join(lines[end:]) + "---\n" + body


def build_argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="converted model folder holding handler.py")
    source.add_argument("--synthetic", action="store_true",
                        help="build the synthetic test folder (untrained weights) in a temporary folder and use it")
    parser.add_argument("--readme", type=Path, default=REPO_ROOT / "README.md", help="model card to read (and write)")
    parser.add_argument("--images-root", type=Path, default=None,
                        help="folder the examples' `src` paths are relative to (default: the card's folder)")
    parser.add_argument("--max-instances", type=int, default=DEFAULT_MAX_INSTANCES,
                        help=f"instances kept per example, highest scores first (default {DEFAULT_MAX_INSTANCES})")
    parser.add_argument("--write", action="store_true", help="replace the card's widget block instead of printing it")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_argument_parser().parse_args(argv)
    if args.max_instances < 1:
        raise SystemExit("--max-instances must be at least 1.")
    readme_text = args.readme.read_text(encoding="utf-8")
    examples = widget_examples(readme_text)
    with tempfile.TemporaryDirectory(prefix="widget-examples-") as scratch:
        if args.synthetic:
            sys.path.insert(0, str(REPO_ROOT / "tools"))
            from synthetic_model_folder import lean_synthetic_folder

            model_dir = lean_synthetic_folder(Path(scratch))
        else:
            model_dir = args.model.resolve()
        handler = load_endpoint_handler(model_dir)
        images_root = args.images_root if args.images_root is not None else args.readme.resolve().parent
        block = render_widget_block(example_outputs(handler, examples, images_root, args.max_instances))
    if args.write:
        args.readme.write_text(replace_widget_block(readme_text, block), encoding="utf-8")
        print(f"Wrote the outputs of {len(examples)} widget examples into {args.readme}.")
    else:
        sys.stdout.write(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
