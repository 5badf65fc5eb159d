"""Element-wise GPU kernels: activations, add, dropout, BatchNorm's normalisation, softmax and
cross-entropy rows, each one thread per element (or per row) with grid-stride loops.

Kind codes are ``_core``'s: relu 0, relu6 1, leaky_relu 2, sigmoid 3, tanh 4, gelu 5, gelu_tanh 6.
"""

from __future__ import annotations

import math

from numba import cuda, float64, uint64

from . import _reduce

_SQRT1_2 = 0.70710678118654752440
_SQRT2_PI = 0.79788456080286535588
_INV_SQRT_2PI = 0.39894228040143267794


@cuda.jit
def activation(kind, x, y, alpha):
    i = cuda.grid(1)
    while i < x.size:
        v = x[i]
        z = v * 0
        if kind == 0:
            r = z if v < z else v
        elif kind == 1:
            r = z if v < z else (z + 6 if v > 6 else v)
        elif kind == 2:
            r = v * alpha if v < z else v
        elif kind == 3:
            r = 1.0 / (1.0 + math.exp(-v))
        elif kind == 4:
            r = math.tanh(v)
        elif kind == 5:
            r = v * 0.5 * (1.0 + math.erf(v * _SQRT1_2))
        else:
            r = 0.5 * v * (1.0 + math.tanh(_SQRT2_PI * (v + 0.044715 * v * v * v)))
        y[i] = r
        i += cuda.gridsize(1)


@cuda.jit
def activation_backward(kind, s, g, gx, alpha):
    i = cuda.grid(1)
    while i < s.size:
        v = s[i]
        gi = g[i]
        z = gi * 0
        if kind == 0:
            r = gi if v > 0 else z
        elif kind == 1:
            r = gi if (v > 0 and v < 6) else z
        elif kind == 2:
            r = gi if v > 0 else gi * alpha
        elif kind == 3:
            r = gi * v * (1 - v)
        elif kind == 4:
            r = gi * (1 - v * v)
        elif kind == 5:
            pdf = _INV_SQRT_2PI * math.exp(-0.5 * v * v)
            r = gi * (0.5 * (1.0 + math.erf(v * _SQRT1_2)) + v * pdf)
        else:
            t = math.tanh(_SQRT2_PI * (v + 0.044715 * v * v * v))
            dinner = _SQRT2_PI * (1.0 + 3 * 0.044715 * v * v)
            r = gi * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * dinner)
        gx[i] = r
        i += cuda.gridsize(1)


@cuda.jit
def add(a, b, y):
    i = cuda.grid(1)
    while i < y.size:
        y[i] = a[i] + b[i]
        i += cuda.gridsize(1)


@cuda.jit
def add_channel_bias(y, bias, C, inner):
    i = cuda.grid(1)
    while i < y.size:
        y[i] += bias[(i // inner) % C]
        i += cuda.gridsize(1)


@cuda.jit
def block_copy(src, dst, outer, src_block, dst_block, src_off, dst_off, count):
    """dst[o * dst_block + dst_off + j] = src[o * src_block + src_off + j] for o < outer, j < count."""
    i = cuda.grid(1)
    while i < outer * count:
        o = i // count
        j = i % count
        dst[o * dst_block + dst_off + j] = src[o * src_block + src_off + j]
        i += cuda.gridsize(1)


@cuda.jit(device=True)
def _splitmix64(z):
    z = z + uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> uint64(30))) * uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> uint64(27))) * uint64(0x94D049BB133111EB)
    return z ^ (z >> uint64(31))


