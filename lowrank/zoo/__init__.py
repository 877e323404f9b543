"""Built-in architectures and the zoo of trained entries."""
from .archs import ARCHITECTURES, LeNet5, MobileNetStyle, ResNet, mlp, vgg_style
from .registry import ZOO, ZooEntry, get

__all__ = ["ARCHITECTURES", "LeNet5", "MobileNetStyle", "ResNet", "ZOO", "ZooEntry", "get", "mlp", "vgg_style"]
