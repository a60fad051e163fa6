#!/usr/bin/env bash
# Trains the paper's 10-hidden-layer network 784-(600 x 10)-10 (gamma = rho = alpha = 1,
# squared loss, three-splitting BCD) once per hidden activation on an MNIST subset, writes one
# record per activation and a figure overlaying them, and prints each run's summary.
#
# Usage: tools/activation_sweep.sh [OUT_DIR] [ITERATIONS] [TRAIN_SAMPLES] [TEST_SAMPLES]
# Defaults: results/activation-sweep, 50 iterations, 10000 training and 2000 test samples.
set -euo pipefail

out=${1:-results/activation-sweep}
iterations=${2:-50}
train=${3:-10000}
test=${4:-2000}

cd "$(dirname "$0")/.."
cargo build --release -p bcdnn-cli
bcdnn=target/release/bcdnn
mkdir -p "$out"

records=()
for activation in relu leaky-relu:0.01 sigmoid tanh softplus linear; do
    name=${activation%%:*}
    record="$out/$name.jsonl"
    echo "== $activation"
    "$bcdnn" train --preset paper-deep --activation "$activation" --epochs "$iterations" \
        --train-limit "$train" --test-limit "$test" --eval-every 5 --label "$name" \
        --record "$record" --overwrite --quiet
    records+=("$record")
done
"$bcdnn" plot "${records[@]}" -o "$out/activations.svg"
"$bcdnn" plot "${records[@]}" -o "$out/activations.png"
