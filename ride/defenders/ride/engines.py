"""Algorithm 2 of the paper, written once over an engine that fits one group of images.

An engine holds a group of images' networks ``h`` and Adam optimisers and knows three moves
of Alg. 1/2: take one block of Adam steps on Eq. 7 against the current target ``x^(t-1)``,
restart the optimiser, and estimate ``x_est = E_z[h(z)]``. :func:`algorithm_2` runs the
checkpoint loop with the interpolation of Eq. 9 over those moves.

- :class:`ReferenceEngine` fits one image with a :class:`ReconstructionFCN` module.
- :class:`BatchedEngine` fits all B images at once: the B networks are one grouped convolution
  (weights (B*C_out, C_in, 3, 3), groups=B) over activations laid out (n, B*C, H, W); the loss
  is the sum over images of each image's mean loss, so each image's gradient is its own, and
  one fused (elementwise) Adam over the stacked parameters is B independent Adams.

Both draw each image's random numbers from its own generator in the order of ``streams``,
through the three ``FitEngine.draw_*`` methods (the seam a test records them at), so they
agree up to floating-point rounding (the grouped convolution sums in another order, so in
float32 a batched result may also differ in the last bits with the batch's size).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ride.defenders.ride.network import ReconstructionFCN, fcn_forward
from ride.defenders.ride.streams import (
    Block,
    blocks,
    dip_input,
    draw_block,
    estimate_noise,
    grouped_masks,
    grouped_or_none,
    step_masks,
)
from ride.seeding import generator_for

if TYPE_CHECKING:
    from ride.defenders.ride.config import Ride


class FitEngine(ABC):
    """A group of images x (B, C, H, W), each with its own generator (seeded with its seed),
    network and Adam, in the layout of the engine; ``x0`` is ``x^(0) = x_adv`` in it."""

    opt: torch.optim.Optimizer

    def __init__(self, x: Tensor, cfg: Ride, seeds: Sequence[int]) -> None:
        if cfg.arch is None:
            raise ValueError("the engines need cfg.arch (see Ride.with_arch_for)")
        self.cfg = cfg
        self.arch: str = cfg.arch
        self.device, self.dtype = x.device, x.dtype
        self.images = int(x.shape[0])
        self.image_shape = tuple(int(v) for v in x.shape[1:])  # (C, H, W)
        self.gens = [generator_for(seed, self.device) for seed in seeds]
        self.dip = cfg.variant in ("dip", "idip")
        self.x0 = x

    # -- image i's random draws: the one seam through which the engines draw (from image
    # i's generator, in the order of ``streams``); a test may override them to record the
    # exact noise and dropout masks a fit uses.

    def draw_dip_input(self, i: int, x: Tensor) -> Tensor:
        """Image i's fixed DIP input ``z0`` (1, C, H, W) (:func:`streams.dip_input`)."""
        return dip_input(self.gens[i], x)

    def draw_block(self, i: int, target: Tensor, steps: int) -> Block:
        """Image i's noise and masks for its next ``steps`` steps against ``target``
        (1, C, H, W) (:func:`streams.draw_block`)."""
        return draw_block(self.gens[i], self.cfg, target, steps)

    def draw_estimate_noise(self, i: int, target: Tensor) -> Tensor:
        """Image i's noise (m, C, H, W) of ``x_est = E_z[h(z)]`` (``streams.estimate_noise``)."""
        return estimate_noise(self.gens[i], self.cfg, target)

    def _adam(self, params: Iterable[Tensor]) -> torch.optim.Optimizer:
        fused = self.device.type in ("cpu", "cuda")  # one kernel per step; same maths as Adam
        return torch.optim.Adam(
            params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, fused=fused
        )

    def _step(self, loss: Tensor) -> None:
        """One Adam step on ``loss`` (Alg. 1: w <- w - eta dL/dw, Adam's form)."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    @abstractmethod
    def reset_optimizer(self) -> None:
        """A fresh Adam (moments at zero) over the current weights."""

    @abstractmethod
    def fit(self, target: Tensor, steps: int) -> None:
        """Draw the next random block and take ``steps`` Adam steps of Eq. 7 on ``target``."""

    @abstractmethod
    def estimate(self, target: Tensor) -> Tensor:
        """``x_est = E_z[h(z)]``, z ~ N(target, sigma) (DIP: ``h(z0)``), in the images' dtype."""

    @abstractmethod
    def result(self, out: Tensor) -> Tensor:
        """``out`` in the engine's layout -> detached (B, C, H, W) in [0, 1]."""


