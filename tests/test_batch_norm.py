"""BatchNorm against its definition in numpy, PyTorch, and finite differences."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv
from fastconv import ops
from reference import close, numerical_grad

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    torch = None

ISAS = fastconv.cpu_info()["supported_isas"]


def reference_bn(x, rm, rv, w, b, training, momentum, eps):
    x = x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if training:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
        m = x.size // x.shape[1]
        rm = (1 - momentum) * rm + momentum * mean
        rv = (1 - momentum) * rv + momentum * var * m / (m - 1)
    else:
        mean, var = rm.astype(np.float64), rv.astype(np.float64)
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    y = y * (1 if w is None else w.reshape(shape)) + (0 if b is None else b.reshape(shape))
    return y, rm, rv, mean, 1 / np.sqrt(var + eps)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([(5, 3), (4, 3, 7), (2, 4, 5, 6), (2, 2, 3, 4, 5), (1, 3, 2, 2)]), st.booleans(),
       st.booleans(), st.sampled_from([np.float32, np.float64]), st.integers(0, 2**31))
def test_batch_norm_matches_the_definition(shape, training, affine, dtype, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 5).astype(dtype)
    c = shape[1]
    w = rng.standard_normal(c).astype(dtype) if affine else None
    b = rng.standard_normal(c).astype(dtype) if affine else None
    rm0 = rng.standard_normal(c).astype(dtype)
    rv0 = rng.random(c).astype(dtype) + 0.5
    ref_y, ref_rm, ref_rv, mean, invstd = reference_bn(x, rm0, rv0, w, b, training, 0.1, 1e-5)
    g = rng.standard_normal(shape).astype(dtype)
    for isa in ISAS:
        with fastconv.use_isa(isa):
            rm, rv = rm0.copy(), rv0.copy()
            out = ops.batch_norm(x, rm, rv, w, b, training=training)
            y = out[0] if training else out
            assert y.dtype == dtype and close(y, ref_y), isa
            assert close(rm, ref_rm) and close(rv, ref_rv)
            if training:
                assert close(out[1], mean) and close(out[2], invstd)
                sm, si = out[1], out[2]
            else:
                sm, si = rm0, (1 / np.sqrt(rv0.astype(np.float64) + 1e-5)).astype(dtype)
            gx, gw, gb = ops.batch_norm_backward(g, x, w, sm, si, training=training)
            if torch is not None:
                tx = torch.from_numpy(x).double().requires_grad_()
                tw = None if w is None else torch.from_numpy(w).double().requires_grad_()
                tb = None if b is None else torch.from_numpy(b).double().requires_grad_()
                ty = F.batch_norm(tx, torch.tensor(rm0, dtype=torch.float64), torch.tensor(rv0, dtype=torch.float64), tw, tb,
                                  training=training, eps=1e-5)
                ty.backward(torch.from_numpy(g).double())
                assert close(y, ty.detach().numpy())
                assert close(gx, tx.grad.numpy(), 1e-3 if dtype == np.float32 else 1e-8)
                if affine:
                    assert close(gw, tw.grad.numpy(), 1e-3) and close(gb, tb.grad.numpy(), 1e-3)
            assert close(gb, g.astype(np.float64).sum(axis=(0,) + tuple(range(2, len(shape)))))


def reference_bn_backward(g, x, w, mean, invstd, training):
    """dx, dw, db of BatchNorm by their definitions, in float64."""
    g, x = g.astype(np.float64), x.astype(np.float64)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    xhat = (x - mean.reshape(shape)) * invstd.reshape(shape)
    db, dw = g.sum(axis=axes), (g * xhat).sum(axis=axes)
    if training:
        m = x.size // x.shape[1]
        g = g - (db / m).reshape(shape) - xhat * (dw / m).reshape(shape)
    return g * (invstd * w).reshape(shape), dw, db


@pytest.mark.parametrize("shape", [(8, 50, 64, 64), (2, 3, 256, 256), (4, 37, 15, 15), (3, 300, 7, 7), (16, 200, 12),
                                   (4096, 96), (512, 40, 3), (64, 70, 20)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_both_layouts_on_several_threads(rng, shape, dtype):
    # Tensors large enough for both threads. Rows of 49 values or more (and of 12 with 16 samples) go
    # by groups of channels, of several channels (a partial one last) or of one channel each when a
    # channel's data exceeds the groups' cache budget; (N, C) and short rows go by whole samples,
    # split between the threads, with per-column sums folded into channels. Either way the
    # statistics, y and the gradients must come out as the definitions give them, with and without
    # a fused activation.
    x = (rng.standard_normal(shape) * 4 + 2).astype(dtype)
    c = shape[1]
    w, b = rng.standard_normal(c).astype(dtype) * 3, rng.standard_normal(c).astype(dtype) + 2
    rm0, rv0 = rng.standard_normal(c).astype(dtype), rng.random(c).astype(dtype) + 0.5
    g = rng.standard_normal(shape).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for training in (True, False):
        ref_y, ref_rm, ref_rv, mean, invstd = reference_bn(x, rm0, rv0, w, b, training, 0.1, 1e-5)
        rm, rv = rm0.copy(), rv0.copy()
        out = ops.batch_norm(x, rm, rv, w, b, training=training, activation="relu6")
        y = out[0] if training else out
        assert close(y, np.clip(ref_y, 0, 6), tol) and close(rm, ref_rm, tol) and close(rv, ref_rv, tol)
        sm, si = (out[1], out[2]) if training else (rm0, (1 / np.sqrt(rv0.astype(np.float64) + 1e-5)).astype(dtype))
        if training:
            assert close(sm, mean, tol) and close(si, invstd, tol)
        stats = (sm.astype(np.float64), si.astype(np.float64))
        masked = np.where((y > 0) & (y < 6), g, 0)
        for got, want in ((ops.batch_norm_backward(g, x, w, sm, si, training=training),
                           reference_bn_backward(g, x, w, *stats, training)),
                          (ops.batch_norm_backward(g, x, w, sm, si, training=training, activation="relu6", output=y),
                           reference_bn_backward(masked, x, w, *stats, training))):
            for a, e in zip(got, want):
                assert close(a, e, tol), (training, shape)


def _activate(y, activation):
    return np.maximum(y, 0) if activation == "relu" else np.clip(y, 0, 6)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 5), (3, 4, 37), (2, 3, 9, 11)])
def test_fused_activation_matches_batch_norm_then_the_activation(rng, shape, activation, training, dtype):
    # The values straddle 0 and 6, so both clamps and the gradient masks are exercised.
    x = (rng.standard_normal(shape) * 4 + 2).astype(dtype)
    c = shape[1]
    w, b = rng.standard_normal(c).astype(dtype) * 3, rng.standard_normal(c).astype(dtype) + 2
    rm0, rv0 = rng.standard_normal(c).astype(dtype), rng.random(c).astype(dtype) + 0.5
    g = rng.standard_normal(shape).astype(dtype)
    act, act_backward = getattr(ops, activation), getattr(ops, activation + "_backward")
    for isa in ISAS:
        with fastconv.use_isa(isa):
            rm, rv = rm0.copy(), rv0.copy()
            plain = ops.batch_norm(x, rm, rv, w, b, training=training)
            rm_f, rv_f = rm0.copy(), rv0.copy()
            fused = ops.batch_norm(x, rm_f, rv_f, w, b, training=training, activation=activation)
            pre, y = (plain[0], fused[0]) if training else (plain, fused)
            # The same pass computes the same pre-activation values, so the results are equal bit for bit.
            np.testing.assert_array_equal(y, act(pre), err_msg=isa)
            np.testing.assert_array_equal(rm_f, rm)
            np.testing.assert_array_equal(rv_f, rv)
            sm, si = (plain[1], plain[2]) if training else (rm0, (1 / np.sqrt(rv0 + 1e-5)).astype(dtype))
            want = ops.batch_norm_backward(act_backward(g, pre), x, w, sm, si, training=training)
            got = ops.batch_norm_backward(g, x, w, sm, si, training=training, activation=activation, output=y)
            for a, e in zip(got, want):
                assert close(a, e, 1e-5 if dtype == np.float32 else 1e-12), isa
            if torch is not None:
                tx = torch.from_numpy(x).double().requires_grad_()
                tw, tb = (torch.from_numpy(v).double().requires_grad_() for v in (w, b))
                ty = F.batch_norm(tx, torch.from_numpy(rm0).double(), torch.from_numpy(rv0).double(), tw, tb,
                                  training=training)
                ty = F.relu(ty) if activation == "relu" else F.relu6(ty)
                ty.backward(torch.from_numpy(g).double())
                assert close(y, ty.detach().numpy())
                for a, e in zip(got, (tx.grad, tw.grad, tb.grad)):
                    assert close(a, e.numpy(), 1e-3 if dtype == np.float32 else 1e-8), isa


def test_fused_activation_gradient_by_finite_differences(rng):
    x = rng.standard_normal((3, 2, 4, 5)) * 3 + 1
    w, b = rng.standard_normal(2), rng.standard_normal(2) + 1
    g = rng.standard_normal(x.shape)
    for activation in ("relu", "relu6"):
        def fwd(xv=x, wv=w, bv=b):
            return ops.batch_norm(xv, None, None, wv, bv, training=True, activation=activation)[0]

        y, mean, invstd = ops.batch_norm(x, None, None, w, b, training=True, activation=activation)
        gx, gw, gb = ops.batch_norm_backward(g, x, w, mean, invstd, activation=activation, output=y)
        assert np.allclose(gx, numerical_grad(lambda v: fwd(xv=v), x, g), atol=1e-6)
        assert np.allclose(gw, numerical_grad(lambda v: fwd(wv=v), w, g), atol=1e-6)
        assert np.allclose(gb, numerical_grad(lambda v: fwd(bv=v), b, g), atol=1e-6)


def test_fused_activation_passes_no_gradient_at_nan_outputs():
    x = np.array([[1.0, np.nan, -2.0, 3.0], [0.5, 2.0, np.nan, -1.0]], np.float32).reshape(2, 1, 4)
    rm, rv = np.zeros(1, np.float32), np.ones(1, np.float32)
    y = ops.batch_norm(x, rm, rv, activation="relu6")
    assert np.array_equal(np.isnan(y), np.isnan(x))
    inv = np.ones(1, np.float32) / np.sqrt(np.float32(1 + 1e-5))
    g = np.ones_like(x)
    gx, _, _ = ops.batch_norm_backward(g, x, None, rm, inv, training=False, activation="relu6", output=y)
    want = ops.batch_norm_backward(ops.relu6_backward(g, y), x, None, rm, inv, training=False)[0]
    np.testing.assert_array_equal(gx, want)
    assert not np.isnan(gx).any()


def test_fused_activation_bad_arguments():
    x = np.ones((2, 3, 4), np.float32)
    m, s = np.zeros(3, np.float32), np.ones(3, np.float32)
    with pytest.raises(ValueError, match="activation must be None, 'relu' or 'relu6'"):
        ops.batch_norm(x, m, s, activation="gelu")
    with pytest.raises(ValueError, match="needs the forward's output"):
        ops.batch_norm_backward(x, x, None, m, s, activation="relu")
    with pytest.raises(ValueError, match="output must have the input's shape"):
        ops.batch_norm_backward(x, x, None, m, s, activation="relu", output=np.ones((2, 3, 5), np.float32))
    with pytest.raises(TypeError, match="output"):
        ops.batch_norm_backward(x, x, None, m, s, activation="relu", output=np.ones((2, 3, 4)))


def test_finite_differences_float64(rng):
    x = rng.standard_normal((3, 2, 4, 3))
    w, b = rng.standard_normal(2), rng.standard_normal(2)
    g = rng.standard_normal(x.shape)

    def fwd(xv=x, wv=w, bv=b):
        return ops.batch_norm(xv, None, None, wv, bv, training=True)[0]

    _, mean, invstd = ops.batch_norm(x, None, None, w, b, training=True)
    gx, gw, gb = ops.batch_norm_backward(g, x, w, mean, invstd)
    assert np.allclose(gx, numerical_grad(lambda v: fwd(xv=v), x, g), atol=1e-6)
    assert np.allclose(gw, numerical_grad(lambda v: fwd(wv=v), w, g), atol=1e-6)
    assert np.allclose(gb, numerical_grad(lambda v: fwd(bv=v), b, g), atol=1e-6)


def test_float32_statistics_stay_accurate_far_from_zero(rng):
    x = (rng.standard_normal((64, 4, 32, 32)) * 0.01 + 1000).astype(np.float32)
    _, mean, invstd = ops.batch_norm(x, None, None, training=True)
    ref_std = x.astype(np.float64).std(axis=(0, 2, 3))
    assert np.allclose(1 / invstd.astype(np.float64), np.sqrt(ref_std ** 2 + 1e-5), rtol=1e-3)


def test_fold_batchnorm_matches_conv_then_bn(rng):
    x = rng.standard_normal((2, 3, 9, 9)).astype(np.float32)
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    cb = rng.standard_normal(5).astype(np.float32)
    rm, rv = rng.standard_normal(5).astype(np.float32), rng.random(5).astype(np.float32) + 0.5
    gamma, beta = rng.standard_normal(5).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    ref = ops.batch_norm(ops.conv2d(x, w, cb, padding=1), rm, rv, gamma, beta, eps=1e-3)
    fw, fb = ops.fold_batchnorm(w, cb, rm, rv, gamma, beta, eps=1e-3)
    assert close(ops.conv2d(x, fw, fb, padding=1), ref)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: ops.batch_norm(np.zeros((1, 3), np.float32), None, None, training=True), ValueError,
     "more than 1 value per channel"),
    (lambda: ops.batch_norm(np.zeros((2, 3), np.float32), None, None), ValueError, "needs running_mean"),
    (lambda: ops.batch_norm(np.zeros((2, 3), np.float32), np.zeros(4, np.float32), np.ones(3, np.float32)),
     ValueError, "running_mean must have shape"),
    (lambda: ops.batch_norm(np.zeros((2, 3), np.float32), np.zeros(3), np.ones(3)), TypeError, "dtype float64"),
    (lambda: ops.batch_norm(np.zeros((2, 3), np.float32), np.zeros(6, np.float32)[::2], np.ones(3, np.float32),
                            training=True), ValueError, "updated in place"),
    (lambda: ops.batch_norm(np.zeros(3, np.float32), None, None), ValueError, "batch_norm input must be"),
    (lambda: ops.batch_norm(np.zeros((2, 3), np.int32), None, None), TypeError, "float32 or float64"),
])
def test_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_eval_reads_read_only_running_statistics():
    # Found by fuzzing: eval mode only reads them, yet demanded writeable arrays.
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4), dtype=np.float32)
    rm, rv = rng.standard_normal(3, dtype=np.float32), rng.uniform(0.5, 2, 3).astype(np.float32)
    rm.flags.writeable = rv.flags.writeable = False
    y = ops.batch_norm(x, rm, rv, training=False)
    np.testing.assert_allclose(y, (x - rm[:, None]) / np.sqrt(rv[:, None] + 1e-5), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="updated in place"):
        ops.batch_norm(x, rm, rv, training=True)


def test_an_infinite_input_gives_nan_statistics_not_a_made_up_variance():
    # Found by fuzzing: a NaN variance was clamped to 0, so save_invstd came out 1/sqrt(eps).
    x = np.random.default_rng(6).standard_normal((4, 2), dtype=np.float32)
    x[1, 0] = np.inf
    y, mean, invstd = ops.batch_norm(x, None, None, training=True)
    assert np.isnan(invstd[0]) and not np.isfinite(mean[0]) and np.isnan(y[:, 0]).all()
    assert np.isfinite(invstd[1]) and np.isfinite(y[:, 1]).all()
