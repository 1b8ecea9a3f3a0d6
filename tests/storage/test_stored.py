"""What a chunk task finds stored: an output counts only when it reads back whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.files import StorageError
from storage.images import ImageStore, adv_name, defended_name, predictions_name
from storage.layout import RunLayout
from storage.stored import attack_chunk_stored, defence_stored, stored_gray_box

ATTACK = "fgsm-eps0.1"
RUN_ID = "digits-0000000000"


def store_with_arrays(root: Path) -> tuple[RunLayout, ImageStore]:
    layout = RunLayout(root)
    store = ImageStore(layout)
    store.ensure_array(adv_name(ATTACK), (4, 1, 2, 2), 2)
    store.ensure_array(predictions_name(ATTACK), (4, 2), 2, dtype="int64")
    store.ensure_array(defended_name(ATTACK, "median-k3"), (4, 1, 2, 2), 2)
    return layout, store


def test_an_attack_chunk_finds_what_is_stored_and_what_its_defenders_still_need(
    tmp_path: Path,
) -> None:
    layout, store = store_with_arrays(tmp_path)
    notes: list[str] = []

    def found(adversarial: bool = True) -> tuple[bool, bool, tuple[str, ...], bool]:
        seen = attack_chunk_stored(
            layout, ATTACK, ("none", "median-k3"), 0, 2,
            adversarial=adversarial, run_id=RUN_ID, note=notes.append,
        )  # fmt: skip
        return seen.adversarial, seen.predictions, seen.pending, seen.done

    assert found() == (False, False, ("none", "median-k3"), False)
    assert found(adversarial=False)[0]  # ``none`` makes no adversarial images
    store.write_rows(adv_name(ATTACK), 0, np.full((2, 1, 2, 2), 0.5, dtype=np.float32))
    store.write_rows(predictions_name(ATTACK), 0, np.zeros((2, 2), dtype=np.int64))
    assert found()[:2] == (True, True)
    assert not defence_stored(layout, ATTACK, "median-k3", 0, 2, run_id=RUN_ID, note=notes.append)
    assert notes == []


def test_a_defence_chunk_reads_its_attack_s_outputs_only_when_they_are_whole(
    tmp_path: Path,
) -> None:
    layout, store = store_with_arrays(tmp_path)
    with pytest.raises(StorageError, match=r"rows 0-2 are not stored"):
        stored_gray_box(layout, ATTACK, 0, 2, adversarial=True, note=print)
    images = np.full((2, 1, 2, 2), 0.25, dtype=np.float32)
    store.write_rows(adv_name(ATTACK), 0, images)
    store.write_rows(predictions_name(ATTACK), 0, np.array([[1, 2], [3, 4]]))
    adversarial, predictions = stored_gray_box(layout, ATTACK, 0, 2, adversarial=True, note=print)
    assert adversarial is not None and np.array_equal(adversarial, images)
    assert predictions.tolist() == [[1, 2], [3, 4]]
    assert stored_gray_box(layout, ATTACK, 0, 2, adversarial=False, note=print)[0] is None
