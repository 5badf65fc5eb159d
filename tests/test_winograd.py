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
    # Many channels: from 8192 tiles x channels, on planes of any size.
    x7, w512 = np.zeros((4, 512, 7, 7), np.float32), np.zeros((512, 512, 3, 3), np.float32)
    assert ops.conv_algorithm(x7, w512, padding=1) == "winograd"  # 16 tiles
    assert ops.conv_algorithm(x7[:2], w512, padding=1) == "direct"  # 8 tiles
    x14, w256 = np.zeros((2, 256, 14, 14), np.float32), np.zeros((256, 256, 3, 3), np.float32)
    assert ops.conv_algorithm(x14, w256, padding=1) == "winograd"  # 32 tiles
    assert ops.conv_algorithm(x14[:1], w256, padding=1) == "direct"  # 16 tiles


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


# (n, c_in, c_out, h, w, padding) where csrc/conv/winograd.h:winograd_shares_tiles holds at 1-3
# threads on every ISA (c_in + c_out >= 512, few tiles): one block of all tiles shared by the
# threads, the filters transformed a GEMM depth block at a time. Input channels in two such
# blocks (256 + 128), output channels past whole micro-kernel slivers, partial tiles, a plane
# smaller than two tiles.
SHARED_SHAPES = [
    (2, 384, 136, 9, 11, 1),
    (1, 200, 320, 7, 7, "same"),
    (1, 260, 300, 5, 6, 0),
]


@pytest.fixture
def winograd_everywhere(monkeypatch):
    """Every Winograd-shaped float32 convolution (and data gradient) on the Winograd kernel, whatever its size."""
    monkeypatch.setattr(conv_module, "_winograd_wins", lambda *shape, **rule: True)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", SHARED_SHAPES, ids=str)
def test_winograd_with_shared_tiles_matches_the_reference(isa, shape, winograd_everywhere):
    n, c_in, c_out, h, w, padding = shape
    x, wt, b = make(n, c_in, c_out, h, w)
    ref = np.maximum(conv(x, wt, b, padding=padding), 0)
    conv_obj = conv_module._Conv(2, x, wt, 1, padding, 1, 1)
    gy = np.random.default_rng(1).standard_normal(conv_obj.out_shape).astype(np.float32)
    rx, _, _ = conv_backward(gy, x, wt, padding=padding)
    with fastconv.use_isa(isa):
        got = ops.conv2d(x, wt, b, padding=padding, activation="relu", algo="winograd")
        gx, _, _ = ops.conv2d_backward(gy, x, wt, padding=padding, needs=(True, False, False))
    assert close(got, ref), float(np.abs(got - ref).max())
    assert conv_obj.backward_algo() == "winograd"
    assert close(gx, rx), float(np.abs(gx - rx).max())


@pytest.mark.parametrize("threads", [1, 3, 12])
def test_winograd_output_is_the_same_at_any_thread_count(threads, winograd_everywhere, restore_threads):
    # With 1 to 3 threads the shape below shares its tiles (3 output slivers on AVX-512, more on
    # the others); with 12 on AVX-512 each thread takes blocks of its own. The GEMMs group every
    # sum alike either way, so the output and the data gradient are bitwise the same.
    x, wt, b = make(2, 384, 136, 9, 11, seed=5)
    gy = np.random.default_rng(2).standard_normal((2, 136, 9, 11)).astype(np.float32)

    def run():
        return (ops.conv2d(x, wt, b, padding=1, algo="winograd"),
                ops.conv2d_backward(gy, x, wt, padding=1, needs=(True, False, False))[0])

    fastconv.set_num_threads(2)
    want = run()
    fastconv.set_num_threads(threads)
    got = run()
    assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


@pytest.fixture
def winograd_weight_grad(monkeypatch):
    """Every Winograd-shaped float32 convolution's weight gradient on the Winograd kernel, whatever its size."""
    monkeypatch.setattr(conv_module, "_winograd_weight_grad_wins", lambda *shape: True)


