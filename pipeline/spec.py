"""What a run's results depend on (:class:`RunSpec`) and how the run executes (:class:`Execution`).

The settings of a run (:class:`pipeline.config.RunConfig`, the flat object the CLI, presets and
deployments fill) fall in two parts:

- the **spec** names the experiment: the dataset and how many of its test images, the
  attacks and defenders with their settings (the run keys), the classifier and its weights,
  the seed, the defender draws per image (``recheck``), the task sizes (an attack chunk
  draws one generator), the device and RIDE's arithmetic. Two runs of equal specs store
  equal results; :attr:`RunSpec.run_id` is a digest of the spec, recorded in ``run.toml``
  and in every result row, and a run directory is resumed only by the same spec;
- the **execution** says how the work is spread and where files are: workers, threads, the
  scheduler, the dataset's folder, the cache, compaction, adopting a run folder whose
  ``run.toml`` was lost. It may change between a run and its resume.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any

from pipeline.settings import ConfigError, key_value, require, run_keys
from ride.attacks import Attack
from ride.datasets import dataset_shape
from ride.defenders import Defender, Precision
from ride.registry import ATTACKS, DEFENDERS, Entry

CHUNK_AUTO = "auto"
"""``chunk_size = "auto"``: each task's images from the cost model (:mod:`pipeline.plan`)."""

CHUNK_MAX_BYTES = 4 * 2**30
"""The most memory the clean images of one chunk may take (float32): a larger chunk could
not be written (Zarr holds a whole chunk in memory), failing after the run started. MNIST:
about 1.4 million images; ImageNet: about 7,100."""

DEFAULT_PRECISION: Precision = "fp32"
"""RIDE's arithmetic unless a run asks for another (IEEE single precision)."""

#: The keys of a run in version 0.2.0. A key added since (a new setting, a new defender's
#: key) is recorded in ``run.toml`` and ``run_id`` only when it differs from its default, so
#: a run made before it keeps its id and can still be resumed.
V020_KEYS = frozenset(
    "dataset limit seed classifier weights attacks eps step attack_iters eot recheck "  # noqa: SIM905
    "defenders median_kernel bregman_weight chambolle_weight ride_iters ride_checkpoints "
    "alpha sigma lr weight_decay chunk_size device workers threads scheduler data_dir "
    "cache cache_dir".split()
)

ADDED_DEFAULTS: Mapping[str, Any] = {"first_limit": None, "precision": DEFAULT_PRECISION}
"""The defaults of the spec's options added after 0.2.0 (a run key's default is in its
declaration): at these values they are left out of the record and the id."""


