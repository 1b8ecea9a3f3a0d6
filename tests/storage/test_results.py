"""The Parquet result store: a fixed schema, atomic files, failed rows superseded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq
import pytest

from storage.results import (
    SCHEMA,
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
    write_results(tmp_path, other, [make_row(0), make_row(1)])
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
