#!/usr/bin/env bash
# GPU readiness check: one script for a session with a lent GPU (an H200), run from the
# repository root, done in under 8 minutes. Each part runs under its own time budget
# (`timeout`) and a whole-script deadline; a part that fails or runs out of time is recorded
# and the next one runs.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh # CPU smoke test: tiny sizes, fp32, seconds
#   bash benchmarks/gpu_check.sh --cpu-smoke     # the same
#
# Parts:
#   env         the GPU, torch and CUDA versions;
#   wheels      prefect, dask, zarr (not in the GPU image) from wheels/ if present
#               (benchmarks/gpu_wheels.sh builds it here; carry it along), installed with
#               pip --no-index into a temporary --target folder put on PYTHONPATH;
#   throughput  python3 -m benchmarks.ride_throughput at MNIST, ImageNet and CIFAR sizes in
#               fp32, tf32 and bf16 over batch sizes, at the paper's K x T = 2000 x 5
#               (extrapolated from the steps measured);
#   compile     the MNIST size again with torch.compile and CUDA graphs (reduce-overhead)
#               at the best batch: does compiling pay?
#   cuda-tests  the tests that are skipped without CUDA (`skipif(not torch.cuda.is_available()`
#               or `mark.cuda`), if any;
#   ride-run    a short `ride run --device cuda` (the digits demo, reduced) when the wheels
#               installed.
#
# Output: everything printed goes to $OUT/gpu_check.log as well ($OUT: the device tool's
# folder that comes back; else runs/gpu-check), the throughput JSON lines to
# $OUT/throughput.jsonl, and the last line printed is one summary JSON line (also
# $OUT/summary.json). Exit status 0 when every part that ran passed.
set -euo pipefail

cd "$(dirname "$0")/.."
DRY=${GPU_CHECK_DRY:-0}
if [[ ${1:-} == --cpu-smoke ]]; then
  DRY=1
