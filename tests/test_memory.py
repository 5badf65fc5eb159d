"""fastconv's block cache (csrc/core/buffer.h): large arrays and kernel scratch are recycled,
within a limit, and the limit, statistics and release work as documented. Every other test file
runs with the cache filling each block with NaN (conftest.py), which checks that no kernel reads
what it did not write."""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastconv
from fastconv import _core, ops

BIG = (8, 64, 32, 32)  # 2 MiB of float32: well above the 128 KiB where caching starts


@pytest.fixture
def cache():
    """A known starting point (cache on, empty), and the process's limit restored afterwards."""
    limit = fastconv.get_cache_limit()
    fastconv.set_cache_limit(1 << 30)
    fastconv.empty_cache()
    yield
    fastconv.set_cache_limit(limit)
    fastconv.empty_cache()


def _block_bytes(shape, dtype) -> int:
    """The bytes the cache reserves for such an array (its size class), as the cache itself counts them
    (call with the cache empty and a limit of at least that size)."""
    before = fastconv.memory_stats()["cached_bytes"]
    a = _core.empty(shape, dtype)
    assert a.nbytes >= _core.CACHE_MIN_BYTES
    del a
    size = fastconv.memory_stats()["cached_bytes"] - before
    fastconv.empty_cache()
    return size


def test_a_freed_result_serves_the_next_request_of_its_size(cache):
    x = np.random.default_rng(0).standard_normal(BIG, dtype=np.float32)
    y = ops.relu(x)
    address = y.ctypes.data
    before = fastconv.memory_stats()
    del y
    idle = fastconv.memory_stats()
    assert idle["cached_blocks"] == before["cached_blocks"] + 1
    assert idle["cached_bytes"] >= x.nbytes
    y = ops.relu(x)
    after = fastconv.memory_stats()
    assert y.ctypes.data == address
    assert after["hits"] == idle["hits"] + 1 and after["misses"] == idle["misses"]
    np.testing.assert_array_equal(y, np.maximum(x, 0))


def test_a_view_keeps_its_block_until_the_last_reference_goes(cache):
    y = ops.relu(np.ones(BIG, np.float32))
    view = y[1:]
    blocks = fastconv.memory_stats()["cached_blocks"]
    del y
    assert fastconv.memory_stats()["cached_blocks"] == blocks
    np.testing.assert_array_equal(view, 1.0)
    del view
    assert fastconv.memory_stats()["cached_blocks"] == blocks + 1


def test_a_repeated_kernel_call_takes_all_its_large_buffers_from_the_cache(cache):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 32, 40, 40), dtype=np.float32)
    w = rng.standard_normal((48, 32, 3, 3), dtype=np.float32)
    gy = rng.standard_normal((2, 48, 40, 40), dtype=np.float32)
    for algo in ("im2col", "direct"):
        for _ in range(2):  # the first calls fill the cache
            results = ops.conv2d(x, w, padding=1, algo=algo), ops.conv2d_backward(gy, x, w, padding=1)
            del results
        before = fastconv.memory_stats()
        y = ops.conv2d(x, w, padding=1, algo=algo)
        grads = ops.conv2d_backward(gy, x, w, padding=1)
        after = fastconv.memory_stats()
        assert after["misses"] == before["misses"], algo
        assert after["hits"] > before["hits"], algo
        np.testing.assert_allclose(y, ops.conv2d(x, w, padding=1, algo="im2col"), rtol=1e-5, atol=1e-4)
        del y, grads


