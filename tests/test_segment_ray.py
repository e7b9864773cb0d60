"""segment.py --ray: the batch CLI as a Ray Data pipeline, checked against the single-process run.

Ray starts once for this module (2 CPUs, every server on 127.0.0.1, 200 MB object store, no dashboard) and the CLI,
called in-process, reuses it; `python segment.py ... --ray 127.0.0.1:PORT` also runs once in a subprocess that joins
the same instance, and no other Ray instance is started. The model is the session's lean synthetic folder
(`converted_synthetic_model`); there are 4 Ray runs of 1 to 4 images, each paying for its workers loading the model.

Thread counts: on CPU, oneDNN runs some convolutions with other kernels on 1 thread than on 2 or more, so results
can differ in the last float bits between a 1-thread and a multi-thread process (Ray or not). The two Ray workers
here get 0.75 CPUs each, hence 1 torch thread, and the single-process references run in this process with 1 thread:
equal thread counts, so the comparisons are exact (labels, scores, boxes, RLE strings, overlay bytes).

Tests that need neither Ray nor the model (resource planning, the shard writer, running without Ray) run without
the optional extra; the others skip when Ray is not installed.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from PIL import Image

from mask_rcnn_batch import cli, outputs, ray_runner, records, runner
from mask_rcnn_batch.errors import SegmentError
from test_segment_cli import CLI_THRESHOLD, converted_synthetic_model

pytest.importorskip("pycocotools")
# pycocotools 2.0.x's decode passes copy=False to np.array (numpy 2 DeprecationWarning, harmless)
pytestmark = [pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]  # Ray's own settings

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PHOTO = REPO_ROOT / "tests" / "fixtures" / "images" / "photo_640x480.png"
GOOD_IMAGES = ["a.png", "c.png", "sub/b.jpg", "sub/d.png"]
BROKEN_INPUTS = {"broken.jpg", "sub/trunc.png"}  # header unreadable; header fine but pixels truncated
RAY_WORKERS = ["--workers", "2"]  # 2 workers on 2 CPUs: 0.75 CPUs and 1 torch thread each
HUB_FILES = ("modeling_mask_rcnn.py", "configuration_mask_rcnn.py", "losses_mask_rcnn.py", "image_processing_mask_rcnn.py",
             "pipeline.py", "handler.py", "image_utils_mask_rcnn.py")


# ----------------------------------------------------------------------------------------------------------------
# Fixtures: inputs, model, single-process references, the Ray instance and the Ray runs
# ----------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return converted_synthetic_model(tmp_path_factory)


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    """Four good images in two shapes per orientation (with --batch-size 2, [a, c] share a forward pass and so do
    the portraits [d, b], padded to a common size), a file that is no image and a truncated PNG."""
    root = tmp_path_factory.mktemp("ray-inputs")
    (root / "sub").mkdir()
    photo = Image.open(FIXTURE_PHOTO).convert("RGB")
    photo.resize((300, 200)).save(root / "a.png")
    photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((300, 200)).save(root / "c.png")
    photo.resize((200, 300)).save(root / "sub" / "b.jpg", quality=95)
    photo.rotate(90, expand=True).resize((180, 240)).save(root / "sub" / "d.png")
    (root / "broken.jpg").write_bytes(b"this is not a JPEG")
    png = (root / "a.png").read_bytes()
    (root / "sub" / "trunc.png").write_bytes(png[: len(png) // 3])
    return root


def cli_arguments(model_dir, input_dir, output_dir, *extra):
    return ["--model", str(model_dir), str(input_dir), "--output-dir", str(output_dir),
            "--threshold", str(CLI_THRESHOLD), *extra]


def read_output(folder: Path) -> types.SimpleNamespace:
    """Everything a run wrote: the three JSON files (when present) and the overlay bytes by relative path."""
    def load(name):
        path = folder / name
        return json.loads(path.read_text()) if path.is_file() else None

    overlays = {path.relative_to(folder / "overlays").as_posix(): path.read_bytes()
                for path in sorted((folder / "overlays").rglob("*.png"))} if (folder / "overlays").is_dir() else {}
    return types.SimpleNamespace(predictions=load("predictions.json"), images=load("images.json"),
                                 failures=load("failures.json"), overlays=overlays)


def records_from_shards(folder: Path):
    """`predictions.json`'s records rebuilt from --shard-output shards (images in file-name order)."""
    entries = outputs.read_shards(str(folder))
    return [record for name in sorted(entries) for record in entries[name]["annotations"]]


