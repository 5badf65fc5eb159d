"""Weights on disk: safetensors (the ``safetensors`` package's numpy API) or numpy ``.npz``.

Nothing is ever unpickled: ``.npz`` files are read with ``allow_pickle=False`` and
safetensors holds raw arrays only. A truncated, corrupt or unreadable file raises
``ValueError`` naming the file; a file whose names or shapes do not fit a model is
reported by ``Module.load_state_dict``.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Dict, Mapping, Union

import numpy as np

from .autograd import Tensor
from .ops._device import is_gpu_like

PathLike = Union[str, "os.PathLike[str]"]


def _format(path: PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix == ".safetensors":
        return "safetensors"
    if suffix == ".npz":
        return "npz"
    raise ValueError(f"{path}: unknown weight format {suffix!r}; use a .safetensors or .npz file name")


def _safetensors():
    try:
        import safetensors.numpy
    except ImportError:
        raise ImportError("reading and writing .safetensors files needs the safetensors package: "
                          "pip install 'fastconv[io]' (or use a .npz file)") from None
    return safetensors.numpy


def _state(obj) -> Dict[str, np.ndarray]:
    state = obj.state_dict() if hasattr(obj, "state_dict") else obj
    if not isinstance(state, Mapping):
        raise TypeError(f"save() takes a Module or a mapping of names to arrays, got {type(obj).__name__}")
    out = OrderedDict()
    for k, v in state.items():
        if not isinstance(k, str):
            raise TypeError(f"state names must be strings, got {k!r}")
        arr = v.data if isinstance(v, Tensor) else v
        if is_gpu_like(arr):  # a model trained on the GPU: its arrays are written from a host copy
            from .cuda import to_host

            arr = to_host(arr)
        arr = np.asarray(arr, order="C")  # (keeps 0-d arrays 0-d)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"{k}: only numeric arrays can be saved, got dtype {arr.dtype}")
        out[k] = arr
    return out


def save(obj, path: PathLike) -> None:
    """Writes a Module's ``state_dict()`` (or a mapping of names to arrays) to ``path``:
    ``.safetensors`` or ``.npz`` by the file name's suffix. GPU arrays are copied to the host
    for writing; :func:`load` gives numpy arrays (``load_state_dict`` then moves nothing: call
    ``model.to('cuda')`` after loading)."""
    fmt = _format(path)
    state = _state(obj)
    if fmt == "safetensors":
        _safetensors().save_file(dict(state), str(path))
    else:
        with open(path, "wb") as f:
            np.savez(f, **state)


def load(path: PathLike) -> "OrderedDict[str, np.ndarray]":
    """Reads the arrays of a ``.safetensors`` or ``.npz`` file, by name (never unpickling).

    Pass the result to ``model.load_state_dict``. Raises ``FileNotFoundError`` for a missing
    file and ``ValueError`` for one that is truncated, corrupt or holds non-numeric data.
    """
    fmt = _format(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such weight file: {path}")
    if fmt == "safetensors":
        st = _safetensors()
        try:
            data = st.load_file(str(path))
        except Exception as e:  # safetensors raises its own SafetensorError (and others) on bad input
            raise ValueError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
        return OrderedDict(data.items())
    try:
        with np.load(path, allow_pickle=False) as z:
            out = OrderedDict()
            for k in z.files:
                out[k] = z[k]
                if not isinstance(out[k], np.ndarray):  # numpy hands back a non-.npy member's raw bytes
                    raise ValueError(f"member {k!r} is not a .npy array")
    except Exception as e:  # zip, CRC, header and pickle refusals (object arrays) alike
        raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from None
    for k, v in out.items():
        if v.dtype.kind not in "biuf":
            raise ValueError(f"{path}: {k} has non-numeric dtype {v.dtype}")
    return out