def test_the_limit_bounds_the_idle_bytes_and_releases_the_oldest_first(cache):
    large = (2,) + BIG
    size, large_size = _block_bytes(BIG, np.float32), _block_bytes(large, np.float32)
    assert np.prod(BIG) * 4 <= size <= np.prod(BIG) * 4 * 9 // 8
    fastconv.set_cache_limit(2 * size)
    a0, a1, a2 = (_core.empty(BIG, np.float32) for _ in range(3))
    addresses = [a.ctypes.data for a in (a0, a1, a2)]
    del a0
    del a1
    del a2  # the third does not fit: block 0, the oldest, is released to make room
    stats = fastconv.memory_stats()
    assert stats["cached_blocks"] == 2 and stats["cached_bytes"] == 2 * size
    again = [_core.empty(BIG, np.float32) for _ in range(2)]
    assert {a.ctypes.data for a in again} == set(addresses[1:])
    del again

    # Across size classes too: with room for one small and one large block, a second small block
    # pushes out the first small one, which is older than the large one.
    fastconv.set_cache_limit(size + large_size)
    fastconv.empty_cache()
    s0, s1, big = _core.empty(BIG, np.float32), _core.empty(BIG, np.float32), _core.empty(large, np.float32)
    kept = {s1.ctypes.data, big.ctypes.data}
    del s0
    del big
    del s1
    before = fastconv.memory_stats()
    again = [_core.empty(BIG, np.float32), _core.empty(large, np.float32)]
    assert {a.ctypes.data for a in again} == kept
    assert fastconv.memory_stats()["misses"] == before["misses"]
    del again

    fastconv.set_cache_limit(size)  # lowering the limit releases idle blocks at once
    a, b = _core.empty(BIG, np.float32), _core.empty(BIG, np.float32)
    del a, b
    assert fastconv.memory_stats()["cached_bytes"] == size
    fastconv.set_cache_limit(size // 2)
    assert fastconv.memory_stats()["cached_bytes"] == 0


def test_limit_zero_turns_the_cache_off_and_empty_cache_keeps_the_limit(cache):
    a = _core.empty(BIG, np.float32)
    del a
    assert fastconv.memory_stats()["cached_blocks"] == 1
    fastconv.empty_cache()
    stats = fastconv.memory_stats()
    assert stats["cached_blocks"] == 0 and stats["cached_bytes"] == 0
    assert stats["cache_limit"] == fastconv.get_cache_limit() == 1 << 30

    fastconv.set_cache_limit(0)
    before = fastconv.memory_stats()
    for _ in range(3):
        a = _core.empty(BIG, np.float32)
        del a
    after = fastconv.memory_stats()
    assert after["cached_bytes"] == 0 and after["hits"] == before["hits"]
    assert after["misses"] == before["misses"] + 3


def test_small_arrays_are_numpys_own(cache):
    before = fastconv.memory_stats()
    a = _core.empty((_core.CACHE_MIN_BYTES // 4 - 64,), np.float32)
    del a
    after = fastconv.memory_stats()
    assert after["hits"] == before["hits"] and after["misses"] == before["misses"]
    assert after["cached_blocks"] == before["cached_blocks"]


def test_cached_empty_makes_arrays_of_any_dtype_and_shape(cache):
    for shape, dtype in [((), np.float32), ((0, 5), np.float64), ((3, 70000), np.int64), ((1 << 18,), np.uint8),
                         ((5, 7, 1031), np.float64)]:
        a = _core.empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0 or a.nbytes < _core.CACHE_MIN_BYTES
        a[...] = 3
        assert (a == 3).all()
    with pytest.raises(ValueError, match="negative"):
        _core.empty((2, -1), np.float32)


def test_cache_limit_argument_errors():
    with pytest.raises(ValueError, match=">= 0"):
        fastconv.set_cache_limit(-1)
    for bad in (1.5, "1G", True, None):
        with pytest.raises(TypeError):
            fastconv.set_cache_limit(bad)


def test_the_default_limit_is_a_quarter_of_memory_at_most_4_gib():
    pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    expected = min(4 << 30, pages // 4 * page)
    assert _core.default_cache_limit() in (expected, 0)  # 0: a sanitizer build


@pytest.mark.parametrize("text, expected", [("0", 0), ("123456", 123456), ("512M", 512 << 20), ("2g", 2 << 30),
                                            ("1GiB", 1 << 30), ("64kb", 64 << 10), ("100B", 100)])
def test_fastconv_cache_limit_environment_variable(text, expected):
    env = dict(os.environ, FASTCONV_CACHE_LIMIT=text)
    r = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.get_cache_limit())"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) == expected


@pytest.mark.parametrize("text", ["lots", "1.5G", "-1", "12iB", "G"])
def test_a_bad_fastconv_cache_limit_fails_import_clearly(text):
    env = dict(os.environ, FASTCONV_CACHE_LIMIT=text)
    r = subprocess.run([sys.executable, "-c", "import fastconv"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "FASTCONV_CACHE_LIMIT" in r.stderr and repr(text) in r.stderr


def test_the_tests_see_every_new_array_filled_with_nan(cache):
    # conftest.py turns the fill on for the whole test session; this checks that it holds for the
    # cache's blocks, fresh and recycled, and for numpy's small arrays alike.
    assert np.isnan(_core.empty(BIG, np.float32)).all()  # fresh, then back to the cache
    recycled = _core.empty(BIG, np.float32)
    assert fastconv.memory_stats()["hits"] >= 1
    assert np.isnan(recycled).all()
    assert np.isnan(_core.empty((3, 5), np.float64)).all()
    assert (_core.empty((7,), np.int64) == -1).all()