# (n, c_in, c_out, h, w, padding) for the weight gradient, besides SHAPES: two blocks of tiles
# (the second adds into the first's sums), more than 1820 tiles of few channels, and output
# rows (C_out) past one micro-kernel sliver.
WEIGHT_GRAD_SHAPES = SHAPES + [
    (1, 300, 20, 40, 40, 1),
    (2, 8, 8, 120, 130, 1),
    (2, 70, 13, 15, 18, 2),
]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", WEIGHT_GRAD_SHAPES, ids=str)
def test_winograd_weight_gradient_matches_the_reference(isa, shape, winograd_weight_grad):
    n, c_in, c_out, h, w, padding = shape
    x, wt, _ = make(n, c_in, c_out, h, w)
    conv_obj = conv_module._Conv(2, x, wt, 1, padding, 1, 1)
    assert conv_obj.weight_grad_algo() == "winograd"
    gy = np.random.default_rng(1).standard_normal(conv_obj.out_shape).astype(np.float32)
    _, rw, _ = conv_backward(gy, x, wt, padding=padding)
    with fastconv.use_isa(isa):
        gx, gw, gb = ops.conv2d_backward(gy, x, wt, padding=padding, needs=(False, True, False))
    assert gx is None and gb is None
    assert gw.dtype == np.float32 and gw.shape == wt.shape
    assert close(gw, rw), float(np.abs(gw - rw).max())


@pytest.mark.parametrize("threads", [1, 3, 12])
def test_winograd_weight_gradient_is_the_same_at_any_thread_count(threads, winograd_weight_grad, restore_threads):
    # Blocks of tiles are fixed by the shape and each sum runs over them in order, so the thread
    # count (here up to 12, where the GEMMs split S's rows) changes no bit of the result.
    x, wt, _ = make(2, 40, 70, 37, 41, 1)
    gy = np.random.default_rng(2).standard_normal((2, 70, 37, 41)).astype(np.float32)
    fastconv.set_num_threads(2)
    base = ops.conv2d_backward(gy, x, wt, padding=1, needs=(False, True, False))[1]
    fastconv.set_num_threads(threads)
    got = ops.conv2d_backward(gy, x, wt, padding=1, needs=(False, True, False))[1]
    assert np.array_equal(got, base)
    assert close(got, conv_backward(gy, x, wt, padding=1)[1])


@pytest.mark.parametrize("isa", ISAS)
def test_winograd_weight_gradient_error_stays_near_the_direct_kernels(isa, monkeypatch):
    # Each gradient element sums over 2 x 96 x 96 positions (1152 tiles of transformed values).
    x, wt, _ = make(2, 16, 16, 96, 96, seed=4)
    gy = np.random.default_rng(5).standard_normal((2, 16, 96, 96)).astype(np.float32)
    ref = conv_backward(gy, x, wt, padding=1)[1]
    errors = {}
    with fastconv.use_isa(isa):
        for wins in (True, False):
            monkeypatch.setattr(conv_module, "_winograd_weight_grad_wins", lambda *shape, wins=wins: wins)
            errors[wins] = np.abs(ops.conv2d_backward(gy, x, wt, padding=1)[1] - ref).max()
    assert errors[True] <= max(20 * errors[False], 1e-6) and errors[True] < 1e-4 * (1 + np.abs(ref).max())


