"""Entry points of the deployments in ``prefect.yaml``.

A deployed run executes on a Prefect worker that already talks to a real API server, so the
entry flow only builds the Dask task runner from the run's settings and calls the
evaluation flow with it (a subflow run).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.evaluate import evaluate, make_task_runner
from tasks.config import RunConfig


@flow(name="ride-evaluate-deployment")
def evaluate_deployment(out: str, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run :func:`flows.evaluate.evaluate` on a local Dask cluster or ``settings['scheduler']``.

    ``settings`` takes the same keys as a TOML preset (``ride_iters``, ``attacks``...).
    """
    settings = dict(settings or {})
    runner = make_task_runner(RunConfig.from_mapping(settings))
    summary: dict[str, Any] = evaluate.with_options(task_runner=runner)(out=out, settings=settings)
    return summary
