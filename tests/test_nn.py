"""fastconv.nn: layers match torch.nn (outputs, gradients, state_dict names, running
statistics), Module bookkeeping, load_state_dict errors, fuse, and a whole model's
gradients by finite differences (no torch needed for that one)."""

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, nn
from reference import numerical_grad

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="torch not installed (the reference for torch.nn parity)")


def _to_torch(module, tmod):
    """Loads fastconv's parameters and buffers into the torch module (same names)."""
    state = {k: torch.from_numpy(np.array(v)) for k, v in module.state_dict().items()}
    tmod.load_state_dict(state, strict=True)
    return tmod


LAYERS = [
    (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, groups=2), "Conv1d", (2, 4, 11)),
    (lambda: nn.Conv2d(3, 5, (3, 2), padding=(1, 0), dilation=(2, 1)), "Conv2d", (2, 3, 9, 8)),
    (lambda: nn.Conv2d(4, 4, 3, padding="same", groups=4, bias=False), "Conv2d", (1, 4, 7, 7)),
    (lambda: nn.Conv3d(2, 3, 3, padding=1), "Conv3d", (1, 2, 5, 4, 6)),
    (lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1), "ConvTranspose2d", (2, 3, 5, 5)),
    (lambda: nn.Linear(7, 3), "Linear", (4, 7)),
    (lambda: nn.BatchNorm1d(5), "BatchNorm1d", (6, 5)),
    (lambda: nn.BatchNorm1d(3), "BatchNorm1d", (4, 3, 7)),
    (lambda: nn.BatchNorm2d(3, momentum=0.3), "BatchNorm2d", (4, 3, 5, 5)),
    (lambda: nn.BatchNorm3d(2), "BatchNorm3d", (2, 2, 3, 3, 3)),
    (lambda: nn.MaxPool1d(3, 2, 1), "MaxPool1d", (2, 3, 10)),
    (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), "MaxPool2d", (2, 3, 9, 8)),
    (lambda: nn.MaxPool3d(2), "MaxPool3d", (1, 2, 4, 4, 6)),
    (lambda: nn.AvgPool1d(3, 2, 1, count_include_pad=False), "AvgPool1d", (2, 3, 10)),
    (lambda: nn.AvgPool2d(2), "AvgPool2d", (2, 3, 8, 8)),
    (lambda: nn.AvgPool3d(2, divisor_override=3), "AvgPool3d", (1, 2, 4, 4, 4)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), "AdaptiveAvgPool2d", (2, 3, 7, 8)),
    (lambda: nn.ReLU(), "ReLU", (3, 8)),
    (lambda: nn.ReLU6(inplace=True), "ReLU6", (3, 8)),
    (lambda: nn.LeakyReLU(0.2), "LeakyReLU", (3, 8)),
    (lambda: nn.GELU(), "GELU", (3, 8)),
    (lambda: nn.GELU("tanh"), "GELU", (3, 8)),
    (lambda: nn.Sigmoid(), "Sigmoid", (3, 8)),
    (lambda: nn.Tanh(), "Tanh", (3, 8)),
    (lambda: nn.Flatten(), "Flatten", (2, 3, 4)),
    (lambda: nn.Identity(), "Identity", (2, 3)),
]

_TORCH_ARGS = {
    "Conv1d": lambda m: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                         m.bias is not None),
    "Conv2d": lambda m: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                         m.bias is not None),
    "Conv3d": lambda m: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                         m.bias is not None),
    "ConvTranspose2d": lambda m: (m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                  m.output_padding, m.groups, m.bias is not None, m.dilation),
    "Linear": lambda m: (m.in_features, m.out_features),
    "BatchNorm1d": lambda m: (m.num_features, m.eps, m.momentum),
    "BatchNorm2d": lambda m: (m.num_features, m.eps, m.momentum),
    "BatchNorm3d": lambda m: (m.num_features, m.eps, m.momentum),
    "MaxPool1d": lambda m: (m.kernel_size, m.stride, m.padding, m.dilation, False, m.ceil_mode),
    "MaxPool2d": lambda m: (m.kernel_size, m.stride, m.padding, m.dilation, False, m.ceil_mode),
    "MaxPool3d": lambda m: (m.kernel_size, m.stride, m.padding, m.dilation, False, m.ceil_mode),
    "AvgPool1d": lambda m: (m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad),
    "AvgPool2d": lambda m: (m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override),
    "AvgPool3d": lambda m: (m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, m.divisor_override),
    "AdaptiveAvgPool2d": lambda m: (m.output_size,),
    "LeakyReLU": lambda m: (m.negative_slope,),
    "GELU": lambda m: (m.approximate,),
    "Flatten": lambda m: (m.start_dim, m.end_dim),
}


