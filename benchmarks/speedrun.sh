#!/usr/bin/env bash
# Every speed number in docs/speed.md. Run it on an otherwise idle machine: the steps run one
# after another, since two training processes on 2 cores slow each other down.
#   VENV=.venv bash benchmarks/speedrun.sh
# The JSON files and the log go into a new directory, docs/benchmarks/<date>-<commit>/: results
# files are never overwritten, since docs cite them.
set -u
cd "$(dirname "$0")/.."
export MNIST_OPS_DATA=${MNIST_OPS_DATA:-$HOME/.cache/mnist-ops}
B=${VENV:-.venv}/bin
J=${OUT:-docs/benchmarks/$(date -u '+%Y%m%d-%H%M')-$(git describe --always --dirty)}
mkdir "$J" || exit 1
exec > >(tee "$J/speedrun.log") 2>&1
echo "== $(date -u '+%Y-%m-%d %H:%M') code $(git describe --always --dirty), $(nproc) cores, into $J"
echo "== bench lean-8k"; $B/mnist-ops bench --preset lean-8k --ema 0 --json $J/bench-lean-8k.json  # as measured, before the preset's EMA
echo "== bench lean-8k-fast"; $B/mnist-ops bench --preset lean-8k-fast --json $J/bench-lean-8k-fast.json
echo "== time to 99.4%: lean-8k-fast, 5 seeds"; $B/python benchmarks/time_to_accuracy.py --preset lean-8k-fast --seeds 1 2 3 4 5
echo "== time to 99.4%: lean-8k-fast recipe, per-sample pipeline"; $B/python benchmarks/time_to_accuracy.py --preset lean-8k-fast --pipeline per-sample
echo "== time to 99.4%: lean-8k (the 15-epoch challenge recipe)"; $B/python benchmarks/time_to_accuracy.py --preset lean-8k -- --ema 0  # as measured, before the preset's EMA
echo "== levers lean-8k"; $B/python benchmarks/levers.py --model lean-8k --dropout 0 --steps 40 --repeats 5 --json $J/levers-lean-8k.json
echo "== levers seed-regularized"; $B/python benchmarks/levers.py --model seed-regularized --dropout 0.05 --steps 8 --repeats 3 --json $J/levers-seed-regularized.json
echo "== bench seed-regularized bf16 channels_last"; $B/mnist-ops bench --preset seed-regularized --precision bf16 --channels-last --batches 20 --json $J/bench-seed-regularized.json
echo "== bench seed-regularized bf16 channels_last fast dropout"; $B/mnist-ops bench --preset seed-regularized --precision bf16 --channels-last --fast-dropout --batches 20 --json $J/bench-seed-regularized-fast-dropout.json
