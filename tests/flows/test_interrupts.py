"""A Ctrl-C or SIGTERM that library code swallows still stops the run at its next task."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest

from flows import interrupts


@pytest.fixture
def handlers() -> Iterator[None]:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        interrupts.install()
        yield
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
        interrupts._REQUESTED.clear()


@pytest.mark.usefixtures("handlers")
@pytest.mark.parametrize(
    ("signum", "kind"),
    [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, interrupts.Terminated)],
)
def test_a_swallowed_signal_is_raised_again(signum: int, kind: type[BaseException]) -> None:
    interrupts.raise_if_requested()  # nothing asked yet
    # The handler runs before os.kill returns; suppressing it is what a library that
    # catches BaseException does.
    with contextlib.suppress(KeyboardInterrupt):
        os.kill(os.getpid(), signum)
    with pytest.raises(kind) as info:
        interrupts.raise_if_requested()
    assert type(info.value) is kind


@pytest.mark.usefixtures("handlers")
def test_install_forgets_earlier_requests() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    interrupts.install()
    interrupts.raise_if_requested()  # a new run starts clean
