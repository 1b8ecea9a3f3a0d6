"""Compacted results: every row kept once with equal values, idempotent, safe to kill at any
point, read alike by the project's readers, pandas, pyarrow and DuckDB."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.dataset as ds
import pytest

import storage.compact
import storage.journal
from storage.compact import JOURNAL, compact_results, partition_dir, stored_files
from storage.files import StorageError
from storage.results import (
    SCHEMA,
    UnreadableFile,
    is_finished,
    read_results,
    result_key,
    result_path,
    write_results,
)

ATTACKS = ("none", "pgd-eps0.1-step0.02-it10")
DEFENDERS = ("none", "median-k3")
KEY_COLUMNS = ["attack_id", "defender_id", "index", "run_id"]
REPO = Path(__file__).resolve().parents[2]


def row(
    index: int, attack_id: str, defender_id: str, run_id: str = "digits-abc", status: str = "ok"
) -> dict[str, Any]:
    """One result row whose values depend on the image, so a mixed-up row shows."""
    values: dict[str, Any] = {name: None for name in SCHEMA.names}
    values.update(
        run_id=run_id, dataset="digits", index=index, label=index % 10, seed=0, status=status,
        attack_id=attack_id, attack=attack_id.split("-")[0], attack_params="{}",
        defender_id=defender_id, defender=defender_id.split("-")[0], defender_params="{}",
    )  # fmt: skip
    if status == "ok":
        values.update(
            pred_clean=index % 10, pred_adv=(index + 1) % 10, pred_defended=index % 7,
            correct_clean=True, correct_adv=False, correct_defended=index % 3 == 0,
            adv_clean_linf=index / 100, seconds=0.5 + index, worker="host:1", device="cpu",
        )  # fmt: skip
    else:
        values["error"] = "RuntimeError: boom"
    return values


def write_tasks(
    results: Path, start: int, stop: int, chunk: int = 4, run_id: str = "digits-abc"
) -> list[str]:
    """Per-task files of images ``[start, stop)`` for every attack and defender."""
    keys = []
    for attack_id in ATTACKS:
        for defender_id in DEFENDERS:
            for first in range(start, stop, chunk):
                key = result_key(attack_id, defender_id, first, first + chunk)
                rows = [row(i, attack_id, defender_id, run_id) for i in range(first, first + chunk)]
                write_results(results, key, rows)
                keys.append(key)
    return keys


def ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as SCHEMA's columns, ids as plain strings, sorted by image."""
    frame = frame[SCHEMA.names].astype({"attack_id": str, "defender_id": str})
    return frame.sort_values(KEY_COLUMNS).reset_index(drop=True)


def values(frame: pd.DataFrame) -> list[tuple[Any, ...]]:
    """The rows of ``frame`` (:func:`ordered`) as plain values, missing ones as None, so that
    readers with other missing-value types (DuckDB's) compare."""
    frame = ordered(frame).astype(object)
    return list(frame.where(frame.notna(), None).itertuples(index=False, name=None))


