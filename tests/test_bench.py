"""The benchmark harness measures what it claims (tiny cases, no timing asserted)."""

from fastconv.bench.cases import LAYER_CASES, ConvCase, GemmCase
from fastconv.bench.suites import gemm_peak, layer_suite
from fastconv.bench.timing import time_alternating


def test_case_flops_follow_the_formula():
    stem = LAYER_CASES[0]
    assert stem.output_hw() == (112, 112)
    assert stem.flops() == 2 * 64 * 112 * 112 * 3 * 7 * 7
    dw = ConvCase("dw", 1, 8, 8, 10, 3, padding=1, groups=8)
    assert dw.depthwise and dw.flops() == 2 * 8 * 10 * 10 * 9


def test_time_alternating_counts_blocks_and_orders_quantiles():
    calls = {"a": 0, "b": 0}

    def bump(k):
        calls[k] += 1

    t = time_alternating({"a": lambda: bump("a"), "b": lambda: bump("b")}, budget_s=0.0, min_rounds=3)
    for k in ("a", "b"):
        assert t[k]["runs"] >= 6 and calls[k] > t[k]["runs"]  # warm-up and discarded calls not counted
        assert t[k]["p25"] <= t[k]["median"] <= t[k]["p75"]


def test_layer_suite_reports_correct_answers():
    case = ConvCase("tiny", 2, 4, 6, 9, 3, padding=1)
    (row,) = layer_suite([case], budget_s=0.0)
    assert row["case"] == "tiny" and row["algo"] == "direct"
    assert row["gflops"] > 0
    if "max_abs_err" in row:
        assert row["max_abs_err"] < 1e-4


def test_gemm_peak_is_accurate():
    row = gemm_peak(GemmCase("small", 64, 64, 64), budget_s=0.0)
    assert row["max_abs_err"] < 1e-3 and row["fastconv_gflops"] > 0 and row["numpy_gflops"] > 0
