"""A differentiable surrogate of RIDE: Alg. 2 cut short and differentiated through its fit.

RIDE's output is detached from its fit (``Ride.differentiable`` is False), so BPDA
(Athalye, Carlini and Wagner, 2018) takes its backward pass as the identity. The paper argues
that RIDE's defence lies in the fit itself (section "White-Box Defense with Self-Supervision":
the estimate is the solution of a lower-level problem, Eq. 6-8), so a stronger backward pass
differentiates a short version of that fit: :func:`ride_surrogate` runs Alg. 2 with T
checkpoints of K steps on Eq. 7 (by default T = 1, K = 20) entirely inside autograd
(``create_graph``), so ``d x_est / d x`` flows through the noisy inputs and targets
``x^(t-1) + sigma eps`` (Eq. 7), through every optimiser step of the weights, through
``x_est = E_z[h(z)]`` and through the interpolation of Eq. 9.

The surrogate keeps the defender's network (Table 3) and each image's initial weights
``w^(0)`` (the same generator, seeded by the image's seed, drawn in the order of ``streams``),
and its noise distribution: sigma, n, dropout masks at ``dropout``, noisy or noise-free target,
the loss, ``estimate_samples``, alpha, the variant (DAE, DIP, I-DIP) and ``return_iterate``.
The random numbers of its K steps come from the same stream but are not those of the
defender's first K steps (a block of K steps is laid out differently from one of 2,000).

Its optimiser is plain SGD with weight decay, ``w <- w - lr (dL/dw + weight_decay w)``, not
the defender's Adam. Differentiated, Adam's update ``m_hat / (sqrt(v_hat) + eps)`` is
invariant to the gradient's scale, and its first step is ``lr sign(dL/dw)`` (bias-corrected
``m_hat / sqrt(v_hat) = g / |g|``), whose derivative in x is zero: a short differentiated
Adam fit passes almost nothing from x to the weights. SGD's step is linear in ``dL/dw``, so
``d w^(K) / d x`` carries how the fitted network depends on the image. A short fit also needs
a larger step than Adam's ``1e-4`` to move the weights at all (``SURROGATE_LR``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor

from ride._checks import check_finite_number, check_images, check_seeds, check_unit_range
from ride.defenders.ride.config import Ride
from ride.defenders.ride.network import ReconstructionFCN, fcn_forward
from ride.defenders.ride.streams import blocks, dip_input, draw_block, estimate_noise
from ride.seeding import generator_for

__all__ = [
    "SURROGATE_CHECKPOINTS",
    "SURROGATE_ITERS",
    "SURROGATE_LR",
    "ride_surrogate",
    "surrogate_config",
]

#: Checkpoints T and steps K per checkpoint of the surrogate's fit (issue 12: T = 1, K 10-50).
SURROGATE_CHECKPOINTS = 1
SURROGATE_ITERS = 20
#: SGD step of the surrogate's fit. On 8 digits images (28x28, the MNIST network, sigma 0.5)
#: the mean squared distance of the estimate to the image falls from 0.147 (initial weights)
#: to 0.026 after 20 steps of 1.0 (0.090 at 0.3, 0.147 at Adam's 1e-4; 3.0 starts to diverge).
SURROGATE_LR = 1.0


def surrogate_config(
    defender: Ride,
    image_shape: Sequence[int],
    iters: int = SURROGATE_ITERS,
    checkpoints: int = SURROGATE_CHECKPOINTS,
) -> Ride:
    """``defender``'s settings (its ``arch`` taken from ``image_shape`` (C, H, W) when None)
    with K = ``iters`` and T = ``checkpoints``: the fit the surrogate differentiates."""
    cfg = defender.with_arch_for(image_shape)
    return dataclasses.replace(cfg, iters=iters, checkpoints=checkpoints)


def _check_lr(lr: float) -> float:
    lr = check_finite_number(lr, "lr")
    if lr <= 0:
        raise ValueError(f"surrogate lr must be > 0, got {lr}")
    return lr


def _per_image_to_grouped(per_image: Sequence[Tensor]) -> Tensor:
    """B tensors (..., C, H, W) -> one (..., B*C, H, W): image i's channels are group i."""
    stacked = torch.stack(list(per_image), dim=-4)  # (..., B, C, H, W)
    return stacked.flatten(-4, -3)


