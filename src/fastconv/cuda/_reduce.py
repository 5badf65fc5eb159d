"""Parallel reductions: per-channel sums of (N, C, inner) arrays (bias gradients, BatchNorm)
and whole-array sums, in two stages (partial sums per block, then one pass per channel),
accumulated in float64 so float32 statistics keep their precision."""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import cuda

from . import _rt

NTH = 8 if _rt.SIM else 256  # threads per reduction block (a power of two)
MAX_SPLIT = 4 if _rt.SIM else 64  # blocks per channel in the first stage


@cuda.jit(device=True)
def block_sum(sm, v):
    """Sum of ``v`` over the block's NTH threads (every thread gets the total)."""
    t = cuda.threadIdx.x
    sm[t] = v
    cuda.syncthreads()
    step = NTH // 2
    while step > 0:
        if t < step:
            sm[t] += sm[t + step]
        cuda.syncthreads()
        step //= 2
    total = sm[0]
    cuda.syncthreads()
    return total


# mode 0: s1 = sum x. mode 1 (BatchNorm statistics): s1, s2 = sum d, sum d^2 with d = x - x[0, c, 0]
# (a shift that keeps the one-pass variance accurate). mode 2 (BatchNorm backward): s1 = sum dy,
# s2 = sum dy * (x - mean[c]).
@cuda.jit
def _channel_partial(x, dy, mean, N, C, inner, split, mode, part1, part2):
    sm = cuda.shared.array(NTH, numba.float64)
    c = cuda.blockIdx.x
    s = cuda.blockIdx.y
    shift = 0.0
    if mode == 1:
        shift = x[c * inner]
    elif mode == 2:
        shift = mean[c]
    a1 = 0.0
    a2 = 0.0
    m = N * inner
    for j in range(s * NTH + cuda.threadIdx.x, m, split * NTH):
        idx = ((j // inner) * C + c) * inner + j % inner
        if mode == 0:
            a1 += x[idx]
        elif mode == 1:
            d = x[idx] - shift
            a1 += d
            a2 += d * d
        else:
            g = dy[idx]
            a1 += g
            a2 += g * (x[idx] - shift)
    t1 = block_sum(sm, a1)
    t2 = block_sum(sm, a2)
    if cuda.threadIdx.x == 0:
        part1[c * split + s] = t1
        part2[c * split + s] = t2


@cuda.jit(device=True)
def _channel_total(part, c, split):
    a = 0.0
    for s in range(split):
        a += part[c * split + s]
    return a


@cuda.jit
def _finish_sums(part1, split, C, out):
    c = cuda.grid(1)
    if c < C:
        out[c] = _channel_total(part1, c, split)


@cuda.jit
def _finish_stats(part1, part2, split, x, C, inner, count, eps, momentum, has_running, rm, rv, mean, invstd):
    c = cuda.grid(1)
    if c < C:
        a1 = _channel_total(part1, c, split)
        a2 = _channel_total(part2, c, split)
        m1 = a1 / count
        var = a2 / count - m1 * m1
        if var < 0.0:
            var = 0.0
        mu = x[c * inner] + m1
        mean[c] = mu
        invstd[c] = 1.0 / math.sqrt(var + eps)
        if has_running:
            rm[c] = (1.0 - momentum) * rm[c] + momentum * mu
            rv[c] = (1.0 - momentum) * rv[c] + momentum * var * count / (count - 1)


@cuda.jit
def _finish_bn_grads(part1, part2, split, C, invstd, has_gw, gw, gb, s1, s2):
    c = cuda.grid(1)
    if c < C:
        a1 = _channel_total(part1, c, split)
        a2 = _channel_total(part2, c, split)
        s1[c] = a1
        s2[c] = a2
        gb[c] = a1
        if has_gw:
            gw[c] = a2 * invstd[c]


def _split(N: int, inner: int) -> int:
    return max(1, min(MAX_SPLIT, math.ceil(N * inner / (NTH * 8))))


def _partials(x, dy, mean, N, C, inner, mode):
    split = _split(N, inner)
    part1 = _rt.empty((C * split,), np.float64)
    part2 = _rt.empty((C * split,), np.float64)
    dummy = _rt.flat(x)
    _rt.launch_grid(_channel_partial, (C, split), NTH, _rt.flat(x), _rt.flat(dy) if dy is not None else dummy,
                    mean if mean is not None else dummy, N, C, inner, split, mode, part1, part2)
    return part1, part2, split


def channel_sums(x, N: int, C: int, inner: int, out) -> None:
    """out[c] = sum of x viewed as (N, C, inner) over axes 0 and 2."""
    if N * inner == 0:
        _rt.fill(out, 0)
        return
    part1, _, split = _partials(x, None, None, N, C, inner, 0)
    _rt.launch(_finish_sums, C, part1, split, C, out)


def batch_stats(x, N, C, inner, eps, momentum, rm, rv, mean, invstd) -> None:
    """Batch mean and 1/sqrt(biased var + eps) per channel; updates the running statistics if given."""
    part1, part2, split = _partials(x, None, None, N, C, inner, 1)
    has_running = rm is not None
    dummy = mean
    _rt.launch(_finish_stats, C, part1, part2, split, _rt.flat(x), C, inner, float(N * inner), float(eps),
               float(momentum), has_running, rm if has_running else dummy, rv if has_running else dummy, mean, invstd)


def bn_grad_sums(dy, x, mean, invstd, N, C, inner, gw, gb):
    """sum dy and sum dy * (x - mean) per channel (float64, returned for grad_input) and grad_weight/bias."""
    part1, part2, split = _partials(x, dy, mean, N, C, inner, 2)
    s1 = _rt.empty((C,), np.float64)
    s2 = _rt.empty((C,), np.float64)
    _rt.launch(_finish_bn_grads, C, part1, part2, split, C, invstd, gw is not None, gw if gw is not None else gb,
               gb, s1, s2)
    return s1, s2


@cuda.jit
def _sum_all(x, n, scale, out):
    sm = cuda.shared.array(NTH, numba.float64)
    a = 0.0
    for j in range(cuda.threadIdx.x, n, NTH):
        a += x[j]
    t = block_sum(sm, a)
    if cuda.threadIdx.x == 0:
        out[0] = t * scale


def sum_all(x, out, scale: float = 1.0) -> None:
    """out[0] = scale * sum(x) (one block; for loss-sized arrays)."""
    _rt.launch_grid(_sum_all, 1, NTH, _rt.flat(x), x.size, float(scale), _rt.flat(out))
