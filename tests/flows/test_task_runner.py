"""The task runner: an existing scheduler, or a local cluster tuned for RIDE's workers."""

from __future__ import annotations

import os
import signal

import dask
import pytest
from distributed import Client
from prefect_dask import DaskTaskRunner

from flows.evaluate import WORKER_MALLOC_TRIM_THRESHOLD, local_cluster, make_task_runner
from pipeline.config import RunConfig


def test_scheduler_address_means_no_local_cluster() -> None:
    runner = make_task_runner(RunConfig(scheduler="tcp://10.1.2.3:8786"))
    assert isinstance(runner, DaskTaskRunner) and runner.address == "tcp://10.1.2.3:8786"


def test_local_cluster_settings_follow_the_config() -> None:
    runner = make_task_runner(RunConfig(workers=3))
    assert isinstance(runner, DaskTaskRunner)
    assert runner.cluster_kwargs["n_workers"] == 3
    assert runner.cluster_kwargs["threads_per_worker"] == 1
    assert "resources" not in runner.cluster_kwargs


def worker_settings() -> tuple[bool, str | None]:
    return dask.config.get("distributed.worker.profile.enabled"), os.environ.get(
        "MALLOC_TRIM_THRESHOLD_"
    )


def test_local_workers_run_without_profiler_and_malloc_trimming(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What an in-process Dask worker leaves in the environment: it must not win.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with (
        local_cluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        settings = list(client.run(worker_settings).values())
    assert settings == [(False, str(WORKER_MALLOC_TRIM_THRESHOLD))]
    assert dask.config.get("distributed.worker.profile.enabled")  # the caller's config is untouched
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # and so is its environment


def worker_signal_handlers() -> tuple[object, object]:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def test_local_workers_leave_terminal_signals_to_ride() -> None:
    """A Ctrl-C or SIGTERM to ride's process group must not reach into the workers (they
    printed tracebacks): ride stops them through their nannies."""
    with (
        local_cluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        handlers = list(client.run(worker_signal_handlers).values())
    assert handlers == [(signal.SIG_IGN, signal.SIG_IGN)]
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # this process keeps its own
    assert dask.config.get("distributed.worker.preload") == []  # and its config
