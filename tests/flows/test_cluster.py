"""Cluster scale and fault tolerance.

- ``--scheduler``: the fail-fast check of the cluster (reachable, has workers, offers the
  GPU resource a ``--device cuda`` run asks for), then runs on a real external cluster of
  ``dask scheduler`` / ``dask worker`` processes, one of them killed in the middle of a task.
- A local run killed (SIGKILL) or interrupted (Ctrl-C) and resumed by the same command:
  storage alone says what is done, nothing stored is rewritten, nothing is left half-written.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

import dask
import numpy as np
import pandas as pd
import pytest
import zarr
from distributed import Client, LocalCluster, Worker
from prefect_dask.task_runners import PrefectDaskFuture

from flows.cli import build_parser, main, preflight, resolve_settings
from flows.cluster import ClusterError, check_cluster, required_resources
from flows.evaluate import WORKER_MALLOC_MMAP_THRESHOLD, WORKER_MALLOC_TRIM_THRESHOLD, _failure
from pipeline.config import RunConfig
from ride.classifiers import build_classifier, save_classifier
from storage.images import ImageStore
from storage.layout import RunLayout
from storage.lock import check_unlocked

DASK = Path(sys.executable).parent / "dask"
REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------- helpers


def free_port() -> int:
    """A TCP port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_config(args: list[str]) -> RunConfig:
    """The config ``ride run ARGS`` resolves to."""
    return RunConfig.from_mapping(resolve_settings(build_parser().parse_args(["run", *args])))


def expected_keys(cfg: RunConfig) -> set[tuple[str, str, int]]:
    """Every (attack id, defender id, image index) a complete run of ``cfg`` stores."""
    assert cfg.limit is not None
    return {
        (attack.id, defender.id, index)
        for attack in cfg.attack_configs()
        for defender in cfg.defender_configs()
        for index in range(cfg.limit)
    }


def check_rows(results: Path, cfg: RunConfig) -> pd.DataFrame:
    """Every expected row exactly once, all ``ok``; returns the rows."""
    frame = pd.read_parquet(results)
    keys = list(frame[["attack_id", "defender_id", "index"]].itertuples(index=False, name=None))
    assert len(keys) == len(set(keys)), "a row is stored twice"
    assert set(keys) == expected_keys(cfg)
    assert set(frame["status"]) == {"ok"}, frame.loc[frame.status != "ok", "error"].tolist()
    return frame


def worker_pids(frame: pd.DataFrame) -> set[int]:
    """The process ids in the ``worker`` column (``host:pid``)."""
    return {int(worker.rsplit(":", 1)[1]) for worker in frame["worker"]}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Classifier weights, so no run spends time training (accuracy does not matter here)."""
    path = tmp_path_factory.mktemp("weights") / "mnist-cnn.pt"
    save_classifier(build_classifier("mnist-cnn"), path, "mnist-cnn")
    return path


def tail(log: Path, lines: int = 30) -> str:
    """The last lines a process started by :func:`start` wrote to stderr."""
    return "\n".join(log.with_suffix(".err").read_text(errors="replace").splitlines()[-lines:])


def stop_group(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    """End a process started with ``start_new_session=True`` and everything it started:
    SIGTERM to its process group, SIGKILL to whatever of the group is left ``timeout`` s on."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=timeout)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=timeout)


def start(
    stack: ExitStack, args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``args`` in its own session, stdout to ``LOG.out`` and stderr to ``LOG.err``;
    it and everything it started are stopped when ``stack`` closes."""
    with log.with_suffix(".out").open("wb") as out, log.with_suffix(".err").open("wb") as err:
        process = subprocess.Popen(
            args, stdout=out, stderr=err, env=env, cwd=REPO, start_new_session=True
        )
    stack.callback(stop_group, process)
    return process


def finish(process: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> int:
    """Wait for ``process`` (started by :func:`start`); fail with its stderr when too slow."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{log.name} still running after {timeout} s:\n{tail(log)}")


