# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""A converted Hub folder with synthetic R50-FPN weights and lean settings, for tests and reproducible examples.

`lean_synthetic_folder(base_dir)` converts the synthetic `mask-rcnn_r50_fpn_1x_coco` checkpoint (seed 0, see
`synthetic_weights.py`) with `convert_mmdet_checkpoint.convert_checkpoint` into `base_dir/synthetic-r50-hub-folder`
— a complete folder, code files included — and makes it cheap to run: at most 20 detections from 200 proposals,
images resized to at most 300x200. A folder that is already there is reused (one conversion per test session).

The weights are not trained: the labels and scores they produce only show formats, never what the COCO model sees.

    python tools/synthetic_model_folder.py /tmp/models      # prints the folder it made
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

SYNTHETIC_CONFIG_NAME = "mask-rcnn_r50_fpn_1x_coco"
FOLDER_NAME = "synthetic-r50-hub-folder"
LEAN_CONFIG: Dict[str, Any] = {"max_detections_per_image": 20, "rpn_max_proposals": 200, "rpn_pre_nms_top_k": 200}
LEAN_RESIZE_SCALE: List[int] = [300, 200]


def _update_json(path: Path, changes: Dict[str, Any]) -> None:
    content = json.loads(path.read_text(encoding="utf-8"))
    content.update(changes)
    path.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def lean_synthetic_folder(base_dir: Path) -> Path:
    """`base_dir/synthetic-r50-hub-folder`, converted from the synthetic checkpoint with the lean settings."""
    folder = Path(base_dir) / FOLDER_NAME
    if (folder / "model.safetensors").is_file():
        return folder
    from convert_mmdet_checkpoint import convert_checkpoint
    from synthetic_weights import save_synthetic_checkpoint

    with tempfile.TemporaryDirectory(prefix="synthetic-checkpoint-") as scratch:
        checkpoint = save_synthetic_checkpoint(str(Path(scratch) / "synthetic.pth"), SYNTHETIC_CONFIG_NAME)
        convert_checkpoint(SYNTHETIC_CONFIG_NAME, checkpoint=checkpoint, output_dir=folder)
    _update_json(folder / "config.json", LEAN_CONFIG)
    _update_json(folder / "preprocessor_config.json", {"resize_scale": LEAN_RESIZE_SCALE})
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tools/synthetic_model_folder.py BASE_DIR")
    print(lean_synthetic_folder(Path(sys.argv[1])))
