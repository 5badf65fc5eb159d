"""The int64 index paths: ops on one array of more than 2**31 elements (8.6 GB of float32), checked
at the positions beyond 2**31 where 32-bit offsets would wrap. Runs in a subprocess (so the memory
is returned at once) and only where the machine has the memory free."""

import json
import subprocess
import sys
import textwrap

import pytest

NEED_GB = 14  # the 8.6 GB input, the pooled output (2.1 GB) and headroom

SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from fastconv import ops

    n = 2 ** 31 + 4096                      # elements: beyond int32
    x = np.empty(n, np.float32)
    tile = np.arange(4096, dtype=np.float32) / 4096 - 0.5
    x.reshape(-1, 4096)[:] = tile           # a known pattern everywhere
    x[-4096:] = np.linspace(-3, 3, 4096, dtype=np.float32)   # and something distinct at the end
    out = {}

    # Max pooling over a (1, 1, 2, 2**30 + 2048) plane: 2**31 + 4096 elements in one plane.
    plane = x.reshape(1, 1, 2, -1)
    y = ops.max_pool2d(plane, 2, 2)
    expect = np.maximum(np.maximum(plane[0, 0, 0, 0::2], plane[0, 0, 0, 1::2]),
                        np.maximum(plane[0, 0, 1, 0::2], plane[0, 0, 1, 1::2]))
    out["max_pool2d"] = [list(y.shape), bool(np.array_equal(y[0, 0, 0, -2048:], expect[-2048:])),
                         bool(np.array_equal(y[0, 0, 0, :2048], expect[:2048]))]
    del y

    # linear / the GEMM on (2**21 + 4, 1024) rows: row offsets beyond 2**31 elements.
    rows = x.reshape(-1, 1024)
    w = np.random.default_rng(0).standard_normal((16, 1024)).astype(np.float32)
    z = ops.linear(rows, w)
    tail = rows[-8:].astype(np.float64) @ w.T.astype(np.float64)
    out["linear"] = [list(z.shape), float(np.abs(z[-8:] - tail).max()),
                     float(np.abs(z[:8] - rows[:8].astype(np.float64) @ w.T.astype(np.float64)).max())]
    print(json.dumps(out))
""")


def _available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:")) / 2 ** 20
    except (OSError, StopIteration):
        return 0.0


@pytest.mark.skipif(_available_gb() < NEED_GB, reason=f"needs {NEED_GB} GB of free memory")
def test_ops_on_more_than_two_to_the_31_elements():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    shape, tail_ok, head_ok = out["max_pool2d"]
    assert shape == [1, 1, 1, 2 ** 29 + 1024] and tail_ok and head_ok
    shape, tail_err, head_err = out["linear"]
    assert shape == [2 ** 21 + 4, 16] and tail_err < 1e-3 and head_err < 1e-3


def test_an_allocation_that_cannot_fit_raises_memory_error_and_the_process_goes_on():
    import numpy as np

    from fastconv import ops

    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 1, 1), np.float32)
    # 2**22 x 2**22 output positions (2**44 floats, 64 TiB): within the 2**48-element bound, so the
    # allocation itself is what fails.
    with pytest.raises(MemoryError):
        ops.conv2d(x, w, padding=2 ** 21)
    with pytest.raises(MemoryError):
        ops.max_pool2d(np.broadcast_to(np.float32(1), (1, 2 ** 20, 2 ** 12, 2 ** 12)), 1)
    # Nothing else was disturbed: the same calls on sane sizes still give the right answers.
    np.testing.assert_array_equal(ops.conv2d(x, w, padding=1)[0, 0, 1:-1, 1:-1], x[0, 0])
    np.testing.assert_array_equal(ops.max_pool2d(x, 2), np.ones((1, 1, 2, 2), np.float32))
