"""Train a LeNet-5 (ReLU, max pooling) on scikit-learn's handwritten digits with Adam.

    python -m fastconv.examples.train_digits [--epochs 12] [--batch-size 32] [--lr 2e-3]

The 8x8 digits are upsampled to LeNet's 28x28 and augmented with random 2-pixel shifts;
each epoch prints its training loss, its test accuracy and the time it took. Needs
scikit-learn (``pip install 'fastconv[data]'``); torch is not used.
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional

import numpy as np

from .. import manual_seed, no_grad, optim
from ..data import DataLoader, RandomCrop, load_digits, progress
from ..models import lenet5
from ..nn import CrossEntropyLoss


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with no_grad():
        for xb, yb in DataLoader(x, y, batch_size):
            correct += int((model(xb).data.argmax(1) == yb).sum())
    return correct / len(y)


def train(epochs: int = 12, batch_size: int = 32, lr: float = 2e-3, seed: int = 0, verbose: bool = True) -> dict:
    """Trains and returns ``{"test_accuracy", "history": [(epoch, loss, accuracy, seconds)], "model"}``."""
    manual_seed(seed)
    (x_train, y_train), (x_test, y_test) = load_digits(image_size=28, resize="upsample", seed=seed)
    model = lenet5(num_classes=10, in_channels=1, classic=False)
    opt = optim.Adam(model.parameters(), lr=lr)
    sched = optim.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = CrossEntropyLoss()
    loader = DataLoader(x_train, y_train, batch_size, shuffle=True, seed=seed, transform=RandomCrop(28, padding=2))
    if verbose:
        print(f"digits: {len(y_train)} training and {len(y_test)} test images, 28x28; LeNet-5 (ReLU) with "
              f"{sum(p.size for p in model.parameters()):,} parameters; Adam lr {lr}, batch {batch_size}", flush=True)
    history = []
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for xb, yb in progress(loader, desc=f"epoch {epoch}/{epochs}", total=len(loader), enabled=verbose):
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
            count += len(yb)
        sched.step()
        acc = accuracy(model, x_test, y_test)
        seconds = time.perf_counter() - t0
        history.append((epoch, total / count, acc, seconds))
        if verbose:
            print(f"epoch {epoch:2d}  loss {total / count:.4f}  test accuracy {100 * acc:5.1f}%  ({seconds:.1f} s)",
                  flush=True)
    return {"test_accuracy": history[-1][2], "history": history, "model": model}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastconv.examples.train_digits", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1 or not args.lr > 0:
        p.error("--epochs and --batch-size must be >= 1 and --lr > 0")
    t0 = time.perf_counter()
    result = train(args.epochs, args.batch_size, args.lr, args.seed)
    print(f"final test accuracy {100 * result['test_accuracy']:.1f}% in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
