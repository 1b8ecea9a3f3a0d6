"""Work shared between runs is computed once: the second call with the same key comes from
the cache, any change to what the result depends on is a new key, and an entry the cache
refuses is computed again."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.cache import cached_images, cached_trainer, entry_key, run_cache
from pipeline.config import RunConfig
from pipeline.keys import ChunkKey, ClassifierKey
from ride.attacks import FGSM
from ride.datasets import ImageSet
from ride.training import TrainConfig
from storage.cache import ResultCache

KEY = ChunkKey(dataset="digits", seed=0, data="d", start=0, stop=2, classifier="mnist-cnn",
               classifier_digest="c", device="cpu", code="r")  # fmt: skip
CLASSIFIER_KEY = ClassifierKey(dataset="digits", seed=0, data="d", classifier="mnist-cnn",
                               train=TrainConfig(), device="cpu", code="r")  # fmt: skip


class CountingAttack:
    """A stand-in for ``gray_box_images`` that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, out: str, attack: object, key: ChunkKey) -> np.ndarray:
        self.calls += 1
        return np.full((key.stop - key.start, 1, 28, 28), 0.5, np.float32)


def test_a_chunk_is_computed_once_and_then_read_from_the_cache(tmp_path: Path) -> None:
    compute = CountingAttack()
    images = cached_images(ResultCache(tmp_path), compute)
    first = images("run-a", FGSM(eps=0.1), KEY)
    second = images("run-b", FGSM(eps=0.1), KEY)  # another run directory: same key
    assert compute.calls == 1
    np.testing.assert_array_equal(first, second)
    images("run-b", FGSM(eps=0.05), KEY)  # another attack setting: a new entry
    images("run-b", FGSM(eps=0.1), replace(KEY, classifier_digest="other"))
    assert compute.calls == 3


def test_a_refused_entry_is_computed_again_and_replaced(tmp_path: Path) -> None:
    cache, compute = ResultCache(tmp_path), CountingAttack()
    images = cached_images(cache, compute)
    images("run", FGSM(eps=0.1), KEY)
    (path,) = (tmp_path / "arrays").iterdir()
    path.write_bytes(b"not an array")
    images("run", FGSM(eps=0.1), KEY)
    assert compute.calls == 2
    images("run", FGSM(eps=0.1), KEY)
    assert compute.calls == 2  # the replaced entry loads


def test_a_classifier_is_trained_once(tmp_path: Path) -> None:
    calls: list[ClassifierKey] = []

    def train(key: ClassifierKey, split: ImageSet) -> dict[str, torch.Tensor]:
        calls.append(key)
        return {"w": torch.full((2,), float(len(calls)))}

    trainer = cached_trainer(ResultCache(tmp_path), train, shapes=lambda key, split: {"w": (2,)})
    split = ImageSet("digits", torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.int64), 10)
    assert torch.equal(trainer(CLASSIFIER_KEY, split)["w"], torch.ones(2))
    assert torch.equal(trainer(CLASSIFIER_KEY, split)["w"], torch.ones(2))
    assert len(calls) == 1
    trainer(replace(CLASSIFIER_KEY, seed=1), split)
    assert len(calls) == 2


def test_keys_name_the_function_its_source_and_every_part() -> None:
    def other(out: str, attack: object, key: ChunkKey) -> np.ndarray:
        return np.zeros(1)

    base = entry_key(CountingAttack.__call__, FGSM(eps=0.1), KEY)
    assert base == entry_key(CountingAttack.__call__, FGSM(eps=0.1), KEY)
    assert base != entry_key(other, FGSM(eps=0.1), KEY)
    assert base != entry_key(CountingAttack.__call__, FGSM(eps=0.1), replace(KEY, code="r2"))


def test_no_cache_is_the_plain_computation(tmp_path: Path) -> None:
    compute = CountingAttack()
    assert run_cache(RunConfig.from_mapping({"cache": False})) is None
    assert cached_images(None, compute) is compute
    cfg = RunConfig.from_mapping({"cache_dir": str(tmp_path)})
    assert run_cache(cfg) == ResultCache(tmp_path)


def test_the_default_folder_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIDE_CACHE_DIR", str(tmp_path / "c"))
    assert run_cache(RunConfig()) == ResultCache(tmp_path / "c")
