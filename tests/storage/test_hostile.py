"""A run folder others can write: nothing planted there makes ``ride`` write, rename or
delete a file outside the run, or write through a symbolic link.

The threats, each a file planted by another user of a shared file system: a compaction
journal naming files outside ``results/``; ``.lock`` as a link to a victim file (or a FIFO,
a hard link); symbolic links under the predictable names of temporaries, or in place of a
file or a folder of the run. And a journal whose pending file was deleted by hand, which
must not stop every later compaction.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest
from test_compact import ATTACKS, DEFENDERS, hashes, ordered, write_tasks  # same folder

import storage.layout
from storage.compact import JOURNAL, compact_results, partition_dir, stored_files
from storage.files import StorageError, atomic_write_bytes, touch_marker
from storage.lock import RunDirBusy, check_unlocked, run_lock
from storage.results import is_finished, read_results, result_key

PENDING_NAME = "_part-0123456789abcdef.parquet.pending"
PART_NAME = "part-0123456789abcdef.parquet"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """A run's results: 8 images x 2 attacks x 2 defenders in 4-image tasks (8 files)."""
    folder = tmp_path / "run" / "results"
    write_tasks(folder, 0, 8)
    return folder


@pytest.fixture
def victims(tmp_path: Path) -> dict[Path, bytes]:
    """Files outside the run, and their content: none may change."""
    folder = tmp_path / "victims"
    folder.mkdir()
    found = {}
    for name in ("vA", "vB", "vC"):
        (folder / name).write_bytes(f"victim {name}\n".encode())
        found[folder / name] = (folder / name).read_bytes()
    return found


def unchanged(victims: dict[Path, bytes]) -> bool:
    return all(
        not path.is_symlink() and path.is_file() and path.read_bytes() == data
        for path, data in victims.items()
    )


def partition(attack: str = ATTACKS[1], defender: str = DEFENDERS[1]) -> str:
    """A partition folder relative to ``results/``, as compaction names it."""
    return str(partition_dir(Path("."), attack, defender))


def hostile_journals(results: Path, victims: list[Path]) -> dict[str, dict[str, object]]:
    """Journals that each name a file compaction does not write."""
    vA, vB, _ = victims
    inside = partition()
    escape = os.path.relpath(vA, results)
    return {
        "absolute paths": {"reveal": {"payload.txt": str(vB)}, "remove": [str(vA)]},
        "dot-dot paths": {"reveal": {}, "remove": [escape]},
        "dot-dot in a partition": {
            "reveal": {},
            "remove": [f"{inside}/../../{escape}"],
        },
        "reveal out of its folder": {
            "reveal": {f"{inside}/{PENDING_NAME}": f"{partition(ATTACKS[0])}/{PART_NAME}"},
            "remove": [],
        },
        "reveal under another name": {
            "reveal": {f"{inside}/{PENDING_NAME}": f"{inside}/report.parquet"},
            "remove": [],
        },
        "a hidden file removed": {"reveal": {}, "remove": [".lock"]},
        "a failed file removed": {"reveal": {}, "remove": ["x__y__0000000-0000004.failed.parquet"]},
        "an unencoded partition": {
            "reveal": {},
            "remove": ["attack_id=a/b/defender_id=c/x.parquet"],
        },
    }


CASES = [
    "absolute paths",
    "dot-dot paths",
    "dot-dot in a partition",
    "reveal out of its folder",
    "reveal under another name",
    "a hidden file removed",
    "a failed file removed",
    "an unencoded partition",
]


@pytest.mark.parametrize("case", CASES)
def test_a_journal_naming_other_files_is_refused_and_nothing_is_touched(
    results: Path, victims: dict[Path, bytes], case: str
) -> None:
    (results / "payload.txt").write_bytes(b"attacker's bytes")
    folder = results / partition()
    folder.mkdir(parents=True)
    (folder / PENDING_NAME).write_bytes(b"attacker's bytes")
    journal = hostile_journals(results, list(victims))[case]
    (results / JOURNAL).write_text(json.dumps({"version": 1, **journal}))
    stored = hashes(results)

    with pytest.raises(StorageError, match="is not a journal ride wrote"):
        compact_results(results)
    with pytest.raises(StorageError, match="is not a journal ride wrote"):
        stored_files(results)
    assert hashes(results) == stored
    assert unchanged(victims)


def test_a_journal_through_a_linked_partition_folder_is_refused(
    results: Path, victims: dict[Path, bytes]
) -> None:
    """``attack_id=x`` a link to a folder outside: the journal's names are compaction's own,
    but removing and renaming there would touch the victim's files."""
    outside = next(iter(victims)).parent
    (outside / "defender_id=none").mkdir()
    victim = outside / "defender_id=none" / PART_NAME
    victim.write_bytes(b"victim part")
    (results / f"attack_id={ATTACKS[0]}").symlink_to(outside)
    journal = {"reveal": {}, "remove": [f"{partition(ATTACKS[0], 'none')}/{PART_NAME}"]}
    (results / JOURNAL).write_text(json.dumps({"version": 1, **journal}))

    with pytest.raises(StorageError, match="is a symbolic link"):
        compact_results(results)
    assert victim.read_bytes() == b"victim part"
    assert unchanged(victims)


