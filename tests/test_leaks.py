"""Leaks: 10,000 calls of each op family grow the resident memory by less than 5 MB, and 100
training steps of a small CNN leave it flat (the autograd tape frees its buffers). Measured in a
fresh subprocess, after a warm-up, from /proc/self/statm."""

import json
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")

CALLS = 10_000
LIMIT_MB = 5.0

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import fastconv
    from fastconv import nn, ops, optim, Tensor

    PAGE = os.sysconf("SC_PAGE_SIZE")

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2 ** 20

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 12, 12), dtype=np.float32)
    w = rng.standard_normal((6, 4, 3, 3), dtype=np.float32)
    dw = rng.standard_normal((4, 1, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((2, 6, 12, 12), dtype=np.float32)
    z = rng.standard_normal((16, 10), dtype=np.float32)
    t = rng.integers(0, 10, 16)
    a = rng.standard_normal((16, 64), dtype=np.float32)
    big = rng.standard_normal((4, 16, 32, 32), dtype=np.float32)  # 256 KiB: its results come from the block cache
    w16 = np.repeat(w, 4, axis=1)
    fc = rng.standard_normal((10, 64), dtype=np.float32)
    families = {
        "conv2d (direct, im2col, depthwise)": lambda: (ops.conv2d(x, w, padding=1, algo="direct"),
                                                       ops.conv2d(x, w, padding=1, algo="im2col"),
                                                       ops.conv2d(x, dw, padding=1, groups=4)),
        "conv2d_backward": lambda: ops.conv2d_backward(gy, x, w, padding=1),
        "pooling": lambda: (ops.max_pool2d(x, 2, return_indices=True), ops.avg_pool2d(x, 3, 2, 1),
                            ops.adaptive_avg_pool2d(x, 5)),
        "batch_norm": lambda: ops.batch_norm_backward(x, x, None, *ops.batch_norm(x, None, None, training=True)[1:]),
        "activations": lambda: (ops.relu(x), ops.gelu(x), ops.sigmoid_backward(x, ops.sigmoid(x))),
        "softmax, cross_entropy": lambda: (ops.log_softmax(z, 1), ops.cross_entropy(z, t),
                                           ops.cross_entropy_backward(np.float32(1), z, t)),
        "linear, matmul": lambda: (ops.linear(a, fc), ops.matmul(a, fc.T)),
        "cached blocks (arrays and scratch of 128 KiB and more)": lambda: (
            ops.relu(big)[1:], ops.conv2d(big, w16, padding=1, algo="im2col")),
    }
    growth = {}
    for name, fn in families.items():
        for _ in range(200):  # warm-up: allocator pools, thread pools, caches
            fn()
        before = rss_mb()
        for _ in range(int(sys.argv[1])):
            fn()
        growth[name] = rss_mb() - before

    fastconv.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * 6 * 6, 10))
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xb = Tensor(rng.standard_normal((8, 1, 12, 12), dtype=np.float32))
    tb = rng.integers(0, 10, 8)
    rss = []
    for step in range(100):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(model(xb), tb)
        loss.backward()
        opt.step()
        rss.append(rss_mb())
    growth["training, steps 10-100"] = rss[-1] - rss[9]
    print(json.dumps(growth))
""")


def test_op_families_and_training_steps_do_not_grow_memory():
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(CALLS)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    growth = json.loads(proc.stdout.strip().splitlines()[-1])
    print("resident memory growth (MB):", {k: round(v, 2) for k, v in growth.items()})
    assert len(growth) == 9
    grew = {k: v for k, v in growth.items() if v >= LIMIT_MB}
    assert not grew, f"resident memory grew by {LIMIT_MB} MB or more: {grew}"
