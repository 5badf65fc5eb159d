"""fastconv's torch custom ops against torch.nn.functional: values, gradients, opcheck, layouts, dtypes."""

import pytest

torch = pytest.importorskip("torch", reason="torch not installed (fastconv.torch needs it)")

import torch.nn.functional as TF  # noqa: E402
from torch.autograd.graph import saved_tensors_hooks  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

import fastconv.torch.functional as F  # noqa: E402
from fastconv.torch import ops as fc_ops  # noqa: E402


def _clamp6(t):
    return t.clamp(0, 6)


class Sample:
    """One representative call: tensors by name, fastconv's function and PyTorch's reference over them."""

    def __init__(self, name, shapes, fastconv_fn, torch_fn, nondiff=()):
        self.name, self.shapes, self.fastconv_fn, self.torch_fn = name, shapes, fastconv_fn, torch_fn
        self.nondiff = nondiff  # tensors that are not differentiated (running statistics)

    def tensors(self, dtype, seed=0):
        g = torch.Generator().manual_seed(seed)
        out = {}
        for k, shape in self.shapes.items():
            t = torch.randn(shape, generator=g, dtype=dtype)
            if k == "running_var":
                t = t.abs() + 0.5
            out[k] = t.requires_grad_(k not in self.nondiff)
        return out


BN_STATS = ("running_mean", "running_var")

