"""The attack and the defence of one chunk: load its inputs from storage, compute, store its
outputs (images to Zarr, rows to Parquet).

A chunk is a :class:`~pipeline.plan.Task` of a :class:`~pipeline.run.Run`: rows
``[start, stop)`` of the run's images. Storage says what is done (:mod:`storage.stored`): a
chunk whose output is stored, and reads back whole, is skipped (``ChunkOutcome.action ==
"skipped"``), so a rerun of the same run recomputes nothing; an output found unreadable or
missing (a truncated result file, a deleted or garbled Zarr chunk) is dropped and recomputed.
A write that fails (disk full, read-only) raises :class:`storage.files.WriteError`.

- :func:`attack_chunk`: the gray-box adversarial images of a chunk (they do not depend on a
  defender; :func:`gray_box_images` computes them and is what the caller may cache), their
  predictions, and the cheap defenders on them.
- :func:`defend_chunk`: one defender on one attack's chunk: the white-box attack first when
  the attack is adaptive (:mod:`pipeline.whitebox`), then :func:`defend_rows`, then the
  defended images, step rows and result rows are stored.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.config import RunConfig
from pipeline.costs import is_cheap
from pipeline.execution import (
    Logger,
    default_logger,
    defender_seeds,
    executed_defender,
    load_chunk,
    worker_device,
)
from pipeline.keys import ChunkKey, chunk_key
from pipeline.plan import ChunkOutcome, Task
from pipeline.rows import Row, Timing, Verdict, distance_columns, result_rows
from pipeline.run import Run
from pipeline.store import store_defence
from pipeline.timing import Stopwatch, attack_share, write_attack_timing
from pipeline.whitebox import WhiteBoxAttack, WhiteBoxChunk, adaptive_attack
from ride.attacks import Attack
from ride.classifiers import predict
from ride.defenders import Defender, defend_draws
from ride.seeding import derive_seed, generator_for
from storage.files import Note, WriteError
from storage.images import ImageStore, adv_name, predictions_name
from storage.layout import RunLayout
from storage.steps import write_steps
from storage.stored import AttackChunkStored, attack_chunk_stored, defence_stored, stored_gray_box

BATCH = 256
"""Images a gray-box attack or a filter takes at once inside a task (the classifier's
``predict`` batches as much): an attack chunk of thousands of images at once spills its
activations out of the caches and runs slower per image."""

GrayBoxImages = Callable[[str, Attack, ChunkKey], np.ndarray]
"""``(out, attack, key) -> adversarial images`` of one chunk: :func:`gray_box_images`, or
the same cached."""

Predictions = Mapping[str, torch.Tensor]
"""The clean and adversarial predictions of a chunk's images (``clean``, ``adv``: (B,))."""


class DefenderFailures(RuntimeError):
    """Defenders of an attack chunk that failed (the attack itself succeeded): one line,
    ``defender <id>: <error>; ...``; the chunk's other results were stored."""


@dataclass(frozen=True)
class ChunkImages:
    """What the defences of a chunk read: its clean images and labels, the images they
    defend (the attack's), the classifier, and the clean and adversarial predictions."""

    clean: torch.Tensor
    labels: torch.Tensor
    adversarial: torch.Tensor
    model: torch.nn.Module
    predictions: Predictions


# Its source is part of its cache key (pipeline/cache.py): changing it invalidates the
# gray-box images cached by earlier runs.
def gray_box_images(out: str, attack: Attack, key: ChunkKey) -> np.ndarray:
    """The gray-box adversarial images (rows, C, H, W) float32 of one chunk of ``out``."""
    device = torch.device(key.device)
    clean, labels, model = load_chunk(
        RunLayout(Path(out)), key.classifier, key.start, key.stop, device
    )
    generator = generator_for(derive_seed(key.seed, key.dataset, key.start, attack.id), device)
    parts = [  # in batches: a whole attack chunk at once runs slower (its activations spill)
        attack.perturb(model, clean[i : i + BATCH], labels[i : i + BATCH], generator=generator)
        .detach()
        .cpu()
        for i in range(0, len(clean), BATCH)
    ]
    return torch.cat(parts).numpy().astype(np.float32)


