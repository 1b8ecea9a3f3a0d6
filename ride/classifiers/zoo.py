"""The classifier zoo by name: build, shapes, torchvision weight files, prediction.

The paper's two-conv CNN for MNIST, a ResNet-18 for CIFAR-10 and torchvision's ResNet50 for
ImageNet ("Classifiers"), plus VGG19 and Inception V3 (footnote 2); and the networks of the
pretrained weight files that exist here: He et al.'s CIFAR ResNets, MobileNetV2 (TFLite) and
SqueezeNet 1.1 (Keras) for ImageNet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from ride._checks import check_images
from ride.classifiers.cifar_resnets import CifarResNet
from ride.classifiers.keras_squeezenet import SQUEEZENET_FILE, CaffeSqueezeNet
from ride.classifiers.networks import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    CifarResNet18,
    MnistCNN,
    Normalize,
    NormalizedNet,
)
from ride.classifiers.tflite_net import MOBILENET_V2_FILE, GraphNet, mobilenet_v2_graph
from ride.registry import CLASSIFIERS

TORCHVISION_CLASSIFIERS: tuple[str, ...] = ("resnet50", "vgg19", "inception_v3")


@dataclass(frozen=True)
class ClassifierSpec:
    """A classifier network by name: what it takes and how to build it, untrained.

    Registered in ``ride.registry.CLASSIFIERS`` (importable here as ``CLASSIFIERS``). A
    plugin classifier is a frozen dataclass subclass with its own ``network``, named by
    import path (``my_pkg.nets:TinyNet``) or by a ``ride.classifiers`` entry point
    (:mod:`ride.plugins`): the pipeline trains it on the dataset's train split, or loads
    ``weights`` into it.
    """

    name: ClassVar[str]
    input_shape: ClassVar[tuple[int, int, int]]  # (C, H, W) the pipeline feeds it
    num_classes: ClassVar[int] = 10  # its default number of outputs

    def network(self, num_classes: int, seed: int) -> nn.Module:
        """A fresh network with ``num_classes`` outputs, its weights seeded by ``seed``."""
        raise NotImplementedError


@dataclass(frozen=True)
class MnistCNNSpec(ClassifierSpec):
    """The paper's MNIST classifier: two conv and two fully connected layers."""

    name: ClassVar[str] = "mnist-cnn"
    input_shape: ClassVar[tuple[int, int, int]] = (1, 28, 28)

    def network(self, num_classes: int, seed: int) -> nn.Module:
        return MnistCNN(num_classes=num_classes, seed=seed)


@dataclass(frozen=True)
class CifarResNet18Spec(ClassifierSpec):
    """The paper's CIFAR-10 classifier: a ResNet-18 for 32x32 images."""

    name: ClassVar[str] = "cifar-resnet18"
    input_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)

    def network(self, num_classes: int, seed: int) -> nn.Module:
        return CifarResNet18(num_classes=num_classes, seed=seed)


@dataclass(frozen=True)
class CifarResNet20Spec(ClassifierSpec):
    """He et al.'s CIFAR ResNet-20 (option-A shortcuts), for the shared pretrained checkpoint
    ``resnet20-12fca82f.th``: the paper's ResNet-18 weights do not exist here."""

    name: ClassVar[str] = "cifar-resnet20"
    input_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)
    blocks: ClassVar[int] = 3

    def network(self, num_classes: int, seed: int) -> nn.Module:
        return CifarResNet(self.blocks, num_classes=num_classes, seed=seed)


@dataclass(frozen=True)
class CifarResNet56Spec(CifarResNet20Spec):
    """He et al.'s CIFAR ResNet-56, for the shared checkpoint ``resnet56-4bfd9763.th``: the
    closest network available here to the paper's CIFAR-10 ResNet-18."""

    name: ClassVar[str] = "cifar-resnet56"
    blocks: ClassVar[int] = 9


@dataclass(frozen=True)
class TorchvisionSpec(ClassifierSpec):
    """A torchvision ImageNet network with its normalisation in front, initialised with
    torchvision's own scheme inside a forked, seeded global RNG. The paper centre-crops
    ImageNet to 224 x 224 for every network; torchvision's Inception V3 was trained on 299 x
    299 crops but pools adaptively and accepts any input of at least 75 x 75."""

    name: ClassVar[str] = "resnet50"
    input_shape: ClassVar[tuple[int, int, int]] = (3, 224, 224)
    num_classes: ClassVar[int] = 1000

    def network(self, num_classes: int, seed: int) -> nn.Module:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = _torchvision_net(self.name, num_classes)
        return _wrap_torchvision(self.name, net)


