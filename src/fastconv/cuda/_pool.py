"""GPU pooling over (N, C, H, W) planes (1-D pooling runs with H = 1), forward and backward.

Forward kernels run one thread per output element. Average-pooling gradients are
gathered (one thread per input element, deterministic); max-pooling gradients are
scattered to the saved indices with atomic adds (windows overlap only when the
stride is smaller than the kernel).
"""

from __future__ import annotations

import math

from numba import cuda

from . import _rt


@cuda.jit
def _max_fwd(x, y, idx, want_idx, NC, H, W, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw):
    total = NC * OH * OW
    i = cuda.grid(1)
    while i < total:
        nc, oh, ow = _rt.split3(i, OH, OW)
        base = nc * H * W
        best = -math.inf
        where = -1
        for kh in range(KH):
            ih = oh * sh - ph + kh * dh
            if ih >= 0 and ih < H:
                for kw in range(KW):
                    iw = ow * sw - pw + kw * dw
                    if iw >= 0 and iw < W:
                        v = x[base + ih * W + iw]
                        if v > best or math.isnan(v) or where < 0:  # the CPU kernels' rule: NaN wins
                            best = v
                            where = ih * W + iw
        y[i] = best
        if want_idx:
            idx[i] = where
        i += cuda.gridsize(1)


@cuda.jit(device=True)
def _avg_divisor(oh, ow, H, W, KH, KW, sh, sw, ph, pw, include_pad, divisor):
    """What output (oh, ow)'s window sum is divided by: ``divisor`` when set (> 0), else the window
    clipped to the padded input (``include_pad``) or to the input itself, as PyTorch."""
    if divisor != 0:
        return divisor
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = min(h0 + KH, H + ph)
    w1 = min(w0 + KW, W + pw)
    if include_pad:
        return (h1 - h0) * (w1 - w0)
    return (min(h1, H) - max(h0, 0)) * (min(w1, W) - max(w0, 0))


@cuda.jit
def _avg_fwd(x, y, NC, H, W, OH, OW, KH, KW, sh, sw, ph, pw, include_pad, divisor):
    total = NC * OH * OW
    i = cuda.grid(1)
    while i < total:
        nc, oh, ow = _rt.split3(i, OH, OW)
        h0 = oh * sh - ph
        w0 = ow * sw - pw
        s = x[0] * 0
        for ih in range(max(h0, 0), min(h0 + KH, H)):
            for iw in range(max(w0, 0), min(w0 + KW, W)):
                s += x[nc * H * W + ih * W + iw]
        y[i] = s / _avg_divisor(oh, ow, H, W, KH, KW, sh, sw, ph, pw, include_pad, divisor)
        i += cuda.gridsize(1)


