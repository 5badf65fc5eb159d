"""fastconv.save / fastconv.load: round trips in both formats, torchvision-style checkpoints,
and clear errors for truncated, corrupt, pickled or unknown files."""

import numpy as np
import pytest

import fastconv
from fastconv import Tensor, models

FORMATS = ["npz", "safetensors"]


def _needs(fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors", reason="safetensors not installed")


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_restores_the_model(tmp_path, fmt):
    _needs(fmt)
    fastconv.manual_seed(0)
    m = models.resnet18(num_classes=10).eval()
    m.layer1[0].bn1.running_mean[...] = 0.25
    path = tmp_path / f"r18.{fmt}"
    fastconv.save(m, path)
    state = fastconv.load(path)
    assert sorted(state) == sorted(m.state_dict())
    assert state["layer1.0.bn1.num_batches_tracked"].dtype == np.int64
    fastconv.manual_seed(1)
    m2 = models.resnet18(num_classes=10).eval()
    m2.load_state_dict(state)
    x = Tensor(np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32))
    with fastconv.no_grad():
        np.testing.assert_array_equal(m(x).data, m2(x).data)


def test_a_pytorch_checkpoint_exported_to_safetensors_loads_as_it_is(tmp_path):
    torch = pytest.importorskip("torch", reason="torch not installed")
    st = pytest.importorskip("safetensors.torch", reason="safetensors not installed")
    from fastconv.torch import models as torch_zoo

    tm = torch_zoo.MobileNetV2(num_classes=10).eval()
    st.save_file({k: v.contiguous() for k, v in tm.state_dict().items()}, str(tmp_path / "mbv2.safetensors"))
    m = models.mobilenet_v2(num_classes=10).eval()
    m.load_state_dict(fastconv.load(tmp_path / "mbv2.safetensors"))
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with fastconv.no_grad(), torch.no_grad():
        np.testing.assert_allclose(m(Tensor(x)).data, tm(torch.from_numpy(x)).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_and_corrupt_files_raise_clear_errors(tmp_path, fmt):
    _needs(fmt)
    path = tmp_path / f"w.{fmt}"
    fastconv.save({"a": np.arange(1000, dtype=np.float32), "b": np.ones((3, 4))}, path)
    data = path.read_bytes()
    (tmp_path / f"cut.{fmt}").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable"):
        fastconv.load(tmp_path / f"cut.{fmt}")
    (tmp_path / f"empty.{fmt}").write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable"):
        fastconv.load(tmp_path / f"empty.{fmt}")
    flipped = bytearray(data)
    for i in range(0, 64, 7):  # the header region
        flipped[i] ^= 0xFF
    (tmp_path / f"flip.{fmt}").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="not a readable"):
        fastconv.load(tmp_path / f"flip.{fmt}")


def test_pickled_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        fastconv.load(tmp_path / "evil.npz")
    with pytest.raises(TypeError, match="numeric"):
        fastconv.save({"a": np.array(["text"])}, tmp_path / "s.npz")


def test_names_and_shapes_that_do_not_fit_are_reported(tmp_path):
    fastconv.save(models.lenet5(num_classes=10), tmp_path / "l.npz")
    with pytest.raises(RuntimeError, match="Shape mismatch"):
        models.lenet5(num_classes=5).load_state_dict(fastconv.load(tmp_path / "l.npz"))
    with pytest.raises(RuntimeError, match="Missing key"):
        models.mini_alexnet().load_state_dict(fastconv.load(tmp_path / "l.npz"))


def test_bad_paths_and_objects(tmp_path):
    with pytest.raises(ValueError, match="unknown weight format"):
        fastconv.save(models.lenet5(), tmp_path / "w.pt")
    with pytest.raises(FileNotFoundError):
        fastconv.load(tmp_path / "missing.npz")
    with pytest.raises(TypeError, match="Module or a mapping"):
        fastconv.save(42, tmp_path / "w.npz")
