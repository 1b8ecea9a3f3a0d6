"""``run.toml``: the resolved config of a run, the code version, the start time and the
command that started it (``command``, absent from run directories made before it existed).

A run directory belongs to one run: a later ``ride run`` on the same directory must resolve
to the same config (execution settings such as the number of workers aside), otherwise its
results would mix two experiments.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import tomli_w

from storage.files import atomic_write_bytes


class RunConfigMismatch(ValueError):
    """The run directory holds a different run."""


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
    """The ``[config]`` table of an existing ``run.toml``."""
    try:
        document = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RunConfigMismatch(f"{path} is unreadable: {error}") from None
    config = document.get("config")
    if not isinstance(config, dict):
        raise RunConfigMismatch(f"{path} has no [config] table")
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
    recorded) and the ``[config]`` table."""
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise RunConfigMismatch(f"{path} is unreadable: {error}") from None


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


def _toml_ready(value: Any) -> Any:
    """TOML has no null: drop ``None`` values, recursively."""
    if isinstance(value, Mapping):
        return {k: _toml_ready(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(v) for v in value]
    return value
