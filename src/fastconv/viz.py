"""PNG grids of a convolution's filters and of a layer's feature maps (needs matplotlib:
``pip install 'fastconv[bench]'``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import numpy as np

from . import nn
from .analysis import record_calls
from .autograd import Tensor, no_grad


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("fastconv.viz draws with matplotlib: pip install 'fastconv[bench]'") from None
    return plt


def _grid(images: np.ndarray, path, title: str, cmap: Optional[str], max_images: int) -> Path:
    """Writes (N, H, W) or (N, H, W, 3) images as a near-square grid, each scaled to its own range."""
    plt = _pyplot()
    images = images[:max_images]
    n = len(images)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        lo, hi = float(img.min()), float(img.max())
        axes.flat[i].imshow((img - lo) / (hi - lo) if hi > lo else np.zeros_like(img), cmap=cmap,
                            interpolation="nearest")
        axes.flat[i].set_title(str(i), fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def filters(layer: nn.Module, path, max_filters: int = 64) -> Path:
    """A grid of a convolution's filters: RGB when it has 3 input channels per group,
    otherwise the first input channel in grey. Returns the PNG's path."""
    if not isinstance(layer, nn.Conv2d):
        raise TypeError(f"filters() draws a Conv2d's weights, got {type(layer).__name__}")
    w = layer.weight.data
    if w.shape[1] == 3:
        images, cmap = np.transpose(w, (0, 2, 3, 1)), None
    else:
        images, cmap = w[:, 0], "gray"
    return _grid(images, path, f"{w.shape[0]} filters {w.shape[2]}x{w.shape[3]} (in channels {w.shape[1]})", cmap,
                 max_filters)


def feature_maps(model: nn.Module, x, layer: str, path, index: int = 0, max_maps: int = 64) -> Path:
    """A grid of the channels that the leaf module named ``layer`` (a name from
    ``model.named_modules()``, e.g. ``'features.0'``) outputs for batch item ``index`` of
    ``x``. The model runs once in eval mode. Returns the PNG's path."""
    names = dict(model.named_modules())
    if layer not in names:
        raise ValueError(f"model has no module named {layer!r}; names: {', '.join(n for n in names if n)[:300]}")
    was_training = model.training
    model.eval()
    try:
        with no_grad(), record_calls(model) as calls:
            model(x if isinstance(x, Tensor) else Tensor(np.asarray(x, np.float32)))
    finally:
        model.train(was_training)
    outs = [c["output"] for c in calls if c["name"] == layer]
    if not outs:
        raise ValueError(f"{layer!r} is not a leaf module that the forward pass calls")
    maps = outs[0].data[index]
    if maps.ndim != 3:
        raise ValueError(f"{layer!r} outputs shape {outs[0].shape}, not (N, C, H, W) feature maps")
    return _grid(maps, path, f"{layer}: {maps.shape[0]} maps {maps.shape[1]}x{maps.shape[2]}", "viridis", max_maps)
