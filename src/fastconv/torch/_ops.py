"""fastconv's kernels as ``torch.ops.fastconv.*`` custom operators.

Each op runs a :mod:`fastconv.ops` function on zero-copy numpy views of CPU tensors and
wraps the result with ``torch.from_numpy``; CUDA tensors go to fastconv.ops as they are and
run on fastconv.cuda's kernels on torch's current stream. Each differentiable op has a backward op
(also a custom op, so ``torch.compile`` traces backward graphs without breaking) that
calls fastconv's backward kernels, a ``register_autograd`` formula that chains them, and
a ``register_fake`` shape function for fake tensors, meta tracing and ``torch.compile``.

Backward ops take ``output_mask`` (which gradients are needed, as aten's
``convolution_backward`` does) and return an empty tensor in place of a gradient that
was not asked for. Fused activations (``'relu'``/``'relu6'``) are differentiated from
the op's output: ``0 < y`` (and ``y < 6``) is exactly where the activation passes the
gradient.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .. import ops
from ..ops.pool import _pool_output_size

_LIB = "fastconv"
# CUDA tensors run on fastconv.cuda's Numba kernels (fastconv.ops dispatches them).
_DEVICES = ("cpu", "cuda")
_CONV_FORWARD = {1: ops.conv1d, 2: ops.conv2d}
_CONV_BACKWARD = {1: ops.conv1d_backward, 2: ops.conv2d_backward}


# Each op's Python implementation, for :func:`call` to run directly where going through torch's
# dispatcher would change nothing but the time (see :func:`unwatched`).
IMPLEMENTATIONS: dict = {}
# Each differentiable op's autograd formula (the same setup_context and backward as its
# register_autograd) as a torch.autograd.Function, for :func:`call` where gradients are recorded.
DIRECT_AUTOGRAD: dict = {}


def _op(name: str, mutates_args=(), in_place_ops: bool = False, **kwargs):
    """``torch.library.custom_op`` in the fastconv namespace; its implementation is also kept in
    :data:`IMPLEMENTATIONS`, unless it mutates an argument other than through torch's own in-place ops
    (which bump the version counters as the dispatcher does: ``in_place_ops``)."""

    def register(fn):
        op = torch.library.custom_op(f"{_LIB}::{name}", mutates_args=mutates_args, device_types=_DEVICES,
                                     **kwargs)(fn)
        if not mutates_args or in_place_ops:
            IMPLEMENTATIONS[op] = fn
        return op

    return register


def _register_autograd(op, backward, setup_context) -> None:
    """``op.register_autograd``, and the same formula as a torch.autograd.Function in :data:`DIRECT_AUTOGRAD`.

    Its forward takes ``ctx`` and calls ``setup_context`` itself: a Function with a separate
    setup_context binds every call's arguments to the forward's signature (inspect, ~60 us)."""
    op.register_autograd(backward, setup_context=setup_context)
    impl = IMPLEMENTATIONS[op]

    def forward(ctx, *args):
        output = impl(*args)
        setup_context(ctx, args, output)
        return output

    DIRECT_AUTOGRAD[op] = type(f"{op._name.split('::')[-1]}_direct", (torch.autograd.Function,), {
        "forward": staticmethod(forward), "backward": staticmethod(backward)})


# --------------------------------------------------------------------------- calls around the dispatcher

_PLAIN = (Tensor, torch.nn.Parameter)  # not a subclass that could intercept the op


def _watchers():
    """torch's switches for what would see or change an op's call (see :func:`unwatched`); None where this
    torch lacks one of them, and then every call goes through the dispatcher."""
    try:
        return (torch._C._get_tracing_state, torch._C._len_torch_dispatch_stack,
                torch._C._is_torch_function_mode_enabled, torch._C._are_functorch_transforms_active,
                torch._C._is_any_autocast_enabled, torch.autograd._profiler_enabled)
    except AttributeError:
        return None


_WATCHERS = _watchers()


def unwatched(args) -> bool:
    """Whether an op may run without torch's dispatcher: where nothing can tell the two apart, a call
    skips the dispatcher's ~30 us, and with gradients its autograd and redispatch layers (~200 us for a
    convolution's forward and backward), a large share of a small layer's time. That needs plain CPU
    tensors, and no torch.compile, torch.jit tracing, dispatch or function mode, functorch transform,
    autocast or profiler, each of which must see (or changes) the op."""
    if _WATCHERS is None:
        return False
    tracing, dispatch_modes, function_modes, functorch, autocast, profiler = _WATCHERS
    if (torch.compiler.is_compiling() or tracing() is not None or dispatch_modes() or function_modes() or functorch()
            or autocast() or profiler()):
        return False
    for a in args:
        if isinstance(a, Tensor) and (type(a) not in _PLAIN or a.device.type != "cpu"):
            return False
    return True


def records_grad(tensors) -> bool:
    """Whether autograd records a call on ``tensors`` (others among them, such as None, are skipped):
    grad mode is on and one of them requires grad."""
    return torch.is_grad_enabled() and any(isinstance(t, Tensor) and t.requires_grad for t in tensors)


def call(op, *args):
    """``op(*args)``, without the dispatcher where :func:`unwatched` allows: the implementation itself,
    or, where an input requires grad, the op's :data:`DIRECT_AUTOGRAD` function, which records the same
    backward (itself calling the backward ops through here)."""
    impl = IMPLEMENTATIONS.get(op)
    if impl is None or not unwatched(args):
        return op(*args)
    if records_grad(args):
        direct = DIRECT_AUTOGRAD.get(op)
        return direct.apply(*args) if direct is not None else op(*args)
    return impl(*args)


# --------------------------------------------------------------------------- numpy bridge


def _np(t: Optional[Tensor]):
    """What fastconv.ops takes for a tensor: a numpy view of a CPU tensor's memory (no copy; the ops
    copy only a non-contiguous view), or the CUDA tensor itself, which fastconv.ops runs on the GPU
    kernels zero-copy (through ``__cuda_array_interface__``) and answers with CUDA tensors."""
    if t is None:
        return None
    t = t.detach()
    return t if t.is_cuda else t.numpy()


def _torch(a) -> Tensor:
    """An op's result as a tensor: a numpy array wrapped without a copy (CUDA results already are tensors)."""
    return a if isinstance(a, Tensor) else torch.from_numpy(np.ascontiguousarray(a))


