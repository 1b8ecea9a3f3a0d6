"""Every check that can fail before a run or a training starts, so nothing is half-written.

:func:`preflight` (a run) and :func:`preflight_train` (a training) check the output
directory (outside a dataset folder it would be read as part of), the cache folder, an
existing ``images.zarr``, the dataset's files (MNIST: every byte), the classifier's weights,
input shape and classes, and the device. Whatever is wrong is raised as one
:class:`PreflightError` with a one-line message that names the parameter it is about
(``out``, ``data_dir``, ``weights``, ``device``...), the same for the command line (which
spells the parameter as its option) and a deployment.
Settings that do not validate raise ``pipeline.config.ConfigError`` first, naming their key.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pipeline.cache import CACHE_ENV, default_cache_dir
from pipeline.config import RunConfig
from pipeline.growth import adopt_recorded, check_growth
from pipeline.train import TrainSettings, trained_epochs_in
from ride.classifiers import (
    PRETRAINED_IMAGENET,
    TORCHVISION_CLASSIFIERS,
    CheckpointError,
    classifier_input,
    find_torchvision_weights,
    load_classifier,
    model_num_classes,
    torchvision_weight_files,
    torchvision_weights_dir,
)
from ride.datasets import (
    LABELS_FILE,
    DatasetError,
    check_dataset,
    dataset_num_classes,
    dataset_shape,
    get_dataset,
    imagenet_files,
)
from storage.compact import read_journal
from storage.images import ImageStore, StorageError
from storage.layout import RunLayout, TrainLayout
from storage.lock import RunDirBusy, check_unlocked
from storage.runconfig import RunConfigMismatch, check_claimable, check_same_run
from storage.sources import read_sources


class PreflightError(ValueError):
    """A run or training cannot start; one line, starting with the parameter it is about
    (``key``: ``out``, ``weights``, ``device``...) where there is one."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


_FOUND_BELOW = (CheckpointError, DatasetError, RunConfigMismatch, RunDirBusy, StorageError)
"""What the layers below raise about bad input; preflight raises them as PreflightError."""


@contextmanager
def _as_preflight_error() -> Iterator[None]:
    try:
        yield
    except _FOUND_BELOW as error:
        lines = str(error).splitlines() or [type(error).__name__]
        raise PreflightError(lines[0]) from error


def check_out_dir(out: Path) -> None:
    """``out`` must be a directory we can create or write into."""
    if not str(out):
        raise PreflightError("out is empty", "out")
    check_writable_dir(out, "out", "out")


def check_writable_dir(path: Path, what: str, key: str | None) -> None:
    """``path`` must be a directory we can create or write into; ``what`` starts the
    message (``out``, ``cache_dir``: the parameter ``key``)."""
    if path.exists() and not path.is_dir():
        raise PreflightError(f"{what} {path} exists and is not a directory", key)
    existing = path
    while not existing.exists() and not existing.is_symlink():
        existing = existing.parent
    if not existing.is_dir():
        raise PreflightError(f"{what} {path}: {existing} is not a directory", key)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PreflightError(f"{what} {path}: {existing} is not writable", key)


def check_out_outside_data(out: Path, cfg: RunConfig) -> None:
    """A dataset that reads every folder of ``data_dir`` (ImageNet: each is a class) must
    not hold the run directory: the run's own folders would be read as the dataset's."""
    if cfg.data_dir is None or not get_dataset(cfg.dataset).lists_data_dir:
        return
    data, run = Path(cfg.data_dir).resolve(), out.resolve()
    if run == data or data in run.parents:
        raise PreflightError(
            f"out {out} is inside the data folder {cfg.data_dir}: the run's files would be "
            "read as the dataset's; give a run directory outside it",
            "out",
        )


def check_cache_dir(cfg: RunConfig) -> None:
    """The cache the run reads and writes (unless ``cache`` is off) must be a directory we
    can create or write into."""
    if not cfg.cache:
        return
    if cfg.cache_dir:
        check_writable_dir(Path(cfg.cache_dir), "cache_dir", "cache_dir")
        return
    check_writable_dir(default_cache_dir(), f"cache folder (${CACHE_ENV} or the default)", None)


