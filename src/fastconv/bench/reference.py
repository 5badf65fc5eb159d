"""By-definition numpy references in float64, independent of fastconv's kernels.

``fastconv-bench`` checks every timed result against these, so that speed never
hides a wrong answer; the test suite uses the convolution references too. They
follow the textbook definitions, vectorised over everything but the filter taps
(and the groups, where a group's contraction is large enough for BLAS).
"""

from __future__ import annotations

import itertools
import math

import numpy as np


def pad_amounts(padding, kernel, dilation):
    """((before, after) per spatial axis) from PyTorch's padding argument."""
    nd = len(kernel)
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "same":
        return [(d * (k - 1) // 2, d * (k - 1) - d * (k - 1) // 2) for k, d in zip(kernel, dilation)]
    p = (padding,) * nd if isinstance(padding, int) else tuple(padding)
    return [(v, v) for v in p]


def _geometry(x, w, stride, padding, dilation):
    nd = x.ndim - 2
    kernel = w.shape[2:]
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    pads = pad_amounts(padding, kernel, dilation)
    out = tuple((x.shape[2 + i] + sum(pads[i]) - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1 for i in range(nd))
    return kernel, stride, dilation, pads, out


def _grouped(x, w, stride, padding, dilation, groups):
    """Geometry, the zero-padded input split by group (n, g, cin_g, ...) and the
    weights split by group (g, cout_g, cin_g, ...), all in float64."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    kernel, stride, dilation, pads, out = _geometry(x, w, stride, padding, dilation)
    c_out, cin_g = w.shape[:2]
    xp = np.pad(x, [(0, 0), (0, 0)] + pads)
    xg = xp.reshape((x.shape[0], groups, cin_g) + xp.shape[2:])
    wg = w.reshape((groups, c_out // groups, cin_g) + kernel)
    return kernel, stride, dilation, pads, out, xg, wg


def _window(tap, stride, dilation, out):
    """Slices of the padded input that tap `tap` reads for every output position."""
    return tuple(slice(t * d, t * d + (o - 1) * s + 1, s) for t, s, d, o in zip(tap, stride, dilation, out))


def _per_group(spec: str, a: np.ndarray, b: np.ndarray, group_axes) -> np.ndarray:
    """``np.einsum(spec, a, b)``, where ``g`` indexes the groups; for groups with a large
    contraction the groups are looped so that each runs on BLAS."""
    out = spec.split("->")[1]
    ga, gb = group_axes
    if a.shape[ga] > 8:  # many small groups (depthwise): one einsum over all of them
        return np.einsum(spec, a, b)
    parts = [np.einsum(spec.replace("g", ""), np.take(a, g, axis=ga), np.take(b, g, axis=gb), optimize=True)
             for g in range(a.shape[ga])]
    return np.stack(parts, axis=out.index("g"))


def conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """Direct definition over 1-3 spatial axes:
    y[n, o, p] = sum_{c, t} w[o, c, t] * xpad[n, g*cin_g + c, p*s + t*d]."""
    kernel, stride, dilation, pads, out, xg, wg = _grouped(x, w, stride, padding, dilation, groups)
    n, c_out = xg.shape[0], wg.shape[0] * wg.shape[1]
    y = np.zeros((n, groups, wg.shape[1]) + out)
    sp = "xyz"[: len(kernel)]
    for tap in itertools.product(*(range(k) for k in kernel)):
        patch = xg[(slice(None),) * 3 + _window(tap, stride, dilation, out)]
        y += _per_group(f"ngc{sp},goc->ngo{sp}", patch, wg[(slice(None),) * 3 + tap], (1, 0))
    y = y.reshape((n, c_out) + out)
    if bias is not None:
        y += np.asarray(bias, np.float64).reshape((1, c_out) + (1,) * len(out))
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "relu6":
        y = np.clip(y, 0, 6)
    return y


def conv_backward(gy, x, w, stride=1, padding=0, dilation=1, groups=1):
    """(grad_x, grad_w, grad_b) of `conv` (no activation), from the same definition."""
    gy = np.asarray(gy, np.float64)
    kernel, stride, dilation, pads, out, xg, wg = _grouped(x, w, stride, padding, dilation, groups)
    gyg = gy.reshape(xg.shape[:2] + (wg.shape[1],) + out)
    gxp = np.zeros_like(xg)
    gw = np.zeros_like(wg)
    sp = "xyz"[: len(kernel)]
    for tap in itertools.product(*(range(k) for k in kernel)):
        sl = (slice(None),) * 3 + _window(tap, stride, dilation, out)
        gw[(slice(None),) * 3 + tap] = _per_group(f"ngo{sp},ngc{sp}->goc", gyg, xg[sl], (1, 1))
        gxp[sl] += _per_group(f"ngo{sp},goc->ngc{sp}", gyg, wg[(slice(None),) * 3 + tap], (1, 0))
    gxp = gxp.reshape(np.shape(x)[:2] + gxp.shape[3:])
    inner = tuple(slice(b, b + s) for (b, _), s in zip(pads, np.shape(x)[2:]))
    gx = gxp[(slice(None), slice(None)) + inner]
    return gx, gw.reshape(np.shape(w)), gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))


def _pool_windows(x, kernel: int, stride: int, padding: int, fill: float):
    """(N, C, Ho, Wo, k*k) windows of a square 2-D pool without dilation or ceil_mode,
    the padding filled with `fill`; also the flat input position of each window element."""
    n, c, h, w = x.shape
    xp = np.pad(np.asarray(x, np.float64), [(0, 0), (0, 0), (padding, padding), (padding, padding)],
                constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    rows = np.arange(h + 2 * padding) - padding
    cols = np.arange(w + 2 * padding) - padding
    pos = rows[:, None] * w + cols[None, :]
    pos_win = np.lib.stride_tricks.sliding_window_view(pos, (kernel, kernel))[::stride, ::stride]
    ho, wo = win.shape[2:4]
    return win.reshape(n, c, ho, wo, -1), pos_win.reshape(ho, wo, -1)


def max_pool2d(x, kernel: int, stride: int, padding: int):
    """(y, flat argmax index within each plane), first maximum in window order."""
    win, pos = _pool_windows(x, kernel, stride, padding, -np.inf)
    arg = win.argmax(-1)
    return np.take_along_axis(win, arg[..., None], -1)[..., 0], np.take_along_axis(
        np.broadcast_to(pos, win.shape), arg[..., None], -1)[..., 0]


def max_pool2d_backward(gy, x, kernel: int, stride: int, padding: int):
    _, idx = max_pool2d(x, kernel, stride, padding)
    return max_pool_backward_at(gy, idx, x.shape)


def max_pool_backward_at(gy, indices, input_shape):
    """Max pooling's backward from its indices, any dimensionality: each gradient added, in
    float64, at its flat index within its plane; index -1 (a window with no input) adds nothing."""
    planes = int(np.prod(input_shape[:2]))
    idx = np.asarray(indices).reshape(planes, -1)
    rows = np.broadcast_to(np.arange(planes)[:, None], idx.shape)
    keep = idx >= 0
    gx = np.zeros((planes, int(np.prod(input_shape[2:]))))
    np.add.at(gx, (rows[keep], idx[keep]), np.asarray(gy, np.float64).reshape(planes, -1)[keep])
    return gx.reshape(input_shape)


def avg_pool2d(x, kernel: int, stride: int, padding: int):
    """count_include_pad=True, no ceil_mode: every window lies in the padded input, divisor k*k."""
    win, _ = _pool_windows(x, kernel, stride, padding, 0.0)
    return win.mean(-1)


def avg_pool2d_backward(gy, x_shape, kernel: int, stride: int, padding: int):
    n, c, h, w = x_shape
    gxp = np.zeros((n, c, h + 2 * padding, w + 2 * padding))
    g = np.asarray(gy, np.float64) / (kernel * kernel)
    ho, wo = g.shape[2:]
    for i, j in itertools.product(range(kernel), range(kernel)):
        gxp[:, :, i:i + (ho - 1) * stride + 1:stride, j:j + (wo - 1) * stride + 1:stride] += g
    return gxp[:, :, padding:padding + h, padding:padding + w]


def _channel(v, ndim, default=None):
    """A per-channel vector shaped to broadcast over (N, C, *spatial); None gives ``default``
    (BatchNorm without weight: 1, without bias: 0)."""
    if v is None:
        return np.full((1,) * ndim, default, np.float64)
    return np.asarray(v, np.float64).reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_train(x, weight, bias, eps):
    """(y, batch mean, 1 / sqrt(biased batch variance + eps)) over all axes but 1."""
    x = np.asarray(x, np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    mean = x.mean(axis=axes)
    invstd = 1.0 / np.sqrt(x.var(axis=axes) + eps)
    y = ((x - _channel(mean, x.ndim)) * _channel(invstd, x.ndim) * _channel(weight, x.ndim, 1.0)
         + _channel(bias, x.ndim, 0.0))
    return y, mean, invstd


def batch_norm_eval(x, running_mean, running_var, weight, bias, eps):
    x = np.asarray(x, np.float64)
    scale = _channel(weight, x.ndim, 1.0) / np.sqrt(_channel(running_var, x.ndim) + eps)
    return (x - _channel(running_mean, x.ndim)) * scale + _channel(bias, x.ndim, 0.0)


def batch_norm_train_backward(gy, x, weight, eps):
    """(grad_x, grad_weight, grad_bias) of training-mode BatchNorm."""
    x = np.asarray(x, np.float64)
    gy = np.asarray(gy, np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    m = x.size // x.shape[1]
    mean = _channel(x.mean(axis=axes), x.ndim)
    invstd = 1.0 / np.sqrt(_channel(x.var(axis=axes), x.ndim) + eps)
    xhat = (x - mean) * invstd
    gb = gy.sum(axis=axes)
    gw = (gy * xhat).sum(axis=axes)
    gx = _channel(weight, x.ndim, 1.0) * invstd / m * (m * gy - _channel(gb, x.ndim) - xhat * _channel(gw, x.ndim))
    return gx, gw, gb


def relu(x):
    return np.maximum(np.asarray(x, np.float64), 0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def tanh(x):
    return np.tanh(np.asarray(x, np.float64))


_erf = np.vectorize(math.erf, otypes=[np.float64])


def gelu(x):
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_backward(gy, x):
    x = np.asarray(x, np.float64)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return np.asarray(gy, np.float64) * (0.5 * (1.0 + _erf(x / math.sqrt(2.0))) + x * pdf)


def log_softmax(z, dim: int = -1):
    z = np.asarray(z, np.float64)
    s = z - z.max(axis=dim, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=dim, keepdims=True))


def softmax(z, dim: int = -1):
    return np.exp(log_softmax(z, dim))


def cross_entropy(z, target):
    """Mean cross-entropy of (N, C) logits against class indices."""
    lp = log_softmax(z, 1)
    return -lp[np.arange(lp.shape[0]), target].mean()


def cross_entropy_backward(z, target):
    """d(mean cross-entropy)/d logits."""
    g = softmax(z, 1)
    g[np.arange(g.shape[0]), target] -= 1.0
    return g / g.shape[0]
