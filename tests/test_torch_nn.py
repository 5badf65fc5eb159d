"""fastconv.torch.nn drop-in modules, convert(model), and moving weights to and from fastconv.models."""

import contextlib
import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch not installed (fastconv.torch needs it)")

from torch import nn  # noqa: E402

import fastconv  # noqa: E402
import fastconv.torch as ft  # noqa: E402
from fastconv import models  # noqa: E402
from fastconv.torch import models as tm  # noqa: E402

# (torch layer factory, input shape): each is compared with its fastconv drop-in.
LAYERS = {
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 9, 9)),
    "conv2d-reflect-groups": (lambda: nn.Conv2d(4, 6, (3, 2), padding=(1, 1), groups=2, padding_mode="reflect"),
                              (2, 4, 7, 7)),
    "conv2d-same-depthwise": (lambda: nn.Conv2d(4, 8, 3, padding="same", groups=4, bias=False), (2, 4, 6, 6)),
    "conv2d-unbatched": (lambda: nn.Conv2d(3, 4, 3), (3, 7, 7)),
    "conv1d": (lambda: nn.Conv1d(3, 5, 4, stride=2, padding=2, dilation=2), (2, 3, 17)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2),
                         (2, 4, 5, 5)),
    "batchnorm2d": (lambda: nn.BatchNorm2d(3), (4, 3, 5, 5)),
    "batchnorm2d-cumulative": (lambda: nn.BatchNorm2d(3, momentum=None), (4, 3, 5, 5)),
    "batchnorm2d-no-stats": (lambda: nn.BatchNorm2d(3, affine=False, track_running_stats=False), (4, 3, 5, 5)),
    "batchnorm1d": (lambda: nn.BatchNorm1d(5), (6, 5)),
    "batchnorm1d-3d": (lambda: nn.BatchNorm1d(5), (6, 5, 7)),
    "maxpool2d": (lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True), (2, 3, 9, 8)),
    "avgpool2d": (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), (2, 3, 9, 8)),
    "adaptiveavgpool2d": (lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 3, 9, 8)),
    "linear": (lambda: nn.Linear(7, 4), (3, 5, 7)),
}


