"""Activations, softmax, dropout, residual add, flatten and cat, each with its backward."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np

from . import _device
from ._device import kernels
from ._validate import as_int, float_array

_KINDS = {"relu": 0, "relu6": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4, "gelu": 5, "gelu_tanh": 6}
# Whose value the backward needs: the forward's output for these, its input otherwise.
_SAVES_OUTPUT = ("sigmoid", "tanh")


def _act(kind: str, input, alpha: float = 0.0) -> np.ndarray:
    x = float_array(input, "input")
    y = _device.empty(x.shape, x.dtype, x)
    if x.size:
        kernels(x).activation(_KINDS[kind], x, y, float(alpha))
    return y


def _act_backward(kind: str, grad_output, saved, alpha: float = 0.0) -> np.ndarray:
    s = float_array(saved, "output" if kind in _SAVES_OUTPUT else "input")
    g = float_array(grad_output, "grad_output", s.ndim, s.dtype)
    if g.shape != s.shape:
        raise ValueError(f"grad_output must have shape {s.shape}, got {g.shape}")
    gx = _device.empty(s.shape, s.dtype, s)
    if s.size:
        kernels(s).activation_backward(_KINDS[kind], s, g, gx, float(alpha))
    return gx


def relu(input) -> np.ndarray:
    """max(x, 0); NaN stays NaN."""
    return _act("relu", input)


def relu_backward(grad_output, input) -> np.ndarray:
    """grad_output where input > 0, else 0."""
    return _act_backward("relu", grad_output, input)


def relu6(input) -> np.ndarray:
    """min(max(x, 0), 6)."""
    return _act("relu6", input)


def relu6_backward(grad_output, input) -> np.ndarray:
    return _act_backward("relu6", grad_output, input)


def leaky_relu(input, negative_slope: float = 0.01) -> np.ndarray:
    """x if x >= 0 else negative_slope * x."""
    return _act("leaky_relu", input, negative_slope)


def leaky_relu_backward(grad_output, input, negative_slope: float = 0.01) -> np.ndarray:
    return _act_backward("leaky_relu", grad_output, input, negative_slope)


def sigmoid(input) -> np.ndarray:
    """1 / (1 + exp(-x))."""
    return _act("sigmoid", input)


def sigmoid_backward(grad_output, output) -> np.ndarray:
    """From the forward's *output* y: grad_output * y * (1 - y)."""
    return _act_backward("sigmoid", grad_output, output)


def tanh(input) -> np.ndarray:
    return _act("tanh", input)


def tanh_backward(grad_output, output) -> np.ndarray:
    """From the forward's *output* y: grad_output * (1 - y^2)."""
    return _act_backward("tanh", grad_output, output)


def _gelu_kind(approximate: str) -> str:
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return "gelu" if approximate == "none" else "gelu_tanh"


def gelu(input, approximate: str = "none") -> np.ndarray:
    """x * Phi(x) (``approximate='tanh'``: PyTorch's tanh approximation)."""
    return _act(_gelu_kind(approximate), input)


def gelu_backward(grad_output, input, approximate: str = "none") -> np.ndarray:
    return _act_backward(_gelu_kind(approximate), grad_output, input)


def _axis_layout(shape, dim) -> Tuple[int, int, int, int]:
    dim = as_int(dim, "dim")
    nd = len(shape)
    if not -max(nd, 1) <= dim < max(nd, 1):
        raise ValueError(f"dim {dim} is out of range for a {nd}-D array")
    dim %= max(nd, 1)
    outer = int(np.prod(shape[:dim], dtype=np.int64))
    size = int(shape[dim]) if nd else 1
    inner = int(np.prod(shape[dim + 1:], dtype=np.int64))
    return dim, outer, size, inner


def _softmax(input, dim, log):
    x = float_array(input, "input")
    _, outer, size, inner = _axis_layout(x.shape, dim)
    y = _device.empty(x.shape, x.dtype, x)
    if x.size:
        kernels(x).softmax(x, y, outer, size, inner, log)
    return y


def _softmax_backward(grad_output, output, dim, log):
    y = float_array(output, "output")
    g = float_array(grad_output, "grad_output", y.ndim, y.dtype)
    if g.shape != y.shape:
        raise ValueError(f"grad_output must have shape {y.shape}, got {g.shape}")
    _, outer, size, inner = _axis_layout(y.shape, dim)
    gx = _device.empty(y.shape, y.dtype, y)
    if y.size:
        kernels(y).softmax_backward(y, g, gx, outer, size, inner, log)
    return gx


def softmax(input, dim: int = -1) -> np.ndarray:
    """exp(x) / sum(exp(x)) along ``dim`` (shifted by the maximum, so large inputs do not overflow)."""
    return _softmax(input, dim, False)


def softmax_backward(grad_output, output, dim: int = -1) -> np.ndarray:
    """From the forward's output y: y * (grad_output - sum(grad_output * y, dim))."""
    return _softmax_backward(grad_output, output, dim, False)


def log_softmax(input, dim: int = -1) -> np.ndarray:
    """x - logsumexp(x) along ``dim``."""
    return _softmax(input, dim, True)


def log_softmax_backward(grad_output, output, dim: int = -1) -> np.ndarray:
    """From the forward's output y: grad_output - exp(y) * sum(grad_output, dim)."""
    return _softmax_backward(grad_output, output, dim, True)


