"""The command-line reference page (docs/reference/cli.md) is what the parsers give now, and
``ride train``'s options are derived from the training settings' declarations."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from flows.cli import build_parser
from flows.cli_reference import PAGE, escape, main, render
from flows.train_options import FIRST, help_text, train_fields
from pipeline.train import TrainSettings
from ride.plugins import ENTRY_POINT_GROUPS


def test_the_committed_page_is_what_the_parsers_give() -> None:
    if any(entry_points().select(group=group) for group in ENTRY_POINT_GROUPS):
        pytest.skip("installed plugins add their settings to ride run; the page has none")
    assert PAGE.read_text() == render(), "docs/reference/cli.md is stale: see its first line"
    assert main(["--check"]) == 0


def test_check_reports_a_stale_page(tmp_path: Path) -> None:
    stale = tmp_path / "cli.md"
    stale.write_text("# Command line\n")
    assert main(["--check", "--out", str(stale)]) == 1
    assert main(["--out", str(stale)]) == 0
    assert main(["--check", "--out", str(stale)]) == 0


def test_the_page_has_every_subcommand_and_option() -> None:
    page = render()
    parser = build_parser([])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f"\n## ride {name}\n" in page
        for action in command._actions:
            for flag in action.option_strings:
                assert flag in page or flag in ("-h", "--help"), (name, flag)


def test_markup_is_escaped_outside_code_spans() -> None:
    assert escape("lr_decay^t | `a_b|c` [x] *y* <z>") == (
        r"lr\_decay^t \| `a_b\|c` \[x\] \*y\* \<z\>"
    )


def test_every_training_setting_is_a_ride_train_option() -> None:
    """One option per TrainSettings field, with the field's help and type; the dataset and
    its folder and network first, then --out, then the rest as declared."""
    declared = [f.name for f in fields(TrainSettings)]
    listed = [f.name for f in train_fields()]
    assert sorted(listed) == sorted(declared)
    assert listed[: len(FIRST)] == list(FIRST)
    assert listed[len(FIRST) :] == [name for name in declared if name not in FIRST]
    train = next(
        a for a in build_parser([])._actions if isinstance(a, argparse._SubParsersAction)
    ).choices["train"]
    options = {a.dest: a for a in train._actions}
    order = [a.dest for a in train._actions if a.dest != "help"]
    assert order == [*FIRST, "out", *listed[len(FIRST) :]]
    for f in train_fields():
        action = options[f.name]
        assert action.help == help_text(f) and action.type is f.metadata["kind"]
        assert action.default is None  # unset options leave the settings' defaults
        assert action.required == (f.default is MISSING and f.name == "dataset")


def test_a_help_gets_its_default_unless_it_states_it() -> None:
    by_name = {f.name: f for f in fields(TrainSettings)}
    assert help_text(by_name["epochs"]) == "epochs in total (default 10)"
    assert help_text(by_name["lr_decay_steps"]).endswith(
        "(default 938: an epoch of MNIST at batch 64)"
    )
    assert help_text(by_name["classifier"]).endswith("(default: the dataset's)")
    assert "(default" not in help_text(by_name["data_dir"])


def test_the_execution_settings_are_the_declared_ones() -> None:
    """The fields declared ``execution`` are TrainSettings.EXECUTION_KEYS, the settings a
    resumed training may change."""
    declared = {f.name for f in fields(TrainSettings) if f.metadata.get("execution")}
    assert declared == TrainSettings.EXECUTION_KEYS
