"""Random, adversarial argument sets for fastconv's ops (run by tests/test_op_fuzz.py in a subprocess).

    python tests/fuzz_ops.py SEED CASES   ->  prints one JSON summary line

Each case picks one of the public ops (all 63 of them: every kernel, its gradient, and the shape
helpers) and draws its arguments: zero- and one-size dimensions, strides and
dilations up to 2**40, padding larger than the kernel, mismatched shapes and groups, wrong dtypes,
non-contiguous, negatively strided, transposed and read-only arrays, NaN and Inf. The op must
either return the answer of a float64 numpy reference written from the op's definition (here, or in
fastconv/bench/reference.py) or raise TypeError, ValueError or MemoryError. A case drawn with only valid arguments
("clean") must return. Anything else is recorded as a failure with the case's description.
"""

from __future__ import annotations

import json
import sys
from collections import Counter

import numpy as np

from fastconv import ops
from fastconv.bench import reference as ref

ALLOWED = (TypeError, ValueError, MemoryError)
BAD_DTYPES = [np.int32, np.int64, np.float16, np.complex64, np.bool_]
HUGE = [2 ** 20, 2 ** 31, 2 ** 40]


class Draw:
    """The random choices of one case, and whether all of them were valid."""

    def __init__(self, rng):
        self.rng = rng
        self.clean = True
        self.notes = []

    def pick(self, good, bad=(), p_bad=0.15, label=""):
        """A valid value from ``good`` or, with probability p_bad, an invalid one from ``bad``."""
        if bad and self.rng.random() < p_bad:
            self.clean = False
            v = bad[self.rng.integers(len(bad))]
            self.notes.append(f"{label}={v!r}")
            return v
        return good[self.rng.integers(len(good))]

    def array(self, shape, dtype=np.float32, name="x", finite_only=False):
        """An array of ``shape``: maybe of a wrong dtype, maybe a strided, reversed, transposed or
        read-only view, maybe holding NaN or Inf."""
        rng = self.rng
        if rng.random() < 0.08:
            dtype = BAD_DTYPES[rng.integers(len(BAD_DTYPES))]
            self.clean = False
            self.notes.append(f"{name} dtype {np.dtype(dtype).name}")
        base = np.asarray(rng.standard_normal(shape) * 2)
        if not finite_only and base.size and rng.random() < 0.05:
            flat = base.reshape(-1)
            flat[rng.integers(flat.size, size=max(1, flat.size // 10))] = [np.nan, np.inf, -np.inf][rng.integers(3)]
            self.notes.append(f"{name} has NaN/Inf")
        a = base.astype(dtype) if np.dtype(dtype).kind != "b" else base > 0
        layout = rng.integers(6)
        if layout == 1 and a.ndim:  # every other element of a larger array
            big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
            big[..., ::2] = a
            a = big[..., ::2]
            self.notes.append(f"{name} strided")
        elif layout == 2 and a.ndim:  # negative strides
            a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
            self.notes.append(f"{name} reversed")
        elif layout == 3 and a.ndim >= 2:  # a transposed array's transpose: Fortran order
            a = np.asfortranarray(a)
            self.notes.append(f"{name} F-order")
        if rng.random() < 0.1:
            a.flags.writeable = False
            self.notes.append(f"{name} read-only")
        return a


def _fits(d: Draw, sizes, kernel, stride, padding, dilation=1) -> None:
    """Marks the case invalid where a (dilated) window does not fit in a padded input."""
    if not all(isinstance(v, int) and v >= 1 for v in (kernel, stride, dilation)):
        return
    pad = 0 if padding in ("valid", "same") else padding
    if not isinstance(pad, int) or pad < 0:
        return
    if padding == "same":
        return
    for size in sizes:
        if (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1 < 1:
            d.clean = False


def _dims(d: Draw, n, label):
    """n spatial or batch sizes, mostly small, sometimes 0 or 1."""
    return tuple(int(d.pick([1, 2, 3, 5, 8], [0], p_bad=0.05, label=label)) for _ in range(n))


# --------------------------------------------------------------------------- per-op generators
# Each returns (description, call, reference) where call() runs fastconv and reference() the
# numpy definition (or raises for arguments the definition does not cover).


FILTER_CACHE = ops.FilterCache()


def gen_conv2d(d: Draw):
    n = d.pick([1, 2], [0], p_bad=0.05, label="N")
    groups = d.pick([1, 2], [3, 0, -1], p_bad=0.1, label="groups")
    cg = d.pick([1, 2, 3])
    c_in = cg * max(groups, 1)
    c_out = d.pick([1, 2, 4]) * max(groups, 1)
    h, w = _dims(d, 2, "H/W")
    k = d.pick([1, 2, 3, 5])
    stride = d.pick([1, 2, 3], HUGE + [0, -1], label="stride")
    dilation = d.pick([1, 2], HUGE + [0], label="dilation")
    padding = d.pick([0, 1, 2, 4, 7, "valid"], HUGE[1:] + [-1, "full"], label="padding")
    if padding == "same" or (d.rng.random() < 0.1 and stride == 1):
        padding = "same"
    x = d.array((n, c_in, h, w), name="x")
    wt = d.array((c_out, d.pick([cg], [cg + 1], p_bad=0.05, label="weight C_in"), k, k), name="weight")
    b = d.array((c_out,), name="bias") if d.rng.random() < 0.5 else None
    act = d.pick([None, "relu", "relu6"], ["tanh"], p_bad=0.03, label="activation")
    algo = d.pick(["auto", "direct", "im2col"], ["winograd"], p_bad=0.03, label="algo")
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _fits(d, (h, w), k, stride, padding, dilation)
    hi, lo = (6.0, 0.0) if act == "relu6" else (np.inf, 0.0)

    def reference():
        y = ref.conv(x, wt, b, **kw)
        return [np.clip(y, lo, hi) if act else y]

    # Now and then the one FilterCache every such case shares, whatever its shape (or a wrong type).
    cache = d.pick([None, None, None, FILTER_CACHE], [{}], p_bad=0.02, label="filter_cache")
    return (f"conv2d x{x.shape} w{wt.shape} {kw} act={act} algo={algo} cache={cache is not None}",
            lambda: [ops.conv2d(x, wt, b, activation=act, algo=algo, filter_cache=cache, **kw)], reference)


def gen_conv2d_backward(d: Draw):
    n, cg = d.pick([1, 2]), d.pick([1, 2])
    groups = d.pick([1, 2], [0], p_bad=0.05, label="groups")
    c_in, c_out = cg * max(groups, 1), d.pick([1, 3]) * max(groups, 1)
    h, w = _dims(d, 2, "H/W")
    k = d.pick([1, 3])
    stride = d.pick([1, 2], HUGE[:1] + [0], label="stride")
    padding = d.pick([0, 1, 3], [-2], label="padding")
    x = d.array((n, c_in, h, w), name="x")
    wt = d.array((c_out, cg, k, k), name="weight")
    _fits(d, (h, w), k, stride, padding)
    ho = (h + 2 * padding - k) // stride + 1 if stride > 0 else 1
    wo = (w + 2 * padding - k) // stride + 1 if stride > 0 else 1
    gshape = (n, c_out, max(ho, 0), max(wo, 0))
    if d.rng.random() < 0.05:
        gshape = gshape[:-1] + (gshape[-1] + 1,)
        d.clean = False
        d.notes.append("grad_output shape off by one")
    gy = d.array(gshape, name="grad_output")
    kw = dict(stride=stride, padding=padding, groups=groups)
    return (f"conv2d_backward x{x.shape} w{wt.shape} gy{gy.shape} {kw}",
            lambda: list(ops.conv2d_backward(gy, x, wt, **kw)), lambda: list(ref.conv_backward(gy, x, wt, **kw)))


def gen_pool(d: Draw):
    mode = d.pick(["max", "avg"])
    n, c = d.pick([1, 2]), d.pick([1, 3])
    h, w = _dims(d, 2, "H/W")
    k = d.pick([1, 2, 3], [0, -1] + HUGE, label="kernel")
    stride = d.pick([1, 2, 3], [0] + HUGE, label="stride")
    padding = d.pick([0, 1], [2, 5, -1], label="padding")  # PyTorch: padding <= kernel // 2
    if isinstance(k, int) and 0 < k < 2 ** 20 and padding > k // 2:
        d.clean = False
    _fits(d, (h, w), k, stride, padding)
    x = d.array((n, c, h, w), name="x")
    if mode == "max":
        return (f"max_pool2d x{x.shape} k={k} s={stride} p={padding}",
                lambda: [ops.max_pool2d(x, k, stride, padding)], lambda: [ref.max_pool2d(x, k, stride, padding)[0]])
    return (f"avg_pool2d x{x.shape} k={k} s={stride} p={padding}",
            lambda: [ops.avg_pool2d(x, k, stride, padding)], lambda: [ref.avg_pool2d(x, k, stride, padding)])


def gen_batch_norm(d: Draw):
    n = d.pick([2, 3, 4], [1], p_bad=0.05, label="N")
    c = d.pick([1, 3])
    spatial = _dims(d, d.pick([0, 1, 2]), "spatial")
    x = d.array((n, c) + spatial, name="x")
    cc = d.pick([c], [c + 1], p_bad=0.05, label="vector length")
    weight = d.array((cc,), name="weight", finite_only=True) if d.rng.random() < 0.7 else None
    bias = d.array((cc,), name="bias", finite_only=True) if d.rng.random() < 0.7 else None
    training = bool(d.rng.integers(2))
    eps = d.pick([1e-5, 1e-3], [-1.0, 0.0], p_bad=0.05, label="eps")
    if training:
        if n * int(np.prod(spatial)) <= 1:
            d.clean = False  # one value per channel: PyTorch refuses
        return (f"batch_norm train x{x.shape} eps={eps}",
                lambda: list(ops.batch_norm(x, None, None, weight, bias, training=True, eps=eps)),
                lambda: list(ref.batch_norm_train(x, weight, bias, eps)))
    rm = d.array((cc,), name="running_mean", finite_only=True)
    rv = np.abs(d.array((cc,), name="running_var", finite_only=True)) + 0.1
    return (f"batch_norm eval x{x.shape} eps={eps}",
            lambda: [ops.batch_norm(x, rm, rv, weight, bias, training=False, eps=eps)],
            lambda: [ref.batch_norm_eval(x, rm, rv, weight, bias, eps)])


def gen_linear(d: Draw):
    m, k, n = (d.pick([1, 3, 17], [0], p_bad=0.05, label="size") for _ in range(3))
    x = d.array((m, k), name="x")
    w = d.array((n, d.pick([k], [k + 1], p_bad=0.05, label="weight in_features")), name="weight")
    b = d.array((n,), name="bias") if d.rng.random() < 0.5 else None

    def reference():
        y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
        return [y if b is None else y + np.asarray(b, np.float64)]

    return f"linear x{x.shape} w{w.shape}", lambda: [ops.linear(x, w, b)], reference


ACTIVATIONS = {"relu": (ops.relu, ref.relu), "sigmoid": (ops.sigmoid, ref.sigmoid), "tanh": (ops.tanh, ref.tanh),
               "gelu": (ops.gelu, ref.gelu),
               "relu6": (ops.relu6, lambda x: np.clip(np.asarray(x, np.float64), 0, 6)),
               "leaky_relu": (lambda x: ops.leaky_relu(x, 0.2),
                              lambda x: np.where(np.asarray(x, np.float64) > 0, 1.0, 0.2) * np.asarray(x, np.float64))}


def gen_activation(d: Draw):
    name = d.pick(list(ACTIVATIONS))
    fn, rfn = ACTIVATIONS[name]
    x = d.array(_dims(d, d.pick([1, 2, 4]), "shape"), name="x")
    return f"{name} x{x.shape}", lambda: [fn(x)], lambda: [rfn(x)]


def gen_softmax(d: Draw):
    log = bool(d.rng.integers(2))
    z = d.array(_dims(d, 2, "shape"), name="z")
    dim = d.pick([1, -1, 0], [2, -3], p_bad=0.05, label="dim")
    fn, rfn = (ops.log_softmax, ref.log_softmax) if log else (ops.softmax, ref.softmax)

    def reference():  # an empty input gives an empty output
        return [np.zeros(z.shape)] if z.size == 0 and -2 <= dim < 2 else [rfn(z, dim)]

    return f"{'log_' if log else ''}softmax z{z.shape} dim={dim}", lambda: [fn(z, dim)], reference


def gen_cross_entropy(d: Draw):
    n, c = d.pick([1, 4, 9]), d.pick([2, 5])
    z = d.array((n, c), name="logits")
    target = d.rng.integers(0, c, n)
    if d.rng.random() < 0.1:
        target = target.copy()
        target[0] = d.pick([c, -5, 2 ** 40])
        d.clean = False
        d.notes.append(f"target {target[0]}")
    if d.rng.random() < 0.05:
        target = target.astype(np.float32)
        d.clean = False
        d.notes.append("float target")
    return (f"cross_entropy z{z.shape}", lambda: [ops.cross_entropy(z, target)],
            lambda: [np.asarray(ref.cross_entropy(z, target))])


def _f64(a):
    return np.asarray(a, np.float64)


# name -> (op(gy, saved), reference(gy, saved), saved is the forward's output (True) or input)
ACTIVATION_GRADS = {
    "relu_backward": (ops.relu_backward, lambda g, x: _f64(g) * (_f64(x) > 0), False),
    "relu6_backward": (ops.relu6_backward, lambda g, x: _f64(g) * ((_f64(x) > 0) & (_f64(x) < 6)), False),
    "leaky_relu_backward": (lambda g, x: ops.leaky_relu_backward(g, x, 0.2),
                            lambda g, x: _f64(g) * np.where(_f64(x) > 0, 1.0, 0.2), False),
    "sigmoid_backward": (ops.sigmoid_backward, lambda g, y: _f64(g) * _f64(y) * (1 - _f64(y)), True),
    "tanh_backward": (ops.tanh_backward, lambda g, y: _f64(g) * (1 - _f64(y) ** 2), True),
    "gelu_backward": (ops.gelu_backward, ref.gelu_backward, False),
}

def gen_activation_backward(d: Draw):
    name = d.pick(list(ACTIVATION_GRADS))
    fn, rfn, takes_output = ACTIVATION_GRADS[name]
    shape = _dims(d, d.pick([1, 2, 4]), "shape")
    saved = d.array(shape, name="saved")
    if takes_output and saved.dtype.kind == "f":
        saved = np.tanh(saved) if name == "tanh_backward" else 1 / (1 + np.exp(-saved))
    gy = d.array(d.pick([shape], [shape[:-1] + (shape[-1] + 1,)] if shape else [], p_bad=0.05, label="grad shape"),
                 name="grad_output")
    return f"{name} {saved.shape}", lambda: [fn(gy, saved)], lambda: [rfn(gy, saved)]


def gen_softmax_backward(d: Draw):
    log = bool(d.rng.integers(2))
    z = d.array(_dims(d, 2, "shape"), name="z", finite_only=True)
    y = (ref.log_softmax if log else ref.softmax)(z, 1).astype(z.dtype) if z.size and z.dtype.kind == "f" else z
    gy = d.array(z.shape, name="grad_output")

    def reference():
        g, yy = _f64(gy), _f64(y)
        if log:
            return [g - np.exp(yy) * g.sum(1, keepdims=True)]
        return [yy * (g - (g * yy).sum(1, keepdims=True))]

    fn = ops.log_softmax_backward if log else ops.softmax_backward
    return f"{'log_' if log else ''}softmax_backward {z.shape}", lambda: [fn(gy, y, 1)], reference


def gen_add_matmul(d: Draw):
    if d.rng.integers(2):
        shape = _dims(d, d.pick([1, 3]), "shape")
        a = d.array(shape, name="a")
        b = d.array(d.pick([shape], [shape + (1,), shape[:-1]] if shape else [], p_bad=0.05, label="b shape"), name="b")
        return f"add {a.shape} {b.shape}", lambda: [ops.add(a, b)], lambda: [_f64(a) + _f64(b)]
    m, k, n = (d.pick([1, 4, 9], [0], p_bad=0.05, label="size") for _ in range(3))
    a = d.array((m, k), name="a")
    b = d.array((d.pick([k], [k + 2], p_bad=0.05, label="b rows"), n), name="b")
    return f"matmul {a.shape} {b.shape}", lambda: [ops.matmul(a, b)], lambda: [_f64(a) @ _f64(b)]


def gen_mse(d: Draw):
    shape = _dims(d, d.pick([1, 2, 3]), "shape")
    x, y = d.array(shape, name="input"), d.array(shape, name="target")
    reduction = d.pick(["mean", "sum", "none"], ["max"], p_bad=0.05, label="reduction")
    if reduction == "mean" and not x.size:
        d.clean = False  # the mean of nothing

    def reduce(v):
        return v if reduction == "none" else np.asarray(v.sum() / (v.size if reduction == "mean" else 1))

    if d.rng.integers(2):
        return f"mse_loss {shape} {reduction}", lambda: [ops.mse_loss(x, y, reduction)], \
            lambda: [reduce((_f64(x) - _f64(y)) ** 2)]
    g = d.array(shape, name="grad_output") if reduction == "none" else np.float32(1.5)
    scale = 2.0 / max(x.size, 1) if reduction == "mean" else 2.0
    return (f"mse_loss_backward {shape} {reduction}", lambda: [ops.mse_loss_backward(g, x, y, reduction)],
            lambda: [_f64(g) * scale * (_f64(x) - _f64(y))])


def gen_conv_nd(d: Draw):
    nd = d.pick([1, 3])
    n, cg = d.pick([1, 2]), d.pick([1, 2])
    groups = d.pick([1, 2], [0], p_bad=0.05, label="groups")
    c_in, c_out = cg * max(groups, 1), d.pick([1, 2]) * max(groups, 1)
    spatial = _dims(d, nd, "spatial")
    k = d.pick([1, 2, 3])
    stride = d.pick([1, 2], HUGE[:1] + [0], label="stride")
    padding = d.pick([0, 1, 4], [-1], label="padding")
    dilation = d.pick([1, 2], [0], label="dilation")
    x = d.array((n, c_in) + spatial, name="x")
    w = d.array((c_out, cg) + (k,) * nd, name="weight")
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    _fits(d, spatial, k, stride, padding, dilation)
    fwd, bwd = (ops.conv1d, ops.conv1d_backward) if nd == 1 else (ops.conv3d, ops.conv3d_backward)
    if d.rng.integers(2):
        return f"conv{nd}d x{x.shape} w{w.shape} {kw}", lambda: [fwd(x, w, **kw)], lambda: [ref.conv(x, w, **kw)]
    try:
        out_shape = ref.conv(np.zeros(x.shape), np.zeros(w.shape), **kw).shape
    except Exception:
        out_shape = (n, c_out) + spatial
    gy = d.array(out_shape, name="grad_output")
    return (f"conv{nd}d_backward x{x.shape} w{w.shape} {kw}", lambda: list(bwd(gy, x, w, **kw)),
            lambda: list(ref.conv_backward(gy, x, w, **kw)))


def gen_pool_backward(d: Draw):
    n, c = d.pick([1, 2]), d.pick([1, 3])
    h, w = _dims(d, 2, "H/W")
    k, stride, padding = d.pick([1, 2, 3]), d.pick([1, 2]), d.pick([0, 1])
    if padding > k // 2:
        padding = 0
    _fits(d, (h, w), k, stride, padding)
    x = d.array((n, c, h, w), name="x", finite_only=True)
    ho, wo = ((v + 2 * padding - k) // stride + 1 for v in (h, w))
    gy = d.array((n, c, max(ho, 0), max(wo, 0)), name="grad_output")
    if d.rng.integers(2):
        def call():
            _, idx = ops.max_pool2d(x, k, stride, padding, return_indices=True)
            return [ops.max_pool2d_backward(gy, idx, x.shape)]

        return (f"max_pool2d_backward x{x.shape} k={k} s={stride} p={padding}", call,
                lambda: [ref.max_pool2d_backward(gy, x, k, stride, padding)])
    shape = d.pick([x.shape], [x.shape[:3], (n, c, h + 5, w)], p_bad=0.05, label="input_shape")
    return (f"avg_pool2d_backward x{x.shape} k={k} s={stride} p={padding}",
            lambda: [ops.avg_pool2d_backward(gy, shape, k, stride, padding)],
            lambda: [ref.avg_pool2d_backward(gy, shape, k, stride, padding)])


def gen_batch_norm_backward(d: Draw):
    n, c = d.pick([2, 3]), d.pick([1, 3])
    spatial = _dims(d, d.pick([0, 2]), "spatial")
    x = d.array((n, c) + spatial, name="x", finite_only=True)
    gy = d.array(x.shape, name="grad_output")
    weight = d.array((c,), name="weight", finite_only=True) if d.rng.random() < 0.7 else None
    eps = 1e-5
    xf = _f64(x) if x.dtype.kind == "f" else np.zeros(x.shape)
    axes = (0,) + tuple(range(2, x.ndim))
    dt = x.dtype if x.dtype.kind == "f" else np.float32
    mean = xf.mean(axis=axes).astype(dt) if xf.size else np.zeros(c, dt)
    invstd = (1 / np.sqrt(xf.var(axis=axes) + eps)).astype(dt) if xf.size else np.ones(c, dt)
    def reference():
        # The definition given the saved statistics as passed (float32-rounded, like fastconv gets them).
        shape = (1, c) + (1,) * len(spatial)
        g = _f64(gy)
        xhat = (_f64(x) - _f64(mean).reshape(shape)) * _f64(invstd).reshape(shape)
        m = g.size // max(c, 1)
        gb, gw = g.sum(axis=axes), (g * xhat).sum(axis=axes)
        scale = (1.0 if weight is None else _f64(weight).reshape(shape)) * _f64(invstd).reshape(shape) / max(m, 1)
        gx = scale * (m * g - gb.reshape(shape) - xhat * gw.reshape(shape))
        return [gx, gb] if weight is None else [gx, gw, gb]

    return (f"batch_norm_backward x{x.shape}",
            lambda: [a for a in ops.batch_norm_backward(gy, x, weight, mean, invstd) if a is not None], reference)


def gen_cross_entropy_backward(d: Draw):
    n, c = d.pick([1, 4]), d.pick([2, 5])
    z = d.array((n, c), name="logits")
    target = d.rng.integers(0, c, n)
    return (f"cross_entropy_backward z{z.shape}", lambda: [ops.cross_entropy_backward(np.float32(1), z, target)],
            lambda: [ref.cross_entropy_backward(z, target)])


# --------------------------------------------------------------------------- the rest of the ops


def _pool_ref(x, k, s, p, mode):
    """Max or average (padding counted) pooling over all spatial axes, by sliding windows."""
    x = _f64(x)
    nd = x.ndim - 2
    fill = -np.inf if mode == "max" else 0.0
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p)] * nd, constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k,) * nd, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None)) + (slice(None, None, s),) * nd]
    axes = tuple(range(-nd, 0))
    return win.max(axis=axes) if mode == "max" else win.sum(axis=axes) / k ** nd


