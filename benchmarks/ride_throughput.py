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
size batches. Prints a table, then one JSON line.

    python -m benchmarks.ride_throughput --size mnist --device cpu
    python -m benchmarks.ride_throughput --size imagenet --device cuda --precision fp32 tf32 bf16
    python -m benchmarks.ride_throughput --size cifar --precision fp32 bf16 \
        --compile off default --memory-format channels-last contiguous
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ride.defenders.ride import (
    ARCHS,
    PRECISIONS,
    Precision,
    Ride,
    check_precision,
    engines,
    estimate_memory_bytes,
    max_batch_for,
    memory_budget_bytes,
    ride,
)

SIZES = {"mnist": ("mnist", 28), "cifar": ("cifar", 32), "imagenet": ("imagenet", 224)}
PAPER_STEPS = 2000 * 5
COMPILE_MODES = ("off", "default", "reduce-overhead")
"""``--compile``: eager; ``torch.compile``; ``torch.compile`` with CUDA graphs."""
MEMORY_FORMATS = {"channels-last": torch.channels_last, "contiguous": torch.contiguous_format}
"""``--memory-format``: the batched engine's layout of weights and activations."""
_STATUS = Path("/proc/self/status")


def forward_flops_per_image(arch: str, side: int) -> float:
    """Multiply-adds x 2 of one forward pass of the Table 3 FCN on one image."""
    channels = ARCHS[arch][0]
    return float(
        sum(2 * c_in * c_out * 9 * side * side for c_in, c_out in itertools.pairwise(channels))
    )


def paper_style_network(arch: str, dropout: float = 0.5) -> nn.Sequential:
    """The Table 3 FCN as a plain ``nn.Sequential`` (conv, ReLU, ``nn.Dropout``, sigmoid)."""
    channels, dropout_layers = ARCHS[arch]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(itertools.pairwise(channels)):
        layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
        if i == len(channels) - 2:
            layers.append(nn.Sigmoid())
            break
        layers.append(nn.ReLU())
        if i in dropout_layers:
            layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def paper_style_fit(x: torch.Tensor, arch: str, steps: int, cfg: Ride) -> None:
    """``steps`` DAE steps on one image (1, C, H, W): fresh noise, ``F.mse_loss``, Adam."""
    net = paper_style_network(arch, cfg.dropout).to(x.device).train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for _ in range(steps):
        z = x + cfg.sigma * torch.randn_like(x)
        s = x + cfg.sigma * torch.randn_like(x)
        loss = F.mse_loss(net(z), s)
        opt.zero_grad()
        loss.backward()
        opt.step()


@contextmanager
def compiled_forward(mode: str) -> Iterator[None]:
    """Inside, the batched engine's forward pass (``fcn_forward``) runs ``torch.compile``d
    in ``mode`` (``off``: unchanged); the eager function is put back on the way out.

    A benchmark experiment, not an engine option: it shows whether compiling (fused
    elementwise kernels; CUDA graphs with ``reduce-overhead``) pays for these small grouped
    convolutions. Each batch size compiles once (``dynamic=False``); the warm-up step of
    :func:`measure` pays for it, so the timed steps do not.
    """
    if mode == "off":
        yield
        return
    eager = engines.fcn_forward
    engines.fcn_forward = torch.compile(eager, mode=mode, dynamic=False)
    try:
        yield
    finally:
        engines.fcn_forward = eager


@contextmanager
def engine_layout(name: str) -> Iterator[None]:
    """Inside, the batched engine keeps its weights and activations in the layout ``name``
    (a key of :data:`MEMORY_FORMATS`); the engine's own layout is put back on the way out."""
    engine_format = engines.BatchedEngine.memory_format
    engines.BatchedEngine.memory_format = MEMORY_FORMATS[name]
    try:
        yield
    finally:
        engines.BatchedEngine.memory_format = engine_format


def _peak_rss_kib() -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _reset_peak(device: torch.device) -> int:
    """Reset the peak-memory counter; returns the baseline to subtract (bytes)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return int(torch.cuda.memory_allocated(device))
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS
    except OSError:
        return -1
    return _peak_rss_kib() * 1024


def _peak_since(device: torch.device, baseline: int) -> float:
    """MiB of memory the fit added at its peak (NaN where it cannot be measured)."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    if baseline < 0:
        return float("nan")
    return max(0, _peak_rss_kib() * 1024 - baseline) / 2**20


