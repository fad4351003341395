#!/usr/bin/env bash
# Issue 11's GPU checks as one prepared script for a lent device machine (the `device` tool's `run`, from the
# repository root): bf16 sampling of SmolLM2-135M's shape (and 5m) by datawall's sampler against transformers'
# generate(), 64 prompts x 1 and 1 prompt x 64; then training throughput and MFU at 25m (bf16 autocast) against
# the card's bf16 matmul rate measured in the same run (and the datasheet peak). Budget: a few minutes.
#
#   run(command="bash benchmarks/gpu_check.sh", timeout_s=480)      -> $OUT/gpu.txt, sample.txt, train.txt
#
# What these two benchmarks import beyond the standard library is torch, transformers (and its own imports),
# numpy, tokenizers and safetensors, which the device image holds (its KINDS.md): the repository root on
# PYTHONPATH is all datawall needs there, no install. vLLM is not measured: it is not in the image, nothing can
# be fetched there, and its wheel is far over the 64 MiB a call may carry.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${OUT:-/tmp/gpu-check}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee -a "$out/gpu.txt"
python3 benchmarks/sample_throughput.py --device cuda --dtype bf16 --presets smollm2,5m --repeats 3 --threads 8 \
  2>&1 | tee "$out/sample.txt"
python3 benchmarks/train_throughput.py --device cuda --dtype bf16 --sizes 25m --batch 64 --seq-len 512 --steps 30 \
  --vocab 49152 --threads 8 2>&1 | tee "$out/train.txt"