def _pool_backward_ref(gy, x, k, s, p, mode):
    x, gy = _f64(x), _f64(gy)
    nd = x.ndim - 2
    gxp = np.zeros(x.shape[:2] + tuple(v + 2 * p for v in x.shape[2:]))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p, p)] * nd, constant_values=-np.inf)
    for pos in np.ndindex(*gy.shape[2:]):
        window = (slice(None), slice(None)) + tuple(slice(q * s, q * s + k) for q in pos)
        g = gy[(slice(None), slice(None)) + pos]
        if mode == "avg":
            gxp[window] += g.reshape(g.shape + (1,) * nd) / k ** nd
            continue
        block = xp[window].reshape(x.shape[:2] + (-1,))
        flat = np.argmax(block, axis=-1)  # the first maximum, as the kernels and PyTorch take it
        for n, c in np.ndindex(*x.shape[:2]):
            offs = np.unravel_index(flat[n, c], (k,) * nd)
            gxp[(n, c) + tuple(q * s + o for q, o in zip(pos, offs))] += g[n, c]
    return gxp[(slice(None), slice(None)) + tuple(slice(p, p + v) for v in x.shape[2:])]


POOLS = {1: (ops.max_pool1d, ops.max_pool1d_backward, ops.avg_pool1d, ops.avg_pool1d_backward),
         2: (ops.max_pool2d, ops.max_pool2d_backward, ops.avg_pool2d, ops.avg_pool2d_backward),
         3: (ops.max_pool3d, ops.max_pool3d_backward, ops.avg_pool3d, ops.avg_pool3d_backward)}


