"""Block-alternating, median-of-many timing.

fastconv, PyTorch and numpy's BLAS each run their own thread pool, and each pool's
idle workers spin for a while after a call. Alternating single calls lets those
spinning workers steal a core from the other library's next call (measured here:
ratios off by up to 2x in either direction). So the libraries alternate in *blocks*
of calls; the first call of each block, which pays for the other pool winding
down, is not counted. Blocks repeat until the time budget is spent, so drift in
machine load hits both sides alike.

GPU work is asynchronous: with ``sync`` (a function that waits for the device), each
sample is a whole block of calls, launched back to back and closed by one ``sync``,
divided by the block's length: the time per call of a stream of calls, as a training
loop sees it (host-side launch costs included wherever they exceed the kernel's time).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Callable, Dict, List, Optional


def _one(fn, sync: Optional[Callable[[], object]] = None) -> float:
    t0 = time.perf_counter()
    fn()
    if sync is not None:
        sync()
    return time.perf_counter() - t0


def _block(fn, k: int, sync: Optional[Callable[[], object]]) -> List[float]:
    """``k`` timed calls: one sample each, or with ``sync`` one sample for all (their mean)."""
    if sync is None:
        return [_one(fn) for _ in range(k)]
    t0 = time.perf_counter()
    for _ in range(k):
        fn()
    sync()
    return [(time.perf_counter() - t0) / k]


def time_alternating(fns: Dict[str, Callable[[], object]], *, budget_s: float = 1.0, block_s: float = 0.03,
                     min_rounds: int = 3, max_rounds: int = 50, discard: int = 1,
                     sync: Optional[Callable[[], object]] = None) -> Dict[str, dict]:
    """Times each callable in alternating blocks and returns, per name,
    ``{"median": s, "p25": s, "p75": s, "runs": k}`` over the samples (the counted calls;
    with ``sync``, the blocks' per-call means)."""
    est = {}
    for name, fn in fns.items():
        _one(fn, sync)  # warm-up: first-touch allocations, caches, thread pools, kernel compilation
        est[name] = max(_one(fn, sync), 1e-6)
    block = {name: int(min(50, max(2, math.ceil(block_s / t)))) for name, t in est.items()}
    samples = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        for name, fn in fns.items():
            for _ in range(discard):
                _one(fn, sync)
            samples[name].extend(_block(fn, block[name], sync))
        rounds += 1
    out = {}
    for name, ts in samples.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = {"median": statistics.median(ts), "p25": q[0], "p75": q[2], "runs": len(ts)}
    return out
