"""The ``ride`` command line: ``ride run`` evaluates, ``ride train`` trains a classifier,
``ride report`` prints the tables, ``ride compact`` merges the result files."""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flows import interrupts
from flows.interrupts import Terminated
from flows.run_options import add_run_parser, cli_text, option_flag, register_named_plugins
from flows.train_options import add_train_parser

if TYPE_CHECKING:
    from pipeline.preflight import PreflightError

__all__ = ["build_parser", "cli_text", "main", "option_flag", "preflight", "resolve_settings"]


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


def _compact_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compact",
        help="merge a run's per-task result files into one Parquet file per attack and defender",
        description="Merge the per-task files DIR/results/*.parquet into a hive-partitioned "
        "dataset, DIR/results/attack_id=A/defender_id=D/part-*.parquet, that pandas, pyarrow "
        "and DuckDB read fast. Failed rows (*.failed.parquet) stay as they are. Safe to stop "
        "at any point (the next call finishes the job), and to repeat: a second call finds "
        "nothing to do. A resumed `ride run` keeps working on a compacted run.",
    )
    p.add_argument("run_dir", type=Path, metavar="DIR", help="a run directory made by `ride run`")
    p.set_defaults(handler=_cmd_compact)


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


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``ride`` parser; the plugins ``argv`` (default ``sys.argv[1:]``) names by import
    path are registered first, so that their settings are options."""
    register_named_plugins(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="ride",
        description="Evaluate RIDE and baseline defenders against adversarial attacks, "
        "as Prefect flows on a Dask cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    add_run_parser(sub, _cmd_run)
    add_train_parser(sub, _cmd_train)
    _report_parser(sub)
    _compact_parser(sub)
    _cards_parser(sub)
    return parser


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 1."""


RESUME_AFTER_WRITE_FAILURE = (
    "what was stored is kept; free space (or make the folder writable) and rerun the same "
    "command to resume"
)
"""The end of the one line for a run stopped by a write that failed (exit status 3)."""


