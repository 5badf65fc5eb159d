"""Convolution gradients, conv1d/conv3d and conv_transpose2d against independent references."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import ops
from reference import close, conv, conv_backward, numerical_grad
from test_conv2d import conv_cases, make

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # torch is optional: the numpy reference always runs
    torch = None

ISAS = fastconv.cpu_info()["supported_isas"]
needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")


def conv_kwargs(case):
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"], groups=case["groups"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases(), st.sampled_from([np.float32, np.float64]))
def test_conv2d_backward_matches_the_reference_on_every_path(case, dtype):
    x, w, _ = make(case)
    x, w = x.astype(dtype), w.astype(dtype)
    kw = conv_kwargs(case)
    y_shape = conv(x, w, **kw).shape
    gy = np.random.default_rng(case["seed"] + 1).standard_normal(y_shape).astype(dtype)
    ref = conv_backward(gy, x, w, **kw)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for isa in ISAS:
        with fastconv.use_isa(isa):
            got = ops.conv2d_backward(gy, x, w, **kw)
        for name, g, r in zip(("input", "weight", "bias"), got, ref):
            assert g.dtype == dtype
            assert close(g, r, tol), (isa, name, case, float(np.abs(g - r).max()))


@needs_torch
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(conv_cases())
def test_conv2d_backward_matches_torch_autograd(case):
    x, w, b = make(case)
    kw = conv_kwargs(case)
    tx = torch.from_numpy(x).double().requires_grad_()
    tw = torch.from_numpy(w).double().requires_grad_()
    tb = torch.zeros(w.shape[0], dtype=torch.float64, requires_grad=True)
    y = F.conv2d(tx, tw, tb, **kw)
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(case["seed"]), dtype=torch.float64)
    y.backward(gy)
    got = ops.conv2d_backward(gy.numpy(), x.astype(np.float64), w.astype(np.float64), **kw)
    for g, t in zip(got, (tx.grad, tw.grad, tb.grad)):
        assert close(g, t.numpy(), 1e-10)


def test_needs_selects_the_gradients(rng):
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    gy = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, needs=(False, True, False))
    assert gx is None and gb is None
    assert close(gw, conv_backward(gy, x, w)[1])
    with pytest.raises(TypeError, match="needs must be a tuple of three bools"):
        ops.conv2d_backward(gy, x, w, needs=(1, 0, 0))
    with pytest.raises(ValueError, match="grad_output must have the convolution's output shape"):
        ops.conv2d_backward(gy[:, :, :3], x, w)
    with pytest.raises(TypeError, match="grad_output has dtype float64"):
        ops.conv2d_backward(gy.astype(np.float64), x, w)


@pytest.mark.parametrize("mult,stride,padding,dilation,size,kernel", [
    (1, 1, 1, 1, (13, 11), (3, 3)), (2, 2, 1, 1, (13, 11), (3, 3)), (1, 2, 0, 2, (13, 11), (3, 3)),
    (3, 1, 2, 2, (13, 11), (3, 3)),
    (1, 3, 4, 1, (19, 37), (3, 3)),                    # padding beyond the kernel, stride 3, rows over a vector
    (1, (2, 1), (0, 3), (1, 2), (20, 40), (5, 3)),     # mixed strides, dilation and padding per axis
    (2, 2, 2, (2, 3), (9, 50), (3, 4)),                # dilation mixing the stride phases
    (1, 1, "same", 1, (7, 7), (4, 4)),                 # 'same' with more padding after than before
    (1, 2, 3, 1, (5, 5), (7, 7)),                      # kernel larger than the image
    (1, 1, 2, 2, (13, 21), (3, 3)),                    # stride 1, dilated: grad_input by the forward kernel
    (1, 1, 3, 1, (9, 20), (3, 3)),                     # stride 1, padding beyond the kernel: gathered
])
def test_depthwise_backward_with_multipliers(isa, rng, mult, stride, padding, dilation, size, kernel):
    c = 5
    x = rng.standard_normal((3, c, *size)).astype(np.float32)
    w = rng.standard_normal((c * mult, 1, *kernel)).astype(np.float32)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    gy = rng.standard_normal(conv(x, w, **kw).shape).astype(np.float32)
    for g, r in zip(ops.conv2d_backward(gy, x, w, **kw), conv_backward(gy, x, w, **kw)):
        assert close(g, r)



# With vertical stride 1, one filter per channel and at most 9 taps, the depthwise weight
# gradient runs over each plane flat (x and grad_y on rows of one length, one register chain
# per tap over every image). Kernels of 1 to 9 taps, column strides and dilations, padding
# on either side, planes narrower and wider than a vector.
@pytest.mark.parametrize("stride,padding,dilation,size,kernel", [
    (1, 1, 1, (7, 7), (3, 3)),
    (1, 1, 1, (14, 14), (3, 3)),
    ((1, 2), 1, 1, (9, 20), (3, 3)),
    (1, (0, 2), (2, 1), (12, 9), (2, 3)),
    (1, 0, 1, (5, 40), (1, 1)),
    (1, 1, 1, (6, 6), (1, 3)),
    ((1, 3), 2, (1, 3), (8, 30), (3, 1)),
    (1, "same", 1, (10, 10), (2, 4)),
    (1, 0, 1, (3, 3), (3, 3)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_weight_gradient_over_flat_planes(isa, rng, stride, padding, dilation, size, kernel, dtype):
    c = 4
    x = rng.standard_normal((3, c, *size)).astype(dtype)
    w = rng.standard_normal((c, 1, *kernel)).astype(dtype)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=c)
    gy = rng.standard_normal(conv(x, w, **kw).shape).astype(dtype)
    g = ops.conv2d_backward(gy, x, w, needs=(False, True, False), **kw)[1]
    r = conv_backward(gy, x, w, **kw)[1]
    assert close(g, r, 1e-4 if dtype == np.float32 else 1e-10), float(np.abs(g - r).max())


# 3x3 stride-1 depthwise weight gradients whose output rows fill more than half a vector run
# by rows (x and grad_y row by row, in chunks of one or two vectors of columns): rows of one
# chunk and of several, the last one partly filled, and padding 0 to 2 per side (outputs
# narrower or wider than the input).
@pytest.mark.parametrize("size,padding", [
    ((9, 9), 1), ((5, 17), 1), ((6, 33), 1), ((4, 70), 1), ((7, 40), 0), ((3, 31), 2),
    ((8, 50), (0, 2)), ((10, 34), (2, 0)), ((2, 16), (1, 0)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_depthwise_weight_gradient_by_rows(isa, rng, size, padding, dtype):
    c = 3
    x = rng.standard_normal((2, c, *size)).astype(dtype)
    w = rng.standard_normal((c, 1, 3, 3)).astype(dtype)
    kw = dict(padding=padding, groups=c)
    gy = rng.standard_normal(conv(x, w, **kw).shape).astype(dtype)
    ref = conv_backward(gy, x, w, **kw)
    for needs in ((False, True, False), (True, True, True)):
        got = ops.conv2d_backward(gy, x, w, needs=needs, **kw)
        for g, r, wanted in zip(got, ref, needs):
            assert (g is None) != wanted
            assert g is None or close(g, r, 1e-4 if dtype == np.float32 else 1e-10), float(np.abs(g - r).max())


@pytest.mark.parametrize("stride,size,cases", [
    # 3x3, padding 1: filter column 2 never reads input column 0, column 0 never reads the last
    # column, and filter row 2 never reads input row 0 (the flat form's vectors and the rows
    # form's chunks run across them).
    (1, (14, 14), (((Ellipsis, 0), (Ellipsis, 2)), ((Ellipsis, 13), (Ellipsis, 0)),
                   ((Ellipsis, 0, slice(None)), (Ellipsis, 2, slice(None))))),
    (1, (6, 40), (((Ellipsis, 0), (Ellipsis, 2)), ((Ellipsis, 39), (Ellipsis, 0)),
                  ((Ellipsis, 0, slice(None)), (Ellipsis, 2, slice(None))))),
    # Stride 2 over 14 x 36 (the stride-2 sweep): only filter column 2 reads column 35 and only
    # filter row 2 reads row 13.
    (2, (14, 36), (((Ellipsis, 35), (Ellipsis, slice(0, 2))),
                   ((Ellipsis, 13, slice(None)), (Ellipsis, slice(0, 2), slice(None))))),
])
def test_depthwise_weight_gradient_keeps_each_tap_to_what_it_reads(isa, rng, stride, size, cases):
    # An Inf may reach only the taps that read it: the other taps' gradients stay finite and exact.
    x = rng.standard_normal((2, 3, *size)).astype(np.float32)
    w = rng.standard_normal((3, 1, 3, 3)).astype(np.float32)
    kw = dict(stride=stride, padding=1, groups=3)
    gy = rng.standard_normal(conv(x, w, **kw).shape).astype(np.float32)
    ref = conv_backward(gy, x, w, **kw)[1]
    for index, clean in cases:
        bad = x.copy()
        bad[index] = np.inf
        g = ops.conv2d_backward(gy, bad, w, needs=(False, True, False), **kw)[1]
        assert not np.isfinite(g).all() and close(g[clean], ref[clean]), index

# A float32 depthwise 3x3 convolution with stride 2 (no dilation, one filter per channel) takes
# its own backward: a sweep over the rows with the column phases in registers. Planes narrower
# and wider than a vector, odd and even sizes, padding 0 to 2 per side (the column padding
# sets which taps reach which grad_x column parity), each gradient alone and all three.
@pytest.mark.parametrize("n,c,size,padding", [
    (1, 3, (1, 1), 1), (2, 3, (5, 4), 1), (2, 5, (14, 14), 1), (1, 2, (15, 33), 1),
    (3, 4, (9, 70), 1), (1, 3, (40, 37), 0), (2, 3, (11, 34), 2), (2, 2, (17, 35), (0, 1)),
    (1, 3, (12, 65), (2, 0)), (1, 2, (8, 31), (1, 2)), (2, 3, (3, 3), 0), (1, 2, (6, 112), 1),
])
def test_depthwise_stride2_backward(isa, rng, n, c, size, padding):
    x = rng.standard_normal((n, c, *size)).astype(np.float32)
    w = rng.standard_normal((c, 1, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=padding, groups=c)
    gy = rng.standard_normal(conv(x, w, **kw).shape).astype(np.float32)
    ref = conv_backward(gy, x, w, **kw)
    for needs in ((True, True, True), (True, False, False), (False, True, False)):
        got = ops.conv2d_backward(gy, x, w, needs=needs, **kw)
        for name, g, r, wanted in zip(("input", "weight", "bias"), got, ref, needs):
            assert (g is None) != wanted and (g is None or close(g, r)), (needs, name)


# float32 2-D weight gradients on large enough planes run on the direct weight-gradient
# kernel (on AVX-512 and AVX2; the scalar path keeps the GEMM); stride-1 data gradients
# run on the direct forward kernel. These shapes cover its layouts and thread splits.
@pytest.mark.parametrize("n,c_in,c_out,size,kernel,kw", [
    (1, 8, 4, (70, 66), (3, 3), dict(padding=1)),                   # the threads share one image
    (3, 8, 4, (70, 66), (3, 3), dict(padding=1)),                   # the threads take whole images
    (1, 64, 4, (48, 48), (3, 3), dict(padding=1)),                  # more than one cache pass over the plane
    (3, 64, 4, (48, 48), (3, 3), dict(padding=1)),
    (2, 6, 2, (40, 37), (5, 4), dict(stride=(2, 3), padding=(2, 1), dilation=(1, 2))),
    (2, 6, 4, (48, 52), (4, 4), dict(padding="same", dilation=2, groups=2)),
    (1, 3, 5, (60, 60), (7, 7), dict(stride=2, padding=3)),         # a scaled-down ResNet stem
    (2, 4, 2, (30, 30), (3, 3), dict(padding=5)),                   # padding beyond the kernel
    (2, 5, 7, (33, 35), (3, 3), dict(padding=(0, 2), dilation=(2, 1))),
])
def test_direct_convolution_gradients(isa, rng, n, c_in, c_out, size, kernel, kw):
    x = rng.standard_normal((n, c_in, *size)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in // kw.get("groups", 1), *kernel)).astype(np.float32)
    gy = rng.standard_normal(conv(x, w, **kw).shape).astype(np.float32)
    for name, g, r in zip(("input", "weight", "bias"), ops.conv2d_backward(gy, x, w, **kw), conv_backward(gy, x, w, **kw)):
        assert close(g, r), (name, float(np.abs(g - r).max()))


# Small planes put several images side by side in one col (up to 8 MiB of it at a time, the next
# group added to the first's sums): the weight gradient for outputs under 64 positions per image,
# one GEMM summing the images; the data gradient (on the GEMM: strides other than 1, float64, 3-D)
# for outputs under 256, one GEMM whose columns run through the images, then col2im per image.
# 2-D and 3-D, strides, dilation, padding, both dtypes; the 1024-channel case takes two groups of
# images, and the 15x15 one 225 positions per image.
@pytest.mark.parametrize("n,c_in,c_out,size,kernel,kw", [
    (3, 8, 6, (7, 7), (3, 3), dict(padding=1)),
    (4, 5, 7, (9, 11), (3, 2), dict(stride=2, padding=(1, 0), dilation=(1, 2))),
    (2, 3, 4, (4, 4), (2, 2), dict()),
    (5, 1024, 4, (7, 7), (3, 3), dict(padding=1)),
    (3, 4, 6, (3, 4, 5), (3, 3, 3), dict(padding=1)),
    (2, 3, 5, (30, 29), (3, 3), dict(stride=2, padding=1)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradients_of_small_planes_over_images_in_one_gemm(isa, rng, n, c_in, c_out, size, kernel, kw, dtype):
    x = rng.standard_normal((n, c_in, *size)).astype(dtype)
    w = rng.standard_normal((c_out, c_in, *kernel)).astype(dtype)
    gy = rng.standard_normal(conv(x, w, **kw).shape).astype(dtype)
    backward = ops.conv3d_backward if x.ndim == 5 else ops.conv2d_backward
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for name, g, r in zip(("input", "weight", "bias"), backward(gy, x, w, **kw), conv_backward(gy, x, w, **kw)):
        assert close(g, r, tol), (name, float(np.abs(g - r).max()))


# A 1x1 convolution with stride 1 and no padding: on large enough planes its weight gradient
# runs on the direct kernel reading x and grad_y where they lie (no copies), a plane's last
# vector masked. Planes that are not a whole number of vectors, both thread splits, planes
# longer than one cache pass, and groups.
@pytest.mark.parametrize("n,c_in,c_out,size,groups", [
    (1, 5, 7, (23, 29), 1),     # the threads share one image
    (3, 6, 9, (24, 25), 1),     # the threads take whole images
    (1, 256, 4, (48, 47), 1),   # more than one cache pass over the plane
    (3, 96, 5, (40, 39), 1),
    (2, 8, 6, (23, 23), 2),
])
def test_pointwise_weight_gradient_over_large_planes(isa, rng, n, c_in, c_out, size, groups):
    x = rng.standard_normal((n, c_in, *size)).astype(np.float32)
    w = rng.standard_normal((c_out, c_in // groups, 1, 1)).astype(np.float32)
    gy = rng.standard_normal((n, c_out, *size)).astype(np.float32)
    g = ops.conv2d_backward(gy, x, w, groups=groups, needs=(False, True, False))[1]
    r = conv_backward(gy, x, w, groups=groups)[1]
    assert close(g, r), float(np.abs(g - r).max())


def test_pointwise_weight_gradient_keeps_each_plane_to_itself(isa, rng):
    # Read in place, a plane's last vector runs on into the next channel's plane: an Inf at
    # the start of grad_y's channel 1 or x's channel 2 may reach only that channel's gradients.
    x = rng.standard_normal((2, 4, 23, 29)).astype(np.float32)
    w = rng.standard_normal((3, 4, 1, 1)).astype(np.float32)
    gy = rng.standard_normal((2, 3, 23, 29)).astype(np.float32)
    ref = conv_backward(gy, x, w)[1]
    gy_inf, x_inf = gy.copy(), x.copy()
    gy_inf[:, 1, 0, 0] = np.inf
    x_inf[:, 2, 0, 0] = np.inf
    g = ops.conv2d_backward(gy_inf, x, w, needs=(False, True, False))[1]
    assert np.isinf(g[1]).any() and close(g[[0, 2]], ref[[0, 2]])
    g = ops.conv2d_backward(gy, x_inf, w, needs=(False, True, False))[1]
    assert np.isinf(g[:, 2]).any() and close(g[:, [0, 1, 3]], ref[:, [0, 1, 3]])


# A 1x1 convolution over planes narrower than four micro-kernel tiles runs, forward and backward
# data, as one GEMM whose columns run through every image of the batch (the first six shapes: one
# image or many in a tile, and planes on both sides of the size where that stops). With 24+
# input channels, float32 planes of at most 256 positions (784 at batch 1) run instead on the
# flat direct kernel on AVX-512, forward and as the data gradient (flat_runs_pointwise); larger
# planes, fewer channels and other ISAs stay on the GEMM (the other shapes: both sides of each limit).
@pytest.mark.parametrize("n,c_in,c_out,size", [
    (2, 5, 7, (7, 7)), (70, 16, 9, (1, 1)), (3, 9, 4, (2, 3)), (5, 6, 13, (14, 14)), (2, 4, 3, (15, 17)),
    (2, 4, 3, (16, 16)),
    (2, 24, 30, (7, 7)),
    (1, 96, 24, (14, 14)),     # the data gradient's forward has 24 input channels
    (3, 40, 64, (16, 16)),     # 256 positions: the largest flat plane at batch > 1
    (2, 24, 26, (16, 17)),     # 272: the GEMM
    (1, 32, 40, (28, 28)),     # 784 positions: the largest flat plane at batch 1
    (1, 24, 32, (28, 29)),     # 812: the GEMM
    (2, 16, 48, (7, 7)),       # 16 input channels: the GEMM forward, a flat data gradient
    (1, 32, 8, (1, 5)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pointwise_convolution_over_small_planes(isa, rng, n, c_in, c_out, size, dtype):
    tol = 1e-4 if dtype == np.float32 else 1e-10
    x = rng.standard_normal((n, c_in, *size)).astype(dtype)
    w = rng.standard_normal((c_out, c_in, 1, 1)).astype(dtype)
    b = rng.standard_normal(c_out).astype(dtype)
    for algo in ("pointwise", "auto"):
        for act in (None, "relu6"):
            y = ops.conv2d(x, w, b, activation=act, algo=algo)
            assert close(y, conv(x, w, b, activation=act), tol), (algo, act)
    gy = rng.standard_normal((n, c_out, *size)).astype(dtype)
    for name, g, r in zip(("input", "weight", "bias"), ops.conv2d_backward(gy, x, w), conv_backward(gy, x, w)):
        assert close(g, r, tol), (name, float(np.abs(g - r).max()))


@pytest.mark.parametrize("x_shape,w_shape,groups", [
    ((1, 2, 10, 402), (1, 2, 3, 3), 1),  # the direct weight-gradient kernel
    ((2, 3, 10, 36), (3, 1, 3, 3), 3),   # the depthwise stride-2 sweep
])
def test_weight_gradient_ignores_inputs_that_no_window_reads(isa, rng, x_shape, w_shape, groups):
    # Stride 2 and a 3x3 kernel over 10 rows and an even width never read the last row or
    # column. The kernels' vectors run over those positions (past each row's last output): an
    # Inf there must not turn into 0 * Inf = NaN.
    x = rng.standard_normal(x_shape).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    gy = rng.standard_normal(conv(x, w, stride=2, groups=groups).shape).astype(np.float32)
    unread = x.copy()
    unread[:, :, -1, :] = np.inf
    unread[:, :, :, -1] = -np.inf
    gx, gw, _ = ops.conv2d_backward(gy, unread, w, stride=2, groups=groups)
    ref = conv_backward(gy, x, w, stride=2, groups=groups)
    assert np.isfinite(gw).all()
    assert close(gw, ref[1]) and close(gx, ref[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2),
                                dict(groups=2, padding=1), dict(stride=3, padding="valid")])
def test_conv1d_forward_and_backward(isa, rng, dtype, kw):
    x = rng.standard_normal((2, 4, 17)).astype(dtype)
    w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y = ops.conv1d(x, w, b, **kw)
    assert y.dtype == dtype
    assert close(y, conv(x, w, b, **kw))
    gy = rng.standard_normal(y.shape).astype(dtype)
    for g, r in zip(ops.conv1d_backward(gy, x, w, **kw), conv_backward(gy, x, w, **kw)):
        assert close(g, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", [dict(), dict(stride=2, padding=1), dict(padding=(0, 1, 2), dilation=(1, 2, 1)),
                                dict(groups=2, padding="same"), dict(stride=(1, 2, 3))])
def test_conv3d_forward_and_backward(isa, rng, dtype, kw):
    x = rng.standard_normal((2, 4, 6, 7, 8)).astype(dtype)
    w = rng.standard_normal((6, 4 // kw.get("groups", 1), 3, 2, 3)).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    y = ops.conv3d(x, w, b, activation="relu", **kw)
    assert close(y, conv(x, w, b, activation="relu", **kw))
    gy = rng.standard_normal(y.shape).astype(dtype)
    for g, r in zip(ops.conv3d_backward(gy, x, w, **kw), conv_backward(gy, x, w, **kw)):
        assert close(g, r)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", [
    dict(x=(2, 64, 7, 9, 32), w=(4, 64, 3, 3, 3), kw=dict(padding=1)),
    dict(x=(1, 64, 9, 7, 32), w=(6, 32, 3, 3, 3), kw=dict(padding=(1, 0, 2), dilation=(1, 1, 2), groups=2)),
    dict(x=(2, 64, 30, 40), w=(8, 64, 3, 3), kw=dict(padding=1, stride=(1, 2))),
    dict(x=(1, 64, 33, 40), w=(8, 64, 3, 3), kw=dict(padding=2, dilation=2)),
], ids=["3d", "3d-groups-one-image", "2d-stride", "2d-dilation-one-image"])
def test_gemm_convolutions_in_col_blocks(rng, dtype, case):
    # The GEMM path builds col a block of output rows at a time (about 1 MiB each): these shapes
    # take many blocks, the last one partial, on the per-image threaded path (two images) and the
    # single-job path (one image), forward, backward data and backward weight. 2-D float32 runs
    # the same path through algo="im2col", float64 always.
    x = rng.standard_normal(case["x"]).astype(dtype)
    w = (rng.standard_normal(case["w"]) * 0.1).astype(dtype)
    b = rng.standard_normal(case["w"][0]).astype(dtype)
    kw = case["kw"]
    fwd, bwd = (ops.conv3d, ops.conv3d_backward) if x.ndim == 5 else (ops.conv2d, ops.conv2d_backward)
    algo = dict(algo="im2col") if x.ndim == 4 else {}
    y = fwd(x, w, b, **kw, **algo)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    assert close(y, conv(x, w, b, **kw), tol)
    gy = rng.standard_normal(y.shape).astype(dtype)
    for g, r in zip(bwd(gy, x, w, **kw), conv_backward(gy, x, w, **kw)):
        assert close(g, r, tol)


def test_pointwise_conv3d_backward(rng):
    x = rng.standard_normal((2, 3, 4, 5, 6))
    w = rng.standard_normal((5, 3, 1, 1, 1))
    gy = rng.standard_normal((2, 5, 4, 5, 6))
    for g, r in zip(ops.conv3d_backward(gy, x, w), conv_backward(gy, x, w)):
        assert close(g, r, 1e-10)


def transpose_reference(x, w, bias, stride, padding, output_padding, groups, dilation):
    """conv_transpose2d as the gradient of conv2d with respect to its input."""
    n, c_in, h, wd = x.shape
    k = w.shape[2:]
    out = [(s - 1) * stride - 2 * padding + dilation * (kk - 1) + output_padding + 1 for s, kk in zip((h, wd), k)]
    like = np.zeros((n, w.shape[1] * groups, *out))
    gx = conv_backward(x, like, w, stride, padding, dilation, groups)[0]
    return gx + (0 if bias is None else np.asarray(bias, np.float64)[None, :, None, None])


@pytest.mark.parametrize("stride,padding,output_padding,groups,dilation",
                         [(1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 2, 2, 2, 1), (2, 0, 1, 3, 2), (1, 1, 0, 1, 2)])
def test_conv_transpose2d_forward_and_backward(isa, rng, stride, padding, output_padding, groups, dilation):
    x = rng.standard_normal((2, 6, 5, 7)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 2)).astype(np.float32)
    b = rng.standard_normal(4 * groups).astype(np.float32)
    args = (stride, padding, output_padding, groups, dilation)
    y = ops.conv_transpose2d(x, w, b, *args)
    assert close(y, transpose_reference(x, w, b, *args))
    gy = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, gb = ops.conv_transpose2d_backward(gy, x, w, *args)
    # The transposed convolution is linear: its input gradient is the forward conv2d
    # of gy, and its weight gradient is conv2d's weight gradient with x and y swapped.
    assert close(gx, conv(gy, w, None, stride, padding, dilation, groups))
    assert close(gw, conv_backward(x, gy, w, stride, padding, dilation, groups)[1])
    assert close(gb, gy.astype(np.float64).sum(axis=(0, 2, 3)))
    if torch is not None:
        t = F.conv_transpose2d(torch.from_numpy(x).double(), torch.from_numpy(w).double(),
                               torch.from_numpy(b).double(), *args)
        assert close(y, t.numpy())


def test_conv_transpose2d_rejects_bad_output_padding():
    x = np.zeros((1, 2, 3, 3), np.float32)
    w = np.zeros((2, 2, 3, 3), np.float32)
    with pytest.raises(ValueError, match="output_padding"):
        ops.conv_transpose2d(x, w, stride=2, output_padding=2)
    with pytest.raises(ValueError, match="weight must have shape"):
        ops.conv_transpose2d(x, np.zeros((3, 2, 3, 3), np.float32))


def test_finite_differences_float64(rng):
    """Every convolution gradient against central differences of fastconv's own forward."""
    cases = [
        (ops.conv2d, ops.conv2d_backward, (2, 4, 6, 5), (6, 2, 3, 2), dict(stride=(2, 1), padding=1, groups=2)),
        (ops.conv2d, ops.conv2d_backward, (1, 3, 7, 7), (6, 1, 3, 3), dict(padding="same", dilation=2, groups=3)),
        (ops.conv1d, ops.conv1d_backward, (2, 3, 9), (4, 3, 3), dict(stride=2, padding=1)),
        (ops.conv3d, ops.conv3d_backward, (1, 2, 4, 4, 5), (3, 2, 2, 3, 2), dict(padding=1, stride=(1, 2, 1))),
    ]
    for fwd, bwd, xs, ws, kw in cases:
        x = rng.standard_normal(xs)
        w = rng.standard_normal(ws)
        b = rng.standard_normal(ws[0])
        gy = rng.standard_normal(fwd(x, w, b, **kw).shape)
        gx, gw, gb = bwd(gy, x, w, **kw)
        for got, f, at in ((gx, lambda v: fwd(v, w, b, **kw), x), (gw, lambda v: fwd(x, v, b, **kw), w),
                           (gb, lambda v: fwd(x, w, v, **kw), b)):
            num = numerical_grad(f, at, gy, samples=40, rng=rng)
            mask = np.isfinite(num)
            assert np.allclose(got[mask], num[mask], rtol=1e-6, atol=1e-6)
    x = rng.standard_normal((1, 4, 3, 4))
    w = rng.standard_normal((4, 3, 3, 3))
    kw = dict(stride=2, padding=1, output_padding=1, groups=2)
    gy = rng.standard_normal(ops.conv_transpose2d(x, w, **kw).shape)
    gx, gw, _ = ops.conv_transpose2d_backward(gy, x, w, **kw)
    for got, f, at in ((gx, lambda v: ops.conv_transpose2d(v, w, **kw), x),
                       (gw, lambda v: ops.conv_transpose2d(x, v, **kw), w)):
        num = numerical_grad(f, at, gy)
        assert np.allclose(got, num, rtol=1e-6, atol=1e-6)


