# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Serving from the Hub: handler.py's EndpointHandler and pipeline.py's legacy PreTrainedPipeline, loaded exactly as
huggingface-inference-toolkit loads them, answering in the Hub's wire format, also under concurrent requests.

A converted synthetic folder (tools/synthetic_model_folder.py, shared with test_segment_cli.py: 20 detections from
200 proposals, images resized to at most 300x200) is served by fresh Python processes started in another working
directory, with an empty HF_HOME, offline and without the repository on PYTHONPATH:

* `HANDLER_SCRIPT` repeats the toolkit's `check_and_register_custom_pipeline_from_directory` (handler.py branch:
  import by file location, model folder first on `sys.path`), sends every request shape the toolkit produces (a
  PIL image as its image/* deserializer makes it, bytes, base64, data URI, URL served on localhost, query-string
  parameters as text), both tasks and both mask formats, every kind of bad request, then 32 mixed requests from 8
  threads; as the reference it runs the same images through `transformers.pipeline(..., trust_remote_code=True)`.
* `LEGACY_SCRIPT` repeats the toolkit's legacy branch (`pipeline.py` -> `PreTrainedPipeline`).

The tests then check what those processes wrote, field by field. About 60 forward passes in all.
"""

from __future__ import annotations

import base64
import io
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

import serving_mask_rcnn as serving
from inference_mask_rcnn import resolve_compute_dtype
from synthetic_model_folder import lean_synthetic_folder
from test_hub_loading import IMAGES, PHOTO, REPO_ROOT, hub_user_env

EXIF = IMAGES / "exif_rot6_480x320.jpg"
# The synthetic weights are calibrated for full-size images; at 300x200 few scores reach 0.5, so most requests ask
# for 0.05 to get several instances to compare (the "defaults" request checks the default 0.5).
REQUEST_THRESHOLD = 0.05
WIRE_SEGMENT_KEYS = ["score", "label", "box", "mask"]
WIRE_DETECTION_KEYS = ["score", "label", "box"]
BOX_KEYS = ["xmin", "ymin", "xmax", "ymax"]

# handler request (HANDLER_SCRIPT's REQUESTS) -> the transformers pipeline call (REFERENCES) it must equal
SEGMENTATION_CASES = {
    "pil/photo": "file/photo",
    "pil/exif": "file/exif",
    "bytes/photo": "file/photo",
    "base64/photo": "file/photo",
    "datauri/exif": "file/exif",
    "base64/gray16": "file/gray16",
    "url/photo": "file/photo",
    "text-parameters/photo": "file/photo",
    "defaults/photo": "file/photo/defaults",
}
DETECTION_CASES = {"detection/photo": "detection/file/photo", "detection/pil-exif": "detection/file/exif"}

# bad request -> a fragment of the one-sentence message the client gets
BAD_REQUESTS = {
    "not-a-mapping": "must be a JSON object with an 'inputs' field",
    "no-inputs": "has no 'inputs'",
    "inputs-null": "has no 'inputs'",
    "inputs-wrong-type": "'inputs' must be an image",
    "empty-bytes": "'inputs' is empty",
    "undecodable-bytes": "could not be decoded as an image",
    "undecodable-base64": "could not be decoded as an image",
    "truncated-png": "could not be decoded as an image",
    "plain-text": "neither an http(s) URL nor base64 image data",
    "path-on-the-server": "neither an http(s) URL nor base64 image data",
    "bad-base64-length": "not valid base64",
    "url-not-found": "Could not download image",
    "parameters-not-an-object": "'parameters' must be a JSON object",
    "unknown-parameter": "Unknown parameter 'treshold' for task 'image-segmentation'",
    "unknown-task": "Unknown task 'depth-estimation'",
    "mask-threshold-for-detection": "Unknown parameter 'mask_threshold' for task 'object-detection'",
    "threshold-above-one": "threshold must be a number between 0 and 1, got 1.5",
    "threshold-negative": "threshold must be a number between 0 and 1, got -0.1",
    "threshold-text": "threshold must be a number between 0 and 1, got 'high'",
    "threshold-bool": "threshold must be a number between 0 and 1, got True",
    "mask-threshold-above-one": "mask_threshold must be a number between 0 and 1, got 2",
    "unknown-mask-format": "Unknown mask_format 'jpeg'",
    "subtask": "subtask must be 'instance'",
}

HANDLER_SCRIPT = textwrap.dedent(r'''
    import base64, functools, http.server, importlib.util, io, json, logging, os, random, sys, threading, time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    model_dir, work, photo, exif, gray16 = sys.argv[1:6]
    threshold = float(sys.argv[6])
    report, masks = {"cwd": os.getcwd()}, {}

    # huggingface-inference-toolkit, utils.py check_and_register_custom_pipeline_from_directory (handler.py branch)
    custom_module = Path(model_dir).joinpath("handler.py")
    spec = importlib.util.spec_from_file_location("handler.EndpointHandler", custom_module)
    sys.path.insert(0, model_dir)
    handler_module = importlib.util.module_from_spec(spec)
    sys.modules["handler.EndpointHandler"] = handler_module
    spec.loader.exec_module(handler_module)
    inference_handler = handler_module.EndpointHandler(model_dir)

    report["loaded"] = {
        "class": type(inference_handler).__name__, "device": str(inference_handler.device),
        "dtype": str(inference_handler.model.dtype),
        "module_files": {name: getattr(sys.modules.get(name), "__file__", None) for name in (
            "serving_mask_rcnn", "pipeline", "inference_mask_rcnn", "modeling_mask_rcnn", "image_processing_mask_rcnn",
            "configuration_mask_rcnn")},
    }

    from PIL import Image
    import numpy as np

    def toolkit_image(path):  # serialization/image_utils.py Imager.deserialize: what an image/* body becomes
        return Image.open(io.BytesIO(Path(path).read_bytes())).convert("RGB")

    def b64(path):
        return base64.b64encode(Path(path).read_bytes()).decode("ascii")

    class QuietFiles(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietFiles,
                                                                                directory=str(Path(photo).parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    SEGMENT = {"threshold": threshold}
    REQUESTS = {  # each call builds a new request, as the toolkit does per HTTP request
        "pil/photo": lambda: {"inputs": toolkit_image(photo), "parameters": dict(SEGMENT)},
        "pil/exif": lambda: {"inputs": toolkit_image(exif), "parameters": dict(SEGMENT)},
        "bytes/photo": lambda: {"inputs": Path(photo).read_bytes(), "parameters": dict(SEGMENT)},
        "base64/photo": lambda: {"inputs": b64(photo), "parameters": dict(SEGMENT)},
        "datauri/exif": lambda: {"inputs": "data:image/jpeg;base64," + b64(exif), "parameters": dict(SEGMENT)},
        "base64/gray16": lambda: {"inputs": b64(gray16), "parameters": dict(SEGMENT)},
        "url/photo": lambda: {"inputs": url + Path(photo).name, "parameters": dict(SEGMENT)},
        # query-string parameters reach the handler as text (webservice_starlette.py, convert_params_to_int_or_bool)
        "text-parameters/photo": lambda: {"inputs": b64(photo), "parameters": {
            "threshold": str(threshold), "mask_threshold": "0.5", "task": "image-segmentation", "mask_format": "png"}},
        "defaults/photo": lambda: {"inputs": b64(photo)},
        "rle/photo": lambda: {"inputs": b64(photo), "parameters": {**SEGMENT, "mask_format": "rle"}},
        "detection/photo": lambda: {"inputs": b64(photo), "parameters": {**SEGMENT, "task": "object-detection"}},
        "detection/pil-exif": lambda: {"inputs": toolkit_image(exif),
                                       "parameters": {**SEGMENT, "task": "object-detection"}},
    }
    BAD = {
        "not-a-mapping": lambda: ["an image"],
        "no-inputs": lambda: {"parameters": {}},
        "inputs-null": lambda: {"inputs": None},
        "inputs-wrong-type": lambda: {"inputs": 42},
        "empty-bytes": lambda: {"inputs": b""},
        "undecodable-bytes": lambda: {"inputs": b"this is not an image"},
        "undecodable-base64": lambda: {"inputs": base64.b64encode(b"this is not an image").decode()},
        "truncated-png": lambda: {"inputs": Path(photo).read_bytes()[:4000]},
        "plain-text": lambda: {"inputs": "a photo of a cat, please!"},
        "path-on-the-server": lambda: {"inputs": photo},
        "bad-base64-length": lambda: {"inputs": "abcde"},
        "url-not-found": lambda: {"inputs": url + "missing.png"},
        "parameters-not-an-object": lambda: {"inputs": b64(photo), "parameters": [0.5]},
        "unknown-parameter": lambda: {"inputs": b64(photo), "parameters": {"treshold": 0.5}},
        "unknown-task": lambda: {"inputs": b64(photo), "parameters": {"task": "depth-estimation"}},
        "mask-threshold-for-detection": lambda: {"inputs": b64(photo),
                                                 "parameters": {"task": "object-detection", "mask_threshold": 0.5}},
        "threshold-above-one": lambda: {"inputs": b64(photo), "parameters": {"threshold": 1.5}},
        "threshold-negative": lambda: {"inputs": b64(photo), "parameters": {"threshold": -0.1}},
        "threshold-text": lambda: {"inputs": b64(photo), "parameters": {"threshold": "high"}},
        "threshold-bool": lambda: {"inputs": b64(photo), "parameters": {"threshold": True}},
        "mask-threshold-above-one": lambda: {"inputs": b64(photo), "parameters": {"mask_threshold": 2}},
        "unknown-mask-format": lambda: {"inputs": b64(photo), "parameters": {"mask_format": "jpeg"}},
        "subtask": lambda: {"inputs": b64(photo), "parameters": {"subtask": "panoptic"}},
    }

    def outcome(request):
        try:
            return {"answer": inference_handler(request)}
        except Exception as error:
            return {"error": type(error).__name__, "value_error": isinstance(error, ValueError), "message": str(error)}

    # 1. every request shape, one after the other (also the reference answers of the concurrent run)
    sequential = {}
    for name, make in REQUESTS.items():
        start = time.perf_counter()
        sequential[name] = outcome(make())
        sequential[name]["seconds"] = time.perf_counter() - start
    report["sequential"] = sequential
    try:
        import orjson  # the toolkit's serializer; no `default=` here, so any non-JSON value would fail
        report["orjson_ok"] = all(orjson.loads(orjson.dumps(item["answer"])) == item["answer"]
                                  for item in sequential.values())
    except ImportError:
        report["orjson_ok"] = None
    report["bad"] = {name: outcome(make()) for name, make in BAD.items()}

    # 2. a failure inside the model: the client gets one sentence, the log the traceback
    captured = []
    class Capture(logging.Handler):
        def emit(self, record):
            captured.append({"message": record.getMessage(), "has_traceback": record.exc_info is not None})
    logging.getLogger("serving_mask_rcnn").addHandler(Capture())
    def failing_forward(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (injected) in /secret/internal/path.py")
    inference_handler.model.forward = failing_forward
    report["internal_error"] = outcome(REQUESTS["base64/photo"]())
    del inference_handler.model.forward
    report["internal_error"]["log"] = captured
    report["after_internal_error"] = outcome(REQUESTS["defaults/photo"]())

    # 3. the reference: the transformers pipelines of this folder, as a Hub user runs them
    from transformers import pipeline
    segmenter = pipeline("image-segmentation", model=model_dir, trust_remote_code=True, device="cpu")
    detector = pipeline("object-detection", model=model_dir, trust_remote_code=True, device="cpu")
    references = {
        "file/photo": segmenter(photo, threshold=threshold),
        "file/exif": segmenter(exif, threshold=threshold),
        "file/gray16": segmenter(gray16, threshold=threshold),
        "file/photo/defaults": segmenter(photo),
        "detection/file/photo": detector(photo, threshold=threshold),
        "detection/file/exif": detector(exif, threshold=threshold),
    }
    report["references"] = {}
    for name, annotations in references.items():
        report["references"][name] = [{key: item[key] for key in ("score", "label", "box")} for item in annotations]
        for index, item in enumerate(annotations):
            if "mask" in item:
                masks[f"{name}/{index}"] = np.asarray(item["mask"])
    processing = sys.modules["image_processing_mask_rcnn"]
    def decoded(image):
        return processing.pil_to_rgb_array(processing.load_image(image))
    report["toolkit_decoding_equals_file"] = {
        name: bool(np.array_equal(decoded(path), decoded(toolkit_image(path))))
        for name, path in (("exif", exif), ("gray16", gray16), ("photo", photo))}

    # 4. 8 threads, 32 mixed requests (one kind of them bad), in a shuffled order
    kinds = ["pil/photo", "bytes/photo", "datauri/exif", "url/photo", "rle/photo", "detection/pil-exif",
             "defaults/photo", "undecodable-bytes"]
    order = kinds * 4
    random.Random(0).shuffle(order)
    def concurrent_call(name):
        request = (REQUESTS.get(name) or BAD[name])()
        start = time.perf_counter()
        result = outcome(request)
        return {"name": name, "start": start, "end": time.perf_counter(), **result}
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(concurrent_call, order))
    report["concurrent"] = {"calls": concurrent, "seconds": time.perf_counter() - start}

    # 5. MASK_RCNN_DTYPE chooses the dtype the model is loaded in (a bf16 forward on CPU is too slow to run here)
    os.environ["MASK_RCNN_DTYPE"] = "bfloat16"
    bf16_handler = handler_module.EndpointHandler(model_dir)
    report["bf16"] = {"model": str(bf16_handler.model.dtype),
                      "parameters": sorted({str(p.dtype) for p in bf16_handler.model.parameters()})}
    os.environ["MASK_RCNN_DTYPE"] = "int8"
    try:
        handler_module.EndpointHandler(model_dir)
        report["bad_dtype"] = None
    except ValueError as error:
        report["bad_dtype"] = str(error)

    server.shutdown()
    with open(f"{work}/report.json", "w") as handle:
        json.dump(report, handle)
    np.savez_compressed(f"{work}/masks.npz", **masks)
''')

LEGACY_SCRIPT = textwrap.dedent(r'''
    import base64, importlib.util, io, json, os, sys
    from pathlib import Path

    model_dir, work, photo = sys.argv[1:4]
    threshold = float(sys.argv[4])

    # huggingface-inference-toolkit, utils.py check_and_register_custom_pipeline_from_directory (legacy branch)
    legacy_module = Path(model_dir).joinpath("pipeline.py")
    spec = importlib.util.spec_from_file_location("pipeline.PreTrainedPipeline", legacy_module)
    sys.path.insert(0, model_dir)
    pipeline = importlib.util.module_from_spec(spec)
    sys.modules["pipeline.PreTrainedPipeline"] = pipeline
    spec.loader.exec_module(pipeline)
    custom_pipeline = pipeline.PreTrainedPipeline(model_dir)

    from PIL import Image
    image = Image.open(io.BytesIO(Path(photo).read_bytes())).convert("RGB")
    report = {"class": type(custom_pipeline).__name__, "module_file": pipeline.__file__,
              "model_file": sys.modules["modeling_mask_rcnn"].__file__,
              # the Hub's former widget backend: a PIL image in, the wire format out
              "widget_call": custom_pipeline(image),
              # what the toolkit passes on this path: the whole request body
              "toolkit_call": custom_pipeline({"inputs": base64.b64encode(Path(photo).read_bytes()).decode(),
                                               "parameters": {"threshold": threshold}})}
    try:
        custom_pipeline({"parameters": {"threshold": threshold}})
        report["error"] = None
    except Exception as error:
        report["error"] = {"type": type(error).__name__, "value_error": isinstance(error, ValueError),
                           "message": str(error)}
    with open(f"{work}/legacy.json", "w") as handle:
        json.dump(report, handle)
''')


def _run_script(script: str, arguments: List[str], work: Path) -> subprocess.CompletedProcess:
    path = work / "serve.py"
    path.write_text(script, encoding="utf-8")
    completed = subprocess.run([sys.executable, str(path), *arguments], cwd=work, env=hub_user_env(work / "hf_home"),
                               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, f"serving process failed:\n{completed.stdout[-3000:]}\n{completed.stderr[-6000:]}"
    return completed


def _gray16_image(path: Path) -> Path:
    """A 16-bit grayscale PNG of the photo (high byte = the 8-bit gray value, low byte varies)."""
    gray = np.asarray(Image.open(PHOTO).convert("L")).astype(np.uint16)
    low = (np.arange(gray.size, dtype=np.uint16).reshape(gray.shape) * 37) % 256
    Image.fromarray((gray << 8) | low).save(path)
    assert Image.open(path).mode == "I;16"
    return path


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    return lean_synthetic_folder(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def served(model_dir, tmp_path_factory) -> Dict[str, Any]:
    work = tmp_path_factory.mktemp("endpoint")
    gray16 = _gray16_image(work / "gray16_640x480.png")
    _run_script(HANDLER_SCRIPT, [str(model_dir), str(work), str(PHOTO), str(EXIF), str(gray16),
                                 str(REQUEST_THRESHOLD)], work)
    report = json.loads((work / "report.json").read_text(encoding="utf-8"))
    with np.load(work / "masks.npz") as stored:
        report["_masks"] = {key: stored[key] for key in stored.files}
    report["_work"], report["_gray16"] = work, gray16
    return report


@pytest.fixture(scope="module")
def legacy(model_dir, tmp_path_factory) -> Dict[str, Any]:
    work = tmp_path_factory.mktemp("legacy")
    _run_script(LEGACY_SCRIPT, [str(model_dir), str(work), str(PHOTO), str(REQUEST_THRESHOLD)], work)
    return json.loads((work / "legacy.json").read_text(encoding="utf-8"))


def _answer(served: Dict[str, Any], name: str) -> List[Dict[str, Any]]:
    outcome = served["sequential"][name]
    assert "answer" in outcome, f"{name} failed: {outcome}"
    return outcome["answer"]


def _png_mask(text: str) -> Image.Image:
    assert isinstance(text, str) and not text.startswith("data:")
    data = base64.b64decode(text, validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _assert_one_sentence(message: str) -> None:
    """One line, ending with a full stop, with no second sentence and nothing of a stack trace."""
    assert message.endswith(".") and "\n" not in message and "Traceback" not in message, message
    assert not re.search(r"[.!?]\s+[A-Z]", message), message


# ------------------------------------------------------------------------------------------------- loading


def test_converter_copies_handler_into_converted_folders(model_dir):
    for name in ("handler.py", "pipeline.py", "serving_mask_rcnn.py", "inference_mask_rcnn.py"):
        assert (model_dir / name).read_bytes() == (REPO_ROOT / name).read_bytes(), name


def test_serving_lives_in_serving_mask_rcnn_and_pipeline_py_holds_pipelines():
    """pipeline.py has no wire format, request parsing or status codes; its `PreTrainedPipeline` (the toolkit's
    legacy entry point) is the serving module's class, imported only when asked for."""
    import pipeline as repo_pipeline

    for name in ("BadRequestError", "MaskRCNNRequestHandler", "to_wire_format", "encode_mask_png", "encode_mask_rle",
                 "parse_request_parameters", "decode_request_image", "SERVING_TASKS", "MASK_FORMATS"):
        assert name not in vars(repo_pipeline), name
        assert hasattr(serving, name), name
    assert repo_pipeline.PreTrainedPipeline is serving.PreTrainedPipeline
    assert issubclass(serving.PreTrainedPipeline, serving.MaskRCNNRequestHandler)
    probe = ("import sys, pipeline; assert 'serving_mask_rcnn' not in sys.modules; "
             "pipeline.PreTrainedPipeline; assert 'serving_mask_rcnn' in sys.modules")
    subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, check=True)


def test_handler_is_loaded_as_the_toolkit_loads_it(served, model_dir):
    loaded = served["loaded"]
    assert loaded["class"] == "EndpointHandler"
    assert served["cwd"] == str(served["_work"]) and not served["cwd"].startswith(str(REPO_ROOT))
    for name, path in loaded["module_files"].items():  # the folder's own code files, not the repository's
        assert path == str(model_dir / f"{name}.py"), (name, path)
    assert loaded["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert loaded["dtype"] == "torch.float32"


def test_dtype_comes_from_the_environment(served):
    assert served["bf16"] == {"model": "torch.bfloat16", "parameters": ["torch.bfloat16"]}
    assert served["bad_dtype"] == ("MASK_RCNN_DTYPE='int8' is not a supported dtype: use float32, bfloat16 or "
                                   "float16.")


# ------------------------------------------------------------------------------------------------- wire format


@pytest.mark.parametrize("name", sorted(SEGMENTATION_CASES))
def test_segmentation_wire_format_field_by_field(served, name):
    answer, reference_name = _answer(served, name), SEGMENTATION_CASES[name]
    reference = served["references"][reference_name]
    assert answer, f"{name}: no instances to compare (threshold too high for the synthetic weights?)"
    assert len(answer) == len(reference)
    scores = [item["score"] for item in answer]
    assert scores == sorted(scores, reverse=True)
    for index, (item, expected) in enumerate(zip(answer, reference)):
        assert list(item) == WIRE_SEGMENT_KEYS
        assert type(item["score"]) is float and type(item["label"]) is str and type(item["mask"]) is str
        assert list(item["box"]) == BOX_KEYS and all(type(value) is int for value in item["box"].values())
        assert (item["score"], item["label"], item["box"]) == (expected["score"], expected["label"], expected["box"])
        mask = _png_mask(item["mask"])
        expected_mask = served["_masks"][f"{reference_name}/{index}"]
        assert mask.mode == "L" and mask.size == (expected_mask.shape[1], expected_mask.shape[0])
        pixels = np.asarray(mask)
        assert set(np.unique(pixels).tolist()) <= {0, 255}
        assert np.array_equal(pixels, expected_mask), f"{name} #{index}: the PNG is not the pipeline's mask"


def test_masks_have_the_original_image_size(served):
    assert _png_mask(_answer(served, "base64/photo")[0]["mask"]).size == Image.open(PHOTO).size  # 640x480
    assert _png_mask(_answer(served, "datauri/exif")[0]["mask"]).size == (320, 480)  # after EXIF rotation


def test_rle_masks_decode_to_the_pipeline_masks(served):
    mask_utils = pytest.importorskip("pycocotools.mask")
    answer, reference = _answer(served, "rle/photo"), served["references"]["file/photo"]
    assert [{key: item[key] for key in WIRE_DETECTION_KEYS} for item in answer] == reference
    for index, item in enumerate(answer):
        assert list(item) == WIRE_SEGMENT_KEYS and list(item["mask"]) == ["size", "counts"]
        assert item["mask"]["size"] == [480, 640] and type(item["mask"]["counts"]) is str
        decoded = mask_utils.decode({"size": item["mask"]["size"], "counts": item["mask"]["counts"].encode()})
        assert np.array_equal(decoded.astype(bool), served["_masks"][f"file/photo/{index}"] > 0), index


@pytest.mark.parametrize("name", sorted(DETECTION_CASES))
def test_detection_wire_format(served, name):
    answer = _answer(served, name)
    assert answer and answer == served["references"][DETECTION_CASES[name]]
    for item in answer:
        assert list(item) == WIRE_DETECTION_KEYS and list(item["box"]) == BOX_KEYS
        assert type(item["score"]) is float and all(type(value) is int for value in item["box"].values())


def test_default_parameters_are_the_pipelines_defaults(served):
    assert len(_answer(served, "defaults/photo")) < len(_answer(served, "base64/photo"))  # 0.5 keeps fewer
    assert all(item["score"] >= 0.5 for item in _answer(served, "defaults/photo"))


def test_every_answer_is_plain_json(served):
    for name, outcome in served["sequential"].items():
        answer = outcome["answer"]
        assert json.loads(json.dumps(answer)) == answer, name
    assert served["orjson_ok"] in (True, None)


def test_toolkit_image_bodies_keep_exif_but_not_16_bit(served):
    """An image/* body is decoded by the toolkit with `.convert("RGB")`: Pillow keeps the EXIF block, so the
    orientation is still applied, but 16-bit gray is clipped instead of keeping its high byte (the card says so)."""
    assert served["toolkit_decoding_equals_file"] == {"exif": True, "gray16": False, "photo": True}


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_bad_requests_are_one_sentence_value_errors(served, name):
    outcome = served["bad"][name]
    assert "answer" not in outcome, f"{name} was answered: {outcome}"
    assert outcome["error"] == "BadRequestError" and outcome["value_error"], outcome
    assert BAD_REQUESTS[name] in outcome["message"], outcome["message"]
    _assert_one_sentence(outcome["message"])


def test_internal_failures_reach_the_client_as_one_sentence_and_the_log_as_a_traceback(served):
    outcome = served["internal_error"]
    assert outcome["error"] == "RuntimeError" and not outcome["value_error"]
    assert outcome["message"] == ("Mask R-CNN inference failed on the server (RuntimeError); the server log has the "
                                  "details.")
    assert "secret" not in outcome["message"]
    assert outcome["log"] == [{"message": "Mask R-CNN request failed", "has_traceback": True}]
    assert served["after_internal_error"]["answer"] == _answer(served, "defaults/photo")  # the handler still works


# ------------------------------------------------------------------------------------------------- concurrency


def test_concurrent_requests_get_the_sequential_answers(served):
    calls = served["concurrent"]["calls"]
    assert len(calls) == 32 and len({call["name"] for call in calls}) == 8
    for call in calls:
        if call["name"] in served["sequential"]:
            assert call.get("answer") == _answer(served, call["name"]), call["name"]
        else:
            expected = served["bad"][call["name"]]
            assert (call["error"], call["message"]) == (expected["error"], expected["message"])
    events = sorted([(call["start"], 1) for call in calls] + [(call["end"], -1) for call in calls])
    in_flight, most_in_flight = 0, 0
    for _, change in events:
        in_flight += change
        most_in_flight = max(most_in_flight, in_flight)
    assert most_in_flight >= 4, f"the requests hardly overlapped (at most {most_in_flight} at once)"


# ------------------------------------------------------------------------------------------------- legacy path


def test_legacy_pre_trained_pipeline(legacy, served, model_dir):
    assert legacy["class"] == "PreTrainedPipeline"
    assert legacy["module_file"] == str(model_dir / "pipeline.py")
    assert legacy["model_file"] == str(model_dir / "modeling_mask_rcnn.py")
    assert legacy["widget_call"] == _answer(served, "defaults/photo")
    assert legacy["toolkit_call"] == _answer(served, "base64/photo")
    assert legacy["error"]["type"] == "BadRequestError" and legacy["error"]["value_error"]
    assert "has no 'inputs'" in legacy["error"]["message"]


# ------------------------------------------------------------------------------------------------- in-process units


def test_request_parameters_are_parsed_and_checked():
    parse = serving.parse_request_parameters
    assert parse(None) == ("image-segmentation", {}, "png")
    assert parse({"threshold": "0.25", "mask_threshold": 1, "overlap_mask_area_threshold": 0.9, "subtask": "instance",
                  "mask_format": "rle"}) == ("image-segmentation", {"threshold": 0.25, "mask_threshold": 1.0}, "rle")
    assert parse({"task": "object-detection", "threshold": 0}) == ("object-detection", {"threshold": 0.0}, "png")
    assert parse({"threshold": None, "task": None}) == ("image-segmentation", {}, "png")
    with pytest.raises(ValueError, match=r"^Unknown parameters 'a', 'b' for task"):
        parse({"a": 1, "b": 2})
    with pytest.raises(ValueError, match="between 0 and 1, got nan"):
        parse({"threshold": "nan"})


def test_masks_encode_to_png_and_rle():
    mask = np.zeros((5, 7), dtype=bool)
    mask[1:4, 2:6] = True
    for source in (mask, torch.from_numpy(mask), Image.fromarray(mask.astype(np.uint8) * 255)):
        png = _png_mask(serving.encode_mask_png(source))
        assert png.mode == "L" and np.array_equal(np.asarray(png), mask.astype(np.uint8) * 255)
    mask_utils = pytest.importorskip("pycocotools.mask")
    rle = serving.encode_mask_rle(mask)
    assert rle["size"] == [5, 7] and isinstance(rle["counts"], str)
    assert np.array_equal(mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()}), mask)


def test_images_over_the_pixel_limit_are_bad_requests_that_say_so(model_dir):
    from image_processing_mask_rcnn import load_image

    buffer = io.BytesIO()
    Image.new("1", (12000, 8000)).save(buffer, format="PNG")  # 96M pixels in a few KiB: over PIL's bomb limit
    with pytest.raises(serving.BadRequestError, match="is refused: .*pixels") as error:
        serving.decode_request_image(buffer.getvalue(), load_image)
    _assert_one_sentence(str(error.value))

    handler = serving.MaskRCNNRequestHandler(str(model_dir), device="cpu")
    handler.image_processor.max_image_pixels = 10_000  # a PIL image body the toolkit decoded, over a server's limit
    with pytest.raises(serving.BadRequestError, match="is refused: .*pixels"):
        handler.handle({"inputs": Image.new("RGB", (200, 100))})
    handler.image_processor.max_image_pixels = None
    assert isinstance(handler.handle({"inputs": Image.new("RGB", (200, 100))}), list)


def test_rle_without_pycocotools_is_a_clear_bad_request(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # `import pycocotools` now raises ImportError
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(serving.BadRequestError, match="needs pycocotools, which this server does not have"):
        serving.parse_request_parameters({"mask_format": "rle"})


@pytest.mark.parametrize("value, expected", [(None, torch.float32), ("bf16", torch.bfloat16),
                                             ("torch.float16", torch.float16), (" Float32 ", torch.float32)])
def test_serving_dtype_names(monkeypatch, value, expected):
    """The endpoint's dtype names, read by the one precision rule (inference_mask_rcnn)."""
    monkeypatch.delenv("MASK_RCNN_DTYPE", raising=False)
    assert resolve_compute_dtype(value) is expected
    if value is not None:
        monkeypatch.setenv("MASK_RCNN_DTYPE", value)
        assert resolve_compute_dtype() is expected
