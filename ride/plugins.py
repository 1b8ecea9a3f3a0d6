"""Plugins: defenders, attacks and classifiers from outside this package.

Two ways in, both ending in the registries of :mod:`ride.registry`, so a plugin is a name,
its keyed settings are run keys (TOML keys, ``ride run`` options, part of its id and of the
run's identity) and its results are stored like a built-in's:

- **by import path**: a run names the class, ``package.module:Class``
  (``ride run --defender my_pkg.purify:JpegDefender``). :func:`resolve` imports the module
  and registers the class under that full name the first time the name is met.
- **by entry point**: an installed distribution declares, in its ``pyproject.toml``::

      [project.entry-points."ride.defenders"]
      jpeg = "my_pkg.purify:JpegDefender"

  and :func:`load_entry_points` (run once when ``ride`` is imported) registers the class
  under the entry point's name (``ride run --defender jpeg``), its docstring's first line
  as summary. An entry point may also name a module, which is then assumed to register its
  classes itself. Groups: ``ride.defenders``, ``ride.attacks``, ``ride.classifiers``.

A plugin class is a frozen dataclass that follows its kind's protocol: a defender has
``__call__``, ``id`` and ``params`` (see :mod:`ride.defenders.base`; subclassing
:class:`~ride.defenders.base.DefenderBase` gives all but ``__call__``), an attack
``perturb``, ``id`` and ``params``, a classifier ``network``. Anything else is a one-line
ValueError naming the plugin. A broken entry point is one warning line and is skipped: an
installed package must not stop ``import ride``.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import re
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from ride import registry as _registries
from ride.registry import Entry, Registry

__all__ = [
    "ENTRY_POINT_GROUPS",
    "autoload",
    "check_plugin_class",
    "is_import_path",
    "load_entry_points",
    "registered_name",
    "resolve",
    "resolve_names",
]

log = logging.getLogger(__name__)

#: Entry-point group -> the name of the registry in :mod:`ride.registry` it feeds.
ENTRY_POINT_GROUPS: dict[str, str] = {
    "ride.defenders": "DEFENDERS",
    "ride.attacks": "ATTACKS",
    "ride.classifiers": "CLASSIFIERS",
}

#: What a plugin class of each kind (``Registry.kind``) must have.
PROTOCOLS: dict[str, tuple[str, ...]] = {
    "defender": ("__call__", "id", "params"),
    "attack": ("perturb", "id", "params"),
    "classifier": ("network",),
}

_IMPORT_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_import_path(name: str) -> bool:
    """Whether ``name`` spells a class by import path, ``package.module:Class``.

    Example:
        >>> is_import_path("my_pkg.purify:JpegDefender"), is_import_path("median")
        (True, False)
    """
    return isinstance(name, str) and _IMPORT_PATH.fullmatch(name) is not None


def _one_line(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _defines(cls: type, member: str) -> bool:
    """Whether ``cls`` (or a base other than ``object``) defines ``member`` for real: a
    class is always callable, so ``__call__`` counts only when some class of the MRO
    writes it, and :class:`DefenderBase`'s placeholder does not count."""
    from ride.defenders.base import DefenderBase

    for klass in cls.__mro__:
        if klass is object or (klass is DefenderBase and member == "__call__"):
            continue
        if member in vars(klass):
            return True
    return any(f.name == member for f in dataclasses.fields(cls))


def check_plugin_class(kind: str, name: str, obj: object) -> type:
    """``obj`` if it is a frozen dataclass following the ``kind`` protocol (see
    ``PROTOCOLS``), else a one-line ValueError naming plugin ``name``."""
    what = f"{kind} plugin {name}"
    if not isinstance(obj, type):
        raise ValueError(f"{what} is not a class (got {type(obj).__name__})")
    if not dataclasses.is_dataclass(obj):
        raise ValueError(
            f"{what}: {obj.__name__} is not a dataclass; declare it @dataclass(frozen=True)"
        )
    if not obj.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise ValueError(
            f"{what}: {obj.__name__} is not frozen; declare it @dataclass(frozen=True)"
        )
    missing = [member for member in PROTOCOLS.get(kind, ()) if not _defines(obj, member)]
    if missing:
        raise ValueError(
            f"{what} does not follow the {kind} protocol: {obj.__name__} lacks {', '.join(missing)}"
        )
    return obj


