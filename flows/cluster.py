"""What a run asks of a Dask cluster, and a fail-fast check that an existing one provides it.

A task annotated with a resource that no worker declares is never scheduled: it stays
pending forever and the run hangs without a word. A run with a ``scheduler`` therefore
checks (``flows.checks.check_run``), before any work starts, that the scheduler answers, has
workers, and that at least one worker offers every resource the run's tasks will ask for.

The check asks the scheduler for its identity over one connection, with a hard deadline, in
a thread of its own: something else listening at the address (a web server) never answers
in Dask's protocol, and a ``distributed.Client`` would wait for it for minutes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from distributed.comm import connect

from pipeline.config import RunConfig
from pipeline.preflight import PreflightError

SCHEDULER_TIMEOUT = 5.0
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
    identity = scheduler_identity(address, timeout)
    workers: dict[str, Any] = dict(identity.get("workers") or {})
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


async def _ask_identity(address: str, timeout: float) -> object:
    """The scheduler's answer to ``identity`` (its workers with their resources)."""
    comm = await connect(address, timeout=timeout)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def scheduler_identity(address: str, timeout: float) -> Mapping[str, Any]:
    """What the Dask scheduler at ``address`` says of itself, within ``timeout`` seconds.

    Raises :class:`ClusterError` (one line) when nothing answers in time (nothing listens,
    or something that does not speak Dask's protocol), when the address cannot be parsed, or
    when what answers is not a scheduler. The exchange runs in a daemon thread with its own
    event loop, so a peer that never answers cannot hold this process, or its exit, past the
    deadline.
    """
    answer: list[object] = []

    def ask() -> None:
        try:
            answer.append(asyncio.run(asyncio.wait_for(_ask_identity(address, timeout), timeout)))
        except BaseException as error:  # handed to the caller's thread
            answer.append(error)

    thread = threading.Thread(target=ask, name="ride-scheduler-check", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    got = answer[0] if answer else TimeoutError()
    if isinstance(got, ValueError):  # an address distributed cannot parse
        raise ClusterError(
            f"scheduler {address}: not a Dask scheduler address ({got})", "scheduler"
        )
    if isinstance(got, BaseException):
        raise ClusterError(
            f"scheduler {address}: no Dask scheduler answered within {timeout:g} s", "scheduler"
        )
    if not isinstance(got, Mapping) or got.get("type") != "Scheduler":
        raise ClusterError(
            f"scheduler {address}: what answers there is not a Dask scheduler", "scheduler"
        )
    return got
