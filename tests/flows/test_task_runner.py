"""The task runner: an existing scheduler, or a local cluster tuned for RIDE's workers."""

from __future__ import annotations

import os
import signal

import dask
import pytest
from distributed import Client
from prefect_dask import DaskTaskRunner

from flows.evaluate import (
    WORKER_MALLOC_MMAP_THRESHOLD,
    WORKER_MALLOC_TRIM_THRESHOLD,
    local_cluster,
    make_task_runner,
)
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


def worker_settings() -> tuple[bool, str | None, str | None]:
    return (
        dask.config.get("distributed.worker.profile.enabled"),
        os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        os.environ.get("MALLOC_MMAP_THRESHOLD_"),
    )


def worker_signal_handlers() -> tuple[object, object]:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


@pytest.mark.slow
def test_local_workers_are_tuned_for_ride_and_leave_terminal_signals_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No profiler and no malloc trimming in the workers (they slowed RIDE's fits), and a
    Ctrl-C or SIGTERM to ride's process group does not reach into them (they printed
    tracebacks): ride stops them through their nannies. The caller keeps its own settings."""
    # What an in-process Dask worker leaves in the environment: it must not win.
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with (
        local_cluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        settings = list(client.run(worker_settings).values())
        handlers = list(client.run(worker_signal_handlers).values())
    trim, mmap = str(WORKER_MALLOC_TRIM_THRESHOLD), str(WORKER_MALLOC_MMAP_THRESHOLD)
    assert settings == [(False, trim, mmap)]  # large blocks stay in the heap too
    assert handlers == [(signal.SIG_IGN, signal.SIG_IGN)]
    assert dask.config.get("distributed.worker.profile.enabled")  # the caller's config is untouched
    assert dask.config.get("distributed.worker.preload") == []
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # and so is its environment
    assert "MALLOC_MMAP_THRESHOLD_" not in os.environ
    assert signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # and its own handlers
