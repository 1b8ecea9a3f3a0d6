"""Hostile or mistaken input, through the real command line: settings of the wrong type,
image lists that point outside the data folder, a shared cache full of planted pickles, a run
directory that lost its ``run.toml`` or was made by another code version."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
import torch
from datafiles import write_imagenet

from faults.harness import (
    RUN_ARGS,
    assert_complete,
    assert_one_error_line,
    copy_run,
    environment,
    file_hashes,
    ride,
    run,
)
from flows.checks import check_run
from pipeline.config import ConfigError
from storage.results import VOLATILE_COLUMNS

pytestmark = pytest.mark.slow

BAD_TOML = [
    ("chunk_size = 2.5", "chunk_size must be an integer, got 2.5"),
    ("threads = 2.5", "threads must be an integer, got 2.5"),
    ("seed = -1", "seed must be >= 0, got -1"),
    ("limit = true", "limit must be an integer, got True"),
    ("workers = 1.5", "workers must be an integer, got 1.5"),
]


@pytest.mark.parametrize(("line", "message"), BAD_TOML)
def test_a_preset_value_of_the_wrong_type_names_its_key_and_writes_nothing(
    tmp_path: Path, line: str, message: str
) -> None:
    preset = tmp_path / "preset.toml"
    preset.write_text(line + "\n")
    out = tmp_path / "run"
    ran = ride("run", "--config", str(preset), "--out", str(out))
    assert_one_error_line(ran, 1, f"{preset}: {message}")
    assert not out.exists()


def test_the_corrected_preset_then_runs(tmp_path: Path, prefect_server: str) -> None:
    """Nothing was written by the refused command, so the corrected one is not refused."""
    preset = tmp_path / "preset.toml"
    out = tmp_path / "run"
    preset.write_text("seed = 0.5\n")
    assert ride("run", "--config", str(preset), "--out", str(out), *RUN_ARGS).code == 1
    preset.write_text("seed = 0\n")
    ran = ride("run", "--config", str(preset), "--out", str(out), *RUN_ARGS)
    assert ran.code == 0, ran.tail()
    assert_complete(out, {})


@pytest.mark.parametrize(("line", "message"), BAD_TOML)
def test_deployment_parameters_are_checked_the_same_way(
    tmp_path: Path, line: str, message: str
) -> None:
    """A deployment's parameters go through the same check as the CLI's (flows/checks.py)."""
    parameters = tomllib.loads(line)
    with pytest.raises(ConfigError, match=message.split(" must")[0]) as error:
        check_run(tmp_path / "run", parameters)
    assert error.value.key == next(iter(parameters))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("entry", ["../outside/x.JPEG", "ABSOLUTE"])
def test_a_labels_file_naming_an_image_outside_the_data_folder_is_refused(
    tmp_path: Path, entry: str
) -> None:
    data = write_imagenet(tmp_path / "val", {"n01440764": [(64, 64)]})
    outside = write_imagenet(tmp_path / "outside", {"n01443537": [(64, 64)]})
    (secret,) = (outside / "n01443537").iterdir()
    (tmp_path / "outside" / "x.JPEG").write_bytes(secret.read_bytes())
    name = str(tmp_path / "outside" / "x.JPEG") if entry == "ABSOLUTE" else entry
    (inside,) = (data / "n01440764").iterdir()
    (data / "labels.txt").write_text(f"n01440764/{inside.name} 0\n{name} 1\n")
    out = tmp_path / "run"
    ran = ride("run", "--dataset", "imagenet", "--data-dir", str(data), "--out", str(out))
    assert_one_error_line(ran, 1, "labels.txt:2", "leaves the data folder")
    assert not out.exists()


def test_a_recorded_source_outside_the_data_folder_is_refused(tmp_path: Path) -> None:
    data = write_imagenet(tmp_path / "val", {"n01440764": [(64, 64)], "n01443537": [(64, 64)]})
    out = tmp_path / "run"
    out.mkdir()
    document = {"format": 1, "dataset": "imagenet", "files": [["../../etc/passwd", 0]]}
    (out / "sources.json").write_text(json.dumps(document))
    ran = ride("run", "--dataset", "imagenet", "--data-dir", str(data), "--out", str(out))
    assert_one_error_line(ran, 1, "sources.json: entry 0", "leaves the data folder")
    assert sorted(p.name for p in out.iterdir()) == ["sources.json"]


class Payload:
    """Unpickling this creates ``marker``: proof that a planted pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, ...]]:
        return (os.system, (f"touch {self.marker}",))


