# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""What every way of running Mask R-CNN shares: the precision rule, the per-image fallback of a failed batch, the
one-line description of a failure and the label look-up.

The pipelines (pipeline.py), the endpoint (serving_mask_rcnn.py, handler.py) and the batch CLI use these, so a
dtype, a failed image or a label reads the same everywhere:

* precision: `resolve_compute_dtype` names the dtype ("float32", "bfloat16", "float16", a torch dtype, or None for
  the MASK_RCNN_DTYPE environment variable, else float32); `prepare_model_for_inference` casts the weights to it
  (every layer then computes in that dtype; the model keeps its own float32 steps) and refuses reduced precision for
  a model configured with `numerics="exact"`.
* batches: `run_with_per_image_fallback` runs a batch and, when it fails, each item alone, so one bad image costs
  only its own result.
* failures: `describe_failure` gives `"<exception class>: <first line of the message>"`.
* labels: `label_name` / `label_names` read `config.id2label`, whose keys are ints or (after a JSON round trip)
  strings.
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, TypeVar, Union

import torch

# Environment variable that chooses the compute dtype when none is passed (Inference Endpoints: the endpoint's
# "Environment variables"; the batch CLI and the pipelines' helpers read it too).
DTYPE_ENVIRONMENT_VARIABLE = "MASK_RCNN_DTYPE"
# Accepted names of the compute dtypes (lower case, without a "torch." prefix).
COMPUTE_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
EXACT_NUMERICS = "exact"  # the `numerics` config value that promises MMDetection's float32 results

Item = TypeVar("Item")
Result = TypeVar("Result")


# --------------------------------------------------------------------------------------------------------------
# Precision
# --------------------------------------------------------------------------------------------------------------
def resolve_compute_dtype(name_or_dtype: Union[str, torch.dtype, None] = None) -> torch.dtype:
    """The compute dtype named by `name_or_dtype`, else by the MASK_RCNN_DTYPE environment variable, else float32.

    Args:
        name_or_dtype: "float32" / "bfloat16" / "float16" (also "fp32", "bf16", "fp16", "torch.float16", any case),
            one of those torch dtypes, or None.
    Raises:
        ValueError: another name or dtype (the message names where it came from and the accepted names).
    """
    if isinstance(name_or_dtype, torch.dtype):
        if name_or_dtype not in COMPUTE_DTYPES.values():
            raise ValueError(f"dtype {name_or_dtype} is not a supported dtype: use float32, bfloat16 or "
                             "float16.")
        return name_or_dtype
    source = "dtype"
    if name_or_dtype is None:
        name_or_dtype, source = os.environ.get(DTYPE_ENVIRONMENT_VARIABLE, ""), DTYPE_ENVIRONMENT_VARIABLE
    if not isinstance(name_or_dtype, str):
        raise ValueError(f"dtype must be a name such as 'bfloat16' or a torch dtype, got "
                         f"{type(name_or_dtype).__name__}.")
    name = name_or_dtype.strip().lower().replace("torch.", "") or "float32"
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"{source}={name_or_dtype!r} is not a supported dtype: use float32, bfloat16 or "
                         "float16.")
    return COMPUTE_DTYPES[name]


def check_precision_allowed(config: Any, dtype: torch.dtype, model_name: str = "the model") -> None:
    """Raises ValueError when `dtype` is reduced precision and `config.numerics` is "exact" (float32 only)."""
    if dtype != torch.float32 and getattr(config, "numerics", None) == EXACT_NUMERICS:
        raise ValueError(f"{model_name} is configured with numerics='exact', which runs in float32 only (it promises "
                         f"MMDetection's float32 results), so {dtype} was refused; ask for float32 (unset "
                         f"{DTYPE_ENVIRONMENT_VARIABLE}, --dtype float32) or set numerics to 'fast' in its "
                         "config.json.")


def prepare_model_for_inference(model: torch.nn.Module, dtype: Union[str, torch.dtype, None] = None,
                                device: Union[str, torch.device, None] = None) -> torch.nn.Module:
    """Casts the weights to the compute dtype, moves the model to `device` and puts it in eval mode (in place).

    The one precision rule of the project: reduced precision means bfloat16/float16 weights (every layer computes
    in that dtype; the model's own float32 steps stay float32), never `torch.autocast` around float32 weights.

    Args:
        model: a `MaskRCNNForInstanceSegmentation` (anything with a `config`).
        dtype: as for `resolve_compute_dtype` (None: MASK_RCNN_DTYPE, else float32).
        device: "cpu", "cuda", "cuda:1", a torch device, or None to keep the model where it is.
    Returns:
        the same model object.
    Raises:
        ValueError: an unknown dtype, or reduced precision for a model with `numerics="exact"`.
    """
    compute_dtype = resolve_compute_dtype(dtype)
    name = getattr(model, "name_or_path", "") or ""
    check_precision_allowed(getattr(model, "config", None), compute_dtype,
                            f"The model in {name}" if name else "The model")
    return model.to(device=device, dtype=compute_dtype).eval()


# --------------------------------------------------------------------------------------------------------------
# Batches with a per-image fallback
# --------------------------------------------------------------------------------------------------------------
class DescribedFailure(RuntimeError):
    """A failure whose message is already its description (`"<class>: <message>"`), e.g. one reported by another
    process; `describe_failure` passes it on unchanged."""


