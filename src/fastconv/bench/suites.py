"""The benchmark suites: each yields one result dict per case."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .. import _runtime
from ..ops import conv2d, matmul
from ..ops.conv import _choose_algo, _Conv, conv2d_backward
from .cases import GEMM_PEAK_CASE, LAYER_CASES, ConvCase, GemmCase
from .timing import time_alternating


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def gemm_peak(case: GemmCase = GEMM_PEAK_CASE, budget_s: float = 2.0) -> dict:
    """fastconv's SGEMM and numpy's BLAS on the same square product, timed alternately."""
    a, b = case.make_inputs()
    t = time_alternating({"fastconv": lambda: matmul(a, b), "numpy": lambda: np.matmul(a, b)},
                         budget_s=budget_s, block_s=0.3, discard=2)
    err = float(np.abs(matmul(a, b) - a.astype(np.float64) @ b.astype(np.float64)).max())
    gf = {k: case.flops() / v["median"] / 1e9 for k, v in t.items()}
    return {"case": case.name, "fastconv_s": t["fastconv"]["median"], "numpy_s": t["numpy"]["median"],
            "fastconv_gflops": gf["fastconv"], "numpy_gflops": gf["numpy"],
            "ratio_vs_numpy": gf["fastconv"] / gf["numpy"], "max_abs_err": err}


def auto_algo(case: ConvCase, x, w) -> str:
    return _choose_algo(_Conv(2, x, w, case.stride, case.padding, 1, case.groups))


def _layer_fns(case: ConvCase, direction: str, algo: str, torch):
    """The callables to time for one case and direction ("fastconv", and "torch" when given), and x, w."""
    x, w, b = case.make_inputs()
    kw = case.conv_kwargs()
    if direction == "forward":
        # Both sides allocate their output, as a caller's y = conv2d(x, w, b) does.
        fns = {"fastconv": lambda: conv2d(x, w, b, **kw, algo=algo)}
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))

            def run_torch():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw, tb, **kw)

            fns["torch"] = run_torch
        return fns, x, w
    gy = np.random.default_rng(1).standard_normal((case.n, case.c_out) + case.output_hw(), dtype=np.float32)
    fns = {"fastconv": lambda: conv2d_backward(gy, x, w, **kw)}
    if torch is not None:
        tx, tw, tgy = (torch.from_numpy(v) for v in (x, w, gy))
        pad = [case.padding] * 2

        def run_torch():
            # The kernel autograd runs for conv2d's backward: grad input, weight and bias.
            return torch.ops.aten.convolution_backward(tgy, tx, tw, [case.c_out], [case.stride] * 2, pad, [1, 1],
                                                       False, [0, 0], case.groups, [True, True, True])

        fns["torch"] = run_torch
    return fns, x, w


def _as_list(result):
    if isinstance(result, (tuple, list)):
        return [r.numpy() if hasattr(r, "numpy") else r for r in result]
    return [result.numpy() if hasattr(result, "numpy") else result]


def layer_suite(cases=LAYER_CASES, *, compare_torch: bool = True, budget_s: float = 1.0,
                algo: str = "auto", direction: str = "forward") -> Iterator[dict]:
    """Times each convolution case against PyTorch (if installed).

    ``direction='forward'``: conv2d against ``torch.nn.functional.conv2d``;
    ``'backward'``: all three gradients (``conv2d_backward``) against
    ``aten.convolution_backward``, the kernel PyTorch's autograd calls. FLOP counts
    for the backward pass are twice the forward's (data + weight gradients).
    """
    if direction not in ("forward", "backward"):
        raise ValueError(f"direction must be 'forward' or 'backward', got {direction!r}")
    torch = _torch() if compare_torch else None
    threads = _runtime.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    for case in cases:
        fns, x, w = _layer_fns(case, direction, algo, torch)
        t = time_alternating(fns, budget_s=budget_s)
        flops = case.flops() * (1 if direction == "forward" else 2)
        moved = case.bytes_moved() * (1 if direction == "forward" else 2)
        row = {"case": case.name, "direction": direction,
               "algo": (auto_algo(case, x, w) if algo == "auto" else algo) if direction == "forward" else
               ("depthwise" if case.depthwise else "gemm"),
               "flops": flops, "bytes": moved, "depthwise": case.depthwise,
               "fastconv_s": t["fastconv"]["median"], "fastconv_p25": t["fastconv"]["p25"],
               "fastconv_p75": t["fastconv"]["p75"], "runs": t["fastconv"]["runs"]}
        row["gflops"] = flops / row["fastconv_s"] / 1e9
        row["gbps"] = moved / row["fastconv_s"] / 1e9
        if "torch" in fns:
            got = _as_list(fns["fastconv"]())
            ref = _as_list(fns["torch"]())
            row["torch_s"] = t["torch"]["median"]
            row["ratio_vs_torch"] = row["torch_s"] / row["fastconv_s"]
            row["max_abs_err"] = max(float(np.abs(g - r).max()) for g, r in zip(got, ref))
        yield row
