# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The Space demo (space/app.py) as people use it: a real server on 127.0.0.1, driven by gradio_client and Chromium.

One app process serves the module (started from a neutral folder with the synthetic test folder of
`test_hub_loading.build_hub_folder`, stopped at the end); its log counts forward passes, which proves that the
slider and the class filter never run the network again. The expected detections come from the same folder loaded
in this process, and the expected picture from the batch CLI's renderer, so the page is held to the one
implementation. The screenshot test needs Chromium (`apt-get install -y chromium`, done by .ci/run); with
`SPACE_SCREENSHOT_UPDATE=1` it also writes docs/images/space_screenshot.png (synthetic weights: labels and scores
only show the format).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools import mask as mask_utils

from browser_screenshot import find_chromium, screenshot
from prepare_space import flatten_requirements, prepare_space
from image_processing_mask_rcnn import MaskRCNNImageProcessor, load_image, pil_to_rgb_array
from mask_rcnn_batch.overlays import draw_overlay
from modeling_mask_rcnn import MaskRCNNForInstanceSegmentation
from test_hub_loading import PHOTO, PORTRAIT, REPO_ROOT, build_hub_folder, hub_user_env

gradio_client = pytest.importorskip("gradio_client")

APP = REPO_ROOT / "space" / "app.py"
EXAMPLE = PHOTO  # the test app's only example, shown on page load (the synthetic weights find instances on it)
DOC_SCREENSHOT = REPO_ROOT / "docs" / "images" / "space_screenshot.png"
MIN_THRESHOLD, DEFAULT_THRESHOLD = 0.05, 0.5  # space/app.py's slider minimum and starting value
MAX_FILE_SIZE_MB = 2  # the test app's upload limit (a small one keeps the oversized upload cheap)
FORWARD_LINE = re.compile(r"forward pass (\d+): ")


# ------------------------------------------------------------------------------------------------------------------
# The app process and the reference detections
# ------------------------------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningApp:
    url: str
    log: Path
    process: subprocess.Popen

    def forward_passes(self) -> int:
        """How many forward passes the app has logged so far."""
        return len(FORWARD_LINE.findall(self.log.read_text(encoding="utf-8", errors="replace")))

    def client(self) -> Any:
        return gradio_client.Client(self.url, verbose=False)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


