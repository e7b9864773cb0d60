# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Records what the public entry points answer for a few fixture images: the two transformers pipelines
(`image-segmentation`, `object-detection`, loaded with `trust_remote_code=True`) and the Inference Endpoints handler
(`handler.EndpointHandler`, png and rle masks). tests/test_public_outputs_golden.py holds later versions to it.

It records from any checkout, given as an argument, so the golden could be made with the code from before the
consolidation (commit 373a37b) and the test can run the very same recorder against today's tree:

1. the checkout's own `tools/synthetic_model_folder.lean_synthetic_folder` converts the synthetic R50 checkpoint
   into a Hub folder (the checkout's code files are copied into it);
2. from a neutral folder, without the checkout on `sys.path`, the pipelines are loaded from that Hub folder as users
   load them;
3. the folder's own handler.py is imported by its location with the folder first on `sys.path`, as
   huggingface-inference-toolkit does, and answers requests whose `inputs` are the image files' bytes.

Every step is a subprocess with float32 (the default), 1 torch thread and PyTorch's AVX2 kernels
(`reference_kernels`), so the floats do not depend on the core count or the CPU's widest instruction set.
Threshold 0.05: the synthetic weights are untrained, their scores are low; the records show formats and numerics,
never what the COCO model detects. A mask is recorded as its size, pixel count and the sha256 of its packed bits
(png masks decoded to pixels first, so the PNG encoder's settings do not matter); an RLE mask as its size and the
sha256 of its counts string. Scores and box coordinates are kept as they come (JSON floats round-trip exactly).

    python tools/record_public_outputs_golden.py /tmp/pre373              # writes tests/fixtures/public_outputs/
    python tools/record_public_outputs_golden.py . --output /tmp/now.json  # today's tree, elsewhere
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "tools"))

from reference_kernels import REFERENCE_KERNELS  # noqa: E402

GOLDEN_PATH = REPO_ROOT / "tests" / "fixtures" / "public_outputs" / "public_outputs.json"
FIXTURE_IMAGES = REPO_ROOT / "tests" / "fixtures" / "images"
IMAGES = ("photo_640x480.png", "exif_rot6_480x320.jpg", "palette_400x300.png", "tiny_97x61.png")
THRESHOLD = 0.05
HANDLER_REQUESTS: Dict[str, Dict[str, Any]] = {
    "segmentation_png": {"task": "image-segmentation", "threshold": THRESHOLD, "mask_format": "png"},
    "segmentation_rle": {"task": "image-segmentation", "threshold": THRESHOLD, "mask_format": "rle"},
    "detection": {"task": "object-detection", "threshold": THRESHOLD},
}

# The code each subprocess runs (kept as text: the subprocesses must not import this repository's modules).
_DIGEST_CODE = r'''
import base64, hashlib, io, json, sys
import numpy as np
from PIL import Image

def mask_digest(pixels):
    pixels = np.asarray(pixels)
    bits = pixels > 0
    return {"size": list(bits.shape), "pixels": int(bits.sum()),
            "sha256": hashlib.sha256(np.packbits(bits).tobytes()).hexdigest()}

def record(item):
    out = {}
    for key, value in item.items():
        if key == "mask" and isinstance(value, Image.Image):
            out[key] = {"mode": value.mode, **mask_digest(np.array(value))}
        elif key == "mask" and isinstance(value, str):  # handler png: base64 PNG
            image = Image.open(io.BytesIO(base64.b64decode(value)))
            out[key] = {"format": image.format, "mode": image.mode, **mask_digest(np.array(image))}
        elif key == "mask" and isinstance(value, dict):  # handler rle: {"size", "counts"}
            out[key] = {"size": value["size"], "counts_type": type(value["counts"]).__name__,
                        "counts_sha256": hashlib.sha256(str(value["counts"]).encode()).hexdigest()}
        else:
            out[key] = value
    return out
'''

_BUILD_CODE = r'''
import sys
from pathlib import Path
checkout = Path(sys.argv[1])
sys.path[:0] = [str(checkout), str(checkout / "tools")]
from synthetic_model_folder import lean_synthetic_folder
print(lean_synthetic_folder(Path(sys.argv[2])))
'''

