"""Storage integrity, through the real command line: nothing lost, nothing trusted blindly.

A result file cut short or left empty (what a power cut leaves) is set aside as ``_*.corrupt``
and its task redone; a Zarr chunk deleted or garbled loses its done marker and is recomputed;
a write that fails (disk full, read-only) ends the run with one line and exit status 3, and a
rerun completes it. Every repaired run holds each row once, the files untouched by the fault
byte-identical and the recomputed rows equal to those of the finished run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from faults.harness import (
    assert_complete,
    assert_one_error_line,
    copy_run,
    file_hashes,
    inject,
    ride,
    run,
)
from storage.results import VOLATILE_COLUMNS, read_results, result_key

pytestmark = pytest.mark.slow

FGSM, MEDIAN, NONE = "fgsm-eps0.1", "median-k3", "none"
"""The ids of :data:`~faults.harness.RUN_ARGS`'s attacks and defenders."""


def result_file(out: Path, attack: str, defender: str, start: int) -> Path:
    """The result file of one chunk task (chunks of 4 rows)."""
    return out / "results" / f"{result_key(attack, defender, start, start + 4)}.parquet"


def chunk_file(out: Path, name: str, start: int) -> Path:
    """The Zarr v3 file of the chunk of ``name`` starting at row ``start``."""
    return out / "images.zarr" / name / "c" / str(start // 4) / "0" / "0" / "0"


def images(out: Path, name: str) -> np.ndarray:
    return np.asarray(zarr.open_array(str(out / "images.zarr" / name), mode="r")[:])


def hashes_but(out: Path, *redone: Path) -> dict[str, str]:
    """The result files' hashes, less those the repair rewrites."""
    return {
        k: v for k, v in file_hashes(out / "results").items() if k not in {p.name for p in redone}
    }


def assert_same_rows(out: Path, finished: Path) -> None:
    """The repaired run's rows equal the finished run's (all but timing and worker)."""

    def rows(folder: Path) -> pd.DataFrame:
        frame = read_results(folder / "results").drop(columns=list(VOLATILE_COLUMNS))
        return frame.sort_values(["attack_id", "defender_id", "index"]).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(out), rows(finished))


