"""Matrix products on the packed SGEMM."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .._runtime import backend
from ._validate import activation_code, output_array, require_float32

_BIAS_NONE, _BIAS_PER_COL = 0, 2


def _matrix(x, name: str) -> np.ndarray:
    """A 2-D float32 array; strided views are kept (the GEMM reads them in place)."""
    require_float32(x, name)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if any(s % x.itemsize for s in x.strides):
        x = np.ascontiguousarray(x)
    return x


def matmul(a: np.ndarray, b: np.ndarray, *, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``a @ b`` for 2-D float32 arrays. Transposed or strided views are read in place, no copy."""
    a = _matrix(a, "a")
    b = _matrix(b, "b")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: a has {a.shape[1]} columns but b has {b.shape[0]} rows ({a.shape} @ {b.shape})")
    y = output_array(out, (a.shape[0], b.shape[1]))
    backend().gemm(a, b, y, None, _BIAS_NONE, 0)
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
        input: (..., in_features) float32.
        weight: (out_features, in_features) float32.
        bias: optional (out_features,) float32.
        activation: None, 'relu' or 'relu6'.
    """
    require_float32(input, "input")
    if input.ndim < 1:
        raise ValueError("input must have at least 1 dimension")
    w = _matrix(weight, "weight")
    if input.shape[-1] != w.shape[1]:
        raise ValueError(f"input has {input.shape[-1]} features but weight expects {w.shape[1]}")
    act = activation_code(activation)
    x2 = _matrix(input.reshape(-1, input.shape[-1]), "input")
    mode = _BIAS_NONE
    if bias is not None:
        require_float32(bias, "bias")
        if bias.shape != (w.shape[0],):
            raise ValueError(f"bias must have shape ({w.shape[0]},), got {bias.shape}")
        bias = np.ascontiguousarray(bias)
        mode = _BIAS_PER_COL
    y = output_array(out, input.shape[:-1] + (w.shape[0],))
    backend().gemm(x2, w.T, y.reshape(-1, w.shape[0]), bias, mode, act)
    return y
