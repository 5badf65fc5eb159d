"""fastconv.summary against the seeds' worked examples and the zoo's published totals;
fastconv.viz writes PNG grids."""

import importlib.util

import numpy as np
import pytest

import fastconv
from fastconv import models, nn, viz


def test_a_3_to_64_3x3_convolution_has_1792_parameters(capsys):
    rows = fastconv.summary(nn.Sequential(nn.Conv2d(3, 64, 3, padding=1)), (1, 3, 32, 32))
    assert rows[0]["params"] == 3 * 3 * 3 * 64 + 64 == 1792
    assert rows[0]["output_shape"] == (1, 64, 32, 32) and rows[0]["macs"] == 32 * 32 * 64 * 27
    assert "1,792" in capsys.readouterr().out


def test_stacked_3x3_convolutions_see_1_plus_L_times_2():
    for layers in (1, 2, 3, 5):
        m = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(layers)])
        assert fastconv.summary(m, (1, 1, 16, 16), print_table=False)[-2]["rf"] == 1 + 2 * layers  # 3 -> 7, 5 -> 11


def test_the_seeds_cnn_block_exercise():
    # (4, 3, 64, 64) through conv-relu-pool x2 and conv + global average pool: 448 + 4,640 + 18,496 = 23,584.
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((1, 1)))
    rows = fastconv.summary(m, (4, 3, 64, 64), print_table=False)
    assert [r["params"] for r in rows if r["type"] == "Conv2d"] == [448, 4640, 18496]
    assert rows[-1]["params"] == 23584
    assert [r["output_shape"][2] for r in rows if r["type"] == "MaxPool2d"] == [32, 16]
    assert rows[-1]["output_shape"] == (4, 64, 1, 1)
    # Receptive field: conv 3; pool 3 + 1 = 4 (jump 2); conv 4 + 2*2 = 8; pool 8 + 1*2 = 10 (jump 4); conv 10 + 2*4 = 18.
    assert [r["rf"] for r in rows if r["type"] in ("Conv2d", "MaxPool2d")] == [3, 4, 8, 10, 18]
    assert [r["jump"] for r in rows if r["type"] in ("Conv2d", "MaxPool2d")] == [1, 2, 2, 4, 4]


def test_output_size_formula_cases_from_the_seeds():
    # floor((H + 2P - K) / S) + 1: (28, K5) -> 24; (64, K3 P1) -> 64; (128, K3 S2) -> 63; (224, K7 S2 P3) -> 112.
    for h, k, s, p, want in [(28, 5, 1, 0, 24), (64, 3, 1, 1, 64), (128, 3, 2, 0, 63), (224, 7, 2, 3, 112)]:
        rows = fastconv.summary(nn.Sequential(nn.Conv2d(1, 1, k, s, p)), (1, 1, h, h), print_table=False)
        assert rows[0]["output_shape"][2] == want


@pytest.mark.parametrize("name, params, gmacs, rf", [
    ("resnet18", 11_689_512, 1.81, 435), ("resnet50", 25_557_032, 4.09, None),
    ("mobilenet_v2", 3_504_872, 0.30, None), ("alexnet", 61_100_840, 0.71, 195),
])
def test_zoo_totals_match_the_published_figures(name, params, gmacs, rf):
    total = fastconv.summary(getattr(models, name)(), (1, 3, 224, 224), print_table=False)[-1]
    assert total["params"] == params
    assert abs(total["macs"] / 1e9 - gmacs) < 0.006 * gmacs + 0.005
    if rf is not None:
        assert total["rf"] == rf


@pytest.mark.parametrize("training", [True, False])
def test_summary_lists_batchnorm_and_its_activation_though_they_run_fused(training):
    # Outside summary, Sequential runs BatchNorm2d + ReLU6 as one op; summary must still see both layers.
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4),
                      nn.ReLU())
    m.train(training)
    rows = fastconv.summary(m, (2, 3, 10, 10), print_table=False)
    assert [r["type"] for r in rows[:-1]] == ["Conv2d", "BatchNorm2d", "ReLU6", "Conv2d", "BatchNorm2d", "ReLU"]
    assert [r["output_shape"] for r in rows[:-1]] == [(2, 8, 8, 8)] * 3 + [(2, 4, 8, 8)] * 3
    assert m.training == training


def test_summary_restores_the_training_mode():
    m = models.lenet5()
    fastconv.summary(m, (1, 1, 28, 28), print_table=False)
    assert m.training


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib not installed")
def test_viz_writes_png_grids(tmp_path):
    m = models.lenet5(classic=False)
    p = viz.filters(m.features[0], tmp_path / "filters.png")
    assert p.read_bytes()[:4] == b"\x89PNG"
    x = np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)
    q = viz.feature_maps(m, x, "features.3", tmp_path / "maps.png")
    assert q.read_bytes()[:4] == b"\x89PNG"
    rgb = viz.filters(nn.Conv2d(3, 8, 5), tmp_path / "rgb.png")
    assert rgb.exists()
    with pytest.raises(ValueError, match="no module named"):
        viz.feature_maps(m, x, "features.99", tmp_path / "x.png")
    with pytest.raises(TypeError, match="Conv2d"):
        viz.filters(m.classifier[0], tmp_path / "x.png")