def _perturb_bn(model, seed=0):
    """Non-trivial running statistics and affine parameters, so eval mode tests something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def _run(model, x, seed=0):
    """Output, input gradient and parameter gradients of one forward/backward."""
    x = x.clone().requires_grad_()
    y = model(x)
    y.backward(torch.randn(y.shape, generator=torch.Generator().manual_seed(seed)))
    return y.detach(), x.grad, {k: p.grad for k, p in model.named_parameters()}


def _close(a, b, tol, what):
    """Within ``tol`` of the reference's largest magnitude: train-mode BatchNorm's backward subtracts
    means, so float32 gradients of deep models agree to a fraction of their scale, not element-wise."""
    scale = max(b.abs().max().item(), 1.0)
    torch.testing.assert_close(a, b, rtol=0, atol=tol * scale, msg=lambda m: f"{what}: {m}")


def _assert_same(a, b, tol=1e-4):
    ya, gxa, gpa = a
    yb, gxb, gpb = b
    _close(ya, yb, tol, "output")
    _close(gxa, gxb, tol, "input gradient")
    assert gpa.keys() == gpb.keys()
    for k in gpa:
        _close(gpa[k], gpb[k], tol, f"gradient of {k}")


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_drop_in_layer_matches_torch(name, mode):
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    ref = make()
    _perturb_bn(ref)
    ours = ft.convert(ref)
    assert type(ours) is ft.SUPPORTED[type(ref)] and isinstance(ours, type(ref))
    assert list(ours.state_dict()) == list(ref.state_dict())
    ref.train(mode == "train")
    ours.train(mode == "train")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    for step in range(2):  # twice: the running statistics after the first step feed the second
        _assert_same(_run(ours, x, step), _run(ref, x, step))
        for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_calls_without_autograd_skip_the_dispatcher_with_the_same_results(name, mode, monkeypatch):
    # With no gradient to record, eager CPU calls run the ops' implementations directly (torch's
    # dispatcher costs ~30 us a call); a dispatch mode still gets the ops, and an input that requires
    # grad goes through the ops' torch.autograd.Function twins. All three give the same results
    # (training normalises with the batch's statistics, whatever the running ones), and the first call
    # leaves the state torch's does.
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    ref = make()
    _perturb_bn(ref)
    ours = ft.convert(ref).train(mode == "train")
    ref.train(mode == "train")
    direct = []
    for op, impl in list(ft._ops.IMPLEMENTATIONS.items()):
        monkeypatch.setitem(ft._ops.IMPLEMENTATIONS, op,
                            lambda *a, _impl=impl, _name=op._name: direct.append(_name) or _impl(*a))
    # Training BatchNorm with running statistics: one kernel call that also updates them; max pooling
    # without indices to return or record: the kernel that writes none.
    for helper in ("_bn_training_updating", "_max_pool2d_values"):
        monkeypatch.setattr(ft._ops, helper,
                            lambda *a, _f=getattr(ft._ops, helper), _n=helper: direct.append(_n) or _f(*a))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(x)
        got = ours(x)
        assert direct, "no kernel ran without the dispatcher"
        for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=k)
        ran, seen = len(direct), []
        with _count_fastconv_ops(seen):
            in_mode = ours(x)
        assert seen and len(direct) == ran, "a dispatch mode must see every op"
    with_grad = ours(x.clone().requires_grad_())
    assert _recorded_directly(with_grad), _graph_nodes(with_grad)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for other in (in_mode, with_grad.detach()):  # in training, each call also moves the running statistics
        torch.testing.assert_close(other, got, rtol=0, atol=0)


@pytest.mark.parametrize("grad", [False, True])
def test_a_training_forward_between_inference_calls_refolds_the_batchnorm(grad):
    # Inference folds a Conv2d -> BatchNorm2d pair into one convolution and reuses the folded weights
    # while no parameter or running statistic changes (their version counters are the key). A training
    # forward updates the running statistics in place inside fastconv's BatchNorm kernel, with or
    # without autograd recording; that must count as a change, so the next inference folds again.
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    _perturb_bn(ref)
    ours = ft.convert(copy.deepcopy(ref))
    x = torch.randn(2, 3, 8, 8)
    for model in (ref, ours):
        with torch.no_grad():
            model.eval()
            model(x)
        model.train()
        with torch.set_grad_enabled(grad):
            model(x * 3 + 1)  # batch statistics far from the running ones
        model.eval()
    torch.testing.assert_close(ours[1].running_mean, ref[1].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours[1].running_var, ref[1].running_var, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_inference_keeps_the_winograd_filters_of_the_folded_weights():
    # 128 channels at 14 x 14, batch 1 (16 tiles): Winograd wins only with the filters transformed once
    # (fastconv.ops.FilterCache), which the fused conv + BatchNorm keeps beside its folded weights. A
    # change to a weight or running statistic (a new version) folds again and transforms again.
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(128, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU()).eval()
    _perturb_bn(ref)
    ours = ft.convert(ref)
    x = torch.randn(1, 128, 14, 14)

    def held():
        (entry,) = ours.__dict__["_fastconv_folded"].values()
        return entry[3].nbytes

    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
        assert held() >= 36 * 128 * 128 * 4
        for model in (ref, ours):
            model[0].weight.mul_(-0.5)
            model[1].running_var.mul_(2)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
        assert held() > 0


@pytest.mark.parametrize("name", list(LAYERS))
def test_autograd_around_the_dispatcher_records_the_same_backward(name):
    # An input that requires grad, with nothing watching, runs each op's autograd formula as a
    # torch.autograd.Function (its backward calling the backward ops' implementations directly); under
    # a dispatch mode the same formula runs through the registered custom ops. Same kernels, same order:
    # bitwise the same outputs and gradients. The running statistics agree to rounding: around the
    # dispatcher, training BatchNorm's kernel updates them from the batch's variance itself; through
    # it, the update_running_stats op recovers that variance from the saved inverse std.
    make, shape = LAYERS[name]
    torch.manual_seed(0)
    ref = make()
    _perturb_bn(ref)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    results = []
    for through_ops in (False, True):
        model = ft.convert(copy.deepcopy(ref)).train()
        seen = []
        with _count_fastconv_ops(seen) if through_ops else contextlib.nullcontext():
            y, gx, gp = _run(model, x)
        with _count_fastconv_ops([]) if through_ops else contextlib.nullcontext():
            direct = _recorded_directly(model(x.clone().requires_grad_()))
        assert bool(seen) == through_ops and direct != through_ops
        if through_ops:
            assert any(op.endswith("_backward") for op in seen), seen
        results.append((y, gx, gp, {k: b.clone() for k, b in model.named_buffers()}))
    (y0, gx0, gp0, b0), (y1, gx1, gp1, b1) = results
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)
    torch.testing.assert_close(gx0, gx1, rtol=0, atol=0)
    for k in gp0:
        torch.testing.assert_close(gp0[k], gp1[k], rtol=0, atol=0, msg=k)
    for k in b0:
        torch.testing.assert_close(b0[k], b1[k], rtol=1e-6, atol=1e-7, msg=k)


def test_a_jit_trace_without_autograd_records_the_fastconv_ops():
    # torch.jit.trace records what goes through the dispatcher: tracing takes the ops' path, so the
    # trace runs fastconv's kernels on new inputs instead of replaying constants.
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(36, 2)).eval()
    _perturb_bn(ref)
    ours = ft.convert(ref)
    with torch.no_grad():
        traced = torch.jit.trace(ours, torch.randn(2, 3, 8, 8), check_trace=False)
        assert {"fastconv::conv2d", "fastconv::max_pool2d", "fastconv::linear"} <= {n.kind() for n in
                                                                                      traced.inlined_graph.nodes()}
        x = torch.randn(2, 3, 8, 8)
        torch.testing.assert_close(traced(x), ref(x), rtol=1e-5, atol=1e-5)


def test_the_profiler_sees_ops_called_without_autograd():
    model = ft.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1)).eval())
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(torch.randn(1, 3, 8, 8))
    assert {"fastconv::conv2d", "fastconv::adaptive_avg_pool2d"} <= {e.name for e in prof.events()}


def test_drop_in_modules_load_torch_checkpoints_and_keep_constructor_signatures():
    ref = nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False)
    ours = ft.nn.Conv2d(3, 8, 5, stride=2, padding=2, bias=False)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 16, 16)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    bn = ft.nn.BatchNorm2d(8, eps=1e-3, momentum=0.2)
    bn.load_state_dict(nn.BatchNorm2d(8, eps=1e-3, momentum=0.2).state_dict())
    assert (bn.eps, bn.momentum, bn.num_batches_tracked.item()) == (1e-3, 0.2, 0)


def test_conv_transpose2d_output_size():
    ref = nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    ours = ft.convert(ref)
    x = torch.randn(1, 3, 5, 5)
    torch.testing.assert_close(ours(x, output_size=[10, 10]), ref(x, output_size=[10, 10]), rtol=1e-4, atol=1e-4)


def test_maxpool_return_indices_are_torchs():
    ref = nn.MaxPool2d(2, return_indices=True)
    y, idx = ft.convert(ref)(torch.arange(32.0).reshape(1, 2, 4, 4).flip(-1))
    y_ref, idx_ref = ref(torch.arange(32.0).reshape(1, 2, 4, 4).flip(-1))
    assert torch.equal(y, y_ref) and torch.equal(idx, idx_ref)


class _UserBlock(nn.Module):
    """A user's own layer: convert leaves its forward alone and swaps the supported layers inside it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return x + self.scale * torch.sigmoid(self.conv(x))


