"""The boundary between a caller's GPU arrays and fastconv's GPU kernels.

``call(op, args, kwargs)`` runs one ``fastconv.ops`` op on GPU arguments:

- torch CUDA tensors and CuPy arrays are viewed as Numba device arrays through
  ``__cuda_array_interface__`` (zero-copy);
- outputs are allocated by the caller's library (torch's caching allocator, CuPy's
  pool) and come back as that library's arrays on the same device, sharing memory;
- the kernels run on the stream set by :func:`fastconv.cuda.stream`, or, for torch
  tensors, on torch's current stream of the tensor's device;
- a numpy array mixed into a GPU call is an error (fastconv never copies behind the
  caller's back).
"""

from __future__ import annotations

import contextlib

import numpy as np
from numba import cuda

from ..ops import _device
from . import _rt


def _owner(x) -> str:
    if _device.is_gpu(x):
        return "numba"
    mod = type(x).__module__.split(".")[0]
    return mod if mod in ("torch", "cupy") else "other"


def _view(x):
    """A Numba device array sharing x's memory."""
    if _device.is_gpu(x):
        return x
    if not hasattr(x, "__cuda_array_interface__"):
        raise TypeError(f"{type(x).__name__} is not a GPU array")
    return cuda.as_cuda_array(x)


def _convert(value, found: list):
    if isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError(
            "this call mixes GPU arrays with a numpy array; move it with fastconv.cuda.to_device(...) first "
            "(fastconv does not copy between devices behind your back)")
    if _device.is_gpu_like(value):
        found.append(value)
        return _view(value)
    if isinstance(value, (list, tuple)) and any(_device.is_gpu_like(v) for v in value):
        return type(value)(_convert(v, found) for v in value)
    return value


def _torch_allocator(device):
    import torch

    def alloc(shape, dtype):
        t = torch.empty(shape, dtype=getattr(torch, np.dtype(dtype).name), device=device)
        return cuda.as_cuda_array(t)

    return alloc


def _cupy_allocator():
    import cupy

    def alloc(shape, dtype):
        return cuda.as_cuda_array(cupy.empty(shape, dtype=dtype))

    return alloc


def _wrap(value, owner: str, device):
    if _device.is_gpu(value):
        if owner == "torch":
            import torch

            return torch.as_tensor(value, device=device)
        if owner == "cupy":
            import cupy

            return cupy.asarray(value)
        return value
    if isinstance(value, tuple):
        return tuple(_wrap(v, owner, device) for v in value)
    if isinstance(value, list):
        return [_wrap(v, owner, device) for v in value]
    return value


def call(op, args, kwargs):
    found: list = []
    args = tuple(_convert(a, found) for a in args)
    kwargs = {k: _convert(v, found) for k, v in kwargs.items()}
    owner = _owner(found[0])
    with contextlib.ExitStack() as stack:
        device = None
        if owner == "torch":
            import torch

            device = found[0].device
            if _rt._stream.get() is None:
                stack.enter_context(_rt.use_stream(torch.cuda.current_stream(device)))
            stack.enter_context(_rt.use_allocator(_torch_allocator(device)))
            if device.index is not None:
                stack.enter_context(cuda.gpus[device.index])
        elif owner == "cupy":
            stack.enter_context(_rt.use_allocator(_cupy_allocator()))
        result = op(*args, **kwargs)
    return _wrap(result, owner, device)
