"""conv2d forward: every algorithm on every ISA path against independent references."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv.ops import conv2d, conv2d_backward, conv2d_output_shape
from reference import close
from reference import conv2d as ref_conv2d
from reference import conv_backward as ref_conv_backward

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional: the numpy reference always runs
    torch = None

ISAS = fastconv.cpu_info()["supported_isas"]
MAX_MACS = 400_000  # keeps the scalar path and the reference quick


@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["dense", "dense", "grouped", "depthwise"]))
    kh, kw = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    use_same = draw(st.booleans()) and draw(st.booleans())
    if use_same:
        stride, padding = (1, 1), "same"
        pads = (dh * (kh - 1), dw * (kw - 1))
    else:
        stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
        padding = draw(st.one_of(st.just("valid"), st.integers(0, 3), st.tuples(st.integers(0, 3), st.integers(0, 3))))
        p = (0, 0) if padding == "valid" else ((padding, padding) if isinstance(padding, int) else padding)
        pads = (2 * p[0], 2 * p[1])
    # Spatial sizes that the (dilated) kernel fits into.
    h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0]), 40))
    w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[1]), 40))
    if kind == "dense":
        groups, cin_g, cout_g = 1, draw(st.integers(1, 64)), draw(st.integers(1, 64))
    elif kind == "grouped":
        groups, cin_g, cout_g = draw(st.integers(2, 4)), draw(st.integers(1, 16)), draw(st.integers(1, 16))
    else:
        groups, cin_g, cout_g = draw(st.integers(1, 32)), 1, draw(st.integers(1, 3))
    n = draw(st.integers(0, 4))
    ho, wo = conv2d_output_shape((h, w), (kh, kw), stride, padding, (dh, dw))
    # Shrink channels until the case is cheap enough for every path.
    while max(n, 1) * groups * cout_g * cin_g * ho * wo * kh * kw > MAX_MACS and (cin_g > 1 or cout_g > 1):
        cin_g, cout_g = max(1, cin_g // 2), max(1, cout_g // 2)
    while max(n, 1) * groups * cout_g * cin_g * ho * wo * kh * kw > MAX_MACS and h > 1:
        h = max(dh * (kh - 1) + 1 - pads[0], 1, h // 2)
        ho, wo = conv2d_output_shape((h, w), (kh, kw), stride, padding, (dh, dw))
        if h <= dh * (kh - 1) + 1 - pads[0] or h == 1:
            break
    seed = draw(st.integers(0, 2**31))
    return dict(n=n, c_in=groups * cin_g, c_out=groups * cout_g, h=h, w=w, kernel=(kh, kw), stride=stride,
                padding=padding, dilation=(dh, dw), groups=groups, bias=draw(st.booleans()),
                activation=draw(st.sampled_from([None, "relu", "relu6"])), seed=seed)


def make(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c_in"], case["h"], case["w"]), dtype=np.float32)
    w = rng.standard_normal((case["c_out"], case["c_in"] // case["groups"]) + case["kernel"], dtype=np.float32)
    b = rng.standard_normal(case["c_out"], dtype=np.float32) if case["bias"] else None
    return x, w, b


def algorithms_for(case):
    algos = ["auto", "direct", "im2col"]
    if case["kernel"] == (1, 1) and case["stride"] == (1, 1) and case["padding"] in (0, (0, 0), "valid", "same"):
        algos.append("pointwise")
    if case["groups"] == case["c_in"]:
        algos.append("depthwise")
    if (case["kernel"] == (3, 3) and case["stride"] == (1, 1) and case["dilation"] == (1, 1)
            and case["groups"] == 1):
        algos.append("winograd")
    return algos


def torch_reference(x, w, b, case):
    y = F.conv2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                 None if b is None else torch.from_numpy(b).double(), case["stride"], case["padding"],
                 case["dilation"], case["groups"])
    if case["activation"] == "relu":
        y = F.relu(y)
    elif case["activation"] == "relu6":
        y = F.relu6(y)
    return y.numpy()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_conv2d_matches_references_on_every_path(case):
    x, w, b = make(case)
    ref = ref_conv2d(x, w, b, case["stride"], case["padding"], case["dilation"], case["groups"], case["activation"])
    refs = [ref]
    if torch is not None:
        refs.append(torch_reference(x, w, b, case))
    kwargs = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"],
                  activation=case["activation"])
    for isa in ISAS:
        with fastconv.use_isa(isa):
            for algo in algorithms_for(case):
                y = conv2d(x, w, b, algo=algo, **kwargs)
                assert y.dtype == np.float32
                for r in refs:
                    assert close(y, r), (isa, algo, case, float(np.abs(y - r).max()) if y.shape == r.shape else y.shape)


@pytest.mark.skipif(torch is None, reason="torch not installed")
@pytest.mark.parametrize("kernel,dilation", [((2, 2), (1, 1)), ((4, 3), (1, 2)), ((2, 5), (3, 1))])
def test_same_padding_with_even_kernels_matches_torch(isa, rng, kernel, dilation):
    x = rng.standard_normal((2, 5, 11, 8), dtype=np.float32)
    w = rng.standard_normal((7, 5) + kernel, dtype=np.float32)
    ref = F.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same", dilation=dilation).numpy()
    for algo in ("direct", "im2col"):
        assert close(conv2d(x, w, padding="same", dilation=dilation, algo=algo), ref)


def test_output_shape_formula():
    assert conv2d_output_shape((224, 224), 7, 2, 3) == (112, 112)
    assert conv2d_output_shape((32, 32), 5, 1, 2) == (32, 32)
    assert conv2d_output_shape((10, 9), (3, 2), (2, 1), (1, 0), (1, 3)) == (5, 6)
    assert conv2d_output_shape((8, 8), 4, padding="same") == (8, 8)
    with pytest.raises(ValueError, match="larger than the padded input"):
        conv2d_output_shape((4, 4), 7)


def test_empty_batch_gives_empty_output(isa):
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = np.ones((4, 3, 3, 3), np.float32)
    for algo in ("auto", "direct", "im2col"):
        y = conv2d(x, w, padding=1, algo=algo)
        assert y.shape == (0, 4, 8, 8)


def test_nan_propagates(isa):
    x = np.ones((1, 2, 6, 6), np.float32)
    x[0, 1, 2, 3] = np.nan
    w = np.ones((3, 2, 3, 3), np.float32)
    for algo in ("direct", "im2col"):
        for act in (None, "relu", "relu6"):
            y = conv2d(x, w, padding=1, activation=act, algo=algo)
            assert np.isnan(y[0, :, 1:4, 2:5]).all()
            assert not np.isnan(y[0, :, 4:, :]).any()
    xd = np.ones((1, 2, 6, 6), np.float32)
    xd[0, 1, 2, 3] = np.nan
    y = conv2d(xd, np.ones((2, 1, 3, 3), np.float32), padding=1, groups=2, algo="depthwise")
    assert np.isnan(y[0, 1, 1:4, 2:5]).all() and not np.isnan(y[0, 0]).any()


def test_non_contiguous_input_is_copied_once_and_correct(rng):
    base = rng.standard_normal((2, 6, 12, 20), dtype=np.float32)
    x = base[:, ::2, :, ::2]
    assert not x.flags.c_contiguous
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    assert close(conv2d(x, w, padding=1), ref_conv2d(x, w, padding=1))
    wt = np.ascontiguousarray(rng.standard_normal((3, 3, 3, 4), dtype=np.float32)).transpose(3, 2, 1, 0)
    assert close(conv2d(x, wt), ref_conv2d(x, wt))


def test_out_argument_is_filled_and_returned(rng):
    x = rng.standard_normal((1, 3, 9, 9), dtype=np.float32)
    w = rng.standard_normal((5, 3, 3, 3), dtype=np.float32)
    out = np.full((1, 5, 7, 7), np.nan, np.float32)
    y = conv2d(x, w, out=out)
    assert y is out and close(out, ref_conv2d(x, w))
    with pytest.raises(ValueError, match="out must have shape"):
        conv2d(x, w, out=np.empty((1, 5, 9, 9), np.float32))


def test_fused_activation_clamps(isa, rng):
    x = 3 * rng.standard_normal((1, 4, 10, 10), dtype=np.float32)
    w = rng.standard_normal((8, 4, 3, 3), dtype=np.float32)
    y6 = conv2d(x, w, activation="relu6")
    assert y6.min() == 0.0 and y6.max() == 6.0
    assert close(y6, ref_conv2d(x, w, activation="relu6"))


def test_depthwise_with_channel_multiplier_and_stride(isa, rng):
    x = rng.standard_normal((2, 6, 17, 13), dtype=np.float32)
    w = rng.standard_normal((18, 1, 3, 3), dtype=np.float32)
    b = rng.standard_normal(18, dtype=np.float32)
    ref = ref_conv2d(x, w, b, stride=(2, 2), padding=1, groups=6, activation="relu")
    for algo in ("depthwise", "direct", "im2col", "auto"):
        assert close(conv2d(x, w, b, stride=2, padding=1, groups=6, activation="relu", algo=algo), ref)


def test_large_layers_match_reference_on_fast_path(rng):
    # Shapes big enough to cross every cache block of the GEMM and the direct kernel.
    x = rng.standard_normal((1, 96, 30, 33), dtype=np.float32)
    w = rng.standard_normal((70, 96, 3, 3), dtype=np.float32) * np.float32(0.1)
    ref = ref_conv2d(x, w, padding=1)
    for algo in ("direct", "im2col"):
        assert close(conv2d(x, w, padding=1, algo=algo), ref)
    w1 = rng.standard_normal((300, 96, 1, 1), dtype=np.float32)
    assert close(conv2d(x, w1, algo="pointwise"), ref_conv2d(x, w1))


def test_threads_do_not_change_results(rng, restore_threads):
    x = rng.standard_normal((3, 16, 20, 20), dtype=np.float32)
    w = rng.standard_normal((24, 16, 3, 3), dtype=np.float32)
    outs = []
    for t in (1, 2, 3):
        fastconv.set_num_threads(t)
        outs.append([conv2d(x, w, padding=1, algo=a) for a in ("direct", "im2col")])
    for algo_outs in zip(*outs):
        for y in algo_outs[1:]:
            np.testing.assert_array_equal(y, algo_outs[0])


def test_depthwise_separable_equals_two_convolutions(isa, rng):
    x = rng.standard_normal((2, 8, 15, 15), dtype=np.float32)
    dw = rng.standard_normal((16, 1, 3, 3), dtype=np.float32)
    pw = rng.standard_normal((12, 16, 1, 1), dtype=np.float32)
    db, pb = rng.standard_normal(16, dtype=np.float32), rng.standard_normal(12, dtype=np.float32)
    from fastconv.ops import depthwise_separable_conv2d

    mid = ref_conv2d(x, dw, db, stride=(2, 2), padding=1, groups=8, activation="relu6")
    ref = ref_conv2d(mid, pw, pb, activation="relu6")
    got = depthwise_separable_conv2d(x, dw, pw, db, pb, stride=2, padding=1, activation="relu6")
    assert close(got, ref)


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("stride,width", [(1, 5), (1, 7), (1, 8), (1, 16), (1, 17), (1, 31), (1, 33), (1, 56),
                                          (1, 70), (2, 7), (2, 14), (2, 33), (2, 63), (2, 64), (2, 67), (2, 112),
                                          (2, 131)])
@pytest.mark.parametrize("padding", [0, 1, 2, (2, 0), (0, 1), (1, 2)])
def test_depthwise_row_kernel_shapes(isa, rng, k, stride, width, padding):
    # 3x3 / 5x5, stride 1 or 2, undilated, take the row kernel (masked edge loads,
    # stride-2 deinterleave in registers, two output rows per pass, 1- or 2-vector
    # chunks): narrow and wide rows, odd heights, both borders, channel multipliers.
    # With stride 1, rows of at most half a vector and the row width kept (padding 1
    # for 3x3, 2 for 5x5, any padding along H), the flat kernel runs instead.
    x = rng.standard_normal((2, 3, 9, width), dtype=np.float32)
    for mult in (1, 2):
        w = rng.standard_normal((3 * mult, 1, k, k), dtype=np.float32)
        b = rng.standard_normal(3 * mult, dtype=np.float32)
        ref = ref_conv2d(x, w, b, stride=(stride, stride), padding=padding, groups=3, activation="relu")
        got = conv2d(x, w, b, stride=stride, padding=padding, groups=3, activation="relu", algo="depthwise")
        assert close(got, ref)


@pytest.mark.parametrize("k", [3, 5])
def test_depthwise_flat_kernel_on_tiny_planes(isa, rng, k):
    # Planes down to 1 x 1 with the row width kept: each output vector runs across
    # rows, its taps masked to the input's rows and columns.
    for height in (1, 2, 3):
        for width in (1, 2, 3, 4):
            for pad_top in range(k // 2 + 1):
                if height + 2 * pad_top < k:
                    continue  # no output rows
                padding = (pad_top, k // 2)
                x = rng.standard_normal((2, 2, height, width), dtype=np.float32)
                w = rng.standard_normal((4, 1, k, k), dtype=np.float32)
                b = rng.standard_normal(4, dtype=np.float32)
                ref = ref_conv2d(x, w, b, padding=padding, groups=2)
                got = conv2d(x, w, b, padding=padding, groups=2, algo="depthwise")
                assert close(got, ref), (height, width, padding)


@pytest.mark.parametrize("padding", [(0, 9), (3, 12), (1, 20), (2, (1, 0))])
def test_padding_wider_than_the_input(isa, rng, padding):
    # With stride 1 the phase buffer's rows share their padding columns: reads past a
    # row's end wrap into the next row's (or the buffer's trailing) zeros. Very wide
    # padding makes those wrapped reads long.
    pad = padding if not isinstance(padding[1], tuple) else padding[1]
    x = rng.standard_normal((2, 2, 5, 4), dtype=np.float32)
    w = rng.standard_normal((3, 2, 3, 3), dtype=np.float32)
    for algo in ("direct", "im2col"):
        assert close(conv2d(x, w, padding=pad, algo=algo), ref_conv2d(x, w, padding=pad))
    xd = rng.standard_normal((1, 3, 5, 4), dtype=np.float32)
    wd = rng.standard_normal((3, 1, 3, 2), dtype=np.float32)
    assert close(conv2d(xd, wd, padding=pad, groups=3, algo="depthwise"), ref_conv2d(xd, wd, padding=pad, groups=3))


@pytest.mark.parametrize("width", [192, 193, 230])
def test_wide_images_on_both_phase_layouts(isa, rng, width):
    # Stride-1 images up to 192 wide share padding columns between rows; wider ones
    # keep separate columns. Both layouts, with symmetric and asymmetric padding.
    x = rng.standard_normal((1, 3, 6, width), dtype=np.float32)
    w = rng.standard_normal((5, 3, 3, 4), dtype=np.float32)
    for padding in ((1, 1), (0, 2), "same"):
        assert close(conv2d(x, w, padding=padding, algo="direct"), ref_conv2d(x, w, padding=padding))


# Stride-1 convolutions whose output rows keep the input's width, with at least 24 input
# channels per group, run on dense flat output positions on AVX-512 (csrc/conv/direct_flat.h),
# and so do their data gradients (a convolution with c_out input channels). Planes whose last
# vector is full, partial, or at most half full (then a half-width vector); one and two channel
# chunks of 32; taps past the row ends; partial channel blocks (2- and 4-row tiles); groups;
# both thread splits (one image shared, whole images per thread).
@pytest.mark.parametrize("n,c_in,c_out,size,kernel,kw", [
    (1, 24, 26, (7, 7), (3, 3), dict(padding=1)),                    # 49 outputs: 3 vectors and a half
    (3, 40, 31, (14, 14), (3, 3), dict(padding=1)),                  # 196: a last tile of only a half
    (1, 32, 5, (5, 5), (5, 5), dict(padding=2)),                     # 25: a vector and a partial one
    (2, 24, 28, (9, 8), (3, 3), dict(padding="same", dilation=2)),   # 72: four vectors and a half
    (1, 48, 24, (4, 4), (4, 4), dict(padding="same")),               # more padding after than before
    (1, 24, 3, (1, 1), (3, 3), dict(padding=1)),                     # one output
    (1, 64, 9, (12, 1), (3, 3), dict(padding=1)),                    # one column
    (2, 48, 50, (6, 37), (3, 3), dict(padding=(0, 1), groups=2)),    # fewer rows out than in
    (1, 24, 40, (3, 17), (1, 3), dict(padding=(0, 1))),
])
def test_direct_convolution_on_flat_positions(isa, rng, n, c_in, c_out, size, kernel, kw):
    x = rng.standard_normal((n, c_in, *size), dtype=np.float32)
    w = rng.standard_normal((c_out, c_in // kw.get("groups", 1), *kernel), dtype=np.float32)
    b = rng.standard_normal(c_out, dtype=np.float32)
    for act in (None, "relu6"):
        y = conv2d(x, w, b, activation=act, algo="direct", **kw)
        assert close(y, ref_conv2d(x, w, b, activation=act, **kw)), act
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    gx = conv2d_backward(gy, x, w, needs=(True, False, False), **kw)[0]
    assert close(gx, ref_conv_backward(gy, x, w, **kw)[0])


def test_flat_positions_never_read_past_a_row(isa, rng):
    # A tap past a row's end would find the next row's first input on flat positions (and one
    # before the first row, the previous channel's last): those lanes are masked, so an Inf
    # there reaches exactly the outputs whose windows hold it.
    x = rng.uniform(0.5, 1.0, (2, 32, 9, 10)).astype(np.float32)
    x[0, 3, :, 0] = np.inf
    x[0, 5, :, -1] = np.inf
    x[1, 7, 0, :] = np.inf
    x[1, 8, -1, 4] = np.inf
    w = rng.uniform(0.1, 1.0, (8, 32, 3, 3)).astype(np.float32)
    y = conv2d(x, w, padding=1, algo="direct")
    ref = ref_conv2d(x, w, padding=1)
    assert np.isinf(ref).any() and np.isfinite(ref).any()
    assert close(y, ref)
