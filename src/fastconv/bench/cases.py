"""Benchmark case definitions: the single source for ``fastconv-bench`` and ``benchmarks/``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np

from ..ops.conv import conv2d_output_shape


@dataclass(frozen=True)
class ConvCase:
    """One NCHW float32 convolution layer."""

    name: str
    n: int
    c_in: int
    c_out: int
    size: int
    kernel: int
    stride: int = 1
    padding: int = 0
    groups: int = 1

    @property
    def depthwise(self) -> bool:
        return self.groups == self.c_in and self.c_in > 1

    def output_hw(self) -> Tuple[int, int]:
        return conv2d_output_shape(self.size, self.kernel, self.stride, self.padding)

    def flops(self) -> int:
        ho, wo = self.output_hw()
        return 2 * self.n * self.c_out * ho * wo * (self.c_in // self.groups) * self.kernel * self.kernel

    def bytes_moved(self) -> int:
        """Compulsory traffic: input, weights and output once each (float32)."""
        ho, wo = self.output_hw()
        elems = (self.n * self.c_in * self.size * self.size + self.c_out * (self.c_in // self.groups)
                 * self.kernel ** 2 + self.n * self.c_out * ho * wo)
        return 4 * elems

    def make_inputs(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((self.n, self.c_in, self.size, self.size), dtype=np.float32)
        w = rng.standard_normal((self.c_out, self.c_in // self.groups, self.kernel, self.kernel), dtype=np.float32)
        w *= np.float32(1.0 / np.sqrt(w[0].size))
        b = rng.standard_normal(self.c_out, dtype=np.float32)
        return x, w, b

    def conv_kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.padding, groups=self.groups)


# The foundation's layer suite: batch 1 unless noted.
LAYER_CASES = (
    ConvCase("resnet stem 7x7/2 3->64 @224", 1, 3, 64, 224, 7, stride=2, padding=3),
    ConvCase("3x3 64 @56", 1, 64, 64, 56, 3, padding=1),
    ConvCase("3x3 128 @28", 1, 128, 128, 28, 3, padding=1),
    ConvCase("3x3 256 @14", 1, 256, 256, 14, 3, padding=1),
    ConvCase("3x3 512 @7", 1, 512, 512, 7, 3, padding=1),
    ConvCase("1x1 256->64 @56", 1, 256, 64, 56, 1),
    ConvCase("vgg 3x3 64 @224", 1, 64, 64, 224, 3, padding=1),
    ConvCase("3x3 64 @56 batch 32", 32, 64, 64, 56, 3, padding=1),
    ConvCase("mbv2 dw 3x3 144 @56", 1, 144, 144, 56, 3, padding=1, groups=144),
    ConvCase("mbv2 dw 3x3/2 96 @112", 1, 96, 96, 112, 3, stride=2, padding=1, groups=96),
    ConvCase("mbv2 dw 3x3 960 @7", 1, 960, 960, 7, 3, padding=1, groups=960),
    ConvCase("lenet 5x5 1->6 @28 batch 256", 256, 1, 6, 28, 5, padding=2),
)


@dataclass(frozen=True)
class GemmCase:
    name: str
    m: int
    n: int
    k: int

    def flops(self) -> int:
        return 2 * self.m * self.n * self.k

    def make_inputs(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        return (rng.standard_normal((self.m, self.k), dtype=np.float32),
                rng.standard_normal((self.k, self.n), dtype=np.float32))


GEMM_PEAK_CASE = GemmCase("sgemm 2048^3", 2048, 2048, 2048)

