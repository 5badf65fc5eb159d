"""fastconv's numpy API: validated ops, forward kernels on the CPU.

Every function takes and returns numpy arrays (float32) and follows
``torch.nn.functional``'s names and argument conventions.
"""

from .conv import ALGORITHMS, conv2d, conv2d_output_shape, depthwise_separable_conv2d
from .linalg import linear, matmul

__all__ = ["ALGORITHMS", "conv2d", "conv2d_output_shape", "depthwise_separable_conv2d", "linear", "matmul"]
