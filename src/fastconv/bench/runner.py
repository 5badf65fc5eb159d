"""Running the benchmark: the machine's limits and one result row per case."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from typing import Optional

import numpy as np

from .. import __version__, _core, _runtime
from ..ops import matmul
from .cases import GEMM_PEAK_CASE, Case, GemmCase
from .._timing import time_alternating

# Allowed error: max |got - ref| <= TOLERANCE * (1 + max |ref|), per output (float32 results
# against float64 references; the test suite's contract).
TOLERANCE = 1e-4

COPY_BYTES = 64 << 20  # the copy-bandwidth probe's buffer: far beyond any last-level cache


def import_torch():
    """PyTorch, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def _installed_version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine(torch=None) -> dict:
    """What the report records about the machine and the software."""
    info = _runtime.cpu_info()
    return {"cpu": info["cpu"], "isa": info["isa"], "detected_isa": info["detected_isa"], "cores": info["cores"],
            "threads": info["threads"], "fastconv": __version__, "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else _installed_version("torch"), "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def gemm_peak(case: GemmCase = GEMM_PEAK_CASE, budget_s: float = 2.0) -> dict:
    """fastconv's SGEMM and numpy's BLAS on the same square product, timed alternately;
    the peak is the better of the two."""
    a, b = case.make_inputs()
    t = time_alternating({"fastconv": lambda: matmul(a, b), "numpy": lambda: np.matmul(a, b)},
                         budget_s=budget_s, block_s=0.3, discard=2)
    err = float(np.abs(matmul(a, b) - a.astype(np.float64) @ b.astype(np.float64)).max())
    gf = {k: case.flops() / v["median"] / 1e9 for k, v in t.items()}
    return {"case": case.name, "fastconv_gflops": gf["fastconv"], "numpy_gflops": gf["numpy"],
            "peak_gflops": max(gf.values()), "fastconv_max_abs_err": err}


def copy_bandwidth(nbytes: int = COPY_BYTES, budget_s: float = 0.5) -> float:
    """GB/s of a parallel memcpy of ``nbytes`` on fastconv's threads (bytes read + bytes written)."""
    src = np.ones(max(16, nbytes // 4), np.float32)
    dst = np.empty_like(src)
    t = time_alternating({"copy": lambda: _core.parallel_copy(src, dst)}, budget_s=budget_s)
    return 2 * src.nbytes / t["copy"]["median"] / 1e9


def measure_limits(budget_s: float = 1.0, peak_case: GemmCase = GEMM_PEAK_CASE, copy_bytes: int = COPY_BYTES) -> dict:
    """This machine's limits, measured now: the SGEMM peak and the bandwidth of a copy far
    beyond the caches. (Each memory-bound case is also rated against a copy of its own
    size, timed alongside it: see :func:`run_case`.)"""
    g = gemm_peak(peak_case, budget_s=max(1.0, 2 * budget_s))
    g["copy_gbps"] = copy_bandwidth(copy_bytes, budget_s=max(0.3, budget_s / 2))
    return g


def _max_err(got, ref) -> Optional[float]:
    """Max |got - ref| over all outputs, or None if the outputs do not even match in shape."""
    if len(got) != len(ref) or any(np.shape(g) != np.shape(r) for g, r in zip(got, ref)):
        return None
    return max((float(np.max(np.abs(np.asarray(g, np.float64) - r))) if np.size(r) else 0.0)
               for g, r in zip(got, ref))


def _allowed(ref) -> float:
    return TOLERANCE * (1 + max(float(np.max(np.abs(r))) if np.size(r) else 0.0 for r in ref))


def run_case(case: Case, limits: dict, *, torch=None, budget_s: float = 0.5) -> dict:
    """Times one case (alternating with PyTorch when ``torch`` is given) and checks its answer.

    Returns the report's row for it (keys documented in the README's benchmark section).
    """
    p = case.prepare(torch)
    fns = {"fastconv": p.fastconv}
    if p.torch is not None:
        fns["torch"] = p.torch
    if case.bound == "memory":
        # The limit of a memory-bound case: a parallel copy of as many bytes as the case moves
        # (read + written), timed in the same alternation, so the same cache level and the
        # same moment's machine load apply to both.
        src = np.ones(max(16, case.bytes_moved() // 8), np.float32)
        dst = np.empty_like(src)
        fns["copy"] = lambda: _core.parallel_copy(src, dst)
    t = time_alternating(fns, budget_s=budget_s)
    f = t["fastconv"]
    row = {"suite": case.suite, "case": case.label, "name": case.name, "direction": case.direction,
           "algo": p.algo, "bound": case.bound, "flops": case.flops(), "bytes": case.bytes_moved(),
           "fastconv_median_s": f["median"], "fastconv_p25_s": f["p25"], "fastconv_p75_s": f["p75"],
           "fastconv_runs": f["runs"], "spread": (f["p75"] - f["p25"]) / f["median"]}
    row["gflops"] = row["flops"] / f["median"] / 1e9 if row["flops"] else None
    row["gbps"] = row["bytes"] / f["median"] / 1e9
    row.update(limit_gflops=None, limit_gbps=None)
    if case.bound == "compute":
        row["limit"], row["limit_gflops"] = "gemm_peak", limits["peak_gflops"]
        row["fraction_of_limit"] = row["gflops"] / limits["peak_gflops"]
    else:
        row["limit"] = "copy_bandwidth"
        row["limit_gbps"] = 2 * src.nbytes / t["copy"]["median"] / 1e9
        row["fraction_of_limit"] = row["gbps"] / row["limit_gbps"]
    expect = p.reference()
    row["tolerance"] = _allowed(expect)
    row["max_abs_err"] = _max_err(p.pick_fastconv((p.check_fastconv or p.fastconv)()), expect)
    row["correct"] = row["max_abs_err"] is not None and row["max_abs_err"] <= row["tolerance"]
    row.update(torch_median_s=None, torch_p25_s=None, torch_p75_s=None, torch_runs=None, ratio_vs_torch=None,
               torch_max_abs_err=None)
    if "torch" in t:
        tt = t["torch"]
        row.update(torch_median_s=tt["median"], torch_p25_s=tt["p25"], torch_p75_s=tt["p75"], torch_runs=tt["runs"],
                   ratio_vs_torch=tt["median"] / f["median"],
                   torch_max_abs_err=_max_err(p.pick_torch((p.check_torch or p.torch)()), expect))
    return row


def set_threads(n: Optional[int], torch=None) -> int:
    """Gives fastconv and PyTorch the same thread count (default: fastconv's, i.e. the cores)."""
    if n is not None:
        _runtime.set_num_threads(n)
    threads = _runtime.get_num_threads()
    if torch is not None:
        torch.set_num_threads(threads)
    return threads