def dropout(input, p: float = 0.5, training: bool = True, *, seed: int = 0):
    """Zero each element with probability ``p`` and scale the rest by 1 / (1 - p).

    Returns ``(y, mask)``; the uint8 ``mask`` is what :func:`dropout_backward` takes. The mask is
    a pure function of ``seed`` and the element's position (a counter-based generator), so
    results are reproducible and independent of the thread count. With ``training=False`` the
    input is returned unchanged with an all-ones mask.
    """
    x = float_array(input, "input")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    seed = as_int(seed, "seed")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    if not training:
        return _device.copy(x), _device.full(x.shape, np.uint8, 1, x)
    y = _device.empty(x.shape, x.dtype, x)
    mask = _device.empty(x.shape, np.uint8, x)
    if x.size:
        kernels(x).dropout(x, y, mask, p, seed)
    return y, mask


def dropout_backward(grad_output, mask, p: float) -> np.ndarray:
    """grad_output * mask / (1 - p)."""
    g = float_array(grad_output, "grad_output")
    if (not isinstance(mask, np.ndarray) and not _device.is_gpu(mask)) or mask.dtype != np.uint8 \
            or mask.shape != g.shape:
        raise TypeError(f"mask must be the uint8 array of shape {g.shape} that dropout returned")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be between 0 and 1, got {p}")
    gx = _device.empty(g.shape, g.dtype, g)
    if g.size:
        kernels(g).dropout_backward(g, _device.contiguous(mask), gx, 1.0 / (1.0 - p) if p < 1 else 0.0)
    return gx


def add(input, other) -> np.ndarray:
    """input + other for two arrays of one shape and dtype (a residual connection)."""
    a = float_array(input, "input")
    b = float_array(other, "other", a.ndim, a.dtype)
    if a.shape != b.shape:
        raise ValueError(f"add needs equal shapes, got {a.shape} and {b.shape}")
    y = _device.empty(a.shape, a.dtype, a)
    if a.size:
        kernels(a).add(a, b, y)
    return y


def add_backward(grad_output) -> Tuple[np.ndarray, np.ndarray]:
    """Both inputs receive grad_output."""
    return grad_output, grad_output


def flatten(input, start_dim: int = 1, end_dim: int = -1) -> np.ndarray:
    """Merge axes ``start_dim .. end_dim`` into one (a view when the input is contiguous)."""
    x = float_array(input, "input")
    nd = max(x.ndim, 1)
    s, e = as_int(start_dim, "start_dim") % nd, as_int(end_dim, "end_dim") % nd
    if s > e:
        raise ValueError(f"flatten: start_dim ({start_dim}) must not come after end_dim ({end_dim})")
    if not x.ndim:
        return x.reshape(1)
    merged = int(np.prod(x.shape[s:e + 1], dtype=np.int64))
    return x.reshape(x.shape[:s] + (merged,) + x.shape[e + 1:])


def flatten_backward(grad_output, input_shape) -> np.ndarray:
    g = grad_output if _device.is_gpu(grad_output) else np.asarray(grad_output)
    return _device.contiguous(g).reshape(tuple(input_shape))


def _axis(dim, ndim: int) -> int:
    d = as_int(dim, "dim")
    if not -ndim <= d < ndim:
        raise ValueError(f"dim must be in [{-ndim}, {ndim}) for {ndim}-D arrays, got {dim}")
    return d % ndim


def cat(tensors: Sequence[np.ndarray], dim: int = 1) -> np.ndarray:
    """Concatenate arrays of one dtype along ``dim`` (channels by default)."""
    arrays = list(tensors)
    if not arrays:
        raise ValueError("cat needs at least one array")
    first = float_array(arrays[0], "tensors[0]")
    rest = [float_array(a, f"tensors[{i}]", first.ndim, first.dtype) for i, a in enumerate(arrays[1:], 1)]
    d = _axis(dim, max(first.ndim, 1))
    for i, a in enumerate(rest, 1):
        if tuple(a.shape[:d]) + tuple(a.shape[d + 1:]) != tuple(first.shape[:d]) + tuple(first.shape[d + 1:]):
            raise ValueError(f"tensors[{i}] has shape {tuple(a.shape)}, which differs from tensors[0]'s "
                             f"{tuple(first.shape)} outside dim {d}")
    if _device.is_gpu(first):
        return kernels(first).cat([first] + rest, d)
    return np.concatenate([first] + rest, axis=d)


def cat_backward(grad_output, sizes: Sequence[int], dim: int = 1) -> List[np.ndarray]:
    """Split grad_output along ``dim`` into pieces of the given sizes (the inputs' sizes along ``dim``)."""
    g = float_array(grad_output, "grad_output")
    sizes = [as_int(s, "sizes") for s in sizes]
    d = _axis(dim, max(g.ndim, 1))
    if not sizes or min(sizes) < 0 or sum(sizes) != g.shape[d]:
        raise ValueError(f"sizes {sizes} must be >= 0 and add up to grad_output's size {g.shape[d]} along dim {d}")
    if _device.is_gpu(g):
        return kernels(g).split(g, sizes, d)
    bounds = np.cumsum(sizes)[:-1]
    return [np.ascontiguousarray(p) for p in np.split(g, bounds, axis=d)]
