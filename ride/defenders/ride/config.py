"""The RIDE defender: one frozen dataclass of the settings of Alg. 2 and how its fits run.

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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from ride._checks import check_finite_number, fmt_number, short_hash
from ride.defenders.ride.archs import (
    ARCHS,
    VARIANTS,
    Arch,
    Engine,
    Variant,
    check_engine,
    check_max_batch,
    infer_arch,
)
from ride.defenders.ride.defend import ride
from ride.defenders.ride.precision import Precision, check_precision
from ride.registry import execution, field_default, setting, setting_values, settings_of

if TYPE_CHECKING:
    from torch import Tensor

_NAMED_FIELDS = ("variant", "iters", "checkpoints", "alpha", "sigma")
#: Settings that never change an id: the network follows the image size (Table 3), and the
#: dataset, which fixes it, is in every result row.
_UNNAMED_FIELDS = ("arch",)


@dataclass(frozen=True)
class Ride:
    """RIDE (Lin, Pfister and Zhang, arXiv 1909.06271, Alg. 2, Eq. 7-9) and its ablation
    variants DAE (alpha = 1), DIP and iterative DIP, as one defender.

    Each image gets its own reconstruction network ``h`` (Table 3), fitted K steps per
    checkpoint to noisy copies of the current estimate ``x^(t-1)`` (Eq. 7), which is then
    moved towards the network's estimate ``x_est^(t)`` (Eq. 9); ``x_est^(T)`` is returned.
    Defaults are the paper's (Alg. 2). The settings form the ``id`` and ``params()``; the
    execution fields (``precision``, ``max_batch``, ``engine``, ``progress``) only say how the
    fits run and take no part in id, params or equality.

    Where the paper leaves a choice open or the authors' public code is known to differ, a
    flag records it and defaults to our reading of the paper:

    - ``reset_optimizer_each_checkpoint`` (default True): Alg. 2 calls DAE(x^(t-1), w^(t-1),
      ...) and Alg. 1 receives only the initial weights, so each checkpoint starts a fresh Adam
      (moments at zero) from the carried-over weights. False keeps one Adam for all T*K steps.
    - ``noisy_target`` (default True): Eq. 7 adds Gaussian noise to the target ``s`` as well as
      to the input ``z``; False uses the noise-free target (the "fixed target" of Fig. 9).
    - ``return_iterate`` (default False): return ``x_est^(T)`` as Alg. 2 does; True returns the
      interpolated ``x^(T)``, which footnote 1 reports to be worse.
    - ``dropout`` (default 0.5, every variant): "If using dropout, dropout layers with a ratio
      of 0.5 are added" (paper, "Implementation of RIDE"); Fig. 5a compares DIP with and
      without it ("dropout helps DIP"), so it is a run key that may sweep (``dropout = [0,
      0.5]``). 0 trains without dropout (no masks drawn); the id names a non-default value.
    - ``loss`` (default "mse"): the least-square loss of Alg. 2; "l1" is offered for study.
    - ``estimate_samples``: number of draws of z used for ``x_est = E_z[h(z)]`` (eval mode,
      dropout off). Ignored by DIP/I-DIP, whose input is fixed.
    - ``arch`` (default None): the Table 3 network; None takes it from the images' shape
      (:func:`infer_arch`).

    Example:
        >>> import torch
        >>> x = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
        >>> defender = Ride(iters=2, checkpoints=1)
        >>> out = defender(x, seeds=[0, 1])
        >>> out.shape, bool(out.min() >= 0 and out.max() <= 1)
        (torch.Size([2, 1, 28, 28]), True)
        >>> defender.id
        'ride-K2-T1-a0.9-s0.5'
    """

    variant: Variant = setting(
        "ride", help="ride (Alg. 2), dae (Alg. 1), dip or idip (iterative DIP)"
    )
    arch: Arch | None = setting(
        None, help="Table 3 network: mnist, cifar or imagenet (None: from the image shape)"
    )
    iters: int = setting(
        2000, key="ride_iters", run_default=200, help="iterations K per checkpoint (Alg. 2: 2000)"
    )
    checkpoints: int = setting(5, key="ride_checkpoints", help="checkpoints T (Alg. 2: 5)")
    alpha: float = setting(
        0.9, key="alpha", sweep=True, help="interpolation alpha of Eq. 9 (Fig. 5c: 0.7-0.95)"
    )
    sigma: float = setting(
        0.5, key="sigma", sweep=True, help="Gaussian std sigma of Eq. 7 (Fig. 5d; Alg. 2: 0.5)"
    )
    lr: float = setting(1e-4, key="lr", help="Adam learning rate eta (Alg. 2: 1e-4)")
    weight_decay: float = setting(1e-4, key="weight_decay", help="Adam weight decay (1e-4)")
    batch: int = setting(1, help="mini-batch size n of (s, z) pairs per step (Fig. 5b: 1)")
    dropout: float = setting(
        0.5,
        key="dropout",
        sweep=True,
        help="dropout ratio in [0, 1) at Table 3's ticked layers (0.5; 0: none, Fig. 5a)",
    )
    estimate_samples: int = setting(1, help="draws of z for x_est = E_z[h(z)] (not DIP)")
    reset_optimizer_each_checkpoint: bool = setting(
        True, help="fresh Adam at each checkpoint, as DAE(x^(t-1), w^(t-1)) of Alg. 2"
    )
    noisy_target: bool = setting(
        True, help="noise on the target s as well as the input z (Eq. 7; False: Fig. 9)"
    )
    return_iterate: bool = setting(
        False, help="return x^(T) instead of x_est^(T) (footnote 1: worse)"
    )
    loss: Literal["mse", "l1"] = setting("mse", help="loss l_h: mse (Alg. 2) or l1")

    precision: Precision = execution("fp32", help="arithmetic of the fits: fp32, tf32 or bf16")
    max_batch: int | Literal["auto"] | None = execution(
        None, help="most images fitted at once (None: all; 'auto': what free memory holds)"
    )
    engine: Engine = execution("batched", help="batched (grouped conv) or reference (one by one)")
    progress: Callable[[int, int], None] | None = execution(
        None, help="called with (steps done, steps total) after each checkpoint of each image"
    )

    randomised: ClassVar[bool] = True  # each image's fit is seeded by its seed
    differentiable: ClassVar[bool] = False  # the output is detached from the fits

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(
                f"unknown RIDE variant {self.variant!r}; choose from: {', '.join(VARIANTS)}"
            )
        if self.arch is not None and self.arch not in ARCHS:
            raise ValueError(f"unknown RIDE arch {self.arch!r}; choose from: {', '.join(ARCHS)}")
        for name in ("iters", "checkpoints", "batch", "estimate_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self._check_numbers()
        if self.loss not in ("mse", "l1"):
            raise ValueError(f"unknown loss {self.loss!r}; choose from: mse, l1")
        check_precision(self.precision)
        check_max_batch(self.max_batch)
        check_engine(self.engine)

    def _check_numbers(self) -> None:
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
        dropout = check_finite_number(self.dropout, "dropout")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        # a float, so that dropout 0 and 0.0 are one defender with one id
        object.__setattr__(self, "dropout", dropout)

    @classmethod
    def for_images(cls, image_shape: Sequence[int]) -> dict[str, Any]:
        """The settings the images fix: ``{"arch": infer_arch(image_shape)}``."""
        return {"arch": infer_arch(image_shape)}

    def with_arch_for(self, image_shape: Sequence[int]) -> Ride:
        """This defender, its ``arch`` inferred from ``image_shape`` (C, H, W) when None."""
        if self.arch is not None:
            return self
        return dataclasses.replace(self, arch=infer_arch(image_shape))

    @property
    def cost_hint(self) -> float:
        """Relative cost per image (1: a median filter): its Adam steps, ``iters * checkpoints``."""
        return float(self.iters * self.checkpoints)

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
        hashed = [n for n in settings_of(type(self)) if n not in (*_NAMED_FIELDS, *_UNNAMED_FIELDS)]
        others = {n: getattr(self, n) for n in hashed}
        defaults = {n: field_default(type(self), n) for n in hashed}
        if others == defaults:
            return base
        return f"{base}-{short_hash(others)}"

    def params(self) -> dict[str, Any]:
        """``{"name": variant, **settings}``: what every result row records."""
        return {"name": self.variant, **setting_values(self)}

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        """Defend x (B, C, H, W) in [0, 1]; ``seeds[i]`` seeds image i (see :func:`ride`)."""
        return ride(
            x,
            self,
            seeds,
            self.progress,
            engine=self.engine,
            max_batch=self.max_batch,
            precision=self.precision,
        )
