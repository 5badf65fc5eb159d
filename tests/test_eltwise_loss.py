"""Activations, softmax, dropout, add, flatten, cat and the losses: forward and backward."""

import math

import numpy as np
import pytest

import fastconv
from fastconv import ops
from reference import close, numerical_grad

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed")
ISAS = fastconv.cpu_info()["supported_isas"]
_erf = np.vectorize(math.erf)

# name -> (forward, backward, numpy reference, backward takes the output?)
ACTIVATIONS = {
    "relu": (ops.relu, ops.relu_backward, lambda x: np.maximum(x, 0), False),
    "relu6": (ops.relu6, ops.relu6_backward, lambda x: np.clip(x, 0, 6), False),
    "leaky_relu": (lambda x: ops.leaky_relu(x, 0.2), lambda g, x: ops.leaky_relu_backward(g, x, 0.2),
                   lambda x: np.where(x < 0, 0.2 * x, x), False),
    "sigmoid": (ops.sigmoid, ops.sigmoid_backward, lambda x: 1 / (1 + np.exp(-x)), True),
    "tanh": (ops.tanh, ops.tanh_backward, np.tanh, True),
    "gelu": (ops.gelu, ops.gelu_backward, lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), False),
    "gelu_tanh": (lambda x: ops.gelu(x, "tanh"), lambda g, x: ops.gelu_backward(g, x, "tanh"),
                  lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3))), False),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations(isa, rng, name, dtype):
    fwd, bwd, ref, takes_output = ACTIVATIONS[name]
    x = (rng.standard_normal((3, 70001)) * 4).astype(dtype)  # big enough to run threaded
    x[0, :5] = [0.0, 6.0, -0.0, 1e-3, -1e-3]
    y = fwd(x)
    assert y.dtype == dtype and close(y, ref(x.astype(np.float64)), 1e-5)
    xs = x[:, :50].astype(np.float64)
    g = rng.standard_normal(xs.shape)
    got = bwd(g, fwd(xs) if takes_output else xs)
    num = numerical_grad(lambda v: ref(v), xs, g)
    kink = np.isclose(xs, 0) | np.isclose(xs, 6)  # not differentiable there
    assert np.allclose(got[~kink], num[~kink], atol=1e-6)


_TRANSCENDENTAL = ["sigmoid", "tanh", "gelu", "gelu_tanh"]


