"""How a run executes on a worker: the device and threads, the defender as the run runs it
(its every output checked against the defender protocol), each image's defender seed, and a
chunk's inputs read from storage."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pipeline.config import RunConfig
from ride.attacks import Attack
from ride.classifiers import load_classifier
from ride.defenders import Defender, build_defender
from ride.plugins import registered_name, resolve_names
from ride.registry import ATTACKS, CLASSIFIERS, DEFENDERS
from ride.seeding import derive_seed
from storage.images import ImageStore
from storage.layout import RunLayout

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
"""A plain logger, or the Prefect run logger a task passes in."""


def default_logger(logger: Logger | None) -> Logger:
    """``logger``, or this package's plain logger when none is given."""
    return logger if logger is not None else logging.getLogger("pipeline")


def worker_device(cfg: RunConfig) -> torch.device:
    """The run's device, with this worker process set up for it.

    torch gets ``cfg.threads`` threads. The interpreter's switch interval drops from 5 ms
    to 0.1 ms: a RIDE fit makes thousands of short torch calls, each releasing the GIL, and
    whenever a worker's service thread grabs it the fit waits up to one interval to get it
    back (measured: 30% of a fit's time inside a Dask worker).
    """
    torch.set_num_threads(cfg.threads)
    sys.setswitchinterval(1e-4)
    register_plugins(cfg)
    return torch.device(cfg.device)


def register_plugins(cfg: RunConfig) -> None:
    """Register in this process the plugins ``cfg`` names by import path (``pkg.mod:Class``:
    attacks, defenders, the classifier), as the process that validated ``cfg`` did: a worker
    then knows their run keys, so the run's id it records is the one in ``run.toml``."""
    resolve_names(ATTACKS, cfg.attacks)
    resolve_names(DEFENDERS, cfg.defenders)
    resolve_names(CLASSIFIERS, (cfg.classifier,))


def data_dir(cfg: RunConfig) -> Path | None:
    """The dataset's folder (None for the bundled digits)."""
    return None if cfg.data_dir is None else Path(cfg.data_dir)


def executed_defender(cfg: RunConfig, defender: Defender) -> Defender:
    """``defender`` as this run executes it: RIDE's fits at the run's ``precision``, with as
    many of a chunk's images at once as the device's free memory allows, and every output
    checked against the defender protocol (:class:`CheckedDefender`)."""
    return CheckedDefender(build_defender(defender, precision=cfg.precision, max_batch="auto"))


#: How far outside [0, 1] a defended value may lie (float rounding of a clamp, a blend).
RANGE_TOLERANCE = 1e-6
#: How far apart two outputs of a deterministic defender on the same image may lie: the
#: re-run holds one image where the first run held the chunk, and a batched computation may
#: round differently.
DETERMINISM_TOLERANCE = 1e-5


def defender_label(defender: Defender) -> str:
    """``defender median-k3`` for a built-in; ``defender plugin <name>`` for a plugin, by the
    name it is registered under (``my_pkg.purify:JpegDefender``, an entry point's name)."""
    cls = type(defender)
    if cls.__module__.split(".")[0] == "ride":
        return f"defender {defender.id}"
    name = registered_name(DEFENDERS, cls, str(getattr(defender, "name", "")))
    return f"defender plugin {name or f'{cls.__module__}:{cls.__qualname__}'}"


def output_problem(x: torch.Tensor, out: object) -> str | None:
    """What a defender's output ``out`` for input ``x`` breaks of the protocol (same shape
    and device, floating point, finite, within [0, 1]); None when nothing."""
    if not isinstance(out, torch.Tensor):
        return f"returned a {type(out).__name__}, not a torch.Tensor"
    if tuple(out.shape) != tuple(x.shape):
        return f"returned shape {tuple(out.shape)} for input {tuple(x.shape)}"
    if out.device != x.device:
        return f"returned a tensor on {out.device} for input on {x.device}"
    values = out.detach()
    if not torch.is_floating_point(values):
        return f"returned dtype {values.dtype}, not floating point"
    bad = int((~torch.isfinite(values)).sum())
    if bad:
        return f"returned {bad} non-finite value(s) (NaN or inf)"
    if values.numel():
        low, high = float(values.min()), float(values.max())
        if low < -RANGE_TOLERANCE or high > 1.0 + RANGE_TOLERANCE:
            return f"returned values in [{low:.4g}, {high:.4g}], outside [0, 1]"
    return None


