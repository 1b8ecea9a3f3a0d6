"""What a defender is: the protocol every defender follows, and a base class to start from.

A defender is a callable over a batch of images (the :class:`~ride.defenders.Defender`
protocol, checked by the pipeline on every chunk):

- ``defender(x, seeds) -> x'``: ``x`` is a float tensor (B, C, H, W) with values in [0, 1];
  the result has the same shape (and device), finite values in [0, 1], and ``x`` is never
  modified. ``seeds`` gives one int >= 0 per image (it may be None in a notebook); a
  randomised defender seeds image i's randomness with ``seeds[i]`` alone, so a defended
  image depends only on its own pixels and seed.
- ``name``: the defender's name (``params()["name"]``).
- ``randomised``: False promises the same output for the same input whatever the seeds
  (the pipeline re-runs a chunk's first image with another seed to check it); True says the
  seeds matter, so a white-box attack averages over draws (EOT) and results re-check draws.
- ``differentiable``: True promises that autograd through ``__call__`` gives the true
  gradient, so a white-box attack can follow it with no BPDA approximation; False (the
  default) says the output is detached or its gradient is not the real one.
- ``cost_hint``: relative cost per image, 1 being a 3x3 median filter on the same image;
  used to order tasks (costliest first) and to weigh the progress ETA. None: unknown
  (counted as 1).
- ``id``: the name and its settings as one short string, stable across versions: it names
  the stored images and every result row.
- ``params()``: ``{"name": name, **settings}``: what every result row records.

:class:`DefenderBase` gives all but ``__call__``: a subclass is a frozen dataclass whose
fields are its settings (``setting(...)``), with ``name`` set as a class variable. A
defender without settings may be a plain callable instead, a function ``(x, seeds) -> x'``
or a class made with no arguments whose instances are: :class:`CallableDefender` gives it
the rest (:mod:`ride.plugins` wraps such a plugin).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from ride._checks import fmt_number
from ride.registry import setting_values

__all__ = ["CallableDefender", "DefenderBase", "settings_id"]


def settings_id(name: str, values: dict[str, Any]) -> str:
    """``name`` and its settings as an id: ``jpeg`` + ``{"q": 75}`` -> ``jpeg-q75``.

    Example:
        >>> settings_id("jpeg", {"q": 75, "smooth": 0.5, "chroma": True}), settings_id("none", {})
        ('jpeg-q75-smooth0.5-chromatrue', 'none')
    """
    parts = [
        f"{key}{fmt_number(value) if isinstance(value, int | float) else value}"
        for key, value in values.items()
    ]
    return "-".join([name, *parts])


@dataclass(frozen=True)
class DefenderBase:
    """A defender's defaults: subclass it as a frozen dataclass, set ``name``, declare the
    settings with ``setting(...)`` and write ``__call__``.

    ``id`` is the name and every setting (``jpeg-q75``); ``params()`` is ``{"name": name,
    **settings}``; the defender is deterministic (``randomised = False``), not differentiable
    and of unknown cost until the subclass says otherwise.

    Example:
        >>> import torch
        >>> from dataclasses import dataclass
        >>> from ride.registry import setting
        >>> @dataclass(frozen=True)
        ... class Darken(DefenderBase):
        ...     '''Scale every pixel by a factor.'''
        ...     q: float = setting(0.5, help="factor in [0, 1]")
        ...     name: ClassVar[str] = "darken"
        ...     differentiable: ClassVar[bool] = True
        ...     def __call__(self, x, seeds=None):
        ...         return x * self.q
        >>> Darken().id, Darken(q=0.25).params()
        ('darken-q0.5', {'name': 'darken', 'q': 0.25})
        >>> Darken()(torch.ones(1, 1, 2, 2)).max().item()
        0.5
    """

    name: ClassVar[str] = "defender"
    randomised: ClassVar[bool] = False
    differentiable: ClassVar[bool] = False
    cost_hint: ClassVar[float | None] = None

    @property
    def id(self) -> str:
        return settings_id(self.name, setting_values(self))

    def params(self) -> dict[str, float | int | bool | str]:
        return {"name": self.name, **setting_values(self)}

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not define __call__")


@dataclass(frozen=True)
class CallableDefender(DefenderBase):
    """A defender with no settings that is a plain callable, ``plugin(x, seeds) -> x'``.

    ``plugin`` is a function (or any callable object), or a class that takes no arguments:
    its instance, made on the first call, is what is called. :mod:`ride.plugins` writes one
    subclass per plugin with ``plugin``, ``name`` (the plugin's ``name`` attribute, else its
    ``__name__``: the id) and the declarations the plugin makes as attributes
    (``randomised``, ``differentiable``, ``cost_hint``, as on :class:`DefenderBase`). What it
    does not declare is taken conservatively: randomised (the seeds may matter, so a
    white-box attack averages draws) and not differentiable (BPDA). Example:
    :func:`ride.plugins.callable_defender`.
    """

    plugin: ClassVar[Callable[..., Tensor]]
    plugin_path: ClassVar[str] = ""  # where the plugin is imported from: ``module:name``
    randomised: ClassVar[bool] = True

    def __call__(self, x: Tensor, seeds: Sequence[int] | None = None) -> Tensor:
        target = vars(self).get("_target")
        if target is None:  # a class is made once per defender, on its first call
            plugin = type(self).plugin
            target = plugin() if isinstance(plugin, type) else plugin
            object.__setattr__(self, "_target", target)
        out: Tensor = target(x, seeds)
        return out