@pytest.mark.parametrize("name", _TRANSCENDENTAL)
def test_float32_transcendentals_over_the_whole_range(isa, rng, name):
    # The float32 kernels evaluate exp, tanh and the normal CDF by polynomials;
    # compare them with the float64 formulas across the range, tails included.
    fwd, bwd, ref, takes_output = ACTIVATIONS[name]
    x = np.concatenate([np.linspace(-30, 30, 60001), rng.standard_normal(4099) * 3]).astype(np.float32)
    r = ref(x.astype(np.float64))
    y = fwd(x)
    assert y.dtype == np.float32
    err = np.abs(y - r)
    assert np.all(err <= 5e-7 * np.abs(r) + 6e-7), (x[np.argmax(err)], err.max())  # a few float32 ulp
    # Backward in float32 against finite differences of the float64 formula.
    xs = x[::97]
    g = rng.standard_normal(xs.shape).astype(np.float32)
    got = bwd(g, fwd(xs) if takes_output else xs)
    num = numerical_grad(ref, xs.astype(np.float64), g.astype(np.float64))
    assert got.dtype == np.float32 and np.allclose(got, num, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transcendentals_at_special_values(isa, dtype):
    x = np.array([np.nan, np.inf, -np.inf, 100, -100, 89, -89, 1e-30, -1e-30, 0.0], dtype)
    with np.errstate(all="ignore"):
        for name in _TRANSCENDENTAL:
            fwd, _, ref, _ = ACTIVATIONS[name]
            want = ref(x.astype(np.float64)).astype(dtype)
            got = fwd(x)
            assert np.array_equal(np.isnan(got), np.isnan(want)), name
            ok = ~np.isnan(want)
            assert np.allclose(got[ok], want[ok], rtol=1e-6, atol=1e-37), (name, got, want)


def test_relu_keeps_nan():
    assert np.isnan(ops.relu(np.array([np.nan], np.float32))[0])
    assert np.isnan(ops.relu6(np.array([np.nan], np.float32))[0])


@pytest.mark.parametrize("shape,dim", [((7, 10), -1), ((3, 5, 4, 4), 1), ((2, 3, 4), 0), ((6,), 0),
                                       ((3, 41), 1), ((2, 9, 37), 1), ((2, 5, 150), 1)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax(isa, rng, shape, dim, log):
    x = rng.standard_normal(shape) * 5
    x.reshape(-1)[0] = 800.0  # no overflow
    fwd, bwd = (ops.log_softmax, ops.log_softmax_backward) if log else (ops.softmax, ops.softmax_backward)
    y = fwd(x, dim)
    m = x.max(axis=dim, keepdims=True)
    lse = m + np.log(np.exp(x - m).sum(axis=dim, keepdims=True))
    assert close(y, x - lse if log else np.exp(x - lse), 1e-10)
    g = rng.standard_normal(shape)
    x2 = x.copy()
    x2.reshape(-1)[0] = 0.3
    assert np.allclose(bwd(g, fwd(x2, dim), dim), numerical_grad(lambda v: fwd(v, dim), x2, g), atol=1e-6)
    y32 = fwd(x.astype(np.float32), dim)
    assert y32.dtype == np.float32 and np.allclose(y32, y, rtol=1e-5, atol=1e-6)
    g32 = bwd(g.astype(np.float32), fwd(x2.astype(np.float32), dim), dim)
    assert g32.dtype == np.float32 and np.allclose(g32, bwd(g, fwd(x2, dim), dim), rtol=1e-4, atol=1e-5)
    nan_row = x.astype(np.float32)
    nan_row.reshape(-1)[0] = np.nan  # NaN spreads to every output that shares its softmax
    assert np.isnan(fwd(nan_row, dim).reshape(-1)[0])


@pytest.mark.parametrize("log", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_over_channels_on_several_threads(log, dtype):
    # Softmax over axis 1 of an (N, C, L) array runs jobs of four vectors of neighbouring positions on
    # both threads, the last of each sample partial; forward and backward against their definitions.
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((4, 6, 3001)) * 4).astype(dtype)
    g = rng.standard_normal(x.shape).astype(dtype)
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    m = x64.max(axis=1, keepdims=True)
    lse = m + np.log(np.exp(x64 - m).sum(axis=1, keepdims=True))
    p = np.exp(x64 - lse)
    want_y = x64 - lse if log else p
    want_gx = g64 - p * g64.sum(axis=1, keepdims=True) if log else p * (g64 - (g64 * p).sum(axis=1, keepdims=True))
    fwd, bwd = (ops.log_softmax, ops.log_softmax_backward) if log else (ops.softmax, ops.softmax_backward)
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for isa in ISAS:
        with fastconv.use_isa(isa):
            y = fwd(x, 1)
            gx = bwd(g, y, 1)
        assert y.dtype == dtype and close(y, want_y, tol), isa
        assert close(gx, want_gx, tol), isa


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("shape", [(6, 5), (5, 37), (3, 4, 2, 3)])
def test_cross_entropy(isa, rng, reduction, smoothing, shape):
    z = rng.standard_normal(shape) * 3
    t = rng.integers(0, shape[1], (shape[0],) + shape[2:])
    t.reshape(-1)[1] = -100  # ignored
    loss = ops.cross_entropy(z, t, reduction, label_smoothing=smoothing)
    # Reference by definition.
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    keep = t != -100
    nll = -np.take_along_axis(logp, np.where(keep, t, 0)[:, None], 1)[:, 0]
    per = np.where(keep, (1 - smoothing) * nll - smoothing / shape[1] * logp.sum(axis=1), 0)
    ref = {"none": per, "sum": per.sum(), "mean": per.sum() / keep.sum()}[reduction]
    assert close(loss, ref, 1e-10)
    g = rng.standard_normal(per.shape) if reduction == "none" else np.array(1.7)
    got = ops.cross_entropy_backward(g, z, t, reduction, label_smoothing=smoothing)
    num = numerical_grad(lambda v: ops.cross_entropy(v, t, reduction, label_smoothing=smoothing), z, g)
    assert np.allclose(got, num, atol=1e-6)
    z32 = z.astype(np.float32)
    assert np.allclose(ops.cross_entropy(z32, t, reduction, label_smoothing=smoothing), ref, rtol=1e-5, atol=1e-5)
    got32 = ops.cross_entropy_backward(g.astype(np.float32), z32, t, reduction, label_smoothing=smoothing)
    assert got32.dtype == np.float32 and np.allclose(got32, got, rtol=1e-4, atol=1e-6)
    if torch is not None:
        tl = F.cross_entropy(torch.from_numpy(z), torch.from_numpy(t), reduction=reduction, label_smoothing=smoothing)
        assert close(loss, tl.numpy(), 1e-10)


def _ce_by_definition(z, t, smoothing, ignore=-100):
    """Per-sample losses and the logits' gradient (for a loss gradient of 1 per sample), by definition in
    float64, for an (N, C, ...) input."""
    z = z.astype(np.float64)
    c = z.shape[1]
    logp = z - np.log(np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)) - z.max(axis=1,
                                                                                                  keepdims=True)
    keep = t != ignore
    tt = np.where(keep, t, 0)
    nll = -np.take_along_axis(logp, tt[:, None], 1)[:, 0]
    per = np.where(keep, (1 - smoothing) * nll - smoothing / c * logp.sum(axis=1), 0)
    onehot = np.moveaxis(np.eye(c)[tt], -1, 1)
    grad = (np.exp(logp) - (1 - smoothing) * onehot - smoothing / c) * keep[:, None]
    return per, grad


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_over_spatial_positions(smoothing, dtype):
    # (N, C, H, W) class scores run a vector of neighbouring positions at once (class k's logits for
    # them are contiguous): many blocks on both threads, a partial block at each image's end, ignored
    # and out-of-range targets, every ISA; and blocks holding an infinite or all-minus-infinity score
    # take the per-sample code, with the results of the (N * H * W, C) layout.
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((4, 7, 37, 41)) * 3).astype(dtype)
    t = rng.integers(0, 7, (4, 37, 41))
    t[0, 0, :5] = -100
    per_want, grad_want = _ce_by_definition(z, t, smoothing)
    bad = t.copy()
    bad[1, 2, 3] = 7
    special = z.copy()
    special[2, 3, 5, 6] = np.inf
    special[3, :, 10, 11] = -np.inf
    flat = lambda a: np.ascontiguousarray(np.moveaxis(a, 1, -1).reshape(-1, a.shape[1]))  # noqa: E731
    tol = 1e-5 if dtype == np.float32 else 1e-10
    for isa in ISAS:
        with fastconv.use_isa(isa):
            per = ops.cross_entropy(z, t, "none", label_smoothing=smoothing)
            grad = ops.cross_entropy_backward(np.ones(per.shape, dtype), z, t, "none", label_smoothing=smoothing)
            assert per.dtype == dtype and close(per, per_want, tol), isa
            assert grad.dtype == dtype and close(grad, grad_want, tol), isa
            with pytest.raises(ValueError, match="outside"):
                ops.cross_entropy(z, bad, "none")
            per_s = ops.cross_entropy(special, t, "none", label_smoothing=smoothing)
            grad_s = ops.cross_entropy_backward(np.ones(per.shape, dtype), special, t, "none",
                                                label_smoothing=smoothing)
            per_f = ops.cross_entropy(flat(special), t.reshape(-1), "none", label_smoothing=smoothing)
            grad_f = ops.cross_entropy_backward(np.ones(per_f.shape, dtype), flat(special), t.reshape(-1), "none",
                                                label_smoothing=smoothing)
            np.testing.assert_allclose(per_s.reshape(-1), per_f, rtol=tol, atol=tol, err_msg=isa)
            np.testing.assert_allclose(flat(grad_s), grad_f, rtol=tol, atol=tol, err_msg=isa)
            assert np.isnan(per_s[3, 10, 11]) and np.isnan(grad_s[3, :, 10, 11]).all()


def test_cross_entropy_rejects_bad_targets():
    z = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="outside \\[0, C\\)"):
        ops.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(TypeError, match="integer"):
        ops.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="target must have shape"):
        ops.cross_entropy(z, np.array([0, 1, 2]))