class ReferenceEngine(FitEngine):
    """One image x (1, C, H, W) fitted with a :class:`ReconstructionFCN` module (slow)."""

    def __init__(self, x: Tensor, cfg: Ride, seeds: Sequence[int]) -> None:
        super().__init__(x, cfg, seeds)
        if self.images != 1:
            raise ValueError(f"the reference engine fits one image, got {self.images}")
        self.gen = self.gens[0]
        self.net = ReconstructionFCN(
            self.arch, cfg.dropout, self.gen, device=self.device, dtype=self.dtype
        )
        self.z0 = self.draw_dip_input(0, x)  # (1, C, H, W)
        self.opt = self._adam(self.net.parameters())

    def reset_optimizer(self) -> None:
        self.opt = self._adam(self.net.parameters())

    def fit(self, target: Tensor, steps: int) -> None:
        cfg = self.cfg
        shape = (cfg.batch, *self.image_shape)  # (n, C, H, W)
        self.net.train()
        block = self.draw_block(0, target, steps)
        masks = block.keep_masks(self.dtype)
        for j in range(steps):
            inp = self.z0.expand(shape) if block.inp is None else block.inp[j]
            s = target.expand(shape) if block.s is None else block.s[j]
            out = self.net(inp, masks=[m[j] for m in masks])
            loss = F.mse_loss(out, s) if cfg.loss == "mse" else F.l1_loss(out, s)
            self._step(loss)

    def estimate(self, target: Tensor) -> Tensor:
        self.net.eval()
        if self.dip:
            return self.net(self.z0).to(self.dtype)
        noise = self.draw_estimate_noise(0, target)  # (m, C, H, W)
        estimates = self.net(target + self.cfg.sigma * noise).to(self.dtype)  # (m, C, H, W)
        return estimates.mean(dim=0, keepdim=True)  # (1, C, H, W)

    def result(self, out: Tensor) -> Tensor:
        return out.detach().clamp(0.0, 1.0).to(self.dtype)