def _t(a, like: Tensor) -> Tensor:
    """The result as a tensor, or an empty tensor for a gradient not asked for."""
    return like.new_empty(0) if a is None else _torch(a)


def _masked_grad(grad: np.ndarray, output: Optional[np.ndarray], activation: Optional[str]) -> np.ndarray:
    """grad_output pulled back through a fused activation, from the op's output."""
    if activation is None:
        return grad
    backward = ops.relu_backward if activation == "relu" else ops.relu6_backward
    return backward(grad, output)


def _padding_arg(padding: Sequence[int], same: bool):
    return "same" if same else tuple(padding)


def _empty(like: Tensor, shape) -> Tensor:
    return like.new_empty(tuple(shape))


def _keep(grads: Sequence[Tensor], mask: Sequence[bool]) -> Tuple[Optional[Tensor], ...]:
    """The gradients autograd asked for; None for the rest (the backward ops return empty tensors there)."""
    return tuple(g if m else None for g, m in zip(grads, mask))


def _input_weight_bias_mask(ctx) -> List[bool]:
    """output_mask of an op whose first three inputs are (input, weight, optional bias)."""
    need = ctx.needs_input_grad
    return [need[0], need[1], ctx.has_bias and need[2]]


def _grads_or_empty(like: Sequence[Tensor], mask: Sequence[bool]) -> Tuple[Tensor, ...]:
    return tuple(_empty(t, t.shape) if m else t.new_empty(0) for t, m in zip(like, mask))


# --------------------------------------------------------------------------- shapes for fake tensors


def _conv_out_shape(x: Tensor, w: Tensor, stride, padding, dilation, same: bool):
    nd = w.dim() - 2
    out = []
    for i in range(nd):
        span = dilation[i] * (w.shape[2 + i] - 1)
        total = span if same else 2 * padding[i]
        out.append((x.shape[2 + i] + total - span - 1) // stride[i] + 1)
    return (x.shape[0], w.shape[0], *out)


def _transpose_out_shape(x: Tensor, w: Tensor, stride, padding, output_padding, groups, dilation):
    out = [(x.shape[2 + i] - 1) * stride[i] - 2 * padding[i] + dilation[i] * (w.shape[2 + i] - 1)
           + output_padding[i] + 1 for i in range(2)]
    return (x.shape[0], w.shape[1] * groups, *out)


def _pool_out_shape(x: Tensor, kernel_size, stride, padding, dilation, ceil_mode):
    stride = stride or kernel_size
    out = [_pool_output_size(x.shape[2 + i], kernel_size[i], stride[i], padding[i], dilation[i], ceil_mode)
           for i in range(2)]
    return (x.shape[0], x.shape[1], *out)


# --------------------------------------------------------------------------- convolution (1-D and 2-D)


def _conv_forward(input, weight, bias, stride, padding, dilation, groups, same, activation, algo,
                  filter_cache: Optional[ops.FilterCache] = None):
    nd = weight.dim() - 2
    extra = {} if filter_cache is None else {"filter_cache": filter_cache}  # conv2d's only
    y = _CONV_FORWARD[nd](_np(input), _np(weight), _np(bias), tuple(stride), _padding_arg(padding, same),
                          tuple(dilation), groups, activation=activation, algo=algo, **extra)
    return _torch(y)


def conv2d_cached_filters(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int],
                          padding: List[int], dilation: List[int], groups: int, same: bool,
                          activation: Optional[str], algo: str, filter_cache: ops.FilterCache) -> Tensor:
    """:func:`conv2d` (same arguments, a 4-D input) that keeps Winograd's transformed filters in
    ``filter_cache`` between calls (:class:`fastconv.ops.FilterCache`) where it runs the kernel itself:
    with no gradient to record and nothing watching the dispatcher. Else the op."""
    args = (input, weight, bias, stride, padding, dilation, groups, same, activation, algo)
    if unwatched(args) and not records_grad(args):
        return _conv_forward(*args, filter_cache=filter_cache)
    return call(conv2d, *args)


