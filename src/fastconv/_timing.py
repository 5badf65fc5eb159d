"""Block-alternating, median-of-many timing.

fastconv, PyTorch and numpy's BLAS each run their own thread pool, and each pool's
idle workers spin for a while after a call. Alternating single calls lets those
spinning workers steal a core from the other library's next call (measured here:
ratios off by up to 2x in either direction). So the libraries alternate in *blocks*
of calls; the first call of each block, which pays for the other pool winding
down, is not counted. Blocks repeat until the time budget is spent, so drift in
machine load hits both sides alike.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Dict


def _one(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def time_alternating(fns: Dict[str, Callable[[], object]], *, budget_s: float = 1.0, block_s: float = 0.03,
                     min_rounds: int = 3, max_rounds: int = 50, discard: int = 1) -> Dict[str, dict]:
    """Times each callable in alternating blocks and returns, per name,
    ``{"median": s, "p25": s, "p75": s, "runs": k}`` over the counted calls."""
    est = {}
    for name, fn in fns.items():
        fn()  # warm-up: first-touch allocations, caches, thread pools
        est[name] = max(_one(fn), 1e-6)
    block = {name: int(min(50, max(2, math.ceil(block_s / t)))) for name, t in est.items()}
    samples = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        for name, fn in fns.items():
            for _ in range(discard):
                fn()
            samples[name].extend(_one(fn) for _ in range(block[name]))
        rounds += 1
    out = {}
    for name, ts in samples.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = {"median": statistics.median(ts), "p25": q[0], "p75": q[2], "runs": len(ts)}
    return out