def attack_chunk(
    run: Run, task: Task, images: GrayBoxImages = gray_box_images, logger: Logger | None = None
) -> ChunkOutcome:
    """The attack chunk ``task``: the gray-box adversarial images (made by ``images``; the
    clean images for ``none``), the clean and adversarial predictions, once, then every
    cheap defender of the task on them (:func:`defend_rows`), each stored as a defence
    chunk would store it.

    What is stored and reads back is not redone (a chunk that does not read back is dropped
    and recomputed; ``logger`` is told). A defender that raises does not stop the others:
    the error, naming each failed defender, is raised once they all ran, so a retry redoes
    only what is missing.
    """
    clock = Stopwatch()
    note = default_logger(logger).warning
    cheap = [d for d in task.defenders if is_cheap(d)]
    found = attack_chunk_stored(
        run.layout, task.attack.id, tuple(d.id for d in cheap), task.start, task.stop,
        adversarial=task.attack.name != "none", run_id=run.run_id, note=note,
    )  # fmt: skip
    if found.done:
        skipped = tuple(ChunkOutcome("skipped", 0.0, defender_id=d.id) for d in cheap)
        return ChunkOutcome("skipped", 0.0, defences=skipped)
    chunk = _attack_outputs(run, task, found, images, clock)
    common = clock.timing()  # the attack and the shared predictions, split over defenders
    if not cheap:  # no row here carries this work: the defence chunks of these rows share it
        write_attack_timing(run.layout, task, common)
    defences = _cheap_defences(run, task, cheap, found.pending, chunk, common)
    return ChunkOutcome("ran", clock.elapsed(), defences=defences)


def _attack_outputs(
    run: Run, task: Task, found: AttackChunkStored, images: GrayBoxImages, clock: Stopwatch
) -> ChunkImages:
    """The attack chunk's clean images, labels and classifier (loaded), then its adversarial
    images (the clean ones for ``none``) and their predictions: read where ``found`` stored,
    else made (timed as compute; the images by ``images``) and stored, the predictions as
    ``predictions/<attack>`` ((B, 2) class indices)."""
    attack, start, stop = task.attack, task.start, task.stop
    device = worker_device(run.cfg)
    clean, labels, model = load_chunk(run.layout, run.classifier, start, stop, device)
    store = ImageStore(run.layout)
    if attack.name == "none":
        adversarial = clean
    elif found.adversarial:
        adversarial = torch.from_numpy(store.read_rows(adv_name(attack.id), start, stop)).to(device)
    else:
        key = chunk_key(run, task, str(device))
        with clock.compute():
            made = images(str(run.layout.root), attack, key)
        store.write_rows(adv_name(attack.id), start, made)
        adversarial = torch.from_numpy(made).to(device)
    if found.predictions:
        predictions = _split(store.read_rows(predictions_name(attack.id), start, stop), device)
    else:
        with clock.compute():
            predictions = {"clean": predict(model, clean), "adv": predict(model, adversarial)}
        both = torch.stack([predictions["clean"], predictions["adv"]], dim=1)  # (B, 2)
        store.write_rows(predictions_name(attack.id), start, both.cpu().numpy())
    return ChunkImages(clean, labels, adversarial, model, predictions)


def _split(both: np.ndarray, device: torch.device) -> Predictions:
    """Stored predictions ((B, 2): clean, adversarial) as ``clean`` and ``adv`` on ``device``."""
    stored = torch.from_numpy(both)
    return {"clean": stored[:, 0].to(device), "adv": stored[:, 1].to(device)}


def _cheap_defences(
    run: Run,
    task: Task,
    cheap: Sequence[Defender],
    pending: Sequence[str],
    chunk: ChunkImages,
    common: Timing,
) -> tuple[ChunkOutcome, ...]:
    """Each cheap defender of the attack chunk ``task`` whose results are ``pending`` (by
    id), on the chunk's images; the others are skipped. A defender that raises does not stop
    the others: :class:`DefenderFailures` names every one that failed once they all ran (a
    write that fails ends the task at once)."""
    outcomes: list[ChunkOutcome] = []
    errors: list[str] = []
    for defender in cheap:
        if defender.id not in pending:
            outcomes.append(ChunkOutcome("skipped", 0.0, defender_id=defender.id))
            continue
        try:
            outcomes.append(_cheap_defence(run, task, defender, chunk, common, len(pending)))
        except Exception as error:  # one defender's failure leaves the others' results
            if isinstance(error, WriteError):
                raise
            errors.append(f"defender {defender.id}: {type(error).__name__}: {error}")
    if errors:
        raise DefenderFailures("; ".join(line.splitlines()[0] for line in errors))
    return tuple(outcomes)