def _conv_backward(grad_output, input, weight, output, stride, padding, dilation, groups, same, activation,
                   output_mask):
    nd = weight.dim() - 2
    g = _masked_grad(_np(grad_output), _np(output), activation)
    gx, gw, gb = _CONV_BACKWARD[nd](g, _np(input), _np(weight), tuple(stride), _padding_arg(padding, same),
                                    tuple(dilation), groups, needs=tuple(bool(m) for m in output_mask))
    return _t(gx, input), _t(gw, weight), _t(gb, weight)


@_op("conv2d")
def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
           dilation: List[int], groups: int, same: bool, activation: Optional[str], algo: str) -> Tensor:
    """2-D convolution with a fused activation; ``same`` selects PyTorch's padding='same'."""
    return _conv_forward(input, weight, bias, stride, padding, dilation, groups, same, activation, algo)


@_op("conv1d")
def conv1d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
           dilation: List[int], groups: int, same: bool, activation: Optional[str], algo: str) -> Tensor:
    """1-D convolution with a fused activation (the 2-D kernels with H = 1)."""
    return _conv_forward(input, weight, bias, stride, padding, dilation, groups, same, activation, algo)


@_op("conv2d_backward")
def conv2d_backward(grad_output: Tensor, input: Tensor, weight: Tensor, output: Optional[Tensor],
                    stride: List[int], padding: List[int], dilation: List[int], groups: int, same: bool,
                    activation: Optional[str], output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias) of :func:`conv2d`; ``output`` is needed with an activation."""
    return _conv_backward(grad_output, input, weight, output, stride, padding, dilation, groups, same, activation,
                          output_mask)


@_op("conv1d_backward")
def conv1d_backward(grad_output: Tensor, input: Tensor, weight: Tensor, output: Optional[Tensor],
                    stride: List[int], padding: List[int], dilation: List[int], groups: int, same: bool,
                    activation: Optional[str], output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias) of :func:`conv1d`."""
    return _conv_backward(grad_output, input, weight, output, stride, padding, dilation, groups, same, activation,
                          output_mask)


def _conv_fake(input, weight, bias, stride, padding, dilation, groups, same, activation, algo):
    return _empty(input, _conv_out_shape(input, weight, stride, padding, dilation, same))


def _conv_backward_fake(grad_output, input, weight, output, stride, padding, dilation, groups, same, activation,
                        output_mask):
    gb = weight.new_empty(weight.shape[0]) if output_mask[2] else weight.new_empty(0)
    return _grads_or_empty((input, weight), output_mask[:2]) + (gb,)


def _save_conv(ctx, input, weight, bias, output, args, activation):
    """What a convolution's backward needs: ``args`` = (stride, padding, dilation, groups, same)."""
    ctx.args = args
    ctx.activation = activation
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight, output if activation is not None else None)


def _conv_grads(ctx, grad, backward_op):
    """(grad_input, grad_weight, grad_bias) of a convolution saved by :func:`_save_conv`."""
    input, weight, output = ctx.saved_tensors
    mask = _input_weight_bias_mask(ctx)
    return _keep(call(backward_op, grad, input, weight, output, *ctx.args, ctx.activation, mask), mask)


def _conv_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, groups, same, activation, algo = inputs
    _save_conv(ctx, input, weight, bias, output, (stride, padding, dilation, groups, same), activation)


def _register_conv(forward_op, backward_op):
    forward_op.register_fake(_conv_fake)
    backward_op.register_fake(_conv_backward_fake)
    _register_autograd(forward_op, lambda ctx, grad: _conv_grads(ctx, grad, backward_op) + (None,) * 7,
                       _conv_setup)


_register_conv(conv2d, conv2d_backward)
_register_conv(conv1d, conv1d_backward)


# --------------------------------------------------------------------------- depthwise and depthwise-separable


@_op("depthwise_conv2d")
def depthwise_conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                     dilation: List[int], same: bool, activation: Optional[str]) -> Tensor:
    """Depthwise convolution (groups = C_in, weight (C_in * multiplier, 1, KH, KW)) on the depthwise kernel."""
    return _conv_forward(input, weight, bias, stride, padding, dilation, input.shape[1], same, activation,
                         "depthwise")


@depthwise_conv2d.register_fake
def _(input, weight, bias, stride, padding, dilation, same, activation):
    return _empty(input, _conv_out_shape(input, weight, stride, padding, dilation, same))


def _depthwise_setup(ctx, inputs, output):
    input, weight, bias, stride, padding, dilation, same, activation = inputs
    _save_conv(ctx, input, weight, bias, output, (stride, padding, dilation, input.shape[1], same), activation)


def _depthwise_backward(ctx, grad):
    return _conv_grads(ctx, grad, conv2d_backward) + (None,) * 5


_register_autograd(depthwise_conv2d, _depthwise_backward, _depthwise_setup)


