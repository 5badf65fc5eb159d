"""fastconv.cuda's kernels against the CPU kernels, forward and backward, on tiny shapes.

Without a GPU these run on Numba's CUDA simulator (tests/conftest.py switches it on);
with one they run on the GPU. The reference for every GPU result is the same
fastconv.ops call on numpy arrays (itself tested against PyTorch elsewhere).
"""

import subprocess
import sys

import numpy as np
import pytest

from fastconv import cuda as fcuda
from fastconv import ops

pytestmark = pytest.mark.skipif(not fcuda.is_available(), reason=f"fastconv.cuda: {fcuda.why_unavailable()}")

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def dev(a):
    return fcuda.to_device(a)


def host(a):
    return fcuda.to_host(a)


def randn(rng, shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def assert_same(gpu, cpu, dtype=np.float32):
    if cpu is None:
        assert gpu is None
        return
    assert fcuda.is_device_array(gpu), type(gpu)
    got = host(gpu)
    assert got.shape == cpu.shape and got.dtype == cpu.dtype
    np.testing.assert_allclose(got, cpu, **TOL[dtype])


def run_both(fn, *arrays, **kwargs):
    """fn on numpy arrays and on their GPU copies: (gpu result, cpu result)."""
    cpu = fn(*arrays, **kwargs)
    gpu = fn(*[dev(a) if isinstance(a, np.ndarray) else a for a in arrays], **kwargs)
    return gpu, cpu


def assert_results(gpu, cpu, dtype=np.float32):
    if isinstance(cpu, tuple):
        assert isinstance(gpu, tuple) and len(gpu) == len(cpu)
        for g, c in zip(gpu, cpu):
            assert_same(g, c, dtype)
    else:
        assert_same(gpu, cpu, dtype)


# --- convolution ---------------------------------------------------------------------------------

CONV_CASES = [
    # x shape, weight shape, kwargs
    ((2, 3, 5, 6), (4, 3, 3, 3), dict(padding=1)),
    ((1, 3, 6, 7), (4, 3, 2, 2), dict(stride=2, dilation=(2, 1))),
    ((2, 4, 5, 5), (4, 2, 3, 1), dict(groups=2, padding=(1, 0), stride=(1, 2))),
    ((1, 2, 4, 5), (3, 2, 2, 3), dict(padding="same")),
]


@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize("xs,ws,kw", CONV_CASES)
def test_conv2d_forward(rng, xs, ws, kw, algo):
    x, w, b = randn(rng, xs), randn(rng, ws), randn(rng, ws[:1])
    assert_results(*run_both(ops.conv2d, x, w, b, algo=algo, activation="relu6", **kw))


@pytest.mark.parametrize("algo", ["direct", "im2col", "pointwise", "depthwise"])
def test_conv2d_forward_float64(rng, algo):
    xs, ws, kw = {
        "direct": ((1, 2, 4, 5), (3, 2, 3, 3), dict(padding=1)),
        "im2col": ((1, 2, 4, 5), (3, 2, 3, 3), dict(stride=2)),
        "pointwise": ((2, 3, 2, 3), (4, 3, 1, 1), {}),
        "depthwise": ((1, 2, 4, 5), (4, 1, 3, 3), dict(groups=2, padding=1)),
    }[algo]
    x, w = randn(rng, xs, np.float64), randn(rng, ws, np.float64)
    assert_results(*run_both(ops.conv2d, x, w, None, algo=algo, **kw), np.float64)


def test_conv2d_pointwise_and_depthwise(rng):
    x = randn(rng, (2, 4, 3, 3))
    w, b = randn(rng, (6, 2, 1, 1)), randn(rng, (6,))
    assert_results(*run_both(ops.conv2d, x, w, b, groups=2, algo="pointwise", activation="relu"))
    wd, bd = randn(rng, (8, 1, 3, 3)), randn(rng, (8,))  # channel multiplier 2
    assert_results(*run_both(ops.conv2d, x, wd, bd, stride=2, padding=1, groups=4, algo="depthwise"))
    assert ops.conv_algorithm(dev(x), dev(wd), groups=4) == "depthwise"


@pytest.mark.parametrize("xs,ws,kw", [
    ((2, 4, 5, 6), (4, 2, 3, 2), dict(groups=2, stride=(2, 1), padding=1, dilation=(1, 2))),
    ((2, 3, 5, 5), (6, 1, 3, 3), dict(groups=3, stride=2, padding=1)),  # depthwise, multiplier 2
])
def test_conv2d_backward(rng, xs, ws, kw):
    x, w = randn(rng, xs), randn(rng, ws)
    g = randn(rng, ops.conv2d(x, w, **kw).shape)
    assert_results(*run_both(ops.conv2d_backward, g, x, w, **kw))
    assert_results(*run_both(ops.conv2d_backward, g, x, w, needs=(False, True, False), **kw))


def test_conv1d_and_transpose_and_separable(rng):
    x, w = randn(rng, (2, 3, 7)), randn(rng, (4, 3, 3))
    assert_results(*run_both(ops.conv1d, x, w, None, padding=1, stride=2))
    g = randn(rng, (2, 4, 4))
    assert_results(*run_both(ops.conv1d_backward, g, x, w, padding=1, stride=2))
    xt, wt, bt = randn(rng, (1, 4, 3, 3)), randn(rng, (4, 3, 2, 2)), randn(rng, (3,))
    assert_results(*run_both(ops.conv_transpose2d, xt, wt, bt, stride=2))
    gt = randn(rng, ops.conv_transpose2d(xt, wt, stride=2).shape)
    assert_results(*run_both(ops.conv_transpose2d_backward, gt, xt, wt, stride=2))
    xs, dw, pw = randn(rng, (1, 2, 4, 4)), randn(rng, (2, 1, 3, 3)), randn(rng, (3, 2, 1, 1))
    assert_results(*run_both(ops.depthwise_separable_conv2d, xs, dw, pw, padding=1, activation="relu"))


def test_conv_rejects_3d_on_the_gpu(rng):
    x, w = dev(randn(rng, (1, 1, 3, 3, 3))), dev(randn(rng, (1, 1, 2, 2, 2)))
    with pytest.raises(ValueError, match="not available on the GPU"):
        ops.conv3d(x, w)


# --- GEMM and linear -----------------------------------------------------------------------------

def test_gemm_tiles_epilogue_and_transposed_operands(rng):
    from fastconv.cuda import _gemm

    a, b = randn(rng, (13, 11)), randn(rng, (11, 10))
    bias_r, bias_c, c0 = randn(rng, (13,)), randn(rng, (10,)), randn(rng, (13, 10))
    # A tile with 4x4 register blocks and several k-steps, as the GPU's 8x8 ones do.
    for tile in (_gemm.SMALL, (8, 8, 4, 4, 4), (16, 8, 4, 4, 2)):
        out = dev(c0)
        _gemm.bgemm(_gemm.matrix(dev(a)), _gemm.matrix(dev(b)), _gemm.Operand(_flat(out), 0, 0, 10, 1), 13, 10, 11,
                    bias=dev(bias_r), bias_mode=_gemm.BIAS_PER_ROW, act=2, accumulate=True, tile=tile)
        np.testing.assert_allclose(host(out), np.clip(c0 + a @ b + bias_r[:, None], 0, 6), rtol=1e-5, atol=1e-5)
    out = dev(np.zeros((13, 10), np.float32))
    _gemm.gemm(dev(a), dev(b.T.copy()).T, out, dev(bias_c), _gemm.BIAS_PER_COL, 1)
    np.testing.assert_allclose(host(out), np.maximum(a @ b + bias_c, 0), rtol=1e-5, atol=1e-5)


def _flat(a):
    return a.reshape(a.size)


def test_matmul_linear_and_backward(rng):
    a, b = randn(rng, (5, 7)), randn(rng, (7, 4))
    assert_results(*run_both(ops.matmul, a, b))
    bt = dev(b.T.copy())  # a transposed view of a C-contiguous device array
    assert_same(ops.matmul(dev(a), bt.T), a @ b)
    x, w, bias = randn(rng, (2, 3, 7)), randn(rng, (4, 7)), randn(rng, (4,))
    assert_results(*run_both(ops.linear, x, w, bias, activation="relu"))
    g = randn(rng, (2, 3, 4))
    assert_results(*run_both(ops.linear_backward, g, x, w))
    x64, w64 = randn(rng, (3, 5), np.float64), randn(rng, (2, 5), np.float64)
    assert_results(*run_both(ops.linear, x64, w64), np.float64)


# --- pooling -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=(2, 3), stride=1, dilation=(2, 1)),
])
def test_max_pool2d_forward_backward(rng, kw):
    x = randn(rng, (2, 2, 5, 6))
    x[0, 0, 1, 1] = np.nan
    (y, idx), (y_c, idx_c) = run_both(ops.max_pool2d, x, return_indices=True, **kw)
    assert_same(y, y_c)
    np.testing.assert_array_equal(host(idx), idx_c)
    g = randn(rng, y_c.shape)
    assert_same(ops.max_pool2d_backward(dev(g), idx, x.shape), ops.max_pool2d_backward(g, idx_c, x.shape))


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=True),
    dict(kernel_size=(2, 3), stride=(1, 2), divisor_override=5),
])
def test_avg_pool2d_forward_backward(rng, kw):
    x = randn(rng, (1, 2, 5, 7))
    y, y_c = run_both(ops.avg_pool2d, x, **kw)
    assert_same(y, y_c)
    g = randn(rng, y_c.shape)
    assert_results(*run_both(ops.avg_pool2d_backward, g, x.shape, **kw))


