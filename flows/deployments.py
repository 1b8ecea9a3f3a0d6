"""Entry points of the deployments in ``prefect.yaml``.

A deployed run executes on a Prefect worker that already talks to a real API server, so the
entry flow only resolves the run's settings (a preset file, overridden by ``settings``),
builds the Dask task runner from them and calls the evaluation flow with it (a subflow run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.evaluate import evaluate, make_task_runner
from tasks.config import RunConfig, load_preset


@flow(name="ride-evaluate-deployment")
def evaluate_deployment(
    out: str, settings: dict[str, Any] | None = None, preset: str | None = None
) -> dict[str, Any]:
    """Run :func:`flows.evaluate.evaluate` on a local Dask cluster or ``settings['scheduler']``.

    ``preset`` is a TOML file of ``configs/`` (relative to the worker's working directory);
    ``settings`` takes the same keys (``ride_iters``, ``attacks``...) and overrides it.
    """
    resolved = {**(load_preset(Path(preset)) if preset else {}), **(settings or {})}
    runner = make_task_runner(RunConfig.from_mapping(resolved))
    summary: dict[str, Any] = evaluate.with_options(task_runner=runner)(out=out, settings=resolved)
    return summary
