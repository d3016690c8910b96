#!/usr/bin/env bash
# The GPU measurements of the benchmarks, in one go: under 10 minutes on one H100-class GPU (each section is cut
# at its time limit, so the whole is bounded at 8.5 minutes plus start-up).
#
#     bash benchmarks/gpu.sh                    # PYTHON=.venv/bin/python bash benchmarks/gpu.sh to pick the interpreter
#
# 1. the device (nvidia-smi, torch.cuda.get_device_name);
# 2. SupCon loss forward+backward at batch 8192 x 2 views (N = 16,384), peak extra GPU memory;
# 3. ResNet-50 (ImageNet stem), 224 px, batch 128 x 2 views: bf16-mixed + channels_last against plain fp32;
# 4. ResNet-18 (CIFAR stem), 32 px, batch 256 x 2 views: the reference pipeline, lightning_supcon with the Trainer
#    and without it (the Trainer's overhead);
# 5. ResNet-18 (CIFAR stem), 32 px, batch 256 x 2 views: gradient caching (micro_batch 32) against the plain step,
#    peak GPU memory above model and data and time per step.
# A section that fails or runs past its limit is reported and the next one runs; the exit status is then 1.
# Without a CUDA device it prints "no CUDA device: skipped" and exits 0.
set -euo pipefail
PYTHON=${PYTHON:-python}
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the package, when it is not installed

cuda=$("$PYTHON" -c 'import torch; print(int(torch.cuda.is_available()))')
if [[ "$cuda" != 1 ]]; then
    echo "no CUDA device: skipped"
    exit 0
fi

status=0
section() {  # section TITLE LIMIT_S COMMAND...: run COMMAND, cut at LIMIT_S seconds; a failure is reported
    local title=$1 limit=$2
    shift 2
    echo
    echo "## $title"
    echo "\$ $*"
    local start=$SECONDS rc=0
    timeout --kill-after=10 "$limit" "$@" || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "FAILED (exit $rc; 124: ran past ${limit} s): $title"
        status=1
    fi
    echo "($((SECONDS - start)) s)"
}

echo "## Device"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
"$PYTHON" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__, "| CUDA", torch.version.cuda)'

section "SupCon loss, batch 8192 x 2 views" 120 \
    "$PYTHON" benchmarks/loss.py --batch 8192 --runs 5 --device cuda

section "ResNet-50, 224 px: bf16-mixed + channels_last vs plain fp32" 150 \
    "$PYTHON" benchmarks/options.py --device cuda --encoder resnet50 --stem imagenet --image-size 224 \
    --batch 128 --num-workers 8 --threads 8 --warmup 5 --steps 5 --windows 5 \
    --variants plain,channels_last+bf16 --timeout 70

section "ResNet-18, 32 px: reference pipeline vs lightning_supcon (Trainer overhead)" 150 \
    "$PYTHON" benchmarks/throughput.py --device cuda --num-workers 8 --threads 8 --num-images 8192 \
    --warmup 5 --steps 10 --windows 5 --timeout 45

section "ResNet-18, 32 px, batch 256 x 2 views: micro_batch 32 vs the plain step" 90 \
    "$PYTHON" benchmarks/gradient_cache.py --device cuda --threads 8 --steps 5 --timeout 40

exit "$status"
