"""Compacted results: the per-task files of a run merged into a hive-partitioned dataset.

A run writes one small file per finished task under ``results/`` (:mod:`storage.results`);
a 10,000-image run leaves thousands, slow to read. :func:`compact_results` merges the ``ok``
ones into one file per (attack, defender)::

    results/attack_id=<attack id>/defender_id=<defender id>/part-<digest>.parquet

The partition columns live in the folder names only (hive style, values percent-encoded):
``pandas.read_parquet(results)`` and ``pyarrow.dataset.dataset(results, partitioning="hive")``
read the folder whole, flat files and partitions alike, and DuckDB reads a compacted run with
``read_parquet('results/**/*.parquet', hive_partitioning=true)``. ``<digest>`` is the start
of the sha256 of the file's bytes, so compacting the same rows again writes nothing.
``*.failed.parquet`` files stay flat: a later success of their task supersedes them. Rows of
every ``run_id`` are kept; rows of a newer per-task file replace the compacted rows of the
same image (a task redone after a compaction), as the newer file replaced the older one when
both were flat.

A kill at any point loses no row and never shows a row twice to a reader of the folder:

1. each new partition file is written durably under a hidden name
   (``_part-<digest>.parquet.pending``: readers and ``*.parquet`` globs skip it);
2. the journal ``results/_compaction.json`` (written atomically) lists the pending files and
   the files they replace (the merged per-task files, the partition's older part): once it
   exists the compaction is committed;
3. the replaced files are removed, then the pending files renamed to their names, then the
   journal removed.

A kill before the journal leaves only hidden pending files, which the next compaction
deletes (nothing visible changed); a kill after it is rolled forward by the next compaction
(:func:`recover`). Between the removals and the renames of step 3 the merged rows are only
in the pending files: :func:`stored_files`, which every reader of the project uses, reads the
journal and finds them there, so ``ride report`` and the done-checks of a resumed run see
every row at every point; a raw ``pandas.read_parquet`` after a kill at that very moment
misses them until the next ``ride compact`` or ``ride run``.

Compaction must be the only writer of ``results/``: call it with the run's lock held (``ride
compact`` takes it; at the end of a run the flow holds it).

Others may write the run folder, so a journal is trusted only for what compaction itself
writes there (:func:`read_journal`): each path relative, inside ``results/``, through no
symbolic link, and of the names compaction makes (a pending file revealed under the name of
its digest in its own folder; a flat per-task file or a partition file removed). Anything else
is refused before any file is touched. A journal whose pending file is gone (deleted by hand)
is rolled forward as far as it can be: the files of that partition are kept, the journal is
removed, and the tasks whose rows are then missing are redone by the next ``ride run``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.files import (
    TEMPORARY_SUFFIX,
    Note,
    StorageError,
    WriteError,
    atomic_write_bytes,
    atomic_write_json,
    fsync_directory,
    set_aside,
    writing,
)
from storage.results import SCHEMA, UnreadableFile, checked_problem, key_span, whole_table

PARTITIONS = ("attack_id", "defender_id")
"""The columns the compacted dataset is partitioned by, outermost first."""

JOURNAL = "_compaction.json"
"""The journal of a committed compaction under ``results/`` (see the module docstring)."""

PENDING = ".pending"
"""The suffix of a written, not yet visible, partition file (``_part-<digest>.parquet.pending``)."""

Partition = tuple[str, str]
"""An (attack id, defender id) pair: one folder of the compacted dataset."""


def part_schema() -> pa.Schema:
    """The schema of a partition file: :data:`storage.results.SCHEMA` less the partition
    columns, which its folder names carry."""
    schema = SCHEMA
    for name in PARTITIONS:
        schema = schema.remove(schema.get_field_index(name))
    return schema


def partition_dir(results_dir: Path, attack_id: str, defender_id: str) -> Path:
    """The folder of one (attack, defender) partition (values percent-encoded, as pyarrow's
    hive partitioning decodes them)."""
    return (
        results_dir
        / f"{PARTITIONS[0]}={quote(attack_id, safe='')}"
        / f"{PARTITIONS[1]}={quote(defender_id, safe='')}"
    )


def partition_of(path: Path) -> Partition | None:
    """The (attack id, defender id) of a file inside a partition folder, else None."""
    outer, inner = path.parent.parent.name, path.parent.name
    prefixes = tuple(f"{name}=" for name in PARTITIONS)
    if not (outer.startswith(prefixes[0]) and inner.startswith(prefixes[1])):
        return None
    return unquote(outer[len(prefixes[0]) :]), unquote(inner[len(prefixes[1]) :])


def _visible(path: Path) -> bool:
    return _visible_name(path.name)


def _visible_name(name: str) -> bool:
    return not name.startswith((".", "_")) and name.endswith(".parquet")


def flat_files(results_dir: Path, failed: bool = False) -> list[Path]:
    """The per-task files at the top of ``results/``: the ``ok`` ones, or the
    ``*.failed.parquet`` ones (``failed``)."""
    return sorted(
        path
        for path in results_dir.glob("*.parquet")
        if _visible(path) and path.name.endswith(".failed.parquet") == failed
    )


def _partition_dirs(results_dir: Path) -> Iterator[Path]:
    yield from sorted(results_dir.glob(f"{PARTITIONS[0]}=*/{PARTITIONS[1]}=*"))


def _linked_folder(results_dir: Path, folder: Path) -> Path | None:
    """The first of ``results_dir``, ``folder`` and the folders between them that is a
    symbolic link (a write through it would land outside the run), else None."""
    relative = folder.relative_to(results_dir)
    for depth in range(len(relative.parts) + 1):
        path = results_dir.joinpath(*relative.parts[:depth])
        if path.is_symlink():
            return path
    return None


def _refuse_linked(results_dir: Path, folder: Path) -> None:
    """Raise :class:`StorageError` when ``folder`` is reached through a symbolic link."""
    linked = _linked_folder(results_dir, folder)
    if linked is not None:
        raise StorageError(
            f"{linked} is a symbolic link (to {os.readlink(linked)}); compaction writes only "
            f"inside the run folder: replace it with the folder it points to, or remove it"
        )


def check_folders(results_dir: Path) -> None:
    """Raise :class:`StorageError` when ``results_dir`` or one of its partition folders is
    a symbolic link: compaction removes and renames files there."""
    _refuse_linked(results_dir, results_dir)
    for outer in sorted(results_dir.glob(f"{PARTITIONS[0]}=*")):
        _refuse_linked(results_dir, outer)
        for inner in sorted(outer.glob(f"{PARTITIONS[1]}=*")):
            _refuse_linked(results_dir, inner)


@dataclass(frozen=True)
class Journal:
    """A committed compaction: ``reveal`` maps each pending file to its final name,
    ``remove`` the files the new ones replace (paths relative to ``results/``)."""

    reveal: Mapping[str, str]
    remove: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"version": 1, "reveal": dict(self.reveal), "remove": list(self.remove)}


PART_NAME = re.compile(r"part-[0-9a-f]{16}\.parquet")
"""The name of a partition file compaction writes: ``part-<digest>.parquet``."""


def read_journal(results_dir: Path) -> Journal | None:
    """The journal of a committed, unfinished compaction, or None. One that does not parse
    (it is written atomically, so only a hand edit can do that), or that names a file
    compaction does not write (:func:`journal_problem`), is a :class:`StorageError`:
    guessing could drop the only copy of rows, or touch files outside the run."""
    path = results_dir / JOURNAL
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise StorageError(f"{path} cannot be read ({type(error).__name__})") from None
    try:
        value = json.loads(text)
        journal = Journal(
            reveal={str(k): str(v) for k, v in value["reveal"].items()},
            remove=tuple(str(p) for p in value["remove"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise StorageError(
            f"{path} is not a compaction journal; move it away only once you have checked "
            f"that no _part-*{PENDING} file under {results_dir} holds rows missing elsewhere"
        ) from None
    problem = journal_problem(results_dir, journal)
    if problem is not None:
        raise StorageError(
            f"{path} is not a journal ride wrote ({problem}); nothing was changed: move it "
            "away once you have checked it"
        )
    return journal


def journal_problem(results_dir: Path, journal: Journal) -> str | None:
    """Why ``journal`` is not one :func:`compact_results` wrote, or None: each pending file
    ``<partition>/_part-<digest>.parquet.pending`` revealed as ``<partition>/part-<digest>
    .parquet`` in the same folder; each removed file a visible per-task ``ok`` file at the
    top of ``results/`` or a visible Parquet file of a partition; every partition folder named
    as :func:`partition_dir` names it and reached through no symbolic link."""
    folders = {results_dir}
    for pending, final in journal.reveal.items():
        folder, name = _split_partition_path(pending)
        stem = name[1 : -len(PENDING)]  # _<stem>.pending
        if not (
            folder is not None
            and name.startswith("_")
            and name.endswith(PENDING)
            and PART_NAME.fullmatch(stem)
            and _split_partition_path(final) == (folder, stem)
        ):
            return f"it reveals {pending!r} as {final!r}"
        folders.add(results_dir / folder)
    for relative in journal.remove:
        folder, name = _split_partition_path(relative)
        flat = folder is None and name == relative
        if not (folder is not None or flat) or not _visible_name(name):
            return f"it removes {relative!r}"
        if flat and name.endswith(".failed.parquet"):
            return f"it removes {relative!r}"
        if folder is not None:
            folders.add(results_dir / folder)
    for path in sorted(folders):
        linked = _linked_folder(results_dir, path)
        if linked is not None:
            return f"{linked} is a symbolic link"
    return None


def _split_partition_path(relative: str) -> tuple[str | None, str]:
    """``(partition folder, file name)`` of a path relative to ``results/``; the folder is
    None unless the path is exactly ``attack_id=<id>/defender_id=<id>/<name>`` with both
    ids percent-encoded as :func:`partition_dir` writes them. Without a folder, the name is
    ``relative`` when it names a file at the top of ``results/``, else ''."""
    if "\x00" in relative:
        return None, ""
    parts = relative.split("/")
    if len(parts) == 1:
        return None, parts[0] if parts[0] not in ("", ".", "..") else ""
    if len(parts) != 3:
        return None, ""
    outer, inner, name = parts
    for part, column in ((outer, PARTITIONS[0]), (inner, PARTITIONS[1])):
        encoded = part.removeprefix(f"{column}=")
        if encoded == part or quote(unquote(encoded), safe="") != encoded:
            return None, ""
    if name in ("", ".", ".."):
        return None, ""
    return f"{outer}/{inner}", name


def stored_files(results_dir: Path) -> tuple[list[Path], dict[Partition, list[Path]]]:
    """What a reader of ``results/`` reads: the flat per-task files (ok and failed), and the
    files of each compacted partition. After a kill during the renames of a committed
    compaction, the journal's pending files stand in for their final names and the files they
    replace are left out, so every row is found exactly once at every point (but for those
    of a pending file deleted by hand: see :func:`_roll_forward`)."""
    journal = read_journal(results_dir)
    removed = set()
    if journal is not None:
        lost = _lost_partitions(results_dir, journal)  # their files are kept (_roll_forward)
        removed = {results_dir / p for p in journal.remove if not _kept(p, lost)}
    flat = [p for p in flat_files(results_dir) + flat_files(results_dir, True) if p not in removed]
    parts: dict[Partition, list[Path]] = {}
    for folder in _partition_dirs(results_dir):
        found = [p for p in folder.glob("*.parquet") if _visible(p) and p not in removed]
        partition = partition_of(folder / "x")
        if found and partition is not None:
            parts[partition] = sorted(found)
    for pending, final in (journal.reveal if journal else {}).items():
        source, target = results_dir / pending, results_dir / final
        partition = partition_of(target)
        if source.exists() and partition is not None and target not in parts.get(partition, []):
            parts.setdefault(partition, []).append(source)
    return sorted(flat), parts


def conformed(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` as exactly ``schema``: its columns in order and type, a column it lacks (a
    file written before the column was added) as nulls."""
    n = table.num_rows
    arrays = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(n, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def with_partition(table: pa.Table, attack_id: str, defender_id: str) -> pa.Table:
    """A partition file's rows as a table of :data:`storage.results.SCHEMA` (the partition
    columns put back, as plain strings)."""
    values = {PARTITIONS[0]: attack_id, PARTITIONS[1]: defender_id}
    n = table.num_rows
    columns = {name: pa.array([value] * n, pa.string()) for name, value in values.items()}
    for name in table.column_names:
        if name not in values:
            columns[name] = table.column(name)
    return conformed(pa.table(columns), SCHEMA)


def read_part(path: Path, partition: Partition) -> pa.Table:
    """One partition file as a table of :data:`storage.results.SCHEMA`; an unreadable one is
    an :class:`~storage.results.UnreadableFile` naming it."""
    found = whole_table(path, part_schema())
    if isinstance(found, str):
        raise UnreadableFile(
            f"{path} is unreadable ({found}); rerun the run (`ride run` with the same --out "
            "and settings) to set it aside and redo its tasks"
        )
    return with_partition(found, *partition)


def key_partition(results_dir: Path, key: str) -> tuple[Partition, int, int] | None:
    """The compacted partition a task key (:func:`storage.results.result_key`) falls in, and
    its image range ``[start, stop)``; None when the key does not parse or no partition
    folder matches it. Only the partition folders are listed."""
    span = key_span(key)
    if span is None:
        return None
    prefix, start, stop = span
    attack_id, _, defender_id = prefix.partition("__")
    if partition_dir(results_dir, attack_id, defender_id).is_dir():
        return (attack_id, defender_id), start, stop
    if prefix.count("__") < 2:  # the one way to split it: no need to list the folders
        return None
    for folder in _partition_dirs(results_dir):  # an id holding "__": match the whole prefix
        partition = partition_of(folder / "x")
        if partition is not None and "__".join(partition) == prefix:
            return partition, start, stop
    return None


def task_rows(results_dir: Path, key: str, note: Note | None) -> tuple[Path, pa.Table] | None:
    """The folder of the compacted partition of task ``key`` and the rows there of its
    images (columns ``run_id`` and ``index``), read from that partition's files only, with a
    filter on ``index``: cheap enough for the done-check of every task. None when it holds
    none; an unreadable partition file is set aside (``note`` is told) and None returned, so
    the tasks of the partition are redone."""
    found = key_partition(results_dir, key)
    if found is None:
        return None
    (attack_id, defender_id), start, stop = found
    _, parts = stored_files_of(results_dir, (attack_id, defender_id))
    tables = []
    for path in parts:
        problem = checked_problem(path, part_schema())  # types and values: once per file
        if problem is None:
            try:
                tables.append(
                    pq.read_table(
                        path,
                        columns=["run_id", "index"],
                        filters=[("index", ">=", start), ("index", "<", stop)],
                    )
                )
            except Exception as error:  # pyarrow raises ArrowInvalid, OSError...: unreadable
                problem = type(error).__name__
        if problem is not None:
            if not path.exists():  # moved by a compaction since it was listed
                return None
            with suppress(WriteError):  # another worker set it aside first
                aside = set_aside(path)
                if note is not None:
                    note(
                        f"{path} is unreadable ({problem}); kept as "
                        f"{aside.name}, the tasks of its partition are redone"
                    )
            return None
    if not tables or not sum(t.num_rows for t in tables):
        return None
    return partition_dir(results_dir, attack_id, defender_id), pa.concat_tables(tables)


def stored_files_of(results_dir: Path, partition: Partition) -> tuple[Path, list[Path]]:
    """The folder of ``partition`` and its files to read (:func:`stored_files`, for one
    partition: only its folder is listed)."""
    folder = partition_dir(results_dir, *partition)
    journal = read_journal(results_dir)
    if journal is None:
        return folder, sorted(p for p in folder.glob("*.parquet") if _visible(p))
    _, parts = stored_files(results_dir)
    return folder, parts.get(partition, [])


@dataclass(frozen=True)
class Compaction:
    """What one :func:`compact_results` did."""

    merged_files: int
    """Per-task files merged into the partitions (and removed)."""
    rows: int
    """Rows of the merged per-task files."""
    partitions: int
    """Partition files written."""
    seconds: float
    recovered: str | None = None
    """What was found of an earlier compaction killed midway, and done with it."""

    def summary(self, results_dir: Path) -> str:
        """One line for the user."""
        lines = [] if self.recovered is None else [self.recovered]
        if not self.merged_files:
            lines.append(f"{results_dir}: nothing to compact (no per-task result file)")
        else:
            lines.append(
                f"{results_dir}: merged {self.merged_files} per-task files ({self.rows} rows) "
                f"into {self.partitions} partitions in {self.seconds:.2f} s"
            )
        return "\n".join(lines)


def recover(results_dir: Path) -> str | None:
    """Finish or undo a compaction killed midway; what was done, or None when nothing was
    left. Committed (a journal): rolled forward. Not committed: its hidden pending files
    deleted (nothing visible had changed). A journal or folder that compaction did not make
    is a :class:`StorageError`, raised before anything changes."""
    check_folders(results_dir)
    journal = read_journal(results_dir)
    if journal is not None:
        lost = _roll_forward(results_dir, journal)
        done = f"finished a compaction that was stopped midway ({len(journal.reveal)} partitions)"
        if not lost:
            return done
        return (
            f"{done}, but {len(lost)} of its partition files were gone ({', '.join(lost)}): "
            "their partitions keep their files, and tasks whose rows are missing are redone "
            "by the next `ride run` with the same --out and settings"
        )
    stray = [
        p
        for folder in _partition_dirs(results_dir)
        for p in folder.iterdir()
        if p.name.startswith(("_part-", "._part-")) and p.name.endswith((PENDING, TEMPORARY_SUFFIX))
    ]
    stray += results_dir.glob(f".{JOURNAL}.*{TEMPORARY_SUFFIX}")  # a journal killed mid-write
    for path in stray:
        with writing(path):
            path.unlink(missing_ok=True)
    for folder in _partition_dirs(results_dir):
        with suppress(OSError):  # not empty: kept
            folder.rmdir()
            folder.parent.rmdir()
    if not stray:
        return None
    return f"removed {len(stray)} unfinished files of a compaction that was stopped midway"


def _lost_partitions(results_dir: Path, journal: Journal) -> dict[str, Partition]:
    """The pending files of ``journal`` that are gone before they were revealed (deleted by
    hand: a roll-forward renames each only once), by the folder they were to be shown in."""
    lost = {}
    for pending, final in journal.reveal.items():
        source, target = results_dir / pending, results_dir / final
        partition = partition_of(target)
        if not source.exists() and not target.exists() and partition is not None:
            lost[str(Path(pending).parent)] = partition
    return lost


def _kept(relative: str, lost: Mapping[str, Partition]) -> bool:
    """Does a file the journal removes belong to a partition whose new file is gone: an
    older file of that partition, or a per-task file of its attack and defender (then kept:
    they may hold the only copy of its rows; a per-task file supersedes compacted rows)."""
    folder = str(Path(relative).parent)
    if folder != ".":
        return folder in lost
    return any(relative.startswith("__".join(p) + "__") for p in lost.values())


def _roll_forward(results_dir: Path, journal: Journal) -> list[str]:
    """Step 3 of a compaction; every step can be redone, so a kill inside it is safe.
    A pending file that is gone keeps the files of its partition (:func:`_kept`); returns
    those pending files."""
    lost = _lost_partitions(results_dir, journal)
    folders = {results_dir}
    for relative in journal.remove:
        if _kept(relative, lost):
            continue
        path = results_dir / relative
        folders.add(path.parent)
        with writing(path):
            path.unlink(missing_ok=True)
    with writing(results_dir):
        for folder in folders:
            if folder.exists():
                fsync_directory(folder)
    for pending, final in journal.reveal.items():
        source, target = results_dir / pending, results_dir / final
        if source.exists():
            with writing(target):
                os.replace(source, target)
                fsync_directory(target.parent)
    path = results_dir / JOURNAL
    with writing(path):
        path.unlink(missing_ok=True)
        fsync_directory(results_dir)
    return sorted(str(results_dir / p) for p in journal.reveal if str(Path(p).parent) in lost)


def _read_sources(files: Iterable[Path]) -> dict[Path, pa.Table]:
    tables = {}
    for path in files:
        found = whole_table(path, SCHEMA)
        if isinstance(found, str):
            raise UnreadableFile(
                f"{path} is unreadable ({found}); rerun the run (`ride run` with the same "
                "--out and settings) to set it aside and redo its task"
            )
        tables[path] = conformed(found, SCHEMA)
    return tables


def _merged(old: list[pa.Table], new: list[pa.Table]) -> pa.Table:
    """The partition's rows: the older compacted ones, less those of an image a newer
    per-task file holds, then the newer ones; sorted by image, then run."""
    fresh = pa.concat_tables(new)
    kept = [
        table.filter(pc.invert(pc.is_in(table.column("index"), value_set=fresh.column("index"))))
        for table in old
    ]
    merged = pa.concat_tables([*kept, fresh])
    order = pc.sort_indices(merged, sort_keys=[("index", "ascending"), ("run_id", "ascending")])
    return conformed(merged.take(order), part_schema())


def _parquet_bytes(table: pa.Table) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(None), buffer)
    return buffer.getvalue()


