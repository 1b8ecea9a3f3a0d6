"""The chunk tasks of an evaluation run.

Each task takes the run directory, the run's config and the chunk's row range, loads its
inputs from storage on the worker, calls ``ride/`` and writes its outputs back to storage.
Tasks that touch storage or run long have retries: a lost worker or a full disk moment is
transient; a bug is not, and ends in ``failed`` rows after the retries.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import MissingContextError

from ride.attacks import AttackConfig, BPDAStep, run_attack
from ride.classifiers import (
    TORCHVISION_CLASSIFIERS,
    build_classifier,
    load_classifier,
    load_torchvision_weights,
    predict,
    save_classifier,
)
from ride.classifiers import accuracy as classifier_accuracy
from ride.datasets import (
    IMAGENET_PER_CLASS,
    dataset_shape,
    imagenet_files,
    load_dataset,
    load_imagenet_images,
    sample_per_class,
)
from ride.defenders import Defender, DefenderConfig, build_defender, defend_draws
from ride.metrics import distances
from ride.seeding import derive_seed, generator_for
from ride.training import TrainConfig
from storage.files import atomic_write_bytes
from storage.images import ImageStore, adaptive_adv_name, adv_name, defended_name
from storage.layout import RunLayout
from storage.publish import write_report
from storage.results import (
    DISTANCE_PAIRS,
    SCHEMA,
    is_finished,
    result_key,
    write_results,
)
from storage.sources import read_sources, write_sources
from storage.steps import read_steps, steps_path, write_steps
from tasks.cache import (
    ClassifierKey,
    adversarial_images,
    array_digest,
    cached,
    chunk_key,
    default_cache_dir,
    load_chunk,
    ride_source_digest,
    trained_classifier_state,
)
from tasks.config import RunConfig


@dataclass(frozen=True)
class ChunkOutcome:
    """What a chunk task did: ``ran`` or ``skipped`` (already in storage)."""

    action: str
    seconds: float
    correct: int = 0
    count: int = 0


def chunk_ranges(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of ``n`` images in chunks of ``chunk_size``."""
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def _device(cfg: RunConfig) -> torch.device:
    """The run's device, with this worker process set up for it.

    torch gets ``cfg.threads`` threads. The interpreter's switch interval drops from 5 ms
    to 0.1 ms: a RIDE fit makes thousands of short torch calls, each releasing the GIL, and
    whenever a worker's service thread grabs it the fit waits up to one interval to get it
    back (measured: 30% of a fit's time inside a Dask worker).
    """
    torch.set_num_threads(cfg.threads)
    sys.setswitchinterval(1e-4)
    return torch.device(cfg.device)


def _data_dir(cfg: RunConfig) -> Path | None:
    return None if cfg.data_dir is None else Path(cfg.data_dir)


def _imagenet_sources(layout: RunLayout, cfg: RunConfig, root: Path) -> list[tuple[str, int]]:
    """The run's ImageNet files: recorded in ``sources.json``, or sampled and recorded now."""
    if layout.sources.exists():
        return read_sources(layout.sources)
    files = sample_per_class(imagenet_files(root), IMAGENET_PER_CLASS, cfg.seed)[: cfg.limit]
    write_sources(layout.sources, cfg.dataset, files)
    return files


