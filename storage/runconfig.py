"""``run.toml``: the resolved config of a run, the code version, the start time and the
command that started it (``command``, absent from run directories made before it existed).

A run directory belongs to one run: a later ``ride run`` on the same directory must resolve
to the same config (execution settings such as the number of workers aside), otherwise its
results would mix two experiments.

A run folder may be written by others (a shared file system), so ``run.toml`` is checked
whenever it is read (:func:`read_run_document`): each key ``ride`` writes must have the type
it writes (``run_id`` of the form ``<dataset>-<digest>``, of the run's own dataset;
``[config]`` a table whose ``dataset``, ``limit``, ``seed``, ``attacks``... are what a run
records). A file that does not parse or holds a bad value is a :class:`RunConfigInvalid`,
one line naming the file and the key, for every command that reads it (``ride run``,
``ride report``, ``ride compact``, ``ride cards``): a ``run_id = 5`` planted there would
otherwise hide every row of the report.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from storage.files import atomic_write_bytes


class RunConfigMismatch(ValueError):
    """The run directory holds a different run."""


class RunConfigInvalid(RunConfigMismatch):
    """``run.toml`` does not parse, or holds a key of another type or form than ``ride``
    writes."""


RUN_ID = re.compile(r"[^\x00-\x1f\x7f]{1,100}-[A-Za-z0-9]{1,64}")
"""The form of a run's id (``pipeline.config.RunConfig.run_id``): its dataset, a dash and
a word (10 hex digits of a digest, as ``ride`` makes it)."""

Check = Callable[[object], bool]


def _text(value: object) -> bool:
    return isinstance(value, str)


def _integer(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _count(value: object) -> bool:
    return _integer(value) and isinstance(value, int) and value >= 0


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _names(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def _started(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _growths(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, dict) and _count(v.get("before")) and _count(v.get("after")) for v in value
    )


DOCUMENT_KEYS: dict[str, tuple[Check, str]] = {
    "code_version": (_text, "a string"),
    "started": (_started, "an ISO date and time"),
    "command": (_text, "a string"),
    "run_id": (
        lambda v: isinstance(v, str) and RUN_ID.fullmatch(v) is not None,
        "a string <dataset>-<digest>",
    ),
    "growth": (_growths, "a list of tables with integers before and after"),
}
"""The keys ``ride`` writes at the top of ``run.toml`` (and ``train.toml``), and their form."""

CONFIG_KEYS: dict[str, tuple[Check, str]] = {
    "dataset": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "classifier": (_text, "a string"),
    "weights": (_text, "a string"),
    "limit": (_count, "an integer >= 0"),
    "first_limit": (_count, "an integer >= 0"),
    "seed": (_integer, "an integer"),
    "attacks": (_names, "a list of names"),
    "defenders": (_names, "a list of names"),
    "eps": (_number, "a number"),
    "fgsm_eps": (_number, "a number"),
}
"""The keys of ``[config]`` that the readers of a run (report, card, results page) use,
and their form; the others are compared with the run being resumed (:func:`check_same_run`)."""


def holds_results(root: Path) -> bool:
    """True when ``root`` holds anything a run stores (result or step files, images)."""
    return (
        any((root / "results").rglob("*.parquet"))  # per-task files, compacted partitions
        or any((root / "steps").glob("*.parquet"))
        or (root / "images.zarr").exists()
    )


def check_claimable(path: Path, force: bool = False) -> None:
    """Raise :class:`RunConfigMismatch` when the run directory of ``path`` (its
    ``run.toml``) holds results but no ``run.toml``: nothing then says which run they belong
    to. ``force`` (``--force-claim``) adopts them for the run being started."""
    if path.exists() or force or not holds_results(path.parent):
        return
    raise RunConfigMismatch(
        f"{path.parent} holds results but no run.toml, so which run they belong to is unknown; "
        "rerun with the settings that made them and --force-claim to adopt them, or use "
        "another run directory"
    )


def version_note(path: Path, code_version: str) -> str | None:
    """One line when the run in ``path`` was started by another code version, else None."""
    if not path.exists():
        return None
    recorded = read_run_document(path).get("code_version")
    if recorded is None or recorded == code_version:
        return None
    return f"{path.parent} was started by ride-pipeline {recorded}; resuming it with {code_version}"


def read_run_config(path: Path) -> dict[str, Any]:
    """The ``[config]`` table of an existing ``run.toml`` (checked: :func:`read_run_document`)."""
    config: dict[str, Any] = read_run_document(path)["config"]
    return config


def check_same_run(path: Path, config: Mapping[str, Any], identity_keys: frozenset[str]) -> None:
    """Raise :class:`RunConfigMismatch` when ``run.toml`` at ``path`` describes another run.

    Only the keys in ``identity_keys`` must match; the others (workers, scheduler) may change
    between a run and its resume. A missing ``run.toml`` is no mismatch.
    """
    if not path.exists():
        return
    existing = read_run_config(path)
    wanted = _toml_ready(config)
    differing = sorted(key for key in identity_keys if existing.get(key) != wanted.get(key))
    if differing:
        raise RunConfigMismatch(
            f"{path.parent} holds a different run (differs in: {', '.join(differing)}); "
            "use another run directory or the same settings"
        )


def read_run_document(path: Path) -> dict[str, Any]:
    """The whole ``run.toml``: ``code_version``, ``started``, ``command`` and ``run_id`` (when
    recorded) and the ``[config]`` table. :class:`RunConfigInvalid` (naming the file and the
    key) when it does not parse, lacks the ``[config]`` table, or a key ``ride`` writes has
    another type or form (:data:`DOCUMENT_KEYS`, :data:`CONFIG_KEYS`)."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0]
        raise RunConfigInvalid(f"{path} is unreadable: {reason}") from None
    config = document.get("config")
    if not isinstance(config, dict):
        raise RunConfigInvalid(f"{path} has no [config] table")
    _check_keys(path, document, DOCUMENT_KEYS, "")
    _check_keys(path, config, CONFIG_KEYS, "config.")
    run_id, dataset = document.get("run_id"), config.get("dataset")
    if run_id is not None and dataset is not None and not run_id.startswith(f"{dataset}-"):
        raise RunConfigInvalid(
            f"{path}: run_id {run_id!r} is not a run of dataset {dataset!r} ({_RESTORE})"
        )
    return document


