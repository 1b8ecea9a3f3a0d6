"""One finished small run per test session, which every fault test copies and breaks."""

from __future__ import annotations

from pathlib import Path

import pytest

from faults.harness import EXPECTED_ROWS, run


@pytest.fixture(scope="session")
def finished_run(prefect_server: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete :data:`~faults.harness.RUN_ARGS` run (on the session's Prefect API)."""
    out = tmp_path_factory.mktemp("faults") / "finished"
    ran = run(out)
    assert ran.code == 0, ran.tail()
    assert len(list((out / "results").glob("*.parquet"))) == EXPECTED_ROWS // 4
    return out
