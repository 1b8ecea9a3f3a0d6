"""Per-image distances in [0, 1] pixel units."""

from __future__ import annotations

import pytest
import torch

from ride.metrics import distances


def test_distances_per_image() -> None:
    a = torch.zeros(2, 1, 2, 2)
    b = torch.zeros(2, 1, 2, 2)
    b[0, 0, 0, 0] = 0.4
    b[1] = 0.5
    d = distances(a, b)
    assert set(d) == {"l1", "l2", "linf"}
    torch.testing.assert_close(d["l1"], torch.tensor([0.1, 0.5]))
    torch.testing.assert_close(d["l2"], torch.tensor([0.4, 1.0]))
    torch.testing.assert_close(d["linf"], torch.tensor([0.4, 0.5]))


def test_distances_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        distances(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 3, 3))