def test_a_truncated_or_empty_result_file_is_set_aside_and_redone(
    finished_run: Path, tmp_path: Path
) -> None:
    out = copy_run(finished_run, tmp_path / "run")
    truncated, empty = result_file(out, FGSM, MEDIAN, 0), result_file(out, NONE, MEDIAN, 4)
    cut = truncated.read_bytes()[: truncated.stat().st_size // 2]
    truncated.write_bytes(cut)
    empty.write_bytes(b"")
    before = hashes_but(out, truncated, empty)

    line = assert_one_error_line(ride("report", str(out)), 1, "is unreadable", "ride run")
    assert str(truncated) in line or str(empty) in line

    ran = run(out)
    assert ran.code == 0, ran.tail()
    assert f"{truncated} is unreadable" in ran.stderr and f"{empty} is unreadable" in ran.stderr
    assert truncated.with_name(f"_{truncated.name}.corrupt").read_bytes() == cut  # kept
    assert empty.with_name(f"_{empty.name}.corrupt").read_bytes() == b""
    assert_complete(out, before)
    assert_same_rows(out, finished_run)
    report = ride("report", str(out))
    assert report.code == 0 and "Traceback" not in report.stderr, report.tail()
    assert "fgsm-eps0.1" in report.stdout


def test_a_deleted_defended_chunk_is_recomputed(finished_run: Path, tmp_path: Path) -> None:
    out = copy_run(finished_run, tmp_path / "run")
    name = f"defended/{FGSM}/{MEDIAN}"
    original = images(out, name)
    chunk_file(out, name, 0).unlink()  # its result file stays
    before = hashes_but(out, result_file(out, FGSM, MEDIAN, 0))

    ran = run(out)
    assert ran.code == 0, ran.tail()
    assert "its done marker is dropped" in ran.stderr
    np.testing.assert_array_equal(images(out, name), original)  # no NaN left
    assert_complete(out, before)
    assert_same_rows(out, finished_run)


def test_a_deleted_adversarial_chunk_is_recomputed_by_its_attack_task(
    finished_run: Path, tmp_path: Path
) -> None:
    out = copy_run(finished_run, tmp_path / "run")
    name = f"adv/{FGSM}"
    original = images(out, name)
    chunk_file(out, name, 4).unlink()
    for defender in (NONE, MEDIAN):  # the tasks that defend it were not finished
        result_file(out, FGSM, defender, 4).unlink()
    before = file_hashes(out / "results")

    ran = run(out)
    assert ran.code == 0, ran.tail()
    np.testing.assert_array_equal(images(out, name), original)
    assert_complete(out, before)
    assert_same_rows(out, finished_run)


def test_a_garbled_clean_chunk_is_decoded_from_the_dataset_again(
    finished_run: Path, tmp_path: Path
) -> None:
    out = copy_run(finished_run, tmp_path / "run")
    original = images(out, "clean")
    garbled = chunk_file(out, "clean", 4)
    garbled.write_bytes(os.urandom(garbled.stat().st_size))
    for attack in (NONE, FGSM):  # the tasks that read it were not finished
        for defender in (NONE, MEDIAN):
            result_file(out, attack, defender, 4).unlink()
    before = file_hashes(out / "results")  # rows 0-4: untouched

    ran = run(out)
    assert ran.code == 0, ran.tail()
    assert "does not decode" in ran.stderr
    np.testing.assert_array_equal(images(out, "clean"), original)
    assert_complete(out, before)
    assert_same_rows(out, finished_run)


def test_a_full_disk_ends_the_run_in_one_line_and_a_rerun_completes_it(
    finished_run: Path, tmp_path: Path
) -> None:
    out = copy_run(finished_run, tmp_path / "run")
    for defender in (NONE, MEDIAN):
        for start in (0, 4):
            result_file(out, FGSM, defender, start).unlink()
    stored = len(file_hashes(out / "results"))
    report = (out / "report.md").read_bytes()
    full = inject(RIDE_FAULT_WRITE_DIR=str(out), RIDE_FAULT_WRITE_AFTER=str(stored + 1))

    ran = run(out, env=full)
    assert_one_error_line(
        ran, 3, f"cannot write {out}/", "No space left on device", "rerun the same command"
    )
    kept = file_hashes(out / "results")
    assert len(kept) == stored + 1  # one more result file, then the disk was full
    assert len(read_results(out / "results")) == 4 * len(kept)  # every stored file reads
    assert not [p.name for p in (out / "results").iterdir() if not p.name.endswith(".parquet")]
    assert not list((out / "results").glob("*.failed.parquet"))  # no failed rows attempted
    assert (out / "report.md").read_bytes() == report  # no report either

    ran = run(out)  # space freed
    assert ran.code == 0, ran.tail()
    assert_complete(out, kept)
    assert_same_rows(out, finished_run)


def test_a_read_only_results_folder_ends_the_run_in_one_line(
    finished_run: Path, tmp_path: Path
) -> None:
    """Root ignores file modes, so the read-only mount is injected (EROFS)."""
    out = copy_run(finished_run, tmp_path / "run")
    result_file(out, FGSM, NONE, 4).unlink()
    before = file_hashes(out / "results")
    read_only = inject(RIDE_FAULT_WRITE_DIR=str(out / "results"), RIDE_FAULT_WRITE_ERRNO="EROFS")

    ran = run(out, env=read_only)
    assert_one_error_line(
        ran, 3, f"cannot write {result_file(out, FGSM, NONE, 4)}", "Read-only file system"
    )
    assert file_hashes(out / "results") == before
    assert sorted(p.name for p in (out / "results").iterdir()) == sorted(before)
