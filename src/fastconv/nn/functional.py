"""Differentiable functions on :class:`fastconv.Tensor`, named and called as ``torch.nn.functional``.

Each runs a ``fastconv.ops`` kernel forward and, when a gradient is wanted, records one
closure that calls the matching ``*_backward`` kernel. Arguments are validated by
``fastconv.ops`` exactly as for arrays.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .. import ops
from ..ops import _device
from .._random import generator
from ..autograd import Tensor, is_grad_enabled


def _t(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _opt(x) -> Optional[Tensor]:
    return None if x is None else _t(x)


def _needs(*ts) -> tuple:
    return tuple(t is not None and t.requires_grad for t in ts)


def _conv(forward, backward, input, weight, bias, stride, padding, dilation, groups, activation, **forward_kw):
    x, w, b = _t(input), _t(weight), _opt(bias)
    y = forward(x.data, w.data, None if b is None else b.data, stride, padding, dilation, groups, activation=activation,
                **forward_kw)

    def grads(g):
        if activation is not None:  # the fused activation's mask, read off its output
            g = (ops.relu_backward if activation == "relu" else ops.relu6_backward)(g, y)
        return backward(g, x.data, w.data, stride, padding, dilation, groups, needs=_needs(x, w, b))

    return Tensor._result(y, (x, w, b), grads)


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None) -> Tensor:
    return _conv(ops.conv1d, ops.conv1d_backward, input, weight, bias, stride, padding, dilation, groups, activation)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None,
           filter_cache=None) -> Tensor:
    """2-D convolution; ``activation`` ('relu'/'relu6') is fused into the kernel's store;
    ``filter_cache`` as :func:`fastconv.ops.conv2d` takes it."""
    return _conv(ops.conv2d, ops.conv2d_backward, input, weight, bias, stride, padding, dilation, groups, activation,
                 filter_cache=filter_cache)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, *, activation=None) -> Tensor:
    return _conv(ops.conv3d, ops.conv3d_backward, input, weight, bias, stride, padding, dilation, groups, activation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1) -> Tensor:
    x, w, b = _t(input), _t(weight), _opt(bias)
    y = ops.conv_transpose2d(x.data, w.data, None if b is None else b.data, stride, padding, output_padding, groups,
                             dilation)
    return Tensor._result(y, (x, w, b), lambda g: ops.conv_transpose2d_backward(
        g, x.data, w.data, stride, padding, output_padding, groups, dilation, needs=_needs(x, w, b)))


def linear(input, weight, bias=None, *, activation=None) -> Tensor:
    """``input @ weight.T + bias``."""
    x, w, b = _t(input), _t(weight), _opt(bias)
    y = ops.linear(x.data, w.data, None if b is None else b.data, activation=activation)

    def grads(g):
        if activation is not None:
            g = (ops.relu_backward if activation == "relu" else ops.relu6_backward)(g, y)
        return ops.linear_backward(_device.contiguous(g), x.data, w.data, needs=_needs(x, w, b))

    return Tensor._result(y, (x, w, b), grads)


def _activation(forward, backward, input, saves_output=False, **kw) -> Tensor:
    x = _t(input)
    y = forward(x.data, **kw)
    saved = y if saves_output else x.data
    return Tensor._result(y, (x,), lambda g: (backward(g, saved, **kw),))


def relu(input) -> Tensor:
    return _activation(ops.relu, ops.relu_backward, input)


def relu6(input) -> Tensor:
    return _activation(ops.relu6, ops.relu6_backward, input)


def leaky_relu(input, negative_slope: float = 0.01) -> Tensor:
    return _activation(ops.leaky_relu, ops.leaky_relu_backward, input, negative_slope=negative_slope)


def gelu(input, approximate: str = "none") -> Tensor:
    return _activation(ops.gelu, ops.gelu_backward, input, approximate=approximate)


def sigmoid(input) -> Tensor:
    return _activation(ops.sigmoid, ops.sigmoid_backward, input, saves_output=True)


def tanh(input) -> Tensor:
    return _activation(ops.tanh, ops.tanh_backward, input, saves_output=True)


def softmax(input, dim: int = -1) -> Tensor:
    return _activation(ops.softmax, ops.softmax_backward, input, saves_output=True, dim=dim)


def log_softmax(input, dim: int = -1) -> Tensor:
    return _activation(ops.log_softmax, ops.log_softmax_backward, input, saves_output=True, dim=dim)


def dropout(input, p: float = 0.5, training: bool = True, *, seed: Optional[int] = None) -> Tensor:
    """Zeroes elements with probability ``p`` (scaling the rest by 1/(1-p)) when ``training``.
    ``seed=None`` draws a fresh seed from fastconv's generator (:func:`fastconv.manual_seed`)."""
    x = _t(input)
    if not training or p == 0:
        return x
    if seed is None:
        seed = int(generator().integers(0, 2**63 - 1))
    y, mask = ops.dropout(x.data, p, True, seed=seed)
    return Tensor._result(y, (x,), lambda g: (ops.dropout_backward(g, mask, p),))


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> Tensor:
    return _max_pool(ops.max_pool1d, ops.max_pool1d_backward, input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> Tensor:
    return _max_pool(ops.max_pool2d, ops.max_pool2d_backward, input, kernel_size, stride, padding, dilation, ceil_mode)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False) -> Tensor:
    return _max_pool(ops.max_pool3d, ops.max_pool3d_backward, input, kernel_size, stride, padding, dilation, ceil_mode)


