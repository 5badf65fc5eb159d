"""The model zoo: torchvision's parameter counts and names, and equal outputs (eval) and
gradients (one training step) against their PyTorch twins (fastconv/bench/torch_zoo.py)."""

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, models, nn

PUBLISHED = {  # torchvision's counts (1000 classes) and LeNet-5's classic 61,706 (10 classes)
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "vgg16": 138_357_544,
    "vgg11": 132_863_336, "vgg16_bn": 138_365_992, "alexnet": 61_100_840, "mobilenet_v2": 3_504_872,
    "mobilenet_v1": 4_231_976, "lenet5": 61_706,
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_equal_the_published_ones(name):
    m = getattr(models, name)()
    assert sum(p.size for p in m.parameters()) == PUBLISHED[name]


def test_num_classes_and_in_channels():
    m = models.resnet18(num_classes=7, in_channels=1)
    assert m.conv1.weight.shape == (64, 1, 7, 7) and m.fc.weight.shape == (7, 512)
    y = m.eval()(Tensor(np.zeros((1, 1, 32, 32), np.float32)))
    assert y.shape == (1, 7)
    assert models.mobilenet_v2(num_classes=5, in_channels=4).features[0][0].weight.shape == (32, 4, 3, 3)


CASES = [
    ("lenet5", lambda z: z.lenet5(), lambda: models.lenet5(), (4, 1, 28, 28)),
    ("lenet5-relu", lambda z: z.lenet5(classic=False), lambda: models.lenet5(classic=False), (4, 1, 28, 28)),
    ("mini_alexnet", lambda z: z.MiniAlexNet(), lambda: models.mini_alexnet(), (2, 3, 32, 32)),
    ("alexnet", lambda z: z.AlexNet(num_classes=10), lambda: models.alexnet(num_classes=10), (2, 3, 64, 64)),
    ("vgg11_bn", lambda z: z.VGG([64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"], True, 10),
     lambda: models.vgg11_bn(num_classes=10), (2, 3, 32, 32)),
    ("resnet18", lambda z: z.ResNet(z.BasicBlock, [2, 2, 2, 2], 10), lambda: models.resnet18(10), (2, 3, 64, 64)),
    ("resnet50", lambda z: z.ResNet(z.Bottleneck, [3, 4, 6, 3], 10), lambda: models.resnet50(10), (2, 3, 64, 64)),
    ("mobilenet_v1", lambda z: z.MobileNetV1(10), lambda: models.mobilenet_v1(10), (2, 3, 64, 64)),
    ("mobilenet_v2", lambda z: z.MobileNetV2(10), lambda: models.mobilenet_v2(10), (2, 3, 64, 64)),
]


def _close(a, b, rel):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    assert np.abs(a - b).max() <= rel * np.abs(b).max() + 1e-6, (np.abs(a - b).max(), np.abs(b).max())


def _no_dropout(module):
    for m in module.modules():
        if type(m).__name__ == "Dropout":
            m.eval()


@pytest.mark.parametrize("name, make_torch, make, shape", CASES, ids=[c[0] for c in CASES])
def test_model_matches_its_pytorch_twin(name, make_torch, make, shape):
    torch = pytest.importorskip("torch", reason="torch not installed (the reference for the zoo)")
    from fastconv.torch import models as torch_zoo

    fastconv.manual_seed(0)
    m = make()
    rng = np.random.default_rng(0)
    for mod in m.modules():  # non-trivial running statistics and affine parameters
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean[...] = rng.standard_normal(mod.num_features) * 0.1
            mod.running_var[...] = rng.uniform(0.5, 1.5, mod.num_features)
            mod.weight.data[...] = rng.uniform(0.5, 1.5, mod.num_features)
            mod.bias.data[...] = rng.standard_normal(mod.num_features) * 0.1
    tm = make_torch(torch_zoo)
    tstate = tm.state_dict()
    state = m.state_dict()
    assert list(state) == list(tstate), "parameter and buffer names differ from torchvision's"
    tm.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
    x = rng.standard_normal(shape).astype(np.float32)

    m.eval()
    tm.eval()
    with fastconv.no_grad(), torch.no_grad():
        y, ty = m(Tensor(x)), tm(torch.from_numpy(x))
    _close(y.data, ty.numpy(), 1e-4)
    with fastconv.no_grad():
        _close(nn.fuse(m)(Tensor(x)).data, ty.numpy(), 1e-4)

    # One training step in float64 on both sides: equal gradients and running statistics
    # (float64, because train-mode BatchNorm at these small batches amplifies float32 rounding
    # differences through a deep network to the percent level).
    m.double().train()
    tm.double().train()
    _no_dropout(m)
    _no_dropout(tm)
    x64 = x.astype(np.float64)
    target = rng.integers(0, y.shape[1], shape[0])
    nn.CrossEntropyLoss()(m(Tensor(x64)), target).backward()
    torch.nn.CrossEntropyLoss()(tm(torch.from_numpy(x64)), torch.from_numpy(target)).backward()
    tparams = dict(tm.named_parameters())
    for n, p in m.named_parameters():
        _close(p.grad, tparams[n].grad.numpy(), 1e-7)
    tbuf = tm.state_dict()
    for n, b in m.named_buffers():
        _close(b, tbuf[n].numpy(), 1e-9)
