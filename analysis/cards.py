"""Defence cards: ``card.json``, one per run, and a leaderboard of many runs.

In the spirit of RobustBench's per-model entries, a card says what was evaluated (dataset,
threat model and budget, classifier, each defender and its settings), how it did (clean
accuracy, robust accuracy under each attack with n and a 95% Wilson score interval, the
strongest attack and the robust accuracy under it) and how it was made (code version,
command, times).
Everything is computed from the stored results (``results/``: per-task files or compacted,
read by :func:`storage.results.read_results`) and ``run.toml``;
``docs/card.schema.json`` documents every field and :func:`validate_card` checks a card
against it.

Every accuracy under an attack is the robust accuracy, as in the report
(:mod:`analysis.tables`): the mean over images of ``recheck_correct``, the fraction of R fresh
defender draws classified correctly on the evaluated image (for a white-box attack the
iterate the attacker chose, else the attack's output). Each attack entry names its
statistic and also gives the last-iterate, majority-vote and every-draw accuracies. Failed
rows are excluded from n and counted separately.

Schema version 2 (ride-pipeline 0.4.0): the statistic of every attack and of the clean
accuracy is ``recheck_correct`` (version 1 counted ``correct_defended``, one draw, and for
white-box attacks ``correct_worst``); a measure's ``correct`` is the sum of the per-image
fractions; ``recheck_accuracy`` (now ``result``) is gone, ``majority_accuracy`` and
``every_draw_accuracy`` are new and ``final_accuracy`` is given for every attack.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import tables
from analysis.ensemble import per_image_ensemble
from analysis.intervals import Estimate
from analysis.intervals import wilson_interval as wilson_interval  # importable from here
from storage.files import atomic_write_bytes
from storage.layout import RunLayout
from storage.results import read_results
from storage.runconfig import RunConfigMismatch, read_run_document

SCHEMA_VERSION = 2
THREAT_MODEL = "Linf"
CARD_NAME = "card.json"
SCHEMA_PATH = Path(__file__).parents[1] / "docs" / "card.schema.json"

ROBUST = tables.ROBUST
"""Statistic of every attack and of the clean images: the robust accuracy (mean fraction of
the fresh re-check draws correct on the evaluated image)."""
FINAL = "final_correct"
"""The same fraction on the attack's final output (``final_accuracy``)."""
MAJORITY = "recheck_majority"
"""The majority vote of the re-check draws is correct (``majority_accuracy``)."""
EVERY_DRAW = "correct_every_draw"
"""Correct at every re-check and attacker draw (``every_draw_accuracy``)."""

Card = dict[str, Any]


class CardError(ValueError):
    """A directory that is neither a run nor holds a readable card."""


def measure(rows: pd.DataFrame, column: str) -> dict[str, Any]:
    """Accuracy of ``column`` over the ``ok`` rows of ``rows``: accuracy (the mean of the
    per-image values, correctly rounded from their exact sum), correct (that sum: a count
    for a 0/1 column, an integer when whole), n, the 95% Wilson interval (``None`` for both
    when n is 0) and the failed rows left out."""
    ok = rows[rows["status"] == "ok"]
    failed = int((rows["status"] == "failed").sum())
    if not len(ok):
        return {"accuracy": None, "correct": 0, "n": 0, "interval": None, "failed": failed}
    return {**estimate_entry(tables.column_estimate(ok, column)), "failed": failed}


def estimate_entry(found: Estimate) -> dict[str, Any]:
    """An accuracy as a card writes it: accuracy, correct (an integer when whole), n and the
    95% Wilson interval."""
    whole = found.correct.denominator == 1
    return {
        "accuracy": found.mean,
        "correct": int(found.correct) if whole else float(found.correct),
        "n": found.n,
        "interval": [found.low, found.high],
    }


def _mean(rows: pd.DataFrame, column: str) -> float | None:
    """The accuracy of ``column`` over the ``ok`` rows (None without any)."""
    accuracy: float | None = measure(rows, column)["accuracy"]
    return accuracy


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
    return {
        "attack_id": attack_id,
        "attack": str(first["attack"]),
        "settings": _params(first["attack_params"]),
        "white_box": white_box,
        "statistic": ROBUST,
        "result": measure(rows, ROBUST),
        "final_accuracy": _mean(rows, FINAL),
        "majority_accuracy": _mean(rows, MAJORITY),
        "every_draw_accuracy": _mean(rows, EVERY_DRAW),
    }


