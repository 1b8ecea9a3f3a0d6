"""The keys of a run that come from the registries, and the checks every key goes through.

A setting declared in ``ride/`` with ``setting(key="median_kernel", sweep=True)`` is a run key:
a TOML key, a deployment parameter and a ``ride run`` option, with the type, default and help
of that declaration (:func:`run_keys`). Values are type-checked here (bools are not numbers,
counts are ints) and errors name the key (:class:`ConfigError`), never a command-line flag.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ride.plugins import is_import_path, resolve
from ride.registry import (
    ATTACKS,
    DEFENDERS,
    UNSET,
    Entry,
    Registry,
    field_default,
    field_type,
)

Number = int | float


Sweep = Number | tuple[Number, ...]

INT_MAX = 2**63 - 1
"""The largest integer a setting may hold (a signed 64-bit integer, as TOML, NumPy and torch
store it): a larger one would pass the checks and overflow later, after the run started."""

COUNT_MAX = 1_000_000
"""The largest count a run key may hold (iterations, draws, restarts, a kernel's size): the
paper's largest is 2,000; a larger one would run for ever or exhaust memory mid-run."""


class ConfigError(ValueError):
    """A setting is unknown, of the wrong type or out of range; ``key`` names it."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(join_key(key, message) if key else message)
        self.key = key
        self.message = message


_PREDICATES = ("must ", "is ", "lists ", "takes ", "needs ")


def join_key(name: str, message: str) -> str:
    """``eps`` + ``must be > 0`` -> ``eps must be > 0``; other messages after a colon."""
    return f"{name} {message}" if message.startswith(_PREDICATES) else f"{name}: {message}"


@dataclass(frozen=True)
class RunKey:
    """A run key fed to the settings of registered attacks or defenders."""

    key: str
    kind: type  # int, float, bool or str
    default: Any
    help: str
    sweep: bool
    fallback: str | None
    group: str  # "attack" or "defender"
    used_by: tuple[str, ...]  # registered names whose settings it feeds


def _collect(keys: dict[str, RunKey], group: str, entries: tuple[Entry[Any], ...]) -> None:
    for entry in entries:
        for name, meta in entry.fed().items():
            key = str(meta.key)
            if key in keys:
                old = keys[key]
                keys[key] = RunKey(**{**old.__dict__, "used_by": (*old.used_by, entry.name)})
                continue
            default = meta.run_default
            if default is UNSET:
                default = field_default(entry.cls, name)
            keys[key] = RunKey(
                key=key,
                kind=field_type(entry.cls, name),
                default=default,
                help=meta.help,
                sweep=meta.sweep,
                fallback=meta.fallback,
                group=group,
                used_by=(entry.name,),
            )


def run_keys() -> dict[str, RunKey]:
    """Every run key of the registered attacks, then defenders, in registration order."""
    keys: dict[str, RunKey] = {}
    _collect(keys, "attack", ATTACKS.entries())
    _collect(keys, "defender", DEFENDERS.entries())
    return keys


def is_kind(item: object, kind: type) -> bool:
    if kind is bool:
        return isinstance(item, bool)
    if isinstance(item, bool):
        return False
    if kind is float:
        return isinstance(item, int | float)
    return isinstance(item, kind)


def kind_name(kind: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[kind]


def key_value(rk: RunKey, raw: Any) -> Any:
    """Check one run key's value: a scalar of its type (None where it falls back), or for a
    sweep key a non-empty list of distinct ones."""
    if raw is None:
        require(rk.fallback is not None, rk.key, "must be given")
        return None
    if isinstance(raw, str) and rk.kind is not str and rk.sweep:
        raw = parse_sweep(raw, rk.kind, rk.key)  # "3,5,7", as the command line spells it
    items = tuple(raw) if isinstance(raw, list | tuple) else (raw,)
    if not rk.sweep:
        require(
            len(items) == 1 and not isinstance(raw, list | tuple),
            rk.key,
            f"takes one value, got {raw!r}",
        )
    require(len(items) > 0, rk.key, "lists no values")
    for i, item in enumerate(items):
        require(
            is_kind(item, rk.kind),
            rk.key,
            f"takes {kind_name(rk.kind)}{' or a list of them' if rk.sweep else ''}, got {item!r}",
        )
        check_bounds(rk.key, item)
        if rk.kind is int:
            require(item <= COUNT_MAX, rk.key, f"must be at most {COUNT_MAX}, got {item}")
        require(item not in items[:i], rk.key, f"lists {item} twice")
    return items[0] if len(items) == 1 else items


def check_key_values(given: Mapping[str, Any], keys: Mapping[str, RunKey]) -> None:
    """Each run key's value in ``given`` builds every registered class it feeds (their range
    checks); a ValueError is a ConfigError naming the key."""
    registries = {"attack": ATTACKS, "defender": DEFENDERS}
    for key, rk in keys.items():
        raw = given[key]  # not its fallback's value: that key is checked on its own
        for value in raw if isinstance(raw, tuple) else (raw,):
            if value is None:
                continue
            for name in rk.used_by:
                entry = registries[rk.group][name]
                for setting_name, meta in entry.fed().items():
                    if meta.key == key:
                        try:
                            entry.build(**{setting_name: value})
                        except ValueError as error:
                            raise ConfigError(unprefixed(str(error), key), key) from None


def load_preset(path: Path) -> dict[str, Any]:
    """A TOML preset's settings (flat keys as in :class:`RunConfig` and :func:`run_keys`)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file", "config")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {error.start}), so not a TOML preset", "config"
        ) from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})", "config") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})", "config") from None