def test_a_linked_partition_folder_or_results_folder_is_refused(
    results: Path, victims: dict[Path, bytes]
) -> None:
    """Without a journal: compaction would write its pending files, and remove the older
    part files, wherever the link points."""
    outside = next(iter(victims)).parent
    (outside / "defender_id=none").mkdir()
    victim = outside / "defender_id=none" / PART_NAME
    victim.write_bytes(b"victim part")
    (results / f"attack_id={ATTACKS[0]}").symlink_to(outside)
    stored = hashes(results)
    with pytest.raises(StorageError, match=f"attack_id={ATTACKS[0]} is a symbolic link"):
        compact_results(results)
    assert hashes(results) == stored and victim.read_bytes() == b"victim part"

    (results / f"attack_id={ATTACKS[0]}").unlink()
    linked = results.parent / "linked-results"
    linked.symlink_to(results)
    with pytest.raises(StorageError, match="linked-results is a symbolic link"):
        compact_results(linked)
    assert hashes(results) == stored


def stuck_journal(results: Path, tmp_path: Path, removed: bool) -> str:
    """The state of a compaction killed after its commit, then one of its pending files
    deleted by hand; the per-task files it merged already removed (``removed``) or not.
    Returns the partition folder whose pending file is gone."""
    compacted = tmp_path / "compacted"
    shutil.copytree(results, compacted)
    compact_results(compacted)
    reveal = {}
    for part in sorted(compacted.rglob("part-*.parquet")):
        relative = part.parent.relative_to(compacted)
        (results / relative).mkdir(parents=True, exist_ok=True)
        shutil.copy(part, results / relative / f"_{part.name}.pending")
        reveal[f"{relative}/_{part.name}.pending"] = f"{relative}/{part.name}"
    flat = sorted(p.name for p in results.glob("*.parquet"))
    (results / JOURNAL).write_text(json.dumps({"version": 1, "reveal": reveal, "remove": flat}))
    if removed:
        for name in flat:
            (results / name).unlink()
    gone = partition(ATTACKS[1], DEFENDERS[1])
    (pending,) = (results / gone).glob("_part-*.pending")
    pending.unlink()
    return gone


def test_a_journal_whose_pending_file_is_gone_keeps_the_rows_still_stored(
    results: Path, tmp_path: Path
) -> None:
    """Committed, then the pending file deleted before any removal: the per-task files of
    its partition still hold its rows, so they are kept, and nothing is lost."""
    before = ordered(read_results(results))
    stuck_journal(results, tmp_path, removed=False)
    notes: list[str] = []

    compact_results(results, notes.append)
    (note,) = notes
    assert "1 of its partition files were gone" in note and "next `ride run`" in note
    assert not (results / JOURNAL).exists()
    pd.testing.assert_frame_equal(ordered(read_results(results)), before)
    assert not list(results.glob("*.parquet"))  # the kept ones merged by the same compaction
    assert compact_results(results).recovered is None


