"""pytest-benchmark suite over the same cases as ``fastconv-bench`` (fastconv.bench.cases):

    pytest benchmarks/ --benchmark-only

Every case of every suite (the --full set), fastconv and PyTorch side by side in one
benchmark group per case. fastconv-bench adds what this cannot: block-alternated
timing, the machine's limits and the answer checks.
"""

import pytest

from fastconv.bench.cases import SUITES

try:
    import torch
except ImportError:
    torch = None

CASES = [c for cases in SUITES.values() for c in cases]
IDS = [f"{c.suite}: {c.label}" for c in CASES]


def _annotate(benchmark, case):
    benchmark.group = f"{case.suite}: {case.label}"
    benchmark.extra_info.update(bound=case.bound, gflop=case.flops() / 1e9, mbytes=case.bytes_moved() / 1e6)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fastconv(benchmark, case):
    if case.needs_torch and torch is None:
        pytest.skip("a fastconv.torch case (converted PyTorch model): torch not installed")
    p = case.prepare(torch if case.needs_torch else None)
    _annotate(benchmark, case)
    benchmark(p.fastconv)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_torch(benchmark, case):
    torch.set_num_threads(__import__("fastconv").get_num_threads())
    p = case.prepare(torch)
    _annotate(benchmark, case)
    benchmark(p.torch)
