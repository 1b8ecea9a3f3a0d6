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
    from tasks.config import RunConfig

DEFAULTS_NOTE = "Defaults are the embedded digits demo; --config FILE loads a TOML preset."
DATASET_HELP = (
    "digits (bundled with scikit-learn), mnist, cifar10 or imagenet (files under --data-dir)"
)
DATA_DIR_HELP = (
    "folder of the dataset's files: mnist: MNIST/raw/{train,t10k}-*-ubyte[.gz]; cifar10: "
    "cifar-10-batches-py/; imagenet: the validation images in class folders (or a flat folder "
    "with labels.txt)"
)


def _sweep(kind: type) -> Any:
    """argparse type of a sweep option: ``3`` or ``3,5,7``."""

    def parse(text: str) -> Any:
        from tasks.config import ConfigError, parse_sweep

        try:
            return parse_sweep(text, kind)
        except ConfigError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = f"{kind.__name__} list"
    return parse


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
    add("--dataset", default=None, help=f"dataset: {DATASET_HELP} (default {d.dataset})")
    add(
        "--data-dir",
        default=None,
        help=f"{DATA_DIR_HELP}; may change between a run and its resume",
    )
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
    add(
        "--classifier",
        default=None,
        help="classifier network: mnist-cnn (digits, mnist), cifar-resnet18 (cifar10), "
        "resnet50, vgg19, inception_v3 (imagenet) (default: the dataset's, as listed)",
    )
    add(
        "--weights",
        default=None,
        help="classifier weights: a classifier.pt of `ride train` or of a run, or for "
        "resnet50, vgg19, inception_v3 a torchvision .pth file. Without it mnist-cnn and "
        "cifar-resnet18 are trained on the train split, and the torchvision networks load "
        "torchvision's file from torch's hub cache (~/.cache/torch/hub/checkpoints or "
        "$TORCH_HOME/hub/checkpoints; never downloaded)",
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
    add(
        "--fgsm-eps",
        type=float,
        default=None,
        help="FGSM's eps when it differs from --eps (paper Table 1: 0.015) (default --eps)",
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
        type=_sweep(int),
        default=None,
        help="median filter size, odd; a comma list sweeps it, one defender per value "
        f"(Table 4: 3,5,7,9,11) (default {d.median_kernel})",
    )
    add(
        "--bregman-weight",
        type=_sweep(float),
        default=None,
        help="TV split-Bregman weight, smaller = smoother; a comma list sweeps it "
        f"(Table 5: 0.075,0.125,0.25,0.5,0.75) (default {d.bregman_weight})",
    )
    add(
        "--chambolle-weight",
        type=_sweep(float),
        default=None,
        help="TV Chambolle weight, larger = smoother; a comma list sweeps it "
        f"(Table 6: 0.25,0.5,...,1.75) (default {d.chambolle_weight})",
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
    add(
        "--alpha",
        type=_sweep(float),
        default=None,
        help="RIDE and I-DIP interpolation alpha; a comma list sweeps it "
        f"(Fig. 5c: 0.7,0.8,0.9,0.95) (default {d.alpha})",
    )
    add(
        "--sigma",
        type=_sweep(float),
        default=None,
        help="RIDE and DAE Gaussian std sigma; a comma list sweeps it (Fig. 5d); RIDE gets "
        f"every (alpha, sigma) pair (default {d.sigma})",
    )
    add("--lr", type=float, default=None, help=f"RIDE Adam learning rate (default {d.lr})")
    add(
        "--weight-decay",
        type=float,
        default=None,
        help=f"RIDE Adam weight decay (default {d.weight_decay})",
    )
    add(
        "--chunk-size",
        type=int,
        default=None,
        help=f"images per task; RIDE fits a task's images together, so on a GPU give "
        f"hundreds (it splits them to fit the card's free memory) (default {d.chunk_size})",
    )
    add("--device", default=None, help=f"cpu or cuda (default {d.device})")
    add(
        "--precision",
        default=None,
        help="arithmetic of RIDE's fits: fp32 (IEEE), tf32 (CUDA convolutions in "
        f"TensorFloat-32) or bf16 (autocast) (default {d.precision})",
    )
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
    add(
        "--cache-dir",
        default=None,
        help="cache of trained classifiers and gray-box adversarial images shared by runs; "
        "every worker must reach it (default: $RIDE_CACHE_DIR, else ~/.cache/ride-pipeline)",
    )
    add(
        "--no-cache",
        dest="cache",
        action="store_const",
        const=False,
        default=None,
        help="compute everything, neither reading nor writing the cache",
    )
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ride",
        description="Evaluate RIDE and baseline defenders against adversarial attacks, "
        "as Prefect flows on a Dask cluster.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _run_parser(sub)
    _train_parser(sub)
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


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ",".join(str(v) for v in shape) + ")"


def check_shapes(classifier: str, dataset: str) -> None:
    """The classifier takes the dataset's images (channels and size)."""
    from ride.classifiers import classifier_input
    from ride.datasets import dataset_shape

    expects, has = classifier_input(classifier), dataset_shape(dataset)
    if expects != has:
        raise CliError(
            f"classifier {classifier} expects {_shape(expects)} inputs but dataset {dataset} "
            f"has {_shape(has)}"
        )


def classifier_file(out: Path, cfg: RunConfig) -> Path | None:
    """The weights a run will use: its classifier.pt, --weights, or torchvision's file for
    the ImageNet networks (CliError when none is there); None when it will be trained."""
    from ride.classifiers import (
        TORCHVISION_CLASSIFIERS,
        find_torchvision_weights,
        torchvision_weight_files,
        torchvision_weights_dir,
    )
    from storage.layout import RunLayout

    layout = RunLayout(out)
    if layout.classifier.exists():
        return layout.classifier
    if cfg.weights is not None:
        return Path(cfg.weights)
    if cfg.classifier not in TORCHVISION_CLASSIFIERS:
        return None
    found = find_torchvision_weights(cfg.classifier)
    if found is None:
        files = " or ".join(torchvision_weight_files(cfg.classifier))
        raise CliError(
            f"classifier {cfg.classifier} needs ImageNet weights: give --weights FILE or put "
            f"{files} in {torchvision_weights_dir()}"
        )
    return found


def check_classes(cfg: RunConfig, outputs: int) -> None:
    """The classifier has one output per class of the dataset (ImageNet: of the folder)."""
    from ride.datasets import LABELS_FILE, dataset_num_classes, imagenet_files

    if cfg.dataset != "imagenet":
        classes = dataset_num_classes(cfg.dataset)
        if outputs != classes:
            raise CliError(
                f"classifier {cfg.classifier} has {outputs} classes but dataset {cfg.dataset} "
                f"has {classes}"
            )
        return
    root = Path(str(cfg.data_dir))
    top = max(label for _, label in imagenet_files(root))
    if (root / LABELS_FILE).is_file():
        if top >= outputs:
            raise CliError(
                f"classifier {cfg.classifier} has {outputs} classes but {root / LABELS_FILE} "
                f"uses class index {top}"
            )
    elif top + 1 != outputs:
        raise CliError(
            f"classifier {cfg.classifier} has {outputs} classes but dataset imagenet in {root} "
            f"has {top + 1} class folders (labels are folder indices: give all {outputs} "
            f"folders, or a flat folder with {LABELS_FILE})"
        )


def check_inputs(out: Path, cfg: RunConfig) -> None:
    """The dataset's files, then the classifier's input shape, then its number of classes."""
    from ride.classifiers import load_classifier, model_num_classes
    from ride.datasets import check_dataset
    from storage.layout import RunLayout
    from storage.sources import read_sources

    layout = RunLayout(out)
    data_dir = None if cfg.data_dir is None else Path(cfg.data_dir)
    recorded = None
    if cfg.dataset == "imagenet" and layout.sources.exists():
        recorded = read_sources(layout.sources)  # a resumed run evaluates the same files
    check_dataset(cfg.dataset, data_dir, "test", cfg.seed, files=recorded)
    check_shapes(cfg.classifier, cfg.dataset)
    weights = classifier_file(out, cfg)
    if weights is None:  # trained on the train split
        check_dataset(cfg.dataset, data_dir, "train", cfg.seed)
        return
    check_classes(cfg, model_num_classes(load_classifier(weights, cfg.classifier)))


def preflight(out: Path, settings: dict[str, Any]) -> None:
    """Every check that can fail before any work starts, so nothing is half-written."""
    import torch

    from storage.layout import RunLayout, TrainLayout
    from storage.lock import check_unlocked
    from storage.runconfig import check_same_run
    from tasks.config import RunConfig

    cfg = RunConfig.from_mapping(settings)
    check_out_dir(out)
    layout = RunLayout(out)
    if TrainLayout(out).train_toml.exists():
        raise CliError(
            f"--out {out} holds a `ride train` output; use --weights {out / 'classifier.pt'}"
        )
    check_unlocked(out)
    check_same_run(layout.run_toml, cfg.run_record(), cfg.identity())
    check_inputs(out, cfg)
    if cfg.device == "cuda" and not torch.cuda.is_available() and not cfg.scheduler:
        raise CliError("--device cuda: no CUDA device is visible on this machine")
    if cfg.scheduler:  # the cluster's workers, not this machine, must offer the GPUs
        from flows.cluster import check_cluster, required_resources

        check_cluster(cfg.scheduler, required_resources(cfg))


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


def preflight_train(out: Path, settings: dict[str, Any]) -> None:
    """The checks of ``ride train`` before any work: settings, directory, data, resume point."""
    import torch

    from ride.datasets import check_dataset
    from storage.layout import RunLayout, TrainLayout
    from storage.lock import check_unlocked
    from storage.runconfig import check_same_run
    from tasks.train import TrainSettings, trained_epochs_in

    cfg = TrainSettings.from_mapping(settings)
    check_out_dir(out)
    layout = TrainLayout(out)
    if RunLayout(out).run_toml.exists():
        raise CliError(f"--out {out} holds a `ride run` directory; use another --out")
    check_unlocked(out)
    check_same_run(layout.train_toml, cfg.to_dict(), cfg.identity())
    check_shapes(cfg.classifier, cfg.dataset)
    check_dataset(cfg.dataset, cfg.data_path, "train", cfg.seed)
    check_dataset(cfg.dataset, cfg.data_path, "test", cfg.seed)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise CliError("--device cuda: no CUDA device is visible on this machine")
    done = trained_epochs_in(layout, cfg.classifier)
    if done > cfg.epochs:
        raise CliError(
            f"--out {out} already holds {done} trained epochs, more than --epochs {cfg.epochs}; "
            "use another --out"
        )


def _cmd_train(args: argparse.Namespace) -> int:
    keys = ("dataset", "data_dir", "classifier", "epochs", "seed", "batch_size", "lr", "device")
    settings = {key: getattr(args, key) for key in keys if getattr(args, key) is not None}
    out = Path(args.out)
    preflight_train(out, settings)

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
    from storage.layout import RunLayout
    from storage.publish import write_report

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
    from ride.datasets import DatasetError
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
        DatasetError,
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
