"""fastconv's numpy API: validated ops, forward and backward, on the CPU kernels.

Every function takes and returns numpy arrays (float32, the fast path, or float64)
and follows ``torch.nn.functional``'s names and argument conventions. Each
differentiable op ``f`` has an ``f_backward`` that returns the gradients of its
inputs given the gradient of its output.
"""

from .conv import (
    ALGORITHMS,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv2d_output_shape,
    conv3d,
    conv3d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
    depthwise_separable_conv2d,
)
from .linalg import linear, linear_backward, matmul
from .pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    adaptive_max_pool2d,
    adaptive_max_pool2d_backward,
    avg_pool1d,
    avg_pool1d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    avg_pool3d,
    avg_pool3d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    max_pool1d,
    max_pool1d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool3d,
    max_pool3d_backward,
)

__all__ = [
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "adaptive_max_pool2d",
    "adaptive_max_pool2d_backward",
    "avg_pool1d",
    "avg_pool1d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    "avg_pool3d",
    "avg_pool3d_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "max_pool1d",
    "max_pool1d_backward",
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool3d",
    "max_pool3d_backward",
    "ALGORITHMS",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv2d_output_shape",
    "conv3d",
    "conv3d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "depthwise_separable_conv2d",
    "linear",
    "linear_backward",
    "matmul",
]
