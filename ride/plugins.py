"""Plugins: defenders, attacks and classifiers from outside this package.

Two ways in, both ending in the registries of :mod:`ride.registry`, so a plugin is a name,
its keyed settings are run keys (TOML keys, ``ride run`` options, part of its id and of the
run's identity) and its results are stored like a built-in's:

- **by import path**: a run names the plugin, ``package.module:Name``
  (``ride run --defender my_pkg.purify:JpegDefender``). :func:`resolve` imports the module
  and registers the plugin under that full name the first time the name is met.
- **by entry point**: an installed distribution declares, in its ``pyproject.toml``::

      [project.entry-points."ride.defenders"]
      jpeg = "my_pkg.purify:JpegDefender"

  and :func:`load_entry_points` (run once when ``ride`` is imported) registers the plugin
  under the entry point's name (``ride run --defender jpeg``), its docstring's first line
  as summary. An entry point may also name a module, which is then assumed to register its
  classes itself. Groups: ``ride.defenders``, ``ride.attacks``, ``ride.classifiers``.

A plugin with settings is a frozen dataclass that follows its kind's protocol: a defender
has ``__call__``, ``id`` and ``params`` (see :mod:`ride.defenders.base`; subclassing
:class:`~ride.defenders.base.DefenderBase` gives all but ``__call__``), an attack
``perturb``, ``id`` and ``params``, a classifier ``network`` (subclass
:class:`~ride.classifiers.zoo.ClassifierSpec`). A defender without settings may be any
callable ``(x, seeds) -> x'`` that is not a dataclass: a function, or a class made with no
arguments whose instances are called (:func:`callable_defender` wraps it in a
:class:`~ride.defenders.base.CallableDefender`). Anything else is a one-line ValueError
naming the plugin. A broken entry point is one warning line and is skipped: an installed
package must not stop ``import ride``.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import logging
import re
from collections.abc import Callable, Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from ride import registry as _registries
from ride.defenders.base import CallableDefender, DefenderBase
from ride.registry import DEFENDERS, Entry, Registry

__all__ = [
    "ENTRY_POINT_GROUPS",
    "autoload",
    "callable_defender",
    "check_plugin_class",
    "is_import_path",
    "load_entry_points",
    "plugin_class",
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
#: What a callable defender's name (its id) may hold: it names stored images and result rows.
_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")


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
    for klass in cls.__mro__:
        if klass is object or (klass is DefenderBase and member == "__call__"):
            continue
        if member in vars(klass):
            return True
    return dataclasses.is_dataclass(cls) and any(f.name == member for f in dataclasses.fields(cls))


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


# --- a defender without settings that is a plain callable


def _binds(function: Callable[..., Any], *args: None) -> bool:
    """Whether ``function`` can be called with ``args`` (True when Python cannot tell)."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # some built-ins have none: take them on trust
        return True
    try:
        signature.bind(*args)
    except TypeError:
        return False
    return True


def _call_problem(obj: Callable[..., Any]) -> str | None:
    """Why callable ``obj`` cannot be a defender ``(x, seeds) -> x'``; None when it can."""
    if isinstance(obj, type):
        title = obj.__name__
        if not _defines(obj, "__call__"):
            return f"{title} has no __call__(self, x, seeds)"
        if not _binds(obj):
            return (
                f"{title}{inspect.signature(obj)} takes arguments; a defender with settings "
                "is a @dataclass(frozen=True) subclass of DefenderBase"
            )
        if not _binds(obj.__call__, None, None, None):
            return f"{title}.__call__{inspect.signature(obj.__call__)} cannot take (x, seeds)"
        return None
    if not _binds(obj, None, None):
        title = getattr(obj, "__name__", type(obj).__name__)
        return f"{title}{inspect.signature(obj)} cannot take (x, seeds)"
    return None


def _declarations(what: str, obj: object) -> dict[str, Any]:
    """The name and declarations (``randomised``, ``differentiable``, ``cost_hint``) a
    callable defender makes as attributes, the conservative defaults where it makes none."""
    name = getattr(obj, "name", None) or getattr(obj, "__name__", None)
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(
            f"{what}: its name {name!r} cannot name results; give it a name attribute "
            "(letters, digits, '-', '_', '.')"
        )
    declared: dict[str, Any] = {"name": name}
    for flag in ("randomised", "differentiable"):
        value = getattr(obj, flag, getattr(CallableDefender, flag))
        if not isinstance(value, bool):
            raise ValueError(f"{what}: {flag} must be True or False, got {value!r}")
        declared[flag] = value
    cost = getattr(obj, "cost_hint", None)
    number = isinstance(cost, int | float) and not isinstance(cost, bool)
    if cost is not None and not (number and cost > 0):
        raise ValueError(f"{what}: cost_hint must be a number > 0 or None, got {cost!r}")
    declared["cost_hint"] = cost
    return declared