def gen_pool_nd(d: Draw):
    nd = d.pick([1, 3])
    spatial = _dims(d, nd, "spatial")
    k = d.pick([1, 2, 3], [0] + HUGE[:1], label="kernel")
    stride = d.pick([1, 2], [0], label="stride")
    padding = d.pick([0, 1], [-1, 4], label="padding")
    if isinstance(k, int) and k > 0 and padding > k // 2:
        d.clean = False
    _fits(d, spatial, k, stride, padding)
    x = d.array((d.pick([1, 2]), d.pick([1, 2])) + spatial, name="x", finite_only=True)
    mx, mx_b, av, av_b = POOLS[nd]
    mode, backward = d.pick(["max", "avg"]), bool(d.rng.integers(2))
    desc = f"{mode}_pool{nd}d{'_backward' if backward else ''} x{x.shape} k={k} s={stride} p={padding}"
    if not backward:
        fn = mx if mode == "max" else av
        return desc, lambda: [fn(x, k, stride, padding)], lambda: [_pool_ref(x, k, stride, padding, mode)]
    out = tuple((v + 2 * padding - k) // stride + 1 if isinstance(k, int) and k > 0 and stride > 0 else 1
                for v in spatial)
    gy = d.array(x.shape[:2] + tuple(max(v, 0) for v in out), name="grad_output")

    def call():
        if mode == "max":
            _, idx = mx(x, k, stride, padding, return_indices=True)
            return [mx_b(gy, idx, x.shape)]
        return [av_b(gy, x.shape, k, stride, padding)]

    return desc, call, lambda: [_pool_backward_ref(gy, x, k, stride, padding, mode)]


