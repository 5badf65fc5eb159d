"""matmul / linear on the packed SGEMM, every ISA path, against numpy in float64."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.ops import linear, matmul
from reference import close

ISAS = fastconv.cpu_info()["supported_isas"]


def ref_act(y, activation):
    if activation == "relu":
        return np.maximum(y, 0)
    if activation == "relu6":
        return np.clip(y, 0, 6)
    return y


@settings(max_examples=150, deadline=None)
@given(m=st.integers(1, 150), n=st.integers(1, 150), k=st.integers(1, 300), ta=st.booleans(), tb=st.booleans(),
       seed=st.integers(0, 2**31))
def test_matmul_matches_numpy_on_every_path(m, n, k, ta, tb, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if ta else (m, k), dtype=np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n), dtype=np.float32)
    a, b = (a.T if ta else a), (b.T if tb else b)  # transposed views: read in place
    ref = a.astype(np.float64) @ b.astype(np.float64)
    for isa in ISAS:
        with fastconv.use_isa(isa):
            assert close(matmul(a, b), ref), isa


@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (7, 300, 1), (300, 7, 513), (145, 1100, 257), (2, 2, 3000)])
def test_matmul_block_edges(isa, m, n, k):
    rng = np.random.default_rng(m * n * k)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    assert close(matmul(a, b), a.astype(np.float64) @ b)


# Products of 1 to 8 rows take the few-row kernels (csrc/gemm/skinny.h): dot products when B's columns
# and A's rows are contiguous (x @ weight.T), row updates when B's rows are (grad @ weight); 9 rows and
# other layouts take the packed GEMM, which up to 36 rows (6 micro-kernel rows) reads B's full slivers
# in place when B's rows are contiguous. Column and depth tails, depth beyond one 256-term block, both
# bias modes, the activations and C += A @ B, in float32 and float64.
@pytest.mark.parametrize("m", [*range(1, 10), 20, 36, 37])
@pytest.mark.parametrize("layout", ["b_columns", "b_rows", "a_strided"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_few_row_products_on_every_path(m, layout, dtype):
    from fastconv.ops._device import kernels

    rng = np.random.default_rng(m)
    for k, n in [(1, 3), (5, 1), (17, 70), (300, 33), (600, 129), (70, 1100)]:
        a = rng.standard_normal((k, m) if layout == "a_strided" else (m, k)).astype(dtype)
        a = a.T if layout == "a_strided" else a
        b = rng.standard_normal((n, k) if layout != "b_rows" else (k, n)).astype(dtype)
        b = b if layout == "b_rows" else b.T
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        for mode, bias in [(0, None), (1, rng.standard_normal(m).astype(dtype)), (2, rng.standard_normal(n).astype(dtype))]:
            for act, act_name in [(0, None), (1, "relu"), (2, "relu6")]:
                for accumulate in (False, True):
                    c0 = rng.standard_normal((m, n)).astype(dtype)
                    ref = a64 @ b64 + (c0 if accumulate else 0)
                    ref = ref + (0 if bias is None else bias[:, None] if mode == 1 else bias)
                    ref = ref_act(ref, act_name)
                    for isa in ISAS:
                        with fastconv.use_isa(isa):
                            c = c0.copy()
                            kernels(a).gemm(a, b, c, bias, mode, act, accumulate)
                            assert close(c, ref), (isa, k, n, mode, act, accumulate)


def test_matmul_strided_and_negative_views(rng):
    a = rng.standard_normal((40, 60), dtype=np.float32)[::-2, 1::3]
    b = rng.standard_normal((50, 30), dtype=np.float32)[5:25, ::-1]
    assert close(matmul(a, b), a.astype(np.float64) @ b)


def test_matmul_empty_reduction_gives_zeros():
    y = matmul(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32))
    np.testing.assert_array_equal(y, np.zeros((3, 4), np.float32))


@settings(max_examples=60, deadline=None)
@given(batch=st.lists(st.integers(1, 5), min_size=1, max_size=3), fin=st.integers(1, 80), fout=st.integers(1, 80),
       bias=st.booleans(), act=st.sampled_from([None, "relu", "relu6"]), seed=st.integers(0, 2**31))
def test_linear_matches_definition(batch, fin, fout, bias, act, seed):
    rng = np.random.default_rng(seed)
    x = 3 * rng.standard_normal(tuple(batch) + (fin,), dtype=np.float32)
    w = rng.standard_normal((fout, fin), dtype=np.float32)
    b = rng.standard_normal(fout, dtype=np.float32) if bias else None
    ref = x.astype(np.float64) @ w.T.astype(np.float64) + (0 if b is None else b)
    ref = ref_act(ref, act)
    for isa in ISAS:
        with fastconv.use_isa(isa):
            y = linear(x, w, b, activation=act)
            assert y.shape == tuple(batch) + (fout,)
            assert close(y, ref), isa


def test_linear_matches_torch():
    torch = pytest.importorskip("torch", reason="torch not installed")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((9, 33), dtype=np.float32)
    w = rng.standard_normal((17, 33), dtype=np.float32)
    b = rng.standard_normal(17, dtype=np.float32)
    ref = torch.nn.functional.linear(*(torch.from_numpy(v) for v in (x, w, b))).numpy()
    assert close(linear(x, w, b), ref)


@pytest.mark.parametrize(
    "call,exc,match",
    [
        (lambda: matmul(np.zeros((2, 3), np.float32), np.zeros((4, 2), np.float32)), ValueError, "a has 3 columns"),
        (lambda: matmul(np.zeros((2, 3)), np.zeros((3, 2), np.float32)), TypeError, "b has dtype float32 but"),
        (lambda: matmul(np.zeros((2, 3), np.int64), np.zeros((3, 2))), TypeError, "a must have dtype float32 or float64"),
        (lambda: matmul(np.zeros(3, np.float32), np.zeros((3, 2), np.float32)), ValueError, "a must be 2-D"),
        (lambda: matmul([[1.0]], np.zeros((1, 1), np.float32)), TypeError, "a must be a numpy.ndarray"),
        (lambda: linear(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32)), ValueError, "input has 3 features"),
        (lambda: linear(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), np.zeros(5, np.float32)),
         ValueError, "bias must have shape"),
        (lambda: linear(np.zeros((2, 3), np.float32), np.zeros((4, 3), np.float32), activation="tanh"),
         ValueError, "activation must be"),
        (lambda: matmul(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32), out=np.zeros((2, 2))),
         TypeError, "out has dtype float64 but the input is float32"),
    ],
)
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()