def wait_for(condition: object, timeout: float, what: str, poll: float = 0.05) -> None:
    """Poll ``condition()`` until true; fail naming ``what`` after ``timeout`` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


def result_files(out: Path) -> list[Path]:
    return sorted((out / "results").glob("[!.]*.parquet"))


# ---------------------------------------------------------------------------- unit tests


def test_required_resources_follow_the_device() -> None:
    assert required_resources(RunConfig(device="cuda")) == {"GPU": 1}
    assert required_resources(RunConfig(device="cpu")) == {}


@pytest.mark.slow
def test_unreachable_scheduler_fails_within_the_timeout() -> None:
    address = f"tcp://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(ClusterError) as error:
        check_cluster(address, {}, timeout=1)
    assert time.monotonic() - began < 5
    assert str(error.value) == f"scheduler {address}: no Dask scheduler answered within 1 s"


def test_scheduler_without_workers_is_refused() -> None:
    with (
        LocalCluster(n_workers=0, processes=False, dashboard_address=":0") as cluster,
        pytest.raises(ClusterError, match="the scheduler has no workers"),
    ):
        check_cluster(cluster.scheduler_address, {}, timeout=5)


def test_workers_without_the_gpu_resource_are_refused() -> None:
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cluster:
        address = cluster.scheduler_address
        assert check_cluster(address, {}, timeout=5) == 1
        with pytest.raises(ClusterError) as error:
            check_cluster(address, {"GPU": 1}, timeout=5)
    assert str(error.value) == (
        f"no worker of {address} offers resource GPU=1; start workers with "
        f"`dask worker {address} --resources GPU=1`; a task asking for it would wait forever"
    )


def test_gpu_workers_pass_and_no_local_cuda_is_needed(tmp_path: Path) -> None:
    with LocalCluster(
        n_workers=2, processes=False, dashboard_address=":0", resources={"GPU": 1}
    ) as cluster:
        assert check_cluster(cluster.scheduler_address, {"GPU": 1}, timeout=5) == 2
        # No CUDA here: with --scheduler, only the cluster's workers must offer GPUs.
        preflight(tmp_path / "run", {"device": "cuda", "scheduler": cluster.scheduler_address})
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_ride_run_with_an_unreachable_scheduler_fails_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.cluster

    monkeypatch.setattr(flows.cluster, "SCHEDULER_TIMEOUT", 2.0)  # 10 s in real use
    out = tmp_path / "run"
    address = f"tcp://127.0.0.1:{free_port()}"
    code = main(["run", "--out", str(out), "--limit", "2", "--scheduler", address])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == f"ride: error: --scheduler {address}: no Dask scheduler answered within 2 s"
    assert not out.exists()


def test_ride_run_cuda_on_workers_without_gpus_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    with LocalCluster(
        n_workers=1, processes=False, protocol="tcp", dashboard_address=":0"
    ) as cluster:
        address = cluster.scheduler_address
        began = time.monotonic()
        code = main(["run", "--out", str(out), "--device", "cuda", "--scheduler", address])
        seconds = time.monotonic() - began
    err = capsys.readouterr().err.strip()
    assert code == 1 and seconds < 10
    assert err.startswith(f"ride: error: no worker of {address} offers resource GPU=1;")
    assert len(err.splitlines()) == 1
    assert not out.exists()


# ---------------------------------------------------------------------------- external cluster


@dataclass
class ExternalCluster:
    """``dask scheduler`` and ``dask worker`` processes started by a test."""

    address: str
    workers: list[subprocess.Popen[bytes]]  # the `dask worker` commands (process group leaders)
    pids: dict[int, int]  # pid of each worker process -> its `dask worker` command's pid


def worker_env() -> dict[str, str]:
    """The environment of external workers: this session's Prefect API, tuned like the local
    cluster's workers (see ``flows.evaluate.local_cluster``)."""
    assert os.environ.get("PREFECT_API_URL"), "start the prefect_server fixture first"
    return {
        **os.environ,
        "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False",
        "MALLOC_TRIM_THRESHOLD_": str(WORKER_MALLOC_TRIM_THRESHOLD),
        "MALLOC_MMAP_THRESHOLD_": str(WORKER_MALLOC_MMAP_THRESHOLD),
    }


def start_scheduler(stack: ExitStack, folder: Path, env: dict[str, str] | None = None) -> str:
    """Start ``dask scheduler`` on a free port; returns its address once it listens."""
    scheduler_file = folder / "scheduler.json"
    command = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
               "--no-dashboard", "--scheduler-file", str(scheduler_file)]  # fmt: skip
    start(stack, command, folder / "scheduler", env)
    wait_for(
        lambda: scheduler_file.exists() and scheduler_file.stat().st_size > 0,
        60,
        "the scheduler to write its address",
    )
    return str(json.loads(scheduler_file.read_text())["address"])


