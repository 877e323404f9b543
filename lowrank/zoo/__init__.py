"""Built-in architectures (and, later, trained entries)."""
from .archs import ARCHITECTURES, LeNet5, MobileNetStyle, ResNet, mlp, vgg_style

__all__ = ["ARCHITECTURES", "LeNet5", "MobileNetStyle", "ResNet", "mlp", "vgg_style"]
