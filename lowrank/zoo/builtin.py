"""The zoo entries trained here, on this project's CPU, from recorded seeds."""
from __future__ import annotations

from .archs import LeNet5, ResNet, vgg_style
from .entry import ZooEntry

ENTRIES = [
    ZooEntry(
        "lenet5-fmnist", "LeNet-5 (61.7k params) trained on Fashion-MNIST", LeNet5, "fashion-mnist", "top-1 accuracy",
        {"epochs": 10, "lr": 3e-3, "seed": 0},
        sha256="8c7673e7308c051e5b7fc91af221e53757043401798352a028ab52dae79a525b", recorded_metric=0.896,
    ),
    ZooEntry(
        "lenet5-digits", "LeNet-5 trained on scikit-learn's 8x8 digits upsampled to 28x28: seconds to compress and "
        "evaluate, needs no system package (quick sweeps, tests)", LeNet5, "digits", "top-1 accuracy",
        {"epochs": 30, "lr": 3e-3, "seed": 0, "augment": False},
        sha256="e91b3ff2eb792b18b7ebf7ef6bc714e776ce3942cd95af9220bf84a623766e28", recorded_metric=0.9633,
    ),
    ZooEntry(
        "vgg-fmnist", "VGG-style, 6 conv + BatchNorm, width 32, 1024-wide classifier (1.5M params), trained on Fashion-MNIST",
        lambda: vgg_style(width=32, hidden=1024), "fashion-mnist", "top-1 accuracy", {"epochs": 4, "lr": 3e-3, "seed": 0},
        sha256="21151e05ac7995fce6056c0f2a8265f2c27be33b87a608732d2c2235d942c20c", recorded_metric=0.9228,
    ),
    ZooEntry(
        "resnet20-fmnist", "CIFAR-style ResNet-20 (272k params) adapted to 1-channel Fashion-MNIST",
        lambda: ResNet(blocks=3, width=16), "fashion-mnist", "top-1 accuracy", {"epochs": 4, "lr": 3e-3, "seed": 0},
        sha256="892ce6a216856abe98ce0a893ba9ff24dc97952f7732d33ab1be74d4318061b9", recorded_metric=0.9189,
    ),
]
