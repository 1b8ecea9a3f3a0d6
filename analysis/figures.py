"""PNG figures of a run, drawn from its Parquet tables and Zarr images only.

Drawn with matplotlib's object API (``Figure``, no pyplot), so no global backend state.

- ``accuracy_by_iteration.png`` (paper Fig. 7b): accuracy against the attack iteration for
  each white-box attack and defender, as the attacker saw it; solid: the attacker's first
  defender draw on the iterate, dotted: the fraction of all its draws there classified
  correctly (``attacker_correct``, from which it chooses the iterate it submits), dashed: the
  iterate classified without defence.
- ``distances.png`` (paper Fig. 7a): per-image distributions of the distances
  adversarial-to-clean, defended-to-clean and defended-to-adversarial (averaged L1, the
  paper's) on the final adversarial images of the headline adaptive attack.
- ``examples.png`` (paper Figs. 10-11): clean / adversarial / defended images of a few test
  images per defender, each with its label and predicted class on top.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from analysis.tables import ADAPTIVE
from storage.files import atomic_file
from storage.images import ImageStore, adaptive_adv_name, adv_name, defended_name
from storage.layout import RunLayout
from storage.results import read_results
from storage.steps import read_steps

EXAMPLES = 4
"""Test images shown per defender in ``examples.png``."""


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as file:
        figure.savefig(file, format="png", dpi=110, bbox_inches="tight")
    return path


def _headline_attack(attack_ids: pd.Series) -> str:
    """BPDA+EOT if the run has it, else BPDA, else the last attack in sorted order."""
    ids = sorted(set(attack_ids))
    for prefix in ("bpda-eot", "bpda", "pgd", "fgsm"):
        matching = [a for a in ids if a.startswith(prefix)]
        if matching:
            return matching[0]
    return ids[-1]


def accuracy_by_iteration(steps: pd.DataFrame, path: Path) -> Path:
    """Fig. 7b: accuracy of adversarial and defended iterates against the iteration (the
    attacker's draws; steps written before ride-pipeline 0.4.0 have no dotted curve)."""
    drawn = "attacker_correct" in steps.columns and steps["attacker_correct"].notna().all()
    columns = ["correct_defended", "correct_adv", *(["attacker_correct"] if drawn else [])]
    attacks = sorted(steps["attack_id"].unique())
    figure = Figure(figsize=(5.5 * len(attacks), 4))
    axes = figure.subplots(1, len(attacks), squeeze=False, sharey=True)
    for ax, attack in zip(axes[0], attacks, strict=True):
        rows = steps[steps["attack_id"] == attack]
        for i, (defender, group) in enumerate(rows.groupby("defender_id")):
            curve = group[columns].astype(float).groupby(group["iteration"]).mean()
            color = f"C{i}"
            ax.plot(curve.index, curve["correct_defended"], "-o", color=color, label=defender)
            ax.plot(curve.index, curve["correct_adv"], "--", color=color, alpha=0.6)
            if drawn:
                ax.plot(curve.index, curve["attacker_correct"], ":", color=color, alpha=0.9)
        ax.set_title(attack, fontsize=9)
        ax.set_xlabel("attack iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(
        "accuracy (solid: draw 0, dotted: attacker's draws, dashed: undefended)"
        if drawn
        else "accuracy (solid: defended, dashed: adversarial)"
    )
    axes[0][-1].legend(fontsize=8, loc="best")
    return _save(figure, path)


def distance_distributions(steps: pd.DataFrame, path: Path) -> Path:
    """Fig. 7a: distributions of the three distances on the final adversarial images."""
    attack = _headline_attack(steps["attack_id"])
    rows = steps[steps["attack_id"] == attack]
    final = rows[rows["iteration"] == rows["iteration"].max()]
    pairs = {
        "adv_clean_l1": "adversarial to clean",
        "defended_clean_l1": "defended to clean",
        "defended_adv_l1": "defended to adversarial",
    }
    figure = Figure(figsize=(15, 3.8))
    axes = figure.subplots(1, 3, squeeze=False)
    defenders = sorted(final["defender_id"].unique())
    colors = {defender: f"C{i}" for i, defender in enumerate(defenders)}
    for ax, (column, title) in zip(axes[0], pairs.items(), strict=True):
        # Without a defence the defended image is the adversarial one: nothing to show.
        shown = final if column == "adv_clean_l1" else final[final["defender_id"] != "none"]
        bins = np.histogram_bin_edges(shown[column].to_numpy(dtype=float), bins=20)
        for defender, group in shown.groupby("defender_id"):
            values = group[column].to_numpy(dtype=float)
            ax.hist(values, bins=bins, alpha=0.5, color=colors[str(defender)], label=defender)
        ax.set_title(f"{title} ({attack})", fontsize=9)
        ax.set_xlabel("mean absolute difference per pixel")
    axes[0][0].set_ylabel("images")
    axes[0][0].legend(fontsize=8)
    return _save(figure, path)


def _show(ax: Axes, image: np.ndarray, title: str) -> None:
    """Draw one (C, H, W) image in [0, 1]."""
    if image.shape[0] == 1:
        ax.imshow(image[0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(np.clip(image.transpose(1, 2, 0), 0.0, 1.0))  # (H, W, C)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def examples_grid(layout: RunLayout, results: pd.DataFrame, path: Path) -> Path | None:
    """Figs. 10-11: clean / adversarial / defended for a few images per defender."""
    ok = results[results["status"] == "ok"]
    attacked = ok[ok["attack_id"] != "none"]
    if attacked.empty:
        return None
    attack = _headline_attack(attacked["attack_id"])
    rows = attacked[attacked["attack_id"] == attack]
    defenders = sorted(rows["defender_id"].unique(), key=lambda d: (d != "none", d))
    indices = sorted(rows["index"].unique())[:EXAMPLES]
    store = ImageStore(layout)
    figure = Figure(figsize=(1.6 * 3 * len(indices), 1.9 * len(defenders)))
    axes = figure.subplots(len(defenders), 3 * len(indices), squeeze=False)
    adaptive = rows["attack"].iloc[0] in ADAPTIVE
    for r, defender in enumerate(defenders):
        for c, index in enumerate(indices):
            row = rows[(rows["defender_id"] == defender) & (rows["index"] == index)].iloc[0]
            clean = store.read_rows("clean", index, index + 1)[0]
            adv_array = adaptive_adv_name(attack, defender) if adaptive else adv_name(attack)
            adversarial = store.read_rows(adv_array, index, index + 1)[0]
            defended = (
                adversarial
                if defender == "none"
                else store.read_rows(defended_name(attack, defender), index, index + 1)[0]
            )
            label = int(row["label"])
            _show(axes[r][3 * c], clean, f"clean y={label} p={int(row['pred_clean'])}")
            _show(axes[r][3 * c + 1], adversarial, f"adv p={int(row['pred_adv'])}")
            _show(axes[r][3 * c + 2], defended, f"defended p={int(row['pred_defended'])}")
        axes[r][0].set_ylabel(defender, fontsize=8)
    figure.suptitle(f"{attack}: clean / adversarial / defended (y label, p prediction)")
    return _save(figure, path)


def draw_figures(
    layout: RunLayout, results: pd.DataFrame | None = None
) -> tuple[list[Path], list[str]]:
    """Every figure the run's tables allow, under ``figures/``; ``results`` are the run's
    result rows when the caller has already read them.

    Returns the paths written and one line per figure that could not be drawn (an
    unreadable image chunk, say): a figure never fails the report it illustrates.
    """
    drawers: list[tuple[str, Callable[[], Path | None]]] = []
    steps = read_steps(layout.steps) if layout.steps.is_dir() else pd.DataFrame()
    if not steps.empty:
        drawers.append(
            (
                "accuracy_by_iteration.png",
                lambda: accuracy_by_iteration(steps, layout.figures / "accuracy_by_iteration.png"),
            )
        )
        drawers.append(
            (
                "distances.png",
                lambda: distance_distributions(steps, layout.figures / "distances.png"),
            )
        )
    if results is None:
        results = read_results(layout.results)
    if not results.empty:
        drawers.append(
            (
                "examples.png",
                lambda: examples_grid(layout, results, layout.figures / "examples.png"),
            )
        )
    written: list[Path] = []
    problems: list[str] = []
    for name, draw in drawers:
        try:
            path = draw()
        except Exception as error:  # reported below; the report goes on
            problems.append(f"{name}: {type(error).__name__}: {error}".splitlines()[0])
            continue
        if path is not None:
            written.append(path)
    return written, problems
