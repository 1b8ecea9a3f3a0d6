"""Shared fixtures. Prefect and Dask stay quiet and keep their state in a temporary home."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import torch

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
# A temporary server started under load (both cores busy) can take longer than the 20 s default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
_PREFECT_HOME = tempfile.mkdtemp(prefix="ride-tests-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ["PREFECT_HOME"] = _PREFECT_HOME
os.environ.pop("PREFECT_API_URL", None)
os.environ.pop("RIDE_SCHEDULER", None)
# One cache of classifiers and adversarial images for the session, never the user's.
os.environ["RIDE_CACHE_DIR"] = os.path.join(_PREFECT_HOME, "ride-cache")
# Under pytest-xdist (pyproject's addopts) the workers share the cores: each worker's torch takes
# its share, never all of them (OpenMP threads spinning on a core another worker needs).
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _XDIST_WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _XDIST_WORKERS))


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[str]:
    """One real temporary Prefect API server for the whole test session.

    ``ride run`` sees ``PREFECT_API_URL`` and uses it instead of starting its own.
    """
    from flows.server import prefect_api

    with prefect_api() as url:
        yield url


@pytest.fixture
def one_thread() -> Iterator[None]:
    """torch on one thread for the test: a busy machine slows it down, never to a crawl."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: Session fixtures too costly to make once per xdist worker: the tests that use one share a
#: worker (the finished run every fault test copies costs a whole ``ride run``).
SHARED_ON_ONE_WORKER = frozenset({"finished_run"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist's ``--dist loadgroup`` (pyproject's addopts) tests go to whichever
    worker is free, except those grouped here: a module whose tests share a module-scoped
    fixture (one cluster, one loaded network) runs on one worker, which makes it once, and
    so do the users of a :data:`SHARED_ON_ONE_WORKER` fixture."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None:  # a doctest
            continue
        group = None
        for name, definitions in info.name2fixturedefs.items():
            if definitions and definitions[-1].scope in ("class", "module", "package"):
                group = item.nodeid.split("::")[0]
            elif name in SHARED_ON_ONE_WORKER:
                group = name
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
