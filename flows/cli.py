"""The ``ride`` command line: ``ride run`` evaluates, ``ride train`` trains a classifier,
``ride report`` prints the tables."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.preflight import PreflightError

DEFAULTS_NOTE = "Defaults are the embedded digits demo; --config FILE loads a TOML preset."
DATA_DIR_HELP = (
    "folder of the dataset's files: mnist: MNIST/raw/{train,t10k}-*-ubyte[.gz]; cifar10: "
    "cifar-10-batches-py/; imagenet: the validation images in class folders (or a flat folder "
    "with labels.txt)"
)


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


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        _add_option(execution if f.metadata["execution"] else run, f, getattr(d, f.name))
    groups = {
        "attack": p.add_argument_group("attack settings (the attacks in [brackets] use them)"),
        "defender": p.add_argument_group(
            "defender settings (the defenders in [brackets] use them)"
        ),
    }
    for rk in run_keys().values():
        _add_key(groups[rk.group], rk)
    p.set_defaults(handler=_cmd_run)


def _train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ride.training import TrainConfig

    t = TrainConfig()
    p = sub.add_parser(
        "train",
        help="train the MNIST or CIFAR-10 classifier; rerun to resume",
        description="Train the paper's small classifier (mnist-cnn on digits or mnist, "
        "cifar-resnet18 on cifar10) on the train split with Adam, writing a checkpoint after "
        "every epoch. Rerunning on the same --out continues after the last finished epoch "
        "(give a larger --epochs to train longer). Writes OUT/classifier.pt (use it as `ride "
        "run --weights OUT/classifier.pt`) and OUT/classifier.json (test accuracy, per-epoch "
        "losses).",
    )
    add = p.add_argument
    add("--dataset", required=True, help="digits, mnist or cifar10")
    add("--data-dir", default=None, help=DATA_DIR_HELP)
    add(
        "--classifier",
        default=None,
        help="mnist-cnn (digits, mnist) or cifar-resnet18 (cifar10) (default: the dataset's)",
    )
    add("--out", required=True, help="training directory, created if needed; rerun to resume")
    add("--epochs", type=int, default=None, help=f"epochs in total (default {t.epochs})")
    add("--seed", type=int, default=None, help="seed of the initial weights and batch order (0)")
    add("--batch-size", type=int, default=None, help=f"mini-batch size (default {t.batch_size})")
    add("--lr", type=float, default=None, help=f"Adam learning rate (default {t.lr})")
    add("--device", default=None, help="cpu or cuda (default cpu)")
    p.set_defaults(handler=_cmd_train)


def _report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="print the accuracy tables of a run, write its report.md and figures",
        description="Read DIR/results and DIR/steps (Parquet) and the images (Zarr), print "
        "the accuracy tables, write DIR/report.md and draw DIR/figures/*.png (accuracy per "
        "attack iteration, distance distributions, example images).",
    )
    p.add_argument("run_dir", type=Path, help="a run directory made by `ride run`")
    p.set_defaults(handler=_cmd_report)


def _cards_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "cards",
        help="tabulate the defence cards of runs side by side as a leaderboard",
        description="Read each run's DIR/card.json (written by `ride report`; built from its "
        "results when missing) and print a markdown leaderboard, one row per run and "
        "defender, best robust accuracy (under the run's strongest attack) first. A DIR "
        "that is not a run is skipped with one line on stderr, and the exit status is 1.",
    )
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="DIR", help="run directories")
    p.add_argument("--csv", type=Path, default=None, help="also write the leaderboard as CSV")
    p.add_argument(
        "--out-md", type=Path, default=None, help="also write the markdown leaderboard to a file"
    )
    p.set_defaults(handler=_cmd_cards)


def _register_named_plugins(argv: Sequence[str]) -> None:
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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ride`` parser; the plugins ``argv`` (default ``sys.argv[1:]``) names by import
    path are registered first, so that their settings are options."""
    _register_named_plugins(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="ride",
        description="Evaluate RIDE and baseline defenders against adversarial attacks, "
        "as Prefect flows on a Dask cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _train_parser(sub)
    _report_parser(sub)
    _cards_parser(sub)
    return parser


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 1."""


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Preset (if any) overridden by the options given on the command line."""
    from pipeline.config import RunConfig, load_preset

    settings: dict[str, Any] = load_preset(args.config) if args.config else {}
    option_keys = set(RunConfig().to_dict())
    for key, value in vars(args).items():
        if key in option_keys and value is not None:
            settings[key] = value
    if "scheduler" not in settings and os.environ.get("RIDE_SCHEDULER"):
        settings["scheduler"] = os.environ["RIDE_SCHEDULER"]
    return settings


def preflight(out: Path, settings: dict[str, Any]) -> None:
    """Every check of ``ride run`` before any work (:func:`flows.checks.check_run`)."""
    from flows.checks import check_run

    check_run(out, settings)


def _cmd_run(args: argparse.Namespace) -> int:
    from flows.checks import check_run

    settings = resolve_settings(args)
    cfg = check_run(Path(args.out), settings)

    from flows.evaluate import evaluate, make_task_runner
    from flows.server import prefect_api
    from pipeline.sampling import command_line, recorded_command

    with recorded_command(command_line(sys.argv)), prefect_api():  # run.toml's `command`
        summary = evaluate.with_options(task_runner=make_task_runner(cfg))(
            out=str(args.out), settings=settings
        )
    print()
    print(f"classifier clean test accuracy: {summary['classifier_test_accuracy']:.4f}")
    print(summary["report"])
    print(f"results: {Path(args.out) / 'results'}  images: {Path(args.out) / 'images.zarr'}")
    if summary["failed"]:
        print(
            f"ride: {summary['failed']} of {summary['tasks']} chunk tasks failed; "
            "see rows with status 'failed'",
            file=sys.stderr,
        )
        return 3
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from flows.checks import check_training

    keys = ("dataset", "data_dir", "classifier", "epochs", "seed", "batch_size", "lr", "device")
    settings = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    out = Path(args.out)
    check_training(out, settings)

    from flows.server import prefect_api
    from flows.train import train

    with prefect_api():
        summary = train(out=str(out), settings=settings)
    trained = summary["trained"]
    if not trained:
        what = "nothing left to train"
    elif len(trained) == 1:
        what = f"trained epoch {trained[0]}"
    else:
        what = f"trained epochs {trained[0]}-{trained[-1]}"
    print()
    print(
        f"{what}; {summary['classifier']} after {summary['epochs']} epochs: test accuracy "
        f"{summary['test_accuracy']:.4f} on {summary['test_images']} {summary['dataset']} images"
    )
    print(f"weights: {out / 'classifier.pt'} (ride run --weights {out / 'classifier.pt'})")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis.publish import write_report
    from storage.layout import RunLayout

    layout = RunLayout(args.run_dir)
    if not layout.results.is_dir():
        raise CliError(f"{args.run_dir} has no results/ folder (not a `ride run` directory?)")
    markdown, figures, problems = write_report(layout)
    print(markdown, end="")
    for figure in figures:
        print(f"figure: {figure}")
    for problem in problems:
        print(f"ride: figure not drawn: {problem}", file=sys.stderr)
    return 0


def _cmd_cards(args: argparse.Namespace) -> int:
    from analysis.cards import (
        CardError,
        leaderboard,
        leaderboard_csv,
        leaderboard_markdown,
        load_card,
    )
    from storage.files import atomic_write_bytes

    cards, skipped = [], 0
    for run_dir in args.run_dirs:
        try:
            cards.append((str(run_dir), load_card(run_dir)))
        except CardError as error:
            print(f"ride: error: {error}; skipped", file=sys.stderr)
            skipped += 1
    rows = leaderboard(cards)
    markdown = leaderboard_markdown(rows)
    print(markdown, end="")
    for path, text in ((args.out_md, markdown), (args.csv, leaderboard_csv(rows))):
        if path is None:
            continue
        try:
            atomic_write_bytes(path, text.encode())
        except OSError as error:
            raise CliError(f"cannot write {path}: {error.strerror or error}") from None
    return 1 if skipped else 0


def _preflight_text(error: PreflightError) -> str:
    """A preflight error as the command line says it: the parameter it starts with
    (``out``, ``epochs``...) becomes its option, as ``cli_text`` does for a run's settings."""
    key, message = error.key, str(error)
    if key and message.startswith((f"{key} ", f"{key}:")):
        return option_flag(key) + message[len(key) :]
    return cli_text(message)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch scheduler's preemption, ``kill PID``): stop like Ctrl-C does."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # Unwind on SIGTERM so the temporary Prefect server and the local Dask cluster are
        # stopped by their context managers instead of outliving this process.
        signal.signal(signal.SIGTERM, _terminate)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    args = build_parser(argv).parse_args(argv)
    from pipeline.config import ConfigError, join_key
    from pipeline.preflight import PreflightError
    from ride.classifiers import CheckpointError
    from ride.datasets import DatasetError
    from storage.images import StorageError
    from storage.lock import RunDirBusy
    from storage.runconfig import RunConfigMismatch

    try:
        return int(args.handler(args))
    except ConfigError as error:
        where = "--config" if error.key == "config" else option_flag(error.key or "")
        text = join_key(where, error.message) if error.key else str(error)
        print(f"ride: error: {text}", file=sys.stderr)
        return 1
    except PreflightError as error:
        print(f"ride: error: {_preflight_text(error)}", file=sys.stderr)
        return 1
    except (
        CliError,
        CheckpointError,
        DatasetError,
        RunConfigMismatch,
        RunDirBusy,
        StorageError,
    ) as error:
        print(f"ride: error: {cli_text(str(error))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"ride: {what}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
