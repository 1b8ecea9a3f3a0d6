"""Seeds derive from named parts, stably, and generators are independent of global state."""

from __future__ import annotations

import pytest
import torch

from ride.seeding import derive_seed, generator_for


def test_derive_seed_is_stable_and_63_bit() -> None:
    s = derive_seed(0, "digits", 17, "ride")
    assert s == derive_seed(0, "digits", 17, "ride")
    assert 0 <= s < 2**63
    # a fixed value guards against accidental changes of the derivation
    assert s == 5321490359469862986


def test_derive_seed_separates_parts() -> None:
    seeds = {
        derive_seed(0, "digits", 1, "ride"),
        derive_seed(1, "digits", 1, "ride"),
        derive_seed(0, "digits", 2, "ride"),
        derive_seed(0, "digits", "1", "ride"),
        derive_seed(0, "digits", 1, "pgd"),
        derive_seed(0, "digits1", "ride"),
    }
    assert len(seeds) == 6


def test_derive_seed_rejects_other_types() -> None:
    with pytest.raises(ValueError, match="seed"):
        derive_seed(0, 1.5)  # type: ignore[arg-type]


def test_generator_for_is_reproducible_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a = torch.rand(4, generator=generator_for(7))
    b = torch.rand(4, generator=generator_for(7))
    assert torch.equal(a, b)
    assert not torch.equal(a, torch.rand(4, generator=generator_for(8)))
    assert torch.equal(state, torch.get_rng_state())