def ride_surrogate(
    x: Tensor,
    defender: Ride,
    seeds: Sequence[int],
    *,
    iters: int = SURROGATE_ITERS,
    checkpoints: int = SURROGATE_CHECKPOINTS,
    lr: float = SURROGATE_LR,
) -> Tensor:
    """RIDE's estimate of x (B, C, H, W) in [0, 1] after a short fit, differentiable in x.

    Alg. 2 with T = ``checkpoints`` and K = ``iters`` (see :func:`surrogate_config`), each
    image's network fitted by ``lr``-SGD steps on Eq. 7 (module docstring: why SGD), all
    inside autograd: when x requires grad (and grad mode is on) the result's graph reaches x
    through every step; otherwise the result is detached.
    ``seeds[i]`` seeds image i's initial weights, noise and dropout masks exactly as the
    defender's seed does. Runs in x's dtype (float64 for ``gradcheck``), whatever the
    defender's ``precision``. Returns (B, C, H, W) in [0, 1].

    Example:
        >>> import torch
        >>> x = torch.rand(1, 1, 8, 8, dtype=torch.float64).requires_grad_()
        >>> out = ride_surrogate(x, Ride(), [0], iters=2)
        >>> (grad,) = torch.autograd.grad(out.sum(), [x])
        >>> grad.shape, bool(grad.abs().sum() > 0)
        (torch.Size([1, 1, 8, 8]), True)
    """
    check_images(x)
    check_unit_range(x)
    lr = _check_lr(lr)
    cfg = surrogate_config(defender, x.shape[1:], iters, checkpoints)
    b, c, height, width = x.shape
    seed_list = check_seeds(seeds, b)
    gens = [generator_for(int(s), x.device) for s in seed_list]
    fit = _GroupedFit(x, cfg, gens, lr)
    with torch.inference_mode(False), torch.enable_grad():
        x_t = x  # x^(0) = x_adv, (B, C, H, W)
        x_est = x_t
        for _ in range(cfg.checkpoints):
            grouped_target = x_t.reshape(1, b * c, height, width)  # x^(t-1), one group per image
            fit.fit(x_t, grouped_target)  # K steps on Eq. 7
            x_est = fit.estimate(x_t, grouped_target)  # E_z[h(z)]
            if cfg.alpha != 1.0:
                x_t = cfg.alpha * x_t + (1.0 - cfg.alpha) * x_est  # Eq. 9
        out = (x_t if cfg.return_iterate else x_est).clamp(0.0, 1.0)
    return out if fit.create_graph else out.detach()