def _reduce_callable(defender: CallableDefender) -> tuple[Callable[[str], Any], tuple[str]]:
    """How a callable defender travels to another process: by the path of its plugin."""
    return _callable_defender_at, (type(defender).plugin_path,)


def _callable_defender_at(path: str) -> Any:
    """The callable defender of the plugin at ``path`` (``module:name``) in this process:
    the class registered for it (by import path or entry point), registered first if none."""
    plugin = _imported(DEFENDERS.kind, path)
    for entry in DEFENDERS.entries():
        if _wraps(entry.cls, plugin):
            return entry.build()
    return resolve(DEFENDERS, path).build()


def _wraps(cls: type, plugin: object) -> bool:
    """Whether registered class ``cls`` is ``plugin`` or the callable defender of it."""
    if cls is plugin:
        return True
    return issubclass(cls, CallableDefender) and getattr(cls, "plugin", None) is plugin


def callable_defender(name: str, plugin: object, path: str) -> type[CallableDefender]:
    """``plugin`` (a function ``(x, seeds) -> x'``, a callable object, or a class made with
    no arguments whose instances are called) as the defender class registered as ``name``;
    ``path`` (``module:name``) is where it is imported from. A one-line ValueError naming
    the plugin when it is none of these, its name cannot be an id or a declaration is wrong.

    Example:
        >>> def halve(x, seeds):
        ...     return x / 2
        >>> halve.randomised = False
        >>> Halve = callable_defender("halve", halve, "my_pkg.purify:halve")
        >>> Halve().id, Halve.randomised, Halve.differentiable, Halve.__module__
        ('halve', False, False, 'my_pkg.purify')
    """
    what = f"defender plugin {name}"
    if not callable(plugin):
        raise ValueError(
            f"{what} is not callable (got {type(plugin).__name__}): "
            "a defender is called with (x, seeds)"
        )
    problem = _call_problem(plugin)
    if problem is not None:
        raise ValueError(f"{what}: {problem}")
    module, _, qualname = path.partition(":")
    namespace: dict[str, Any] = {
        **_declarations(what, plugin),
        "plugin": staticmethod(plugin),
        "plugin_path": path,
        "__doc__": getattr(plugin, "__doc__", None),
        "__module__": module,
        "__qualname__": qualname,
        "__reduce__": _reduce_callable,
    }
    cls = type(qualname.rpartition(".")[2], (CallableDefender,), namespace)
    return dataclasses.dataclass(frozen=True)(cls)


# --- registering plugins


def plugin_class(kind: str, name: str, obj: object, path: str) -> type:
    """The class to register for plugin ``name`` of ``kind``, imported from ``path``:
    ``obj`` itself when it is a frozen dataclass following the protocol
    (:func:`check_plugin_class`); for a defender that is no dataclass, its
    :func:`callable_defender`."""
    if kind == DEFENDERS.kind and not dataclasses.is_dataclass(obj):
        return callable_defender(name, obj, path)
    return check_plugin_class(kind, name, obj)


def _imported(kind: str, path: str) -> Any:
    """The object at import path ``path`` (``module:name``); a one-line ValueError else."""
    module_name, _, qualname = path.partition(":")
    what = f"{kind} plugin {path}"
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as error:
        raise ValueError(f"{what}: cannot import {module_name} ({_one_line(error)})") from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{what}: module {module_name} has no {qualname}")
        obj = getattr(obj, part)
    return obj


def resolve(registry: Registry[Any], name: str) -> Entry[Any]:
    """The entry of ``name`` in ``registry``; a ``package.module:Name`` name that is not
    registered yet is imported, checked and registered under that full name first.

    Any other unknown name raises the registry's ValueError (``unknown defender ...``); a
    plugin that cannot be imported or breaks its protocol a one-line ValueError naming it.
    """
    if name in registry or not is_import_path(name):
        return registry[name]
    cls = plugin_class(registry.kind, name, _imported(registry.kind, name), name)
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
    if ep.name in registry and _wraps(registry[ep.name].cls, obj):
        return  # loaded before, or registered by its module
    cls = plugin_class(registry.kind, ep.name, obj, f"{ep.module}:{ep.attr}")
    if ep.name in registry:
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
