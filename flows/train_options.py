"""The options of ``ride train``, derived from the training settings' declarations: each field
of :class:`pipeline.train.TrainSettings` carries its help and type in its metadata, as the
fields of ``RunConfig`` do for ``ride run`` (:mod:`flows.run_options`). Every setting is an
option, and ``--out`` names the training directory."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any

FIRST = ("dataset", "data_dir", "classifier")
"""The settings listed before ``--out``: what is trained on, and which network; the recipe
and the device follow in the order they are declared."""

DESCRIPTION = (
    "Train the paper's small classifier (mnist-cnn on digits or mnist, cifar-resnet18 on "
    "cifar10) on the train split with AdamW (decoupled weight decay), a learning rate decayed "
    "exponentially with the step count and training images shifted by a few random pixels, "
    "writing a checkpoint after every epoch. The schedule does not depend on --epochs: "
    "rerunning on the same --out continues after the last finished epoch (give a larger "
    "--epochs to train longer; the result equals a training asked for that many epochs at "
    "once). Writes OUT/classifier.pt (use it as `ride run --weights OUT/classifier.pt`) and "
    "OUT/classifier.json (test accuracy, per-epoch losses)."
)


def train_fields() -> list[Field[Any]]:
    """The fields of ``TrainSettings`` in the order ``ride train --help`` lists them."""
    from pipeline.train import TrainSettings

    declared = list(fields(TrainSettings))
    first = [f for name in FIRST for f in declared if f.name == name]
    return first + [f for f in declared if f.name not in FIRST]


def help_text(f: Field[Any]) -> str:
    """The option's help: the declared help, and the field's default unless it says it."""
    text = str(f.metadata["help"])
    if f.default is MISSING or f.default is None or "(default" in text:
        return text
    return f"{text} (default {f.default})"


def _add(p: argparse.ArgumentParser, f: Field[Any]) -> None:
    p.add_argument(
        "--" + f.name.replace("_", "-"),
        dest=f.name,
        type=f.metadata["kind"],
        required=bool(f.metadata.get("required", False)),
        default=None,
        help=help_text(f),
    )


def add_train_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], handler: Callable[..., int]
) -> None:
    """The ``ride train`` subcommand: one option per ``TrainSettings`` field, and ``--out``."""
    p = sub.add_parser(
        "train",
        help="train the MNIST or CIFAR-10 classifier; rerun to resume",
        description=DESCRIPTION,
    )
    for f in train_fields():
        _add(p, f)
        if f.name == FIRST[-1]:
            p.add_argument(
                "--out",
                required=True,
                help="training directory, created if needed; rerun to resume",
            )
    p.set_defaults(handler=handler)
