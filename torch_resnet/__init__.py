"""The seed's 3D ResNet (docs/design.md section 3) as a PyTorch nn.Module, with its training and prediction."""

from torch_resnet.config import PRESETS, ResNetConfig
from torch_resnet.model import ResNet3D, build_resnet

__all__ = ["PRESETS", "ResNet3D", "ResNetConfig", "build_resnet"]
