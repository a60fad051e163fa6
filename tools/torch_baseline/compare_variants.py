#!/usr/bin/env python3
"""Check that the reference and tuned BCD variants compute the same iterates.

Both float32 variants start from one initial state and run the same number of
iterations. After each iteration the script prints, for every block family (W, b, U, V),
the largest relative Frobenius difference ||A - B|| / ||B|| over the layers, taken
against a float64 run of the tuned variant and between the two float32 runs. It exits
with status 1 when the two float32 variants differ by more than --tolerance or when
the objective of any run increases.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

import bcd_torch


def relative_difference(candidate: torch.Tensor, reference: torch.Tensor) -> float:
    reference = reference.double()
    scale = torch.linalg.vector_norm(reference).item()
    difference = torch.linalg.vector_norm(candidate.double() - reference).item()
    return difference / scale if scale > 0 else difference


def max_block_differences(candidate: bcd_torch.BcdState, reference: bcd_torch.BcdState) -> dict[str, float]:
    """Return the largest relative difference over the layers for each block family."""
    families = {
        "W": (candidate.weights, reference.weights),
        "b": (candidate.biases, reference.biases),
        "U": (candidate.preactivations, reference.preactivations),
        "V": (candidate.activations, reference.activations),
    }
    return {
        name: max(relative_difference(ours, theirs) for ours, theirs in zip(left[1:], right[1:]))
        for name, (left, right) in families.items()
    }


def format_differences(differences: dict[str, float]) -> str:
    return " ".join(f"{name} {value:.1e}" for name, value in differences.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=bcd_torch.DEFAULT_DATA_DIR, type=Path,
                        help="folder with the gzip IDX MNIST files (default: %(default)s)")
    parser.add_argument("--train-limit", type=bcd_torch.positive_int, default=2000,
                        help="number of training samples (default: %(default)s)")
    parser.add_argument("--hidden", type=bcd_torch.parse_hidden_widths, default=[100, 100],
                        help="comma-separated hidden layer widths (default: 100,100)")
    parser.add_argument("--iterations", type=bcd_torch.positive_int, default=10,
                        help="number of BCD iterations (default: %(default)s)")
    parser.add_argument("--gamma", type=float, default=1.0,
                        help="weight of the V_i = relu(U_i) penalty (default: %(default)s)")
    parser.add_argument("--rho", type=float, default=1.0,
                        help="weight of the U_i = W_i V_{i-1} + b_i penalty (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=5.0,
                        help="proximal weight of the V_N, U_i and (W_i, b_i) updates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weight initialisation (default: %(default)s)")
    parser.add_argument("--tolerance", type=float, default=1e-3,
                        help="maximum relative difference between the float32 variants (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)

    hyper = bcd_torch.Hyperparameters(gamma=args.gamma, rho=args.rho, alpha=args.alpha)
    data32 = bcd_torch.load_mnist_training_set(args.data_dir, args.train_limit, torch.float32)
    data64 = bcd_torch.load_mnist_training_set(args.data_dir, args.train_limit, torch.float64)
    widths = [data32.inputs.shape[0], *args.hidden, bcd_torch.NUM_CLASSES]

    runs = {
        "reference32": (bcd_torch.ReferenceBCD, data32),
        "tuned32": (bcd_torch.TunedBCD, data32),
        "tuned64": (bcd_torch.TunedBCD, data64),
    }
    states = {}
    solvers = {}
    objectives = {}
    for name, (variant, data) in runs.items():
        states[name] = bcd_torch.initialize_state(data.inputs, widths, args.seed)
        solvers[name] = variant(data.inputs, data.targets, hyper)
        objectives[name] = [bcd_torch.objective(states[name], data.targets, hyper)]

    failures = []
    for iteration in range(1, args.iterations + 1):
        for name, (_, data) in runs.items():
            solvers[name].iterate(states[name])
            objectives[name].append(bcd_torch.objective(states[name], data.targets, hyper))

        between = max_block_differences(states["reference32"], states["tuned32"])
        reference_error = max_block_differences(states["reference32"], states["tuned64"])
        tuned_error = max_block_differences(states["tuned32"], states["tuned64"])
        accuracy = bcd_torch.train_accuracy(states["tuned32"], data32.inputs, data32.labels)
        print(f"iteration {iteration}: objective {objectives['tuned32'][-1]:.6e}, "
              f"train accuracy {accuracy:.4f}")
        print(f"  reference32 vs tuned32: {format_differences(between)}")
        print(f"  reference32 vs tuned64: {format_differences(reference_error)}")
        print(f"  tuned32 vs tuned64:     {format_differences(tuned_error)}")
        for family, value in between.items():
            if value > args.tolerance:
                failures.append(f"iteration {iteration}: {family} differs by {value:.2e} "
                                f"between the float32 variants, above --tolerance {args.tolerance}")

    for name, values in objectives.items():
        for iteration in range(1, len(values)):
            if values[iteration] > values[iteration - 1]:
                failures.append(f"{name}: objective increased from {values[iteration - 1]:.9e} "
                                f"to {values[iteration]:.9e} at iteration {iteration}")

    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    if failures:
        return 1
    print("variants agree and every objective decreased monotonically")
    return 0


if __name__ == "__main__":
    sys.exit(main())
