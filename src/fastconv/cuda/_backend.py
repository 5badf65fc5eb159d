"""The GPU kernel set behind ``fastconv.ops``: the same entry points, arguments and meaning as a
``fastconv._core`` backend, on numba device arrays. ``fastconv.ops`` validates every argument
and allocates every output before it calls here, exactly as for the CPU kernels."""

from __future__ import annotations

import numpy as np

from . import _conv, _eltwise, _gemm, _pool, _reduce, _rt

# _core.ALGORITHMS' codes.
_ALGOS = {0: "direct", 1: "im2col", 2: "pointwise", 3: "depthwise"}


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _inner(shape) -> int:
    return _prod(shape[2:])


class CudaBackend:
    """Numba CUDA kernels with ``_core``'s backend interface."""

    isa = "cuda"

    def __repr__(self) -> str:
        return "<fastconv.cuda backend>"

    # -- linear algebra and convolution ------------------------------------------------------
    def gemm(self, a, b, out, bias, bias_mode, activation, accumulate=False):
        _gemm.gemm(a, b, out, bias, bias_mode, activation, accumulate)

    def conv_forward(self, x, weight, bias, out, stride, pad, dil, groups, act, algo):
        g = _conv.Geometry(x.shape, weight.shape, out.shape, stride, pad, dil, groups)
        _conv.forward(x, weight, bias, out, g, act, _ALGOS[algo])

    def conv_backward(self, grad_output, x, weight, grad_input, grad_weight, grad_bias, stride, pad, dil, groups,
                      algo, weight_algo=-1):
        # weight_algo (the CPU's choice for grad_weight alone) never differs here: the GPU's weight
        # gradient runs the family of `algo`.
        like = grad_input if grad_input is not None else x
        g = _conv.Geometry(like.shape, weight.shape, grad_output.shape, stride, pad, dil, groups)
        _conv.backward(grad_output, x, weight, grad_input, grad_weight, grad_bias, g, _ALGOS[algo] == "depthwise")

    # -- pooling ------------------------------------------------------------------------------
    def pool_forward(self, mode, x, out, indices, kernel, stride, pad, dil, include_pad, divisor):
        _check_window(kernel, stride, pad, dil)
        _pool.forward(mode, x, out, indices, kernel, stride, pad, dil, include_pad, divisor)

    def pool_backward(self, mode, grad_output, indices, grad_input, kernel, stride, pad, dil, include_pad, divisor):
        _check_window(kernel, stride, pad, dil)
        _pool.backward(mode, grad_output, indices, grad_input, kernel, stride, pad, dil, include_pad, divisor)

    # -- BatchNorm ----------------------------------------------------------------------------
    # A fused activation (code 1 ReLU, 2 ReLU6, as conv's) runs here as a second element-wise
    # launch over the output: the same results as the CPU's single pass, not yet one kernel.
    def batch_norm_forward(self, x, weight, bias, running_mean, running_var, out, training, momentum, eps, save_mean,
                           save_invstd, activation=0):
        n, c, inner = x.shape[0], x.shape[1], _inner(x.shape)
        has_w, has_b = weight is not None, bias is not None
        w = weight if has_w else out
        b = bias if has_b else out
        xf, yf = _rt.flat(x), _rt.flat(out)
        if training:
            _reduce.batch_stats(x, n, c, inner, eps, momentum, running_mean, running_var, save_mean, save_invstd)
            _rt.launch(_eltwise.bn_normalize, x.size, xf, yf, c, inner, save_mean, save_invstd, False, float(eps), w,
                       b, has_w, has_b)
        else:
            _rt.launch(_eltwise.bn_normalize, x.size, xf, yf, c, inner, running_mean, running_var, True, float(eps),
                       w, b, has_w, has_b)
        if activation:
            _rt.launch(_eltwise.activation, x.size, activation - 1, yf, yf, 0.0)

    def batch_norm_backward(self, grad_output, x, weight, save_mean, save_invstd, training, grad_input, grad_weight,
                            grad_bias, activation=0, output=None):
        n, c, inner = x.shape[0], x.shape[1], _inner(x.shape)
        if activation:  # the activation's slope, read off its output: ReLU(6)'s backward from y, as from x
            masked = _rt.empty(x.shape, x.dtype)
            _rt.launch(_eltwise.activation_backward, x.size, activation - 1, _rt.flat(output),
                       _rt.flat(grad_output), _rt.flat(masked), 0.0)
            grad_output = masked
        s1, s2 = _reduce.bn_grad_sums(grad_output, x, save_mean, save_invstd, n, c, inner, grad_weight, grad_bias)
        has_w = weight is not None
        _rt.launch(_eltwise.bn_grad_input, x.size, _rt.flat(grad_output), _rt.flat(x), _rt.flat(grad_input), c,
                   inner, float(n * inner), save_mean, save_invstd, weight if has_w else save_invstd, has_w, s1, s2,
                   bool(training))

    # -- element-wise -------------------------------------------------------------------------
    def activation(self, kind, x, out, alpha):
        _rt.launch(_eltwise.activation, x.size, kind, _rt.flat(x), _rt.flat(out), float(alpha))

    def activation_backward(self, kind, saved, grad_output, grad_input, alpha):
        _rt.launch(_eltwise.activation_backward, saved.size, kind, _rt.flat(saved), _rt.flat(grad_output),
                   _rt.flat(grad_input), float(alpha))

    def softmax(self, x, out, outer, dim, inner, log):
        _rt.launch(_eltwise.softmax, outer * inner, _rt.flat(x), _rt.flat(out), outer, dim, inner, bool(log))

    def softmax_backward(self, y, grad_output, grad_input, outer, dim, inner, log):
        _rt.launch(_eltwise.softmax_backward, outer * inner, _rt.flat(y), _rt.flat(grad_output), _rt.flat(grad_input),
                   outer, dim, inner, bool(log))

    def cross_entropy(self, logits, target, loss, n, c, inner, ignore_index, label_smoothing):
        bad = _rt.empty((1,), np.int32)
        _rt.fill(bad, 0)
        _rt.launch(_eltwise.cross_entropy, n * inner, _rt.flat(logits), _rt.flat(target), _rt.flat(loss), n, c, inner,
                   ignore_index, float(label_smoothing), bad)
        if bad.copy_to_host(stream=_rt.current_stream())[0]:
            raise ValueError("target holds a class index outside [0, C) that is not ignore_index")

    def cross_entropy_backward(self, logits, target, grad_loss, grad_logits, n, c, inner, ignore_index,
                               label_smoothing):
        _rt.launch(_eltwise.cross_entropy_backward, n * inner, _rt.flat(logits), _rt.flat(target),
                   _rt.flat(grad_loss), _rt.flat(grad_logits), n, c, inner, ignore_index, float(label_smoothing))

    def dropout(self, x, out, mask, p, seed):
        key = np.uint64(_eltwise.splitmix64_host(int(seed)))
        threshold = np.uint64(int(p * 9007199254740992.0))
        scale = 1.0 / (1.0 - p) if p < 1 else 0.0
        _rt.launch(_eltwise.dropout, x.size, _rt.flat(x), _rt.flat(out), _rt.flat(mask), key, threshold, scale)

    def dropout_backward(self, grad_output, mask, grad_input, scale):
        _rt.launch(_eltwise.dropout_backward, grad_output.size, _rt.flat(grad_output), _rt.flat(mask),
                   _rt.flat(grad_input), float(scale))

    def add(self, a, b, out):
        _rt.launch(_eltwise.add, out.size, _rt.flat(a), _rt.flat(b), _rt.flat(out))

    # -- what fastconv.ops does with numpy on the CPU -------------------------------------------
    def channel_sum(self, x, out):
        """out[c] = x summed over every axis but 1 (a bias gradient)."""
        if x.ndim == 2:
            _reduce.channel_sums(x, x.shape[0], x.shape[1], 1, out)
        else:
            _reduce.channel_sums(x, x.shape[0], x.shape[1], _inner(x.shape), out)

    def add_channel_bias(self, y, bias):
        _rt.launch(_eltwise.add_channel_bias, y.size, _rt.flat(y), bias, y.shape[1], _inner(y.shape))

    def loss_reduce(self, per, target, ignore_index, mean, out):
        _rt.launch_grid(_eltwise.ce_reduce, 1, _reduce.NTH, _rt.flat(per), _rt.flat(target), ignore_index, bool(mean),
                        _rt.flat(out))

    def loss_scale(self, grad, target, ignore_index, mean, per):
        _rt.launch_grid(_eltwise.ce_scale, 1, _reduce.NTH, _rt.flat(grad), _rt.flat(target), ignore_index, bool(mean),
                        _rt.flat(per))

    def scale(self, x, factor, out):
        """out = factor * x; a one-element x fills all of out."""
        _rt.launch(_eltwise.scale, out.size, _rt.flat(x), x.size == 1 and out.size != 1, float(factor), _rt.flat(out))

    def squared_error(self, x, y, out):
        _rt.launch(_eltwise.squared_error, x.size, _rt.flat(x), _rt.flat(y), _rt.flat(out))

    def squared_error_backward(self, grad, x, y, scale, out):
        _rt.launch(_eltwise.squared_error_backward, x.size, _rt.flat(grad), grad.size == 1 and x.size != 1,
                   _rt.flat(x), _rt.flat(y), float(scale), _rt.flat(out))

    def cat(self, arrays, dim):
        first = arrays[0]
        nd = max(first.ndim, 1)
        if not -nd <= dim < nd:
            raise ValueError(f"dim {dim} is out of range for {first.ndim}-D arrays")
        dim %= nd
        for a in arrays[1:]:
            if a.shape[:dim] != first.shape[:dim] or a.shape[dim + 1:] != first.shape[dim + 1:]:
                raise ValueError(f"cat: shapes {first.shape} and {a.shape} differ outside dim {dim}")
        outer = _prod(first.shape[:dim])
        inner = _prod(first.shape[dim + 1:])
        total = sum(a.shape[dim] for a in arrays)
        out = _rt.empty(first.shape[:dim] + (total,) + first.shape[dim + 1:], first.dtype)
        off = 0
        for a in arrays:
            count = a.shape[dim] * inner
            _rt.launch(_eltwise.block_copy, outer * count, _rt.flat(a), _rt.flat(out), outer, count, total * inner, 0,
                       off, count)
            off += count
        return out

    def split(self, g, sizes, dim):
        from ._arrays import contiguous

        g = contiguous(g)
        dim %= max(g.ndim, 1)
        if sum(sizes) != g.shape[dim]:
            raise ValueError(f"sizes {sizes} do not add up to grad_output's size {g.shape[dim]} along dim {dim}")
        outer = _prod(g.shape[:dim])
        inner = _prod(g.shape[dim + 1:])
        pieces, off = [], 0
        for s in sizes:
            p = _rt.empty(g.shape[:dim] + (s,) + g.shape[dim + 1:], g.dtype)
            _rt.launch(_eltwise.block_copy, outer * s * inner, _rt.flat(g), _rt.flat(p), outer, g.shape[dim] * inner,
                       s * inner, off, 0, s * inner)
            pieces.append(p)
            off += s * inner
        return pieces

    def sum_all(self, x, out, scale=1.0):
        _reduce.sum_all(x, out, scale)


def _check_window(kernel, stride, pad, dil):
    if kernel[0] != 1 or stride[0] != 1 or pad[0] != 0 or dil[0] != 1:
        raise ValueError("3-D pooling is not available on the GPU; run it on numpy arrays")


backend = CudaBackend()
