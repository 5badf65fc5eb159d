"""fastconv.Tensor: reverse-mode automatic differentiation at tensor granularity.

Each differentiable operation on Tensors computes its result with a fastconv kernel and,
when a gradient is wanted, records one closure that maps the output's gradient to its
inputs' gradients by calling the matching backward kernel (micrograd's engine, one node
per op instead of one per scalar). ``loss.backward()`` walks the recorded graph in
reverse topological order, accumulates gradients into the leaves' ``.grad`` and drops
each node's closure as soon as it has run, which frees the buffers it saved.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from . import ops
from .ops import _device
from .ops._validate import FLOAT_DTYPES

_grad_enabled: contextvars.ContextVar = contextvars.ContextVar("fastconv_grad_enabled", default=True)

BackwardFn = Callable[[np.ndarray], Sequence[Optional[np.ndarray]]]


def is_grad_enabled() -> bool:
    """Whether operations on Tensors record the graph (False inside :func:`no_grad`)."""
    return _grad_enabled.get()


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside ``with fastconv.no_grad():`` operations record nothing and save no buffers
    (inference). Local to the current thread / context."""
    token = _grad_enabled.set(False)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Re-enables recording inside a :func:`no_grad` block."""
    token = _grad_enabled.set(True)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


class _Freed:
    """Marks a node whose backward has run (its saved buffers are gone)."""


_FREED = _Freed()


class Tensor:
    """An n-dimensional numpy array that can record the operations applied to it.

    ``Tensor(data, requires_grad=False)``: ``data`` is anything ``numpy.asarray`` takes
    (float32 stays float32; Python floats become float32, as in PyTorch); only float32
    and float64 Tensors may require gradients. ``.data`` is the array (shared, not copied),
    ``.grad`` the accumulated gradient (an array, or None).
    """

    __slots__ = ("data", "grad", "requires_grad", "_parents", "_backward", "__weakref__")
    __array_priority__ = 1000  # numpy scalars and arrays defer to Tensor's operators

    def __init__(self, data, requires_grad: bool = False, dtype=None):
        arr = data.data if isinstance(data, Tensor) else data
        if _device.is_gpu_like(arr):
            self.data = _gpu_data(arr, dtype)
        else:
            if dtype is None and not isinstance(arr, (np.ndarray, np.generic)) and np.asarray(arr).dtype == np.float64:
                dtype = np.float32  # Python floats: PyTorch's default dtype
            self.data = np.asarray(arr, dtype=dtype)
        self.grad: Optional[np.ndarray] = None
        self._parents: Tuple["Tensor", ...] = ()
        self._backward = None
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    # ------------------------------------------------------------------ devices

    @property
    def device(self) -> str:
        """``'cuda'`` when the data is a GPU array, else ``'cpu'``."""
        return "cuda" if _device.is_gpu(self.data) else "cpu"

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"

    def cuda(self) -> "Tensor":
        """This Tensor on the GPU (a copy, differentiable: gradients come back to the host)."""
        if self.is_cuda:
            return self
        from .cuda import to_device, to_host

        return Tensor._result(to_device(self.data), (self,), lambda g: (to_host(g),))

    def cpu(self) -> "Tensor":
        """This Tensor in host memory (a copy if on the GPU, differentiable)."""
        if not self.is_cuda:
            return self
        from .cuda import to_device, to_host

        return Tensor._result(to_host(self.data), (self,), lambda g: (to_device(g),))

    def to(self, device: str) -> "Tensor":
        """``'cuda'`` or ``'cpu'``: see :meth:`cuda` and :meth:`cpu`."""
        kind = _device.device_kind(device)
        if kind is None:
            raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
        return self.cuda() if kind == "cuda" else self.cpu()

    def __deepcopy__(self, memo) -> "Tensor":
        """``copy.deepcopy``: the data and gradient are copied where they live (GPU arrays on the GPU)."""
        _device.memo_gpu_copies(self, memo)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for name in ("data", "grad", "requires_grad", "_parents", "_backward"):
            setattr(new, name, copy.deepcopy(getattr(self, name), memo))
        return new

    # ------------------------------------------------------------------ graph

    @classmethod
    def _result(cls, data: np.ndarray, parents: Sequence[Optional["Tensor"]], backward: BackwardFn) -> "Tensor":
        """The output of an op on ``parents``; records ``backward`` (output grad -> one grad
        per parent, None where not needed) when grad mode is on and a parent requires grad."""
        out = cls(data)
        live = tuple(p for p in parents if p is not None)
        if is_grad_enabled() and any(p.requires_grad for p in live):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = backward
        return out

    @property
    def is_leaf(self) -> bool:
        """True for Tensors created by the user (not by a recorded op)."""
        return self._backward is None

    @property
    def grad_fn(self):
        """The recorded backward closure (None for leaves)."""
        return None if self._backward is _FREED else self._backward

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype not in (np.float32, np.float64):
            raise TypeError(f"only float32 and float64 Tensors can require gradients, got {self.data.dtype}")
        if not self.is_leaf:
            raise RuntimeError("requires_grad can only be changed on leaf Tensors; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def detach(self) -> "Tensor":
        """The same data (shared), cut from the graph."""
        return Tensor(self.data)

    def backward(self, gradient=None) -> None:
        """Accumulates d(self)/d(leaf) into every leaf's ``.grad`` that requires grad.

        ``gradient`` defaults to 1 for a one-element Tensor (a loss); otherwise it must be
        given, with self's shape. The graph is freed as it is walked: a second backward
        through the same nodes raises RuntimeError.
        """
        if not self.requires_grad:
            raise RuntimeError("backward() on a Tensor that does not require grad (and has no grad_fn)")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"grad can be implicitly created only for scalar outputs, got shape {self.shape}")
            g = _device.full(self.shape, self.dtype, 1, self.data)
        else:
            g = gradient.data if isinstance(gradient, Tensor) else gradient
            g = g if _device.is_gpu_like(g) else np.asarray(g, self.dtype)
            if g.shape != self.shape:
                raise ValueError(f"gradient must have shape {self.shape}, got {g.shape}")
        order = _topological(self)
        grads = {id(self): g}
        for node in order:
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node._backward is None:  # a leaf
                node.grad = _device.copy(g) if node.grad is None else _accumulate(node.grad, g)
                continue
            if node._backward is _FREED:
                raise RuntimeError("trying to backward through the graph a second time: its buffers were freed "
                                   "after the first backward()")
            parent_grads = node._backward(g)
            parents = node._parents
            node._backward, node._parents = _FREED, ()  # frees what the closure saved
            for p, pg in zip(parents, parent_grads):
                if p is None or pg is None or not p.requires_grad:
                    continue
                key = id(p)
                grads[key] = pg if key not in grads else _accumulate(grads[key], pg)

    # ------------------------------------------------------------------ array facts

    @property
    def shape(self) -> Tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        """The data array (shared; a host copy for a GPU Tensor)."""
        if self.is_cuda:
            from .cuda import to_host

            return to_host(self.data)
        return self.data

    def item(self) -> float:
        return self.numpy().item()

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        where = ", device='cuda'" if self.is_cuda else ""
        return f"Tensor({np.array2string(self.numpy(), precision=4, threshold=20)}, dtype={self.dtype}{where}{grad})"

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    # ------------------------------------------------------------------ arithmetic

    def __add__(self, other):
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other):
        return add(self, -_tensor(other, self.dtype))

    def __rsub__(self, other):
        return add(-self, other)

    def __mul__(self, other):
        return mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other):
        o = _tensor(other, self.dtype)
        return mul(self, power(o, -1.0))

    def __rtruediv__(self, other):
        return mul(power(self, -1.0), other)

    def __neg__(self):
        return Tensor._result(_device.scaled(self.data, -1.0), (self,), lambda g: (_device.scaled(g, -1.0),))

    def __pow__(self, exponent):
        return power(self, exponent)

    def __matmul__(self, other):
        return matmul(self, other)

    def __getitem__(self, index):
        _host_only("indexing", self)
        data = self.data[index]
        shape = self.shape

        def backward(g):
            gx = np.zeros(shape, g.dtype)
            np.add.at(gx, index, g)
            return (gx,)

        return Tensor._result(np.array(data, copy=True) if np.ndim(data) else np.asarray(data), (self,), backward)

    def sum(self, dim=None, keepdim: bool = False) -> "Tensor":
        return sum_(self, dim, keepdim)

    def mean(self, dim=None, keepdim: bool = False) -> "Tensor":
        n = self.size if dim is None else int(np.prod([self.shape[d] for d in np.atleast_1d(dim)]))
        return sum_(self, dim, keepdim, scale=1.0 / max(n, 1))

    def reshape(self, *shape) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        old = self.shape
        if -1 in shape:  # resolved here: GPU arrays take explicit shapes only
            known = int(np.prod([s for s in shape if s != -1]))
            shape = tuple(self.size // known if s == -1 and known else s for s in shape)
        return Tensor._result(self.data.reshape(shape), (self,), lambda g: (g.reshape(old),))

    view = reshape

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> "Tensor":
        nd = max(self.ndim, 1)
        s, e = start_dim % nd, end_dim % nd
        return self.reshape(self.shape[:s] + (-1,) + self.shape[e + 1:])

    def transpose(self, dim0: int, dim1: int) -> "Tensor":
        _host_only("transpose", self)
        return Tensor._result(np.swapaxes(self.data, dim0, dim1), (self,), lambda g: (np.swapaxes(g, dim0, dim1),))

    @property
    def T(self) -> "Tensor":
        _host_only(".T", self)
        return Tensor._result(self.data.T, (self,), lambda g: (g.T,))

    def argmax(self, dim=None) -> np.ndarray:
        _host_only("argmax", self)
        return self.data.argmax(axis=dim)


def _host_only(what: str, *tensors: Tensor) -> None:
    """Refuses, with a clear error, a Tensor operation that has no GPU kernel (numpy does it on the host)."""
    if any(_device.is_gpu(t.data) for t in tensors):
        raise NotImplementedError(f"{what} is not available for GPU Tensors; move them with .cpu() first (on the "
                                  f"GPU, Tensors support the fastconv.nn layers and losses, + and - of equal shapes, "
                                  f"* and / by a Python number, sum(), mean() and reshape)")


def _accumulate(a, b):
    """a + b for two gradients of one shape, on their device (fastconv's parallel add where it applies)."""
    if _device.is_gpu(a) or (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                             and a.dtype == b.dtype and a.dtype in FLOAT_DTYPES):
        return ops.add(a, b)
    return a + b


def _gpu_data(arr, dtype):
    """A GPU array as a Tensor's data: its Numba view (no copy, no dtype conversion)."""
    from .cuda import _interop

    data = _interop._view(arr)
    if dtype is not None and np.dtype(dtype) != data.dtype:
        raise TypeError(f"a GPU Tensor keeps its array's dtype ({data.dtype}); convert on the host")
    return data


def _topological(root: Tensor):
    """Nodes reachable from root, each after every node that consumes it (iterative DFS)."""
    order, seen = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for p in node._parents:
            if p is not None and p.requires_grad and id(p) not in seen:
                stack.append((p, False))
    order.reverse()
    return order


def _tensor(x, dtype) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype))


