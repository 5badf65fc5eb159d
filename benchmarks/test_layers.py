"""pytest-benchmark suite over the same cases as ``fastconv-bench``:

    pytest benchmarks/ --benchmark-only
"""

import numpy as np
import pytest

from fastconv.bench.cases import GEMM_PEAK_CASE, LAYER_CASES
from fastconv.ops import conv2d, matmul

try:
    import torch
except ImportError:
    torch = None


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c.name for c in LAYER_CASES])
def test_fastconv_conv2d(benchmark, case):
    x, w, b = case.make_inputs()
    y = np.empty((case.n, case.c_out) + case.output_hw(), np.float32)
    benchmark.group = case.name
    benchmark.extra_info["gflop"] = case.flops() / 1e9
    benchmark(conv2d, x, w, b, out=y, **case.conv_kwargs())


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("case", LAYER_CASES, ids=[c.name for c in LAYER_CASES])
def test_torch_conv2d(benchmark, case):
    x, w, b = (torch.from_numpy(v) for v in case.make_inputs())
    benchmark.group = case.name
    benchmark.extra_info["gflop"] = case.flops() / 1e9
    with torch.no_grad():
        benchmark(torch.nn.functional.conv2d, x, w, b, **case.conv_kwargs())


def test_fastconv_sgemm(benchmark):
    a, b = GEMM_PEAK_CASE.make_inputs()
    out = np.empty((GEMM_PEAK_CASE.m, GEMM_PEAK_CASE.n), np.float32)
    benchmark.group = GEMM_PEAK_CASE.name
    benchmark(matmul, a, b, out=out)


def test_numpy_sgemm(benchmark):
    a, b = GEMM_PEAK_CASE.make_inputs()
    benchmark.group = GEMM_PEAK_CASE.name
    benchmark(np.matmul, a, b)