@pytest.mark.parametrize("size", [(3, 2), (7, 9), 1])
def test_adaptive_pools(rng, size):
    x = randn(rng, (1, 2, 5, 7))
    assert_results(*run_both(ops.adaptive_avg_pool2d, x, size))
    out = ops.adaptive_avg_pool2d(x, size)
    g = randn(rng, out.shape)
    assert_results(*run_both(ops.adaptive_avg_pool2d_backward, g, x.shape))
    (y, idx), (y_c, idx_c) = run_both(ops.adaptive_max_pool2d, x, size, return_indices=True)
    assert_same(y, y_c)
    np.testing.assert_array_equal(host(idx), idx_c)
    assert_same(ops.adaptive_max_pool2d_backward(dev(g), idx, x.shape),
                ops.adaptive_max_pool2d_backward(g, idx_c, x.shape))


def test_pool1d_and_global(rng):
    x = randn(rng, (2, 3, 9))
    assert_results(*run_both(ops.max_pool1d, x, 3, 2, 1))
    assert_results(*run_both(ops.avg_pool1d, x, 3, 2, 1))
    x4 = randn(rng, (2, 3, 4, 5))
    assert_results(*run_both(ops.global_avg_pool2d, x4))
    with pytest.raises(ValueError, match="not available on the GPU"):
        ops.max_pool3d(dev(randn(rng, (1, 1, 2, 2, 2))), 2)