def _adaptive_windows(size, out):
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def _adaptive_ref(x, out_hw, mode):
    x = _f64(x)
    y = np.zeros(x.shape[:2] + out_hw)
    for i, (h0, h1) in enumerate(_adaptive_windows(x.shape[2], out_hw[0])):
        for j, (w0, w1) in enumerate(_adaptive_windows(x.shape[3], out_hw[1])):
            block = x[:, :, h0:h1, w0:w1]
            y[:, :, i, j] = block.max(axis=(2, 3)) if mode == "max" else block.mean(axis=(2, 3))
    return y


def _adaptive_backward_ref(gy, x, mode):
    x, gy = _f64(x), _f64(gy)
    gx = np.zeros(x.shape)
    for i, (h0, h1) in enumerate(_adaptive_windows(x.shape[2], gy.shape[2])):
        for j, (w0, w1) in enumerate(_adaptive_windows(x.shape[3], gy.shape[3])):
            if mode == "avg":
                gx[:, :, h0:h1, w0:w1] += gy[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))
                continue
            block = x[:, :, h0:h1, w0:w1].reshape(x.shape[:2] + (-1,))
            for n, c in np.ndindex(*x.shape[:2]):
                a, b = np.unravel_index(np.argmax(block[n, c]), (h1 - h0, w1 - w0))
                gx[n, c, h0 + a, w0 + b] += gy[n, c, i, j]
    return gx


