"""What a run asks of a Dask cluster, and a fail-fast check that an existing one provides it.

A task annotated with a resource that no worker declares is never scheduled: it stays
pending forever and the run hangs without a word. A run with a ``scheduler`` therefore
checks (``flows.checks.check_run``), before any work starts, that the scheduler answers, has
workers, and that at least one worker offers every resource the run's tasks will ask for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from distributed import Client

from pipeline.config import RunConfig
from pipeline.preflight import PreflightError

SCHEDULER_TIMEOUT = 10.0
"""Seconds the check waits for the scheduler to answer before giving up."""


class ClusterError(PreflightError):
    """The Dask cluster at the run's ``scheduler`` cannot run this run's tasks."""


def required_resources(cfg: RunConfig) -> dict[str, float]:
    """The Dask worker resources every attack and defence task of ``cfg`` asks for."""
    return {"GPU": 1} if cfg.device == "cuda" else {}


def _format(resources: Mapping[str, float]) -> str:
    """``{"GPU": 1}`` -> ``GPU=1`` (the spelling of ``dask worker --resources``)."""
    return ",".join(f"{name}={amount:g}" for name, amount in resources.items())


def _offers(worker: Mapping[str, Any], resources: Mapping[str, float]) -> bool:
    """True when one worker declares at least the amount of every resource asked for."""
    offered = worker.get("resources") or {}
    return all(offered.get(name, 0) >= amount for name, amount in resources.items())


def check_cluster(
    address: str, resources: Mapping[str, float], timeout: float | None = None
) -> int:
    """Check that the scheduler at ``address`` can run tasks asking for ``resources``.

    Returns the number of workers. Raises :class:`ClusterError` (one line, naming the
    address and what to do) when no scheduler answers within ``timeout`` seconds, when it
    has no workers, or when no single worker offers every resource in ``resources``.
    ``timeout`` defaults to ``SCHEDULER_TIMEOUT``.
    """
    timeout = SCHEDULER_TIMEOUT if timeout is None else timeout
    try:
        client = Client(address, timeout=timeout, set_as_default=False)
    except (OSError, TimeoutError) as error:
        raise ClusterError(
            f"scheduler {address}: no Dask scheduler answered within {timeout:g} s", "scheduler"
        ) from error
    except ValueError as error:  # an address distributed cannot parse
        raise ClusterError(
            f"scheduler {address}: not a Dask scheduler address ({error})", "scheduler"
        ) from error
    try:
        workers: dict[str, Any] = dict(client.scheduler_info(n_workers=-1)["workers"])
    finally:
        client.close()
    if not workers:
        raise ClusterError(
            f"scheduler {address}: the scheduler has no workers; start some with "
            f"`dask worker {address}`",
            "scheduler",
        )
    if resources and not any(_offers(worker, resources) for worker in workers.values()):
        wanted = _format(resources)
        raise ClusterError(
            f"no worker of {address} offers resource {wanted}; start workers with "
            f"`dask worker {address} --resources {wanted}`; a task asking for it would wait "
            "forever"
        )
    return len(workers)
