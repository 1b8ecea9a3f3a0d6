"""Caching across runs: work that does not depend on what changed is not redone.

Two results are reused between run directories through Prefect task caching: the trained
classifier (it depends on the dataset, the seed, the network and the training settings) and
each chunk of gray-box adversarial images (they depend on the clean images, the classifier
and the attack, not on any defender). A second run that adds a defender, or reruns the same
protocol into another ``--out``, gets both from the cache; changing an attack setting
recomputes only that attack's chunks.

Each cached task's key is the hash of its inputs, less the run directory it reads from, plus
the source of the task and a digest of the ``ride`` package's source (the code that produced
the result). The results themselves are persisted under the cache directory (``--cache-dir``,
``$RIDE_CACHE_DIR``, default ``~/.cache/ride-pipeline``), which every worker must be able to
read, like ``--out``. The run directory stays the source of truth for a run: the outer tasks
copy a cached result into it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy

import ride
from ride.attacks import AttackConfig, run_attack
from ride.classifiers import build_classifier, load_classifier
from ride.datasets import ImageSet
from ride.seeding import derive_seed, generator_for
from ride.training import TrainConfig, train_classifier
from storage.images import ImageStore
from storage.layout import RunLayout

CACHE_ENV = "RIDE_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$RIDE_CACHE_DIR``, else ``~/.cache/ride-pipeline``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "ride-pipeline"


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


def array_digest(*arrays: np.ndarray) -> str:
    """sha256 of the arrays' bytes (what a cached result was computed from)."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@task(name="train-classifier", retries=1)
def trained_classifier_state(key: ClassifierKey, split: ImageSet) -> dict[str, torch.Tensor]:
    """Train ``key.classifier`` on the train ``split`` (whose digest is ``key.data``); its
    state_dict (on the CPU)."""
    model = build_classifier(key.classifier, num_classes=split.num_classes, seed=key.seed)
    model = train_classifier(model.to(torch.device(key.device)), split, key.train)
    return {name: value.detach().cpu() for name, value in model.state_dict().items()}


def load_chunk(
    layout: RunLayout, classifier: str, start: int, stop: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """Rows ``[start, stop)`` of the run's clean images and labels, and its classifier."""
    store = ImageStore(layout)
    clean = torch.from_numpy(store.read_rows("clean", start, stop)).to(device)
    labels = torch.from_numpy(store.read_rows("labels", start, stop)).to(device)
    return clean, labels, load_classifier(layout.classifier, classifier, device=device)


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


def chunk_key(
    layout: RunLayout, dataset: str, seed: int, classifier: str, device: str, start: int, stop: int
) -> ChunkKey:
    """The cache key of rows ``[start, stop)`` of the run in ``layout``."""
    store = ImageStore(layout)
    return ChunkKey(
        dataset=dataset,
        seed=seed,
        data=array_digest(*(store.read_rows(name, start, stop) for name in ("clean", "labels"))),
        start=start,
        stop=stop,
        classifier=classifier,
        classifier_digest=file_digest(layout.classifier),
        device=device,
        code=ride_source_digest(),
    )


@task(name="adversarial-images", retries=2, retry_delay_seconds=2)
def adversarial_images(out: str, attack: AttackConfig, key: ChunkKey) -> np.ndarray:
    """The gray-box adversarial images (rows, C, H, W) float32 of one chunk of ``out``."""
    device = torch.device(key.device)
    clean, labels, model = load_chunk(
        RunLayout(Path(out)), key.classifier, key.start, key.stop, device
    )
    generator = generator_for(derive_seed(key.seed, key.dataset, key.start, attack.id), device)
    adversarial = run_attack(attack, model, clean, labels, generator=generator)
    return adversarial.detach().cpu().numpy().astype(np.float32)