# --- BatchNorm -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 3), (2, 3, 5), (2, 3, 3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_training_forward_backward(rng, shape, dtype):
    x = randn(rng, shape, dtype) * 3 + 5
    w, b = randn(rng, (3,), dtype), randn(rng, (3,), dtype)
    rm, rv = randn(rng, (3,), dtype), np.abs(randn(rng, (3,), dtype)) + 0.5
    rm_d, rv_d = dev(rm), dev(rv)
    y, mean, invstd = ops.batch_norm(dev(x), rm_d, rv_d, dev(w), dev(b), training=True, momentum=0.2)
    rm_c, rv_c = rm.copy(), rv.copy()
    y_c, mean_c, invstd_c = ops.batch_norm(x, rm_c, rv_c, w, b, training=True, momentum=0.2)
    for got, want in ((y, y_c), (mean, mean_c), (invstd, invstd_c), (rm_d, rm_c), (rv_d, rv_c)):
        assert_same(got, want, dtype)
    g = randn(rng, shape, dtype)
    assert_results(*run_both(ops.batch_norm_backward, g, x, w, mean_c, invstd_c), dtype)
    assert_results(*run_both(ops.batch_norm_backward, g, x, None, mean_c, invstd_c), dtype)


@pytest.mark.parametrize("activation", ["relu", "relu6"])
def test_batch_norm_with_a_fused_activation(rng, activation):
    x = randn(rng, (2, 3, 3, 4)) * 4 + 2
    w, b = randn(rng, (3,)) * 2, randn(rng, (3,)) + 2
    rm, rv = randn(rng, (3,)), np.abs(randn(rng, (3,))) + 0.5
    assert_results(*run_both(ops.batch_norm, x, rm, rv, w, b, activation=activation))
    assert_results(*run_both(ops.batch_norm, x, None, None, w, b, training=True, activation=activation))
    y, mean, invstd = ops.batch_norm(x, None, None, w, b, training=True, activation=activation)
    g = randn(rng, x.shape)
    gpu = ops.batch_norm_backward(dev(g), dev(x), dev(w), dev(mean), dev(invstd), activation=activation,
                                  output=dev(y))
    assert_results(gpu, ops.batch_norm_backward(g, x, w, mean, invstd, activation=activation, output=y))


