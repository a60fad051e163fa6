#!/usr/bin/env python3
"""Time iterations of three-splitting block coordinate descent (BCD) in PyTorch on the CPU.

The network has layers i = 1..N with ReLU hidden layers, a linear output layer and the
squared loss. BCD keeps weights W_i, biases b_i, pre-activations U_i and activations V_i
(V_0 = X) and minimises

    Lbar = 1/2 ||V_N - Y||^2 + gamma/2 sum_{i<N} ||V_i - relu(U_i)||^2
           + gamma/2 ||V_N - U_N||^2 + rho/2 sum_i ||U_i - W_i V_{i-1} - b_i 1^T||^2

block by block, from the output layer back to the first one. Matrices store one sample
per column, so X is 784 x n and Y is the 10 x n one-hot label matrix.

Two implementations of the same iteration are provided:

* ReferenceBCD forms explicit inverses with torch.inverse, materialises every bias
  broadcast as b @ 1^T and evaluates the U update through three stacked candidates,
  as a straightforward research implementation would.
* TunedBCD solves with Cholesky factors, forms each Gram matrix with one product,
  caches the Gram matrix and factor of X, updates in place and uses the Woodbury
  identity for the V update where the next layer is narrower.

Only the update is timed. Accuracy and objective are computed after the timer stops.
"""

from __future__ import annotations

import argparse
import gzip
import json
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
NUM_CLASSES = 10
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "datasets" / "mnist"

# The tuned U update runs its elementwise steps on blocks of rows of about this many
# elements, so each temporary takes about 1 MiB in float32 instead of a full d x n matrix.
ELEMENTWISE_BLOCK_ELEMENTS = 1 << 18


# ---------------------------------------------------------------------------
# Data


def read_idx_images(path: Path) -> np.ndarray:
    """Read a gzip IDX image file and return its pixels as an n x (rows*cols) uint8 array."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    magic, count, rows, cols = struct.unpack(">IIII", data[:16])
    if magic != IMAGE_MAGIC:
        raise ValueError(f"{path}: invalid IDX image magic {magic}, expected {IMAGE_MAGIC}")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16)
    if pixels.size != count * rows * cols:
        raise ValueError(
            f"{path}: header declares {count} images of {rows}x{cols} pixels "
            f"but the file contains {pixels.size} pixel bytes"
        )
    return pixels.reshape(count, rows * cols)


def read_idx_labels(path: Path) -> np.ndarray:
    """Read a gzip IDX label file and return its labels as a uint8 array."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    magic, count = struct.unpack(">II", data[:8])
    if magic != LABEL_MAGIC:
        raise ValueError(f"{path}: invalid IDX label magic {magic}, expected {LABEL_MAGIC}")
    labels = np.frombuffer(data, dtype=np.uint8, offset=8)
    if labels.size != count:
        raise ValueError(f"{path}: header declares {count} labels but the file contains {labels.size}")
    return labels


@dataclass
class Dataset:
    inputs: torch.Tensor  # X, 784 x n, pixels scaled to [0, 1]
    targets: torch.Tensor  # Y, 10 x n one-hot
    labels: torch.Tensor  # n class indices, int64


def load_mnist_training_set(data_dir: Path, limit: int | None, dtype: torch.dtype) -> Dataset:
    """Load the first `limit` MNIST training samples (all when None) as column matrices."""
    images = read_idx_images(data_dir / "train-images-idx3-ubyte.gz")
    labels = read_idx_labels(data_dir / "train-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{data_dir}: {images.shape[0]} training images but {labels.shape[0]} labels")
    if limit is not None:
        if limit < 1 or limit > images.shape[0]:
            raise ValueError(f"--train-limit {limit} is invalid, expected 1..{images.shape[0]}")
        images = images[:limit]
        labels = labels[:limit]

    # Pixels are divided by 255 in float32 whatever the run's dtype, so float64 runs
    # see exactly the float32 inputs.
    pixels = np.ascontiguousarray(images.T, dtype=np.float32) / np.float32(255.0)
    inputs = torch.from_numpy(pixels).to(dtype)
    label_tensor = torch.from_numpy(labels.astype(np.int64))
    targets = torch.zeros(NUM_CLASSES, label_tensor.numel(), dtype=dtype)
    targets[label_tensor, torch.arange(label_tensor.numel())] = 1.0
    return Dataset(inputs=inputs, targets=targets, labels=label_tensor)


# ---------------------------------------------------------------------------
# Model state


@dataclass(frozen=True)
class Hyperparameters:
    gamma: float
    rho: float
    alpha: float


