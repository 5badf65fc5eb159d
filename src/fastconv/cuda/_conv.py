"""GPU convolution kernels (NCHW, float32 / float64), forward and backward.

- direct: a block computes OCB output channels for NTH output pixels of one image and
  group; the filters of those channels go through shared memory a chunk of input
  channels at a time, each thread keeps its OCB sums in registers.
- im2col + GEMM: the patches of a chunk of images are unrolled into a column buffer and
  multiplied by the filters with the tiled GEMM (bias and activation in its epilogue).
- pointwise: 1x1, stride 1, no padding: the GEMM on the input planes directly.
- depthwise (groups == C_in, any channel multiplier): one thread per output element.
- backward: data through the GEMM (W^T @ grad) and a col2im gather (no atomics), weight
  through one GEMM over all images' columns, bias as a per-channel reduction;
  depthwise has its own gather (data) and block-reduction (weight) kernels.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

from . import _gemm, _reduce, _rt

# direct kernel: output channels per block, pixels (threads) per block, filter taps held in shared memory.
DIRECT_OCB = 4 if _rt.SIM else 16
DIRECT_NTH = 32 if _rt.SIM else 128
DIRECT_RCAP = 64 if _rt.SIM else 256
# Column buffers are built for this many elements at most (images are taken in chunks).
COL_LIMIT = 1 << 26


@functools.lru_cache(maxsize=None)
def _direct_kernel(dtype):
    DT = numba.from_dtype(np.dtype(dtype))
    OCB, NTH, RCAP = DIRECT_OCB, DIRECT_NTH, DIRECT_RCAP

    @cuda.jit
    def direct(x, w, bias, y, C, H, W, OC, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, groups, has_bias, act):
        zero = DT(0)
        wsh = cuda.shared.array((RCAP, OCB), DT)
        acc = cuda.local.array(OCB, DT)
        tid = cuda.threadIdx.x
        cg = C // groups
        ocg = OC // groups
        z = cuda.blockIdx.z
        n = z // groups
        g = z % groups
        oc0 = g * ocg + cuda.blockIdx.y * OCB
        noc = min(OCB, (g + 1) * ocg - oc0)
        P = OH * OW
        p = cuda.blockIdx.x * NTH + tid
        oh = p // OW
        ow = p % OW
        kk = KH * KW
        cchunk = RCAP // kk
        for o in range(OCB):
            acc[o] = zero
        for c0 in range(0, cg, cchunk):
            nc = min(cchunk, cg - c0)
            nr = nc * kk
            for e in range(tid, nr * OCB, NTH):
                o = e // nr
                r = e % nr
                if o < noc:
                    wsh[r, o] = w[(oc0 + o) * cg * kk + c0 * kk + r]
                else:
                    wsh[r, o] = zero
            cuda.syncthreads()
            if p < P:
                for cc in range(nc):
                    xbase = (n * C + g * cg + c0 + cc) * H * W
                    for kh in range(KH):
                        ih = oh * sh - ph + kh * dh
                        if ih >= 0 and ih < H:
                            for kw in range(KW):
                                iw = ow * sw - pw + kw * dw
                                if iw >= 0 and iw < W:
                                    xv = x[xbase + ih * W + iw]
                                    r = (cc * KH + kh) * KW + kw
                                    for o in range(OCB):
                                        acc[o] += xv * wsh[r, o]
            cuda.syncthreads()
        if p < P:
            for o in range(OCB):
                if o < noc:
                    v = acc[o]
                    if has_bias:
                        v += bias[oc0 + o]
                    y[(n * OC + oc0 + o) * P + p] = _rt.epilogue_activation(v, act)

    return direct


@cuda.jit
def _im2col(x, col, n0, nb, g, C, H, W, cg, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, ns, rs):
    """col[nn * ns + r * rs + p] = the input under tap r of output pixel p, image n0 + nn, group g."""
    P = OH * OW
    R = cg * KH * KW
    total = nb * R * P
    i = cuda.grid(1)
    while i < total:
        nn, r, p = _rt.split3(i, R, P)
        c, kh, kw = _rt.split3(r, KH, KW)
        ih = (p // OW) * sh - ph + kh * dh
        iw = (p % OW) * sw - pw + kw * dw
        v = x[0] * 0
        if ih >= 0 and ih < H and iw >= 0 and iw < W:
            v = x[(((n0 + nn) * C + g * cg + c) * H + ih) * W + iw]
        col[nn * ns + r * rs + p] = v
        i += cuda.gridsize(1)


@cuda.jit(device=True)
def _reader(i, pad, k, dil, stride, n_out):
    """Along one axis: the output position whose window reads input position i through tap k, or -1."""
    t = i + pad - k * dil
    if t < 0 or t % stride != 0 or t // stride >= n_out:
        return -1
    return t // stride


@cuda.jit
def _col2im(dcol, gx, n0, nb, g, C, H, W, cg, KH, KW, OH, OW, sh, sw, ph, pw, dh, dw, ns, rs):
    """gx[image n0 + nn, channel of group g, ih, iw] = sum of the columns that read it (a gather)."""
    total = nb * cg * H * W
    i = cuda.grid(1)
    while i < total:
        t, ih, iw = _rt.split3(i, H, W)
        nn, c = t // cg, t % cg
        s = dcol[0] * 0
        for kh in range(KH):
            oh = _reader(ih, ph, kh, dh, sh, OH)
            if oh >= 0:
                for kw in range(KW):
                    ow = _reader(iw, pw, kw, dw, sw, OW)
                    if ow >= 0:
                        s += dcol[nn * ns + ((c * KH + kh) * KW + kw) * rs + oh * OW + ow]
        gx[(((n0 + nn) * C + g * cg + c) * H + ih) * W + iw] = s
        i += cuda.gridsize(1)


@cuda.jit
def _swap01(src, dst, off, A, B, inner):
    """dst (B, A, inner) = src[off:] viewed as (A, B, inner), axes 0 and 1 swapped."""
    total = A * B * inner
    i = cuda.grid(1)
    while i < total:
        b, a, q = _rt.split3(i, A, inner)
        dst[i] = src[off + (a * B + b) * inner + q]
        i += cuda.gridsize(1)


@cuda.jit
def _depthwise(x, w, bias, y, N, C, H, W, OC, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, has_bias, act):
    total = N * OC * OH * OW
    mult = OC // C
    i = cuda.grid(1)
    while i < total:
        t, oh, ow = _rt.split3(i, OH, OW)
        n, oc = t // OC, t % OC
        c = oc // mult
        xbase = (n * C + c) * H * W
        wbase = oc * KH * KW
        acc = x[0] * 0
        for kh in range(KH):
            ih = oh * sh - ph + kh * dh
            if ih >= 0 and ih < H:
                for kw in range(KW):
                    iw = ow * sw - pw + kw * dw
                    if iw >= 0 and iw < W:
                        acc += x[xbase + ih * W + iw] * w[wbase + kh * KW + kw]
        if has_bias:
            acc += bias[oc]
        y[i] = _rt.epilogue_activation(acc, act)
        i += cuda.gridsize(1)


@cuda.jit
def _depthwise_grad_input(gy, w, gx, N, C, H, W, OC, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw):
    total = N * C * H * W
    mult = OC // C
    i = cuda.grid(1)
    while i < total:
        t, ih, iw = _rt.split3(i, H, W)
        n, c = t // C, t % C
        s = gy[0] * 0
        for m in range(mult):
            oc = c * mult + m
            gbase = (n * OC + oc) * OH * OW
            for kh in range(KH):
                oh = _reader(ih, ph, kh, dh, sh, OH)
                if oh >= 0:
                    for kw in range(KW):
                        ow = _reader(iw, pw, kw, dw, sw, OW)
                        if ow >= 0:
                            s += gy[gbase + oh * OW + ow] * w[(oc * KH + kh) * KW + kw]
        gx[i] = s
        i += cuda.gridsize(1)


@cuda.jit
def _depthwise_grad_weight(gy, x, gw, N, C, H, W, OC, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw):
    """One block per filter tap (oc, kh, kw): a block reduction over images and output pixels."""
    sm = cuda.shared.array(_reduce.NTH, numba.float64)
    b = cuda.blockIdx.x
    oc, kh, kw = _rt.split3(b, KH, KW)
    c = oc // (OC // C)
    P = OH * OW
    acc = 0.0
    for j in range(cuda.threadIdx.x, N * P, _reduce.NTH):
        n, oh, ow = _rt.split3(j, OH, OW)
        ih = oh * sh - ph + kh * dh
        iw = ow * sw - pw + kw * dw
        if ih >= 0 and ih < H and iw >= 0 and iw < W:
            acc += gy[(n * OC + oc) * P + oh * OW + ow] * x[((n * C + c) * H + ih) * W + iw]
    total = _reduce.block_sum(sm, acc)
    if cuda.threadIdx.x == 0:
        gw[b] = total


class Geometry:
    """A 2-D convolution's sizes, read off the arrays and _core-style (depth, height, width) triples."""

    def __init__(self, x_shape, w_shape, y_shape, stride, pad, dil, groups):
        if len(x_shape) == 5 and (x_shape[2] != 1 or w_shape[2] != 1 or y_shape[2] != 1 or stride[0] != 1
                                  or pad[0] != 0):
            raise ValueError("3-D convolutions are not available on the GPU; run conv3d on numpy arrays")
        self.N, self.C = x_shape[:2]
        self.OC = w_shape[0]
        self.H, self.W = (1,) + tuple(x_shape[2:]) if len(x_shape) == 3 else tuple(x_shape[-2:])
        self.KH, self.KW = (1,) + tuple(w_shape[2:]) if len(w_shape) == 3 else tuple(w_shape[-2:])
        self.OH, self.OW = (1,) + tuple(y_shape[2:]) if len(y_shape) == 3 else tuple(y_shape[-2:])
        self.sh, self.sw = stride[1], stride[2]
        self.ph, self.pw = pad[1], pad[2]
        self.dh, self.dw = dil[1], dil[2]
        self.groups = groups
        self.cg = self.C // groups
        self.ocg = self.OC // groups
        self.P = self.OH * self.OW
        self.R = self.cg * self.KH * self.KW

    def window(self):
        return self.KH, self.KW, self.sh, self.sw, self.ph, self.pw, self.dh, self.dw

    def image_chunk(self) -> int:
        return max(1, min(self.N, COL_LIMIT // max(1, self.R * self.P)))


def direct_fits(g: Geometry) -> bool:
    return g.KH * g.KW <= DIRECT_RCAP


def forward(x, w, bias, y, g: Geometry, act: int, algo: str) -> None:
    xf, wf, yf = _rt.flat(x), _rt.flat(w), _rt.flat(y)
    has_bias = bias is not None
    b = bias if has_bias else _rt.empty((1,), y.dtype)
    if algo == "depthwise":
        _rt.launch(_depthwise, y.size, xf, wf, b, yf, g.N, g.C, g.H, g.W, g.OC, g.OH, g.OW, *g.window(), has_bias, act)
    elif algo == "direct":
        if not direct_fits(g):
            raise ValueError(f"algo='direct' on the GPU takes kernels of at most {DIRECT_RCAP} taps, "
                             f"got {g.KH}x{g.KW}; use algo='im2col'")
        grid = (math.ceil(g.P / DIRECT_NTH), math.ceil(g.ocg / DIRECT_OCB), g.N * g.groups)
        _rt.launch_grid(_direct_kernel(y.dtype), grid, DIRECT_NTH, xf, wf, b, yf, g.C, g.H, g.W, g.OC, g.OH, g.OW,
                        *g.window(), g.groups, has_bias, act)
    elif algo == "pointwise":
        for grp in range(g.groups):
            # y[n, group rows] = W_g (ocg x cg) @ x[n, group rows] (cg x P), batched over n.
            a = _gemm.Operand(wf, grp * g.ocg * g.cg, 0, g.cg, 1)
            bm = _gemm.Operand(xf, grp * g.cg * g.P, g.C * g.P, g.P, 1)
            c = _gemm.Operand(yf, grp * g.ocg * g.P, g.OC * g.P, g.P, 1)
            bias_g = b[grp * g.ocg:(grp + 1) * g.ocg] if has_bias else None
            _gemm.bgemm(a, bm, c, g.ocg, g.P, g.cg, g.N, bias=bias_g,
                        bias_mode=_gemm.BIAS_PER_ROW if has_bias else 0, act=act)
    else:  # im2col
        chunk = g.image_chunk()
        col = _rt.empty((chunk * g.R * g.P,), y.dtype)
        for n0 in range(0, g.N, chunk):
            nb = min(chunk, g.N - n0)
            for grp in range(g.groups):
                _rt.launch(_im2col, nb * g.R * g.P, xf, col, n0, nb, grp, g.C, g.H, g.W, g.cg, g.KH, g.KW, g.OH,
                           g.OW, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.R * g.P, g.P)
                a = _gemm.Operand(wf, grp * g.ocg * g.R, 0, g.R, 1)
                bm = _gemm.Operand(col, 0, g.R * g.P, g.P, 1)
                c = _gemm.Operand(yf, (n0 * g.OC + grp * g.ocg) * g.P, g.OC * g.P, g.P, 1)
                bias_g = b[grp * g.ocg:(grp + 1) * g.ocg] if has_bias else None
                _gemm.bgemm(a, bm, c, g.ocg, g.P, g.R, nb, bias=bias_g,
                            bias_mode=_gemm.BIAS_PER_ROW if has_bias else 0, act=act)


def backward(gy, x, w, gx, gw, gb, g: Geometry, depthwise: bool) -> None:
    gyf, wf = _rt.flat(gy), _rt.flat(w)
    xf = _rt.flat(x) if x is not None else None
    if gb is not None:
        _reduce.channel_sums(gy, g.N, g.OC, g.P, gb)
    if depthwise and g.groups == g.C:
        if gx is not None:
            _rt.launch(_depthwise_grad_input, gx.size, gyf, wf, _rt.flat(gx), g.N, g.C, g.H, g.W, g.OC, g.OH, g.OW,
                       *g.window())
        if gw is not None:
            _rt.launch_grid(_depthwise_grad_weight, gw.size, _reduce.NTH, gyf, xf, _rt.flat(gw), g.N, g.C, g.H, g.W,
                            g.OC, g.OH, g.OW, *g.window())
        return
    if gx is not None:
        gxf = _rt.flat(gx)
        chunk = g.image_chunk()
        dcol = _rt.empty((chunk * g.R * g.P,), gy.dtype)
        for n0 in range(0, g.N, chunk):
            nb = min(chunk, g.N - n0)
            for grp in range(g.groups):
                # dcol[nn] (R x P) = W_g^T (R x ocg) @ gy[n0 + nn, group rows] (ocg x P)
                a = _gemm.Operand(wf, grp * g.ocg * g.R, 0, 1, g.R)
                bm = _gemm.Operand(gyf, (n0 * g.OC + grp * g.ocg) * g.P, g.OC * g.P, g.P, 1)
                c = _gemm.Operand(dcol, 0, g.R * g.P, g.P, 1)
                _gemm.bgemm(a, bm, c, g.R, g.P, g.ocg, nb)
                _rt.launch(_col2im, nb * g.cg * g.H * g.W, dcol, gxf, n0, nb, grp, g.C, g.H, g.W, g.cg, g.KH, g.KW,
                           g.OH, g.OW, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.R * g.P, g.P)
    if gw is not None:
        gwf = _rt.flat(gw)
        chunk = g.image_chunk()
        col = _rt.empty((g.R * chunk * g.P,), gy.dtype)
        gyt = _rt.empty((g.OC * chunk * g.P,), gy.dtype)
        for n0 in range(0, g.N, chunk):
            nb = min(chunk, g.N - n0)
            # grad_output of the chunk as (OC, nb * P), so each group's weight gradient is one GEMM.
            _rt.launch(_swap01, nb * g.OC * g.P, gyf, gyt, n0 * g.OC * g.P, nb, g.OC, g.P)
            for grp in range(g.groups):
                _rt.launch(_im2col, nb * g.R * g.P, xf, col, n0, nb, grp, g.C, g.H, g.W, g.cg, g.KH, g.KW, g.OH,
                           g.OW, g.sh, g.sw, g.ph, g.pw, g.dh, g.dw, g.P, nb * g.P)
                # gw_g (ocg x R) += gyt[group rows] (ocg x nb*P) @ col^T (nb*P x R)
                a = _gemm.Operand(gyt, grp * g.ocg * nb * g.P, 0, nb * g.P, 1)
                bm = _gemm.Operand(col, 0, 0, 1, nb * g.P)
                c = _gemm.Operand(gwf, grp * g.ocg * g.R, 0, g.R, 1)
                _gemm.bgemm(a, bm, c, g.ocg, g.R, nb * g.P, 1, accumulate=n0 > 0)