class _MyConv(nn.Conv2d):
    pass


def _user_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), _UserBlock(),
                         _MyConv(4, 4, 1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def test_convert_reports_what_it_swapped_and_what_it_kept(capsys):
    model = _user_model()
    converted = ft.convert(model, verbose=True)
    report = ft.conversion_report(converted)
    assert report.swapped == [("", "Sequential"), ("0", "Conv2d"), ("1", "BatchNorm2d"), ("3.conv", "Conv2d"),
                              ("5", "MaxPool2d"), ("7", "Linear")]
    kept = {name: why for name, _, why in report.kept}
    assert kept == {"2": "no fastconv counterpart", "4": "a subclass of a supported layer (its forward may differ)",
                    "6": "no fastconv counterpart"}
    assert str(report) in capsys.readouterr().out
    assert all(type(m).__module__.startswith("torch.nn") or type(m) in (_UserBlock, _MyConv)
               for m in model.modules()), "inplace=False leaves the original model alone"
    assert ft.convert(model, inplace=True) is model and type(model[0]) is ft.nn.Conv2d


def test_convert_leaves_layers_it_cannot_run():
    model = nn.Sequential(nn.Conv2d(3, 4, 3).half(), nn.Linear(4, 4))
    converted = ft.convert(model)
    assert type(converted[0]) is nn.Conv2d and type(converted[1]) is ft.nn.Linear
    assert ft.conversion_report(converted).kept == [("0", "Conv2d", "weight has dtype torch.float16")]
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        ft.convert("not a model")


ZOO = {
    "resnet18-cifar": (lambda: tm.ResNet(tm.BasicBlock, [2, 2, 2, 2], num_classes=10), (4, 3, 64, 64)),
    "resnet-bottleneck": (lambda: tm.ResNet(tm.Bottleneck, [1, 1, 1, 1], num_classes=10), (4, 3, 64, 64)),
    "mobilenet_v2": (lambda: tm.MobileNetV2(num_classes=10), (4, 3, 64, 64)),
    "user-model": (_user_model, (2, 3, 8, 8)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(ZOO))
def test_converted_models_match_torch(name, mode, dtype):
    """Outputs within 1e-4 in float32; gradients too, compared in float64: in float32 a pre-activation
    within rounding of 0 can fall on the other side of a ReLU in one library than in the other, and
    that one element's gradient then spreads through every layer below (seen on resnet18 here)."""
    make, shape = ZOO[name]
    torch.manual_seed(0)
    ref = make()
    _perturb_bn(ref)
    for m in ref.modules():  # dropout would draw different masks
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    ref.to(dtype)
    ours = ft.convert(ref)
    assert ft.conversion_report(ours).swapped
    ref.train(mode == "train")
    ours.train(mode == "train")
    x = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    a, b = _run(ours, x), _run(ref, x)
    if dtype == torch.float32:
        _close(a[0], b[0], 1e-4, "output")
    else:
        _assert_same(a, b, tol=1e-9)
    for (k, p), q in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5, msg=k)


@pytest.mark.parametrize("make", [lambda: models.lenet5(classic=False), lambda: models.resnet18(num_classes=10),
                                  lambda: models.mobilenet_v2(num_classes=10), lambda: models.mini_alexnet()],
                         ids=["lenet5-relu", "resnet18", "mobilenet_v2", "mini_alexnet"])
def test_from_fastconv_and_back(make):
    fastconv.manual_seed(0)
    model = make().eval()
    twin = ft.from_fastconv(model)
    assert isinstance(twin, nn.Module) and not twin.training
    shape = (2, 1, 28, 28) if "LeNet" in type(model).__name__ else (2, 3, 32, 32)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    with fastconv.no_grad(), torch.no_grad():
        np.testing.assert_allclose(twin(torch.from_numpy(x)).numpy(), model(fastconv.Tensor(x)).data,
                                   rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # a changed twin, moved back into a fresh fastconv model
        for p in twin.parameters():
            p.mul_(0.5)
    back = ft.to_fastconv(twin)
    assert type(back) is type(model)
    for (k, a), b in zip(back.state_dict().items(), twin.state_dict().values()):
        np.testing.assert_array_equal(np.asarray(a), b.numpy(), err_msg=k)


def test_from_fastconv_into_a_given_twin_checks_names():
    model = models.lenet5()
    with pytest.raises(RuntimeError, match="Missing key|Unexpected key|size mismatch"):
        ft.from_fastconv(model, tm.lenet5(num_classes=7))
    with pytest.raises(TypeError, match="not a model of the fastconv zoo"):
        ft.to_fastconv(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2)))


