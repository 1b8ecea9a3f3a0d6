"""A run's settings split into what identifies its results (the spec) and how it executes,
and the run as its tasks receive it: built once, small, picklable."""

from __future__ import annotations

import pickle
from dataclasses import fields
from pathlib import Path

from pipeline.config import V020_KEYS, RunConfig, option_fields
from pipeline.plan import Task, plan
from pipeline.run import Run
from pipeline.spec import ADDED_DEFAULTS, Execution, RunSpec
from storage.layout import RunLayout
from storage.results import result_key

SETTINGS = {
    "limit": 40,
    "chunk_size": 8,
    "attacks": ["none", "pgd", "bpda"],
    "defenders": ["none", "median", "ride"],
    "workers": 3,
    "cache": False,
}


def test_every_option_is_either_the_spec_or_the_execution() -> None:
    spec = {f.name for f in fields(RunSpec)} - {"settings"}
    execution = {f.name for f in fields(Execution)}
    assert spec | execution == {f.name for f in option_fields()} and not spec & execution
    assert execution == RunConfig.execution_keys()
    cfg = RunConfig.from_mapping(SETTINGS)
    assert spec | set(dict(cfg.settings)) == cfg.identity()
    assert cfg.execution == Execution(3, 1, None, None, False, None, True, False)


def test_the_run_id_is_the_spec_s_and_ignores_the_execution() -> None:
    cfg = RunConfig.from_mapping(SETTINGS)
    assert cfg.run_id == cfg.spec.run_id
    identity = {k: v for k, v in cfg.run_record().items() if k in cfg.identity()}
    assert cfg.spec.record() == identity
    other = RunConfig.from_mapping({**SETTINGS, "workers": 1, "cache": True, "data_dir": "d"})
    assert other.spec == cfg.spec and other.run_id == cfg.run_id


def test_options_added_after_0_2_0_default_as_the_run_config_does() -> None:
    """A spec option missing from ``V020_KEYS`` needs its default in ``ADDED_DEFAULTS``, else
    it would enter the id of every run made before it and those runs could not resume."""
    default = RunConfig()
    later = {f.name for f in fields(RunSpec)} - {"settings"} - V020_KEYS
    assert later == set(ADDED_DEFAULTS)
    assert {key: getattr(default, key) for key in later} == dict(ADDED_DEFAULTS)
    assert set(default.spec.record()) <= V020_KEYS


def test_a_run_resolves_its_attacks_and_defenders_once_and_pickles_small() -> None:
    cfg = RunConfig.from_mapping(SETTINGS)
    run = Run.of(RunLayout(Path("runs/x")), cfg, 40)
    assert [a.id for a in run.attacks] == [a.id for a in cfg.attack_configs()]
    assert [d.id for d in run.defenders] == [d.id for d in cfg.defender_configs()]
    assert run.classifier_path == Path("runs/x/classifier.pt")
    assert (run.classifier, run.run_id, run.spec) == (cfg.classifier, cfg.run_id, cfg.spec)
    shipped = pickle.dumps(run)  # what Dask sends a worker with every task
    assert pickle.loads(shipped) == run and len(shipped) < 20_000
    tasks = plan(run)
    assert all(pickle.loads(pickle.dumps(task)) == task for task in tasks)


def test_a_task_names_its_rows_and_the_results_it_stores() -> None:
    run = Run.of(RunLayout(Path("runs/x")), RunConfig.from_mapping(SETTINGS), 40)
    pgd, (none, median, ride) = run.attacks[1], run.defenders
    attack = Task.attack_chunk(pgd, 8, 16, (none, median))
    defence = Task.defence_chunk(pgd, ride, 8, 16, attack)
    assert (attack.kind, defence.kind, defence.defender) == ("attack", "defence", ride)
    assert attack.label == f"{pgd.id} rows 8-16"
    assert defence.label == f"{pgd.id} x {ride.id} rows 8-16"
    assert [d.id for _, d, _, _ in attack.results()] == [none.id, median.id]
    assert defence.result_key(ride) == result_key(pgd.id, ride.id, 8, 16)
    assert attack.priority > defence.priority > 0
