"""FGSM: Goodfellow, Shlens and Szegedy, "Explaining and harnessing adversarial examples"
(2014). One sign step of size eps on the cross-entropy; the paper evaluates it with eps
0.015 on ImageNet (Table 1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from ride.attacks.base import Attack, check_eps, check_inputs, eval_mode, input_gradient, sign_steps
from ride.registry import ATTACKS, setting


def fgsm(model: nn.Module, x: Tensor, y: Tensor, eps: float) -> Tensor:
    """Fast Gradient Sign Method (Goodfellow et al., 2014): ``clip(x + eps sign(grad))``.

    x: (B, C, H, W) in [0, 1]; y: (B,) int64 labels. Returns a new tensor.
    """
    eps = check_eps(eps)
    check_inputs(x, y)
    x0 = x.detach().clone()
    with eval_mode(model):
        return sign_steps(lambda xk, _: input_gradient(model, xk, y), x0, eps, eps, 1, x0)


@dataclass(frozen=True)
class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow, Shlens and Szegedy, 2014): one sign step of
    size ``eps`` (paper, Table 1: eps 0.015 on ImageNet).

    Example:
        >>> import torch
        >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
        >>> x, y = torch.rand(2, 1, 28, 28), torch.tensor([3, 7])
        >>> x_adv = FGSM(model, eps=0.1)(x, y)
        >>> bool((x_adv - x).abs().max() <= 0.1 + 1e-6)
        True
    """

    eps: float = setting(
        0.1,
        key="fgsm_eps",
        fallback="eps",
        run_default=None,
        help="FGSM's eps when it differs from eps (paper Table 1: 0.015)",
    )

    name: ClassVar[str] = "fgsm"

    def __post_init__(self) -> None:
        check_eps(self.eps)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor, **_: Any) -> Tensor:
        return fgsm(model, x, y, self.eps)


ATTACKS.add("fgsm", FGSM, "gray-box")
