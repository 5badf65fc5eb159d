"""Inference fusion: BatchNorm folded into the preceding convolution, ReLU/ReLU6 into its epilogue."""

from __future__ import annotations

import copy
from typing import List, Optional, Tuple

import numpy as np

from .. import ops
from .layers import Conv1d, Conv2d, Conv3d, Identity, ReLU, ReLU6, _BatchNorm
from .module import Module, Parameter, Sequential

_CONVS = (Conv1d, Conv2d, Conv3d)
_ACTS = {ReLU: "relu", ReLU6: "relu6"}


def _fold(conv, bn) -> None:
    """conv(x) followed by eval-mode bn(.) == conv'(x) with rescaled weights and a new bias
    (:func:`fastconv.ops.fold_batchnorm`, on the host or the GPU, wherever the model is)."""
    w, b = ops.fold_batchnorm(conv.weight.data, None if conv.bias is None else conv.bias.data, bn.running_mean,
                              bn.running_var, bn.weight.data if bn.affine else None,
                              bn.bias.data if bn.affine else None, bn.eps)
    conv.weight.data = w
    conv.bias = Parameter(b, requires_grad=False)


def _triples(module: Module) -> List[Tuple[str, Optional[str], Optional[str]]]:
    """(conv, bn or None, activation or None) child names to fuse in one module. A module's own
    ``fusable()`` list keeps its activation children (its forward may use one twice, and skips
    it after a convolution that has the activation fused); in a Sequential they become Identity."""
    declared = getattr(module, "fusable", None)
    if callable(declared):
        return list(declared())
    if not isinstance(module, Sequential):
        return []
    names = list(module._modules)
    out, i = [], 0
    while i < len(names):
        m = module._modules[names[i]]
        if isinstance(m, _CONVS) and m.activation is None:
            bn = act = None
            j = i + 1
            if j < len(names) and isinstance(module._modules[names[j]], _BatchNorm):
                bn, j = names[j], j + 1
            if j < len(names) and type(module._modules[names[j]]) in _ACTS:
                act, j = names[j], j + 1
            if bn or act:
                out.append((names[i], bn, act))
            i = j
        else:
            i += 1
    return out


def fuse(model: Module, inplace: bool = False) -> Module:
    """A copy of ``model`` (or the model itself, with ``inplace``) prepared for inference.

    In every :class:`Sequential` — and every module that lists its own patterns through a
    ``fusable()`` method returning ``(conv, bn, activation)`` child names (None for none) — a convolution
    followed by an eval-mode BatchNorm gets the normalisation folded into its weights and
    bias, and a ReLU/ReLU6 right after it becomes the convolution's fused epilogue; the
    folded modules become :class:`Identity`. The result is in eval mode; its outputs equal
    the original's eval-mode outputs to float32 rounding.

    The result's convolution weights (host arrays) are frozen, made read-only: a
    :class:`Conv2d` with a read-only weight keeps what it derives from it between calls
    (Winograd's transformed filters, :class:`fastconv.ops.FilterCache`). Writing to them raises
    ``ValueError``; load a state into the model before fusing it. Give a new array
    (``conv.weight.data = w``) to change one.
    """
    m = model if inplace else copy.deepcopy(model)
    m.eval()
    for module in list(m.modules()):
        keeps_activations = callable(getattr(module, "fusable", None))
        for conv_name, bn_name, act_name in _triples(module):
            conv = module._modules[conv_name]
            if bn_name is not None:
                bn = module._modules[bn_name]
                if not bn.track_running_stats:
                    continue
                _fold(conv, bn)
                module._modules[bn_name] = Identity()
            if act_name is not None:
                conv.activation = _ACTS[type(module._modules[act_name])]
                if not keeps_activations:
                    module._modules[act_name] = Identity()
    for module in m.modules():
        if isinstance(module, _CONVS) and isinstance(module.weight.data, np.ndarray):
            module.weight.data.flags.writeable = False
    return m