_RESTORE = "restore the run.toml this run wrote, or use another run directory"


def _check_keys(
    path: Path, table: Mapping[str, Any], checks: Mapping[str, tuple[Check, str]], prefix: str
) -> None:
    """:class:`RunConfigInvalid` naming the first key of ``table`` that fails its check."""
    for key, (valid, form) in checks.items():
        if key in table and not valid(table[key]):
            shown = repr(table[key])
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise RunConfigInvalid(
                f"{path}: {prefix}{key} must be {form}, not {shown} ({_RESTORE})"
            )


def claim_run_dir(
    path: Path,
    config: Mapping[str, Any],
    identity_keys: frozenset[str],
    code_version: str,
    command: str | None = None,
    *,
    run_id: str | None = None,
    force: bool = False,
) -> None:
    """Write ``run.toml``, or check that the existing one describes the same run.

    ``command`` (what started the run, e.g. the ``ride run`` command line) is recorded
    beside the config, never in it: it is no part of the run's identity, and a resume keeps
    the command of the first run. ``run_id`` is recorded too: the report keeps only the rows
    of that run. A directory that holds results but no ``run.toml`` is refused unless
    ``force`` (:func:`check_claimable`).
    """
    if path.exists():
        check_same_run(path, config, identity_keys)
        return
    check_claimable(path, force)
    document: dict[str, Any] = {
        "code_version": code_version,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if run_id is not None:
        document["run_id"] = run_id
    if command is not None:
        document["command"] = command
    document["config"] = _toml_ready(config)
    atomic_write_bytes(path, tomli_w.dumps(document).encode())


def record_growth(
    path: Path, config: Mapping[str, Any], before: int, after: int, command: str | None = None
) -> None:
    """Rewrite ``run.toml`` for a run grown from ``before`` to ``after`` images: its
    ``[config]`` becomes ``config`` (the new ``limit``, the ``first_limit``), its ``run_id``
    and first ``command`` stay, and a ``[[growth]]`` entry records the sizes, when and by
    what command (``pipeline.growth``)."""
    document = read_run_document(path)
    entry: dict[str, Any] = {
        "before": before,
        "after": after,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if command is not None:
        entry["command"] = command
    document["config"] = _toml_ready(config)
    document["growth"] = [*document.get("growth", []), entry]
    atomic_write_bytes(path, tomli_w.dumps(document).encode())


def _toml_ready(value: Any) -> Any:
    """TOML has no null: drop ``None`` values, recursively."""
    if isinstance(value, Mapping):
        return {k: _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value]
    return value
