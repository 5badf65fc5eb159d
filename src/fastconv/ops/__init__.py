"""fastconv's array API: validated ops, forward and backward, on the CPU or GPU kernels.

Every function takes and returns numpy arrays (float32, the fast path, or float64)
and follows ``torch.nn.functional``'s names and argument conventions. Each
differentiable op ``f`` has an ``f_backward`` that returns the gradients of its
inputs given the gradient of its output. Given GPU arrays (Numba device arrays, CuPy
arrays, torch CUDA tensors) the same ops run on fastconv.cuda's kernels and return
arrays of the caller's kind on the same device; 3-D convolution and pooling are
CPU-only.
"""

from .activation import (
    add,
    add_backward,
    cat,
    cat_backward,
    dropout,
    dropout_backward,
    flatten,
    flatten_backward,
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    relu,
    relu6,
    relu6_backward,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from .conv import (
    FilterCache,
    ALGORITHMS,
    conv1d,
    conv1d_backward,
    conv2d,
    conv2d_backward,
    conv2d_output_shape,
    conv3d,
    conv3d_backward,
    conv_algorithm,
    conv_transpose2d,
    conv_transpose2d_backward,
    depthwise_separable_conv2d,
)
from .linalg import linear, linear_backward, matmul
from .loss import cross_entropy, cross_entropy_backward, mse_loss, mse_loss_backward
from .norm import batch_norm, batch_norm_backward, fold_batchnorm
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
    "add",
    "add_backward",
    "cat",
    "cat_backward",
    "dropout",
    "dropout_backward",
    "flatten",
    "flatten_backward",
    "gelu",
    "gelu_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "log_softmax",
    "log_softmax_backward",
    "relu",
    "relu6",
    "relu6_backward",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
    "cross_entropy",
    "cross_entropy_backward",
    "mse_loss",
    "mse_loss_backward",
    "batch_norm",
    "batch_norm_backward",
    "fold_batchnorm",
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
    "FilterCache",
    "conv1d",
    "conv1d_backward",
    "conv2d",
    "conv2d_backward",
    "conv2d_output_shape",
    "conv3d",
    "conv3d_backward",
    "conv_algorithm",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "depthwise_separable_conv2d",
    "linear",
    "linear_backward",
    "matmul",
]

# Every op runs on the GPU kernels when given GPU arrays (see ._device).
from ._device import dispatch as _dispatch  # noqa: E402

for _name in __all__:
    if callable(globals()[_name]) and not isinstance(globals()[_name], type):
        globals()[_name] = _dispatch(globals()[_name])
del _name
