"""Plain numpy references (float64), independent of fastconv's kernels.

The convolution references and max pooling's backward from indices are the benchmark's
(``fastconv.bench.reference``: pure numpy, vectorised over everything but the filter
taps), so that the tests and ``fastconv-bench`` check answers against one definition.
"""

import itertools

import numpy as np

from fastconv.bench.reference import conv, conv_backward, max_pool_backward_at

__all__ = ["conv", "conv_backward", "max_pool_backward_at", "conv2d", "close", "numerical_grad", "pool_output_size",
           "pool"]


def conv2d(x, w, bias=None, stride=(1, 1), padding=0, dilation=(1, 1), groups=1, activation=None):
    return conv(x, w, bias, stride, padding, dilation, groups, activation)


def close(got, ref, tol=1e-4):
    """fastconv's accuracy contract: max |got - ref| <= tol * (1 + max |ref|)."""
    ref = np.asarray(ref, np.float64)
    got = np.asarray(got, np.float64)
    if got.shape != ref.shape:
        return False
    inf = np.isinf(ref)
    if not np.array_equal(got[inf], ref[inf]):
        return False
    if inf.all():
        return True
    err = float(np.max(np.abs(got[~inf] - ref[~inf])))
    return err <= tol * (1 + float(np.max(np.abs(ref[~inf]))))


def numerical_grad(f, x, gy, eps=1e-6, samples=None, rng=None):
    """d/dx of sum(f(x) * gy) by central differences in float64.

    With `samples`, only that many randomly chosen coordinates are differenced; the
    others come back as NaN (compare with `np.isfinite` masks).
    """
    x = np.array(x, np.float64)
    g = np.full(x.shape, np.nan)
    flat = x.reshape(-1)
    idx = np.arange(flat.size)
    if samples is not None and samples < flat.size:
        idx = (rng or np.random.default_rng(0)).choice(flat.size, samples, replace=False)
    for i in idx:
        old = flat[i]
        flat[i] = old + eps
        up = float(np.sum(f(x) * gy))
        flat[i] = old - eps
        down = float(np.sum(f(x) * gy))
        flat[i] = old
        g.reshape(-1)[i] = (up - down) / (2 * eps)
    return g


def pool_output_size(size, k, s, p, d, ceil_mode):
    out = (size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def _avg_divisor(starts, valid, kernel, sizes, padding, count_include_pad, divisor_override):
    """PyTorch's average-pooling divisor of the window starting at ``starts`` (``valid``: its taps
    inside the input, per axis)."""
    if divisor_override:
        return divisor_override
    if count_include_pad:
        return np.prod([min(starts[i] + kernel[i], sizes[i] + padding[i]) - starts[i] for i in range(len(sizes))])
    return np.prod([len(v) for v in valid])


def pool(x, mode, kernel, stride, padding, dilation, ceil_mode, count_include_pad=True, divisor_override=None):
    """Max ('max') or average ('avg') pooling by definition, one output at a time (small inputs).
    Returns (y, flat argmax indices or None)."""
    x = np.asarray(x, np.float64)
    nd = x.ndim - 2
    sizes = x.shape[2:]
    outs = [pool_output_size(sizes[i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode) for i in range(nd)]
    y = np.zeros(x.shape[:2] + tuple(outs))
    idx = np.zeros(y.shape, np.int64)
    for o in itertools.product(*(range(v) for v in outs)):
        starts = [o[i] * stride[i] - padding[i] for i in range(nd)]
        taps = [[starts[i] + t * dilation[i] for t in range(kernel[i])] for i in range(nd)]
        valid = [[c for c in taps[i] if 0 <= c < sizes[i]] for i in range(nd)]
        flat = [np.ravel_multi_index(c, sizes) for c in itertools.product(*valid)]
        vals = x.reshape(x.shape[:2] + (-1,))[:, :, flat]
        if mode == "max" and not flat:  # no tap inside the input (dilated windows can miss it)
            y[(Ellipsis,) + o] = -np.inf
            idx[(Ellipsis,) + o] = -1
        elif mode == "max":
            # First maximum in window order; a NaN wins, the last one in window order (as in PyTorch, where
            # each tap that is NaN replaces the running maximum).
            nan = np.isnan(vals)
            last_nan = vals.shape[-1] - 1 - nan[..., ::-1].argmax(-1)
            arg = np.where(nan.any(-1), last_nan, vals.argmax(-1))
            y[(Ellipsis,) + o] = np.take_along_axis(vals, arg[..., None], -1)[..., 0]
            idx[(Ellipsis,) + o] = np.asarray(flat)[arg]
        else:
            y[(Ellipsis,) + o] = vals.sum(-1) / _avg_divisor(starts, valid, kernel, sizes, padding, count_include_pad,
                                                             divisor_override)
    return y, (idx if mode == "max" else None)


def avg_pool_backward(g, shape, kernel, stride, padding, ceil_mode, count_include_pad=True, divisor_override=None):
    """The adjoint of ``pool(x, 'avg', ...)`` by definition: each output's gradient spread evenly
    (by its divisor) over the input positions its window covers. ``shape`` is x's."""
    g = np.asarray(g, np.float64)
    nd = len(shape) - 2
    sizes = tuple(shape[2:])
    dilation = (1,) * nd
    outs = [pool_output_size(sizes[i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode) for i in range(nd)]
    gx = np.zeros(tuple(shape[:2]) + (int(np.prod(sizes)),))
    for o in itertools.product(*(range(v) for v in outs)):
        starts = [o[i] * stride[i] - padding[i] for i in range(nd)]
        valid = [[starts[i] + t for t in range(kernel[i]) if 0 <= starts[i] + t < sizes[i]] for i in range(nd)]
        flat = [np.ravel_multi_index(c, sizes) for c in itertools.product(*valid)]
        div = _avg_divisor(starts, valid, kernel, sizes, padding, count_include_pad, divisor_override)
        for f in flat:
            gx[:, :, f] += g[(Ellipsis,) + o] / div
    return gx.reshape(shape)
