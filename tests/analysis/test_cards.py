"""Defence cards (card.json, schema version 2): a card from stored results that validates
against docs/card.schema.json, the robust accuracy of every attack with its last-iterate,
majority and every-draw companions, the strongest attack and its tie rule (exact for sums
of fractions), failed rows, run.toml files made before the command was recorded, and cards
or results made before 0.4.0 refused with one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pandas as pd
import pytest
from resultrows import agreeing

from analysis.cards import (
    CardError,
    build_card,
    card_schema,
    leaderboard,
    leaderboard_markdown,
    load_card,
    measure,
    strongest,
    validate_card,
    wilson_interval,
    write_card,
)
from analysis.publish import write_report
from storage.layout import RunLayout
from storage.results import SCHEMA, write_results
from storage.runconfig import claim_run_dir

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
    """The ok rows of one (attack, defender): image i correct at every draw when correct[i];
    the undefended classifier gets every image but the last right."""
    rows = [
        row(attack, defender, i, correct_clean=i != 9, **agreeing(ok), **values)
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
        [row("fgsm", "none", i, correct_clean=True, **agreeing(i < 3)) for i in range(8)],
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
    assert card["schema_version"] == 2 and card["threat_model"] == "Linf"
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
    assert pgd["statistic"] == "recheck_correct" and pgd["white_box"] is False
    assert pgd["result"]["accuracy"] == 0.4 and pgd["settings"]["step"] == 0.02
    assert (pgd["final_accuracy"], pgd["majority_accuracy"], pgd["every_draw_accuracy"]) == (
        0.4,
        0.4,
        0.4,
    )
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
    assert none["robust_statistic"] == "recheck_correct"
    # median: pgd 4/10 and fgsm 4/10; fgsm comes after pgd in the run (not alphabetically).
    median = defender(card, "median-k3")
    assert median["strongest_attack"] == "fgsm-eps0.1"
    assert median["robust_accuracy"] == attack(median, "fgsm-eps0.1")["result"]
    # 2 of 5 and 4 of 10 tie too; an attack without ok rows never wins.
    entries = [
        {"attack_id": "a", "result": {"accuracy": 2 / 5, "correct": 2, "n": 5}},
        {"attack_id": "b", "result": {"accuracy": 4 / 10, "correct": 4, "n": 10}},
        {"attack_id": "c", "result": {"accuracy": None, "correct": 0, "n": 0}},
    ]
    found = strongest(entries)
    assert found is not None and found["attack_id"] == "b"
    assert strongest([]) is None


def test_the_per_image_worst_case_counts_an_image_robust_only_against_every_attack(
    tmp_path: Path,
) -> None:
    """Both defenders are deterministic, so both gray-box attacks take part. none: pgd gets
    image 0 right of 10, fgsm images 0-2 of the 8 it finished: on those 8 only image 0
    survives both. median: pgd and fgsm get the same 4 images right."""
    card = build_card(make_run(tmp_path / "run"))
    pgd, fgsm = "pgd-eps0.1-step0.02-it10", "fgsm-eps0.1"
    worst = defender(card, "none")["worst_case_per_image"]
    assert worst["attacks"] == [pgd, fgsm] and worst["left_out"] == []  # the run's order
    assert (worst["accuracy"], worst["correct"], worst["n"]) == (0.125, 1, 8)
    assert worst["interval"] == list(wilson_interval(1, 8))
    median = defender(card, "median-k3")["worst_case_per_image"]
    assert (median["accuracy"], median["n"]) == (0.4, 10)


def fractions(values: list[float], draws: int) -> pd.DataFrame:
    """ok rows whose recheck_correct are ``values``, stored as float32 means are."""
    return pd.DataFrame(
        {
            "status": "ok",
            "recheck_draws": draws,
            "recheck_correct": [float(np.float32(v)) for v in values],
        }
    )


def test_sums_of_fractions_tie_exactly_and_keep_their_order() -> None:
    # 10 draws: 1 + 1 + 1 right of 3 images and 3 + 0 + 0 are both 0.1, though the float
    # means of the stored fractions differ (0.1000000015 and 0.1000000040); a tie goes to
    # the later attack.
    a = measure(fractions([0.1, 0.1, 0.1], 10), "recheck_correct")
    b = measure(fractions([0.3, 0.0, 0.0], 10), "recheck_correct")
    assert np.mean(fractions([0.1] * 3, 10)["recheck_correct"]) != np.mean(
        fractions([0.3, 0.0, 0.0], 10)["recheck_correct"]
    )
    assert (a["correct"], b["correct"], a["accuracy"], b["accuracy"]) == (0.3, 0.3, 0.1, 0.1)
    entries = [{"attack_id": "a", "result": a}, {"attack_id": "b", "result": b}]
    assert strongest(entries) is entries[1] and strongest(entries[::-1]) is entries[0]
    # Thirds: 1/3 of 3 images and 2/3 + 2/3 + 1/3 + 1/3 of 6 tie exactly; one draw less
    # is a lower accuracy, whatever the order.
    thirds = measure(fractions([1 / 3] * 3, 3), "recheck_correct")
    six = measure(fractions([2 / 3, 2 / 3, 1 / 3, 0, 0, 1 / 3], 3), "recheck_correct")
    assert (thirds["correct"], six["correct"], six["accuracy"]) == (1, 2, thirds["accuracy"])
    c = measure(fractions([2 / 3, 1 / 3, 1 / 3, 0, 0, 1 / 3], 3), "recheck_correct")
    assert c["correct"] == 5 / 3 and c["accuracy"] < thirds["accuracy"]
    pair = [{"attack_id": "c", "result": c}, {"attack_id": "thirds", "result": thirds}]
    assert strongest(pair) is pair[0] and strongest(pair[::-1]) is pair[0]
    # A sum that is not whole is stored as it is; the interval takes p = the mean.
    d = measure(fractions([0.5, 1.0, 1.0, 1.0], 4), "recheck_correct")
    assert d["correct"] == 3.5 and d["interval"] == list(wilson_interval(3.5, 4))


def test_failed_rows_are_excluded_from_n_and_counted(tmp_path: Path) -> None:
    card = build_card(make_run(tmp_path / "run"))
    none = defender(card, "none")
    fgsm = attack(none, "fgsm-eps0.1")["result"]
    assert (fgsm["correct"], fgsm["n"], fgsm["failed"]) == (3, 8, 2)
    assert fgsm["accuracy"] == 3 / 8
    assert none["failed_rows"] == 2 and defender(card, "median-k3")["failed_rows"] == 0
    assert card["failed_rows"] == 2


def test_white_box_attacks_count_the_robust_accuracy_and_its_companions(
    tmp_path: Path,
) -> None:
    root = tmp_path / "whitebox"
    config = {"dataset": "digits", "eps": 0.1, "attacks": ["none", "bpda-eot"]}
    root.mkdir()
    claim_run_dir(RunLayout(root).run_toml, config, frozenset(config), "0.2.0")
    store(root, "none", "median", hits(9))
    # 4 re-check draws on the iterate the attacker chose: images 0-1 right at all 4, images
    # 2-6 at 2 (no strict majority), the rest at none: robust (2 * 4 + 5 * 2) / 4 / 10 =
    # 0.45. On the final iterate 7 right at all 4 draws; the attacker's own draws (5 per
    # iterate) were all right somewhere for image 0 only.
    rows = [
        row(
            "bpda-eot",
            "median",
            i,
            correct_clean=True,
            correct_defended=i < 7,
            recheck_draws=4,
            recheck_correct=1.0 if i < 2 else 0.5 if i < 7 else 0.0,
            recheck_majority=i < 2,
            final_correct=1.0 if i < 7 else 0.0,
            correct_every_draw=i < 1,
            attacker_draws=5,
            attacker_correct=0.2 if i < 7 else 0.0,
            chosen_iteration=10,
        )
        for i in range(10)
    ]
    write_results(RunLayout(root).results, "bpda__median", rows)
    card = build_card(RunLayout(root))
    validate_card(card)
    median = defender(card, "median-k3")
    entry = attack(median, "bpda-eot5-eps0.1")
    assert entry["white_box"] is True and entry["statistic"] == "recheck_correct"
    assert entry["result"]["accuracy"] == 0.45 and entry["result"]["correct"] == 4.5
    assert entry["result"]["interval"] == list(wilson_interval(4.5, 10))
    assert (entry["final_accuracy"], entry["majority_accuracy"]) == (0.7, 0.2)
    assert entry["every_draw_accuracy"] == 0.1
    assert median["robust_statistic"] == "recheck_correct"
    assert median["robust_accuracy"] == entry["result"]
    assert median["clean_accuracy"]["accuracy"] == 0.9  # the 'none' attack, robust as well
    board = leaderboard_markdown(leaderboard([("runs/whitebox", card)]))
    assert "| 0.450 [" in board and "worst" not in board


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


def test_cards_and_results_made_before_0_4_0_are_refused_with_one_line(tmp_path: Path) -> None:
    layout = make_run(tmp_path / "run")
    write_card(layout)
    card = json.loads((layout.root / "card.json").read_text())
    (layout.root / "card.json").write_text(json.dumps({**card, "schema_version": 1}))
    with pytest.raises(CardError, match="is a version 1 card"):
        load_card(layout.root)
    # Without card.json the card is built from the results: rows without recheck_majority
    # (as an old file reads back) are refused, and `ride cards` skips the run.
    (layout.root / "card.json").unlink()
    old = [
        row("pgd", "none", i, correct_clean=True, correct_defended=False, recheck_draws=1,
            recheck_correct=0.0)
        for i in range(10)
    ]  # fmt: skip
    write_results(layout.results, "pgd__none", old)
    with pytest.raises(CardError) as raised:
        load_card(layout.root)
    assert str(raised.value).startswith(
        "results written by ride-pipeline < 0.4.0 lack recheck_majority (10 of "
    )
    assert "\n" not in str(raised.value)