def hashes(results: Path) -> dict[str, str]:
    """sha256 of every file under ``results`` (hidden ones too) by relative path."""
    return {
        str(p.relative_to(results)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(results.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A run's results: 8 images x 2 attacks x 2 defenders in 4-image tasks (8 files)."""
    folder = tmp_path / "results"
    write_tasks(folder, 0, 8)
    return folder


def test_compaction_keeps_every_row_once_with_equal_values(results: Path) -> None:
    before = ordered(read_results(results))
    done = compact_results(results)
    assert (done.merged_files, done.rows, done.partitions) == (8, 32, 4)
    assert not list(results.glob("*.parquet"))  # the per-task files are merged away
    for attack_id in ATTACKS:
        for defender_id in DEFENDERS:
            (part,) = partition_dir(results, attack_id, defender_id).iterdir()
            assert part.name.startswith("part-") and part.suffix == ".parquet"
    assert len(before) == 32
    pd.testing.assert_frame_equal(ordered(read_results(results)), before)
    pd.testing.assert_frame_equal(ordered(pd.read_parquet(results)), before)
    assert read_results(results)["attack_id"].map(type).eq(str).all()  # plain strings
    assert not (results / JOURNAL).exists()
    assert not [p for p in results.rglob("*") if p.name.startswith((".", "_"))]


def test_a_second_compaction_changes_no_file(results: Path) -> None:
    compact_results(results)
    stored = hashes(results)
    done = compact_results(results)
    assert (done.merged_files, done.rows, done.partitions) == (0, 0, 0)
    assert "nothing to compact" in done.summary(results)
    assert hashes(results) == stored


def test_pandas_pyarrow_and_duckdb_read_the_compacted_rows(results: Path) -> None:
    before = ordered(read_results(results))
    compact_results(results)
    table = ds.dataset(results, partitioning="hive").to_table()
    pd.testing.assert_frame_equal(ordered(table.to_pandas()), before)
    query = f"select * from read_parquet('{results}/**/*.parquet', hive_partitioning=true)"
    assert values(duckdb.sql(query).df()) == values(before)
    counts = duckdb.sql(
        f"select attack_id, defender_id, count(*), sum(correct_defended::int) "
        f"from read_parquet('{results}/**/*.parquet', hive_partitioning=true) group by all"
    ).fetchall()
    assert sorted(counts) == sorted((a, d, 8, 3) for a in ATTACKS for d in DEFENDERS)


def test_new_per_task_files_after_a_compaction_are_read_and_merged(results: Path) -> None:
    """A resumed run adds tasks after a compaction: read with the compacted rows, then
    merged by the next compaction, one file per partition again."""
    compact_results(results)
    write_tasks(results, 8, 12)
    expected = 12 * len(ATTACKS) * len(DEFENDERS)
    mixed = ordered(read_results(results))
    assert len(mixed) == expected and not mixed.duplicated(KEY_COLUMNS).any()
    pd.testing.assert_frame_equal(ordered(pd.read_parquet(results)), mixed)
    done = compact_results(results)
    assert (done.merged_files, done.rows, done.partitions) == (4, 16, 4)
    pd.testing.assert_frame_equal(ordered(read_results(results)), mixed)
    assert len(list(results.rglob("*.parquet"))) == 4


def test_done_checks_find_compacted_tasks(results: Path) -> None:
    compact_results(results)
    key = result_key(ATTACKS[1], DEFENDERS[1], 4, 8)
    notes: list[str] = []
    assert is_finished(results, key)
    assert is_finished(results, key, 4, notes.append, run_id="digits-abc")
    assert not notes
    assert not is_finished(results, key, 4, notes.append, run_id="digits-other")
    assert "holds rows of run digits-abc; redone for digits-other" in notes[-1]
    assert not is_finished(results, key, 5, notes.append)  # other than its rows
    assert "holds 4 rows of" in notes[-1]
    assert not is_finished(results, result_key(ATTACKS[1], DEFENDERS[1], 8, 12), 4)
    assert not is_finished(results, result_key("fgsm", DEFENDERS[1], 0, 4), 4)
    assert not is_finished(results, "not-a-key")


def test_a_task_redone_after_a_compaction_replaces_its_compacted_rows(results: Path) -> None:
    """As when both were flat: the newer file of a task replaces the older rows."""
    compact_results(results)
    key = result_key(ATTACKS[0], DEFENDERS[0], 0, 4)
    write_results(results, key, [row(i, ATTACKS[0], DEFENDERS[0], "digits-new") for i in range(4)])
    assert is_finished(results, key, 4, run_id="digits-new")
    for _ in range(2):  # mixed, then compacted
        frame = read_results(results)
        assert (
            len(frame) == 32 and not frame.duplicated(["attack_id", "defender_id", "index"]).any()
        )
        mine = frame[(frame["attack_id"] == "none") & (frame["defender_id"] == "none")]
        assert sorted(mine.loc[mine["index"] < 4, "run_id"]) == ["digits-new"] * 4
        compact_results(results)
    assert not is_finished(results, key, 4, run_id="digits-abc")


def test_rows_of_another_run_are_kept(results: Path) -> None:
    write_tasks(results, 8, 12, run_id="digits-other")
    before = ordered(read_results(results))
    compact_results(results)
    after = ordered(read_results(results))
    pd.testing.assert_frame_equal(after, before)
    assert sorted(set(after["run_id"])) == ["digits-abc", "digits-other"]


def test_failed_files_stay_flat_and_are_superseded_later(results: Path) -> None:
    key = result_key(ATTACKS[1], DEFENDERS[0], 8, 10)
    failed = [row(i, ATTACKS[1], DEFENDERS[0], status="failed") for i in (8, 9)]
    path = write_results(results, key, failed)
    stored = path.read_bytes()
    compact_results(results)
    assert path.read_bytes() == stored  # untouched, not merged
    frame = read_results(results)
    assert len(frame) == 34 and list(frame.loc[frame["status"] == "failed", "index"]) == [8, 9]
    assert compact_results(results).merged_files == 0
    write_results(results, key, [row(i, ATTACKS[1], DEFENDERS[0]) for i in (8, 9)])
    assert not path.exists()  # the success supersedes it
    compact_results(results)
    frame = read_results(results)
    assert len(frame) == 34 and (frame["status"] == "ok").all()


def test_an_unreadable_file_stops_the_compaction_before_any_change(results: Path) -> None:
    path = result_path(results, result_key(ATTACKS[0], DEFENDERS[1], 4, 8))
    path.write_bytes(path.read_bytes()[:100])
    stored = hashes(results)
    with pytest.raises(UnreadableFile, match=path.name):
        compact_results(results)
    assert hashes(results) == stored


class Killed(BaseException):
    """What a kill does to the compaction: it stops between two file operations."""


STEPS = ("atomic_write_bytes", "atomic_write_json", "fsync_directory")
"""The file operations of a compaction, as the modules that make it (the compaction, its
journal's roll-forward) call them."""


def killing(monkeypatch: pytest.MonkeyPatch, at: int) -> list[str]:
    """Stop the compaction before its ``at``-th file operation (writes, renames, removals,
    folder syncs); the operations done, by name."""
    done: list[str] = []

    def step(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if len(done) + 1 == at:
                raise Killed(name)
            done.append(name)
            return real(*args, **kwargs)

        return wrapped

    modules = (storage.compact, storage.journal)
    for name in STEPS:
        assert any(hasattr(module, name) for module in modules), name
        for module in modules:
            if hasattr(module, name):
                monkeypatch.setattr(module, name, step(name, getattr(module, name)))
    monkeypatch.setattr(os, "replace", step("replace", os.replace))
    monkeypatch.setattr(Path, "unlink", step("unlink", Path.unlink))
    return done


@pytest.mark.slow
def test_a_compaction_killed_at_any_step_loses_no_row_and_shows_none_twice(
    results: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed before each of its file operations in turn: the project's readers and the
    done-checks see every row exactly once, a raw pandas reader never sees one twice, and
    the next compaction completes it."""
    write_tasks(results, 8, 12)
    compact_results(results)  # partitions that already hold older rows are replaced too
    write_tasks(results, 12, 16)
    before = ordered(read_results(results))
    pristine = {p.relative_to(results): p.read_bytes() for p in results.rglob("*") if p.is_file()}
    killed_after_commit = 0
    at = 1
    while True:
        with monkeypatch.context() as patch:
            done = killing(patch, at)
            try:
                compact_results(results)
                break
            except Killed:
                pass
        killed_after_commit += (results / JOURNAL).exists()
        pd.testing.assert_frame_equal(ordered(read_results(results)), before)
        raw = pd.read_parquet(results)
        assert not raw.duplicated(["attack_id", "defender_id", "index"]).any(), done
        for key in (result_key(ATTACKS[1], DEFENDERS[1], 4, 8), result_key("none", "none", 12, 16)):
            assert is_finished(results, key, 4, run_id="digits-abc"), (at, done)
        compact_results(results)  # the rerun finishes or undoes it
        pd.testing.assert_frame_equal(ordered(read_results(results)), before)
        pd.testing.assert_frame_equal(ordered(pd.read_parquet(results)), before)
        assert not (results / JOURNAL).exists()
        assert not [p for p in results.rglob("*") if p.name.startswith((".", "_"))]
        assert compact_results(results).merged_files == 0
        for path in [p for p in results.rglob("*") if p.is_file()]:  # back to the start
            path.unlink()
        for relative, data in pristine.items():
            (results / relative).parent.mkdir(parents=True, exist_ok=True)
            (results / relative).write_bytes(data)
        at += 1
    assert at > 20 and killed_after_commit >= 5  # every step of both phases was tried


CHILD = """
import os, signal, sys
from pathlib import Path
import storage.files
from storage.compact import compact_results

calls = 0
real = os.fsync
def fsync(fd):
    global calls
    calls += 1
    if calls == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
    real(fd)
storage.files.os.fsync = fsync
compact_results(Path(sys.argv[1]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("at", "committed"),
    [(1, False), (4, False), (9, False), (11, True), (12, True), (14, True)],
)  # 1: a pending file torn; 9: the journal torn; 11: merged files removed; 14: 3 of 4 shown
def test_a_compaction_killed_by_sigkill_is_finished_by_the_next(
    results: Path, at: int, committed: bool
) -> None:
    """A real kill (no clean-up runs: a torn temporary may stay) at the ``at``-th fsync,
    before or after the journal commits the compaction."""
    before = ordered(read_results(results))
    script = textwrap.dedent(CHILD)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ran = subprocess.run([sys.executable, "-c", script, str(results), str(at)], env=env)
    assert ran.returncode == -signal.SIGKILL
    assert (results / JOURNAL).exists() == committed
    assert bool(list(results.glob("*.parquet"))) != committed  # merged files gone once committed
    pd.testing.assert_frame_equal(ordered(read_results(results)), before)
    assert not pd.read_parquet(results).duplicated(["attack_id", "defender_id", "index"]).any()
    compact_results(results)
    pd.testing.assert_frame_equal(ordered(pd.read_parquet(results)), before)
    assert not [p for p in results.rglob("*") if p.name.startswith((".", "_"))]


def test_a_journal_that_does_not_parse_is_an_error_not_a_guess(results: Path) -> None:
    (results / JOURNAL).write_text("{")
    with pytest.raises(StorageError, match="is not a compaction journal"):
        stored_files(results)
    with pytest.raises(StorageError, match="is not a compaction journal"):
        compact_results(results)
