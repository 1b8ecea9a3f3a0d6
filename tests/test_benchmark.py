"""The throughput benchmark runs and reports the figures the README quotes."""

from __future__ import annotations

import pytest
import torch

from benchmarks.ride_throughput import forward_flops_per_image, main


def test_flops_of_the_mnist_fcn() -> None:
    # 1-16-16-16-1 with 3x3 convs on 28x28: (16 + 256 + 256 + 16) x 9 x 784 multiply-adds.
    assert forward_flops_per_image("mnist", 28) == 2 * (16 + 256 + 256 + 16) * 9 * 784


@pytest.mark.slow
def test_benchmark_prints_a_table_and_a_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    summary = main(
        ["--size", "mnist", "--steps", "2", "--batch", "1", "3", "--reference-images", "2",
         "--processes", "2"]
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].split()[:2] == ["engine", "B"]
    assert [line.split()[0] for line in lines[2:-1]] == [
        "paper-style", "reference", "batched", "batched", "pipeline",
    ]  # fmt: skip
    assert set(summary) >= {
        "size", "device", "batch", "reference_images_per_s", "batched_images_per_s",
        "speedup", "seconds_per_image_paper_settings", "gflops", "pipeline_speedup",
    }  # fmt: skip
    assert summary["batch"] in (1, 3) and summary["seconds_per_image_paper_settings"] > 0  # type: ignore[operator]
    assert summary["precision"] == "fp32"


def test_benchmark_precision_option(capsys: pytest.CaptureFixture[str]) -> None:
    summary = main(
        ["--size", "mnist", "--steps", "2", "--batch", "2", "--reference-images", "1",
         "--processes", "0", "--precision", "bf16"]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "batched engine in bf16" in out.splitlines()[0]
    assert summary["precision"] == "bf16" and summary["batch"] == 2
    assert "pipeline_speedup" not in summary
    with pytest.raises(SystemExit):
        main(["--size", "mnist", "--precision", "tf32"])
    assert "precision 'tf32' needs a CUDA device" in capsys.readouterr().err


def test_default_batches_on_the_cpu() -> None:
    import torch

    from benchmarks.ride_throughput import default_batches

    assert default_batches("mnist", 28, torch.device("cpu")) == [1, 5, 10, 20]


def test_the_paper_style_network_is_table_3() -> None:
    from torch import nn

    from benchmarks.ride_fits import paper_style_network

    net = paper_style_network("mnist")
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [
        (1, 16),
        (16, 16),
        (16, 16),
        (16, 1),
    ]
    assert sum(isinstance(m, nn.Dropout) for m in net) == 2  # after conv2 and conv3
    assert isinstance(net[-1], nn.Sigmoid)


def test_benchmark_rows_per_layout_and_compile_mode(capsys: pytest.CaptureFixture[str]) -> None:
    from ride.defenders.ride import engines

    summary = main(
        ["--size", "mnist", "--steps", "2", "--batch", "2", "--reference-images", "1",
         "--processes", "0", "--memory-format", "channels-last", "contiguous"]
    )  # fmt: skip
    lines = capsys.readouterr().out.strip().splitlines()
    batched = [line.split() for line in lines if line.split()[0] == "batched"]
    assert [row[-1] for row in batched] == ["channels-last", "contiguous"]
    assert {row["memory_format"] for row in summary["rows"]} == {"channels-last", "contiguous"}  # type: ignore[attr-defined]
    assert summary["memory_format"] in ("channels-last", "contiguous")
    assert engines.BatchedEngine.memory_format == torch.channels_last  # put back


def test_the_engine_gives_the_same_images_in_either_layout() -> None:
    from benchmarks.ride_fits import engine_layout
    from ride.defenders.ride import Ride, engines, ride

    x = torch.rand(3, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    cfg = Ride(arch="mnist", iters=5, checkpoints=2)  # type: ignore[arg-type]
    channels_last = ride(x, cfg, [1, 2, 3], engine="batched")
    with engine_layout("contiguous"):
        assert engines.BatchedEngine.memory_format == torch.contiguous_format
        contiguous = ride(x, cfg, [1, 2, 3], engine="batched")
    torch.testing.assert_close(contiguous, channels_last, atol=1e-5, rtol=0)
