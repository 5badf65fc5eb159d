"""Swapping a PyTorch model's layers for fastconv's, and moving weights between fastconv.models and PyTorch."""

from __future__ import annotations

import copy
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn

from . import models as torch_models
from . import nn as fnn

__all__ = ["convert", "conversion_report", "ConversionReport", "SUPPORTED", "from_fastconv", "to_fastconv"]

log = logging.getLogger("fastconv.torch")

# torch.nn layer -> its fastconv drop-in. Exact types only: a user's subclass may change forward.
SUPPORTED: Dict[type, type] = {
    nn.Conv1d: fnn.Conv1d, nn.Conv2d: fnn.Conv2d, nn.ConvTranspose2d: fnn.ConvTranspose2d,
    nn.BatchNorm1d: fnn.BatchNorm1d, nn.BatchNorm2d: fnn.BatchNorm2d, nn.MaxPool2d: fnn.MaxPool2d,
    nn.AvgPool2d: fnn.AvgPool2d, nn.AdaptiveAvgPool2d: fnn.AdaptiveAvgPool2d, nn.Linear: fnn.Linear,
    nn.Sequential: fnn.Sequential,
}
_FASTCONV_TYPES = frozenset(SUPPORTED.values())


@dataclass
class ConversionReport:
    """Which layers of a model run on fastconv, and which stay on PyTorch and why."""

    swapped: List[Tuple[str, str]] = field(default_factory=list)  # (module name, class name)
    kept: List[Tuple[str, str, str]] = field(default_factory=list)  # (module name, class name, reason)
    fused: List[Tuple[str, str]] = field(default_factory=list)  # (Conv2d name, BatchNorm2d name) outside Sequential

    def __str__(self) -> str:
        lines = [f"fastconv.torch: {len(self.swapped)} layers on fastconv, {len(self.kept)} left on PyTorch"]
        if self.fused:
            lines.append(f"  {len(self.fused)} Conv2d -> BatchNorm2d pairs run as one convolution in inference")
        counts: Dict[str, int] = {}
        for _, cls in self.swapped:
            counts[cls] = counts.get(cls, 0) + 1
        lines += [f"  fastconv  {cls:<20} x{n}" for cls, n in sorted(counts.items())]
        lines += [f"  PyTorch   {name or '(model)'}: {cls} ({why})" for name, cls, why in self.kept]
        return "\n".join(lines)


def _unsupported_reason(module: nn.Module) -> Optional[str]:
    """Why a module of a supported type must stay on PyTorch, or None."""
    for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
        if name == "num_batches_tracked":
            continue
        if t.device.type != "cpu":
            return f"{name} is on {t.device}"
        if t.dtype not in (torch.float32, torch.float64):
            return f"{name} has dtype {t.dtype}"
    if isinstance(module, nn.ConvTranspose2d) and module.padding_mode != "zeros":
        return "padding_mode must be 'zeros' for a transposed convolution"
    return None


def convert(model: nn.Module, inplace: bool = False, *, verbose: bool = False) -> nn.Module:
    """Run every supported layer of ``model`` on fastconv's kernels.

    Every module whose type is exactly one of :data:`SUPPORTED` (``nn.Conv1d``,
    ``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.BatchNorm1d/2d``, ``nn.MaxPool2d``,
    ``nn.AvgPool2d``, ``nn.AdaptiveAvgPool2d``, ``nn.Linear``, and ``nn.Sequential``, which
    then runs each Conv2d → BatchNorm2d (→ ReLU/ReLU6) run of its children as one fused
    convolution in eval mode, and each BatchNorm → ReLU/ReLU6 pair as one BatchNorm op in
    training) becomes its :mod:`fastconv.torch.nn` drop-in, keeping its
    parameters, buffers, hooks and training mode; everything else (activations, additions, a user's own layers, layers
    on another device or dtype) runs as before. ``inplace=False`` converts a deep copy.

    Conv2d → BatchNorm2d pairs elsewhere (a ResNet block's ``conv1``/``bn1``) are found by
    tracing ``model.forward`` with ``torch.fx``: where a convolution's output goes to one
    BatchNorm2d and nowhere else, inference runs the two as one convolution too. These pairs
    do not fuse in training, under ``torch.compile``, or while a forward hook is registered on
    either layer (or globally); a model that cannot be traced runs them unfused.
    The pairs are found once: after replacing a model's layers or rewiring its forward,
    convert it again (``inplace=True``) to find them anew.

    The conversion is logged on the ``fastconv.torch`` logger and printed when
    ``verbose``; :func:`conversion_report` tells it again for any model.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    for module in model.modules():
        target = SUPPORTED.get(type(module))
        if target is not None and _unsupported_reason(module) is None:
            module.__class__ = target  # the drop-in differs only in forward(); state stays as it is
    _plan_conv_bn_fusion(model)
    report = conversion_report(model)
    log.info("%s", report)
    if verbose:
        print(report)
    return model


class _LeafTracer(torch.fx.Tracer):
    """Traces a model down to its layers: fastconv's drop-ins are leaves (Sequential is looked into)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return (type(m) in _FASTCONV_TYPES and type(m) is not fnn.Sequential) or super().is_leaf_module(m, qualname)


