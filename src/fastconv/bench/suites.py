"""The benchmark suites: each yields one result dict per case."""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np

from .. import _runtime
from ..ops import conv2d, matmul
from ..ops.conv import _choose_algo, _Conv
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


def layer_suite(cases=LAYER_CASES, *, compare_torch: bool = True, budget_s: float = 1.0,
                algo: str = "auto") -> Iterator[dict]:
    """Times each convolution case against torch.nn.functional.conv2d (if installed)."""
    torch = _torch() if compare_torch else None
    threads = _runtime.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    for case in cases:
        x, w, b = case.make_inputs()
        kw = case.conv_kwargs()
        # Both sides allocate their output, as a caller's y = conv2d(x, w, b) does.
        fns = {"fastconv": lambda: conv2d(x, w, b, **kw, algo=algo)}
        ref: Optional[np.ndarray] = None
        if torch is not None:
            tx, tw, tb = (torch.from_numpy(v) for v in (x, w, b))

            def run_torch():
                with torch.no_grad():
                    return torch.nn.functional.conv2d(tx, tw, tb, **kw)

            fns["torch"] = run_torch
            ref = run_torch().numpy()
        t = time_alternating(fns, budget_s=budget_s)
        got = conv2d(x, w, b, **kw, algo=algo)
        row = {"case": case.name, "algo": auto_algo(case, x, w) if algo == "auto" else algo,
               "flops": case.flops(), "bytes": case.bytes_moved(), "depthwise": case.depthwise,
               "fastconv_s": t["fastconv"]["median"], "fastconv_p25": t["fastconv"]["p25"],
               "fastconv_p75": t["fastconv"]["p75"], "runs": t["fastconv"]["runs"]}
        row["gflops"] = case.flops() / row["fastconv_s"] / 1e9
        row["gbps"] = case.bytes_moved() / row["fastconv_s"] / 1e9
        if ref is not None:
            row["torch_s"] = t["torch"]["median"]
            row["ratio_vs_torch"] = row["torch_s"] / row["fastconv_s"]
            row["max_abs_err"] = float(np.abs(got - ref).max())
        yield row
