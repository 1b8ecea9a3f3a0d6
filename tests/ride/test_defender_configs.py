"""Defender registry: names, configs, ids and validation."""

from __future__ import annotations

import pytest
import torch

from ride.defenders import (
    DEFENDERS,
    MedianConfig,
    NoDefenceConfig,
    Ride,
    RideConfig,
    TVBregmanConfig,
    TVChambolleConfig,
    build_defender,
    defender_config,
)


def test_names() -> None:
    assert DEFENDERS == (
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
        cfg = defender_config(name)
        assert cfg.name == name
        assert build_defender(cfg).id == cfg.id


def test_defender_config_maps_variants() -> None:
    assert defender_config("none") == NoDefenceConfig()
    assert defender_config("median", kernel=5) == MedianConfig(kernel=5)
    assert defender_config("tv-bregman", weight=3.0) == TVBregmanConfig(weight=3.0)
    assert defender_config("tv-chambolle") == TVChambolleConfig()
    assert defender_config("ride") == RideConfig()
    assert defender_config("dae") == RideConfig(variant="dae", alpha=1.0)
    assert defender_config("dip") == RideConfig(variant="dip", alpha=1.0)
    assert defender_config("idip") == RideConfig(variant="idip", alpha=0.9)
    assert isinstance(build_defender(RideConfig()), Ride)


def test_ids_are_stable() -> None:
    assert NoDefenceConfig().id == "none"
    assert MedianConfig().id == "median-k3"
    assert MedianConfig(kernel=7).id == "median-k7"
    assert TVBregmanConfig(weight=2.0).id == "tv-bregman-w2"
    assert TVBregmanConfig(weight=0.125).id == "tv-bregman-w0.125"
    assert TVChambolleConfig(weight=0.3).id == "tv-chambolle-w0.3"
    assert RideConfig().id == "ride-K2000-T5-a0.9-s0.5"
    assert RideConfig(iters=300).id == "ride-K300-T5-a0.9-s0.5"
    assert defender_config("dae").id == "dae-K2000-T5-a1-s0.5"
    assert defender_config("dip").id == "dip-K2000-T5-a1-s0.5"
    assert defender_config("idip").id == "idip-K2000-T5-a0.9-s0.5"


def test_ride_id_hashes_settings_outside_the_name() -> None:
    a = RideConfig(lr=1e-3).id
    b = RideConfig(lr=1e-3).id
    c = RideConfig(dropout=0.3).id
    assert a == b and a.startswith("ride-K2000-T5-a0.9-s0.5-") and len(a.split("-")[-1]) == 8
    assert a != c
    assert RideConfig(lr=1e-3).params()["lr"] == 1e-3


@pytest.mark.parametrize(
    ("name", "settings", "message"),
    [
        ("bm3d", {}, "unknown defender 'bm3d'; choose from: none, median, tv-bregman"),
        ("median", {"kernel": 4}, "odd int >= 1"),
        ("median", {"size": 3}, "unknown setting"),
        ("ride", {"variant": "dip"}, "unknown setting"),
        ("dae", {"alpha": 0.9}, "alpha = 1"),
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
        defender_config(name, **settings)


def test_none_returns_a_copy() -> None:
    x = torch.rand(2, 1, 4, 4)
    out = build_defender(NoDefenceConfig())(x)
    assert torch.equal(out, x) and out.data_ptr() != x.data_ptr()
