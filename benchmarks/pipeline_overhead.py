"""What the pipeline costs over the work itself: a plain loop against ``ride run``.

Both do the same work in this one invocation, on the first N images of the real MNIST test
split, with the same classifier: the gray-box attacks none / FGSM / PGD (eps 0.1) and the
defenders none / median / TV-Bregman, then a classification of every defended image.

- ``plain loop`` (the baseline): ``ride.attacks`` and ``ride.defenders`` called directly on
  the whole set in batches, in this process, with as many torch threads as ``--workers``;
- ``ride run``: the real command line on a local Dask cluster of ``--workers`` processes, a
  fresh run directory, no cache, its own temporary Prefect server (started and stopped inside
  the timing: a user pays for it too), with ``--chunk-size`` when given, else its default.

The two must agree on every accuracy (each is printed); the ratio of their wall times is the
pipeline's overhead. Prints a table, then one JSON line.

    python -m benchmarks.pipeline_overhead --sizes 2000 10000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.config import RunConfig
from ride.classifiers import load_classifier, predict, save_classifier
from ride.datasets import load_dataset
from ride.seeding import derive_seed, generator_for
from ride.training import TrainConfig, train_classifier
from storage.results import read_results

REPO = Path(__file__).resolve().parents[1]
MNIST = REPO.parent / "shared" / "data" / "mnist"
ATTACKS = ("none", "fgsm", "pgd")
DEFENDERS = ("none", "median", "tv-bregman")
BATCH = 500


def run_settings(n: int) -> dict[str, Any]:
    return {"dataset": "mnist", "limit": n, "attacks": ATTACKS, "defenders": DEFENDERS}


def classifier(work: Path, data_dir: Path, weights: Path | None) -> Path:
    """``weights``, or an MNIST CNN trained for one epoch here (once per ``work`` folder):
    the overhead does not depend on how good it is."""
    if weights is not None:
        return weights
    path = work / "mnist-cnn-1epoch.pt"
    if not path.exists():
        train = load_dataset("mnist", "train", seed=0, data_dir=data_dir)
        from ride.classifiers import build_classifier

        model = build_classifier("mnist-cnn", num_classes=10, seed=0)
        model = train_classifier(model, train, TrainConfig(seed=0, epochs=1))
        save_classifier(model, path, "mnist-cnn")
    return path


def plain_loop(
    n: int, data_dir: Path, weights: Path, threads: int
) -> tuple[float, dict[str, float]]:
    """Wall time and accuracy per (attack, defender) of the work done directly."""
    torch.set_num_threads(threads)
    began = time.perf_counter()
    cfg = RunConfig.from_mapping(run_settings(n))
    data = load_dataset("mnist", "test", seed=0, data_dir=data_dir, limit=n)
    model = load_classifier(weights, "mnist-cnn")
    correct: dict[str, int] = {}
    for attack in cfg.attack_configs():
        for start in range(0, n, BATCH):
            x = data.images[start : start + BATCH]  # (B, 1, 28, 28)
            y = data.labels[start : start + BATCH]
            g = generator_for(derive_seed(0, "mnist", start, attack.id), torch.device("cpu"))
            adv = attack.perturb(model, x, y, generator=g).detach()
            for defender in cfg.defender_configs():
                seeds = [derive_seed(0, start + i) for i in range(len(x))]
                defended = defender(adv, seeds)
                hits = int((predict(model, defended) == y).sum())
                key = f"{attack.id} x {defender.id}"
                correct[key] = correct.get(key, 0) + hits
    seconds = time.perf_counter() - began
    return seconds, {key: hits / n for key, hits in correct.items()}


def pipeline_run(
    n: int, data_dir: Path, weights: Path, workers: int, chunk_size: int | None, out: Path
) -> tuple[float, dict[str, float], int]:
    """Wall time, accuracy per (attack, defender) and number of result files of ``ride run``."""
    args = [
        sys.executable, "-m", "flows.cli", "run", "--out", str(out), "--dataset", "mnist",
        "--data-dir", str(data_dir), "--limit", str(n), "--weights", str(weights),
        "--workers", str(workers), "--no-cache",
        *[a for name in ATTACKS for a in ("--attack", name)],
        *[a for name in DEFENDERS for a in ("--defender", name)],
        *(["--chunk-size", str(chunk_size)] if chunk_size else []),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    began = time.perf_counter()
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        sys.exit(f"ride run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    frame = read_results(out / "results")
    accuracy = frame.groupby(["attack_id", "defender_id"])["correct_defended"].mean()
    files = sum(1 for _ in (out / "results").rglob("*.parquet"))
    return seconds, {f"{a} x {d}": float(v) for (a, d), v in accuracy.items()}, files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    parser.add_argument("--data-dir", type=Path, default=MNIST)
    parser.add_argument("--weights", type=Path, default=None, help="an mnist-cnn classifier.pt")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--chunk-size", type=int, default=None, help="(default: ride run's)")
    parser.add_argument("--work", type=Path, default=None, help="folder for runs (temporary)")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="ride-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    weights = classifier(work, args.data_dir, args.weights)
    rows = []
    for n in args.sizes:
        plain, plain_acc = plain_loop(n, args.data_dir, weights, args.workers)
        out = work / f"run-{n}"
        shutil.rmtree(out, ignore_errors=True)
        piped, piped_acc, files = pipeline_run(
            n, args.data_dir, weights, args.workers, args.chunk_size, out
        )
        shutil.rmtree(out, ignore_errors=True)
        mismatched = sorted(k for k in plain_acc if abs(plain_acc[k] - piped_acc.get(k, -1)) > 0)
        rows.append(
            {
                "images": n,
                "plain_s": round(plain, 2),
                "ride_run_s": round(piped, 2),
                "ratio": round(piped / plain, 2),
                "result_files": files,
                "same_accuracies": not mismatched,
                "accuracy": plain_acc,
            }
        )
        print(f"{n} images: accuracy per attack x defender (plain loop | ride run)")
        for key in plain_acc:
            print(f"  {key:42s} {plain_acc[key]:.4f} | {piped_acc.get(key, float('nan')):.4f}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print("| images | plain loop (s) | ride run (s) | ratio | result files | same accuracies |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['images']} | {r['plain_s']:.1f} | {r['ride_run_s']:.1f} | {r['ratio']:.2f}x "
            f"| {r['result_files']} | {'yes' if r['same_accuracies'] else 'NO'} |"
        )
    summary = [{k: v for k, v in r.items() if k != "accuracy"} for r in rows]
    chunk = args.chunk_size or "default"
    line = {"benchmark": "pipeline_overhead", "workers": args.workers, "chunk_size": chunk}
    print(json.dumps({**line, "runs": summary}))
    return 0 if all(r["same_accuracies"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