def _test_rows(
    layout: RunLayout, cfg: RunConfig
) -> tuple[int, Callable[[int, int], tuple[np.ndarray, np.ndarray]]]:
    """How many images the run evaluates, and a reader of rows ``[start, stop)`` of them.

    ImageNet decodes only the rows asked for (a chunk at a time); the small datasets load
    their first ``limit`` test images once.
    """
    if cfg.dataset == "imagenet":
        root = _data_dir(cfg)
        if root is None:
            raise ValueError("dataset imagenet needs --data-dir")
        files = _imagenet_sources(layout, cfg, root)

        def decode(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
            images = load_imagenet_images(root, files[start:stop])  # (B, 3, 224, 224)
            labels = np.array([label for _, label in files[start:stop]], dtype=np.int64)
            return images.numpy(), labels

        return len(files), decode
    data = load_dataset(
        cfg.dataset, "test", seed=cfg.seed, data_dir=_data_dir(cfg), limit=cfg.limit
    )

    def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        images = data.images[start:stop].numpy().astype(np.float32)  # (B, C, H, W)
        return images, data.labels[start:stop].numpy().astype(np.int64)

    return len(data), rows


@task(name="prepare-images", retries=2, retry_delay_seconds=2)
def prepare_images(out: str, cfg: RunConfig) -> int:
    """Sample the evaluated images, write ``clean`` / ``labels`` and create every array.

    Images are decoded and written one chunk at a time (a chunk's ``labels`` are written
    last and mark it complete), so memory stays bounded by a chunk for ImageNet. ImageNet's
    file list is recorded in ``sources.json`` first and reused by every later run.
    Idempotent: a resumed run finds the arrays, checks their shapes and skips stored chunks.
    """
    layout = RunLayout(Path(out))
    store = ImageStore(layout)
    n, rows = _test_rows(layout, cfg)
    shape = (n, *dataset_shape(cfg.dataset))
    attrs = {"dataset": cfg.dataset, "seed": cfg.seed, "split": "test"}
    store.ensure_array("clean", shape, cfg.chunk_size, attrs=attrs)
    store.ensure_array("labels", (n,), cfg.chunk_size, dtype="int64", attrs=attrs)
    for start, stop in chunk_ranges(n, cfg.chunk_size):
        if store.has_rows("labels", start):
            continue
        images, labels = rows(start, stop)
        store.write_rows("clean", start, images)
        store.write_rows("labels", start, labels)
    for attack in cfg.attack_configs():
        if attack.name == "none":
            continue
        if not attack.adaptive:
            store.ensure_array(adv_name(attack.id), shape, cfg.chunk_size, attrs=attack.params())
            continue
        for defender in cfg.defender_configs():  # white-box: one adversarial set per defender
            store.ensure_array(
                adaptive_adv_name(attack.id, defender.id),
                shape,
                cfg.chunk_size,
                attrs={"attack": attack.params(), "defender": defender.params()},
            )
    for attack in cfg.attack_configs():
        for defender in cfg.defender_configs():
            if defender.id == "none":
                continue
            params = {"attack": attack.params(), "defender": defender.params()}
            store.ensure_array(
                defended_name(attack.id, defender.id),
                shape,
                cfg.chunk_size,
                attrs={"attack_id": attack.id, "defender_id": defender.id, **params},
            )
    return n


def _obtain_classifier(cfg: RunConfig, device: torch.device) -> torch.nn.Module:
    """``--weights``; else torchvision's weight file for the ImageNet networks (never
    trained here); else the small networks trained on the train split, or taken from the
    cache when an earlier run trained the same network on the same data (``--no-cache``:
    always trained)."""
    if cfg.weights is not None:
        return load_classifier(Path(cfg.weights), cfg.classifier, device=device)
    if cfg.classifier in TORCHVISION_CLASSIFIERS:
        return load_torchvision_weights(cfg.classifier, None, device=device)
    train_split = load_dataset(cfg.dataset, "train", seed=cfg.seed, data_dir=_data_dir(cfg))
    key = ClassifierKey(
        dataset=cfg.dataset,
        seed=cfg.seed,
        data=array_digest(train_split.images.numpy(), train_split.labels.numpy()),
        classifier=cfg.classifier,
        train=TrainConfig(seed=cfg.seed),
        device=str(device),
        code=ride_source_digest(),
    )
    train = _cached(trained_classifier_state, cfg) if cfg.cache else trained_classifier_state.fn
    state = train(key, train_split)
    model = build_classifier(cfg.classifier, num_classes=train_split.num_classes, seed=cfg.seed)
    model.load_state_dict(state)
    return model.to(device).eval()


def _cached(task_fn: Any, cfg: RunConfig) -> Any:
    """``task_fn`` cached in the run's cache directory (see ``tasks/cache.py``)."""
    return cached(task_fn, Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())


def _run_images_accuracy(
    layout: RunLayout, model: torch.nn.Module, chunk_size: int, device: torch.device
) -> tuple[float, int]:
    """Accuracy of ``model`` on the run's stored clean images, read a chunk at a time."""
    store = ImageStore(layout)
    n = int(store.array("labels").shape[0])
    correct = 0
    for start, stop in chunk_ranges(n, chunk_size):
        images = torch.from_numpy(store.read_rows("clean", start, stop)).to(device)
        labels = torch.from_numpy(store.read_rows("labels", start, stop)).to(device)
        correct += int((predict(model, images) == labels).sum())
    return (correct / n if n else 0.0), n


@task(name="prepare-classifier", retries=1)
def prepare_classifier(out: str, cfg: RunConfig) -> float:
    """Load ``classifier.pt``, ``--weights`` or torchvision's weights, or train the small
    networks on the train split; returns the clean top-1 accuracy, also written to
    ``classifier.json``: on the whole test split, or for ImageNet on the run's images (the
    paper's 2-per-class subset; decoding all 50,000 validation images is not needed)."""
    layout = RunLayout(Path(out))
    device = _device(cfg)
    if layout.classifier.exists():
        model = load_classifier(layout.classifier, cfg.classifier, device=device)
    else:
        model = _obtain_classifier(cfg, device)
        save_classifier(model, layout.classifier, cfg.classifier)
    if cfg.dataset == "imagenet":
        accuracy, count = _run_images_accuracy(layout, model, cfg.chunk_size, device)
        measured_on = "the run's images"
    else:
        test = load_dataset(cfg.dataset, "test", seed=cfg.seed, data_dir=_data_dir(cfg))
        accuracy = classifier_accuracy(model, test.images.to(device), test.labels.to(device))
        count, measured_on = len(test), "the test split"
    info = {
        "classifier": cfg.classifier,
        "dataset": cfg.dataset,
        "test_accuracy": accuracy,
        "test_images": count,
        "measured_on": measured_on,
    }
    atomic_write_bytes(layout.classifier_info, json.dumps(info, indent=2).encode())
    return accuracy


@task(name="attack-chunk", retries=2, retry_delay_seconds=2)
def attack_chunk(
    out: str, cfg: RunConfig, attack: AttackConfig, start: int, stop: int
) -> ChunkOutcome:
    """Gray-box adversarial images of rows ``[start, stop)``; they do not depend on a defender,
    so they come from the cache when an earlier run made them (``adversarial-images``)."""
    began = time.perf_counter()
    layout = RunLayout(Path(out))
    store = ImageStore(layout)
    name = adv_name(attack.id)
    if store.has_rows(name, start):
        return ChunkOutcome("skipped", 0.0)
    device = _device(cfg)
    key = chunk_key(layout, cfg.dataset, cfg.seed, cfg.classifier, str(device), start, stop)
    attack_images = _cached(adversarial_images, cfg) if cfg.cache else adversarial_images.fn
    store.write_rows(name, start, attack_images(out, attack, key))
    return ChunkOutcome("ran", time.perf_counter() - began)


def _base_row(
    cfg: RunConfig, attack: AttackConfig, defender: DefenderConfig, index: int, label: int
) -> dict[str, Any]:
    return {
        "run_id": cfg.run_id,
        "dataset": cfg.dataset,
        "index": index,
        "label": label,
        "attack_id": attack.id,
        "attack": attack.name,
        "attack_params": json.dumps(attack.params(), sort_keys=True),
        "defender_id": defender.id,
        "defender": defender.name,
        "defender_params": json.dumps(defender.params(), sort_keys=True),
        "seed": cfg.seed,
    }


def _logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The task run's Prefect logger; a plain logger when called outside a run (``.fn``)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def _defender_seeds(
    cfg: RunConfig, attack: AttackConfig, defender: DefenderConfig, start: int, count: int
) -> list[int]:
    """One seed per image for this (attack, defender); the attack's draws derive from it."""
    return [
        derive_seed(cfg.seed, cfg.dataset, start + i, attack.id, defender.id) for i in range(count)
    ]


