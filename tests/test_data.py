"""fastconv.data and the digits training example: the data set, the IDX reader (on files
the tests write), batching, augmentation, and a short real training run."""

import gzip

import numpy as np
import pytest

import fastconv
from fastconv import data

sklearn = pytest.importorskip("sklearn", reason="scikit-learn not installed (it ships the digits)")


def test_load_digits_shapes_ranges_and_a_seeded_split():
    (xtr, ytr), (xte, yte) = data.load_digits()
    assert xtr.shape[1:] == (1, 8, 8) and len(xtr) + len(xte) == 1797 and len(xte) == 359
    assert xtr.dtype == np.float32 and 0 <= xtr.min() and xtr.max() == 1.0
    assert set(np.unique(ytr)) == set(range(10)) and ytr.dtype == np.int64
    (xtr2, _), _ = data.load_digits()
    np.testing.assert_array_equal(xtr, xtr2)
    (xtr3, _), _ = data.load_digits(seed=1)
    assert not np.array_equal(xtr, xtr3)


def test_load_digits_resizes_to_28():
    (up, _), _ = data.load_digits(image_size=28, resize="upsample")
    (pad, _), _ = data.load_digits(image_size=28, resize="pad")
    (orig, _), _ = data.load_digits()
    assert up.shape[1:] == pad.shape[1:] == (1, 28, 28)
    np.testing.assert_array_equal(pad[:, :, 10:18, 10:18], orig)
    assert pad[:, :, :10].max() == 0
    # Bilinear upsampling keeps the mean brightness and the value range.
    np.testing.assert_allclose(up.mean(axis=(2, 3)), orig.mean(axis=(2, 3)), atol=0.02)
    assert 0 <= up.min() and up.max() <= 1
    with pytest.raises(ValueError, match="resize"):
        data.load_digits(image_size=28, resize="stretch")


def _write_idx(path, array, code, gz=False):
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    body = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    (gzip.open if gz else open)(path, "wb").write(body)


@pytest.mark.parametrize("dtype, code", [(np.uint8, 0x08), (np.int16, 0x0B), (np.float32, 0x0D), (np.float64, 0x0E)])
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trips(tmp_path, dtype, code, gz):
    a = (np.arange(2 * 3 * 4) * 3 % 251).reshape(2, 3, 4).astype(dtype)
    path = tmp_path / ("a.idx" + (".gz" if gz else ""))
    _write_idx(path, a, code, gz)
    got = data.read_idx(path)
    assert got.shape == a.shape and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, a)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "magic").write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="magic"):
        data.read_idx(tmp_path / "magic")
    (tmp_path / "code").write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x05")
    with pytest.raises(ValueError, match="type code"):
        data.read_idx(tmp_path / "code")
    _write_idx(tmp_path / "ok", np.zeros((4, 5), np.uint8), 0x08)
    (tmp_path / "short").write_bytes((tmp_path / "ok").read_bytes()[:-3])
    with pytest.raises(ValueError, match="header says"):
        data.read_idx(tmp_path / "short")
    (tmp_path / "hdr").write_bytes(b"\x00\x00\x08\x03\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        data.read_idx(tmp_path / "hdr")


def test_load_mnist_reads_the_four_standard_files(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)).astype(np.uint8),
                   0x08, gz=True)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n).astype(np.uint8), 0x08)
    (xtr, ytr), (xte, yte) = data.load_mnist(tmp_path)
    assert xtr.shape == (5, 1, 28, 28) and xte.shape == (3, 1, 28, 28) and ytr.dtype == np.int64
    assert 0 <= xtr.min() and xtr.max() <= 1
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        data.load_mnist(tmp_path)


def test_dataloader_batches_shuffles_reproducibly_and_drops_last():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    y = np.arange(10)
    batches = list(data.DataLoader(x, y, 4))
    assert [len(b[1]) for b in batches] == [4, 4, 2] and isinstance(batches[0][0], fastconv.Tensor)
    assert len(data.DataLoader(x, y, 4, drop_last=True)) == 2
    a = [b[1].tolist() for b in data.DataLoader(x, y, 3, shuffle=True, seed=5)]
    b = [b[1].tolist() for b in data.DataLoader(x, y, 3, shuffle=True, seed=5)]
    assert a == b and sorted(sum(a, [])) == list(range(10)) and sum(a, []) != list(range(10))
    for xb, yb in data.DataLoader(x, y, 3, shuffle=True, seed=1):
        np.testing.assert_array_equal(xb.data.reshape(-1), yb)  # images stay with their labels
    with pytest.raises(ValueError, match="differ in length"):
        data.DataLoader(x, y[:3])


def test_transforms():
    fastconv.manual_seed(0)
    x = np.arange(2 * 1 * 4 * 4, dtype=np.float32).reshape(2, 1, 4, 4)
    crop = data.RandomCrop(4, padding=1)(x)
    assert crop.shape == x.shape
    for img, src in zip(crop, x):  # each crop is a shifted window of the zero-padded image
        padded = np.pad(src, [(0, 0), (1, 1), (1, 1)])
        assert any(np.array_equal(img, padded[:, i:i + 4, j:j + 4]) for i in range(3) for j in range(3))
    np.testing.assert_array_equal(data.RandomHorizontalFlip(p=1.0)(x), x[..., ::-1])
    np.testing.assert_array_equal(data.RandomHorizontalFlip(p=0.0)(x), x)
    norm = data.Normalize([1.0], [2.0])(x)
    np.testing.assert_allclose(norm, (x - 1) / 2)
    both = data.Compose([data.Normalize([0.0], [1.0]), data.RandomHorizontalFlip(1.0)])(x)
    np.testing.assert_array_equal(both, x[..., ::-1])
    with pytest.raises(ValueError, match="larger"):
        data.RandomCrop(9)(x)


def test_the_digits_example_learns():
    from fastconv.examples import train_digits

    result = train_digits.train(epochs=3, verbose=False)
    assert result["test_accuracy"] >= 0.90
    assert [h[0] for h in result["history"]] == [1, 2, 3] and result["history"][-1][1] < result["history"][0][1]