@needs_torch
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("make, tname, shape", LAYERS, ids=[f"{t}-{i}" for i, (_, t, _) in enumerate(LAYERS)])
def test_layer_matches_torch(make, tname, shape, train):
    fastconv.manual_seed(0)
    m = make()
    tm = getattr(torch.nn, tname)(*_TORCH_ARGS.get(tname, lambda m: ())(m))
    _to_torch(m, tm)
    m.train(train)
    tm.train(train)
    if not train and "BatchNorm" in tname:  # non-trivial running statistics
        rng = np.random.default_rng(5)
        m.running_mean[...] = rng.standard_normal(m.num_features)
        m.running_var[...] = rng.uniform(0.5, 2, m.num_features)
        _to_torch(m, tm)
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    fx = Tensor(x, requires_grad=True)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    y = m(fx)
    ty = tm(tx)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    gy = np.random.default_rng(2).standard_normal(y.shape).astype(np.float32)
    y.backward(gy)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(fx.grad, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    tparams = dict(tm.named_parameters())
    assert [n for n, _ in m.named_parameters()] == list(tparams)
    for n, p in m.named_parameters():
        np.testing.assert_allclose(p.grad, tparams[n].grad.numpy(), rtol=1e-4, atol=1e-4, err_msg=n)
    tstate = tm.state_dict()
    assert list(m.state_dict()) == list(tstate)
    for k, v in m.state_dict().items():  # running statistics updated alike
        np.testing.assert_allclose(v, tstate[k].numpy(), rtol=1e-5, atol=1e-6, err_msg=k)


def test_default_initialisation_follows_pytorch():
    fastconv.manual_seed(3)
    conv = nn.Conv2d(16, 32, 3)
    bound = 1 / np.sqrt(16 * 9)  # kaiming_uniform(a=sqrt(5)) on fan_in = 144
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound and np.abs(p).max() > 0.9 * bound
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.05 * bound
    lin = nn.Linear(100, 10)
    assert np.abs(lin.weight.data).max() <= 0.1
    bn = nn.BatchNorm2d(4)
    assert (bn.weight.data == 1).all() and (bn.bias.data == 0).all() and (bn.running_var == 1).all()
    assert bn.num_batches_tracked.dtype == np.int64
    fastconv.manual_seed(3)
    np.testing.assert_array_equal(nn.Conv2d(16, 32, 3).weight.data, conv.weight.data)  # seeded: repeatable


def _small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3), nn.ReLU6(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def test_module_bookkeeping():
    m = _small_cnn()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias", "8.weight", "8.bias",
                     "10.weight", "10.bias"]
    assert list(m.state_dict())[4:7] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert len(list(m.children())) == 11 and len(list(m.modules())) == 12
    assert m[0] is next(m.children()) and isinstance(m[1:3], nn.Sequential) and len(m[1:3]) == 2
    m.eval()
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    assert "(0): Conv2d(1, 4, kernel_size=(3, 3)" in repr(m)
    ml = nn.ModuleList([nn.Linear(2, 2), nn.ReLU()])
    holder = nn.Module()
    holder.blocks = ml
    assert [n for n, _ in holder.named_parameters()] == ["blocks.0.weight", "blocks.0.bias"]
    assert sum(p.size for p in m.parameters()) == 4 * 9 + 4 + 8 + 6 * 4 * 9 + 6 + 6 * 5 + 5 + 5 * 3 + 3