SCHEDULER_ENV = "RIDE_SCHEDULER"
"""The environment variable giving the scheduler when ``--scheduler`` is not given."""


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Preset (if any) overridden by the options given on the command line."""
    from pipeline.config import RunConfig, load_preset

    settings: dict[str, Any] = load_preset(args.config) if args.config else {}
    option_keys = set(RunConfig().to_dict())
    given = {key for key, value in vars(args).items() if key in option_keys and value is not None}
    args.preset_keys = frozenset(settings) - given  # errors about these name the preset's key
    settings.update({key: value for key, value in vars(args).items() if key in given})
    args.env_keys = {}  # errors about these name the variable they came from
    if "scheduler" not in settings and os.environ.get(SCHEDULER_ENV):
        settings["scheduler"] = os.environ[SCHEDULER_ENV]
        args.env_keys["scheduler"] = f"${SCHEDULER_ENV}"
    return settings


def preflight(out: Path, settings: dict[str, Any]) -> None:
    """Every check of ``ride run`` before any work (:func:`flows.checks.check_run`)."""
    from flows.checks import check_run

    check_run(out, settings)


@contextmanager
def _locked(out: Path) -> Iterator[None]:
    """Hold ``out``'s run lock (creating ``out``) from before the Prefect server starts.

    The preflight found ``out`` free, but a run started at the same moment may have locked it
    since: the second of two fails here, in one line, before it starts a server. The flow
    takes the lock again (re-entrant in this process), as it must when started another way.
    A folder where no file can be made (``/proc``) is one line (CliError) here too.
    """
    from storage.lock import run_lock

    with ExitStack() as stack:
        try:
            out.mkdir(parents=True, exist_ok=True)
            stack.enter_context(run_lock(out, reentrant=True))
        except OSError as error:  # a folder no file can be made in (/proc)
            raise CliError(
                f"--out {out}: cannot create or lock the run directory there "
                f"({error.strerror or error})"
            ) from None
        yield


def _cmd_run(args: argparse.Namespace) -> int:
    from flows.checks import check_run

    settings = resolve_settings(args)
    cfg = check_run(Path(args.out), settings)
    from pipeline.sampling import resume_note
    from storage.layout import RunLayout

    note = resume_note(RunLayout(Path(args.out)))
    if note is not None:
        print(f"ride: note: {note}", file=sys.stderr)

    from flows.evaluate import evaluate, make_task_runner
    from flows.server import prefect_api
    from pipeline.sampling import command_line

    with _locked(Path(args.out)), prefect_api():
        summary = evaluate.with_options(task_runner=make_task_runner(cfg))(
            out=str(args.out), settings=settings, command=command_line(sys.argv)
        )
    if summary.get("unwritable"):
        print(
            f"ride: error: {summary['unwritable']}; {RESUME_AFTER_WRITE_FAILURE}", file=sys.stderr
        )
        return 3
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
    from pipeline.train import TrainSettings

    keys = [f.name for f in fields(TrainSettings)]  # every one is an option of ride train
    settings = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    out = Path(args.out)
    check_training(out, settings)

    from flows.server import prefect_api
    from flows.train import train

    with _locked(out), prefect_api():
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


def _cmd_compact(args: argparse.Namespace) -> int:
    from storage.compact import compact_results
    from storage.layout import RunLayout
    from storage.lock import run_lock
    from storage.runconfig import read_run_document

    layout = RunLayout(args.run_dir)
    if not layout.root.is_dir():
        raise CliError(f"{args.run_dir} does not exist")
    if not layout.results.is_dir():
        raise CliError(f"{args.run_dir} has no results/ folder (not a `ride run` directory?)")
    if layout.run_toml.exists():
        read_run_document(layout.run_toml)  # a run.toml planted or damaged: refused first
    with run_lock(layout.root):
        done = compact_results(layout.results)
    print(done.summary(layout.results))
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


def _preflight_text(error: PreflightError, env_keys: dict[str, str]) -> str:
    """A preflight error as the command line says it: the parameter it starts with
    (``out``, ``epochs``...) becomes its option, or the environment variable it came from
    (``$RIDE_SCHEDULER``), as ``cli_text`` does for a run's settings."""
    key, message = error.key, str(error)
    if key and message.startswith((f"{key} ", f"{key}:")):
        return env_keys.get(key, option_flag(key)) + message[len(key) :]
    return cli_text(message)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        # Unwind on SIGTERM as on Ctrl-C, so the temporary Prefect server and the local Dask
        # cluster are stopped by their context managers instead of outliving this process;
        # a signal that library code swallowed still stops the flow at its next task.
        interrupts.install()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    args = build_parser(argv).parse_args(argv)
    from pipeline.config import ConfigError, join_key
    from pipeline.preflight import PreflightError
    from ride.classifiers import CheckpointError
    from ride.datasets import DatasetError
    from storage.files import StorageError, WriteError
    from storage.lock import RunDirBusy
    from storage.runconfig import RunConfigMismatch

    try:
        return int(args.handler(args))
    except ConfigError as error:
        if error.key in getattr(args, "preset_keys", ()):
            where = f"{args.config}: {error.key}"  # a TOML key of the preset, as written there
        elif error.key in getattr(args, "env_keys", {}):
            where = args.env_keys[error.key]
        else:
            where = "--config" if error.key == "config" else option_flag(error.key or "")
        text = join_key(where, error.message) if error.key else str(error)
        print(f"ride: error: {text}", file=sys.stderr)
        return 1
    except PreflightError as error:
        print(
            f"ride: error: {_preflight_text(error, getattr(args, 'env_keys', {}))}", file=sys.stderr
        )
        return 1
    except WriteError as error:  # a write outside the chunk tasks (run.toml, report.md)
        print(f"ride: error: {error}; {RESUME_AFTER_WRITE_FAILURE}", file=sys.stderr)
        return 3
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
