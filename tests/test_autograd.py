"""fastconv.Tensor's autograd: gradients by finite differences (float64), accumulation,
no_grad, detach, and freeing of the saved buffers."""

import gc
import weakref

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, no_grad
from fastconv.nn import functional as F
from reference import numerical_grad


def _check_grad(fn, *arrays, tol=1e-6):
    """fn maps Tensors to a Tensor; compares each input's autograd gradient of sum(out * gy)
    with central differences."""
    rng = np.random.default_rng(7)
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*ts)
    gy = rng.standard_normal(out.shape)
    out.backward(gy)
    for i, a in enumerate(arrays):
        def f(v, i=i):
            args = [Tensor(v) if j == i else Tensor(b) for j, b in enumerate(arrays)]
            return fn(*args).data

        num = numerical_grad(f, a, gy)
        np.testing.assert_allclose(ts[i].grad, num, rtol=tol, atol=tol)


@pytest.mark.parametrize("fn, shapes", [
    (lambda a, b: a + b, [(3, 4), (3, 4)]),
    (lambda a, b: a + b, [(3, 4), (4,)]),  # broadcast
    (lambda a, b: a - b, [(2, 3, 1), (3, 5)]),
    (lambda a, b: a * b, [(3, 4), (1, 4)]),
    (lambda a, b: a / b, [(3, 4), (3, 4)]),
    (lambda a: a ** 3, [(5,)]),
    (lambda a: 2.0 - a * 3.0, [(2, 2)]),
    (lambda a, b: a @ b, [(3, 5), (5, 2)]),
    (lambda a: a.sum(), [(3, 4)]),
    (lambda a, b: a.sum() + b.mean() - a.mean(), [(3, 4), (2,)]),  # scalars added (two losses)
    (lambda a: a.sum(1, keepdim=True), [(3, 4)]),
    (lambda a: a.mean(0), [(3, 4)]),
    (lambda a: a.reshape(6, 2).T, [(3, 4)]),
    (lambda a: a.transpose(0, 2).flatten(1), [(2, 3, 4)]),
    (lambda a: a[1:, ::2], [(3, 4)]),
    (lambda a: -a[[0, 0, 2]], [(3, 4)]),  # repeated index: gradients add up
])
def test_tensor_arithmetic_gradients(fn, shapes):
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s) for s in shapes]
    arrays[1:] = [np.abs(a) + 0.5 for a in arrays[1:]]  # second operands (divisors) away from 0
    assert fn(*[Tensor(a) for a in arrays]).dtype == np.float64  # float64 stays float64
    _check_grad(fn, *arrays)


@pytest.mark.parametrize("fn, shapes", [
    (lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1), [(2, 3, 7, 6), (4, 3, 3, 3), (4,)]),
    (lambda x, w, b: F.conv2d(x, w, b, padding=1, activation="relu"), [(1, 2, 5, 5), (3, 2, 3, 3), (3,)]),
    (lambda x, w, b: F.conv1d(x, w, b, groups=2), [(2, 4, 9), (6, 2, 3), (6,)]),
    (lambda x, w, b: F.conv_transpose2d(x, w, b, stride=2), [(1, 2, 4, 4), (2, 3, 3, 3), (3,)]),
    (lambda x, w, b: F.linear(x, w, b, activation="relu6"), [(4, 5), (3, 5), (3,)]),
    (lambda x: F.max_pool2d(x, 2), [(2, 2, 6, 6)]),
    (lambda x: F.avg_pool2d(x, 3, 2, 1), [(2, 2, 7, 7)]),
    (lambda x: F.adaptive_avg_pool2d(x, (2, 3)), [(1, 2, 5, 7)]),
    (lambda x, w, b: F.batch_norm(x, np.zeros(3), np.ones(3), w, b, training=True), [(4, 3, 2, 2), (3,), (3,)]),
    (lambda x: F.gelu(F.tanh(F.sigmoid(x))), [(3, 7)]),
    (lambda x: F.log_softmax(F.leaky_relu(x, 0.1), 1), [(3, 7)]),
    (lambda x: F.cross_entropy(x, np.array([1, 0, 4])), [(3, 5)]),
    (lambda x, y: F.mse_loss(x, y), [(3, 4), (3, 4)]),
    (lambda a, b: F.cat([a, F.relu6(b)], 1), [(2, 3, 2), (2, 1, 2)]),
])
def test_functional_gradients(fn, shapes):
    rng = np.random.default_rng(1)
    _check_grad(fn, *[rng.standard_normal(s) for s in shapes], tol=1e-5)


def test_gradients_accumulate_until_cleared():
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (w * 3.0).sum().backward()
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad, [3 + 2, 3 + 4])
    w.grad = None
    (w * 3.0).sum().backward()
    np.testing.assert_allclose(w.grad, [3, 3])


def test_a_tensor_used_twice_gets_both_gradients():
    x = Tensor(np.array([2.0]), requires_grad=True)
    y = x * x + x  # dy/dx = 2x + 1
    y.backward()
    np.testing.assert_allclose(x.grad, [5.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_gradients_are_copied_and_summed_on_fastconv_threads_without_aliasing(dtype):
    # 2^16 elements: above the block cache's 128 KiB in either dtype, so the first gradient is copied
    # in parallel into a cached block and the second added by fastconv's add kernel.
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal(1 << 16).astype(dtype), rng.standard_normal(1 << 16).astype(dtype)
    x = Tensor(a, requires_grad=True)
    y = Tensor(b, requires_grad=True)
    s = x + y  # both parents receive the same gradient array
    out = s * s + x * 3.0  # x's gradient has two parts: 2s + 3
    gy = rng.standard_normal(1 << 16).astype(dtype)
    out.backward(gy)
    s64 = a.astype(np.float64) + b
    np.testing.assert_allclose(x.grad, gy * (2 * s64 + 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y.grad, gy * 2 * s64, rtol=1e-5, atol=1e-5)
    assert x.grad.dtype == dtype and not np.shares_memory(x.grad, y.grad)


def test_backward_frees_the_graph_and_refuses_a_second_pass():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    loss = (F.relu(x) * 2.0).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_saved_buffers_are_freed_once_backward_has_used_them():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((1, 2, 8, 8)).astype(np.float32), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)).astype(np.float32), requires_grad=True)
    h = F.conv2d(x, w, padding=1)
    saved = weakref.ref(h.data)  # relu saves its input for backward
    loss = F.relu(h).sum()
    del h
    gc.collect()
    assert saved() is not None  # still held by the graph
    loss.backward()
    gc.collect()
    assert saved() is None and x.grad is not None and w.grad is not None


def test_no_grad_records_nothing():
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    with no_grad():
        y = F.relu(w) * 2.0
        assert not fastconv.is_grad_enabled()
        with fastconv.enable_grad():
            z = w * 1.0
    assert not y.requires_grad and y.grad_fn is None and y.is_leaf
    assert z.requires_grad and fastconv.is_grad_enabled()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_detach_and_requires_grad_rules():
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    d = (w * 2.0).detach()
    assert not d.requires_grad and d.is_leaf
    with pytest.raises(TypeError, match="float32 and float64"):
        Tensor(np.arange(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf"):
        (w * 2.0).requires_grad_(False)
    with pytest.raises(RuntimeError, match="scalar outputs"):
        (w * 2.0).backward()
    with pytest.raises(ValueError, match="shape"):
        (w * 2.0).backward(np.ones(4))
    assert Tensor(1.5).dtype == np.float32 and Tensor(np.float64(1.5)).dtype == np.float64


def test_deep_graph_needs_no_recursion():
    x = Tensor(np.ones(2), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0, 1.0])
