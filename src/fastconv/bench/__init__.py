"""fastconv's benchmark suite: ``fastconv-bench`` / ``python -m fastconv.bench``.

The case definitions (:mod:`fastconv.bench.cases`) are shared with the
pytest-benchmark suite in ``benchmarks/``.
"""

from .cases import GEMM_CASES, GEMM_PEAK_CASE, LAYER_CASES, OPS_CASES, SUITES, Case, ConvCase, GemmCase, select
from .runner import measure_limits, run_case

__all__ = ["GEMM_CASES", "GEMM_PEAK_CASE", "LAYER_CASES", "OPS_CASES", "SUITES", "Case", "ConvCase", "GemmCase",
           "measure_limits", "run_case", "select"]
