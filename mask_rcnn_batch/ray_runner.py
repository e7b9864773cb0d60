# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Scale-out with Ray Data (`--ray`). Ray is optional (requirements-ray.txt) and imported only inside these
functions, never when the package is imported.

windows of paths (one block each) -> `prepare_window` tasks (headers, batch planning, decoding; one block per planned
batch) -> `RayInferenceWorker` actor pool (one planned batch per call; records and overlay PNGs made by
`runner.infer_batch`, the single-process code) -> the driver, which writes entries, overlays and failures through
the same output folder. Batches are planned window by window as in the single-process run, so every forward pass
pads the same images together and the results are the same.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import math
import os
import pickle
import socket
import sys
import warnings
from dataclasses import dataclass, replace
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from inference_mask_rcnn import describe_failure, label_names

from .errors import SegmentError, WorkerError
from .inputs import InputItem, Report, decode_batch, input_windows, iter_batches
from .model import load_image_processor, load_model_and_processor
from .options import RAY_LOCAL, BatchOptions, RunOptions
from .records import coco_category_ids
from .runner import MODEL_ERRORS, BatchResult, Progress, RunSummary, infer_batch, record_batch

RAY_HINT = ('--ray needs Ray Data, which is not installed: pip install -r requirements-ray.txt '
            '(or pip install "ray[data]").')
# Logical CPUs of a task that reads one window's headers and decodes its images: half a CPU when the forward pass
# runs on CPUs (decoding is short next to it), a whole one with GPUs (decoding is then what limits throughput).
PREPARE_TASK_CPUS = 0.5
GPU_PREPARE_TASK_CPUS = 1.0
GPU_WORKER_CPUS = 2.0  # default CPU share of a GPU worker (post-processing, RLE, overlays); the rest decodes
RAY_PAYLOAD = "payload"  # the one column of the pipeline's rows: a pickled dict of plain Python / numpy values
# Ray reads this when it is imported: "0" makes a Ray instance started here single-machine, every server bound to
# 127.0.0.1 (Ray otherwise replaces 127.0.0.1 by the machine's address and listens on all interfaces).
RAY_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
# Shipped to the workers by value, so the cluster's nodes need no copy of this repository: this package and the
# flat root modules it imports (the model's own code reaches the workers through the model folder).
SHIPPED_ROOT_MODULES = ("configuration_mask_rcnn", "image_processing_mask_rcnn", "inference_mask_rcnn")
# Inference actors are not restarted when their process dies (Ray Data's default is to restart them forever).
# A worker that dies on a batch (out of memory, a crash in a kernel) would die again on it; the run stops instead
# with the finished images written, as the single-process run does, and --resume continues. Ray Data passes every
# actor's constructor arguments through the object store, and Ray logs an error-level line at the creation of each
# restartable actor whose arguments are there (core_worker.cc "... max_restarts > 0"); with 0 a healthy run logs none.
WORKER_MAX_RESTARTS = 0


def worker_restart_arguments(map_batches: Any) -> Dict[str, Any]:
    """`{"max_restarts": WORKER_MAX_RESTARTS}` where this Ray's `Dataset.map_batches` takes it: a named parameter,
    or (Ray 2.60 to 2.63) its deprecated `**ray_remote_args`; else {} (Ray's default restarts, and its log line)."""
    parameters = inspect.signature(map_batches).parameters
    if "max_restarts" in parameters or any(parameter.kind is parameter.VAR_KEYWORD
                                           for parameter in parameters.values()):
        return {"max_restarts": WORKER_MAX_RESTARTS}
    return {}


def require_ray(address: str = RAY_LOCAL) -> Any:
    """`import ray` (with Ray Data), or a `SegmentError` saying how to install it. For a local instance ("local")
    `RAY_SINGLE_MACHINE_ENV` is set first unless Ray is already imported or the variable is set."""
    if address == RAY_LOCAL and "ray" not in sys.modules:
        os.environ.setdefault(RAY_SINGLE_MACHINE_ENV, "0")
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise SegmentError(RAY_HINT) from None
    return ray