def test_load_state_dict_reports_every_mismatch():
    m = _small_cnn()
    state = dict(_small_cnn().state_dict())
    state.pop("0.bias")
    state["extra.weight"] = np.zeros(3)
    state["8.weight"] = np.zeros((5, 7), np.float32)
    with pytest.raises(RuntimeError) as e:
        m.load_state_dict(state)
    msg = str(e.value)
    assert "'0.bias'" in msg and "'extra.weight'" in msg and "8.weight: checkpoint (5, 7), model (5, 6)" in msg
    state["8.weight"] = np.ones((5, 6), np.float32)
    missing, unexpected = m.load_state_dict(state, strict=False)
    assert missing == ["0.bias"] and unexpected == ["extra.weight"] and (m[8].weight.data == 1).all()


def test_zero_grad_and_requires_grad():
    m = nn.Linear(3, 2)
    m(Tensor(np.ones((1, 3), np.float32))).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad()
    assert m.weight.grad is None
    m.requires_grad_(False)
    assert not m(Tensor(np.ones((1, 3), np.float32))).requires_grad


def test_whole_model_gradients_by_finite_differences():
    fastconv.manual_seed(0)
    m = _small_cnn()
    for p in m.parameters():  # float64 for the finite differences
        p.data = p.data.astype(np.float64)
    for name in ("running_mean", "running_var"):
        setattr(m[1], name, getattr(m[1], name).astype(np.float64))
    x = np.random.default_rng(0).standard_normal((3, 1, 8, 8))
    target = np.array([0, 2, 1])
    loss = nn.CrossEntropyLoss()(m(Tensor(x)), target)
    loss.backward()
    w = m[4].weight

    def f(v):
        saved = w.data
        w.data = v
        try:
            rm, rv = m[1].running_mean.copy(), m[1].running_var.copy()
            out = nn.CrossEntropyLoss()(m(Tensor(x)), target).data
            m[1].running_mean[...], m[1].running_var[...] = rm, rv
            return out
        finally:
            w.data = saved

    num = numerical_grad(f, w.data, np.ones(()), samples=20)
    ok = np.isfinite(num)
    np.testing.assert_allclose(w.grad[ok], num[ok], rtol=1e-5, atol=1e-7)


@needs_torch
def test_whole_model_gradients_match_torch():
    fastconv.manual_seed(1)
    m = _small_cnn()
    tm = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(4, 6, 3), torch.nn.ReLU6(), torch.nn.AvgPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    _to_torch(m, tm)
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    target = np.random.default_rng(1).integers(0, 3, 8)
    nn.CrossEntropyLoss()(m(Tensor(x)), target).backward()
    torch.nn.CrossEntropyLoss()(tm(torch.from_numpy(x)), torch.from_numpy(target)).backward()
    for (n, p), (tn, tp) in zip(m.named_parameters(), tm.named_parameters()):
        assert n == tn
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-4, atol=1e-5, err_msg=n)


class _PlainBatchNorm2d(nn.BatchNorm2d):
    """Overrides forward, so Sequential must call it rather than fuse the ReLU after it."""

    calls = 0

    def forward(self, x):
        type(self).calls += 1
        return super().forward(x)


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6])
def test_sequential_runs_batchnorm_and_its_activation_as_one_op(act, monkeypatch):
    rng = np.random.default_rng(0)
    fastconv.manual_seed(0)
    fused = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), act(), nn.Conv2d(3, 2, 1))
    plain = nn.Sequential(nn.Conv2d(2, 3, 3), _PlainBatchNorm2d(3), act(), nn.Conv2d(3, 2, 1))
    plain.load_state_dict(fused.state_dict())
    gamma = rng.uniform(0.5, 3, 3)
    for m in (fused, plain):
        m[1].weight.data[...] = gamma
        m[1].bias.data[...] = [0.5, 2.0, 4.0]  # outputs on both sides of 0 and of 6
    x = rng.standard_normal((4, 2, 7, 7)).astype(np.float32) * 3
    activation_calls = []
    name = "relu" if act is nn.ReLU else "relu6"
    original = getattr(nn.functional, name)
    monkeypatch.setattr(nn.functional, name, lambda t: activation_calls.append(1) or original(t))
    for training in (True, False):
        fused.train(training)
        plain.train(training)
        _PlainBatchNorm2d.calls, activation_calls[:] = 0, []
        xf, xp = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
        yf, yp = fused(xf), plain(xp)
        assert _PlainBatchNorm2d.calls == 1 and len(activation_calls) == 1  # only the plain model's
        np.testing.assert_allclose(yf.data, yp.data, rtol=1e-5, atol=1e-5)
        yf.sum().backward()
        yp.sum().backward()
        np.testing.assert_allclose(xf.grad, xp.grad, rtol=1e-4, atol=1e-5)
        for (n, p), (_, q) in zip(fused.named_parameters(), plain.named_parameters()):
            np.testing.assert_allclose(p.grad, q.grad, rtol=1e-4, atol=1e-4, err_msg=n)
            p.grad = q.grad = None
        np.testing.assert_array_equal(fused[1].running_var, plain[1].running_var)
    # Anything but a plain ReLU / ReLU6 after it is left to run on its own.
    assert fused[1].fused_forward(Tensor(x[:, :3]), nn.Tanh()) is None


