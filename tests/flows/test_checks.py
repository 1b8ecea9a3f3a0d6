"""The deployments' entry flows run the command line's checks before any task: a bad dataset
folder, or a cluster whose workers lack the GPU resource, fails the flow run at once with the
message ``ride run`` / ``ride train`` prints (there with the parameter spelled as its option)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from distributed import LocalCluster

from flows.cli import cli_text, main
from flows.cluster import ClusterError
from flows.deployments import evaluate_deployment, train_deployment
from pipeline.preflight import PreflightError


def flow_runs(flow_name: str) -> list[Any]:
    """The runs of ``flow_name``, the latest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
                sort=FlowRunSort.START_TIME_DESC,
            )
        )


def task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        return list(
            client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
        )


def deployment_error(flow: Any, out: Path, **parameters: Any) -> PreflightError:
    """Run the entry flow; it must fail with a PreflightError before any task or subflow."""
    evaluations = len(flow_runs("ride-evaluate"))
    with pytest.raises(PreflightError) as caught:
        flow(out=str(out), **parameters)
    latest = flow_runs(flow.name)[0]
    assert latest.state is not None and latest.state.name == "Failed"
    assert task_runs(latest.id) == []
    assert len(flow_runs("ride-evaluate")) == evaluations  # no evaluation subflow started
    assert not out.exists()
    assert len(str(caught.value).splitlines()) == 1
    return caught.value


def cli_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 1
    return capsys.readouterr().err.strip()


@pytest.mark.slow
def test_a_bad_dataset_folder_fails_the_deployment_as_it_fails_the_cli(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, nope = tmp_path / "run", tmp_path / "nope"
    for settings, args in [
        ({"dataset": "mnist"}, ["--dataset", "mnist"]),
        ({"dataset": "mnist", "data_dir": str(nope)}, ["--dataset", "mnist", "--data-dir", nope]),
    ]:  # fmt: skip
        error = deployment_error(evaluate_deployment, out, settings={**settings, "limit": 2})
        assert str(error).startswith(("data_dir is required", "MNIST directory not found"))
        err = cli_error(capsys, "run", "--out", str(out), "--limit", "2", *map(str, args))
        assert err == f"ride: error: {cli_text(str(error))}"
    assert err.startswith("ride: error: MNIST directory not found")
    assert cli_text("data_dir is required for dataset mnist").startswith("--data-dir is required")

    error = deployment_error(train_deployment, out, settings={"dataset": "mnist"})
    assert str(error) == "data_dir is required for dataset mnist"
    err = cli_error(capsys, "train", "--out", str(out), "--dataset", "mnist")
    assert err == "ride: error: --data-dir is required for dataset mnist"


@pytest.mark.slow
def test_workers_without_the_gpu_resource_fail_the_deployment_as_they_fail_the_cli(
    prefect_server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with LocalCluster(
        n_workers=1, processes=False, protocol="tcp", dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        settings = {"device": "cuda", "scheduler": address, "limit": 2}
        error = deployment_error(evaluate_deployment, out, settings=settings)
        err = cli_error(
            capsys, "run", "--out", str(out), "--limit", "2", "--device", "cuda",
            "--scheduler", address,
        )  # fmt: skip
    assert isinstance(error, ClusterError)
    assert str(error).startswith(f"no worker of {address} offers resource GPU=1;")
    assert err == f"ride: error: {error}"
