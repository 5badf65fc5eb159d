"""``fastconv-bench``: the layer suite against PyTorch and the machine's own SGEMM peak."""

from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from .. import _runtime
from .cases import LAYER_CASES
from .suites import gemm_peak, layer_suite

SUITES = ("all", "gemm", "layers")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastconv-bench", description=__doc__)
    p.add_argument("--suite", choices=SUITES, default="all", help="what to run (default: all)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="budget", action="store_const", const=0.6,
                      help="about 1 s of timing per case (the default)")
    mode.add_argument("--full", dest="budget", action="store_const", const=3.0,
                      help="about 3 s of timing per case")
    p.set_defaults(budget=0.6)
    p.add_argument("--threads", type=int, default=None, help="threads for fastconv and PyTorch (default: cores)")
    p.add_argument("--compare", choices=("torch", "none"), default="torch",
                   help="time PyTorch too when it is installed (default: torch)")
    p.add_argument("--cases", default="", help="only the layer cases whose name contains this text")
    return p


def _fmt_row(r: dict, peak: float) -> str:
    is_mem = r["depthwise"]
    rate = f"{r['gbps']:6.1f} GB/s" if is_mem else f"{r['gflops']:6.1f} GF/s"
    pct = "" if is_mem else f"{100 * r['gflops'] / peak:5.1f}%"
    spread = 100 * (r["fastconv_p75"] - r["fastconv_p25"]) / r["fastconv_s"]
    torch_part = ""
    if "torch_s" in r:
        torch_part = f"{r['torch_s'] * 1e3:9.3f} {r['ratio_vs_torch']:6.2f}x {r['max_abs_err']:8.1e}"
    return (f"{r['case']:<30} {r['algo']:<9} {r['fastconv_s'] * 1e3:9.3f} {spread:5.1f}% {rate:>12} {pct:>6}  "
            f"{torch_part}")


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            _parser().error("--threads must be >= 1")
        _runtime.set_num_threads(args.threads)
    info = _runtime.cpu_info()
    print(f"fastconv-bench: {info['cpu']} | ISA {info['isa']} (detected {info['detected_isa']}) | "
          f"{info['cores']} cores | {info['threads']} threads", flush=True)
    compare = args.compare == "torch"
    if compare:
        try:
            import torch

            print(f"comparing against torch {torch.__version__} with {info['threads']} threads", flush=True)
        except ImportError:
            print("torch is not installed: fastconv figures only", flush=True)
            compare = False
    try:
        # Every suite measures the SGEMM peak: the layer suite reports against it.
        g = gemm_peak(budget_s=max(1.0, 2 * args.budget))
        peak = max(g["fastconv_gflops"], g["numpy_gflops"])
        print(f"\nSGEMM 2048^3: fastconv {g['fastconv_gflops']:.1f} GFLOP/s, numpy BLAS {g['numpy_gflops']:.1f} "
              f"GFLOP/s ({100 * g['ratio_vs_numpy']:.0f}% of numpy); peak used below = {peak:.1f} GFLOP/s",
              flush=True)
        if args.suite in ("all", "layers"):
            cases = [c for c in LAYER_CASES if args.cases in c.name]
            for direction in ("forward", "backward"):
                print(f"\n{direction + ' (batch 1 unless noted)':<30} {'algo':<9} {'ms':>9} {'IQR':>6} {'rate':>12} "
                      f"{'%peak':>6}  " + (f"{'torch ms':>9} {'ratio':>7} {'max err':>8}" if compare else ""),
                      flush=True)
                for r in layer_suite(cases, compare_torch=compare, budget_s=args.budget, direction=direction):
                    print(_fmt_row(r, peak), flush=True)
            print("\nratio = PyTorch time / fastconv time (> 1: fastconv faster); %peak = fraction of the SGEMM peak above;"
                  "\nmemory-bound depthwise layers report GB/s of compulsory traffic; backward = grad input + weight + bias"
                  "\n(against aten.convolution_backward), counted as twice the forward's FLOPs and bytes.")
    except KeyboardInterrupt:
        print("\ninterrupted: results above are complete cases", file=sys.stderr)
        return 130
    return 0
