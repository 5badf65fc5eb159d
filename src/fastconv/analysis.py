"""Understanding a model: per-layer output shapes, parameters, MACs and receptive fields.

:func:`summary` runs one inference pass on zeros and records every leaf module's call.
The receptive field follows the textbook recurrence along the data path: a layer with
(dilated) kernel k and stride s maps (rf, jump) to (rf + (k - 1) * jump, jump * s); layers
without a window (BatchNorm, activations) keep both. Where paths merge (a residual add),
a layer's input takes the largest field among earlier outputs of its shape.
"""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import nn
from .autograd import Tensor, no_grad


def _pairs(v, n: int) -> Tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * n


def _window(m) -> Optional[Tuple[int, int]]:
    """(effective kernel, stride) along H of a windowed layer, None for layers without a window."""
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return m.dilation[0] * (m.kernel_size[0] - 1) + 1, m.stride[0]
    if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
        k = _pairs(m.kernel_size, 1)[0]
        s = _pairs(m.stride if m.stride is not None else m.kernel_size, 1)[0]
        return _pairs(m.dilation, 1)[0] * (k - 1) + 1, s
    if isinstance(m, nn.AvgPool1d):
        k = _pairs(m.kernel_size, 1)[0]
        return k, _pairs(m.stride if m.stride is not None else m.kernel_size, 1)[0]
    return None


def _macs(m, inp: Tuple[int, ...], out: Tuple[int, ...]) -> int:
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return int(np.prod(out)) * (m.in_channels // m.groups) * int(np.prod(m.kernel_size))
    if isinstance(m, nn.ConvTranspose2d):
        return int(np.prod(inp)) * (m.out_channels // m.groups) * int(np.prod(m.kernel_size))
    if isinstance(m, nn.Linear):
        return int(np.prod(out[:-1])) * m.in_features * m.out_features
    return 0


@contextlib.contextmanager
def record_calls(model: nn.Module) -> Iterator[List[dict]]:
    """Within the block, every call of a leaf module of ``model`` appends
    ``{"name", "module", "input", "output"}`` (Tensors) to the yielded list."""
    calls: List[dict] = []
    patched = []
    for name, m in model.named_modules():
        if next(m.children(), None) is not None:
            continue

        def wrapped(*args, _m=m, _name=name, _forward=m.forward, **kwargs):
            out = _forward(*args, **kwargs)
            calls.append({"name": _name, "module": _m, "input": args[0] if args else None, "output": out})
            return out

        object.__setattr__(m, "forward", wrapped)
        patched.append(m)
    try:
        yield calls
    finally:
        for m in patched:
            del m.__dict__["forward"]


def summary(model: nn.Module, input_shape: Sequence[int], *, print_table: bool = True) -> List[dict]:
    """Per leaf layer, in call order: ``name``, ``type``, ``output_shape``, ``params``,
    ``macs`` (multiply-accumulates), ``rf`` (receptive field along H, in input pixels) and
    ``jump`` (product of the strides so far); a final row ``name='total'`` sums params and
    MACs. Prints the table unless ``print_table=False``; returns the rows either way.

    ``input_shape`` includes the batch, e.g. ``(1, 3, 224, 224)``. The model runs once in
    eval mode on zeros (and is put back in its previous mode).
    """
    was_training = model.training
    model.eval()
    x = Tensor(np.zeros(tuple(input_shape), np.float32))
    try:
        with no_grad(), record_calls(model) as calls:
            model(x)
    finally:
        model.train(was_training)
    fields: Dict[int, Tuple[int, int, Tuple[int, ...]]] = {id(x.data): (1, 1, x.shape)}
    rows = []
    counted = set()
    for c in calls:
        m, inp, out = c["module"], c["input"], c["output"]
        key = id(inp.data) if isinstance(inp, Tensor) else None
        if key in fields:
            rf, jump = fields[key][:2]
        else:  # merged paths: the widest field among earlier outputs of this shape
            same = [f for f in fields.values() if f[2] == getattr(inp, "shape", None)]
            rf, jump = max(same)[:2] if same else max(fields.values())[:2]
        w = _window(m)
        if w is not None:
            rf, jump = rf + (w[0] - 1) * jump, jump * w[1]
        fields[id(out.data)] = (rf, jump, out.shape)
        params = 0 if id(m) in counted else sum(p.size for p in m.parameters())
        counted.add(id(m))
        rows.append({"name": c["name"], "type": type(m).__name__, "output_shape": tuple(out.shape), "params": params,
                     "macs": _macs(m, tuple(inp.shape), tuple(out.shape)), "rf": rf, "jump": jump})
    rows.append({"name": "total", "type": "", "output_shape": rows[-1]["output_shape"] if rows else (),
                 "params": sum(r["params"] for r in rows), "macs": sum(r["macs"] for r in rows),
                 "rf": rows[-1]["rf"] if rows else 1, "jump": rows[-1]["jump"] if rows else 1})
    if print_table:
        print(format_summary(rows))
    return rows


def format_summary(rows: List[dict]) -> str:
    width = max([len(r["name"]) for r in rows] + [5])
    head = f"{'layer':<{width}}  {'type':<18} {'output shape':<20} {'params':>12} {'MACs':>15} {'RF':>5} {'jump':>5}"
    lines = [head, "-" * len(head)]
    for r in rows:
        if r["name"] == "total":
            lines.append("-" * len(head))
        shape = "x".join(str(v) for v in r["output_shape"])
        lines.append(f"{r['name']:<{width}}  {r['type']:<18} {shape:<20} {r['params']:>12,} {r['macs']:>15,} "
                     f"{r['rf']:>5} {r['jump']:>5}")
    return "\n".join(lines)
