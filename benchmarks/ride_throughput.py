"""RIDE defender throughput: a paper-style one-by-one fit against the batched engine.

Everything runs in this one invocation on the same images and settings:

- ``paper-style`` (the baseline of every speedup): one image at a time, a plain
  ``nn.Sequential`` of the Table 3 FCN with ``nn.Dropout``, ``torch.optim.Adam`` and fresh
  ``torch.randn`` noise per step, the way the paper's public code works;
- ``reference``: this package's one-by-one engine (``engine="reference"``);
- ``batched``: the batched engine fitting B images at once, for each ``--batch`` and each
  ``--precision`` (fp32, tf32 on CUDA, bf16; the two baselines always run fp32), with
  ``--compile`` its forward pass (``fcn_forward``) through ``torch.compile`` (``default``, or
  ``reduce-overhead``: CUDA graphs too), to see whether compiling pays, and with
  ``--memory-format`` its weights and activations channels-last (the engine's layout) or
  contiguous (NCHW); several values of each give one row per combination;
- ``pipeline`` (CPU): ``--processes`` single-thread processes each running the batched
  engine at the best B at the same time, as the local Dask workers of ``ride run`` do.

Time is measured over ``--steps`` Adam steps per image and extrapolated to the paper's
K x T = 2000 x 5 steps. Memory: ``peak MiB`` is the growth of the process's peak resident
set (CPU; the allocator reuses memory, so it is noisy) or the peak of allocated CUDA memory
during the fit; ``est MiB`` the engine's linear estimate (``estimate_memory_bytes``) used to
size batches. Prints a table, then one JSON line. The timed fits themselves are in
:mod:`benchmarks.ride_fits`.

    python -m benchmarks.ride_throughput --size mnist --device cpu
    python -m benchmarks.ride_throughput --size imagenet --device cuda --precision fp32 tf32 bf16
    python -m benchmarks.ride_throughput --size cifar --precision fp32 bf16 \
        --compile off default --memory-format channels-last contiguous
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Sequence

import torch

from benchmarks.ride_fits import (
    COMPILE_MODES,
    MEMORY_FORMATS,
    compiled_forward,
    engine_layout,
    measure,
    measure_pipeline,
)
from ride.defenders.ride import (
    ARCHS,
    PRECISIONS,
    Precision,
    Ride,
    check_precision,
    estimate_memory_bytes,
    max_batch_for,
    memory_budget_bytes,
)

SIZES = {"mnist": ("mnist", 28), "cifar": ("cifar", 32), "imagenet": ("imagenet", 224)}
PAPER_STEPS = 2000 * 5


def forward_flops_per_image(arch: str, side: int) -> float:
    """Multiply-adds x 2 of one forward pass of the Table 3 FCN on one image."""
    channels = ARCHS[arch][0]
    return float(
        sum(2 * c_in * c_out * 9 * side * side for c_in, c_out in itertools.pairwise(channels))
    )


def _row(
    name: str, batch: int, per: float, mib: float, est: float, flops: float, base: float
) -> str:
    return (
        f"{name:>12} {batch:>4} {per * batch:>13.5f} {1 / (per * PAPER_STEPS):>9.4f} "
        f"{per * PAPER_STEPS:>14.2f} {flops / per / 1e9:>8.2f} {mib:>9.1f} {est:>8.1f} "
        f"{base / per:>8.2f}"
    )


def estimated_mib(arch: str, side: int, batch: int, steps: int) -> float:
    """The engine's own working-set estimate (``estimate_memory_bytes``), in MiB."""
    cfg = Ride(arch=arch, iters=steps, checkpoints=1)  # type: ignore[arg-type]
    return estimate_memory_bytes(cfg, (ARCHS[arch][0][0], side, side), batch) / 2**20


def default_batches(arch: str, side: int, device: torch.device) -> list[int]:
    """1, 5, 10, 20 on the CPU; on CUDA 16, 64, 256, ... up to the memory estimate's most."""
    if device.type != "cuda":
        return [1, 5, 10, 20]
    cfg = Ride(arch=arch)  # type: ignore[arg-type]
    shape = (ARCHS[arch][0][0], side, side)
    most = max_batch_for(cfg, shape, memory_budget_bytes(device))
    batches = [b for b in (4**k for k in range(2, 9)) if b <= most]
    return batches or [most]


