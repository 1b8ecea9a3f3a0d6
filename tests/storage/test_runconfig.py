"""run.toml: written once, and a run directory refuses another run's config."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from storage.runconfig import RunConfigMismatch, check_same_run, claim_run_dir

IDENTITY = frozenset({"eps", "defenders"})


def test_claim_writes_config_version_and_start(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    claim_run_dir(
        path, {"eps": 0.1, "defenders": ["ride"], "workers": 2, "weights": None}, IDENTITY, "0.1.0"
    )
    document = tomllib.loads(path.read_text())
    assert document["code_version"] == "0.1.0" and "started" in document
    assert document["config"] == {"eps": 0.1, "defenders": ["ride"], "workers": 2}


def test_same_run_with_other_execution_settings_resumes(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    claim_run_dir(path, {"eps": 0.1, "defenders": ["ride"], "workers": 2}, IDENTITY, "0.1.0")
    before = path.read_text()
    claim_run_dir(path, {"eps": 0.1, "defenders": ["ride"], "workers": 8}, IDENTITY, "0.1.0")
    assert path.read_text() == before


def test_another_run_is_refused_naming_the_difference(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    claim_run_dir(path, {"eps": 0.1, "defenders": ["ride"]}, IDENTITY, "0.1.0")
    with pytest.raises(RunConfigMismatch, match="differs in: eps"):
        check_same_run(path, {"eps": 0.05, "defenders": ["ride"]}, IDENTITY)
    path.write_text("not toml [")
    with pytest.raises(RunConfigMismatch, match="unreadable"):
        check_same_run(path, {"eps": 0.1, "defenders": ["ride"]}, IDENTITY)
