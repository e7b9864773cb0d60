"""Test setup: the Hub files live flat at the repository root, helpers in tools/.

The tests run PyTorch's AVX2 CPU kernels (tools/reference_kernels.py): the golden fixtures were made with them, and
an AVX-512 kernel rounds differently, so the bit-identity tests would otherwise depend on the machine. This runs
before any test module imports torch; subprocesses and Ray workers inherit the setting.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
for path in (REPO_ROOT, REPO_ROOT / "tools"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from reference_kernels import pin_reference_kernels  # noqa: E402

pin_reference_kernels()