def splitmix64_host(seed: int) -> int:
    """The same hash on the host (the key the kernels xor with each element's index)."""
    m = (1 << 64) - 1
    z = (seed + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@cuda.jit
def dropout(x, y, mask, key, threshold, scale):
    """Keep element i iff the top 53 bits of splitmix64(key ^ i) are >= threshold: the CPU kernel's mask."""
    i = cuda.grid(1)
    while i < x.size:
        h = _splitmix64(key ^ uint64(i))
        keep = (h >> uint64(11)) >= threshold
        mask[i] = 1 if keep else 0
        y[i] = x[i] * scale if keep else x[i] * 0
        i += cuda.gridsize(1)


@cuda.jit
def dropout_backward(g, mask, gx, scale):
    i = cuda.grid(1)
    while i < g.size:
        gx[i] = g[i] * scale if mask[i] != 0 else g[i] * 0
        i += cuda.gridsize(1)


@cuda.jit
def bn_normalize(x, y, C, inner, mean, spread, from_var, eps, w, b, has_w, has_b):
    """y = (x - mean) * invstd * w + b per channel; ``spread`` is the batch's invstd (training) or,
    with ``from_var``, the running variance (eval: divided by sqrt(var + eps))."""
    i = cuda.grid(1)
    while i < x.size:
        c = (i // inner) % C
        if from_var:
            v = (x[i] - mean[c]) / math.sqrt(spread[c] + eps)
        else:
            v = (x[i] - mean[c]) * spread[c]
        if has_w:
            v = v * w[c]
        if has_b:
            v = v + b[c]
        y[i] = v
        i += cuda.gridsize(1)


@cuda.jit
def bn_grad_input(dy, x, gx, C, inner, count, mean, invstd, w, has_w, s1, s2, training):
    i = cuda.grid(1)
    while i < x.size:
        c = (i // inner) % C
        k = invstd[c]
        if has_w:
            k = k * w[c]
        if training:
            xhat = (x[i] - mean[c]) * invstd[c]
            gx[i] = k * (dy[i] - s1[c] / count - xhat * s2[c] * invstd[c] / count)
        else:
            gx[i] = k * dy[i]
        i += cuda.gridsize(1)


@cuda.jit
def softmax(x, y, outer, dim, inner, log):
    r = cuda.grid(1)
    while r < outer * inner:
        base = (r // inner) * dim * inner + r % inner
        m = -math.inf
        for k in range(dim):
            v = x[base + k * inner]
            if v > m:  # NaNs are skipped here and reach the result through the sum
                m = v
        s = 0.0
        for k in range(dim):
            s += math.exp(x[base + k * inner] - m)
        if log:
            lse = m + math.log(s)
            for k in range(dim):
                y[base + k * inner] = x[base + k * inner] - lse
        else:
            for k in range(dim):
                y[base + k * inner] = math.exp(x[base + k * inner] - m) / s
        r += cuda.gridsize(1)


@cuda.jit
def softmax_backward(y, g, gx, outer, dim, inner, log):
    r = cuda.grid(1)
    while r < outer * inner:
        base = (r // inner) * dim * inner + r % inner
        s = 0.0
        for k in range(dim):
            if log:
                s += g[base + k * inner]
            else:
                s += g[base + k * inner] * y[base + k * inner]
        for k in range(dim):
            j = base + k * inner
            if log:
                gx[j] = g[j] - math.exp(y[j]) * s
            else:
                gx[j] = y[j] * (g[j] - s)
        r += cuda.gridsize(1)


@cuda.jit(device=True)
def _logsumexp(z, base, c, inner):
    m = -math.inf
    for k in range(c):
        v = z[base + k * inner]
        if v > m or math.isnan(v):
            m = v
    if math.isinf(m) or math.isnan(m):
        return m
    s = 0.0
    for k in range(c):
        s += math.exp(z[base + k * inner] - m)
    return m + math.log(s)


@cuda.jit
def cross_entropy(z, target, loss, n, c, inner, ignore_index, eps, bad):
    s = cuda.grid(1)
    while s < n * inner:
        tg = target[s]
        base = (s // inner) * c * inner + s % inner
        if tg == ignore_index:
            loss[s] = 0
        elif tg < 0 or tg >= c:
            loss[s] = 0
            bad[0] = 1
        else:
            lse = _logsumexp(z, base, c, inner)
            val = (1.0 - eps) * (lse - z[base + tg * inner])
            if eps != 0:
                acc = 0.0
                for k in range(c):
                    acc += lse - z[base + k * inner]
                val += eps / c * acc
            loss[s] = val
        s += cuda.gridsize(1)


@cuda.jit
def cross_entropy_backward(z, target, per, gz, n, c, inner, ignore_index, eps):
    s = cuda.grid(1)
    while s < n * inner:
        tg = target[s]
        base = (s // inner) * c * inner + s % inner
        if tg == ignore_index or tg < 0 or tg >= c:
            for k in range(c):
                gz[base + k * inner] = 0
        else:
            lse = _logsumexp(z, base, c, inner)
            g = per[s]
            for k in range(c):
                gz[base + k * inner] = (math.exp(z[base + k * inner] - lse) - eps / c) * g
            gz[base + tg * inner] -= (1.0 - eps) * g
        s += cuda.gridsize(1)


@cuda.jit(device=True)
def _kept_samples(sm, target, ignore_index):
    """How many targets are not ``ignore_index`` (every thread of the one block gets the count;
    ``sm`` is the block's NTH-element float64 shared scratch)."""
    cnt = 0.0
    for j in range(cuda.threadIdx.x, target.size, _reduce.NTH):
        if target[j] != ignore_index:
            cnt += 1.0
    return _reduce.block_sum(sm, cnt)


@cuda.jit
def ce_reduce(per, target, ignore_index, mean, out):
    """out[0] = sum(per) (or its mean over the samples whose target is not ignored); one block of NTH threads."""
    sm = cuda.shared.array(_reduce.NTH, float64)
    a = 0.0
    for j in range(cuda.threadIdx.x, per.size, _reduce.NTH):
        a += per[j]
    total = _reduce.block_sum(sm, a)
    kept = _kept_samples(sm, target, ignore_index)
    if cuda.threadIdx.x == 0:
        if mean:
            out[0] = total / kept if kept > 0 else math.nan
        else:
            out[0] = total


@cuda.jit
def ce_scale(grad, target, ignore_index, mean, per):
    """per[s] = grad[0] (divided by the count of kept samples for 'mean'); one block of NTH threads."""
    sm = cuda.shared.array(_reduce.NTH, float64)
    kept = _kept_samples(sm, target, ignore_index)
    scale = grad[0] * 1.0
    if mean:
        scale = scale / kept if kept > 0 else 0.0
    for j in range(cuda.threadIdx.x, per.size, _reduce.NTH):
        per[j] = scale


@cuda.jit
def scale(x, x_is_scalar, factor, out):
    """out = factor * x, where a one-element x is broadcast over out."""
    i = cuda.grid(1)
    while i < out.size:
        out[i] = (x[0] if x_is_scalar else x[i]) * factor
        i += cuda.gridsize(1)


@cuda.jit
def squared_error(x, y, out):
    i = cuda.grid(1)
    while i < x.size:
        d = x[i] - y[i]
        out[i] = d * d
        i += cuda.gridsize(1)


@cuda.jit
def squared_error_backward(g, g_is_scalar, x, y, scale, gx):
    i = cuda.grid(1)
    while i < x.size:
        gi = g[0] if g_is_scalar else g[i]
        gx[i] = gi * scale * (x[i] - y[i])
        i += cuda.gridsize(1)