def gen_adaptive_pool(d: Draw):
    h, w = (d.pick([1, 3, 5, 7]) for _ in range(2))
    x = d.array((d.pick([1, 2]), d.pick([1, 3]), h, w), name="x", finite_only=True)
    kind = d.pick(["avg", "max", "global"])
    out = (1, 1) if kind == "global" else tuple(d.pick([1, 2, 3, 4], [0, -1], p_bad=0.05, label="output_size")
                                                 for _ in range(2))
    backward = bool(d.rng.integers(2))
    mode = "max" if kind == "max" else "avg"
    op = "global_avg_pool2d" if kind == "global" else f"adaptive_{kind}_pool2d"
    desc = f"{op}{'_backward' if backward else ''} x{x.shape} out={out}"
    if not backward:
        call = {"avg": lambda: [ops.adaptive_avg_pool2d(x, out)], "max": lambda: [ops.adaptive_max_pool2d(x, out)],
                "global": lambda: [ops.global_avg_pool2d(x)]}[kind]
        return desc, call, lambda: [_adaptive_ref(x, out, mode)]
    gy = d.array(x.shape[:2] + tuple(max(v, 0) for v in out), name="grad_output")

    def call():
        if kind == "max":
            _, idx = ops.adaptive_max_pool2d(x, out, return_indices=True)
            return [ops.adaptive_max_pool2d_backward(gy, idx, x.shape)]
        if kind == "global":
            return [ops.global_avg_pool2d_backward(gy, x.shape)]
        return [ops.adaptive_avg_pool2d_backward(gy, x.shape)]

    return desc, call, lambda: [_adaptive_backward_ref(gy, x, mode)]


