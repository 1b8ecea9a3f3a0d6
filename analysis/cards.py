"""Defence cards: ``card.json``, one per run, and a leaderboard of many runs.

In the spirit of RobustBench's per-model entries, a card says what was evaluated (dataset,
threat model and budget, classifier, each defender and its settings), how it did (clean
accuracy, accuracy under each attack with n and a 95% Wilson score interval, the strongest
attack and the robust accuracy under it) and how it was made (code version, command, times).
Everything is computed from the stored results (``results/``: per-task files or compacted,
read by :func:`storage.results.read_results`) and ``run.toml``;
``docs/card.schema.json`` documents every field and :func:`validate_card` checks a card
against it.

Which count is an attack's accuracy follows the report (:mod:`analysis.tables`): for the
gray-box attacks ``correct_defended`` (the final image, one defender draw); for the white-box
attacks (``tables.ADAPTIVE``) ``correct_worst`` (correct at every attack iterate and every
re-check draw), the headline of the report's white-box section. Each attack entry names its
statistic. Failed rows are excluded from n and counted separately.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import tables
from storage.files import atomic_write_bytes
from storage.layout import RunLayout
from storage.results import read_results
from storage.runconfig import RunConfigMismatch, read_run_document

SCHEMA_VERSION = 1
THREAT_MODEL = "Linf"
CARD_NAME = "card.json"
SCHEMA_PATH = Path(__file__).parents[1] / "docs" / "card.schema.json"

FINAL = "correct_defended"
"""Statistic of the gray-box attacks and the clean images: the final image, one draw."""
WORST = "correct_worst"
"""Statistic of the white-box attacks: correct at every iterate and every re-check draw."""

Card = dict[str, Any]


class CardError(ValueError):
    """A directory that is neither a run nor holds a readable card."""


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``correct / n`` (95% for ``z = 1.96``).

    Unlike the normal approximation it stays inside [0, 1] and is not empty at 0 or n:
    0 of 10 gives (0, 0.278), 10 of 10 (0.722, 1), 5 of 10 (0.237, 0.763).

    >>> [round(v, 4) for v in wilson_interval(1, 10)]
    [0.0179, 0.4042]
    """
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in [0, n={n}], got {correct}")
    p = correct / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == n else min(1.0, centre + half)
    return low, high


def measure(rows: pd.DataFrame, column: str) -> dict[str, Any]:
    """Accuracy of ``column`` over the ``ok`` rows of ``rows``: accuracy, correct, n, the
    95% Wilson interval (``None`` for both when n is 0) and the failed rows left out."""
    ok = rows[rows["status"] == "ok"]
    n = len(ok)
    correct = int(ok[column].eq(True).sum())
    interval = list(wilson_interval(correct, n)) if n else None
    return {
        "accuracy": correct / n if n else None,
        "correct": correct,
        "n": n,
        "interval": interval,
        "failed": int((rows["status"] == "failed").sum()),
    }


def _params(text: Any) -> dict[str, Any]:
    value = json.loads(str(text)) if isinstance(text, str) and text else {}
    return value if isinstance(value, dict) else {}


def _run_document(layout: RunLayout) -> dict[str, Any]:
    """``run.toml`` (empty when missing: the card then says null for what it holds)."""
    return read_run_document(layout.run_toml) if layout.run_toml.exists() else {}


def _order(names: Sequence[str]) -> Any:
    """Sort key of (name, id) pairs: the run's order of the names, then the id."""
    position = {name: i for i, name in enumerate(names)}
    return lambda pair: (position.get(pair[0], len(position)), pair[1])


def _attack_entry(rows: pd.DataFrame, attack_id: str) -> dict[str, Any]:
    first = rows.iloc[0]
    white_box = str(first["attack"]) in tables.ADAPTIVE
    ok = rows[rows["status"] == "ok"]
    return {
        "attack_id": attack_id,
        "attack": str(first["attack"]),
        "settings": _params(first["attack_params"]),
        "white_box": white_box,
        "statistic": WORST if white_box else FINAL,
        "result": measure(rows, WORST if white_box else FINAL),
        "final_accuracy": float(ok[FINAL].eq(True).mean()) if white_box and len(ok) else None,
        "recheck_accuracy": (
            float(ok["recheck_correct"].astype(float).mean()) if white_box and len(ok) else None
        ),
    }


