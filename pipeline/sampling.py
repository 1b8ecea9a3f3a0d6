"""The start of a run: claim its directory, sample the evaluated images into the clean Zarr
array and create every array the chunk tasks write into.

The run's images are the first ``limit`` images of the test split (ImageNet: two per class,
sampled with the run's seed and recorded in ``sources.json``), stored in chunks of
consecutive rows; how many rows each later task takes is :mod:`pipeline.plan`'s.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np

from pipeline.config import RunConfig
from pipeline.execution import Logger, data_dir, default_logger
from pipeline.growth import adopt_recorded, check_growth
from pipeline.plan import clean_rows, defence_rows, task_rows
from pipeline.run import Run
from ride.datasets import (
    IMAGENET_PER_CLASS,
    dataset_shape,
    imagenet_files,
    load_dataset,
    load_imagenet_images,
    per_class_shortfall,
    sample_per_class,
)
from storage.images import (
    ImageStore,
    adaptive_adv_name,
    adaptive_final_name,
    adv_name,
    defended_name,
    predictions_name,
)
from storage.layout import RunLayout
from storage.runconfig import claim_run_dir, record_growth, version_note
from storage.sources import read_sources, write_sources

CODE_VERSION = version("ride-pipeline")

RowReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]
"""Rows ``[start, stop)`` of the evaluated images: images (B, C, H, W) float32, labels (B,)."""


def chunk_ranges(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of ``n`` images in chunks of ``chunk_size``."""
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def command_line(argv: Sequence[str]) -> str:
    """``argv`` as one shell line; the ``ride`` console script's own path becomes ``ride``."""
    if argv and Path(argv[0]).name == "ride":
        return shlex.join(["ride", *argv[1:]])
    return shlex.join(argv)


def deployment_command(deployment: str | None) -> str | None:
    """What ``run.toml`` records for a run started by deployment ``deployment`` of the
    evaluation entry flow; None outside a deployment."""
    return f"deployment ride-evaluate-deployment/{deployment}" if deployment else None


def claim_run(
    layout: RunLayout, cfg: RunConfig, command: str | None = None
) -> tuple[RunConfig, list[str]]:
    """Write ``run.toml`` (with ``command``, what started the run: the ``ride run`` command
    line, a deployment, or None for the flow called from Python, and the run id), or check
    that the directory holds this same run, or grow it (:mod:`pipeline.growth`: a larger
    ``limit``, recorded). Returns the run's config as the folder holds it (a grown run's
    ``first_limit`` set) and the lines to log: the run was started by another code version
    (:func:`resume_note`), the run grows."""
    note = resume_note(layout)
    notes = [] if note is None else [note]
    cfg, growth = adopt_recorded(cfg, layout)
    if growth is not None:
        check_growth(cfg, growth, layout)
        record_growth(layout.run_toml, cfg.run_record(), growth.before, growth.after, command)
        notes.append(
            f"{layout.root} grows from limit {growth.before} to {growth.after}: its finished "
            f"tasks are kept, its run id stays {cfg.run_id}"
        )
        return cfg, notes
    claim_run_dir(
        layout.run_toml,
        cfg.run_record(),
        cfg.identity(),
        CODE_VERSION,
        command,
        run_id=cfg.run_id,
        force=cfg.force_claim,
    )
    return cfg, notes


def resume_note(layout: RunLayout) -> str | None:
    """One line when ``layout`` holds a run started by another version of this code (it is
    resumed all the same: the settings, not the version, make a run), else None."""
    return version_note(layout.run_toml, CODE_VERSION)


def imagenet_sources(
    layout: RunLayout, cfg: RunConfig, root: Path, logger: Logger | None = None
) -> list[tuple[str, int]]:
    """The run's ImageNet files: recorded in ``sources.json``, or sampled and recorded now.
    A grown run samples again and records the longer list, whose first files must be those
    recorded (the same folder and seed give the same sample)."""
    recorded = read_sources(layout.sources) if layout.sources.exists() else None
    if recorded is not None and (cfg.limit is None or len(recorded) >= cfg.limit):
        return recorded
    listing = imagenet_files(root)
    files = sample_per_class(listing, IMAGENET_PER_CLASS, cfg.seed)[: cfg.limit]
    shortfall = per_class_shortfall(listing, IMAGENET_PER_CLASS)
    if shortfall is not None and recorded is None:  # said once, when the run samples
        default_logger(logger).warning(shortfall)
    if recorded is not None and files[: len(recorded)] != recorded:
        raise ValueError(
            f"{layout.sources}: the {len(recorded)} recorded files are not the first of the "
            f"sample of {root}; the run cannot grow from this folder"
        )
    if recorded is None or len(files) > len(recorded):
        write_sources(layout.sources, cfg.dataset, files)
    return files


