"""Matrix products on the packed GEMM (float32 and float64)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _device
from ._device import kernels
from ._validate import activation_code, output_array, require_float

_BIAS_NONE, _BIAS_PER_COL = 0, 2


def _matrix(x, name: str, dtype=None) -> np.ndarray:
    """A 2-D float array; strided views are kept (the GEMM reads them in place)."""
    require_float(x, name, dtype)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if _device.is_gpu(x):
        # The GPU GEMM reads row-major operands and their transposes in place.
        return x if x.is_c_contiguous() or x.is_f_contiguous() else _device.contiguous(x)
    if any(s % x.itemsize for s in x.strides):
        x = np.ascontiguousarray(x)
    return x


def _rows(x, features: int):
    """x (..., features) as a 2-D (rows, features) matrix (a view where the layout allows)."""
    if _device.is_gpu(x):
        x = _device.contiguous(x)
    return x.reshape(x.size // features if features else int(np.prod(x.shape[:-1])), features)


def matmul(a: np.ndarray, b: np.ndarray, *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``a @ b`` for 2-D float32 or float64 arrays. Transposed or strided views are read in place, no copy."""
    a = _matrix(a, "a")
    b = _matrix(b, "b", a.dtype)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: a has {a.shape[1]} columns but b has {b.shape[0]} rows ({a.shape} @ {b.shape})")
    y = output_array(out, (a.shape[0], b.shape[1]), a.dtype, like=a)
    kernels(a).gemm(a, b, y, None, _BIAS_NONE, 0)
    return y


def linear(
    input: np.ndarray,
    weight: np.ndarray,
    bias: Optional[np.ndarray] = None,
    *,
    activation: Optional[str] = None,
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """``input @ weight.T + bias`` as ``torch.nn.functional.linear``, with a fused activation.

    Args:
        input: (..., in_features) float32 or float64.
        weight: (out_features, in_features), the input's dtype.
        bias: optional (out_features,), the input's dtype.
        activation: None, 'relu' or 'relu6'.
    """
    require_float(input, "input")
    if input.ndim < 1:
        raise ValueError("input must have at least 1 dimension")
    w = _matrix(weight, "weight", input.dtype)
    features = tuple(input.shape)[-1]
    if features != w.shape[1]:
        raise ValueError(f"input has {features} features but weight expects {w.shape[1]}")
    act = activation_code(activation)
    x2 = _matrix(_rows(input, features), "input")
    mode = _BIAS_NONE
    if bias is not None:
        require_float(bias, "bias", input.dtype)
        if bias.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {bias.shape}")
        bias = _device.contiguous(bias)
        mode = _BIAS_PER_COL
    y = output_array(out, input.shape[:-1] + (w.shape[0],), input.dtype, like=x2)
    kernels(x2).gemm(x2, w.T, _rows(y, w.shape[0]), bias, mode, act)
    return y


def linear_backward(grad_output: np.ndarray, input: np.ndarray, weight: np.ndarray, *,
                    needs=(True, True, True)):
    """Gradients (grad_input, grad_weight, grad_bias) of :func:`linear` (no activation).

    ``grad_output`` is (..., out_features); ``needs`` = (input, weight, bias) says which
    to compute (the others are ``None``). All three are GEMMs / one reduction.
    """
    require_float(input, "input")
    w = _matrix(weight, "weight", input.dtype)
    require_float(grad_output, "grad_output", input.dtype)
    if input.ndim < 1 or tuple(input.shape)[-1] != w.shape[1]:
        raise ValueError(f"input has shape {input.shape} but weight expects {w.shape[1]} features")
    if grad_output.shape != input.shape[:-1] + (w.shape[0],):
        raise ValueError(f"grad_output must have shape {input.shape[:-1] + (w.shape[0],)}, got {grad_output.shape}")
    if not (isinstance(needs, (tuple, list)) and len(needs) == 3):
        raise TypeError(f"needs must be a tuple of three bools, got {needs!r}")
    g2 = _matrix(_rows(grad_output, w.shape[0]), "grad_output")
    x2 = _matrix(_rows(input, w.shape[1]), "input")
    gx = gw = gb = None
    if needs[0]:
        gx = matmul(g2, w).reshape(input.shape)
    if needs[1]:
        gw = matmul(g2.T, x2)
    if needs[2]:
        gb = _device.channel_sum(g2)
    return gx, gw, gb
