"""A run folder others can write, through the real command line: nothing planted there makes
``ride`` write, rename or delete a file outside the run, and a stuck journal does not stop
every later run.

The threat model: run folders live on shared file systems, where another user or job may
plant files and symbolic links in them. Whatever is planted, ``ride run``, ``ride compact``
and ``ride report`` either refuse in one ``ride:`` line, touching nothing, or go on without
ever writing through a link: the files outside the run (the victims) keep their bytes.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from faults.harness import (
    RUN_ARGS,
    assert_complete,
    assert_one_error_line,
    copy_run,
    ride,
    ride_here,
    run,
)
from storage.compact import JOURNAL, partition_dir
from storage.results import result_key

pytestmark = pytest.mark.slow

FGSM, MEDIAN, NONE = "fgsm-eps0.1", "median-k3", "none"
"""The ids of :data:`~faults.harness.RUN_ARGS`'s attacks and defenders."""

COMPACTING = [arg for arg in RUN_ARGS if arg != "--no-compact"]
""":data:`~faults.harness.RUN_ARGS` with the compaction at the end of the run."""


def plant_victims(folder: Path, *names: str) -> dict[Path, bytes]:
    """Files outside the run, and their content: none may change."""
    folder.mkdir(exist_ok=True)
    victims = {}
    for name in names:
        victims[folder / name] = f"{name}: the victim's own bytes\n".encode()
        (folder / name).write_bytes(victims[folder / name])
    return victims


def assert_untouched(victims: dict[Path, bytes]) -> None:
    for path, data in victims.items():
        assert stat.S_ISREG(path.lstat().st_mode), f"{path} is no longer a regular file"
        assert path.read_bytes() == data, f"{path} was written"


def results_of(out: Path) -> dict[str, bytes]:
    """Every file under ``out/results`` (hidden ones too) and its bytes."""
    folder = out / "results"
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_compaction_journal_naming_files_outside_the_run_is_refused_in_one_line(
    finished_run: Path, tmp_path: Path
) -> None:
    """A planted ``_compaction.json`` asks the roll-forward to delete ``vA`` and to rename
    the attacker's file over ``vB``, by absolute or by ``../`` paths: ``ride compact``,
    ``ride report`` and ``ride run`` (whose compaction would roll it forward) refuse it."""
    victims = plant_victims(tmp_path / "victims", "vA", "vB")
    vA, vB = victims
    out = copy_run(finished_run, tmp_path / "run")
    results = out / "results"
    (results / "payload.txt").write_text("the attacker's bytes\n")
    journals = [
        {"reveal": {"payload.txt": str(vB)}, "remove": [str(vA)]},
        {
            "reveal": {"payload.txt": os.path.relpath(vB, results)},
            "remove": [os.path.relpath(vA, results)],
        },
    ]
    for journal in journals:
        (results / JOURNAL).write_text(json.dumps({"version": 1, **journal}))
        stored = results_of(out)
        assert_one_error_line(ride_here("compact", str(out)), 1, "is not a journal ride wrote")
        assert_one_error_line(ride_here("report", str(out)), 1, "is not a journal ride wrote")
        assert results_of(out) == stored
        assert_untouched(victims)
    assert_one_error_line(
        ride_here("run", "--out", str(out), *COMPACTING), 1, "is not a journal ride wrote"
    )
    assert results_of(out) == stored
    assert_untouched(victims)


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(
    finished_run: Path, tmp_path: Path
) -> None:
    """``ln -s ~/victim R/.lock``: the lock used to be opened (following the link) and
    truncated to write the holder's line."""
    victims = plant_victims(tmp_path / "victims", "victim")
    out = copy_run(finished_run, tmp_path / "run")
    (out / ".lock").symlink_to(next(iter(victims)))

    assert_one_error_line(ride_here("compact", str(out)), 1, ".lock is a symbolic link")
    assert_one_error_line(run(out), 1, ".lock is a symbolic link")
    assert_untouched(victims)
    assert (out / ".lock").is_symlink()