def start_worker(
    stack: ExitStack,
    address: str,
    log: Path,
    env: dict[str, str] | None = None,
    resources: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``dask worker ADDRESS`` (one single-thread worker process under a nanny)."""
    command = [str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1",
               "--no-dashboard", "--host", "127.0.0.1"]  # fmt: skip
    if resources:
        command += ["--resources", resources]
    return start(stack, command, log, env)


@pytest.fixture(scope="module")
def gpu_cluster(
    prefect_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExternalCluster]:
    """A scheduler and two single-thread workers declaring ``GPU=1``, as separate processes
    reporting to the session's Prefect API. A test may kill workers: it comes last."""
    logs = tmp_path_factory.mktemp("cluster")
    env = worker_env()
    with ExitStack() as stack:
        address = start_scheduler(stack, logs, env)
        workers = [start_worker(stack, address, logs / f"worker{i}", env, "GPU=1") for i in (0, 1)]
        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=90)
            pids = {int(pid): os.getpgid(int(pid)) for pid in client.run(os.getpid).values()}
        assert set(pids.values()) == {w.pid for w in workers}
        yield ExternalCluster(address, workers, pids)


CLUSTER_ARGS = [
    "--no-compact", "--limit", "4", "--chunk-size", "2", "--attack", "none", "--attack", "pgd",
    "--attack-iters", "2", "--defender", "none", "--defender", "median", "--defender", "ride",
    "--ride-iters", "5", "--ride-checkpoints", "2",
]  # fmt: skip


