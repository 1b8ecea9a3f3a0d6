"""A verdict that grows: `ride run --limit 16` on a run folder of 8 images recomputes
nothing for the first 8 and ends with the rows a run of 16 made at once has."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from flows.cli import main
from storage.results import VOLATILE_COLUMNS

pytestmark = pytest.mark.slow

ARGS = [
    "--workers", "2", "--no-compact", "--attack", "none", "--attack", "pgd",
    "--defender", "none", "--defender", "median", "--defender", "ride",
    "--ride-iters", "60", "--ride-checkpoints", "2",  # 120 steps: a defence chunk of its own
]  # fmt: skip


def files(results: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(results.glob("*.parquet"))}


def rows(out: Path) -> pd.DataFrame:
    frame = pd.read_parquet(out / "results").drop(columns=["run_id", *VOLATILE_COLUMNS])
    keys = ["attack_id", "defender_id", "index"]
    return frame.sort_values(keys).reset_index(drop=True)


def test_a_run_grown_from_8_to_16_images_equals_one_of_16(
    prefect_server: str, tmp_path: Path
) -> None:
    grown, at_once = tmp_path / "grown", tmp_path / "at-once"
    assert main(["run", "--out", str(grown), "--limit", "8", *ARGS]) == 0
    first = files(grown / "results")
    run_id = tomllib.loads((grown / "run.toml").read_text())["run_id"]

    assert main(["run", "--out", str(grown), "--limit", "16", *ARGS]) == 0
    after = files(grown / "results")
    # Every file of the first 8 images is the same file: no task of theirs ran again.
    assert {name: after[name] for name in first} == first
    assert len(after) == 2 * len(first)  # the new 8 images in tasks of the same size
    document = tomllib.loads((grown / "run.toml").read_text())
    assert document["run_id"] == run_id
    assert document["config"]["limit"] == 16 and document["config"]["first_limit"] == 8
    assert [(g["before"], g["after"]) for g in document["growth"]] == [(8, 16)]
    frame = pd.read_parquet(grown / "results")
    assert set(frame["run_id"]) == {run_id} and len(frame) == 16 * 2 * 3
    assert np.asarray(zarr.open_group(str(grown / "images.zarr"), mode="r")["clean"]).shape[0] == 16

    assert main(["run", "--out", str(at_once), "--limit", "16", *ARGS]) == 0
    assert len(files(at_once / "results")) < len(after)  # cut into fewer, larger tasks
    pd.testing.assert_frame_equal(rows(grown), rows(at_once), check_exact=False, rtol=1e-5)

    # Resuming the grown run finds everything stored; shrinking it is one line.
    assert main(["run", "--out", str(grown), "--limit", "16", *ARGS]) == 0
    assert files(grown / "results") == after
    assert main(["run", "--out", str(grown), "--limit", "8", *ARGS]) != 0


def test_a_run_restored_from_its_kept_results_grows_without_redoing_its_defences(
    prefect_server: str, tmp_path: Path
) -> None:
    from storage.kept import keep_run, restore_run

    args = [a for a in ARGS if a != "--no-compact"]
    made, kept, restored = tmp_path / "made", tmp_path / "kept", tmp_path / "restored"
    assert main(["run", "--out", str(made), "--limit", "8", *args]) == 0
    keep_run(made, kept)
    assert not (kept / "images.zarr").exists()
    assert restore_run(kept, restored) == 8
    assert main(["run", "--out", str(restored), "--limit", "16", *args, "--no-compact"]) == 0
    # Only the new images' tasks wrote result files: nothing of rows 0-8 was defended again.
    written = sorted(p.name for p in (restored / "results").glob("*.parquet"))
    assert written and all("__0000008-" in name for name in written)
    assert main(["run", "--out", str(made), "--limit", "16", *args]) == 0
    pd.testing.assert_frame_equal(rows(restored), rows(made), check_exact=False, rtol=1e-5)
