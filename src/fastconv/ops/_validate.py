"""Argument validation and normalisation shared by every op.

This is the single place where user input is checked; the kernels below trust
what they are given. Errors name the offending argument.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from .._runtime import as_int
from . import _device

# Element counts above this cannot be allocated on any real machine; refusing them
# early also keeps every size computed in the C++ core far from int64 overflow.
MAX_ELEMENTS = 1 << 48
# Per-parameter bound (stride, padding, dilation) for the same reason.
MAX_PARAM = 1 << 31

ACTIVATIONS = {None: 0, "relu": 1, "relu6": 2}

IntPair = Union[int, Tuple[int, int]]


def pair(value, name: str, *, minimum: int) -> Tuple[int, int]:
    """An int or a pair of ints, each >= minimum and bounded."""
    return tuple_arg(value, name, 2, minimum=minimum)


FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def require_float(x, name: str, dtype=None) -> None:
    """TypeError unless x is a float32 or float64 ndarray (of ``dtype`` when given).

    Other dtypes raise rather than being converted behind the caller's back.
    """
    if not isinstance(x, np.ndarray) and not _device.is_gpu(x):
        raise TypeError(f"{name} must be a numpy.ndarray (or a GPU array), got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype} (convert with .astype(np.float32))")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} has dtype {x.dtype} but the input is {np.dtype(dtype)}; all arrays of an op share one dtype")


def float_array(x, name: str, ndim: Optional[int] = None, dtype=None) -> np.ndarray:
    """A C-contiguous float32/float64 view of x (copied once only if not contiguous), on x's device."""
    require_float(x, name, dtype)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {x.shape}")
    return _device.contiguous(x)


def tuple_arg(value, name: str, nd: int, *, minimum: int) -> Tuple[int, ...]:
    """An int or a tuple of ``nd`` ints, each >= minimum and bounded."""
    if isinstance(value, (tuple, list)):
        if len(value) != nd:
            raise ValueError(f"{name} must be an int or a tuple of {nd} ints, got {len(value)} values")
        out = tuple(as_int(v, name) for v in value)
    else:
        out = (as_int(value, name),) * nd
    for v in out:
        if v < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
        if v > MAX_PARAM:
            raise ValueError(f"{name} is too large: {value!r}")
    return out


def activation_code(activation) -> int:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be None, 'relu' or 'relu6', got {activation!r}")
    return ACTIVATIONS[activation]


def check_numel(shape, name: str) -> None:
    n = 1
    for d in shape:
        n *= int(d)
    if n > MAX_ELEMENTS:
        raise ValueError(f"{name} would have {n} elements, more than fastconv can address ({MAX_ELEMENTS})")


def output_array(out, shape, dtype=np.float32, name: str = "out", *, like=None) -> np.ndarray:
    """A fresh array of `shape` and `dtype` on ``like``'s device, or the caller's `out` after checking it."""
    shape = tuple(int(s) for s in shape)
    check_numel(shape, "the output")
    if out is None:
        return _device.empty(shape, dtype, like)
    require_float(out, name, dtype)
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not _device.is_writable_contiguous(out):
        raise ValueError(f"{name} must be C-contiguous and writeable")
    return out