@_op("depthwise_separable_conv2d")
def depthwise_separable_conv2d(input: Tensor, dw_weight: Tensor, pw_weight: Tensor, dw_bias: Optional[Tensor],
                               pw_bias: Optional[Tensor], stride: List[int], padding: List[int],
                               dilation: List[int], same: bool, activation: Optional[str]) -> Tuple[Tensor, Tensor]:
    """A MobileNet block's depthwise then pointwise convolution, ``activation`` after each.

    Returns (output, the depthwise step's output); backward needs the second.
    """
    mid = _conv_forward(input, dw_weight, dw_bias, stride, padding, dilation, input.shape[1], same, activation,
                        "depthwise")
    out = _conv_forward(mid, pw_weight, pw_bias, [1, 1], [0, 0], [1, 1], 1, False, activation, "auto")
    return out, mid


@depthwise_separable_conv2d.register_fake
def _(input, dw_weight, pw_weight, dw_bias, pw_bias, stride, padding, dilation, same, activation):
    mid = _empty(input, _conv_out_shape(input, dw_weight, stride, padding, dilation, same))
    return _empty(input, (mid.shape[0], pw_weight.shape[0], *mid.shape[2:])), mid


def _separable_setup(ctx, inputs, output):
    input, dw_weight, pw_weight, dw_bias, pw_bias, stride, padding, dilation, same, activation = inputs
    out, mid = output
    ctx.dw_args = (stride, padding, dilation, input.shape[1], same)
    ctx.activation = activation
    ctx.has_bias = (dw_bias is not None, pw_bias is not None)
    ctx.save_for_backward(input, dw_weight, pw_weight, mid, out if activation is not None else None)


def _separable_backward(ctx, grad, grad_mid):
    input, dw_weight, pw_weight, mid, out = ctx.saved_tensors
    need = ctx.needs_input_grad
    pw_mask = [True, need[2], ctx.has_bias[1] and need[4]]
    g_mid, g_pw, g_pwb = call(conv2d_backward, grad, mid, pw_weight, out, [1, 1], [0, 0], [1, 1], 1, False,
                              ctx.activation, pw_mask)
    if grad_mid is not None:
        g_mid = g_mid + grad_mid
    dw_mask = [need[0], need[1], ctx.has_bias[0] and need[3]]
    gx, g_dw, g_dwb = call(conv2d_backward, g_mid, input, dw_weight, mid if ctx.activation is not None else None,
                           *ctx.dw_args, ctx.activation, dw_mask)
    gx, g_dw, g_dwb = _keep((gx, g_dw, g_dwb), dw_mask)
    g_pw, g_pwb = _keep((g_pw, g_pwb), pw_mask[1:])
    return (gx, g_dw, g_pw, g_dwb, g_pwb) + (None,) * 5


_register_autograd(depthwise_separable_conv2d, _separable_backward, _separable_setup)


# --------------------------------------------------------------------------- transposed convolution


def _transpose_np_args(stride, padding, output_padding, groups, dilation):
    return tuple(stride), tuple(padding), tuple(output_padding), groups, tuple(dilation)


@_op("conv_transpose2d")
def conv_transpose2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: List[int], padding: List[int],
                     output_padding: List[int], groups: int, dilation: List[int]) -> Tensor:
    """Transposed 2-D convolution (the convolution's backward-data kernel)."""
    y = ops.conv_transpose2d(_np(input), _np(weight), _np(bias),
                             *_transpose_np_args(stride, padding, output_padding, groups, dilation))
    return _torch(y)


@_op("conv_transpose2d_backward")
def conv_transpose2d_backward(grad_output: Tensor, input: Tensor, weight: Tensor, stride: List[int],
                              padding: List[int], output_padding: List[int], groups: int, dilation: List[int],
                              output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias) of :func:`conv_transpose2d`."""
    gx, gw, gb = ops.conv_transpose2d_backward(
        _np(grad_output), _np(input), _np(weight), *_transpose_np_args(stride, padding, output_padding, groups,
                                                                       dilation),
        needs=tuple(bool(m) for m in output_mask))
    return _t(gx, input), _t(gw, weight), _t(gb, weight)


@conv_transpose2d.register_fake
def _(input, weight, bias, stride, padding, output_padding, groups, dilation):
    return _empty(input, _transpose_out_shape(input, weight, stride, padding, output_padding, groups, dilation))


@conv_transpose2d_backward.register_fake
def _(grad_output, input, weight, stride, padding, output_padding, groups, dilation, output_mask):
    gb = weight.new_empty(weight.shape[1] * groups) if output_mask[2] else weight.new_empty(0)
    return _grads_or_empty((input, weight), output_mask[:2]) + (gb,)


def _transpose_setup(ctx, inputs, output):
    input, weight, bias, *args = inputs
    ctx.args = args
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight)


def _transpose_backward(ctx, grad):
    input, weight = ctx.saved_tensors
    mask = _input_weight_bias_mask(ctx)
    return _keep(call(conv_transpose2d_backward, grad, input, weight, *ctx.args, mask), mask) + (None,) * 5


_register_autograd(conv_transpose2d, _transpose_backward, _transpose_setup)


# --------------------------------------------------------------------------- linear


@_op("linear")
def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor], activation: Optional[str]) -> Tensor:
    """``input @ weight.T + bias`` on the packed GEMM, with a fused activation."""
    return _torch(ops.linear(_np(input), _np(weight), _np(bias), activation=activation))


@_op("linear_backward")
def linear_backward(grad_output: Tensor, input: Tensor, weight: Tensor, output: Optional[Tensor],
                    activation: Optional[str], output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias) of :func:`linear`."""
    g = _masked_grad(_np(grad_output), _np(output), activation)
    gx, gw, gb = ops.linear_backward(g, _np(input), _np(weight), needs=tuple(bool(m) for m in output_mask))
    return _t(gx, input), _t(gw, weight), _t(gb, weight)


