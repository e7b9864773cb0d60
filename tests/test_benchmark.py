"""tools/benchmark.py runs from a checkout and prints its comparison table (speed itself is not tested here).

One quick pass: ours (default, fused, and bf16 where the CPU has it) against torchvision with the same synthetic
weights, one run, no warm-up, no memory subprocesses. MMDetection is left out (it is not installed in CI); the table
must still carry a ratio column against torchvision for each of our rows, and every contender must find the same
100 detections that make the mask branch do real work.
"""

from __future__ import annotations

import re

import pytest

import benchmark


@pytest.fixture(scope="module")
def benchmark_output():
    import io
    from contextlib import redirect_stdout

    buffer = io.StringIO()
    with redirect_stdout(buffer):
        benchmark.main(["--runs", "1", "--warmup", "0", "--peers", "torchvision", "--no-memory", "--threads", "2"])
    return buffer.getvalue()


def test_benchmark_prints_a_ratio_for_each_of_our_rows_against_torchvision(benchmark_output):
    lines = benchmark_output.splitlines()
    header = next(line for line in lines if line.startswith("contender"))
    assert header.split()[-1] == "torchvision"
    rows = {line[:36].strip(): line[36:].split() for line in lines
            if line.startswith(("ours (", "torchvision maskrcnn")) and " / " not in line}
    assert set(rows) >= {"ours (fast, float32)", "ours (fast+fused BN, float32)", "torchvision maskrcnn_resnet50_fpn"}
    for name, fields in rows.items():
        preprocess, model, postprocess, total = (float(value) for value in fields[:4])
        assert total == pytest.approx(preprocess + model + postprocess, abs=2e-3), name
        assert int(fields[4]) == 100, f"{name} should compute the full 100 detections and masks"
        if name.startswith("ours"):
            ratio = float(fields[5])
            torchvision_total = float(rows["torchvision maskrcnn_resnet50_fpn"][3])
            assert ratio == pytest.approx(total / torchvision_total, abs=0.006), name
    assert re.search(r"^ours \(fast\+fused BN, float32\) / ours \(fast, float32\): \d+\.\d\d$", benchmark_output,
                     re.MULTILINE)