SAMPLES = [
    Sample("conv2d-stride2-relu", {"x": (2, 3, 7, 8), "w": (4, 3, 3, 3), "b": (4,)},
           lambda t: F.conv2d(t["x"], t["w"], t["b"], stride=2, padding=1, activation="relu"),
           lambda t: TF.relu(TF.conv2d(t["x"], t["w"], t["b"], stride=2, padding=1))),
    Sample("conv2d-same-even-dilated-relu6", {"x": (2, 3, 6, 7), "w": (4, 3, 2, 4)},
           lambda t: F.conv2d(t["x"], t["w"], padding="same", dilation=(1, 2), activation="relu6"),
           lambda t: _clamp6(TF.conv2d(t["x"], t["w"], padding="same", dilation=(1, 2)))),
    Sample("conv2d-groups", {"x": (2, 4, 6, 6), "w": (6, 2, 3, 3), "b": (6,)},
           lambda t: F.conv2d(t["x"], t["w"], t["b"], padding=(1, 2), groups=2),
           lambda t: TF.conv2d(t["x"], t["w"], t["b"], padding=(1, 2), groups=2)),
    Sample("conv1d-same-groups", {"x": (2, 4, 10), "w": (6, 2, 3), "b": (6,)},
           lambda t: F.conv1d(t["x"], t["w"], t["b"], padding="same", groups=2),
           lambda t: TF.conv1d(t["x"], t["w"], t["b"], padding="same", groups=2)),
    Sample("depthwise-multiplier2", {"x": (2, 3, 8, 8), "w": (6, 1, 3, 3), "b": (6,)},
           lambda t: F.depthwise_conv2d(t["x"], t["w"], t["b"], stride=2, padding=1, activation="relu6"),
           lambda t: _clamp6(TF.conv2d(t["x"], t["w"], t["b"], stride=2, padding=1, groups=3))),
    Sample("depthwise-separable", {"x": (2, 3, 7, 7), "dw": (3, 1, 3, 3), "pw": (5, 3, 1, 1), "db": (3,),
                                   "pb": (5,)},
           lambda t: F.depthwise_separable_conv2d(t["x"], t["dw"], t["pw"], t["db"], t["pb"], padding=1,
                                                  activation="relu"),
           lambda t: TF.relu(TF.conv2d(TF.relu(TF.conv2d(t["x"], t["dw"], t["db"], padding=1, groups=3)), t["pw"],
                                       t["pb"]))),
    Sample("conv_transpose2d", {"x": (2, 4, 5, 5), "w": (4, 2, 3, 3), "b": (4,)},
           lambda t: F.conv_transpose2d(t["x"], t["w"], t["b"], stride=2, padding=1, output_padding=1, groups=2),
           lambda t: TF.conv_transpose2d(t["x"], t["w"], t["b"], stride=2, padding=1, output_padding=1, groups=2)),
    Sample("linear-relu", {"x": (3, 5, 7), "w": (4, 7), "b": (4,)},
           lambda t: F.linear(t["x"], t["w"], t["b"], activation="relu"),
           lambda t: TF.relu(TF.linear(t["x"], t["w"], t["b"]))),
    Sample("max_pool2d-ceil", {"x": (2, 3, 9, 8)},
           lambda t: F.max_pool2d(t["x"], 3, 2, 1, ceil_mode=True),
           lambda t: TF.max_pool2d(t["x"], 3, 2, 1, ceil_mode=True)),
    Sample("max_pool2d-dilated", {"x": (2, 3, 9, 9)},
           lambda t: F.max_pool2d(t["x"], 2, 1, dilation=2),
           lambda t: TF.max_pool2d(t["x"], 2, 1, dilation=2)),
    Sample("avg_pool2d-ceil-exclude-pad", {"x": (2, 3, 9, 8)},
           lambda t: F.avg_pool2d(t["x"], 3, 2, 1, ceil_mode=True, count_include_pad=False),
           lambda t: TF.avg_pool2d(t["x"], 3, 2, 1, ceil_mode=True, count_include_pad=False)),
    Sample("avg_pool2d-divisor", {"x": (2, 3, 8, 8)},
           lambda t: F.avg_pool2d(t["x"], 2, divisor_override=3),
           lambda t: TF.avg_pool2d(t["x"], 2, divisor_override=3)),
    Sample("adaptive_avg_pool2d", {"x": (2, 3, 9, 8)},
           lambda t: F.adaptive_avg_pool2d(t["x"], (5, 3)),
           lambda t: TF.adaptive_avg_pool2d(t["x"], (5, 3))),
    Sample("adaptive_max_pool2d", {"x": (2, 3, 9, 8)},
           lambda t: F.adaptive_max_pool2d(t["x"], (4, None)),
           lambda t: TF.adaptive_max_pool2d(t["x"], (4, None))),
    Sample("batch_norm-train", {"x": (4, 3, 5, 5), "g": (3,), "b": (3,), "running_mean": (3,), "running_var": (3,)},
           lambda t: F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"], t["b"], True, 0.3),
           lambda t: TF.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"], t["b"], True, 0.3),
           nondiff=BN_STATS),
    Sample("batch_norm-eval-1d", {"x": (6, 3), "g": (3,), "b": (3,), "running_mean": (3,), "running_var": (3,)},
           lambda t: F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"], t["b"]),
           lambda t: TF.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"], t["b"]),
           nondiff=BN_STATS),
    # gamma * 4 and beta + 2 put outputs on both sides of 0 and of 6.
    Sample("batch_norm-relu6-train", {"x": (4, 3, 5, 5), "g": (3,), "b": (3,), "running_mean": (3,),
                                      "running_var": (3,)},
           lambda t: F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"] * 4, t["b"] + 2, True, 0.3,
                                  activation="relu6"),
           lambda t: TF.relu6(TF.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"] * 4, t["b"] + 2,
                                            True, 0.3)),
           nondiff=BN_STATS),
    Sample("batch_norm-relu-eval", {"x": (3, 4, 6), "g": (4,), "b": (4,), "running_mean": (4,), "running_var": (4,)},
           lambda t: F.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"], t["b"], activation="relu"),
           lambda t: TF.relu(TF.batch_norm(t["x"], t["running_mean"], t["running_var"], t["g"], t["b"])),
           nondiff=BN_STATS),
    Sample("conv2d_bn-relu", {"x": (2, 3, 7, 7), "w": (4, 3, 3, 3), "cb": (4,), "running_mean": (4,),
                              "running_var": (4,), "g": (4,), "b": (4,)},
           lambda t: F.conv2d_bn(t["x"], t["w"], t["cb"], t["running_mean"], t["running_var"], t["g"], t["b"],
                                 stride=2, padding=1, activation="relu"),
           lambda t: TF.relu(TF.batch_norm(TF.conv2d(t["x"], t["w"], t["cb"], stride=2, padding=1),
                                           t["running_mean"], t["running_var"], t["g"], t["b"])),
           nondiff=BN_STATS),
]
IDS = [s.name for s in SAMPLES]