def _distance_columns(
    clean: torch.Tensor, adversarial: torch.Tensor, defended: torch.Tensor
) -> list[dict[str, float]]:
    """Per image: the three distances of Fig. 7a in the three norms, as row columns."""
    pairs = {
        "adv_clean": distances(adversarial, clean),
        "defended_clean": distances(defended, clean),
        "defended_adv": distances(defended, adversarial),
    }
    assert tuple(pairs) == DISTANCE_PAIRS
    return [
        {
            f"{pair}_{norm}": float(value[i])
            for pair, values in pairs.items()
            for norm, value in values.items()
        }
        for i in range(len(clean))
    ]


def step_rows(
    cfg: RunConfig,
    attack: AttackConfig,
    defender: DefenderConfig,
    start: int,
    clean: torch.Tensor,
    labels: torch.Tensor,
    step: BPDAStep,
) -> list[dict[str, Any]]:
    """The ``steps/`` rows of one attack iterate, one per image."""
    columns = _distance_columns(clean, step.adversarial, step.defended)
    rows = []
    for i in range(len(clean)):
        label = int(labels[i])
        rows.append(
            {
                "run_id": cfg.run_id,
                "dataset": cfg.dataset,
                "index": start + i,
                "label": label,
                "attack_id": attack.id,
                "defender_id": defender.id,
                "iteration": step.iteration,
                "pred_adv": int(step.pred_adversarial[i]),
                "pred_defended": int(step.pred_defended[i]),
                "correct_adv": int(step.pred_adversarial[i]) == label,
                "correct_defended": int(step.pred_defended[i]) == label,
                **columns[i],
            }
        )
    return rows