def test_batch_norm_eval(rng):
    x, w, b = randn(rng, (2, 3, 2, 2)), randn(rng, (3,)), randn(rng, (3,))
    rm, rv = randn(rng, (3,)), np.abs(randn(rng, (3,))) + 0.5
    assert_results(*run_both(ops.batch_norm, x, rm, rv, w, b))
    invstd = (1 / np.sqrt(rv + 1e-5)).astype(np.float32)
    g = randn(rng, x.shape)
    assert_results(*run_both(ops.batch_norm_backward, g, x, w, rm, invstd, training=False))
    folded = ops.fold_batchnorm(dev(randn(rng, (3, 2, 1, 1))), None, dev(rm), dev(rv), dev(w), dev(b))
    assert all(fcuda.is_device_array(a) for a in folded)


# --- element-wise, softmax, losses ---------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations(rng, dtype):
    x = randn(rng, (3, 7), dtype) * 4
    g = randn(rng, x.shape, dtype)
    for name in ("relu", "relu6", "leaky_relu", "gelu", "sigmoid", "tanh"):
        f, fb = getattr(ops, name), getattr(ops, name + "_backward")
        y, y_c = run_both(f, x)
        assert_same(y, y_c, dtype)
        saved = y_c if name in ("sigmoid", "tanh") else x
        assert_results(*run_both(fb, g, saved), dtype)
    assert_results(*run_both(ops.gelu, x, "tanh"), dtype)
    assert_results(*run_both(ops.gelu_backward, g, x, "tanh"), dtype)
    assert_results(*run_both(ops.leaky_relu, x, 0.2), dtype)


def test_softmax_and_log_softmax(rng):
    x = randn(rng, (2, 5, 3)) * 3
    g = randn(rng, x.shape)
    for dim in (1, -1):
        for f in ("softmax", "log_softmax"):
            y, y_c = run_both(getattr(ops, f), x, dim)
            assert_same(y, y_c)
            assert_results(*run_both(getattr(ops, f + "_backward"), g, y_c, dim))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(rng, reduction):
    z = randn(rng, (4, 5, 2)) * 2
    t = rng.integers(0, 5, (4, 2)).astype(np.int64)
    t[1, 0] = -100
    kw = dict(reduction=reduction, label_smoothing=0.1)
    loss, loss_c = run_both(ops.cross_entropy, z, t, **kw)
    assert_same(loss, loss_c)
    g = randn(rng, loss_c.shape) if reduction == "none" else np.float32(0.7)
    gz = ops.cross_entropy_backward(dev(g) if reduction == "none" else g, dev(z), dev(t), **kw)
    assert_same(gz, ops.cross_entropy_backward(g, z, t, **kw))
    bad = t.copy()
    bad[0, 0] = 7
    with pytest.raises(ValueError, match="outside"):
        ops.cross_entropy(dev(z), dev(bad))


