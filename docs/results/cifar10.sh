#!/usr/bin/env bash
# Makes every run of docs/results/cifar10.md and rewrites the page: each preset
# configs/cifar10-*.toml into runs/<preset> with the published ResNet-56 of the shared data
# (nothing is trained: the shared CIFAR-10 has no training split), then `ride report` on each
# run and `python -m analysis.results_page --dataset cifar10`.
# Every step resumes: rerun the script after an interruption. Pass preset names to make
# only those (e.g. `bash docs/results/cifar10.sh cifar10-graybox-eps8`); the page is rewritten
# from whatever runs exist. RIDE=... and DATA=... override the command and the data.
set -euo pipefail
cd "$(dirname "$0")/../.."
RIDE=${RIDE:-ride}
PYTHON=${PYTHON:-python}
DATA=${DATA:-../shared/data/cifar10}
WEIGHTS=${WEIGHTS:-$DATA/weights/resnet56-4bfd9763.th}
PRESETS=("$@")
if [ ${#PRESETS[@]} -eq 0 ]; then
  PRESETS=(cifar10-graybox-eps0.05 cifar10-graybox-eps8)
fi

machine() {
  local cpu gpu
  cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  echo "${cpu:-unknown CPU}, $(nproc) cores${gpu:+, GPU $gpu}"
}

for preset in "${PRESETS[@]}"; do
  mkdir -p "runs/$preset"
  machine > "runs/$preset/machine.txt"
  "$RIDE" run --config "configs/$preset.toml" --data-dir "$DATA" --weights "$WEIGHTS" \
    --out "runs/$preset"
  "$RIDE" report "runs/$preset" > /dev/null
done
"$PYTHON" -m analysis.results_page --dataset cifar10 --runs runs