def _plan_conv_bn_fusion(model: nn.Module) -> None:
    """Marks each fastconv Conv2d whose output, in ``model.forward``'s graph, goes to one fastconv
    BatchNorm2d and nowhere else, each module called once: in inference the pair then runs as one
    convolution (:class:`fastconv.torch.nn.Conv2d`). Pairs inside a Sequential are fused by the
    Sequential already. The graph comes from tracing with ``torch.fx``; a model that cannot be traced
    (control flow on tensor values, ...) keeps every layer on its own."""
    for m in model.modules():
        m.__dict__.pop("_fastconv_bn", None)
    try:
        graph = _LeafTracer().trace(model)
    except Exception as e:  # noqa: BLE001 (any failure to trace only means no fusion)
        log.info("fastconv.torch: %s cannot be traced with torch.fx (%s: %s); its Conv2d -> BatchNorm2d pairs "
                 "run unfused", type(model).__name__, type(e).__name__, e)
        return
    modules = dict(model.named_modules())
    in_sequential = {(id(a), id(b)) for m in modules.values() if type(m) is fnn.Sequential
                     for a, b in zip(list(m.children()), list(m.children())[1:])}
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    for node in graph.nodes:
        if node.op != "call_module" or type(modules.get(node.target)) is not fnn.BatchNorm2d:
            continue
        src = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module" and len(src.users) == 1):
            continue
        conv, bn = modules.get(src.target), modules[node.target]
        if (type(conv) is fnn.Conv2d and calls[src.target] == 1 and calls[node.target] == 1
                and conv.out_channels == bn.num_features and (id(conv), id(bn)) not in in_sequential):
            parent, _, name = node.target.rpartition(".")
            # A plain attribute (not a submodule, not in the state_dict). With the BatchNorm's parent
            # and name, the convolution checks on every call that the BatchNorm is still in place.
            conv.__dict__["_fastconv_bn"] = (modules[parent], name, bn)


def conversion_report(model: nn.Module) -> ConversionReport:
    """Which leaf layers of ``model`` run on fastconv and which on PyTorch (with the reason), and which
    Conv2d -> BatchNorm2d pairs outside a Sequential run as one convolution in inference."""
    report = ConversionReport()
    names = {id(m): name for name, m in model.named_modules()}
    for name, module in model.named_modules():
        plan = module.__dict__.get("_fastconv_bn")
        if plan is not None and id(plan[2]) in names:
            report.fused.append((name, names[id(plan[2])]))
        if type(module) in _FASTCONV_TYPES:
            report.swapped.append((name, type(module).__name__))
        elif next(module.children(), None) is None:
            why = _unsupported_reason(module) if type(module) in SUPPORTED else None
            if why is None:
                why = ("a subclass of a supported layer (its forward may differ)"
                       if isinstance(module, tuple(SUPPORTED)) else "no fastconv counterpart")
            report.kept.append((name, type(module).__name__, why))
    return report


# --------------------------------------------------------------------------- fastconv.models <-> PyTorch twins


def _first(model, cls_name: str, last: bool = False):
    found = [m for m in model.modules() if type(m).__name__ == cls_name]
    if not found:
        raise ValueError(f"{type(model).__name__} has no {cls_name} layer")
    return found[-1] if last else found[0]


def _zoo_architecture(model) -> Tuple[str, tuple, dict]:
    """(class name, positional args, keyword args) that rebuild ``model``'s architecture, read from its layers.

    The zoo's classes have the same names, arguments and attribute names in fastconv.models
    and fastconv.torch.models, so one reader serves both directions.
    """
    cls = type(model).__name__
    kw = {"num_classes": _first(model, "Linear", last=True).out_features,
          "in_channels": _first(model, "Conv2d").in_channels}
    if cls == "LeNet5":
        kw["classic"] = type(model.features[1]).__name__ == "Tanh"
        return cls, (), kw
    if cls in ("AlexNet", "MiniAlexNet", "MobileNetV1", "MobileNetV2"):
        return cls, (), kw
    if cls == "VGG":
        cfg = [m.out_channels if type(m).__name__ == "Conv2d" else "M" for m in model.features
               if type(m).__name__ in ("Conv2d", "MaxPool2d")]
        batch_norm = any(type(m).__name__ == "BatchNorm2d" for m in model.features)
        return cls, (cfg, batch_norm), kw
    if cls == "ResNet":
        block = type(model.layer1[0]).__name__
        return cls, (block, [len(getattr(model, f"layer{i}")) for i in range(1, 5)]), kw
    raise TypeError(f"{cls} is not a model of the fastconv zoo (lenet5, alexnet, mini_alexnet, vgg, resnet, "
                    f"mobilenet_v1/v2)")


def _build(namespace, cls: str, args: tuple, kwargs: dict):
    if cls == "ResNet":
        args = (getattr(namespace, args[0]),) + args[1:]
    return getattr(namespace, cls)(*args, **kwargs)


def from_fastconv(model, twin: Optional[nn.Module] = None) -> nn.Module:
    """The PyTorch twin of a :mod:`fastconv.models` model, holding its weights and buffers.

    ``twin`` (a PyTorch model with the same state_dict names and shapes, e.g. a torchvision
    model) receives the weights; without it, the matching :mod:`fastconv.torch.models`
    architecture is built. The twin gets the model's train/eval mode. Returns the twin
    (plain PyTorch layers: pass it to :func:`convert` to run it on fastconv).
    """
    if twin is None:
        twin = _build(torch_models, *_zoo_architecture(model))
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    twin.load_state_dict(state, strict=True)
    return twin.train(model.training)


def to_fastconv(module: nn.Module, model=None):
    """The :mod:`fastconv.models` twin of a PyTorch model, holding its weights and buffers.

    The inverse of :func:`from_fastconv`: ``model`` (a fastconv model) receives the
    weights, or the matching :mod:`fastconv.models` architecture is built. Names and
    shapes must match exactly (a mismatch lists the keys).
    """
    from .. import models as fastconv_models

    if model is None:
        model = _build(fastconv_models, *_zoo_architecture(module))
    model.load_state_dict({k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()})
    return model.train(module.training)