def _max_pool(forward, backward, input, kernel_size, stride, padding, dilation, ceil_mode) -> Tensor:
    x = _t(input)
    if not (x.requires_grad and is_grad_enabled()):
        return Tensor(forward(x.data, kernel_size, stride, padding, dilation, ceil_mode))
    y, idx = forward(x.data, kernel_size, stride, padding, dilation, ceil_mode, return_indices=True)
    shape = x.shape
    return Tensor._result(y, (x,), lambda g: (backward(g, idx, shape),))


def _avg_pool(forward, backward, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
              divisor_override) -> Tensor:
    x = _t(input)
    args = (kernel_size, stride, padding, ceil_mode, count_include_pad)
    if divisor_override is not None:  # (the 1-D pools take no divisor_override, as in PyTorch)
        args += (divisor_override,)
    y = forward(x.data, *args)
    shape = x.shape
    return Tensor._result(y, (x,), lambda g: (backward(g, shape, *args),))


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True) -> Tensor:
    return _avg_pool(ops.avg_pool1d, ops.avg_pool1d_backward, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, None)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> Tensor:
    return _avg_pool(ops.avg_pool2d, ops.avg_pool2d_backward, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None) -> Tensor:
    return _avg_pool(ops.avg_pool3d, ops.avg_pool3d_backward, input, kernel_size, stride, padding, ceil_mode,
                     count_include_pad, divisor_override)


def adaptive_avg_pool2d(input, output_size) -> Tensor:
    x = _t(input)
    shape = x.shape
    return Tensor._result(ops.adaptive_avg_pool2d(x.data, output_size), (x,),
                          lambda g: (ops.adaptive_avg_pool2d_backward(g, shape),))


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, activation: Optional[str] = None) -> Tensor:
    """BatchNorm over axis 1; in training the running statistics (arrays) are updated in place.
    ``activation`` (``"relu"`` or ``"relu6"``) is applied in the same pass, forward and backward."""
    x, w, b = _t(input), _opt(weight), _opt(bias)
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    wd, bd = (None if w is None else w.data), (None if b is None else b.data)
    if training:
        y, mean, invstd = ops.batch_norm(x.data, rm, rv, wd, bd, True, momentum, eps, activation=activation)
    else:
        y = ops.batch_norm(x.data, rm, rv, wd, bd, False, momentum, eps, activation=activation)
        mean = rm
        # Only the backward needs it: inference (no_grad, or nothing requires grad) skips it.
        invstd = _eval_invstd(rv, eps, x.dtype) if is_grad_enabled() and any(_needs(x, w, b)) else None

    def grads(g):
        return ops.batch_norm_backward(g, x.data, wd, mean, invstd, training=training, activation=activation,
                                       output=y if activation else None)

    return Tensor._result(y, (x, w, b), grads)


def _eval_invstd(running_var, eps, dtype):
    """1 / sqrt(running_var + eps), on running_var's device (a C-element vector; GPU ones round-trip the host)."""
    if _device.is_gpu(running_var):
        from ..cuda import to_device, to_host

        return to_device(_eval_invstd(to_host(running_var), eps, dtype))
    return (1.0 / np.sqrt(running_var.astype(np.float64) + eps)).astype(dtype)


def _array(a):
    return a if _device.is_gpu_like(a) else np.asarray(a)


def cross_entropy(input, target, reduction: str = "mean", ignore_index: int = -100,
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits against class indices (an integer array or Tensor)."""
    z = _t(input)
    t = target.data if isinstance(target, Tensor) else _array(target)
    kw = dict(reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
    loss = ops.cross_entropy(z.data, t, **kw)
    return Tensor._result(_array(loss), (z,), lambda g: (ops.cross_entropy_backward(g, z.data, t, **kw),))


def mse_loss(input, target, reduction: str = "mean") -> Tensor:
    a, b = _t(input), _t(target)
    loss = ops.mse_loss(a.data, b.data, reduction)

    def grads(g):
        ga = ops.mse_loss_backward(g, a.data, b.data, reduction)
        return ga, (-ga if b.requires_grad else None)

    return Tensor._result(_array(loss), (a, b), grads)


def flatten(input, start_dim: int = 1, end_dim: int = -1) -> Tensor:
    return _t(input).flatten(start_dim, end_dim)


def cat(tensors: Sequence, dim: int = 1) -> Tensor:
    ts = [_t(t) for t in tensors]
    sizes = [t.shape[dim] for t in ts]
    return Tensor._result(ops.cat([t.data for t in ts], dim), ts, lambda g: ops.cat_backward(g, sizes, dim))
