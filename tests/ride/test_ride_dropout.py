"""``dropout``: a setting and run key of the RIDE family (paper "Implementation of RIDE": ratio
0.5 at Table 3's layers; Fig. 5a compares DIP with and without it)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pipeline.config import RunConfig
from pipeline.settings import run_keys
from ride.defenders import make_defender
from ride.defenders.ride import Ride, ride
from ride.defenders.ride.streams import draw_block
from ride.registry import DEFENDERS
from ride.seeding import generator_for

FAMILY = ("ride", "dae", "dip", "idip")


def _family(name: str, **settings: object) -> Ride:
    """The RIDE-family defender ``name`` (ride, dae, dip, idip) with ``settings``."""
    out = make_defender(name, **settings)
    assert isinstance(out, Ride)
    return out


def _x(b: int = 2, size: int = 10) -> torch.Tensor:
    return torch.rand(b, 1, size, size, generator=generator_for(7), dtype=torch.float64)


def test_default_is_the_former_behaviour_and_keeps_every_id() -> None:
    """Every variant trained with dropout 0.5 before it was a run key: the ids stay."""
    assert [_family(name).dropout for name in FAMILY] == [0.5] * 4
    assert [make_defender(name).id for name in FAMILY] == [
        "ride-K2000-T5-a0.9-s0.5",
        "dae-K2000-T5-a1-s0.5",
        "dip-K2000-T5-a1-s0.5",
        "idip-K2000-T5-a0.9-s0.5",
    ]
    assert make_defender("ride", dropout=0.5).id == "ride-K2000-T5-a0.9-s0.5"
    assert make_defender("dip", dropout=0.5) == make_defender("dip")


def test_non_default_dropout_is_in_id_and_params() -> None:
    for name in FAMILY:
        plain, dropped = make_defender(name, dropout=0.0), make_defender(name)
        assert plain.id.startswith(dropped.id + "-") and plain.id != dropped.id
        assert plain.params()["dropout"] == 0.0 and dropped.params()["dropout"] == 0.5
    # 0 and 0.0 (a TOML integer) are one defender, with one id
    assert Ride(dropout=0).id == Ride(dropout=0.0).id
    assert isinstance(Ride(dropout=0).dropout, float)
    assert Ride(dropout=0.25).id != Ride(dropout=0.0).id


def test_dropout_is_a_sweepable_run_key_fed_to_the_family() -> None:
    key = run_keys()["dropout"]
    assert (key.default, key.sweep, key.group) == (0.5, True, "defender")
    assert set(FAMILY) <= set(key.used_by)


def test_run_id_is_unchanged_at_the_default_and_a_sweep_gives_fig_5a() -> None:
    base = {"defenders": ["dip", "ride"], "ride_iters": 3}
    plain = RunConfig.from_mapping(base)
    assert RunConfig.from_mapping({**base, "dropout": 0.5}).run_id == plain.run_id
    assert "dropout" not in plain.run_record()
    assert RunConfig.from_mapping({**base, "dropout": 0.0}).run_id != plain.run_id
    swept = RunConfig.from_mapping({**base, "dropout": [0, 0.5]})
    ids = [d.id for d in swept.defender_configs()]
    assert ids == [
        make_defender("dip", iters=3, arch="mnist", dropout=0.0).id,
        "dip-K3-T5-a1-s0.5",
        make_defender("ride", iters=3, arch="mnist", dropout=0.0).id,
        "ride-K3-T5-a0.9-s0.5",
    ]


@pytest.mark.parametrize("dropout", [0.0, 0.25, 0.5])
@pytest.mark.parametrize("name", FAMILY)
def test_batched_equals_per_image_at_every_dropout(name: str, dropout: float) -> None:
    cfg = _family(name, iters=3, checkpoints=2, dropout=dropout)
    x = _x()
    reference = ride(x, cfg, [3, 4], engine="reference")
    torch.testing.assert_close(ride(x, cfg, [3, 4]), reference, rtol=0.0, atol=1e-10)


@pytest.mark.parametrize("name", FAMILY)
def test_dropout_changes_the_result(name: str) -> None:
    x = _x()
    cfg = _family(name, iters=3, checkpoints=2, lr=1e-2)
    with_dropout = cfg(x, [3, 4])
    without = dataclasses.replace(cfg, dropout=0.0)(x, [3, 4])
    assert (with_dropout - without).abs().max() > 1e-4


def test_dropout_zero_draws_no_masks() -> None:
    cfg = Ride(arch="mnist", iters=3, dropout=0.0)
    target = _x(1)
    block = draw_block(generator_for(0), cfg, target, 3)
    assert block.masks == [] and block.inp is not None and block.s is not None
    kept = draw_block(generator_for(0), dataclasses.replace(cfg, dropout=0.25), target, 3)
    assert len(kept.masks) == 2  # MNIST network: dropout after conv2 and conv3 (Table 3)
    for mask in kept.masks:  # scaled keep masks: 0 or 1 / (1 - p)
        assert set(mask.unique().tolist()) == {0.0, 1.0 / 0.75}


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan"), float("inf"), "half"])
def test_dropout_out_of_range_is_a_one_line_error(value: object) -> None:
    for name in FAMILY:
        with pytest.raises(ValueError, match=r"^dropout must be") as err:
            DEFENDERS[name].build(dropout=value)
        assert "\n" not in str(err.value)
