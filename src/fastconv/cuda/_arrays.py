"""Contiguous device copies of strided views."""

from __future__ import annotations

from numba import cuda

from . import _rt


@cuda.jit
def _copy1(src, dst):
    i = cuda.grid(1)
    while i < dst.size:
        dst[i] = src[i]
        i += cuda.gridsize(1)


@cuda.jit
def _copy2(src, dst):
    i = cuda.grid(1)
    n1 = src.shape[1]
    while i < dst.size:
        dst[i] = src[i // n1, i % n1]
        i += cuda.gridsize(1)


@cuda.jit
def _copy3(src, dst):
    i = cuda.grid(1)
    n1, n2 = src.shape[1], src.shape[2]
    while i < dst.size:
        r = i // n2
        dst[i] = src[r // n1, r % n1, i % n2]
        i += cuda.gridsize(1)


@cuda.jit
def _copy4(src, dst):
    i = cuda.grid(1)
    n1, n2, n3 = src.shape[1], src.shape[2], src.shape[3]
    while i < dst.size:
        r = i // n3
        q = r // n2
        dst[i] = src[q // n1, q % n1, r % n2, i % n3]
        i += cuda.gridsize(1)


@cuda.jit
def _copy5(src, dst):
    i = cuda.grid(1)
    n1, n2, n3, n4 = src.shape[1], src.shape[2], src.shape[3], src.shape[4]
    while i < dst.size:
        r = i // n4
        q = r // n3
        t = q // n2
        dst[i] = src[t // n1, t % n1, q % n2, r % n3, i % n4]
        i += cuda.gridsize(1)


_COPIES = {1: _copy1, 2: _copy2, 3: _copy3, 4: _copy4, 5: _copy5}


def contiguous(x):
    """``x`` itself when C-contiguous, else a C-contiguous device copy (up to 5-D)."""
    if x.is_c_contiguous():
        return x
    if x.ndim not in _COPIES:
        raise ValueError(f"non-contiguous GPU arrays of {x.ndim} dimensions are not supported; make it contiguous")
    out = _rt.empty(x.shape, x.dtype)
    _rt.launch(_COPIES[x.ndim], x.size, x, _rt.flat(out))
    return out

