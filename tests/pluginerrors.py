"""The one check of a defender plugin that is refused: the same one-line error from the
registry and from a run's settings, and nothing registered."""

from __future__ import annotations

import pytest

from pipeline.config import ConfigError, RunConfig
from ride.plugins import resolve
from ride.registry import DEFENDERS


def assert_refused_defender(name: str, message: str) -> None:
    """Resolving ``name`` fails with ``message``, registers nothing, and a run naming it is
    a one-line :class:`ConfigError` on its ``defenders`` key."""
    with pytest.raises(ValueError) as caught:
        resolve(DEFENDERS, name)
    assert str(caught.value) == message
    assert name not in DEFENDERS
    with pytest.raises(ConfigError) as config_error:
        RunConfig.from_mapping({"defenders": ["none", name]})
    assert str(config_error.value) == f"defenders: {message}"
    assert config_error.value.key == "defenders" and "\n" not in str(config_error.value)
