"""RIDE defender throughput: the one-by-one reference against the batched engine.

Both run in this one process on the same images and settings; the reference fits one
image at a time (one network, one Adam, the way the paper's code works), the batched engine
fits B images at once. Time is measured over ``--steps`` Adam steps per image and
extrapolated to the paper's K x T = 2000 x 5 steps. Prints a table, then one JSON line.

    python benchmarks/ride_throughput.py --size mnist --device cpu
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence

import torch

from ride.defenders.ride import ARCHS, RideConfig, ride

SIZES = {"mnist": ("mnist", 28), "cifar": ("cifar", 32), "imagenet": ("imagenet", 224)}
PAPER_STEPS = 2000 * 5


def forward_flops_per_image(arch: str, side: int) -> float:
    """Multiply-adds x 2 of one forward pass of the Table 3 FCN on one image."""
    channels = ARCHS[arch][0]
    return float(
        sum(2 * c_in * c_out * 9 * side * side for c_in, c_out in itertools.pairwise(channels))
    )


def seconds_per_step_image(
    arch: str, side: int, batch: int, steps: int, engine: str, device: torch.device
) -> float:
    """Wall seconds per (Adam step x image) for ``batch`` images fitted by ``engine``."""
    cfg = RideConfig(arch=arch, iters=steps, checkpoints=1)  # type: ignore[arg-type]
    channels = ARCHS[arch][0][0]
    x = torch.rand(batch, channels, side, side, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    seeds = list(range(batch))
    ride(x[:1], RideConfig(arch=arch, iters=2, checkpoints=1), seeds[:1], engine=engine)  # type: ignore[arg-type]  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    began = time.perf_counter()
    if engine == "reference":
        for i in range(batch):  # one image at a time
            ride(x[i : i + 1], cfg, seeds[i : i + 1], engine="reference")
    else:
        ride(x, cfg, seeds, engine="batched")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - began) / (steps * batch)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mnist")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--reference-images", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="Adam steps measured per image")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    arch, side = SIZES[args.size]
    flops_step = 3 * forward_flops_per_image(arch, side)  # forward + backward ~ 3x forward

    reference = seconds_per_step_image(
        arch, side, args.reference_images, args.steps, "reference", device
    )
    print(
        f"RIDE throughput, size {args.size} ({side}x{side}), device {args.device}, "
        f"{args.steps} steps measured, extrapolated to K x T = {PAPER_STEPS}"
    )
    print(
        f"{'engine':>10} {'B':>4} {'s/batch-step':>13} {'images/s':>9} {'s/image paper':>14} "
        f"{'GFLOP/s':>8} {'speedup':>8}"
    )
    print(
        f"{'reference':>10} {1:>4} {reference:>13.5f} {1 / (reference * PAPER_STEPS):>9.4f} "
        f"{reference * PAPER_STEPS:>14.2f} {flops_step / reference / 1e9:>8.2f} {1.0:>8.2f}"
    )
    best: tuple[float, int] = (float("inf"), 0)
    for batch in args.batch:
        per = seconds_per_step_image(arch, side, batch, args.steps, "batched", device)
        best = min(best, (per, batch))
        print(
            f"{'batched':>10} {batch:>4} {per * batch:>13.5f} {1 / (per * PAPER_STEPS):>9.4f} "
            f"{per * PAPER_STEPS:>14.2f} {flops_step / per / 1e9:>8.2f} {reference / per:>8.2f}"
        )
    per, batch = best
    summary: dict[str, object] = {
        "size": args.size,
        "device": args.device,
        "batch": batch,
        "steps_measured": args.steps,
        "reference_images_per_s": 1 / (reference * PAPER_STEPS),
        "batched_images_per_s": 1 / (per * PAPER_STEPS),
        "speedup": reference / per,
        "seconds_per_image_paper_settings": per * PAPER_STEPS,
        "gflops": flops_step / per / 1e9,
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