def test_dropout_mask_is_the_cpu_mask(rng):
    x = randn(rng, (3, 50))
    (y, mask), (y_c, mask_c) = run_both(ops.dropout, x, 0.3, seed=2024)
    np.testing.assert_array_equal(host(mask), mask_c)
    assert_same(y, y_c)
    g = randn(rng, x.shape)
    assert_same(ops.dropout_backward(dev(g), mask, 0.3), ops.dropout_backward(g, mask_c, 0.3))
    y_eval, m_eval = ops.dropout(dev(x), 0.3, training=False)
    np.testing.assert_array_equal(host(y_eval), x)
    assert host(m_eval).all()


def test_add_cat_flatten_mse(rng):
    a, b = randn(rng, (2, 3, 2)), randn(rng, (2, 3, 2))
    assert_results(*run_both(ops.add, a, b))
    c = randn(rng, (2, 1, 2))
    out = ops.cat([dev(a), dev(c)], dim=1)
    assert_same(out, np.concatenate([a, c], axis=1))
    pieces = ops.cat_backward(out, [3, 1], dim=1)
    assert_same(pieces[0], a)
    assert_same(pieces[1], c)
    f = ops.flatten(dev(a))
    assert f.shape == (2, 6)
    assert_same(ops.flatten_backward(f, a.shape), a)
    for reduction in ("mean", "sum", "none"):
        assert_results(*run_both(ops.mse_loss, a, b, reduction))
    assert_same(ops.mse_loss_backward(0.5, dev(a), dev(b)), ops.mse_loss_backward(0.5, a, b))


# --- dispatch, interop, errors -------------------------------------------------------------------

def test_mixing_numpy_and_gpu_arrays_is_an_error(rng):
    x, w = randn(rng, (1, 1, 3, 3)), randn(rng, (1, 1, 2, 2))
    with pytest.raises(TypeError, match="to_device"):
        ops.conv2d(dev(x), w)
    with pytest.raises(TypeError, match="to_device"):
        ops.conv2d(x, dev(w))


def test_non_contiguous_gpu_views_are_read_correctly(rng):
    x = randn(rng, (1, 2, 4, 6))
    w = randn(rng, (3, 2, 3, 3))
    view = dev(x)[:, :, :, ::2]  # strided
    assert not view.is_c_contiguous()
    assert_same(ops.conv2d(view, dev(w), padding=1), ops.conv2d(x[:, :, :, ::2], w, padding=1))


def test_results_on_an_explicit_stream(rng):
    from numba import cuda

    x, w = randn(rng, (1, 2, 4, 4)), randn(rng, (3, 2, 3, 3))
    s = cuda.stream()
    with fcuda.stream(s):
        y = ops.conv2d(dev(x), dev(w), padding=1)
        fcuda.synchronize()
    assert_same(y, ops.conv2d(x, w, padding=1))


