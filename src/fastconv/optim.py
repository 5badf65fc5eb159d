"""Optimizers and learning-rate schedulers with ``torch.optim``'s names, arguments and update rules.

Each update runs on the parameters' arrays in place: SGD in one pass of fastconv's C++ kernel
where the arrays allow (contiguous float32/float64), otherwise, and for the other optimizers,
one vectorised numpy expression per parameter; parameters whose ``grad`` is None are skipped.
"""

from __future__ import annotations

import math
from typing import Dict, List

import numpy as np

from .autograd import Tensor
from .ops import _device


class Optimizer:
    """Base class: ``param_groups`` (a list of dicts with ``params`` and the hyper-parameters),
    per-parameter ``state``, ``zero_grad()`` and ``step()``."""

    def __init__(self, params, defaults: Dict):
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = defaults
        self.param_groups: List[Dict] = []
        self.state: Dict[int, Dict] = {}
        for g in groups:
            group = dict(defaults)
            group.update(g)
            group["params"] = list(group["params"])
            for p in group["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"optimizer can only optimize Tensors, got {type(p).__name__}")
            self.param_groups.append(group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none or p.grad is None:
                    p.grad = None
                else:
                    p.grad[...] = 0

    def _params(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    yield group, p, self.state.setdefault(id(p), {})

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


def _check(name: str, value: float, low: float = 0.0) -> float:
    value = float(value)
    if not value >= low:
        raise ValueError(f"Invalid {name}: {value}")
    return value


def _fused_ok(p, *state) -> bool:
    """Whether a CPU step can run in place in fastconv's fused kernel: the parameter and its state
    arrays (None: not made yet) writeable and C-contiguous, the gradient C-contiguous, all float32
    or float64 arrays of one dtype and size."""
    data, grad = p.data, p.grad
    like = lambda a: isinstance(a, np.ndarray) and a.dtype == data.dtype and a.size == data.size  # noqa: E731
    return (isinstance(data, np.ndarray) and data.dtype in _FUSED_DTYPES and _device.is_writable_contiguous(data)
            and like(grad) and grad.flags.c_contiguous
            and all(a is None or (like(a) and _device.is_writable_contiguous(a)) for a in state))


_FUSED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (PyTorch's form: v = mu*v + (1-dampening)*g,
    first step v = g), Nesterov momentum and L2 weight decay."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, maximize: bool = False):
        _check("learning rate", lr)
        _check("momentum value", momentum)
        _check("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def step(self) -> None:
        for group, p, state in self._params():
            if _device.is_gpu(p.data) or _fused_ok(p, state.get("momentum_buffer")):
                self._fused_step(group, p, state)
                continue
            g = -p.grad if group["maximize"] else p.grad
            if group["weight_decay"]:
                g = g + group["weight_decay"] * p.data
            mu = group["momentum"]
            if mu:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(g, copy=True)
                else:
                    buf *= mu
                    buf += (1 - group["dampening"]) * g
                g = g + mu * buf if group["nesterov"] else buf
            p.data -= (group["lr"] * g).astype(p.dtype, copy=False)

    @staticmethod
    def _fused_step(group, p, state) -> None:
        """The step in one pass of a fused kernel: fastconv.cuda's on the GPU, the C++ one on the CPU
        (the numpy expression above makes five or more passes)."""
        mu = group["momentum"]
        buf = state.get("momentum_buffer")
        first = buf is None
        if mu and first:
            buf = state["momentum_buffer"] = _device.empty(p.shape, p.dtype, p.data)
        lr, dampening, decay = group["lr"], group["dampening"], group["weight_decay"]
        if _device.is_gpu(p.data):
            from .cuda import _optim

            _optim.sgd_step(p.data, p.grad, buf, lr, mu, dampening, group["nesterov"], decay, group["maximize"], first)
        else:
            _device.kernels(p.data).sgd_step(p.data, p.grad, buf if mu else None, lr, mu, dampening, decay,
                                             group["nesterov"], group["maximize"], first)


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction, L2 ``weight_decay`` added to the gradient,
    and optional AMSGrad, as ``torch.optim.Adam``."""

    _decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 amsgrad: bool = False, maximize: bool = False):
        _check("learning rate", lr)
        _check("epsilon value", eps)
        _check("weight_decay value", weight_decay)
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"Invalid beta parameters: {betas}")
        super().__init__(params, dict(lr=lr, betas=(float(b1), float(b2)), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize))

    def step(self) -> None:
        for group, p, state in self._params():
            if _device.is_gpu(p.data):
                self._gpu_step(group, p, state)
                continue
            g = -p.grad if group["maximize"] else p.grad
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            if wd:
                if self._decoupled:
                    p.data *= 1 - lr * wd
                else:
                    g = g + wd * p.data
            if not state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            if group["amsgrad"]:
                np.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
                v = state["max_exp_avg_sq"]
            bc1, bc2 = 1 - b1 ** t, 1 - b2 ** t
            denom = np.sqrt(v) / math.sqrt(bc2) + eps
            p.data -= ((lr / bc1) * m / denom).astype(p.dtype, copy=False)

    def _gpu_step(self, group, p, state) -> None:
        from .cuda import _optim

        if not state:
            state["step"] = 0
            for k in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ()):
                state[k] = _device.zeros(p.shape, p.dtype, p.data)
        state["step"] += 1
        b1, b2 = group["betas"]
        _optim.adam_step(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                         group["lr"], b1, b2, group["eps"], group["weight_decay"], self._decoupled,
                         group["amsgrad"], group["maximize"], state["step"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p -= lr * wd * p before the update."""

    _decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
                 amsgrad: bool = False, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)


class LRScheduler:
    """Base of the schedulers: ``step()`` once per epoch sets each group's ``lr``."""

    def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", g["lr"])
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def get_lr(self) -> List[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def get_last_lr(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def step(self) -> None:
        self.last_epoch += 1
        for g, lr in zip(self.optimizer.param_groups, self.get_lr()):
            g["lr"] = lr


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
        if int(step_size) < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size, self.gamma = int(step_size), float(gamma)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
        if int(T_max) < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        self.T_max, self.eta_min = int(T_max), float(eta_min)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> List[float]:
        return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base in self.base_lrs]


__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "LRScheduler", "StepLR", "CosineAnnealingLR"]
