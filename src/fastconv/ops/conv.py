"""Convolution on N, C, *spatial float arrays (PyTorch semantics), forward and backward.

``conv1d``, ``conv2d`` and ``conv3d`` share one validated geometry (:class:`_Conv`)
and one pair of kernel entries (``conv_forward`` / ``conv_backward`` in ``_core``),
which take 1 to 3 spatial dimensions. float32 is the fast path; float64 runs on
the same templated kernels (every algorithm on the packed GEMM).
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .. import _core
from . import _tune_cache
from . import _device
from ._device import kernels
from ._validate import (
    activation_code,
    as_int,
    check_numel,
    float_array,
    output_array,
    pair,
    tuple_arg,
)

ALGORITHMS = ("auto", "direct", "im2col", "pointwise", "depthwise", "winograd")

IntOrTuple = Union[int, Tuple[int, ...]]
Padding = Union[int, Tuple[int, ...], str]
Needs = Tuple[bool, bool, bool]


def _padding(padding: Padding, kernel: Sequence[int], stride, dilation) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(before, after) padding per spatial axis from PyTorch's padding argument."""
    nd = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * nd, (0,) * nd
        if padding == "same":
            if any(s != 1 for s in stride):
                raise ValueError("padding='same' is not supported for strided convolutions (stride must be 1)")
            totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
            # As PyTorch: the extra row/column of an even kernel goes at the end.
            return tuple(t // 2 for t in totals), tuple(t - t // 2 for t in totals)
        raise ValueError(f"padding must be an int, a tuple, 'same' or 'valid', got {padding!r}")
    p = tuple_arg(padding, "padding", nd, minimum=0)
    return p, p


_AXES = ("depth", "height", "width")


def _output_size(size: int, kernel: int, stride: int, pad_before: int, pad_after: int, dilation: int, axis: str) -> int:
    padded = size + pad_before + pad_after
    span = dilation * (kernel - 1) + 1
    if span > padded:
        raise ValueError(
            f"kernel {axis} (dilated size {span}) is larger than the padded input {axis} ({padded} = "
            f"{size} + padding {pad_before + pad_after})"
        )
    return (padded - span) // stride + 1


def conv2d_output_shape(
    input_size, kernel_size, stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
) -> Tuple[int, int]:
    """Spatial output size (H_out, W_out) of a 2-D convolution.

    Per axis: ``floor((H + 2P - D*(K-1) - 1) / S) + 1``, with ``padding`` as in
    :func:`conv2d` (int, pair, ``'same'`` or ``'valid'``). ``input_size`` and
    ``kernel_size`` are (H, W) and (KH, KW) or ints. Raises ``ValueError`` naming the
    sizes when the output would be smaller than 1.
    """
    h, w = pair(input_size, "input_size", minimum=0)
    k = pair(kernel_size, "kernel_size", minimum=1)
    s = pair(stride, "stride", minimum=1)
    d = pair(dilation, "dilation", minimum=1)
    before, after = _padding(padding, k, s, d)
    return tuple(_output_size(n, k[i], s[i], before[i], after[i], d[i], _AXES[i + 1]) for i, n in enumerate((h, w)))


def _plain(value) -> bool:
    """Whether ``value`` is a str, an int or a tuple of ints, exactly (no bool, float or
    int subclass): then equal values are the same argument, and one validation holds for all."""
    t = type(value)
    return t is int or t is str or (t is tuple and all(type(v) is int for v in value))


# Validated geometry by (nd, input shape, weight shape, stride, padding, dilation, groups),
# for plain arguments only (see _plain): a model runs the same few convolutions on every
# call, and validating their arguments again cost more than a small convolution itself.
_GEOMETRY: dict = {}
_GEOMETRY_MAX = 4096
_GEOMETRY_FIELDS = ("groups", "stride", "dilation", "pad_before", "pad_after", "c_in", "c_out", "kernel", "out_shape")


class _Conv:
    """A validated convolution: arrays, geometry and output shape (nd = 1, 2 or 3 spatial axes)."""

    def __init__(self, nd: int, input, weight, stride, padding, dilation, groups, *, input_name="input"):
        self.nd = nd
        self.x = float_array(input, input_name, nd + 2)
        self.dtype = self.x.dtype
        self.w = float_array(weight, "weight", nd + 2, self.dtype)
        key = None
        if _plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int:
            key = (nd, self.x.shape, self.w.shape, stride, padding, dilation, groups)
            known = _GEOMETRY.get(key)
            if known is not None:
                self.groups, self.stride, self.dilation, self.pad_before, self.pad_after, self.c_in, self.c_out, \
                    self.kernel, self.out_shape = known
                return
        self._validate(stride, padding, dilation, groups)
        if key is not None:
            if len(_GEOMETRY) >= _GEOMETRY_MAX:
                _GEOMETRY.clear()
            _GEOMETRY[key] = tuple(getattr(self, f) for f in _GEOMETRY_FIELDS)

    def _validate(self, stride, padding, dilation, groups) -> None:
        nd = self.nd
        groups = as_int(groups, "groups")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        self.groups = groups
        n, c_in = self.x.shape[:2]
        c_out, c_in_g = self.w.shape[:2]
        kernel = self.w.shape[2:]
        if c_in % groups:
            raise ValueError(f"groups ({groups}) must divide the input channels ({c_in})")
        if c_out % groups:
            raise ValueError(f"groups ({groups}) must divide the output channels (weight.shape[0] = {c_out})")
        if c_in_g * groups != c_in:
            raise ValueError(
                f"input has {c_in} channels but weight expects {c_in_g * groups} "
                f"(weight.shape[1] = {c_in_g} x groups = {groups})"
            )
        if min(kernel) < 1:
            raise ValueError(f"weight has an empty kernel: shape {self.w.shape}")
        self.stride = tuple_arg(stride, "stride", nd, minimum=1)
        self.dilation = tuple_arg(dilation, "dilation", nd, minimum=1)
        self.pad_before, self.pad_after = _padding(padding, kernel, self.stride, self.dilation)
        axes = _AXES[3 - nd:]
        spatial = self.x.shape[2:]
        out = tuple(
            _output_size(spatial[i], kernel[i], self.stride[i], self.pad_before[i], self.pad_after[i],
                         self.dilation[i], axes[i])
            for i in range(nd)
        )
        check_numel((c_in,) + tuple(s + b + a for s, b, a in zip(spatial, self.pad_before, self.pad_after)),
                    "the padded input")
        # A stride beyond the padded input's last window start changes nothing (one output position
        # along that axis), so it is cut to the smallest stride with the same output size. (The
        # direct kernel sizes its phase-split input copy by the stride: a stride of 2**31 - 1 on a
        # small input crashed it, and 2**20 ran out of memory.)
        self.stride = tuple(
            min(s, spatial[i] + self.pad_before[i] + self.pad_after[i] - self.dilation[i] * (kernel[i] - 1))
            if out[i] == 1 else s for i, s in enumerate(self.stride))
        self.c_in, self.c_out, self.kernel = c_in, c_out, tuple(kernel)
        self.out_shape = (n, c_out) + out

    def triples(self):
        """stride, padding (before), dilation right-aligned into three spatial axes, as _core takes them."""
        lead = 3 - self.nd
        return (1,) * lead + self.stride, (0,) * lead + self.pad_before, (1,) * lead + self.dilation

    def is_unpadded_1x1(self) -> bool:
        return all(k == 1 for k in self.kernel) and not any(self.pad_before + self.pad_after)

    def is_pointwise(self) -> bool:
        return self.is_unpadded_1x1() and all(s == 1 for s in self.stride)

    def is_depthwise(self) -> bool:
        return self.groups == self.c_in and self.c_in > 1 and self.nd <= 2

    def is_winograd_shape(self) -> bool:
        """A 2-D 3x3 convolution with stride 1, no dilation and one group: what Winograd computes."""
        return (self.nd == 2 and self.kernel == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.groups == 1)

    def backward_algo(self) -> str:
        """The kernel family of the backward pass: 'depthwise'; 'winograd' (CPU) where the data gradient
        (a stride-1 convolution of grad_output, padded by 2 - padding) is one that
        :func:`_winograd_wins` picks, the rest as 'direct'; 'direct' for other 1-D/2-D (float32
        runs the direct kernels wherever they beat the GEMM, which runs the rest; a 1x1
        convolution's GEMM needs no im2col); 'im2col' for 3-D (the GEMM)."""
        if self.is_depthwise():
            return "depthwise"
        if self.nd == 3:
            return "im2col"
        return "winograd" if self.winograd_picked(data_gradient=True) else "direct"

    def weight_grad_algo(self) -> str:
        """The kernel family of the weight gradient: 'winograd' (float32 on the CPU) where
        :func:`_winograd_weight_grad_wins` picks it for this shape, otherwise the backward pass's
        (:meth:`backward_algo`, whose 'winograd' means the data gradient's: its weight gradient
        then runs as 'direct')."""
        if self.winograd_kernels_apply() and _winograd_weight_grad_wins(self.x.shape[0], self.c_in, self.c_out,
                                                                         *self.out_shape[2:]):
            return "winograd"
        algo = self.backward_algo()
        return "direct" if algo == "winograd" else algo

    def winograd_kernels_apply(self) -> bool:
        """Whether fastconv's Winograd kernels can run this convolution: float32, on the CPU, Winograd's shape."""
        return self.dtype == np.float32 and self.is_winograd_shape() and not _device.is_gpu_like(self.x)

    def winograd_picked(self, data_gradient: bool = False, filters_cached: bool = False) -> bool:
        """Whether ``algo='auto'`` runs Winograd for this convolution (float32 on the CPU, Winograd's
        shape, :func:`_winograd_wins`; ``filters_cached``: with a :class:`FilterCache`), or with
        ``data_gradient`` for its data gradient: the stride-1 convolution grad_output -> grad_input
        over the input's plane, padded by 2 - padding."""
        if not self.winograd_kernels_apply():
            return False
        n = self.x.shape[0]
        if data_gradient:
            return max(self.pad_before) <= 2 and _winograd_wins(n, self.c_out, self.c_in, *self.x.shape[2:])
        return _winograd_wins(n, self.c_in, self.c_out, *self.out_shape[2:], filters_cached=filters_cached)

    def unsupported(self, algo: str) -> Optional[str]:
        """Why ``algo`` (not 'auto') cannot run this convolution, or None if it can."""
        if algo == "pointwise" and not self.is_pointwise():
            return (f"algo='pointwise' needs a 1x1 kernel, stride 1 and no padding; got kernel {self.kernel}, "
                    f"stride {self.stride}, padding {self.pad_before + self.pad_after}")
        if algo == "depthwise" and self.groups != self.c_in:
            return f"algo='depthwise' needs groups == input channels ({self.c_in}), got groups={self.groups}"
        if algo in ("direct", "depthwise") and self.nd == 3:
            return f"algo={algo!r} is a 1-D/2-D kernel; conv3d runs on 'im2col' or 'pointwise'"
        if algo == "winograd":
            if not self.is_winograd_shape():
                return (f"algo='winograd' needs a 2-D 3x3 kernel, stride 1, dilation 1 and groups=1; got kernel "
                        f"{self.kernel}, stride {self.stride}, dilation {self.dilation}, groups {self.groups}")
            if _device.is_gpu_like(self.x):
                return "algo='winograd' is a CPU kernel; on the GPU use 'direct', 'im2col' or 'auto'"
        return None

    def eligible_algos(self) -> Tuple[str, ...]:
        """Every algorithm that can run this convolution."""
        return tuple(a for a in ALGORITHMS[1:] if self.unsupported(a) is None)

    def choose_algo(self, algo: str, filters_cached: bool = False) -> str:
        if not isinstance(algo, str) or algo not in ALGORITHMS:
            raise ValueError(f"algo must be one of {ALGORITHMS}, got {algo!r}")
        if algo == "auto":
            return _choose_algo(self, filters_cached)
        why = self.unsupported(algo)
        if why is not None:
            raise ValueError(why)
        return algo

    def bias(self, bias):
        if bias is None:
            return None
        b = float_array(bias, "bias", 1, self.dtype)
        if b.shape[0] != self.c_out:
            raise ValueError(f"bias must have {self.c_out} elements (one per output channel), got {b.shape[0]}")
        return b

    def check_grad_output(self, grad_output) -> np.ndarray:
        g = float_array(grad_output, "grad_output", self.nd + 2, self.dtype)
        if g.shape != self.out_shape:
            raise ValueError(f"grad_output must have the convolution's output shape {self.out_shape}, got {g.shape}")
        return g


def _choose_algo(conv: _Conv, filters_cached: bool = False) -> str:
    """The algorithm ``algo='auto'`` runs: the tuned winner for this shape, thread count
    and ISA when ``fastconv.tune`` has cached one (and it can run the shape), otherwise
    :func:`_heuristic_algo` (``filters_cached``: the call has a :class:`FilterCache`)."""
    if _device.is_gpu(conv.x):
        return _gpu_heuristic_algo(conv)
    tuned = _tune_cache.lookup(conv)
    return tuned if tuned is not None else _heuristic_algo(conv, filters_cached)


def _gpu_heuristic_algo(conv: _Conv) -> str:
    """``algo='auto'`` on the GPU: depthwise and pointwise as on the CPU; otherwise im2col + the
    tiled GEMM when the reduction (C_in/groups x KH x KW) and C_out are large enough to fill its
    tiles, the direct kernel for small ones. 3-D convolutions have no GPU kernel."""
    if conv.is_depthwise():
        return "depthwise"
    if conv.is_pointwise():
        return "pointwise"
    reduction = (conv.c_in // conv.groups) * int(np.prod(conv.kernel))
    return "im2col" if reduction >= 64 and conv.c_out // conv.groups >= 32 else "direct"


def _heuristic_algo(conv: _Conv, filters_cached: bool = False) -> str:
    """The algorithm ``algo='auto'`` picks from the shape alone.

    - groups == C_in (> 1): the depthwise kernel (memory-bound; vectorised along W).
    - 1x1, stride 1, no padding: pointwise, a plain GEMM on the input planes (small planes on
      AVX-512: the flat direct kernel, chosen in C++ by ``flat_runs_pointwise``).
    - 1x1 with a stride (ResNet's downsampling shortcuts), no padding: im2col, whose col is just
      the subsampled input, where the direct kernel would copy every stride phase of the input to
      read one. Measured (in-process, medians of 5 rounds): 64->128 @56/2 1.19x faster than direct
      at batch 1 and 1.41x at batch 8, 128->256 @28/2 1.12x / 1.14x, 256->512 @14/2 1.11x / 0.99x,
      256->512 @56/2 1.30x (batch 1), 512->1024 @28/2 1.08x (batch 8).
    - otherwise: the blocked direct kernel (1-D and 2-D), which needs no im2col buffer
      and handles stride, dilation and groups through the phase-split input copy;
      3-D convolutions run on im2col + GEMM.

    Measured on the benchmark layer suite (2 Zen 4 cores, AVX-512, medians): direct
    beat im2col + GEMM on every layer, by 1.2x (3x3 64@56) to 3.3x (VGG 3x3 64@224),
    and pointwise beat direct by 1.7x on 1x1 256->64@56. im2col stays available
    through ``algo='im2col'``. float64 runs every algorithm on the GEMM.
    """
    if conv.is_depthwise():
        return "depthwise"
    if conv.is_pointwise():
        return "pointwise"
    if conv.is_unpadded_1x1():  # with a stride
        return "im2col"
    if conv.winograd_picked(filters_cached=filters_cached):
        return "winograd"
    return "im2col" if conv.nd == 3 else "direct"


def _winograd_wins(n: int, c_in: int, c_out: int, h_out: int, w_out: int, filters_cached: bool = False) -> bool:
    """Whether Winograd F(4x4, 3x3) beats the direct kernel on a float32 3x3 stride-1 convolution.

    Its GEMMs make a quarter of the direct kernel's multiply-adds, but it transforms every
    filter (C_in x C_out per call), every input tile (4x4 outputs) per input channel and every
    output tile per output channel, and pads the plane to whole tiles. So it needs at least 64
    channels on both sides, and either at least 48 tiles in the batch on planes of at least
    28 x 28 (14 x 14 from 128 channels), or at least 256 channels on both sides and tiles x
    channels >= 8192, where the kernel shares one block of all tiles among the threads and
    transforms the filters as its GEMMs use them (csrc/conv/winograd.h:winograd_shares_tiles).
    Measured against algo='direct' (in-process, alternated, 2 threads, AVX-512): 64 @56
    1.44-1.85x, 128 @28 1.30-1.34x, 64->128 @56 1.56x, 128->64 @28 1.16x, VGG 64 @224
    1.67-2.07x, 64 @56 batch 32 1.46x, 128 @28 batch 2 1.34-1.46x, 256 @14 batch 2 1.48x (data
    gradient 1.07x), batch 4 1.71x and batch 8 1.45-1.76x, 512 @7 batch 4 1.30x (data gradient
    1.28x), batch 8 1.49x (1.51x), batch 16 1.64x, 256 @7 batch 8 1.53x, 384 @14 batch 2 1.30x,
    512 @14 batch 1 1.06x; left on the direct kernel: 256 @14 batch 1 (16 tiles) 0.94x, 512 @7
    batch 1 0.70x and batch 2 1.00x, 256 @7 batch 4 0.97x, 64 @16 batch 8 1.06x, 96 @20 0.81x,
    128 @16 0.83x, 32 @112 0.90x, 16 @112 0.53x, 3->64 @224 0.48x.

    ``filters_cached`` (the call has a :class:`FilterCache`, so the filters are transformed once, not
    per call): also from 128 channels on both sides and 8 tiles. Measured with the cache against
    algo='direct' (same method): 256 @14 batch 1 1.26-1.78x, 512 @7 batch 2 1.08-1.14x, 256 @7
    batch 2 1.41-1.47x, 128 @14 batch 1 1.22-1.39x, 128 @7 batch 2 1.17x and batch 4 1.28-1.29x, 192
    @14 1.41x, 128->512 @7 batch 2 1.19x; left on the direct kernel: 4 tiles (7 x 7, batch 1) 512
    0.89-0.96x, 384 1.04-1.27x, 256 0.95-1.35x, 128 0.80x; 64 @14 batch 1 0.99x.
    """
    tiles = n * -(-h_out // 4) * -(-w_out // 4)
    narrow = min(c_in, c_out)
    if narrow < 64:
        return False
    if narrow >= 256 and tiles * narrow >= 8192:
        return True
    if filters_cached and narrow >= 128 and tiles >= 8:
        return True
    plane = h_out * w_out
    return tiles >= 48 and (plane >= 784 or (plane >= 196 and narrow >= 128))


def _winograd_weight_grad_wins(n: int, c_in: int, c_out: int, h_out: int, w_out: int) -> bool:
    """Whether the Winograd weight gradient (csrc/conv/winograd_weight_grad.h) beats the direct
    kernel's on a float32 3x3 stride-1 convolution.

    Its 36 GEMMs (tiles x channels) make a quarter of the direct kernel's multiply-adds, but each
    tile is transformed once per input and per output channel, and the 36 x C_in x C_out sums are
    written and transformed back once per block of tiles. So it needs products large against the
    transforms, C_in C_out / (C_in + C_out) >= 20, and at least 64 tiles in the batch (48 where
    that quotient is >= 40). Measured against the direct kernel's weight gradient (in-process,
    alternated, 2 threads, AVX-512): 64 @56 2.0-2.4x, 128 @28 2.1-2.3x, VGG 64 @224 1.7-2.5x,
    64 @56 batch 8 1.7-2.0x and batch 32 1.6-2.0x, 128 @28 batch 8 2.1-2.4x, 256 @14 batch 8
    1.6-2.0x and batch 4 1.5x, 512 @7 batch 16 1.6x, 64 -> 128 @28 1.2x, 48 @56 1.3x, 32 -> 64
    @56 1.2x, 64 @16 batch 8 1.3x; left on the direct kernel: 64 @28 (49 tiles) 0.95x, 256 @14
    batch 2 (32 tiles) 1.09x, 512 @7 batch 8 0.78x, 256 @14 batch 1 0.42x, 128 @16 0.51x, 96 @20
    0.61x, 32 @112 0.90x, 16 @112 0.62x, 3 -> 64 @224 0.32x.
    """
    tiles = n * -(-h_out // 4) * -(-w_out // 4)
    quotient = c_in * c_out / max(1, c_in + c_out)
    return quotient >= 20 and (tiles >= 64 or (tiles >= 48 and quotient >= 40))


def conv_algorithm(input, weight, stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
                   groups: int = 1, *, filters_cached: bool = False) -> str:
    """The algorithm that ``conv1d``/``conv2d``/``conv3d`` with ``algo='auto'`` runs for these
    arguments (the number of spatial axes is the input's ``ndim - 2``): the winner that
    :func:`fastconv.tune` cached for this shape, thread count and ISA, or else the
    shape heuristic. Only the arrays' shapes and dtype matter. ``filters_cached``: for a
    ``conv2d`` call given a :class:`FilterCache`.
    """
    x = input if _device.is_gpu_like(input) else np.asarray(input)
    nd = x.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(f"input must be (N, C, *spatial) with 1 to 3 spatial axes, got shape {x.shape}")
    return _choose_algo(_Conv(nd, x, weight, stride, padding, dilation, groups), bool(filters_cached) and nd == 2)


class FilterCache:
    """One convolution's filters transformed for the Winograd kernel, kept from call to call.

    Every Winograd call transforms all C_out x C_in filters, which costs more than it saves
    where the tiles are few (256 channels at 14 x 14, batch 1). Inference with fixed weights
    can do it once: pass a cache as ``conv2d(..., filter_cache=cache)`` and the first call
    that runs Winograd stores the transformed filters (4x the weight's memory), later calls
    read them, and ``algo='auto'`` also picks Winograd where only reused filters make it win
    (:func:`_winograd_wins`).

    The cache cannot see a weight change in place: before each call, :meth:`keyed` with a key
    that changes whenever the weight's values may have (``fastconv.torch`` passes the tensor's
    data pointer and version counter). Held filters are used only for a weight at the same
    address, of the same shape, on the same kernel set; else they are made anew. The cache holds a
    reference to the weight array its filters came from, so no other array can take its address.
    """

    __slots__ = ("_key", "_held")

    def __init__(self) -> None:
        self._key = None
        self._held = None  # ((kernel set, weight address, weight shape), transformed filters, the weight)

    def keyed(self, key) -> "FilterCache":
        """This cache, emptied unless ``key`` equals the key of the previous call."""
        if key != self._key:
            self._key, self._held = key, None
        return self

    def clear(self) -> None:
        """Drops the held filters (their memory goes back to fastconv's block cache)."""
        self._key = self._held = None

    @property
    def nbytes(self) -> int:
        """Bytes of the held filters (0 when empty)."""
        return 0 if self._held is None else self._held[1].nbytes

    def filters_for(self, conv: _Conv, be) -> np.ndarray:
        """The transformed filters of ``conv``'s weight for kernel set ``be``, made if not held."""
        w = conv.w
        ident = (be, w.__array_interface__["data"][0], w.shape)
        if self._held is None or self._held[0] != ident:
            u = _core.empty((be.conv_winograd_filters_size(conv.c_in, conv.c_out),), np.float32)
            be.conv_winograd_filters(w, u)
            self._held = (ident, u, w)
        return self._held[1]


def _forward(conv: _Conv, bias, activation, algo, out, filter_cache: Optional[FilterCache] = None) -> np.ndarray:
    b = conv.bias(bias)
    act = activation_code(activation)
    if filter_cache is not None and not isinstance(filter_cache, FilterCache):
        raise TypeError(f"filter_cache must be a fastconv.ops.FilterCache or None, got {type(filter_cache).__name__}")
    algo = conv.choose_algo(algo, filters_cached=filter_cache is not None)
    y = output_array(out, conv.out_shape, conv.dtype, like=conv.x)
    if y.size == 0:
        return y
    s, p, d = conv.triples()
    be = kernels(y)
    cached = {}  # the CPU kernel set's Winograd only
    if filter_cache is not None and algo == "winograd" and conv.winograd_kernels_apply() and conv.w.size:
        cached["winograd_filters"] = filter_cache.filters_for(conv, be)
    be.conv_forward(conv.x, conv.w, b, y, s, p, d, conv.groups, act, _core.ALGORITHMS[algo], **cached)
    return y


def _needs(needs) -> Needs:
    if not isinstance(needs, (tuple, list)) or len(needs) != 3 or not all(isinstance(v, (bool, np.bool_)) for v in needs):
        raise TypeError(f"needs must be a tuple of three bools (input, weight, bias), got {needs!r}")
    return tuple(bool(v) for v in needs)


def _backward(conv: _Conv, grad_output, needs) -> Tuple[Optional[np.ndarray], ...]:
    need_x, need_w, need_b = _needs(needs)
    g = conv.check_grad_output(grad_output)
    gx = _device.empty(conv.x.shape, conv.dtype, g) if need_x else None
    gw = _device.empty(conv.w.shape, conv.dtype, g) if need_w else None
    gb = _device.empty((conv.c_out,), conv.dtype, g) if need_b else None
    if g.size == 0 or conv.x.size == 0:
        # An empty input (whose padding can still make outputs) contributes nothing to the data and
        # weight gradients, but the bias gradient is still the sum of grad_output.
        for a in (gx, gw):
            if a is not None:
                _device.fill_zero(a)
        if gb is not None:
            gb = _device.channel_sum(g)  # zeros for an empty grad_output
        return gx, gw, gb
    s, p, d = conv.triples()
    algos = _core.ALGORITHMS[conv.backward_algo()], _core.ALGORITHMS[conv.weight_grad_algo()]
    kernels(g).conv_backward(g, conv.x, conv.w, gx, gw, gb, s, p, d, conv.groups, *algos)
    return gx, gw, gb


_FORWARD_DOC = """
    Args:
        input: (N, C_in, {dims}) float32 or float64 array. Non-contiguous arrays are
            copied once; other dtypes raise ``TypeError``.
        weight: (C_out, C_in / groups, {kdims}) array of the input's dtype.
        bias: optional (C_out,) array.
        stride, dilation: int or tuple of {nd} ints, each >= 1.
        padding: int or tuple (>= 0), ``'valid'`` (none) or ``'same'`` (stride 1
            only; the extra element of an even kernel goes at the end, as PyTorch does).
        groups: C_in and C_out must both be divisible by it.
        activation: ``None``, ``'relu'`` or ``'relu6'``, fused into the kernel's epilogue.
        algo: see :func:`conv2d`.
        out: optional C-contiguous array of the output shape and dtype to write into.
"""


def conv2d(
    input: np.ndarray,
    weight: np.ndarray,
    bias: Optional[np.ndarray] = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    activation: Optional[str] = None,
    algo: str = "auto",
    out: Optional[np.ndarray] = None,
    filter_cache: Optional[FilterCache] = None,
) -> np.ndarray:
    """2-D convolution (cross-correlation) of an NCHW batch, as ``torch.nn.functional.conv2d``.

    ``algo``: ``'auto'`` (choose per shape), ``'direct'`` (blocked direct convolution),
    ``'im2col'`` (explicit im2col buffer + packed GEMM), ``'pointwise'`` (1x1, stride
    1, no padding: a GEMM with no im2col; on AVX-512, planes of at most 256 positions (784
    at batch 1) with 24+ input channels run on the flat direct kernel, which beats the GEMM
    there), ``'depthwise'`` (groups == C_in, any channel multiplier) or ``'winograd'``
    (Winograd F(4x4, 3x3): 3x3, stride 1, dilation 1, groups 1; a quarter of the
    multiply-adds, an error a few times the direct kernel's; CPU only). Every algorithm
    gives the same answer where it applies (within float32 rounding); one asked for a
    shape it cannot handle raises ``ValueError``. float64 runs every algorithm on the GEMM.

    ``filter_cache``: a :class:`FilterCache` that keeps the Winograd-transformed filters
    between calls with the same weight (inference); see there.

    Returns:
        (N, C_out, H_out, W_out) array of the input's dtype.
    """
    conv = _Conv(2, input, weight, stride, padding, dilation, groups)
    return _forward(conv, bias, activation, algo, out, filter_cache)


conv2d.__doc__ += _FORWARD_DOC.format(dims="H, W", kdims="KH, KW", nd=2)


def conv1d(
    input: np.ndarray,
    weight: np.ndarray,
    bias: Optional[np.ndarray] = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    activation: Optional[str] = None,
    algo: str = "auto",
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """1-D convolution of an (N, C, L) batch, as ``torch.nn.functional.conv1d``.

    Runs on the 2-D kernels with H = 1 (the arrays are read in place, no copy).

    Returns:
        (N, C_out, L_out) array of the input's dtype.
    """
    conv = _Conv(1, input, weight, stride, padding, dilation, groups)
    return _forward(conv, bias, activation, algo, out)


conv1d.__doc__ += _FORWARD_DOC.format(dims="L", kdims="K", nd=1)


def conv3d(
    input: np.ndarray,
    weight: np.ndarray,
    bias: Optional[np.ndarray] = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    *,
    activation: Optional[str] = None,
    algo: str = "auto",
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """3-D convolution of an (N, C, D, H, W) batch, as ``torch.nn.functional.conv3d``.

    Runs on the packed GEMM over a 3-D im2col (``algo`` 'auto', 'im2col' or 'pointwise').

    Returns:
        (N, C_out, D_out, H_out, W_out) array of the input's dtype.
    """
    conv = _Conv(3, input, weight, stride, padding, dilation, groups)
    return _forward(conv, bias, activation, algo, out)


conv3d.__doc__ += _FORWARD_DOC.format(dims="D, H, W", kdims="KD, KH, KW", nd=3)

_BACKWARD_DOC = """
    Gradients of ``conv{nd}d(input, weight, bias, stride, padding, dilation, groups)``
    (no activation) given ``grad_output``, the gradient of its output. ``needs`` =
    (input, weight, bias) says which to compute; the others come back as ``None``.
    Every case the forward accepts is supported (groups, depthwise with multipliers,
    dilation, stride, 'same'/'valid'). float32 1-D/2-D gradients run on the direct
    kernels where those beat the packed GEMM (the data gradient with stride 1; the weight
    gradient on large enough planes), the rest on the GEMM (im2col / col2im); depthwise
    ones on a dedicated kernel.

    Returns:
        (grad_input, grad_weight, grad_bias)
"""


def conv2d_backward(grad_output, input, weight, stride: IntOrTuple = 1, padding: Padding = 0,
                    dilation: IntOrTuple = 1, groups: int = 1, *, needs: Needs = (True, True, True)):
    conv = _Conv(2, input, weight, stride, padding, dilation, groups)
    return _backward(conv, grad_output, needs)


def conv1d_backward(grad_output, input, weight, stride: IntOrTuple = 1, padding: Padding = 0,
                    dilation: IntOrTuple = 1, groups: int = 1, *, needs: Needs = (True, True, True)):
    conv = _Conv(1, input, weight, stride, padding, dilation, groups)
    return _backward(conv, grad_output, needs)


def conv3d_backward(grad_output, input, weight, stride: IntOrTuple = 1, padding: Padding = 0,
                    dilation: IntOrTuple = 1, groups: int = 1, *, needs: Needs = (True, True, True)):
    conv = _Conv(3, input, weight, stride, padding, dilation, groups)
    return _backward(conv, grad_output, needs)


for _f, _nd in ((conv1d_backward, 1), (conv2d_backward, 2), (conv3d_backward, 3)):
    _f.__doc__ = _BACKWARD_DOC.format(nd=_nd)


class _Transpose:
    """conv_transpose2d as the backward-data pass of the convolution that maps its output to its input."""

    def __init__(self, input, weight, stride, padding, output_padding, groups, dilation):
        x = float_array(input, "input", 4)
        w = float_array(weight, "weight", 4, x.dtype)
        groups = as_int(groups, "groups")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        n, c_in, h, wd = x.shape
        if w.shape[0] != c_in:
            raise ValueError(f"weight must have shape (C_in = {c_in}, C_out / groups, KH, KW), got {w.shape}")
        if c_in % groups:
            raise ValueError(f"groups ({groups}) must divide the input channels ({c_in})")
        s = pair(stride, "stride", minimum=1)
        p = pair(padding, "padding", minimum=0)
        d = pair(dilation, "dilation", minimum=1)
        op = pair(output_padding, "output_padding", minimum=0)
        for i in range(2):
            if op[i] >= max(s[i], d[i]):
                raise ValueError(f"output_padding ({op}) must be smaller than either stride ({s}) or dilation ({d})")
        k = w.shape[2:]
        out = tuple((size - 1) * s[i] - 2 * p[i] + d[i] * (k[i] - 1) + op[i] + 1 for i, size in enumerate((h, wd)))
        if min(out) < 1:
            raise ValueError(f"conv_transpose2d output would be empty: {out} from input {(h, wd)}")
        self.x, self.w, self.groups = x, w, groups
        self.stride, self.padding, self.dilation = s, p, d
        self.out_shape = (n, w.shape[1] * groups) + out
        check_numel(self.out_shape, "the output")

    def triples(self):
        return (1,) + self.stride, (0,) + self.padding, (1,) + self.dilation


def conv_transpose2d(input, weight, bias=None, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
                     output_padding: IntOrTuple = 0, groups: int = 1, dilation: IntOrTuple = 1) -> np.ndarray:
    """Transposed 2-D convolution, as ``torch.nn.functional.conv_transpose2d``.

    ``weight`` is (C_in, C_out / groups, KH, KW); the output is (N, C_out, H_out, W_out)
    with ``H_out = (H - 1) * stride - 2 * padding + dilation * (KH - 1) + output_padding + 1``.
    It is the convolution's backward-data kernel run as an op.
    """
    t = _Transpose(input, weight, stride, padding, output_padding, groups, dilation)
    b = None
    if bias is not None:
        b = float_array(bias, "bias", 1, t.x.dtype)
        if b.shape != (t.out_shape[1],):
            raise ValueError(f"bias must have {t.out_shape[1]} elements, got {b.shape[0]}")
    y = _device.empty(t.out_shape, t.x.dtype, t.x)
    if t.x.size == 0 or y.size == 0:
        _device.fill_zero(y)
    else:
        s, p, d = t.triples()
        # 'direct': the direct kernels where they beat the GEMM (see _Conv.backward_algo).
        kernels(y).conv_backward(t.x, None, t.w, y, None, None, s, p, d, t.groups, _core.ALGORITHMS["direct"])
    if b is not None:
        if _device.is_gpu(y):
            kernels(y).add_channel_bias(y, b)
        else:
            y += b[None, :, None, None]
    return y


def conv_transpose2d_backward(grad_output, input, weight, stride: IntOrTuple = 1, padding: IntOrTuple = 0,
                              output_padding: IntOrTuple = 0, groups: int = 1, dilation: IntOrTuple = 1, *,
                              needs: Needs = (True, True, True)):
    """Gradients (grad_input, grad_weight, grad_bias) of :func:`conv_transpose2d`; ``None`` where not needed.

    grad_input is the forward convolution of grad_output; grad_weight is that
    convolution's weight gradient with the roles of input and output swapped.
    """
    need_x, need_w, need_b = _needs(needs)
    t = _Transpose(input, weight, stride, padding, output_padding, groups, dilation)
    g = float_array(grad_output, "grad_output", 4, t.x.dtype)
    if g.shape != t.out_shape:
        raise ValueError(f"grad_output must have the output shape {t.out_shape}, got {g.shape}")
    gx = gw = gb = None
    if need_x:
        # The forward convolution of grad_output. Where output_padding >= stride (allowed while it is
        # below the dilation) it has extra rows/columns past the input's: windows that no input
        # element reaches, dropped.
        gx = conv2d(g, t.w, None, t.stride, t.padding, t.dilation, t.groups)
        if tuple(gx.shape) != tuple(t.x.shape):
            gx = _device.contiguous(gx[:, :, :t.x.shape[2], :t.x.shape[3]])
    if need_w:
        gw = _device.empty(t.w.shape, t.x.dtype, g)
        if g.size == 0 or t.x.size == 0:
            _device.fill_zero(gw)
        else:
            s, p, d = t.triples()
            kernels(g).conv_backward(t.x, g, t.w, None, gw, None, s, p, d, t.groups, _core.ALGORITHMS["direct"])
    if need_b:
        gb = _device.channel_sum(g)
    return gx, gw, gb


def depthwise_separable_conv2d(
    input: np.ndarray,
    dw_weight: np.ndarray,
    pw_weight: np.ndarray,
    dw_bias: Optional[np.ndarray] = None,
    pw_bias: Optional[np.ndarray] = None,
    stride: IntOrTuple = 1,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    *,
    activation: Optional[str] = None,
) -> np.ndarray:
    """A MobileNet block's two convolutions in one call.

    A depthwise convolution (``dw_weight``: (C_in * multiplier, 1, KH, KW), groups = C_in,
    with ``stride``/``padding``/``dilation``) followed by a pointwise one (``pw_weight``:
    (C_out, C_in * multiplier, 1, 1)). ``activation`` (None, 'relu', 'relu6') is fused
    after each of the two, as in MobileNet v1's block.
    """
    x = float_array(input, "input", 4)
    dw = float_array(dw_weight, "dw_weight", 4, x.dtype)
    pw = float_array(pw_weight, "pw_weight", 4, x.dtype)
    if dw.shape[1] != 1:
        raise ValueError(f"dw_weight must have shape (C_in * multiplier, 1, KH, KW), got {dw.shape}")
    if pw.shape[2:] != (1, 1):
        raise ValueError(f"pw_weight must have shape (C_out, C_mid, 1, 1), got {pw.shape}")
    mid = conv2d(x, dw, dw_bias, stride, padding, dilation, groups=x.shape[1], activation=activation, algo="depthwise")
    if pw.shape[1] != mid.shape[1]:
        raise ValueError(
            f"pw_weight expects {pw.shape[1]} input channels but the depthwise step gives {mid.shape[1]}"
        )
    return conv2d(mid, pw, pw_bias, activation=activation, algo="pointwise")
