"""run.toml records what started a run: the `ride run` command line, or the deployment."""

from __future__ import annotations

import tomllib
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.sampling import claim_run, command_line, deployment_command
from storage.layout import RunLayout


def test_command_line_is_shell_quoted_and_names_the_ride_script() -> None:
    argv = ["/venv/bin/ride", "run", "--out", "runs/my run", "--limit", "20"]
    assert command_line(argv) == "ride run --out 'runs/my run' --limit 20"
    assert command_line(["python", "-m", "flows.cli", "run"]) == "python -m flows.cli run"


def test_claim_records_the_command_and_a_resume_keeps_it(tmp_path: Path) -> None:
    layout, cfg = RunLayout(tmp_path), RunConfig.from_mapping({"limit": 4})
    claim_run(layout, cfg, "ride run --limit 4")
    claim_run(layout, cfg, "ride run --limit 4 --workers 1")
    document = tomllib.loads(layout.run_toml.read_text())
    assert document["command"] == "ride run --limit 4"
    # The config, hence the run's identity, is what a run without a command records.
    plain = RunLayout(tmp_path / "plain")
    plain.root.mkdir()
    claim_run(plain, cfg)
    assert "command" not in tomllib.loads(plain.run_toml.read_text())
    assert document["config"] == tomllib.loads(plain.run_toml.read_text())["config"]
    assert "command" not in document["config"]


def test_a_deployment_run_and_a_plain_flow_call() -> None:
    assert deployment_command(None) is None
    assert deployment_command("whitebox") == "deployment ride-evaluate-deployment/whitebox"