elif [[ $# -gt 0 ]]; then
  echo "usage: bash benchmarks/gpu_check.sh [--cpu-smoke]" >&2
  exit 2
fi
PY=${PYTHON:-python3}
DEADLINE_S=${GPU_CHECK_DEADLINE_S:-$([[ $DRY == 1 ]] && echo 900 || echo 450)}
DEST=${OUT:-runs/gpu-check}
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
SITE="$WORK/site"
trap 'rm -rf "$WORK"' EXIT
export PYTHONUNBUFFERED=1 PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
# Scratch and compile caches inside the work folder, which goes at the end.
export DASK_TEMPORARY_DIRECTORY="$WORK/dask" TORCHINDUCTOR_CACHE_DIR="$WORK/inductor"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
: >"$DEST/throughput.jsonl"
: >"$WORK/parts.jsonl"
exec > >(tee "$DEST/gpu_check.log") 2>&1
STARTED=$SECONDS

if [[ $DRY == 1 ]]; then
  MODE=cpu-smoke DEVICE=cpu PRECISIONS=(fp32) SIZES=(mnist cifar)
  COMMON=(--steps 2 --reference-images 1 --processes 0 --batch 1 2)
else
  MODE=gpu DEVICE=cuda PRECISIONS=(fp32 tf32 bf16) SIZES=(mnist imagenet cifar)
  COMMON=(--steps 30 --reference-images 1 --processes 0)
fi
declare -A BATCHES=([mnist]="64 256 1024 4096" [cifar]="64 256 1024 4096" [imagenet]="4 16 64")
declare -A BUDGET=([mnist]=75 [cifar]=60 [imagenet]=120)

# run_part NAME BUDGET_S COMMAND...: run COMMAND under `timeout` (the smaller of BUDGET_S
# and what is left before the deadline), print and keep its output in $WORK/NAME.out, and
# record the part's status (ok, failed (exit N), timeout, skipped) and seconds.
run_part() {
  local name=$1 budget=$2
  shift 2
  local left=$((DEADLINE_S - (SECONDS - STARTED)))
  ((budget > left)) && budget=$left
  if ((budget < 5)); then
    record "$name" skipped 0 "no time left before the ${DEADLINE_S} s deadline"
    return 0
  fi
  echo "== $name (at most ${budget} s): $*"
  local began=$SECONDS rc=0
  timeout --kill-after=10 "$budget" "$@" 2>&1 | tee "$WORK/$name.out" || rc=${PIPESTATUS[0]}
  local status=ok
  if ((rc == 124 || rc == 137)); then
    status=timeout
  elif ((rc != 0)); then
    status="failed (exit $rc)"
  fi
  record "$name" "$status" $((SECONDS - began)) ""
}

record() { # NAME STATUS SECONDS NOTE
  printf '{"part": "%s", "status": "%s", "seconds": %s, "note": "%s"}\n' "$@" \
    >>"$WORK/parts.jsonl"
  echo "-- $1: $2${4:+ ($4)}"
}

# keep_json NAME: append the last line of part NAME's output to throughput.jsonl if it is
# the benchmark's JSON summary.
keep_json() {
  local last
  last=$(tail -n 1 "$WORK/$1.out" 2>/dev/null || true)
  if [[ $last == "{"* ]]; then echo "$last" >>"$DEST/throughput.jsonl"; fi
}

run_part env 30 "$PY" -c "
import platform, torch
print('python', platform.python_version(), 'torch', torch.__version__, 'cuda', torch.version.cuda)
print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA device')
"
if [[ $DEVICE == cuda ]]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "error: python3's torch sees no CUDA device; use --cpu-smoke on a CPU machine" >&2
    exit 1
  }
fi

HAVE_PIPELINE=0
if [[ $DRY == 1 ]]; then
  record wheels skipped 0 "dry mode: the current python's packages"
elif [[ -d wheels ]] && compgen -G "wheels/*.whl" >/dev/null; then
  run_part wheels 90 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --target "$SITE" wheels/*.whl
  export PYTHONPATH="$SITE:$PYTHONPATH"
else
  record wheels skipped 0 "no wheels/ folder: run benchmarks/gpu_wheels.sh and carry wheels"
fi
if "$PY" -c "import prefect, prefect_dask, distributed, zarr" 2>/dev/null; then
  HAVE_PIPELINE=1
fi

for size in "${SIZES[@]}"; do
  if [[ $DRY == 1 ]]; then batches=(); else read -ra batches <<<"${BATCHES[$size]}"; fi
  run_part "throughput-$size" "${BUDGET[$size]}" "$PY" -m benchmarks.ride_throughput \
    --size "$size" --device "$DEVICE" --precision "${PRECISIONS[@]}" "${COMMON[@]}" \
    ${batches[@]+--batch "${batches[@]}"}
  keep_json "throughput-$size"
done

# torch.compile at the MNIST size and its best batch (fp32 and bf16 on the GPU).
best_mnist=$(tail -n 1 "$WORK/throughput-mnist.out" 2>/dev/null |
  "$PY" -c "import json, sys; print(json.loads(sys.stdin.read())['batch'])" 2>/dev/null ||
  echo 1)
if [[ $DRY == 1 ]]; then
  record compile skipped 0 "dry mode: compiling takes minutes on a CPU"
else
  run_part compile 90 "$PY" -m benchmarks.ride_throughput --size mnist --device cuda \
    --precision fp32 bf16 --compile reduce-overhead --batch "$best_mnist" "${COMMON[@]}"
  keep_json compile
fi

# The tests that run only where CUDA is (skipped on CPU machines, so CI never runs them).
mapfile -t cuda_tests < <(grep -rlE "skipif\(not torch\.cuda\.is_available|mark\.cuda" tests || true)
if ((${#cuda_tests[@]} > 0)) && [[ $DRY != 1 ]]; then
  run_part cuda-tests 60 "$PY" -m pytest "${cuda_tests[@]}" -q -p no:cacheprovider
elif ((${#cuda_tests[@]} > 0)); then
  record cuda-tests skipped 0 "dry mode: ${#cuda_tests[@]} files need CUDA"
else
  record cuda-tests skipped 0 "no CUDA-only tests in tests/"
fi

if ((HAVE_PIPELINE == 1)); then
  if [[ $DRY == 1 ]]; then
    small=(--limit 4 --ride-iters 2 --workers 1 --attack none --defender none --defender ride)
  else
    small=(--limit 40 --workers 2)
  fi
  run_part ride-run "$([[ $DRY == 1 ]] && echo 300 || echo 150)" "$PY" -m flows.cli run --device "$DEVICE" --out "$WORK/run" "${small[@]}"
else
  record ride-run skipped 0 "prefect, prefect-dask, distributed or zarr cannot be imported"
fi

summarize=("$PY" - "$WORK/parts.jsonl" "$DEST/throughput.jsonl" "$MODE" $((SECONDS - STARTED)))
"${summarize[@]}" <<'EOF' | tee "$DEST/summary.json"
"""The summary line: every part's status, the best batch per size and precision, the goals."""
import json
import sys

parts_file, throughput_file, mode, seconds = sys.argv[1:]
parts = {}
for line in open(parts_file):
    row = json.loads(line)
    parts[row.pop("part")] = row
throughput: dict = {}
for line in open(throughput_file):
    run = json.loads(line)
    key = run["size"] if run.get("compile", "off") == "off" else f"{run['size']}-compiled"
    for row in run["rows"]:
        best = throughput.setdefault(key, {}).get(row["precision"])
        if best is None or row["images_per_s"] > best["images_per_s"]:
            throughput[key][row["precision"]] = {
                "batch": row["batch"],
                "images_per_s": round(row["images_per_s"], 4),
                "seconds_per_image_paper_settings": round(
                    row["seconds_per_image_paper_settings"], 4
                ),
            }


def best(size: str, field: str, pick) -> float | None:
    values = [r[field] for r in throughput.get(size, {}).values()]
    return pick(values) if values else None


imagenet_s = best("imagenet", "seconds_per_image_paper_settings", min)
mnist_rate = best("mnist", "images_per_s", max)
summary = {
    "gpu_check": mode,
    "seconds": int(seconds),
    "parts": parts,
    "throughput": throughput,
    "goals": {
        "imagenet_seconds_per_image": imagenet_s,
        "imagenet_at_most_2_s": None if imagenet_s is None else imagenet_s <= 2,
        "mnist_images_per_s": mnist_rate,
        "mnist_at_least_100_per_s": None if mnist_rate is None else mnist_rate >= 100,
    },
    "all_ok": all(p["status"] in ("ok", "skipped") for p in parts.values()),
}
print(json.dumps(summary))
sys.exit(0 if summary["all_ok"] else 1)
EOF
