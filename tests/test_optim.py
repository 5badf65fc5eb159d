"""fastconv.optim: update rules against torch.optim step by step, the textbook first steps
(no torch needed), schedulers and argument errors."""

import math

import numpy as np
import pytest

from fastconv import Tensor, nn, optim

try:
    import torch
except ImportError:
    torch = None


def _grads(step, shape):
    return np.random.default_rng(100 + step).standard_normal(shape).astype(np.float32)


CONFIGS = [
    (optim.SGD, "SGD", dict(lr=0.1)),
    (optim.SGD, "SGD", dict(lr=0.1, momentum=0.9)),
    (optim.SGD, "SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    (optim.SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=1e-3)),
    (optim.SGD, "SGD", dict(lr=0.05, maximize=True)),
    (optim.Adam, "Adam", dict(lr=1e-2)),
    (optim.Adam, "Adam", dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-2)),
    (optim.Adam, "Adam", dict(lr=1e-2, amsgrad=True)),
    (optim.AdamW, "AdamW", dict(lr=1e-2)),
    (optim.AdamW, "AdamW", dict(lr=1e-2, weight_decay=0.1, amsgrad=True)),
]


@pytest.mark.skipif(torch is None, reason="torch not installed (the reference for torch.optim parity)")
@pytest.mark.parametrize("cls, tname, kw", CONFIGS, ids=[f"{t}-{i}" for i, (_, t, _) in enumerate(CONFIGS)])
def test_updates_match_torch_over_steps(cls, tname, kw):
    p0 = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    p = nn.Parameter(p0.copy())
    tp = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt, topt = cls([p], **kw), getattr(torch.optim, tname)([tp], **kw)
    for step in range(6):
        g = _grads(step, p0.shape)
        p.grad = g.copy()
        tp.grad = torch.from_numpy(g.copy())
        opt.step()
        topt.step()
        np.testing.assert_allclose(p.data, tp.detach().numpy(), rtol=1e-5, atol=1e-6, err_msg=f"step {step}")


SGD_CONFIGS = [c[2] for c in CONFIGS if c[0] is optim.SGD] + [dict(lr=0.05, momentum=0.9, nesterov=True, maximize=True,
                                                                     weight_decay=1e-2, dampening=0.0)]


def _sgd_reference(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, maximize=False):
    """torch.optim.SGD's update rule over the given gradients, in float64."""
    p, buf = p.astype(np.float64), None
    for g in grads:
        g = -g.astype(np.float64) if maximize else g.astype(np.float64)
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        p = p - lr * g
    return p


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kw", SGD_CONFIGS)
def test_sgd_fused_step_on_every_isa(kw, dtype):
    # CPU parameters step in one pass of the C++ kernel: a parameter large enough for both threads,
    # every instruction set, against the update rule in float64; a gradient that is not contiguous takes
    # the numpy expression, with the same result.
    import fastconv

    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((300, 257)).astype(dtype)
    grads = [rng.standard_normal(p0.shape).astype(dtype) for _ in range(4)]
    want = _sgd_reference(p0, grads, **kw)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    for isa in fastconv.cpu_info()["supported_isas"]:
        with fastconv.use_isa(isa):
            fused, strided = nn.Parameter(p0.copy()), nn.Parameter(p0.copy())
            opt, opt_np = optim.SGD([fused], **kw), optim.SGD([strided], **kw)
            for g in grads:
                fused.grad = g.copy()
                strided.grad = np.asfortranarray(g)  # not C-contiguous: the numpy path
                opt.step()
                opt_np.step()
            np.testing.assert_allclose(fused.data, want, **tol, err_msg=isa)
            np.testing.assert_allclose(strided.data, want, **tol, err_msg=isa)
            assert fused.data.dtype == dtype


def test_textbook_first_steps():
    g = np.array([0.5, -2.0], np.float32)
    p = nn.Parameter(np.array([1.0, 1.0], np.float32))
    p.grad = g
    optim.SGD([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [1 - 0.05, 1 + 0.2])
    # Adam's first bias-corrected step moves every coordinate by lr against the gradient's sign.
    q = nn.Parameter(np.array([1.0, 1.0], np.float32))
    q.grad = g
    optim.Adam([q], lr=0.01, eps=0).step()
    np.testing.assert_allclose(q.data, [0.99, 1.01], rtol=1e-6)
    # AdamW decays the weight itself before the update: p *= 1 - lr * wd.
    r = nn.Parameter(np.array([2.0], np.float32))
    r.grad = np.array([0.0], np.float32)
    optim.AdamW([r], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(r.data, [2.0 * (1 - 0.05)])


def test_param_groups_zero_grad_and_skipped_parameters():
    a, b = nn.Parameter(np.ones(2, np.float32)), nn.Parameter(np.ones(2, np.float32))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    a.grad = np.ones(2, np.float32)
    opt.step()  # b has no gradient: untouched
    np.testing.assert_allclose(a.data, [0.9, 0.9])
    np.testing.assert_allclose(b.data, [1.0, 1.0])
    assert opt.param_groups[1]["lr"] == 1.0 and opt.param_groups[0]["lr"] == 0.1
    opt.zero_grad()
    assert a.grad is None


def test_schedulers_follow_their_formulas():
    p = nn.Parameter(np.ones(1, np.float32))
    opt = optim.SGD([p], lr=0.1)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.05, 0.05, 0.025, 0.025])
    opt = optim.SGD([p], lr=1.0)
    cos = optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.1)
    got = []
    for _ in range(5):
        got.append(cos.get_last_lr()[0])
        cos.step()
    np.testing.assert_allclose(got, [0.1 + 0.9 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(5)])


@pytest.mark.skipif(torch is None, reason="torch not installed")
def test_schedulers_match_torch():
    for make, tmake in [(lambda o: optim.StepLR(o, 3, 0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, 0.3)),
                        (lambda o: optim.CosineAnnealingLR(o, 7, 0.01),
                         lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 7, 0.01))]:
        opt = optim.SGD([nn.Parameter(np.ones(1, np.float32))], lr=0.2)
        topt = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.2)
        s, ts = make(opt), tmake(topt)
        for _ in range(10):
            assert opt.param_groups[0]["lr"] == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
            topt.step()
            s.step()
            ts.step()


def test_optimizer_argument_errors():
    p = nn.Parameter(np.ones(1, np.float32))
    with pytest.raises(ValueError, match="learning rate"):
        optim.SGD([p], lr=-1)
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([p], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="beta"):
        optim.Adam([p], betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="empty"):
        optim.Adam([])
    with pytest.raises(TypeError, match="Tensors"):
        optim.SGD([np.ones(2)], lr=0.1)
    with pytest.raises(ValueError, match="step_size"):
        optim.StepLR(optim.SGD([p], lr=0.1), step_size=0)


def test_a_model_learns_with_adam():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 2)).astype(np.float32)
    y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR-like: needs the hidden layer
    m = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 2))
    opt = optim.Adam(m.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        loss = nn.CrossEntropyLoss()(m(Tensor(x)), y)
        loss.backward()
        opt.step()
    assert (m(Tensor(x)).data.argmax(1) == y).mean() > 0.9