def parse_sweep(text: str, kind: type, key: str | None = None) -> Sweep:
    """``"3"`` -> 3, ``"3,5,7"`` -> (3, 5, 7): the command line's spelling of a sweep key."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = tuple(kind(part) for part in parts)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"expected {what} or a comma list of them, got {text!r}", key) from None
    return values[0] if len(values) == 1 else values


def require(condition: bool, key: str | None, message: str) -> None:
    if not condition:
        raise ConfigError(message, key)


def resolve_plugin(key: str, registry: Registry[Any], name: object) -> None:
    """Register ``name`` when it is a plugin class named by import path (``pkg.mod:Class``,
    :func:`ride.plugins.resolve`); a plugin that cannot be imported or breaks its protocol is
    a ConfigError of ``key``."""
    if isinstance(name, str) and is_import_path(name) and name not in registry:
        try:
            resolve(registry, name)
        except ValueError as error:
            raise ConfigError(str(error), key) from None


def resolve_plugins(settings: Mapping[str, Any]) -> None:
    """:func:`resolve_plugin` every attack and defender name of a flat mapping."""
    for key, registry in (("attacks", ATTACKS), ("defenders", DEFENDERS)):
        raw = settings.get(key, ())
        names = (raw,) if isinstance(raw, str) else raw if isinstance(raw, list | tuple) else ()
        for name in names:
            resolve_plugin(key, registry, name)


def unprefixed(message: str, key: str) -> str:
    """``"eps must be ..."`` -> ``"must be ..."`` when the error names the key itself."""
    return message[len(key) + 1 :] if message.startswith(key + " ") else message


def as_tuple(key: str, raw: object) -> tuple[Any, ...]:
    if not isinstance(raw, list | tuple):
        raise ConfigError(f"must be a name or a list of names, got {raw!r}", key)
    return tuple(raw)


def check_type(key: str, value: object, kind: type) -> None:
    """Bools are not numbers, counts are ints, names are strings; None where allowed."""
    if value is None:
        require(
            key in ("limit", "first_limit", "weights", "scheduler", "data_dir", "cache_dir"),
            key,
            "must be given",
        )
        return
    if key == "chunk_size" and value == "auto":  # a count, or auto (pipeline.plan)
        return
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        ok = is_kind(item, kind)
        require(ok, key, f"must be {kind_name(kind)}, got {item!r}")
        check_bounds(key, item)


def check_bounds(key: str, value: object) -> None:
    """An integer within a signed 64-bit integer (``INT_MAX``), a number finite: a value
    beyond would pass every range check and fail, or overflow, once the run has started."""
    if isinstance(value, int) and not isinstance(value, bool):
        require(abs(value) <= INT_MAX, key, f"must fit in 64 bits (at most 2**63 - 1), got {value}")
    elif isinstance(value, float):
        require(math.isfinite(value), key, f"must be a finite number, got {value}")
