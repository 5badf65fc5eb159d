"""Benchmark case definitions: the single source for ``fastconv-bench`` and ``benchmarks/``.

A case knows its work (FLOPs for compute-bound cases, bytes of compulsory traffic for
memory-bound ones) and, through :meth:`Case.prepare`, builds its inputs once and
returns the callables to time (fastconv's and PyTorch's, both allocating their
outputs as a caller's ``y = f(x)`` does) and a float64 numpy reference that both
results are checked against. A :class:`Place` puts the inputs on the CPU (numpy
arrays, torch CPU tensors) or on the GPU (``fastconv.cuda`` device arrays, torch CUDA
tensors); the GPU suites (:data:`GPU_SUITES`) are the CPU ones at GPU sizes.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .. import Tensor, manual_seed, models, nn, no_grad, ops, optim
from ..analysis import summary
from ..ops._device import is_gpu_like
from ..ops.conv import _Conv
from ..ops.conv import conv2d_output_shape
from . import reference as ref

F32 = 4  # bytes per float32 element
I64 = 8  # bytes per int64 index


def arrays(result) -> List[np.ndarray]:
    """A result (array, tensor, or tuple of them, on the CPU or the GPU; None entries dropped) as numpy arrays."""
    items = result if isinstance(result, (tuple, list)) else (result,)
    out = []
    for r in items:
        if r is None:
            continue
        if hasattr(r, "detach"):
            r = r.detach().cpu().numpy()
        elif is_gpu_like(r):
            from .. import cuda

            r = cuda.to_host(r)
        out.append(np.asarray(r))
    return out


@dataclass(frozen=True)
class Place:
    """Where a case runs. ``device='cpu'``: numpy arrays for fastconv, CPU tensors for PyTorch;
    ``'cuda'``: ``fastconv.cuda`` device arrays and CUDA tensors. ``torch_float64`` gives the
    PyTorch side float64 copies of the floating-point inputs: the GPU runs' reference is the
    case's PyTorch call in double precision (cuDNN / cuBLAS on the same device)."""

    device: str = "cpu"
    torch_float64: bool = False

    def put(self, *host: np.ndarray) -> list:
        """fastconv's inputs: the numpy arrays themselves, or their copies on the GPU."""
        if self.device == "cpu":
            return list(host)
        from .. import cuda

        return [cuda.to_device(a) for a in host]

    def tensors(self, torch, *host: np.ndarray) -> list:
        """PyTorch's inputs: zero-copy CPU tensors of the numpy arrays, or copies on the device."""
        out = []
        for a in host:
            t = torch.from_numpy(a)
            if self.torch_float64 and t.is_floating_point():
                t = t.double()
            out.append(t.to(self.device))
        return out


CPU = Place()


@dataclass
class Prepared:
    """One case, ready to run: inputs are built and bound into the callables."""

    fastconv: Callable[[], object]
    reference: Callable[[], List[np.ndarray]]
    torch: Optional[Callable[[], object]] = None
    algo: str = "-"
    # Which outputs of each side to check (default: all non-None outputs, in order).
    pick_fastconv: Callable[[object], List[np.ndarray]] = arrays
    pick_torch: Callable[[object], List[np.ndarray]] = arrays
    # The calls whose results are checked, where the timed calls change state (a training
    # step updates the weights): default, the timed calls themselves.
    check_fastconv: Optional[Callable[[], object]] = None
    check_torch: Optional[Callable[[], object]] = None


@dataclass(frozen=True)
class Case:
    """Base of all cases: ``name`` (the layer or op), ``direction`` ('fwd', 'bwd' or
    'fwd+bwd') and ``quick`` (part of the default ``--quick`` run; ``--full`` runs all)."""

    name: str
    direction: str = "fwd"
    quick: bool = True

    suite = ""
    needs_torch = False  # runs only where torch is installed and compared against

    @property
    def label(self) -> str:
        return f"{self.name} {self.direction}"

    @property
    def bound(self) -> str:
        """'compute' (rated in GFLOP/s against the GEMM peak) or 'memory' (GB/s against copy bandwidth)."""
        return "compute"

    def flops(self) -> int:
        return 0

    def bytes_moved(self) -> int:
        return 0

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:  # pragma: no cover - abstract
        """The case ready to time, its inputs at ``place`` (PyTorch's callables only when ``torch`` is given)."""
        raise NotImplementedError


def _rng(seed: int = 0):
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------- GEMM