@linear.register_fake
def _(input, weight, bias, activation):
    return _empty(input, (*input.shape[:-1], weight.shape[0]))


@linear_backward.register_fake
def _(grad_output, input, weight, output, activation, output_mask):
    gb = weight.new_empty(weight.shape[0]) if output_mask[2] else weight.new_empty(0)
    return _grads_or_empty((input, weight), output_mask[:2]) + (gb,)


def _linear_setup(ctx, inputs, output):
    input, weight, bias, activation = inputs
    ctx.activation = activation
    ctx.has_bias = bias is not None
    ctx.save_for_backward(input, weight, output if activation is not None else None)


def _linear_backward(ctx, grad):
    input, weight, output = ctx.saved_tensors
    mask = _input_weight_bias_mask(ctx)
    return _keep(call(linear_backward, grad, input, weight, output, ctx.activation, mask), mask) + (None,)


_register_autograd(linear, _linear_backward, _linear_setup)


# --------------------------------------------------------------------------- pooling


@_op("max_pool2d")
def max_pool2d(input: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], dilation: List[int],
               ceil_mode: bool) -> Tuple[Tensor, Tensor]:
    """2-D max pooling; returns (output, int64 indices into each H x W plane). Empty ``stride`` = kernel_size."""
    y, idx = ops.max_pool2d(_np(input), tuple(kernel_size), tuple(stride) or None, tuple(padding), tuple(dilation),
                            ceil_mode, return_indices=True)
    return _torch(y), _torch(idx)


@_op("adaptive_max_pool2d")
def adaptive_max_pool2d(input: Tensor, output_size: List[int]) -> Tuple[Tensor, Tensor]:
    """Adaptive 2-D max pooling; returns (output, indices) as :func:`max_pool2d`."""
    y, idx = ops.adaptive_max_pool2d(_np(input), tuple(output_size), return_indices=True)
    return _torch(y), _torch(idx)


@_op("max_pool2d_backward")
def max_pool2d_backward(grad_output: Tensor, indices: Tensor, input_size: List[int]) -> Tensor:
    """Gradient of max pooling's (and adaptive max pooling's) input, from the forward's indices."""
    return _torch(ops.max_pool2d_backward(_np(grad_output), _np(indices), tuple(input_size)))


