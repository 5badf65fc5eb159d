"""Plain numpy references (float64), independent of fastconv's kernels."""

import itertools

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


def conv(x, w, bias=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """Direct definition over 1-3 spatial axes:
    y[n, o, p] = sum_{c, t} w[o, c, t] * xpad[n, g*cin_g + c, p*s + t*d]."""
    kernel, stride, dilation, pads, out, xg, wg = _grouped(x, w, stride, padding, dilation, groups)
    n, c_out = xg.shape[0], wg.shape[0] * wg.shape[1]
    y = np.zeros((n, groups, wg.shape[1]) + out)
    sp = "xyz"[: len(kernel)]
    for tap in itertools.product(*(range(k) for k in kernel)):
        patch = xg[(slice(None),) * 3 + _window(tap, stride, dilation, out)]
        y += np.einsum(f"ngc{sp},goc->ngo{sp}", patch, wg[(slice(None),) * 3 + tap])
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
        gw[(slice(None),) * 3 + tap] = np.einsum(f"ngo{sp},ngc{sp}->goc", gyg, xg[sl])
        gxp[sl] += np.einsum(f"ngo{sp},goc->ngc{sp}", gyg, wg[(slice(None),) * 3 + tap])
    gxp = gxp.reshape(np.shape(x)[:2] + gxp.shape[3:])
    inner = tuple(slice(b, b + s) for (b, _), s in zip(pads, np.shape(x)[2:]))
    gx = gxp[(slice(None), slice(None)) + inner]
    return gx, gw.reshape(np.shape(w)), gy.sum(axis=(0,) + tuple(range(2, gy.ndim)))


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
            # First maximum in window order; a NaN wins.
            nan = np.isnan(vals)
            arg = np.where(nan.any(-1), nan.argmax(-1), vals.argmax(-1))
            y[(Ellipsis,) + o] = np.take_along_axis(vals, arg[..., None], -1)[..., 0]
            idx[(Ellipsis,) + o] = np.asarray(flat)[arg]
        else:
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = np.prod([min(starts[i] + kernel[i], sizes[i] + padding[i]) - starts[i] for i in range(nd)])
            else:
                div = np.prod([len(v) for v in valid])
            y[(Ellipsis,) + o] = vals.sum(-1) / div
    return y, (idx if mode == "max" else None)