def measure(
    arch: str,
    side: int,
    batch: int,
    steps: int,
    engine: str,
    device: torch.device,
    precision: Precision = "fp32",
) -> tuple[float, float]:
    """(wall seconds per Adam step x image, MiB peak memory) for ``batch`` images; the
    ``paper-style`` and ``reference`` baselines always run in fp32."""
    cfg = Ride(arch=arch, iters=steps, checkpoints=1)  # type: ignore[arg-type]
    channels = ARCHS[arch][0][0]
    x = torch.rand(batch, channels, side, side, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    seeds = list(range(batch))
    warm = Ride(arch=arch, iters=2, checkpoints=1)  # type: ignore[arg-type]
    if engine == "paper-style":
        paper_style_fit(x[:1], arch, 2, warm)
    elif engine == "reference":
        ride(x[:1], warm, seeds[:1], engine="reference")
    else:  # the whole batch: the timed fit's shapes (cuDNN's choice, a compiled forward)
        ride(x, warm, seeds, precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    baseline = _reset_peak(device)
    began = time.perf_counter()
    if engine == "paper-style":
        for i in range(batch):
            paper_style_fit(x[i : i + 1], arch, steps, cfg)
    elif engine == "reference":
        for i in range(batch):  # one image at a time
            ride(x[i : i + 1], cfg, seeds[i : i + 1], engine="reference")
    else:
        ride(x, cfg, seeds, engine="batched", precision=precision)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - began) / (steps * batch)
    return seconds, _peak_since(device, baseline)


def _pipeline_worker(args: tuple[str, int, int, int, str, Precision, str, str, Any]) -> float:
    """One pipeline process: warm up, wait for the others, time one batched fit."""
    arch, side, batch, steps, device, precision, mode, layout, barrier = args
    with compiled_forward(mode), engine_layout(layout):
        return _pipeline_fit(arch, side, batch, steps, device, precision, barrier)


def _pipeline_fit(
    arch: str, side: int, batch: int, steps: int, device: str, precision: Precision, barrier: Any
) -> float:
    torch.set_num_threads(1)
    cfg = Ride(arch=arch, iters=steps, checkpoints=1)  # type: ignore[arg-type]
    channels = ARCHS[arch][0][0]
    x = torch.rand(batch, channels, side, side).to(device)
    warm = Ride(arch=arch, iters=2, checkpoints=1)  # type: ignore[arg-type]
    ride(x[:1], warm, [0], precision=precision)
    barrier.wait()
    began = time.perf_counter()
    ride(x, cfg, list(range(batch)), precision=precision)
    return time.perf_counter() - began


def measure_pipeline(
    arch: str,
    side: int,
    batch: int,
    steps: int,
    device: str,
    processes: int,
    precision: Precision = "fp32",
    mode: str = "off",
    layout: str = "channels-last",
) -> float:
    """Seconds per (step x image) of ``processes`` batched fits running at the same time."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(processes)
        with ctx.Pool(processes) as pool:
            walls = pool.map(
                _pipeline_worker,
                [(arch, side, batch, steps, device, precision, mode, layout, barrier)] * processes,
            )
    return max(walls) / (steps * batch * processes)


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


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The benchmark's options, checked, with the device's default batches and processes."""
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


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    arch, side = SIZES[args.size]
    flops = 3 * forward_flops_per_image(arch, side)  # forward + backward ~ 3x forward

    n_ref = args.reference_images
    baseline, baseline_mib = measure(arch, side, n_ref, args.steps, "paper-style", device)
    reference, reference_mib = measure(arch, side, n_ref, args.steps, "reference", device)
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
    nan = float("nan")
    plain = f"{'fp32':>9} {'off':>15} {'-':>13}"
    print(_row("paper-style", 1, baseline, baseline_mib, nan, flops, baseline), plain)
    print(_row("reference", 1, reference, reference_mib, nan, flops, baseline), plain)
    best: tuple[float, int, Precision, str, str] = (float("inf"), 0, "fp32", "off", "")
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
        pipe = measure_pipeline(
            arch, side, batch, args.steps, args.device, args.processes, best_precision,
            best_mode, best_layout,
        )  # fmt: skip
        est = estimated_mib(arch, side, batch, args.steps) * args.processes
        row = _row(f"pipeline x{args.processes}", batch, pipe, nan, est, flops, baseline)
        print(row, f"{best_precision:>9} {best_mode:>15} {best_layout:>13}")
        summary.update(
            processes=args.processes,
            pipeline_images_per_s=1 / (pipe * PAPER_STEPS),
            pipeline_speedup=baseline / pipe,
            pipeline_seconds_per_image_paper_settings=pipe * PAPER_STEPS,
        )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