@dataclass(frozen=True)
class GemmCase(Case):
    """``matmul(a, b)`` with a (m, k) and b (k, n), or with ``linear=True``
    ``linear(x, weight)`` with x (m, k) and weight (n, k) (a fully connected layer)."""

    m: int = 0
    n: int = 0
    k: int = 0
    linear: bool = False

    suite = "gemm"

    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    def bytes_moved(self) -> int:
        return F32 * (self.m * self.k + self.k * self.n + self.m * self.n)

    def make_inputs(self, seed: int = 0):
        rng = _rng(seed)
        a = rng.standard_normal((self.m, self.k), dtype=np.float32)
        b = rng.standard_normal((self.n, self.k) if self.linear else (self.k, self.n), dtype=np.float32)
        return a, b

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        a, b = self.make_inputs()
        bt = b.T if self.linear else b
        da, db = place.put(a, b)
        p = Prepared(fastconv=(lambda: ops.linear(da, db)) if self.linear else (lambda: ops.matmul(da, db)),
                     reference=lambda: [a.astype(np.float64) @ bt.astype(np.float64)], algo="gemm")
        if torch is not None:
            ta, tb = place.tensors(torch, a, b)
            p.torch = (lambda: torch.nn.functional.linear(ta, tb)) if self.linear else (lambda: torch.mm(ta, tb))
        return p


# --------------------------------------------------------------------------- convolution layers