def _cheap_defence(
    run: Run, task: Task, defender: Defender, chunk: ChunkImages, common: Timing, sharers: int
) -> ChunkOutcome:
    """One cheap defender of the attack chunk ``task`` on its images, stored with its own
    time plus a ``1 / sharers`` share of ``common``, the attack chunk's shared work."""
    own = Stopwatch()
    with own.compute():
        defended, rows = defend_rows(
            run.cfg, task.attack, defender, task.start, chunk.clean, chunk.labels,
            chunk.adversarial, chunk.model, predictions=chunk.predictions,
        )  # fmt: skip
    store_defence(run.layout, task, defender, defended, rows, own, common=common, sharers=sharers)
    correct = sum(bool(row["correct_defended"]) for row in rows)
    return ChunkOutcome("ran", own.elapsed(), correct, len(rows), defender_id=defender.id)


def defend_chunk(run: Run, task: Task, logger: Logger | None = None) -> ChunkOutcome:
    """The defence chunk ``task``: defend its rows against its attack, classify, store
    images and rows.

    White-box attacks (BPDA, BPDA+EOT, the adaptive attacks) are run here, against this
    defender (:mod:`pipeline.whitebox`), and also store their chosen and final images per
    defender and one ``steps/`` row per image and iterate.
    Against a gray-box attack (or ``none``) the adversarial images and their predictions are
    those its attack chunk stored (:func:`attack_chunk`).

    The chunk counts as done when its result file reads back with its rows and its defended
    images (a defender other than ``none``) read back whole; otherwise the bad output is
    dropped (``logger`` is told) and the whole chunk is redone. The gray-box adversarial
    images it defends must read back whole too.
    """
    clock = Stopwatch()
    log = default_logger(logger)
    attack, defender, start, stop = task.attack, task.defender, task.start, task.stop
    key = task.result_key(defender)
    if defence_stored(
        run.layout, attack.id, defender.id, start, stop, run_id=run.run_id, note=log.warning
    ):
        return ChunkOutcome("skipped", 0.0, defender_id=defender.id)
    device = worker_device(run.cfg)
    clean, labels, model = load_chunk(run.layout, run.classifier, start, stop, device)
    whitebox: WhiteBoxAttack | None = None
    predictions: Predictions | None = None
    if attack.adaptive:
        chunk = WhiteBoxChunk(run.cfg, attack, defender, start, clean, labels, model)
        with clock.compute():
            whitebox = adaptive_attack(run.layout, chunk, key, log)
        adversarial = whitebox.choice.images
    else:
        adversarial, predictions = _gray_box_inputs(run, task, clean, device, log.warning)
    with clock.compute():
        defended, rows = defend_rows(
            run.cfg, attack, defender, start, clean, labels, adversarial, model,
            whitebox=whitebox, seconds=clock.elapsed(), predictions=predictions,
        )  # fmt: skip
    if whitebox is not None:
        write_steps(run.layout.steps, key, whitebox.rows)
    share = None if whitebox is not None else attack_share(run, task, log.warning)
    store_defence(run.layout, task, defender, defended, rows, clock, attack_work=share)
    correct = sum(bool(row["correct_defended"]) for row in rows)
    return ChunkOutcome("ran", clock.elapsed(), correct, len(rows), defender_id=defender.id)


