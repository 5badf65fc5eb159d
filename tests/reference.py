"""Plain numpy references (float64), independent of fastconv's kernels."""

import numpy as np


def pad_amounts(padding, kernel, dilation):
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for k, d in zip(kernel, dilation):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return (ph, ph, pw, pw)


def conv2d(x, w, bias=None, stride=(1, 1), padding=0, dilation=(1, 1), groups=1, activation=None):
    """Direct definition: y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] * xpad[n, g*cin_g + c, i*s + a*d, j*s + b*d]."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c_in, h, wd = x.shape
    c_out, cin_g, kh, kw = w.shape
    pt, pb, pl, pr = pad_amounts(padding, (kh, kw), dilation)
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    sh, sw = stride
    dh, dw = dilation
    ho = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    wo = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    cout_g = c_out // groups
    y = np.zeros((n, groups, cout_g, ho, wo))
    xg = xp.reshape(n, groups, cin_g, xp.shape[2], xp.shape[3])
    wg = w.reshape(groups, cout_g, cin_g, kh, kw)
    for a in range(kh):
        for b in range(kw):
            patch = xg[:, :, :, a * dh: a * dh + (ho - 1) * sh + 1: sh, b * dw: b * dw + (wo - 1) * sw + 1: sw]
            y += np.einsum("ngchw,goc->ngohw", patch, wg[:, :, :, a, b])
    y = y.reshape(n, c_out, ho, wo)
    if bias is not None:
        y += np.asarray(bias, np.float64)[None, :, None, None]
    if activation == "relu":
        y = np.maximum(y, 0)
    elif activation == "relu6":
        y = np.clip(y, 0, 6)
    return y


def close(got, ref, tol=1e-4):
    """fastconv's accuracy contract: max |got - ref| <= tol * (1 + max |ref|)."""
    ref = np.asarray(ref)
    if ref.size == 0:
        return got.shape == ref.shape
    err = float(np.max(np.abs(np.asarray(got, np.float64) - ref)))
    return got.shape == ref.shape and err <= tol * (1 + float(np.max(np.abs(ref))))