def evaluated_rows(
    layout: RunLayout, cfg: RunConfig, logger: Logger | None = None
) -> tuple[int, RowReader]:
    """How many images the run evaluates, and a reader of rows ``[start, stop)`` of them.

    ImageNet decodes only the rows asked for (a chunk at a time); the small datasets load
    their first ``limit`` test images once.
    """
    root = data_dir(cfg)
    if cfg.dataset == "imagenet":
        if root is None:
            raise ValueError("data_dir is required for dataset imagenet")
        folder = root
        files = imagenet_sources(layout, cfg, folder, logger)

        def decode(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            images = load_imagenet_images(folder, files[start:stop])  # (B, 3, 224, 224)
            labels = np.array([label for _, label in files[start:stop]], dtype=np.int64)
            return images.numpy(), labels

        return len(files), decode
    data = load_dataset(cfg.dataset, "test", seed=cfg.seed, data_dir=root, limit=cfg.limit)

    def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        images = data.images[start:stop].numpy().astype(np.float32)  # (B, C, H, W)
        return images, data.labels[start:stop].numpy().astype(np.int64)

    return len(data), rows


def prepare_images(layout: RunLayout, cfg: RunConfig, logger: Logger | None = None) -> int:
    """Sample the evaluated images, write ``clean`` / ``labels`` and create every array;
    returns the number of images.

    Images are decoded and written one chunk at a time (a chunk's ``labels`` are written
    last and mark it complete), so memory stays bounded by a chunk for ImageNet. ImageNet's
    file list is recorded in ``sources.json`` first and reused by every later run.
    Idempotent: a resumed run finds the arrays, checks their shapes and skips stored chunks
    whose clean images and labels both read back whole; a chunk that does not (garbled,
    deleted) is decoded from the dataset again (``logger`` is told).
    """
    note = default_logger(logger).warning
    store = ImageStore(layout)
    n, rows = evaluated_rows(layout, cfg, logger)
    shape = (n, *dataset_shape(cfg.dataset))
    attrs = {"dataset": cfg.dataset, "seed": cfg.seed, "split": "test"}
    run = Run.of(layout, cfg, n)
    per_chunk = clean_rows(run)
    grow = cfg.first_limit is not None
    store.ensure_array("clean", shape, per_chunk, attrs=attrs, grow=grow)
    store.ensure_array("labels", (n,), per_chunk, dtype="int64", attrs=attrs, grow=grow)
    for start, stop in chunk_ranges(n, per_chunk):
        if store.has_rows("clean", start, note) and store.has_rows("labels", start, note):
            continue
        images, labels = rows(start, stop)
        store.write_rows("clean", start, images)
        store.write_rows("labels", start, labels)
    create_arrays(store, run)
    return n


def create_arrays(store: ImageStore, run: Run) -> None:
    """The arrays every chunk task of ``run`` writes into, each chunked by the rows of the
    task that writes it (:func:`pipeline.plan.task_rows`): ``adv/<attack>`` and
    ``predictions/<attack>`` (gray-box and ``none``; white-box: ``adv/<attack>/<defender>``,
    the iterates the attacker chose, and ``final/<attack>/<defender>``, its final outputs)
    and ``defended/<attack>/<defender>``, each with the settings that made it as attributes."""
    n, grow = run.n_images, run.cfg.first_limit is not None
    shape = (n, *dataset_shape(run.cfg.dataset))
    for attack in run.attacks:
        if attack.adaptive:
            for defender in run.attacked(attack):  # white-box: one adversarial set per defender
                for name in (adaptive_adv_name, adaptive_final_name):  # chosen, final
                    store.ensure_array(
                        name(attack.id, defender.id),
                        shape,
                        task_rows(run, attack, defender),
                        attrs={"attack": attack.params(), "defender": defender.params()},
                        grow=grow,
                    )
            continue
        rows = task_rows(run, attack, None)
        store.ensure_array(
            predictions_name(attack.id),
            (n, 2),
            rows,
            dtype="int64",
            attrs=attack.params(),
            grow=grow,
        )
        if attack.name != "none":
            store.ensure_array(adv_name(attack.id), shape, rows, attrs=attack.params(), grow=grow)
    for attack in run.attacks:
        for defender in run.attacked(attack):
            if defender.id == "none":
                continue
            params = {"attack": attack.params(), "defender": defender.params()}
            store.ensure_array(
                defended_name(attack.id, defender.id),
                shape,
                defence_rows(run, attack, defender),
                attrs={"attack_id": attack.id, "defender_id": defender.id, **params},
                grow=grow,
            )