def test_planted_temporary_names_and_links_are_not_written_through_by_the_report(
    finished_run: Path, tmp_path: Path
) -> None:
    """Links under the temporary names the next processes would have used
    (``.report.md.<pid>.tmp``), and ``report.md`` and ``card.json`` themselves links to
    victims: ``ride report`` replaces them with its own regular files."""
    victims = plant_victims(tmp_path / "victims", "temporary", "report", "card")
    temporary, report, card = victims
    out = copy_run(finished_run, tmp_path / "run")
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    for pid in range(last, last + 2000):
        for name in ("report.md", "card.json"):
            (out / f".{name}.{pid}.tmp").symlink_to(temporary)
    (out / "report.md").unlink()
    (out / "report.md").symlink_to(report)
    (out / "card.json").unlink()
    (out / "card.json").symlink_to(card)

    ran = ride("report", str(out))
    assert ran.code == 0 and "Traceback" not in ran.stderr, ran.tail()
    assert_untouched(victims)
    for name in ("report.md", "card.json"):
        assert stat.S_ISREG((out / name).lstat().st_mode), f"{name} is not a regular file"
    assert (out / "report.md").read_text() in ran.stdout


@pytest.mark.parametrize("folder", ["results", "figures"])
def test_a_run_folder_that_is_a_symlink_out_of_the_run_is_refused_in_one_line(
    finished_run: Path, tmp_path: Path, folder: str
) -> None:
    """``results/`` or ``figures/`` replaced by a link to someone's folder: the run, the
    compaction and the report would write, rename and delete files there."""
    out = copy_run(finished_run, tmp_path / "run")
    elsewhere = tmp_path / "elsewhere"
    (out / folder).rename(elsewhere)
    (out / folder).symlink_to(elsewhere)
    victims = {p: p.read_bytes() for p in elsewhere.rglob("*") if p.is_file()}

    fragment = f"{out / folder} is a symbolic link"
    assert_one_error_line(run(out), 1, fragment)
    assert_one_error_line(ride_here("report", str(out)), 1, fragment)
    if folder == "results":
        assert_one_error_line(ride_here("compact", str(out)), 1, fragment)
    assert_untouched(victims)
    assert sorted(p for p in elsewhere.rglob("*") if p.is_file()) == sorted(victims)


def test_a_stuck_journal_whose_pending_file_is_gone_is_finished_and_the_run_completes(
    finished_run: Path, tmp_path: Path
) -> None:
    """A compaction killed after its commit and its removals, then one of its pending files
    deleted by hand: every run used to exit 1 for ever. Now the rest is rolled forward, the
    lost rows' tasks redone, and the run completes with every row once."""
    out = copy_run(finished_run, tmp_path / "run")
    results = out / "results"
    compacted = ride_here("compact", str(out))
    assert compacted.code == 0, compacted.tail()
    reveal = {}
    for part in sorted(results.rglob("part-*.parquet")):
        pending = part.with_name(f"_{part.name}.pending")
        part.rename(pending)
        reveal[str(pending.relative_to(results))] = str(part.relative_to(results))
    removed = [  # the per-task files it merged, already removed
        f"{result_key(attack, defender, start, start + 4)}.parquet"
        for attack in (NONE, FGSM)
        for defender in (NONE, MEDIAN)
        for start in (0, 4)
    ]
    journal = {"version": 1, "reveal": reveal, "remove": removed}
    (results / JOURNAL).write_text(json.dumps(journal))
    (gone,) = partition_dir(results, FGSM, MEDIAN).glob("_part-*.pending")
    gone.unlink()

    ran = ride("run", "--out", str(out), *COMPACTING)
    assert ran.code == 0, ran.tail()
    assert "were gone" in ran.stderr
    assert not (results / JOURNAL).exists()
    assert_complete(out, {})
    again = ride_here("compact", str(out))
    assert again.code == 0 and "nothing to compact" in again.stdout, again.tail()