def test_without_numba_fastconv_imports_and_cuda_says_why():
    code = ("import sys; sys.modules['numba'] = None\n"
            "import fastconv, numpy as np\n"
            "print(fastconv.cuda.is_available())\n"
            "print(fastconv.cuda.why_unavailable())\n"
            "print(fastconv.ops.relu(np.ones(3, np.float32)).sum())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "False"
    assert 'pip install "fastconv[cuda]"' in lines[1]
    assert lines[2] == "3.0"


def test_import_fastconv_does_not_import_numba():
    code = "import sys, fastconv, numpy as np; fastconv.ops.relu(np.ones(2, np.float32)); print('numba' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"



# --- autograd, nn and optim on the GPU -----------------------------------------------------------

def _tiny_cnn(seed):
    from fastconv import manual_seed, nn

    manual_seed(seed)
    # No conv bias before the BatchNorm (its gradient is rounding noise, which Adam would amplify).
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(12, 4))


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_a_model_trains_on_the_gpu_as_on_the_cpu(rng, optimizer):
    from fastconv import Tensor, nn, optim

    x = randn(rng, (2, 1, 4, 4))
    t = np.array([1, 3], np.int64)
    cpu, gpu = _tiny_cnn(7), _tiny_cnn(7).to("cuda")
    assert all(p.device == "cuda" for p in gpu.parameters())
    make = {"sgd": lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-3),
            "adamw": lambda ps: optim.AdamW(ps, lr=0.01)}[optimizer]
    opt_c, opt_g = make(cpu.parameters()), make(gpu.parameters())
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(2):
        for model, opt, xx, tt in ((cpu, opt_c, Tensor(x), t), (gpu, opt_g, Tensor(x).cuda(), dev(t))):
            opt.zero_grad()
            loss = loss_fn(model(xx), tt)
            loss.backward()
            opt.step()
    assert loss.device == "cuda"
    for (name, pc), pg in zip(cpu.named_parameters(), gpu.parameters()):
        np.testing.assert_allclose(pg.numpy(), pc.numpy(), rtol=1e-4, atol=1e-5, err_msg=name)
    np.testing.assert_allclose(host(gpu[1].running_var), cpu[1].running_var, rtol=1e-5)
    gpu.eval().cpu()
    cpu.eval()
    np.testing.assert_allclose(gpu(Tensor(x)).numpy(), cpu(Tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_tensor_cuda_round_trip_is_differentiable(rng):
    from fastconv import Tensor

    a = Tensor(randn(rng, (2, 3)), requires_grad=True)
    b = a.cuda()
    assert b.device == "cuda" and "device='cuda'" in repr(b)
    (b.cpu() * 2.0).sum().backward()
    np.testing.assert_array_equal(a.grad, np.full((2, 3), 2.0, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensor_arithmetic_and_reductions_on_the_gpu(rng, dtype):
    from fastconv import Tensor

    x = randn(rng, (3, 4), dtype)
    y = randn(rng, (3, 4), dtype)
    results = []
    for put in (lambda a: Tensor(a, requires_grad=True), lambda a: Tensor(dev(a), requires_grad=True)):
        a, b = put(x), put(y)
        loss = ((a * 2.0 - b) * 0.5).sum() + (-a).mean() + (3.0 * b / 4.0).sum()
        loss.backward()
        results.append((loss.numpy(), host(a.grad), host(b.grad)))
    (lc, gac, gbc), (lg, gag, gbg) = results
    assert lg.shape == () and gag.dtype == dtype
    for g, c in ((lg, lc), (gag, gac), (gbg, gbc)):
        np.testing.assert_allclose(g, c, **TOL[dtype])


from fastconv import Tensor  # noqa: E402


@pytest.mark.parametrize("what, fn", [
    ("indexing", lambda a, b: a[0]), ("transpose", lambda a, b: a.transpose(0, 1)),
    ("sum over some dimensions", lambda a, b: a.sum(1)),
    (r"broadcasting \+", lambda a, b: a + Tensor(np.ones((1, 3), np.float32))),
    (r"\* other than by a number", lambda a, b: a * b), (r"power \(and division by a Tensor\)", lambda a, b: a ** 2)])
def test_tensor_operations_without_a_gpu_kernel_say_so(rng, what, fn):
    a, b = Tensor(dev(randn(rng, (2, 3)))), Tensor(randn(rng, (2, 3))).cuda()
    with pytest.raises(NotImplementedError, match=f"{what} is not available for GPU Tensors; move them with .cpu"):
        fn(a, b)


def test_deepcopy_copies_gpu_parameters_and_buffers_on_the_gpu(rng):
    import copy

    from fastconv import Tensor

    model = _tiny_cnn(3).to("cuda")
    twin = copy.deepcopy(model)
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert b.device == "cuda" and b.data is not a.data, name
        np.testing.assert_array_equal(b.numpy(), a.numpy(), err_msg=name)
    assert fcuda.is_device_array(twin[1].running_mean) and twin[1].running_mean is not model[1].running_mean
    # The copies are independent: training the twin leaves the original as it was.
    before = [p.numpy().copy() for p in model.parameters()]
    twin.train()
    twin(Tensor(randn(rng, (2, 1, 4, 4))).cuda()).sum().backward()
    for p in twin.parameters():
        p.data = ops.add(p.data, p.grad)
    for b, p in zip(before, model.parameters()):
        np.testing.assert_array_equal(p.numpy(), b)
    # A Tensor shared by two attributes stays shared in the copy, as deepcopy promises.
    t = Tensor(randn(rng, (3,))).cuda()
    pair = copy.deepcopy([t, t])
    assert pair[0] is pair[1] and pair[0] is not t and pair[0].device == "cuda"


# --- the model zoo on the GPU ------------------------------------------------------------------
# With a GPU: every zoo model at a small input. On the simulator (a Python thread per GPU thread)
# the full-width models take many minutes each, so the zoo's own classes and blocks are built at
# tiny widths there: the same layers and forward code, a few channels each.

ZOO_INPUTS = {"lenet5": (1, 28), "lenet5_relu": (1, 28), "mini_alexnet": (3, 32), "alexnet": (3, 63),
              "vgg11": (3, 32), "vgg11_bn": (3, 32), "vgg16": (3, 32), "vgg16_bn": (3, 32), "resnet18": (3, 32),
              "resnet34": (3, 32), "resnet50": (3, 32), "mobilenet_v1": (3, 32), "mobilenet_v2": (3, 32)}
TINY_ZOO = ["lenet5 (tanh, avg pool)", "alexnet/vgg (VGG class, BatchNorm)", "resnet (BasicBlock, Bottleneck)",
            "mobilenet (InvertedResidual, separable)"]


def _tiny_zoo_model(name):
    from fastconv import models, nn
    from fastconv.models import VGG, BasicBlock, Bottleneck, InvertedResidual

    if name.startswith("lenet5"):
        m = models.lenet5(num_classes=3)  # LeNet5's forward, its layer kinds at tiny widths
        m.features = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Tanh(), nn.AvgPool2d(2), nn.Conv2d(2, 3, 3),
                                   nn.Tanh(), nn.AvgPool2d(2))
        m.classifier = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3))
        return m, (1, 10)
    if name.startswith("alexnet"):
        m = VGG([3, "M", 4, "M"], batch_norm=True, num_classes=3)
        m.features._modules["0"] = nn.Conv2d(3, 3, 5, stride=2, padding=2)  # AlexNet's strided, padded stem
        m.avgpool = nn.AdaptiveAvgPool2d((2, 2))
        m.classifier = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 5), nn.ReLU(True), nn.Linear(5, 3))
        return m, (3, 16)
    if name.startswith("resnet"):
        down = nn.Sequential(nn.Conv2d(2, 4, 1, 2, bias=False), nn.BatchNorm2d(4))
        return nn.Sequential(nn.Conv2d(3, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU(inplace=True),
                             BasicBlock(2, 2), BasicBlock(2, 4, 2, down), Bottleneck(4, 1),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)), (3, 4)
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU6(inplace=True),
                         InvertedResidual(4, 4, 1, 2), InvertedResidual(4, 6, 2, 1),
                         nn.Conv2d(6, 6, 3, 1, 1, groups=6, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True),
                         nn.Conv2d(6, 5, 1, bias=False), nn.BatchNorm2d(5), nn.ReLU(inplace=True),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(5, 3)), (3, 6)


