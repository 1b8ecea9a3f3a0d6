"""Robust accuracy that is sound for a randomised defender: the attacker's choice kept apart
from the evaluation.

A randomised defender (RIDE fits a fresh network from fresh noise each time) can undo an
attack by chance, so one draw on the final iterate flatters it, and asking for every one of
many draws to be right (the old "worst case") falls as draws are added even with no attack.
The protocol here, in the spirit of Athalye, Carlini and Wagner (2018) and of the
evaluations of randomised defences that followed (DiffPure; Croce et al., "Evaluating the
adversarial robustness of adaptive test-time defenses", 2022):

1. The attacker queries the defender at every iterate k = 0..iters with its own draws (the
   EOT draws it makes there anyway) and picks, per image, the iterate where its draws were
   least often classified correctly; ties go to the later iterate (:class:`IterateChoice`).
2. The chosen image is defended with R fresh draws whose seeds no attacker draw uses. The
   image's robust accuracy is the fraction of those R draws classified correctly, its
   majority vote whether the label is strictly the most frequent prediction
   (:func:`majority_correct`).

With no attack (eps 0) every iterate is the clean image, so the attacker's choice cannot
bias the fresh draws: the statistic is then the defender's accuracy per draw, what
randomness alone costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Choice:
    """The iterate the attacker submits, per image: ``images`` (B, C, H, W), the iterate
    ``iteration`` (B,), the fraction of its draws classified correctly there
    ``attacker_correct`` (B,), whether every draw it made at every iterate was classified
    correctly ``every_draw_correct`` (B,), and its draws per iterate."""

    images: Tensor
    iteration: Tensor
    attacker_correct: Tensor
    every_draw_correct: Tensor
    attacker_draws: int


class IterateChoice:
    """The attacker's running choice of iterate (step 1 of the protocol above): feed it the
    iterates in order (:meth:`see`); :meth:`choice` is, per image, the one where its draws
    were least often correct, the later one on a tie.

    Example:
        >>> import torch
        >>> chooser = IterateChoice()
        >>> for k, seen in enumerate([[1.0, 0.5], [0.5, 0.5], [1.0, 1.0]]):
        ...     chooser.see(k, torch.full((2, 1, 2, 2), float(k)), torch.tensor(seen), 2)
        >>> chooser.choice().iteration.tolist()
        [1, 1]
    """

    def __init__(self) -> None:
        self._choice: Choice | None = None

    def see(self, iteration: int, images: Tensor, attacker_correct: Tensor, draws: int) -> None:
        """Iterate ``iteration``: its images (B, C, H, W) and the fraction (B,) of the
        attacker's ``draws`` draws classified correctly there."""
        if images.dim() != 4 or attacker_correct.shape != images.shape[:1]:
            raise ValueError(
                f"expected images (B, C, H, W) and attacker_correct (B,), got "
                f"{tuple(images.shape)} and {tuple(attacker_correct.shape)}"
            )
        fraction = attacker_correct.detach().float()
        every = fraction >= 1.0
        here = torch.full_like(fraction, iteration, dtype=torch.long)
        if self._choice is None:
            self._choice = Choice(images.detach(), here, fraction, every, draws)
            return
        last = self._choice
        if len(images) != len(last.images) or draws != last.attacker_draws:
            raise ValueError("every iterate must hold the same images and attacker draws")
        take = fraction <= last.attacker_correct  # (B,): ties go to the later iterate
        self._choice = Choice(
            torch.where(take.view(-1, 1, 1, 1), images.detach(), last.images),
            torch.where(take, here, last.iteration),
            torch.where(take, fraction, last.attacker_correct),
            last.every_draw_correct & every,
            draws,
        )

    def choice(self) -> Choice:
        if self._choice is None:
            raise ValueError("the attacker saw no iterate")
        return self._choice


def choose_iterations(attacker_correct: Tensor) -> Tensor:
    """The attacker's choice made at once from the fractions (K + 1, B) of its draws
    classified correctly at iterates 0..K: per image the iterate of the lowest fraction,
    the latest on a tie (what :class:`IterateChoice` picks one iterate at a time).

    Example:
        >>> import torch
        >>> choose_iterations(torch.tensor([[1.0, 0.5], [0.5, 0.5], [1.0, 1.0]])).tolist()
        [1, 1]
    """
    if attacker_correct.dim() != 2 or len(attacker_correct) == 0:
        raise ValueError(f"expected fractions (K + 1, B), got {tuple(attacker_correct.shape)}")
    last = len(attacker_correct) - 1
    reversed_first = attacker_correct.flip(0).argmin(dim=0)  # argmin: the first minimum
    return last - reversed_first


def majority_correct(predictions: Tensor, labels: Tensor) -> Tensor:
    """Per image, whether the label is strictly the most frequent of the R draws'
    predictions (R, B): a tie with another class counts as wrong.

    Example:
        >>> import torch
        >>> predictions = torch.tensor([[3, 1, 2], [3, 2, 2], [5, 1, 0], [3, 2, 0]])
        >>> majority_correct(predictions, torch.tensor([3, 1, 0])).tolist()
        [True, False, False]
    """
    if predictions.dim() != 2 or predictions.shape[1:] != labels.shape:
        raise ValueError(
            f"expected predictions (R, B) and labels (B,), got {tuple(predictions.shape)} "
            f"and {tuple(labels.shape)}"
        )
    classes = int(max(int(predictions.max()), int(labels.max()))) + 1
    votes = torch.zeros(predictions.shape[1], classes, dtype=torch.long, device=labels.device)
    votes.scatter_add_(1, predictions.t().long(), torch.ones_like(predictions.t().long()))
    label_votes = votes.gather(1, labels.long().view(-1, 1)).squeeze(1)  # (B,)
    votes.scatter_(1, labels.long().view(-1, 1), -1)  # the best other class
    return label_votes > votes.max(dim=1).values
