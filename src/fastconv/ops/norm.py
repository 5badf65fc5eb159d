"""BatchNorm (training and eval, forward and backward) and folding it into a convolution."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from . import _device
from ._device import kernels
from ._validate import activation_code, float_array, require_float


def _channel_vector(v, name, c, dtype, *, writable=False):
    if v is None:
        return None
    require_float(v, name, dtype)
    if v.shape != (c,):
        raise ValueError(f"{name} must have shape ({c},), got {v.shape}")
    if writable and not _device.is_writable_contiguous(v):
        raise ValueError(f"{name} is updated in place, so it must be C-contiguous and writeable")
    return v if writable else _device.contiguous(v)


def _check_input(input):
    x = float_array(input, "input")
    if x.ndim < 2 or x.ndim > 5:
        raise ValueError(f"batch_norm input must be (N, C), (N, C, L), (N, C, H, W) or (N, C, D, H, W); got {x.shape}")
    return x


def batch_norm(input, running_mean: Optional[np.ndarray], running_var: Optional[np.ndarray],
               weight: Optional[np.ndarray] = None, bias: Optional[np.ndarray] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5, *, activation: Optional[str] = None):
    """BatchNorm over the channel axis (axis 1) of an (N, C, *spatial) array, as ``torch.nn.functional.batch_norm``.

    Eval (``training=False``) normalises with ``running_mean`` / ``running_var`` and returns ``y``.
    Training normalises with the batch mean and biased variance, updates ``running_mean`` /
    ``running_var`` in place (if given) with ``momentum`` and the unbiased variance, and returns
    ``(y, save_mean, save_invstd)`` for :func:`batch_norm_backward`. A training batch with a
    single value per channel raises ``ValueError``, as in PyTorch.

    ``activation`` (``None``, ``"relu"`` or ``"relu6"``) is applied to ``y`` in the same pass over
    memory; give the same activation and ``y`` as ``output`` to :func:`batch_norm_backward`.
    """
    act = activation_code(activation)
    x = _check_input(input)
    c = x.shape[1]
    rm = _channel_vector(running_mean, "running_mean", c, x.dtype, writable=training)
    rv = _channel_vector(running_var, "running_var", c, x.dtype, writable=training)
    w = _channel_vector(weight, "weight", c, x.dtype)
    b = _channel_vector(bias, "bias", c, x.dtype)
    momentum, eps = float(momentum), float(eps)
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    y = _device.empty(x.shape, x.dtype, x)
    k = kernels(x)
    if training:
        if (rm is None) != (rv is None):
            raise ValueError("give both running_mean and running_var, or neither")
        if x.size // c <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {x.shape}")
        mean = _device.empty((c,), x.dtype, x)
        invstd = _device.empty((c,), x.dtype, x)
        k.batch_norm_forward(x, w, b, rm, rv, y, True, momentum, eps, mean, invstd, act)
        return y, mean, invstd
    if rm is None or rv is None:
        raise ValueError("eval mode (training=False) needs running_mean and running_var")
    if x.size:
        k.batch_norm_forward(x, w, b, rm, rv, y, False, momentum, eps, None, None, act)
    return y


def batch_norm_backward(grad_output, input, weight: Optional[np.ndarray], save_mean, save_invstd,
                        training: bool = True, *, activation: Optional[str] = None,
                        output=None) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    """Gradients ``(grad_input, grad_weight, grad_bias)`` of :func:`batch_norm`.

    ``save_mean`` / ``save_invstd`` are what the training forward returned; for an eval-mode
    forward pass the running mean and ``1 / sqrt(running_var + eps)``. ``grad_weight`` is
    ``None`` when ``weight`` is.

    For a forward with a fused ``activation``, pass the same ``activation`` and the forward's
    ``output``: ``grad_output`` is then the gradient of the activated output and counts only
    where the activation passes it (ReLU: output > 0; ReLU6: 0 < output < 6), as the separate
    activation's backward would.
    """
    act = activation_code(activation)
    x = _check_input(input)
    c = x.shape[1]
    g = float_array(grad_output, "grad_output", x.ndim, x.dtype)
    if g.shape != x.shape:
        raise ValueError(f"grad_output must have the input's shape {x.shape}, got {g.shape}")
    y = None
    if act:
        if output is None:
            raise ValueError(f"activation={activation!r} needs the forward's output")
        y = float_array(output, "output", x.ndim, x.dtype)
        if y.shape != x.shape:
            raise ValueError(f"output must have the input's shape {x.shape}, got {y.shape}")
    w = _channel_vector(weight, "weight", c, x.dtype)
    m = _channel_vector(save_mean, "save_mean", c, x.dtype)
    s = _channel_vector(save_invstd, "save_invstd", c, x.dtype)
    gx = _device.empty(x.shape, x.dtype, x)
    gw = _device.empty((c,), x.dtype, x) if w is not None else None
    gb = _device.empty((c,), x.dtype, x)
    kernels(x).batch_norm_backward(g, x, w, m, s, bool(training), gx, gw, gb, act, y)
    return gx, gw, gb


def fold_batchnorm(conv_weight, conv_bias, running_mean, running_var, bn_weight=None, bn_bias=None,
                   eps: float = 1e-5) -> Tuple[np.ndarray, np.ndarray]:
    """Fold an eval-mode BatchNorm into the convolution before it.

    Returns ``(weight, bias)`` with ``conv(x, weight, bias) == batch_norm(conv(x, conv_weight,
    conv_bias), ...)``: each output channel's filter is scaled by ``bn_weight / sqrt(var + eps)``
    and the bias shifted to match. Works for any convolution weight (C_out, ...) and dtype. GPU
    arguments are folded on the host (a one-off, small copy) and come back as GPU arrays.
    """
    if _device.is_gpu(conv_weight):
        from ..cuda import to_device, to_host

        host = [None if a is None else to_host(a) for a in (conv_weight, conv_bias, running_mean, running_var,
                                                            bn_weight, bn_bias)]
        return tuple(to_device(a) for a in fold_batchnorm(*host, eps=eps))
    w = float_array(conv_weight, "conv_weight")
    c = w.shape[0]
    b = _channel_vector(conv_bias, "conv_bias", c, w.dtype)
    rm = _channel_vector(running_mean, "running_mean", c, w.dtype)
    rv = _channel_vector(running_var, "running_var", c, w.dtype)
    gamma = _channel_vector(bn_weight, "bn_weight", c, w.dtype)
    beta = _channel_vector(bn_bias, "bn_bias", c, w.dtype)
    if rm is None or rv is None:
        raise ValueError("running_mean and running_var are required")
    scale = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(rv.astype(np.float64) + float(eps))
    shift = (0.0 if beta is None else beta.astype(np.float64)) - rm.astype(np.float64) * scale
    folded_w = (w.astype(np.float64) * scale.reshape((c,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    folded_b = ((0.0 if b is None else b.astype(np.float64)) * scale + shift).astype(w.dtype)
    return folded_w, folded_b