_PIPELINES_CODE = _DIGEST_CODE + r'''
import torch
from transformers import pipeline
folder, threshold, images = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
segmenter = pipeline("image-segmentation", model=folder, trust_remote_code=True, device="cpu")
detector = pipeline("object-detection", model=folder, trust_remote_code=True, device="cpu")
result = {"segmentation": {}, "detection": {}, "segmentation_batch2": None, "torch_threads": torch.get_num_threads()}
for path in images:
    name = path.rsplit("/", 1)[-1]
    result["segmentation"][name] = [record(item) for item in segmenter(path, threshold=threshold)]
    result["detection"][name] = [record(item) for item in detector(path, threshold=threshold)]
result["segmentation_batch2"] = [[record(item) for item in answer]
                                 for answer in segmenter(list(images), threshold=threshold, batch_size=2)]
json.dump(result, sys.stdout)
'''

_HANDLER_CODE = _DIGEST_CODE + r'''
import importlib.util
folder, requests, images = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
sys.path.insert(0, folder)
spec = importlib.util.spec_from_file_location("handler", folder + "/handler.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
handler = module.EndpointHandler(folder)
result = {}
for request_name, parameters in requests.items():
    result[request_name] = {}
    for path in images:
        with open(path, "rb") as handle:
            answer = handler({"inputs": handle.read(), "parameters": parameters})
        json.dumps(answer)  # the wire format is plain JSON
        result[request_name][path.rsplit("/", 1)[-1]] = [record(item) for item in answer]
json.dump(result, sys.stdout)
'''


def subprocess_environment(hf_home: Path) -> Dict[str, str]:
    """1 thread, the reference kernels (unless the caller set others), offline, an empty module cache."""
    environment = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", HF_HUB_OFFLINE="1",
                       HF_HOME=str(hf_home))
    environment.pop("PYTHONPATH", None)
    environment.pop("MASK_RCNN_DTYPE", None)  # the handler's dtype: float32 by default
    for name, value in REFERENCE_KERNELS.items():
        environment.setdefault(name, value)
    return environment


def _run(code: str, args, environment: Dict[str, str], cwd: Path) -> str:
    completed = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                               env=environment, cwd=cwd, timeout=600)
    if completed.returncode != 0:
        raise RuntimeError(f"recording subprocess exited with {completed.returncode}:\n{completed.stderr}")
    return completed.stdout


def record_public_outputs(checkout: Path) -> Dict[str, Any]:
    """{"pipelines": ..., "handler": ...} answered by the code of `checkout` on the fixture images."""
    images = [str(FIXTURE_IMAGES / name) for name in IMAGES]
    with tempfile.TemporaryDirectory(prefix="public-outputs-golden-") as scratch:
        scratch_path = Path(scratch)
        neutral = scratch_path / "neutral"
        neutral.mkdir()
        environment = subprocess_environment(scratch_path / "hf_home")
        folder = _run(_BUILD_CODE, [Path(checkout).resolve(), scratch_path], environment, neutral).strip()
        folder = folder.splitlines()[-1]
        pipelines = json.loads(_run(_PIPELINES_CODE, [folder, THRESHOLD, *images], environment, neutral))
        handler = json.loads(_run(_HANDLER_CODE, [folder, json.dumps(HANDLER_REQUESTS), *images], environment,
                                  neutral))
    return {"threshold": THRESHOLD, "images": list(IMAGES), "pipelines": pipelines, "handler": handler}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="root of the checkout whose code answers")
    parser.add_argument("--output", type=Path, default=GOLDEN_PATH, help=f"JSON to write (default {GOLDEN_PATH})")
    arguments = parser.parse_args()
    recorded = record_public_outputs(arguments.checkout)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    arguments.output.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    counts = {name: sum(map(len, answers.values())) for name, answers in recorded["handler"].items()}
    print(f"{arguments.output}: handler instances {counts}")


if __name__ == "__main__":
    main()
