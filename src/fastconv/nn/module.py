"""Module, Parameter and the containers, with ``torch.nn``'s names, attributes and state_dict keys."""

from __future__ import annotations

import copy
from collections import OrderedDict
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import numpy as np

from ..autograd import Tensor
from ..ops import _device


class Parameter(Tensor):
    """A Tensor that is a module's learnable weight (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad: bool = True):
        data = data.data if isinstance(data, Tensor) else data
        super().__init__(data if _device.is_gpu_like(data) else np.asarray(data))
        self.requires_grad_(requires_grad)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


def _copy_into(dst, src) -> None:
    """``dst[...] = src`` (converting the dtype) for host and GPU arrays alike: a checkpoint read
    from a file loads into a model on the GPU, and a GPU model's state into one on the host."""
    if not (_device.is_gpu(dst) or _device.is_gpu_like(src)):
        np.copyto(dst, src, casting="same_kind" if dst.dtype.kind == src.dtype.kind else "unsafe")
        return
    from ..cuda import to_host

    host = np.ascontiguousarray(to_host(src) if _device.is_gpu_like(src) else src).astype(dst.dtype, copy=False)
    if _device.is_gpu(dst):
        dst.copy_to_device(host)
    else:
        np.copyto(dst, host)


class IncompatibleKeys(NamedTuple):
    missing_keys: List[str]
    unexpected_keys: List[str]