class BatchedEngine(FitEngine):
    """All B images x (B, C, H, W) fitted at once as one grouped convolution."""

    memory_format: torch.memory_format = torch.channels_last
    """Layout of the stacked weights and activations (channels-last: the faster on the CPUs
    and GPUs measured, see ``benchmarks.ride_throughput --memory-format``)."""

    def __init__(self, x: Tensor, cfg: Ride, seeds: Sequence[int]) -> None:
        super().__init__(x, cfg, seeds)
        b, c, height, width = x.shape
        nets = [
            ReconstructionFCN(self.arch, cfg.dropout, g, device=self.device, dtype=self.dtype)
            for g in self.gens
        ]
        z0s = [self.draw_dip_input(i, x[i : i + 1]) for i in range(b)]
        self.layers: list[tuple[Tensor, Tensor]] = []
        for per_net in zip(*(net.layers() for net in nets), strict=True):
            weight = torch.cat([w.detach() for w, _ in per_net])  # (B*C_out, C_in, 3, 3)
            bias = torch.cat([bias.detach() for _, bias in per_net])  # (B*C_out,)
            weight = weight.contiguous(memory_format=self.memory_format).requires_grad_()
            self.layers.append((weight, bias.requires_grad_()))
        self.params = [p for pair in self.layers for p in pair]
        self.dropout_layers = nets[0].dropout_layers
        self.z0 = torch.cat(z0s, dim=1)  # (1, B*C, H, W)
        self.x0 = x.reshape(1, b * c, height, width)  # grouped layout
        # Under bf16 autocast the activations are bfloat16: unpack the {0, 2} masks in it too.
        autocast = torch.is_autocast_enabled(self.device.type)
        self.mask_dtype = torch.get_autocast_dtype(self.device.type) if autocast else self.dtype
        self.opt = self._adam(self.params)

    def forward(self, z: Tensor, masks: Sequence[Tensor] | None) -> Tensor:
        """The B networks on z (n, B*C, H, W) -> (n, B*C, H, W), in ``memory_format``."""
        z = z.contiguous(memory_format=self.memory_format)
        return fcn_forward(z, self.layers, self.dropout_layers, masks, groups=self.images)

    def reset_optimizer(self) -> None:
        self.opt = self._adam(self.params)

    def _per_image(self, grouped: Tensor) -> Tensor:
        """(1, B*C, H, W) -> a view (B, 1, C, H, W), one (1, C, H, W) per image."""
        return grouped.view(self.images, 1, *self.image_shape)

    def _loss(self, out: Tensor, s: Tensor) -> Tensor:
        diff = out - s  # (n, B*C, H, W)
        per = diff.square() if self.cfg.loss == "mse" else diff.abs()
        # sum over images of each image's mean loss; all images have n*C*H*W elements
        c, height, width = self.image_shape
        return per.sum() / (self.cfg.batch * c * height * width)

    def fit(self, target: Tensor, steps: int) -> None:
        cfg, n = self.cfg, self.cfg.batch
        targets = self._per_image(target)
        drawn = [self.draw_block(i, targets[i], steps) for i in range(self.images)]
        inp_all = grouped_or_none([blk.inp for blk in drawn])  # (L, n, B*C, H, W)
        s_all = grouped_or_none([blk.s for blk in drawn])  # (L, n, B*C, H, W)
        masks_all = grouped_masks(drawn)
        packed = drawn[0].packed
        del drawn
        inp_fixed = self.z0.expand(n, -1, -1, -1)  # (n, B*C, H, W)
        s_fixed = target.expand(n, -1, -1, -1)
        use_dropout = cfg.dropout > 0.0
        for j in range(steps):
            inp = inp_fixed if inp_all is None else inp_all[j]
            s = s_fixed if s_all is None else s_all[j]
            masks = step_masks(masks_all, j, packed, self.mask_dtype) if use_dropout else None
            self._step(self._loss(self.forward(inp, masks), s))

    def estimate(self, target: Tensor) -> Tensor:
        if self.dip:
            return self.forward(self.z0, None).to(self.dtype)
        targets = self._per_image(target)
        noise = torch.cat(
            [self.draw_estimate_noise(i, targets[i]) for i in range(self.images)], dim=1
        )  # (m, B*C, H, W)
        estimates = self.forward(target + self.cfg.sigma * noise, None).to(self.dtype)
        return estimates.mean(dim=0, keepdim=True)  # (1, B*C, H, W)

    def result(self, out: Tensor) -> Tensor:
        b = self.images
        return (
            out.detach().reshape(b, *self.image_shape).clamp(0.0, 1.0).to(self.dtype).contiguous()
        )


def algorithm_2(engine: FitEngine, progress: Callable[[int], None] | None = None) -> Tensor:
    """Alg. 2 (RIDE) on the engine's images; returns them defended, (B, C, H, W).

    ``x^(0) = x_adv``; per checkpoint t = 1..T: K Adam steps against ``x^(t-1)`` (Alg. 1, the
    weights carried over; a fresh Adam unless ``reset_optimizer_each_checkpoint`` is off),
    ``x_est^(t) = E_z[h(z)]``, then Eq. 9: ``x^(t) = alpha x^(t-1) + (1 - alpha) x_est^(t)``.
    Returns ``x_est^(T)`` (``x^(T)`` with ``return_iterate``). ``progress(K)`` is called once
    per image after each checkpoint.
    """
    cfg = engine.cfg
    x_t = engine.x0  # x^(0) = x_adv
    x_est = x_t
    for t in range(cfg.checkpoints):
        if t > 0 and cfg.reset_optimizer_each_checkpoint:
            engine.reset_optimizer()
        target = x_t  # x^(t-1)
        for steps in blocks(cfg, engine.image_shape):
            engine.fit(target, steps)
        # the estimate in the images' dtype, from the (full-precision) weights, under bf16 too
        with torch.no_grad(), torch.autocast(engine.device.type, enabled=False):
            x_est = engine.estimate(target)
            if cfg.alpha != 1.0:
                x_t = cfg.alpha * x_t + (1.0 - cfg.alpha) * x_est  # Eq. 9
        if progress is not None:
            for _ in range(engine.images):
                progress(cfg.iters)
    return engine.result(x_t if cfg.return_iterate else x_est)
