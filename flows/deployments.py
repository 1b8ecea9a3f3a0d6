"""Entry points of the deployments in ``prefect.yaml``.

A deployed run executes on a Prefect worker that already talks to a real API server, so an
entry flow only resolves the settings (a preset file, overridden by ``settings``), runs the
same checks as the command line before any task (:mod:`flows.checks`: a bad dataset folder or
a cluster without the GPU resource fails the flow run at once, with the message ``ride run``
prints), and calls the flow (a subflow run); an evaluation gets its Dask task runner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import deployment
from prefect.states import Failed, State

from flows.checks import check_run, check_training
from flows.evaluate import evaluate, make_task_runner
from flows.train import train
from pipeline.config import load_preset
from pipeline.sampling import deployment_command


@flow(name="ride-evaluate-deployment")
def evaluate_deployment(
    out: str, settings: dict[str, Any] | None = None, preset: str | None = None
) -> dict[str, Any] | State[Any]:
    """Run :func:`flows.evaluate.evaluate` on a local Dask cluster or ``settings['scheduler']``.

    ``preset`` is a TOML file of ``configs/`` (relative to the worker's working directory);
    ``settings`` takes the same keys (``ride_iters``, ``attacks``...) and overrides it.
    A run stopped by a write that failed (disk full) ends the flow run Failed, with that line.
    """
    resolved = {**(load_preset(Path(preset)) if preset else {}), **(settings or {})}
    cfg = check_run(out, resolved)
    runner = make_task_runner(cfg)
    command = deployment_command(deployment.name)  # None when the flow is called directly
    summary: dict[str, Any] = evaluate.with_options(task_runner=runner)(
        out=out, settings=resolved, command=command
    )
    if summary.get("unwritable"):  # the run stopped on a write that failed: a failed run
        return Failed(message=f"{summary['unwritable']}; free space and run it again")
    return summary


@flow(name="ride-train-deployment")
def train_deployment(out: str, settings: dict[str, Any]) -> dict[str, Any]:
    """Run :func:`flows.train.train` after the checks of ``ride train``; ``settings`` takes
    the ``ride train`` option names (``dataset``, ``data_dir``, ``epochs``, ``device``...)."""
    check_training(out, settings)
    summary: dict[str, Any] = train(out=out, settings=settings)
    return summary
