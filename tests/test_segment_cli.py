"""segment.py: the batch CLI end to end on a converted synthetic model, and its reusable record functions.

Cost control (2 shared cores): the synthetic checkpoint is converted once per session; the converted folder's
config keeps 20 detections from 200 proposals and its image processor resizes to at most 300x200, so one forward
pass of a 300x200 image takes a few seconds. The CLI is called in-process (`mask_rcnn_batch.cli.main(argv)`) with the model
loaded once; only `test_subprocess_smoke` starts a real process (and loads the model through AutoModel itself).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from image_processing_mask_rcnn import decode_mask_rle
from mask_rcnn_batch import cli as segment_cli
from mask_rcnn_batch import inputs, model as batch_model, outputs, runner
from mask_rcnn_batch import records as coco_records
from mask_rcnn_batch.errors import OutputWriteError
from synthetic_model_folder import lean_synthetic_folder

pycocotools = pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402
from pycocotools.coco import COCO  # noqa: E402

# pycocotools 2.0.x's decode passes copy=False to np.array (numpy 2 DeprecationWarning, harmless)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PHOTO = REPO_ROOT / "tests" / "fixtures" / "images" / "photo_640x480.png"
RECORD_KEYS = {"image_id", "file_name", "category_id", "bbox", "score", "segmentation"}
GOOD_IMAGES = ["a.png", "sub/b.jpg", "sub/deeper/c.png"]
BAD_INPUTS = {"broken.jpg", "empty.png", "sub/trunc.png"}


def converted_synthetic_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic R50 checkpoint converted with `convert_checkpoint`, made lean for tests; one per session
    (the folder lives in the session's base temp dir, so other test modules reuse it). Built by
    tools/synthetic_model_folder.py."""
    return lean_synthetic_folder(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return converted_synthetic_model(tmp_path_factory)


@pytest.fixture(scope="session")
def loaded(model_dir):
    """(model, processor) loaded once through `load_model_and_processor` (AutoModel, trust_remote_code)."""
    return batch_model.load_model_and_processor(str(model_dir))


@pytest.fixture
def cli(monkeypatch, loaded):
    """The CLI's `main` with the session's (float32) model instead of a reload per call."""
    monkeypatch.setattr(runner, "load_model_and_processor", lambda model_id, device="cpu", dtype="float32": loaded)
    return segment_cli.main


class ForwardCounter:
    """Wraps the model's forward: counts calls and images; `fail_on_call` makes that call raise."""

    def __init__(self, model, fail_on_call=None, fake=None):
        self.original = type(model).forward.__get__(model)  # the real forward, never another counter
        self.calls, self.images, self.fail_on_call, self.fake = 0, 0, fail_on_call, fake

    def __call__(self, pixel_values, **kwargs):
        self.calls += 1
        self.images += pixel_values.shape[0]
        if self.fail_on_call is not None and self.calls >= self.fail_on_call:
            raise RuntimeError("simulated out of memory")
        if self.fake is not None:
            return self.fake(pixel_values, **kwargs)
        return self.original(pixel_values, **kwargs)


@pytest.fixture
def count_forwards(monkeypatch, loaded):
    def install(**options):
        counter = ForwardCounter(loaded[0], **options)
        monkeypatch.setattr(loaded[0], "forward", counter)
        return counter

    return install


@pytest.fixture(scope="session")
def input_dir(tmp_path_factory):
    """Nested folder: 3 good images (two landscape 300x200, one portrait 200x300), an undecodable file, an empty
    file, a truncated PNG (header fine, pixels missing) and a non-image file that must be ignored."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "sub" / "deeper").mkdir(parents=True)
    photo = Image.open(FIXTURE_PHOTO).convert("RGB")
    photo.resize((300, 200)).save(root / "a.png")
    photo.resize((200, 300)).save(root / "sub" / "b.jpg", quality=95)
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((300, 200)).save(root / "sub" / "deeper" / "c.png")
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    (root / "empty.png").write_bytes(b"")
    png = (root / "a.png").read_bytes()
    (root / "sub" / "trunc.png").write_bytes(png[: len(png) // 3])
    (root / "notes.txt").write_text("not an image")
    return root


# The synthetic weights are calibrated for full-size fixtures; on these small test images few detections reach the
# CLI's default 0.5, so the runs keep everything the model returns above its own 0.05 floor.
CLI_THRESHOLD = 0.05


def run_cli(cli, input_dir, output_dir, *extra, model="synthetic"):
    threshold = [] if "--threshold" in extra else ["--threshold", str(CLI_THRESHOLD)]
    return cli(["--model", model, str(input_dir), "--output-dir", str(output_dir), *threshold, *extra])


@pytest.fixture(scope="session")
def single_run(tmp_path_factory, loaded, input_dir):
    """The reference run: --batch-size 1, overlays on."""
    output = tmp_path_factory.mktemp("out-bs1")
    patch = pytest.MonkeyPatch()
    patch.setattr(runner, "load_model_and_processor", lambda *args, **kwargs: loaded)
    counter = ForwardCounter(loaded[0])
    patch.setattr(loaded[0], "forward", counter)
    try:
        code = run_cli(segment_cli.main, input_dir, output, "--batch-size", "1")
    finally:
        patch.undo()
    return types.SimpleNamespace(code=code, output=output, counter=counter,
                                 predictions=json.loads((output / "predictions.json").read_text()),
                                 images=json.loads((output / "images.json").read_text()),
                                 failures=json.loads((output / "failures.json").read_text()))


def records_by_file(predictions):
    grouped = {}
    for record in predictions:
        grouped.setdefault(record["file_name"], []).append(record)
    return grouped


# ----------------------------------------------------------------------------------------------------------------
# End to end
# ----------------------------------------------------------------------------------------------------------------


def test_run_writes_coco_results_failures_and_overlays(single_run):
    assert single_run.code == 1  # some inputs failed
    assert single_run.counter.calls == 3 and single_run.counter.images == 3
    official_ids = {category_id for category_id, _ in coco_records.COCO_CATEGORIES}
    grouped = records_by_file(single_run.predictions)
    assert sorted(grouped) == GOOD_IMAGES
    sizes = {image["file_name"]: (image["height"], image["width"]) for image in single_run.images["images"]}
    for file_name, records in grouped.items():
        assert [r["score"] for r in records] == sorted((r["score"] for r in records), reverse=True)
        for record in records:
            assert set(record) == RECORD_KEYS
            assert record["image_id"] == coco_records.stable_image_id(file_name)
            assert isinstance(record["image_id"], int) and 0 <= record["image_id"] < 2 ** 53
            assert record["category_id"] in official_ids
            assert len(record["bbox"]) == 4 and all(isinstance(v, float) for v in record["bbox"])
            assert record["bbox"][2] >= 0 and record["bbox"][3] >= 0
            assert CLI_THRESHOLD <= record["score"] <= 1.0
            rle = record["segmentation"]
            assert set(rle) == {"size", "counts"} and isinstance(rle["counts"], str)
            assert tuple(rle["size"]) == sizes[file_name]
    assert sizes == {"a.png": (200, 300), "sub/b.jpg": (300, 200), "sub/deeper/c.png": (200, 300)}
    assert single_run.images["categories"][0] == {"id": 1, "name": "person"}
    assert len(single_run.images["categories"]) == 80

    failures = {failure["file_name"]: failure for failure in single_run.failures}
    assert set(failures) == BAD_INPUTS
    for failure in failures.values():
        assert failure["error"] and Path(failure["path"]).name in failure["error"]
    assert "truncated" in failures["sub/trunc.png"]["error"]

    for file_name in GOOD_IMAGES:
        overlay = single_run.output / "overlays" / (file_name + ".png")
        with Image.open(overlay) as image:
            assert image.size == sizes[file_name][::-1] and image.mode == "RGB"
    assert not (single_run.output / "overlays" / "broken.jpg.png").exists()

    # loadable with pycocotools: images.json is a ground-truth-shaped index for the results
    index = COCO(str(single_run.output / "images.json"))
    results = index.loadRes(str(single_run.output / "predictions.json"))
    assert len(results.getAnnIds()) == len(single_run.predictions)


def test_rle_decodes_to_the_processors_masks(single_run, loaded, input_dir):
    model, processor = loaded
    grouped = records_by_file(single_run.predictions)
    for file_name in GOOD_IMAGES:
        inputs = processor(images=[str(input_dir / file_name)], return_tensors="pt")
        with torch.inference_mode():
            outputs = model(**inputs)
        expected = processor.post_process_instance_segmentation(outputs, threshold=CLI_THRESHOLD,
                                                                mask_threshold=0.5)[0]
        records = grouped[file_name]
        assert len(records) == len(expected["scores"]) > 0
        decoded = np.stack([mask_utils.decode({"size": r["segmentation"]["size"],
                                               "counts": r["segmentation"]["counts"].encode()}) for r in records])
        np.testing.assert_array_equal(decoded.astype(bool), expected["masks"].numpy())
        assert [r["score"] for r in records] == expected["scores"].tolist()
        assert [r["category_id"] for r in records] == [coco_records.COCO_CATEGORIES[i][0] for i in expected["labels"]]
        boxes = expected["boxes"].numpy().astype(np.float64)  # xywh is computed in Python floats
        np.testing.assert_array_equal(np.array([r["bbox"] for r in records]),
                                      np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0],
                                                boxes[:, 3] - boxes[:, 1]], 1))


def test_batched_run_groups_by_shape_and_matches_single(cli, count_forwards, single_run, input_dir, tmp_path):
    counter = count_forwards()
    code = run_cli(cli, input_dir, tmp_path, "--batch-size", "2", "--no-overlays")
    assert code == 1
    # a.png and sub/deeper/c.png (both 300x200) share a forward pass although b.jpg lies between them by name
    assert counter.calls == 2 and counter.images == 3
    assert not (tmp_path / "overlays").exists()
    batched = records_by_file(json.loads((tmp_path / "predictions.json").read_text()))
    single = records_by_file(single_run.predictions)
    assert sorted(batched) == sorted(single)
    for file_name in single:
        assert len(batched[file_name]) == len(single[file_name])
        for got, want in zip(batched[file_name], single[file_name]):
            assert set(got) == set(want)
            assert (got["image_id"], got["category_id"]) == (want["image_id"], want["category_id"])
            assert got["segmentation"]["size"] == want["segmentation"]["size"]
            np.testing.assert_allclose(got["bbox"], want["bbox"], atol=0.05)
            assert got["score"] == pytest.approx(want["score"], abs=1e-3)
    assert {f["file_name"] for f in json.loads((tmp_path / "failures.json").read_text())} == BAD_INPUTS


def test_crash_keeps_finished_work_and_resume_does_only_the_rest(cli, count_forwards, single_run, input_dir,
                                                                  tmp_path, capsys):
    counter = count_forwards(fail_on_call=2)  # image 1 succeeds, the model "runs out of memory" on image 2
    assert run_cli(cli, input_dir, tmp_path, "--no-overlays") == 1
    assert "simulated out of memory" in capsys.readouterr().err
    kept = records_by_file(json.loads((tmp_path / "predictions.json").read_text()))
    assert sorted(kept) == ["a.png"]
    assert kept["a.png"] == records_by_file(single_run.predictions)["a.png"]

    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path, "--no-overlays", "--resume") == 1  # the broken files still fail
    assert counter.images == 2  # only b.jpg and c.png
    final = json.loads((tmp_path / "predictions.json").read_text())
    assert final == single_run.predictions

    # a hard kill can leave a torn journal line; a second resume does no inference at all
    with open(tmp_path / "predictions.jsonl", "a") as journal:
        journal.write('{"image": {"id": 1, "file_na')
    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path, "--no-overlays", "--resume") == 1
    assert counter.calls == 0
    assert json.loads((tmp_path / "predictions.json").read_text()) == single_run.predictions
    assert "3 kept from before" in capsys.readouterr().err


def test_resume_from_predictions_json_only(cli, count_forwards, single_run, input_dir, tmp_path):
    """Without the journal, predictions.json + images.json are enough to know what is done."""
    for name in ("predictions.json", "images.json"):
        shutil.copy(single_run.output / name, tmp_path / name)
    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path, "--resume", "--no-overlays") == 1
    assert counter.calls == 0
    assert json.loads((tmp_path / "predictions.json").read_text()) == single_run.predictions


def _no_detections(pixel_values, image_sizes=None, original_sizes=None, scale_factors=None, **kwargs):
    batch = pixel_values.shape[0]
    return types.SimpleNamespace(pred_boxes=[torch.zeros((0, 4))] * batch, scores=[torch.zeros((0,))] * batch,
                                 labels=[torch.zeros((0,), dtype=torch.long)] * batch,
                                 mask_probs=[torch.zeros((0, 28, 28))] * batch, image_sizes=image_sizes,
                                 original_sizes=original_sizes, scale_factors=scale_factors)


def test_images_without_detections_are_recorded_and_not_redone(cli, count_forwards, input_dir, tmp_path):
    counter = count_forwards(fake=_no_detections)
    assert run_cli(cli, input_dir, tmp_path, "--batch-size", "3") == 1
    assert counter.calls == 1
    assert json.loads((tmp_path / "predictions.json").read_text()) == []
    images = json.loads((tmp_path / "images.json").read_text())["images"]
    assert [image["file_name"] for image in images] == GOOD_IMAGES
    assert (tmp_path / "overlays" / "a.png.png").is_file()
    counter = count_forwards(fake=_no_detections)
    run_cli(cli, input_dir, tmp_path, "--resume")
    assert counter.calls == 0


def test_dtype_casts_the_weights_without_autocast(model_dir, monkeypatch, input_dir, tmp_path):
    """--dtype bfloat16 follows the shared precision rule: bfloat16 weights and inputs, no autocast region."""
    seen = []
    real_loader = batch_model.load_model_and_processor

    def loader(model_id, device="cpu", dtype="float32"):
        model, processor = real_loader(model_id, device, dtype)

        def record(pixel_values, **kwargs):
            weight = next(model.parameters())
            seen.append((torch.is_autocast_enabled("cpu"), weight.dtype, pixel_values.dtype))
            return _no_detections(pixel_values, **kwargs)

        monkeypatch.setattr(model, "forward", record)
        return model, processor

    monkeypatch.setattr(runner, "load_model_and_processor", loader)
    assert run_cli(segment_cli.main, input_dir, tmp_path, "--batch-size", "3", "--dtype", "bfloat16",
                   "--no-overlays", model=str(model_dir)) == 1
    assert seen == [(False, torch.bfloat16, torch.bfloat16)]
    seen.clear()
    run_cli(segment_cli.main, input_dir, tmp_path / "fp32", "--batch-size", "3", "--no-overlays", model=str(model_dir))
    assert seen == [(False, torch.float32, torch.float32)]


def test_keep_going_skips_images_the_model_fails_on(cli, count_forwards, input_dir, tmp_path, capsys):
    counter = count_forwards(fail_on_call=1)
    assert run_cli(cli, input_dir, tmp_path, "--batch-size", "2", "--keep-going") == 1
    assert counter.calls == 2 + 2  # batches [a.png, c.png] and [b.jpg], then the failed pair image by image
    failures = {f["file_name"]: f["error"] for f in json.loads((tmp_path / "failures.json").read_text())}
    assert set(failures) == BAD_INPUTS | set(GOOD_IMAGES)
    assert failures["a.png"] == "RuntimeError: simulated out of memory"
    assert "0 images done, 6 failed" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Output write errors: stop the run, name the file and the reason, never retried as model failures, --resume finishes
# ----------------------------------------------------------------------------------------------------------------


def test_a_file_in_the_way_of_the_overlays_stops_the_run_and_resume_finishes(cli, count_forwards, single_run,
                                                                            input_dir, tmp_path, capsys):
    (tmp_path / "overlays").write_text("a file where the overlay folder belongs")
    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path, "--batch-size", "2", "--keep-going") == 1
    err = capsys.readouterr().err
    # the first batch's first overlay: its path, the OS reason and the folder in the way
    overlay = tmp_path / "overlays" / "a.png.png"
    assert f"error: could not write {overlay}: {tmp_path / 'overlays'} is a file, not a folder (File exists)" in err
    assert "rerun with --resume" in err
    assert counter.calls == 1  # not retried image by image despite --keep-going
    failures = {failure["file_name"] for failure in json.loads((tmp_path / "failures.json").read_text())}
    assert failures == BAD_INPUTS  # no good image is reported as failed
    assert json.loads((tmp_path / "predictions.json").read_text()) == []  # nothing finished without its overlay
    assert (tmp_path / "predictions.jsonl").read_text() == ""

    (tmp_path / "overlays").unlink()
    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path, "--resume") == 1  # the broken inputs still fail
    assert counter.images == 3
    assert json.loads((tmp_path / "predictions.json").read_text()) == single_run.predictions
    assert {path.name for path in (tmp_path / "overlays").rglob("*.png")} == {"a.png.png", "b.jpg.png", "c.png.png"}


def test_a_full_disk_stops_the_run_with_a_resumable_journal(cli, count_forwards, single_run, input_dir, tmp_path,
                                                           capsys, monkeypatch):
    """ENOSPC from the second batch's journal fsync on: the run stops there, the first image stays finished."""
    calls = []

    def fsync_until_full(descriptor):
        calls.append(descriptor)
        if len(calls) >= 3:  # 1: the journal's start, 2: after batch 1, 3: after batch 2
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.fsync(descriptor)

    full_disk_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
    full_disk_os.fsync = fsync_until_full
    monkeypatch.setattr(outputs, "os", full_disk_os)
    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path, "--no-overlays", "--keep-going") == 1
    err = capsys.readouterr().err
    assert f"error: could not write {tmp_path / 'predictions.jsonl'}: No space left on device" in err
    assert counter.calls == 2  # batch 1, batch 2; no image-by-image retry
    assert "a.png" in outputs.read_journal(str(tmp_path / "predictions.jsonl"))
    assert not any(tmp_path.glob(".*.tmp"))  # the failed atomic writes left no temporary files

    monkeypatch.setattr(outputs, "os", os)  # space again
    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path, "--no-overlays", "--resume") == 1
    assert 1 <= counter.images <= 2  # b.jpg's line may have reached the file before its fsync failed; c.png did not
    assert json.loads((tmp_path / "predictions.json").read_text()) == single_run.predictions


