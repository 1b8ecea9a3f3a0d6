"""Is a chunk's output already stored, and does it read back whole?

A chunk task asks this before it computes anything: storage, not the Prefect database, is
the source of truth for resume. Each answer reads what it vouches for: a result file counts
when it reads back with its rows, of this run (:func:`storage.results.is_finished`), an image
chunk when its done marker's chunk decodes and holds no fill value
(:meth:`storage.images.ImageStore.has_rows`). A stored output that does not read back is
dropped (the file set aside, the marker removed; ``note`` is told) and its chunk redoes it.

The arguments are plain: ids as the arrays and result files name them, and the chunk's rows
``[start, stop)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from storage.files import Note, StorageError
from storage.images import ImageStore, adv_name, defended_name, predictions_name
from storage.kept import restored_rows
from storage.layout import RunLayout
from storage.results import is_finished, result_key


@dataclass(frozen=True)
class AttackChunkStored:
    """What an attack chunk finds stored: its adversarial images (``adversarial``; an attack
    that makes none, ``none``, has them), its clean and adversarial predictions, and the
    defenders it runs whose results are not stored yet (``pending``, their ids)."""

    adversarial: bool
    predictions: bool
    pending: tuple[str, ...]

    @property
    def done(self) -> bool:
        return self.adversarial and self.predictions and not self.pending


def defence_stored(
    layout: RunLayout,
    attack_id: str,
    defender_id: str,
    start: int,
    stop: int,
    *,
    run_id: str,
    note: Note,
) -> bool:
    """Is the defence of rows ``[start, stop)`` done: its result file reads back with its
    rows (of run ``run_id``) and its defended images (a defender other than ``none``) read
    back whole? Rows restored from a kept copy (``storage.kept``) have no images: their
    result rows suffice."""
    key = result_key(attack_id, defender_id, start, stop)
    defended = None if defender_id == "none" else defended_name(attack_id, defender_id)
    return is_finished(layout.results, key, stop - start, note, run_id) and (
        defended is None
        or stop <= restored_rows(layout)
        or ImageStore(layout).covers(defended, start, stop, note)
    )


def attack_chunk_stored(
    layout: RunLayout,
    attack_id: str,
    defender_ids: tuple[str, ...],
    start: int,
    stop: int,
    *,
    adversarial: bool,
    run_id: str,
    note: Note,
) -> AttackChunkStored:
    """What the attack chunk of rows ``[start, stop)`` finds stored: the results of each of
    ``defender_ids`` (:func:`defence_stored`), its adversarial images (when the attack makes
    any: ``adversarial``) and its predictions."""
    pending = tuple(
        d
        for d in defender_ids
        if not defence_stored(layout, attack_id, d, start, stop, run_id=run_id, note=note)
    )
    store = ImageStore(layout)
    return AttackChunkStored(
        adversarial=not adversarial or store.has_rows(adv_name(attack_id), start, note),
        predictions=store.has_rows(predictions_name(attack_id), start, note),
        pending=pending,
    )


def stored_gray_box(
    layout: RunLayout, attack_id: str, start: int, stop: int, *, adversarial: bool, note: Note
) -> tuple[np.ndarray | None, np.ndarray]:
    """The adversarial images (None when the attack makes none) and the predictions (N, 2:
    clean, adversarial) of rows ``[start, stop)`` that the attack chunk holding them stored,
    for a defence chunk; a :class:`~storage.files.StorageError` when they do not all read
    back whole (their attack chunk stores them first)."""
    store = ImageStore(layout)
    names = ([adv_name(attack_id)] if adversarial else []) + [predictions_name(attack_id)]
    for name in names:
        if not store.covers(name, start, stop, note):
            raise StorageError(
                f"{name} rows {start}-{stop} are not stored (their attack-chunk task "
                "stores them first)"
            )
    images = store.read_rows(adv_name(attack_id), start, stop) if adversarial else None
    return images, store.read_rows(predictions_name(attack_id), start, stop)
