"""Values planted in a shared run folder or cache are checked, never trusted: result files of
the wrong types or values are not done, rows are counted once, ``run.toml`` is validated,
cache entries carry a checksum and are checked for shapes and finite values whatever it
says."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomli_w
import torch

from pipeline.cache import cached_trainer
from pipeline.keys import ClassifierKey
from ride.datasets import ImageSet
from ride.training import TrainConfig
from storage.cache import CacheEntryRefused, ResultCache
from storage.compact import compact_results, partition_dir
from storage.results import (
    SCHEMA,
    DuplicateRows,
    UnreadableFile,
    is_finished,
    read_results,
    result_key,
    write_results,
)
from storage.runconfig import RunConfigInvalid, claim_run_dir, read_run_config, read_run_document

ATTACK, DEFENDER = "pgd-eps0.1-step0.02-it10", "median-k3"
KEY = result_key(ATTACK, DEFENDER, 0, 2)


def make_row(index: int) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in SCHEMA.names}
    row.update(
        run_id="digits-0123456789", dataset="digits", index=index, label=3, seed=0,
        attack_id=ATTACK, attack="pgd", attack_params="{}", defender_id=DEFENDER,
        defender="median", defender_params="{}", status="ok", pred_clean=3, pred_adv=5,
        pred_defended=3, correct_clean=True, correct_adv=False, correct_defended=True,
        recheck_draws=4, recheck_correct=0.75, final_correct=0.75, adv_clean_linf=0.1,
        seconds=0.5, worker="host:1", device="cpu",
    )  # fmt: skip
    return row


def rewrite(path: Path, name: str, values: pa.Array) -> None:
    """Rewrite ``path`` with column ``name`` replaced (a readable file, the footer right)."""
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index(name), name, values), path)


# -- result files: types and values are checked when a file is checked as done ------------

BAD_COLUMNS = [
    ("pred_clean", pa.array(["three", "three"]), "column pred_clean is string, not int64"),
    ("recheck_correct", pa.array([1.7, 0.5]), "column recheck_correct holds 1.7, above 1"),
    ("final_correct", pa.array([-0.5, 0.5]), "column final_correct holds -0.5, below 0"),
    ("adv_clean_l2", pa.array([float("nan"), 0.1]), "column adv_clean_l2 holds NaN"),
    ("seconds", pa.array([float("inf"), 0.1]), "column seconds holds an infinite value"),
    ("recheck_draws", pa.array([-4, 4]), "column recheck_draws holds -4, below 0"),
    ("status", pa.array(["ok", "maybe"]), "column status holds other than ok or failed"),
    ("run_id", pa.array([None, "digits-0123456789"], pa.string()), "run_id holds 1 nulls"),
    ("index", pa.array([0, 7]), "image indices other than 0..1"),
    ("index", pa.array([0, 0]), "image indices other than 0..1"),
    ("attack_id", pa.array(["none", ATTACK]), "rows of another attack or defender"),
]


@pytest.mark.parametrize(("column", "values", "why"), BAD_COLUMNS)
def test_a_result_file_of_wrong_types_or_values_is_not_done_and_set_aside(
    tmp_path: Path, column: str, values: pa.Array, why: str
) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    rewrite(path, column, values)
    notes: list[str] = []
    assert not is_finished(tmp_path, KEY, 2, notes.append)
    assert len(notes) == 1 and why in notes[0] and "its task is redone" in notes[0], notes
    assert not path.exists() and path.with_name(f"_{path.name}.corrupt").exists()


@pytest.mark.parametrize(("column", "values", "why"), BAD_COLUMNS[1:8])
def test_reading_a_result_file_of_wrong_values_names_it_in_one_line(
    tmp_path: Path, column: str, values: pa.Array, why: str
) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    rewrite(path, column, values)
    with pytest.raises(UnreadableFile, match=f"{path} is unreadable") as error:
        read_results(tmp_path)
    assert "\n" not in str(error.value)


def test_a_column_of_strings_is_refused_by_the_report(tmp_path: Path) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    rewrite(path, "pred_clean", pa.array(["three", "three"]))
    with pytest.raises(UnreadableFile, match="column pred_clean is string, not int64"):
        read_results(tmp_path)


def test_a_compacted_partition_of_wrong_values_is_set_aside_and_its_tasks_redone(
    tmp_path: Path,
) -> None:
    write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    compact_results(tmp_path)
    assert is_finished(tmp_path, KEY, 2)
    (part,) = partition_dir(tmp_path, ATTACK, DEFENDER).glob("part-*.parquet")
    rewrite(part, "recheck_correct", pa.array([1.7, 0.5]))
    notes: list[str] = []
    assert not is_finished(tmp_path, KEY, 2, notes.append)
    assert len(notes) == 1 and "recheck_correct holds 1.7" in notes[0], notes
    assert not part.exists()


# -- rows are counted once ------------------------------------------------------------------


def test_a_copied_result_file_is_counted_once_and_said_so(tmp_path: Path) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    shutil.copyfile(path, tmp_path / "copy.parquet")
    rewrite(tmp_path / "copy.parquet", "seconds", pa.array([9.0, 9.0]))  # volatile: ignored
    notes: list[str] = []
    frame = read_results(tmp_path, notes.append)
    assert len(frame) == 2 and sorted(frame["index"]) == [0, 1]
    assert notes == [
        f"{tmp_path} holds 2 extra copies of rows (a result file copied under another name?); "
        "each row is counted once"
    ]


def test_a_copied_part_file_is_counted_once(tmp_path: Path) -> None:
    write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    compact_results(tmp_path)
    (part,) = partition_dir(tmp_path, ATTACK, DEFENDER).glob("part-*.parquet")
    shutil.copyfile(part, part.with_name("part-copy.parquet"))
    assert len(read_results(tmp_path, lambda line: None)) == 2


def test_conflicting_copies_of_a_row_are_refused_in_one_line(tmp_path: Path) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    shutil.copyfile(path, tmp_path / "copy.parquet")
    rewrite(tmp_path / "copy.parquet", "recheck_correct", pa.array([0.75, 0.25]))
    with pytest.raises(DuplicateRows, match=r"image 1 .* more than once, with different values"):
        read_results(tmp_path)


def test_rows_of_two_runs_are_not_copies(tmp_path: Path) -> None:
    write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    other = [{**make_row(i), "run_id": "digits-9876543210"} for i in (0, 1)]
    write_results(tmp_path, result_key(ATTACK, DEFENDER, 0, 2) + "x", other)
    assert len(read_results(tmp_path)) == 4


# -- run.toml -------------------------------------------------------------------------------


def planted(tmp_path: Path, **changes: Any) -> Path:
    """A run.toml as ride writes it, then ``changes`` made to it (``config.key`` for the
    config table)."""
    path = tmp_path / "run.toml"
    config = {"dataset": "digits", "limit": 8, "seed": 0, "attacks": ["fgsm"], "eps": 0.1}
    claim_run_dir(path, config, frozenset(config), "0.5.0", "ride run", run_id="digits-0a1b2c3d4e")
    document = tomllib.loads(path.read_text())
    for key, value in changes.items():
        table, name = (
            (document["config"], key[7:]) if key.startswith("config_") else (document, key)
        )
        table[name] = value
    path.write_text(tomli_w.dumps(document))
    return path


def test_a_run_toml_as_written_reads_back(tmp_path: Path) -> None:
    path = planted(tmp_path)
    assert read_run_document(path)["run_id"] == "digits-0a1b2c3d4e"
    assert read_run_config(path)["limit"] == 8


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"run_id": 5}, "run_id must be a string <dataset>-<digest>, not 5"),
        ({"run_id": ""}, "run_id must be"),
        ({"run_id": "x; rm -rf ~"}, "run_id must be"),
        ({"run_id": "mnist-0a1b2c3d4e"}, "run_id 'mnist-0a1b2c3d4e' is not a run of dataset"),
        ({"started": "yesterday"}, "started must be an ISO date and time"),
        ({"code_version": 1}, "code_version must be a string"),
        ({"config_attacks": 5}, "config.attacks must be a list of names, not 5"),
        ({"config_limit": "ten"}, "config.limit must be an integer >= 0"),
        ({"config_limit": True}, "config.limit must be an integer >= 0"),
        ({"config_eps": "0.1"}, "config.eps must be a number"),
        ({"config": 3}, "has no [config] table"),
    ],
)
def test_a_planted_run_toml_is_refused_naming_the_file_and_the_key(
    tmp_path: Path, changes: dict[str, Any], key: str
) -> None:
    path = planted(tmp_path, **changes)
    for read in (read_run_document, read_run_config):
        with pytest.raises(RunConfigInvalid) as error:
            read(path)
        assert str(path) in str(error.value) and key in str(error.value)
        assert "\n" not in str(error.value)


def test_a_run_toml_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_bytes(b"run_id = \xff\n")
    with pytest.raises(RunConfigInvalid, match="is unreadable"):
        read_run_document(path)


# -- the cache ------------------------------------------------------------------------------


def test_an_entry_that_does_not_match_its_checksum_is_refused(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.save_array("k", np.zeros((2, 2), np.float32))
    cache.save_tensors("k", {"w": torch.zeros(2)})
    for path in (cache.array_path("k"), cache.tensors_path("k")):
        data = bytearray(path.read_bytes())
        data[-80] ^= 1  # one bit of the payload flipped, the checksum left as it was
        path.write_bytes(bytes(data))
    with pytest.raises(CacheEntryRefused, match="checksum"):
        cache.load_array("k", (2, 2))
    with pytest.raises(CacheEntryRefused, match="checksum"):
        cache.load_tensors("k")


def test_an_entry_written_without_a_checksum_is_refused(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.save_tensors("k", {"w": torch.zeros(2)})
    torch.save({"w": torch.ones(2)}, cache.tensors_path("k"))
    with pytest.raises(CacheEntryRefused, match="has no checksum"):
        cache.load_tensors("k")
    cache.save_array("k", np.zeros((2, 2), np.float32))
    np.save(cache.array_path("k"), np.ones((2, 2), np.float32))
    with pytest.raises(CacheEntryRefused, match="has no checksum"):
        cache.load_array("k", (2, 2))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_tensors_with_a_matching_checksum_but_nan_or_inf_are_refused(
    tmp_path: Path, value: float
) -> None:
    """Whoever can write the cache can write the checksum too: the values are checked."""
    cache = ResultCache(tmp_path)
    cache.save_tensors("k", {"w": torch.full((2,), value), "n": torch.tensor(3)})
    with pytest.raises(CacheEntryRefused, match="w holds NaN or infinite values"):
        cache.load_tensors("k")


def test_tensors_of_other_names_or_shapes_than_expected_are_refused(tmp_path: Path) -> None:
    cache = ResultCache(tmp_path)
    cache.save_tensors("k", {"w": torch.zeros(6), "b": torch.zeros(2)})
    assert cache.load_tensors("k", {"w": (6,), "b": (2,)}) is not None
    with pytest.raises(CacheEntryRefused, match=r"w has shape \(6,\), expected \(2, 3\)"):
        cache.load_tensors("k", {"w": (2, 3), "b": (2,)})
    with pytest.raises(CacheEntryRefused, match="missing \\['v'\\], unexpected \\['w'\\]"):
        cache.load_tensors("k", {"v": (6,), "b": (2,)})


def test_a_cached_classifier_of_the_wrong_shape_is_trained_again(tmp_path: Path) -> None:
    """A cached mnist-cnn with one tensor flattened (its checksum matching) once loaded into
    the network with a traceback on every run: it is refused, trained again and replaced."""
    key = ClassifierKey(dataset="digits", seed=0, data="d", classifier="mnist-cnn",
                        train=TrainConfig(), device="cpu", code="r")  # fmt: skip
    split = ImageSet("digits", torch.zeros(1, 1, 28, 28), torch.zeros(1, dtype=torch.int64), 10)
    calls: list[int] = []

    def train(key: ClassifierKey, split: ImageSet) -> dict[str, torch.Tensor]:
        from pipeline.classifier import network_shapes

        calls.append(1)
        return {name: torch.zeros(shape) for name, shape in network_shapes(key, split).items()}

    cache = ResultCache(tmp_path)
    trainer = cached_trainer(cache, train)
    good = trainer(key, split)
    (entry,) = (tmp_path / "tensors").glob("*.pt")
    bad = dict(good)
    name = next(k for k, v in bad.items() if v.ndim > 1)
    bad[name] = bad[name].flatten()
    cache.save_tensors(entry.stem, bad)
    again = trainer(key, split)
    assert len(calls) == 2 and again[name].shape == good[name].shape
    assert trainer(key, split)[name].shape == good[name].shape and len(calls) == 2
