"""The model zoo: LeNet-5, AlexNet, VGG, ResNet and MobileNet on fastconv.nn.

Architectures, parameter names and initialisations follow torchvision where torchvision
has the model (alexnet, vgg11/16 with and without BatchNorm, resnet18/34/50, mobilenet_v2),
so a torchvision ``state_dict`` loads as it is. Every constructor takes ``num_classes`` and
``in_channels``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

from .. import nn
from ..nn import functional as F
from ..nn import init

__all__ = ["LeNet5", "AlexNet", "MiniAlexNet", "VGG", "ResNet", "BasicBlock", "Bottleneck", "MobileNetV1",
           "MobileNetV2", "lenet5", "alexnet", "mini_alexnet", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "resnet18",
           "resnet34", "resnet50", "mobilenet_v1", "mobilenet_v2"]


# --------------------------------------------------------------------------- LeNet-5


class LeNet5(nn.Module):
    """LeNet-5 for 28x28 inputs (the first convolution pads by 2, as for MNIST's 32x32 original).

    ``classic=True``: tanh activations and average pooling (LeCun 1998, without the sparse
    C3 connections); ``classic=False``: ReLU and max pooling. 61,706 parameters for 10 classes.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, classic: bool = True):
        super().__init__()
        act = nn.Tanh if classic else nn.ReLU
        pool = nn.AvgPool2d if classic else nn.MaxPool2d
        self.features = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), act(), pool(2),
                                      nn.Conv2d(6, 16, 5), act(), pool(2))
        self.classifier = nn.Sequential(nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(),
                                        nn.Linear(84, num_classes))

    def forward(self, x):
        return self.classifier(F.flatten(self.features(x), 1))


def lenet5(num_classes: int = 10, in_channels: int = 1, classic: bool = True) -> LeNet5:
    return LeNet5(num_classes, in_channels, classic)


# --------------------------------------------------------------------------- AlexNet


class AlexNet(nn.Module):
    """torchvision's AlexNet (the one-GPU variant): 61,100,840 parameters for 1000 classes."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, stride=4, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, num_classes))

    def forward(self, x):
        return self.classifier(F.flatten(self.avgpool(self.features(x)), 1))


class MiniAlexNet(nn.Module):
    """A CIFAR-sized AlexNet (32x32 inputs): three conv-ReLU-maxpool blocks and two fully
    connected layers with dropout."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(128, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 4 * 4, 512), nn.ReLU(inplace=True),
            nn.Dropout(dropout), nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(F.flatten(self.features(x), 1))


def alexnet(num_classes: int = 1000, in_channels: int = 3) -> AlexNet:
    return AlexNet(num_classes, in_channels)


def mini_alexnet(num_classes: int = 10, in_channels: int = 3) -> MiniAlexNet:
    return MiniAlexNet(num_classes, in_channels)


# --------------------------------------------------------------------------- VGG