def test_a_journal_whose_pending_file_is_gone_is_finished_and_its_tasks_redone(
    results: Path, tmp_path: Path
) -> None:
    """Committed, the merged files removed, then the pending file deleted: its rows are
    nowhere. The compaction finishes the rest instead of failing for ever, and the tasks of
    the lost rows are no longer done (a resumed run redoes them)."""
    before = ordered(read_results(results))
    stuck_journal(results, tmp_path, removed=True)
    lost = [result_key(ATTACKS[1], DEFENDERS[1], start, start + 4) for start in (0, 4)]
    kept = result_key(ATTACKS[0], DEFENDERS[0], 0, 4)
    assert not any(is_finished(results, key, 4) for key in lost)

    done = compact_results(results)
    assert done.recovered is not None and "were gone" in done.recovered
    assert "were gone" in done.summary(results).splitlines()[0]
    assert not (results / JOURNAL).exists()
    assert not any(is_finished(results, key, 4) for key in lost)
    assert is_finished(results, kept, 4)
    after = ordered(read_results(results))
    assert len(after) == len(before) - 8
    write_tasks(results, 0, 8)  # the resumed run redoes every task it finds missing
    compact_results(results)
    pd.testing.assert_frame_equal(ordered(read_results(results)), before)


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(
    tmp_path: Path, victims: dict[Path, bytes]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(next(iter(victims)))
    for take in (lambda: run_lock(run).__enter__(), lambda: check_unlocked(run)):
        with pytest.raises(RunDirBusy, match=r"\.lock is a symbolic link, not a lock file"):
            take()
    assert unchanged(victims) and (run / ".lock").is_symlink()


def test_a_dangling_lock_symlink_creates_nothing(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(tmp_path / "created")
    with pytest.raises(RunDirBusy, match="is a symbolic link"), run_lock(run):
        pass
    assert not (tmp_path / "created").exists()


def test_a_lock_that_is_a_hard_link_a_fifo_or_a_folder_is_refused(
    tmp_path: Path, victims: dict[Path, bytes]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lock = run / ".lock"
    os.link(next(iter(victims)), lock)
    with pytest.raises(RunDirBusy, match="a hard link"), run_lock(run):
        pass
    assert unchanged(victims)
    lock.unlink()
    os.mkfifo(lock)
    with pytest.raises(RunDirBusy, match="not a regular file"), run_lock(run):
        pass
    with pytest.raises(RunDirBusy, match="not a regular file"):
        check_unlocked(run)
    lock.unlink()
    lock.mkdir()
    with pytest.raises(RunDirBusy, match="not a regular file"), run_lock(run):
        pass


def test_checking_the_lock_creates_and_writes_nothing(tmp_path: Path) -> None:
    check_unlocked(tmp_path)
    assert not (tmp_path / ".lock").exists()
    (tmp_path / ".lock").write_text("ride run pid 1 on elsewhere since then\n")
    check_unlocked(tmp_path)
    assert (tmp_path / ".lock").read_text() == "ride run pid 1 on elsewhere since then\n"


def test_planted_temporary_names_are_never_written_through(
    tmp_path: Path, victims: dict[Path, bytes]
) -> None:
    """Links under every name the old ``.<name>.<pid>.tmp`` scheme could pick next."""
    victim = next(iter(victims))
    for pid in range(os.getpid() - 50, os.getpid() + 200):
        (tmp_path / f".report.md.{pid}.tmp").symlink_to(victim)
    atomic_write_bytes(tmp_path / "report.md", b"# report\n")
    assert (tmp_path / "report.md").read_bytes() == b"# report\n"
    assert not (tmp_path / "report.md").is_symlink()
    assert unchanged(victims)


def test_a_file_that_is_a_symlink_is_replaced_not_written_through(
    tmp_path: Path, victims: dict[Path, bytes]
) -> None:
    (tmp_path / "report.md").symlink_to(next(iter(victims)))
    atomic_write_bytes(tmp_path / "report.md", b"# report\n")
    assert stat.S_ISREG((tmp_path / "report.md").lstat().st_mode)
    assert (tmp_path / "report.md").read_bytes() == b"# report\n"
    assert unchanged(victims)


@pytest.mark.parametrize("target", ["victim", "nowhere"])
def test_a_done_marker_planted_as_a_symlink_is_replaced_not_followed(
    tmp_path: Path, victims: dict[Path, bytes], target: str
) -> None:
    """A link at a marker's name (to a file, or dangling) is never opened: the marker is
    made in its place and nothing is created or changed where the link pointed."""
    marker = tmp_path / "0"
    pointed = next(iter(victims)) if target == "victim" else tmp_path / "elsewhere" / "x"
    pointed.parent.mkdir(exist_ok=True)
    marker.symlink_to(pointed)
    touch_marker(marker)
    assert stat.S_ISREG(marker.lstat().st_mode) and marker.read_bytes() == b""
    assert unchanged(victims)
    assert target == "victim" or not pointed.exists()
    touch_marker(marker)  # again: an existing marker stays as it is
    assert stat.S_ISREG(marker.lstat().st_mode)


def test_a_written_file_gets_the_mode_of_a_new_file(tmp_path: Path) -> None:
    """``mkstemp`` creates 0600; a run's files stay readable as before (umask applies)."""
    umask = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "run.toml", b"x = 1\n")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "run.toml").stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["run.toml"]  # no temporary left


@pytest.mark.parametrize("folder", ["results", "images.zarr", "figures", "images.zarr/adv"])
def test_a_run_folder_that_is_a_symlink_is_refused(
    tmp_path: Path, victims: dict[Path, bytes], folder: str
) -> None:
    run = tmp_path / "run"
    (run / folder).parent.mkdir(parents=True, exist_ok=True)
    (run / folder).symlink_to(next(iter(victims)).parent, target_is_directory=True)
    with pytest.raises(StorageError, match=f"{folder} is a symbolic link"):
        storage.layout.check_own_folders(run)
    with pytest.raises(StorageError, match=f"{folder} is a symbolic link"):
        check_unlocked(run)
    with pytest.raises(StorageError, match=f"{folder} is a symbolic link"), run_lock(run):
        pass
    assert unchanged(victims)


def test_a_run_folder_may_itself_be_a_symlink(tmp_path: Path) -> None:
    """``--out`` given through a link the user made: the run's own folders are checked."""
    (tmp_path / "real" / "results").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    storage.layout.check_own_folders(tmp_path / "link")
    with run_lock(tmp_path / "link"):
        pass