def test_an_unusable_output_folder_is_a_start_error(cli, count_forwards, input_dir, tmp_path, capsys):
    (tmp_path / "out").write_text("a file where the output folder belongs")
    counter = count_forwards()
    assert run_cli(cli, input_dir, tmp_path / "out") == 2
    out = tmp_path / "out"
    assert (f"error: The output folder cannot be used: could not write {out}: {out} is a file, not a folder (File "
            "exists)" in capsys.readouterr().err)
    assert counter.calls == 0


def test_output_write_error_names_file_and_reason(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(OutputWriteError) as caught:
        outputs.write_bytes(str(tmp_path / "taken" / "x.png"), b"png")
    assert caught.value.path == str(tmp_path / "taken" / "x.png")
    reason = f"{tmp_path / 'taken'} is a file, not a folder (File exists)"
    assert caught.value.reason == reason
    assert str(caught.value) == f"could not write {tmp_path / 'taken' / 'x.png'}: {reason}"
    with pytest.raises(OutputWriteError, match="x.json: Is a directory$"):
        (tmp_path / "x.json").mkdir()
        outputs.write_json_atomic(str(tmp_path / "x.json"), [])
    assert not any(tmp_path.glob(".x.json.*"))  # the temporary file is removed


def test_no_images_is_a_usage_error(cli, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert run_cli(cli, tmp_path / "empty", tmp_path / "out") == 2
    assert "No image files found" in capsys.readouterr().err


def test_subprocess_smoke(model_dir, tmp_path):
    (tmp_path / "in").mkdir()
    Image.open(FIXTURE_PHOTO).convert("RGB").resize((300, 200)).save(tmp_path / "in" / "photo.jpg")
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="2")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "segment.py"), "--model", str(model_dir), str(tmp_path / "in" / "*.jpg"),
         "--output-dir", str(tmp_path / "out"), "--no-overlays", "--threshold", str(CLI_THRESHOLD)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert "1 images done, 0 failed" in completed.stderr
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert records and {record["file_name"] for record in records} == {"photo.jpg"}
    assert json.loads((tmp_path / "out" / "failures.json").read_text()) == []


