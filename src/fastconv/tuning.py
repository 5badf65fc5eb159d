"""Autotuning of the convolution algorithm: :func:`tune`.

``fastconv.tune(cases)`` times every algorithm that can run each given convolution and
stores the fastest per (shape, dtype, thread count, ISA) in a JSON file in the user's
cache directory: ``$FASTCONV_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/fastconv``
(``~/.cache/fastconv`` when XDG_CACHE_HOME is unset). From then on, in this process and
later ones, ``conv1d``/``conv2d``/``conv3d`` with ``algo='auto'`` run the cached winner
for exactly those shapes; other shapes keep the built-in heuristic. A corrupt or foreign
cache file is ignored with a warning (see :mod:`fastconv.ops._tune_cache`).
"""

from __future__ import annotations

import datetime
from typing import Iterable, List, Mapping

import numpy as np

from ._timing import time_alternating
from .ops._tune_cache import FILENAME, FORMAT, VERSION, cache_dir, cache_path, clear_cache, key, reload_cache, store
from .ops.conv import _Conv, _forward, _heuristic_algo

# The heuristic's choice stays unless another algorithm is more than this much faster.
TIE_MARGIN = 0.03

__all__ = ["tune", "cache_dir", "cache_path", "clear_cache", "reload_cache", "FILENAME", "FORMAT", "VERSION"]

def _spec(case) -> Mapping:
    if isinstance(case, Mapping):
        return case
    spec = getattr(case, "spec", None)
    if callable(spec):
        return spec()
    raise TypeError(f"each case must be a mapping with 'input_shape' and 'weight_shape' (or a "
                    f"fastconv.bench ConvCase), got {type(case).__name__}")


def _validated(case, dtype: str) -> _Conv:
    """The convolution a case describes, on uninitialised arrays of its shapes."""
    spec = _spec(case)
    unknown = set(spec) - {"input_shape", "weight_shape", "stride", "padding", "dilation", "groups"}
    if unknown or "input_shape" not in spec or "weight_shape" not in spec:
        raise ValueError(f"a tuning case needs 'input_shape' and 'weight_shape' and may have 'stride', "
                         f"'padding', 'dilation', 'groups'; got keys {sorted(spec)}")
    x = np.empty(tuple(spec["input_shape"]), dtype)
    w = np.empty(tuple(spec["weight_shape"]), dtype)
    if x.ndim not in (3, 4, 5):
        raise ValueError(f"input_shape must be (N, C, *spatial) with 1 to 3 spatial axes, got {x.shape}")
    return _Conv(x.ndim - 2, x, w, spec.get("stride", 1), spec.get("padding", 0), spec.get("dilation", 1),
                 spec.get("groups", 1))


def tune(cases: Iterable, *, budget_s: float = 0.5, save: bool = True, dtype: str = "float32") -> List[dict]:
    """Times every eligible convolution algorithm for each case and caches the winners.

    Args:
        cases: convolutions to tune, each a mapping with ``input_shape`` ((N, C, *spatial))
            and ``weight_shape`` and optionally ``stride``, ``padding``, ``dilation`` and
            ``groups`` (as for ``conv2d``), or an object whose ``spec()`` returns such a
            mapping (the benchmark's ``fastconv.bench.ConvCase``).
        budget_s: seconds of timing per case (algorithms alternate in blocks; medians).
        save: write the winners to the cache file (merged with its valid entries), so that
            ``algo='auto'`` uses them in this and later processes.
        dtype: ``'float32'`` or ``'float64'``.

    Returns:
        One dict per case: ``key``, ``input_shape``, ``weight_shape``, ``times_s``
        (median seconds per algorithm), ``best`` (the fastest, unless the heuristic's choice
        is within ``TIE_MARGIN`` (3 %) of it: then the heuristic's), ``heuristic`` (what
        ``auto`` picked without the cache) and ``speedup`` (heuristic time / best time).
    """
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    if not budget_s >= 0:
        raise ValueError(f"budget_s must be >= 0, got {budget_s}")
    convs = [_validated(case, dtype) for case in list(cases)]  # every case checked before any is timed
    rng = np.random.default_rng(0)
    results = []
    for conv in convs:
        conv.x[...] = rng.standard_normal(conv.x.shape)
        conv.w[...] = rng.standard_normal(conv.w.shape)
        fns = {a: (lambda a=a: _forward(conv, None, None, a, None)) for a in conv.eligible_algos()}
        times = {a: t["median"] for a, t in time_alternating(fns, budget_s=budget_s).items()}
        heuristic = _heuristic_algo(conv)
        best = min(times, key=times.get)
        if times[heuristic] <= (1 + TIE_MARGIN) * times[best]:
            best = heuristic  # a win within the timing noise is no reason to leave the heuristic
        results.append({"key": key(conv), "input_shape": list(conv.x.shape), "weight_shape": list(conv.w.shape),
                        "times_s": times, "best": best, "heuristic": heuristic,
                        "speedup": times[heuristic] / times[best]})
    if save and results:
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        store({r["key"]: {"algo": r["best"], "times_s": r["times_s"], "date": now} for r in results})
    return results
