"""fastconv's benchmark suite: ``fastconv-bench`` / ``python -m fastconv.bench``."""

from .cases import GEMM_PEAK_CASE, LAYER_CASES, ConvCase, GemmCase
from .suites import gemm_peak, layer_suite

__all__ = ["GEMM_PEAK_CASE", "LAYER_CASES", "ConvCase", "GemmCase", "gemm_peak", "layer_suite"]
