"""Pooling forward and backward against a by-definition numpy reference and PyTorch."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import ops
from reference import avg_pool_backward, close, max_pool_backward_at, numerical_grad, pool

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional: the numpy reference always runs
    torch = None

ISAS = fastconv.cpu_info()["supported_isas"]
MAX_POOL = {1: ops.max_pool1d, 2: ops.max_pool2d, 3: ops.max_pool3d}
MAX_POOL_BWD = {1: ops.max_pool1d_backward, 2: ops.max_pool2d_backward, 3: ops.max_pool3d_backward}
AVG_POOL = {1: ops.avg_pool1d, 2: ops.avg_pool2d, 3: ops.avg_pool3d}
AVG_POOL_BWD = {1: ops.avg_pool1d_backward, 2: ops.avg_pool2d_backward, 3: ops.avg_pool3d_backward}


@st.composite
def pool_cases(draw):
    nd = draw(st.sampled_from([1, 2, 2, 3]))
    mode = draw(st.sampled_from(["max", "avg"]))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd)) if mode == "max" else (1,) * nd
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    limit = {1: 30, 2: 14, 3: 7}[nd]
    sizes = tuple(draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), limit))
                  for k, d, p in zip(kernel, dilation, padding))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 4))
    return dict(nd=nd, mode=mode, shape=(n, c) + sizes, kernel=kernel, stride=stride, padding=padding,
                dilation=dilation, ceil_mode=draw(st.booleans()), count_include_pad=draw(st.booleans()),
                divisor_override=draw(st.sampled_from([None, None, 3])) if nd > 1 else None,
                dtype=draw(st.sampled_from([np.float32, np.float64])), seed=draw(st.integers(0, 2**31)))


def run(case, x):
    if case["mode"] == "max":
        return MAX_POOL[case["nd"]](x, case["kernel"], case["stride"], case["padding"], case["dilation"],
                                    case["ceil_mode"], return_indices=True)
    kw = dict(ceil_mode=case["ceil_mode"], count_include_pad=case["count_include_pad"])
    if case["nd"] > 1:
        kw["divisor_override"] = case["divisor_override"]
    return AVG_POOL[case["nd"]](x, case["kernel"], case["stride"], case["padding"], **kw), None


def run_backward(case, g, idx, shape):
    if case["mode"] == "max":
        return MAX_POOL_BWD[case["nd"]](g, idx, shape)
    kw = dict(ceil_mode=case["ceil_mode"], count_include_pad=case["count_include_pad"])
    if case["nd"] > 1:
        kw["divisor_override"] = case["divisor_override"]
    return AVG_POOL_BWD[case["nd"]](g, shape, case["kernel"], case["stride"], case["padding"], **kw)


def torch_pool(case, x):
    tx = torch.from_numpy(x).double().requires_grad_()
    nd = case["nd"]
    if case["mode"] == "max":
        fn = getattr(F, f"max_pool{nd}d")
        y, idx = fn(tx, case["kernel"], case["stride"], case["padding"], case["dilation"], case["ceil_mode"],
                    return_indices=True)
    else:
        fn = getattr(F, f"avg_pool{nd}d")
        kw = dict(ceil_mode=case["ceil_mode"], count_include_pad=case["count_include_pad"])
        if nd > 1:
            kw["divisor_override"] = case["divisor_override"]
        y, idx = fn(tx, case["kernel"], case["stride"], case["padding"], **kw), None
    return tx, y, idx


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pool_cases())
def test_pooling_matches_the_references_on_every_path(case):
    rng = np.random.default_rng(case["seed"])
    # Few distinct values, so ties (where the first maximum must win) are common.
    x = rng.integers(-4, 5, case["shape"]).astype(case["dtype"])
    ref_y, ref_idx = pool(x, case["mode"], case["kernel"], case["stride"], case["padding"], case["dilation"],
                          case["ceil_mode"], case["count_include_pad"], case["divisor_override"])
    g = rng.standard_normal(ref_y.shape).astype(case["dtype"])
    ref_gx = None
    if torch is not None:
        try:
            tx, ty, tidx = torch_pool(case, x)
        except RuntimeError:  # torch refuses a few padded windows larger than the input that fastconv pools
            torch_ok = False
        else:
            torch_ok = True
    if torch is not None and torch_ok and (ref_idx is None or (ref_idx >= 0).all()):
        assert close(ty.detach().numpy(), ref_y, 1e-12)
        ty.backward(torch.from_numpy(g).double())
        ref_gx = tx.grad.numpy()
        if tidx is not None and (ref_idx >= 0).all():  # torch's index for an empty window is arbitrary
            assert np.array_equal(tidx.numpy(), ref_idx)
    for isa in ISAS:
        with fastconv.use_isa(isa):
            y, idx = run(case, x)
            assert y.dtype == case["dtype"] and close(y, ref_y), (isa, case)
            if idx is not None:
                assert np.array_equal(idx, ref_idx), (isa, case)
            gx = run_backward(case, g, idx, x.shape)
            assert gx.shape == x.shape and gx.dtype == case["dtype"]
            if ref_gx is not None:
                assert close(gx, ref_gx), (isa, case)


def test_max_pool_without_indices_and_nan(isa, rng):
    x = rng.standard_normal((2, 3, 9, 10)).astype(np.float32)
    x[0, 1, 4, 4] = np.nan
    y = ops.max_pool2d(x, 3, 2, 1)
    y2, idx = ops.max_pool2d(x, 3, 2, 1, return_indices=True)
    assert np.array_equal(y, y2, equal_nan=True)
    assert np.isnan(y[0, 1, 2, 2]) and np.isnan(y).sum() == 1  # only window (2, 2) covers (4, 4)
    ref, _ = pool(x, "max", (3, 3), (2, 2), (1, 1), (1, 1), False)
    assert np.array_equal(np.isnan(y), np.isnan(ref))
    assert close(np.nan_to_num(y), np.nan_to_num(ref))


# grad_x of 16 MiB or more, planes of at most 256 KiB: built in scratch and streamed out
# (2-D row by row, so that an index before its window lands behind the rows written).
@pytest.mark.parametrize("shape,kernel,stride,padding,dtype", [
    ((2, 34, 253, 251), 3, 2, 1, np.float32),
    ((2, 34, 253, 251), 2, 2, 0, np.float32),
    ((7, 19, 127, 125), 3, 1, 1, np.float64),
    ((2, 66, 9, 61, 59), 3, 2, 1, np.float32),
])
def test_max_pool_backward_of_a_large_gradient(isa, shape, kernel, stride, padding, dtype, restore_threads):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(dtype)
    nd = len(shape) - 2
    y, idx = MAX_POOL[nd](x, kernel, stride, padding, return_indices=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    idx = idx.copy()
    flat = idx.reshape(-1)
    picks = rng.choice(flat.size, 2000, replace=False)
    flat[picks[:500]] = 0  # before its window: a row already written
    flat[picks[500:1000]] = -1  # no tap inside the input: contributes nothing
    flat[picks[1000:]] = rng.integers(0, int(np.prod(shape[2:])), 1000)  # anywhere in the plane
    ref = max_pool_backward_at(g, idx, shape)
    for threads in (1, 2):
        fastconv.set_num_threads(threads)
        gx = MAX_POOL_BWD[nd](g, idx, shape)
        assert gx.dtype == dtype and close(gx, ref), threads
    flat[picks[0]] = int(np.prod(shape[2:]))
    with pytest.raises(ValueError, match="outside its input plane"):
        MAX_POOL_BWD[nd](g, idx, shape)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(1, 70), kernel=st.integers(1, 4), dilation=st.integers(1, 2), ceil_mode=st.booleans(),
       data=st.data())
def test_pooling_with_stride_2_along_rows(width, kernel, dilation, ceil_mode, data):
    # float32 max pooling without indices and average pooling, with stride 2 along W, run a vector row
    # kernel (a load pair and a deinterleave per tap, or per two taps without dilation), after folding
    # a window's rows into one when a row takes two pairs or more; max pooling with indices (AVX-512)
    # keeps each vector's maximum and its position over the taps: rows of any width, on both sides of
    # the vector lengths, windows 1 to 3 rows tall; for max, NaN and -inf included (the index of the
    # first maximum, of the last NaN, of the first tap where a window holds only -inf).
    rows = data.draw(st.integers(1, 3))
    padding = data.draw(st.integers(0, kernel // 2))
    row_padding = data.draw(st.integers(0, rows // 2))
    if dilation * (kernel - 1) + 1 > width + 2 * padding:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.integers(-4, 5, (2, 3, 5, width)).astype(np.float32)
    special = x.copy()
    special[rng.random(x.shape) < 0.02] = np.nan
    special[rng.random(x.shape) < 0.02] = -np.inf
    args = ((rows, kernel), (1, 2), (row_padding, padding), (1, dilation), ceil_mode)
    ref, ref_idx = pool(special, "max", *args)
    include_pad, divisor = data.draw(st.booleans()), data.draw(st.sampled_from([None, 3]))
    avg_args = ((rows, kernel), (1, 2), (row_padding, padding), ceil_mode, include_pad, divisor)
    ref_avg, _ = pool(x, "avg", *avg_args[:3], (1, 1), *avg_args[3:])
    for isa in ISAS:
        with fastconv.use_isa(isa):
            y = ops.max_pool2d(special, *args)
            y_indexed, idx = ops.max_pool2d(special, *args, return_indices=True)
            y_avg = ops.avg_pool2d(x, *avg_args)
        assert np.array_equal(y, ref, equal_nan=True), isa
        assert np.array_equal(y, y_indexed, equal_nan=True), isa
        assert np.array_equal(idx, ref_idx), isa
        assert close(y_avg, ref_avg), isa
    if torch is not None:
        # A window wholly in the padding has no maximum to point at: fastconv and the reference give
        # -1, PyTorch a position outside the window. Everywhere else the indices agree.
        _, torch_idx = F.max_pool2d(torch.from_numpy(special), *args, return_indices=True)
        inside = ref_idx >= 0
        assert np.array_equal(torch_idx.numpy()[inside], ref_idx[inside])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(width=st.integers(1, 70), kernel=st.integers(1, 4), stride=st.integers(1, 3), rows=st.integers(1, 3),
       row_stride=st.integers(1, 3), ceil_mode=st.booleans(), include_pad=st.booleans(),
       divisor=st.sampled_from([None, 3]), dtype=st.sampled_from([np.float32, np.float64]), data=st.data())
def test_avg_pool_backward_rows(width, kernel, stride, rows, row_stride, ceil_mode, include_pad, divisor, dtype,
                                data):
    # The average's backward writes each input row once, from the gradient rows whose windows cover
    # it; float32 rows with stride 1 or 2 along W are built in vector registers (masked near the
    # rows' ends, two column parities interleaved for stride 2), the rest by a scalar scatter into
    # the row. Rows of any width and every height coverage (rows no window covers included).
    padding = data.draw(st.integers(0, kernel // 2))
    row_padding = data.draw(st.integers(0, rows // 2))
    if kernel > width + 2 * padding:
        return
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    shape = (2, 3, 7, width)
    args = ((rows, kernel), (row_stride, stride), (row_padding, padding), ceil_mode, include_pad, divisor)
    out, _ = pool(np.zeros(shape), "avg", *args[:3], (1, 1), *args[3:])
    g = rng.standard_normal(out.shape).astype(dtype)
    ref = avg_pool_backward(g, shape, *args)
    for isa in ISAS:
        with fastconv.use_isa(isa):
            gx = ops.avg_pool2d_backward(g, shape, *args)
        assert gx.dtype == dtype and close(gx, ref), isa


@pytest.mark.parametrize("out", [1, 3, (2, 5), (7, None), (4, 4)])
def test_adaptive_pools(isa, rng, out):
    x = rng.standard_normal((2, 3, 7, 9))
    ya = ops.adaptive_avg_pool2d(x, out)
    ym, idx = ops.adaptive_max_pool2d(x, out, return_indices=True)
    g = rng.standard_normal(ya.shape)
    ga = ops.adaptive_avg_pool2d_backward(g, x.shape)
    gm = ops.adaptive_max_pool2d_backward(g, idx, x.shape)
    # By definition, and by finite differences for the (linear) average.
    oh, ow = ya.shape[2:]
    for i in range(oh):
        for j in range(ow):
            r = slice(i * 7 // oh, -(-(i + 1) * 7 // oh))
            c = slice(j * 9 // ow, -(-(j + 1) * 9 // ow))
            assert np.allclose(ya[:, :, i, j], x[:, :, r, c].mean(axis=(2, 3)))
            assert np.allclose(ym[:, :, i, j], x[:, :, r, c].max(axis=(2, 3)))
    assert np.allclose(ga, numerical_grad(lambda v: ops.adaptive_avg_pool2d(v, out), x, g), atol=1e-6)
    assert np.allclose(gm, numerical_grad(lambda v: ops.adaptive_max_pool2d(v, out), x, g), atol=1e-6)
    if torch is not None:
        tx = torch.from_numpy(x)
        assert close(ya, F.adaptive_avg_pool2d(tx, out).numpy())
        assert np.array_equal(idx, F.adaptive_max_pool2d(tx, out, return_indices=True)[1].numpy())


def _adaptive_avg_reference(x, out):
    """Adaptive average pooling and its gradient's spread by definition, in float64."""
    h, w = x.shape[2:]
    oh, ow = out
    y = np.zeros(x.shape[:2] + (oh, ow))
    windows = []
    for i in range(oh):
        for j in range(ow):
            r = slice(i * h // oh, -(-(i + 1) * h // oh))
            c = slice(j * w // ow, -(-(j + 1) * w // ow))
            y[:, :, i, j] = x[:, :, r, c].astype(np.float64).mean(axis=(2, 3))
            windows.append((i, j, r, c))

    def backward(g):
        gx = np.zeros(x.shape)
        for i, j, r, c in windows:
            gx[:, :, r, c] += g[:, :, i, j, None, None] / ((r.stop - r.start) * (c.stop - c.start))
        return gx

    return y, backward


@pytest.mark.parametrize("out", [1, (4, 5), (9, 11), (3, None), (2, 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adaptive_avg_pool_on_several_threads(rng, out, dtype):
    # Planes enough for both threads: the forward sums a window's rows into one row and then its
    # columns (a global pool: each plane as one run); the backward writes each input row once from
    # the output rows covering it (a global pool: each plane filled). Overlapping windows included.
    x = rng.standard_normal((4, 300, 9, 11)).astype(dtype)
    size = (out, out) if isinstance(out, int) else (out[0], 11 if out[1] is None else out[1])
    want, backward = _adaptive_avg_reference(x, size)
    g = rng.standard_normal(want.shape).astype(dtype)
    want_gx = backward(g)
    for isa in ISAS:
        with fastconv.use_isa(isa):
            y = ops.adaptive_avg_pool2d(x, out)
            gx = ops.adaptive_avg_pool2d_backward(g, x.shape)
        assert y.dtype == dtype and close(y, want), isa
        assert gx.dtype == dtype and close(gx, want_gx), isa


def test_global_avg_pool(rng):
    x = rng.standard_normal((3, 5, 6, 7)).astype(np.float32)
    y = ops.global_avg_pool2d(x)
    assert y.shape == (3, 5, 1, 1) and close(y[:, :, 0, 0], x.astype(np.float64).mean(axis=(2, 3)))
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx = ops.global_avg_pool2d_backward(g, x.shape)
    assert close(gx, np.broadcast_to(g / 42.0, x.shape))


def test_finite_differences_float64(rng):
    x = rng.standard_normal((2, 2, 7, 8))
    g = rng.standard_normal(ops.avg_pool2d(x, 3, 2, 1, ceil_mode=True).shape)
    num = numerical_grad(lambda v: ops.avg_pool2d(v, 3, 2, 1, ceil_mode=True), x, g)
    assert np.allclose(ops.avg_pool2d_backward(g, x.shape, 3, 2, 1, ceil_mode=True), num, atol=1e-6)
    y, idx = ops.max_pool3d(x[:, :, None].repeat(3, 2), 2, 1, return_indices=True)
    g3 = rng.standard_normal(y.shape)
    x3 = x[:, :, None].repeat(3, 2) + rng.standard_normal((2, 2, 3, 7, 8)) * 1e-2  # no ties
    y, idx = ops.max_pool3d(x3, 2, 1, return_indices=True)
    num = numerical_grad(lambda v: ops.max_pool3d(v, 2, 1), x3, g3)
    assert np.allclose(ops.max_pool3d_backward(g3, idx, x3.shape), num, atol=1e-6)


@pytest.mark.parametrize("call,exc,match", [
    (lambda x: ops.max_pool2d(x, 3, padding=2), ValueError, "padding .* at most half"),
    (lambda x: ops.avg_pool2d(x, 2, padding=2), ValueError, "padding .* at most half"),
    (lambda x: ops.max_pool2d(x, 9), ValueError, "output size .* too small"),
    (lambda x: ops.max_pool2d(x, 0), ValueError, "kernel_size must be >= 1"),
    (lambda x: ops.max_pool2d(x, 2, ceil_mode=1), TypeError, "ceil_mode must be a bool"),
    (lambda x: ops.max_pool2d(x[0], 2), ValueError, "input must be 4-D"),
    (lambda x: ops.max_pool2d(x.astype(np.int32), 2), TypeError, "float32 or float64"),
    (lambda x: ops.avg_pool2d(x, 2, divisor_override=0), ValueError, "divisor_override must be >= 1"),
    (lambda x: ops.adaptive_avg_pool2d(x, 0), ValueError, "output_size must be >= 1"),
    (lambda x: ops.max_pool2d_backward(np.zeros((1, 2, 4, 4), np.float32), np.zeros((1, 2, 4, 4), np.int32),
                                       x.shape), TypeError, "indices must be an int64"),
    (lambda x: ops.max_pool2d_backward(np.zeros((1, 2, 4, 4), np.float32), np.full((1, 2, 4, 4), 64),
                                       x.shape), ValueError, "outside its input plane"),
    (lambda x: ops.avg_pool2d_backward(np.zeros((1, 2, 3, 3), np.float32), x.shape, 2), ValueError,
     "grad_output must have shape"),
])
def test_bad_arguments(call, exc, match):
    x = np.zeros((1, 2, 8, 8), np.float32)
    with pytest.raises(exc, match=match):
        call(x)
