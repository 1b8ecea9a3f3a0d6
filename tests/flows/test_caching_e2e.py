"""Caching across runs: a second run into another directory that adds a defender reuses the
trained classifier and every gray-box adversarial chunk (no cache entry is written or
rewritten); changing an attack setting recomputes only that attack's chunks. (A cache full of
planted pickles: ``tests/faults/test_inputs.py``.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main
from storage.results import VOLATILE_COLUMNS, read_results

pytestmark = pytest.mark.slow

BASE = [
    "--limit", "4", "--chunk-size", "2", "--workers", "1",
    "--attack", "none", "--attack", "fgsm", "--defender", "none",
]  # fmt: skip
VOLATILE = [*VOLATILE_COLUMNS, "run_id"]


def entries(cache: Path) -> dict[str, int]:
    """Cache entry -> its modification time (ns): what a run wrote, and when."""
    return {
        str(p.relative_to(cache)): p.stat().st_mtime_ns
        for p in sorted(cache.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def rows(out: Path, attack_prefix: str) -> pd.DataFrame:
    frame = read_results(out / "results")  # compacted: ids as plain strings
    frame = frame[frame["attack_id"].str.startswith(attack_prefix)]
    key = ["attack_id", "defender_id", "index"]
    return frame.drop(columns=VOLATILE).sort_values(key).reset_index(drop=True)


def test_a_second_run_reuses_the_classifier_and_the_adversarial_images(
    prefect_server: str, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "cache"
    cache = ["--cache-dir", str(cache_dir)]
    first = tmp_path / "first"
    assert main(["run", "--out", str(first), *BASE, *cache]) == 0
    written = entries(cache_dir)
    kinds = sorted(name.split("/")[0] for name in written)
    assert kinds == ["arrays", "arrays", "tensors"]  # two chunks of fgsm, one classifier
    assert (cache_dir.stat().st_mode & 0o777) == 0o700

    # Another directory, one more defender: nothing that precedes the defence is redone.
    second = tmp_path / "second"
    assert main(["run", "--out", str(second), *BASE, "--defender", "median", *cache]) == 0
    assert entries(cache_dir) == written  # read, neither added nor rewritten
    assert (first / "classifier.pt").read_bytes() == (second / "classifier.pt").read_bytes()
    second_rows = rows(second, "fgsm")
    pd.testing.assert_frame_equal(
        rows(first, "fgsm"),
        second_rows[second_rows["defender_id"] == "none"].reset_index(drop=True),
    )

    # A changed attack setting: that attack is recomputed, the classifier still cached.
    third = tmp_path / "third"
    assert main(["run", "--out", str(third), *BASE, "--eps", "0.05", *cache]) == 0
    now = entries(cache_dir)
    assert {k: now[k] for k in written} == written
    assert sorted(k.split("/")[0] for k in set(now) - set(written)) == ["arrays", "arrays"]

    # --no-cache computes everything and touches no entry.
    fourth = tmp_path / "fourth"
    assert main(["run", "--out", str(fourth), *BASE, "--no-cache", *cache]) == 0
    assert entries(cache_dir) == now
    pd.testing.assert_frame_equal(rows(first, "fgsm"), rows(fourth, "fgsm"))
