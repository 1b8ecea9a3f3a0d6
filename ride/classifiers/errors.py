"""The error of a classifier weight file that cannot be used, and the optional packages that
read the pretrained ImageNet files (the ``imagenet`` extra).

Kept apart from :mod:`ride.classifiers.checkpoints` so that the readers of those files
(:mod:`ride.classifiers.tflite_net`, :mod:`ride.classifiers.keras_squeezenet`), which
``checkpoints`` imports, can raise it too.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

IMAGENET_EXTRA = "pip install -e '.[imagenet]'"
"""How to install the packages that read the pretrained ImageNet weight files."""


class CheckpointError(ValueError):
    """A classifier checkpoint is missing, unreadable or belongs to another network."""


def optional_import(package: str, path: Path | str) -> ModuleType:
    """The module ``package`` (``tflite``, ``h5py``), or a one-line CheckpointError saying
    that reading ``path`` needs it and which extra installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as err:
        raise CheckpointError(
            f"reading {path} needs the package {package!r}, which is not installed "
            f"({type(err).__name__}): {IMAGENET_EXTRA}"
        ) from err


def first_line(err: BaseException) -> str:
    """``Type: first line of the message`` (200 characters at most) of ``err``."""
    lines = str(err).strip().splitlines()
    text = lines[0][:200] if lines else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
