"""Winograd F(4x4, 3x3) (algo='winograd'): forward and as the data gradient, against the float64 reference."""

import numpy as np
import pytest

import fastconv
from fastconv import ops
from fastconv.ops import conv as conv_module
from reference import close, conv, conv_backward

ISAS = fastconv.cpu_info()["supported_isas"]


def make(n, c_in, c_out, h, w, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c_in, h, w), dtype=np.float32)
    wt = (rng.standard_normal((c_out, c_in, 3, 3)) / np.sqrt(9 * max(c_in, 1))).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    return x, wt, b


# (n, c_in, c_out, h, w, padding): partial tiles on either axis, planes smaller than one tile,
# runs of tiles longer than a vector, channels past one GEMM depth block (256) and output
# channels that fill no whole vector or micro-kernel sliver.
SHAPES = [
    (1, 3, 5, 9, 9, 1),
    (2, 8, 7, 13, 17, 0),
    (1, 16, 16, 6, 6, 2),
    (3, 5, 4, 4, 3, 1),
    (1, 1, 1, 3, 3, 0),
    (2, 33, 17, 21, 10, (0, 2)),
    (1, 24, 70, 70, 9, "same"),
    (1, 300, 20, 5, 7, 1),
    (1, 64, 64, 56, 56, 1),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_winograd_forward_matches_the_reference(isa, shape, activation):
    n, c_in, c_out, h, w, padding = shape
    x, wt, b = make(n, c_in, c_out, h, w)
    ref = conv(x, wt, b, padding=padding)
    if activation == "relu":
        ref = np.maximum(ref, 0)
    elif activation == "relu6":
        ref = np.clip(ref, 0, 6)
    with fastconv.use_isa(isa):
        got = ops.conv2d(x, wt, b, padding=padding, activation=activation, algo="winograd")
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert close(got, ref), float(np.abs(got - ref).max())


@pytest.mark.parametrize("isa", ISAS)
def test_winograd_error_stays_near_the_direct_kernels(isa):
    # 512 input channels sum 512 products of transformed values per output: the error grows
    # with them, and stays within a small multiple of the direct kernel's.
    x, wt, b = make(1, 512, 32, 12, 12, seed=3)
    ref = conv(x, wt, b, padding=1)
    with fastconv.use_isa(isa):
        err = np.abs(ops.conv2d(x, wt, b, padding=1, algo="winograd") - ref).max()
        err_direct = np.abs(ops.conv2d(x, wt, b, padding=1, algo="direct") - ref).max()
    assert err <= max(20 * err_direct, 1e-6) and err < 1e-4 * (1 + np.abs(ref).max())


def test_winograd_in_float64_runs_the_gemm():
    x, wt, b = make(2, 6, 5, 7, 8)
    x, wt, b = x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64)
    got = ops.conv2d(x, wt, b, padding=1, algo="winograd")
    assert got.dtype == np.float64
    assert np.allclose(got, conv(x, wt, b, padding=1), rtol=1e-12, atol=1e-12)


def test_winograd_with_no_input_channels_gives_the_bias():
    x = np.zeros((2, 0, 6, 6), np.float32)
    w = np.zeros((3, 0, 3, 3), np.float32)
    b = np.array([1.0, -2.0, 3.0], np.float32)
    got = ops.conv2d(x, w, b, padding=1, algo="winograd", activation="relu")
    assert np.array_equal(got, np.broadcast_to(np.maximum(b, 0)[None, :, None, None], (2, 3, 6, 6)))


@pytest.mark.parametrize("kwargs, message", [
    (dict(stride=2), "stride 1"),
    (dict(dilation=2), "dilation 1"),
    (dict(groups=2), "groups=1"),
])
def test_winograd_refuses_what_it_cannot_compute(kwargs, message):
    x, wt, _ = make(1, 4, 4, 8, 8)
    if "groups" in kwargs:
        wt = wt[:, :2]
    with pytest.raises(ValueError, match=message):
        ops.conv2d(x, wt, padding=1, algo="winograd", **kwargs)
    with pytest.raises(ValueError, match="3x3"):
        ops.conv2d(x, np.zeros((4, 4, 5, 5), np.float32), algo="winograd")


def test_auto_picks_winograd_for_wide_3x3_layers_only():
    x, wt, _ = make(1, 64, 64, 56, 56)
    assert ops.conv_algorithm(x, wt, padding=1) == "winograd"
    assert ops.conv_algorithm(x.astype(np.float64), wt.astype(np.float64), padding=1) == "direct"
    assert ops.conv_algorithm(x[:, :16], wt[:16, :16], padding=1) == "direct"  # few channels
    assert ops.conv_algorithm(x[:, :, :12, :12], wt, padding=1) == "direct"  # few tiles
    assert ops.conv_algorithm(x, wt, stride=2, padding=1) == "direct"


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", [(1, 64, 64, 30, 30, 1), (2, 96, 64, 29, 31, 0), (1, 64, 80, 28, 28, 2)], ids=str)
def test_winograd_data_gradient_matches_the_reference(isa, shape):
    n, c_in, c_out, h, w, padding = shape
    x, wt, _ = make(n, c_in, c_out, h, w)
    conv_obj = conv_module._Conv(2, x, wt, 1, padding, 1, 1)
    assert conv_obj.backward_algo() == "winograd"  # the shape is one Winograd's rule takes
    gy = np.random.default_rng(1).standard_normal(conv_obj.out_shape).astype(np.float32)
    rx, rw, rb = conv_backward(gy, x, wt, padding=padding)
    with fastconv.use_isa(isa):
        gx, gw, gb = ops.conv2d_backward(gy, x, wt, padding=padding)
    assert close(gx, rx) and close(gw, rw) and close(gb, rb)
