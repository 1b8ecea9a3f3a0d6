"""RIDE: Robust Iterative Data Estimation, and its ablation variants DAE, DIP and I-DIP.

Lin, Pfister and Zhang, "White-Box Adversarial Defense via Self-Supervised Data Estimation"
(arXiv 1909.06271), section "Self-Supervised Data Estimation":

- DAE (Alg. 1, Eq. 7): K Adam steps on ``MSE(h(z), s)`` with ``s, z ~ N(x_target, sigma)``
  drawn independently (n pairs per step); ``x_est = E_z[h(z)]`` with ``z ~ N(x_target, sigma)``.
- RIDE (Alg. 2, Eq. 8-9): ``x^(0) = x_adv``; for t = 1..T fit K steps against ``x^(t-1)``
  (weights carried over), take ``x_est^(t)`` and set
  ``x^(t) = alpha x^(t-1) + (1 - alpha) x_est^(t)``; return ``x_est^(T)`` (footnote 1).
  With ``alpha = 1`` RIDE is DAE ("Interpolation Parameter").
- DIP (Ulyanov et al. 2018; paper Eq. 4): a fixed random input ``z0`` and the noise-free target
  ``x^(t-1)``, alpha = 1, output ``h(z0)``; I-DIP adds the iterative update of Eq. 9.

The network ``h`` is the FCN of Table 3 (3x3 convs, padding 1, ReLU after every layer but the
last, sigmoid output because images are in [0, 1], dropout at the ticked layers).

Each image gets its own network, optimiser, noise and dropout masks, all drawn from one
generator seeded with that image's seed (stream layout: ``_defend_one``), so a defended image
does not depend on which other images share the batch, and a rerun with the same seed and batch
on the same device is bit-identical. The default batched engine (``_defend_batched``) fits all
B networks at once as one grouped convolution; it matches the one-by-one reference engine
(``_defend_one``) up to floating-point rounding (the grouped convolution sums in another
order, so in float32 a result may also differ in the last bits with the batch's size).
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ride._checks import (
    check_finite_number,
    check_images,
    check_seeds,
    check_unit_range,
    fmt_number,
    short_hash,
)
from ride.seeding import generator_for

Variant = Literal["ride", "dae", "dip", "idip"]
Arch = Literal["mnist", "cifar", "imagenet"]

VARIANTS: tuple[str, ...] = ("ride", "dae", "dip", "idip")

#: Table 3: conv channel chain and the (0-based) conv layers followed by dropout.
ARCHS: dict[str, tuple[tuple[int, ...], frozenset[int]]] = {
    "mnist": ((1, 16, 16, 16, 1), frozenset({1, 2})),  # dropout at conv2, conv3
    "cifar": ((3, 32, 32, 32, 32, 3), frozenset({1, 2})),  # dropout at conv2, conv3
    "imagenet": ((3, 32, 32, 32, 32, 32, 32, 32, 3), frozenset({3, 4, 5})),  # conv4-6
}

#: Range of the fixed DIP input ``z0 ~ U(0, DIP_INPUT_SCALE)``.
DIP_INPUT_SCALE = 0.1

_NAMED_FIELDS = ("variant", "iters", "checkpoints", "alpha", "sigma")
#: Settings that never change an id: the network follows the image size (Table 3), and the
#: dataset, which fixes it, is in every result row.
_UNNAMED_FIELDS = ("arch",)


@dataclass(frozen=True)
class RideConfig:
    """Settings of RIDE and its ablation variants; defaults are the paper's (Alg. 2).

    Where the paper leaves a choice open or the authors' public code is known to differ, a
    flag records it and defaults to our reading of the paper:

    - ``reset_optimizer_each_checkpoint`` (default True): Alg. 2 calls DAE(x^(t-1), w^(t-1),
      ...) and Alg. 1 receives only the initial weights, so each checkpoint starts a fresh Adam
      (moments at zero) from the carried-over weights. False keeps one Adam for all T*K steps.
    - ``noisy_target`` (default True): Eq. 7 adds Gaussian noise to the target ``s`` as well as
      to the input ``z``; False uses the noise-free target (the "fixed target" of Fig. 9).
    - ``return_iterate`` (default False): return ``x_est^(T)`` as Alg. 2 does; True returns the
      interpolated ``x^(T)``, which footnote 1 reports to be worse.
    - ``loss`` (default "mse"): the least-square loss of Alg. 2; "l1" is offered for study.
    - ``estimate_samples``: number of draws of z used for ``x_est = E_z[h(z)]`` (eval mode,
      dropout off). Ignored by DIP/I-DIP, whose input is fixed.
    """

    variant: Variant = "ride"
    arch: Arch = "mnist"
    iters: int = 2000  # K per checkpoint
    checkpoints: int = 5  # T
    alpha: float = 0.9
    sigma: float = 0.5
    lr: float = 1e-4
    weight_decay: float = 1e-4
    batch: int = 1  # n
    dropout: float = 0.5
    estimate_samples: int = 1
    reset_optimizer_each_checkpoint: bool = True
    noisy_target: bool = True
    return_iterate: bool = False
    loss: Literal["mse", "l1"] = "mse"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"unknown RIDE variant {self.variant!r}; choose from: {', '.join(VARIANTS)}"
            )
        if self.arch not in ARCHS:
            raise ValueError(f"unknown RIDE arch {self.arch!r}; choose from: {', '.join(ARCHS)}")
        for name in ("iters", "checkpoints", "batch", "estimate_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        alpha = check_finite_number(self.alpha, "alpha")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")
        if self.variant in ("dae", "dip") and alpha != 1.0:
            raise ValueError(
                f"variant {self.variant!r} has alpha = 1, got {self.alpha} "
                f"(use {'ride' if self.variant == 'dae' else 'idip'} for alpha < 1)"
            )
        if check_finite_number(self.sigma, "sigma") < 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if check_finite_number(self.lr, "lr") <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if check_finite_number(self.weight_decay, "weight_decay") < 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0.0 <= check_finite_number(self.dropout, "dropout") < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"unknown loss {self.loss!r}; choose from: mse, l1")

    @property
    def name(self) -> str:
        return self.variant

    @property
    def id(self) -> str:
        """``ride-K2000-T5-a0.9-s0.5``; ``-<hash>`` appended when another setting differs
        (``arch`` aside: it follows the dataset)."""
        base = (
            f"{self.variant}-K{self.iters}-T{self.checkpoints}"
            f"-a{fmt_number(self.alpha)}-s{fmt_number(self.sigma)}"
        )
        hashed = [f for f in fields(self) if f.name not in (*_NAMED_FIELDS, *_UNNAMED_FIELDS)]
        others = {f.name: getattr(self, f.name) for f in hashed}
        defaults = {f.name: f.default for f in hashed}
        if others == defaults:
            return base
        return f"{base}-{short_hash(others)}"

    def params(self) -> dict[str, float | int | bool | str]:
        return {"name": self.variant, **asdict(self)}


class ReconstructionFCN(nn.Module):
    """The reconstruction network ``h`` of Table 3.

    3x3 convs with padding 1, ReLU after every conv but the last, sigmoid output (images in
    [0, 1]), dropout with rate ``dropout`` after the ticked layers. Weights start from PyTorch's
    uniform default ("random uniform distribution", paper "Implementation of RIDE") drawn from
    ``generator``; dropout masks are drawn from the generator passed to ``forward``.
    """

    def __init__(
        self,
        arch: str,
        dropout: float,
        generator: torch.Generator,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown RIDE arch {arch!r}; choose from: {', '.join(ARCHS)}")
        channels, dropout_layers = ARCHS[arch]
        self.dropout = dropout
        self.dropout_layers = dropout_layers
        self.convs = nn.ModuleList(
            nn.utils.skip_init(nn.Conv2d, c_in, c_out, 3, padding=1, device=device, dtype=dtype)
            for c_in, c_out in itertools.pairwise(channels)
        )
        with torch.no_grad():
            for conv in self.convs:
                assert isinstance(conv, nn.Conv2d) and conv.bias is not None
                nn.init.kaiming_uniform_(conv.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(conv.weight[0].numel())
                nn.init.uniform_(conv.bias, -bound, bound, generator=generator)

    @property
    def in_channels(self) -> int:
        first = self.convs[0]
        assert isinstance(first, nn.Conv2d)
        return int(first.in_channels)

    def forward(
        self,
        z: Tensor,
        generator: torch.Generator | None = None,
        masks: Sequence[Tensor] | None = None,
    ) -> Tensor:
        """z: (n, C, H, W) -> (n, C, H, W) in (0, 1).

        Training mode with dropout needs either ``generator`` (masks drawn here) or ``masks``,
        one ready-made scaled keep mask per dropout layer (see ``_keep_masks``).
        """
        use_dropout = self.training and self.dropout > 0.0
        if use_dropout and generator is None and masks is None:
            raise ValueError("dropout in training mode needs a generator for its masks")
        h = z
        last = len(self.convs) - 1
        drop_index = 0
        for i, conv in enumerate(self.convs):
            h = conv(h)
            if i == last:
                return torch.sigmoid(h)
            h = F.relu(h)
            if use_dropout and i in self.dropout_layers:
                if masks is not None:
                    h = h * masks[drop_index]
                    drop_index += 1
                else:
                    keep = torch.rand(h.shape, generator=generator, device=h.device, dtype=h.dtype)
                    h = h * _keep_masks(keep, self.dropout)
        raise AssertionError("unreachable")


def _keep_masks(uniform: Tensor, p: float) -> Tensor:
    """Scaled dropout keep mask ``1[u >= p] / (1 - p)`` from uniforms ``u`` (any shape)."""
    return (uniform >= p).to(uniform.dtype) / (1.0 - p)


def _packed_dropout_bits(
    gen: torch.Generator, shape: Sequence[int], device: torch.device
) -> Tensor:
    """Random bytes of ``shape`` (..., C/8): the packed keep bits of rate-0.5 dropout masks.

    One random 64-bit word per 8 bytes: for the paper's rate (0.5) a keep mask is one fair
    bit per element, and drawing 64 of them at once is about ten times cheaper on a CPU than
    one ``torch.rand`` value per element (single-threaded; it was a third of a batched step).
    """
    numel = math.prod(shape)
    words = torch.randint(
        -(2**63), 2**63 - 1, (-(-numel // 8),), generator=gen, device=device, dtype=torch.int64
    )
    return words.view(torch.uint8)[:numel].view(*shape)


def _unpack_keep_masks(packed: Tensor, dtype: torch.dtype) -> Tensor:
    """Packed bits (..., k) uint8 -> scaled rate-0.5 keep masks (..., 8k) in {0, 2}.

    Bit b of byte j is element 8j + b; one table lookup per byte.
    """
    bits = torch.arange(8, device=packed.device)
    table = (((torch.arange(256, device=packed.device).unsqueeze(1) >> bits) & 1) * 2).to(dtype)
    masks = torch.index_select(table, 0, packed.reshape(-1).int())  # (numel, 8)
    return masks.view(*packed.shape[:-1], packed.shape[-1] * 8)


def _loss(out: Tensor, target: Tensor, kind: str) -> Tensor:
    return F.mse_loss(out, target) if kind == "mse" else F.l1_loss(out, target)


#: Most random numbers drawn per image and block (2**23 elements: 32 MiB in float32).
BLOCK_ELEMENTS = 2**23


def _dropout_channels(arch: str) -> list[int]:
    """Channels of the activations that dropout acts on, in layer order."""
    channels, dropout_layers = ARCHS[arch]
    return [channels[i + 1] for i in sorted(dropout_layers)]


def _block_len(cfg: RideConfig, image_shape: Sequence[int]) -> int:
    """Steps per random block: as many of the K steps as fit in ``BLOCK_ELEMENTS`` per image."""
    c, h, w = image_shape
    per_step = 0
    if cfg.variant in ("ride", "dae"):
        per_step += c * h * w * (2 if cfg.noisy_target else 1)
    if cfg.dropout > 0.0:
        per_step += sum(_dropout_channels(cfg.arch)) * h * w
    per_step *= cfg.batch
    if per_step == 0:
        return cfg.iters
    return max(1, min(cfg.iters, BLOCK_ELEMENTS // per_step))


@dataclass
class _Block:
    """One image's random numbers for ``steps`` consecutive training steps.

    ``masks`` holds, per dropout layer, either scaled keep masks (L, n, C_l, H, W) or, when
    ``packed``, their keep bits (L, n, H, W, C_l/8) uint8 (see ``_unpack_keep_masks``): the
    batched engine interleaves the images' bytes, 32 times less memory than their masks.
    """

    inp: Tensor | None  # (L, n, C, H, W) noisy inputs target + sigma * eps (None for DIP)
    s: Tensor | None  # (L, n, C, H, W) noisy targets (None for DIP or noise-free target)
    masks: list[Tensor]
    packed: bool = False

    def keep_masks(self, dtype: torch.dtype) -> list[Tensor]:
        """Per dropout layer the scaled keep masks (L, n, C_l, H, W) of this one image."""
        if not self.packed:
            return self.masks
        return [_unpack_keep_masks(m, dtype).movedim(-1, -3) for m in self.masks]


def _draw_block(gen: torch.Generator, cfg: RideConfig, target: Tensor, steps: int) -> _Block:
    """Draw the next block of ``steps`` training steps from ``gen``; target is (1, C, H, W).

    Order: input noise, target noise (if ``noisy_target``), then the dropout masks of each
    dropout layer (random bits for rate 0.5, else uniforms); DIP/I-DIP draw no noise.
    """
    device, dtype = target.device, target.dtype
    c, h, w = target.shape[1:]
    shape = (steps, cfg.batch, c, h, w)
    inp = s = None
    if cfg.variant in ("ride", "dae"):
        inp = target + cfg.sigma * torch.randn(shape, generator=gen, device=device, dtype=dtype)
        if cfg.noisy_target:
            s = target + cfg.sigma * torch.randn(shape, generator=gen, device=device, dtype=dtype)
    masks: list[Tensor] = []
    channels = _dropout_channels(cfg.arch)
    packed = cfg.dropout == 0.5 and all(ch % 8 == 0 for ch in channels)
    if cfg.dropout > 0.0:
        for ch in channels:
            if packed:
                masks.append(_packed_dropout_bits(gen, (steps, cfg.batch, h, w, ch // 8), device))
            else:
                u = torch.rand(
                    (steps, cfg.batch, ch, h, w), generator=gen, device=device, dtype=dtype
                )
                masks.append(_keep_masks(u, cfg.dropout))
    return _Block(inp, s, masks, packed)


def _blocks(cfg: RideConfig, image_shape: Sequence[int]) -> list[int]:
    """Lengths of the consecutive random blocks that cover one checkpoint's K steps."""
    size = _block_len(cfg, image_shape)
    return [min(size, cfg.iters - start) for start in range(0, cfg.iters, size)]


