"""Machine facts, thread count and the choice of kernel ISA."""

from __future__ import annotations

import contextlib
import contextvars
import operator
import os
import re
from typing import Iterator

import numpy as np

from . import _core

_backend_override: contextvars.ContextVar = contextvars.ContextVar("fastconv_backend", default=None)
_backends = {}


def as_int(value, name: str) -> int:
    """``value`` as an int (anything with ``__index__``, bools excepted); TypeError otherwise."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


def _int_at_least(value, name: str, minimum: int) -> int:
    value = as_int(value, name)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def backend():
    """The kernel set in use here: the one chosen at import, unless :func:`use_isa` overrides it."""
    override = _backend_override.get()
    return override if override is not None else _core.default_backend


def _backend_for(isa: str):
    if isa not in _backends:
        _backends[isa] = _core.backend(isa)
    return _backends[isa]


@contextlib.contextmanager
def use_isa(isa: str) -> Iterator[None]:
    """Run the kernels of one ISA (``"avx512"``, ``"avx2"`` or ``"scalar"``) inside a ``with`` block.

    The override is local to the current thread / context. Asking for an ISA the CPU
    cannot run raises ``ValueError``. The process-wide default is chosen once at import:
    the best ISA the CPU supports, or the one named by the ``FASTCONV_ISA`` environment
    variable (an unknown or unsupported name makes ``import fastconv`` fail with an
    ``ImportError`` that says why — fastconv never falls back silently).
    """
    if not isinstance(isa, str):
        raise TypeError(f"isa must be a string, got {type(isa).__name__}")
    token = _backend_override.set(_backend_for(isa))
    try:
        yield
    finally:
        _backend_override.reset(token)


def cpu_info() -> dict:
    """What fastconv sees and uses on this machine.

    Returns a dict with ``cpu`` (model name), ``detected_isa`` (best ISA the CPU and OS
    support), ``isa`` (the ISA in use), ``supported_isas``, ``cores`` and ``threads``
    (fastconv's thread count).
    """
    return {
        "cpu": _core.cpu_model(),
        "detected_isa": _core.detected_isa(),
        "isa": backend().isa,
        "supported_isas": list(_core.supported_isas()),
        "cores": _core.num_cores(),
        "threads": _core.get_num_threads(),
    }


def get_num_threads() -> int:
    """Threads each fastconv kernel uses (default: the number of cores)."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the threads each fastconv kernel uses; ``n`` must be an int >= 1.

    This is fastconv's own setting, passed to every parallel region; it does not
    change OpenMP's global state or other libraries' thread pools. A child process
    made by ``fork()`` starts at 1: GNU OpenMP's thread pool does not survive a fork,
    and a parallel region in the child would wait forever for its threads (raising
    the count there brings that back; use the ``spawn`` start method for parallel
    workers).
    """
    _core.set_num_threads(_int_at_least(n, "n", 1))


# -- the block cache (csrc/core/buffer.h) -------------------------------------------

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_BYTES = re.compile(r"(\d+)\s*(?:([KMGT])(?:I?B)?|B)?", re.IGNORECASE)


def _parse_bytes(text: str) -> int:
    """``"0"``, ``"1073741824"``, ``"512M"``, ``"2G"``, ``"2GiB"``, ``"64B"`` (binary units) -> bytes."""
    m = _BYTES.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"FASTCONV_CACHE_LIMIT must be a byte count such as 0, 536870912, 512M or 2G; got {text!r}")
    return int(m.group(1)) * _UNITS[(m.group(2) or "").upper()]


def set_cache_limit(nbytes: int) -> None:
    """Set how many idle bytes fastconv's block cache may keep (0 turns the cache off).

    fastconv's CPU kernels allocate their outputs and scratch buffers of 128 KiB and
    more from a cache of 64-byte aligned blocks: a block that is freed (an array
    numpy drops, a kernel's scratch) stays mapped and serves the next request of
    its size class, so a training loop stops paying the operating system's page
    faults on every step. Only idle blocks count against the limit; blocks in use
    are never limited. Lowering it releases the oldest idle blocks at once.

    The default is a quarter of physical memory, at most 4 GiB; the
    ``FASTCONV_CACHE_LIMIT`` environment variable (``0``, ``512M``, ``2G``, a byte
    count) sets it at import.
    """
    _core.set_cache_limit(_int_at_least(nbytes, "nbytes", 0))


def get_cache_limit() -> int:
    """The most idle bytes the block cache keeps (see :func:`set_cache_limit`)."""
    return _core.cache_stats()["cache_limit"]


def empty_cache() -> None:
    """Release every idle block of the cache to the operating system (arrays in use are untouched)."""
    _core.empty_cache()


def memory_stats() -> dict:
    """The block cache's counters: ``cache_limit``, ``cached_bytes`` and ``cached_blocks``
    (idle now), and ``hits`` / ``misses`` (requests of cacheable size served from the
    cache / from the C library, since import)."""
    return dict(_core.cache_stats())


def _limit_from_environment() -> None:
    text = os.environ.get("FASTCONV_CACHE_LIMIT")
    if text is None or text.strip() == "":
        return
    try:
        limit = _parse_bytes(text)
    except ValueError as e:
        raise ImportError(f"fastconv: {e}") from None
    _core.set_cache_limit(limit)


_limit_from_environment()
