"""Layers with ``torch.nn``'s names, constructor signatures, parameter names and default
initialisation, running fastconv's kernels through :mod:`fastconv.nn.functional`."""

from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np

from .. import ops
from ..ops._validate import as_int, tuple_arg
from . import functional as F
from . import init
from .module import Module, Parameter

IntOrTuple = Union[int, Tuple[int, ...]]


def _reset_weight_and_bias(weight: Parameter, bias: Optional[Parameter]) -> None:
    """PyTorch's default for convolutions and linear layers: Kaiming-uniform with a = sqrt(5)
    (i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in))), and the bias from the same range."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class _ConvNd(Module):
    _nd = 2
    _functional = staticmethod(F.conv2d)

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
                 padding: Union[str, IntOrTuple] = 0, dilation: IntOrTuple = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, activation: Optional[str] = None):
        super().__init__()
        nd = self._nd
        in_channels, out_channels, groups = (as_int(in_channels, "in_channels"), as_int(out_channels, "out_channels"),
                                             as_int(groups, "groups"))
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups ({groups}) must be >= 1 and divide in_channels ({in_channels}) and "
                             f"out_channels ({out_channels})")
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode {padding_mode!r} is not supported (only 'zeros')")
        if activation not in (None, "relu", "relu6"):
            raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = tuple_arg(kernel_size, "kernel_size", nd, minimum=1)
        self.stride = tuple_arg(stride, "stride", nd, minimum=1)
        self.padding = padding if isinstance(padding, str) else tuple_arg(padding, "padding", nd, minimum=0)
        self.dilation = tuple_arg(dilation, "dilation", nd, minimum=1)
        self.padding_mode = padding_mode
        self.activation = activation  # fastconv extension: a fused ReLU/ReLU6 (set by nn.fuse)
        self.weight = Parameter(np.empty((out_channels, in_channels // groups) + self.kernel_size, np.float32))
        self.bias = Parameter(np.empty(out_channels, np.float32)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return type(self)._functional(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                                      activation=self.activation)

    def extra_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}")
        if self.padding not in ((0,) * self._nd, "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.activation:
            s += f", activation={self.activation!r}"
        return s


class Conv1d(_ConvNd):
    _nd = 1
    _functional = staticmethod(F.conv1d)


class Conv2d(_ConvNd):
    """``torch.nn.Conv2d``. A read-only weight array (:func:`fastconv.nn.fuse` freezes the
    convolution weights of the model it returns) is taken as fixed: the layer keeps what it derives from it, Winograd's
    transformed filters, from call to call (:class:`fastconv.ops.FilterCache`) until it is given
    another array."""

    _nd = 2
    _functional = staticmethod(F.conv2d)

    def forward(self, x):
        w = self.weight.data
        cache = None
        if isinstance(w, np.ndarray) and not w.flags.writeable:
            cache = self.__dict__.setdefault("_filter_cache", ops.FilterCache())
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
                        activation=self.activation, filter_cache=cache)


class Conv3d(_ConvNd):
    _nd = 3
    _functional = staticmethod(F.conv3d)


class ConvTranspose2d(Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
                 padding: IntOrTuple = 0, output_padding: IntOrTuple = 0, groups: int = 1, bias: bool = True,
                 dilation: IntOrTuple = 1, padding_mode: str = "zeros"):
        super().__init__()
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode {padding_mode!r} is not supported (only 'zeros')")
        groups = as_int(groups, "groups")
        if groups < 1 or in_channels % groups or out_channels % groups:
            raise ValueError(f"groups ({groups}) must divide in_channels ({in_channels}) and out_channels "
                             f"({out_channels})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = tuple_arg(kernel_size, "kernel_size", 2, minimum=1)
        self.stride = tuple_arg(stride, "stride", 2, minimum=1)
        self.padding = tuple_arg(padding, "padding", 2, minimum=0)
        self.output_padding = tuple_arg(output_padding, "output_padding", 2, minimum=0)
        self.dilation = tuple_arg(dilation, "dilation", 2, minimum=1)
        self.weight = Parameter(np.empty((in_channels, out_channels // groups) + self.kernel_size, np.float32))
        self.bias = Parameter(np.empty(out_channels, np.float32)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"


class Linear(Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features = as_int(in_features, "in_features"), as_int(out_features, "out_features")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), np.float32))
        self.bias = Parameter(np.empty(self.out_features, np.float32)) if bias else None
        if not bias:
            self.register_parameter("bias", None)
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class _BatchNorm(Module):
    _dims: Tuple[int, ...] = (4,)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True):
        super().__init__()
        self.num_features, self.eps, self.momentum = as_int(num_features, "num_features"), float(eps), momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.ones(num_features, np.float32))
            self.bias = Parameter(np.zeros(num_features, np.float32))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, np.float32))
            self.register_buffer("running_var", np.ones(num_features, np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def forward(self, x):
        return self._normalise(x, None)

    def fused_forward(self, x, following: Module):
        """``following(self(x))`` in one pass over memory when ``following`` is a plain
        :class:`ReLU` or :class:`ReLU6` and neither module's ``forward`` is overridden (the
        backward then masks the gradient inside BatchNorm's); ``None`` otherwise, and nothing
        runs. A ``forward`` replaced on either instance (as :func:`fastconv.summary` and
        :func:`fastconv.viz.feature_maps` do to record each layer) also rules fusion out.
        :class:`Sequential` and the model zoo's blocks call it."""
        act = _FUSABLE_ACTIVATIONS.get(type(following))
        if (act is None or type(self).forward is not _BatchNorm.forward or "forward" in self.__dict__
                or "forward" in following.__dict__):
            return None
        return self._normalise(x, act)

    def _normalise(self, x, activation):
        if x.ndim not in self._dims:
            raise ValueError(f"{type(self).__name__} expects a {' or '.join(f'{d}-D' for d in self._dims)} input, "
                             f"got {x.ndim}-D")
        use_batch = self.training or not self.track_running_stats
        momentum = self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        rm, rv = (self.running_mean, self.running_var) if self.track_running_stats else (None, None)
        return F.batch_norm(x, rm, rv, self.weight, self.bias, use_batch, momentum or 0.0, self.eps,
                            activation=activation)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1d(_BatchNorm):
    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    _dims = (4,)


