"""fastconv inside PyTorch: ``torch.ops.fastconv.*`` custom ops, drop-in modules and ``convert(model)``.

This is the only part of fastconv that imports torch. Importing it registers the
custom operators (``torch.ops.fastconv.conv2d``, ``...batch_norm``, ...) with autograd
formulas that call fastconv's backward kernels and fake-tensor kernels for
``torch.compile``.
"""

import importlib.util

if importlib.util.find_spec("torch") is None:
    raise ImportError("fastconv.torch needs PyTorch, which is not installed: pip install torch "
                      "(or pip install 'fastconv[torch]')")

from . import functional
from . import _ops as ops

__all__ = ["functional", "ops"]
