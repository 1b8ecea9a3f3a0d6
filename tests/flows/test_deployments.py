"""prefect.yaml stays true to the code: entry points import, parameters match, settings parse."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest
import yaml
from prefect.states import State

from pipeline.config import RunConfig, load_preset
from pipeline.train import TrainSettings

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_points_at_a_flow_with_matching_parameters() -> None:
    document = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = document["deployments"]
    assert {d["name"] for d in deployments} >= {
        "digits-demo-nightly",
        "evaluate",
        "whitebox",
        "train",
    }
    assert any(d.get("schedules") for d in deployments)
    for deployment in deployments:
        path, name = deployment["entrypoint"].split(":")
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
        signature = inspect.signature(flow.fn)
        assert set(deployment["parameters"]) <= set(signature.parameters)
        parameters = deployment["parameters"]
        preset = load_preset(ROOT / parameters["preset"]) if "preset" in parameters else {}
        settings = {**preset, **parameters["settings"]}
        if flow.name == "ride-train-deployment":
            TrainSettings.from_mapping(settings)  # valid settings
        else:
            RunConfig.from_mapping(settings)
        assert deployment["work_pool"]["name"] == "ride-process"


def test_a_run_stopped_by_a_failed_write_fails_the_deployment_flow_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Not Completed with a summary nobody reads: Failed, with the line the CLI prints."""
    import flows.deployments as deployments

    line = f"cannot write {tmp_path}/results/x.parquet: No space left on device"

    class StoppedFlow:
        def with_options(self, **_: object) -> StoppedFlow:
            return self

        def __call__(self, **_: object) -> dict[str, object]:
            return {"unwritable": line}

    monkeypatch.setattr(deployments, "evaluate", StoppedFlow())
    state = deployments.evaluate_deployment.fn(out=str(tmp_path / "run"), settings={"limit": 2})
    assert isinstance(state, State) and state.is_failed()
    assert state.message == f"{line}; free space and run it again"
