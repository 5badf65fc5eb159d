import ctypes.util
import os
import sys
import tempfile

import numpy as np
import pytest

# A user's tuning cache must not steer the tests: they get an empty cache directory of their own.
os.environ["FASTCONV_CACHE_DIR"] = tempfile.mkdtemp(prefix="fastconv-test-cache-")

# Without a CUDA driver, fastconv.cuda's kernels are tested on Numba's CUDA simulator (set before numba
# is first imported); on a machine with a GPU they run on the GPU.
if "NUMBA_ENABLE_CUDASIM" not in os.environ and ctypes.util.find_library("cuda") is None:
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import fastconv  # noqa: E402
from fastconv import _core  # noqa: E402

# Every array and scratch block fastconv allocates starts as NaN in the tests (recycled blocks of the
# block cache would otherwise hold whatever their last user left, and fresh pages zeros): a kernel that
# reads memory it never wrote, or leaves part of its output unwritten, gets wrong answers here.
_core.set_fill_poison(True)


def _strict_simulator() -> None:
    """Makes the simulator's device arrays as bare as Numba's real ones, so that a test cannot pass
    on the simulator by leaning on numpy behaviour a GPU array does not have: the simulator's
    arrays wrap numpy arrays and forward arithmetic, comparisons and numpy methods (sum, astype,
    ...) to them, where a real device array raises."""
    try:
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
    except ImportError:
        return

    def refuse(name):
        def op(self, *args, **kwargs):
            raise TypeError(f"a GPU array has no {name}: this only worked on the simulator's numpy-backed arrays")
        return op

    for name in ("__add__", "__sub__", "__mul__", "__truediv__", "__floordiv__", "__mod__", "__pow__", "__eq__",
                 "__ne__", "__lt__", "__le__", "__gt__", "__ge__"):
        setattr(FakeCUDAArray, name, refuse(name))
    FakeCUDAArray.__hash__ = object.__hash__
    # numpy.asarray(device_array) copies a real one to the host without a word: fastconv must never do
    # that behind a caller's back, so here it is an error.
    # (The simulator's own code converts its arrays with numpy: those calls pass.)
    def array(self, dtype=None, copy=None):
        if not sys._getframe(1).f_globals.get("__name__", "").startswith("numba.cuda.simulator"):
            raise TypeError("numpy.asarray(GPU array) would copy it to the host behind the caller's back")
        return self._ary if dtype is None else self._ary.astype(dtype)

    FakeCUDAArray.__array__ = array
    # What Numba's DeviceNDArray offers besides what FakeCUDAArray defines itself.
    allowed = {"dtype", "size", "ndim", "strides", "flags", "itemsize", "squeeze", "getitem", "setitem",
               "get_ipc_handle", "device_ctypes_pointer", "as_cuda_arg", "__cuda_array_interface__"}
    forward = FakeCUDAArray.__getattr__

    def getattr_(self, name):
        if name not in allowed:
            raise AttributeError(f"a GPU array has no attribute {name!r} (the simulator's array would have "
                                 f"forwarded it to numpy)")
        return forward(self, name)

    FakeCUDAArray.__getattr__ = getattr_


if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
    _strict_simulator()

ISAS = fastconv.cpu_info()["supported_isas"]


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test once per kernel path this CPU can execute."""
    with fastconv.use_isa(request.param):
        yield request.param


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty tuning-cache directory for one test; the cache is re-read before and after."""
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path / "cache"))
    fastconv.tuning.reload_cache()
    yield tmp_path / "cache"
    fastconv.tuning.reload_cache()


@pytest.fixture
def restore_threads():
    """Puts fastconv's thread count back after a test that changes it."""
    n = fastconv.get_num_threads()
    yield
    fastconv.set_num_threads(n)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def pytest_report_header(config):
    info = fastconv.cpu_info()
    return (f"fastconv: cpu={info['cpu']!r} detected={info['detected_isa']} in-use={info['isa']} "
            f"paths tested={ISAS} threads={info['threads']} FASTCONV_ISA={os.environ.get('FASTCONV_ISA', '')!r}\n"
            f"fastconv.cuda: {fastconv.cuda.why_unavailable() or 'available'}"
            f"{' (Numba CUDA simulator)' if fastconv.cuda.is_simulator() else ''}")
