"""``torch.nn.functional``-style entry points to the ``torch.ops.fastconv`` custom ops (:mod:`._ops`).

Same names and arguments as ``torch.nn.functional`` (plus fastconv's fused
``activation=``); they normalise ints/tuples/'same'/'valid', check that the tensors are
float32 or float64 CPU tensors of one dtype, and call the op. Gradients flow through
fastconv's backward kernels. A call on plain CPU tensors with nothing watching the
dispatcher runs the op's implementation directly, or records its backward through an
equivalent torch.autograd.Function (see :func:`._ops.call`).
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import cuda as _cuda
from . import _ops
from ._ops import call as _call  # op(*args), around the dispatcher where nothing could tell

IntOrSeq = Union[int, Sequence[int]]
_DTYPES = (torch.float32, torch.float64)
_ACTIVATIONS = (None, "relu", "relu6")

__all__ = ["conv1d", "conv2d", "depthwise_conv2d", "depthwise_separable_conv2d", "conv_transpose2d", "linear",
           "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "batch_norm", "conv2d_bn"]


def _check(op: str, **tensors: Optional[Tensor]) -> None:
    """TypeError/ValueError naming the argument unless every given tensor is a float32/float64 tensor of one
    dtype, all on the CPU or all on one CUDA device (with fastconv.cuda available)."""
    dtype = device = None
    for name, t in tensors.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"fastconv.torch.{op}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.device.type not in ("cpu", "cuda"):
            raise ValueError(f"fastconv.torch.{op}: {name} is on {t.device}; fastconv.torch runs on CPU and CUDA "
                             f"tensors")
        if device is None:
            device = t.device
            if device.type == "cuda" and not _cuda.is_available():
                raise ValueError(f"fastconv.torch.{op}: {name} is on {device} but fastconv.cuda is not available: "
                                 f"{_cuda.why_unavailable()}")
        elif t.device != device:
            raise ValueError(f"fastconv.torch.{op}: {name} is on {t.device} but the input is on {device}")
        if t.dtype not in _DTYPES:
            raise TypeError(f"fastconv.torch.{op}: {name} has dtype {t.dtype}; fastconv supports torch.float32 and "
                            f"torch.float64 (convert with .float())")
        if dtype is None:
            dtype = t.dtype
        elif t.dtype != dtype:
            raise TypeError(f"fastconv.torch.{op}: {name} has dtype {t.dtype} but the input is {dtype}; all tensors "
                            f"of an op share one dtype")


def _batched_dims(batched_dims: int):
    """Lets a function of an (N, C, *spatial) batch also take one unbatched (C, *spatial) sample, as torch's do."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(input, *args, **kwargs):
            if isinstance(input, Tensor) and input.dim() == batched_dims - 1:
                out = fn(input.unsqueeze(0), *args, **kwargs)
                return tuple(t.squeeze(0) for t in out) if isinstance(out, tuple) else out.squeeze(0)
            return fn(input, *args, **kwargs)

        return wrapper

    return decorate


def _ints(value: IntOrSeq, nd: int, name: str) -> List[int]:
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) == 1 and nd > 1:
            value = tuple(value) * nd
        if len(value) != nd:
            raise ValueError(f"{name} must be an int or a sequence of {nd} ints, got {value!r}")
        return [int(v) for v in value]
    return [int(value)] * nd


def _pool_stride(stride, kernel: List[int]) -> List[int]:
    """PyTorch's pooling stride: the kernel size when None (or empty), else an int or a pair."""
    if stride is None or (isinstance(stride, (list, tuple)) and not stride):
        return kernel
    return _ints(stride, 2, "stride")


def _activation(activation):
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
    return activation


def _conv_padding(padding, nd):
    """(padding ints, same flag) from PyTorch's padding argument."""
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * nd, False
        if padding == "same":
            return [0] * nd, True
        raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    return _ints(padding, nd, "padding"), False


def _conv(nd, op, input, weight, bias, stride, padding, dilation, groups, activation, algo):
    _check(f"conv{nd}d", input=input, weight=weight, bias=bias)
    pad, same = _conv_padding(padding, nd)
    return _call(op, input, weight, bias, _ints(stride, nd, "stride"), pad, _ints(dilation, nd, "dilation"),
                 int(groups), same, _activation(activation), algo)


