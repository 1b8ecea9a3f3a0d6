"""Small file helpers shared by the stores."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def temporary_sibling(path: Path) -> Path:
    """A hidden name beside ``path`` (readers of the folder skip names starting with '.')."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = temporary_sibling(path)
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_write_json(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON to ``path``, atomically (see ``atomic_write_bytes``)."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())