def _build_defender(cfg: RunConfig, defender: DefenderConfig) -> Defender:
    """``defender`` as this run executes it: RIDE's fits at the run's ``--precision``, with as
    many of a chunk's images at once as the device's free memory allows."""
    return build_defender(defender, precision=cfg.precision, max_batch="auto")


def defend_rows(
    cfg: RunConfig,
    attack: AttackConfig,
    defender: DefenderConfig,
    start: int,
    clean: torch.Tensor,
    labels: torch.Tensor,
    adversarial: torch.Tensor,
    model: torch.nn.Module,
    *,
    robust_so_far: list[bool] | None = None,
    seconds: float = 0.0,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Defend a chunk's final adversarial images ``cfg.recheck`` times, classify, build rows.

    The stored defended image is draw 0. ``robust_so_far`` (adaptive attacks) says, per
    image, whether the defended iterate was classified correctly at every attack step;
    ``correct_worst`` also needs every re-check draw correct. ``seconds`` is time already
    spent on these images (the attack, for adaptive attacks).
    """
    began = time.perf_counter()
    seeds = _defender_seeds(cfg, attack, defender, start, len(clean))
    draws = defend_draws(_build_defender(cfg, defender), adversarial, seeds, cfg.recheck)
    defended = draws[0]
    predictions = {
        "clean": predict(model, clean),
        "adv": predict(model, adversarial),
        "defended": predict(model, defended),
    }
    draw_correct = torch.stack(
        [predictions["defended"], *(predict(model, d) for d in draws[1:])]
    ) == labels.view(1, -1)  # (draws, B)
    columns = _distance_columns(clean, adversarial, defended)
    seconds += time.perf_counter() - began
    worker = f"{socket.gethostname()}:{os.getpid()}"
    rows = []
    for i in range(len(clean)):
        label = int(labels[i])
        row = _base_row(cfg, attack, defender, start + i, label)
        row["defender_seed"] = seeds[i]
        for kind, predicted in predictions.items():
            row[f"pred_{kind}"] = int(predicted[i])
            row[f"correct_{kind}"] = int(predicted[i]) == label
        all_draws = bool(draw_correct[:, i].all())
        row.update(
            recheck_draws=cfg.recheck,
            recheck_correct=float(draw_correct[:, i].float().mean()),
            correct_worst=all_draws and (robust_so_far is None or robust_so_far[i]),
            **columns[i],
            seconds=seconds / len(clean),
            worker=worker,
            device=str(clean.device),
            status="ok",
            error=None,
        )
        rows.append(row)
    return defended, rows


def _adaptive_attack(
    layout: RunLayout,
    cfg: RunConfig,
    attack: AttackConfig,
    defender: DefenderConfig,
    start: int,
    clean: torch.Tensor,
    labels: torch.Tensor,
    model: torch.nn.Module,
    key: str,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """BPDA(+EOT) against ``defender``: the final adversarial images and the step rows of
    iterates 0..iters-1. Reuses a stored attack (its images and step file) on resume."""
    store = ImageStore(layout)
    name = adaptive_adv_name(attack.id, defender.id)
    if store.has_rows(name, start) and steps_path(layout.steps, key).exists():
        stored = read_steps(layout.steps, key)
        stored = stored[stored["iteration"] < attack.iters]
        adversarial = torch.from_numpy(store.read_rows(name, start, start + len(clean)))
        return adversarial.to(clean.device), stored.to_dict("records")
    logger = _logger()
    rows: list[dict[str, Any]] = []

    def track(step: BPDAStep) -> None:
        rows.extend(step_rows(cfg, attack, defender, start, clean, labels, step))
        correct = int((step.pred_defended == labels).sum())
        logger.info(
            "%s x %s rows %d-%d: iterate %d/%d, %d/%d defended correctly",
            attack.id,
            defender.id,
            start,
            start + len(clean),
            step.iteration,
            attack.iters,
            correct,
            len(clean),
        )

    seeds = _defender_seeds(cfg, attack, defender, start, len(clean))
    generator = generator_for(
        derive_seed(cfg.seed, cfg.dataset, start, attack.id, defender.id), clean.device
    )
    adversarial = run_attack(
        attack,
        model,
        clean,
        labels,
        generator,
        defender=_build_defender(cfg, defender),
        seeds=seeds,
        on_step=track,
    )
    store.write_rows(name, start, adversarial.detach().cpu().numpy())
    return adversarial, rows


@task(name="defend-chunk", retries=2, retry_delay_seconds=2)
def defend_chunk(
    out: str,
    cfg: RunConfig,
    attack: AttackConfig,
    defender: DefenderConfig,
    start: int,
    stop: int,
) -> ChunkOutcome:
    """Defend rows ``[start, stop)`` against one attack, classify, store images and rows.

    Adaptive attacks (BPDA, BPDA+EOT) are run here, against this defender, and also store
    their adversarial images per defender and one ``steps/`` row per image and iterate.
    """
    began = time.perf_counter()
    layout = RunLayout(Path(out))
    key = result_key(attack.id, defender.id, start, stop)
    if is_finished(layout.results, key):
        return ChunkOutcome("skipped", 0.0)
    device = _device(cfg)
    store = ImageStore(layout)
    clean, labels, model = load_chunk(layout, cfg.classifier, start, stop, device)
    tracked: list[dict[str, Any]] | None = None
    if attack.name == "none":
        adversarial = clean
    elif attack.adaptive:
        adversarial, tracked = _adaptive_attack(
            layout, cfg, attack, defender, start, clean, labels, model, key
        )
    else:
        adversarial = torch.from_numpy(store.read_rows(adv_name(attack.id), start, stop)).to(device)
    robust_so_far = None
    if tracked is not None:
        robust_so_far = [
            all(r["correct_defended"] for r in tracked if r["index"] == start + i)
            for i in range(stop - start)
        ]
    defended, rows = defend_rows(
        cfg,
        attack,
        defender,
        start,
        clean,
        labels,
        adversarial,
        model,
        robust_so_far=robust_so_far,
        seconds=time.perf_counter() - began,
    )
    if tracked is not None:  # the final iterate: draw 0 of the re-check
        final = [
            {k: row[k] for k in tracked[0] if k in row} | {"iteration": attack.iters}
            for row in rows
        ]
        write_steps(layout.steps, key, tracked + final)
    if defender.id != "none":
        store.write_rows(
            defended_name(attack.id, defender.id), start, defended.detach().cpu().numpy()
        )
    write_results(layout.results, key, rows)
    correct = sum(bool(row["correct_defended"]) for row in rows)
    return ChunkOutcome("ran", time.perf_counter() - began, correct, len(rows))


@task(name="record-failure")
def record_failure(
    out: str,
    cfg: RunConfig,
    attack: AttackConfig,
    defender: DefenderConfig,
    start: int,
    stop: int,
    error: str,
) -> None:
    """Write ``failed`` rows for a chunk whose task failed after its retries."""
    layout = RunLayout(Path(out))
    labels = ImageStore(layout).read_rows("labels", start, stop)
    rows = []
    for i, label in enumerate(labels):
        row = _base_row(cfg, attack, defender, start + i, int(label))
        row.update(
            {column: None for column in SCHEMA.names if column not in row},
            status="failed",
            error=error,
        )
        rows.append(row)
    write_results(layout.results, result_key(attack.id, defender.id, start, stop), rows)


@task(name="report")
def report(out: str) -> str:
    """The accuracy tables of the run as markdown, also a Prefect artifact and ``report.md``;
    the figures under ``figures/``."""
    markdown, _, problems = write_report(RunLayout(Path(out)))
    for problem in problems:
        _logger().warning("figure not drawn: %s", problem)
    create_markdown_artifact(markdown=markdown, key="ride-accuracy", description=f"ride run {out}")
    return markdown
