"""The ``ride`` command line: ``ride run`` evaluates, ``ride report`` prints the table."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULTS_NOTE = "Defaults are the embedded digits demo; --config FILE loads a TOML preset."


def _run_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tasks.config import RunConfig

    d = RunConfig()
    p = sub.add_parser(
        "run",
        help="evaluate attacks x defenders on a dataset",
        description="Evaluate every (attack, defender) pair on a dataset and store images "
        "(Zarr) and per-image results (Parquet) under --out. Options given on the command "
        "line override the --config preset. " + DEFAULTS_NOTE,
    )
    add = p.add_argument
    add(
        "--out",
        default="runs/demo",
        help="run directory, created if needed; rerun to resume (default runs/demo)",
    )
    add(
        "--config", type=Path, default=None, help="TOML preset with keys as below (e.g. ride_iters)"
    )
    add("--dataset", default=None, help=f"dataset: digits (default {d.dataset})")
    add(
        "--limit",
        type=int,
        default=None,
        help=f"evaluate the first N test images (default {d.limit})",
    )
    add(
        "--seed",
        type=int,
        default=None,
        help=f"seed of sampling, attacks and defenders (default {d.seed})",
    )
    add("--classifier", default=None, help=f"classifier network (default {d.classifier})")
    add(
        "--weights",
        default=None,
        help="classifier weights file; trained on the train split when absent",
    )
    add(
        "--attack",
        dest="attacks",
        action="append",
        default=None,
        help="attack, repeatable: none, fgsm, pgd (gray-box); bpda, bpda-eot (white-box, "
        "through each defender) (default: none, fgsm, pgd)",
    )
    add(
        "--eps",
        type=float,
        default=None,
        help=f"Linf budget in [0, 1] pixel units (default {d.eps})",
    )
    add("--step", type=float, default=None, help=f"PGD step size (default {d.step})")
    add(
        "--attack-iters",
        type=int,
        default=None,
        help=f"PGD and BPDA iterations (default {d.attack_iters})",
    )
    add(
        "--eot",
        type=int,
        default=None,
        help=f"bpda-eot: defender draws averaged per gradient (default {d.eot})",
    )
    add(
        "--recheck",
        type=int,
        default=None,
        help="defender draws on each final adversarial image; rows record the fraction "
        f"classified correctly (default {d.recheck})",
    )
    add(
        "--defender",
        dest="defenders",
        action="append",
        default=None,
        help="defender, repeatable: none, median, tv-bregman, tv-chambolle, ride, dae, dip, "
        "idip (default: none, median, tv-bregman, ride)",
    )
    add(
        "--median-kernel",
        type=int,
        default=None,
        help=f"median filter size (default {d.median_kernel})",
    )
    add(
        "--bregman-weight",
        type=float,
        default=None,
        help=f"TV split-Bregman weight, smaller = smoother (default {d.bregman_weight})",
    )
    add(
        "--chambolle-weight",
        type=float,
        default=None,
        help=f"TV Chambolle weight, larger = smoother (default {d.chambolle_weight})",
    )
    add(
        "--ride-iters",
        type=int,
        default=None,
        help=f"RIDE K: Adam steps per checkpoint (default {d.ride_iters}; paper 2000)",
    )
    add(
        "--ride-checkpoints",
        type=int,
        default=None,
        help=f"RIDE T: checkpoints (default {d.ride_checkpoints}; paper 5)",
    )
    add("--alpha", type=float, default=None, help=f"RIDE interpolation alpha (default {d.alpha})")
    add("--sigma", type=float, default=None, help=f"DAE Gaussian std sigma (default {d.sigma})")
    add("--lr", type=float, default=None, help=f"RIDE Adam learning rate (default {d.lr})")
    add(
        "--weight-decay",
        type=float,
        default=None,
        help=f"RIDE Adam weight decay (default {d.weight_decay})",
    )
    add("--chunk-size", type=int, default=None, help=f"images per task (default {d.chunk_size})")
    add("--device", default=None, help=f"cpu or cuda (default {d.device})")
    add(
        "--workers",
        type=int,
        default=None,
        help=f"local Dask worker processes (default {d.workers})",
    )
    add("--threads", type=int, default=None, help=f"torch threads per worker (default {d.threads})")
    add(
        "--scheduler",
        default=None,
        help="address of an existing Dask scheduler "
        "(default: $RIDE_SCHEDULER, else a local cluster)",
    )
    p.set_defaults(handler=_cmd_run)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ride",
        description="Evaluate RIDE and baseline defenders against adversarial attacks, "
        "as Prefect flows on a Dask cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _report_parser(sub)
    return parser


class CliError(Exception):
    """A problem with the user's input: printed as one line, exit status 1."""


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Preset (if any) overridden by the options given on the command line."""
    from tasks.config import RunConfig, load_preset

    settings: dict[str, Any] = load_preset(args.config) if args.config else {}
    option_keys = set(RunConfig().to_dict())
    for key, value in vars(args).items():
        if key in option_keys and value is not None:
            settings[key] = value
    if "scheduler" not in settings and os.environ.get("RIDE_SCHEDULER"):
        settings["scheduler"] = os.environ["RIDE_SCHEDULER"]
    return settings


def check_out_dir(out: Path) -> None:
    """``--out`` must be a directory we can create or write into."""
    if not str(out):
        raise CliError("--out is empty")
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} exists and is not a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise CliError(f"--out {out}: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CliError(f"--out {out}: {existing} is not writable")


def preflight(out: Path, settings: dict[str, Any]) -> None:
    """Every check that can fail before any work starts, so nothing is half-written."""
    import torch

    from ride.classifiers import load_classifier
    from storage.layout import RunLayout
    from storage.lock import check_unlocked
    from storage.runconfig import check_same_run
    from tasks.config import RunConfig

    cfg = RunConfig.from_mapping(settings)
    check_out_dir(out)
    layout = RunLayout(out)
    check_unlocked(out)
    check_same_run(layout.run_toml, cfg.to_dict(), cfg.identity())
    if cfg.device == "cuda" and not torch.cuda.is_available() and not cfg.scheduler:
        raise CliError("--device cuda: no CUDA device is visible on this machine")
    if cfg.scheduler:  # the cluster's workers, not this machine, must offer the GPUs
        from flows.cluster import check_cluster, required_resources

        check_cluster(cfg.scheduler, required_resources(cfg))
    if layout.classifier.exists():
        load_classifier(layout.classifier, cfg.classifier)
    elif cfg.weights is not None:
        load_classifier(Path(cfg.weights), cfg.classifier)


def _cmd_run(args: argparse.Namespace) -> int:
    settings = resolve_settings(args)
    preflight(Path(args.out), settings)

    from flows.evaluate import evaluate, make_task_runner
    from flows.server import prefect_api
    from tasks.config import RunConfig

    cfg = RunConfig.from_mapping(settings)
    with prefect_api():
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


def _cmd_report(args: argparse.Namespace) -> int:
    from storage.figures import draw_figures
    from storage.files import atomic_write_bytes
    from storage.layout import RunLayout
    from storage.report import accuracy_report
    from storage.results import read_results

    layout = RunLayout(args.run_dir)
    if not layout.results.is_dir():
        raise CliError(f"{args.run_dir} has no results/ folder (not a `ride run` directory?)")
    markdown = accuracy_report(read_results(layout.results))
    atomic_write_bytes(layout.report, markdown.encode())
    print(markdown, end="")
    for figure in draw_figures(layout):
        print(f"figure: {figure}")
    return 0


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
    args = build_parser().parse_args(argv)
    from flows.cluster import ClusterError
    from ride.classifiers import CheckpointError
    from storage.images import StorageError
    from storage.lock import RunDirBusy
    from storage.runconfig import RunConfigMismatch
    from tasks.config import ConfigError

    try:
        return int(args.handler(args))
    except (
        CliError,
        ClusterError,
        ConfigError,
        CheckpointError,
        RunConfigMismatch,
        RunDirBusy,
        StorageError,
    ) as error:
        print(f"ride: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        what = "terminated" if isinstance(stop, Terminated) else "interrupted"
        print(f"ride: {what}; rerun the same command to resume", file=sys.stderr)
        return 143 if isinstance(stop, Terminated) else 130


if __name__ == "__main__":
    sys.exit(main())
