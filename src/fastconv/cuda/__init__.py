"""fastconv's GPU backend: Numba CUDA kernels behind the same ``fastconv.ops`` API.

Pass GPU arrays to any op of :mod:`fastconv.ops` (Numba device arrays, CuPy arrays or
torch CUDA tensors, anything with ``__cuda_array_interface__``) and it runs on the GPU,
zero-copy, returning arrays of the same kind on the same device::

    import fastconv, numpy as np
    x = fastconv.cuda.to_device(np.random.rand(8, 3, 32, 32).astype(np.float32))
    w = fastconv.cuda.to_device(np.random.rand(16, 3, 3, 3).astype(np.float32))
    y = fastconv.ops.conv2d(x, w, padding=1)          # a Numba device array
    fastconv.cuda.to_host(y)                           # numpy

``pip install "fastconv[cuda]"`` brings numba-cuda. Importing this module never
imports numba; :func:`is_available` and :func:`why_unavailable` say whether the GPU
path can run here. Under Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same
kernels run on the CPU, one Python thread per GPU thread (for tests on tiny shapes).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, Optional

import numpy as np

from ..ops._device import is_gpu_like as is_device_array

__all__ = ["is_available", "why_unavailable", "is_simulator", "is_device_array", "to_device", "to_host", "stream",
           "synchronize"]


def is_simulator() -> bool:
    """True when Numba's CUDA simulator is switched on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@functools.lru_cache(maxsize=None)
def why_unavailable() -> Optional[str]:
    """Why the GPU path cannot run here, or ``None`` when it can."""
    try:
        from numba import cuda
    except ImportError:
        return 'numba-cuda is not installed: pip install "fastconv[cuda]"'
    except Exception as e:  # a broken install
        return f"numba.cuda failed to import: {e}"
    if is_simulator():
        return None
    try:
        if not cuda.is_available():
            cuda.detect()  # raises with the driver's reason
            return "no CUDA GPU was found"
        cuda.current_context()
    except Exception as e:
        return f"no usable CUDA GPU: {str(e).strip()}"
    return None


def is_available() -> bool:
    """True when fastconv's GPU kernels can run here (a CUDA GPU with numba-cuda, or the simulator)."""
    return why_unavailable() is None


def _require():
    why = why_unavailable()
    if why is not None:
        raise RuntimeError(f"fastconv.cuda is not available: {why}")
    from . import _rt

    return _rt


def to_device(array, stream=None):
    """Copy a numpy array to the GPU; returns a Numba device array (GPU arrays pass through)."""
    _rt = _require()
    if is_device_array(array):
        return array
    a = np.ascontiguousarray(array)
    s = _rt.as_numba_stream(stream) or _rt.current_stream()
    return _rt.cuda.to_device(a, stream=s)


def to_host(array) -> np.ndarray:
    """Copy a GPU array (Numba, CuPy, torch CUDA) to a numpy array; numpy arrays pass through."""
    if isinstance(array, np.ndarray):
        return array
    _rt = _require()
    from . import _interop

    view = _interop._view(array)
    out = view.copy_to_host(stream=_rt.current_stream())
    _rt.current_stream().synchronize()
    return out


@contextlib.contextmanager
def stream(s) -> Iterator[None]:
    """Run fastconv's GPU ops inside the block on stream ``s``: a Numba stream, a torch or CuPy
    stream, or a raw ``cudaStream_t`` handle (int). Without one, ops on torch tensors use torch's
    current stream and the rest the default stream."""
    _rt = _require()
    with _rt.use_stream(s):
        yield


def synchronize() -> None:
    """Wait for every kernel fastconv queued on the current stream."""
    _require().current_stream().synchronize()
