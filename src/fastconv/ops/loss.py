"""Losses: cross-entropy on class indices and mean squared error, with their backward."""

from __future__ import annotations

import numpy as np

from .._runtime import backend
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
    if not isinstance(target, np.ndarray) or target.dtype.kind not in "iu":
        raise TypeError("target must be an integer numpy.ndarray of class indices")
    want = (z.shape[0],) + z.shape[2:]
    if target.shape != want:
        raise ValueError(f"target must have shape {want} for input {z.shape}, got {target.shape}")
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
    per = np.empty(t.shape, z.dtype)
    if per.size:
        backend().cross_entropy(z, t, per, n, c, inner, ignore_index, ls)
    if reduction == "none":
        return per
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
        backend().cross_entropy_backward(z, t, per, gz, n, c, inner, ignore_index, ls)
    return gz


def mse_loss(input, target, reduction: str = "mean"):
    """Mean (or summed, or per-element) squared error, as ``torch.nn.functional.mse_loss``."""
    reduction = _reduction(reduction)
    x = float_array(input, "input")
    y = float_array(target, "target", x.ndim, x.dtype)
    if x.shape != y.shape:
        raise ValueError(f"input and target must have the same shape, got {x.shape} and {y.shape}")
    sq = np.square(x - y)
    if reduction == "none":
        return sq
    return np.asarray(sq.sum(dtype=np.float64) / (x.size if reduction == "mean" else 1), x.dtype)


def mse_loss_backward(grad_output, input, target, reduction: str = "mean") -> np.ndarray:
    """Gradient of :func:`mse_loss` with respect to ``input`` (the target's is its negative)."""
    reduction = _reduction(reduction)
    x = float_array(input, "input")
    y = float_array(target, "target", x.ndim, x.dtype)
    g = np.asarray(grad_output, x.dtype)
    scale = 2.0 / x.size if reduction == "mean" and x.size else 2.0
    return (g * scale * (x - y)).astype(x.dtype, copy=False)