class _GroupedFit:
    """The B networks ``h`` of the surrogate's fit as one grouped network (image i's channels
    are group i). Each SGD step replaces the (weight, bias) tensors by new ones computed from
    the old, so that the graph runs from x through every step (``create_graph``: x requires
    grad and grad mode was on when the fit was made)."""

    def __init__(self, x: Tensor, cfg: Ride, gens: list[torch.Generator], lr: float) -> None:
        assert cfg.arch is not None
        self.cfg, self.gens, self.lr = cfg, gens, lr
        self.groups, self.dtype = x.shape[0], x.dtype
        # w^(0) and z0 drawn as the engines draw them (streams, items 1 and 2)
        nets = [
            ReconstructionFCN(cfg.arch, cfg.dropout, g, device=x.device, dtype=x.dtype)
            for g in gens
        ]
        self.z0 = _per_image_to_grouped([dip_input(g, x[i : i + 1]) for i, g in enumerate(gens)])
        self.layers = [
            (  # weight (B*C_out, C_in, 3, 3), bias (B*C_out,)
                torch.cat([w.detach() for w, _ in per_net]).requires_grad_(),
                torch.cat([bias.detach() for _, bias in per_net]).requires_grad_(),
            )
            for per_net in zip(*(net.layers() for net in nets), strict=True)
        ]
        self.dropout_layers = nets[0].dropout_layers
        self.create_graph = x.requires_grad and torch.is_grad_enabled()

    def h(self, z: Tensor, masks: list[Tensor] | None = None) -> Tensor:
        """The B networks at their current weights on z (n, B*C, H, W)."""
        return fcn_forward(z, self.layers, self.dropout_layers, masks, groups=self.groups)

    def fit(self, target: Tensor, grouped_target: Tensor) -> None:
        """One checkpoint's K steps on Eq. 7 towards ``target`` x^(t-1) (B, C, H, W), also
        given grouped (1, B*C, H, W), block by block of random numbers (each image's drawn
        from its own generator)."""
        cfg = self.cfg
        c, height, width = target.shape[1:]
        for steps in blocks(cfg, (c, height, width)):
            drawn = [draw_block(g, cfg, target[i : i + 1], steps) for i, g in enumerate(self.gens)]
            inp = [blk.inp for blk in drawn if blk.inp is not None]  # each (L, n, C, H, W)
            noisy = [blk.s for blk in drawn if blk.s is not None]
            keep = [blk.keep_masks(self.dtype) for blk in drawn]  # per image, per layer
            for j in range(steps):
                z = _per_image_to_grouped([t[j] for t in inp]) if inp else self.z0  # (n, B*C, H, W)
                s = _per_image_to_grouped([t[j] for t in noisy]) if noisy else grouped_target
                masks = None
                if cfg.dropout > 0.0:
                    masks = [
                        _per_image_to_grouped([per_image[k][j] for per_image in keep])
                        for k in range(len(keep[0]))
                    ]  # each (n, B*C_l, H, W)
                self.sgd_step(z, s, masks, c * height * width)

    def sgd_step(self, z: Tensor, s: Tensor, masks: list[Tensor] | None, pixels: int) -> None:
        """One step ``w <- w - lr (dL/dw + weight_decay w)`` on the loss of h(z) against s
        (``pixels``: C x H x W of one image)."""
        cfg = self.cfg
        diff = self.h(z, masks) - s
        per = diff.square() if cfg.loss == "mse" else diff.abs()
        # the sum over images of each image's mean loss: each image's own gradient
        loss = per.sum() / (cfg.batch * pixels)
        params = [p for pair in self.layers for p in pair]
        grads = torch.autograd.grad(loss, params, create_graph=self.create_graph)
        stepped = [
            p - self.lr * (g + cfg.weight_decay * p)  # SGD with weight decay
            for p, g in zip(params, grads, strict=True)
        ]
        self.layers = list(zip(stepped[0::2], stepped[1::2], strict=True))

    def estimate(self, target: Tensor, grouped_target: Tensor) -> Tensor:
        """``x_est = E_z[h(z)]`` (B, C, H, W) at the current weights: h of the DIP input
        (DIP, I-DIP), else the mean of h over m noisy copies of ``target`` x^(t-1) (also
        given grouped, (1, B*C, H, W))."""
        cfg = self.cfg
        b, c, height, width = target.shape
        if cfg.variant in ("dip", "idip"):
            estimates = self.h(self.z0)  # (1, B*C, H, W)
        else:
            noise = _per_image_to_grouped(
                [estimate_noise(g, cfg, target[i : i + 1]) for i, g in enumerate(self.gens)]
            )  # (m, B*C, H, W)
            estimates = self.h(grouped_target + cfg.sigma * noise)
        return estimates.mean(dim=0).reshape(b, c, height, width)
