"""A run grows: a larger ``limit`` on its folder keeps its id and its task sizes, records
the growth, and is refused in one line when it would shrink or cut a stored task in two."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.config import RunConfig
from pipeline.growth import Growth, adopt_recorded, growth_problem
from pipeline.plan import clean_rows, task_sizes
from pipeline.run import Run
from pipeline.sampling import claim_run
from storage.layout import RunLayout
from storage.runconfig import RunConfigMismatch, read_run_document

SETTINGS = {"limit": 8, "attacks": ["none", "fgsm"], "defenders": ["none", "median"]}


def config(**changes: object) -> RunConfig:
    return RunConfig.from_mapping({**SETTINGS, **changes})


def run_of(cfg: RunConfig, held: int) -> Run:
    """The run of ``cfg`` holding ``held`` images (its folder is never touched here)."""
    return Run.of(RunLayout(Path("unused")), cfg, held)


def test_an_ungrown_run_keeps_the_id_it_always_had() -> None:
    # Pinned before first_limit existed: the demo's defaults and the MNIST page's presets.
    assert RunConfig().run_id == "digits-9ba919d9fd"
    assert "first_limit" not in RunConfig().run_record()
    configs = Path(__file__).parents[2] / "configs"
    for preset, run_id in (("mnist-bpda-k2000", "mnist-b25e851e6f"),
                           ("mnist-strong-k500", "mnist-e2f5d0baf9"),
                           ("mnist-ride-graybox", "mnist-98762b9102")):  # fmt: skip
        settings = tomllib.loads((configs / f"{preset}.toml").read_text())
        assert RunConfig.from_mapping(settings).run_id == run_id


def test_a_grown_run_has_the_id_and_task_sizes_of_its_first_extent() -> None:
    first, grown = config(limit=8), config(limit=64, first_limit=8)
    assert grown.run_id == first.run_id != config(limit=64).run_id
    sizes = task_sizes(run_of(grown, 64))
    assert sizes == task_sizes(run_of(first, 8)) != task_sizes(run_of(config(limit=64), 64))
    assert clean_rows(run_of(grown, 64)) == clean_rows(run_of(first, 8)) == 8


def test_first_limit_must_lie_within_the_limit() -> None:
    with pytest.raises(ValueError, match="first_limit"):
        config(limit=8, first_limit=16)


def test_claiming_a_larger_limit_grows_the_run_and_records_it(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    claim_run(layout, config(limit=8), "ride run --limit 8")
    claimed, notes = claim_run(layout, config(limit=16), "ride run --limit 16")
    assert claimed.first_limit == 8 and claimed.run_id == config(limit=8).run_id
    assert any("grows from limit 8 to 16" in note for note in notes)
    document = read_run_document(layout.run_toml)
    assert document["run_id"] == config(limit=8).run_id
    assert document["command"] == "ride run --limit 8"  # the first command stays
    assert document["config"]["limit"] == 16 and document["config"]["first_limit"] == 8
    assert [(g["before"], g["after"]) for g in document["growth"]] == [(8, 16)]
    # A resume at 16 adopts the recorded first extent; growing again keeps the first one.
    again, notes = claim_run(layout, config(limit=16))
    assert again == claimed and notes == []
    twice, _ = claim_run(layout, config(limit=32))
    assert twice.first_limit == 8 and twice.run_id == claimed.run_id
    growth = tomllib.loads(layout.run_toml.read_text())["growth"]
    assert [(g["before"], g["after"]) for g in growth] == [(8, 16), (16, 32)]


def test_a_run_never_shrinks_and_other_settings_still_must_match(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    claim_run(layout, config(limit=16), None)
    with pytest.raises(RunConfigMismatch, match="grows but never shrinks: give --limit 16"):
        adopt_recorded(config(limit=8), layout)
    with pytest.raises(RunConfigMismatch, match="differs in: seed"):
        adopt_recorded(config(limit=32, seed=1), layout)
    assert adopt_recorded(config(limit=32), layout)[1] == Growth(16, 32)
    assert adopt_recorded(config(limit=16), layout) == (config(limit=16), None)


def test_growth_needs_whole_tasks() -> None:
    cfg = replace(config(limit=64, chunk_size=8), first_limit=12)
    problem = growth_problem(run_of(cfg, 12))
    assert problem is not None
    assert "take 8 images each and 12 is not a multiple of 8" in problem
    assert growth_problem(run_of(cfg, 16)) is None
    # A run started at a power of two images always can grow (auto sizes are powers of two).
    assert growth_problem(run_of(config(limit=1024, first_limit=128), 128)) is None


def test_a_restored_run_counts_its_restored_rows_as_held(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    claim_run(layout, config(limit=12, chunk_size=8), None)
    layout.restored.write_text('{"rows": 12}')  # kept results of 12 images, no images.zarr
    with pytest.raises(RunConfigMismatch, match="12 is not a multiple of 8"):
        claim_run(layout, config(limit=24, chunk_size=8), None)