class CheckedDefender:
    """A defender whose every call is checked against the defender protocol
    (``ride/defenders/base.py``); anything else is delegated to it unchanged.

    Each output must have the input's shape and device, be finite and lie within [0, 1]
    (tolerance ``RANGE_TOLERANCE``), and the input must be left as it was. A defender that
    is not ``randomised`` (declared False, or not declared) is also run once more, on the
    first call, on that call's first image alone with another seed, and must give the same
    image (within ``DETERMINISM_TOLERANCE``). A randomised one (RIDE) is never re-run, so its
    random streams are those of the run. The checks only read: the output is returned as the
    defender gave it (autograd through it included).

    A violation is a ValueError of one line naming the defender and what it broke, e.g.
    ``defender plugin my_pkg.purify:JpegDefender broke its protocol: returned shape (2, 1,
    27, 27) for input (2, 1, 28, 28)``; the chunk task then fails like any other error.

    It stands in for the defender: ``isinstance`` sees the defender's class, every attribute
    is the defender's, and ``__wrapped__`` is the defender itself.
    """

    __wrapped__: Defender

    def __init__(self, defender: Defender) -> None:
        object.__setattr__(self, "__wrapped__", defender)
        object.__setattr__(self, "_determinism_checked", False)

    @property  # type: ignore[misc]
    def __class__(self) -> type:  # isinstance(checked, Ride) holds, as for the defender
        return type(self.__wrapped__)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__wrapped__, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot set {name!r}: a checked defender is read-only")

    def __repr__(self) -> str:
        return f"CheckedDefender({self.__wrapped__!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (CheckedDefender, (self.__wrapped__,))

    @property
    def name(self) -> str:
        return self.__wrapped__.name

    @property
    def id(self) -> str:
        return self.__wrapped__.id

    @property
    def randomised(self) -> bool:
        return bool(getattr(self.__wrapped__, "randomised", False))

    @property
    def differentiable(self) -> bool:
        return bool(getattr(self.__wrapped__, "differentiable", False))

    @property
    def cost_hint(self) -> float | None:
        hint: float | None = getattr(self.__wrapped__, "cost_hint", None)
        return hint

    def params(self) -> dict[str, float | int | bool | str]:
        return self.__wrapped__.params()

    def __call__(self, x: torch.Tensor, seeds: Sequence[int] | None = None) -> torch.Tensor:
        before = x.detach().clone()
        out = self.__wrapped__(x, seeds)
        if not _same_with_nan(x.detach(), before):
            self._broke("modified its input x in place")
        problem = output_problem(x, out)
        if problem is not None:
            self._broke(problem)
        if not self._determinism_checked and len(x) > 0 and not self.randomised:
            object.__setattr__(self, "_determinism_checked", True)
            self._check_determinism(before[:1], out[:1].detach(), seeds)
        return out

    def _check_determinism(
        self, first: torch.Tensor, expected: torch.Tensor, seeds: Sequence[int] | None
    ) -> None:
        """Run the defender on ``first`` (one image) with another seed: a deterministic
        defender gives ``expected`` again."""
        other = None if seeds is None else [derive_seed(int(seeds[0]), "protocol-check")]
        with torch.no_grad():
            again = self.__wrapped__(first.clone(), other)
        problem = output_problem(first, again)
        if problem is not None:
            self._broke(problem)
        difference = float((again.detach() - expected).abs().max())
        if difference > DETERMINISM_TOLERANCE:
            declared = hasattr(self.__wrapped__, "randomised")
            self._broke(
                ("declares randomised = False" if declared else "does not declare randomised")
                + " but its first image came out different when defended again, alone, with "
                f"another seed (max difference {difference:.3g})"
            )

    def _broke(self, what: str) -> None:
        raise ValueError(f"{defender_label(self.__wrapped__)} broke its protocol: {what}")


def _same_with_nan(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=0.0, atol=0.0, equal_nan=True))


def defender_seeds(
    cfg: RunConfig, attack: Attack, defender: Defender, start: int, count: int
) -> list[int]:
    """One seed per image for this (attack, defender); the attack's draws derive from it."""
    return [
        derive_seed(cfg.seed, cfg.dataset, start + i, attack.id, defender.id) for i in range(count)
    ]


def load_chunk(
    layout: RunLayout, classifier: str, start: int, stop: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Module]:
    """Rows ``[start, stop)`` of the run's clean images and labels, and its classifier."""
    store = ImageStore(layout)
    clean = torch.from_numpy(store.read_rows("clean", start, stop)).to(device)
    labels = torch.from_numpy(store.read_rows("labels", start, stop)).to(device)
    return clean, labels, load_classifier(layout.classifier, classifier, device=device)