def test_dropout_scales_kept_elements_and_is_off_in_eval():
    fastconv.manual_seed(0)
    d = nn.Dropout(0.25)
    x = Tensor(np.ones((64, 64), np.float32), requires_grad=True)
    y = d(x)
    kept = y.data != 0
    assert 0.7 < kept.mean() < 0.8 and np.allclose(y.data[kept], 1 / 0.75)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, kept / 0.75)
    assert not np.array_equal(d(x).data, y.data)  # a fresh mask per call
    d.eval()
    assert d(x) is x


def test_fuse_folds_batchnorm_and_relu_into_the_convolution():
    fastconv.manual_seed(0)
    m = _small_cnn()
    x = Tensor(np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))
    m(x)  # one training step's statistics
    m.eval()
    rng = np.random.default_rng(1)
    m[1].weight.data[...] = rng.uniform(0.5, 2, 4)
    m[1].bias.data[...] = rng.standard_normal(4)
    ref = m(x).data
    f = nn.fuse(m)
    assert isinstance(f[1], nn.Identity) and isinstance(f[2], nn.Identity) and f[0].activation == "relu"
    assert f[4].activation == "relu6" and isinstance(f[5], nn.Identity)
    np.testing.assert_allclose(f(x).data, ref, rtol=1e-4, atol=1e-4)
    assert isinstance(m[1], nn.BatchNorm2d)  # the original is untouched


def test_a_fused_model_freezes_its_convolutions_and_keeps_their_winograd_filters():
    # 128 channels at 14 x 14, batch 1 (16 tiles): Winograd only with the filters transformed once. nn.fuse
    # makes the weights read-only, which Conv2d takes as fixed: it keeps the transformed filters.
    from reference import conv

    fastconv.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU()).eval()
    x = Tensor(np.random.default_rng(0).standard_normal((1, 128, 14, 14)).astype(np.float32))
    with fastconv.no_grad():
        ref = m(x).data
        f = nn.fuse(m)
        got = f(x).data
    conv2d = f[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    assert conv2d.__dict__["_filter_cache"].nbytes >= 36 * 128 * 128 * 4
    assert m[0].weight.data.flags.writeable  # the original stays as it was
    with pytest.raises(ValueError, match="read-only"):
        conv2d.weight.data *= 2
    with pytest.raises(ValueError, match="before fusing"):
        f.load_state_dict(f.state_dict())
    # A new array is a new weight: its filters are made anew.
    w = np.random.default_rng(1).standard_normal(conv2d.weight.shape).astype(np.float32) / 30
    conv2d.weight.data = w
    w.flags.writeable = False
    want = np.maximum(conv(x.data, w, conv2d.bias.data, padding=1), 0)
    with fastconv.no_grad():
        np.testing.assert_allclose(f(x).data, want, rtol=1e-4, atol=1e-4)
    w2 = w.copy()  # writeable: no cache
    conv2d.weight.data = w2
    with fastconv.no_grad():
        np.testing.assert_allclose(f(x).data, want, rtol=1e-4, atol=1e-4)


def test_layer_argument_errors():
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="padding_mode"):
        nn.Conv2d(3, 4, 3, padding_mode="reflect")
    with pytest.raises(ValueError, match="return_indices"):
        nn.MaxPool2d(2, return_indices=True)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)
    with pytest.raises(ValueError, match="4-D"):
        nn.BatchNorm2d(3)(Tensor(np.ones((2, 3), np.float32)))