@dataclass
class BcdState:
    """Blocks of the BCD problem. Index 0 of weights, biases and preactivations is None,
    so that index i is layer i as in the formulas, and activations[0] is X."""

    weights: list[torch.Tensor | None]
    biases: list[torch.Tensor | None]  # d_i x 1 columns
    preactivations: list[torch.Tensor | None]
    activations: list[torch.Tensor]

    @property
    def num_layers(self) -> int:
        return len(self.weights) - 1

    def clone(self) -> BcdState:
        def copy(tensors):
            return [None if tensor is None else tensor.clone() for tensor in tensors]

        return BcdState(
            weights=copy(self.weights),
            biases=copy(self.biases),
            preactivations=copy(self.preactivations),
            activations=[self.activations[0]] + copy(self.activations[1:]),
        )


def initialize_state(inputs: torch.Tensor, widths: list[int], seed: int) -> BcdState:
    """Draw W_i ~ 0.01 N(0, 1), set b_i = 0.1 and run one forward pass for U_i and V_i.

    Weights are drawn in float64 and cast, so runs that differ only in dtype start from
    the same point up to rounding.
    """
    generator = torch.Generator().manual_seed(seed)
    dtype = inputs.dtype
    num_layers = len(widths) - 1
    weights: list[torch.Tensor | None] = [None]
    biases: list[torch.Tensor | None] = [None]
    preactivations: list[torch.Tensor | None] = [None]
    activations = [inputs]
    for i in range(1, num_layers + 1):
        weight = 0.01 * torch.randn(widths[i], widths[i - 1], generator=generator, dtype=torch.float64)
        weight = weight.to(dtype)
        bias = torch.full((widths[i], 1), 0.1, dtype=dtype)
        preactivation = torch.addmm(bias, weight, activations[i - 1])
        activation = torch.relu(preactivation) if i < num_layers else preactivation.clone()
        weights.append(weight)
        biases.append(bias)
        preactivations.append(preactivation)
        activations.append(activation)
    return BcdState(weights, biases, preactivations, activations)


# ---------------------------------------------------------------------------
# Reference implementation