def test_mse_loss(rng):
    x, y = rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    for red, ref in (("mean", np.mean((x - y) ** 2)), ("sum", np.sum((x - y) ** 2)), ("none", (x - y) ** 2)):
        assert close(ops.mse_loss(x, y, red), ref, 1e-12)
        g = rng.standard_normal(x.shape) if red == "none" else np.array(0.7)
        num = numerical_grad(lambda v: ops.mse_loss(v, y, red), x, g)
        assert np.allclose(ops.mse_loss_backward(g, x, y, red), num, atol=1e-6)


def test_dropout_is_seeded_scaled_and_thread_count_independent(rng):
    x = rng.standard_normal((4, 100_000)).astype(np.float32)
    y, mask = ops.dropout(x, 0.3, seed=7)
    assert abs(1 - mask.mean() - 0.3) < 0.01
    assert np.allclose(y, x * mask / 0.7)
    threads = fastconv.get_num_threads()
    try:
        fastconv.set_num_threads(1)
        y1, mask1 = ops.dropout(x, 0.3, seed=7)
    finally:
        fastconv.set_num_threads(threads)
    assert np.array_equal(mask, mask1) and np.array_equal(y, y1)
    assert not np.array_equal(mask, ops.dropout(x, 0.3, seed=8)[1])
    g = rng.standard_normal(x.shape).astype(np.float32)
    assert np.allclose(ops.dropout_backward(g, mask, 0.3), g * mask / 0.7)
    y_eval, _ = ops.dropout(x, 0.3, training=False)
    assert np.array_equal(y_eval, x)
    assert not ops.dropout(x, 1.0)[0].any()
    with pytest.raises(ValueError, match="between 0 and 1"):
        ops.dropout(x, 1.5)


