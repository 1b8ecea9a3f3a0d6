"""The classifier zoo: CIFAR ResNet-18 and the torchvision ImageNet networks and weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torchvision import models

from ride.classifiers import (
    CIFAR_MEAN,
    CIFAR_STD,
    CLASSIFIERS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    TORCHVISION_CLASSIFIERS,
    CheckpointError,
    CifarResNet18,
    Normalize,
    NormalizedNet,
    build_classifier,
    classifier_from_torchvision_state,
    classifier_input,
    classifier_num_classes,
    find_torchvision_weights,
    load_classifier,
    load_torchvision_weights,
    model_num_classes,
    predict,
    save_classifier,
    torchvision_weight_files,
)


@pytest.fixture(autouse=True)
def _two_threads() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def normalized(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


def assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_registry() -> None:
    assert CLASSIFIERS.names() == (
        "mnist-cnn",
        "cifar-resnet18",
        "cifar-resnet20",
        "cifar-resnet56",
        "resnet50",
        "vgg19",
        "inception_v3",
        "imagenet-mobilenet-v2",
        "imagenet-squeezenet1_1",
    )
    assert classifier_input("mnist-cnn") == (1, 28, 28)
    assert classifier_input("cifar-resnet18") == (3, 32, 32)
    for name in TORCHVISION_CLASSIFIERS:
        assert classifier_input(name) == (3, 224, 224)
        assert classifier_num_classes(name) == 1000
    assert classifier_num_classes("cifar-resnet18") == 10
    with pytest.raises(ValueError, match="unknown classifier 'resnet'"):
        classifier_input("resnet")
    assert torchvision_weight_files("resnet50") == (
        "resnet50-0676ba61.pth",
        "resnet50-11ad3fa6.pth",
    )
    assert torchvision_weight_files("vgg19") == ("vgg19-dcbb9e9d.pth",)
    assert torchvision_weight_files("inception_v3") == ("inception_v3_google-0cc3c7bd.pth",)
    with pytest.raises(ValueError, match="has no torchvision weights"):
        torchvision_weight_files("mnist-cnn")


# ------------------------------------------------------------------------------- cifar-resnet18


def test_cifar_resnet18_architecture_and_seeded_init() -> None:
    model = build_classifier("cifar-resnet18", seed=1).eval()
    assert isinstance(model, CifarResNet18)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    layers = (model.layer1, model.layer2, model.layer3, model.layer4)
    assert [len(layer) for layer in layers] == [2, 2, 2, 2]
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert sorted(set(widths)) == [64, 128, 256, 512] and model.fc.in_features == 512
    assert sum(p.numel() for p in model.parameters()) == 11_173_962  # the usual CIFAR ResNet-18
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, 10)
        # Normalize (CIFAR mean / std) sits in front of the network
        assert isinstance(model.normalize, Normalize)
        model.normalize = nn.Identity()  # type: ignore[assignment]
        assert torch.allclose(model(normalized(x, CIFAR_MEAN, CIFAR_STD)), out, atol=1e-5)
    assert_same_state(
        build_classifier("cifar-resnet18", seed=1), build_classifier("cifar-resnet18", seed=1)
    )
    other = build_classifier("cifar-resnet18", seed=2)
    assert not torch.equal(other.state_dict()["conv1.weight"], model.state_dict()["conv1.weight"])
    assert build_classifier("cifar-resnet18", num_classes=7)(x).shape == (2, 7)


def test_cifar_resnet18_checkpoints(tmp_path: Path) -> None:
    model = build_classifier("cifar-resnet18", seed=3)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32))  # moves the BN running statistics
    path = tmp_path / "cifar.pt"
    save_classifier(model, path, "cifar-resnet18")
    loaded = load_classifier(path, "cifar-resnet18")
    assert not loaded.training and model_num_classes(loaded) == 10
    model.eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # our mnist-cnn checkpoint is not a cifar-resnet18 one, and vice versa
    mnist = tmp_path / "mnist.pt"
    save_classifier(build_classifier("mnist-cnn"), mnist, "mnist-cnn")
    with pytest.raises(CheckpointError, match="holds classifier 'mnist-cnn', not 'cifar-resnet18'"):
        load_classifier(mnist, "cifar-resnet18")
    with pytest.raises(CheckpointError, match="holds classifier 'cifar-resnet18', not 'mnist-cnn'"):
        load_classifier(path, "mnist-cnn")
    # a bare state_dict is only accepted for torchvision networks
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    with pytest.raises(CheckpointError, match="is a bare state_dict; only resnet50"):
        load_classifier(tmp_path / "bare.pt", "cifar-resnet18")


# --------------------------------------------------------------------------------- torchvision


def torchvision_reference(name: str, seed: int, **kwargs: object) -> nn.Module:
    torch.manual_seed(seed)
    return getattr(models, name)(weights=None, **kwargs).eval()


def test_resnet50_build_and_normalize_in_front() -> None:
    model = build_classifier("resnet50", seed=4).eval()
    assert isinstance(model, NormalizedNet) and isinstance(model.net, models.ResNet)
    assert isinstance(model[0], Normalize)
    reference = torchvision_reference("resnet50", seed=4)
    assert_same_state(model.net, reference)  # seeded exactly like torchvision under that seed
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000)
        assert torch.allclose(out, reference(normalized(x, IMAGENET_MEAN, IMAGENET_STD)))
    assert model_num_classes(model) == 1000
    assert build_classifier("resnet50", num_classes=5)(torch.rand(2, 3, 64, 64)).shape == (2, 5)


@pytest.mark.slow
def test_resnet50_torchvision_weight_file(tmp_path: Path) -> None:
    reference = torchvision_reference("resnet50", seed=5)
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(reference.state_dict(), path)
    model = load_classifier(path, "resnet50")
    assert not model.training
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        expected = reference(normalized(x, IMAGENET_MEAN, IMAGENET_STD))
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert torch.equal(predict(model, x), expected.argmax(1))
    # our own format round-trips too (keys under net.)
    ours = tmp_path / "ours.pt"
    save_classifier(model, ours, "resnet50")
    with torch.no_grad():
        assert torch.equal(load_classifier(ours, "resnet50")(x), model(x))
    # the same file is not a VGG19 or Inception V3
    for other in ("vgg19", "inception_v3"):
        with pytest.raises(CheckpointError, match=f"does not fit '{other}': missing keys") as info:
            load_classifier(path, other)
        assert "\n" not in str(info.value)
    # truncated and garbage files
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(path.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*truncated.pth") as info:
        load_classifier(truncated, "resnet50")
    assert "\n" not in str(info.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 1000)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_classifier(garbage, "resnet50")
    # a state_dict of another shape (a ResNet-18) and of another class count
    torch.save(models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match="does not fit 'resnet50'"):
        load_classifier(tmp_path / "r18.pth", "resnet50")
    state = reference.state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"layer1\.0\.conv1\.weight has shape \(3, 3\)"):
        load_classifier(tmp_path / "shape.pth", "resnet50")


@pytest.mark.slow
def test_vgg19_build_and_torchvision_state() -> None:
    built = build_classifier("vgg19", seed=6).eval()
    assert isinstance(built, NormalizedNet) and isinstance(built.net, models.VGG)
    bare = built.net  # a plain torchvision VGG19: its state_dict has torchvision's key names
    model = classifier_from_torchvision_state("vgg19", bare.state_dict())
    assert isinstance(model, NormalizedNet) and not model.training
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000)
        assert torch.allclose(out, bare(normalized(x, IMAGENET_MEAN, IMAGENET_STD)), atol=1e-5)
    with pytest.raises(CheckpointError, match="does not fit 'resnet50'"):
        classifier_from_torchvision_state("resnet50", bare.state_dict())


def test_inception_v3_with_aux_logits_weight_file(tmp_path: Path) -> None:
    # torchvision's pretrained file holds the auxiliary classifier; the pretrained model runs
    # with transform_input=True on ImageNet-normalised inputs
    reference = torchvision_reference(
        "inception_v3", seed=7, aux_logits=True, transform_input=True, init_weights=True
    )
    state = reference.state_dict()
    assert any(k.startswith("AuxLogits.") for k in state)
    path = tmp_path / "inception_v3_google-0cc3c7bd.pth"
    torch.save(state, path)
    model = load_classifier(path, "inception_v3")
    assert isinstance(model, NormalizedNet) and isinstance(model.net, models.Inception3)
    assert not any(k.startswith("net.AuxLogits") for k in model.state_dict())
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        out = model(x)
        assert isinstance(out, Tensor) and out.shape == (1, 1000)
        expected = reference(normalized(x, IMAGENET_MEAN, IMAGENET_STD))
        # random BN statistics make the logits huge; compare relative to their scale
        assert torch.allclose(out, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    # training mode also returns plain logits (no auxiliary output)
    model.train()
    assert isinstance(model(torch.rand(2, 3, 80, 80)), Tensor)


def test_find_torchvision_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert find_torchvision_weights("resnet50") is None
    with pytest.raises(CheckpointError, match=r"no torchvision weights for 'resnet50' in .*torch"):
        load_torchvision_weights("resnet50")
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    v2 = checkpoints / "resnet50-11ad3fa6.pth"
    torch.save(torchvision_reference("resnet50", seed=8).state_dict(), v2)
    assert find_torchvision_weights("resnet50") == v2
    v1 = checkpoints / "resnet50-0676ba61.pth"
    v1.write_bytes(v2.read_bytes())
    assert find_torchvision_weights("resnet50") == v1  # V1 (the paper's model) preferred
    assert find_torchvision_weights("vgg19") is None
    model = load_torchvision_weights("resnet50")
    assert model_num_classes(model) == 1000 and not model.training


def test_a_registered_classifier_spec_is_built_by_name() -> None:
    from dataclasses import dataclass
    from typing import ClassVar

    from ride.classifiers import ClassifierSpec, build_classifier

    @dataclass(frozen=True)
    class TinyMLP(ClassifierSpec):
        name: ClassVar[str] = "tiny-mlp"
        input_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

        def network(self, num_classes: int, seed: int) -> nn.Module:
            torch.manual_seed(seed)
            return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))

    CLASSIFIERS.add("tiny-mlp", TinyMLP, "a test network")
    try:
        assert classifier_input("tiny-mlp") == (1, 28, 28)
        assert build_classifier("tiny-mlp", num_classes=3)(torch.zeros(2, 1, 28, 28)).shape == (
            2,
            3,
        )
    finally:
        CLASSIFIERS.remove("tiny-mlp")