# ----------------------------------------------------------------------------------------------------------------
# Reusable functions (no model)
# ----------------------------------------------------------------------------------------------------------------


def test_boxes_categories_and_image_ids():
    assert coco_records.boxes_to_xywh(torch.tensor([[1.5, 2.0, 4.0, 10.0]])) == [[1.5, 2.0, 2.5, 8.0]]
    assert len(coco_records.COCO_CATEGORIES) == 80
    ids = [category_id for category_id, _ in coco_records.COCO_CATEGORIES]
    assert ids == sorted(ids) and ids[0] == 1 and ids[-1] == 90
    assert set(range(1, 91)) - set(ids) == {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
    from configuration_mask_rcnn import COCO_CLASSES

    mapping = coco_records.coco_category_ids({str(i): name for i, name in enumerate(COCO_CLASSES)})
    assert mapping[0] == 1 and mapping[11] == 13 and mapping[79] == 90
    assert coco_records.coco_category_ids({0: "cat", 1: "dog"}) is None
    assert coco_records.category_list({0: "cat", 1: "dog"}) == [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]
    assert coco_records.COCO_CATEGORIES[11] == (13, "stop sign") and coco_records.COCO_CATEGORIES[-1] == (
        90, "toothbrush")
    image_id = coco_records.stable_image_id
    assert image_id("sub/a.png") == image_id("sub/a.png") != image_id("sub/b.png")
    assert 0 <= coco_records.stable_image_id("x") < 2 ** 52


def test_detections_to_coco_records_without_coco_classes():
    result = {"boxes": torch.tensor([[0.0, 0.0, 2.0, 3.0]]), "scores": torch.tensor([0.75]),
              "labels": torch.tensor([1]), "masks": torch.ones((1, 4, 3), dtype=torch.bool)}
    (record,) = coco_records.detections_to_coco_records(result, image_id=7)
    assert record["image_id"] == 7 and record["category_id"] == 1 and "file_name" not in record
    assert record["bbox"] == [0.0, 0.0, 2.0, 3.0] and record["score"] == 0.75
    assert decode_mask_rle(record["segmentation"]).all()
    (mapped,) = coco_records.detections_to_coco_records({**result, "masks": None}, 7, {1: 42}, file_name="x.jpg")
    assert mapped["category_id"] == 42 and mapped["file_name"] == "x.jpg" and "segmentation" not in mapped


def test_collect_inputs_folders_globs_files(tmp_path, monkeypatch):
    for name in ("p/a.jpg", "p/sub/b.PNG", "p/.hidden/c.jpg", "p/out/overlay.png", "p/readme.md", "q/d.jpeg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    items, problems = inputs.collect_inputs([str(tmp_path / "p")], exclude=str(tmp_path / "p" / "out"))
    assert [item.file_name for item in items] == ["a.jpg", "sub/b.PNG"] and problems == []
    monkeypatch.chdir(tmp_path)
    items, problems = inputs.collect_inputs(["p", "q/*.jpeg", "p/a.jpg", "missing.jpg", "nothing/*.png"],
                                             exclude="p/out")
    assert [item.file_name for item in items] == ["p/a.jpg", "p/sub/b.PNG", "q/d.jpeg"]
    assert [problem["file_name"] for problem in problems] == ["missing.jpg", "nothing/*.png"]
    items, _ = inputs.collect_inputs(["p/**/*.png"])
    assert [item.file_name for item in items] == ["out/overlay.png"]
    (item,) = inputs.collect_inputs([str(tmp_path / "p" / "readme.md")])[0]  # an explicit file is always taken
    assert item.file_name == "readme.md" and item.image_id == coco_records.stable_image_id("readme.md")


def test_plan_batches_groups_shapes_within_a_window():
    sizes = [(200, 300), (300, 200), (200, 300), (300, 200), (400, 600)]
    assert inputs.plan_batches(sizes, 2) == [[0, 2], [4, 1], [3]]
    assert inputs.plan_batches(sizes, 1, window_batches=1) == [[0], [1], [2], [3], [4]]
    assert inputs.plan_batches([], 4) == []


def test_header_sizes_match_decoded_images_including_exif_rotation():
    """Batches are planned from file headers; they must agree with the decoded (EXIF-rotated) pixels."""
    fixtures = sorted((REPO_ROOT / "tests" / "fixtures" / "images").glob("*.*"))
    assert any("exif" in path.name for path in fixtures)
    for path in fixtures:
        assert inputs.read_image_size(str(path)) == batch_model.decode_image(str(path)).shape[:2], path.name
    rotated = next(path for path in fixtures if "exif_rot6" in path.name)
    with Image.open(rotated) as image:
        assert inputs.read_image_size(str(rotated)) == (image.size[0], image.size[1])  # width/height swapped