_VGG_CFG = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def _init_convnet(model: nn.Module, linear_std: Optional[float]) -> None:
    """torchvision's initialisation: convolutions Kaiming-normal (fan_out, ReLU) with zero bias,
    BatchNorm weight 1 and bias 0, linear layers N(0, linear_std) with zero bias (or PyTorch's
    default when linear_std is None)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            init.ones_(m.weight)
            init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            init.normal_(m.weight, 0.0, linear_std)
            init.zeros_(m.bias)


class VGG(nn.Module):
    """torchvision's VGG: ``features`` (3x3 convolutions, optional BatchNorm, max pools),
    ``avgpool`` to 7x7, ``classifier`` (two 4096-wide layers with dropout)."""

    def __init__(self, cfg: Sequence[Union[int, str]], batch_norm: bool = False, num_classes: int = 1000,
                 in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        layers: List[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, v, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v))
            layers.append(nn.ReLU(inplace=True))
            c = v
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(dropout), nn.Linear(4096, num_classes))
        _init_convnet(self, 0.01)

    def forward(self, x):
        return self.classifier(F.flatten(self.avgpool(self.features(x)), 1))


def vgg11(num_classes: int = 1000, in_channels: int = 3) -> VGG:
    return VGG(_VGG_CFG["A"], False, num_classes, in_channels)


def vgg11_bn(num_classes: int = 1000, in_channels: int = 3) -> VGG:
    return VGG(_VGG_CFG["A"], True, num_classes, in_channels)


def vgg16(num_classes: int = 1000, in_channels: int = 3) -> VGG:
    """138,357,544 parameters for 1000 classes."""
    return VGG(_VGG_CFG["D"], False, num_classes, in_channels)


def vgg16_bn(num_classes: int = 1000, in_channels: int = 3) -> VGG:
    return VGG(_VGG_CFG["D"], True, num_classes, in_channels)


# --------------------------------------------------------------------------- ResNet


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def fusable(self):
        return [("conv1", "bn1", "relu"), ("conv2", "bn2", None)]

    def forward(self, x):
        out = _conv_bn_act(self.conv1, self.bn1, self.relu, x)
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride: ResNet v1.5, as torchvision), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def fusable(self):
        return [("conv1", "bn1", "relu"), ("conv2", "bn2", "relu"), ("conv3", "bn3", None)]

    def forward(self, x):
        out = _conv_bn_act(self.conv1, self.bn1, self.relu, x)
        out = _conv_bn_act(self.conv2, self.bn2, self.relu, out)
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _conv_bn_act(conv, bn, act, x):
    """act(bn(conv(x))), where ``fuse`` may have folded bn and act into conv (bn is then Identity
    and conv carries the activation), and where BatchNorm applies act itself when it can."""
    y = conv(x)
    if conv.activation is not None:
        return bn(y)
    fused = getattr(bn, "fused_forward", None)
    out = fused(y, act) if fused is not None else None
    return out if out is not None else act(bn(y))


class ResNet(nn.Module):
    """torchvision's ResNet: 7x7/2 stem, 3x3/2 max pool, four stages, global average pool, fc."""

    def __init__(self, block, layers: Sequence[int], num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], 2)
        self.layer3 = self._make_layer(block, 256, layers[2], 2)
        self.layer4 = self._make_layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        _init_convnet(self, None)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def fusable(self):
        return [("conv1", "bn1", "relu")]

    def forward(self, x):
        x = self.maxpool(_conv_bn_act(self.conv1, self.bn1, self.relu, x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(F.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """11,689,512 parameters for 1000 classes."""
    return ResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels)


def resnet34(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    return ResNet(BasicBlock, [3, 4, 6, 3], num_classes, in_channels)


def resnet50(num_classes: int = 1000, in_channels: int = 3) -> ResNet:
    """25,557,032 parameters for 1000 classes."""
    return ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels)


# --------------------------------------------------------------------------- MobileNet


def _conv_bn(inp: int, oup: int, kernel: int, stride: int, groups: int = 1, act=nn.ReLU6) -> nn.Sequential:
    """torchvision's Conv2dNormActivation: conv (no bias), BatchNorm, activation; children 0, 1, 2."""
    return nn.Sequential(nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), act(inplace=True))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (unless t = 1), 3x3 depthwise, linear 1x1 projection;
    a residual connection when the stride is 1 and the widths match."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(_conv_bn(inp, hidden, 1, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, oup, 1, bias=False),
                   nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0): 3,504,872 parameters for 1000 classes."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, width_mult: float = 1.0,
                 dropout: float = 0.2):
        super().__init__()
        settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                    (6, 320, 1, 1)]
        c = _make_divisible(32 * width_mult)
        self.last_channel = _make_divisible(1280 * max(1.0, width_mult))
        layers: List[nn.Module] = [_conv_bn(in_channels, c, 3, 2)]
        for t, ch, n, s in settings:
            out = _make_divisible(ch * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(c, out, s if i == 0 else 1, t))
                c = out
        layers.append(_conv_bn(c, self.last_channel, 1, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        # torchvision's Kaiming gain here is leaky_relu's with slope 0, i.e. ReLU's.
        _init_convnet(self, 0.01)

    def forward(self, x):
        return self.classifier(F.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


class MobileNetV1(nn.Module):
    """MobileNetV1 (Howard et al. 2017, width 1.0): a 3x3/2 stem and 13 depthwise-separable
    blocks (3x3 depthwise + BatchNorm + ReLU, 1x1 pointwise + BatchNorm + ReLU), global
    average pool, fc. 4,231,976 parameters for 1000 classes."""

    _CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
            (512, 1), (1024, 2), (1024, 1)]

    def __init__(self, num_classes: int = 1000, in_channels: int = 3):
        super().__init__()
        layers: List[nn.Module] = [_conv_bn(in_channels, 32, 3, 2, act=nn.ReLU)]
        c = 32
        for out, s in self._CFG:
            layers.append(nn.Sequential(
                nn.Conv2d(c, c, 3, s, 1, groups=c, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True),
                nn.Conv2d(c, out, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)))
            c = out
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(1024, num_classes)
        _init_convnet(self, None)

    def forward(self, x):
        return self.fc(F.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def mobilenet_v1(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV1:
    return MobileNetV1(num_classes, in_channels)


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3) -> MobileNetV2:
    return MobileNetV2(num_classes, in_channels)
