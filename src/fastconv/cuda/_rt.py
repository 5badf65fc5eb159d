"""Numba CUDA plumbing shared by the GPU kernels: the current stream, allocation and launches.

Imported only once a GPU array reaches fastconv (or a user imports fastconv.cuda's
kernels); ``import fastconv`` never imports numba.

Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) every GPU thread is a
Python thread, so the tiled kernels use smaller tiles there (:data:`SIM`): the code
paths are the same, only the compile-time tile constants differ.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator, Optional

import numba
import numpy as np
from numba import cuda

from ..ops import _device

SIM = bool(numba.config.ENABLE_CUDASIM)

if SIM:
    from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray as _DeviceArray
else:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as _DeviceArray
_device.register_gpu_types((_DeviceArray,))

# Threads per block of the one-thread-per-element kernels.
THREADS = 32 if SIM else 256

_stream: contextvars.ContextVar = contextvars.ContextVar("fastconv_cuda_stream", default=None)
# Allocates a device array (shape, dtype) -> numba device array; set per call by the
# interop boundary so torch / CuPy inputs get outputs from their own allocator.
_allocator: contextvars.ContextVar = contextvars.ContextVar("fastconv_cuda_allocator", default=None)


def current_stream():
    """The stream fastconv's GPU kernels run on here: the one :func:`use_stream` set, else the default stream."""
    s = _stream.get()
    return s if s is not None else cuda.default_stream()


def as_numba_stream(stream):
    """A numba stream from a numba stream, a torch / CuPy stream, or a raw ``cudaStream_t`` int."""
    if stream is None:
        return None
    if isinstance(stream, int):
        handle = stream
    else:
        owner = type(stream).__module__.split(".")[0]
        if owner == "torch":
            handle = stream.cuda_stream
        elif owner == "cupy":
            handle = stream.ptr
        else:
            return stream  # already a numba stream
    return cuda.external_stream(handle) if handle else cuda.default_stream()


@contextlib.contextmanager
def use_stream(stream) -> Iterator[None]:
    token = _stream.set(as_numba_stream(stream))
    try:
        yield
    finally:
        _stream.reset(token)


@contextlib.contextmanager
def use_allocator(alloc: Optional[Callable]) -> Iterator[None]:
    token = _allocator.set(alloc)
    try:
        yield
    finally:
        _allocator.reset(token)


def empty(shape, dtype):
    shape = tuple(int(s) for s in shape)
    alloc = _allocator.get()
    if alloc is not None:
        return alloc(shape, np.dtype(dtype))
    return cuda.device_array(shape, dtype=np.dtype(dtype), stream=current_stream())


def flat(a):
    """A 1-D view of a C-contiguous device array."""
    return a.reshape(a.size) if a.ndim != 1 else a


def launch(kernel, total: int, *args, threads: int = THREADS) -> None:
    """Run a one-thread-per-element kernel over ``total`` elements (grid-stride loops cover the rest)."""
    if total <= 0:
        return
    blocks = min(max(1, math.ceil(total / threads)), 65535 * 8)
    kernel[blocks, threads, current_stream()](*args)


def launch_grid(kernel, grid, block, *args) -> None:
    kernel[grid, block, current_stream()](*args)


@cuda.jit(device=True)
def split3(i, mid, inner):
    """(outer, middle, inner) coordinates of flat index i over an (outer, mid, inner) layout."""
    return i // (mid * inner), (i // inner) % mid, i % inner


@cuda.jit(device=True)
def epilogue_activation(v, act):
    """The fused activation of a kernel's epilogue: 0 none, 1 ReLU, 2 ReLU6 (NaN passes through)."""
    zero = v * 0
    if act == 1:
        if v < zero:
            return zero
    elif act == 2:
        if v < zero:
            return zero
        if v > zero + 6:
            return zero + 6
    return v


def fill(a, value) -> None:
    if a.size:
        launch(_fill, a.size, flat(a), value)


@cuda.jit
def _fill(a, value):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < a.size:
        a[i] = value
        i += stride
