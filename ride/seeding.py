"""Seed derivation: every random stream of the pipeline is named by its parts.

A stream is identified by ``(seed, dataset, index, stage)``; hashing the parts gives a seed that
does not depend on the worker, the chunking or the order of tasks, so a rerun of a chunk is
bit-identical on the same device (docs/execution.md).
"""

from __future__ import annotations

import hashlib

import torch

_SEED_MASK = (1 << 63) - 1


def derive_seed(seed: int, *parts: str | int) -> int:
    """Stable 63-bit seed from the sha256 of ``seed`` and ``parts``.

    Strings and ints are tagged so that ``derive_seed(0, "1")`` and ``derive_seed(0, 1)``
    differ. Example: ``derive_seed(seed, "digits", 17, "ride")``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {type(seed).__name__}")
    h = hashlib.sha256()
    for part in (seed, *parts):
        if isinstance(part, bool) or not isinstance(part, int | str):
            raise ValueError(f"seed parts must be str or int, got {type(part).__name__}")
        tag = "i" if isinstance(part, int) else "s"
        data = f"{tag}{len(str(part))}:{part}".encode()
        h.update(data)
    return int.from_bytes(h.digest()[:8], "big") & _SEED_MASK


def generator_for(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A fresh ``torch.Generator`` on ``device`` seeded with ``seed`` (no global state)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    gen = torch.Generator(device=torch.device(device))
    gen.manual_seed(seed)
    return gen
