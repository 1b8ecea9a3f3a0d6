"""The options of ``ride run``, derived from one declaration each: a ``RunConfig`` field (its
help, option and type in the field's metadata) or a run key of a registered attack or
defender (``pipeline.settings.run_keys``). Library errors name settings; :func:`cli_text` and
:func:`option_flag` spell them as options."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

DEFAULTS_NOTE = "Defaults are the embedded digits demo; --config FILE loads a TOML preset."


def _sweep(kind: type, key: str) -> Any:
    """argparse type of a sweep option: ``3`` or ``3,5,7``."""

    def parse(text: str) -> Any:
        from pipeline.config import ConfigError, parse_sweep

        try:
            return parse_sweep(text, kind)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = f"{kind.__name__} list"
    return parse


def _choices(name: str) -> str:
    """The registered names an option takes, for its help."""
    from ride.classifiers import CLASSIFIERS
    from ride.registry import ATTACKS, DATASETS, DEFENDERS

    if name == "classifier":
        defaults = ", ".join(
            f"{e.name}: {e.build().default_classifier}" for e in DATASETS.entries()
        )
        return f"{', '.join(CLASSIFIERS)}; the dataset's by default ({defaults})"
    registry = {"dataset": DATASETS, "attacks": ATTACKS, "defenders": DEFENDERS}.get(name)
    return registry.describe() if registry is not None else ""


def option_flag(key: str) -> str:
    """The ``ride run`` option of setting ``key`` (``attacks`` -> ``--attack``)."""
    from pipeline.config import option_fields

    for f in option_fields():
        if f.name == key and f.metadata["flag"]:
            return str(f.metadata["flag"])
    return "--" + key.replace("_", "-")


def cli_text(message: str) -> str:
    """A library error as the command line says it: a leading setting name becomes its
    option (``data_dir is required ...`` -> ``--data-dir is required ...``)."""
    from pipeline.config import RunConfig

    head, sep, rest = message.partition(" ")
    if sep and head.rstrip(":") in RunConfig().to_dict():
        return option_flag(head.rstrip(":")) + head[len(head.rstrip(":")) :] + sep + rest
    return message


def _default_text(value: Any) -> str:
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


def _chunk_size(text: str) -> int | str:
    """``--chunk-size``: a count of images, or ``auto``."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of images or auto, got {text!r}"
        ) from None


def _add_option(group: argparse._ArgumentGroup, f: Any, default: Any) -> None:
    """One RunConfig field as an option, from its metadata."""
    meta = f.metadata
    flag = option_flag(f.name)
    choices = _choices(f.name)
    text = f"{meta['help']}: {choices}" if choices else meta["help"]
    if meta["kind"] is bool:  # --no-cache
        group.add_argument(
            flag, dest=f.name, action="store_const", const=not default, default=None, help=text
        )
        return
    if f.name == "classifier":
        group.add_argument(flag, dest=f.name, default=None, help=text)
        return
    if f.name == "chunk_size":
        group.add_argument(
            flag, dest=f.name, type=_chunk_size, default=None, help=f"{text} (default {default})"
        )
        return
    repeat = isinstance(default, tuple)
    group.add_argument(
        flag,
        dest=f.name,
        type=meta["kind"],
        action="append" if repeat else "store",
        default=None,
        help=text if default is None else f"{text} (default {_default_text(default)})",
    )


def _add_key(group: argparse._ArgumentGroup, rk: Any) -> None:
    """One run key of the registered attacks or defenders as an option."""
    sweep = "; a comma list sweeps it, one object per value" if rk.sweep else ""
    default = f"--{rk.fallback.replace('_', '-')}" if rk.default is None else rk.default
    group.add_argument(
        option_flag(rk.key),
        dest=rk.key,
        type=_sweep(rk.kind, rk.key) if rk.sweep else rk.kind,
        default=None,
        help=f"{rk.help}{sweep} [{', '.join(rk.used_by)}] (default {default})",
    )


def add_run_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], handler: Callable[..., int]
) -> None:
    """The ``ride run`` subcommand: its options from ``RunConfig``'s fields and the run keys
    of the registered attacks and defenders."""
    from pipeline.config import RunConfig, option_fields, run_keys

    d = RunConfig()
    p = sub.add_parser(
        "run",
        help="evaluate attacks x defenders on a dataset",
        description="Evaluate every (attack, defender) pair on a dataset and store images "
        "(Zarr) and per-image results (Parquet) under --out. Options given on the command "
        "line override the --config preset; a preset's keys are the options' names with "
        "underscores (ride_iters = 2000). " + DEFAULTS_NOTE,
    )
    p.add_argument(
        "--out",
        default="runs/demo",
        help="run directory, created if needed; rerun to resume (default runs/demo)",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="TOML preset with keys as below (e.g. ride_iters)"
    )
    run = p.add_argument_group("what to evaluate")
    execution = p.add_argument_group("how to run it (may change between a run and its resume)")
    for f in option_fields():
        if not f.metadata["recorded"]:
            _add_option(execution if f.metadata["execution"] else run, f, getattr(d, f.name))
    groups = {
        "attack": p.add_argument_group("attack settings (the attacks in [brackets] use them)"),
        "defender": p.add_argument_group(
            "defender settings (the defenders in [brackets] use them)"
        ),
    }
    for rk in run_keys().values():
        _add_key(groups[rk.group], rk)
    p.set_defaults(handler=handler)


def register_named_plugins(argv: Sequence[str]) -> None:
    """Register the plugin classes ``argv`` names by import path, so that the parser built
    next has their keyed settings as options: ``--defender pkg.mod:Class`` (or
    ``--defender=pkg.mod:Class``), the same for ``--attack``, and the ``defenders`` and
    ``attacks`` of a ``--config`` preset. A plugin that cannot be registered is one warning
    line here; the settings' check reports it as the error, with its option."""
    from pipeline.config import ConfigError, load_preset
    from ride.plugins import is_import_path, resolve
    from ride.registry import ATTACKS, DEFENDERS

    flags = {"--defender": DEFENDERS, "--attack": ATTACKS}
    named: list[tuple[Any, object]] = []
    for i, arg in enumerate(argv):
        flag, eq, value = arg.partition("=")
        given = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if flag in flags:
            named.append((flags[flag], given))
        elif flag == "--config" and given:
            try:
                preset = load_preset(Path(given))
            except (ConfigError, OSError):
                continue  # the settings' check reports it
            for key, registry in (("defenders", DEFENDERS), ("attacks", ATTACKS)):
                raw = preset.get(key, ())
                names = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
                named.extend((registry, name) for name in names)
    for registry, name in named:
        if isinstance(name, str) and is_import_path(name) and name not in registry:
            try:
                resolve(registry, name)
            except ValueError as error:
                print(f"ride: warning: {error}", file=sys.stderr)
