"""He et al.'s CIFAR ResNets (ride/classifiers/cifar_resnets.py): shapes, sizes, the option-A
shortcut's values, gradients, batching, errors."""

from __future__ import annotations

import pytest
import torch

from ride.classifiers import build_classifier, classifier_input
from ride.classifiers.cifar_resnets import CifarResNet, OptionABlock, blocks_of


@pytest.mark.parametrize(("blocks", "parameters"), [(3, 269_722), (9, 853_018)])
def test_depth_and_size_are_he_et_al_s(blocks: int, parameters: int) -> None:
    """6n + 2 layers: ResNet-20 has 0.27 M parameters, ResNet-56 0.85 M (He et al., Table 6)."""
    net = CifarResNet(blocks)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    assert convs + 1 == 6 * blocks + 2  # the convolutions and the linear layer
    assert sum(p.numel() for p in net.parameters()) == parameters
    assert blocks_of(list(net.state_dict())) == blocks


@pytest.mark.parametrize("name", ["cifar-resnet20", "cifar-resnet56"])
def test_registered_networks_take_cifar_images_in_0_1(name: str) -> None:
    assert classifier_input(name) == (3, 32, 32)
    net = build_classifier(name, seed=0).eval()
    assert net(torch.rand(4, 3, 32, 32)).shape == (4, 10)
    assert blocks_of(list(net.state_dict())) == {"cifar-resnet20": 3, "cifar-resnet56": 9}[name]


def test_option_a_shortcut_subsamples_and_pads_channels_with_zeros() -> None:
    block = OptionABlock(16, 32, stride=2)
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).view(2, 16, 4, 4)
    skip = block.shortcut(x)  # (2, 32, 2, 2)
    assert skip.shape == (2, 32, 2, 2)
    assert torch.equal(skip[:, 8:24], x[:, :, ::2, ::2])
    assert not skip[:, :8].any() and not skip[:, 24:].any()
    layers = {name.split(".")[0] for name, _ in block.named_parameters()}
    assert layers == {"conv1", "bn1", "conv2", "bn2"}  # the shortcut has no weights


def test_identity_shortcut_where_the_shape_stays() -> None:
    x = torch.rand(1, 16, 8, 8)
    assert OptionABlock(16, 16, stride=1).shortcut(x) is x


def test_input_gradient_is_finite_and_not_zero() -> None:
    net = CifarResNet(3, seed=1).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    net(x)[:, 3].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_batched_equals_one_by_one_in_eval_mode() -> None:
    net = CifarResNet(3, seed=2).eval()
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        whole = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-5)


def test_the_same_seed_gives_the_same_weights() -> None:
    a, b, c = CifarResNet(3, seed=5), CifarResNet(3, seed=5), CifarResNet(3, seed=6)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"blocks": 0}, "blocks must be >= 1"), ({"blocks": 3, "num_classes": 1}, "num_classes")],
)
def test_bad_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CifarResNet(**kwargs)
