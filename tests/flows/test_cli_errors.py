"""Bad input: one line on stderr naming the problem, exit status 1, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flows.cli import main
from ride.classifiers import build_classifier, save_classifier
from storage.runconfig import claim_run_dir

FAST = ["--limit", "2", "--ride-iters", "2", "--ride-checkpoints", "1"]


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(["run", *args])
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "svhn"], "unknown dataset 'svhn'; choose from: digits"),
        (["--attack", "cw"], "unknown attack 'cw'; choose from: none, fgsm, pgd"),
        (["--defender", "jpeg"], "unknown defender 'jpeg'; choose from: none, median"),
        (["--eps", "0"], "--eps must be in (0, 1], got 0.0"),
        (["--eps", "1.5"], "--eps must be in (0, 1], got 1.5"),
        (["--step", "-0.1"], "--step must be > 0, got -0.1"),
        (["--attack-iters", "0"], "--attack-iters: iters must be an int >= 1, got 0"),
        (["--ride-iters", "0"], "--ride-iters: iters must be an int >= 1, got 0"),
        (["--chunk-size", "-1"], "--chunk-size must be positive, got -1"),
        (["--limit", "0"], "--limit must be positive, got 0"),
        (["--median-kernel", "4"], "kernel"),
        (["--device", "tpu"], "--device must be cpu or cuda"),
        (["--precision", "fp16"], "--precision must be one of fp32, tf32, bf16, got fp16"),
        (["--precision", "tf32"], "--precision: tf32 needs device cuda"),
    ],
)
def test_bad_settings_fail_fast_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "run"
    code, err = run_cli(capsys, "--out", str(out), *FAST, *args)
    assert code == 1
    assert err.startswith("ride: error: ") and message in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_out_below_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(capsys, "--out", str(blocker / "run"), *FAST)
    assert code == 1 and "is not a directory" in err


def test_out_holding_another_runs_config_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    claim_run_dir(out / "run.toml", {"eps": 0.3}, frozenset({"eps"}), "0.1.0")
    code, err = run_cli(capsys, "--out", str(out), *FAST)
    assert code == 1 and "holds a different run (differs in:" in err and "eps" in err
    assert sorted(p.name for p in out.iterdir()) == ["run.toml"]


def test_corrupt_classifier_in_out_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "classifier.pt").write_bytes(b"\x00not a checkpoint")
    code, err = run_cli(capsys, "--out", str(out), *FAST)
    assert code == 1 and "classifier.pt" in err and len(err.splitlines()) == 1
    assert not (out / "results").exists()


def test_weights_for_another_network_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save({"name": "resnet50", "state_dict": {"fc.weight": torch.zeros(2, 2)}}, wrong)
    out = tmp_path / "run"
    code, err = run_cli(capsys, "--out", str(out), "--weights", str(wrong), *FAST)
    assert code == 1 and "wrong.pt" in err
    assert not out.exists()


def test_good_weights_pass_preflight(tmp_path: Path) -> None:
    from flows.cli import preflight

    weights = tmp_path / "mnist.pt"
    save_classifier(build_classifier("mnist-cnn"), weights, "mnist-cnn")
    preflight(tmp_path / "run", {"weights": str(weights)})


def test_missing_preset_and_unknown_preset_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_cli(capsys, "--config", str(tmp_path / "nope.toml"))
    assert code == 1 and "no such file" in err
    preset = tmp_path / "p.toml"
    preset.write_text("ride_iterz = 3\n")
    code, err = run_cli(capsys, "--config", str(preset), "--out", str(tmp_path / "r"))
    assert code == 1 and "unknown setting(s): ride_iterz" in err


def test_report_of_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nothing")]) == 1
    assert "has no results/ folder" in capsys.readouterr().err


def test_out_in_use_by_another_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from storage.lock import run_lock

    out = tmp_path / "run"
    out.mkdir()
    with run_lock(out):
        code, err = run_cli(capsys, "--out", str(out), *FAST)
    assert code == 1 and "is in use by ride run pid" in err and len(err.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
