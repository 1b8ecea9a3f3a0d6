"""The timed fits of the RIDE throughput benchmark (:mod:`benchmarks.ride_throughput`).

- :func:`measure`: seconds per Adam step x image and peak memory of one way of fitting
  ``batch`` images: ``paper-style`` (:func:`paper_style_fit`: a plain ``nn.Sequential`` of the
  Table 3 FCN, ``torch.optim.Adam``, fresh ``torch.randn`` noise, one image at a time, as the
  paper's public code works), ``reference`` (this package's one-by-one engine) or ``batched``;
- :func:`measure_pipeline`: several single-thread processes each running a batched fit at the
  same time, as the local Dask workers of ``ride run`` do;
- :func:`compiled_forward` and :func:`engine_layout`: the batched engine with its forward pass
  through ``torch.compile``, and with its weights and activations in another memory layout.
"""

from __future__ import annotations

import itertools
import multiprocessing as mp
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ride.defenders.ride import ARCHS, Precision, Ride, engines, ride

COMPILE_MODES = ("off", "default", "reduce-overhead")
"""``--compile``: eager; ``torch.compile``; ``torch.compile`` with CUDA graphs."""
MEMORY_FORMATS = {"channels-last": torch.channels_last, "contiguous": torch.contiguous_format}
"""``--memory-format``: the batched engine's layout of weights and activations."""
_STATUS = Path("/proc/self/status")


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