@_batched_dims(4)
def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrSeq = 1,
           padding: Union[IntOrSeq, str] = 0, dilation: IntOrSeq = 1, groups: int = 1, *,
           activation: Optional[str] = None, algo: str = "auto") -> Tensor:
    """``torch.nn.functional.conv2d`` on fastconv's kernels, with a fused ``activation`` (None, 'relu', 'relu6')
    and ``algo`` as :func:`fastconv.ops.conv2d` takes it."""
    return _conv(2, _ops.conv2d, input, weight, bias, stride, padding, dilation, groups, activation,
                 algo)


def _conv2d_cached_filters(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: IntOrSeq,
                           padding: Union[IntOrSeq, str], dilation: IntOrSeq, groups: int,
                           activation: Optional[str], filter_cache) -> Tensor:
    """:func:`conv2d` for weights that stay fixed from call to call (the BatchNorm-folded ones of
    inference): ``filter_cache`` (a :class:`fastconv.ops.FilterCache` that lives as long as the
    weight) keeps Winograd's transformed filters where the call runs the kernel itself (on a batch)."""
    if input.dim() != 4:
        return conv2d(input, weight, bias, stride, padding, dilation, groups, activation=activation)
    _check("conv2d", input=input, weight=weight, bias=bias)
    pad, same = _conv_padding(padding, 2)
    return _ops.conv2d_cached_filters(input, weight, bias, _ints(stride, 2, "stride"), pad,
                                      _ints(dilation, 2, "dilation"), int(groups), same, _activation(activation),
                                      "auto", filter_cache)


@_batched_dims(3)
def conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrSeq = 1,
           padding: Union[IntOrSeq, str] = 0, dilation: IntOrSeq = 1, groups: int = 1, *,
           activation: Optional[str] = None, algo: str = "auto") -> Tensor:
    """``torch.nn.functional.conv1d`` on fastconv's kernels."""
    return _conv(1, _ops.conv1d, input, weight, bias, stride, padding, dilation, groups, activation,
                 algo)


@_batched_dims(4)
def depthwise_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrSeq = 1,
                     padding: Union[IntOrSeq, str] = 0, dilation: IntOrSeq = 1, *,
                     activation: Optional[str] = None) -> Tensor:
    """Depthwise convolution: ``conv2d`` with ``groups = C_in`` (weight (C_in * multiplier, 1, KH, KW))
    on fastconv's depthwise kernel."""
    _check("depthwise_conv2d", input=input, weight=weight, bias=bias)
    pad, same = _conv_padding(padding, 2)
    return _call(_ops.depthwise_conv2d, input, weight, bias, _ints(stride, 2, "stride"), pad,
                 _ints(dilation, 2, "dilation"), same, _activation(activation))


@_batched_dims(4)
def depthwise_separable_conv2d(input: Tensor, dw_weight: Tensor, pw_weight: Tensor, dw_bias: Optional[Tensor] = None,
                               pw_bias: Optional[Tensor] = None, stride: IntOrSeq = 1,
                               padding: Union[IntOrSeq, str] = 0, dilation: IntOrSeq = 1, *,
                               activation: Optional[str] = None) -> Tensor:
    """A depthwise convolution (``stride``/``padding``/``dilation``) then a 1x1 one, ``activation`` after each
    (see :func:`fastconv.ops.depthwise_separable_conv2d`)."""
    _check("depthwise_separable_conv2d", input=input, dw_weight=dw_weight, pw_weight=pw_weight, dw_bias=dw_bias,
           pw_bias=pw_bias)
    pad, same = _conv_padding(padding, 2)
    out, _ = _call(_ops.depthwise_separable_conv2d, input, dw_weight, pw_weight, dw_bias, pw_bias,
                   _ints(stride, 2, "stride"), pad, _ints(dilation, 2, "dilation"), same, _activation(activation))
    return out


@_batched_dims(4)
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrSeq = 1,
                     padding: IntOrSeq = 0, output_padding: IntOrSeq = 0, groups: int = 1,
                     dilation: IntOrSeq = 1) -> Tensor:
    """``torch.nn.functional.conv_transpose2d`` on fastconv's backward-data kernel."""
    _check("conv_transpose2d", input=input, weight=weight, bias=bias)
    return _call(_ops.conv_transpose2d, input, weight, bias, _ints(stride, 2, "stride"), _ints(padding, 2, "padding"),
                 _ints(output_padding, 2, "output_padding"), int(groups), _ints(dilation, 2, "dilation"))


def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *,
           activation: Optional[str] = None) -> Tensor:
    """``torch.nn.functional.linear`` (``input @ weight.T + bias``) on fastconv's packed GEMM."""
    _check("linear", input=input, weight=weight, bias=bias)
    return _call(_ops.linear, input, weight, bias, _activation(activation))