def _defend_one(
    x_adv: Tensor,
    cfg: RideConfig,
    seed: int,
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Reference: run ``cfg.variant`` on one image x_adv (1, C, H, W); returns it detached.

    RNG stream of ``generator_for(seed)`` (the batched engine draws exactly the same):

    1. network init, conv by conv: weight (Kaiming uniform) then bias;
    2. ``z0 ~ U(0, DIP_INPUT_SCALE)`` of shape (1, C, H, W) (drawn for every variant);
    3. per checkpoint t = 1..T:
       a. per block of L steps (``_blocks``: L = ``_block_len``, the last block shorter), see
          ``_draw_block``: input noise (L, n, C, H, W), target noise (L, n, C, H, W) if
          ``noisy_target``, dropout masks (L, n, C_l, H, W) per dropout layer; DIP draws no
          noise, step j of the block uses index j;
       b. estimate noise (m, C, H, W), m = ``estimate_samples`` (not for DIP).
    """
    device, dtype = x_adv.device, x_adv.dtype
    gen = generator_for(seed, device)
    net = ReconstructionFCN(cfg.arch, cfg.dropout, gen, device=device, dtype=dtype)
    shape = (cfg.batch, *x_adv.shape[1:])  # (n, C, H, W)
    dip = cfg.variant in ("dip", "idip")
    z0 = DIP_INPUT_SCALE * torch.rand(x_adv.shape, generator=gen, device=device, dtype=dtype)

    def new_optimizer() -> torch.optim.Optimizer:
        fused = device.type in ("cpu", "cuda")  # one kernel per step; same maths as Adam
        return torch.optim.Adam(
            net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused
        )

    opt = new_optimizer()
    x_t = x_adv  # x^(0) = x_adv, (1, C, H, W)
    x_est = x_adv
    for t in range(cfg.checkpoints):
        if t > 0 and cfg.reset_optimizer_each_checkpoint:
            opt = new_optimizer()
        target = x_t  # x^(t-1)
        net.train()
        for steps in _blocks(cfg, x_adv.shape[1:]):
            block = _draw_block(gen, cfg, target, steps)
            masks = block.keep_masks(dtype)
            for j in range(steps):
                inp = z0.expand(shape) if block.inp is None else block.inp[j]
                s = target.expand(shape) if block.s is None else block.s[j]
                out = net(inp, masks=[m[j] for m in masks])
                loss = _loss(out, s, cfg.loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        # the estimate in the images' dtype, from the (full-precision) weights, under bf16 too
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            if dip:
                x_est = net(z0).to(dtype)
            else:
                m = cfg.estimate_samples
                noise = torch.randn(
                    (m, *x_adv.shape[1:]), generator=gen, device=device, dtype=dtype
                )
                estimates = net(target + cfg.sigma * noise).to(dtype)  # (m, C, H, W)
                x_est = estimates.mean(dim=0, keepdim=True)  # (1, C, H, W)
            if cfg.alpha != 1.0:
                x_t = cfg.alpha * x_t + (1.0 - cfg.alpha) * x_est  # Eq. 9
        if progress is not None:
            progress(cfg.iters)
    out = x_t if cfg.return_iterate else x_est
    return out.detach().clamp(0.0, 1.0).to(dtype)


def _grouped(per_image: Sequence[Tensor]) -> Tensor:
    """Stack per-image tensors (..., n, C, H, W) into the grouped layout (..., n, B*C, H, W).

    The result is stored channels-last (memory order ..., n, H, W, B*C), the layout the
    batched engine's convolutions run fastest in on CPU.
    """
    stacked = torch.stack([t.movedim(-3, -1) for t in per_image], dim=-2)  # (..., n, H, W, B, C)
    return stacked.flatten(-2, -1).movedim(-1, -3)


def _grouped_masks(blocks: Sequence[_Block]) -> list[Tensor]:
    """Per dropout layer the B images' keep masks in the grouped layout.

    Unpacked masks: (L, n, B*C_l, H, W) as ``_grouped``. Packed bits: the images' bytes
    interleaved, (L, n, H, W, B*C_l/8), unpacked one step at a time by ``_step_masks`` (the
    step's masks then stay in cache instead of a whole block's going through memory).
    """
    layers = range(len(blocks[0].masks))
    if not blocks[0].packed:
        return [_grouped([blk.masks[k] for blk in blocks]) for k in layers]
    return [
        torch.stack([blk.masks[k] for blk in blocks], dim=-2).flatten(-2, -1)  # (L, n, H, W, B*C/8)
        for k in layers
    ]


def _step_masks(masks: Sequence[Tensor], j: int, packed: bool, dtype: torch.dtype) -> list[Tensor]:
    """Step j's grouped keep masks (n, B*C_l, H, W), channels-last, from ``_grouped_masks``."""
    if not packed:
        return [m[j] for m in masks]
    return [_unpack_keep_masks(m[j], dtype).movedim(-1, -3) for m in masks]


def _grouped_or_none(per_image: Sequence[Tensor | None]) -> Tensor | None:
    tensors = [t for t in per_image if t is not None]
    return _grouped(tensors) if tensors else None


def _defend_batched(
    x: Tensor,
    cfg: RideConfig,
    seeds: Sequence[int],
    progress: Callable[[int], None] | None = None,
) -> Tensor:
    """Fit all B images' networks at once; equals ``_defend_one`` image by image.

    The B networks are one grouped convolution (weights (B*C_out, C_in, 3, 3), groups=B) over
    activations laid out (n, B*C, H, W). The loss is the sum over images of each image's mean
    loss, so each image's gradient is its own; one (elementwise) Adam over the stacked
    parameters is then B independent Adams. Each image draws its random numbers from its own
    generator in the order and blocks documented in ``_defend_one``.
    """
    device, dtype = x.device, x.dtype
    b, c, height, width = x.shape
    gens = [generator_for(seed, device) for seed in seeds]
    nets = [ReconstructionFCN(cfg.arch, cfg.dropout, g, device=device, dtype=dtype) for g in gens]
    z0s = [
        DIP_INPUT_SCALE * torch.rand((1, c, height, width), generator=g, device=device, dtype=dtype)
        for g in gens
    ]
    weights: list[Tensor] = []
    biases: list[Tensor] = []
    for layer in range(len(nets[0].convs)):
        convs = [net.convs[layer] for net in nets]
        ws = [conv.weight.detach() for conv in convs if isinstance(conv, nn.Conv2d)]
        bs = [
            conv.bias.detach()
            for conv in convs
            if isinstance(conv, nn.Conv2d) and conv.bias is not None
        ]
        assert len(ws) == len(bs) == b
        weights.append(
            torch.cat(ws).contiguous(memory_format=torch.channels_last).requires_grad_()
        )  # (B*C_out, C_in, 3, 3)
        biases.append(torch.cat(bs).requires_grad_())  # (B*C_out,)
    params = [p for pair in zip(weights, biases, strict=True) for p in pair]
    drop_layers = nets[0].dropout_layers
    last = len(weights) - 1
    n = cfg.batch
    dip = cfg.variant in ("dip", "idip")
    z0 = torch.cat(z0s, dim=1)  # (1, B*C, H, W)

    def forward(z: Tensor, masks: Sequence[Tensor] | None) -> Tensor:
        h = z.contiguous(memory_format=torch.channels_last)
        drop_index = 0
        for i, (w, bias) in enumerate(zip(weights, biases, strict=True)):
            h = F.conv2d(h, w, bias, padding=1, groups=b)
            if i == last:
                return torch.sigmoid(h)
            h = F.relu(h)
            if masks is not None and i in drop_layers:
                h = h * masks[drop_index]
                drop_index += 1
        raise AssertionError("unreachable")

    def new_optimizer() -> torch.optim.Optimizer:
        fused = device.type in ("cpu", "cuda")
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)

    def loss_fn(out: Tensor, s: Tensor) -> Tensor:
        diff = out - s  # (n, B*C, H, W)
        per = diff.square() if cfg.loss == "mse" else diff.abs()
        # sum over images of each image's mean loss; all images have n*C*H*W elements
        return per.sum() / (n * c * height * width)

    opt = new_optimizer()
    x_t = x.reshape(1, b * c, height, width)  # x^(0), grouped layout
    x_est = x_t
    use_dropout = cfg.dropout > 0.0
    # Under bf16 autocast the activations are bfloat16: unpack the {0, 2} masks in it too.
    autocast = torch.is_autocast_enabled(device.type)
    mask_dtype = torch.get_autocast_dtype(device.type) if autocast else dtype
    for t in range(cfg.checkpoints):
        if t > 0 and cfg.reset_optimizer_each_checkpoint:
            opt = new_optimizer()
        target = x_t
        targets = x_t.view(b, 1, c, height, width)
        for steps in _blocks(cfg, (c, height, width)):
            blocks = [_draw_block(g, cfg, targets[i], steps) for i, g in enumerate(gens)]
            inp_all = _grouped_or_none([blk.inp for blk in blocks])
            s_all = _grouped_or_none([blk.s for blk in blocks])
            masks_all = _grouped_masks(blocks)
            packed = blocks[0].packed
            del blocks
            inp_fixed = z0.expand(n, -1, -1, -1)
            s_fixed = target.expand(n, -1, -1, -1)
            for j in range(steps):
                inp = inp_fixed if inp_all is None else inp_all[j]
                s = s_fixed if s_all is None else s_all[j]
                masks = _step_masks(masks_all, j, packed, mask_dtype) if use_dropout else None
                out = forward(inp, masks)
                loss = loss_fn(out, s)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        # the estimate in the images' dtype, from the (full-precision) weights, under bf16 too
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            if dip:
                x_est = forward(z0, None).to(dtype)
            else:
                m = cfg.estimate_samples
                noise = torch.cat(
                    [
                        torch.randn((m, c, height, width), generator=g, device=device, dtype=dtype)
                        for g in gens
                    ],
                    dim=1,
                )  # (m, B*C, H, W)
                estimates = forward(target + cfg.sigma * noise, None).to(dtype)  # (m, B*C, H, W)
                x_est = estimates.mean(dim=0, keepdim=True)
            if cfg.alpha != 1.0:
                x_t = cfg.alpha * x_t + (1.0 - cfg.alpha) * x_est  # Eq. 9
        if progress is not None:
            for _ in range(b):
                progress(cfg.iters)
    out = x_t if cfg.return_iterate else x_est
    return out.detach().reshape(b, c, height, width).clamp(0.0, 1.0).to(dtype).contiguous()


