"""Caching across runs: work that does not depend on what changed is not redone.

Two results are reused between run directories: the trained classifier (it depends on the
dataset's train split, the seed, the network and the training settings) and each chunk of
gray-box adversarial images (the clean images, the classifier and the attack, not any
defender). A second run that adds a defender, or reruns the same protocol into another
``out``, gets both from the cache; changing an attack setting recomputes only that attack's
chunks.

An entry's key is a digest of everything its result depends on: the key dataclass of
:mod:`pipeline.keys` (data, classifier and ``ride`` source digests), the attack's settings
and the source of the function that computes it. Entries live in the cache folder
(``cache_dir``, ``$RIDE_CACHE_DIR``, default ``~/.cache/ride-pipeline``) in formats that load
without running code, each with its checksum (:mod:`storage.cache`). What is loaded is
checked against what the caller needs: a chunk's shape, a classifier's tensor names and
shapes (those of the network it is loaded into: :func:`pipeline.classifier.network_shapes`),
finite values; an entry that is refused is logged in one line and computed again. The run
directory stays the source of truth for a run: the chunk tasks copy what the cache gives
into it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from pipeline.chunks import GrayBoxImages, gray_box_images
from pipeline.classifier import Trainer, network_shapes, train_state
from pipeline.config import RunConfig
from pipeline.execution import Logger, default_logger
from pipeline.keys import ChunkKey, ClassifierKey
from ride.attacks import Attack
from ride.datasets import ImageSet, dataset_shape
from storage.cache import CacheEntryRefused, ResultCache, Shapes

CACHE_ENV = "RIDE_CACHE_DIR"
T = TypeVar("T")

StateShapes = Callable[[ClassifierKey, ImageSet], Shapes]
"""The names and shapes of the state a classifier key trains (:func:`network_shapes`)."""


def default_cache_dir() -> Path:
    """``$RIDE_CACHE_DIR``, else ``~/.cache/ride-pipeline``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ride-pipeline"


def run_cache(cfg: RunConfig) -> ResultCache | None:
    """The cache the run ``cfg`` reads and writes; None with ``cache = false``."""
    if not cfg.cache:
        return None
    return ResultCache(Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir())


def _plain(value: Any) -> Any:
    """A JSON-ready form of a key part: dataclasses by type and fields, the rest as is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        fields = {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"type": kind, **fields}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def entry_key(compute: Callable[..., Any], *parts: Any) -> str:
    """The cache key of ``compute(*parts)``: a digest of its source (a callable object's:
    its class's) and of ``parts``."""
    code = compute if inspect.isroutine(compute) else type(compute)
    document = {
        "function": f"{code.__module__}.{code.__qualname__}",
        "source": inspect.getsource(code),
        "parts": [_plain(part) for part in parts],
    }
    text = json.dumps(document, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _lookup(load: Callable[[], T | None], log: Logger, redo: str) -> T | None:
    """What ``load`` finds in the cache; None when nothing, or when the entry is refused
    (logged with ``redo``, what the caller does instead)."""
    try:
        return load()
    except CacheEntryRefused as refused:
        log.warning("cache entry refused, %s: %s", redo, refused)
        return None


def cached_images(
    cache: ResultCache | None,
    compute: GrayBoxImages = gray_box_images,
    logger: Logger | None = None,
) -> GrayBoxImages:
    """``compute`` (a chunk's gray-box adversarial images) through ``cache``."""
    if cache is None:
        return compute
    log = default_logger(logger)

    def images(out: str, attack: Attack, key: ChunkKey) -> np.ndarray:
        name = entry_key(compute, attack, key)
        shape = (key.stop - key.start, *dataset_shape(key.dataset))
        found = _lookup(lambda: cache.load_array(name, shape), log, "computing it again")
        if found is not None:
            return found
        array = compute(out, attack, key)
        cache.save_array(name, array)
        return array

    return images


def cached_trainer(
    cache: ResultCache | None,
    compute: Trainer = train_state,
    logger: Logger | None = None,
    shapes: StateShapes | None = network_shapes,
) -> Trainer:
    """``compute`` (a classifier's training) through ``cache``. A cached state is used
    only when it holds the tensor names and shapes ``shapes`` gives for the key (the
    network's; None checks only that its values are finite), else trained again."""
    if cache is None:
        return compute
    log = default_logger(logger)

    def train(key: ClassifierKey, split: ImageSet) -> dict[str, torch.Tensor]:
        name = entry_key(compute, key)
        expected = None if shapes is None else shapes(key, split)
        found = _lookup(lambda: cache.load_tensors(name, expected), log, "training again")
        if found is not None:
            return found
        state = compute(key, split)
        cache.save_tensors(name, state)
        return state

    return train