def check_images(out: Path) -> None:
    """An ``images.zarr`` the run resumes must open (``StorageError`` otherwise)."""
    ImageStore(RunLayout(out)).check_opens()


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(v) for v in shape) + ")"


def check_shapes(classifier: str, dataset: str) -> None:
    """The classifier takes the dataset's images (channels and size)."""
    expects, has = classifier_input(classifier), dataset_shape(dataset)
    if expects != has:
        raise PreflightError(
            f"classifier {classifier} expects {_shape(expects)} inputs but dataset {dataset} "
            f"has {_shape(has)}",
            "classifier",
        )


def classifier_file(out: Path, cfg: RunConfig) -> Path | None:
    """The weights a run will use: its classifier.pt, ``weights``, or torchvision's file for
    the ImageNet networks (PreflightError when none is there); None when it will be trained."""
    layout = RunLayout(out)
    if layout.classifier.exists():
        return layout.classifier
    if cfg.weights is not None:
        return Path(cfg.weights)
    if cfg.classifier in PRETRAINED_IMAGENET:
        raise PreflightError(
            f"weights: classifier {cfg.classifier} is pretrained only, never trained here; give "
            f"its file with --weights ({PRETRAINED_IMAGENET[cfg.classifier]})",
            "weights",
        )
    if cfg.classifier not in TORCHVISION_CLASSIFIERS:
        return None
    found = find_torchvision_weights(cfg.classifier)
    if found is None:
        files = " or ".join(torchvision_weight_files(cfg.classifier))
        raise PreflightError(
            f"weights: classifier {cfg.classifier} needs ImageNet weights; give a torchvision "
            f"weight file or put {files} in {torchvision_weights_dir()}",
            "weights",
        )
    return found


def check_classes(cfg: RunConfig, outputs: int) -> None:
    """The classifier has one output per class of the dataset (ImageNet: of the folder)."""
    if cfg.dataset != "imagenet":
        classes = dataset_num_classes(cfg.dataset)
        if outputs != classes:
            raise PreflightError(
                f"classifier {cfg.classifier} has {outputs} classes but dataset {cfg.dataset} "
                f"has {classes}",
                "classifier",
            )
        return
    root = Path(str(cfg.data_dir))
    top = max(label for _, label in imagenet_files(root))
    if (root / LABELS_FILE).is_file():
        if top >= outputs:
            raise PreflightError(
                f"classifier {cfg.classifier} has {outputs} classes but {root / LABELS_FILE} "
                f"uses class index {top}",
                "classifier",
            )
    elif top + 1 != outputs:
        raise PreflightError(
            f"classifier {cfg.classifier} has {outputs} classes but dataset imagenet in {root} "
            f"has {top + 1} class folders (labels are folder indices: give all {outputs} "
            f"folders, or a flat folder with {LABELS_FILE})",
            "classifier",
        )


def check_inputs(out: Path, cfg: RunConfig) -> None:
    """The dataset's files, then the classifier's input shape, then its number of classes."""
    with _as_preflight_error():
        layout = RunLayout(out)
        data_dir = None if cfg.data_dir is None else Path(cfg.data_dir)
        recorded = None
        if cfg.dataset == "imagenet" and layout.sources.exists():
            recorded = read_sources(layout.sources)  # a resumed run evaluates the same files
        check_dataset(cfg.dataset, data_dir, "test", cfg.seed, files=recorded, limit=cfg.limit)
        check_shapes(cfg.classifier, cfg.dataset)
        weights = classifier_file(out, cfg)
        if weights is None:  # trained on the train split
            check_dataset(cfg.dataset, data_dir, "train", cfg.seed)
            return
        check_classes(cfg, classifier_outputs(weights, cfg.classifier))


def classifier_outputs(weights: Path, classifier: str) -> int:
    """The number of classes of the checkpoint ``weights`` loaded as ``classifier``; a
    checkpoint whose contents are of the wrong kind (``num_classes = "ten"``) is a
    PreflightError, like one that does not load (CheckpointError)."""
    try:
        return model_num_classes(load_classifier(weights, classifier))
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as error:
        text = (str(error).splitlines() or [""])[0]
        raise PreflightError(
            f"checkpoint {weights} cannot be loaded as {classifier}: {type(error).__name__}: {text}"
        ) from None


