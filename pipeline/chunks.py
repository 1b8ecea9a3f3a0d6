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

import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
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
from pipeline.plan import is_cheap, runs_in_attack_chunk
from pipeline.rows import (
    Row,
    Timing,
    Verdict,
    distance_columns,
    failed_rows,
    result_rows,
    with_timing,
)
from pipeline.whitebox import WhiteBoxAttack, WhiteBoxChunk, adaptive_attack
from ride.attacks import Attack
from ride.classifiers import predict
from ride.defenders import Defender, defend_draws
from ride.seeding import derive_seed, generator_for
from storage.files import WriteError, atomic_write_json, writing
from storage.images import (
    ImageStore,
    StorageError,
    adv_name,
    defended_name,
    predictions_name,
)
from storage.kept import restored_rows
from storage.layout import RunLayout
from storage.results import is_finished, result_key, write_results
from storage.steps import write_steps

BATCH = 256
"""Images a gray-box attack or a filter takes at once inside a task (the classifier's
``predict`` batches as much): an attack chunk of thousands of images at once spills its
activations out of the caches and runs slower per image."""

ATTACK_CHUNK = "attack-chunk"
"""The defender part of the name of an attack chunk's timing file (:func:`attack_timing_path`)."""

GrayBoxImages = Callable[[str, Attack, ChunkKey], np.ndarray]
"""``(out, attack, key) -> adversarial images`` of one chunk: :func:`gray_box_images`, or
the same cached."""


@dataclass(frozen=True)
class ChunkOutcome:
    """What a chunk task did: ``ran`` or ``skipped`` (already in storage).

    An attack chunk's outcome holds one outcome per cheap defender it ran (``defences``,
    each with its ``defender_id``)."""

    action: str
    seconds: float
    correct: int = 0
    count: int = 0
    defender_id: str | None = None
    defences: tuple[ChunkOutcome, ...] = ()


class DefenderFailures(RuntimeError):
    """Defenders of an attack chunk that failed (the attack itself succeeded): one line,
    ``defender <id>: <error>; ...``; the chunk's other results were stored."""


class Stopwatch:
    """Splits a task's wall time into compute (attack, defence, classification) and the rest
    (loading, storing, set-up): ``with clock.compute(): ...`` around the compute."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self.started_at = time.time()
        self.computing = 0.0

    @contextmanager
    def compute(self) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.computing += time.perf_counter() - began

    def elapsed(self) -> float:
        return time.perf_counter() - self.began

    def timing(self) -> Timing:
        """This task's timing so far (a share of it: :meth:`Timing.scaled`)."""
        total = self.elapsed()
        return Timing(
            compute=self.computing,
            overhead=max(0.0, total - self.computing),
            started_at=self.started_at,
            finished_at=time.time(),
        )


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
    out: str,
    cfg: RunConfig,
    attack: Attack,
    start: int,
    stop: int,
    images: GrayBoxImages = gray_box_images,
    logger: Logger | None = None,
    defenders: Sequence[Defender] = (),
) -> ChunkOutcome:
    """The attack chunk of rows ``[start, stop)``: the gray-box adversarial images (made by
    ``images``; the clean images for ``none``), the clean and adversarial predictions, once,
    then every cheap defender of ``defenders`` on them (:func:`defend_rows`), each stored as
    a defence chunk would store it.

    What is stored and reads back is not redone (a chunk that does not read back is dropped
    and recomputed; ``logger`` is told). A defender that raises does not stop the others:
    the error, naming each failed defender, is raised once they all ran, so a retry redoes
    only what is missing.
    """
    clock = Stopwatch()
    layout = RunLayout(Path(out))
    store = ImageStore(layout)
    note = default_logger(logger).warning
    cheap = [d for d in defenders if is_cheap(d)]
    pending = [d for d in cheap if not _defence_stored(layout, cfg, attack, d, start, stop, note)]
    adv_array = None if attack.name == "none" else adv_name(attack.id)
    adv_stored = adv_array is None or store.has_rows(adv_array, start, note)
    predictions_stored = store.has_rows(predictions_name(attack.id), start, note)
    if adv_stored and predictions_stored and not pending:
        skipped = tuple(ChunkOutcome("skipped", 0.0, defender_id=d.id) for d in cheap)
        return ChunkOutcome("skipped", 0.0, defences=skipped)
    device = worker_device(cfg)
    clean, labels, model = load_chunk(layout, cfg.classifier, start, stop, device)
    if adv_array is None:
        adversarial = clean
    elif adv_stored:
        adversarial = torch.from_numpy(store.read_rows(adv_array, start, stop)).to(device)
    else:
        key = chunk_key(layout, cfg.dataset, cfg.seed, cfg.classifier, str(device), start, stop)
        with clock.compute():
            made = images(out, attack, key)
        store.write_rows(adv_array, start, made)
        adversarial = torch.from_numpy(made).to(device)
    if predictions_stored:
        shared = stored_predictions(store, attack, start, stop, device)
    else:
        with clock.compute():
            shared = {"clean": predict(model, clean), "adv": predict(model, adversarial)}
        both = torch.stack([shared["clean"], shared["adv"]], dim=1)  # (B, 2)
        store.write_rows(predictions_name(attack.id), start, both.cpu().numpy())
    common = clock.timing()  # the attack and the shared predictions, split over defenders
    if not cheap:  # no row here carries this work: the defence chunks of these rows share it
        write_attack_timing(layout, attack, start, stop, common)
    outcomes: list[ChunkOutcome] = []
    errors: list[str] = []
    pending_ids = {d.id for d in pending}
    for defender in cheap:
        if defender.id not in pending_ids:
            outcomes.append(ChunkOutcome("skipped", 0.0, defender_id=defender.id))
            continue
        own = Stopwatch()
        try:
            with own.compute():
                defended, rows = defend_rows(
                    cfg, attack, defender, start, clean, labels, adversarial, model,
                    predictions=shared,
                )  # fmt: skip
            store_defence(layout, attack, defender, start, stop, defended, rows, own, common,
                          len(pending))  # fmt: skip
        except Exception as error:  # one defender's failure leaves the others' results
            if isinstance(error, WriteError):
                raise
            errors.append(f"defender {defender.id}: {type(error).__name__}: {error}")
            continue
        correct = sum(bool(row["correct_defended"]) for row in rows)
        outcomes.append(
            ChunkOutcome("ran", own.elapsed(), correct, len(rows), defender_id=defender.id)
        )
    if errors:
        raise DefenderFailures("; ".join(line.splitlines()[0] for line in errors))
    return ChunkOutcome("ran", clock.elapsed(), defences=tuple(outcomes))


