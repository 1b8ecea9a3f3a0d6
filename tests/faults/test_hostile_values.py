"""Hostile values in a shared run folder or cache, through the real command line: nothing
counted twice, nothing trusted blindly.

Run folders and the cache live on shared file systems, where other users and jobs can write.
A result file copied under another name is read once (conflicting copies are refused in one
line); a result file of the right footer but wrong types or values is set aside and its task
redone; a cached classifier with NaN or misshapen tensors is refused and trained again, even
when its checksum was rewritten to match; ``--weights`` with NaN values and a ``run.toml``
with a bad ``run_id`` are refused in one line before anything is written.
"""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tomli_w
import torch

from faults.harness import (
    EXPECTED_ROWS,
    assert_complete,
    assert_one_error_line,
    copy_run,
    environment,
    file_hashes,
    ride,
    ride_here,
    run,
)
from faults.test_storage import FGSM, MEDIAN, NONE, assert_same_rows, hashes_but, result_file
from storage.cache import ResultCache
from storage.results import read_results

pytestmark = pytest.mark.slow

IMAGES = EXPECTED_ROWS // 4
"""Images of the finished run (each under 2 attacks x 2 defenders)."""


def set_column(path: Path, name: str, values: pa.Array) -> None:
    """Rewrite ``path`` with column ``name`` replaced by ``values`` (a valid Parquet file)."""
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index(name), name, values), path)


def parts(out: Path) -> list[Path]:
    return sorted((out / "results").glob("attack_id=*/defender_id=*/part-*.parquet"))


def test_a_result_file_copied_under_another_name_is_counted_once(
    finished_run: Path, tmp_path: Path
) -> None:
    """A copy of a compacted part file beside it once made the report count every row of
    its partition twice (n = 16 for 8 images). Copies equal but for timings are read once;
    a copy that differs is refused in one line, since which one is right cannot be told."""
    out = copy_run(finished_run, tmp_path / "run")
    assert ride_here("compact", str(out)).code == 0
    original = parts(out)[0]
    copy = original.with_name("part-copy.parquet")
    shutil.copyfile(original, copy)

    report = ride("report", str(out))
    assert report.code == 0, report.tail()
    assert "Traceback" not in report.stderr
    assert "each row is counted once" in report.stderr
    assert f"n={IMAGES}" in report.stdout and f"n={2 * IMAGES}" not in report.stdout
    frame = read_results(out / "results")
    assert len(frame) == EXPECTED_ROWS
    pairs = frame.groupby(["attack_id", "defender_id"])
    assert (pairs.size() == IMAGES).all() and (pairs["index"].nunique() == IMAGES).all()

    labels = pq.read_table(copy).column("label").to_pylist()
    set_column(copy, "label", pa.array([labels[0] + 1, *labels[1:]], pa.int64()))
    assert_one_error_line(ride_here("report", str(out)), 1, str(out / "results"), "more than once")


def test_a_result_file_of_wrong_types_or_values_is_set_aside_and_redone(
    finished_run: Path, tmp_path: Path
) -> None:
    """A column rewritten as strings gave a traceback in ``ride report``, an accuracy of 1.7
    was reported as is, and ``ride run`` counted both tasks as done forever. Both files are
    now refused in one line by the report, set aside by the run and their tasks redone."""
    out = copy_run(finished_run, tmp_path / "run")
    strings, out_of_range = result_file(out, FGSM, MEDIAN, 0), result_file(out, NONE, NONE, 4)
    predictions = pq.read_table(strings).column("pred_clean").to_pylist()
    set_column(strings, "pred_clean", pa.array([f"class {p}" for p in predictions]))
    set_column(out_of_range, "recheck_correct", pa.array([1.7] * 4, pa.float64()))
    before = hashes_but(out, strings, out_of_range)

    line = assert_one_error_line(ride_here("report", str(out)), 1, "is unreadable", "ride run")
    assert str(strings) in line or str(out_of_range) in line

    ran = run(out)
    assert ran.code == 0, ran.tail()
    assert (
        f"{strings} is unreadable" in ran.stderr and f"{out_of_range} is unreadable" in ran.stderr
    )
    for path in (strings, out_of_range):
        assert path.with_name(f"_{path.name}.corrupt").exists()  # kept for inspection
    assert_complete(out, before)
    assert_same_rows(out, finished_run)
    report = ride("report", str(out))
    assert report.code == 0 and "Traceback" not in report.stderr, report.tail()