def _clone(tensors):
    return {k: v.detach().clone().requires_grad_(v.requires_grad) for k, v in tensors.items()}


def _forward_backward(fn, tensors):
    out = fn(tensors)
    out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).reshape(out.shape))
    return out.detach(), {k: v.grad for k, v in tensors.items() if v.requires_grad}


def _on(tensors, device):
    return {k: v.detach().to(device).requires_grad_(v.requires_grad) for k, v in tensors.items()}


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_values_and_gradients_match_torch(sample, device):
    # On CUDA the reference is cuDNN / cuBLAS in full fp32 (no TF32), the fastconv side fastconv.cuda's kernels.
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    ours = _on(sample.tensors(torch.float32), device)
    ref = _clone(ours)
    y, grads = _forward_backward(sample.fastconv_fn, ours)
    y_ref, grads_ref = _forward_backward(sample.torch_fn, ref)
    torch.testing.assert_close(y, y_ref, rtol=1e-4, atol=1e-4)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        torch.testing.assert_close(grads[k], grads_ref[k], rtol=1e-4, atol=1e-4, msg=f"gradient of {k}")
    for k in BN_STATS:  # the running statistics the op updated (training) or left alone (eval)
        if k in ours:
            torch.testing.assert_close(ours[k], ref[k], rtol=1e-5, atol=1e-6, msg=k)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_gradcheck_float64(sample):
    tensors = sample.tensors(torch.float64, seed=1)
    names = [k for k, v in tensors.items() if v.requires_grad]

    def fn(*args):
        return sample.fastconv_fn({**tensors, **dict(zip(names, args))})

    assert torch.autograd.gradcheck(fn, tuple(tensors[k] for k in names))


