"""The resolved settings of one evaluation run, as the CLI, presets and deployments give them.

A run is described by a flat mapping whose keys are the ``ride run`` option names with
underscores (``ride_iters``, ``attack_iters``...); TOML presets and deployment parameters use
the same keys. Two kinds of keys:

- the fields of :class:`RunConfig` (dataset, attacks, defenders, chunk size, workers...), each
  with its help text and option spelling in the field's metadata;
- the run keys of the registered attacks and defenders (:func:`run_keys`): a setting declared
  with ``setting(key="median_kernel", sweep=True)`` in ``ride/`` is a key of every run, with
  its type, default and help taken from that declaration.

The CLI, the TOML keys and the validation are all derived from these declarations. The mapping
is validated once here, at the flow boundary, into a frozen :class:`RunConfig`; errors name
the key (:class:`ConfigError`), the CLI turns it into its option. Its two parts are typed
views (:mod:`pipeline.spec`): :attr:`RunConfig.spec`, what the results depend on (its digest
is the run id), and :attr:`RunConfig.execution`, how the run executes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Any

from pipeline.settings import (
    COUNT_MAX,
    ConfigError,
    RunKey,
    as_tuple,
    check_key_values,
    check_type,
    join_key,
    key_value,
    load_preset,
    parse_sweep,
    require,
    resolve_plugin,
    resolve_plugins,
    run_keys,
)
from pipeline.spec import (
    CHUNK_AUTO,
    DEFAULT_PRECISION,
    V020_KEYS,
    Execution,
    RunSpec,
    check_chunk_size,
)
from ride.attacks import Attack
from ride.classifiers import CLASSIFIERS
from ride.defenders import PRECISIONS, Defender, Precision
from ride.registry import ATTACKS, DATASETS, DEFENDERS

__all__ = [
    "CHUNK_AUTO",
    "V020_KEYS",
    "ConfigError",
    "Execution",
    "RunConfig",
    "RunKey",
    "RunSpec",
    "join_key",
    "load_preset",
    "parse_sweep",
    "run_keys",
]

DEMO_LIMIT = 60
"""Images of the digits test split the demo evaluates (the split has 450)."""

PROCESSES_MAX = 1024
"""The most local worker processes, and torch threads per worker, a run may ask for."""


def option(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    kind: type | None = None,
    execution: bool = False,
    recorded: bool = False,
) -> Any:
    """A :class:`RunConfig` field: its ``ride run`` option (``flag``, by default ``--key``),
    its value type (``kind``; a tuple field takes a list of them) and whether it is an
    execution setting (may change between a run and its resume). A ``recorded`` field is no
    option: ``ride`` sets it and ``run.toml`` records it (``first_limit``)."""
    meta = {
        "help": help,
        "flag": flag,
        "kind": kind,
        "execution": execution,
        "recorded": recorded,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run, flat, as the CLI and presets give them. Defaults are the
    embedded demo (docs/getting-started.md). Fields marked ``execution`` form :attr:`execution`, the
    others (and the run keys) :attr:`spec`."""

    dataset: str = option("digits", "dataset", kind=str)
    limit: int | None = option(
        DEMO_LIMIT,
        "evaluate the first N test images; a larger N on an existing run folder grows the "
        "run (its finished tasks are kept)",
        kind=int,
    )
    # The limit a grown run was started with (pipeline/growth.py): its id and the size of its
    # tasks stay those of its first extent, so what it stored is found again. None: not grown.
    first_limit: int | None = option(
        None, "the limit the run was started with, before it grew", kind=int, recorded=True
    )
    seed: int = option(0, "seed of sampling, attacks and defenders", kind=int)
    classifier: str = option("mnist-cnn", "classifier network", kind=str)
    weights: str | None = option(
        None,
        "classifier weights: a classifier.pt of `ride train` or of a run, for resnet50, "
        "vgg19, inception_v3 a torchvision .pth file, for cifar-resnet20 and cifar-resnet56 a "
        "published CIFAR ResNet checkpoint (module.-prefixed state_dict), for "
        "imagenet-mobilenet-v2 the TFLite file mobilenet_v2_1.0_224_ptq.tflite and for "
        "imagenet-squeezenet1_1 the Keras file squeezenet1_1_keras.h5 (both required, never "
        "trained; they need pip install -e '.[imagenet]'). Without it "
        "mnist-cnn and the CIFAR ResNets are trained on the train split, and the torchvision "
        "networks load torchvision's file from torch's hub cache "
        "(~/.cache/torch/hub/checkpoints or $TORCH_HOME/hub/checkpoints; never downloaded)",
        kind=str,
    )
    attacks: tuple[str, ...] = option(
        ("none", "fgsm", "pgd"), "attack, repeatable", flag="--attack", kind=str
    )
    recheck: int = option(
        1,
        "defender draws on each final adversarial image; rows record the fraction classified "
        "correctly",
        kind=int,
    )
    defenders: tuple[str, ...] = option(
        ("none", "median", "tv-bregman", "ride"),
        "defender, repeatable",
        flag="--defender",
        kind=str,
    )
    # How many images each task takes (pipeline/plan.py). An identity key: the gray-box
    # attacks draw one generator per attack chunk, so the rows a task takes are part of what
    # the results depend on. "auto" sizes tasks from what they cost, the same on every resume.
    chunk_size: int | str = option(
        CHUNK_AUTO,
        "images per task, or auto: sized from what each task costs (filters in chunks of "
        "thousands of images, RIDE in a few images per task on the CPU and as many as fill "
        "the card on a GPU)",
        kind=int,
    )
    device: str = option("cpu", "cpu or cuda", kind=str)
    # Arithmetic of RIDE's fits (ride.defenders.ride.fit_precision): changes the results.
    precision: Precision = option(
        DEFAULT_PRECISION,
        "arithmetic of RIDE's fits: fp32 (IEEE), tf32 (CUDA convolutions in TensorFloat-32) "
        "or bf16 (autocast)",
        kind=str,
    )
    workers: int = option(2, "local Dask worker processes", kind=int, execution=True)
    threads: int = option(1, "torch threads per worker", kind=int, execution=True)
    scheduler: str | None = option(
        None,
        "address of an existing Dask scheduler (default: $RIDE_SCHEDULER, else a local cluster)",
        kind=str,
        execution=True,
    )
    # Where the dataset's files are. An execution setting: the same files may be mounted at
    # another path on a cluster node or after a move. What the results depend on is pinned
    # elsewhere: the evaluated images and labels are copied into images.zarr on the first
    # run and every task reads them from there, and ImageNet's sampled file list is recorded
    # in sources.json and reused (and checked against the folder) on resume.
    data_dir: str | None = option(
        None,
        "folder of the dataset's files: mnist: MNIST/raw/{train,t10k}-*-ubyte[.gz]; cifar10: "
        "cifar-10-batches-py/; imagenet: the validation images in class folders (or a flat "
        "folder with labels.txt); may change between a run and its resume",
        kind=str,
        execution=True,
    )
    # Reuse the trained classifier and gray-box adversarial chunks of earlier runs (Prefect
    # pipeline/cache.py, stored without pickle); where the cache lives (None: $RIDE_CACHE_DIR or
    # ~/.cache/ride-pipeline). A cached result equals the recomputed one on the same device.
    cache: bool = option(
        True,
        "compute everything, neither reading nor writing the cache",
        flag="--no-cache",
        kind=bool,
        execution=True,
    )
    cache_dir: str | None = option(
        None,
        "cache of trained classifiers and gray-box adversarial images shared by runs; every "
        "worker must reach it (default: $RIDE_CACHE_DIR, else ~/.cache/ride-pipeline)",
        kind=str,
        execution=True,
    )
    # Merge the per-task result files into one file per (attack, defender) when the run ends
    # (storage/compact.py; `ride compact DIR` does it later): how results are stored, not what.
    compact: bool = option(
        True,
        "leave the per-task result files as they are at the end of the run, instead of merging "
        "them into one file per (attack, defender) (`ride compact DIR` merges them later)",
        flag="--no-compact",
        kind=bool,
        execution=True,
    )
    # A run directory whose run.toml is lost: its results say nothing of which run made them,
    # so resuming into it is refused unless the user vouches for the settings given.
    force_claim: bool = option(
        False,
        "adopt a run directory that holds results but no run.toml (deleted or lost) for these "
        "settings; rows stored by another run stay on disk but are left out of the report",
        flag="--force-claim",
        kind=bool,
        execution=True,
    )
    # The run keys of the registered attacks and defenders (run_keys()), as sorted pairs;
    # read them with value() and sweep_values().
    settings: tuple[tuple[str, Any], ...] = field(default=(), metadata={"keys": True})

    def __post_init__(self) -> None:
        for f in option_fields():
            check_type(f.name, getattr(self, f.name), f.metadata["kind"])
        self._check_names()  # first: a plugin named by import path brings its run keys
        given = dict(self.settings)
        keys = run_keys()
        unknown = sorted(set(given) - set(keys))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        values = {k: key_value(rk, given.get(k, rk.default)) for k, rk in keys.items()}
        object.__setattr__(self, "settings", tuple(sorted(values.items())))
        self._check_ranges()
        check_key_values(dict(self.settings), keys)
        self.attack_configs()
        self.defender_configs()

    def _check_names(self) -> None:
        require(
            self.dataset in DATASETS,
            "dataset",
            f"unknown dataset '{self.dataset}'; choose from: {', '.join(DATASETS)}",
        )
        resolve_plugin("classifier", CLASSIFIERS, self.classifier)  # pkg.mod:Spec
        require(
            self.classifier in CLASSIFIERS,
            "classifier",
            f"unknown classifier '{self.classifier}'; choose from: {', '.join(CLASSIFIERS)}",
        )
        for key, registry in (("attacks", ATTACKS), ("defenders", DEFENDERS)):
            names: tuple[str, ...] = getattr(self, key)
            what = key[:-1]
            require(len(names) > 0, key, f"give at least one {what}")
            for name in names:
                resolve_plugin(key, registry, name)
                require(
                    name in registry,
                    key,
                    f"unknown {what} '{name}'; choose from: {', '.join(registry)}",
                )
            require(
                len(set(names)) == len(names),
                key,
                f"an {what} is given twice" if what == "attack" else f"a {what} is given twice",
            )

    def _check_ranges(self) -> None:
        for key in ("recheck", "chunk_size", "workers", "threads"):
            value = getattr(self, key)
            if key == "chunk_size" and value == CHUNK_AUTO:
                continue
            require(value > 0, key, f"must be positive, got {value}")
        require(
            self.recheck <= COUNT_MAX, "recheck", f"must be at most {COUNT_MAX}, got {self.recheck}"
        )
        for key in ("workers", "threads"):
            value = getattr(self, key)
            require(value <= PROCESSES_MAX, key, f"must be at most {PROCESSES_MAX}, got {value}")
        check_chunk_size(self.dataset, self.chunk_size)
        require(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        require(
            self.limit is None or self.limit > 0, "limit", f"must be positive, got {self.limit}"
        )
        require(
            self.first_limit is None
            or (self.limit is not None and 0 < self.first_limit <= self.limit),
            "first_limit",
            f"must lie in 1..limit ({self.limit}), got {self.first_limit}",
        )
        require(self.data_dir is None or bool(str(self.data_dir)), "data_dir", "is empty")
        require(self.device in ("cpu", "cuda"), "device", f"must be cpu or cuda, got {self.device}")
        require(
            self.precision in PRECISIONS,
            "precision",
            f"must be one of {', '.join(PRECISIONS)}, got {self.precision}",
        )
        require(
            self.precision != "tf32" or self.device == "cuda",
            "precision",
            "tf32 needs device cuda (TensorFloat-32 is a GPU format)",
        )

    @cached_property
    def spec(self) -> RunSpec:
        """What the run's results depend on: every setting but the execution ones."""
        return RunSpec(**{f.name: getattr(self, f.name) for f in fields(RunSpec)})

    @property
    def execution(self) -> Execution:
        """How the run executes (workers, cache, data folder...): may change on resume."""
        return Execution(**{f.name: getattr(self, f.name) for f in fields(Execution)})

    def value(self, key: str) -> Any:
        """The value of run key ``key`` (:meth:`RunSpec.value`)."""
        return self.spec.value(key)

    def sweep_values(self, key: str) -> tuple[Any, ...]:
        """The values of run key ``key`` as a tuple (:meth:`RunSpec.sweep_values`)."""
        return self.spec.sweep_values(key)

    def attack_configs(self) -> list[Attack]:
        """One attack object per name (:meth:`RunSpec.attack_configs`)."""
        return self.spec.attack_configs()

    def defender_configs(self) -> list[Defender]:
        """One defender per name and swept combination (:meth:`RunSpec.defender_configs`)."""
        return self.spec.defender_configs()

    def to_dict(self) -> dict[str, Any]:
        """The flat mapping this config was built from (lists for tuples)."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in option_fields()}
        out.update(dict(self.settings))
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def run_record(self) -> dict[str, Any]:
        """``to_dict`` as ``run.toml`` records it: keys added after 0.2.0 left out at their
        default (see ``V020_KEYS``)."""
        defaults = RunConfig().to_dict()
        return {
            k: v
            for k, v in self.to_dict().items()
            if k in V020_KEYS or v != defaults.get(k, object())
        }

    @property
    def run_id(self) -> str:
        """The id of the run's spec (:attr:`RunSpec.run_id`): the same across resumes."""
        return self.spec.run_id

    @classmethod
    def execution_keys(cls) -> frozenset[str]:
        """Keys that may change between a run and its resume (workers, data_dir...)."""
        return frozenset(f.name for f in option_fields() if f.metadata["execution"])

    def identity(self) -> frozenset[str]:
        """The keys that must match for a run directory to be resumed."""
        return frozenset(self.to_dict()) - self.execution_keys()

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> RunConfig:
        """Validate a flat mapping (TOML preset, CLI, deployment parameters)."""
        options = {f.name for f in option_fields()}
        resolve_plugins(settings)  # their keys are run keys once they are registered
        keys = run_keys()
        unknown = sorted(set(settings) - options - set(keys))
        if unknown:
            raise ConfigError(f"unknown setting(s): {', '.join(unknown)}")
        values = {k: v for k, v in settings.items() if k in options}
        for key in ("attacks", "defenders"):
            if key in values:
                raw = values[key]
                values[key] = (raw,) if isinstance(raw, str) else as_tuple(key, raw)
        if values.get("classifier") is None:
            dataset = values.get("dataset", cls.dataset)
            if dataset in DATASETS:
                values["classifier"] = DATASETS[str(dataset)].build().default_classifier
            else:
                values.pop("classifier", None)
        run_settings = tuple((k, v) for k, v in settings.items() if k in keys)
        return cls(**values, settings=run_settings)


def option_fields() -> list[Any]:
    """The :class:`RunConfig` fields that are ``ride run`` options, with their metadata."""
    return [f for f in fields(RunConfig) if "keys" not in f.metadata]