def check_pairs(cfg: RunConfig) -> None:
    """Every attack of the run must be able to attack one of its defenders at least (the
    pairs it cannot attack are left out: :meth:`pipeline.run.Run.left_out_pairs`)."""
    defenders = cfg.defender_configs()
    for attack in cfg.attack_configs():
        if not any(attack.applies_to(d) for d in defenders):
            ids = ", ".join(d.id for d in defenders)
            raise PreflightError(
                f"attacks: {attack.name} cannot attack any defender of this run ({ids})", "attacks"
            )


def check_device(device: str) -> None:
    """A ``cuda`` run or training needs a CUDA device on this machine."""
    if device == "cuda" and not torch.cuda.is_available():
        raise PreflightError("device cuda: no CUDA device is visible on this machine", "device")


def check_precision_offered(cfg: RunConfig) -> None:
    """bf16 RIDE fits are offered on CUDA only: on the CPUs measured here they are 9-11x
    slower than fp32 (no AVX512-BF16 or AMX), and bf16 changes results, so a CPU verdict in
    bf16 would need a paired comparison with fp32 that no results page has (docs/benchmarks.md,
    "The CIFAR-10 engine on a CPU")."""
    if cfg.precision == "bf16" and cfg.device == "cpu":
        raise PreflightError(
            "precision bf16 is offered with device cuda only: on the CPU it was 9-11x slower "
            "than fp32 here and no paired comparison with fp32 backs its results; use fp32",
            "precision",
        )


def preflight(out: Path, settings: Mapping[str, Any]) -> RunConfig:
    """Check that the run ``settings`` can start in ``out``; returns its config.

    With a ``scheduler`` the cluster's workers, not this machine, must offer the GPUs:
    ``flows.checks.check_run`` checks them.
    """
    cfg = RunConfig.from_mapping(settings)
    check_out_dir(out)
    check_out_outside_data(out, cfg)
    check_cache_dir(cfg)
    if TrainLayout(out).train_toml.exists():
        raise PreflightError(
            f"out {out} holds a training (train.toml), not a run; give its classifier as weights: "
            f"{out / 'classifier.pt'}",
            "out",
        )
    with _as_preflight_error():
        check_unlocked(out)
        read_journal(RunLayout(out).results)  # one the run's compaction would refuse
        layout = RunLayout(out)
        cfg, growth = adopt_recorded(cfg, layout)  # a growth is checked against run.toml there
        if growth is None:
            check_same_run(layout.run_toml, cfg.run_record(), cfg.identity())
        check_claimable(layout.run_toml, cfg.force_claim)
        check_images(out)
        check_growth(cfg, growth, layout)
    check_inputs(out, cfg)
    check_pairs(cfg)
    check_precision_offered(cfg)
    if not cfg.scheduler:
        check_device(cfg.device)
    return cfg


def preflight_train(out: Path, settings: Mapping[str, Any]) -> TrainSettings:
    """Check that the training ``settings`` can start (or resume) in ``out``; returns them."""
    cfg = TrainSettings.from_mapping(settings)
    check_out_dir(out)
    layout = TrainLayout(out)
    if RunLayout(out).run_toml.exists():
        raise PreflightError(
            f"out {out} holds a run (run.toml), not a training; give another directory", "out"
        )
    with _as_preflight_error():
        check_unlocked(out)
        check_same_run(layout.train_toml, cfg.to_dict(), cfg.identity())
        check_shapes(cfg.classifier, cfg.dataset)
        check_dataset(cfg.dataset, cfg.data_path, "train", cfg.seed)
        check_dataset(cfg.dataset, cfg.data_path, "test", cfg.seed)
        check_device(cfg.device)
        done = trained_epochs_in(layout, cfg.classifier)
    if done > cfg.epochs:
        raise PreflightError(
            f"out {out} already holds {done} trained epochs, more than the {cfg.epochs} epochs "
            "asked for; give more epochs or another directory",
            "out",
        )
    return cfg
