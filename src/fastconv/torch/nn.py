"""Drop-in ``torch.nn`` modules that run on fastconv's kernels.

Each class subclasses its ``torch.nn`` namesake: same constructor signature, parameters,
buffers and ``state_dict``, so any torch checkpoint loads into it, and ``isinstance``
checks against ``torch.nn`` keep working. Only ``forward`` changes: it calls the
``torch.ops.fastconv`` custom ops (:mod:`fastconv.torch.functional`).
"""

from __future__ import annotations

import weakref
from typing import List, Optional

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

from .. import ops
from . import functional as F
from ._ops import _folded, records_grad

__all__ = ["Conv1d", "Conv2d", "ConvTranspose2d", "BatchNorm1d", "BatchNorm2d", "MaxPool2d", "AvgPool2d",
           "AdaptiveAvgPool2d", "Linear", "Sequential"]


class _ConvForward:
    """``_conv_forward`` of torch's Conv1d/Conv2d on fastconv's convolution; non-zero padding modes pad first,
    as torch does."""

    _fastconv_conv = None  # F.conv1d or F.conv2d

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        conv = type(self)._fastconv_conv
        if self.padding_mode != "zeros":
            padded = nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return conv(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
        return conv(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class Conv1d(_ConvForward, nn.Conv1d):
    """``torch.nn.Conv1d`` on fastconv's kernels."""

    _fastconv_conv = staticmethod(F.conv1d)


class Conv2d(_ConvForward, nn.Conv2d):
    """``torch.nn.Conv2d`` on fastconv's kernels (``algo='auto'``: direct, im2col, pointwise or depthwise
    per shape).

    When :func:`fastconv.torch.convert` has found that this convolution's output goes to one
    BatchNorm2d and nowhere else, inference (that BatchNorm in eval mode) runs the two as one
    fused convolution; the BatchNorm then passes the result through.
    """

    _fastconv_conv = staticmethod(F.conv2d)

    def forward(self, input: Tensor) -> Tensor:
        plan = self.__dict__.get("_fastconv_bn")  # (BatchNorm's parent, its name there, the BatchNorm)
        if (plan is not None and plan[0]._modules.get(plan[1]) is plan[2] and not torch.compiler.is_compiling()
                and _fusable_bn(self, plan[2])):
            bn = plan[2]
            out = _conv_bn(self.__dict__, "bn", self, bn, None, input)
            bn.__dict__["_fastconv_normalised"] = weakref.ref(out)
            return out
        return super().forward(input)


class ConvTranspose2d(nn.ConvTranspose2d):
    """``torch.nn.ConvTranspose2d`` on fastconv's backward-data kernel."""

    def forward(self, input: Tensor, output_size: Optional[List[int]] = None) -> Tensor:
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)


class _BatchNormForward:
    """torch's ``_BatchNorm.forward`` (momentum=None's cumulative average, ``track_running_stats``,
    ``num_batches_tracked``) on fastconv's BatchNorm."""

    def forward(self, input: Tensor) -> Tensor:
        done = self.__dict__.pop("_fastconv_normalised", None)
        if done is not None and done() is input and not self.training:
            return input  # the convolution before it has applied it (see Conv2d)
        return self._normalise(input, None)

    def _normalise(self, input: Tensor, activation: Optional[str]) -> Tensor:
        """BatchNorm, then ``activation`` in the same pass (see :class:`Sequential`)."""
        self._check_input_dim(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        keep_stats = not self.training or self.track_running_stats
        return F.batch_norm(input, self.running_mean if keep_stats else None,
                            self.running_var if keep_stats else None, self.weight, self.bias, use_batch_stats,
                            factor, self.eps, activation=activation)


class BatchNorm1d(_BatchNormForward, nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` on fastconv's BatchNorm."""


class BatchNorm2d(_BatchNormForward, nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` on fastconv's BatchNorm."""


class MaxPool2d(nn.MaxPool2d):
    """``torch.nn.MaxPool2d`` on fastconv's pooling kernel."""

    def forward(self, input: Tensor):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding, self.dilation,
                            ceil_mode=self.ceil_mode, return_indices=self.return_indices)


class AvgPool2d(nn.AvgPool2d):
    """``torch.nn.AvgPool2d`` on fastconv's pooling kernel."""

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AdaptiveAvgPool2d(nn.AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveAvgPool2d`` on fastconv's pooling kernel."""

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)


class Linear(nn.Linear):
    """``torch.nn.Linear`` on fastconv's packed GEMM."""

    def forward(self, input: Tensor) -> Tensor:
        return F.linear(input, self.weight, self.bias)


_FUSED_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6"}


def _fusable_bn(conv: nn.Module, bn: nn.Module) -> bool:
    """A fastconv Conv2d followed by a fastconv BatchNorm2d that normalises with its running statistics,
    and no forward hook that expects to see either module run on its own."""
    return (type(conv) is Conv2d and type(bn) is BatchNorm2d and conv.padding_mode == "zeros"
            and not bn.training and bn.running_mean is not None and bn.num_features == conv.out_channels
            and not _hooked(conv, bn))


def _bn_activation(bn: nn.Module, act: nn.Module) -> Optional[str]:
    """The activation a fastconv BatchNorm can apply itself in place of the module ``act`` after it:
    "relu" / "relu6" for a plain ReLU / ReLU6, with no forward hook on either module and no fused
    convolution's result waiting to pass through the BatchNorm (see Conv2d); else None."""
    activation = _FUSED_ACTIVATIONS.get(type(act))
    if (activation is None or type(bn) not in (BatchNorm1d, BatchNorm2d) or "_fastconv_normalised" in bn.__dict__
            or _hooked(bn, act)):
        return None
    return activation


def _hooked(*modules: nn.Module) -> bool:
    if getattr(torch_module, "_global_forward_hooks", None) or getattr(torch_module, "_global_forward_pre_hooks", None):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def _conv_bn(cache_owner: dict, slot, conv, bn, act, input):
    """conv → bn (→ act) as one convolution: the fused op when autograd or torch.compile needs it, else
    a plain convolution with the BatchNorm folded into weights cached in ``cache_owner`` under ``slot``."""
    tensors = (conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias)
    if torch.compiler.is_compiling() or records_grad((input,) + tensors):
        return F.conv2d_bn(input, conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                           bn.eps, conv.stride, conv.padding, conv.dilation, conv.groups, activation=act)
    # Inference without autograd: fold once and reuse the folded weights while no parameter or
    # running statistic changes (their storage and version counters are the cache key), and with
    # them, where the convolution runs Winograd, its transformed filters (a FilterCache).
    cache = cache_owner.setdefault("_fastconv_folded", {})
    key = tuple(None if t is None else (t.data_ptr(), t._version, t.dtype) for t in tensors) + (bn.eps,)
    hit = cache.get(slot)
    if hit is None or hit[0] != key:
        w, b = _folded(*tensors, bn.eps)
        hit = cache[slot] = (key, torch.from_numpy(w), torch.from_numpy(b), ops.FilterCache())
    return F._conv2d_cached_filters(input, hit[1], hit[2], conv.stride, conv.padding, conv.dilation, conv.groups,
                                    act, hit[3])


class Sequential(nn.Sequential):
    """``torch.nn.Sequential`` that, in inference, runs each Conv2d → BatchNorm2d (→ ReLU/ReLU6) run of
    its children as one fused convolution (``torch.ops.fastconv.conv2d_bn``: the BatchNorm folded into
    the weights, the activation into the epilogue), and otherwise (in training) each BatchNorm →
    ReLU/ReLU6 pair as one BatchNorm whose pass applies the activation, forward and backward.

    The children and the state_dict are unchanged, and the fusion is decided per call: a conv run
    fuses only while its BatchNorm is in eval mode (running statistics). A forward hook on a child
    (or a global one) keeps that child running on its own. Gradients flow through the fused ops too.
    """

    def forward(self, input):
        layers = list(self._modules.values())
        tracing = isinstance(input, torch.fx.Proxy)  # torch.fx records the children as they are
        i = 0
        while i < len(layers):
            if not tracing and i + 1 < len(layers) and _fusable_bn(layers[i], layers[i + 1]):
                act = (_FUSED_ACTIVATIONS.get(type(layers[i + 2]))
                       if i + 2 < len(layers) and not _hooked(layers[i + 2]) else None)
                input = _conv_bn(self.__dict__, i, layers[i], layers[i + 1], act, input)
                i += 3 if act is not None else 2
                continue
            fused_act = _bn_activation(layers[i], layers[i + 1]) if not tracing and i + 1 < len(layers) else None
            if fused_act is not None:
                input = layers[i]._normalise(input, fused_act)
                i += 2
            else:
                input = layers[i](input)
                i += 1
        return input