def _wait_until_serving(url: str, process: subprocess.Popen, log: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the app exited with {process.returncode}:\n{log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"the app did not answer on {url} within {timeout:.0f} s:\n{log.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory) -> Path:
    return build_hub_folder(tmp_path_factory).path


@contextlib.contextmanager
def running_app(script: Path, arguments: List[str], work: Path) -> Iterator[RunningApp]:
    """`python SCRIPT --port P ARGUMENTS` started from the neutral folder `work`, as a Hub user runs it (empty
    HF_HOME, offline, no repository on PYTHONPATH); stopped, with everything it started, on exit."""
    port = _free_port()
    env = hub_user_env(work / "hf_home")
    env.update(GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(work / "gradio"))
    for name in ("GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT", "MODEL_ID", "SPACE_ID"):
        env.pop(name, None)
    log = work / "app.log"
    with open(log, "wb") as log_stream:
        process = subprocess.Popen([sys.executable, str(script), "--port", str(port), *arguments], cwd=work,
                                   env=env, stdin=subprocess.DEVNULL, stdout=log_stream, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _wait_until_serving(url, process, log)
        yield RunningApp(url, log, process)
    finally:
        _stop(process)


@pytest.fixture(scope="module")
def app(model_folder, tmp_path_factory) -> Iterator[RunningApp]:
    """`python space/app.py --model FOLDER` with one example and a small upload limit."""
    work = tmp_path_factory.mktemp("space-app")
    examples = work / "examples"
    examples.mkdir()
    shutil.copy(EXAMPLE, examples / EXAMPLE.name)
    arguments = ["--model", str(model_folder), "--examples", str(examples), "--max-file-size",
                 f"{MAX_FILE_SIZE_MB}mb"]
    with running_app(APP, arguments, work) as running:
        yield running


@pytest.fixture(scope="module")
def reference(model_folder):
    """Detections of the same folder in this process: {path: (rgb, result with masks at MIN_THRESHOLD)}."""
    model = MaskRCNNForInstanceSegmentation.from_pretrained(model_folder).eval()
    processor = MaskRCNNImageProcessor.from_pretrained(model_folder)
    label_names = [model.config.id2label[index] for index in range(len(model.config.id2label))]
    cache: Dict[Path, Any] = {}

    def detections(path: Path):
        if path not in cache:
            rgb = pil_to_rgb_array(load_image(str(path)))
            with torch.inference_mode():
                outputs = model(**processor(images=[rgb], return_tensors="pt"))
            result = processor.post_process_instance_segmentation(outputs, threshold=MIN_THRESHOLD)[0]
            cache[path] = rgb, {name: result[name].numpy() for name in ("boxes", "scores", "labels", "masks")}
        return cache[path]

    detections.label_names = label_names
    return detections


def _subset(result: Dict[str, np.ndarray], keep: np.ndarray) -> Dict[str, np.ndarray]:
    return {name: value[keep] for name, value in result.items()}


def _rendered(rgb: np.ndarray, result: Dict[str, np.ndarray], label_names: List[str]) -> np.ndarray:
    """The batch CLI's overlay of `result` (mask_rcnn_batch.overlays, the one renderer)."""
    return np.asarray(draw_overlay(rgb, result, label_names))


def _read_json(path: str) -> Dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _decoded_masks(document: Dict[str, Any]) -> np.ndarray:
    image = document["images"][0]
    rles = [{"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode("ascii")}
            for ann in document["annotations"]]
    if not rles:
        return np.zeros((0, image["height"], image["width"]), dtype=bool)
    return mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)


def _check_answer(answer, rgb: np.ndarray, expected: Dict[str, np.ndarray], label_names: List[str],
                  file_name: str) -> Dict[str, Any]:
    """The page's four outputs (picture, table, JSON, summary) hold exactly `expected`; returns the JSON."""
    picture, table, json_path, summary = answer
    count = len(expected["scores"])
    assert f"**{count}** of" in summary and file_name in summary

    # the picture is the batch CLI's renderer applied to these detections, pixel for pixel
    shown = np.asarray(Image.open(picture).convert("RGB"))
    assert np.array_equal(shown, _rendered(rgb, expected, label_names))

    # the COCO JSON: one image, its size, and per instance the box, score, category and an RLE of the mask
    document = _read_json(json_path)
    height, width = rgb.shape[:2]
    assert document["images"][0]["file_name"] == file_name
    assert (document["images"][0]["height"], document["images"][0]["width"]) == (height, width)
    annotations = document["annotations"]
    assert len(annotations) == count
    assert np.array_equal(_decoded_masks(document), expected["masks"].reshape(count, height, width))
    np.testing.assert_allclose([ann["score"] for ann in annotations], expected["scores"], rtol=0, atol=1e-6)
    assert [ann["category_id"] for ann in annotations] == expected["labels"].tolist()
    x1y1 = expected["boxes"][:, :2]
    np.testing.assert_allclose(np.reshape([ann["bbox"] for ann in annotations], (-1, 4)),
                               np.concatenate([x1y1, expected["boxes"][:, 2:] - x1y1], axis=1), atol=1e-3)
    assert [ann["area"] for ann in annotations] == expected["masks"].reshape(count, -1).sum(axis=1).tolist()
    categories = {category["id"]: category["name"] for category in document["categories"]}
    assert [categories[ann["category_id"]] for ann in annotations] == [label_names[i] for i in expected["labels"]]

    # the table: one row per instance, in the same order
    assert table["headers"][:3] == ["#", "label", "score"]
    rows = table["data"]
    assert [row[1] for row in rows] == [label_names[index] for index in expected["labels"]]
    assert [row[2] for row in rows] == [round(float(score), 3) for score in expected["scores"]]
    assert [row[-1] for row in rows] == [ann["area"] for ann in annotations]
    return document


# ------------------------------------------------------------------------------------------------------------------
# Upload, threshold, class filter, JSON — and no second forward pass
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mirrored_photo(tmp_path_factory) -> Path:
    """The photo mirrored: an upload with several instances that is not the app's example (whose detections the app
    computed at start-up)."""
    path = tmp_path_factory.mktemp("uploads") / "mirrored photo.png"
    Image.fromarray(np.ascontiguousarray(np.asarray(Image.open(PHOTO))[:, ::-1])).save(path)
    return path


def test_upload_then_filters_without_running_the_network_again(app, reference, mirrored_photo):
    upload = mirrored_photo
    rgb, everything = reference(upload)
    names = reference.label_names
    assert len(everything["scores"]) >= 2, "the synthetic weights should find several instances on the photo"
    client = app.client()
    before = app.forward_passes()

    answer = client.predict(gradio_client.handle_file(str(upload)), MIN_THRESHOLD, [], api_name="/detect")
    _check_answer(answer, rgb, everything, names, upload.name)
    assert app.forward_passes() == before + 1

    threshold = float(np.median(everything["scores"]))
    answer = client.predict(threshold, [], api_name="/filter")
    kept = _check_answer(answer, rgb, _subset(everything, everything["scores"] >= threshold), names, upload.name)
    assert 0 < len(kept["annotations"]) < len(everything["scores"])
    assert kept["info"]["score_threshold"] == threshold

    label = names[int(everything["labels"][-1])]
    answer = client.predict(MIN_THRESHOLD, [label], api_name="/filter")
    only = _subset(everything, everything["labels"] == int(everything["labels"][-1]))
    assert _check_answer(answer, rgb, only, names, upload.name)["info"]["classes"] == [label]

    # the same file again (a re-upload) reuses the session's detections as well
    answer = client.predict(gradio_client.handle_file(str(upload)), DEFAULT_THRESHOLD, [], api_name="/detect")
    _check_answer(answer, rgb, _subset(everything, everything["scores"] >= DEFAULT_THRESHOLD), names, upload.name)
    assert app.forward_passes() == before + 1

    # and the example, computed once at start-up, is served from memory in any session (found by its content:
    # here under another name, which the results then carry)
    example_rgb, example = reference(EXAMPLE)
    renamed = mirrored_photo.parent / "the example renamed.png"
    shutil.copy(EXAMPLE, renamed)
    answer = app.client().predict(gradio_client.handle_file(str(renamed)), MIN_THRESHOLD, [], api_name="/detect")
    _check_answer(answer, example_rgb, example, names, renamed.name)
    assert app.forward_passes() == before + 1


def test_two_sessions_at_once_keep_their_own_results(app, reference, mirrored_photo):
    """Two clients (two browser sessions) upload different images at the same time, then both move the slider:
    each gets its own image's detections."""
    names = reference.label_names
    images = {"a": mirrored_photo, "b": PORTRAIT}
    # the lowest of the two images' best scores: each keeps at least one instance, and fewer than it found
    threshold = np.floor(min(float(reference(path)[1]["scores"].max()) for path in images.values()) * 1000) / 1000
    assert threshold >= MIN_THRESHOLD
    clients = {key: app.client() for key in images}
    answers: Dict[str, List[Any]] = {key: [] for key in images}
    errors: List[BaseException] = []
    barrier = threading.Barrier(len(images))

    def session(key: str) -> None:
        try:
            barrier.wait(timeout=60)
            answers[key].append(clients[key].predict(gradio_client.handle_file(str(images[key])), MIN_THRESHOLD,
                                                     [], api_name="/detect"))
            barrier.wait(timeout=600)
            answers[key].append(clients[key].predict(threshold, [], api_name="/filter"))
        except BaseException as error:  # reported below
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=session, args=(key,)) for key in images]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert not errors, errors
    for key, path in images.items():
        rgb, everything = reference(path)
        _check_answer(answers[key][0], rgb, everything, names, path.name)
        kept = _subset(everything, everything["scores"] >= threshold)
        assert len(kept["scores"]) >= 1
        _check_answer(answers[key][1], rgb, kept, names, path.name)


def test_filtering_before_any_image_says_what_to_do(app):
    picture, table, coco_json, summary = app.client().predict(0.3, [], api_name="/filter")
    assert picture is None and coco_json is None and not table["data"]
    assert "upload or pick one" in summary


# ------------------------------------------------------------------------------------------------------------------
# Bad inputs: a sentence on the page, never a stack trace
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, expected", [
    ("notes.txt", b"these are not pixels\n", "notes.txt': it is not an image file"),
    ("empty.png", b"", "empty.png': the file is empty"),
])
def test_a_file_that_is_not_an_image_gets_a_clear_message(app, tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(gradio_client.exceptions.AppError) as raised:
        app.client().predict(gradio_client.handle_file(str(path)), DEFAULT_THRESHOLD, [], api_name="/detect")
    message = str(raised.value)
    assert expected in message, message
    assert "Traceback" not in message and str(tmp_path) not in message and "/gradio/" not in message


def test_too_many_pixels_and_too_many_bytes_are_refused_with_a_clear_message(app, tmp_path):
    # 7000 x 6000 = 42 M pixels (above the app's 40 M default), refused from the header: a 1-bit PNG of a few KB
    huge = tmp_path / "huge.png"
    Image.new("1", (7000, 6000)).save(huge)
    with pytest.raises(gradio_client.exceptions.AppError) as raised:
        app.client().predict(gradio_client.handle_file(str(huge)), DEFAULT_THRESHOLD, [], api_name="/detect")
    assert "huge.png is too large" in str(raised.value) and "40,000,000 pixels" in str(raised.value)

    # an upload above --max-file-size is refused by the server before it is stored (the browser says so too)
    boundary = "space-test-boundary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
               f"Content-Type: image/png\r\n\r\n").encode() + os.urandom((MAX_FILE_SIZE_MB + 1) << 20) + \
        f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(app.url + "gradio_api/upload", data=payload, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert "maximum allowed size" in refused.value.read().decode()


# ------------------------------------------------------------------------------------------------------------------
# The page in a real browser
# ------------------------------------------------------------------------------------------------------------------

# The picture in the "Instances" output, once drawn and with no progress bar left on the page.
READY_JS = """(() => { const img = document.querySelector('#annotated img');
  return img !== null && img.complete && img.naturalWidth > 0 && document.querySelector('.progress-text') === null
    && document.querySelector('table td') !== null; })()"""
# Where the picture's pixels are on the page (an <img> scaled with object-fit: contain).
MEASURE_JS = """(() => { const img = document.querySelector('#annotated img'); const box = img.getBoundingClientRect();
  return {x: box.x, y: box.y, width: box.width, height: box.height, natural_width: img.naturalWidth,
          natural_height: img.naturalHeight, fit: getComputedStyle(img).objectFit}; })()"""


def _displayed_region(measured: Dict[str, Any]) -> tuple:
    """(left, top, right, bottom) page pixels of the picture's content inside its <img> box."""
    scale = 1.0
    width, height = measured["width"], measured["height"]
    if measured["fit"] in ("contain", "scale-down"):
        scale = min(width / measured["natural_width"], height / measured["natural_height"])
        if measured["fit"] == "scale-down":
            scale = min(scale, 1.0)
        width, height = measured["natural_width"] * scale, measured["natural_height"] * scale
    left = measured["x"] + (measured["width"] - width) / 2
    top = measured["y"] + (measured["height"] - height) / 2
    return round(left), round(top), round(left + width), round(top + height)


def test_the_page_shows_the_annotated_example_in_chromium(app, reference, tmp_path):
    """A fresh page opens with the first example already segmented: the screenshot's "Instances" picture is the
    rendered example (masks included), not the plain photo and not an empty box."""
    if find_chromium() is None:
        message = "Chromium is not installed (apt-get install -y chromium; .ci/run does it)"
        if os.environ.get("MASK_RCNN_REQUIRE_CHROMIUM") == "1":  # set by .ci/run: CI must not skip the browser
            pytest.fail(message)
        pytest.skip(message)
    shot = screenshot(app.url, tmp_path / "space_screenshot.png", ready_js=READY_JS, measure_js=MEASURE_JS,
                      window_size=(1280, 1200), timeout=300)
    page = np.asarray(Image.open(shot.path).convert("RGB")).astype(np.float32)
    assert page.std() > 20, "the page is blank"

    rgb, everything = reference(EXAMPLE)
    shown = _subset(everything, everything["scores"] >= DEFAULT_THRESHOLD)
    assert len(shown["scores"]) >= 1, "the synthetic weights should find an instance on the example"
    expected = _rendered(rgb, shown, reference.label_names)
    left, top, right, bottom = _displayed_region(shot.measured)
    assert (shot.measured["natural_width"], shot.measured["natural_height"]) == (rgb.shape[1], rgb.shape[0])
    region = page[top:bottom, left:right]
    assert region.shape[0] > 100 and region.shape[1] > 100, f"the picture is shown at {region.shape[:2]} only"

    def resized(array: np.ndarray) -> np.ndarray:
        image = Image.fromarray(array).resize((region.shape[1], region.shape[0]), Image.BILINEAR)
        return np.asarray(image).astype(np.float32)

    # The browser's scaling differs slightly from PIL's: compare mean differences, within the masks.
    masks = np.asarray(Image.fromarray(shown["masks"].any(axis=0)).resize((region.shape[1], region.shape[0])))
    assert masks.mean() > 0.01, "the instances cover too little of the picture to check"
    to_annotated = np.abs(region - resized(expected)).mean(axis=2)
    to_plain = np.abs(region - resized(rgb)).mean(axis=2)
    assert to_annotated.mean() < 12, f"the picture is not the annotated example ({to_annotated.mean():.1f})"
    assert to_annotated[masks].mean() < 15 < to_plain[masks].mean(), (
        f"the masks are not visible: within them the page differs by {to_annotated[masks].mean():.1f} from the "
        f"annotated picture and by {to_plain[masks].mean():.1f} from the plain photo")

    if os.environ.get("SPACE_SCREENSHOT_UPDATE") == "1":  # the docs' copy, in 256 colours to keep the repository small
        with Image.open(shot.path) as image:
            image.convert("RGB").quantize(256).save(DOC_SCREENSHOT, optimize=True)


# ------------------------------------------------------------------------------------------------------------------
# The pushable Space folder
# ------------------------------------------------------------------------------------------------------------------


def test_the_prepared_space_folder_runs_on_its_own(model_folder, reference, tmp_path):
    """tools/prepare_space.py's folder holds everything app.py imports: run from a copy elsewhere, with no --model
    (the model comes from README.md's `models:`), it serves the same detections."""
    folder = prepare_space(tmp_path / "space", model_id=str(model_folder), examples=[PHOTO])
    # copied away from the checkout (app.py also looks one folder up): only the folder's own files can be imported
    moved = shutil.copytree(folder, tmp_path / "elsewhere" / "space")
    requirements = (moved / "requirements.txt").read_text(encoding="utf-8").splitlines()
    assert not [line for line in requirements if line.strip().startswith("-r")]
    root_requirements = [line for line in flatten_requirements(REPO_ROOT / "requirements.txt")
                         if line.strip() and not line.startswith("#")]
    assert set(root_requirements) <= set(requirements)
    assert (moved / "examples" / PHOTO.name).is_file()

    work = tmp_path / "work"
    work.mkdir()
    with running_app(moved / "app.py", [], work) as running:
        answer = running.client().predict(gradio_client.handle_file(str(PHOTO)), MIN_THRESHOLD, [],
                                          api_name="/detect")
        rgb, everything = reference(PHOTO)
        _check_answer(answer, rgb, everything, reference.label_names, PHOTO.name)
