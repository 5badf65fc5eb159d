"""Optimizer steps on the GPU: one fused element-wise kernel per parameter, the same arithmetic as
fastconv.optim's numpy steps (PyTorch's SGD and Adam/AdamW)."""

from __future__ import annotations

import math

from numba import cuda

from . import _rt


@cuda.jit
def _sgd(p, g, buf, lr, mu, dampening, nesterov, wd, maximize, first):
    i = cuda.grid(1)
    while i < p.size:
        gi = -g[i] if maximize else g[i]
        if wd != 0:
            gi = gi + wd * p[i]
        if mu != 0:
            if first:
                b = gi
            else:
                b = mu * buf[i] + (1 - dampening) * gi
            buf[i] = b
            gi = gi + mu * b if nesterov else b
        p[i] = p[i] - lr * gi
        i += cuda.gridsize(1)


@cuda.jit
def _adam(p, g, m, v, vmax, lr, b1, b2, eps, wd, decoupled, amsgrad, maximize, bc1, bc2_sqrt):
    i = cuda.grid(1)
    while i < p.size:
        gi = -g[i] if maximize else g[i]
        if wd != 0:
            if decoupled:
                p[i] = p[i] * (1 - lr * wd)
            else:
                gi = gi + wd * p[i]
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * (gi * gi)
        vv = v[i]
        if amsgrad:
            if vv > vmax[i]:
                vmax[i] = vv
            vv = vmax[i]
        denom = math.sqrt(vv) / bc2_sqrt + eps
        p[i] = p[i] - (lr / bc1) * m[i] / denom
        i += cuda.gridsize(1)


def sgd_step(p, g, buf, lr, momentum, dampening, nesterov, weight_decay, maximize, first) -> None:
    f = _rt.flat
    _rt.launch(_sgd, p.size, f(p), f(g), f(buf if buf is not None else p), float(lr), float(momentum),
               float(dampening), bool(nesterov), float(weight_decay), bool(maximize), bool(first))


def adam_step(p, g, m, v, vmax, lr, b1, b2, eps, weight_decay, decoupled, amsgrad, maximize, step) -> None:
    f = _rt.flat
    _rt.launch(_adam, p.size, f(p), f(g), f(m), f(v), f(vmax if vmax is not None else v), float(lr), float(b1),
               float(b2), float(eps), float(weight_decay), bool(decoupled), bool(amsgrad), bool(maximize),
               1 - b1 ** step, math.sqrt(1 - b2 ** step))
