#!/usr/bin/env bash
# Makes every run of docs/results/cifar10.md and rewrites the page: each preset
# configs/cifar10-*.toml into runs/<preset> with the published ResNet-56 of the shared data
# (nothing is trained: the shared CIFAR-10 has no training split), then `ride report` on each
# run and `python -m analysis.results_page --dataset cifar10 --keep docs/results/data`, which
# keeps each run's compacted results under docs/results/data/<preset>/ (committed) and writes
# the page from those copies.
# Every step resumes: rerun the script after an interruption. Pass preset names to make
# only those (e.g. `bash docs/results/cifar10.sh cifar10-graybox-eps8`); the page is rewritten
# from whatever runs exist. RIDE=... and DATA=... override the command and the data. The RIDE
# runs grow: LIMIT=128 bash docs/results/cifar10.sh cifar10-ride-graybox adds images to the
# run (its finished tasks are kept; pipeline/growth.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
RIDE=${RIDE:-ride}
PYTHON=${PYTHON:-python}
DATA=${DATA:-../shared/data/cifar10}
WEIGHTS=${WEIGHTS:-$DATA/weights/resnet56-4bfd9763.th}
PRESETS=("$@")
if [ ${#PRESETS[@]} -eq 0 ]; then
  PRESETS=(cifar10-graybox-eps0.05 cifar10-graybox-eps8 cifar10-ride-graybox
           cifar10-bpda-k2000 cifar10-strong-k500)
fi

# The limit a run folder holds (a grown run is resumed at it, never shrunk to the preset's).
recorded_limit() {
  [ -f "runs/$1/run.toml" ] || return 0
  "$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["config"].get("limit", ""))' \
    "runs/$1/run.toml"
}

machine() {
  local cpu gpu
  cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  echo "${cpu:-unknown CPU}, $(nproc) cores${gpu:+, GPU $gpu}"
}

for preset in "${PRESETS[@]}"; do
  if [ ! -e "runs/$preset" ] && [ -f "docs/results/data/$preset/run.toml" ]; then
    # a machine without the run folder: grow the kept run instead of starting over
    "$PYTHON" -m storage.kept restore "docs/results/data/$preset" "runs/$preset"
  fi
  limit=${LIMIT:-$(recorded_limit "$preset")}
  LIMIT_OPTION=()
  if [ -n "$limit" ]; then
    LIMIT_OPTION=(--limit "$limit")
  fi
  mkdir -p "runs/$preset"
  machine > "runs/$preset/machine.txt"
  "$RIDE" run --config "configs/$preset.toml" --data-dir "$DATA" --weights "$WEIGHTS" \
    --out "runs/$preset" "${LIMIT_OPTION[@]}"
  "$RIDE" report "runs/$preset" > /dev/null
done
"$PYTHON" -m analysis.results_page --dataset cifar10 --runs runs --keep docs/results/data