def test_converted_model_trains_like_torch():
    torch.manual_seed(0)
    ref = tm.ResNet(tm.BasicBlock, [1, 1, 1, 1], num_classes=10).double()  # float64: see above
    ours = ft.convert(ref)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    target = torch.tensor([1, 2, 3, 4])
    for m in (ref, ours):
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(m(x), target).backward()
            opt.step()
    for (k, a), b in zip(ours.state_dict().items(), copy.deepcopy(ref).state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=k)


def test_sequential_fuses_conv_bn_activation_in_inference_and_follows_weight_changes():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8), nn.Conv2d(8, 4, 1), nn.ReLU())
    _perturb_bn(ref)
    ours = ft.convert(ref).eval()
    ref.eval()
    x = torch.randn(2, 3, 9, 9)
    calls = []
    with torch.no_grad(), _count_fastconv_ops(calls):
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    assert calls == ["conv2d", "conv2d", "conv2d"], "each conv + BN (+ activation) runs as one convolution"
    with torch.no_grad():  # the folded weights follow in-place changes and loaded state
        ref[1].running_var.mul_(2.0)
        ref[0].weight.add_(0.1)
        ours.load_state_dict(ref.state_dict())
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
        ours[4].running_mean.add_(1.0)
        ref[4].running_mean.add_(1.0)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    copied = copy.deepcopy(ours)
    with torch.no_grad():
        copied[1].bias.add_(1.0)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
    ours.train()  # training: no conv + BN fusion (batch statistics); BN + ReLU6 run as one op
    ref.train()
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6])
def test_sequential_applies_the_activation_inside_batch_norm_in_training(act):
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6), act(), nn.Conv2d(6, 4, 1))
    _perturb_bn(ref)
    with torch.no_grad():  # outputs on both sides of 0 and of 6
        ref[1].weight.mul_(4.0)
        ref[1].bias.add_(2.0)
    ours = ft.convert(ref).double()
    ref.double()
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64) * 2
    calls = []
    with _count_fastconv_ops(calls, aten=("relu", "hardtanh", "clamp", "threshold_backward", "hardtanh_backward")):
        a = _run(ours, x)
    assert calls.count("batch_norm") == 1 and calls.count("batch_norm_backward") == 1, calls
    assert not set(calls) & {"relu", "hardtanh", "clamp", "threshold_backward", "hardtanh_backward"}, calls
    _assert_same(a, _run(ref, x), tol=1e-10)
    for (k, p), q in zip(ours.state_dict().items(), ref.state_dict().values()):
        torch.testing.assert_close(p, q, msg=k)  # the running statistics, updated once
    # A forward hook on the activation must see it run: that pair then runs unfused.
    seen = []
    ours[2].register_forward_hook(lambda m, inp, out: seen.append(out))
    calls.clear()
    with _count_fastconv_ops(calls, aten=("relu", "hardtanh", "clamp")):
        _assert_same(_run(ours, x), _run(ref, x), tol=1e-10)
    assert len(seen) == 1 and set(calls) & {"relu", "hardtanh", "clamp"}, calls


