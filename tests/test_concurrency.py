"""Many Python threads calling fastconv's ops at once (the kernels release the GIL) get exactly
the answers of serial calls, and changing the thread count from another thread mid-run is safe."""

import threading

import numpy as np

import fastconv
from fastconv import ops

THREADS = 8
CALLS_PER_THREAD = 1000


def _shared_weights():
    rng = np.random.default_rng(0)
    return {"w": rng.standard_normal((6, 4, 3, 3), dtype=np.float32),
            "dw": rng.standard_normal((4, 1, 3, 3), dtype=np.float32),
            "fc": rng.standard_normal((5, 4 * 8 * 8), dtype=np.float32),
            "b": rng.standard_normal(6, dtype=np.float32)}


def _calls(k: int, shared):
    """Thread k's work: its own input sizes, the shared weights; each call a function of nothing."""
    rng = np.random.default_rng(100 + k)
    n, size = 1 + k % 3, 8 + 2 * (k % 4)
    x = rng.standard_normal((n, 4, size, size), dtype=np.float32)
    x8 = rng.standard_normal((n, 4, 8, 8), dtype=np.float32)
    gy = rng.standard_normal((n, 6, size, size), dtype=np.float32)
    logits = rng.standard_normal((n + 2, 5), dtype=np.float32)
    target = rng.integers(0, 5, n + 2)
    w, dw, fc, b = shared["w"], shared["dw"], shared["fc"], shared["b"]
    return [
        ("conv2d direct", lambda: ops.conv2d(x, w, b, padding=1, algo="direct")),
        ("conv2d im2col", lambda: ops.conv2d(x, w, b, padding=1, algo="im2col", activation="relu")),
        ("conv2d depthwise", lambda: ops.conv2d(x, dw, padding=1, groups=4)),
        ("conv2d_backward", lambda: ops.conv2d_backward(gy, x, w, padding=1)),
        ("linear", lambda: ops.linear(x8.reshape(n, -1), fc)),
        ("max_pool2d", lambda: ops.max_pool2d(x, 3, 2, 1, return_indices=True)),
        ("avg_pool2d", lambda: ops.avg_pool2d(x, 2)),
        ("batch_norm", lambda: ops.batch_norm(x, None, None, training=True)),
        ("softmax", lambda: ops.softmax(logits, 1)),
        ("cross_entropy", lambda: ops.cross_entropy(logits, target)),
    ]


def _as_list(result):
    return [np.asarray(r) for r in (result if isinstance(result, tuple) else (result,)) if r is not None]


def _run_threads(worker):
    errors = []

    def guarded(k):
        try:
            worker(k)
        except BaseException as e:  # reported by the main thread
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=guarded, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:5]


def test_threads_calling_ops_concurrently_get_the_serial_answers():
    shared = _shared_weights()
    work = [_calls(k, shared) for k in range(THREADS)]
    expected = [[_as_list(fn()) for _, fn in calls] for calls in work]
    counts = [0] * THREADS
    mismatches = []

    def worker(k):
        calls = work[k]
        for i in range(CALLS_PER_THREAD):
            j = i % len(calls)
            got = _as_list(calls[j][1]())
            if len(got) != len(expected[k][j]) or not all(np.array_equal(g, e) for g, e in zip(got, expected[k][j])):
                mismatches.append(f"thread {k}, call {i}: {calls[j][0]}")
            counts[k] += 1

    _run_threads(worker)
    assert counts == [CALLS_PER_THREAD] * THREADS
    assert not mismatches, mismatches[:10]
    for name, original in _shared_weights().items():  # the shared weights were only read
        assert np.array_equal(shared[name], original), name


def test_set_num_threads_from_another_thread_mid_run_is_safe():
    shared = _shared_weights()
    work = [_calls(k, shared) for k in range(THREADS)]
    before = fastconv.get_num_threads()
    expected = [[_as_list(fn()) for _, fn in calls] for calls in work]
    stop = threading.Event()
    switches = [0]

    def switcher():
        n = 1
        while not stop.is_set():
            fastconv.set_num_threads(n)
            switches[0] += 1
            n = 3 - n  # 1, 2, 1, ...

    bad = []

    def worker(k):
        for i in range(CALLS_PER_THREAD // 4):
            j = i % len(work[k])
            got = _as_list(work[k][j][1]())
            for g, e in zip(got, expected[k][j]):
                # Reductions may split differently at another thread count: equal to rounding.
                if g.shape != e.shape or not np.allclose(g, e, rtol=1e-5, atol=1e-5):
                    bad.append(f"thread {k}, call {i}: {work[k][j][0]}")

    s = threading.Thread(target=switcher)
    s.start()
    try:
        _run_threads(worker)
    finally:
        stop.set()
        s.join()
        fastconv.set_num_threads(before)
    assert switches[0] > 1 and not bad, bad[:10]
    assert fastconv.get_num_threads() == before
