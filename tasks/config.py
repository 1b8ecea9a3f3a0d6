"""The resolved settings of one evaluation run, as the CLI, presets and deployments give them.

A run is described by a flat mapping whose keys are the ``ride run`` option names with
underscores (``ride_iters``, ``attack_iters``...). TOML presets use the same keys. The mapping
is validated once here, at the flow boundary, into a frozen :class:`RunConfig`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ride.attacks import ATTACKS, AttackConfig
from ride.classifiers import CLASSIFIERS
from ride.datasets import DATASETS
from ride.defenders import DEFENDERS, PRECISIONS, DefenderConfig, Precision, defender_config

DEMO_LIMIT = 60
"""Images of the digits test split the demo evaluates (the split has 450)."""

DEFAULT_CLASSIFIERS: dict[str, str] = {
    "digits": "mnist-cnn",
    "mnist": "mnist-cnn",
    "cifar10": "cifar-resnet18",
    "imagenet": "resnet50",
}
"""The paper's classifier of each dataset: what ``from_mapping`` picks when none is given."""

RIDE_ARCHS: dict[str, str] = {
    "digits": "mnist",
    "mnist": "mnist",
    "cifar10": "cifar",
    "imagenet": "imagenet",
}
"""The reconstruction network of RIDE and its variants per dataset (paper, Table 3)."""

SWEEP_KEYS: dict[str, type] = {
    "median_kernel": int,
    "bregman_weight": float,
    "chambolle_weight": float,
    "alpha": float,
    "sigma": float,
}
"""Settings that take one value or a list of values (a sweep: one defender id per value)."""

#: Per defender name, its settings that a sweep key feeds (setting name -> sweep key).
_SWEPT: dict[str, dict[str, str]] = {
    "none": {},
    "median": {"kernel": "median_kernel"},
    "tv-bregman": {"weight": "bregman_weight"},
    "tv-chambolle": {"weight": "chambolle_weight"},
    "ride": {"alpha": "alpha", "sigma": "sigma"},
    "dae": {"sigma": "sigma"},
    "dip": {},
    "idip": {"alpha": "alpha"},
}

#: Identity keys added after runs were already being made, with the value every run made
#: before them had: left out of ``run_id`` and ``run.toml`` at that value, so an existing run
#: keeps its id and can still be resumed.
_ADDED_KEYS: dict[str, Any] = {"fgsm_eps": None, "precision": "fp32"}