@pytest.fixture(scope="module")
def single_process(tmp_path_factory, model_dir, input_dir):
    """Reference runs in this process with 1 torch thread: --batch-size 1 with overlays, --batch-size 2 without."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    outputs = {}
    try:
        for batch_size, extra in ((1, []), (2, ["--no-overlays"])):
            folder = tmp_path_factory.mktemp(f"single-bs{batch_size}")
            code = cli.main(cli_arguments(model_dir, input_dir, folder, "--batch-size", str(batch_size), *extra))
            assert code == cli.EXIT_FAILURES  # the two broken inputs
            outputs[batch_size] = folder
    finally:
        torch.set_num_threads(threads)
    return outputs


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray instance for this module: 2 CPUs, all servers on 127.0.0.1, small object store, no dashboard."""
    previous = os.environ.get(ray_runner.RAY_SINGLE_MACHINE_ENV)
    os.environ[ray_runner.RAY_SINGLE_MACHINE_ENV] = "0"  # read when ray is imported: bind to 127.0.0.1 only
    ray = pytest.importorskip("ray")
    ray.init(_node_ip_address="127.0.0.1", num_cpus=2, object_store_memory=200 * 1024 ** 2,
             include_dashboard=False, logging_level=logging.WARNING)
    try:
        address = ray.get_runtime_context().gcs_address
        if not address.startswith("127.0.0.1:"):
            raise RuntimeError(f"The test's Ray instance listens on {address}, not on 127.0.0.1 (ray was imported "
                               f"before {ray_runner.RAY_SINGLE_MACHINE_ENV} was set).")
        yield types.SimpleNamespace(ray=ray, address=address)
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop(ray_runner.RAY_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[ray_runner.RAY_SINGLE_MACHINE_ENV] = previous


def run_summary(argv):
    """`runner.run` on the options of CLI arguments, the way `main` calls it: (summary, output folder)."""
    return runner.run(cli.parse_options(argv))


@pytest.fixture(scope="module")
def ray_run(ray_cluster, tmp_path_factory, model_dir, input_dir):
    """The Ray run matching the --batch-size 1 reference: 2 workers, overlays on."""
    folder = tmp_path_factory.mktemp("ray-bs1")
    summary, _ = run_summary(cli_arguments(model_dir, input_dir, folder, "--ray", *RAY_WORKERS))
    return types.SimpleNamespace(folder=folder, summary=summary)


@pytest.fixture(scope="module")
def sharded_ray_run(ray_cluster, tmp_path_factory, model_dir, input_dir):
    """The Ray run matching the --batch-size 2 reference, written as shards of 2 images (one batch each)."""
    folder = tmp_path_factory.mktemp("ray-bs2-shards")
    summary, _ = run_summary(cli_arguments(model_dir, input_dir, folder, "--ray", *RAY_WORKERS, "--batch-size", "2",
                                           "--no-overlays", "--shard-output", "--images-per-shard", "2"))
    return types.SimpleNamespace(folder=folder, summary=summary)


# ----------------------------------------------------------------------------------------------------------------
# Identity with the single-process run, failures, resume (Ray)
# ----------------------------------------------------------------------------------------------------------------


def test_ray_run_equals_single_process_run(ray_run, single_process):
    reference, got = read_output(single_process[1]), read_output(ray_run.folder)
    assert sorted({record["file_name"] for record in reference.predictions}) == GOOD_IMAGES
    assert got.predictions == reference.predictions  # labels, scores, boxes and RLE strings, bit for bit
    assert got.images == reference.images
    assert got.failures == reference.failures
    assert sorted(got.overlays) == [name + ".png" for name in GOOD_IMAGES]
    assert got.overlays == reference.overlays  # same PNG bytes

    summary = ray_run.summary
    assert (summary.done, summary.failed, summary.skipped, summary.inferred_images) == (4, 2, 0, 4)
    assert summary.instances == len(reference.predictions)
    # the work was done by the actor pool (at most 2 processes), each running torch on its 1-thread share
    assert 1 <= len(summary.worker_threads) <= 2 and set(summary.worker_threads.values()) == {1}
    assert ray_runner.worker_name() not in summary.worker_threads  # not this process


def test_ray_reports_broken_files_by_name_and_keeps_good_results(ray_run, input_dir):
    failures = {failure["file_name"]: failure for failure in read_output(ray_run.folder).failures}
    assert set(failures) == BROKEN_INPUTS
    for file_name, failure in failures.items():
        assert failure["path"] == str(input_dir / file_name)
        assert Path(failure["path"]).name in failure["error"]
    assert "not an image file" in failures["broken.jpg"]["error"]
    assert "truncated" in failures["sub/trunc.png"]["error"]
    images = read_output(ray_run.folder).images["images"]
    assert [image["file_name"] for image in images] == GOOD_IMAGES


def test_ray_batches_and_shards_equal_single_process_batches(sharded_ray_run, single_process):
    """--batch-size 2: the portraits of two sizes are padded together in both runs (same planned batches), so even
    padded results agree exactly; the shards hold the same records as the reference's predictions.json."""
    reference = read_output(single_process[2])
    folder = sharded_ray_run.folder
    assert records_from_shards(folder) == reference.predictions
    shards = outputs.shard_paths(str(folder))
    assert [Path(path).name for path in shards] == ["part-00000.jsonl", "part-00001.jsonl"]
    shard_images = [{json.loads(line)["image"]["file_name"] for line in Path(path).read_text().splitlines()}
                    for path in shards]  # batches come back whole, in the order they finish
    assert sorted(shard_images, key=sorted) == [{"a.png", "c.png"}, {"sub/b.jpg", "sub/d.png"}]
    assert not (folder / "predictions.json").exists() and not (folder / "predictions.jsonl").exists()
    info = json.loads((folder / "predictions" / "info.json").read_text())
    assert info["info"] == reference.images["info"] and info["categories"] == reference.images["categories"]
    assert read_output(folder).failures == reference.failures
    assert sharded_ray_run.summary.inferred_images == 4


def test_ray_resume_does_no_inference_work(ray_run, single_process, model_dir, input_dir, tmp_path, capsys):
    folder = tmp_path / "out"
    shutil.copytree(ray_run.folder, folder)
    journal = (folder / "predictions.jsonl").read_bytes()

    # the four finished images given by name: nothing to do, so no Ray pipeline is even started
    good_files = [str(input_dir / name) for name in GOOD_IMAGES]
    code = cli.main(["--model", str(model_dir), *good_files, "--output-dir", str(folder),
                         "--threshold", str(CLI_THRESHOLD), "--ray", *RAY_WORKERS, "--resume"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_OK and "0 images done (4 kept from before), 0 failed" in err
    assert "ray:" not in err

    # the whole folder: the broken files are tried and reported again, the finished images are not touched
    summary, _ = run_summary(cli_arguments(model_dir, input_dir, folder, "--ray", *RAY_WORKERS, "--resume"))
    assert (summary.done, summary.skipped, summary.failed) == (0, 4, 2)
    assert summary.inferred_images == 0 and summary.worker_threads == {}  # no image reached a worker's model
    assert (folder / "predictions.jsonl").read_bytes() == journal
    assert read_output(folder).predictions == read_output(single_process[1]).predictions


def test_ray_resume_after_a_lost_shard_redoes_only_its_images(sharded_ray_run, single_process, model_dir,
                                                               input_dir, tmp_path):
    """The lost shard holds one whole planned batch, so the resumed run pads the same images together again."""
    folder = tmp_path / "out"
    shutil.copytree(sharded_ray_run.folder, folder)
    first, second = outputs.shard_paths(str(folder))
    lost = {json.loads(line)["image"]["file_name"] for line in Path(second).read_text().splitlines()}
    os.unlink(second)  # the shard in flight when the run crashed
    with open(first, "a") as stream:  # and a torn line at the end of the other one
        stream.write('{"image": {"id": 1, "file_na')
    summary, _ = run_summary(cli_arguments(model_dir, input_dir, folder, "--ray", *RAY_WORKERS, "--batch-size", "2",
                                           "--no-overlays", "--shard-output", "--images-per-shard", "2", "--resume"))
    assert (summary.done, summary.skipped, summary.inferred_images) == (len(lost), 4 - len(lost), len(lost))
    assert records_from_shards(folder) == read_output(single_process[2]).predictions
    assert Path(first).read_text().endswith("file_na")  # old shards are never rewritten; the resumed run adds one
    assert len(outputs.shard_paths(str(folder))) == 2


# An error-level line of Ray's C++ core ("[2026-12-07 14:51:55,618 E 16532 16532] core_worker.cc:2465: ...") or of
# Python logging ("2026-12-07 14:51:43,970\tERROR worker.py:...").
ERROR_LEVEL_LINE = re.compile(r"^\[[^\]]*\d \s*[EF] \d+ \d+\]|\b(ERROR|CRITICAL|FATAL)\b")


def error_level_lines(stderr: str):
    return [line for line in stderr.splitlines() if ERROR_LEVEL_LINE.search(line)]


def test_error_level_line_pattern():
    """The pattern finds the line Ray printed on healthy runs before the actor pool stopped asking for restarts."""
    seen = ("[2026-12-07 14:51:55,618 E 16532 16532] core_worker.cc:2465: Actor with class name: "
            "'MapWorker(MapBatches(RayInferenceWorker))' and ID: '35' has constructor arguments in the object store "
            "and max_restarts > 0.")
    assert error_level_lines(f"ray: 2 workers\n{seen}\n4 images done") == [seen]
    assert error_level_lines("2026-12-07 14:51:43,970\tWARNING authentication_token_setup.py:85 -- Token\n"
                             "[2026-12-07 14:51:55,618 W 1 1] worker.cc:1: warning\n") == []


def test_cli_subprocess_joins_a_running_cluster(ray_cluster, single_process, model_dir, input_dir, tmp_path):
    """`python segment.py ... --ray ADDRESS` from a shell: a second driver on the module's instance. A healthy run
    (only the broken inputs fail) prints no error-level line: the inference actors are created with
    max_restarts=0, the combination with Ray Data's object-store constructor arguments that Ray logs as an error
    is gone."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "segment.py"),
         *cli_arguments(model_dir, input_dir, tmp_path / "out", "--ray", ray_cluster.address, *RAY_WORKERS,
                        "--no-overlays")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=400)
    assert completed.returncode == cli.EXIT_FAILURES, completed.stderr
    assert "ray: 2 workers x 0.75 CPUs (1 torch threads)" in completed.stderr
    assert "4 images done, 2 failed" in completed.stderr
    assert error_level_lines(completed.stderr) == [], completed.stderr
    got = read_output(tmp_path / "out")
    assert got.predictions == read_output(single_process[1]).predictions
    assert {failure["file_name"] for failure in got.failures} == BROKEN_INPUTS


def test_unreachable_cluster_is_a_start_error_that_keeps_earlier_results(ray_run, model_dir, input_dir, tmp_path):
    """A new process (in this one the module's Ray instance would be reused): nothing listens at 127.0.0.1:1."""
    folder = tmp_path / "out"
    shutil.copytree(ray_run.folder, folder)
    before = {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    completed = subprocess.run(
        [sys.executable, str(REPO_ROOT / "segment.py"),
         *cli_arguments(model_dir, input_dir, folder, "--ray", "127.0.0.1:1")],
        capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"), cwd=tmp_path, timeout=300)
    assert completed.returncode == cli.EXIT_FATAL, completed.stderr
    assert "error: No Ray cluster answers at 127.0.0.1:1" in completed.stderr
    assert {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()} == before


# ----------------------------------------------------------------------------------------------------------------
# Without Ray; resource planning; the shard writer (no Ray, no model)
# ----------------------------------------------------------------------------------------------------------------


def test_without_ray_the_cli_says_how_to_install_it(tmp_path):
    """`import segment` does not import ray; `--ray` without it exits 2 with one sentence (ray made unimportable)."""
    (tmp_path / "in").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "x.png")
    script = ("import sys; import segment; assert 'ray' not in sys.modules, 'import segment imported ray'; "
              "sys.modules['ray'] = None; "
              f"sys.exit(segment.main(['--model', 'unused', {str(tmp_path / 'in')!r}, '--output-dir', "
              f"{str(tmp_path / 'out')!r}, '--ray']))")
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                               timeout=300)
    assert completed.returncode == cli.EXIT_FATAL, completed.stderr
    assert completed.stderr.strip() == f"error: {ray_runner.RAY_HINT}"
    assert "pip install -r requirements-ray.txt" in ray_runner.RAY_HINT


def test_hub_files_never_import_ray():
    """The Hub files never import ray; segment.py and the batch package only lazily, inside the --ray path."""
    package = sorted((REPO_ROOT / "mask_rcnn_batch").glob("*.py"))
    assert package, "the batch package is missing"
    for path in [REPO_ROOT / name for name in HUB_FILES] + [REPO_ROOT / "segment.py", *package]:
        if not path.is_file():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        lazy_allowed = path.name == "segment.py" or path.parent.name == "mask_rcnn_batch"
        nodes = tree.body if lazy_allowed else list(ast.walk(tree))
        for node in nodes:
            modules = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                       else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(module == "ray" or module.startswith("ray.") for module in modules), (path.name, modules)


def test_inference_actors_are_not_restarted_on_every_ray_signature():
    def named(fn, *, max_restarts=None, num_cpus=None):
        pass

    def remote_args(fn, *, num_cpus=None, **ray_remote_args):
        pass

    def neither(fn, *, num_cpus=None):
        pass

    assert ray_runner.worker_restart_arguments(named) == {"max_restarts": 0}
    assert ray_runner.worker_restart_arguments(remote_args) == {"max_restarts": 0}
    assert ray_runner.worker_restart_arguments(neither) == {}
    ray_data = pytest.importorskip("ray.data")
    assert ray_runner.worker_restart_arguments(ray_data.Dataset.map_batches) == {"max_restarts": 0}


def test_plan_ray_resources_defaults_and_overrides():
    laptop = ray_runner.plan_ray_resources([2.0], 0.0)
    assert (laptop.workers, laptop.cpus_per_worker, laptop.threads_per_worker) == (1, 1.5, 2)
    two = ray_runner.plan_ray_resources([2.0], 0.0, workers=2)
    assert (two.workers, two.cpus_per_worker, two.threads_per_worker) == (2, 0.75, 1)
    cpu_cluster = ray_runner.plan_ray_resources([16.0] * 4, 0.0)  # one worker per node
    assert (cpu_cluster.workers, cpu_cluster.cpus_per_worker, cpu_cluster.threads_per_worker) == (4, 15.5, 16)
    assert (laptop.prepare_task_cpus, cpu_cluster.prepare_task_cpus) == (0.5, 0.5)
    gpu_nodes = ray_runner.plan_ray_resources([64.0, 64.0], 16.0, gpus_per_worker=1.0)  # most CPUs left to decode
    assert (gpu_nodes.workers, gpu_nodes.cpus_per_worker, gpu_nodes.gpus_per_worker) == (16, 2.0, 1.0)
    assert gpu_nodes.prepare_task_cpus == 1.0  # with GPUs decoding is the bottleneck: a whole core per task
    shared_gpus = ray_runner.plan_ray_resources([8.0], 2.0, gpus_per_worker=0.5)
    assert (shared_gpus.workers, shared_gpus.cpus_per_worker) == (4, 1.75)
    explicit = ray_runner.plan_ray_resources([8.0], 0.0, workers=3, cpus_per_worker=2.0)
    assert (explicit.workers, explicit.cpus_per_worker, explicit.threads_per_worker) == (3, 2.0, 2)
    with pytest.raises(SegmentError, match="--workers"):
        ray_runner.plan_ray_resources([8.0], 0.0, workers=0)


def _entry(file_name: str) -> dict:
    image_id = records.stable_image_id(file_name)
    return {"image": {"id": image_id, "file_name": file_name, "width": 4, "height": 3},
            "annotations": [{"image_id": image_id, "file_name": file_name, "category_id": 1,
                             "bbox": [0.0, 0.0, 1.0, 1.0], "score": 0.5}]}


def test_sharded_output_rolls_over_resumes_in_new_shards_and_reads_both_forms(tmp_path, capsys):
    info, categories = {"threshold": 0.5, "mask_threshold": 0.5}, [{"id": 1, "name": "person"}]
    output = outputs.ShardedOutputFolder(str(tmp_path), False, info, categories, images_per_shard=2)
    output.add([_entry("a.png"), _entry("b.png")])
    output.add([_entry("c.png")])
    output.fail("bad.png", "/x/bad.png", "OSError: broken")
    output.finish()
    assert [Path(path).name for path in outputs.shard_paths(str(tmp_path))] == ["part-00000.jsonl",
                                                                                "part-00001.jsonl"]
    assert sorted(outputs.read_shards(str(tmp_path))) == ["a.png", "b.png", "c.png"]
    assert json.loads((tmp_path / "failures.json").read_text())[0]["file_name"] == "bad.png"

    # resume: images of both forms count as done (here d.png from a single-file run's journal); new shard index
    (tmp_path / "predictions.jsonl").write_text(json.dumps(_entry("d.png")) + "\n")
    resumed = outputs.ShardedOutputFolder(str(tmp_path), True, info, categories, images_per_shard=2)
    assert all(resumed.is_finished(name) for name in ("a.png", "b.png", "c.png", "d.png"))
    assert not resumed.is_finished("e.png") and resumed.previous_info == info
    resumed.add([_entry("e.png")])
    resumed.finish()
    assert Path(outputs.shard_paths(str(tmp_path))[-1]).name == "part-00002.jsonl"
    assert sorted(outputs.load_finished(str(tmp_path))) == ["a.png", "b.png", "c.png", "d.png", "e.png"]

    # a single-file resume keeps the shards' images in predictions.json
    single = outputs.OutputFolder(str(tmp_path), True, info, categories)
    single.finish()
    names = {record["file_name"] for record in json.loads((tmp_path / "predictions.json").read_text())}
    assert names == {"a.png", "b.png", "c.png", "d.png", "e.png"}

    # a fresh run (no --resume) replaces the results of both forms
    fresh = outputs.ShardedOutputFolder(str(tmp_path), False, info, categories)
    fresh.finish()
    assert "replacing the results" in capsys.readouterr().err
    assert outputs.shard_paths(str(tmp_path)) == [] and not (tmp_path / "predictions.json").exists()
    assert outputs.load_finished(str(tmp_path)) == {}