def test_add_flatten_cat(isa, rng):
    a = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    b = rng.standard_normal((2, 3, 40, 40)).astype(np.float32)
    assert np.array_equal(ops.add(a, b), a + b)
    g = rng.standard_normal(a.shape).astype(np.float32)
    assert all(v is g for v in ops.add_backward(g))
    with pytest.raises(ValueError, match="equal shapes"):
        ops.add(a, b[:, :2])
    f = ops.flatten(a)
    assert f.shape == (2, 4800) and np.array_equal(ops.flatten_backward(f, a.shape), a)
    assert ops.flatten(a, 0, 1).shape == (6, 40, 40)
    c = ops.cat([a, b[:, :1]], dim=1)
    assert np.array_equal(c, np.concatenate([a, b[:, :1]], 1))
    ga, gb = ops.cat_backward(c, [3, 1], dim=1)
    assert np.array_equal(ga, a) and np.array_equal(gb, b[:, :1])
    with pytest.raises(TypeError, match="dtype"):
        ops.cat([a, b.astype(np.float64)])


@needs_torch
def test_activations_match_torch(rng):
    x = rng.standard_normal((5, 300))
    tx = torch.from_numpy(x)
    pairs = [(ops.relu, F.relu), (ops.relu6, F.relu6), (ops.sigmoid, torch.sigmoid), (ops.tanh, torch.tanh),
             (ops.gelu, F.gelu), (lambda v: ops.gelu(v, "tanh"), lambda v: F.gelu(v, approximate="tanh")),
             (lambda v: ops.leaky_relu(v, 0.1), lambda v: F.leaky_relu(v, 0.1)),
             (lambda v: ops.softmax(v, 1), lambda v: F.softmax(v, 1)),
             (lambda v: ops.log_softmax(v, 0), lambda v: F.log_softmax(v, 0))]
    for ours, theirs in pairs:
        assert close(ours(x), theirs(tx).numpy(), 1e-12)


def test_cat_backward_checks_dim_and_sizes():
    # Found by fuzzing: an out-of-range dim raised IndexError, and sizes that do not add up to
    # grad_output's extent split it silently into the wrong pieces.
    g = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    with pytest.raises(ValueError, match="dim must be in"):
        ops.cat_backward(g, [1, 2], dim=3)
    with pytest.raises(ValueError, match="add up to"):
        ops.cat_backward(g, [1], dim=1)
    with pytest.raises(ValueError, match="add up to"):
        ops.cat_backward(g, [4, -1], dim=1)
    with pytest.raises(ValueError, match="differs from tensors"):
        ops.cat([g, g[:, :, :2]], dim=1)
    parts = ops.cat_backward(g, [1, 2], dim=-2)
    np.testing.assert_array_equal(ops.cat(parts, dim=1), g)
