"""What a reusable result depends on: digests of code, files and arrays, and the keys built
from them.

Two results are shared between runs (``pipeline/cache.py`` caches them): the
trained classifier (:class:`ClassifierKey`) and each chunk of gray-box adversarial images
(:class:`ChunkKey`). A key names everything its result depends on, so equal keys mean equal
results on the same device.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

import ride
from pipeline.plan import Task
from pipeline.run import Run
from ride.training import TrainConfig
from storage.images import ImageStore


@cache
def ride_source_digest() -> str:
    """sha256 of every source file of the ``ride`` package (the science that made a result)."""
    root = Path(ride.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes (a classifier checkpoint names its weights by it).

    Remembered per (path, size, modification time) in this process: a worker hashes the
    run's classifier once, not once per chunk (a ResNet-50 file is 100 MB).
    """
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@cache
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' bytes (what a cached result was computed from)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class ClassifierKey:
    """What a trained classifier depends on (all of it in its cache key)."""

    dataset: str
    seed: int
    data: str  # digest of the train split's images and labels
    classifier: str
    train: TrainConfig
    device: str
    code: str


@dataclass(frozen=True)
class ChunkKey:
    """What a chunk of gray-box adversarial images depends on (all of it in its cache key)."""

    dataset: str
    seed: int
    data: str  # digest of the chunk's clean images and labels
    start: int
    stop: int
    classifier: str
    classifier_digest: str
    device: str
    code: str


def chunk_key(run: Run, task: Task, device: str) -> ChunkKey:
    """The cache key of the gray-box images of the attack chunk ``task`` of ``run``, made on
    ``device``."""
    store = ImageStore(run.layout)
    start, stop = task.start, task.stop
    return ChunkKey(
        dataset=run.cfg.dataset,
        seed=run.cfg.seed,
        data=array_digest(*(store.read_rows(name, start, stop) for name in ("clean", "labels"))),
        start=start,
        stop=stop,
        classifier=run.classifier,
        classifier_digest=file_digest(run.classifier_path),
        device=device,
        code=ride_source_digest(),
    )