def test_pickles_planted_in_a_shared_cache_are_refused_never_run(
    tmp_path: Path, prefect_server: str
) -> None:
    """Every entry of a shared cache replaced by a pickle payload (the classifier's tensors
    and each chunk of adversarial images): the next run refuses each one with a warning,
    computes it again, runs no payload and gets the results of a clean cache."""
    cache = tmp_path / "cache"
    env = environment(RIDE_CACHE_DIR=str(cache))
    first = tmp_path / "first"
    assert run(first, env=env).code == 0
    entries = sorted(p for p in cache.rglob("*") if p.is_file())
    assert {p.suffix for p in entries} == {".npy", ".pt"}
    marker = tmp_path / "payload-ran"
    for path in entries:
        if path.suffix == ".npy":
            np.save(path, np.array([Payload(marker)], dtype=object), allow_pickle=True)
        else:
            torch.save({"weight": Payload(marker)}, path)

    second = tmp_path / "second"
    ran = run(second, env=env)
    assert ran.code == 0, ran.tail()
    assert not marker.exists(), "a pickle planted in the cache was executed"
    assert ran.stderr.count("cache entry refused") == len(entries)
    assert "Traceback" not in ran.stderr
    volatile = list(VOLATILE_COLUMNS)
    key = ["attack_id", "defender_id", "index"]

    def rows(out: Path) -> pd.DataFrame:
        frame = pd.read_parquet(out / "results").drop(columns=volatile)
        return frame.sort_values(key).reset_index(drop=True)

    pd.testing.assert_frame_equal(rows(first), rows(second))
    assert (first / "classifier.pt").read_bytes() == (second / "classifier.pt").read_bytes()


def test_results_without_run_toml_are_refused_unless_claimed(
    finished_run: Path, tmp_path: Path
) -> None:
    """``run.toml`` deleted: a rerun with other settings would mix two runs' rows, so any
    rerun is refused; ``--force-claim`` with the original settings adopts the directory and
    finds every result already stored."""
    out = copy_run(finished_run, tmp_path / "run")
    before = file_hashes(out / "results")
    (out / "run.toml").unlink()
    ran = run(out, "--eps", "0.05")
    assert_one_error_line(ran, 1, "holds results but no run.toml", "--force-claim")
    assert not (out / "run.toml").exists()

    ran = run(out, "--force-claim")
    assert ran.code == 0, ran.tail()
    assert_complete(out, before)
    assert "Left out" not in ran.stdout
    claimed = tomllib.loads((out / "run.toml").read_text())
    assert claimed["config"]["force_claim"] is True


def test_a_claimed_directory_reports_only_its_own_run(finished_run: Path, tmp_path: Path) -> None:
    """Adopted under other settings: the old rows stay on disk, the report leaves them out."""
    out = copy_run(finished_run, tmp_path / "run")
    (out / "run.toml").unlink()
    ran = run(out, "--eps", "0.05", "--force-claim")
    assert ran.code == 0, ran.tail()
    assert "Left out: 16 rows of other runs" in ran.stdout  # the fgsm-eps0.1 and none rows
    frame = pd.read_parquet(out / "results")
    assert frame["run_id"].nunique() == 2 and len(frame) == 48


def test_a_run_started_by_another_code_version_resumes_with_a_note(
    finished_run: Path, tmp_path: Path
) -> None:
    out = copy_run(finished_run, tmp_path / "run")
    before = file_hashes(out / "results")
    document = tomllib.loads((out / "run.toml").read_text())
    current = document["code_version"]
    document["code_version"] = "0.0.1"
    (out / "run.toml").write_text(tomli_w.dumps(document))
    ran = run(out)
    assert ran.code == 0, ran.tail()
    (line,) = ran.ride_lines
    assert (
        line == f"ride: note: {out} was started by ride-pipeline 0.0.1; resuming it with {current}"
    )
    assert_complete(out, before)
