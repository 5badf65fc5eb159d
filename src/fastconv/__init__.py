"""fastconv: fast CNN kernels for Python.

A C++/OpenMP core (packed GEMM, direct / im2col / pointwise / depthwise convolution)
compiled once per ISA (AVX-512, AVX2+FMA, scalar) and chosen at import by CPU
detection. ``fastconv.ops`` is the numpy API::

    import numpy as np, fastconv
    x = np.random.rand(1, 3, 224, 224).astype(np.float32)
    w = np.random.rand(64, 3, 7, 7).astype(np.float32)
    y = fastconv.ops.conv2d(x, w, stride=2, padding=3, activation="relu")

The same ops run on Numba CUDA kernels when given GPU arrays (``fastconv.cuda``).
"""

__version__ = "0.1.0"

from ._runtime import (cpu_info, empty_cache, get_cache_limit, get_num_threads, memory_stats, set_cache_limit,
                       set_num_threads, use_isa)
from . import cuda, ops, tuning  # fastconv.cuda imports no numba until a GPU array arrives
from ._random import manual_seed
from .autograd import Tensor, enable_grad, is_grad_enabled, no_grad
from .tuning import tune
from . import models, nn, optim  # noqa: E402 (nn builds on autograd)
from .analysis import summary
from .io import load, save

__all__ = ["cpu_info", "get_num_threads", "set_num_threads", "use_isa", "set_cache_limit", "get_cache_limit",
           "empty_cache", "memory_stats", "ops", "cuda", "tune", "tuning", "Tensor", "no_grad",
           "enable_grad", "is_grad_enabled", "manual_seed", "nn", "optim", "models", "save", "load", "summary",
           "__version__"]