def strongest(attacks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The attack entry with the lowest accuracy (exact fractions; ties: the later attack in
    the given order); ``None`` when no attack has an ok row."""
    best: Mapping[str, Any] | None = None
    best_value: Fraction | None = None
    for entry in attacks:
        result = entry["result"]
        if not result["n"]:
            continue
        value = Fraction(result["correct"], result["n"])
        if best_value is None or value <= best_value:
            best, best_value = entry, value
    return best


def _defender_entry(rows: pd.DataFrame, defender_id: str, attack_names: Sequence[str]) -> Card:
    first = rows.iloc[0]
    clean_rows = rows[rows["attack"] == "none"]
    ok = rows[rows["status"] == "ok"].drop_duplicates("index")
    attacked = rows[rows["attack"] != "none"]
    pairs = sorted(
        {(str(a), str(i)) for a, i in zip(attacked["attack"], attacked["attack_id"], strict=True)},
        key=_order(attack_names),
    )
    attacks = [_attack_entry(attacked[attacked["attack_id"] == i], i) for _, i in pairs]
    worst = strongest(attacks)
    return {
        "defender_id": defender_id,
        "defender": str(first["defender"]),
        "settings": _params(first["defender_params"]),
        "clean_accuracy": measure(clean_rows, FINAL) if len(clean_rows) else None,
        "undefended_clean_accuracy": measure(ok, "correct_clean") if len(ok) else None,
        "attacks": attacks,
        "strongest_attack": None if worst is None else worst["attack_id"],
        "robust_statistic": None if worst is None else worst["statistic"],
        "robust_accuracy": None if worst is None else worst["result"],
        "failed_rows": int((rows["status"] == "failed").sum()),
    }


def build_card(layout: RunLayout, results: pd.DataFrame | None = None) -> Card:
    """The card of the run at ``layout`` from its results (read when not given) and
    ``run.toml``; see ``docs/card.schema.json`` for the fields."""
    frame = read_results(layout.results) if results is None else results
    document = _run_document(layout)
    config = document.get("config", {})
    config = config if isinstance(config, dict) else {}
    attack_names = [str(a) for a in config.get("attacks", [])]
    defender_names = [str(d) for d in config.get("defenders", [])]
    defender_pairs = sorted(
        {(str(d), str(i)) for d, i in zip(frame["defender"], frame["defender_id"], strict=True)},
        key=_order(defender_names),
    )
    attack_pairs = sorted(
        {(str(a), str(i)) for a, i in zip(frame["attack"], frame["attack_id"], strict=True)},
        key=_order(attack_names),
    )
    ok = frame[frame["status"] == "ok"].drop_duplicates("index")
    run_ids = sorted(set(frame["run_id"]))
    datasets = sorted(set(frame["dataset"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_ids[0] if run_ids else None,
        "dataset": config.get("dataset", datasets[0] if datasets else None),
        "threat_model": THREAT_MODEL,
        "eps": config.get("eps"),
        "fgsm_eps": config.get("fgsm_eps"),
        "classifier": config.get("classifier"),
        "weights": config.get("weights"),
        "seed": config.get("seed"),
        "images": int(ok["index"].nunique()),
        "code_version": document.get("code_version"),
        "command": document.get("command"),
        "started": document.get("started"),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "attack_order": [attack_id for _, attack_id in attack_pairs],
        "failed_rows": int((frame["status"] == "failed").sum()),
        "undefended_clean_accuracy": measure(ok, "correct_clean") if len(ok) else None,
        "defenders": [
            _defender_entry(frame[frame["defender_id"] == i], i, attack_names)
            for _, i in defender_pairs
        ],
    }


def card_path(layout: RunLayout) -> Path:
    return layout.root / CARD_NAME


def write_card(layout: RunLayout, results: pd.DataFrame | None = None) -> Path:
    """Build the card of the run and write it to ``card.json`` atomically; its path."""
    card = build_card(layout, results)
    path = card_path(layout)
    atomic_write_bytes(path, (json.dumps(card, indent=2) + "\n").encode())
    return path


def load_card(run_dir: Path) -> Card:
    """The card of a run directory: its ``card.json``, or built from its results when there
    is none yet (nothing is written). :class:`CardError` for anything else."""
    layout = RunLayout(run_dir)
    path = card_path(layout)
    if path.is_file():
        try:
            card = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CardError(f"{path} is unreadable: {error}") from None
        if not isinstance(card, dict) or not isinstance(card.get("defenders"), list):
            raise CardError(f"{path} is not a defence card")
        return card
    if not layout.results.is_dir():
        raise CardError(f"{run_dir} is not a run directory (no {CARD_NAME}, no results/)")
    try:
        return build_card(layout)
    except RunConfigMismatch as error:  # an unreadable run.toml
        raise CardError(str(error)) from None


def card_schema() -> dict[str, Any]:
    """``docs/card.schema.json`` (JSON Schema draft 2020-12)."""
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def validate_card(card: Mapping[str, Any]) -> None:
    """Raise ``jsonschema.ValidationError`` when ``card`` does not follow the schema
    (``jsonschema`` is a test dependency; the pipeline itself does not need it)."""
    import jsonschema

    schema = card_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(card)


LEADERBOARD_COLUMNS = (
    "rank",
    "run",
    "run_id",
    "dataset",
    "classifier",
    "threat_model",
    "eps",
    "defender_id",
    "defender",
    "clean_accuracy",
    "clean_n",
    "robust_accuracy",
    "robust_low",
    "robust_high",
    "robust_n",
    "strongest_attack",
    "robust_statistic",
    "failed_rows",
)


def leaderboard(cards: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """One row per (run, defender) of ``(run label, card)`` pairs, best first: by robust
    accuracy (none last), then clean accuracy, run and defender."""
    rows = []
    for run, card in cards:
        for entry in card["defenders"]:
            clean = entry.get("clean_accuracy") or {}
            robust = entry.get("robust_accuracy") or {}
            interval = robust.get("interval") or [None, None]
            rows.append(
                {
                    "run": run,
                    "run_id": card.get("run_id"),
                    "dataset": card.get("dataset"),
                    "classifier": card.get("classifier"),
                    "threat_model": card.get("threat_model"),
                    "eps": card.get("eps"),
                    "defender_id": entry["defender_id"],
                    "defender": entry["defender"],
                    "clean_accuracy": clean.get("accuracy"),
                    "clean_n": clean.get("n"),
                    "robust_accuracy": robust.get("accuracy"),
                    "robust_low": interval[0],
                    "robust_high": interval[1],
                    "robust_n": robust.get("n"),
                    "strongest_attack": entry.get("strongest_attack"),
                    "robust_statistic": entry.get("robust_statistic"),
                    "failed_rows": entry.get("failed_rows", 0),
                }
            )

    def key(row: Mapping[str, Any]) -> tuple[Any, ...]:
        robust, clean = row["robust_accuracy"], row["clean_accuracy"]
        return (
            robust is None,
            -(robust or 0.0),
            clean is None,
            -(clean or 0.0),
            row["run"],
            row["defender_id"],
        )

    ranked = sorted(rows, key=key)
    return [{"rank": i, **row} for i, row in enumerate(ranked, start=1)]


def _number(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def leaderboard_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """The leaderboard as a markdown table with a note on what robust accuracy counts."""
    lines = [
        "| rank | run | dataset | classifier | defender | eps | clean | robust [95% CI] "
        "| strongest attack | n |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        robust = _number(row["robust_accuracy"])
        if row["robust_low"] is not None:
            robust += f" [{row['robust_low']:.3f}, {row['robust_high']:.3f}]"
        if row["robust_statistic"] == WORST:
            robust += " (worst case)"
        eps = "n/a" if row["eps"] is None else f"{row['eps']:g}"
        lines.append(
            f"| {row['rank']} | {row['run']} | {row['dataset']} | {row['classifier']} "
            f"| {row['defender_id']} | {eps} | {_number(row['clean_accuracy'])} | {robust} "
            f"| {row['strongest_attack'] or 'n/a'} | {row['robust_n'] or 0} |"
        )
    lines += [
        "",
        "clean: accuracy on the defended clean images. robust: accuracy under the strongest "
        "attack of the run (the lowest), with its 95% Wilson score interval and n; under a "
        "white-box attack the worst case (correct at every attack iterate and re-check draw).",
    ]
    return "\n".join(lines) + "\n"


def leaderboard_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The leaderboard as CSV, columns :data:`LEADERBOARD_COLUMNS`, empty cells for none."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LEADERBOARD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in LEADERBOARD_COLUMNS})
    return buffer.getvalue()
