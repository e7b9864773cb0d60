"""The batch package's shape (no model, no Ray): typed frozen options built from the CLI's arguments, only public
names used across modules, one home for the COCO categories, segment.py a thin entry point."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from configuration_mask_rcnn import COCO_CATEGORY_IDS, COCO_CLASSES
from mask_rcnn_batch import cli, overlays, records
from mask_rcnn_batch.options import BatchOptions, RayOptions, RunOptions

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "mask_rcnn_batch"
# Modules of this repository whose names another module may import (flat root modules and the package).
PROJECT_MODULES = {path.stem for path in REPO_ROOT.glob("*.py")} | {"mask_rcnn_batch"}


def test_cli_arguments_become_frozen_typed_options():
    options = cli.parse_options(["--model", "m", "a.png", "dir", "--output-dir", "out", "--threshold", "0.3",
                                 "--no-overlays", "--keep-going", "--batch-size", "4", "--dtype", "bfloat16"])
    assert options == RunOptions(model="m", inputs=("a.png", "dir"), output_dir="out",
                                 batch=BatchOptions(threshold=0.3, dtype="bfloat16", overlays=False, keep_going=True),
                                 batch_size=4, device="cpu")
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.batch_size = 2
    ray = cli.parse_options(["--model", "m", "x", "--output-dir", "o", "--ray", "auto", "--workers", "3"])
    assert ray.ray == RayOptions(address="auto", workers=3) and ray.device is None  # the workers' device: planned
    assert cli.parse_options(["--model", "m", "x", "--output-dir", "o", "--ray"]).ray.address == "local"


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "1.5"], "--threshold and --mask-threshold must be between 0 and 1"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
    (["--images-per-shard", "0"], "--images-per-shard must be at least 1"),
    (["--workers", "2"], "--workers, --cpus-per-worker and --gpus-per-worker need --ray"),
    (["--ray", "--cpus-per-worker", "0"], "--workers and --cpus-per-worker must be positive"),
])
def test_bad_arguments_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.parse_options(["--model", "m", "x", "--output-dir", "o", *argv])
    assert exit_info.value.code == cli.EXIT_FATAL
    assert message in capsys.readouterr().err


def _imported_private_names(path: Path):
    """(module, name) of every `from <project module> import _name` (package siblings included) and
    `<project module>._name` in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = {}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PROJECT_MODULES:
                    aliases[alias.asname or alias.name.split(".")[0]] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
            if node.level > 0 or node.module.split(".")[0] in PROJECT_MODULES:  # relative: a package sibling
                found += [(node.module, alias.name) for alias in node.names if alias.name.startswith("_")]
                aliases.update({alias.asname or alias.name: f"{node.module}.{alias.name}" for alias in node.names})
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append((aliases[node.value.id], node.attr))
    return found


def test_tools_and_the_package_use_only_public_names_of_other_modules():
    files = sorted((REPO_ROOT / "tools").glob("*.py")) + sorted(PACKAGE.glob("*.py")) + [REPO_ROOT / "segment.py"]
    offenders = {path.relative_to(REPO_ROOT).as_posix(): names for path in files
                 if (names := _imported_private_names(path))}
    assert offenders == {}


def test_the_check_finds_private_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import segment\nfrom mask_rcnn_batch.runner import _finish_after_error\nsegment._label_names\n")
    assert sorted(_imported_private_names(probe)) == [("mask_rcnn_batch.runner", "_finish_after_error"),
                                                      ("segment", "_label_names")]


def test_segment_py_is_a_thin_entry_point():
    text = (REPO_ROOT / "segment.py").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 40
    assert "from mask_rcnn_batch.cli import main" in text
    tree = ast.parse(text)
    assert not [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]


def test_no_argparse_namespace_outside_the_cli():
    for path in PACKAGE.glob("*.py"):
        if path.name != "cli.py":
            assert "Namespace" not in path.read_text(encoding="utf-8"), path.name


def test_coco_categories_come_from_the_configuration():
    assert records.COCO_CATEGORIES == tuple(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
    assert len(COCO_CATEGORY_IDS) == len(COCO_CLASSES) == 80
    assert list(COCO_CATEGORY_IDS) == sorted(set(COCO_CATEGORY_IDS))
    assert set(range(1, 91)) - set(COCO_CATEGORY_IDS) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}


def test_overlay_colours_are_fixed_per_class():
    assert overlays.class_colour(0) == overlays.class_colour(0)
    colours = {overlays.class_colour(label) for label in range(80)}
    assert len(colours) == 80 and all(0 <= channel <= 255 for colour in colours for channel in colour)