def describe_failure(error: BaseException) -> str:
    """One line for a failed input: `"<exception class>: <first line of the message>"` (just the class when the
    message is empty); a `DescribedFailure` gives its message as it is."""
    if isinstance(error, DescribedFailure):
        return str(error)
    lines = str(error).strip().splitlines()
    first_line = lines[0].strip() if lines else ""
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def run_with_per_image_fallback(items: Sequence[Item], run_batch: Callable[[Sequence[Item]], Sequence[Result]],
                                run_one: Optional[Callable[[Item], Result]] = None,
                                retry_on: tuple[type[BaseException], ...] = (Exception,),
                                ) -> list[Union[Result, BaseException]]:
    """Runs `run_batch(items)`; if it raises, runs each item alone, so only the items that fail by themselves fail.

    Args:
        items: the batch (an empty batch gives []).
        run_batch: items -> one result per item, in order.
        run_one: item -> its result; default `run_batch([item])[0]`.
        retry_on: the exception classes that mean "some item failed" (others, e.g. a full disk, propagate).

    Returns:
        per item, in order, its result or the exception it failed with (`isinstance(entry, BaseException)`). A batch
        of one item is not run twice: its exception is its entry.
    """
    if not items:
        return []
    try:
        results = list(run_batch(items))
    except retry_on as error:
        if len(items) == 1:
            return [error]
    else:
        if len(results) != len(items):
            raise ValueError(f"run_batch returned {len(results)} results for {len(items)} items.")
        return results
    single = run_one if run_one is not None else (lambda item: run_batch([item])[0])
    entries: list[Union[Result, BaseException]] = []
    for item in items:
        try:
            entries.append(single(item))
        except retry_on as error:
            entries.append(error)
    return entries


# --------------------------------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------------------------------
def label_name(id2label: Mapping[Any, str], label_id: Any) -> str:
    """The name of class index `label_id` (an int, numpy or tensor scalar); `id2label` keys may be ints or strings
    (a JSON round trip makes them strings). Unknown indices give transformers' default name `LABEL_<id>`."""
    label_id = int(label_id)
    name = id2label.get(label_id, id2label.get(str(label_id)))
    return f"LABEL_{label_id}" if name is None else str(name)


def label_names(id2label: Mapping[Any, str]) -> list[str]:
    """The names of class indices 0 .. max index, in order (gaps named `LABEL_<id>`)."""
    indices = [int(key) for key in id2label]
    return [label_name(id2label, index) for index in range(max(indices, default=-1) + 1)]


# ================================================================================================================
# Reduced precision on CPUs without native support
# ================================================================================================================

# CPU flags (Linux /proc/cpuinfo names) with which oneDNN runs each reduced dtype natively; without any of them
# PyTorch emulates the dtype in float32 arithmetic plus conversions, several times slower than float32 itself
NATIVE_CPU_FEATURES = {
    torch.bfloat16: ("avx512_bf16", "amx_bf16"),
    torch.float16: ("avx512_fp16", "amx_fp16"),
}
_REDUCED_PRECISION_WARNED: set = set()
_REDUCED_PRECISION_WARNED_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def cpu_feature_flags() -> Optional[frozenset]:
    """The CPU's feature flags from /proc/cpuinfo (Linux x86), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def missing_native_cpu_support(dtype: torch.dtype) -> Optional[tuple[str, ...]]:
    """The CPU features of which none is present for `dtype` to run natively (e.g. `("avx512_bf16", "amx_bf16")`
    on an AVX2-only CPU), or None when the CPU has one of them, the dtype needs none, or the flags are unknown."""
    features = NATIVE_CPU_FEATURES.get(dtype)
    flags = cpu_feature_flags()
    if features is None or flags is None or any(feature in flags for feature in features):
        return None
    return features


def warn_if_reduced_precision_is_emulated(dtype: torch.dtype, device: torch.device) -> None:
    """Warn once per process and dtype when a CPU model runs in a dtype the CPU has no native support for."""
    if device.type != "cpu":
        return
    missing = missing_native_cpu_support(dtype)
    if missing is None:
        return
    with _REDUCED_PRECISION_WARNED_LOCK:
        if dtype in _REDUCED_PRECISION_WARNED:
            return
        _REDUCED_PRECISION_WARNED.add(dtype)
    name = str(dtype).replace("torch.", "")
    warnings.warn(
        f"Mask R-CNN runs in {name} on a CPU without native {name} support (its flags have none of "
        f"{', '.join(missing)}): PyTorch emulates {name} there, which is several times SLOWER than float32. Load the "
        "model in float32 (optionally with fuse_batch_norms=True for speed) on this machine, or use a CPU with "
        f"{' or '.join(missing)}, or a GPU.",
        UserWarning,
        stacklevel=3,
    )




def autocast_dtype_on(device_type: str) -> Optional[torch.dtype]:
    """The dtype an active `torch.autocast` computes in on `device_type` ("cpu", "cuda", ...), None where it is off
    or autocast does not know the device type."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
    except RuntimeError:  # a device type without autocast, e.g. "meta"
        return None
    return torch.get_autocast_dtype(device_type)


__all__ = ["DTYPE_ENVIRONMENT_VARIABLE", "COMPUTE_DTYPES", "resolve_compute_dtype", "check_precision_allowed",
           "prepare_model_for_inference", "DescribedFailure", "describe_failure", "run_with_per_image_fallback",
           "label_name", "label_names",
           "NATIVE_CPU_FEATURES", "cpu_feature_flags", "missing_native_cpu_support",
           "warn_if_reduced_precision_is_emulated", "autocast_dtype_on"]
