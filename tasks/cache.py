"""Caching across runs: work that does not depend on what changed is not redone.

Two results are reused between run directories through Prefect task caching: the trained
classifier (it depends on the dataset, the seed, the network and the training settings) and
each chunk of gray-box adversarial images (they depend on the clean images, the classifier
and the attack, not on any defender). A second run that adds a defender, or reruns the same
protocol into another ``out``, gets both from the cache; changing an attack setting
recomputes only that attack's chunks.

Each cached task's key is the hash of its inputs, less the run directory it reads from, plus
the source of the function it runs and a digest of the ``ride`` package's source (the code
that produced the result; the keys of :mod:`pipeline.keys`). The results themselves are
persisted under the cache directory (``cache_dir``, ``$RIDE_CACHE_DIR``, default
``~/.cache/ride-pipeline``), which every worker must be able to read, like ``out``. The run
directory stays the source of truth for a run: the outer tasks copy a cached result into it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

from pipeline.chunks import gray_box_images
from pipeline.classifier import train_state
from pipeline.config import RunConfig

CACHE_ENV = "RIDE_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$RIDE_CACHE_DIR``, else ``~/.cache/ride-pipeline``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ride-pipeline"


def policy(cache_dir: Path) -> CachePolicy:
    """Inputs + task source, keys stored in ``cache_dir``. The run directory (``out``) and
    the data (``split``) are left out: the key's digests name what the result depends on."""
    keyed: CachePolicy = (INPUTS - "out" - "split") + TASK_SOURCE
    return keyed.configure(key_storage=cache_dir / "keys")


def cached(task_fn: Any, cache_dir: Path) -> Any:
    """``task_fn`` with its result persisted in, and looked up from, ``cache_dir``."""
    return task_fn.with_options(
        cache_policy=policy(cache_dir),
        result_storage=cache_dir / "results",
        persist_result=True,
    )


def for_run(task_fn: Any, cfg: RunConfig) -> Any:
    """``task_fn`` as the run ``cfg`` calls it: cached in its cache directory, or with
    ``cache = false`` the plain function (no task run, nothing read or written)."""
    if not cfg.cache:
        return task_fn.fn
    return cached(task_fn, Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())


# The task source in the key is the source of these functions themselves (Prefect hashes
# ``task.fn``), so a change to how a result is computed is a new key.
trained_classifier_state = task(name="train-classifier", retries=1)(train_state)
"""``pipeline.classifier.train_state`` as a task (the trained classifier's state_dict)."""

adversarial_images = task(name="adversarial-images", retries=2, retry_delay_seconds=2)(
    gray_box_images
)
"""``pipeline.chunks.gray_box_images`` as a task (one chunk's gray-box adversarial images)."""
