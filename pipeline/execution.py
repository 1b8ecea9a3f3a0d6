"""How a run executes on a worker: the device and threads, the defender as the run runs it,
each image's defender seed, and a chunk's inputs read from storage."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

from pipeline.config import RunConfig
from ride.attacks import Attack
from ride.classifiers import load_classifier
from ride.defenders import Defender, build_defender
from ride.seeding import derive_seed
from storage.images import ImageStore
from storage.layout import RunLayout

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
"""A plain logger, or the Prefect run logger a task passes in."""


def default_logger(logger: Logger | None) -> Logger:
    """``logger``, or this package's plain logger when none is given."""
    return logger if logger is not None else logging.getLogger("pipeline")


def worker_device(cfg: RunConfig) -> torch.device:
    """The run's device, with this worker process set up for it.

    torch gets ``cfg.threads`` threads. The interpreter's switch interval drops from 5 ms
    to 0.1 ms: a RIDE fit makes thousands of short torch calls, each releasing the GIL, and
    whenever a worker's service thread grabs it the fit waits up to one interval to get it
    back (measured: 30% of a fit's time inside a Dask worker).
    """
    torch.set_num_threads(cfg.threads)
    sys.setswitchinterval(1e-4)
    return torch.device(cfg.device)


def data_dir(cfg: RunConfig) -> Path | None:
    """The dataset's folder (None for the bundled digits)."""
    return None if cfg.data_dir is None else Path(cfg.data_dir)


def executed_defender(cfg: RunConfig, defender: Defender) -> Defender:
    """``defender`` as this run executes it: RIDE's fits at the run's ``precision``, with as
    many of a chunk's images at once as the device's free memory allows."""
    return build_defender(defender, precision=cfg.precision, max_batch="auto")


def defender_seeds(
    cfg: RunConfig, attack: Attack, defender: Defender, start: int, count: int
) -> list[int]:
    """One seed per image for this (attack, defender); the attack's draws derive from it."""
    return [
        derive_seed(cfg.seed, cfg.dataset, start + i, attack.id, defender.id) for i in range(count)
    ]


def load_chunk(
    layout: RunLayout, classifier: str, start: int, stop: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """Rows ``[start, stop)`` of the run's clean images and labels, and its classifier."""
    store = ImageStore(layout)
    clean = torch.from_numpy(store.read_rows("clean", start, stop)).to(device)
    labels = torch.from_numpy(store.read_rows("labels", start, stop)).to(device)
    return clean, labels, load_classifier(layout.classifier, classifier, device=device)
