"""Where an op runs: numpy arrays on the CPU kernels, GPU arrays on fastconv.cuda's.

A GPU array is anything with ``__cuda_array_interface__`` (Numba device arrays, CuPy
arrays, torch CUDA tensors) or a Numba CUDA-simulator array. Every public op of
``fastconv.ops`` is wrapped by :func:`dispatch`: with numpy arguments it calls the op
directly (one cheap type check per argument); with a GPU argument it hands the call to
``fastconv.cuda``'s boundary, which views the arrays as Numba device arrays (zero-copy),
runs the same validated op on the GPU kernels and returns results of the caller's kind.
Nothing here imports numba: it is imported only once a GPU array arrives.
"""

from __future__ import annotations

import functools
import types

import numpy as np

from .. import _core
from .._runtime import backend

# Numba's device-array classes, registered by fastconv.cuda once it has imported numba.
_gpu_types: tuple = ()


def register_gpu_types(types: tuple) -> None:
    global _gpu_types
    _gpu_types = tuple(types)


def is_gpu(x) -> bool:
    """True for a Numba device array (what the ops see inside a GPU call)."""
    return bool(_gpu_types) and isinstance(x, _gpu_types)


def is_gpu_like(x) -> bool:
    """True for any array that lives on a GPU (or in Numba's CUDA simulator)."""
    if isinstance(x, (np.ndarray, np.generic, int, float, str, bool, tuple, list, dict)) or x is None:
        return False
    if is_gpu(x):
        return True
    if type(x).__module__.startswith("numba.cuda.simulator") and hasattr(x, "copy_to_host"):
        return True
    try:
        return hasattr(x, "__cuda_array_interface__")
    except Exception:  # a property that raises something other than AttributeError
        return False


# Argument types that are never on a GPU, checked by exact type first: most arguments of
# a CPU call are one of these, and is_gpu_like's checks cost a few microseconds an op.
_HOST_TYPES = frozenset((np.ndarray, int, float, str, bool, type(None)))


def _has_gpu_arg(args, kwargs) -> bool:
    for a in args:
        t = type(a)
        if t in _HOST_TYPES:
            continue
        if t is tuple or t is list:
            if any(type(v) not in _HOST_TYPES and is_gpu_like(v) for v in a):
                return True
            continue
        if is_gpu_like(a) or (isinstance(a, (list, tuple)) and any(is_gpu_like(v) for v in a)):
            return True
    for a in kwargs.values():
        if type(a) not in _HOST_TYPES and is_gpu_like(a):
            return True
    return False


def dispatch(fn):
    """Wrap a public op so that GPU arguments run it on the GPU (see the module docstring)."""

    @functools.wraps(fn)
    def op(*args, **kwargs):
        if _has_gpu_arg(args, kwargs):
            from ..cuda import _interop

            return _interop.call(fn, args, kwargs)
        return fn(*args, **kwargs)

    return op


def kernels(x):
    """The kernel set for an (already validated) array: the CPU backend in use, or the GPU's."""
    if is_gpu(x):
        from ..cuda._backend import backend as gpu

        return gpu
    return backend()


def empty(shape, dtype, like):
    """An uninitialised array on ``like``'s device (on the CPU, large ones come from the
    block cache: see :func:`fastconv.set_cache_limit`)."""
    if is_gpu(like):
        from ..cuda import _rt

        return _rt.empty(shape, dtype)
    return _core.empty(shape, dtype)


def zeros(shape, dtype, like):
    return full(shape, dtype, 0, like)


def contiguous(x):
    if is_gpu(x):
        from ..cuda import _arrays

        return _arrays.contiguous(x)
    return np.asarray(x, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)


def fill_zero(a) -> None:
    if is_gpu(a):
        from ..cuda import _rt

        _rt.fill(a, 0)
    else:
        a.fill(0)


def is_writable_contiguous(a) -> bool:
    if is_gpu(a):
        return a.is_c_contiguous()
    return a.flags.c_contiguous and a.flags.writeable


def full(shape, dtype, value, like):
    if is_gpu(like):
        from ..cuda import _rt

        a = _rt.empty(shape, dtype)
        _rt.fill(a, value)
        return a
    a = _core.empty(shape, dtype)
    a.fill(value)
    return a


def copy(x):
    if is_gpu(x):
        from ..cuda import _rt

        y = _rt.empty(x.shape, x.dtype)
        y.copy_to_device(contiguous(x), stream=_rt.current_stream())
        return y
    if not x.flags.c_contiguous or x.nbytes < _core.CACHE_MIN_BYTES:
        return x.copy()
    y = _core.empty(x.shape, x.dtype)  # a cached block, filled on fastconv's threads
    _core.parallel_copy(x, y)
    return y


_WALKED = "fastconv._device.walked"  # a key of copy.deepcopy's memo: ids already walked for GPU arrays
_LEAVES = (np.ndarray, np.generic, str, bytes, int, float, complex, bool, type, types.FunctionType,
           types.BuiltinFunctionType, types.MethodType, types.ModuleType)


def _slot_values(obj):
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if name not in ("__dict__", "__weakref__") and hasattr(obj, name):
                yield getattr(obj, name)


def memo_gpu_copies(root, memo: dict) -> None:
    """Prepares ``copy.deepcopy(root)``: puts a device copy of every Numba device array that
    ``root`` reaches (through dicts, lists, tuples, sets and object attributes) into ``memo``,
    which deepcopy then uses in place of the arrays. (Numba's device arrays have no deepcopy of
    their own: the default one would duplicate the handles of their memory and CUDA context,
    not the memory.) Nothing happens before ``fastconv.cuda`` has seen a GPU array."""
    if not _gpu_types:
        return
    walked = memo.setdefault(_WALKED, set())
    stack = [root]
    while stack:
        v = stack.pop()
        if id(v) in walked or v is None or isinstance(v, _LEAVES):
            continue
        walked.add(id(v))
        if is_gpu(v):
            if id(v) not in memo:
                memo[id(v)] = copy(v)
                memo.setdefault(id(memo), []).append(v)  # copy.deepcopy's keep-alive list
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, (list, tuple, set, frozenset)):
            stack.extend(v)
        else:
            stack.extend(getattr(v, "__dict__", {}).values())
            stack.extend(_slot_values(v))


def channel_sum(g):
    """The sum of ``g`` over every axis but 1 (a bias gradient), as a new array on g's device."""
    if is_gpu(g):
        out = empty((g.shape[1],), g.dtype, g)
        kernels(g).channel_sum(contiguous(g), out)
        return out
    return g.sum(axis=(0,) + tuple(range(2, g.ndim)))


def scaled(x, factor: float, shape=None):
    """``factor * x`` on x's device, as a new array; with ``shape``, a one-element ``x`` broadcast to it."""
    shape = tuple(x.shape) if shape is None else tuple(shape)
    if is_gpu(x):
        out = empty(shape, x.dtype, x)
        kernels(x).scale(contiguous(x), factor, out)
        return out
    return np.broadcast_to(np.asarray(x * np.asarray(factor, x.dtype)), shape).copy()


def device_kind(device):
    """``'cuda'`` for ``'cuda'`` / ``'cuda:N'``, ``'cpu'`` for ``'cpu'``, else None."""
    name = str(device)
    if name == "cuda" or name.startswith("cuda:"):
        return "cuda"
    return "cpu" if name == "cpu" else None
