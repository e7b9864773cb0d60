# Copyright 2026 The Mask R-CNN Hub port authors. Apache-2.0.
"""Our training losses and gradient norm on the MMDetection training goldens, and how close they are.

Used by tests/test_training_parity.py and, as a script, to print the table quoted in docs/finetune.md:

    python tools/training_parity.py [--numerics exact fast] [--variants V ...] [--cases C ...]

Each case runs `MaskRCNNForInstanceSegmentation(pixel_values, image_sizes, labels=...)` in train mode with the
stored ground truth and `torch.manual_seed(case seed)` just before the call, like tools/make_training_golden.py
runs MMDetection, then `loss.backward()`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (REPO_ROOT, os.path.join(REPO_ROOT, "tools")):
    if path not in sys.path:
        sys.path.insert(0, path)

if __name__ == "__main__":  # as a script, compare on the goldens' CPU kernels (tests pin them in conftest.py)
    from reference_kernels import pin_reference_kernels

    pin_reference_kernels()

import torch  # noqa: E402

from convert_mmdet_checkpoint import mmdet_key_to_hf_key  # noqa: E402
from parity import build_model  # noqa: E402
from training_golden import (LOSS_NAMES, TRAINING_CASES, TRAINING_VARIANTS, case_batch,  # noqa: E402
                             gradient_norm, labels_for_model, load_training_golden)


def run_training_case(variant: str, case: str, numerics: str = "exact", golden: Optional[dict] = None) -> dict:
    """Our losses (floats), total gradient norm, per-parameter gradient norms (our names) and the next random draw."""
    golden = golden or load_training_golden(variant, case)
    model = build_model(variant, numerics=numerics).train()
    pixel_values, image_sizes = case_batch(variant, case)
    torch.manual_seed(golden["seed"])
    output = model(pixel_values, torch.tensor(image_sizes), labels=labels_for_model(golden["ground_truth"]))
    rng_after = int(torch.randint(0, 2**62, (1,)).item())
    output.loss.backward()
    gradients = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    losses = {name: float(value.detach()) for name, value in output.loss_dict.items()}
    losses["loss"] = float(output.loss.detach())
    return {
        "losses": losses,
        "gradient_norm": gradient_norm(gradients),
        "parameter_gradient_norms": {name: float(grad.double().norm()) for name, grad in gradients},
        "rng_after": rng_after,
    }


def relative_errors(ours: dict, golden: dict) -> Dict[str, float]:
    """|ours - theirs| / |theirs| per loss term and for the gradient norm (absolute where theirs is 0)."""
    def rel(a: float, b: float) -> float:
        return abs(a - b) / abs(b) if b != 0 else abs(a - b)

    errors = {name: rel(ours["losses"][name], golden["losses"][name]) for name in LOSS_NAMES}
    errors["gradient_norm"] = rel(ours["gradient_norm"], golden["gradient_norm"])
    return errors


def golden_gradient_norms_by_our_name(golden: dict) -> Dict[str, float]:
    return {mmdet_key_to_hf_key(name): value for name, value in golden["parameter_gradient_norms"].items()}


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numerics", nargs="+", default=["exact", "fast"], choices=["exact", "fast"])
    parser.add_argument("--variants", nargs="+", default=list(TRAINING_VARIANTS), choices=list(TRAINING_VARIANTS))
    parser.add_argument("--cases", nargs="+", default=list(TRAINING_CASES), choices=list(TRAINING_CASES))
    args = parser.parse_args(argv)
    print(f"| numerics | variant | case | max rel. error of a loss term | rel. error of grad norm | same draws |")
    print("|---|---|---|---|---|---|")
    for numerics in args.numerics:
        for variant in args.variants:
            for case in args.cases:
                golden = load_training_golden(variant, case)
                ours = run_training_case(variant, case, numerics, golden)
                errors = relative_errors(ours, golden)
                worst = max((value, name) for name, value in errors.items() if name != "gradient_norm")
                print(f"| {numerics} | {variant} | {case} | {worst[0]:.2e} ({worst[1]}) | "
                      f"{errors['gradient_norm']:.2e} | {ours['rng_after'] == golden['rng_after']} |", flush=True)


if __name__ == "__main__":
    main()