def _transpose_taps(x, w, stride, padding, output_padding, groups, dilation):
    """Yields, per group and tap: the slice of the unpadded output that the tap writes, and the group's
    input and weight; the unpadded output spans (H - 1) * stride + dilation * (k - 1) + 1 + output_padding."""
    n, c_in, h, wd = x.shape
    cin_g, k = c_in // groups, w.shape[2]
    if h == 0 or wd == 0:
        return  # an empty input writes nothing
    for grp in range(groups):
        xs, ws = x[:, grp * cin_g:(grp + 1) * cin_g], w[grp * cin_g:(grp + 1) * cin_g]
        for a in range(k):
            for b in range(k):
                yield grp, (slice(a * dilation, a * dilation + (h - 1) * stride + 1, stride),
                            slice(b * dilation, b * dilation + (wd - 1) * stride + 1, stride)), xs, ws[:, :, a, b], a, b


def _conv_transpose_ref(x, w, bias, stride, padding, output_padding, groups, dilation):
    """y[n, o, i*s - p + a*d, j*s - p + b*d] += x[n, c, i, j] * w[c, o, a, b]: the definition."""
    x, w = _f64(x), _f64(w)
    n, (h, wd), k, cout_g = x.shape[0], x.shape[2:], w.shape[2], w.shape[1]
    full = [(v - 1) * stride + dilation * (k - 1) + 1 + output_padding for v in (h, wd)]
    big = np.zeros((n, cout_g * groups) + tuple(full))
    for grp, sl, xs, wt, _, _ in _transpose_taps(x, w, stride, padding, output_padding, groups, dilation):
        big[(slice(None), slice(grp * cout_g, (grp + 1) * cout_g)) + sl] += np.einsum("nchw,co->nohw", xs, wt)
    y = big[:, :, padding:full[0] - padding, padding:full[1] - padding]
    return y if bias is None else y + _f64(bias).reshape(1, -1, 1, 1)


def _conv_transpose_backward_ref(gy, x, w, stride, padding, output_padding, groups, dilation):
    x, w, gy = _f64(x), _f64(w), _f64(gy)
    k, cout_g, cin_g = w.shape[2], w.shape[1], x.shape[1] // groups
    full = [(v - 1) * stride + dilation * (k - 1) + 1 + output_padding for v in x.shape[2:]]
    big = np.zeros(gy.shape[:2] + tuple(full))
    big[:, :, padding:full[0] - padding, padding:full[1] - padding] = gy
    gx, gw = np.zeros(x.shape), np.zeros(w.shape)
    for grp, sl, xs, wt, a, b in _transpose_taps(x, w, stride, padding, output_padding, groups, dilation):
        g = big[(slice(None), slice(grp * cout_g, (grp + 1) * cout_g)) + sl]
        gx[:, grp * cin_g:(grp + 1) * cin_g] += np.einsum("nohw,co->nchw", g, wt)
        gw[grp * cin_g:(grp + 1) * cin_g, :, a, b] = np.einsum("nchw,nohw->co", xs, g)
    return [gx, gw, gy.sum(axis=(0, 2, 3))]