@cuda.jit
def _avg_bwd(gy, gx, NC, H, W, OH, OW, KH, KW, sh, sw, ph, pw, include_pad, divisor):
    total = NC * H * W
    i = cuda.grid(1)
    while i < total:
        nc, ih, iw = _rt.split3(i, H, W)
        s = gy[0] * 0
        oh_lo = max(0, (ih + ph - KH) // sh + 1)
        oh_hi = min(OH - 1, (ih + ph) // sh)
        ow_lo = max(0, (iw + pw - KW) // sw + 1)
        ow_hi = min(OW - 1, (iw + pw) // sw)
        for oh in range(oh_lo, oh_hi + 1):
            for ow in range(ow_lo, ow_hi + 1):
                s += gy[(nc * OH + oh) * OW + ow] / _avg_divisor(oh, ow, H, W, KH, KW, sh, sw, ph, pw, include_pad,
                                                                  divisor)
        gx[i] = s
        i += cuda.gridsize(1)


@cuda.jit(device=True)
def _start(i, n_in, n_out):
    return (i * n_in) // n_out


@cuda.jit(device=True)
def _end(i, n_in, n_out):
    return -((-(i + 1) * n_in) // n_out)


@cuda.jit
def _adaptive_fwd(x, y, idx, is_max, want_idx, NC, H, W, OH, OW):
    total = NC * OH * OW
    i = cuda.grid(1)
    while i < total:
        nc, oh, ow = _rt.split3(i, OH, OW)
        hs = _start(oh, H, OH)
        he = _end(oh, H, OH)
        ws = _start(ow, W, OW)
        we = _end(ow, W, OW)
        base = nc * H * W
        if is_max:
            best = -math.inf
            where = -1
            for ih in range(hs, he):
                for iw in range(ws, we):
                    v = x[base + ih * W + iw]
                    if v > best or math.isnan(v) or where < 0:
                        best = v
                        where = ih * W + iw
            y[i] = best
            if want_idx:
                idx[i] = where
        else:
            s = x[0] * 0
            for ih in range(hs, he):
                for iw in range(ws, we):
                    s += x[base + ih * W + iw]
            y[i] = s / ((he - hs) * (we - ws))
        i += cuda.gridsize(1)


@cuda.jit
def _adaptive_avg_bwd(gy, gx, NC, H, W, OH, OW):
    total = NC * H * W
    i = cuda.grid(1)
    while i < total:
        nc, ih, iw = _rt.split3(i, H, W)
        s = gy[0] * 0
        for oh in range(max(0, (ih * OH) // H - 1), min(OH, ((ih + 1) * OH + H - 1) // H + 1)):
            if _start(oh, H, OH) <= ih and ih < _end(oh, H, OH):
                for ow in range(max(0, (iw * OW) // W - 1), min(OW, ((iw + 1) * OW + W - 1) // W + 1)):
                    if _start(ow, W, OW) <= iw and iw < _end(ow, W, OW):
                        s += gy[(nc * OH + oh) * OW + ow] / ((_end(oh, H, OH) - _start(oh, H, OH))
                                                             * (_end(ow, W, OW) - _start(ow, W, OW)))
        gx[i] = s
        i += cuda.gridsize(1)


@cuda.jit
def _scatter_max(gy, idx, gx, n_out_plane, n_in_plane, total):
    i = cuda.grid(1)
    while i < total:
        plane = i // n_out_plane
        cuda.atomic.add(gx, plane * n_in_plane + idx[i], gy[i])
        i += cuda.gridsize(1)


def _planes(shape):
    """(N*C, H, W) of an (N, C, W) or (N, C, H, W) shape; 3-D pooling is not on the GPU."""
    if len(shape) == 5:
        raise ValueError("3-D pooling is not available on the GPU; run it on numpy arrays")
    if len(shape) == 3:
        return shape[0] * shape[1], 1, shape[2]
    return shape[0] * shape[1], shape[2], shape[3]


def forward(mode, x, y, idx, kernel, stride, pad, dil, include_pad, divisor) -> None:
    NC, H, W = _planes(x.shape)
    _, OH, OW = _planes(y.shape)
    xf, yf = _rt.flat(x), _rt.flat(y)
    want = idx is not None
    idxf = _rt.flat(idx) if want else yf
    if mode == "max":
        _rt.launch(_max_fwd, y.size, xf, yf, idxf, want, NC, H, W, OH, OW, kernel[1], kernel[2], stride[1], stride[2],
                   pad[1], pad[2], dil[1], dil[2])
    elif mode == "avg":
        _rt.launch(_avg_fwd, y.size, xf, yf, NC, H, W, OH, OW, kernel[1], kernel[2], stride[1], stride[2], pad[1],
                   pad[2], bool(include_pad), int(divisor))
    elif mode in ("adaptive_avg", "adaptive_max"):
        _rt.launch(_adaptive_fwd, y.size, xf, yf, idxf, mode == "adaptive_max", want, NC, H, W, OH, OW)
    else:
        raise ValueError(f"unknown pooling mode {mode!r}")


def backward(mode, gy, idx, gx, kernel, stride, pad, dil, include_pad, divisor) -> None:
    NC, H, W = _planes(gx.shape)
    _, OH, OW = _planes(gy.shape)
    gyf, gxf = _rt.flat(gy), _rt.flat(gx)
    if mode in ("max", "adaptive_max"):
        _rt.fill(gx, 0)
        _rt.launch(_scatter_max, gy.size, gyf, _rt.flat(idx), gxf, OH * OW, H * W, gy.size)
    elif mode == "avg":
        _rt.launch(_avg_bwd, gx.size, gyf, gxf, NC, H, W, OH, OW, kernel[1], kernel[2], stride[1], stride[2], pad[1],
                   pad[2], bool(include_pad), int(divisor))
    elif mode == "adaptive_avg":
        _rt.launch(_adaptive_avg_bwd, gx.size, gyf, gxf, NC, H, W, OH, OW)
    else:
        raise ValueError(f"unknown pooling mode {mode!r}")