def _unbroadcast(g: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Sums a broadcast gradient back to ``shape``."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(extra))) if extra else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def add(a, b) -> Tensor:
    """a + b with numpy broadcasting; equal-shape float arrays run fastconv's parallel add."""
    a = _tensor(a, None)
    b = _tensor(b, a.dtype)
    if a.shape == b.shape and a.dtype == b.dtype and a.dtype in (np.float32, np.float64):
        data = ops.add(a.data, b.data)
    else:
        _host_only("broadcasting +", a, b)
        data = np.add(a.data, b.data)
    sa, sb = a.shape, b.shape
    return Tensor._result(data, (a, b), lambda g: (_unbroadcast(g, sa), _unbroadcast(g, sb)))


def _constant(t: Tensor) -> Optional[float]:
    """The value of a host scalar that needs no gradient (a Python number in ``x * 2``), else None."""
    if t.requires_grad or _device.is_gpu(t.data) or np.ndim(t.data) != 0:
        return None
    return float(t.data)


def mul(a, b) -> Tensor:
    a = _tensor(a, None)
    b = _tensor(b, a.dtype)
    if _device.is_gpu(a.data) or _device.is_gpu(b.data):
        # On the GPU: a Tensor times a number (the scale kernel); no other products.
        tensor, factor = (a, _constant(b)) if _device.is_gpu(a.data) else (b, _constant(a))
        if factor is None:
            _host_only("* other than by a number", a, b)
        return Tensor._result(_device.scaled(tensor.data, factor), (tensor,),
                              lambda g: (_device.scaled(g, factor),))
    da, db = a.data, b.data
    return Tensor._result(da * db, (a, b), lambda g: (
        _unbroadcast(g * db, da.shape) if a.requires_grad else None,
        _unbroadcast(g * da, db.shape) if b.requires_grad else None))


def power(a, exponent: float) -> Tensor:
    a = _tensor(a, None)
    _host_only("power (and division by a Tensor)", a)
    if isinstance(exponent, Tensor):
        raise TypeError("only a constant exponent is supported")
    e = float(exponent)
    x = a.data
    return Tensor._result(np.power(x, e).astype(x.dtype, copy=False), (a,),
                          lambda g: (g * e * np.power(x, e - 1).astype(x.dtype, copy=False),))


def matmul(a, b) -> Tensor:
    """Matrix product of two 2-D Tensors on fastconv's GEMM."""
    a = _tensor(a, None)
    b = _tensor(b, a.dtype)
    da, db = a.data, b.data
    return Tensor._result(ops.matmul(da, db), (a, b), lambda g: (
        ops.matmul(g, db.T) if a.requires_grad else None,
        ops.matmul(da.T, g) if b.requires_grad else None))


def sum_(a: Tensor, dim=None, keepdim: bool = False, scale: float = 1.0) -> Tensor:
    """``scale * a.sum(dim)`` (``scale`` makes the mean)."""
    shape = a.shape
    if _device.is_gpu(a.data):
        if dim is not None:
            _host_only("sum over some dimensions", a)
        data = _device.empty((1,) * a.ndim if keepdim else (), a.dtype, a.data)
        _device.kernels(a.data).sum_all(_device.contiguous(a.data), data, scale)
        return Tensor._result(data, (a,), lambda g: (_device.scaled(g, scale, shape),))
    axis = None if dim is None else tuple(d % max(a.ndim, 1) for d in np.atleast_1d(dim))
    data = np.asarray(a.data.sum(axis=axis, keepdims=keepdim))
    if scale != 1.0:
        data = np.asarray(data * np.asarray(scale, data.dtype))

    def backward(g):
        if not keepdim and axis is not None:
            g = np.expand_dims(g, axis)
        g = np.broadcast_to(g, shape)
        return ((g * np.asarray(scale, g.dtype)) if scale != 1.0 else g.copy(),)

    return Tensor._result(data, (a,), backward)
