"""RIDE and its evaluation as a plain library over tensors ``(B, C, H, W)`` in [0, 1].

Lin, Pfister and Zhang, "White-Box Adversarial Defense via Self-Supervised Data Estimation"
(arXiv 1909.06271): the RIDE defender and its ablation variants (DAE, DIP, I-DIP), the
paper's baselines (median filter, TV minimisation), the attacks it is evaluated against
(FGSM, PGD, BPDA, BPDA+EOT), its classifiers and dataset readers. Imports only torch,
torchvision, numpy, scipy, scikit-image and scikit-learn; nothing of the pipeline.

In a notebook:

>>> import torch, ride
>>> data = ride.load_dataset("digits", "test", limit=4)
>>> model = ride.build_classifier("mnist-cnn")  # untrained here; ride.train_classifier trains
>>> x_adv = ride.PGD(model, eps=0.1, step=0.02, iters=10)(data.images, data.labels)
>>> x_def = ride.Ride(iters=5, checkpoints=1)(x_adv, seeds=[0, 1, 2, 3])  # arch from channels
>>> x_def.shape
torch.Size([4, 1, 28, 28])

Every attack, defender and dataset is registered by name (``ride.ATTACKS``,
``ride.DEFENDERS``, ``ride.DATASETS``); ``ride.make_attack("pgd", eps=0.05)`` and
``ride.make_defender("median", kernel=5)`` build them from their names.
"""

from __future__ import annotations

from ride.attacks import BPDA, BPDAEOT, FGSM, PGD, Adaptive, Attack, NoAttack, make_attack
from ride.classifiers import build_classifier, load_classifier, predict
from ride.datasets import ImageSet, load_dataset
from ride.defenders import (
    Defender,
    Median,
    NoDefence,
    Ride,
    TVBregman,
    TVChambolle,
    build_defender,
    make_defender,
)
from ride.registry import ATTACKS, DATASETS, DEFENDERS
from ride.training import TrainConfig, train_classifier

__all__ = [
    "ATTACKS",
    "BPDA",
    "BPDAEOT",
    "DATASETS",
    "DEFENDERS",
    "FGSM",
    "PGD",
    "Adaptive",
    "Attack",
    "Defender",
    "ImageSet",
    "Median",
    "NoAttack",
    "NoDefence",
    "Ride",
    "TVBregman",
    "TVChambolle",
    "TrainConfig",
    "build_classifier",
    "build_defender",
    "load_classifier",
    "load_dataset",
    "make_attack",
    "make_defender",
    "predict",
    "train_classifier",
]

from ride.plugins import autoload as _autoload  # once the built-ins are registered

_autoload()  # installed plugins (the entry points of ride.plugins) register, once per process
