#!/usr/bin/env bash
# The checks that need a GPU, for a machine with one NVIDIA GPU and this repository's requirements installed
# (bash scripts/setup.sh --dev). About 5 minutes on an H100-class GPU:
#   1. parity with the official code's case A on CUDA in fp32, and bf16 autocast against fp32 (tests/test_gpu.py);
#   2. frames per second of the released model's size for 1 and 3 expressions, fp32 and bf16;
#   3. the Space under the ZeroGPU emulation with the real GPU: the main process without CUDA
#      (CUDA_VISIBLE_DEVICES=""), the device API handing out the GPU's UUID (tests/test_zerogpu.py), and the
#      GPU-held seconds of a run against the former call boundary (benchmarks/zerogpu.py held).
# Figures go to $OUT (or /tmp/gpu_check) as JSON and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-/tmp/gpu_check}"
mkdir -p "$out"
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')"
nvidia-smi -L | tee "$out/gpu.txt"

python -m pytest -q -s -m gpu tests/test_gpu.py 2>&1 | tee "$out/gpu_tests.log"
python benchmarks/gpu_speed.py --json "$out/gpu_speed.json" 2>&1 | tee "$out/gpu_speed.log"
uuid="$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -n 1)"
ZEROGPU_GPU_UUID="$uuid" python -m pytest -q tests/test_zerogpu.py 2>&1 | tee "$out/zerogpu_real_gpu.log"
# GPU-held seconds per run, the app against the former call boundary, with the tiny model's size.
ZEROGPU_GPU_UUID="$uuid" python benchmarks/zerogpu.py held --model tiny --frames 24 --runs 2 \
    --json "$out/zerogpu_held.json" 2>&1 | tee "$out/zerogpu_held.log"
echo "gpu_check: done; results in $out"