def _gray_box_inputs(
    run: Run, task: Task, clean: torch.Tensor, device: torch.device, note: Note
) -> tuple[torch.Tensor, Predictions]:
    """The adversarial images (the clean ones for ``none``) and predictions of the defence
    chunk's rows, as its attack chunk stored them (:func:`storage.stored.stored_gray_box`)."""
    images, both = stored_gray_box(
        run.layout, task.attack.id, task.start, task.stop,
        adversarial=task.attack.name != "none", note=note,
    )  # fmt: skip
    adversarial = clean if images is None else torch.from_numpy(images).to(device)
    return adversarial, _split(both, device)


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
    whitebox: WhiteBoxAttack | None = None,
    seconds: float = 0.0,
    predictions: Predictions | None = None,
) -> tuple[torch.Tensor, list[Row]]:
    """Defend a chunk's evaluated adversarial images ``cfg.recheck`` times, classify, build
    rows (:mod:`ride.robustness`).

    ``adversarial`` is the attack's output for a gray-box attack; for a white-box one
    (``whitebox``) the iterates the attacker chose, while its final outputs are defended
    with the same fresh draws where they differ (:func:`_final_draw_correct`). The stored
    defended image is draw 0. ``seconds`` is time already spent on these images (the
    attack, for white-box attacks). ``predictions``: the clean and adversarial predictions
    when the attack chunk made them already (else computed here). The rows' timing columns
    are filled when they are stored (:func:`with_timing`).
    """
    began = time.perf_counter()
    seeds = defender_seeds(cfg, attack, defender, start, len(clean))
    draws = _recheck_draws(cfg, defender, adversarial, seeds)
    defended = draws[0]
    if predictions is None:
        predictions = {"clean": predict(model, clean), "adv": predict(model, adversarial)}
    classified = {"clean": predictions["clean"], "adv": predictions["adv"]}
    classified["defended"] = predict(model, defended)
    draw_predictions = torch.stack(
        [classified["defended"], *(predict(model, d) for d in draws[1:])]
    )  # (R, B)
    draw_correct = draw_predictions == labels.view(1, -1)  # (R, B)
    final_correct = draw_correct
    if whitebox is not None:  # the last-iterate evaluation
        final_correct = _final_draw_correct(
            cfg, defender, whitebox, adversarial, seeds, labels, model, draw_correct
        )
    verdict = Verdict(
        seeds,
        classified,
        draw_predictions,
        final_correct,
        distance_columns(clean, adversarial, defended),
        None if whitebox is None else whitebox.choice,
    )
    rows = result_rows(
        cfg, attack, defender, start, labels, verdict,
        seconds=seconds + time.perf_counter() - began,
        worker=f"{socket.gethostname()}:{os.getpid()}",
        device=str(clean.device),
    )  # fmt: skip
    return defended, rows


def _final_draw_correct(
    cfg: RunConfig,
    defender: Defender,
    whitebox: WhiteBoxAttack,
    adversarial: torch.Tensor,
    seeds: Sequence[int],
    labels: torch.Tensor,
    model: torch.nn.Module,
    draw_correct: torch.Tensor,
) -> torch.Tensor:
    """Per draw and image (R, B), is the defence right on the white-box attack's final
    output: ``draw_correct`` where the attacker chose that output, else the same fresh draws
    on the final output (the last-iterate evaluation)."""
    differ = (whitebox.final != adversarial).flatten(1).any(dim=1).nonzero().squeeze(1)
    if not len(differ):
        return draw_correct
    final_draws = _recheck_draws(
        cfg, defender, whitebox.final[differ], [seeds[i] for i in differ.tolist()]
    )
    final_correct = draw_correct.clone()
    final_correct[:, differ] = torch.stack([predict(model, d) for d in final_draws]) == labels[
        differ
    ].view(1, -1)
    return final_correct


def _recheck_draws(
    cfg: RunConfig, defender: Defender, images: torch.Tensor, seeds: Sequence[int]
) -> list[torch.Tensor]:
    """``cfg.recheck`` fresh draws of ``defender`` on ``images``
    (:func:`~ride.defenders.defend_draws`: seeds no attacker draw uses); a filter in
    batches (RIDE sizes its own groups to the memory)."""
    executed = executed_defender(cfg, defender)
    if not is_cheap(defender):
        return defend_draws(executed, images, seeds, cfg.recheck)
    batches = [
        defend_draws(executed, images[i : i + BATCH], seeds[i : i + BATCH], cfg.recheck)
        for i in range(0, len(images), BATCH)
    ]
    return [torch.cat(parts) for parts in zip(*batches, strict=True)]