@contextlib.contextmanager
def ray_session(address: str) -> Iterator[Any]:
    """Ray for one run, yielding the `ray` module.

    A Ray instance this process already has (`ray.is_initialized()`, e.g. a notebook or a test) is used as it is and
    left running. Otherwise `address` "local" starts a Ray instance with this machine's cores, bound to 127.0.0.1
    and without the dashboard, and anything else ("auto", "HOST:PORT", "ray://HOST:10001") joins that cluster; what
    was started or joined here is shut down (or disconnected) at the end.
    """
    ray = require_ray(address)
    if ray.is_initialized():
        yield ray
        return
    if address not in (RAY_LOCAL, "auto"):
        check_reachable(address)
    try:
        if address == RAY_LOCAL:
            ray.init(num_cpus=os.cpu_count() or 1, _node_ip_address="127.0.0.1", include_dashboard=False,
                     logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise SegmentError(f"Could not start or join Ray at {address!r}: {describe_failure(error)}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def check_reachable(address: str, timeout_s: float = 10.0) -> None:
    """Fails fast when nothing listens at a `HOST:PORT` or `ray://HOST:PORT` address (Ray itself keeps retrying for
    minutes)."""
    host, _, port = address[len("ray://"):].rpartition(":") if address.startswith("ray://") else address.rpartition(":")
    if not host or not port.isdigit():
        raise SegmentError(f"--ray {address!r} is not an address: use HOST:PORT, ray://HOST:PORT or auto.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as error:
        raise SegmentError(f"No Ray cluster answers at {address} ({error}); start one with `ray start --head` or "
                           "check the address.") from None


@dataclass(frozen=True)
class RayResources:
    """How the inference actors are sized: `workers` actors, each reserving `cpus_per_worker` logical CPUs (and
    running torch with `threads_per_worker` threads) and `gpus_per_worker` GPUs; decoding tasks reserve
    `prepare_task_cpus` each."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    prepare_task_cpus: float = PREPARE_TASK_CPUS

    @property
    def threads_per_worker(self) -> int:
        """torch threads of a worker: its CPU share rounded to the nearest whole number, at least 1."""
        return max(1, int(self.cpus_per_worker + 0.5))


def plan_ray_resources(node_cpus: Sequence[float], cluster_gpus: float, workers: Optional[int] = None,
                       cpus_per_worker: Optional[float] = None, gpus_per_worker: float = 0.0) -> RayResources:
    """Sizes the inference actor pool from the cluster's CPUs per node and GPU count; explicit values win.

    Defaults: with GPUs, one worker per `gpus_per_worker` GPUs, each with min(2, its CPU share) CPUs so that most
    CPUs decode; on CPUs only, one worker per node. A CPU share is the cluster's CPUs, less one decoding task's
    CPUs per node (`PREPARE_TASK_CPUS`, with GPUs `GPU_PREPARE_TASK_CPUS`), divided among the workers (at most a
    node's CPUs less that reserve), so on a 2-core machine one worker gets 1.5 CPUs and runs 2 torch threads, two
    workers get 0.75 CPUs and 1 thread each.
    """
    if not node_cpus:
        raise SegmentError("The Ray cluster has no node with CPUs.")
    if workers is None:
        workers = max(1, int(cluster_gpus // gpus_per_worker)) if gpus_per_worker > 0 else len(node_cpus)
    if workers < 1:
        raise SegmentError(f"--workers must be at least 1, got {workers}.")
    prepare_task_cpus = GPU_PREPARE_TASK_CPUS if gpus_per_worker > 0 else PREPARE_TASK_CPUS
    if cpus_per_worker is None:
        spare = sum(node_cpus) - prepare_task_cpus * len(node_cpus)
        share = min(spare / workers, max(node_cpus) - prepare_task_cpus)
        if gpus_per_worker > 0:
            share = min(share, GPU_WORKER_CPUS)
        cpus_per_worker = max(0.01, math.floor(share * 100) / 100)
    if cpus_per_worker <= 0 or gpus_per_worker < 0:
        raise SegmentError("--cpus-per-worker must be positive and --gpus-per-worker not negative.")
    return RayResources(workers=workers, cpus_per_worker=float(cpus_per_worker),
                        gpus_per_worker=float(gpus_per_worker), prepare_task_cpus=prepare_task_cpus)


def worker_name() -> str:
    """"host:pid" of this process (process ids repeat across a cluster's nodes)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pack(value: Dict[str, Any]) -> bytes:
    return pickle.dumps(value, protocol=5)


def prepare_window(rows: Dict[str, np.ndarray], model_id: str, batch_size: int) -> Iterator[Dict[str, List[bytes]]]:
    """Ray Data task: windows of input files -> their planned batches, decoded, one output row (one block) each.

    Reads the window's headers and plans its batches with `iter_batches` and decodes them with `decode_batch`,
    exactly as the single-process run does, so the actors see the same batches. Unreadable files travel with the
    next row as failure records `{"file_name", "path", "error"}`.
    """
    processor = load_image_processor(model_id)
    for window in rows["window"]:
        failures: List[Dict[str, str]] = []

        def report(item: InputItem, error: str) -> None:
            failures.append({"file_name": item.file_name, "path": item.path, "error": error})

        items = [InputItem(path=path, file_name=file_name) for path, file_name in json.loads(window)]
        for batch in iter_batches(items, batch_size, report):
            decoded = decode_batch(batch, processor, report)
            images = [(item.path, item.file_name, rgb) for item, rgb in decoded]
            yield {RAY_PAYLOAD: [_pack({"images": images, "failures": list(failures)})]}
            failures.clear()
        if failures:
            yield {RAY_PAYLOAD: [_pack({"images": [], "failures": list(failures)})]}


class RayInferenceWorker:
    """Ray Data actor: loads the model once, then runs each planned batch in one forward pass.

    Records and overlay PNGs are made by `runner.infer_batch`, the single-process code; the driver writes them
    (workers need no access to the output folder). Each output row holds `{"entries", "failures", "overlays":
    [(file_name, png)], "model_error", "inferred_images", "worker": ("host:pid", torch threads)}`; a model error
    without `keep_going` is returned, not raised, so the driver can stop cleanly.
    """

    def __init__(self, model_id: str, device: str, threads: int, options: BatchOptions) -> None:
        torch.set_num_threads(threads)
        try:
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        except ImportError:  # pragma: no cover - transformers without the helper
            pass
        self.model, self.processor = load_model_and_processor(model_id, device, options.dtype)
        self.options = options
        self.category_ids = coco_category_ids(self.model.config.id2label)
        self.label_names = label_names(self.model.config.id2label)

    def __call__(self, rows: Dict[str, np.ndarray]) -> Dict[str, List[bytes]]:
        return {RAY_PAYLOAD: [_pack(self.run_batch(pickle.loads(payload))) for payload in rows[RAY_PAYLOAD]]}

    def run_batch(self, work: Dict[str, Any]) -> Dict[str, Any]:
        failures = list(work["failures"])
        decoded = [(InputItem(path=path, file_name=file_name), rgb) for path, file_name, rgb in work["images"]]

        def report(item: InputItem, error: str) -> None:
            failures.append({"file_name": item.file_name, "path": item.path, "error": error})

        model_error = None
        try:
            result = infer_batch(decoded, self.model, self.processor, self.options, self.category_ids,
                                 self.label_names, report)
        except MODEL_ERRORS as error:  # without keep_going: the run stops
            result, model_error = BatchResult(inferred_images=len(decoded)), describe_failure(error)
        return {"entries": result.entries, "failures": failures, "overlays": result.overlays,
                "model_error": model_error, "inferred_images": len(decoded),
                "worker": (worker_name(), torch.get_num_threads())}


def ray_device_and_gpus(device: Optional[str], gpus_per_worker: Optional[float]) -> Tuple[str, float]:
    """The workers' torch device and GPUs per worker from --device / --gpus-per-worker (Ray assigns the GPUs)."""
    device = device or "cpu"
    if device not in ("cpu", "cuda"):
        raise SegmentError(f"With --ray, --device is cpu or cuda (Ray gives each worker its GPUs), not {device!r}.")
    gpus = (1.0 if device == "cuda" else 0.0) if gpus_per_worker is None else gpus_per_worker
    return ("cuda" if gpus > 0 else "cpu"), float(gpus)


@contextlib.contextmanager
def _shipped_by_value(ray: Any) -> Iterator[None]:
    """Registers this package and `SHIPPED_ROOT_MODULES` with Ray's cloudpickle to be pickled by value for the
    duration of a run (what was registered before is left as it was)."""
    import importlib

    modules = [sys.modules[__name__.rpartition(".")[0]]] + [importlib.import_module(name)
                                                             for name in SHIPPED_ROOT_MODULES]
    registered = ray.cloudpickle.list_registry_pickle_by_value()
    added = [module for module in modules if module.__name__ not in registered]
    for module in added:
        ray.cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        for module in added:
            ray.cloudpickle.unregister_pickle_by_value(module)


@contextlib.contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """One block per row, no Ray Data progress bars or execution-plan chatter on stderr (this run has its own)."""
    context = ray.data.DataContext.get_current()
    saved_context = (context.target_max_block_size, context.enable_progress_bars)
    # Every row (a window, a planned batch, a result) becomes its own block, so batches spread over all workers.
    context.target_max_block_size, context.enable_progress_bars = 1, False
    quiet_loggers = {logging.getLogger("ray.data"): logging.WARNING,
                     logging.getLogger("ray.data._internal.progress"): logging.ERROR}
    saved_levels = {logger: logger.level for logger in quiet_loggers}
    for logger, level in quiet_loggers.items():
        logger.setLevel(level)
    try:
        with warnings.catch_warnings():
            # fewer planned batches left than workers is fine; Ray Data's warning about it is advice for others
            warnings.filterwarnings("ignore", message="The minimum number of concurrent actors", category=UserWarning)
            # max_restarts has no named parameter in Ray 2.60 (see `worker_restart_arguments`)
            warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated", category=DeprecationWarning)
            yield
    finally:
        context.target_max_block_size, context.enable_progress_bars = saved_context
        for logger, level in saved_levels.items():
            logger.setLevel(level)


def _plan_pool(ray: Any, todo: Sequence[InputItem], options: RunOptions, progress: Progress) -> RayResources:
    """The actor pool for this run on the connected cluster (no more workers than planned batches)."""
    node_cpus = [float(node["Resources"].get("CPU", 0)) for node in ray.nodes()
                 if node.get("Alive") and node["Resources"].get("CPU", 0) > 0]
    cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
    device, gpus_per_worker = ray_device_and_gpus(options.device, options.ray.gpus_per_worker)
    resources = plan_ray_resources(node_cpus, cluster_gpus, options.ray.workers, options.ray.cpus_per_worker,
                                   gpus_per_worker)
    most_batches = math.ceil(len(todo) / options.batch_size)
    if resources.workers > most_batches:  # no actor loads the model for nothing; the CPU share (threads) stays
        resources = replace(resources, workers=most_batches)
    wanted_cpus = resources.workers * resources.cpus_per_worker + resources.prepare_task_cpus
    if wanted_cpus > sum(node_cpus) or resources.workers * resources.gpus_per_worker > cluster_gpus:
        progress.message(f"warning: {resources.workers} workers with {resources.cpus_per_worker:g} CPUs and "
                         f"{resources.gpus_per_worker:g} GPUs each (plus {resources.prepare_task_cpus:g} CPU to "
                         f"decode) need more than the cluster's {sum(node_cpus):g} CPUs / {cluster_gpus:g} GPUs; the "
                         "run waits until they are there (an autoscaling cluster adds nodes), Ctrl-C stops it")
    progress.message(f"ray: {resources.workers} workers x {resources.cpus_per_worker:g} CPUs "
                     f"({resources.threads_per_worker} torch threads), {resources.gpus_per_worker:g} GPUs, "
                     f"device {device}; cluster {sum(node_cpus):g} CPUs / {cluster_gpus:g} GPUs on "
                     f"{len(node_cpus)} nodes")
    return resources


def run_ray_pipeline(todo: Sequence[InputItem], options: RunOptions, output: Any, summary: RunSummary,
                     progress: Progress, report: Report) -> None:
    """Runs `todo` as a Ray Data pipeline on the connected cluster and writes results as they stream in (see the
    module docstring). A model error a worker reports stops the run (`WorkerError`); an output write error of the
    driver stops it too (`OutputWriteError`), with the finished images written."""
    import ray
    import ray.data

    model_id = os.path.abspath(options.model) if os.path.isdir(options.model) else options.model
    device, _ = ray_device_and_gpus(options.device, options.ray.gpus_per_worker)
    resources = _plan_pool(ray, todo, options, progress)
    windows = [json.dumps([[item.path, item.file_name] for item in window])
               for window in input_windows(todo, options.batch_size)]
    with _shipped_by_value(ray), _quiet_ray_data(ray):
        try:
            dataset = ray.data.from_items([{"window": window} for window in windows], override_num_blocks=len(windows))
            dataset = dataset.map_batches(prepare_window, batch_size=1, num_cpus=resources.prepare_task_cpus,
                                          fn_kwargs={"model_id": model_id, "batch_size": options.batch_size})
            dataset = dataset.map_batches(
                RayInferenceWorker, batch_size=1, compute=ray.data.ActorPoolStrategy(size=resources.workers),
                num_cpus=resources.cpus_per_worker, num_gpus=resources.gpus_per_worker,
                **worker_restart_arguments(dataset.map_batches),
                fn_constructor_kwargs={"model_id": model_id, "device": device,
                                       "threads": resources.threads_per_worker, "options": options.batch})
            for row in dataset.iter_rows():
                result = pickle.loads(row[RAY_PAYLOAD])
                for failure in result["failures"]:
                    report(InputItem(path=failure["path"], file_name=failure["file_name"]), failure["error"])
                if result["inferred_images"]:
                    worker, threads = result["worker"]
                    summary.worker_threads[worker] = threads
                record_batch(BatchResult(result["entries"], result["overlays"], result["inferred_images"]), output,
                             summary, progress)
                if result["model_error"] is not None:
                    raise WorkerError(result["model_error"])
        except ray.exceptions.RayError as error:
            raise WorkerError(f"the Ray pipeline failed: {describe_failure(error)}") from None