def gen_conv_transpose(d: Draw):
    n, groups = d.pick([1, 2]), d.pick([1, 2], [0], p_bad=0.05, label="groups")
    g = max(groups, 1)
    c_in, c_out = d.pick([1, 2]) * g, d.pick([1, 2]) * g
    h, w = (d.pick([1, 2, 4], [0], p_bad=0.05, label="H/W") for _ in range(2))
    k, stride, dilation = d.pick([1, 2, 3]), d.pick([1, 2, 3], [0], label="stride"), d.pick([1, 2])
    padding = d.pick([0, 1], [-1], label="padding")
    output_padding = d.pick([0, 1], [5], p_bad=0.05, label="output_padding")
    if isinstance(stride, int) and stride > 0 and output_padding >= max(stride, dilation):
        d.clean = False  # PyTorch: output_padding < stride or dilation
    x = d.array((n, c_in, h, w), name="x")
    wt = d.array((c_in, c_out // g, k, k), name="weight")
    b = d.array((c_out,), name="bias") if d.rng.random() < 0.5 else None
    size = [(v - 1) * stride - 2 * padding + dilation * (k - 1) + output_padding + 1 if stride > 0 else 0
            for v in (h, w)]
    if min(size) < 1:
        d.clean = False
    kw = dict(stride=stride, padding=padding, output_padding=output_padding, groups=groups, dilation=dilation)
    zeros = np.zeros((n, c_out) + tuple(max(v, 0) for v in size))

    args = (stride, padding, output_padding, groups, dilation)
    if d.rng.integers(2):
        return (f"conv_transpose2d x{x.shape} w{wt.shape} {kw}", lambda: [ops.conv_transpose2d(x, wt, b, **kw)],
                lambda: [_conv_transpose_ref(x, wt, b, *args)])
    gy = d.array(zeros.shape, name="grad_output")
    return (f"conv_transpose2d_backward x{x.shape} w{wt.shape} {kw}",
            lambda: list(ops.conv_transpose2d_backward(gy, x, wt, **kw)),
            lambda: _conv_transpose_backward_ref(gy, x, wt, *args))


def gen_separable(d: Draw):
    n, c, mult = d.pick([1, 2]), d.pick([1, 3]), d.pick([1, 2])
    h, w = _dims(d, 2, "H/W")
    k, stride, padding = d.pick([1, 3]), d.pick([1, 2], [0], label="stride"), d.pick([0, 1, "same"])
    if padding == "same" and stride != 1:
        padding = 1
    _fits(d, (h, w), k, stride, padding)
    x = d.array((n, c, h, w), name="x")
    dw = d.array((c * mult, 1, k, k), name="dw_weight")
    pw = d.array((d.pick([2, 4]), d.pick([c * mult], [c * mult + 1], p_bad=0.05, label="pw C_in"), 1, 1),
                 name="pw_weight")
    act = d.pick([None, "relu", "relu6"])

    def activate(v):
        return v if act is None else np.clip(v, 0, 6 if act == "relu6" else np.inf)

    def reference():
        mid = activate(ref.conv(x, dw, stride=stride, padding=padding, groups=c))
        return [activate(ref.conv(mid, pw))]

    return (f"depthwise_separable_conv2d x{x.shape} dw{dw.shape} pw{pw.shape} act={act}",
            lambda: [ops.depthwise_separable_conv2d(x, dw, pw, stride=stride, padding=padding, activation=act)],
            reference)


def gen_dropout(d: Draw):
    x = d.array(_dims(d, d.pick([1, 2, 4]), "shape"), name="x")
    p = d.pick([0.0, 0.3, 0.5, 0.9], [1.5, -0.1], p_bad=0.05, label="p")
    training = bool(d.rng.integers(4))
    seed = int(d.rng.integers(2 ** 31))
    got = {}

    def call():
        y, mask = ops.dropout(x, p, training, seed=seed)
        got["mask"] = np.asarray(mask)
        gy = np.ones_like(y)
        return [y, ops.dropout_backward(gy, mask, p)]

    def reference():
        # The returned mask is 0/1 (all 1 in eval, where y = x); in training y = x * mask / (1 - p).
        # dropout_backward(g, mask, p) is g * mask / (1 - p), whatever the mode.
        mask = got["mask"]
        if not np.isin(mask, (0, 1)).all() or (not training and not mask.all()):
            return [np.full(x.shape, np.nan)] * 2
        scale = 1.0 / (1 - p) if p < 1 else 0.0
        return [_f64(x) * mask * (scale if training else 1.0), mask * scale]

    return f"dropout+dropout_backward x{x.shape} p={p} training={training}", call, reference


def gen_shape_ops(d: Draw):
    kind = d.pick(["cat", "cat_backward", "flatten", "flatten_backward", "add_backward"])
    if kind.startswith("cat"):
        dim = d.pick([1, 0, -1], [4], p_bad=0.05, label="dim")
        base = (2, 3, 2)
        sizes = [d.pick([1, 2, 0]) for _ in range(d.pick([1, 2, 3]))]
        parts = []
        for i, s_ in enumerate(sizes):
            shape = list(base)
            shape[dim if -3 <= dim < 3 else 1] = s_
            parts.append(d.array(tuple(shape), name=f"part{i}"))
        if kind == "cat":
            return f"cat {[q.shape for q in parts]} dim={dim}", lambda: [ops.cat(parts, dim)], \
                lambda: [np.concatenate([_f64(q) for q in parts], axis=dim)]
        g = d.array(tuple(sum(sizes) if i == (dim % 3 if -3 <= dim < 3 else 1) else v for i, v in enumerate(base)),
                    name="grad_output")
        return (f"cat_backward {g.shape} sizes={sizes} dim={dim}", lambda: list(ops.cat_backward(g, sizes, dim)),
                lambda: np.split(_f64(g), np.cumsum(sizes)[:-1], axis=dim))
    x = d.array(_dims(d, d.pick([2, 3, 4]), "shape"), name="x")
    if kind == "add_backward":
        return f"add_backward {x.shape}", lambda: list(ops.add_backward(x)), lambda: [_f64(x), _f64(x)]
    start, end = d.pick([0, 1], [7], p_bad=0.05, label="start_dim"), d.pick([-1, x.ndim - 1])
    if kind == "flatten":
        def reference():
            s0, e0 = start % x.ndim, end % x.ndim
            if s0 > e0:
                return [_f64(x)]
            return [_f64(x).reshape(x.shape[:s0] + (int(np.prod(x.shape[s0:e0 + 1])),) + x.shape[e0 + 1:])]

        return f"flatten {x.shape} {start}..{end}", lambda: [ops.flatten(x, start, end)], reference
    shape = d.pick([(x.size,)], [(x.size + 1,)], p_bad=0.05, label="input_shape")
    return (f"flatten_backward {x.shape} -> {shape}", lambda: [ops.flatten_backward(x.reshape(-1), shape)],
            lambda: [_f64(x).reshape(shape)])


def gen_fold_linear_backward(d: Draw):
    if d.rng.integers(2):
        c = d.pick([1, 4])
        w = d.array((c, 2, 3, 3), name="conv_weight")
        b = d.array((c,), name="conv_bias") if d.rng.random() < 0.5 else None
        rm = d.array((d.pick([c], [c + 1], p_bad=0.05, label="stats length"),), name="running_mean",
                     finite_only=True)
        rv = np.abs(d.array(rm.shape, name="running_var", finite_only=True)) + 0.5
        gamma, beta = d.array(rm.shape, name="bn_weight"), d.array(rm.shape, name="bn_bias")

        def reference():
            scale = _f64(gamma) / np.sqrt(_f64(rv) + 1e-5)
            bias = (0.0 if b is None else _f64(b)) * scale + _f64(beta) - _f64(rm) * scale
            return [_f64(w) * scale.reshape(-1, 1, 1, 1), bias]

        return f"fold_batchnorm w{w.shape}", lambda: list(ops.fold_batchnorm(w, b, rm, rv, gamma, beta)), reference
    m, k, n = (d.pick([1, 3, 6], [0], p_bad=0.05, label="size") for _ in range(3))
    x, w = d.array((m, k), name="x"), d.array((n, k), name="weight")
    gy = d.array((m, d.pick([n], [n + 1], p_bad=0.05, label="grad width")), name="grad_output")
    return (f"linear_backward x{x.shape} w{w.shape}", lambda: list(ops.linear_backward(gy, x, w)),
            lambda: [_f64(gy) @ _f64(w), _f64(gy).T @ _f64(x), _f64(gy).sum(axis=0)])


def gen_helpers(d: Draw):
    size = tuple(d.pick([1, 4, 9], [0, -2], p_bad=0.05, label="size") for _ in range(2))
    k = d.pick([1, 3], [0], p_bad=0.05, label="kernel")
    stride, padding = d.pick([1, 2], [0], label="stride"), d.pick([0, 1, "valid", "same"], [-1], label="padding")
    if padding == "same" and stride != 1:
        padding = 1
    _fits(d, size, k, stride, padding)
    if d.rng.integers(2):
        def reference():
            pads = ref.pad_amounts(padding, (k, k), (1, 1))
            return [np.array([(v + sum(p) - k) // stride + 1 for v, p in zip(size, pads)])]

        return (f"conv2d_output_shape {size} k={k} s={stride} p={padding}",
                lambda: [np.array(ops.conv2d_output_shape(size, k, stride, padding))], reference)
    x = d.array((1, 2) + size, name="x") if min(size) >= 0 else np.zeros((1, 2, 1, 1), np.float32)
    w = d.array((3, 2, k, k), name="weight") if k > 0 else np.zeros((3, 2, 1, 1), np.float32)
    got = {}

    def call():  # the algorithm auto picks, then that algorithm run by name
        got["algo"] = ops.conv_algorithm(x, w, stride, padding)
        return [ops.conv2d(x, w, stride=stride, padding=padding, algo=got["algo"])]

    def reference():
        if got["algo"] not in ops.ALGORITHMS:
            return []
        return [ref.conv(x, w, stride=stride, padding=padding)]

    return f"conv_algorithm x{x.shape} w{w.shape} s={stride} p={padding}", call, reference


# conv2d and the six activations are listed twice: they draw twice the share of cases.
GENERATORS = [gen_conv2d, gen_conv2d, gen_conv2d_backward, gen_pool, gen_batch_norm, gen_linear, gen_activation,
              gen_softmax, gen_cross_entropy, gen_activation, gen_activation_backward, gen_softmax_backward,
              gen_add_matmul, gen_mse, gen_conv_nd, gen_pool_backward, gen_batch_norm_backward,
              gen_cross_entropy_backward, gen_pool_nd, gen_adaptive_pool, gen_conv_transpose, gen_separable,
              gen_dropout, gen_shape_ops, gen_fold_linear_backward, gen_helpers]


def _matches(got, expect, nonfinite_inputs: bool) -> bool:
    """Same shapes; within float32 (or float64) rounding of the reference where it is finite, and
    not finite where it is not (which of NaN or Inf comes out may differ). With NaN or Inf among
    the inputs, an element that only a zero of the padding meets may be NaN on one side and 0 on
    the other (0 x NaN is NaN): a kernel that multiplies the padded zeros and one that skips them
    are both right; elsewhere the two must agree."""
    if len(got) != len(expect):
        return False
    for g, e in zip(got, expect):
        g, e = np.asarray(g, np.float64), np.asarray(e, np.float64)
        if g.shape != e.shape:
            return False
        finite = np.isfinite(e)
        if nonfinite_inputs:
            finite &= np.isfinite(g)
        elif not np.array_equal(np.isfinite(g), finite):
            return False
        if finite.any():
            tol = (1e-4 if np.asarray(got[0]).dtype == np.float32 else 1e-9) * (1 + np.abs(e[finite]).max())
            if np.abs(g[finite] - e[finite]).max() > tol:
                return False
    return True


def run(seed: int, cases: int, trace: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    outcomes, failures = Counter(), []
    for i in range(cases):
        d = Draw(rng)
        gen = GENERATORS[rng.integers(len(GENERATORS))]
        desc, call, reference = gen(d)
        op = desc.split()[0]
        where = f"case {i}: {desc} [{', '.join(d.notes) or 'clean'}]"
        if trace:  # the last line written names the case that crashed the process
            print(where, file=sys.stderr, flush=True)
        try:
            got = call()
        except ALLOWED as e:
            if d.clean:
                failures.append(f"{where}: valid arguments raised {type(e).__name__}: {e}")
            outcomes[f"{op}: {type(e).__name__}"] += 1
            continue
        except BaseException as e:
            failures.append(f"{where}: raised {type(e).__name__}: {e}")
            continue
        try:
            with np.errstate(all="ignore"):
                expect = reference()
        except MemoryError:  # the definition pads explicitly: a huge 'same' padding is beyond it
            outcomes[f"{op}: returned (reference too large)"] += 1
            continue
        except Exception as e:
            failures.append(f"{where}: fastconv returned, but the arguments are outside the definition "
                            f"({type(e).__name__}: {e})")
            continue
        if not _matches(got, expect, any("NaN/Inf" in n for n in d.notes)):
            failures.append(f"{where}: the answer differs from the reference")
            continue
        outcomes[f"{op}: answer"] += 1
    return {"cases": cases, "outcomes": dict(outcomes), "failures": failures[:50], "failed": len(failures)}


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]), int(sys.argv[2]), trace="--trace" in sys.argv[3:])))