@dataclass(frozen=True)
class ConvCase(Case):
    """One NCHW float32 convolution layer; ``direction='bwd'`` computes all three gradients."""

    n: int = 1
    c_in: int = 1
    c_out: int = 1
    size: int = 1
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    groups: int = 1

    suite = "layers"

    @property
    def depthwise(self) -> bool:
        return self.groups == self.c_in and self.c_in > 1

    @property
    def bound(self) -> str:
        return "memory" if self.depthwise else "compute"

    def output_hw(self) -> Tuple[int, int]:
        return conv2d_output_shape(self.size, self.kernel, self.stride, self.padding)

    def _scale(self) -> int:
        return 1 if self.direction == "fwd" else 2

    def flops(self) -> int:
        """Forward FLOPs; the backward pass counts twice that (data and weight gradients)."""
        ho, wo = self.output_hw()
        return self._scale() * 2 * self.n * self.c_out * ho * wo * (self.c_in // self.groups) * self.kernel ** 2

    def bytes_moved(self) -> int:
        """Compulsory traffic: input, weights and output once each (twice for the backward pass)."""
        ho, wo = self.output_hw()
        elems = (self.n * self.c_in * self.size ** 2 + self.c_out * (self.c_in // self.groups) * self.kernel ** 2
                 + self.n * self.c_out * ho * wo)
        return self._scale() * F32 * elems

    def spec(self) -> dict:
        """The shapes and arguments, as ``fastconv.tune`` takes them."""
        return {"input_shape": (self.n, self.c_in, self.size, self.size),
                "weight_shape": (self.c_out, self.c_in // self.groups, self.kernel, self.kernel),
                "stride": self.stride, "padding": self.padding, "groups": self.groups}

    def make_inputs(self, seed: int = 0):
        rng = _rng(seed)
        x = rng.standard_normal((self.n, self.c_in, self.size, self.size), dtype=np.float32)
        w = rng.standard_normal((self.c_out, self.c_in // self.groups, self.kernel, self.kernel), dtype=np.float32)
        w *= np.float32(1.0 / np.sqrt(w[0].size))
        b = rng.standard_normal(self.c_out, dtype=np.float32)
        return x, w, b

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, groups=self.groups)

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        x, w, b = self.make_inputs()
        kw = self.conv_kwargs()
        dx, dw, db = place.put(x, w, b)
        if self.direction == "fwd":
            p = Prepared(fastconv=lambda: ops.conv2d(dx, dw, db, **kw), reference=lambda: [ref.conv(x, w, b, **kw)],
                         algo=ops.conv_algorithm(dx, dw, **kw))
            if torch is not None:
                tx, tw, tb = place.tensors(torch, x, w, b)

                def run_torch():
                    with torch.no_grad():
                        return torch.nn.functional.conv2d(tx, tw, tb, **kw)

                p.torch = run_torch
            return p
        gy = _rng(1).standard_normal((self.n, self.c_out) + self.output_hw(), dtype=np.float32)
        (dgy,) = place.put(gy)
        p = Prepared(fastconv=lambda: ops.conv2d_backward(dgy, dx, dw, **kw),
                     reference=lambda: list(ref.conv_backward(gy, x, w, **kw)),
                     algo="depthwise" if self.depthwise else "gemm" if place.device == "cuda" else
                     _backward_label(_Conv(2, x, w, self.stride, self.padding, 1, self.groups)))
        if torch is not None:
            tx, tw, tgy = place.tensors(torch, x, w, gy)
            s, pad = [self.stride] * 2, [self.padding] * 2
            # The kernel PyTorch's autograd runs for conv2d's backward: grad input, weight and bias.
            p.torch = lambda: torch.ops.aten.convolution_backward(
                tgy, tx, tw, [self.c_out], s, pad, [1, 1], False, [0, 0], self.groups, [True, True, True])
        return p


def _backward_label(conv: _Conv) -> str:
    """The kernels of a dense CPU backward, data gradient first: each takes the direct kernel or the
    GEMM, whichever measured faster for its shape (csrc/conv/direct_weight_grad.h, conv.cpp), or
    Winograd where its rule picks it: "dir|gemm" or "winograd" for both, else e.g. "wino,dir|gemm"."""
    data, weight = ("wino" if a == "winograd" else "dir|gemm" for a in (conv.backward_algo(), conv.weight_grad_algo()))
    if data != weight:
        return f"{data},{weight}"
    return "winograd" if data == "wino" else data


def _both_directions(cases: Sequence[ConvCase]) -> Tuple[ConvCase, ...]:
    return tuple(dataclasses.replace(c, direction=d) for d in ("fwd", "bwd") for c in cases)


# The foundation's layer suite (batch 1 unless noted), forward and backward.
LAYER_CASES = _both_directions((
    ConvCase("resnet stem 7x7/2 3->64 @224", n=1, c_in=3, c_out=64, size=224, kernel=7, stride=2, padding=3),
    ConvCase("3x3 64 @56", n=1, c_in=64, c_out=64, size=56, kernel=3, padding=1),
    ConvCase("3x3 128 @28", n=1, c_in=128, c_out=128, size=28, kernel=3, padding=1),
    ConvCase("3x3 256 @14", n=1, c_in=256, c_out=256, size=14, kernel=3, padding=1),
    ConvCase("3x3 512 @7", n=1, c_in=512, c_out=512, size=7, kernel=3, padding=1),
    ConvCase("1x1 256->64 @56", n=1, c_in=256, c_out=64, size=56, kernel=1),
    ConvCase("vgg 3x3 64 @224", n=1, c_in=64, c_out=64, size=224, kernel=3, padding=1),
    ConvCase("3x3 64 @56 batch 32", n=32, c_in=64, c_out=64, size=56, kernel=3, padding=1),
    ConvCase("mbv2 dw 3x3 144 @56", n=1, c_in=144, c_out=144, size=56, kernel=3, padding=1, groups=144),
    ConvCase("mbv2 dw 3x3/2 96 @112", n=1, c_in=96, c_out=96, size=112, kernel=3, stride=2, padding=1, groups=96),
    ConvCase("mbv2 dw 3x3 960 @7", n=1, c_in=960, c_out=960, size=7, kernel=3, padding=1, groups=960),
    ConvCase("lenet 5x5 1->6 @28 batch 256", n=256, c_in=1, c_out=6, size=28, kernel=5, padding=2),
))


# --------------------------------------------------------------------------- memory-bound ops

# Activation-sized inputs: (8, 64, 112, 112) float32 is 25.7 MB, larger than the last-level
# cache of a typical desktop or small server CPU, so the ops stream from memory and the copy
# bandwidth is the relevant limit.
ACT_SHAPE = (8, 64, 112, 112)
LOGITS_SHAPE = (8192, 1000)


@dataclass(frozen=True)
class _MemoryCase(Case):
    shape: Tuple[int, ...] = ACT_SHAPE

    suite = "ops"

    @property
    def bound(self) -> str:
        return "memory"

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape))

    def inputs(self):
        """x (standard normal) and a gradient gy of x's shape."""
        rng = _rng()
        return rng.standard_normal(self.shape, dtype=np.float32), _rng(1).standard_normal(self.shape, dtype=np.float32)


@dataclass(frozen=True)
class PoolCase(_MemoryCase):
    """Square 2-D max or average pooling (count_include_pad, no dilation or ceil_mode)."""

    mode: str = "max"
    kernel: int = 2
    stride: int = 2
    padding: int = 0

    def out_shape(self) -> Tuple[int, ...]:
        n, c, h, w = self.shape
        ho, wo = ((s + 2 * self.padding - self.kernel) // self.stride + 1 for s in (h, w))
        return (n, c, ho, wo)

    def bytes_moved(self) -> int:
        x, y = self.numel, int(np.prod(self.out_shape()))
        if self.direction == "fwd":
            return F32 * (x + y)
        # grad_output and (max) the indices in, grad_input out.
        return F32 * (x + y) + (I64 * y if self.mode == "max" else 0)

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        x, _ = self.inputs()
        k, s, pad = self.kernel, self.stride, self.padding
        fwd = ops.max_pool2d if self.mode == "max" else ops.avg_pool2d
        (dx,) = place.put(x)
        if self.direction == "fwd":
            p = Prepared(fastconv=lambda: fwd(dx, k, s, pad),
                         reference=lambda: [(ref.max_pool2d(x, k, s, pad)[0] if self.mode == "max"
                                             else ref.avg_pool2d(x, k, s, pad))])
            if torch is not None:
                (tx,) = place.tensors(torch, x)
                tfwd = torch.nn.functional.max_pool2d if self.mode == "max" else torch.nn.functional.avg_pool2d
                p.torch = lambda: tfwd(tx, k, s, pad)
            return p
        gy = _rng(1).standard_normal(self.out_shape(), dtype=np.float32)
        (dgy,) = place.put(gy)
        if self.mode == "max":
            _, idx = ops.max_pool2d(dx, k, s, pad, return_indices=True)
            p = Prepared(fastconv=lambda: ops.max_pool2d_backward(dgy, idx, x.shape),
                         reference=lambda: [ref.max_pool2d_backward(gy, x, k, s, pad)])
        else:
            p = Prepared(fastconv=lambda: ops.avg_pool2d_backward(dgy, x.shape, k, s, pad),
                         reference=lambda: [ref.avg_pool2d_backward(gy, x.shape, k, s, pad)])
        if torch is not None:
            tx, tgy = place.tensors(torch, x, gy)
            if self.mode == "max":
                _, tidx = torch.nn.functional.max_pool2d(tx, k, s, pad, return_indices=True)
                p.torch = lambda: torch.ops.aten.max_pool2d_with_indices_backward(
                    tgy, tx, [k, k], [s, s], [pad, pad], [1, 1], False, tidx)
            else:
                p.torch = lambda: torch.ops.aten.avg_pool2d_backward(
                    tgy, tx, [k, k], [s, s], [pad, pad], False, True, None)
        return p


@dataclass(frozen=True)
class BatchNormCase(_MemoryCase):
    """BatchNorm2d: training forward (y, batch mean, inverse std), its backward, or eval forward."""

    training: bool = True
    eps: float = 1e-5

    def bytes_moved(self) -> int:
        # x in and y out (forward); grad_output and x in, grad_input out (backward).
        return F32 * self.numel * (2 if self.direction == "fwd" else 3)

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        x, gy = self.inputs()
        c = self.shape[1]
        rng = _rng(2)
        w = rng.uniform(0.5, 1.5, c).astype(np.float32)
        b = rng.standard_normal(c, dtype=np.float32)
        rm = rng.standard_normal(c, dtype=np.float32) * np.float32(0.1)
        rv = rng.uniform(0.5, 1.5, c).astype(np.float32)
        eps = self.eps
        dx, dgy, dw, db, drm, drv = place.put(x, gy, w, b, rm.copy(), rv.copy())
        if torch is not None:
            tx, tgy, tw, tb, trm, trv = place.tensors(torch, x, gy, w, b, rm.copy(), rv.copy())
        if not self.training:
            p = Prepared(fastconv=lambda: ops.batch_norm(dx, drm, drv, dw, db, training=False, eps=eps),
                         reference=lambda: [ref.batch_norm_eval(x, rm, rv, w, b, eps)])
            if torch is not None:
                p.torch = lambda: torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training=False, eps=eps)
            return p
        if self.direction == "fwd":
            # Each call updates the running statistics in place, on both sides alike.
            p = Prepared(fastconv=lambda: ops.batch_norm(dx, drm, drv, dw, db, training=True, eps=eps),
                         reference=lambda: list(ref.batch_norm_train(x, w, b, eps)))
            if torch is not None:
                p.torch = lambda: torch.ops.aten.native_batch_norm(tx, tw, tb, trm, trv, True, 0.1, eps)
            return p
        _, mean, invstd = ops.batch_norm(dx, None, None, dw, db, training=True, eps=eps)
        p = Prepared(fastconv=lambda: ops.batch_norm_backward(dgy, dx, dw, mean, invstd, training=True),
                     reference=lambda: list(ref.batch_norm_train_backward(gy, x, w, eps)))
        if torch is not None:
            t = torch.ops.aten.native_batch_norm(tx, tw, tb, None, None, True, 0.1, eps)
            tmean, tinvstd = t[1], t[2]
            p.torch = lambda: torch.ops.aten.native_batch_norm_backward(
                tgy, tx, tw, None, None, tmean, tinvstd, True, eps, [True, True, True])
        return p


def _sigmoid_grad(gy, y):
    y = y.astype(np.float64)
    return gy * y * (1.0 - y)


def _tanh_grad(gy, y):
    y = y.astype(np.float64)
    return gy * (1.0 - y * y)


# name -> (fastconv forward, reference forward, fastconv backward, reference backward,
#          backward takes the forward's output (True) or input, PyTorch's forward and the
#          aten backward kernel its autograd runs, each given the torch module first)
_ACTIVATIONS = {
    "relu": (ops.relu, ref.relu, ops.relu_backward, lambda gy, x: gy * (x > 0), False,
             (lambda t, x: t.relu(x), lambda t, gy, x: t.ops.aten.threshold_backward(gy, x, 0))),
    "sigmoid": (ops.sigmoid, ref.sigmoid, ops.sigmoid_backward, _sigmoid_grad, True,
                (lambda t, x: t.sigmoid(x), lambda t, gy, y: t.ops.aten.sigmoid_backward(gy, y))),
    "tanh": (ops.tanh, ref.tanh, ops.tanh_backward, _tanh_grad, True,
             (lambda t, x: t.tanh(x), lambda t, gy, y: t.ops.aten.tanh_backward(gy, y))),
    "gelu": (ops.gelu, ref.gelu, ops.gelu_backward, ref.gelu_backward, False,
             (lambda t, x: t.nn.functional.gelu(x), lambda t, gy, x: t.ops.aten.gelu_backward(gy, x))),
}


@dataclass(frozen=True)
class ActivationCase(_MemoryCase):
    """An element-wise activation (``name`` is its fastconv.ops name), forward or backward."""

    def bytes_moved(self) -> int:
        return F32 * self.numel * (2 if self.direction == "fwd" else 3)

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        fwd, ref_fwd, bwd, ref_bwd, takes_output, (tfwd, tbwd) = _ACTIVATIONS[self.name]
        x, gy = self.inputs()
        if self.direction == "fwd":
            (dx,) = place.put(x)
            p = Prepared(fastconv=lambda: fwd(dx), reference=lambda: [ref_fwd(x)])
            if torch is not None:
                (tx,) = place.tensors(torch, x)
                p.torch = lambda: tfwd(torch, tx)
            return p
        # The backward reads the forward's output or input; both sides get the same float32 array.
        saved = ref_fwd(x).astype(np.float32) if takes_output else x
        dgy, dsaved = place.put(gy, saved)
        p = Prepared(fastconv=lambda: bwd(dgy, dsaved), reference=lambda: [ref_bwd(gy.astype(np.float64), saved)])
        if torch is not None:
            tgy, tsaved = place.tensors(torch, gy, saved)
            p.torch = lambda: tbwd(torch, tgy, tsaved)
        return p


@dataclass(frozen=True)
class SoftmaxCase(_MemoryCase):
    """softmax or log_softmax over the last axis of (N, classes) logits, forward or backward."""

    log: bool = False
    shape: Tuple[int, ...] = LOGITS_SHAPE

    def bytes_moved(self) -> int:
        return F32 * self.numel * (2 if self.direction == "fwd" else 3)

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        z, gy = self.inputs()
        fwd, bwd = (ops.log_softmax, ops.log_softmax_backward) if self.log else (ops.softmax, ops.softmax_backward)
        ref_fwd = ref.log_softmax if self.log else ref.softmax
        if self.direction == "fwd":
            (dz,) = place.put(z)
            p = Prepared(fastconv=lambda: fwd(dz, 1), reference=lambda: [ref_fwd(z, 1)])
            if torch is not None:
                (tz,) = place.tensors(torch, z)
                tfwd = torch.log_softmax if self.log else torch.softmax
                p.torch = lambda: tfwd(tz, 1)
            return p
        y = ref_fwd(z, 1).astype(np.float32)
        y64, g64 = y.astype(np.float64), gy.astype(np.float64)
        if self.log:
            expect = g64 - np.exp(y64) * g64.sum(1, keepdims=True)
        else:
            expect = y64 * (g64 - (g64 * y64).sum(1, keepdims=True))
        dgy, dy = place.put(gy, y)
        p = Prepared(fastconv=lambda: bwd(dgy, dy, 1), reference=lambda: [expect])
        if torch is not None:
            tgy, ty = place.tensors(torch, gy, y)
            tbwd = torch.ops.aten._log_softmax_backward_data if self.log else torch.ops.aten._softmax_backward_data
            p.torch = lambda: tbwd(tgy, ty, 1, ty.dtype)
        return p


@dataclass(frozen=True)
class CrossEntropyCase(_MemoryCase):
    """Mean cross-entropy of (N, classes) logits and its gradient, as one training step needs them."""

    direction: str = "fwd+bwd"
    shape: Tuple[int, ...] = LOGITS_SHAPE

    def bytes_moved(self) -> int:
        return F32 * self.numel * 2  # logits in, their gradient out

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        z, _ = self.inputs()
        target = _rng(3).integers(0, self.shape[1], self.shape[0])
        one = np.float32(1.0)
        dz, dtarget = place.put(z, target)

        def run():
            return ops.cross_entropy(dz, dtarget), ops.cross_entropy_backward(one, dz, dtarget)

        p = Prepared(fastconv=run, reference=lambda: [np.asarray(ref.cross_entropy(z, target)),
                                                       ref.cross_entropy_backward(z, target)])
        if torch is not None:
            tz, tt = place.tensors(torch, z, target)

            def run_torch():
                zz = tz.detach().requires_grad_()
                loss = torch.nn.functional.cross_entropy(zz, tt)
                (g,) = torch.autograd.grad(loss, zz)
                return loss, g

            p.torch = run_torch
        return p


OPS_CASES = (
    PoolCase("max_pool 3x3/2 pad 1", mode="max", kernel=3, stride=2, padding=1),
    PoolCase("max_pool 3x3/2 pad 1", direction="bwd", mode="max", kernel=3, stride=2, padding=1),
    PoolCase("max_pool 2x2/2", mode="max", kernel=2, stride=2),
    PoolCase("max_pool 2x2/2", direction="bwd", mode="max", kernel=2, stride=2, quick=False),
    PoolCase("avg_pool 2x2/2", mode="avg", kernel=2, stride=2),
    PoolCase("avg_pool 2x2/2", direction="bwd", mode="avg", kernel=2, stride=2),
    PoolCase("avg_pool 3x3/2 pad 1", mode="avg", kernel=3, stride=2, padding=1, quick=False),
    PoolCase("avg_pool 3x3/2 pad 1", direction="bwd", mode="avg", kernel=3, stride=2, padding=1, quick=False),
    BatchNormCase("batch_norm train"),
    BatchNormCase("batch_norm train", direction="bwd"),
    BatchNormCase("batch_norm eval", training=False),
    ActivationCase("relu"),
    ActivationCase("relu", direction="bwd"),
    ActivationCase("sigmoid"),
    ActivationCase("sigmoid", direction="bwd", quick=False),
    ActivationCase("tanh", quick=False),
    ActivationCase("tanh", direction="bwd", quick=False),
    ActivationCase("gelu"),
    ActivationCase("gelu", direction="bwd"),
    SoftmaxCase("softmax 8192x1000"),
    SoftmaxCase("softmax 8192x1000", direction="bwd"),
    SoftmaxCase("log_softmax 8192x1000", log=True, quick=False),
    SoftmaxCase("log_softmax 8192x1000", direction="bwd", log=True, quick=False),
    CrossEntropyCase("cross_entropy 8192x1000"),
)

GEMM_PEAK_CASE = GemmCase("sgemm 2048^3", m=2048, n=2048, k=2048)

GEMM_CASES = (
    GemmCase("sgemm 1024^3", m=1024, n=1024, k=1024),
    GemmCase("sgemm 2048^3", m=2048, n=2048, k=2048, quick=False),
    GemmCase("sgemm 512^3", m=512, n=512, k=512, quick=False),
    GemmCase("linear 64x9216 -> 4096", m=64, n=4096, k=9216, linear=True),
    GemmCase("linear 256x512 -> 1000", m=256, n=1000, k=512, linear=True),
    GemmCase("linear 8x4096 -> 4096", m=8, n=4096, k=4096, linear=True, quick=False),
)

# --------------------------------------------------------------------------- models

@functools.lru_cache(maxsize=None)
def _model_macs(model: str, in_channels: int, num_classes: int, size: int) -> int:
    """Multiply-accumulates of one image through a zoo model (fastconv.summary's total)."""
    m = getattr(models, model)(num_classes=num_classes, in_channels=in_channels)
    return summary(m, (1, in_channels, size, size), print_table=False)[-1]["macs"]


def _without_dropout(module):
    """Puts a model's Dropout layers (fastconv's or PyTorch's) in eval mode, for the answer checks:
    the two libraries draw different masks. Returns the model."""
    for m in module.modules():
        if type(m).__name__ == "Dropout":
            m.eval()
    return module


def _cpu_only(case: Case, place: Place) -> None:
    if place.device != "cpu":
        raise ValueError(f"{case.label}: the models suite runs on the CPU only")


@dataclass(frozen=True)
class ModelCase(Case):
    """A zoo model: inference (``direction='infer'``: eval mode after ``nn.fuse``, no autograd;
    PyTorch eager in eval mode under ``no_grad``) or one SGD training step (``'train'``:
    forward, cross-entropy, backward, momentum SGD update) at a batch size."""

    model: str = "resnet18"
    batch: int = 1
    size: int = 224
    in_channels: int = 3
    num_classes: int = 1000

    suite = "models"

    def flops(self) -> int:
        """2 FLOPs per multiply-accumulate; a training step counts three passes (forward, data and weight gradients)."""
        macs = _model_macs(self.model, self.in_channels, self.num_classes, self.size) * self.batch
        return 2 * macs * (3 if self.direction == "train" else 1)

    def bytes_moved(self) -> int:
        return F32 * self.batch * self.in_channels * self.size ** 2

    def _inputs(self):
        """The zoo model (seeded initial weights), a batch and its targets."""
        manual_seed(0)
        model = getattr(models, self.model)(num_classes=self.num_classes, in_channels=self.in_channels)
        x = _rng().standard_normal((self.batch, self.in_channels, self.size, self.size), dtype=np.float32)
        target = _rng(1).integers(0, self.num_classes, self.batch)
        return model, x, target

    def _reference(self, model, x, target):
        """The checked quantity in float64 (fastconv.models in double): the logits, or the loss before the step."""
        ref = _without_dropout(copy.deepcopy(model).double().train(self.direction == "train"))
        with no_grad():
            out = ref(Tensor(x.astype(np.float64)))
            return [out.data if self.direction == "infer" else np.asarray(nn.CrossEntropyLoss()(out, target).data)]

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        _cpu_only(self, place)
        model, x, target = self._inputs()
        initial = copy.deepcopy(model)  # the timed training steps change `model`'s weights
        reference = functools.partial(self._reference, initial, x, target)
        fx = Tensor(x)
        if self.direction == "infer":
            fused = nn.fuse(model.eval())

            def run():
                with no_grad():
                    return fused(fx)

            p = Prepared(fastconv=run, reference=reference, algo="fused")
        else:
            def step(m, opt):
                opt.zero_grad()
                loss = nn.CrossEntropyLoss()(m(fx), target)
                loss.backward()
                opt.step()
                return loss

            opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

            def check():
                m = _without_dropout(copy.deepcopy(initial))
                return step(m, optim.SGD(m.parameters(), lr=0.01))  # the loss before the update

            p = Prepared(fastconv=lambda: step(model, opt), algo="sgd step", check_fastconv=check, reference=reference)
        if torch is not None:
            from ..torch import from_fastconv  # the PyTorch twin holding the same weights

            p.torch, p.check_torch = self._torch_callables(torch, from_fastconv(initial), x, target)
        return p

    def _torch_callables(self, torch, module, x, target):
        """(timed call, checked call) of a PyTorch module: eval-mode inference under no_grad, or one
        momentum-SGD step whose check replays the first step from the initial weights."""
        tx, tt = torch.from_numpy(x), torch.from_numpy(target)
        if self.direction == "infer":
            module.eval()

            def run_torch():
                with torch.no_grad():
                    return module(tx)

            return run_torch, None

        def tstep(m, opt):
            opt.zero_grad()
            loss = torch.nn.CrossEntropyLoss()(m(tx), tt)
            loss.backward()
            opt.step()
            return loss

        initial = copy.deepcopy(module)
        opt = torch.optim.SGD(module.parameters(), lr=0.01, momentum=0.9)

        def check_torch():
            m = _without_dropout(copy.deepcopy(initial))
            return tstep(m, torch.optim.SGD(m.parameters(), lr=0.01))

        return (lambda: tstep(module, opt)), check_torch


@dataclass(frozen=True)
class ConvertedModelCase(ModelCase):
    """A zoo model's PyTorch twin after ``fastconv.torch.convert`` (the fastconv side) against the same
    twin unconverted (the torch side): what a PyTorch user gains by converting. Needs torch."""

    needs_torch = True

    def prepare(self, torch=None, place: Place = CPU) -> Prepared:
        _cpu_only(self, place)
        if torch is None:
            raise ValueError(f"{self.label}: a converted PyTorch model needs torch")
        from ..torch import convert, from_fastconv

        model, x, target = self._inputs()
        twin = from_fastconv(model)
        converted = convert(twin)
        run, check = self._torch_callables(torch, converted, x, target)
        p = Prepared(fastconv=run, check_fastconv=check, reference=functools.partial(self._reference, model, x, target),
                     algo="convert")
        p.torch, p.check_torch = self._torch_callables(torch, twin, x, target)
        return p


MODEL_CASES = (
    ModelCase("lenet5 @28 batch 256", direction="train", model="lenet5", batch=256, size=28, in_channels=1,
              num_classes=10),
    ModelCase("resnet18 @224 batch 8", direction="train", model="resnet18", batch=8),
    ModelCase("mobilenet_v2 @224 batch 8", direction="train", model="mobilenet_v2", batch=8),
    ModelCase("resnet18 @224 batch 1", direction="infer", model="resnet18"),
    ModelCase("mobilenet_v2 @224 batch 1", direction="infer", model="mobilenet_v2"),
    ModelCase("resnet18 @224 batch 8", direction="infer", model="resnet18", batch=8, quick=False),
    ModelCase("mobilenet_v2 @224 batch 8", direction="infer", model="mobilenet_v2", batch=8, quick=False),
    ModelCase("resnet50 @224 batch 1", direction="infer", model="resnet50", quick=False),
    ConvertedModelCase("converted resnet18 b8", direction="train", model="resnet18", batch=8),
    ConvertedModelCase("converted mobilenet_v2 b8", direction="train", model="mobilenet_v2", batch=8),
    ConvertedModelCase("converted resnet18 b1", direction="infer", model="resnet18"),
    ConvertedModelCase("converted mobilenet_v2 b1", direction="infer", model="mobilenet_v2"),
    ConvertedModelCase("converted resnet18 b8", direction="infer", model="resnet18", batch=8,
                       quick=False),
    ConvertedModelCase("converted mobilenet_v2 b8", direction="infer", model="mobilenet_v2", batch=8,
                       quick=False),
)

SUITES = {"gemm": GEMM_CASES, "layers": LAYER_CASES, "ops": OPS_CASES, "models": MODEL_CASES}

# --------------------------------------------------------------------------- the GPU suites

# The GPU's layer suite is the CPU's at batch 32 (batch 256 stays); its memory-bound ops
# stream 4x the CPU's data: (32, 64, 112, 112) float32 is 103 MB and (32768, 1000) 131 MB,
# beyond an H100's 50 MB L2 cache, so the device's memory bandwidth is the limit there too.
GPU_BATCH = 32
GPU_ACT_SHAPE = (32, 64, 112, 112)
GPU_LOGITS_SHAPE = (32768, 1000)


def _at_batch(case: ConvCase, n: int) -> ConvCase:
    if case.n >= n:
        return case
    return dataclasses.replace(case, name=f"{case.name} batch {n}", n=n)


def _gpu_sized(case: _MemoryCase) -> _MemoryCase:
    if case.shape == LOGITS_SHAPE:
        return dataclasses.replace(case, name=case.name.replace("8192x1000", "32768x1000"), shape=GPU_LOGITS_SHAPE)
    return dataclasses.replace(case, shape=GPU_ACT_SHAPE)


GPU_PEAK_CASE = GemmCase("sgemm 4096^3", m=4096, n=4096, k=4096)

GPU_SUITES = {
    "gemm": GEMM_CASES + (GPU_PEAK_CASE,),
    "layers": tuple(_at_batch(c, GPU_BATCH) for c in LAYER_CASES),
    "ops": tuple(_gpu_sized(c) for c in OPS_CASES),
}


def select(suites: Sequence[str], *, full: bool = False, contains: str = "", device: str = "cpu") -> List[Case]:
    """The cases of the named suites (of :data:`GPU_SUITES` for ``device='cuda'``), in suite order:
    the quick set unless ``full``, and only those whose label contains ``contains``."""
    table = GPU_SUITES if device == "cuda" else SUITES
    unknown = [s for s in suites if s not in table]
    if unknown:
        raise ValueError(f"no suite {', '.join(unknown)} on device {device!r} (it has {', '.join(table)})")
    out = []
    for s in suites:
        out.extend(c for c in table[s] if (full or c.quick) and contains in c.label)
    return out