@pytest.mark.slow
def test_run_on_an_external_cluster(
    gpu_cluster: ExternalCluster, weights: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [*CLUSTER_ARGS, "--weights", str(weights)]
    began = time.monotonic()
    code = main(["run", "--out", str(out), "--scheduler", gpu_cluster.address, *args])
    print(f"cluster run: {time.monotonic() - began:.1f} s")
    assert code == 0
    frame = check_rows(out / "results", run_config(args))
    # Every row was computed by the external workers, and both of them took work.
    assert worker_pids(frame) == set(gpu_cluster.pids)


@pytest.mark.slow
def test_cuda_run_is_refused_by_workers_without_gpus_in_separate_processes(
    gpu_cluster: ExternalCluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same check against real worker processes: a second worker pool without GPUs."""
    with ExitStack() as stack:
        address = start_scheduler(stack, tmp_path)
        start_worker(stack, address, tmp_path / "worker")
        with Client(address, timeout=30, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=90)
        out = tmp_path / "run"
        began = time.monotonic()
        code = main(["run", "--out", str(out), "--device", "cuda", "--scheduler", address])
        assert time.monotonic() - began < 10
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.startswith(f"ride: error: no worker of {address} offers resource")
    assert not out.exists()
    # The GPU cluster passes the same check.
    assert check_cluster(gpu_cluster.address, {"GPU": 1}) == 2


# One RIDE fit per task, a few seconds each: long enough to lose a worker in the middle of one.
LOST_WORKER_ARGS = [
    "--no-compact", "--limit", "4", "--chunk-size", "1", "--attack", "none", "--defender", "ride",
    "--ride-iters", "300", "--ride-checkpoints", "2",
]  # fmt: skip


@pytest.mark.slow
def test_a_lost_worker_does_not_lose_rows(
    gpu_cluster: ExternalCluster, weights: Path, tmp_path: Path
) -> None:
    """SIGKILL one worker and its nanny (the node is gone) in the middle of a RIDE fit; the
    run still completes with every row exactly once, the lost task redone elsewhere."""
    out = tmp_path / "run"
    args = [*LOST_WORKER_ARGS, "--weights", str(weights)]
    log = tmp_path / "ride"
    command = [sys.executable, "-m", "flows.cli", "run", "--out", str(out)]

    # A nested function: pickled by value (workers cannot import this test module).
    def executing(dask_worker: Worker) -> list[str]:
        return [str(ts.key) for ts in dask_worker.state.executing]

    with ExitStack() as stack, Client(gpu_cluster.address, set_as_default=False) as client:
        began = time.monotonic()
        ride = start(stack, [*command, "--scheduler", gpu_cluster.address, *args], log)
        wait_for(lambda: bool(result_files(out)) or ride.poll() is not None, 120, "a result")
        # The worker that wrote the first result goes on to its next fit: lose it there.
        (pid,) = worker_pids(pd.read_parquet(result_files(out)[0]))
        address = next(a for a, p in client.run(os.getpid).items() if p == pid)
        time.sleep(1.0)
        wait_for(
            lambda: bool(client.run(executing, workers=[address])[address]),
            30,
            "the worker to start its next task",
        )
        os.killpg(gpu_cluster.pids[pid], signal.SIGKILL)
        killed_at = time.monotonic() - began
        code = finish(ride, log, timeout=180)
        seconds = time.monotonic() - began
    print(f"lost-worker run: {seconds:.1f} s (worker killed at {killed_at:.1f} s)")
    assert code == 0, tail(log)
    frame = check_rows(out / "results", run_config(args))
    assert worker_pids(frame) == set(gpu_cluster.pids)  # the survivor did the rest


# ---------------------------------------------------------------------------- crash and resume

# One local worker; the median rows are stored first, the RIDE chunks keep the run busy after.
KILL_ARGS = [
    "--no-compact", "--workers", "1", "--limit", "6", "--chunk-size", "2", "--attack", "none",
    "--attack", "fgsm", "--defender", "median", "--defender", "ride",
    "--ride-iters", "250", "--ride-checkpoints", "2",
]  # fmt: skip
# RIDE's chunks are long enough (about 5 s each on one worker) that a signal sent after the
# first stored result lands mid-run even on a loaded machine: with K = 100 the remaining
# chunks could all finish before a busy test noticed the first one.


def ride_command(out: Path, weights: Path) -> list[str]:
    """``ride run`` of :data:`KILL_ARGS` as a separate process."""
    return [sys.executable, "-m", "flows.cli", "run", "--out", str(out), *KILL_ARGS,
            "--weights", str(weights)]  # fmt: skip


def sha256s(out: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in result_files(out)}


def check_images(out: Path, complete: bool) -> None:
    """Rows of every Zarr chunk marked done decode and hold no fill value (NaN; -1 for
    labels). With ``complete``, every chunk of every array must be marked done."""
    store = ImageStore(RunLayout(out))
    group = zarr.open_group(str(out / "images.zarr"), mode="r")
    arrays = [(n, a) for n, a in group.members(max_depth=None) if isinstance(a, zarr.Array)]
    assert {"clean", "labels"} <= {name for name, _ in arrays}
    for name, array in arrays:
        # clean and labels are written whole, by one task, under the marker of row 0
        rows = array.shape[0] if name in ("clean", "labels") else array.chunks[0]
        for start in range(0, array.shape[0], rows):
            if not store.has_rows(name, start):
                assert not complete, f"{name} rows {start}-{start + rows}: not marked done"
                continue
            data = np.asarray(array[start : start + rows])
            missing = np.isnan(data) if data.dtype.kind == "f" else data < 0
            assert not missing.any(), f"{name} rows {start}-{start + rows}: marked done, unwritten"


def group_gone(pgid: int) -> bool:
    """True when no process of the process group ``pgid`` is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def interrupt(
    stack: ExitStack, out: Path, weights: Path, log: Path, sig: signal.Signals
) -> subprocess.Popen[bytes]:
    """Start ``ride run`` (on the session's Prefect API) and send ``sig`` to its whole
    process group, as a terminal does, as soon as it has stored a result."""
    ride = start(stack, ride_command(out, weights), log)
    wait_for(lambda: bool(result_files(out)) or ride.poll() is not None, 180, "a result")
    assert ride.poll() is None, f"the run ended before it could be interrupted:\n{tail(log)}"
    os.killpg(ride.pid, sig)
    return ride


def check_interrupted(out: Path) -> dict[str, str]:
    """The state an interrupted run leaves: some results, consistent images, no lock.
    Returns the hashes of the stored result files."""
    stored = sha256s(out)
    cfg = run_config(KILL_ARGS)
    assert 0 < len(stored) < len(expected_keys(cfg)) // cfg.chunk_size  # one file per chunk
    check_images(out, complete=False)
    check_unlocked(out)
    return stored


def resume(out: Path, weights: Path, log: Path, env: dict[str, str] | None = None) -> float:
    """Rerun the same command to its end; check it completed the run without touching what
    was stored before. Returns its wall time."""
    before = sha256s(out)
    with ExitStack() as stack:
        began = time.monotonic()
        code = finish(start(stack, ride_command(out, weights), log, env), log)
        seconds = time.monotonic() - began
    assert code == 0, tail(log)
    check_rows(out / "results", run_config(KILL_ARGS))
    after = sha256s(out)
    assert {name: after.get(name) for name in before} == before, "a stored result changed"
    check_images(out, complete=True)
    check_unlocked(out)
    return seconds


@pytest.mark.slow
def test_resume_after_sigkill_with_an_empty_prefect_database(
    prefect_server: str, weights: Path, tmp_path: Path
) -> None:
    """SIGKILL of the run's whole process group (flow, local cluster and its workers); the
    same command, with a fresh Prefect server and database, finishes the run."""
    out = tmp_path / "run"
    with ExitStack() as stack:
        ride = interrupt(stack, out, weights, tmp_path / "killed", signal.SIGKILL)
        assert finish(ride, tmp_path / "killed", timeout=30) == -signal.SIGKILL
        wait_for(lambda: group_gone(ride.pid), 10, "every process of the killed run to end")
    check_interrupted(out)  # the kernel released the lock with the process

    home = tmp_path / "prefect-home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(home)
    seconds = resume(out, weights, tmp_path / "resumed", env)
    print(f"resume after kill (own Prefect server, empty database): {seconds:.1f} s")


@pytest.mark.slow
def test_ctrl_c_stops_the_run_and_the_same_command_resumes(
    prefect_server: str, weights: Path, tmp_path: Path
) -> None:
    """SIGINT to the process group: exit 130 within 30 s, saying how to resume, no process
    left behind; rerunning the same command finishes the run."""
    out = tmp_path / "run"
    log = tmp_path / "interrupted"
    with ExitStack() as stack:
        ride = interrupt(stack, out, weights, log, signal.SIGINT)
        sent = time.monotonic()
        try:
            code = ride.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ride run still running 30 s after SIGINT:\n{tail(log)}")
        stopped = time.monotonic() - sent
        wait_for(lambda: group_gone(ride.pid), 30, "every process of the run to end")
        gone = time.monotonic() - sent
    print(f"ctrl-c: exit {code} {stopped:.1f} s after SIGINT, all processes gone at {gone:.1f} s")
    assert code == 130, tail(log)
    err = log.with_suffix(".err").read_text()
    assert "ride: interrupted; rerun the same command to resume" in err
    check_interrupted(out)

    seconds = resume(out, weights, tmp_path / "resumed")
    print(f"resume after ctrl-c: {seconds:.1f} s")


@pytest.mark.slow
def test_sigterm_to_the_run_stops_its_server_and_cluster_and_the_run_resumes(
    weights: Path, tmp_path: Path
) -> None:
    """SIGTERM to the ``ride run`` process alone (a scheduler's preemption): exit 143, and
    its own temporary Prefect server and local Dask workers do not outlive it."""
    out = tmp_path / "run"
    log = tmp_path / "terminated"
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    with ExitStack() as stack:
        ride = start(stack, ride_command(out, weights), log, env)
        wait_for(lambda: bool(result_files(out)) or ride.poll() is not None, 180, "a result")
        assert ride.poll() is None, f"the run ended before it could be stopped:\n{tail(log)}"
        ride.send_signal(signal.SIGTERM)
        code = finish(ride, log, timeout=60)
        wait_for(lambda: group_gone(ride.pid), 30, "the server and workers to stop")
    assert code == 143, tail(log)
    assert (
        "ride: terminated; rerun the same command to resume" in log.with_suffix(".err").read_text()
    )
    check_interrupted(out)
    resume(out, weights, tmp_path / "resumed")


# ------------------------------------------------------------- a chunk that kills workers


@pytest.mark.slow
def test_a_chunk_that_keeps_killing_its_worker_is_a_failure_not_a_crash() -> None:
    """A task whose worker process dies while running it is retried by Dask on another
    worker, up to ``distributed.scheduler.allowed-failures`` times; then its Dask future
    fails with ``KilledWorker``, and no Prefect state ever comes back (Prefect's task
    retries never see it). The flow must record that as the chunk's failure."""

    def exit_worker() -> None:  # nested: pickled by value, the worker needs no test module
        os._exit(1)

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        dask_future = client.submit(exit_worker, pure=False)
        future: PrefectDaskFuture[None] = PrefectDaskFuture(
            wrapped_future=dask_future, task_run_id=uuid.uuid4()
        )
        error = _failure(future)
    assert error is not None and error.startswith("KilledWorker: ")