@dataclass(frozen=True)
class VGG19Spec(TorchvisionSpec):
    """torchvision's VGG19 (paper, footnote 2)."""

    name: ClassVar[str] = "vgg19"


@dataclass(frozen=True)
class InceptionV3Spec(TorchvisionSpec):
    """torchvision's Inception V3 (paper, footnote 2)."""

    name: ClassVar[str] = "inception_v3"


@dataclass(frozen=True)
class MobileNetV2Spec(ClassifierSpec):
    """MobileNetV2 1.0 for ImageNet, for the shared TFLite file
    ``mobilenet_v2_1.0_224_ptq.tflite`` (int8, dequantised into a float network of the same
    graph: :mod:`ride.classifiers.tflite_net`); pretrained only (``--weights``): no ResNet50,
    VGG19 or Inception V3 weights exist here."""

    name: ClassVar[str] = "imagenet-mobilenet-v2"
    input_shape: ClassVar[tuple[int, int, int]] = (3, 224, 224)
    num_classes: ClassVar[int] = 1000

    def network(self, num_classes: int, seed: int) -> nn.Module:
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        return GraphNet(mobilenet_v2_graph(num_classes), seed=seed)


@dataclass(frozen=True)
class SqueezeNetSpec(MobileNetV2Spec):
    """torchvision's SqueezeNet 1.1 with Caffe's input (BGR, 0..255 minus the means), for
    the shared Keras file ``squeezenet1_1_keras.h5`` (:mod:`ride.classifiers.keras_squeezenet`);
    pretrained only (``--weights``)."""

    name: ClassVar[str] = "imagenet-squeezenet1_1"

    def network(self, num_classes: int, seed: int) -> nn.Module:
        return CaffeSqueezeNet(num_classes=num_classes, seed=seed)


PRETRAINED_IMAGENET: dict[str, str] = {
    "imagenet-mobilenet-v2": MOBILENET_V2_FILE,
    "imagenet-squeezenet1_1": SQUEEZENET_FILE,
}
"""ImageNet classifiers that exist only with their pretrained file (``--weights``), never
trained here: name -> the file they load (a run's ``classifier.pt`` of them loads too)."""

CLASSIFIERS.add("mnist-cnn", MnistCNNSpec, "digits, mnist")
CLASSIFIERS.add("cifar-resnet18", CifarResNet18Spec, "cifar10")
CLASSIFIERS.add("cifar-resnet20", CifarResNet20Spec, "cifar10 (pretrained: --weights)")
CLASSIFIERS.add("cifar-resnet56", CifarResNet56Spec, "cifar10 (pretrained: --weights)")
CLASSIFIERS.add("resnet50", TorchvisionSpec, "imagenet")
CLASSIFIERS.add("vgg19", VGG19Spec, "imagenet")
CLASSIFIERS.add("inception_v3", InceptionV3Spec, "imagenet")
CLASSIFIERS.add(
    "imagenet-mobilenet-v2",
    MobileNetV2Spec,
    f"imagenet (pretrained: --weights {MOBILENET_V2_FILE})",
)
CLASSIFIERS.add(
    "imagenet-squeezenet1_1", SqueezeNetSpec, f"imagenet (pretrained: --weights {SQUEEZENET_FILE})"
)


def _torchvision_net(name: str, num_classes: int) -> nn.Module:
    """The bare torchvision network ``name`` without weights, initialised from the global RNG.

    Inception V3 is built without its auxiliary classifier (used only in training) and with
    ``transform_input=False``; see ``INCEPTION_MEAN``.
    """
    from torchvision import models

    if name == "resnet50":
        return models.resnet50(weights=None, num_classes=num_classes)
    if name == "vgg19":
        return models.vgg19(weights=None, num_classes=num_classes)
    if name == "inception_v3":
        return models.inception_v3(
            weights=None,
            num_classes=num_classes,
            aux_logits=False,
            transform_input=False,
            init_weights=True,
        )
    raise ValueError(f"unknown torchvision classifier {name!r}")


