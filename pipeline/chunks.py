"""The attack and the defence of one chunk: load its inputs from storage, compute, write its
outputs (images to Zarr, rows to Parquet) back to storage.

A chunk is ``[start, stop)`` rows of the run's images. Storage says what is done: a chunk
whose output is stored, and reads back whole, is skipped (``ChunkOutcome.action ==
"skipped"``), so a rerun of the same run recomputes nothing; an output found unreadable or
missing (a truncated result file, a deleted or garbled Zarr chunk) is dropped and recomputed.
A write that fails (disk full, read-only) raises :class:`storage.files.WriteError`.

- :func:`attack_chunk`: the gray-box adversarial images of a chunk (they do not depend on a
  defender; :func:`gray_box_images` computes them and is what the caller may cache).
- :func:`defend_chunk`: one defender on one attack's chunk: the white-box attack first when
  the attack is adaptive (:mod:`pipeline.whitebox`), then :func:`defend_rows`, then the
  defended images, step rows and result rows are stored.
- :func:`record_failure`: the ``failed`` rows of a chunk whose task failed.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import RunConfig
from pipeline.execution import (
    Logger,
    default_logger,
    defender_seeds,
    executed_defender,
    load_chunk,
    worker_device,
)
from pipeline.keys import ChunkKey, chunk_key
from pipeline.rows import (
    Row,
    Verdict,
    distance_columns,
    failed_rows,
    final_step_rows,
    result_rows,
    robust_so_far,
)
from pipeline.whitebox import WhiteBoxChunk, adaptive_attack, attack_iters
from ride.attacks import Attack
from ride.classifiers import predict
from ride.defenders import Defender, defend_draws
from ride.seeding import derive_seed, generator_for
from storage.images import ImageStore, StorageError, adv_name, defended_name
from storage.layout import RunLayout
from storage.results import is_finished, result_key, write_results
from storage.steps import write_steps

GrayBoxImages = Callable[[str, Attack, ChunkKey], np.ndarray]
"""``(out, attack, key) -> adversarial images`` of one chunk: :func:`gray_box_images`, or
the same cached."""


@dataclass(frozen=True)
class ChunkOutcome:
    """What a chunk task did: ``ran`` or ``skipped`` (already in storage)."""

    action: str
    seconds: float
    correct: int = 0
    count: int = 0


def gray_box_images(out: str, attack: Attack, key: ChunkKey) -> np.ndarray:
    """The gray-box adversarial images (rows, C, H, W) float32 of one chunk of ``out``."""
    device = torch.device(key.device)
    clean, labels, model = load_chunk(
        RunLayout(Path(out)), key.classifier, key.start, key.stop, device
    )
    generator = generator_for(derive_seed(key.seed, key.dataset, key.start, attack.id), device)
    adversarial = attack.perturb(model, clean, labels, generator=generator)
    return adversarial.detach().cpu().numpy().astype(np.float32)


def attack_chunk(
    out: str,
    cfg: RunConfig,
    attack: Attack,
    start: int,
    stop: int,
    images: GrayBoxImages = gray_box_images,
    logger: Logger | None = None,
) -> ChunkOutcome:
    """Store the gray-box adversarial images of rows ``[start, stop)``, made by ``images``;
    a stored chunk that does not read back is recomputed (``logger`` is told)."""
    began = time.perf_counter()
    layout = RunLayout(Path(out))
    store = ImageStore(layout)
    name = adv_name(attack.id)
    if store.has_rows(name, start, default_logger(logger).warning):
        return ChunkOutcome("skipped", 0.0)
    device = worker_device(cfg)
    key = chunk_key(layout, cfg.dataset, cfg.seed, cfg.classifier, str(device), start, stop)
    store.write_rows(name, start, images(out, attack, key))
    return ChunkOutcome("ran", time.perf_counter() - began)


def defend_rows(
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    clean: torch.Tensor,
    labels: torch.Tensor,
    adversarial: torch.Tensor,
    model: torch.nn.Module,
    *,
    robust: list[bool] | None = None,
    seconds: float = 0.0,
) -> tuple[torch.Tensor, list[Row]]:
    """Defend a chunk's final adversarial images ``cfg.recheck`` times, classify, build rows.

    The stored defended image is draw 0. ``robust`` (adaptive attacks) says, per image,
    whether the defended iterate was classified correctly at every attack step;
    ``correct_worst`` also needs every re-check draw correct. ``seconds`` is time already
    spent on these images (the attack, for adaptive attacks).
    """
    began = time.perf_counter()
    seeds = defender_seeds(cfg, attack, defender, start, len(clean))
    draws = defend_draws(executed_defender(cfg, defender), adversarial, seeds, cfg.recheck)
    defended = draws[0]
    predictions = {
        "clean": predict(model, clean),
        "adv": predict(model, adversarial),
        "defended": predict(model, defended),
    }
    draw_correct = torch.stack(
        [predictions["defended"], *(predict(model, d) for d in draws[1:])]
    ) == labels.view(1, -1)  # (draws, B)
    verdict = Verdict(
        seeds, predictions, draw_correct, distance_columns(clean, adversarial, defended), robust
    )
    rows = result_rows(
        cfg,
        attack,
        defender,
        start,
        labels,
        verdict,
        seconds=seconds + time.perf_counter() - began,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        device=str(clean.device),
    )
    return defended, rows


def defend_chunk(
    out: str,
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    stop: int,
    logger: Logger | None = None,
) -> ChunkOutcome:
    """Defend rows ``[start, stop)`` against one attack, classify, store images and rows.

    Adaptive attacks (BPDA, BPDA+EOT) are run here, against this defender, and also store
    their adversarial images per defender and one ``steps/`` row per image and iterate.

    The chunk counts as done when its result file reads back with its rows and its defended
    images (a defender other than ``none``) read back whole; otherwise the bad output is
    dropped (``logger`` is told) and the whole chunk is redone. The gray-box adversarial
    images it defends must read back whole too.
    """
    began = time.perf_counter()
    layout = RunLayout(Path(out))
    key = result_key(attack.id, defender.id, start, stop)
    note = default_logger(logger).warning
    store = ImageStore(layout)
    defended_array = None if defender.id == "none" else defended_name(attack.id, defender.id)
    if is_finished(layout.results, key, stop - start, note, cfg.run_id) and (
        defended_array is None or store.has_rows(defended_array, start, note)
    ):
        return ChunkOutcome("skipped", 0.0)
    device = worker_device(cfg)
    clean, labels, model = load_chunk(layout, cfg.classifier, start, stop, device)
    tracked: list[Row] | None = None
    if attack.name == "none":
        adversarial = clean
    elif attack.adaptive:
        chunk = WhiteBoxChunk(cfg, attack, defender, start, clean, labels, model)
        adversarial, tracked = adaptive_attack(layout, chunk, key, default_logger(logger))
    else:
        if not store.has_rows(adv_name(attack.id), start, note):
            raise StorageError(
                f"the adversarial images {adv_name(attack.id)} rows {start}-{stop} are not "
                "stored (their attack-chunk task stores them first)"
            )
        adversarial = torch.from_numpy(store.read_rows(adv_name(attack.id), start, stop)).to(device)
    robust = None if tracked is None else robust_so_far(tracked, start, stop - start)
    defended, rows = defend_rows(
        cfg,
        attack,
        defender,
        start,
        clean,
        labels,
        adversarial,
        model,
        robust=robust,
        seconds=time.perf_counter() - began,
    )
    if tracked is not None:  # the final iterate: draw 0 of the re-check
        write_steps(layout.steps, key, tracked + final_step_rows(rows, attack_iters(attack)))
    if defended_array is not None:  # read back before it is marked done (write_rows)
        store.write_rows(defended_array, start, defended.detach().cpu().numpy())
    write_results(layout.results, key, rows)
    correct = sum(bool(row["correct_defended"]) for row in rows)
    return ChunkOutcome("ran", time.perf_counter() - began, correct, len(rows))


def record_failure(
    out: str,
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    stop: int,
    error: str,
) -> None:
    """Write ``failed`` rows for a chunk whose task failed after its retries."""
    layout = RunLayout(Path(out))
    labels = ImageStore(layout).read_rows("labels", start, stop)
    rows = failed_rows(cfg, attack, defender, start, [int(label) for label in labels], error)
    write_results(layout.results, result_key(attack.id, defender.id, start, stop), rows)
