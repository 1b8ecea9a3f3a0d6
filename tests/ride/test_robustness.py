"""The attacker's choice of iterate and the majority vote (ride/robustness.py): known values,
the one-at-a-time choice equal to the choice made at once, shapes and errors."""

from __future__ import annotations

import pytest
import torch

from ride.robustness import IterateChoice, choose_iterations, majority_correct


def _feed(fractions: torch.Tensor, draws: int = 4) -> IterateChoice:
    chooser = IterateChoice()
    for k, row in enumerate(fractions):  # iterate k's images are filled with k
        chooser.see(k, torch.full((len(row), 1, 2, 2), float(k)), row, draws)
    return chooser


def test_the_attacker_picks_the_iterate_least_often_right_and_the_later_on_a_tie() -> None:
    fractions = torch.tensor(
        [
            [1.00, 0.75, 0.50, 1.00],
            [0.75, 0.75, 0.75, 1.00],
            [1.00, 0.25, 0.50, 1.00],
        ]
    )  # (iterates, images)
    choice = _feed(fractions).choice()
    assert choice.iteration.tolist() == [1, 2, 2, 2]
    assert choice.attacker_correct.tolist() == [0.75, 0.25, 0.50, 1.00]
    assert choice.images[:, 0, 0, 0].tolist() == [1.0, 2.0, 2.0, 2.0]  # that iterate's image
    assert choice.every_draw_correct.tolist() == [False, False, False, True]
    assert choice.attacker_draws == 4
    assert torch.equal(choose_iterations(fractions), choice.iteration)


def test_one_at_a_time_equals_all_at_once() -> None:
    generator = torch.Generator().manual_seed(0)
    fractions = torch.randint(0, 4, (11, 64), generator=generator).float() / 3  # many ties
    assert torch.equal(_feed(fractions, 3).choice().iteration, choose_iterations(fractions))


def test_the_choice_copies_nothing_it_is_given_and_keeps_no_graph() -> None:
    images = torch.rand(2, 1, 2, 2, requires_grad=True)
    chooser = IterateChoice()
    chooser.see(0, images * 1, torch.tensor([0.5, 1.0]), 2)
    assert not chooser.choice().images.requires_grad


def test_the_choice_refuses_what_it_cannot_compare() -> None:
    with pytest.raises(ValueError, match="saw no iterate"):
        IterateChoice().choice()
    chooser = IterateChoice()
    with pytest.raises(ValueError, match=r"images \(B, C, H, W\) and attacker_correct \(B,\)"):
        chooser.see(0, torch.rand(2, 1, 2, 2), torch.rand(3), 1)
    chooser.see(0, torch.rand(2, 1, 2, 2), torch.rand(2), 1)
    with pytest.raises(ValueError, match="same images and attacker draws"):
        chooser.see(1, torch.rand(2, 1, 2, 2), torch.rand(2), 5)
    with pytest.raises(ValueError, match=r"fractions \(K \+ 1, B\)"):
        choose_iterations(torch.rand(4))


def test_the_majority_vote_needs_the_label_strictly_ahead() -> None:
    predictions = torch.tensor(
        [
            [3, 1, 2, 7],
            [3, 2, 2, 7],
            [5, 1, 0, 7],
            [3, 2, 0, 7],
        ]
    )  # (R, B)
    labels = torch.tensor([3, 1, 0, 7])
    assert majority_correct(predictions, labels).tolist() == [True, False, False, True]
    assert majority_correct(predictions[:1], labels).tolist() == [True, True, False, True]
    # a plurality is enough: 2 of 4 right, the other two split
    assert majority_correct(torch.tensor([[4], [4], [1], [2]]), torch.tensor([4])).tolist() == [
        True
    ]
    with pytest.raises(ValueError, match=r"predictions \(R, B\) and labels \(B,\)"):
        majority_correct(torch.tensor([1, 2]), torch.tensor([1, 2]))