def test_an_empty_input_still_has_the_bias_gradient():
    # Padding gives an empty input outputs; their gradient still sums into the bias (found by fuzzing:
    # the bias gradient came back 0).
    rng = np.random.default_rng(3)
    x = np.zeros((2, 2, 2, 0), np.float32)
    w = rng.standard_normal((3, 2, 1, 1), dtype=np.float32)
    gy = rng.standard_normal((2, 3, 4, 3), dtype=np.float32)
    gx, gw, gb = ops.conv2d_backward(gy, x, w, stride=2, padding=3)
    assert gx.shape == x.shape and not gw.any()
    np.testing.assert_allclose(gb, gy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("algo", ["auto", "direct", "im2col"])
@pytest.mark.parametrize("stride", [2 ** 20, 2 ** 31 - 1])
def test_a_stride_beyond_the_input_is_one_window(algo, stride):
    # Found by fuzzing: the direct kernel sized a buffer by the stride (2**20: MemoryError on a
    # 3x8 input; 2**31 - 1: a crash). One output position per axis: the same as any large stride.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 3, 8), dtype=np.float32)
    w = rng.standard_normal((4, 3, 2, 2), dtype=np.float32)
    y = ops.conv2d(x, w, stride=stride, padding=1, dilation=2, algo=algo)
    np.testing.assert_allclose(y, conv(x, w, stride=stride, padding=1, dilation=2), rtol=1e-5, atol=1e-5)
    gy = rng.standard_normal(y.shape, dtype=np.float32)
    for got, expect in zip(ops.conv2d_backward(gy, x, w, stride=stride, padding=1, dilation=2),
                           conv_backward(gy, x, w, stride=stride, padding=1, dilation=2)):
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)


