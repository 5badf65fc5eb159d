"""Determinism: the same inputs and thread count give bitwise identical outputs, call after call
and process after process; across thread counts every op below is bitwise identical too, except
the weight gradient of a dense (non-depthwise) convolution, whose per-thread partial sums are
added in an order that depends on the thread count (SECURITY.md, *Threads and determinism*)."""

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastconv
from fastconv import ops

# Ops whose outputs do not depend on the thread count, bit for bit.
THREAD_INVARIANT = ["conv2d direct", "conv2d im2col", "conv2d depthwise", "conv2d_backward depthwise", "matmul",
                    "linear", "max_pool2d", "avg_pool2d_backward", "batch_norm train", "batch_norm_backward",
                    "softmax", "log_softmax_backward", "cross_entropy", "cross_entropy_backward", "gelu"]


def cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16, 20, 20), dtype=np.float32)
    w = rng.standard_normal((32, 16, 3, 3), dtype=np.float32)
    dw = rng.standard_normal((16, 1, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((4, 32, 20, 20), dtype=np.float32)
    gyd = rng.standard_normal((4, 16, 20, 20), dtype=np.float32)
    a = rng.standard_normal((300, 500), dtype=np.float32)
    b = rng.standard_normal((500, 200), dtype=np.float32)
    z = rng.standard_normal((512, 100), dtype=np.float32)
    t = rng.integers(0, 100, 512)
    _, mean, invstd = ops.batch_norm(x, None, None, training=True)
    return {
        "conv2d direct": lambda: ops.conv2d(x, w, padding=1, algo="direct"),
        "conv2d im2col": lambda: ops.conv2d(x, w, padding=1, algo="im2col"),
        "conv2d depthwise": lambda: ops.conv2d(x, dw, padding=1, groups=16),
        "conv2d_backward": lambda: ops.conv2d_backward(gy, x, w, padding=1),
        "conv2d_backward depthwise": lambda: ops.conv2d_backward(gyd, x, dw, padding=1, groups=16),
        "matmul": lambda: ops.matmul(a, b),
        "linear": lambda: ops.linear(a, b.T),
        "max_pool2d": lambda: ops.max_pool2d(x, 3, 2, 1, return_indices=True),
        "avg_pool2d_backward": lambda: ops.avg_pool2d_backward(gyd[:, :, :10, :10], x.shape, 2),
        "batch_norm train": lambda: ops.batch_norm(x, None, None, training=True),
        "batch_norm_backward": lambda: ops.batch_norm_backward(gyd, x, None, mean, invstd),
        "softmax": lambda: ops.softmax(z, 1),
        "log_softmax_backward": lambda: ops.log_softmax_backward(z, ops.log_softmax(z, 1), 1),
        "cross_entropy": lambda: ops.cross_entropy(z, t),
        "cross_entropy_backward": lambda: ops.cross_entropy_backward(np.float32(1), z, t),
        "gelu": lambda: ops.gelu(x),
    }


def outputs(result):
    return [np.asarray(r) for r in (result if isinstance(result, tuple) else (result,)) if r is not None]


def digests(threads: int) -> dict:
    fastconv.set_num_threads(threads)
    out = {}
    for name, fn in cases().items():
        h = hashlib.sha256()
        for r in outputs(fn()):
            h.update(np.ascontiguousarray(r).tobytes())
        out[name] = h.hexdigest()
    return out


def test_same_thread_count_gives_identical_bits_call_after_call(restore_threads):
    assert digests(2) == digests(2)


def test_same_thread_count_gives_identical_bits_process_after_process():
    here = str(Path(__file__).resolve().parent)
    code = f"import json, sys; sys.path.insert(0, {here!r}); import test_determinism as d; print(json.dumps(d.digests(2)))"
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr[-2000:]
    first, second = (r.stdout.strip().splitlines()[-1] for r in runs)
    assert first == second


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_outputs_across_thread_counts(restore_threads, threads):
    one = digests(1)
    many = digests(threads)
    changed = [name for name in THREAD_INVARIANT if one[name] != many[name]]
    assert not changed, f"not bitwise identical at 1 and {threads} threads: {changed}"
    # The documented exception agrees to rounding.
    fastconv.set_num_threads(1)
    ref = outputs(cases()["conv2d_backward"]())
    fastconv.set_num_threads(threads)
    for r, g in zip(ref, outputs(cases()["conv2d_backward"]())):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-4)
