"""RIDE: Robust Iterative Data Estimation, and its ablation variants DAE, DIP and I-DIP.

Lin, Pfister and Zhang, "White-Box Adversarial Defense via Self-Supervised Data Estimation"
(arXiv 1909.06271), section "Self-Supervised Data Estimation" (Alg. 1, Alg. 2, Eq. 7-9).

- ``config``: :class:`Ride`, the defender: its settings (Alg. 2's defaults) and how it runs.
- ``network``: :class:`ReconstructionFCN`, the network ``h`` of Table 3.
- ``streams``: each image's random numbers, drawn from a generator seeded with its seed.
- ``engines``: Alg. 2's checkpoint loop, once, over a one-by-one reference engine and a
  batched engine (one grouped convolution over B networks).
- ``precision`` and ``memory``: the arithmetic of the fits and how many images fit at once.
- ``surrogate``: :func:`ride_surrogate`, a short fit differentiated end to end: the backward
  pass of the ``bpda-surrogate`` attack.

A defended image depends only on its own pixels and seed, not on which other images share its
batch; a rerun with the same seeds, engine, batch and precision on the same device is
bit-identical.
"""

from __future__ import annotations

from ride.defenders.ride.archs import (
    ARCHS,
    ENGINES,
    VARIANTS,
    Arch,
    Engine,
    Variant,
    infer_arch,
)
from ride.defenders.ride.config import Ride
from ride.defenders.ride.defend import ride
from ride.defenders.ride.engines import BatchedEngine, FitEngine, ReferenceEngine, algorithm_2
from ride.defenders.ride.memory import (
    CPU_MEMORY_FRACTION,
    CUDA_MEMORY_FRACTION,
    estimate_memory_bytes,
    max_batch_for,
    memory_budget_bytes,
)
from ride.defenders.ride.network import ReconstructionFCN, fcn_forward
from ride.defenders.ride.precision import PRECISIONS, Precision, check_precision, fit_precision
from ride.defenders.ride.streams import DIP_INPUT_SCALE
from ride.defenders.ride.surrogate import (
    SURROGATE_CHECKPOINTS,
    SURROGATE_ITERS,
    SURROGATE_LR,
    ride_surrogate,
    surrogate_config,
)
from ride.registry import DEFENDERS

__all__ = [
    "ARCHS",
    "CPU_MEMORY_FRACTION",
    "CUDA_MEMORY_FRACTION",
    "DIP_INPUT_SCALE",
    "ENGINES",
    "PRECISIONS",
    "SURROGATE_CHECKPOINTS",
    "SURROGATE_ITERS",
    "SURROGATE_LR",
    "VARIANTS",
    "Arch",
    "BatchedEngine",
    "Engine",
    "FitEngine",
    "Precision",
    "ReconstructionFCN",
    "ReferenceEngine",
    "Ride",
    "Variant",
    "algorithm_2",
    "check_precision",
    "estimate_memory_bytes",
    "fcn_forward",
    "fit_precision",
    "infer_arch",
    "max_batch_for",
    "memory_budget_bytes",
    "ride",
    "ride_surrogate",
    "surrogate_config",
]


DEFENDERS.add("ride", Ride, "RIDE, Alg. 2", variant="ride")
DEFENDERS.add("dae", Ride, "DAE = RIDE with alpha 1", variant="dae", alpha=1.0)
# DIP fits a fixed random input to the noise-free target: sigma plays no part, so the name
# fixes it at its default (a run never sweeps it for them).
DEFENDERS.add("dip", Ride, "Deep Image Prior", variant="dip", alpha=1.0, sigma=0.5)
DEFENDERS.add("idip", Ride, "iterative DIP", variant="idip", sigma=0.5)