class BatchNorm3d(_BatchNorm):
    _dims = (5,)


class _MaxPoolNd(Module):
    _functional = staticmethod(F.max_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        if return_indices:
            raise ValueError("return_indices=True is not supported by fastconv.nn max pooling modules "
                             "(use fastconv.ops.max_pool2d(..., return_indices=True) on arrays)")
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride, padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x):
        return type(self)._functional(x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool1d(_MaxPoolNd):
    _functional = staticmethod(F.max_pool1d)


class MaxPool2d(_MaxPoolNd):
    _functional = staticmethod(F.max_pool2d)


class MaxPool3d(_MaxPoolNd):
    _functional = staticmethod(F.max_pool3d)


class AvgPool1d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.ceil_mode, self.count_include_pad = ceil_mode, count_include_pad

    def forward(self, x):
        return F.avg_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class _AvgPoolNd(AvgPool1d):
    _functional = staticmethod(F.avg_pool2d)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad)
        self.divisor_override = divisor_override

    def forward(self, x):
        return type(self)._functional(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                      self.count_include_pad, self.divisor_override)


class AvgPool2d(_AvgPoolNd):
    _functional = staticmethod(F.avg_pool2d)


class AvgPool3d(_AvgPoolNd):
    _functional = staticmethod(F.avg_pool3d)


class AdaptiveAvgPool2d(Module):
    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class _Activation(Module):
    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace  # accepted for PyTorch compatibility; fastconv never writes its input


class ReLU(_Activation):
    def forward(self, x):
        return F.relu(x)


class ReLU6(_Activation):
    def forward(self, x):
        return F.relu6(x)


# The activations BatchNorm applies in its own pass (see _BatchNorm.fused_forward).
_FUSABLE_ACTIVATIONS = {ReLU: "relu", ReLU6: "relu6"}


class LeakyReLU(Module):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__()
        self.negative_slope, self.inplace = negative_slope, inplace

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class GELU(Module):
    def __init__(self, approximate: str = "none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Dropout(Module):
    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Flatten(Module):
    def __init__(self, start_dim: int = 1, end_dim: int = -1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return F.flatten(x, self.start_dim, self.end_dim)


class Identity(Module):
    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class DepthwiseSeparableConv2d(Module):
    """A depthwise convolution (one k x k filter per input channel) followed by a 1x1
    pointwise convolution: MobileNet's factorisation of a dense k x k convolution.
    Children ``depthwise`` and ``pointwise`` are :class:`Conv2d` layers."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOrTuple = 3, stride: IntOrTuple = 1,
                 padding: Union[str, IntOrTuple] = 1, dilation: IntOrTuple = 1, bias: bool = True):
        super().__init__()
        self.depthwise = Conv2d(in_channels, in_channels, kernel_size, stride, padding, dilation, groups=in_channels,
                                bias=bias)
        self.pointwise = Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x):
        return self.pointwise(self.depthwise(x))


class CrossEntropyLoss(Module):
    def __init__(self, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
        super().__init__()
        self.ignore_index, self.reduction, self.label_smoothing = ignore_index, reduction, label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.reduction, self.ignore_index, self.label_smoothing)


class MSELoss(Module):
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input, target):
        return F.mse_loss(input, target, self.reduction)
