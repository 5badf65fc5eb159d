"""Pooling on (N, C, *spatial) float arrays with PyTorch's semantics, forward and backward.

Max and average pooling over 1, 2 or 3 spatial axes share one validated geometry
(:class:`_Pool`) and one kernel entry per direction; ``ceil_mode`` follows PyTorch's
rule that the last window must start inside the input or the left padding.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from . import _device
from ._device import kernels
from ._validate import as_int, check_numel, float_array, tuple_arg

IntOrTuple = Union[int, Tuple[int, ...]]


def _pool_output_size(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    span = d * (k - 1) + 1
    num = size + 2 * p - span + ((s - 1) if ceil_mode else 0)
    out = num // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


class _Pool:
    """Validated pooling geometry for an input of ``shape`` (N, C, *spatial) with nd spatial axes."""

    def __init__(self, nd, shape, kernel_size, stride, padding, dilation, ceil_mode, *, kind):
        self.nd = nd
        self.kernel = tuple_arg(kernel_size, "kernel_size", nd, minimum=1)
        self.stride = self.kernel if stride is None or stride == () else tuple_arg(stride, "stride", nd, minimum=1)
        self.padding = tuple_arg(padding, "padding", nd, minimum=0)
        self.dilation = tuple_arg(dilation, "dilation", nd, minimum=1)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"ceil_mode must be a bool, got {type(ceil_mode).__name__}")
        if kind == "avg" and self.dilation != (1,) * nd:
            raise ValueError("average pooling has no dilation")
        for k, p in zip(self.kernel, self.padding):
            if p > k // 2:  # PyTorch's rule, for max and average pooling alike
                raise ValueError(f"padding ({self.padding}) must be at most half of the kernel size ({self.kernel})")
        if min(shape[2:], default=1) < 1:
            raise ValueError(f"input has an empty spatial dimension: shape {shape}")
        out = tuple(_pool_output_size(shape[2 + i], self.kernel[i], self.stride[i], self.padding[i],
                                      self.dilation[i], bool(ceil_mode)) for i in range(nd))
        if min(out) < 1:
            raise ValueError(f"output size {out} is too small: input {shape[2:]}, kernel {self.kernel}, "
                             f"padding {self.padding}, dilation {self.dilation}")
        self.out_shape = tuple(shape[:2]) + out
        check_numel(self.out_shape, "the output")

    def triples(self):
        lead = 3 - self.nd
        return ((1,) * lead + self.kernel, (1,) * lead + self.stride, (0,) * lead + self.padding,
                (1,) * lead + self.dilation)


def _max_pool(nd, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    x = float_array(input, "input", nd + 2)
    p = _Pool(nd, x.shape, kernel_size, stride, padding, dilation, ceil_mode, kind="max")
    y = _device.empty(p.out_shape, x.dtype, x)
    idx = _device.empty(p.out_shape, np.int64, x) if return_indices else None
    if y.size:
        kernels(x).pool_forward("max", x, y, idx, *p.triples(), True, 0)
    return (y, idx) if return_indices else y


def _check_indices(indices, shape):
    if (not isinstance(indices, np.ndarray) and not _device.is_gpu(indices)) or indices.dtype != np.int64:
        raise TypeError("indices must be an int64 array (as the forward's return_indices=True gives)")
    if indices.shape != tuple(shape):
        raise ValueError(f"indices must have the output's shape {tuple(shape)}, got {indices.shape}")
    return _device.contiguous(indices)


def _input_shape(input_shape, nd):
    shape = tuple(as_int(v, "input_shape") for v in input_shape)
    if len(shape) != nd + 2 or min(shape) < 0:
        raise ValueError(f"input_shape must be {nd + 2} non-negative sizes, got {input_shape!r}")
    check_numel(shape, "input_shape")
    return shape


def _max_pool_backward(nd, grad_output, indices, input_shape):
    shape = _input_shape(input_shape, nd)
    g = float_array(grad_output, "grad_output", nd + 2)
    if g.shape[:2] != shape[:2]:
        raise ValueError(f"grad_output {g.shape} and input_shape {shape} differ in N or C")
    ix = _check_indices(indices, g.shape)
    gx = _device.empty(shape, g.dtype, g)  # the kernel zeroes it
    if not g.size:
        _device.fill_zero(gx)
    elif gx.size:
        kernels(g).pool_backward("max", g, ix, gx, (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1), True, 0)
    return gx


def _avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    x = float_array(input, "input", nd + 2)
    p = _Pool(nd, x.shape, kernel_size, stride, padding, 1, ceil_mode, kind="avg")
    div = _divisor(divisor_override)
    y = _device.empty(p.out_shape, x.dtype, x)
    if y.size:
        kernels(x).pool_forward("avg", x, y, None, *p.triples(), bool(count_include_pad), div)
    return y


def _avg_pool_backward(nd, grad_output, input_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    shape = _input_shape(input_shape, nd)
    g = float_array(grad_output, "grad_output", nd + 2)
    p = _Pool(nd, shape, kernel_size, stride, padding, 1, ceil_mode, kind="avg")
    if g.shape != p.out_shape:
        raise ValueError(f"grad_output must have shape {p.out_shape}, got {g.shape}")
    div = _divisor(divisor_override)
    gx = _device.empty(shape, g.dtype, g)  # the kernel zeroes it
    if not g.size:
        _device.fill_zero(gx)
    else:
        kernels(g).pool_backward("avg", g, None, gx, *p.triples(), bool(count_include_pad), div)
    return gx


def _divisor(divisor_override) -> int:
    if divisor_override is None:
        return 0
    d = as_int(divisor_override, "divisor_override")
    if d < 1:
        raise ValueError(f"divisor_override must be >= 1, got {d}")
    return d


def max_pool2d(input, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None, padding: IntOrTuple = 0,
               dilation: IntOrTuple = 1, ceil_mode: bool = False, return_indices: bool = False):
    """2-D max pooling of an (N, C, H, W) array, as ``torch.nn.functional.max_pool2d``.

    ``stride`` defaults to ``kernel_size``; ``padding`` (implicit -inf) must be at most half
    the dilated kernel. With ``return_indices``, also returns the int64 flat position of
    each maximum within its H x W plane (the input :func:`max_pool2d_backward` takes).
    NaN propagates, as in PyTorch. A window that lies wholly in the padding gives -inf and
    index -1 (PyTorch's index there points outside the window).
    """
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool1d(input, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None, padding: IntOrTuple = 0,
               dilation: IntOrTuple = 1, ceil_mode: bool = False, return_indices: bool = False):
    """1-D max pooling of an (N, C, L) array, as ``torch.nn.functional.max_pool1d`` (see :func:`max_pool2d`)."""
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None, padding: IntOrTuple = 0,
               dilation: IntOrTuple = 1, ceil_mode: bool = False, return_indices: bool = False):
    """3-D max pooling of an (N, C, D, H, W) array, as ``torch.nn.functional.max_pool3d``; indices are flat
    positions within each D x H x W volume (see :func:`max_pool2d`)."""
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool2d`'s input: ``grad_output`` summed into the positions ``indices`` names."""
    return _max_pool_backward(2, grad_output, indices, input_shape)


def max_pool1d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool1d`'s input (see :func:`max_pool2d_backward`)."""
    return _max_pool_backward(1, grad_output, indices, input_shape)


def max_pool3d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`max_pool3d`'s input (see :func:`max_pool2d_backward`)."""
    return _max_pool_backward(3, grad_output, indices, input_shape)


def avg_pool2d(input, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None, padding: IntOrTuple = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None):
    """2-D average pooling of an (N, C, H, W) array, as ``torch.nn.functional.avg_pool2d``.

    The divisor is the window size clipped to the padded input (``count_include_pad``)
    or to the input itself, or ``divisor_override`` when given.
    """
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool1d(input, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None, padding: IntOrTuple = 0,
               ceil_mode: bool = False, count_include_pad: bool = True):
    """1-D average pooling of an (N, C, L) array, as ``torch.nn.functional.avg_pool1d``."""
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)


def avg_pool3d(input, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None, padding: IntOrTuple = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None):
    """3-D average pooling of an (N, C, D, H, W) array, as ``torch.nn.functional.avg_pool3d``."""
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)


def avg_pool2d_backward(grad_output, input_shape, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                        padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: Optional[int] = None):
    """Gradient of :func:`avg_pool2d`'s input, given the forward's arguments."""
    return _avg_pool_backward(2, grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override)


def avg_pool1d_backward(grad_output, input_shape, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                        padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True):
    """Gradient of :func:`avg_pool1d`'s input, given the forward's arguments."""
    return _avg_pool_backward(1, grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, None)


def avg_pool3d_backward(grad_output, input_shape, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                        padding: IntOrTuple = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: Optional[int] = None):
    """Gradient of :func:`avg_pool3d`'s input, given the forward's arguments."""
    return _avg_pool_backward(3, grad_output, input_shape, kernel_size, stride, padding, ceil_mode,
                              count_include_pad, divisor_override)


def _adaptive_out(x_shape, output_size) -> Tuple[int, int]:
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 2:
            raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
        out = tuple(x_shape[2 + i] if v is None else as_int(v, "output_size") for i, v in enumerate(output_size))
    else:
        out = (as_int(output_size, "output_size"),) * 2
    if min(out) < 1:
        raise ValueError(f"output_size must be >= 1, got {output_size!r}")
    if min(x_shape[2:]) < 1:
        raise ValueError(f"input has an empty spatial dimension: shape {tuple(x_shape)}")
    return out


_NO_WINDOW = ((1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 1))


def adaptive_avg_pool2d(input, output_size):
    """Adaptive average pooling to ``output_size`` (int or (H, W); None keeps that size), as PyTorch.

    Output (i, j) averages rows ``floor(i*H/Ho) .. ceil((i+1)*H/Ho)`` and likewise columns.
    """
    x = float_array(input, "input", 4)
    y = _device.empty(x.shape[:2] + _adaptive_out(x.shape, output_size), x.dtype, x)
    if y.size:
        kernels(x).pool_forward("adaptive_avg", x, y, None, *_NO_WINDOW, True, 0)
    return y


def adaptive_max_pool2d(input, output_size, return_indices: bool = False):
    """Adaptive max pooling (windows as :func:`adaptive_avg_pool2d`); indices as :func:`max_pool2d`."""
    x = float_array(input, "input", 4)
    y = _device.empty(x.shape[:2] + _adaptive_out(x.shape, output_size), x.dtype, x)
    idx = _device.empty(y.shape, np.int64, x) if return_indices else None
    if y.size:
        kernels(x).pool_forward("adaptive_max", x, y, idx, *_NO_WINDOW, True, 0)
    return (y, idx) if return_indices else y


def adaptive_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of :func:`adaptive_avg_pool2d`'s input (the output size is grad_output's)."""
    shape = _input_shape(input_shape, 2)
    g = float_array(grad_output, "grad_output", 4)
    if g.shape[:2] != shape[:2]:
        raise ValueError(f"grad_output {g.shape} and input_shape {shape} differ in N or C")
    _adaptive_out(shape, g.shape[2:])
    gx = _device.empty(shape, g.dtype, g)  # the kernel writes every element
    if not g.size:
        _device.fill_zero(gx)
    else:
        kernels(g).pool_backward("adaptive_avg", g, None, gx, *_NO_WINDOW, True, 0)
    return gx


def adaptive_max_pool2d_backward(grad_output, indices, input_shape):
    """Gradient of :func:`adaptive_max_pool2d`'s input (see :func:`max_pool2d_backward`)."""
    return _max_pool_backward(2, grad_output, indices, input_shape)


def global_avg_pool2d(input):
    """Mean over H and W of an (N, C, H, W) array, kept as (N, C, 1, 1) (``adaptive_avg_pool2d(x, 1)``)."""
    return adaptive_avg_pool2d(input, 1)


def global_avg_pool2d_backward(grad_output, input_shape):
    """Gradient of :func:`global_avg_pool2d`'s input: grad_output / (H * W) spread over each plane."""
    return adaptive_avg_pool2d_backward(grad_output, input_shape)
