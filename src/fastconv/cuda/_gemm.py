"""A tiled, register-blocked GEMM for the GPU, with a fused epilogue (bias, ReLU, ReLU6).

C[z] = A[z] @ B[z] (+ C[z] when accumulating), batched over grid axis z, on flat 1-D
arrays with element offsets and strides, so transposed operands, per-image planes
and shared (stride-0) weights need no copies. A block computes a BM x BN tile of C;
each of its (BM/TM) x (BN/TN) threads keeps a TM x TN block of C in registers and
the A / B panels of depth BK go through shared memory. The loads are laid out so
that neighbouring threads read neighbouring addresses for either operand layout.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from . import _rt

# (BM, BN, BK, TM, TN): 256 threads per block on a GPU; 4 under the simulator.
LARGE = (8, 8, 8, 4, 4) if _rt.SIM else (128, 128, 8, 8, 8)
SMALL = (8, 8, 8, 4, 4) if _rt.SIM else (64, 64, 8, 4, 4)

BIAS_NONE, BIAS_PER_ROW, BIAS_PER_COL = 0, 1, 2


@functools.lru_cache(maxsize=None)
def _kernel(tile, dtype, a_k_contig: bool, b_n_contig: bool):
    BM, BN, BK, TM, TN = tile
    NT_M, NT_N = BM // TM, BN // TN
    NTH = NT_M * NT_N
    DT = numba.from_dtype(np.dtype(dtype))

    @cuda.jit
    def gemm(a, a_off, a_bs, a_rs, a_cs, b, b_off, b_bs, b_rs, b_cs, c, c_off, c_bs, ldc, M, N, K,
             bias, bias_mode, act, accumulate):
        zero = DT(0)
        As = cuda.shared.array((BK, BM), DT)
        Bs = cuda.shared.array((BK, BN), DT)
        acc = cuda.local.array((TM, TN), DT)
        ar = cuda.local.array(TM, DT)
        br = cuda.local.array(TN, DT)
        tid = cuda.threadIdx.x
        tx = tid % NT_N
        ty = tid // NT_N
        bm = cuda.blockIdx.y * BM
        bn = cuda.blockIdx.x * BN
        z = cuda.blockIdx.z
        abase = a_off + z * a_bs
        bbase = b_off + z * b_bs
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = zero
        for k0 in range(0, K, BK):
            for e in range(tid, BM * BK, NTH):
                if a_k_contig:
                    mm = e // BK
                    kk = e % BK
                else:
                    kk = e // BM
                    mm = e % BM
                gm = bm + mm
                gk = k0 + kk
                if gm < M and gk < K:
                    As[kk, mm] = a[abase + gm * a_rs + gk * a_cs]
                else:
                    As[kk, mm] = zero
            for e in range(tid, BK * BN, NTH):
                if b_n_contig:
                    kk = e // BN
                    nn = e % BN
                else:
                    nn = e // BK
                    kk = e % BK
                gk = k0 + kk
                gn = bn + nn
                if gk < K and gn < N:
                    Bs[kk, nn] = b[bbase + gk * b_rs + gn * b_cs]
                else:
                    Bs[kk, nn] = zero
            cuda.syncthreads()
            for kk in range(BK):
                for i in range(TM):
                    ar[i] = As[kk, ty + i * NT_M]
                for j in range(TN):
                    br[j] = Bs[kk, tx + j * NT_N]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += ar[i] * br[j]
            cuda.syncthreads()
        cbase = c_off + z * c_bs
        for i in range(TM):
            gm = bm + ty + i * NT_M
            if gm < M:
                for j in range(TN):
                    gn = bn + tx + j * NT_N
                    if gn < N:
                        idx = cbase + gm * ldc + gn
                        v = acc[i, j]
                        if accumulate:
                            v += c[idx]
                        if bias_mode == 1:
                            v += bias[gm]
                        elif bias_mode == 2:
                            v += bias[gn]
                        c[idx] = _rt.epilogue_activation(v, act)

    return gemm, NTH


class Operand:
    """A matrix inside a flat device buffer: element offset, batch stride, row and column strides."""

    __slots__ = ("buf", "off", "bs", "rs", "cs")

    def __init__(self, buf, off, bs, rs, cs):
        self.buf, self.off, self.bs, self.rs, self.cs = buf, off, bs, rs, cs

    @property
    def t(self) -> "Operand":
        return Operand(self.buf, self.off, self.bs, self.cs, self.rs)


def matrix(x) -> Operand:
    """A 2-D device array as an operand: C-contiguous or the transpose of one (else copied)."""
    rows, cols = x.shape
    if x.is_c_contiguous():
        return Operand(_rt.flat(x), 0, 0, cols, 1)
    if x.is_f_contiguous():
        return Operand(_rt.flat(x.T), 0, 0, 1, rows)
    from ._arrays import contiguous

    return matrix(contiguous(x))


def _dummy(dtype):
    return _rt.empty((1,), dtype)


def bgemm(a: Operand, b: Operand, c: Operand, M: int, N: int, K: int, batch: int = 1, *,
          bias=None, bias_mode: int = BIAS_NONE, act: int = 0, accumulate: bool = False, tile=None) -> None:
    """C[z] = A[z] @ B[z] (M x K times K x N) for z < batch; C is row-major with row stride ``c.rs``.

    ``tile`` (BM, BN, BK, TM, TN) overrides the size-based choice between LARGE and SMALL.
    """
    if M <= 0 or N <= 0 or batch <= 0:
        return
    dtype = c.buf.dtype
    if K <= 0:  # an empty sum: only the epilogue
        a = Operand(_dummy(dtype), 0, 0, 0, 0)
        b = a
    if tile is None:
        tile = LARGE if M * N * batch >= (1 << 16) else SMALL
    kern, nth = _kernel(tile, dtype, a.cs == 1, b.cs == 1)
    BM, BN = tile[0], tile[1]
    grid = (math.ceil(N / BN), math.ceil(M / BM), batch)
    bias_arr = bias if bias is not None else _dummy(dtype)
    _rt.launch_grid(kern, grid, nth, a.buf, a.off, a.bs, a.rs, a.cs, b.buf, b.off, b.bs, b.rs, b.cs,
                    c.buf, c.off, c.bs, c.rs, M, N, max(K, 0), bias_arr, bias_mode, act, bool(accumulate))


def gemm(a, b, out, bias, bias_mode: int, act: int, accumulate: bool = False) -> None:
    """out = a @ b with the epilogue, for 2-D device arrays (``_core``'s ``gemm`` entry)."""
    M, K = a.shape
    N = b.shape[1]
    bgemm(matrix(a), matrix(b), Operand(_rt.flat(out), 0, 0, N, 1), M, N, K,
          bias=bias, bias_mode=bias_mode, act=act, accumulate=accumulate)