@max_pool2d.register_fake
def _(input, kernel_size, stride, padding, dilation, ceil_mode):
    shape = _pool_out_shape(input, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty(input, shape), input.new_empty(shape, dtype=torch.int64)


@adaptive_max_pool2d.register_fake
def _(input, output_size):
    shape = (input.shape[0], input.shape[1], *output_size)
    return _empty(input, shape), input.new_empty(shape, dtype=torch.int64)


@max_pool2d_backward.register_fake
def _(grad_output, indices, input_size):
    return grad_output.new_empty(tuple(input_size))


def _max_setup(ctx, inputs, output):
    ctx.input_size = list(inputs[0].shape)
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(output[1])


def _make_max_backward(n_args):
    def backward(ctx, grad, grad_indices):
        (indices,) = ctx.saved_tensors
        return (call(max_pool2d_backward, grad, indices, ctx.input_size),) + (None,) * n_args

    return backward


_register_autograd(max_pool2d, _make_max_backward(5), _max_setup)
_register_autograd(adaptive_max_pool2d, _make_max_backward(1), _max_setup)


def _max_pool2d_values(input, kernel_size, stride, padding, dilation, ceil_mode) -> Tensor:
    return _torch(ops.max_pool2d(_np(input), tuple(kernel_size), tuple(stride) or None, tuple(padding),
                                 tuple(dilation), ceil_mode))


def max_pool2d_values(input: Tensor, kernel_size: List[int], stride: List[int], padding: List[int],
                      dilation: List[int], ceil_mode: bool) -> Tensor:
    """:func:`max_pool2d`'s output without its indices: where no backward is recorded (no gradient
    enabled for ``input``) and :func:`unwatched` allows, the kernel runs without writing them (an
    int64 per output: ResNet-18's max pool at batch 1 takes a third of the time); else the op, whose
    indices the backward needs."""
    if unwatched((input,)) and not records_grad((input,)):
        return _max_pool2d_values(input, kernel_size, stride, padding, dilation, ceil_mode)
    return call(max_pool2d, input, kernel_size, stride, padding, dilation, ceil_mode)[0]


@_op("avg_pool2d")
def avg_pool2d(input: Tensor, kernel_size: List[int], stride: List[int], padding: List[int], ceil_mode: bool,
               count_include_pad: bool, divisor_override: Optional[int]) -> Tensor:
    """2-D average pooling, PyTorch's divisor rules. Empty ``stride`` = kernel_size."""
    return _torch(ops.avg_pool2d(_np(input), tuple(kernel_size), tuple(stride) or None, tuple(padding),
                                           ceil_mode, count_include_pad, divisor_override))


@_op("avg_pool2d_backward")
def avg_pool2d_backward(grad_output: Tensor, input_size: List[int], kernel_size: List[int], stride: List[int],
                        padding: List[int], ceil_mode: bool, count_include_pad: bool,
                        divisor_override: Optional[int]) -> Tensor:
    """Gradient of :func:`avg_pool2d`'s input."""
    return _torch(ops.avg_pool2d_backward(_np(grad_output), tuple(input_size), tuple(kernel_size),
                                                    tuple(stride) or None, tuple(padding), ceil_mode,
                                                    count_include_pad, divisor_override))


@avg_pool2d.register_fake
def _(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return _empty(input, _pool_out_shape(input, kernel_size, stride, padding, [1, 1], ceil_mode))


@avg_pool2d_backward.register_fake
def _(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    return grad_output.new_empty(tuple(input_size))


def _avg_setup(ctx, inputs, output):
    ctx.input_size = list(inputs[0].shape)
    ctx.args = inputs[1:]


def _avg_backward(ctx, grad):
    return (call(avg_pool2d_backward, grad, ctx.input_size, *ctx.args),) + (None,) * 6


_register_autograd(avg_pool2d, _avg_backward, _avg_setup)


@_op("adaptive_avg_pool2d")
def adaptive_avg_pool2d(input: Tensor, output_size: List[int]) -> Tensor:
    """Adaptive 2-D average pooling to ``output_size`` (H_out, W_out)."""
    return _torch(ops.adaptive_avg_pool2d(_np(input), tuple(output_size)))


@_op("adaptive_avg_pool2d_backward")
def adaptive_avg_pool2d_backward(grad_output: Tensor, input_size: List[int]) -> Tensor:
    """Gradient of :func:`adaptive_avg_pool2d`'s input."""
    return _torch(ops.adaptive_avg_pool2d_backward(_np(grad_output), tuple(input_size)))


@adaptive_avg_pool2d.register_fake
def _(input, output_size):
    return _empty(input, (input.shape[0], input.shape[1], *output_size))


@adaptive_avg_pool2d_backward.register_fake
def _(grad_output, input_size):
    return grad_output.new_empty(tuple(input_size))


def _adaptive_avg_setup(ctx, inputs, output):
    ctx.input_size = list(inputs[0].shape)


def _adaptive_avg_backward(ctx, grad):
    return call(adaptive_avg_pool2d_backward, grad, ctx.input_size), None


_register_autograd(adaptive_avg_pool2d, _adaptive_avg_backward, _adaptive_avg_setup)


# --------------------------------------------------------------------------- BatchNorm


@_op("batch_norm")
def batch_norm(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
               running_var: Optional[Tensor], training: bool, eps: float,
               activation: Optional[str]) -> Tuple[Tensor, Tensor, Tensor]:
    """BatchNorm over axis 1, then ``activation`` (None, "relu" or "relu6") in the same pass;
    returns (output, mean, invstd) for the backward.

    Training normalises with the batch mean and biased variance (the running statistics
    are updated by :func:`update_running_stats`, a separate op because autograd formulas
    attach only to functional ops; around the dispatcher, :func:`batch_norm_training` has the
    kernel do both); eval normalises with ``running_mean`` / ``running_var`` and returns them
    as the mean and ``1 / sqrt(var + eps)``.
    """
    x = _np(input)
    if training:
        y, mean, invstd = ops.batch_norm(x, None, None, _np(weight), _np(bias), True, 0.0, eps,
                                         activation=activation)
        return _torch(y), _torch(mean), _torch(invstd)
    y = ops.batch_norm(x, _np(running_mean), _np(running_var), _np(weight), _np(bias), False, 0.0, eps,
                       activation=activation)
    invstd = 1.0 / torch.sqrt(running_var.detach() + eps)
    return _torch(y), running_mean.detach().clone(), invstd


@_op("update_running_stats", mutates_args=("running_mean", "running_var"), in_place_ops=True)
def update_running_stats(running_mean: Tensor, running_var: Tensor, save_mean: Tensor, save_invstd: Tensor,
                         count: int, momentum: float, eps: float) -> None:
    """BatchNorm's running-statistics update, in place (declared): ``r = (1 - momentum) * r + momentum * batch``
    with the batch's unbiased variance, recovered from the training forward's ``save_invstd`` over ``count``
    values per channel."""
    var = (1.0 / save_invstd.detach().double() ** 2 - eps) * (count / (count - 1))
    running_mean.mul_(1.0 - momentum).add_(save_mean.detach(), alpha=momentum)
    running_var.mul_(1.0 - momentum).add_(var.to(running_var.dtype), alpha=momentum)


@update_running_stats.register_fake
def _(running_mean, running_var, save_mean, save_invstd, count, momentum, eps):
    return None


@_op("batch_norm_backward")
def batch_norm_backward(grad_output: Tensor, input: Tensor, weight: Optional[Tensor], save_mean: Tensor,
                        save_invstd: Tensor, training: bool, activation: Optional[str], output: Optional[Tensor],
                        output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor]:
    """(grad_input, grad_weight, grad_bias) of :func:`batch_norm` (grad_weight is empty without a weight);
    ``output`` is the forward's, needed with an activation."""
    gx, gw, gb = ops.batch_norm_backward(_np(grad_output), _np(input), _np(weight), _np(save_mean),
                                         _np(save_invstd), training, activation=activation, output=_np(output))
    keep = [a if m else None for a, m in zip((gx, gw, gb), output_mask)]
    return _t(keep[0], input), _t(keep[1], input), _t(keep[2], input)


@batch_norm.register_fake
def _(input, weight, bias, running_mean, running_var, training, eps, activation):
    c = input.shape[1]
    return _empty(input, input.shape), input.new_empty(c), input.new_empty(c)


@batch_norm_backward.register_fake
def _(grad_output, input, weight, save_mean, save_invstd, training, activation, output, output_mask):
    c = input.shape[1]
    gx = _empty(input, input.shape) if output_mask[0] else input.new_empty(0)
    gw = input.new_empty(c) if output_mask[1] and weight is not None else input.new_empty(0)
    gb = input.new_empty(c) if output_mask[2] else input.new_empty(0)
    return gx, gw, gb


def _bn_setup(ctx, inputs, output):
    input, weight, bias, running_mean, running_var, training, eps, activation = inputs
    ctx.training = training
    ctx.activation = activation
    ctx.has = (weight is not None, bias is not None)
    ctx.save_for_backward(input, weight, output[1], output[2], output[0] if activation is not None else None)


def _bn_backward(ctx, grad, grad_mean, grad_invstd):
    input, weight, mean, invstd, output = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = [need[0], ctx.has[0] and need[1], ctx.has[1] and need[2]]
    grads = call(batch_norm_backward, grad, input, weight, mean, invstd, ctx.training, ctx.activation, output,
                 mask)
    return _keep(grads, mask) + (None,) * 5


_register_autograd(batch_norm, _bn_backward, _bn_setup)


def _bn_training_updating(input, weight, bias, running_mean, running_var, eps, activation, momentum):
    """The training forward whose kernel pass also updates the running statistics in place (the
    unbiased variance, as :func:`update_running_stats`), then bumps their version counters as
    torch's in-place ops do."""
    y, mean, invstd = ops.batch_norm(_np(input), _np(running_mean), _np(running_var), _np(weight), _np(bias), True,
                                     momentum, eps, activation=activation)
    torch.autograd.graph.increment_version((running_mean, running_var))
    return _torch(y), _torch(mean), _torch(invstd)


def _bn_updating_forward(ctx, input, weight, bias, running_mean, running_var, eps, activation, momentum):
    output = _bn_training_updating(input, weight, bias, running_mean, running_var, eps, activation, momentum)
    _bn_setup(ctx, (input, weight, bias, running_mean, running_var, True, eps, activation), output)
    return output


# :func:`_bn_training_updating` with :func:`batch_norm`'s autograd formula (one gradient or None per argument),
# named as the :data:`DIRECT_AUTOGRAD` functions are.
_BN_UPDATING_DIRECT = type("batch_norm_updating_direct", (torch.autograd.Function,), {
    "forward": staticmethod(_bn_updating_forward), "backward": staticmethod(_bn_backward)})


def batch_norm_training(input: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Tensor,
                        running_var: Tensor, momentum: float, eps: float,
                        activation: Optional[str]) -> Tuple[Tensor, Tensor, Tensor]:
    """Training BatchNorm that updates ``running_mean`` / ``running_var``: :func:`batch_norm` then
    :func:`update_running_stats`, or, where :func:`unwatched` allows and the statistics are plain
    contiguous tensors, one kernel call that does both (the pair costs ~10 small torch ops, ~40 us,
    per layer and step)."""
    args = (input, weight, bias, running_mean, running_var)
    if (unwatched(args) and running_mean.is_contiguous() and running_var.is_contiguous()
            and not running_mean.is_inference() and not running_var.is_inference()):
        if records_grad((input, weight, bias)):
            return _BN_UPDATING_DIRECT.apply(*args, eps, activation, momentum)
        return _bn_training_updating(*args, eps, activation, momentum)
    y, mean, invstd = call(batch_norm, *args, True, eps, activation)
    count = input.numel() // input.shape[1]  # > 1: the op refuses a batch with one value per channel
    # The statistics carry no gradient into the update: detached, the call can skip the dispatcher.
    call(update_running_stats, running_mean, running_var, mean.detach(), invstd.detach(), count, momentum, eps)
    return y, mean, invstd


# --------------------------------------------------------------------------- fused inference conv + BN + activation


def _folded(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps):
    return ops.fold_batchnorm(_np(weight), _np(bias), _np(running_mean), _np(running_var), _np(bn_weight),
                              _np(bn_bias), eps)


@_op("conv2d_bn")
def conv2d_bn(input: Tensor, weight: Tensor, bias: Optional[Tensor], running_mean: Tensor, running_var: Tensor,
              bn_weight: Optional[Tensor], bn_bias: Optional[Tensor], eps: float, stride: List[int],
              padding: List[int], dilation: List[int], groups: int, same: bool, activation: Optional[str]) -> Tensor:
    """Inference convolution + eval-mode BatchNorm + activation as one convolution.

    The BatchNorm is folded into the convolution's weight and bias, and the activation
    into its epilogue: one pass over the output.
    """
    w, b = _folded(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps)
    y = ops.conv2d(_np(input), w, b, tuple(stride), _padding_arg(padding, same), tuple(dilation), groups,
                   activation=activation)
    return _torch(y)


@_op("conv2d_bn_backward")
def conv2d_bn_backward(grad_output: Tensor, input: Tensor, weight: Tensor, bias: Optional[Tensor],
                       running_mean: Tensor, running_var: Tensor, bn_weight: Optional[Tensor],
                       bn_bias: Optional[Tensor], eps: float, output: Optional[Tensor], stride: List[int],
                       padding: List[int], dilation: List[int], groups: int, same: bool, activation: Optional[str],
                       output_mask: List[bool]) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients (input, weight, bias, bn_weight, bn_bias) of :func:`conv2d_bn`.

    With ``s = bn_weight / sqrt(var + eps)``, the folded weight is ``weight * s`` and the
    folded bias ``(bias - mean) * s + bn_bias``; the folded convolution's gradients are
    pulled back through those per-channel products.
    """
    need_x, need_w, need_b, need_g, need_beta = (bool(m) for m in output_mask)
    w, b = _folded(weight, bias, running_mean, running_var, bn_weight, bn_bias, eps)
    g = _masked_grad(_np(grad_output), _np(output), activation)
    need_fw, need_fb = need_w or need_g, need_b or need_g or need_beta
    gx, g_fw, g_fb = ops.conv2d_backward(g, _np(input), w, tuple(stride), _padding_arg(padding, same),
                                         tuple(dilation), groups, needs=(need_x, need_fw, need_fb))
    # The per-channel products in float64 torch ops, on the tensors' own device.
    g_fw = None if g_fw is None else _torch(g_fw).double()
    g_fb = None if g_fb is None else _torch(g_fb).double()
    dt = weight.dtype
    rstd = (running_var.detach().double() + eps).rsqrt()
    scale = rstd if bn_weight is None else bn_weight.detach().double() * rstd
    shape = (-1,) + (1,) * (weight.dim() - 1)
    gw = (g_fw * scale.reshape(shape)).to(dt) if need_w else None
    gb = (g_fb * scale).to(dt) if need_b and bias is not None else None
    g_gamma = None
    if need_g and bn_weight is not None:
        w0 = weight.detach().double()
        shift = -running_mean.detach().double() if bias is None else bias.detach().double() - running_mean.detach().double()
        g_scale = (g_fw * w0).reshape(w0.shape[0], -1).sum(dim=1) + g_fb * shift
        g_gamma = (g_scale * rstd).to(dt)
    g_beta = g_fb.to(dt) if need_beta and bn_bias is not None else None
    return (_t(gx, input), _t(gw, weight), _t(gb, weight), _t(g_gamma, weight), _t(g_beta, weight))


@conv2d_bn.register_fake
def _(input, weight, bias, running_mean, running_var, bn_weight, bn_bias, eps, stride, padding, dilation, groups,
      same, activation):
    return _empty(input, _conv_out_shape(input, weight, stride, padding, dilation, same))


@conv2d_bn_backward.register_fake
def _(grad_output, input, weight, bias, running_mean, running_var, bn_weight, bn_bias, eps, output, stride, padding,
      dilation, groups, same, activation, output_mask):
    c = weight.shape[0]
    gx, gw = _grads_or_empty((input, weight), output_mask[:2])
    vec = [weight.new_empty(c) if m and t is not None else weight.new_empty(0)
           for m, t in zip(output_mask[2:], (bias, bn_weight, bn_bias))]
    return (gx, gw, *vec)


def _conv_bn_setup(ctx, inputs, output):
    input, weight, bias, rm, rv, bn_weight, bn_bias, eps, *args = inputs
    ctx.eps = eps
    ctx.args = args[:5]
    ctx.activation = args[5]
    ctx.has = (bias is not None, bn_weight is not None, bn_bias is not None)
    ctx.save_for_backward(input, weight, bias, rm, rv, bn_weight, bn_bias,
                          output if ctx.activation is not None else None)


def _conv_bn_backward(ctx, grad):
    input, weight, bias, rm, rv, bn_weight, bn_bias, output = ctx.saved_tensors
    need = ctx.needs_input_grad
    mask = [need[0], need[1], ctx.has[0] and need[2], ctx.has[1] and need[5], ctx.has[2] and need[6]]
    grads = call(conv2d_bn_backward, grad, input, weight, bias, rm, rv, bn_weight, bn_bias, ctx.eps, output,
                 *ctx.args, ctx.activation, mask)
    gx, gw, gb, g_gamma, g_beta = _keep(grads, mask)
    return (gx, gw, gb, None, None, g_gamma, g_beta) + (None,) * 7


_register_autograd(conv2d_bn, _conv_bn_backward, _conv_bn_setup)
