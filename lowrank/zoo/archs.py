"""Small architectures that cover the layer types lowrank must handle (1-channel 28x28 input)."""
from __future__ import annotations

from torch import nn


def mlp(in_features: int = 784, hidden: int = 256, classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, classes),
    )


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 inputs (padding 2 on the first conv)."""

    def __init__(self, in_channels: int = 1, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(),
            nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def vgg_style(width: int = 32, in_channels: int = 1, classes: int = 10, hidden: int = 256) -> nn.Module:
    """Six 3x3 conv + BatchNorm layers in three stages, then a two-layer classifier."""
    layers, c = [], in_channels
    for i, mult in enumerate((1, 1, 2, 2, 4, 4)):
        layers += [nn.Conv2d(c, width * mult, 3, padding=1, bias=False), nn.BatchNorm2d(width * mult), nn.ReLU()]
        c = width * mult
        if i % 2 == 1:  # 28 -> 14 -> 7 -> 3
            layers.append(nn.MaxPool2d(2))
    return nn.Sequential(
        *layers, nn.Flatten(), nn.Linear(c * 3 * 3, hidden), nn.ReLU(), nn.Dropout(0.3), nn.Linear(hidden, classes)
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (ResNet-20 at ``blocks=3``), adapted to ``in_channels`` inputs."""

    def __init__(self, blocks: int = 3, width: int = 16, in_channels: int = 1, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, c = [], width
        for i, mult in enumerate((1, 2, 4)):
            for j in range(blocks):
                stages.append(BasicBlock(c, width * mult, 2 if (i > 0 and j == 0) else 1))
                c = width * mult
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.use_residual = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out),
        )

    def forward(self, x):
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetStyle(nn.Module):
    """A small MobileNetV2-style net: inverted residuals with depthwise 3x3 convs."""

    def __init__(self, in_channels: int = 1, classes: int = 10, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())
        self.blocks = nn.Sequential(
            InvertedResidual(width, width, 1, 4),
            InvertedResidual(width, 2 * width, 2, 4),
            InvertedResidual(2 * width, 2 * width, 1, 4),
        )
        self.head = nn.Sequential(nn.Conv2d(2 * width, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6())
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


ARCHITECTURES = {
    "mlp": mlp,
    "lenet5": LeNet5,
    "vgg": vgg_style,
    "resnet20": ResNet,
    "mobilenet": MobileNetStyle,
}
