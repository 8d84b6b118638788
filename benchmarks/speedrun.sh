#!/usr/bin/env bash
# Runs on an otherwise idle machine, one after another.
set -u
cd "$(dirname "$0")/.."
export MNIST_OPS_DATA=${MNIST_OPS_DATA:-$HOME/.cache/mnist-ops}
B=${VENV:-.venv}/bin
echo "== bench lean-8k"; $B/mnist-ops bench --preset lean-8k --json docs/benchmarks/bench-lean-8k.json
echo "== time to accuracy lean-8k"; $B/python benchmarks/time_to_accuracy.py --preset lean-8k
echo "== levers lean-8k"; $B/python benchmarks/levers.py --model lean-8k --steps 40 --repeats 5 --json docs/benchmarks/levers-lean-8k.json
echo "== levers seed-regularized"; $B/python benchmarks/levers.py --model seed-regularized --steps 8 --repeats 3 --json docs/benchmarks/levers-seed-regularized.json
echo "== bench seed-regularized bf16"; $B/mnist-ops bench --preset seed-regularized --precision bf16 --batches 20 --json docs/benchmarks/bench-seed-regularized.json