def poisoned_cache(finished_run: Path, target: Path, poison: str) -> Path:
    """A copy of the session's cache in which the finished run's classifier is poisoned
    (``nan``: every tensor NaN; ``shape``: one tensor of another shape), written with the
    cache's own code, so that its checksum matches, as whoever can write the cache can."""
    source = Path(environment()["RIDE_CACHE_DIR"])
    shutil.copytree(source, target)
    trained = torch.load(finished_run / "classifier.pt", weights_only=True)["state_dict"]
    cache = ResultCache(target)
    for entry in sorted((target / "tensors").glob("*.pt")):
        state = cache.load_tensors(entry.stem)
        if state is None or set(state) != set(trained):
            continue
        if not all(torch.equal(state[name], trained[name]) for name in state):
            continue
        if poison == "nan":
            state = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                     for k, v in state.items()}  # fmt: skip
        else:
            name = next(k for k, v in state.items() if v.ndim > 1)
            state[name] = state[name].flatten()
        cache.save_tensors(entry.stem, state)
        return target
    raise AssertionError(f"no cached classifier of the finished run in {source}")


def test_a_cached_classifier_of_nan_tensors_is_refused_and_trained_again(
    finished_run: Path, tmp_path: Path
) -> None:
    """All-NaN tensors gave 0.000 everywhere and exit 0. The entry is now refused (its
    checksum matches, so its values are checked too), the classifier trained again, and the
    run is the finished one's. (A tensor of the wrong shape, which gave a traceback on every
    later run: ``tests/storage/test_hostile_values.py``, one run less here.)"""
    cache = poisoned_cache(finished_run, tmp_path / "cache", "nan")
    out = tmp_path / "run"
    ran = run(out, env=environment(RIDE_CACHE_DIR=str(cache)))
    assert ran.code == 0, ran.tail()
    assert "Traceback" not in ran.stderr
    assert "cache entry refused" in ran.stderr and "holds NaN or infinite values" in ran.stderr
    info = json.loads((out / "classifier.json").read_text())
    expected = json.loads((finished_run / "classifier.json").read_text())
    assert info["test_accuracy"] == expected["test_accuracy"] > 0.5
    assert_complete(out, {})
    assert_same_rows(out, finished_run)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_weights_with_nan_or_infinite_values_are_refused_before_anything_is_written(
    finished_run: Path, tmp_path: Path, value: float
) -> None:
    payload = torch.load(finished_run / "classifier.pt", weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name].view(-1)[0] = value
    weights = tmp_path / "poisoned.pt"
    torch.save(payload, weights)
    out = tmp_path / "run"
    ran = run(out, "--weights", str(weights))
    assert_one_error_line(ran, 1, str(weights), "NaN or infinite", name)
    assert not out.exists()


def test_a_run_toml_with_a_bad_run_id_is_refused_in_one_line(
    finished_run: Path, tmp_path: Path
) -> None:
    """``run_id = 5`` planted in ``run.toml`` made the report leave out every row (exit 0,
    an empty leaderboard). Every command that reads it now refuses it in one line naming the
    file and the key, and changes nothing."""
    out = copy_run(finished_run, tmp_path / "run")
    toml = out / "run.toml"
    document = tomllib.loads(toml.read_text())
    document["run_id"] = 5
    toml.write_text(tomli_w.dumps(document))
    before, report = file_hashes(out / "results"), (out / "report.md").read_bytes()

    for command in (("report", str(out)), ("compact", str(out))):
        assert_one_error_line(ride_here(*command), 1, str(toml), "run_id")
    assert_one_error_line(run(out), 1, str(toml), "run_id")
    assert file_hashes(out / "results") == before
    assert (out / "report.md").read_bytes() == report