@_batched_dims(4)
def max_pool2d(input: Tensor, kernel_size: IntOrSeq, stride: Optional[IntOrSeq] = None, padding: IntOrSeq = 0,
               dilation: IntOrSeq = 1, ceil_mode: bool = False, return_indices: bool = False):
    """``torch.nn.functional.max_pool2d``; indices (with ``return_indices``) are PyTorch's."""
    _check("max_pool2d", input=input)
    k = _ints(kernel_size, 2, "kernel_size")
    s = _pool_stride(stride, k)
    args = (input, k, s, _ints(padding, 2, "padding"), _ints(dilation, 2, "dilation"), bool(ceil_mode))
    return _call(_ops.max_pool2d, *args) if return_indices else _ops.max_pool2d_values(*args)


@_batched_dims(4)
def avg_pool2d(input: Tensor, kernel_size: IntOrSeq, stride: Optional[IntOrSeq] = None, padding: IntOrSeq = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: Optional[int] = None) -> Tensor:
    """``torch.nn.functional.avg_pool2d``."""
    _check("avg_pool2d", input=input)
    k = _ints(kernel_size, 2, "kernel_size")
    s = _pool_stride(stride, k)
    return _call(_ops.avg_pool2d, input, k, s, _ints(padding, 2, "padding"), bool(ceil_mode), bool(count_include_pad),
                 divisor_override)


def _adaptive_size(input: Tensor, output_size) -> List[int]:
    if input.dim() != 4:
        raise ValueError(f"adaptive pooling takes an (N, C, H, W) or (C, H, W) input, got {tuple(input.shape)}")
    size = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
    if len(size) != 2:
        raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
    return [input.shape[2 + i] if v is None else int(v) for i, v in enumerate(size)]


@_batched_dims(4)
def adaptive_avg_pool2d(input: Tensor, output_size) -> Tensor:
    """``torch.nn.functional.adaptive_avg_pool2d`` (``None`` in ``output_size`` keeps that size)."""
    _check("adaptive_avg_pool2d", input=input)
    return _call(_ops.adaptive_avg_pool2d, input, _adaptive_size(input, output_size))


@_batched_dims(4)
def adaptive_max_pool2d(input: Tensor, output_size, return_indices: bool = False):
    """``torch.nn.functional.adaptive_max_pool2d``."""
    _check("adaptive_max_pool2d", input=input)
    y, idx = _call(_ops.adaptive_max_pool2d, input, _adaptive_size(input, output_size))
    return (y, idx) if return_indices else y


def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, activation: Optional[str] = None) -> Tensor:
    """``torch.nn.functional.batch_norm``: training updates ``running_mean``/``running_var`` in place.
    ``activation`` (``"relu"`` or ``"relu6"``) is applied in the same pass, forward and backward."""
    _check("batch_norm", input=input, running_mean=running_mean, running_var=running_var, weight=weight, bias=bias)
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm in eval mode (training=False) needs running_mean and running_var")
    if (running_mean is None) != (running_var is None):
        raise ValueError("give both running_mean and running_var, or neither")
    if training and running_mean is not None:
        return _ops.batch_norm_training(input, weight, bias, running_mean, running_var, float(momentum), float(eps),
                                        _activation(activation))[0]
    return _call(_ops.batch_norm, input, weight, bias, running_mean, running_var, bool(training), float(eps),
                 _activation(activation))[0]


def conv2d_bn(input: Tensor, weight: Tensor, bias: Optional[Tensor], running_mean: Tensor, running_var: Tensor,
              bn_weight: Optional[Tensor] = None, bn_bias: Optional[Tensor] = None, eps: float = 1e-5,
              stride: IntOrSeq = 1, padding: Union[IntOrSeq, str] = 0, dilation: IntOrSeq = 1, groups: int = 1, *,
              activation: Optional[str] = None) -> Tensor:
    """Inference ``activation(batch_norm(conv2d(input, weight, bias, ...), running stats, bn_weight, bn_bias))``
    as one convolution: the BatchNorm folded into the weights, the activation into the epilogue."""
    _check("conv2d_bn", input=input, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var,
           bn_weight=bn_weight, bn_bias=bn_bias)
    pad, same = _conv_padding(padding, 2)
    return _call(_ops.conv2d_bn, input, weight, bias, running_mean, running_var, bn_weight, bn_bias, float(eps),
                 _ints(stride, 2, "stride"), pad, _ints(dilation, 2, "dilation"), int(groups), same,
                 _activation(activation))
