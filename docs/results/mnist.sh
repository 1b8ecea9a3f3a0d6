#!/usr/bin/env bash
# Makes every run of docs/results/mnist.md and rewrites the page: the classifier
# (ride train), then each preset configs/mnist-*.toml into runs/<preset>, then
# `ride report` on each run (its figures) and `python -m analysis.results_page`, which keeps
# each run's compacted results under docs/results/data/ (committed) and writes the page from them.
# Every step resumes: rerun the script after an interruption. Pass preset names to make
# only those (e.g. `bash docs/results/mnist.sh mnist-bpda-k2000`); the page is rewritten
# from whatever runs exist. RIDE=... and DATA=... override the command and the data.
set -euo pipefail
cd "$(dirname "$0")/../.."
RIDE=${RIDE:-ride}
PYTHON=${PYTHON:-python}
DATA=${DATA:-../shared/data/mnist}
PRESETS=("$@")
if [ ${#PRESETS[@]} -eq 0 ]; then
  PRESETS=(mnist-graybox-eps0.1 mnist-graybox-eps0.3 mnist-ride-graybox mnist-bpda-k2000
           mnist-strong-k500 mnist-convergence-k500)
fi

machine() {
  local cpu gpu
  cpu=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
  echo "${cpu:-unknown CPU}, $(nproc) cores${gpu:+, GPU $gpu}"
}

if [ ! -f runs/mnist-cnn/classifier.pt ]; then
  mkdir -p runs/mnist-cnn
  machine > runs/mnist-cnn/machine.txt
  "$RIDE" train --dataset mnist --data-dir "$DATA" --out runs/mnist-cnn
fi
for preset in "${PRESETS[@]}"; do
  if [ ! -e "runs/$preset" ] && [ -f "docs/results/data/$preset/run.toml" ]; then
    # a machine without the run folder: grow the kept run instead of starting over
    "$PYTHON" -m storage.kept restore "docs/results/data/$preset" "runs/$preset"
  fi
  mkdir -p "runs/$preset"
  machine > "runs/$preset/machine.txt"
  "$RIDE" run --config "configs/$preset.toml" --data-dir "$DATA" \
    --weights runs/mnist-cnn/classifier.pt --out "runs/$preset"
  "$RIDE" report "runs/$preset" > /dev/null
done
"$PYTHON" -m analysis.results_page --runs runs --out docs/results/mnist.md --keep docs/results/data