Engine = Literal["batched", "reference"]
Precision = Literal["fp32", "tf32", "bf16"]

PRECISIONS: tuple[str, ...] = ("fp32", "tf32", "bf16")
#: Share of the free memory that ``max_batch="auto"`` sizes a fit for: a CUDA device's free
#: memory (``torch.cuda.mem_get_info``), or the host's available RAM on the CPU.
CUDA_MEMORY_FRACTION = 0.8
CPU_MEMORY_FRACTION = 0.5


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """Raise ValueError unless ``precision`` is one of ``PRECISIONS`` (usable on ``device``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from: {', '.join(PRECISIONS)}")
    if precision == "tf32" and device is not None and torch.device(device).type != "cuda":
        raise ValueError("precision 'tf32' needs a CUDA device (TensorFloat-32 is a GPU format)")


@contextmanager
def fit_precision(precision: str, device: torch.device) -> Iterator[None]:
    """The arithmetic of the RIDE fits run inside (and nothing else: flags are restored).

    - ``fp32``: IEEE arithmetic in the images' dtype; on CUDA, cuDNN's TF32 convolutions
      (PyTorch's default there) are switched off.
    - ``tf32`` (CUDA only): convolutions take TensorFloat-32 inputs (10-bit mantissa) and
      accumulate in float32; everything else float32.
    - ``bf16``: autocast: convolutions and activations in bfloat16; the parameters, Adam's
      moments, the loss and the returned image stay in the images' dtype (bfloat16 has
      float32's exponent range, so no loss scaling). Fast on GPUs and on CPUs with bf16
      instructions (AVX512-BF16, AMX); emulated, hence slow, on other CPUs.
    """
    check_precision(precision, device)
    with ExitStack() as stack:
        if device.type == "cuda":
            conv = torch.backends.cudnn.conv  # type: ignore[attr-defined]  # not in the stubs
            stack.callback(setattr, conv, "fp32_precision", conv.fp32_precision)
            conv.fp32_precision = "tf32" if precision == "tf32" else "ieee"
        if precision == "bf16":
            # no weight-cast cache: it would keep the first step's bf16 weights for the
            # whole fit, which spans many optimiser steps
            stack.enter_context(
                torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
            )
        yield


def memory_budget_bytes(device: torch.device) -> int:
    """Memory one fit may use: ``CUDA_MEMORY_FRACTION`` of the device's free memory, or
    ``CPU_MEMORY_FRACTION`` of the host's available (free) RAM."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_MEMORY_FRACTION)
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(available * CPU_MEMORY_FRACTION)


def estimate_memory_bytes(
    cfg: RideConfig, image_shape: Sequence[int], batch: int, element_bytes: int = 4
) -> int:
    """Working set of the batched engine fitting ``batch`` images of ``image_shape`` (C, H, W).

    A linear model, per image: parameters with their gradients and two Adam moments
    (4 x params); the activations a training step keeps for backward and their gradients
    (3 tensors per conv layer: output, ReLU/dropout output, their gradient; n samples);
    one random block (``_block_len`` steps of noise, with dropout bits packed 8 per byte)
    held twice while it is regrouped; one step's unpacked dropout masks. It is meant to pick
    ``max_batch`` with a margin, not to be exact to the byte.
    """
    c, h, w = (int(v) for v in image_shape)
    channels, dropout_layers = ARCHS[cfg.arch]
    params = sum(ci * co * 9 + co for ci, co in itertools.pairwise(channels))
    hw = h * w
    activations = 3 * sum(channels[1:]) * hw * cfg.batch
    dropout_channels = sum(channels[i + 1] for i in dropout_layers) if cfg.dropout > 0 else 0
    noise = (2 if cfg.noisy_target else 1) * c * hw * cfg.batch
    packed = dropout_channels * hw * cfg.batch / 8 / element_bytes  # in elements
    block = _block_len(cfg, (c, h, w)) * (noise + packed) * 2
    step_masks = dropout_channels * hw * cfg.batch
    per_image = 4 * params + activations + block + step_masks + 4 * c * hw
    return int(batch * per_image * element_bytes)


def max_batch_for(cfg: RideConfig, image_shape: Sequence[int], budget_bytes: int) -> int:
    """The most images the batched engine should fit at once within ``budget_bytes`` (>= 1)."""
    per_image = estimate_memory_bytes(cfg, image_shape, 1)
    return max(1, int(budget_bytes // per_image))


def ride(
    x: Tensor,
    cfg: RideConfig,
    seeds: Sequence[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    engine: Engine = "batched",
    max_batch: int | Literal["auto"] | None = None,
    precision: Precision = "fp32",
) -> Tensor:
    """Defend a batch x (B, C, H, W) in [0, 1] with ``cfg.variant``; returns a new tensor.

    ``seeds[i]`` seeds image i's network init, noise and dropout masks; with ``seeds=None``
    they are drawn from torch's default generator. Works under ``torch.no_grad()`` and inside
    an autograd graph (the fit runs under ``enable_grad``; the result is detached).
    ``progress(steps_done, steps_total)`` is called after every checkpoint of every image.
    ``engine="batched"`` (default) fits all B networks at once as one grouped convolution;
    ``"reference"`` fits them one by one (slow; same result up to floating-point rounding).
    ``max_batch`` caps how many images the batched engine fits at once (the rest follow in
    further groups); ``"auto"`` takes :func:`max_batch_for` of :func:`memory_budget_bytes`, so
    a GPU is not oversubscribed. ``precision`` (see :func:`fit_precision`): ``fp32``
    (default), ``tf32`` (CUDA) or ``bf16``.
    """
    check_images(x)
    check_unit_range(x)
    if engine not in ("batched", "reference"):
        raise ValueError(f"unknown RIDE engine {engine!r}; choose from: batched, reference")
    check_precision(precision, x.device)
    channels = ARCHS[cfg.arch][0][0]
    if x.shape[1] != channels:
        raise ValueError(f"RIDE arch {cfg.arch!r} expects {channels} channel(s), got {x.shape[1]}")
    b = x.shape[0]
    if seeds is None:
        seed_list = torch.randint(0, 2**63 - 1, (b,), dtype=torch.int64).tolist()
    else:
        seed_list = check_seeds(seeds, b)
    if any(s < 0 for s in seed_list):
        raise ValueError(f"seeds must be >= 0, got {seed_list}")
    if max_batch == "auto":
        max_batch = max_batch_for(cfg, x.shape[1:], memory_budget_bytes(x.device))
    elif max_batch is not None and (
        isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1
    ):
        raise ValueError(f"max_batch must be an int >= 1 or 'auto', got {max_batch!r}")
    if b == 0:
        return x.detach().clone()
    total = b * cfg.checkpoints * cfg.iters
    done = 0

    def step_progress(steps: int) -> None:
        nonlocal done
        done += steps
        if progress is not None:
            progress(done, total)

    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        fit_precision(precision, x.device),
    ):
        x_in = x.detach().clone()
        if engine == "batched":
            group = b if max_batch is None else max_batch
            parts = [
                _defend_batched(x_in[i : i + group], cfg, seed_list[i : i + group], step_progress)
                for i in range(0, b, group)
            ]
            return parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)
        out = [_defend_one(x_in[i : i + 1], cfg, seed_list[i], step_progress) for i in range(b)]
    return torch.cat(out, dim=0)  # (B, C, H, W)


class Ride:
    """Callable RIDE defender: ``Ride(cfg)(x_adv, seeds)`` (see ``ride`` for the options)."""

    def __init__(
        self,
        cfg: RideConfig | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        engine: Engine = "batched",
        max_batch: int | Literal["auto"] | None = None,
        precision: Precision = "fp32",
    ) -> None:
        check_precision(precision)
        self.cfg = cfg or RideConfig()
        self.progress = progress
        self.engine: Engine = engine
        self.max_batch = max_batch
        self.precision: Precision = precision

    @property
    def id(self) -> str:
        return self.cfg.id

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        return ride(
            x,
            self.cfg,
            seeds,
            self.progress,
            engine=self.engine,
            max_batch=self.max_batch,
            precision=self.precision,
        )
