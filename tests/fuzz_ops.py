"""Random, adversarial argument sets for fastconv's ops (run by tests/test_op_fuzz.py in a subprocess).

    python tests/fuzz_ops.py SEED CASES   ->  prints one JSON summary line

Each case picks one of 35 ops (the convolutions in 1-3 dimensions and their gradients, max/avg
pooling and their gradients, BatchNorm forward and backward, linear, matmul, add, the activations
and their gradients, softmax / log-softmax and theirs, cross-entropy and MSE with their gradients)
and draws its arguments: zero- and one-size dimensions, strides and
dilations up to 2**40, padding larger than the kernel, mismatched shapes and groups, wrong dtypes,
non-contiguous, negatively strided, transposed and read-only arrays, NaN and Inf. The op must
either return the answer of the float64 numpy reference (bench/reference.py, written from the
definitions) or raise TypeError, ValueError or MemoryError. A case drawn with only valid arguments
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

    return (f"conv2d x{x.shape} w{wt.shape} {kw} act={act} algo={algo}",
            lambda: [ops.conv2d(x, wt, b, activation=act, algo=algo, **kw)], reference)


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
               "gelu": (ops.gelu, ref.gelu)}


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
ELEMENTWISE = {"relu6": (ops.relu6, lambda x: np.clip(_f64(x), 0, 6)),
               "leaky_relu": (lambda x: ops.leaky_relu(x, 0.2), lambda x: np.where(_f64(x) > 0, _f64(x), 0.2 * _f64(x)))}


def gen_elementwise(d: Draw):
    name = d.pick(list(ELEMENTWISE))
    fn, rfn = ELEMENTWISE[name]
    x = d.array(_dims(d, d.pick([1, 2, 4]), "shape"), name="x")
    return f"{name} x{x.shape}", lambda: [fn(x)], lambda: [rfn(x)]


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


GENERATORS = [gen_conv2d, gen_conv2d, gen_conv2d_backward, gen_pool, gen_batch_norm, gen_linear, gen_activation,
              gen_softmax, gen_cross_entropy, gen_elementwise, gen_activation_backward, gen_softmax_backward,
              gen_add_matmul, gen_mse, gen_conv_nd, gen_pool_backward, gen_batch_norm_backward,
              gen_cross_entropy_backward]


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
