"""Registries: every attack, defender, dataset and classifier is one class, registered here
by name.

A registered class is a frozen dataclass whose fields are its settings. A field made with
:func:`setting` carries its help text and, when a run may set it, the run key that feeds it
(``key="median_kernel"``: the TOML key and the ``ride run --median-kernel`` option) and
whether a comma list of values sweeps it. Fields made with :func:`execution` say *how* the
object runs (precision, batch size): they are never part of its id, params or equality.

Everything else is derived from these declarations: the names ``ride run`` accepts, its
options and their help, the run keys and their defaults, which keys sweep, the ids and params
stored with every result. A new defender is one module that defines its class and adds it
(``DEFENDERS.add("blur", Blur, "box blur")``), plus its tests. A plugin from outside the
package is registered the same way by :mod:`ride.plugins` (by import path or entry point); a
defender plugin that is a plain callable is first wrapped in such a class
(:class:`~ride.defenders.base.CallableDefender`).

A registered name may imply settings: ``dae`` is :class:`~ride.defenders.ride.Ride` with
``variant="dae"`` and ``alpha=1``; an implied setting is fixed, so the run never feeds or
sweeps it.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_SETTING = "ride.setting"
UNSET: Any = type("Unset", (), {"__repr__": lambda self: "UNSET"})()
"""A run default that is not given: the run takes the class default."""
_EXECUTION = "ride.execution"


@dataclass(frozen=True)
class Setting:
    """What a field's metadata says of it (see :func:`setting`)."""

    help: str
    key: str | None = None  # the run key that feeds it (None: not settable from a run)
    sweep: bool = False  # a run may give a list of values, one object per value
    run_default: Any = UNSET  # the run's default when it differs from the class's
    fallback: str | None = None  # a run key whose value is used while ``key`` is None


def setting(
    default: Any,
    *,
    help: str,
    key: str | None = None,
    sweep: bool = False,
    run_default: Any = UNSET,
    fallback: str | None = None,
) -> Any:
    """A dataclass field that is a setting: part of the object's id, params and equality."""
    meta = Setting(help, key, sweep, run_default, fallback)
    return field(default=default, metadata={_SETTING: meta})


def execution(default: Any, *, help: str) -> Any:
    """A dataclass field that says how the object runs, not what it computes."""
    return field(default=default, compare=False, repr=False, metadata={_EXECUTION: help})


def settings_of(cls: type) -> dict[str, Setting]:
    """The setting fields of dataclass ``cls``, by field name, in declaration order."""
    return {f.name: f.metadata[_SETTING] for f in dataclasses.fields(cls) if _SETTING in f.metadata}


def is_execution_field(f: dataclasses.Field[Any]) -> bool:
    return _EXECUTION in f.metadata


def setting_values(obj: Any) -> dict[str, Any]:
    """The values of ``obj``'s setting fields (what its params record)."""
    return {name: getattr(obj, name) for name in settings_of(type(obj))}


def with_execution(obj: T, **values: Any) -> T:
    """``obj`` with those of ``values`` that are execution fields of its class replaced."""
    names = {f.name for f in dataclasses.fields(obj) if is_execution_field(f)}  # type: ignore[arg-type]
    chosen = {k: v for k, v in values.items() if k in names}
    return dataclasses.replace(obj, **chosen) if chosen else obj  # type: ignore[type-var]


def field_default(cls: type, name: str) -> Any:
    """The class default of field ``name`` of dataclass ``cls``."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not MISSING:
                return f.default
            if f.default_factory is not MISSING:
                return f.default_factory()
    raise KeyError(name)


def field_type(cls: type, name: str) -> type:
    """The scalar type a run value of field ``name`` must have: int, float, bool or str."""
    default = field_default(cls, name)
    for kind in (bool, int, float, str):
        if isinstance(default, kind):
            return kind
    raise TypeError(f"{cls.__name__}.{name}: no scalar default to take a type from")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: its class, the settings its name implies, and a summary."""

    name: str
    cls: type[T]
    implied: Mapping[str, Any]
    summary: str

    def fed(self) -> dict[str, Setting]:
        """The settings a run feeds (those with a key, minus the implied ones)."""
        return {
            name: meta
            for name, meta in settings_of(self.cls).items()
            if meta.key is not None and name not in self.implied
        }

    def swept(self) -> dict[str, str]:
        """Setting name -> run key, for the settings a run may sweep."""
        return {name: str(meta.key) for name, meta in self.fed().items() if meta.sweep}

    def build(self, **settings: Any) -> T:
        """An instance with ``settings`` over the implied ones and the class defaults."""
        valid = [
            name
            for name in (f.name for f in dataclasses.fields(self.cls))  # type: ignore[arg-type]
            if name not in self.implied
        ]
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)} for {self.name!r}; "
                f"valid: {', '.join(valid) or '(none)'}"
            )
        return self.cls(**{**self.implied, **settings})


class Registry(Generic[T]):
    """Names -> :class:`Entry`, in registration order."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, cls: type[T], summary: str, **implied: Any) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{self.kind} {name!r}: {cls.__name__} is not a dataclass")
        unknown = set(implied) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"{self.kind} {name!r} implies unknown settings {sorted(unknown)}")
        self._entries[name] = Entry(name, cls, dict(implied), summary)

    def remove(self, name: str) -> None:
        """Forget ``name`` (tests that register a class of their own clean up with it)."""
        self[name]
        del self._entries[name]

    def __getitem__(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(
                f"unknown {self.kind} {name!r}; choose from: {', '.join(self._entries)}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entries(self) -> tuple[Entry[T], ...]:
        return tuple(self._entries.values())

    def describe(self) -> str:
        """``name (summary), ...`` for help texts."""
        return ", ".join(f"{e.name} ({e.summary})" if e.summary else e.name for e in self.entries())


def import_modules(package: str, path: Iterable[str]) -> None:
    """Import every module of ``package`` (at ``path``), so that each registers its classes:
    a new attack, defender or dataset is one new module, with no import to add elsewhere."""
    for module in pkgutil.iter_modules(list(path)):
        importlib.import_module(f"{package}.{module.name}")


#: The registries of the package. Each built-in module registers its classes when ``ride`` is
#: imported (``ride/__init__.py`` imports them all).
ATTACKS: Registry[Any] = Registry("attack")
DEFENDERS: Registry[Any] = Registry("defender")
DATASETS: Registry[Any] = Registry("dataset")
CLASSIFIERS: Registry[Any] = Registry("classifier")