def test_conv_transpose_backward_when_output_padding_reaches_the_stride():
    # PyTorch allows output_padding < max(stride, dilation): with stride 1 and dilation 2 the
    # forward convolution of grad_output has a row and column more than the input (found by
    # fuzzing: grad_input came back with that shape). Checked by the adjoint identity
    # <conv_transpose2d(v, w), gy> == <v, grad_input> for random v, and the bias gradient.
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 3, 2))
    w = rng.standard_normal((4, 1, 2, 2))
    kw = dict(stride=1, padding=0, output_padding=1, groups=2, dilation=2)
    y = ops.conv_transpose2d(x, w, **kw)
    gy = rng.standard_normal(y.shape)
    gx, gw, gb = ops.conv_transpose2d_backward(gy, x, w, **kw)
    assert gx.shape == x.shape and gw.shape == w.shape
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        np.testing.assert_allclose(np.vdot(ops.conv_transpose2d(v, w, **kw), gy), np.vdot(v, gx), rtol=1e-10)
        u = rng.standard_normal(w.shape)  # linear in the weight too
        np.testing.assert_allclose(np.vdot(ops.conv_transpose2d(x, u, **kw), gy), np.vdot(u, gw), rtol=1e-10)
    np.testing.assert_allclose(gb, gy.sum(axis=(0, 2, 3)), rtol=1e-12)