def strongest(attacks: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The attack entry with the lowest accuracy (ties: the later attack in the given
    order); ``None`` when no attack has an ok row.

    Sound with fractions: each accuracy is the correctly rounded float of an exact rational
    (:func:`measure`), so equal accuracies (2 of 5 and 4 of 10, or sums of thirds) are equal
    floats, and distinct ones, whose denominators are at most n times the draw counts' least
    common multiple, differ by far more than a float's rounding and keep their order."""
    best: Mapping[str, Any] | None = None
    for entry in attacks:
        result = entry["result"]
        if not result["n"]:
            continue
        if best is None or result["accuracy"] <= best["result"]["accuracy"]:
            best = entry
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
    lowest = strongest(attacks)
    return {
        "defender_id": defender_id,
        "defender": str(first["defender"]),
        "settings": _params(first["defender_params"]),
        "clean_accuracy": measure(clean_rows, ROBUST) if len(clean_rows) else None,
        "undefended_clean_accuracy": measure(ok, "correct_clean") if len(ok) else None,
        "attacks": attacks,
        "strongest_attack": None if lowest is None else lowest["attack_id"],
        "robust_statistic": None if lowest is None else lowest["statistic"],
        "robust_accuracy": None if lowest is None else lowest["result"],
        "worst_case_per_image": _worst_case(rows, defender_id, attack_names),
        "failed_rows": int((rows["status"] == "failed").sum()),
    }


def _worst_case(rows: pd.DataFrame, defender_id: str, attack_names: Sequence[str]) -> Card | None:
    """The per-image worst case over the defender's attacks (:mod:`analysis.ensemble`), with
    the attacks that took part and those left out; None without two attacks taking part."""
    ensemble = per_image_ensemble(rows, defender_id, attack_names)
    if ensemble is None or len(ensemble.attacks) < 2:
        return None
    return {
        "attacks": list(ensemble.attacks),
        "left_out": list(ensemble.left_out),
        **estimate_entry(ensemble.robust),
    }


def build_card(layout: RunLayout, results: pd.DataFrame | None = None) -> Card:
    """The card of the run at ``layout`` from its results (read when not given) and
    ``run.toml``; see ``docs/card.schema.json`` for the fields."""
    frame = read_results(layout.results) if results is None else results
    tables.check_current(frame)
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
    is none yet (nothing is written). :class:`CardError` for anything else, a card of
    another schema version (its robust accuracy counts another statistic) and results
    written before ride-pipeline 0.4.0 included."""
    layout = RunLayout(run_dir)
    path = card_path(layout)
    if path.is_file():
        try:
            card = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CardError(f"{path} is unreadable: {error}") from None
        if not isinstance(card, dict) or not isinstance(card.get("defenders"), list):
            raise CardError(f"{path} is not a defence card")
        if card.get("schema_version") != SCHEMA_VERSION:
            raise CardError(
                f"{path} is a version {card.get('schema_version')} card (ride-pipeline < "
                "0.4.0), whose robust accuracy counts another statistic; rerun the run with "
                "ride-pipeline >= 0.4.0 and `ride report` it"
            )
        return card
    if not layout.results.is_dir():
        raise CardError(f"{run_dir} is not a run directory (no {CARD_NAME}, no results/)")
    try:
        return build_card(layout)
    except (RunConfigMismatch, tables.OutdatedResults) as error:  # unreadable run.toml, old rows
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
        eps = "n/a" if row["eps"] is None else f"{row['eps']:g}"
        lines.append(
            f"| {row['rank']} | {row['run']} | {row['dataset']} | {row['classifier']} "
            f"| {row['defender_id']} | {eps} | {_number(row['clean_accuracy'])} | {robust} "
            f"| {row['strongest_attack'] or 'n/a'} | {row['robust_n'] or 0} |"
        )
    lines += [
        "",
        "clean: robust accuracy on the defended clean images (the 'none' attack). robust: "
        "the robust accuracy under the strongest attack of the run (the lowest), with its 95% "
        "Wilson score interval and n: per image the fraction of fresh defender draws "
        "classified correctly (under a white-box attack on the iterate the attacker chose), "
        "averaged over the images.",
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
