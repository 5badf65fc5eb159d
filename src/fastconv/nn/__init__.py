"""fastconv.nn: modules and layers with ``torch.nn``'s names, on fastconv's kernels and autograd."""

from . import functional, init
from .fuse import fuse
from .layers import (
    GELU,
    AdaptiveAvgPool2d,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose2d,
    CrossEntropyLoss,
    DepthwiseSeparableConv2d,
    Dropout,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    MSELoss,
    ReLU,
    ReLU6,
    Sigmoid,
    Tanh,
)
from .module import Module, ModuleList, Parameter, Sequential

__all__ = [
    "functional", "init", "fuse", "Module", "ModuleList", "Parameter", "Sequential",
    "AdaptiveAvgPool2d", "AvgPool1d", "AvgPool2d", "AvgPool3d", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose2d", "CrossEntropyLoss", "DepthwiseSeparableConv2d", "Dropout",
    "Flatten", "GELU", "Identity", "LeakyReLU", "Linear", "MaxPool1d", "MaxPool2d", "MaxPool3d", "MSELoss", "ReLU",
    "ReLU6", "Sigmoid", "Tanh",
]