def attack_timing_path(layout: RunLayout, attack: Attack, start: int, stop: int) -> Path:
    """Where the attack chunk of rows ``[start, stop)`` that ran no defender keeps its
    timing."""
    return layout.timing / f"{result_key(attack.id, ATTACK_CHUNK, start, stop)}.json"


def write_attack_timing(
    layout: RunLayout, attack: Attack, start: int, stop: int, timing: Timing
) -> None:
    """Keep the timing of an attack chunk that ran no defender (one file per chunk, written
    whole or not at all), so that its work is counted in the run's time split."""
    path = attack_timing_path(layout, attack, start, stop)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, asdict(timing))


def attack_share(
    layout: RunLayout,
    cfg: RunConfig,
    attack: Attack,
    start: int,
    stop: int,
    note: Callable[[str], None],
) -> Timing | None:
    """The part of the work of the attack chunk holding rows ``[start, stop)`` that the
    defence chunk of those rows carries: its rows' fraction of the chunk, split evenly over
    the run's defenders with tasks of their own. None when no attack chunk kept its timing
    (a cheap defender's rows carry it) or its file does not read (``note`` is told: timing
    is not worth failing a chunk)."""
    for path in sorted(layout.timing.glob(f"{attack.id}__{ATTACK_CHUNK}__*.json")):
        try:
            first, last = (int(part) for part in path.stem.rsplit("__", 1)[1].split("-"))
        except ValueError:
            continue  # not a chunk's file
        if not first <= start < last:
            continue
        try:
            kept = json.loads(path.read_text())
            timing = Timing(*(float(kept[f.name]) for f in fields(Timing)))
        except (OSError, ValueError, TypeError, KeyError) as error:
            note(f"{path.name} does not read ({error}); its attack's time is not counted")
            return None
        sharers = sum(1 for d in cfg.defender_configs() if not runs_in_attack_chunk(attack, d))
        return timing.scaled((stop - start) / (last - first) / max(1, sharers))
    return None


def stored_predictions(
    store: ImageStore, attack: Attack, start: int, stop: int, device: torch.device
) -> dict[str, torch.Tensor]:
    """The clean and adversarial predictions of rows ``[start, stop)`` that ``attack``'s
    attack chunk stored (``predictions/<attack>``: (N, 2) class indices)."""
    both = torch.from_numpy(store.read_rows(predictions_name(attack.id), start, stop))
    return {"clean": both[:, 0].to(device), "adv": both[:, 1].to(device)}


def _defence_stored(
    layout: RunLayout,
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    stop: int,
    note: Callable[[str], None],
) -> bool:
    """Is this defence chunk done: its result file reads back with its rows (of this run)
    and its defended images (a defender other than ``none``) read back whole? Rows restored
    from a kept copy (``storage.kept``) have no images: their result rows suffice."""
    key = result_key(attack.id, defender.id, start, stop)
    defended_array = None if defender.id == "none" else defended_name(attack.id, defender.id)
    return is_finished(layout.results, key, stop - start, note, cfg.run_id) and (
        defended_array is None
        or stop <= restored_rows(layout)
        or ImageStore(layout).covers(defended_array, start, stop, note)
    )