def _zoo_model(name):
    from fastconv import manual_seed, models

    manual_seed(11)
    if fcuda.is_simulator():
        return _tiny_zoo_model(name)
    if name == "lenet5_relu":
        return models.lenet5(num_classes=3, classic=False), ZOO_INPUTS[name]
    return getattr(models, name)(num_classes=3, in_channels=ZOO_INPUTS[name][0]), ZOO_INPUTS[name]


def _assert_close(gpu, cpu, what):
    gpu = host(gpu)
    scale = max(float(np.abs(cpu).max()), 1e-30)
    err = float(np.abs(gpu - cpu).max())
    assert err <= 1e-9 * scale + 1e-12, f"{what}: max |gpu - cpu| = {err:.3g} for max |cpu| = {scale:.3g}"


@pytest.mark.parametrize("name", TINY_ZOO if fcuda.is_simulator() else list(ZOO_INPUTS))
def test_the_model_zoo_trains_and_infers_on_the_gpu_as_on_the_cpu(rng, name):
    """In float64 (the CPU and GPU kernels sum in different orders; in float32 one ReLU input
    near 0 may land on different sides and make a deep model's gradients differ visibly): a
    momentum-SGD step in training mode (Dropout active, the same masks on both for the same
    seed; momentum over several steps is tested above), then eval-mode inference and fused
    inference, all equal to the CPU's."""
    import copy

    from fastconv import Tensor, manual_seed, nn, no_grad, optim

    cpu, (c, size) = _zoo_model(name)
    cpu.double()
    gpu = copy.deepcopy(cpu).to("cuda")
    x = rng.standard_normal((2, c, size, size))
    t = np.array([0, 2], np.int64)
    opts = [optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4) for m in (cpu, gpu)]
    outs = []
    for m, opt, xx, tt in ((cpu, opts[0], Tensor(x), t), (gpu, opts[1], Tensor(x).cuda(), dev(t))):
        manual_seed(100)  # the same dropout masks on both devices
        opt.zero_grad()
        out = m(xx)
        nn.CrossEntropyLoss()(out, tt).backward()
        opt.step()
        outs.append(out)
    _assert_close(outs[1].data, outs[0].data, "training-mode logits")
    for (pname, pc), pg in zip(cpu.named_parameters(), gpu.parameters()):
        _assert_close(pg.grad, pc.grad, f"grad of {pname}")
        _assert_close(pg.data, pc.data, f"{pname} after the step")
    for (bname, bc), bg in zip(cpu.state_dict().items(), gpu.state_dict().values()):
        if np.asarray(bc).dtype.kind == "f":
            _assert_close(bg, bc, f"state_dict[{bname!r}]")
    cpu.eval()
    gpu.eval()
    with no_grad():
        expect = cpu(Tensor(x)).data
        _assert_close(gpu(Tensor(x).cuda()).data, expect, "eval-mode logits")
        _assert_close(nn.fuse(gpu)(Tensor(x).cuda()).data, expect, "fused inference logits")


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_a_gpu_model_saves_and_loads_its_weights(rng, tmp_path, suffix):
    import fastconv
    from fastconv import Tensor

    if suffix == ".safetensors":
        pytest.importorskip("safetensors", reason="safetensors is not installed")
    trained = _tiny_cnn(5).to("cuda")
    x = randn(rng, (2, 1, 4, 4))
    trained(Tensor(x).cuda())  # training mode: the running statistics move
    fastconv.save(trained, tmp_path / f"w{suffix}")
    state = fastconv.load(tmp_path / f"w{suffix}")
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for target in (_tiny_cnn(6), _tiny_cnn(6).to("cuda")):  # into a host model and into a GPU model
        target.load_state_dict(state)
        for (k, a), b in zip(trained.state_dict().items(), target.state_dict().values()):
            np.testing.assert_array_equal(host(b), host(a), err_msg=k)
    target = _tiny_cnn(7).to("cuda")
    target.load_state_dict(trained.state_dict())  # GPU to GPU
    trained.eval()
    target.eval()
    np.testing.assert_array_equal(target(Tensor(x).cuda()).numpy(), trained(Tensor(x).cuda()).numpy())