class _ConvThenSequential(nn.Module):
    """A convolution whose only reader is a Sequential(BatchNorm2d, ReLU): the traced pair fuses in
    inference, and the Sequential must then neither normalise again nor skip the ReLU."""

    def __init__(self):
        super().__init__()
        self.conv, self.post = nn.Conv2d(3, 4, 3), nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())

    def forward(self, x):
        return self.post(self.conv(x))


def test_a_traced_conv_bn_pair_into_a_sequential_runs_the_activation_once_and_the_batchnorm_once():
    torch.manual_seed(0)
    ref = _ConvThenSequential()
    _perturb_bn(ref)
    ours = ft.convert(ref)
    assert ft.conversion_report(ours).fused == [("conv", "post.0")]
    x = torch.randn(2, 3, 8, 8)
    for train in (False, True):
        ref.train(train), ours.train(train)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


class _Block(nn.Module):
    """A ResNet-style block: conv → bn → relu → conv → bn plus a skip; `shared` reuses one BatchNorm
    twice and `tap` also returns conv_b's output, so those pairs must not fuse."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6)
        self.conv_b, self.bn_b = nn.Conv2d(6, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_c, self.shared = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn_a(self.conv_a(x)))
        tap = self.conv_b(out)
        out = self.relu(self.bn_b(tap) + x)
        return self.shared(self.shared(self.conv_c(out))), tap


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        y = self.bn(self.conv(x))
        return y if y.sum() > 0 else -y  # control flow on a tensor value: torch.fx cannot trace it


def test_convert_fuses_conv_bn_pairs_found_by_tracing_and_only_those():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), tm.BasicBlock(4, 4), _Block())
    _perturb_bn(ref)
    ours = ft.convert(ref)
    assert ft.conversion_report(ours).fused == [("2.conv1", "2.bn1"), ("2.conv2", "2.bn2"), ("3.conv_a", "3.bn_a")]
    assert list(ours.state_dict()) == list(ref.state_dict())
    x = torch.randn(2, 3, 8, 8)
    ours.eval(), ref.eval()
    calls = []
    with torch.no_grad(), _count_fastconv_ops(calls):
        for a, b in zip(ours(x), ref(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # Unfused: 3.bn_b (conv_b's output is also returned) and 3.shared (called twice).
    assert calls.count("conv2d") == 6 and calls.count("batch_norm") == 3, calls
    # With autograd (eval-mode fine-tuning), the fused op's gradients are the unfused ones.
    for m in (ours, ref):
        m.zero_grad()
        sum(t.square().sum() for t in m(x)).backward()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4, msg=name)
    # In training every layer runs on its own, with batch statistics.
    ours.train(), ref.train()
    for a, b in zip(ours(x), ref(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    for (name, a), b in zip(ours.named_buffers(), ref.buffers()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=name)


def test_fused_pairs_keep_hooks_copies_and_weight_changes_right():
    torch.manual_seed(1)
    ref = tm.BasicBlock(4, 4)
    _perturb_bn(ref)
    ours = ft.convert(ref).eval()
    ref.eval()
    x = torch.randn(1, 4, 6, 6)
    seen = []
    handle = ours.conv1.register_forward_hook(lambda m, args, out: seen.append(out.clone()))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(seen[0], ref.conv1(x), rtol=1e-4, atol=1e-4)  # the convolution's own output
    handle.remove()
    copied = copy.deepcopy(ours)
    assert copied.conv1.__dict__["_fastconv_bn"][2] is copied.bn1
    with torch.no_grad():
        copied.bn1.running_mean.add_(1.0)
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)  # the original is untouched
        ref.bn1.running_mean.add_(1.0)
        torch.testing.assert_close(copied(x), ref(x), rtol=1e-4, atol=1e-4)  # the copy follows its own BN
        # A BatchNorm replaced after conversion ends the fusion: the convolution no longer applies it.
        copied.bn1 = nn.Identity()
        ref.bn1 = nn.Identity()
        torch.testing.assert_close(copied(x), ref(x), rtol=1e-4, atol=1e-4)


def test_a_model_torch_fx_cannot_trace_converts_without_fusion():
    torch.manual_seed(2)
    ref = _DataDependent()
    _perturb_bn(ref)
    ours = ft.convert(ref).eval()
    ref.eval()
    assert ft.conversion_report(ours).fused == []
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


def _graph_nodes(t):
    """The type names of the autograd graph's nodes behind ``t``."""
    names, todo, done = [], [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in done:
            continue
        done.add(node)
        names.append(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names


def _recorded_directly(t) -> bool:
    """Whether ``t``'s graph holds fastconv ops recorded without the dispatcher (their
    torch.autograd.Function twins), and none recorded through it."""
    names = _graph_nodes(t)
    return any(n.endswith("_directBackward") for n in names) and not any("fastconv" in n for n in names)


class _count_fastconv_ops(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the name of every torch.ops.fastconv call, and of the aten ops named in ``aten``."""

    def __init__(self, calls, aten=()):
        super().__init__()
        self.calls, self.aten = calls, aten

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "fastconv" or (func.namespace == "aten" and func._opname in self.aten):
            self.calls.append(func._opname)
        return func(*args, **(kwargs or {}))