class ReferenceBCD:
    """One BCD iteration written directly from the formulas with explicit inverses."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, hyper: Hyperparameters):
        self.targets = targets
        self.hyper = hyper
        self.ones = torch.ones(1, inputs.shape[1], dtype=inputs.dtype)

    def iterate(self, state: BcdState) -> None:
        gamma, rho, alpha = self.hyper.gamma, self.hyper.rho, self.hyper.alpha
        W, b, U, V = state.weights, state.biases, state.preactivations, state.activations
        N = state.num_layers

        V[N] = (self.targets + gamma * U[N] + alpha * V[N]) / (1 + gamma + alpha)
        U[N] = (gamma * V[N] + rho * (W[N] @ V[N - 1] + b[N] @ self.ones)) / (gamma + rho)
        W[N], b[N] = self.update_weights(U[N], V[N - 1], W[N], b[N])

        for i in range(N - 1, 0, -1):
            V[i] = self.update_activation(U[i], U[i + 1], W[i + 1], b[i + 1])
            U[i] = self.update_preactivation(U[i], V[i], W[i] @ V[i - 1] + b[i] @ self.ones)
            W[i], b[i] = self.update_weights(U[i], V[i - 1], W[i], b[i])

    def update_weights(self, U, V_prev, W_old, b_old):
        """Return the joint (W, b) minimiser, [W b] = (alpha [W_old b_old] + rho U Vt^T) H^-1."""
        rho, alpha = self.hyper.rho, self.hyper.alpha
        augmented = torch.cat((V_prev, self.ones), dim=0)
        gram = augmented @ augmented.T
        H = alpha * torch.eye(gram.shape[0], dtype=gram.dtype) + rho * gram
        solution = (alpha * torch.cat((W_old, b_old), dim=1) + rho * (U @ augmented.T)) @ torch.inverse(H)
        m = V_prev.shape[0]
        return solution[:, :m].contiguous(), solution[:, m:].contiguous()

    def update_activation(self, U, U_next, W_next, b_next):
        """Return V_i = (gamma I + rho W^T W)^-1 (rho W^T (U_next - b 1^T) + gamma relu(U_i))."""
        gamma, rho = self.hyper.gamma, self.hyper.rho
        A = gamma * torch.eye(W_next.shape[1], dtype=W_next.dtype) + rho * (W_next.T @ W_next)
        rhs = rho * (W_next.T @ (U_next - b_next @ self.ones)) + gamma * torch.relu(U)
        return torch.inverse(A) @ rhs

    def update_preactivation(self, U_old, V, product):
        """Return the elementwise minimiser of 1/2 (relu(u) - v)^2 + g/2 (u - B)^2.

        The candidates are 0, u+ = (v + g B)/(1 + g) when it is nonnegative, and B when it
        is negative. A later candidate replaces an earlier one only at a lower cost, except
        that u+ also wins a tie with 0.
        """
        gamma, rho, alpha = self.hyper.gamma, self.hyper.rho, self.hyper.alpha
        B = (rho * product + alpha * U_old) / (rho + alpha)
        g = (rho + alpha) / gamma

        def cost(u):
            return 0.5 * (torch.relu(u) - V) ** 2 + 0.5 * g * (u - B) ** 2

        best = torch.zeros_like(B)
        best_cost = cost(best)

        positive_candidate = (V + g * B) / (1 + g)
        positive_cost = cost(positive_candidate)
        take = (positive_candidate >= 0) & (positive_cost <= best_cost)
        best = torch.where(take, positive_candidate, best)
        best_cost = torch.where(take, positive_cost, best_cost)

        negative_cost = cost(B)
        take = (B < 0) & (negative_cost < best_cost)
        return torch.where(take, B, best)


# ---------------------------------------------------------------------------
# Tuned implementation


class TunedBCD:
    """The iteration of ReferenceBCD with Cholesky solves, fewer products and in-place updates."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, hyper: Hyperparameters):
        self.targets = targets
        self.hyper = hyper
        # V_0 = X never changes, so the factor of layer 1's augmented Gram matrix is reused.
        self.input_gram_factor = self.augmented_gram_factor(inputs)

    def iterate(self, state: BcdState) -> None:
        gamma, rho, alpha = self.hyper.gamma, self.hyper.rho, self.hyper.alpha
        W, b, U, V = state.weights, state.biases, state.preactivations, state.activations
        N = state.num_layers

        V[N].mul_(alpha).add_(U[N], alpha=gamma).add_(self.targets).div_(1 + gamma + alpha)
        output = torch.addmm(b[N], W[N], V[N - 1], beta=rho, alpha=rho)
        U[N] = output.add_(V[N], alpha=gamma).div_(gamma + rho)
        self.update_weights_(state, N)

        for i in range(N - 1, 0, -1):
            V[i] = self.update_activation(U[i], U[i + 1], W[i + 1], b[i + 1])
            self.update_preactivation_(U[i], V[i], W[i], b[i], V[i - 1])
            self.update_weights_(state, i)

    def augmented_gram_factor(self, V_prev: torch.Tensor) -> torch.Tensor:
        """Return the Cholesky factor of H = alpha I + rho [V; 1^T][V; 1^T]^T."""
        m, n = V_prev.shape
        H = V_prev.new_empty(m + 1, m + 1)
        H[:m, :m] = V_prev @ V_prev.T
        row_sums = V_prev.sum(dim=1)
        H[:m, m] = row_sums
        H[m, :m] = row_sums
        H[m, m] = n
        H.mul_(self.hyper.rho).diagonal().add_(self.hyper.alpha)
        return torch.linalg.cholesky(H)

    def update_weights_(self, state: BcdState, i: int) -> None:
        """Replace (W_i, b_i) by the joint minimiser (alpha [W b] + rho U Vt^T) H^-1."""
        rho, alpha = self.hyper.rho, self.hyper.alpha
        U, V_prev = state.preactivations[i], state.activations[i - 1]
        factor = self.input_gram_factor if i == 1 else self.augmented_gram_factor(V_prev)

        d, m = state.weights[i].shape
        rhs = U.new_empty(d, m + 1)
        torch.mm(U, V_prev.T, out=rhs[:, :m])
        rhs[:, m] = U.sum(dim=1)
        rhs.mul_(rho)
        rhs[:, :m].add_(state.weights[i], alpha=alpha)
        rhs[:, m:].add_(state.biases[i], alpha=alpha)

        # H is symmetric, so [W b]^T = H^-1 rhs^T.
        solution = torch.cholesky_solve(rhs.T, factor)
        state.weights[i] = solution[:m].T.contiguous()
        state.biases[i] = solution[m:].T.contiguous()

    def update_activation(self, U, U_next, W_next, b_next) -> torch.Tensor:
        """Return V_i = (gamma I + rho W^T W)^-1 (rho W^T (U_next - b 1^T) + gamma relu(U_i))."""
        gamma, rho = self.hyper.gamma, self.hyper.rho
        width_next, width = W_next.shape

        if width_next < width:
            # Woodbury: V_i = relu(U_i) + W^T K with
            # K = (gamma I + rho W W^T)^-1 (rho (U_next - b 1^T) - rho W relu(U_i)),
            # which needs a width_next x width_next factor instead of a width x width one.
            activation = torch.relu(U)
            kernel_rhs = torch.addmm(U_next - b_next, W_next, activation, beta=rho, alpha=-rho)
            system = torch.mm(W_next, W_next.T).mul_(rho)
            system.diagonal().add_(gamma)
            kernel = torch.cholesky_solve(kernel_rhs, torch.linalg.cholesky(system))
            return activation.addmm_(W_next.T, kernel)

        system = torch.mm(W_next.T, W_next).mul_(rho)
        system.diagonal().add_(gamma)
        # W^T (U_next - b 1^T) = W^T U_next - (W^T b) 1^T avoids a d x n temporary.
        rhs = torch.relu(U).mul_(gamma)
        rhs.addmm_(W_next.T, U_next, alpha=rho)
        rhs.sub_(torch.mm(W_next.T, b_next).mul_(rho))
        # The smallest eigenvalue of the system is at least gamma, which bounds its condition
        # number by 1 + rho ||W||_2^2 / gamma and keeps the explicit inverse accurate.
        # In one measurement (torch 2.15.0 with MKL, 2-core AMD EPYC shared with other jobs),
        # cholesky_solve on a 1500 x 60000 right-hand side took 6.6 s of CPU time, while
        # cholesky_inverse followed by one product took 3.4 s.
        return torch.cholesky_inverse(torch.linalg.cholesky(system)) @ rhs

    def update_preactivation_(self, U, V, W, b, V_prev) -> None:
        """Overwrite U with the elementwise minimiser of 1/2 (relu(u) - v)^2 + g/2 (u - B)^2.

        On u >= 0 the minimiser is max((v + g B)/(1 + g), 0), and on u <= 0 it is min(B, 0).
        The smaller of the two costs wins, and ties go to the nonnegative candidate.
        """
        gamma, rho, alpha = self.hyper.gamma, self.hyper.rho, self.hyper.alpha
        g = (rho + alpha) / gamma
        # center starts as rho (W V_prev + b 1^T) and becomes B one block of rows at a time.
        center = torch.addmm(b, W, V_prev, beta=rho, alpha=rho)

        rows_per_block = max(1, ELEMENTWISE_BLOCK_ELEMENTS // U.shape[1])
        for start in range(0, U.shape[0], rows_per_block):
            rows = slice(start, start + rows_per_block)
            B = center[rows].add_(U[rows], alpha=alpha).div_(rho + alpha)
            v = V[rows]
            nonnegative = torch.add(v, B, alpha=g).div_(1 + g).clamp_min_(0)
            nonpositive = B.clamp_max(0)
            # Both costs are doubled, which leaves the comparison unchanged.
            nonnegative_cost = (nonnegative - v).square_().add_((nonnegative - B).square_(), alpha=g)
            nonpositive_cost = v.square().add_((nonpositive - B).square_(), alpha=g)
            torch.where(nonnegative_cost <= nonpositive_cost, nonnegative, nonpositive, out=U[rows])


VARIANTS = {"reference": ReferenceBCD, "tuned": TunedBCD}


# ---------------------------------------------------------------------------
# Evaluation


def objective(state: BcdState, targets: torch.Tensor, hyper: Hyperparameters) -> float:
    """Return Lbar, with every sum of squares accumulated in float64."""
    W, b, U, V = state.weights, state.biases, state.preactivations, state.activations
    N = state.num_layers

    def squared_norm(tensor: torch.Tensor) -> float:
        return tensor.square().sum(dtype=torch.float64).item()

    total = 0.5 * squared_norm(V[N] - targets)
    total += 0.5 * hyper.gamma * squared_norm(V[N] - U[N])
    for i in range(1, N):
        total += 0.5 * hyper.gamma * squared_norm(V[i] - torch.relu(U[i]))
    for i in range(1, N + 1):
        total += 0.5 * hyper.rho * squared_norm(torch.addmm(b[i], W[i], V[i - 1]).sub_(U[i]))
    return total


def train_accuracy(state: BcdState, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Return the accuracy of the plain forward pass relu(W V + b) with the current weights."""
    activation = inputs
    N = state.num_layers
    for i in range(1, N + 1):
        activation = torch.addmm(state.biases[i], state.weights[i], activation)
        if i < N:
            activation.relu_()
    return (activation.argmax(dim=0) == labels).double().mean().item()


# ---------------------------------------------------------------------------
# Command line


def parse_hidden_widths(text: str) -> list[int]:
    try:
        widths = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid widths {text!r}, expected comma-separated integers")
    if any(width < 1 for width in widths):
        raise argparse.ArgumentTypeError(f"invalid widths {text!r}, every width must be at least 1")
    return widths


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"invalid value {value}, expected a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), required=True,
                        help="implementation to run")

    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="folder with the gzip IDX MNIST files (default: %(default)s)")
    parser.add_argument("--train-limit", type=positive_int, default=None,
                        help="use only the first N training samples (default: all 60000)")
    parser.add_argument("--hidden", type=parse_hidden_widths, default=[1500, 1500, 1500],
                        help="comma-separated hidden layer widths (default: 1500,1500,1500)")
    parser.add_argument("--iterations", type=positive_int, default=3,
                        help="number of BCD iterations (default: %(default)s)")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="intra-op threads passed to torch.set_num_threads "
                             "(default: PyTorch's own choice)")

    parser.add_argument("--gamma", type=float, default=1.0,
                        help="weight of the V_i = relu(U_i) penalty (default: %(default)s)")
    parser.add_argument("--rho", type=float, default=1.0,
                        help="weight of the U_i = W_i V_{i-1} + b_i penalty (default: %(default)s)")
    parser.add_argument("--alpha", type=float, default=5.0,
                        help="proximal weight of the V_N, U_i and (W_i, b_i) updates (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weight initialisation (default: %(default)s)")

    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="floating-point type of all tensors (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per line, for the initial state (iteration 0, "
                             "update_seconds null) and after each iteration. update_seconds is "
                             "wall-clock time and update_cpu_seconds the process CPU time of "
                             "the update, summed over threads")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.gamma <= 0 or args.rho <= 0 or args.alpha <= 0:
        print(f"error: --gamma, --rho and --alpha must be positive, got "
              f"{args.gamma}, {args.rho}, {args.alpha}", file=sys.stderr)
        return 2
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)

    try:
        data = load_mnist_training_set(args.data_dir, args.train_limit, dtype)
    except FileNotFoundError as error:
        print(f"error: MNIST file not found: {error.filename}. Pass the folder that contains "
              f"train-images-idx3-ubyte.gz and train-labels-idx1-ubyte.gz as --data-dir.", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    widths = [data.inputs.shape[0], *args.hidden, NUM_CLASSES]
    hyper = Hyperparameters(gamma=args.gamma, rho=args.rho, alpha=args.alpha)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, variant {args.variant}, "
          f"{args.dtype}, widths {widths}, {data.inputs.shape[1]} samples", file=sys.stderr)

    state = initialize_state(data.inputs, widths, args.seed)
    # TunedBCD factors X's Gram matrix here, once per run, outside the timed iterations.
    solver = VARIANTS[args.variant](data.inputs, data.targets, hyper)

    def report(iteration: int, seconds: float | None, cpu_seconds: float | None) -> None:
        accuracy = train_accuracy(state, data.inputs, data.labels)
        value = objective(state, data.targets, hyper)
        if args.json:
            print(json.dumps({"iteration": iteration, "update_seconds": seconds,
                              "update_cpu_seconds": cpu_seconds, "train_accuracy": accuracy,
                              "objective": value}), flush=True)
        elif seconds is None:
            print(f"iteration {iteration}: train accuracy {accuracy:.4f}, objective {value:.6e}", flush=True)
        else:
            print(f"iteration {iteration}: update {seconds:.3f} s ({cpu_seconds:.3f} s CPU), "
                  f"train accuracy {accuracy:.4f}, objective {value:.6e}", flush=True)

    report(0, None, None)
    update_seconds = []
    for iteration in range(1, args.iterations + 1):
        start = time.perf_counter()
        start_cpu = time.process_time()
        solver.iterate(state)
        update_seconds.append(time.perf_counter() - start)
        report(iteration, update_seconds[-1], time.process_time() - start_cpu)

    # Iteration 1 also pays for first-touch page faults in newly allocated buffers.
    steady = update_seconds[1:] or update_seconds
    first = 2 if len(update_seconds) > 1 else 1
    # The minimum is the least disturbed by other processes on a shared machine.
    print(f"update seconds over iterations {first}-{len(update_seconds)}: "
          f"mean {sum(steady) / len(steady):.3f}, min {min(steady):.3f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
