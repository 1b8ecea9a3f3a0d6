"""Defender registry: names, the one class per defender, ids, params and validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ride.defenders import (
    DEFENDERS,
    Median,
    NoDefence,
    Ride,
    TVBregman,
    TVChambolle,
    build_defender,
    make_defender,
)
from ride.registry import settings_of


def test_names() -> None:
    assert DEFENDERS.names() == (
        "none",
        "median",
        "tv-bregman",
        "tv-chambolle",
        "ride",
        "dae",
        "dip",
        "idip",
    )
    for name in DEFENDERS:
        defender = make_defender(name)
        assert defender.name == name
        assert build_defender(defender).id == defender.id


def test_make_defender_maps_variants() -> None:
    assert make_defender("none") == NoDefence()
    assert make_defender("median", kernel=5) == Median(kernel=5)
    assert make_defender("tv-bregman", weight=3.0) == TVBregman(weight=3.0)
    assert make_defender("tv-chambolle") == TVChambolle()
    assert make_defender("ride") == Ride()
    assert make_defender("dae") == Ride(variant="dae", alpha=1.0)
    assert make_defender("dip") == Ride(variant="dip", alpha=1.0)
    assert make_defender("idip") == Ride(variant="idip", alpha=0.9)


def test_ids_are_stable() -> None:
    assert NoDefence().id == "none"
    assert Median().id == "median-k3"
    assert Median(kernel=7).id == "median-k7"
    assert TVBregman(weight=2.0).id == "tv-bregman-w2"
    assert TVBregman(weight=0.125).id == "tv-bregman-w0.125"
    assert TVBregman(isotropic=False).id == "tv-bregman-w2-aniso"
    assert TVChambolle(weight=0.3).id == "tv-chambolle-w0.3"
    assert Ride().id == "ride-K2000-T5-a0.9-s0.5"
    assert Ride(iters=300).id == "ride-K300-T5-a0.9-s0.5"
    assert make_defender("dae").id == "dae-K2000-T5-a1-s0.5"
    assert make_defender("dip").id == "dip-K2000-T5-a1-s0.5"
    assert make_defender("idip").id == "idip-K2000-T5-a0.9-s0.5"


def test_params_record_every_setting() -> None:
    assert NoDefence().params() == {"name": "none"}
    assert Median(kernel=5).params() == {"name": "median", "kernel": 5}
    assert TVBregman().params() == {"name": "tv-bregman", "weight": 2.0, "isotropic": True}
    assert TVChambolle().params() == {"name": "tv-chambolle", "weight": 0.3}


def test_ride_id_hashes_settings_outside_the_name() -> None:
    a = Ride(lr=1e-3).id
    b = Ride(lr=1e-3).id
    c = Ride(dropout=0.3).id
    assert a == b and a.startswith("ride-K2000-T5-a0.9-s0.5-") and len(a.split("-")[-1]) == 8
    assert a != c
    assert Ride(lr=1e-3).params()["lr"] == 1e-3


def test_every_setting_has_help_text() -> None:
    for entry in DEFENDERS.entries():
        for name, meta in settings_of(entry.cls).items():
            assert meta.help.strip(), f"{entry.name}.{name} has no help"


def test_build_defender_sets_execution_fields_only() -> None:
    ride = build_defender(Ride(iters=3), precision="bf16", max_batch=2)
    assert isinstance(ride, Ride) and (ride.precision, ride.max_batch) == ("bf16", 2)
    assert ride == Ride(iters=3) and ride.id == Ride(iters=3).id  # not part of the identity
    assert build_defender(Median(), precision="bf16") == Median()
    with pytest.raises(ValueError, match="precision"):
        build_defender(Median(), precision="fp8")  # type: ignore[arg-type]


def test_defenders_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Median().kernel = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("bm3d", {}, "unknown defender 'bm3d'; choose from: none, median, tv-bregman"),
        ("median", {"kernel": 4}, "odd int >= 1"),
        ("median", {"size": 3}, "unknown setting"),
        ("ride", {"variant": "dip"}, "unknown setting"),
        ("dae", {"alpha": 0.9}, "unknown setting"),
        ("ride", {"alpha": 1.5}, "alpha must be in"),
        ("ride", {"iters": 0}, "iters must be"),
        ("ride", {"sigma": -0.1}, "sigma must be"),
        ("ride", {"dropout": 1.0}, "dropout must be"),
        ("ride", {"arch": "vgg"}, "unknown RIDE arch 'vgg'; choose from: mnist, cifar, imagenet"),
        ("ride", {"lr": float("nan")}, "lr must be finite"),
    ],
)
def test_validation(name: str, settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_defender(name, **settings)


def test_dae_and_dip_fix_alpha() -> None:
    with pytest.raises(ValueError, match="alpha = 1"):
        Ride(variant="dae", alpha=0.9)


def test_none_returns_a_copy() -> None:
    x = torch.rand(2, 1, 4, 4)
    out = NoDefence()(x)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
