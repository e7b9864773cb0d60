# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""The CPU kernels that the golden fixtures are made and checked with: PyTorch's AVX2 ones.

PyTorch chooses its convolution kernels (oneDNN) and its vectorised element-wise kernels (ATen: sigmoid, exp, ...)
by the widest instruction set the CPU has. An AVX-512 kernel adds its products in another order than an AVX2 one, so
the same float32 program, MMDetection included, gives other last bits on an AVX-512 machine than on an AVX2 one
(seen here: R50-caffe proposals off by 1e-5 in score, hence other boxes after NMS). "Bit-identical to MMDetection"
therefore means: on the same kernels. The fixtures (tools/make_golden.py), their checks (tests/, tools/parity.py)
all pin the AVX2 kernels, which every x86-64 CPU of the last decade has, so the promise is checked the same way on
every such machine. On aarch64 these variables do nothing and the bit-identity tests are not expected to pass.

Both variables are read once, when torch loads its kernels: call `pin_reference_kernels()` before `import torch`.
A value already set in the environment wins (e.g. `ATEN_CPU_CAPABILITY=avx512` to compare with goldens made on
AVX-512 kernels).
"""

from __future__ import annotations

import os
import sys
from typing import Dict

REFERENCE_KERNELS: Dict[str, str] = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN convolutions, linear layers
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised element-wise operations
}


def pin_reference_kernels() -> None:
    """Set the reference kernel variables (unless already set); must run before torch is imported.

    Raises:
        RuntimeError: torch was imported before the variables were set, so it has already chosen other kernels.
    """
    unset = [name for name in REFERENCE_KERNELS if name not in os.environ]
    if unset and "torch" in sys.modules:
        raise RuntimeError(
            f"pin_reference_kernels() must run before torch is imported ({', '.join(unset)} not set): torch has "
            "already chosen its CPU kernels."
        )
    for name, value in REFERENCE_KERNELS.items():
        os.environ.setdefault(name, value)


def active_kernels() -> Dict[str, str]:
    """What this process runs: the variables as set, and the ATen capability torch actually chose."""
    import torch

    kernels = {name: os.environ.get(name, "<unset>") for name in REFERENCE_KERNELS}
    kernels["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return kernels
