"""The resolved settings of one evaluation run, as the CLI, presets and deployments give them.

A run is described by a flat mapping whose keys are the ``ride run`` option names with
underscores (``ride_iters``, ``attack_iters``...). TOML presets use the same keys. The mapping
is validated once here, at the flow boundary, into a frozen :class:`RunConfig`.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ride.attacks import ATTACKS, AttackConfig
from ride.classifiers import CLASSIFIERS
from ride.datasets import DATASETS
from ride.defenders import DEFENDERS, DefenderConfig, defender_config

DEMO_LIMIT = 60
"""Images of the digits test split the demo evaluates (the split has 450)."""


class ConfigError(ValueError):
    """A setting is unknown or out of range."""


@dataclass(frozen=True)
class RunConfig:
    """Everything a run depends on. Defaults are the embedded demo (see README)."""

    dataset: str = "digits"
    limit: int | None = DEMO_LIMIT
    seed: int = 0
    classifier: str = "mnist-cnn"
    weights: str | None = None
    attacks: tuple[str, ...] = ("none", "fgsm", "pgd")
    eps: float = 0.1
    step: float = 0.02
    attack_iters: int = 10
    eot: int = 15
    recheck: int = 1
    defenders: tuple[str, ...] = ("none", "median", "tv-bregman", "ride")
    median_kernel: int = 3
    bregman_weight: float = 2.0
    chambolle_weight: float = 0.3
    ride_iters: int = 200
    ride_checkpoints: int = 5
    alpha: float = 0.9
    sigma: float = 0.5
    lr: float = 1e-4
    weight_decay: float = 1e-4
    chunk_size: int = 10
    device: str = "cpu"
    # execution settings: may change between a run and its resume
    workers: int = 2
    threads: int = 1
    scheduler: str | None = None

    EXECUTION_KEYS = frozenset({"workers", "threads", "scheduler"})

    def __post_init__(self) -> None:
        _check(
            self.dataset in DATASETS,
            f"unknown dataset '{self.dataset}'; choose from: " + ", ".join(DATASETS),
        )
        _check(
            self.classifier in CLASSIFIERS,
            f"unknown classifier '{self.classifier}'; choose from: " + ", ".join(CLASSIFIERS),
        )
        for name in self.attacks:
            _check(name in ATTACKS, f"unknown attack '{name}'; choose from: " + ", ".join(ATTACKS))
        for name in self.defenders:
            _check(
                name in DEFENDERS,
                f"unknown defender '{name}'; choose from: " + ", ".join(DEFENDERS),
            )
        _check(len(self.attacks) > 0, "give at least one --attack")
        _check(len(self.defenders) > 0, "give at least one --defender")
        _check(len(set(self.attacks)) == len(self.attacks), "an --attack is given twice")
        _check(len(set(self.defenders)) == len(self.defenders), "a --defender is given twice")
        _check(0 < self.eps <= 1, f"--eps must be in (0, 1], got {self.eps}")
        _check(self.step > 0, f"--step must be positive, got {self.step}")
        for key in (
            "attack_iters",
            "eot",
            "recheck",
            "ride_iters",
            "ride_checkpoints",
            "chunk_size",
            "workers",
            "threads",
            "median_kernel",
        ):
            value = getattr(self, key)
            _check(value > 0, f"--{key.replace('_', '-')} must be positive, got {value}")
        _check(self.limit is None or self.limit > 0, f"--limit must be positive, got {self.limit}")
        _check(self.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got {self.device}")
        # Building the per-name settings validates them (kernel parity, alpha range...).
        try:
            self.attack_configs()
            self.defender_configs()
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def attack_configs(self) -> list[AttackConfig]:
        return [
            AttackConfig(
                name=name,  # type: ignore[arg-type]
                eps=self.eps,
                step=self.step,
                iters=self.attack_iters,
                eot=self.eot if name == "bpda-eot" else 1,
            )
            for name in self.attacks
        ]

    def defender_configs(self) -> list[DefenderConfig]:
        ride_settings = {
            "iters": self.ride_iters,
            "checkpoints": self.ride_checkpoints,
            "alpha": self.alpha,
            "sigma": self.sigma,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
        }
        per_name: dict[str, dict[str, Any]] = {
            "none": {},
            "median": {"kernel": self.median_kernel},
            "tv-bregman": {"weight": self.bregman_weight},
            "tv-chambolle": {"weight": self.chambolle_weight},
            "ride": ride_settings,
            "dae": {k: v for k, v in ride_settings.items() if k != "alpha"},
            "dip": {k: v for k, v in ride_settings.items() if k not in ("alpha", "sigma")},
            "idip": {k: v for k, v in ride_settings.items() if k != "sigma"},
        }
        return [defender_config(name, **per_name[name]) for name in self.defenders]

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping this config was built from (lists for tuples)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @property
    def run_id(self) -> str:
        """A short stable id of what the results depend on (same across resumes)."""
        identity = {k: v for k, v in self.to_dict().items() if k in self.identity()}
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.dataset}-{digest[:10]}"

    def identity(self) -> frozenset[str]:
        """The keys that must match for a run directory to be resumed."""
        return frozenset(self.to_dict()) - self.EXECUTION_KEYS

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        values = dict(settings)
        for key in ("attacks", "defenders"):
            if key in values:
                raw = values[key]
                values[key] = (raw,) if isinstance(raw, str) else tuple(raw)
        try:
            return cls(**values)
        except TypeError as error:
            raise ConfigError(str(error)) from None


def load_preset(path: Path) -> dict[str, Any]:
    """A TOML preset's settings (flat keys as in :class:`RunConfig`)."""
    if not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"--config {path}: not valid TOML ({error})") from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