def test_auto_takes_the_winograd_weight_gradient_for_wide_3x3_layers_only():
    def algo(n, c_in, c_out, hw, dtype=np.float32, **kwargs):
        x = np.zeros((n, c_in, hw, hw), dtype)
        return conv_module._Conv(2, x, np.zeros((c_out, c_in, 3, 3), dtype), kwargs.get("stride", 1), 1, 1, 1)
    assert algo(1, 64, 64, 56).weight_grad_algo() == "winograd"
    assert algo(8, 256, 256, 14).weight_grad_algo() == "winograd"  # 128 tiles
    assert algo(1, 256, 256, 14).weight_grad_algo() == "direct"  # 16 tiles
    assert algo(1, 3, 64, 224).weight_grad_algo() == "direct"  # few input channels
    assert algo(1, 64, 64, 56, np.float64).weight_grad_algo() == "direct"
    assert algo(1, 64, 64, 56, stride=2).weight_grad_algo() == "direct"
    # The data gradient has its own rule, which wants 64 channels on both sides.
    c = algo(1, 32, 64, 56)
    assert (c.backward_algo(), c.weight_grad_algo()) == ("direct", "winograd")


def test_the_backend_checks_the_weight_gradients_algorithm():
    from fastconv import _core
    from fastconv.ops._device import kernels
    x, wt, _ = make(1, 4, 4, 8, 8)
    gy = np.zeros((1, 4, 4, 4), np.float32)
    gw = np.empty_like(wt)
    with pytest.raises(ValueError, match="winograd needs"):
        kernels(x).conv_backward(gy, x, wt, None, gw, None, (1, 2, 2), (0, 1, 1), (1, 1, 1), 1,
                                 _core.ALGORITHMS["direct"], _core.ALGORITHMS["winograd"])
    with pytest.raises(ValueError, match="unknown algorithm"):
        kernels(x).conv_backward(gy, x, wt, None, gw, None, (1, 2, 2), (0, 1, 1), (1, 1, 1), 1,
                                 _core.ALGORITHMS["direct"], 99)


# --------------------------------------------------------------------------- FilterCache

# (n, c_in, c_out, h, w, padding): blocks of tiles per thread; tiles shared by the threads with
# input channels in two GEMM depth blocks; output channels that fill no whole sliver.
CACHED_SHAPES = [(1, 64, 64, 30, 30, 1), (2, 384, 136, 9, 11, 1), (1, 200, 70, 7, 7, "same")]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("shape", CACHED_SHAPES, ids=str)
def test_cached_filters_give_the_same_output_as_filters_transformed_in_the_call(isa, shape):
    n, c_in, c_out, h, w, padding = shape
    x, wt, b = make(n, c_in, c_out, h, w)
    ref = np.maximum(conv(x, wt, b, padding=padding), 0)
    cache = ops.FilterCache()
    with fastconv.use_isa(isa):
        want = ops.conv2d(x, wt, b, padding=padding, activation="relu", algo="winograd")
        first = ops.conv2d(x, wt, b, padding=padding, activation="relu", algo="winograd", filter_cache=cache)
        held = cache.nbytes
        again = ops.conv2d(x, wt, b, padding=padding, activation="relu", algo="winograd", filter_cache=cache)
    assert held >= 36 * c_in * c_out * 4 and cache.nbytes == held
    assert np.array_equal(first, want) and np.array_equal(again, want)
    assert close(first, ref), float(np.abs(first - ref).max())


def test_a_filter_cache_is_reused_until_its_key_or_the_weight_array_changes():
    x, wt, b = make(1, 64, 64, 12, 12)
    w2 = wt.copy()
    cache = ops.FilterCache()

    def run(weight):
        return ops.conv2d(x, weight, b, padding=1, algo="winograd", filter_cache=cache)

    before = run(wt)
    wt *= 2  # in place: the cache cannot see it, so the next call still reads the old filters
    assert np.array_equal(run(wt), before)
    cache.keyed("changed")  # a new key drops them: the filters of the doubled weight
    doubled = run(wt)
    assert close(doubled, conv(x, wt, b, padding=1)) and not close(doubled, before)
    assert np.array_equal(run(w2), before)  # another array (address) of the same shape: made anew
    cache.keyed("changed")  # the same key keeps them
    assert np.array_equal(run(w2), before)
    cache.clear()
    assert cache.nbytes == 0