def summary_of(cls: type) -> str:
    """The first line of ``cls``'s docstring ('' when it has none of its own)."""
    doc = cls.__doc__ or ""
    if doc.startswith(f"{cls.__name__}("):  # the signature dataclasses write in its place
        return ""
    return (doc.strip().splitlines() or [""])[0].strip()


def resolve(registry: Registry[Any], name: str) -> Entry[Any]:
    """The entry of ``name`` in ``registry``; a ``package.module:Class`` name that is not
    registered yet is imported, checked and registered under that full name first.

    Any other unknown name raises the registry's ValueError (``unknown defender ...``); a
    plugin that cannot be imported or breaks its protocol a one-line ValueError naming it.
    """
    if name in registry or not is_import_path(name):
        return registry[name]
    module_name, _, qualname = name.partition(":")
    what = f"{registry.kind} plugin {name}"
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as error:
        raise ValueError(f"{what}: cannot import {module_name} ({_one_line(error)})") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what}: module {module_name} has no {qualname}")
        obj = getattr(obj, part)
    cls = check_plugin_class(registry.kind, name, obj)
    if name not in registry:  # importing it may have registered it under this very name
        registry.add(name, cls, summary_of(cls))
    return registry[name]


def resolve_names(registry: Registry[Any], names: Iterable[str]) -> None:
    """:func:`resolve` each import-path name of ``names`` (others are left as they are)."""
    for name in names:
        if is_import_path(name) and name not in registry:
            resolve(registry, name)


def registered_name(registry: Registry[Any], cls: type, preferred: str = "") -> str | None:
    """The name ``cls`` is registered under in ``registry`` (``preferred`` when that is one
    of them); None when it is not registered."""
    names = [entry.name for entry in registry.entries() if entry.cls is cls]
    if preferred in names:
        return preferred
    return names[0] if names else None


def _load(registry: Registry[Any], ep: EntryPoint) -> None:
    obj = ep.load()
    if isinstance(obj, ModuleType):  # a module registers what it holds when imported
        return
    cls = check_plugin_class(registry.kind, ep.name, obj)
    if ep.name in registry:
        if registry[ep.name].cls is cls:  # loaded before, or registered by its module
            return
        taken = registry[ep.name].cls
        raise ValueError(f"the name is taken by {taken.__module__}:{taken.__qualname__}")
    registry.add(ep.name, cls, summary_of(cls))


def load_entry_points() -> list[str]:
    """Register the classes of every installed ``ride.defenders``, ``ride.attacks`` and
    ``ride.classifiers`` entry point; returns the ``group:name`` of those that failed.

    A class is registered under the entry point's name; an entry point naming a module is
    only imported. An entry point that fails (cannot be imported, breaks the protocol, a
    name already taken) is logged as one warning line and skipped. Loading again registers
    only what is new.
    """
    failed: list[str] = []
    found = entry_points()
    for group, registry_name in ENTRY_POINT_GROUPS.items():
        registry: Registry[Any] | None = getattr(_registries, registry_name, None)
        if registry is None:  # a version of ride without this kind of registry
            continue
        for ep in found.select(group=group):
            try:
                _load(registry, ep)
            except Exception as error:
                failed.append(f"{group}:{ep.name}")
                log.warning(
                    "ride: skipped plugin %s = %s (entry point group %s): %s",
                    ep.name,
                    ep.value,
                    group,
                    _one_line(error),
                )
    return failed


_autoloaded = False


def autoload() -> None:
    """:func:`load_entry_points`, once per process (``import ride`` calls it)."""
    global _autoloaded
    if _autoloaded:
        return
    _autoloaded = True
    load_entry_points()