class _RecordFastconvOps(TorchDispatchMode):
    """Records every torch.ops.fastconv call (forward and backward) below autograd, with its arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace == "fastconv":
            clone = lambda a: a.detach().clone() if isinstance(a, torch.Tensor) else a  # noqa: E731
            self.calls.append((func, [clone(a) for a in args], {k: clone(v) for k, v in kwargs.items()}))
        return func(*args, **kwargs)


def _recorded_calls():
    calls = []
    for sample in SAMPLES:
        tensors = sample.tensors(torch.float32)
        with _RecordFastconvOps() as rec:
            _forward_backward(sample.fastconv_fn, tensors)
        calls += [(f"{sample.name}:{func._opname}", func, args, kwargs) for func, args, kwargs in rec.calls]
    return calls


CALLS = _recorded_calls()
REGISTERED = {name for name, v in vars(fc_ops).items() if type(v).__name__ == "CustomOpDef"}
# Forward ops carry an autograd formula; backward ops and the running-statistics update do not.
DIFFERENTIABLE = {name for name in REGISTERED if not name.endswith("_backward") and name != "update_running_stats"}


def test_every_fastconv_op_is_exercised():
    assert REGISTERED == {func._opname for _, func, _, _ in CALLS}
    # The list: conv2d and its backward, conv_transpose2d, depthwise and depthwise-separable, conv1d,
    # max/avg/adaptive pooling, batch_norm, linear and the fused inference conv + BN + activation.
    assert {"conv2d", "conv2d_backward", "conv_transpose2d", "depthwise_conv2d", "depthwise_separable_conv2d",
            "conv1d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "batch_norm",
            "linear", "conv2d_bn"} <= REGISTERED


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=needs_cuda)])
@pytest.mark.parametrize("name, func, args, kwargs", CALLS, ids=[c[0] for c in CALLS])
def test_opcheck(name, func, args, kwargs, device):
    move = lambda a: a.to(device) if isinstance(a, torch.Tensor) else a  # noqa: E731
    args, kwargs = [move(a) for a in args], {k: move(v) for k, v in kwargs.items()}
    if func._opname in DIFFERENTIABLE:  # exercise the autograd registration
        mutated = {a.name for a in func._schema.arguments if a.alias_info is not None and a.alias_info.is_write}
        args = [a.requires_grad_() if isinstance(a, torch.Tensor) and a.is_floating_point() and not mutated else a
                for a in args]
    torch.library.opcheck(func, tuple(args), kwargs)


def _channels_last_or_strided(t):
    if t.dim() == 4:
        return t.detach().contiguous(memory_format=torch.channels_last)
    if t.dim() >= 2:  # a transposed copy transposed back: same values, non-contiguous strides
        return t.detach().transpose(0, -1).contiguous().transpose(0, -1)
    return t.detach()[::1]


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_channels_last_and_non_contiguous_inputs(sample, dtype):
    base = sample.tensors(dtype)
    odd = {k: _channels_last_or_strided(v).requires_grad_(v.requires_grad) for k, v in base.items()}
    assert any(not v.is_contiguous() for v in odd.values())
    y, grads = _forward_backward(sample.fastconv_fn, base)
    y_odd, grads_odd = _forward_backward(sample.fastconv_fn, odd)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y_odd, y, rtol=tol, atol=tol)
    for k in grads:
        torch.testing.assert_close(grads_odd[k], grads[k], rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.complex64])
def test_other_dtypes_raise_type_error(dtype):
    x = torch.zeros(1, 2, 4, 4).to(dtype)
    w = torch.zeros(3, 2, 3, 3).to(dtype)
    with pytest.raises(TypeError, match=r"input has dtype .*float32 and torch.float64"):
        F.conv2d(x, w)
    with pytest.raises(TypeError, match="input has dtype"):
        F.max_pool2d(x, 2)


def test_mixed_dtypes_and_other_devices_are_refused():
    x = torch.zeros(1, 2, 4, 4)
    with pytest.raises(TypeError, match="weight has dtype torch.float64 but the input is torch.float32"):
        F.conv2d(x, torch.zeros(3, 2, 3, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="weight is on meta"):
        F.conv2d(x, torch.zeros(3, 2, 3, 3, device="meta"))
    with pytest.raises(TypeError, match="weight must be a torch.Tensor"):
        F.linear(torch.zeros(2, 3), [[1.0, 2.0, 3.0]])
    with pytest.raises(ValueError, match="activation must be"):
        F.conv2d(x, torch.zeros(3, 2, 3, 3), activation="gelu")


def test_kernel_errors_reach_the_caller():
    with pytest.raises(ValueError, match="input has 2 channels but weight expects 4"):
        F.conv2d(torch.zeros(1, 2, 5, 5), torch.zeros(3, 4, 3, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(torch.zeros(1, 3), torch.zeros(3), torch.ones(3), training=True)


@pytest.mark.parametrize("sample", SAMPLES, ids=IDS)
def test_no_grad_saves_nothing_for_backward(sample):
    tensors = sample.tensors(torch.float32)
    packed = []
    with saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        with torch.no_grad():
            y = sample.fastconv_fn(tensors)
        assert packed == [] and y.grad_fn is None
        y = sample.fastconv_fn(tensors)
    assert y.grad_fn is not None
    if not sample.name.startswith(("avg_pool2d", "adaptive_avg")):  # average pooling keeps only shapes
        assert packed, "the grad-mode call saves tensors, so the hook does see them"