@pytest.mark.skipif(len(ISAS) < 2, reason="one kernel set on this CPU")
def test_a_filter_cache_follows_the_kernel_set_in_use():
    # The transformed filters' layout is the kernel set's (its GEMM's sliver width).
    x, wt, b = make(1, 64, 72, 10, 10)
    cache = ops.FilterCache()
    for isa in ISAS + ISAS[::-1]:
        with fastconv.use_isa(isa):
            want = ops.conv2d(x, wt, b, padding=1, algo="winograd")
            got = ops.conv2d(x, wt, b, padding=1, algo="winograd", filter_cache=cache)
        assert np.array_equal(got, want), isa


def test_auto_with_a_filter_cache_picks_winograd_for_fewer_tiles():
    x14, w256 = np.zeros((1, 256, 14, 14), np.float32), np.zeros((256, 256, 3, 3), np.float32)
    x7, w512 = np.zeros((2, 512, 7, 7), np.float32), np.zeros((512, 512, 3, 3), np.float32)
    for x, wt, tiles in ((x14, w256, 16), (x7, w512, 8), (x7[:, :128], w512[:128, :128], 8)):
        assert ops.conv_algorithm(x, wt, padding=1) == "direct", tiles
        assert ops.conv_algorithm(x, wt, padding=1, filters_cached=True) == "winograd", tiles
    assert ops.conv_algorithm(x7[:1], w512, padding=1, filters_cached=True) == "direct"  # 4 tiles
    assert ops.conv_algorithm(x14[:, :64], w256[:64, :64], padding=1, filters_cached=True) == "direct"  # 64 channels
    assert ops.conv_algorithm(x14.astype(np.float64), w256.astype(np.float64), padding=1,
                              filters_cached=True) == "direct"


def test_auto_runs_winograd_on_the_cached_filters():
    x, wt, b = make(1, 128, 128, 14, 14)
    cache = ops.FilterCache()
    got = ops.conv2d(x, wt, b, padding=1, filter_cache=cache)
    assert cache.nbytes > 0  # 16 tiles: Winograd only with the cache
    assert np.array_equal(got, ops.conv2d(x, wt, b, padding=1, algo="winograd"))
    assert close(got, conv(x, wt, b, padding=1))


def test_a_filter_cache_is_left_alone_where_winograd_does_not_run():
    x, wt, b = make(1, 8, 8, 6, 6)
    cache = ops.FilterCache()
    got = ops.conv2d(x, wt, b, padding=1, filter_cache=cache)  # few channels: direct
    got64 = ops.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), padding=1,
                       algo="winograd", filter_cache=cache)  # float64: the GEMM
    assert cache.nbytes == 0
    assert close(got, conv(x, wt, b, padding=1)) and close(got64, conv(x, wt, b, padding=1))
    with pytest.raises(TypeError, match="FilterCache"):
        ops.conv2d(x, wt, padding=1, filter_cache={})


def test_the_backend_checks_the_transformed_filters():
    be = fastconv._runtime.backend()
    x, wt, _ = make(1, 16, 8, 6, 6)
    y = np.empty((1, 8, 6, 6), np.float32)
    size = be.conv_winograd_filters_size(16, 8)
    u = np.empty(size, np.float32)
    be.conv_winograd_filters(wt, u)
    geometry = ((1, 1, 1), (0, 1, 1), (1, 1, 1), 1, 0)  # stride, padding, dilation, groups, activation
    winograd, direct = fastconv._core.ALGORITHMS["winograd"], fastconv._core.ALGORITHMS["direct"]
    be.conv_forward(x, wt, None, y, *geometry, winograd, u)
    assert close(y, conv(x, wt, None, padding=1))
    with pytest.raises(ValueError, match="elements"):
        be.conv_forward(x, wt, None, y, *geometry, winograd, u[:-1])
    with pytest.raises(ValueError, match="algo 'winograd'"):
        be.conv_forward(x, wt, None, y, *geometry, direct, u)
    with pytest.raises(ValueError, match="elements"):
        be.conv_winograd_filters(wt, np.empty(size + 1, np.float32))
