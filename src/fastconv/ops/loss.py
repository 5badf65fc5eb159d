"""Losses: cross-entropy on class indices and mean squared error, with their backward."""

from __future__ import annotations

import numpy as np

from . import _device
from ._device import kernels
from ._validate import as_int, float_array

_REDUCTIONS = ("mean", "sum", "none")


def _reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _ce_layout(input, target):
    z = float_array(input, "input")
    if z.ndim < 2:
        raise ValueError(f"input must be (N, C) or (N, C, d1, ...), got shape {z.shape}")
    on_gpu = _device.is_gpu(z)
    if (not isinstance(target, np.ndarray) and not _device.is_gpu(target)) or target.dtype.kind not in "iu":
        raise TypeError("target must be an integer numpy.ndarray of class indices")
    want = (z.shape[0],) + z.shape[2:]
    if target.shape != want:
        raise ValueError(f"target must have shape {want} for input {z.shape}, got {target.shape}")
    if on_gpu:
        if target.dtype != np.int64:
            raise TypeError(f"a GPU target must have dtype int64, got {target.dtype}")
        t = _device.contiguous(target)
    else:
        t = np.ascontiguousarray(target, np.int64)
    n, c = z.shape[:2]
    inner = int(np.prod(z.shape[2:], dtype=np.int64))
    return z, t, n, c, inner


def _smoothing(label_smoothing) -> float:
    ls = float(label_smoothing)
    if not 0.0 <= ls <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {ls}")
    return ls


def cross_entropy(input, target, reduction: str = "mean", ignore_index: int = -100, label_smoothing: float = 0.0):
    """Cross-entropy of logits ``input`` (N, C, ...) against class indices ``target`` (N, ...).

    As ``torch.nn.functional.cross_entropy`` with class indices: per sample
    ``(1 - eps) * -log p[target] + eps / C * sum_c -log p[c]``; samples whose target is
    ``ignore_index`` count as 0 and, for ``'mean'``, are left out of the count. Returns a
    0-d array for 'mean'/'sum', the per-sample losses for 'none'.
    """
    reduction = _reduction(reduction)
    z, t, n, c, inner = _ce_layout(input, target)
    ls = _smoothing(label_smoothing)
    ignore_index = as_int(ignore_index, "ignore_index")
    per = _device.empty(t.shape, z.dtype, z)
    if per.size:
        kernels(z).cross_entropy(z, t, per, n, c, inner, ignore_index, ls)
    if reduction == "none":
        return per
    if _device.is_gpu(z):
        out = _device.empty((), z.dtype, z)
        kernels(z).loss_reduce(per, t, ignore_index, reduction == "mean", out)
        return out
    if reduction == "sum":
        return np.asarray(per.sum(dtype=np.float64), z.dtype)
    count = int(np.count_nonzero(t != ignore_index))
    return np.asarray(per.sum(dtype=np.float64) / count if count else np.nan, z.dtype)


def cross_entropy_backward(grad_output, input, target, reduction: str = "mean", ignore_index: int = -100,
                           label_smoothing: float = 0.0) -> np.ndarray:
    """Gradient of :func:`cross_entropy` with respect to the logits."""
    reduction = _reduction(reduction)
    z, t, n, c, inner = _ce_layout(input, target)
    ls = _smoothing(label_smoothing)
    ignore_index = as_int(ignore_index, "ignore_index")
    if _device.is_gpu(z):
        return _ce_backward_gpu(grad_output, z, t, n, c, inner, reduction, ignore_index, ls)
    g = np.asarray(grad_output, z.dtype)
    if reduction == "none":
        if g.shape != t.shape:
            raise ValueError(f"grad_output must have shape {t.shape} for reduction='none', got {g.shape}")
        per = np.ascontiguousarray(g)
    else:
        if g.size != 1:
            raise ValueError(f"grad_output must be a scalar for reduction={reduction!r}")
        scale = float(g.reshape(()))
        if reduction == "mean":
            count = int(np.count_nonzero(t != ignore_index))
            scale = scale / count if count else 0.0
        per = np.full(t.shape, scale, z.dtype)
    gz = np.empty_like(z)
    if z.size:
        kernels(z).cross_entropy_backward(z, t, per, gz, n, c, inner, ignore_index, ls)
    return gz


def _gpu_scalar(value, dtype):
    """grad_output of a reduced loss on the GPU: a 1-element GPU array, or a Python / numpy scalar copied over."""
    if _device.is_gpu(value):
        if value.size != 1 or value.dtype != dtype:
            raise ValueError(f"grad_output must be a one-element {np.dtype(dtype)} array, got {value.shape} "
                             f"{value.dtype}")
        return _device.contiguous(value)
    g = np.asarray(value, dtype)
    if g.size != 1:
        raise ValueError("grad_output must be a scalar for a reduced loss")
    from ..cuda import to_device

    return to_device(g.reshape(1))


def _ce_backward_gpu(grad_output, z, t, n, c, inner, reduction, ignore_index, ls):
    k = kernels(z)
    if reduction == "none":
        if not _device.is_gpu(grad_output) or grad_output.shape != t.shape:
            raise ValueError(f"grad_output must be a GPU array of shape {t.shape} for reduction='none'")
        per = float_array(grad_output, "grad_output", dtype=z.dtype)
    else:
        per = _device.empty(t.shape, z.dtype, z)
        k.loss_scale(_gpu_scalar(grad_output, z.dtype), t, ignore_index, reduction == "mean", per)
    gz = _device.empty(z.shape, z.dtype, z)
    if z.size:
        k.cross_entropy_backward(z, t, per, gz, n, c, inner, ignore_index, ls)
    return gz


def mse_loss(input, target, reduction: str = "mean"):
    """Mean (or summed, or per-element) squared error, as ``torch.nn.functional.mse_loss``."""
    reduction = _reduction(reduction)
    x = float_array(input, "input")
    y = float_array(target, "target", x.ndim, x.dtype)
    if x.shape != y.shape:
        raise ValueError(f"input and target must have the same shape, got {x.shape} and {y.shape}")
    if _device.is_gpu(x):
        sq = _device.empty(x.shape, x.dtype, x)
        kernels(x).squared_error(x, y, sq)
        if reduction == "none":
            return sq
        out = _device.empty((), x.dtype, x)
        kernels(x).sum_all(sq, out, 1.0 / x.size if reduction == "mean" and x.size else 1.0)
        return out
    sq = np.square(x - y)
    if reduction == "none":
        return sq
    return np.asarray(sq.sum(dtype=np.float64) / (x.size if reduction == "mean" else 1), x.dtype)


def mse_loss_backward(grad_output, input, target, reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`mse_loss` with respect to ``input`` (the target's is its negative)."""
    reduction = _reduction(reduction)
    x = float_array(input, "input")
    y = float_array(target, "target", x.ndim, x.dtype)
    scale = 2.0 / x.size if reduction == "mean" and x.size else 2.0
    if _device.is_gpu(x):
        if reduction == "none":
            g = float_array(grad_output, "grad_output", x.ndim, x.dtype)
            if g.shape != x.shape:
                raise ValueError(f"grad_output must have shape {x.shape}, got {g.shape}")
        else:
            g = _gpu_scalar(grad_output, x.dtype)
        gx = _device.empty(x.shape, x.dtype, x)
        kernels(x).squared_error_backward(g, x, y, scale, gx)
        return gx
    g = np.asarray(grad_output, x.dtype)
    return (g * scale * (x - y)).astype(x.dtype, copy=False)
