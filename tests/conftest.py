import ctypes.util
import os
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
def rng():
    return np.random.default_rng(1234)


def pytest_report_header(config):
    info = fastconv.cpu_info()
    return (f"fastconv: cpu={info['cpu']!r} detected={info['detected_isa']} in-use={info['isa']} "
            f"paths tested={ISAS} threads={info['threads']} FASTCONV_ISA={os.environ.get('FASTCONV_ISA', '')!r}\n"
            f"fastconv.cuda: {fastconv.cuda.why_unavailable() or 'available'}"
            f"{' (Numba CUDA simulator)' if fastconv.cuda.is_simulator() else ''}")
