# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Assemble a folder that can be pushed as a Hugging Face Space running the demo of space/.

    python tools/prepare_space.py OUT_DIR --model-id USER/MODEL_REPO [--example IMAGE ...]

A Space sees only its own files, so OUT_DIR gets:

* `app.py`            space/app.py unchanged;
* the repository modules app.py imports (the batch CLI's renderer and COCO record helpers), found by importing
                      app.py in a fresh interpreter and keeping every module loaded from this repository, copied
                      with their relative paths (nothing here lists them by hand);
* `requirements.txt`  space/requirements.txt with its `-r` includes written out in full;
* `README.md`         space/README.md (the Space front matter) with `models: [MODEL_ID]`, which links the Space and
                      the model on the Hub and is the model app.py loads when the Space has no `MODEL_ID` variable;
* `examples/`         the example images (default: samples/*.jpg).

Then push it (docs/space.md): `huggingface-cli upload USER/SPACE OUT_DIR . --repo-type space`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
SPACE_SOURCE = REPO_ROOT / "space"
DEFAULT_EXAMPLES = sorted((REPO_ROOT / "samples").glob("*.jpg"))

# Run in a fresh interpreter: import app.py as a module (its main() does not run) and list the files of every
# module then loaded from inside the repository, other than app.py itself.
_LIST_IMPORTS = """
import json, runpy, sys
from pathlib import Path
root, app = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
runpy.run_path(str(app), run_name="space_app")
files = set()
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if path and Path(path).is_absolute() and Path(path).is_file() and Path(path).resolve() != app \
            and Path(path).resolve().is_relative_to(root):
        files.add(str(Path(path).resolve().relative_to(root)))
print(json.dumps(sorted(files)))
"""


class PrepareSpaceError(Exception):
    """The Space folder could not be assembled (one sentence)."""


def repository_imports(app: Path = SPACE_SOURCE / "app.py") -> List[str]:
    """Repository-relative paths of the repository modules that importing `app` loads."""
    completed = subprocess.run([sys.executable, "-c", _LIST_IMPORTS, str(REPO_ROOT), str(app)], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise PrepareSpaceError(f"Importing {app} failed:\n{completed.stderr[-3000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def flatten_requirements(path: Path, seen: Optional[set] = None) -> List[str]:
    """The requirement lines of `path` with every `-r FILE` include replaced by that file's lines (recursively)."""
    seen = set() if seen is None else seen
    path = path.resolve()
    if path in seen:
        return []
    seen.add(path)
    lines: List[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith(("-r ", "--requirement ")):
            lines.extend(flatten_requirements(path.parent / stripped.split(maxsplit=1)[1], seen))
        else:
            lines.append(line)
    return lines


def prepare_space(output_dir: Path, model_id: Optional[str], examples: Sequence[Path] = DEFAULT_EXAMPLES) -> Path:
    """Writes the Space folder (see the module docstring) to `output_dir`, which must be empty or absent."""
    from huggingface_hub import metadata_load, metadata_save

    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise PrepareSpaceError(f"{output_dir} is not empty; pass a new folder.")
    output_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(SPACE_SOURCE / "app.py", output_dir / "app.py")
    for relative in repository_imports():
        (output_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO_ROOT / relative, output_dir / relative)
    requirements = flatten_requirements(SPACE_SOURCE / "requirements.txt")
    (output_dir / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")

    shutil.copy2(SPACE_SOURCE / "README.md", output_dir / "README.md")
    if model_id:
        metadata = metadata_load(output_dir / "README.md") or {}
        metadata["models"] = [model_id]
        metadata_save(output_dir / "README.md", metadata)

    if examples:
        (output_dir / "examples").mkdir()
        for example in examples:
            shutil.copy2(example, output_dir / "examples" / Path(example).name)
    return output_dir


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--model-id", help="the model repository the Space loads (written to README.md's models:)")
    parser.add_argument("--example", dest="examples", type=Path, action="append",
                        help="an example image (repeatable; default: samples/*.jpg)")
    args = parser.parse_args(argv)
    try:
        folder = prepare_space(args.output_dir, args.model_id,
                               DEFAULT_EXAMPLES if args.examples is None else args.examples)
    except PrepareSpaceError as error:
        sys.exit(str(error))
    print(folder)


if __name__ == "__main__":
    main()
