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
(:func:`storage.journal.recover`). Between the removals and the renames of step 3 the merged
rows are only in the pending files: :func:`storage.compacted.stored_files`, which every
reader of the project uses, reads the journal and finds them there, so ``ride report`` and
the done-checks of a resumed run see every row at every point; a raw ``pandas.read_parquet``
after a kill at that very moment misses them until the next ``ride compact`` or
``ride run``.

Compaction must be the only writer of ``results/``: call it with the run's lock held (``ride
compact`` takes it; at the end of a run the flow holds it).

Others may write the run folder, so a journal is trusted only for what compaction itself
writes there (:func:`storage.journal.read_journal`): each path relative, inside
``results/``, through no symbolic link, and of the names compaction makes (a pending file
revealed under the name of its digest in its own folder; a flat per-task file or a partition
file removed). Anything else is refused before any file is touched. A journal whose pending
file is gone (deleted by hand) is rolled forward as far as it can be: the files of that
partition are kept, the journal is removed, and the tasks whose rows are then missing are
redone by the next ``ride run``.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from storage.compacted import conformed, read_part, stored_files, stored_files_of
from storage.files import Note, atomic_write_bytes, atomic_write_json, writing
from storage.journal import JOURNAL, PENDING, Journal, read_journal, recover, roll_forward
from storage.partitions import (
    PARTITIONS,
    Partition,
    flat_files,
    part_schema,
    partition_dir,
    refuse_linked,
)
from storage.schema import SCHEMA, UnreadableFile, whole_table

__all__ = [  # with the journal's and the layout's names that callers import from here
    "JOURNAL",
    "Compaction",
    "compact_results",
    "partition_dir",
    "read_journal",
    "stored_files",
]


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
    an :class:`~storage.schema.UnreadableFile` raised before anything changes; a failed
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
        refuse_linked(results_dir, folder)
        atomic_write_bytes(pending, data)
        reveal[str(pending.relative_to(results_dir))] = str(
            (folder / name).relative_to(results_dir)
        )
        remove += [str(p.relative_to(results_dir)) for p in old_files if p.name != name]
    journal = Journal(reveal, tuple(remove))
    atomic_write_json(results_dir / JOURNAL, journal.to_json())  # committed
    roll_forward(results_dir, journal)
    rows = sum(table.num_rows for table in sources.values())
    return Compaction(len(sources), rows, len(reveal), time.perf_counter() - began, recovered)