class Module:
    """Base class of layers and models, as ``torch.nn.Module``.

    Assigning a :class:`Parameter` or a Module to an attribute registers it; buffers
    (running statistics) are registered with :meth:`register_buffer`. ``state_dict()``
    keys are the dotted attribute paths, as in PyTorch, so PyTorch checkpoints map 1:1.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __deepcopy__(self, memo) -> "Module":
        """``copy.deepcopy``: parameters and buffers are copied where they live (GPU arrays on the GPU)."""
        _device.memo_gpu_copies(self, memo)
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update((k, copy.deepcopy(v, memo)) for k, v in self.__dict__.items())
        return new

    # ------------------------------------------------------------------ registration

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("call Module.__init__() before assigning attributes")
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self.__dict__.get("_buffer_names", ()) and (value is None or isinstance(value, np.ndarray)
                                                                 or _device.is_gpu(value)):
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)
            return
        self.__dict__.pop(name, None)

    def __getattr__(self, name):
        for d in ("_parameters", "_buffers", "_modules"):
            store = self.__dict__.get(d)
            if store is not None and name in store:
                return store[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for d in (self._parameters, self._buffers, self._modules):
            if name in d:
                del d[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array: Optional[np.ndarray]) -> None:
        """A non-learnable array that is part of the state (e.g. BatchNorm's running mean)."""
        if "_buffer_names" not in self.__dict__:
            object.__setattr__(self, "_buffer_names", set())
        self._buffer_names.add(name)
        self._buffers[name] = None if array is None else np.asarray(array)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        if param is None:
            self._parameters[name] = None
        else:
            setattr(self, name, param)

    def add_module(self, name: str, module: Optional["Module"]) -> None:
        self._modules[name] = module

    # ------------------------------------------------------------------ calling

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ------------------------------------------------------------------ traversal

    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        yield prefix, self
        for name, m in self._modules.items():
            if m is not None:
                yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        for name, m in self._modules.items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator["Module"]:
        for _, m in self.named_children():
            yield m

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[Tuple[str, Parameter]]:
        seen = set()
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in mods:
            for name, p in m._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[Tuple[str, np.ndarray]]:
        mods = self.named_modules(prefix) if recurse else [(prefix, self)]
        for mod_prefix, m in mods:
            for name, b in m._buffers.items():
                if b is not None:
                    yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def apply(self, fn) -> "Module":
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ modes and gradients

    def train(self, mode: bool = True) -> "Module":
        if not isinstance(mode, bool):
            raise TypeError("training mode is expected to be a bool")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad[...] = 0

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def to(self, dtype) -> "Module":
        """Converts the floating-point parameters and buffers to ``dtype`` (float32 or float64), in place;
        or, given ``'cuda'`` / ``'cpu'``, moves them to the GPU or back (integer buffers such as
        BatchNorm's ``num_batches_tracked`` stay on the host, where the layer counts with them)."""
        if isinstance(dtype, str) and _device.device_kind(dtype) is not None:
            return self._move(_device.device_kind(dtype) == "cuda")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        for m in self.modules():
            for name, p in m._parameters.items():
                if p is not None:
                    p.data = p.data.astype(dtype)
                    p.grad = None if p.grad is None else p.grad.astype(dtype)
            for name, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    m._buffers[name] = b.astype(dtype)
        return self

    def cuda(self) -> "Module":
        """Moves the parameters and floating-point buffers to the GPU, in place (``to('cuda')``)."""
        return self._move(True)

    def cpu(self) -> "Module":
        """Moves the parameters and buffers back to host memory, in place (``to('cpu')``)."""
        return self._move(False)

    def _move(self, to_gpu: bool) -> "Module":
        from ..cuda import to_device, to_host

        move = to_device if to_gpu else to_host
        for m in self.modules():
            for p in m._parameters.values():
                if p is not None:
                    p.data = move(p.data)
                    p.grad = None if p.grad is None else move(p.grad)
            for name, b in m._buffers.items():
                if b is not None and b.dtype.kind == "f":
                    m._buffers[name] = move(b)
        return self

    def float(self) -> "Module":
        return self.to(np.float32)

    def double(self) -> "Module":
        return self.to(np.float64)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Parameters and buffers by dotted name (the arrays themselves, not copies)."""
        out = OrderedDict()
        for mod_prefix, m in self.named_modules():
            for name, p in m._parameters.items():
                if p is not None:
                    out[f"{mod_prefix}.{name}" if mod_prefix else name] = p.data
            for name, b in m._buffers.items():
                if b is not None:
                    out[f"{mod_prefix}.{name}" if mod_prefix else name] = b
        return out

    def load_state_dict(self, state_dict: Dict[str, object], strict: bool = True) -> IncompatibleKeys:
        """Copies arrays (or Tensors) into this module's parameters and buffers, by name.

        Shapes must match. With ``strict`` (the default) the keys must match exactly; a
        mismatch raises ``RuntimeError`` listing the missing keys, the unexpected keys and
        the shape mismatches. Returns ``(missing_keys, unexpected_keys)``.
        """
        own = self.state_dict()
        given = {k: (v.data if isinstance(v, Tensor) else v if _device.is_gpu_like(v) else np.asarray(v))
                 for k, v in state_dict.items()}
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        mismatched = [f"{k}: checkpoint {tuple(given[k].shape)}, model {tuple(own[k].shape)}"
                      for k in own if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
        errors = []
        if strict and missing:
            errors.append("Missing key(s): " + ", ".join(repr(k) for k in missing))
        if strict and unexpected:
            errors.append("Unexpected key(s): " + ", ".join(repr(k) for k in unexpected))
        if mismatched:
            errors.append("Shape mismatch(es): " + "; ".join(mismatched))
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n  " + "\n  ".join(errors))
        frozen = [k for k, dst in own.items() if k in given and isinstance(dst, np.ndarray) and not dst.flags.writeable]
        if frozen:
            raise ValueError(f"{', '.join(frozen)} {'is' if len(frozen) == 1 else 'are'} read-only (nn.fuse freezes "
                             "the convolution weights of the model it returns): load the state into the model "
                             "before fusing it")
        for k, dst in own.items():
            if k in given:
                _copy_into(dst, given[k])
        return IncompatibleKeys(missing, unexpected)

    # ------------------------------------------------------------------ printing

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class Sequential(Module):
    """Modules called in order; indexable, with children named '0', '1', ... (or by an OrderedDict)."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def forward(self, x):
        mods = list(self._modules.values())
        i = 0
        while i < len(mods):
            # A module that can absorb its successor (BatchNorm followed by ReLU or ReLU6)
            # runs both in one pass.
            fused = getattr(mods[i], "fused_forward", None)
            y = fused(x, mods[i + 1]) if fused is not None and i + 1 < len(mods) else None
            if y is not None:
                x, i = y, i + 2
            else:
                x, i = mods[i](x), i + 1
        return x

    def __getitem__(self, i):
        mods = list(self._modules.values())
        if isinstance(i, slice):
            return Sequential(*mods[i])
        return mods[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self)), module)
        return self


class ModuleList(Module):
    """A list of modules whose parameters are registered (children named '0', '1', ...)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> "ModuleList":
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules) -> "ModuleList":
        for m in modules:
            self.append(m)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())
