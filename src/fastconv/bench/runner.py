"""Running the benchmark: the machine's limits and one result row per case, on the CPU or the GPU."""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
from typing import Optional

import numpy as np

from .. import __version__, _core, _runtime
from ..ops import matmul
from .cases import GEMM_PEAK_CASE, GPU_PEAK_CASE, Case, GemmCase, Place, arrays
from .._timing import time_alternating

# Allowed error: max |got - ref| <= TOLERANCE * (1 + max |ref|), per output (float32 results
# against float64 references; the test suite's contract).
TOLERANCE = 1e-4

COPY_BYTES = 64 << 20  # the copy-bandwidth probe's buffer: far beyond any last-level cache
GPU_COPY_BYTES = 1 << 30  # the GPU's: far beyond any L2 cache


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


def gpu_info() -> dict:
    """The GPU the run uses: name, compute capability, memory, and the CUDA software versions
    (``torch_cuda`` and ``cudnn``: those of an installed PyTorch with CUDA, else None)."""
    from numba import cuda

    dev = cuda.get_current_device()
    sim = _simulated()
    if sim:  # the simulator's device has no name, driver or memory figures
        name, total, driver = "Numba CUDA simulator", None, None
    else:
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        total = cuda.current_context().get_memory_info()[1]
        driver = ".".join(map(str, cuda.cudadrv.driver.driver.get_version()))
    out = {"name": name, "compute_capability": ".".join(map(str, dev.compute_capability)),
           "memory_gib": None if total is None else round(total / 2 ** 30, 1), "driver": driver,
           "numba_cuda": _installed_version("numba-cuda"), "simulator": sim,
           "torch_cuda": None, "cudnn": None}
    torch = import_torch()
    if torch is not None and torch.cuda.is_available():
        out["torch_cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version()
    return out


def _simulated() -> bool:
    from .. import cuda

    return cuda.is_simulator()


def machine(torch=None, device: str = "cpu") -> dict:
    """What the report records about the machine and the software (``gpu``: :func:`gpu_info`
    for a GPU run, else None)."""
    info = _runtime.cpu_info()
    return {"cpu": info["cpu"], "isa": info["isa"], "detected_isa": info["detected_isa"], "cores": info["cores"],
            "threads": info["threads"], "fastconv": __version__, "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else _installed_version("torch"), "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "gpu": gpu_info() if device == "cuda" else None}


def gpu_sync() -> None:
    """Waits for all work on the GPU: fastconv's kernels and PyTorch's alike (one CUDA context)."""
    from numba import cuda

    cuda.synchronize()


def torch_for_gpu(torch):
    """Sets PyTorch up as the GPU reference: full fp32 (TF32 off in cuDNN and cuBLAS) and cuDNN's
    autotuner on, so each convolution runs cuDNN's fastest algorithm. Returns torch, or None when
    it cannot run on the GPU (a CPU build)."""
    if torch is None or not torch.cuda.is_available():
        return None
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    return torch


def gemm_peak(case: GemmCase = GEMM_PEAK_CASE, budget_s: float = 2.0, *, device: str = "cpu", torch=None) -> dict:
    """fastconv's SGEMM against the same square product in numpy's BLAS (CPU) or in cuBLAS
    through PyTorch (GPU, fp32 with TF32 off; when torch has CUDA), timed alternately; the
    peak is the better of the two."""
    a, b = case.make_inputs()
    (da, db) = Place(device).put(a, b)
    fns = {"fastconv": lambda: matmul(da, db)}
    if device == "cpu":
        fns["numpy"] = lambda: np.matmul(a, b)
    elif torch is not None:
        ta, tb = Place(device).tensors(torch, a, b)
        fns["cublas"] = lambda: torch.mm(ta, tb)
    t = time_alternating(fns, budget_s=budget_s, block_s=0.3, discard=2, sync=_sync(device))
    (got,) = arrays(matmul(da, db))
    err = float(np.abs(got - a.astype(np.float64) @ b.astype(np.float64)).max())
    gf = {k: case.flops() / v["median"] / 1e9 for k, v in t.items()}
    return {"case": case.name, "fastconv_gflops": gf["fastconv"], "numpy_gflops": gf.get("numpy"),
            "cublas_gflops": gf.get("cublas"), "peak_gflops": max(gf.values()), "fastconv_max_abs_err": err}


def _copy_fn(nbytes: int, device: str):
    """(a copy of about ``nbytes`` bytes, the bytes it really copies): fastconv's parallel memcpy
    on the CPU, a device-to-device cudaMemcpy on the GPU."""
    src = np.ones(max(16, nbytes // 4), np.float32)
    if device == "cpu":
        dst = np.empty_like(src)
        return (lambda: _core.parallel_copy(src, dst)), src.nbytes
    from numba import cuda

    dsrc = cuda.to_device(src)
    ddst = cuda.device_array_like(dsrc)
    return (lambda: ddst.copy_to_device(dsrc)), src.nbytes


def copy_bandwidth(nbytes: int = COPY_BYTES, budget_s: float = 0.5, *, device: str = "cpu") -> float:
    """GB/s (bytes read + bytes written) of a copy of ``nbytes``: a parallel memcpy on fastconv's
    threads, or a device-to-device copy on the GPU."""
    fn, n = _copy_fn(nbytes, device)
    t = time_alternating({"copy": fn}, budget_s=budget_s, sync=_sync(device))
    return 2 * n / t["copy"]["median"] / 1e9


def measure_limits(budget_s: float = 1.0, peak_case: Optional[GemmCase] = None, copy_bytes: Optional[int] = None, *,
                   device: str = "cpu", torch=None) -> dict:
    """The machine's (or with ``device='cuda'`` the GPU's) limits, measured now: the SGEMM peak
    and the bandwidth of a copy far beyond the caches. (Each memory-bound case is also rated
    against a copy of its own size, timed alongside it: see :func:`run_case`.)"""
    gpu = device == "cuda"
    peak_case = peak_case or (GPU_PEAK_CASE if gpu else GEMM_PEAK_CASE)
    copy_bytes = copy_bytes or (GPU_COPY_BYTES if gpu else COPY_BYTES)
    g = gemm_peak(peak_case, budget_s=max(1.0, 2 * budget_s), device=device, torch=torch)
    g["copy_gbps"] = copy_bandwidth(copy_bytes, budget_s=max(0.3, budget_s / 2), device=device)
    g["copy_bytes"] = copy_bytes
    return g


def _sync(device: str):
    return gpu_sync if device == "cuda" else None


def _max_err(got, ref) -> Optional[float]:
    """Max |got - ref| over all outputs, or None if the outputs do not even match in shape."""
    if len(got) != len(ref) or any(np.shape(g) != np.shape(r) for g, r in zip(got, ref)):
        return None
    return max((float(np.max(np.abs(np.asarray(g, np.float64) - r))) if np.size(r) else 0.0)
               for g, r in zip(got, ref))


def _allowed(ref) -> float:
    return TOLERANCE * (1 + max(float(np.max(np.abs(r))) if np.size(r) else 0.0 for r in ref))


def _reference(case: Case, p, torch, device: str) -> list:
    """The float64 answer: the case's numpy definition, or on the GPU (with PyTorch there) the
    case's PyTorch call on float64 copies of the inputs, on the same device."""
    if device == "cpu" or torch is None:
        return p.reference()
    p64 = case.prepare(torch, Place(device, torch_float64=True))
    return [np.asarray(a, np.float64) for a in p64.pick_torch((p64.check_torch or p64.torch)())]


def run_case(case: Case, limits: dict, *, torch=None, budget_s: float = 0.5, device: str = "cpu") -> dict:
    """Times one case (alternating with PyTorch when ``torch`` is given) and checks its answer.
    With ``device='cuda'`` the inputs live on the GPU (PyTorch's on its CUDA device) and each
    timing sample is a block of calls closed by a device synchronisation.

    Returns the report's row for it (keys documented in the README's benchmark section).
    """
    p = case.prepare(torch, Place(device))
    fns = {"fastconv": p.fastconv}
    if p.torch is not None:
        fns["torch"] = p.torch
    if case.bound == "memory":
        # The limit of a memory-bound case: a copy of as many bytes as the case moves (read +
        # written), timed in the same alternation, so the same cache level and the same
        # moment's machine load apply to both.
        fns["copy"], copied = _copy_fn(case.bytes_moved() // 2, device)
    t = time_alternating(fns, budget_s=budget_s, sync=_sync(device))
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
        row["limit_gbps"] = 2 * copied / t["copy"]["median"] / 1e9
        row["fraction_of_limit"] = row["gbps"] / row["limit_gbps"]
    expect = _reference(case, p, torch, device)
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