def store_defence(
    layout: RunLayout,
    attack: Attack,
    defender: Defender,
    start: int,
    stop: int,
    defended: torch.Tensor,
    rows: list[Row],
    clock: Stopwatch,
    common: Timing | None = None,
    sharers: int = 1,
    attack_work: Timing | None = None,
) -> None:
    """Store a defence chunk: its defended images (read back before they are marked done),
    then its result rows with their timing (``clock``'s, plus a ``1 / sharers`` share of
    ``common``: the work of the attack chunk it ran in; plus ``attack_work``: its share of
    the work of an attack chunk that ran elsewhere, :func:`attack_share`)."""
    defended_array = None if defender.id == "none" else defended_name(attack.id, defender.id)
    if defended_array is not None:
        ImageStore(layout).write_rows(defended_array, start, defended.detach().cpu().numpy())
    timing = clock.timing()
    if common is not None:
        timing = timing.plus(common.scaled(1 / sharers))
    if attack_work is not None:
        timing = timing.plus_work(attack_work)
    key = result_key(attack.id, defender.id, start, stop)
    write_results(layout.results, key, with_timing(rows, timing))


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
    predictions: Mapping[str, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, list[Row]]:
    """Defend a chunk's evaluated adversarial images ``cfg.recheck`` times, classify, build
    rows (:mod:`ride.robustness`).

    ``adversarial`` is the attack's output for a gray-box attack; for a white-box one
    (``whitebox``) the iterates the attacker chose, while its final outputs are defended
    with the same fresh draws where they differ (the last-iterate evaluation). The stored
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
    classified = {
        "clean": predictions["clean"],
        "adv": predictions["adv"],
        "defended": predict(model, defended),
    }
    draw_predictions = torch.stack(
        [classified["defended"], *(predict(model, d) for d in draws[1:])]
    )  # (R, B)
    draw_correct = draw_predictions == labels.view(1, -1)  # (R, B)
    final_draw_correct = draw_correct
    if whitebox is not None:
        differ = (whitebox.final != adversarial).flatten(1).any(dim=1).nonzero().squeeze(1)
        if len(differ):  # the last-iterate evaluation, where the attacker chose another
            final_draws = _recheck_draws(
                cfg, defender, whitebox.final[differ], [seeds[i] for i in differ.tolist()]
            )
            final_draw_correct = draw_correct.clone()
            final_draw_correct[:, differ] = torch.stack(
                [predict(model, d) for d in final_draws]
            ) == labels[differ].view(1, -1)
    verdict = Verdict(
        seeds,
        classified,
        draw_predictions,
        final_draw_correct,
        distance_columns(clean, adversarial, defended),
        None if whitebox is None else whitebox.choice,
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
    layout = RunLayout(Path(out))
    key = result_key(attack.id, defender.id, start, stop)
    note = default_logger(logger).warning
    store = ImageStore(layout)
    if _defence_stored(layout, cfg, attack, defender, start, stop, note):
        return ChunkOutcome("skipped", 0.0, defender_id=defender.id)
    device = worker_device(cfg)
    clean, labels, model = load_chunk(layout, cfg.classifier, start, stop, device)
    whitebox: WhiteBoxAttack | None = None
    predictions: dict[str, torch.Tensor] | None = None
    if attack.adaptive:
        chunk = WhiteBoxChunk(cfg, attack, defender, start, clean, labels, model)
        with clock.compute():
            whitebox = adaptive_attack(layout, chunk, key, default_logger(logger))
        adversarial = whitebox.choice.images
    else:
        for name in ([] if attack.name == "none" else [adv_name(attack.id)]) + [
            predictions_name(attack.id)
        ]:
            if not store.covers(name, start, stop, note):
                raise StorageError(
                    f"{name} rows {start}-{stop} are not stored (their attack-chunk task "
                    "stores them first)"
                )
        adversarial = (
            clean
            if attack.name == "none"
            else torch.from_numpy(store.read_rows(adv_name(attack.id), start, stop)).to(device)
        )
        predictions = stored_predictions(store, attack, start, stop, device)
    with clock.compute():
        defended, rows = defend_rows(
            cfg,
            attack,
            defender,
            start,
            clean,
            labels,
            adversarial,
            model,
            whitebox=whitebox,
            seconds=clock.elapsed(),
            predictions=predictions,
        )
    if whitebox is not None:
        write_steps(layout.steps, key, whitebox.rows)
    share = None if whitebox is not None else attack_share(layout, cfg, attack, start, stop, note)
    store_defence(layout, attack, defender, start, stop, defended, rows, clock, attack_work=share)
    correct = sum(bool(row["correct_defended"]) for row in rows)
    return ChunkOutcome("ran", clock.elapsed(), correct, len(rows), defender_id=defender.id)


def record_failure(
    out: str,
    cfg: RunConfig,
    attack: Attack,
    defender: Defender,
    start: int,
    stop: int,
    error: str,
) -> None:
    """Write ``failed`` rows for a chunk whose task failed after its retries, unless its rows
    were stored (an attack chunk that failed on one defender stored the others)."""
    layout = RunLayout(Path(out))
    if is_finished(layout.results, result_key(attack.id, defender.id, start, stop), stop - start):
        return
    labels = ImageStore(layout).read_rows("labels", start, stop)
    rows = failed_rows(cfg, attack, defender, start, [int(label) for label in labels], error)
    write_results(layout.results, result_key(attack.id, defender.id, start, stop), rows)