def _parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="mnist")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--batch",
        type=int,
        nargs="+",
        default=None,
        help="batch sizes B of the batched engine (default: 1 5 10 20 on the CPU; on CUDA "
        "16, 64, 256, ... up to what the free GPU memory holds)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        nargs="+",
        default=["fp32"],
        help="arithmetic of the batched engine, one row per batch size of each (the "
        "baselines run fp32)",
    )
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        nargs="+",
        default=["off"],
        help="torch.compile the batched engine's forward pass (reduce-overhead: with CUDA "
        "graphs); several give one row per batch size of each",
    )
    parser.add_argument(
        "--memory-format",
        choices=sorted(MEMORY_FORMATS),
        nargs="+",
        default=["channels-last"],
        help="layout of the batched engine's weights and activations (the engine's own: "
        "channels-last); several give one row per batch size of each",
    )
    parser.add_argument("--reference-images", type=int, default=3)
    parser.add_argument("--steps", type=int, default=50, help="Adam steps measured per image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="concurrent batched processes of the pipeline row (0: skip it; default 2 on "
        "the CPU, 0 on CUDA, where the pipeline runs one worker per GPU)",
    )
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options, checked, with the device's default batches and processes."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    try:
        for precision in args.precision:
            check_precision(precision, args.device)
    except ValueError as error:
        parser.error(str(error))
    arch, side = SIZES[args.size]
    if args.batch is None:
        args.batch = default_batches(arch, side, torch.device(args.device))
    if args.processes is None:
        args.processes = 2 if args.device == "cpu" else 0
    return args


Best = tuple[float, int, Precision, str, str]
"""The fastest batched row: (seconds per step x image, B, precision, compile, layout)."""


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    """Run the benchmark: print the table, then the JSON summary, which it returns."""
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    arch, side = SIZES[args.size]
    flops = 3 * forward_flops_per_image(arch, side)  # forward + backward ~ 3x forward

    n_ref = args.reference_images
    baseline, baseline_mib = measure(arch, side, n_ref, args.steps, "paper-style", device)
    reference, reference_mib = measure(arch, side, n_ref, args.steps, "reference", device)
    _print_header(args, side)
    nan = float("nan")
    plain = f"{'fp32':>9} {'off':>15} {'-':>13}"
    print(_row("paper-style", 1, baseline, baseline_mib, nan, flops, baseline), plain)
    print(_row("reference", 1, reference, reference_mib, nan, flops, baseline), plain)
    best, rows = _batched_rows(args, device, flops, baseline)
    per, batch, best_precision, best_mode, best_layout = best
    summary: dict[str, object] = {
        "size": args.size,
        "device": args.device,
        "precision": best_precision,
        "precisions": args.precision,
        "compile": best_mode,
        "memory_format": best_layout,
        "batch": batch,
        "steps_measured": args.steps,
        "reference_images_per_s": 1 / (baseline * PAPER_STEPS),
        "reference_engine_images_per_s": 1 / (reference * PAPER_STEPS),
        "batched_images_per_s": 1 / (per * PAPER_STEPS),
        "speedup": baseline / per,
        "seconds_per_image_paper_settings": per * PAPER_STEPS,
        "gflops": flops / per / 1e9,
        "rows": rows,
    }
    if args.processes > 0:
        summary.update(_pipeline_row(args, best, flops, baseline))
    print(json.dumps(summary))
    return summary


def _print_header(args: argparse.Namespace, side: int) -> None:
    """The table's title line and column names."""
    print(
        f"RIDE throughput, size {args.size} ({side}x{side}), device {args.device}, "
        f"batched engine in {', '.join(args.precision)}, compile {'/'.join(args.compile)}, "
        f"layout {'/'.join(args.memory_format)}, "
        f"{args.steps} steps measured, extrapolated to K x T = {PAPER_STEPS}"
    )
    print(
        f"{'engine':>12} {'B':>4} {'s/batch-step':>13} {'images/s':>9} {'s/image paper':>14} "
        f"{'GFLOP/s':>8} {'peak MiB':>9} {'est MiB':>8} {'speedup':>8} {'precision':>9} "
        f"{'compile':>15} {'layout':>13}"
    )


def _batched_rows(
    args: argparse.Namespace, device: torch.device, flops: float, baseline: float
) -> tuple[Best, list[dict[str, object]]]:
    """Time the batched engine for every compile mode, layout, precision and batch size,
    printing one row each; the fastest and the rows of the summary."""
    arch, side = SIZES[args.size]
    best: Best = (float("inf"), 0, "fp32", "off", "")
    rows: list[dict[str, object]] = []
    for mode, layout, precision in itertools.product(
        args.compile, args.memory_format, args.precision
    ):
        with compiled_forward(mode), engine_layout(layout):
            for batch in args.batch:
                per, mib = measure(arch, side, batch, args.steps, "batched", device, precision)
                best = min(best, (per, batch, precision, mode, layout), key=lambda row: row[0])
                est = estimated_mib(arch, side, batch, args.steps)
                print(
                    _row("batched", batch, per, mib, est, flops, baseline),
                    f"{precision:>9} {mode:>15} {layout:>13}",
                )
                rows.append(
                    {
                        "precision": precision,
                        "compile": mode,
                        "memory_format": layout,
                        "batch": batch,
                        "images_per_s": 1 / (per * PAPER_STEPS),
                        "seconds_per_image_paper_settings": per * PAPER_STEPS,
                        "speedup": baseline / per,
                        "peak_mib": mib,
                    }
                )
    return best, rows


def _pipeline_row(
    args: argparse.Namespace, best: Best, flops: float, baseline: float
) -> dict[str, object]:
    """Time ``--processes`` concurrent batched fits at the fastest row's settings, print
    their row; the summary's pipeline figures."""
    arch, side = SIZES[args.size]
    _, batch, best_precision, best_mode, best_layout = best
    pipe = measure_pipeline(
        arch, side, batch, args.steps, args.device, args.processes, best_precision,
        best_mode, best_layout,
    )  # fmt: skip
    est = estimated_mib(arch, side, batch, args.steps) * args.processes
    row = _row(f"pipeline x{args.processes}", batch, pipe, float("nan"), est, flops, baseline)
    print(row, f"{best_precision:>9} {best_mode:>15} {best_layout:>13}")
    return {
        "processes": args.processes,
        "pipeline_images_per_s": 1 / (pipe * PAPER_STEPS),
        "pipeline_speedup": baseline / pipe,
        "pipeline_seconds_per_image_paper_settings": pipe * PAPER_STEPS,
    }


if __name__ == "__main__":
    main()
