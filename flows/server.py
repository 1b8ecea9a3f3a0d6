"""The Prefect API a run talks to: the user's (``PREFECT_API_URL``) or a temporary local one.

With process-based Dask workers, the API URL must exist before the cluster starts: each
worker process inherits it from the environment. Without it every worker would start its
own temporary server on the same SQLite file, and they collide.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings


@contextmanager
def prefect_api(start_timeout: int = 120) -> Iterator[str]:
    """Yield the API URL, starting (and finally stopping) a temporary server if none is set."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        yield configured
        return
    server = SubprocessASGIServer()
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
