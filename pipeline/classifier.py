"""The run's classifier: taken from the run directory, from ``weights``, from torchvision's
weight file, or trained on the train split; and its clean accuracy, in ``classifier.json``.

Training is the one costly step here, and its result is shared between runs: the caller
passes the function that trains (``tasks/`` passes the Prefect-cached one, ``cache = false``
the plain :func:`train_state`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.config import RunConfig
from pipeline.execution import data_dir, worker_device
from pipeline.keys import ClassifierKey, array_digest, ride_source_digest
from pipeline.sampling import chunk_ranges
from ride.classifiers import (
    TORCHVISION_CLASSIFIERS,
    build_classifier,
    load_classifier,
    load_torchvision_weights,
    predict,
    save_classifier,
)
from ride.classifiers import accuracy as classifier_accuracy
from ride.datasets import ImageSet, load_dataset
from ride.training import TrainConfig, train_classifier
from storage.files import StorageError, atomic_write_bytes
from storage.images import ImageStore
from storage.kept import restored_rows
from storage.layout import RunLayout
from storage.results import read_results

Trainer = Callable[[ClassifierKey, ImageSet], dict[str, torch.Tensor]]
"""Trains ``key.classifier`` on a train split; returns its state_dict (on the CPU)."""


def network_shapes(key: ClassifierKey, split: ImageSet) -> dict[str, tuple[int, ...]]:
    """The names and shapes of the state_dict of ``key.classifier`` for ``split``'s classes:
    what a trained state (from the cache, say) must hold to be loaded into it."""
    model = build_classifier(key.classifier, num_classes=split.num_classes, seed=key.seed)
    return {name: tuple(value.shape) for name, value in model.state_dict().items()}


def train_state(key: ClassifierKey, split: ImageSet) -> dict[str, torch.Tensor]:
    """Train ``key.classifier`` on the train ``split`` (whose digest is ``key.data``); its
    state_dict (on the CPU)."""
    model = build_classifier(key.classifier, num_classes=split.num_classes, seed=key.seed)
    model = train_classifier(model.to(torch.device(key.device)), split, key.train)
    return {name: value.detach().cpu() for name, value in model.state_dict().items()}


def obtain_classifier(
    cfg: RunConfig, device: torch.device, train: Trainer = train_state
) -> torch.nn.Module:
    """``weights``; else torchvision's weight file for the ImageNet networks (never trained
    here); else the small networks trained on the train split by ``train``."""
    if cfg.weights is not None:
        return load_classifier(Path(cfg.weights), cfg.classifier, device=device)
    if cfg.classifier in TORCHVISION_CLASSIFIERS:
        return load_torchvision_weights(cfg.classifier, None, device=device)
    train_split = load_dataset(cfg.dataset, "train", seed=cfg.seed, data_dir=data_dir(cfg))
    key = ClassifierKey(
        dataset=cfg.dataset,
        seed=cfg.seed,
        data=array_digest(train_split.images.numpy(), train_split.labels.numpy()),
        classifier=cfg.classifier,
        train=TrainConfig(seed=cfg.seed),
        device=str(device),
        code=ride_source_digest(),
    )
    model = build_classifier(cfg.classifier, num_classes=train_split.num_classes, seed=cfg.seed)
    model.load_state_dict(train(key, train_split))
    return model.to(device).eval()


def run_images_accuracy(
    layout: RunLayout, model: torch.nn.Module, device: torch.device
) -> tuple[float, int]:
    """Accuracy of ``model`` on the run's stored clean images, read a stored chunk at a time."""
    store = ImageStore(layout)
    n = int(store.array("labels").shape[0])
    correct = 0
    for start, stop in chunk_ranges(n, int(store.array("clean").chunks[0])):
        images = torch.from_numpy(store.read_rows("clean", start, stop)).to(device)
        labels = torch.from_numpy(store.read_rows("labels", start, stop)).to(device)
        correct += int((predict(model, images) == labels).sum())
    return (correct / n if n else 0.0), n


RESTORED_MISMATCH = 500
"""A restored run's classifier may predict differently from the kept rows on one image in
this many (a near-tie that another CPU's kernels break the other way), no more."""


def check_restored_classifier(layout: RunLayout, model: torch.nn.Module, cfg: RunConfig) -> None:
    """A run restored from kept results (``storage.kept``) must classify its restored clean
    images as the kept rows say the classifier that made them did (``pred_clean``); else a
    :class:`~storage.files.StorageError` of one line: other weights would mix two experiments
    in one run."""
    rows = restored_rows(layout)
    if rows == 0:
        return
    kept = read_results(layout.results)
    kept = kept[(kept["index"] < rows) & kept["pred_clean"].notna()]
    kept = kept.drop_duplicates("index").sort_values("index")
    if kept.empty:
        return
    device = worker_device(cfg)
    indices = kept["index"].to_numpy()
    stop = int(indices.max()) + 1
    images = torch.from_numpy(np.array(ImageStore(layout).read_rows("clean", 0, stop)[indices]))
    predicted = predict(model, images.to(device)).cpu().numpy()
    differ = predicted != kept["pred_clean"].to_numpy()
    if int(differ.sum()) > len(kept) // RESTORED_MISMATCH:
        first = int(differ.argmax())
        raise StorageError(
            f"{layout.root}: the classifier predicts {int(differ.sum())} of the {len(kept)} "
            f"restored images differently from the kept rows (image {int(indices[first])}: "
            f"{int(predicted[first])}, kept {int(kept['pred_clean'].iloc[first])}); give the "
            "weights that made them"
        )


def prepare_classifier(layout: RunLayout, cfg: RunConfig, train: Trainer = train_state) -> float:
    """Load ``classifier.pt``, or obtain the classifier (:func:`obtain_classifier`) and save
    it there; returns the clean top-1 accuracy, also written to ``classifier.json``: on the
    whole test split, or for ImageNet on the run's images (the paper's 2-per-class subset;
    decoding all 50,000 validation images is not needed)."""
    device = worker_device(cfg)
    if layout.classifier.exists():
        model = load_classifier(layout.classifier, cfg.classifier, device=device)
    else:
        model = obtain_classifier(cfg, device, train)
        save_classifier(model, layout.classifier, cfg.classifier)
    check_restored_classifier(layout, model, cfg)
    if cfg.dataset == "imagenet":
        accuracy, count = run_images_accuracy(layout, model, device)
        measured_on = "the run's images"
    else:
        test = load_dataset(cfg.dataset, "test", seed=cfg.seed, data_dir=data_dir(cfg))
        accuracy = classifier_accuracy(model, test.images.to(device), test.labels.to(device))
        count, measured_on = len(test), "the test split"
    info = {
        "classifier": cfg.classifier,
        "dataset": cfg.dataset,
        "test_accuracy": accuracy,
        "test_images": count,
        "measured_on": measured_on,
    }
    atomic_write_bytes(layout.classifier_info, json.dumps(info, indent=2).encode())
    return accuracy
