"""The Prefect API a run talks to: the user's (``PREFECT_API_URL``) or a temporary local one.

With process-based Dask workers, the API URL must exist before the cluster starts: each
worker process inherits it from the environment. Without it every worker would start its
own temporary server on the same SQLite file, and they collide.

The temporary server runs in its own session and dies with the process that started it
(:class:`TemporaryServer`): a terminal's Ctrl-C reaches only ``ride``, which stops the server
after its last call to it, and a killed ``ride`` leaves no server behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import prefect
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings


class TemporaryServer(SubprocessASGIServer):
    """Prefect's temporary API server, in its own session and tied to this process's life.

    Prefect starts it in the caller's process group: a terminal's Ctrl-C (sent to the whole
    foreground group) then stopped the server first, and ``ride``, unwinding, waited minutes
    on a dead API and failed with a traceback. In its own session it gets no terminal
    signal; ``flows.tether`` sends it SIGTERM when this process dies, even by SIGKILL.

    The kernel's parent-death signal fires when the *thread* that started the server ends:
    start it from a thread that outlives it (the command line's main thread does).
    """

    # Prefect keeps one server per port in a class-level dict; a dict of this class's own
    # makes ``TemporaryServer()`` never hand back a plain (untethered) server Prefect made.
    _instances: dict[int | None, SubprocessASGIServer] = {}  # noqa: RUF012 (as Prefect types it)

    def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
        """Prefect's ``uvicorn`` command (``prefect.server.api.server``, Prefect 3.x), run
        through ``flows.tether`` in a new session."""
        server_env = {
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        uvicorn = [
            "uvicorn", "--app-dir", str(prefect.__module_path__.parent),
            "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "error", "--lifespan", "on",
        ]  # fmt: skip
        return subprocess.Popen(
            args=[sys.executable, "-m", "flows.tether", str(os.getpid()), *uvicorn],
            env={
                **os.environ,
                **server_env,
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
            start_new_session=True,
        )


@contextmanager
def prefect_api(start_timeout: int = 120) -> Iterator[str]:
    """Yield the API URL, starting (and finally stopping) a temporary server if none is set."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    server = TemporaryServer()
    server.start(timeout=start_timeout)
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                # Send what is queued for the API while it is still up, also when stopped by
                # Ctrl-C or SIGTERM: a log or event left queued for a stopped server makes the
                # interpreter wait at exit for it forever.
                APILogWorker.drain_all(timeout=10)
                EventsWorker.drain_all(timeout=10)
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()
