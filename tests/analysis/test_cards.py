"""Defence cards (card.json): the Wilson interval, a card from stored results that validates
against docs/card.schema.json, the strongest attack and its tie rule, failed rows, white-box
statistics and run.toml files made before the command was recorded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from analysis.cards import (
    build_card,
    card_schema,
    load_card,
    strongest,
    validate_card,
    wilson_interval,
    write_card,
)
from analysis.publish import write_report
from storage.layout import RunLayout
from storage.results import SCHEMA, write_results
from storage.runconfig import claim_run_dir

# Hand-computed: p = c/n, z = 1.96, z^2 = 3.8416;
# (p + z^2/2n) / (1 + z^2/n) -+ z / (1 + z^2/n) * sqrt(p(1-p)/n + z^2/4n^2).
KNOWN = [
    (0, 10, 0.0, 0.27754),  # centre 0.13877, half 0.13877
    (10, 10, 0.72246, 1.0),
    (5, 10, 0.23659, 0.76341),  # centre 0.5, half 0.26341
    (1, 10, 0.01788, 0.40415),  # centre 0.21102, half 0.19314
    (95, 100, 0.88825, 0.97846),  # centre 0.93336, half 0.04510
]


@pytest.mark.parametrize(("correct", "n", "low", "high"), KNOWN)
def test_wilson_interval_known_values(correct: int, n: int, low: float, high: float) -> None:
    got = wilson_interval(correct, n)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_wilson_interval_is_exact_at_the_ends_symmetric_and_narrows_with_n() -> None:
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    low, high = wilson_interval(3, 17)
    assert (1 - high, 1 - low) == pytest.approx(wilson_interval(14, 17))
    assert low < 3 / 17 < high
    wide, narrow = wilson_interval(5, 10), wilson_interval(500, 1000)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]
    assert wilson_interval(5, 10, z=2.576)[0] < wilson_interval(5, 10)[0]  # 99% is wider
    for bad in ((1, 0), (-1, 10), (11, 10)):
        with pytest.raises(ValueError):
            wilson_interval(*bad)


ATTACKS = {
    "none": ("none", {"name": "none"}),
    "pgd": ("pgd-eps0.1-step0.02-it10", {"eps": 0.1, "iters": 10, "name": "pgd", "step": 0.02}),
    "fgsm": ("fgsm-eps0.1", {"eps": 0.1, "name": "fgsm"}),
    "bpda-eot": ("bpda-eot5-eps0.1", {"eot": 5, "eps": 0.1, "name": "bpda-eot"}),
}
DEFENDERS = {
    "none": ("none", {"name": "none"}),
    "median": ("median-k3", {"kernel": 3, "name": "median"}),
}


def row(attack: str, defender: str, index: int, **values: Any) -> dict[str, Any]:
    """One result row with every schema column (unset ones empty)."""
    attack_id, attack_params = ATTACKS[attack]
    defender_id, defender_params = DEFENDERS[defender]
    base: dict[str, Any] = dict.fromkeys(SCHEMA.names)
    base.update(
        run_id="digits-0123456789",
        dataset="digits",
        index=index,
        label=index % 10,
        attack_id=attack_id,
        attack=attack,
        attack_params=json.dumps(attack_params, sort_keys=True),
        defender_id=defender_id,
        defender=defender,
        defender_params=json.dumps(defender_params, sort_keys=True),
        seed=0,
        status="ok",
    )
    base.update(values)
    return base


def store(root: Path, attack: str, defender: str, correct: list[bool], **values: Any) -> None:
    """The ok rows of one (attack, defender): image i correct_defended = correct[i]; the
    undefended classifier gets every image but the last right."""
    rows = [
        row(
            attack,
            defender,
            i,
            correct_clean=i != 9,
            correct_defended=ok,
            correct_worst=ok,
            **values,
        )
        for i, ok in enumerate(correct)
    ]
    write_results(RunLayout(root).results, f"{attack}__{defender}", rows)


def hits(k: int, n: int = 10) -> list[bool]:
    return [i < k for i in range(n)]


def make_run(root: Path, command: str | None = "ride run --out runs/x --limit 10") -> RunLayout:
    """A digits run of 10 images: attacks none, pgd, fgsm (in that order), defenders none and
    median-k3. none: clean 9/10, pgd 1/10, fgsm 3 of 8 (2 failed rows). median: clean 8/10,
    pgd 4/10 and fgsm 4/10 (a tie)."""
    layout = RunLayout(root)
    config = {
        "dataset": "digits",
        "classifier": "mnist-cnn",
        "seed": 0,
        "limit": 10,
        "eps": 0.1,
        "attacks": ["none", "pgd", "fgsm"],
        "defenders": ["none", "median"],
    }
    root.mkdir(parents=True, exist_ok=True)
    claim_run_dir(layout.run_toml, config, frozenset(config), "0.2.0", command)
    store(root, "none", "none", hits(9))
    store(root, "none", "median", hits(8))
    store(root, "pgd", "none", hits(1))
    store(root, "pgd", "median", hits(4))
    store(root, "fgsm", "median", hits(4))
    fgsm = RunLayout(root).results
    write_results(
        fgsm,
        "fgsm__none__ok",
        [row("fgsm", "none", i, correct_clean=True, correct_defended=i < 3) for i in range(8)],
    )
    write_results(
        fgsm,
        "fgsm__none__failed",
        [row("fgsm", "none", i, status="failed", error="RuntimeError: boom") for i in (8, 9)],
    )
    return layout


def defender(card: dict[str, Any], defender_id: str) -> dict[str, Any]:
    return next(d for d in card["defenders"] if d["defender_id"] == defender_id)


def attack(entry: dict[str, Any], attack_id: str) -> dict[str, Any]:
    return next(a for a in entry["attacks"] if a["attack_id"] == attack_id)


def test_card_of_a_run_validates_against_the_schema(tmp_path: Path) -> None:
    card = build_card(make_run(tmp_path / "run"))
    validate_card(card)
    assert card["schema_version"] == 1 and card["threat_model"] == "Linf"
    assert (card["run_id"], card["dataset"], card["classifier"]) == (
        "digits-0123456789",
        "digits",
        "mnist-cnn",
    )
    assert (card["eps"], card["fgsm_eps"], card["seed"], card["images"]) == (0.1, None, 0, 10)
    assert card["code_version"] == "0.2.0" and card["command"] == "ride run --out runs/x --limit 10"
    assert card["attack_order"] == ["none", "pgd-eps0.1-step0.02-it10", "fgsm-eps0.1"]
    assert [d["defender_id"] for d in card["defenders"]] == ["none", "median-k3"]
    median = defender(card, "median-k3")
    assert median["settings"] == {"kernel": 3, "name": "median"}
    assert median["clean_accuracy"]["accuracy"] == 0.8 and median["clean_accuracy"]["n"] == 10
    assert median["clean_accuracy"]["interval"] == pytest.approx(list(wilson_interval(8, 10)))
    assert median["undefended_clean_accuracy"]["accuracy"] == 0.9
    assert card["undefended_clean_accuracy"] == {
        "accuracy": 0.9,
        "correct": 9,
        "n": 10,
        "interval": list(wilson_interval(9, 10)),
        "failed": 0,
    }
    pgd = attack(median, "pgd-eps0.1-step0.02-it10")
    assert pgd["statistic"] == "correct_defended" and pgd["white_box"] is False
    assert pgd["result"]["accuracy"] == 0.4 and pgd["settings"]["step"] == 0.02
    assert [a["attack_id"] for a in median["attacks"]] == card["attack_order"][1:]
    json.dumps(card, allow_nan=False)  # plain JSON: no NaN anywhere


def test_the_schema_rejects_a_broken_card(tmp_path: Path) -> None:
    jsonschema.Draft202012Validator.check_schema(card_schema())
    card = build_card(make_run(tmp_path / "run"))
    for broken in (
        {**card, "threat_model": "L2"},
        {**card, "extra": 1},
        {k: v for k, v in card.items() if k != "command"},
        {**card, "defenders": [{**card["defenders"][0], "robust_accuracy": {"accuracy": 2}}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            validate_card(broken)


def test_strongest_attack_is_the_lowest_and_a_tie_goes_to_the_later_attack(
    tmp_path: Path,
) -> None:
    card = build_card(make_run(tmp_path / "run"))
    none = defender(card, "none")
    assert none["strongest_attack"] == "pgd-eps0.1-step0.02-it10"
    assert none["robust_accuracy"]["accuracy"] == 0.1
    assert none["robust_statistic"] == "correct_defended"
    # median: pgd 4/10 and fgsm 4/10; fgsm comes after pgd in the run (not alphabetically).
    median = defender(card, "median-k3")
    assert median["strongest_attack"] == "fgsm-eps0.1"
    assert median["robust_accuracy"] == attack(median, "fgsm-eps0.1")["result"]
    # Exact fractions: 2/5 and 4/10 tie too; an attack without ok rows never wins.
    entries = [
        {"attack_id": "a", "result": {"correct": 2, "n": 5}},
        {"attack_id": "b", "result": {"correct": 4, "n": 10}},
        {"attack_id": "c", "result": {"correct": 0, "n": 0}},
    ]
    found = strongest(entries)
    assert found is not None and found["attack_id"] == "b"
    assert strongest([]) is None


def test_failed_rows_are_excluded_from_n_and_counted(tmp_path: Path) -> None:
    card = build_card(make_run(tmp_path / "run"))
    none = defender(card, "none")
    fgsm = attack(none, "fgsm-eps0.1")["result"]
    assert (fgsm["correct"], fgsm["n"], fgsm["failed"]) == (3, 8, 2)
    assert fgsm["accuracy"] == 3 / 8
    assert none["failed_rows"] == 2 and defender(card, "median-k3")["failed_rows"] == 0
    assert card["failed_rows"] == 2


def test_white_box_attacks_count_the_worst_case_and_say_so(tmp_path: Path) -> None:
    root = tmp_path / "whitebox"
    config = {"dataset": "digits", "eps": 0.1, "attacks": ["none", "bpda-eot"]}
    root.mkdir()
    claim_run_dir(RunLayout(root).run_toml, config, frozenset(config), "0.2.0")
    store(root, "none", "median", hits(9))
    # Final draw right for 7, robust at every iterate and re-check draw for 2.
    rows = [
        row(
            "bpda-eot",
            "median",
            i,
            correct_clean=True,
            correct_defended=i < 7,
            correct_worst=i < 2,
            recheck_correct=0.5 if i < 7 else 0.0,
            recheck_draws=4,
        )
        for i in range(10)
    ]
    write_results(RunLayout(root).results, "bpda__median", rows)
    card = build_card(RunLayout(root))
    validate_card(card)
    median = defender(card, "median-k3")
    entry = attack(median, "bpda-eot5-eps0.1")
    assert entry["white_box"] is True and entry["statistic"] == "correct_worst"
    assert entry["result"]["accuracy"] == 0.2
    assert entry["final_accuracy"] == 0.7 and entry["recheck_accuracy"] == 0.35
    assert median["robust_statistic"] == "correct_worst"
    assert median["robust_accuracy"]["accuracy"] == 0.2


def test_a_run_toml_without_command_gives_a_null_command(tmp_path: Path) -> None:
    root = tmp_path / "old"
    layout = make_run(root, command=None)
    assert "command" not in layout.run_toml.read_text()
    # As written by 0.2.0, before the field existed.
    layout.run_toml.write_text(
        'code_version = "0.2.0"\nstarted = "2026-12-01T10:00:00+00:00"\n\n'
        '[config]\ndataset = "digits"\neps = 0.1\nattacks = ["none", "pgd", "fgsm"]\n'
    )
    card = build_card(layout)
    validate_card(card)
    assert card["command"] is None and card["started"] == "2026-12-01T10:00:00+00:00"
    assert card["classifier"] is None  # not in that run.toml


def test_a_resume_keeps_the_first_command(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    config = {"eps": 0.1, "workers": 2}
    claim_run_dir(path, config, frozenset({"eps"}), "0.2.0", "ride run --out a")
    claim_run_dir(path, {**config, "workers": 4}, frozenset({"eps"}), "0.2.0", "ride run -x")
    text = path.read_text()
    assert 'command = "ride run --out a"' in text and "ride run -x" not in text


def test_report_writes_the_card_and_load_card_reads_or_builds_it(tmp_path: Path) -> None:
    layout = make_run(tmp_path / "run")
    built = load_card(layout.root)  # no card.json yet: built, nothing written
    assert not (layout.root / "card.json").exists()
    write_report(layout)
    written = json.loads((layout.root / "card.json").read_text())
    validate_card(written)
    assert written["defenders"] == built["defenders"]
    assert load_card(layout.root) == written
    write_card(layout)
    assert not [p for p in layout.root.iterdir() if p.name.startswith(".")]  # atomic, no tmp
