"""The Parquet result store: a fixed schema, atomic files, failed rows superseded."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

import storage.files
from storage.files import WriteError, atomic_write_bytes
from storage.results import (
    SCHEMA,
    UnreadableFile,
    is_finished,
    read_results,
    result_key,
    result_path,
    write_results,
)


def make_row(index: int, status: str = "ok", correct: bool = True) -> dict[str, Any]:
    row: dict[str, Any] = {name: None for name in SCHEMA.names}
    row.update(
        run_id="digits-abc",
        dataset="digits",
        index=index,
        label=3,
        attack_id="pgd-eps0.1-step0.02-it10",
        attack="pgd",
        attack_params="{}",
        defender_id="median-k3",
        defender="median",
        defender_params="{}",
        seed=0,
        status=status,
    )
    if status == "ok":
        row.update(pred_clean=3, pred_adv=5, pred_defended=3 if correct else 5)
        row.update(correct_clean=True, correct_adv=False, correct_defended=correct)
        row.update(adv_clean_linf=0.1, seconds=0.5, worker="host:1", device="cpu")
    else:
        row["error"] = "RuntimeError: boom"
    return row


KEY = result_key("pgd-eps0.1-step0.02-it10", "median-k3", 0, 2)


def test_key_names_attack_defender_and_rows() -> None:
    assert KEY == "pgd-eps0.1-step0.02-it10__median-k3__0000000-0000002"


def test_written_file_has_the_fixed_schema(tmp_path: Path) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    assert path == result_path(tmp_path, KEY)
    assert pq.read_schema(path).remove_metadata() == SCHEMA
    assert is_finished(tmp_path, KEY)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_rows_must_match_the_schema(tmp_path: Path) -> None:
    row = make_row(0)
    del row["seconds"]
    with pytest.raises(ValueError, match="missing \\{'seconds'\\}"):
        write_results(tmp_path, KEY, [row])
    with pytest.raises(ValueError, match="extra"):
        write_results(tmp_path, KEY, [{**make_row(0), "surprise": 1}])
    with pytest.raises(ValueError, match="one status"):
        write_results(tmp_path, KEY, [make_row(0), make_row(1, status="failed")])
    assert list(tmp_path.iterdir()) == []


def test_failed_rows_do_not_finish_a_task_and_are_superseded(tmp_path: Path) -> None:
    write_results(tmp_path, KEY, [make_row(0, "failed"), make_row(1, "failed")])
    assert not is_finished(tmp_path, KEY)
    assert list(read_results(tmp_path)["status"]) == ["failed", "failed"]
    write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    assert is_finished(tmp_path, KEY)
    assert not result_path(tmp_path, KEY, failed=True).exists()
    assert list(read_results(tmp_path)["status"]) == ["ok", "ok"]


def test_pandas_and_duckdb_see_the_same_rows(tmp_path: Path) -> None:
    write_results(tmp_path, KEY, [make_row(0), make_row(1, correct=False)])
    other = result_key("none", "median-k3", 0, 2)
    write_results(tmp_path, other, [{**make_row(i), "attack_id": "none"} for i in (0, 1)])
    (tmp_path / ".half-written.parquet.tmp").write_bytes(b"PAR1 garbage")
    frame = pd.read_parquet(tmp_path)
    assert len(frame) == 4
    total = duckdb.sql(
        f"select count(*), sum(correct_defended::int) from read_parquet('{tmp_path}/*.parquet')"
    ).fetchall()[0]
    assert total == (4, 3)
    assert read_results(tmp_path)["correct_defended"].sum() == 3


def test_empty_store_reads_as_empty_frame_with_columns(tmp_path: Path) -> None:
    frame = read_results(tmp_path)
    assert frame.empty and list(frame.columns) == SCHEMA.names


def broken(path: Path, how: str) -> bytes:
    """Break a written file as a power cut can: cut it in half, or leave it empty."""
    data = path.read_bytes()[: len(path.read_bytes()) // 2] if how == "truncated" else b""
    path.write_bytes(data)
    return data


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_an_unreadable_file_is_not_finished_and_set_aside(tmp_path: Path, how: str) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    data = broken(path, how)
    notes: list[str] = []
    assert not is_finished(tmp_path, KEY, 2, notes.append)
    aside = tmp_path / f"_{path.name}.corrupt"
    assert not path.exists() and aside.read_bytes() == data  # kept for inspection
    assert len(notes) == 1 and path.name in notes[0] and aside.name in notes[0]
    write_results(tmp_path, result_key("none", "median-k3", 0, 1), [make_row(0)])
    assert len(read_results(tmp_path)) == len(pd.read_parquet(tmp_path)) == 1  # out of the way
    write_results(tmp_path, KEY, [make_row(0), make_row(1)])  # the task redone
    assert is_finished(tmp_path, KEY, 2)
    broken(path, how)
    assert not is_finished(tmp_path, KEY, 2)  # a second bad copy does not replace the first
    assert aside.read_bytes() == data and (tmp_path / f"_{path.name}.corrupt-2").exists()


def test_a_file_with_other_than_its_rows_is_not_finished(tmp_path: Path) -> None:
    write_results(tmp_path, KEY, [make_row(0)])
    notes: list[str] = []
    assert is_finished(tmp_path, KEY)  # no row count asked: readable is enough
    assert not is_finished(tmp_path, KEY, 2, notes.append)
    assert "1 rows where 2 were written" in notes[0]


def test_reading_an_unreadable_file_names_it_in_one_line(tmp_path: Path) -> None:
    write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    other = write_results(tmp_path, result_key("none", "median-k3", 0, 2), [make_row(0)])
    broken(other, "truncated")
    with pytest.raises(UnreadableFile) as raised:
        read_results(tmp_path)
    assert str(other) in str(raised.value) and len(str(raised.value).splitlines()) == 1


def test_a_write_is_fsynced_before_its_rename_and_its_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What makes a power cut leave the old file or the whole new one, never a 0-byte one."""
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        events.append(f"fsync {'dir' if os.path.isdir(target) else Path(target).name}")
        real_fsync(fd)

    def replace(src: Any, dst: Any) -> None:
        events.append(f"replace {Path(src).name} -> {Path(dst).name}")
        real_replace(src, dst)

    monkeypatch.setattr(storage.files.os, "fsync", fsync)
    monkeypatch.setattr(storage.files.os, "replace", replace)
    path = write_results(tmp_path, KEY, [make_row(0)])
    tmp = events[0].removeprefix("fsync ")  # a hidden name made unpredictable by mkstemp
    assert tmp.startswith(f".{path.name}.") and tmp.endswith(".tmp")
    assert events == [f"fsync {tmp}", f"replace {tmp} -> {path.name}", "fsync dir"]
    events.clear()
    atomic_write_bytes(tmp_path / "report.md", b"# report")
    assert events[0].startswith("fsync .report.md") and events[-1] == "fsync dir"


def test_a_failed_write_names_the_file_and_leaves_the_stored_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_results(tmp_path, KEY, [make_row(0), make_row(1)])
    stored = path.read_bytes()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.files.os, "fsync", full)
    with pytest.raises(WriteError) as raised:
        write_results(tmp_path, KEY, [make_row(0, correct=False), make_row(1)])
    assert str(raised.value) == f"cannot write {path}: No space left on device"
    assert isinstance(raised.value, OSError) and raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == stored  # what was stored stays valid
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_rows_of_another_run_do_not_finish_a_task(tmp_path: Path) -> None:
    """A directory adopted with --force-claim under other settings: the stored file of a
    task of the same key was written by another run, so the task is redone, and said so."""
    rows = [make_row(index=i) for i in range(2)]
    write_results(tmp_path, "k", rows)
    notes: list[str] = []
    run_id = rows[0]["run_id"]
    assert is_finished(tmp_path, "k", 2, notes.append, run_id=run_id)
    assert not is_finished(tmp_path, "k", 2, notes.append, run_id="digits-other")
    assert notes == [
        f"{tmp_path / 'k.parquet'} holds rows of run {run_id}; redone for digits-other"
    ]
    assert (tmp_path / "k.parquet").exists()  # kept: the redo replaces it