Number = int | float
Sweep = Number | tuple[Number, ...]


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
    fgsm_eps: float | None = None  # FGSM's eps when it differs from eps (paper, Table 1)
    step: float = 0.02
    attack_iters: int = 10
    eot: int = 15
    recheck: int = 1
    defenders: tuple[str, ...] = ("none", "median", "tv-bregman", "ride")
    # one value, or a tuple of values to sweep (SWEEP_KEYS)
    median_kernel: int | tuple[int, ...] = 3
    bregman_weight: Sweep = 2.0
    chambolle_weight: Sweep = 0.3
    ride_iters: int = 200
    ride_checkpoints: int = 5
    alpha: Sweep = 0.9
    sigma: Sweep = 0.5
    lr: float = 1e-4
    weight_decay: float = 1e-4
    chunk_size: int = 10
    device: str = "cpu"
    # Arithmetic of RIDE's fits (ride.defenders.ride.fit_precision): changes the results.
    precision: Precision = "fp32"
    # execution settings: may change between a run and its resume
    workers: int = 2
    threads: int = 1
    scheduler: str | None = None
    # Where the dataset's files are. An execution setting: the same files may be mounted at
    # another path on a cluster node or after a move. What the results depend on is pinned
    # elsewhere: the evaluated images and labels are copied into images.zarr on the first
    # run and every task reads them from there, and ImageNet's sampled file list is recorded
    # in sources.json and reused (and checked against the folder) on resume.
    data_dir: str | None = None
    # Reuse the trained classifier and gray-box adversarial chunks of earlier runs (Prefect
    # task caching, tasks/cache.py); where the cache lives (None: $RIDE_CACHE_DIR or
    # ~/.cache/ride-pipeline). A cached result equals the recomputed one on the same device.
    cache: bool = True
    cache_dir: str | None = None

    EXECUTION_KEYS = frozenset(
        {"workers", "threads", "scheduler", "data_dir", "cache", "cache_dir"}
    )

    def __post_init__(self) -> None:
        for key in SWEEP_KEYS:  # a list of one value is that value; lists become tuples
            object.__setattr__(self, key, _sweep_value(key, getattr(self, key)))
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
        ):
            value = getattr(self, key)
            _check(value > 0, f"--{key.replace('_', '-')} must be positive, got {value}")
        for kernel in self.sweep_values("median_kernel"):
            _check(kernel > 0, f"--median-kernel must be positive, got {kernel}")
        _check(self.limit is None or self.limit > 0, f"--limit must be positive, got {self.limit}")
        if self.fgsm_eps is not None:
            _check(0 < self.fgsm_eps <= 1, f"--fgsm-eps must be in (0, 1], got {self.fgsm_eps}")
        _check(self.data_dir is None or bool(str(self.data_dir)), "--data-dir is empty")
        _check(self.device in ("cpu", "cuda"), f"--device must be cpu or cuda, got {self.device}")
        _check(
            self.precision in PRECISIONS,
            f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision}",
        )
        _check(
            self.precision != "tf32" or self.device == "cuda",
            "--precision tf32 needs --device cuda (TensorFloat-32 is a GPU format)",
        )
        # Building the per-name settings validates them (kernel parity, alpha range...).
        try:
            self.attack_configs()
            self.defender_configs()
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def sweep_values(self, key: str) -> tuple[Number, ...]:
        """The values of sweep key ``key`` as a tuple (one item when it is not swept)."""
        value = getattr(self, key)
        return value if isinstance(value, tuple) else (value,)

    def attack_configs(self) -> list[AttackConfig]:
        return [
            AttackConfig(
                name=name,  # type: ignore[arg-type]
                eps=self.fgsm_eps if name == "fgsm" and self.fgsm_eps is not None else self.eps,
                step=self.step,
                iters=self.attack_iters,
                eot=self.eot if name == "bpda-eot" else 1,
            )
            for name in self.attacks
        ]

    def defender_configs(self) -> list[DefenderConfig]:
        """One config per defender name and per combination of its swept settings.

        A defender gets the product of the sweeps it uses (``ride``: alpha x sigma; ``dae``:
        sigma; ``idip``: alpha; ``median``: kernel; the TVs: their weight), in the order the
        values are given. RIDE and its variants get the network of the dataset (Table 3).
        """
        ride_settings: dict[str, Any] = {
            "arch": RIDE_ARCHS.get(self.dataset, "mnist"),
            "iters": self.ride_iters,
            "checkpoints": self.ride_checkpoints,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
        }
        fixed = {name: ride_settings for name in ("ride", "dae", "dip", "idip")}
        out: list[DefenderConfig] = []
        for name in self.defenders:
            swept = _SWEPT[name]
            grids = [self.sweep_values(key) for key in swept.values()]
            for combo in itertools.product(*grids):
                settings = {**fixed.get(name, {}), **dict(zip(swept, combo, strict=True))}
                out.append(defender_config(name, **settings))
        ids = [d.id for d in out]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        _check(not twice, f"defender id {', '.join(twice)} would be evaluated twice")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping this config was built from (lists for tuples)."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def run_record(self) -> dict[str, Any]:
        """``to_dict`` as ``run.toml`` records it: keys added later left out at the value
        that runs made before them had (``_ADDED_KEYS``)."""
        return {
            k: v
            for k, v in self.to_dict().items()
            if not (k in _ADDED_KEYS and v == _ADDED_KEYS[k])
        }

    @property
    def run_id(self) -> str:
        """A short stable id of what the results depend on (same across resumes)."""
        identity = {k: v for k, v in self.run_record().items() if k in self.identity()}
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
        if "classifier" not in values or values["classifier"] is None:
            dataset = values.get("dataset", cls.dataset)
            values["classifier"] = DEFAULT_CLASSIFIERS.get(str(dataset), cls.classifier)
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


def parse_sweep(text: str, kind: type) -> Sweep:
    """``"3"`` -> 3, ``"3,5,7"`` -> (3, 5, 7): the command line's spelling of a sweep key."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = tuple(kind(part) for part in parts)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"expected {what} or a comma list of them, got {text!r}") from None
    return values[0] if len(values) == 1 else values


def _sweep_value(key: str, raw: object) -> Sweep:
    """Check one sweep key's value: a number or a non-empty list of distinct numbers."""
    option = "--" + key.replace("_", "-")
    kind = SWEEP_KEYS[key]
    if isinstance(raw, str):
        try:
            raw = parse_sweep(raw, kind)
        except ConfigError as error:
            raise ConfigError(f"{option}: {error}") from None
    items = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
    _check(len(items) > 0, f"{option} lists no values")
    for item in items:
        ok = isinstance(item, int) if kind is int else isinstance(item, int | float)
        _check(
            ok and not isinstance(item, bool),
            f"{option} takes {'integers' if kind is int else 'numbers'}, got {item!r}",
        )
    for i, item in enumerate(items):
        _check(item not in items[:i], f"{option} lists {item} twice")
    return items[0] if len(items) == 1 else items


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)
