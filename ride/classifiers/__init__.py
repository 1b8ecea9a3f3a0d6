"""Classifiers that carry their own input normalisation, and their checkpoints.

Every classifier takes images in [0, 1] and starts with a ``Normalize`` layer, so attacks and
defenders work in pixel units and eps means what the paper means.

- :mod:`ride.classifiers.networks`: the MNIST CNN and the CIFAR-10 ResNet-18.
- :mod:`ride.classifiers.zoo`: every network by name (``build_classifier``), torchvision's
  ImageNet networks, prediction.
- :mod:`ride.classifiers.checkpoints`: ``classifier.pt`` files, torchvision weight files and
  the published pretrained files (CIFAR ResNets; ImageNet's MobileNetV2 in TFLite,
  :mod:`ride.classifiers.tflite_net`, and SqueezeNet 1.1 in Keras HDF5,
  :mod:`ride.classifiers.keras_squeezenet`).
"""

from __future__ import annotations

from ride.classifiers.checkpoints import (
    CheckpointError,
    atomic_torch_save,
    classifier_from_torchvision_state,
    classifier_from_weight_file,
    load_classifier,
    load_torchvision_weights,
    save_classifier,
)
from ride.classifiers.networks import (
    CIFAR_MEAN,
    CIFAR_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    INCEPTION_MEAN,
    INCEPTION_STD,
    MNIST_MEAN,
    MNIST_STD,
    CifarResNet18,
    MnistCNN,
    Normalize,
    NormalizedNet,
)
from ride.classifiers.zoo import (
    CLASSIFIERS,
    PRETRAINED_IMAGENET,
    TORCHVISION_CLASSIFIERS,
    ClassifierSpec,
    accuracy,
    build_classifier,
    classifier_input,
    classifier_num_classes,
    classifier_spec,
    find_torchvision_weights,
    model_num_classes,
    predict,
    torchvision_weight_files,
    torchvision_weights_dir,
)

__all__ = [
    "CIFAR_MEAN",
    "CIFAR_STD",
    "CLASSIFIERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "INCEPTION_MEAN",
    "INCEPTION_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "PRETRAINED_IMAGENET",
    "TORCHVISION_CLASSIFIERS",
    "CheckpointError",
    "CifarResNet18",
    "ClassifierSpec",
    "MnistCNN",
    "Normalize",
    "NormalizedNet",
    "accuracy",
    "atomic_torch_save",
    "build_classifier",
    "classifier_from_torchvision_state",
    "classifier_from_weight_file",
    "classifier_input",
    "classifier_num_classes",
    "classifier_spec",
    "find_torchvision_weights",
    "load_classifier",
    "load_torchvision_weights",
    "model_num_classes",
    "predict",
    "save_classifier",
    "torchvision_weight_files",
    "torchvision_weights_dir",
]
