"""Machine facts, thread count and the choice of kernel ISA."""

from __future__ import annotations

import contextlib
import contextvars
import operator
from typing import Iterator

from . import _core

_backend_override: contextvars.ContextVar = contextvars.ContextVar("fastconv_backend", default=None)
_backends = {}


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
    change OpenMP's global state or other libraries' thread pools.
    """
    if isinstance(n, bool):
        raise TypeError("n must be an int, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an int, got {type(n).__name__}") from None
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    _core.set_num_threads(n)