def _wrap_torchvision(name: str, net: nn.Module) -> NormalizedNet:
    if name == "inception_v3":
        return NormalizedNet(Normalize(INCEPTION_MEAN, INCEPTION_STD), net)
    return NormalizedNet(Normalize(IMAGENET_MEAN, IMAGENET_STD), net)


def classifier_spec(name: str) -> ClassifierSpec:
    """The registered classifier ``name``; ValueError naming the choices when there is none."""
    spec: ClassifierSpec = CLASSIFIERS[name].build()
    return spec


def classifier_input(name: str) -> tuple[int, int, int]:
    """Input shape ``(C, H, W)`` the pipeline feeds classifier ``name``."""
    return classifier_spec(name).input_shape


def classifier_num_classes(name: str) -> int:
    """Default number of classes of classifier ``name`` (10, or 1000 for ImageNet networks)."""
    return classifier_spec(name).num_classes


def model_num_classes(model: nn.Module) -> int:
    """Number of outputs of ``model``: the ``out_features`` of its last linear layer, or for
    a network that ends in a convolution (MobileNetV2, SqueezeNet) the ``num_classes`` it
    declares."""
    last: nn.Linear | None = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            last = module
    if last is not None:
        return int(last.out_features)
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and not isinstance(declared, bool):
        return declared
    raise ValueError(f"{type(model).__name__} has no linear output layer")


def build_classifier(name: str, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """A fresh classifier ``name`` (registered in ``CLASSIFIERS``), weights seeded by ``seed``.

    ``num_classes`` defaults to ``classifier_num_classes(name)``.

    Example:
        >>> model = build_classifier("mnist-cnn", seed=0)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """
    spec = classifier_spec(name)
    return spec.network(spec.num_classes if num_classes is None else num_classes, seed)


def torchvision_weight_files(name: str) -> tuple[str, ...]:
    """File names of torchvision's ImageNet weights for ``name``, preferred first.

    Taken from the URLs of torchvision's weight enums (ResNet50: V1 ``resnet50-0676ba61.pth``,
    the paper's 76.15% model, then V2).
    """
    if name not in TORCHVISION_CLASSIFIERS:
        choices = ", ".join(TORCHVISION_CLASSIFIERS)
        raise ValueError(f"{name!r} has no torchvision weights; choose from: {choices}")
    from torchvision import models

    enums = {
        "resnet50": (models.ResNet50_Weights.IMAGENET1K_V1, models.ResNet50_Weights.IMAGENET1K_V2),
        "vgg19": (models.VGG19_Weights.IMAGENET1K_V1,),
        "inception_v3": (models.Inception_V3_Weights.IMAGENET1K_V1,),
    }[name]
    return tuple(Path(urlparse(w.url).path).name for w in enums)


def torchvision_weights_dir() -> Path:
    """Where torch.hub stores downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def find_torchvision_weights(name: str) -> Path | None:
    """The first of ``torchvision_weight_files(name)`` present in ``torchvision_weights_dir()``."""
    folder = torchvision_weights_dir()
    for file_name in torchvision_weight_files(name):
        if (folder / file_name).is_file():
            return folder / file_name
    return None


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def predict(model: nn.Module, images: Tensor, batch_size: int = 256) -> Tensor:
    """Predicted classes (N,) int64 for ``images`` (N, C, H, W), in eval mode without grad.

    The model's train/eval mode is restored afterwards; the result is on ``images.device``.
    """
    check_images(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = _model_device(model)
    was_training = model.training
    model.eval()
    out: list[Tensor] = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device)
                out.append(model(batch).argmax(dim=1).to(images.device))
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, dtype=torch.int64, device=images.device)
    return torch.cat(out).to(torch.int64)


def accuracy(model: nn.Module, images: Tensor, labels: Tensor) -> float:
    """Share of ``images`` whose predicted class equals ``labels`` (0.0 for an empty set)."""
    if labels.shape != (images.shape[0],):
        raise ValueError(f"labels must be ({images.shape[0]},), got {tuple(labels.shape)}")
    if images.shape[0] == 0:
        return 0.0
    pred = predict(model, images)
    return float((pred == labels.to(pred.device)).float().mean())