@dataclass(frozen=True)
class RunSpec:
    """What a run's results depend on; validated where it is made (:attr:`RunConfig.spec`).

    ``settings`` holds the run keys of the registered attacks and defenders as sorted
    ``(key, value)`` pairs; read them with :meth:`value` and :meth:`sweep_values`.
    ``first_limit`` is the limit a grown run was started with (:mod:`pipeline.growth`).
    """

    dataset: str
    limit: int | None
    seed: int
    classifier: str
    weights: str | None
    attacks: tuple[str, ...]
    recheck: int
    defenders: tuple[str, ...]
    chunk_size: int | str
    device: str
    precision: Precision
    settings: tuple[tuple[str, Any], ...]
    first_limit: int | None = None

    def value(self, key: str) -> Any:
        """The value of run key ``key`` (its fallback key's while it is None)."""
        values = dict(self.settings)
        if key not in values:
            raise KeyError(key)
        rk = run_keys()[key]
        if values[key] is None and rk.fallback is not None:
            return values[rk.fallback]
        return values[key]

    def sweep_values(self, key: str) -> tuple[Any, ...]:
        """The values of run key ``key`` as a tuple (one item when it is not swept)."""
        value = self.value(key)
        return value if isinstance(value, tuple) else (value,)

    def attack_configs(self) -> list[Attack]:
        """One attack object per name, its settings fed from the run keys."""
        out = []
        for name in self.attacks:
            entry = ATTACKS[name]
            settings = {s: self.value(str(meta.key)) for s, meta in entry.fed().items()}
            out.append(build(entry, settings))
        return out

    def defender_configs(self) -> list[Defender]:
        """One defender per name and per combination of its swept settings.

        A defender gets the product of the sweeps it uses (``ride``: alpha x sigma; ``dae``:
        sigma; ``idip``: alpha; ``median``: kernel; the TVs: their weight), in the order the
        values are given. A class with ``for_images`` (RIDE) takes the settings it derives
        from the dataset's image shape (its network, Table 3).
        """
        shape = dataset_shape(self.dataset)
        out: list[Defender] = []
        for name in self.defenders:
            entry = DEFENDERS[name]
            swept = entry.swept()
            fixed = {
                s: self.value(str(meta.key)) for s, meta in entry.fed().items() if s not in swept
            }
            for_images = getattr(entry.cls, "for_images", None)
            derived = for_images(shape) if for_images is not None else {}
            grids = [self.sweep_values(key) for key in swept.values()]
            for combo in itertools.product(*grids):
                settings = {**derived, **fixed, **dict(zip(swept, combo, strict=True))}
                out.append(build(entry, settings))
        ids = [d.id for d in out]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        require(not twice, "defenders", f"defender id {', '.join(twice)} would be evaluated twice")
        return out

    def record(self) -> dict[str, Any]:
        """The spec as ``run.toml`` records it (lists for tuples): a key added after 0.2.0
        only when it differs from its default (``V020_KEYS``, ``ADDED_DEFAULTS``)."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        values.update(self.settings)
        defaults = {**ADDED_DEFAULTS, **_run_key_defaults()}
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in values.items()
            if k in V020_KEYS or _plain(v) != _plain(defaults.get(k, object()))
        }

    @cached_property
    def run_id(self) -> str:
        """A short stable id of what the results depend on (same across resumes); computed
        once per spec. A grown run keeps the id of its first extent: ``limit`` is hashed as
        ``first_limit``."""
        identity = self.record()
        if "first_limit" in identity:
            identity["limit"] = identity.pop("first_limit")
        digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return f"{self.dataset}-{digest[:10]}"


@dataclass(frozen=True)
class Execution:
    """How a run executes; any of it may change between a run and its resume."""

    workers: int
    threads: int
    scheduler: str | None
    data_dir: str | None
    cache: bool
    cache_dir: str | None
    compact: bool
    force_claim: bool


def check_chunk_size(dataset: str, chunk_size: int | str) -> None:
    """A chunk's clean images fit ``CHUNK_MAX_BYTES`` (the dataset checked first)."""
    if chunk_size == CHUNK_AUTO:
        return
    c, h, w = dataset_shape(dataset)
    most = max(1, CHUNK_MAX_BYTES // (4 * c * h * w))
    require(
        int(chunk_size) <= most,
        "chunk_size",
        f"must be at most {most} for dataset {dataset} (a chunk's images would not "
        f"fit {CHUNK_MAX_BYTES // 2**30} GiB), got {chunk_size}; or give auto",
    )


def build(entry: Entry[Any], settings: Mapping[str, Any]) -> Any:
    """``entry``'s object with ``settings``; a ValueError is a ConfigError naming it."""
    try:
        return entry.build(**settings)
    except ValueError as error:
        raise ConfigError(f"{entry.name}: {error}") from None


def _run_key_defaults() -> dict[str, Any]:
    """Every run key's default, checked as a given value would be."""
    return {key: key_value(rk, rk.default) for key, rk in run_keys().items()}


def _plain(value: Any) -> Any:
    """``value`` with lists for tuples, as ``run.toml`` holds it."""
    return list(value) if isinstance(value, tuple) else value
