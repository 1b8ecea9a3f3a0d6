"""One run as its tasks see it: where it is stored, what it evaluates, on how many images.

A :class:`Run` is built once, by the flow, after the run directory is claimed and its images
are sampled; every chunk task receives it with its :class:`~pipeline.plan.Task`. It resolves
what the settings name once (the attack and defender objects) and holds nothing heavy (no
weights, no tensors): it is pickled to a Dask worker with every task and hashed into the
task's Prefect cache key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import RunConfig
from pipeline.spec import RunSpec
from ride.attacks import Attack
from ride.defenders import Defender
from storage.layout import RunLayout


@dataclass(frozen=True)
class Run:
    """A claimed run: its folder (``layout``), its settings (``cfg``), the attack and
    defender objects they name, in the order given, and the number of images it evaluates."""

    layout: RunLayout
    cfg: RunConfig
    attacks: tuple[Attack, ...]
    defenders: tuple[Defender, ...]
    n_images: int

    @classmethod
    def of(cls, layout: RunLayout, cfg: RunConfig, n_images: int) -> Run:
        """The run of ``cfg`` in the folder ``layout``, evaluating ``n_images`` images."""
        attacks, defenders = tuple(cfg.attack_configs()), tuple(cfg.defender_configs())
        return cls(layout, cfg, attacks, defenders, n_images)

    @property
    def spec(self) -> RunSpec:
        """What the run's results depend on."""
        return self.cfg.spec

    @property
    def run_id(self) -> str:
        return self.cfg.run_id

    @property
    def classifier(self) -> str:
        """The classifier network's name (``mnist-cnn``, ``resnet50``...)."""
        return self.cfg.classifier

    @property
    def classifier_path(self) -> Path:
        """The run's classifier weights, ``classifier.pt`` in its folder."""
        return self.layout.classifier

    def attacked(self, attack: Attack) -> list[Defender]:
        """The run's defenders ``attack`` can attack (:meth:`~ride.attacks.Attack.applies_to`)."""
        return [d for d in self.defenders if attack.applies_to(d)]

    def left_out_pairs(self) -> list[tuple[Attack, Defender]]:
        """The (attack, defender) pairs the attack cannot attack: the run makes no task and
        no row for them."""
        return [(a, d) for a in self.attacks for d in self.defenders if not a.applies_to(d)]