def compact_results(results_dir: Path, note: Note | None = None) -> Compaction:
    """Merge the ``ok`` per-task files of ``results_dir`` into its partitions (see the module
    docstring); idempotent, and safe to kill at any point. A compaction stopped midway is
    finished or undone first (``note`` is told). An unreadable per-task or partition file is
    an :class:`~storage.results.UnreadableFile` raised before anything changes; a failed
    write a :class:`~storage.files.WriteError`."""
    began = time.perf_counter()
    recovered = recover(results_dir)
    if recovered is not None and note is not None:
        note(recovered)
    sources = _read_sources(flat_files(results_dir))
    if not sources:
        return Compaction(0, 0, 0, time.perf_counter() - began, recovered)
    groups: dict[Partition, list[pa.Table]] = {}
    for table in sources.values():
        keys = pc.binary_join_element_wise(
            table.column(PARTITIONS[0]), table.column(PARTITIONS[1]), "\x00"
        )
        for key in pc.unique(keys).to_pylist():
            attack_id, defender_id = key.split("\x00")
            rows = table.filter(pc.equal(keys, key))
            groups.setdefault((attack_id, defender_id), []).append(rows)
    reveal: dict[str, str] = {}
    remove = [path.name for path in sources]
    for partition, new in sorted(groups.items()):
        folder, old_files = stored_files_of(results_dir, partition)
        merged = _merged([read_part(p, partition) for p in old_files], new)
        data = _parquet_bytes(merged)
        name = f"part-{hashlib.sha256(data).hexdigest()[:16]}.parquet"
        pending = folder / f"_{name}{PENDING}"
        with writing(folder):
            folder.mkdir(parents=True, exist_ok=True)
        _refuse_linked(results_dir, folder)
        atomic_write_bytes(pending, data)
        reveal[str(pending.relative_to(results_dir))] = str(
            (folder / name).relative_to(results_dir)
        )
        remove += [str(p.relative_to(results_dir)) for p in old_files if p.name != name]
    journal = Journal(reveal, tuple(remove))
    atomic_write_json(results_dir / JOURNAL, journal.to_json())  # committed
    _roll_forward(results_dir, journal)
    rows = sum(table.num_rows for table in sources.values())
    return Compaction(len(sources), rows, len(reveal), time.perf_counter() - began, recovered)
