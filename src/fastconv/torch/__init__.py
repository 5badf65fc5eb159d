"""fastconv inside PyTorch: ``torch.ops.fastconv.*`` custom ops, drop-in modules and ``convert(model)``.

This is the only part of fastconv that imports torch. Importing it registers the
custom operators (``torch.ops.fastconv.conv2d``, ``...batch_norm``, ...) with autograd
formulas that call fastconv's backward kernels and fake-tensor kernels for
``torch.compile``.

Threads: fastconv's kernels use fastconv's own thread count
(:func:`fastconv.set_num_threads`, default = cores), torch's layers use
``torch.get_num_threads()``. A custom op runs on the calling thread while torch's pool
waits, so the two pools take turns rather than compete; :func:`set_num_threads` sets
both at once.
"""

import importlib.util

if importlib.util.find_spec("torch") is None:
    raise ImportError("fastconv.torch needs PyTorch, which is not installed: pip install torch "
                      "(or pip install 'fastconv[torch]')")

import torch  # noqa: E402

from .. import _runtime  # noqa: E402
from . import functional, models, nn  # noqa: E402
from . import _ops as ops  # noqa: E402
from .convert import SUPPORTED, ConversionReport, conversion_report, convert, from_fastconv, to_fastconv  # noqa: E402


def set_num_threads(n: int) -> None:
    """Set the threads of both fastconv's kernels and torch's intra-op pool to ``n``."""
    _runtime.set_num_threads(n)
    torch.set_num_threads(n)


def get_num_threads() -> dict:
    """``{"fastconv": ..., "torch": ...}``: each library's intra-op thread count."""
    return {"fastconv": _runtime.get_num_threads(), "torch": torch.get_num_threads()}


__all__ = ["functional", "nn", "ops", "models", "convert", "conversion_report", "ConversionReport", "SUPPORTED",
           "from_fastconv", "to_fastconv", "set_num_threads", "get_num_threads"]
