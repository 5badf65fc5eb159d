"""cpu_info, thread control and the choice of ISA path."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastconv
from fastconv import _core


def test_cpu_info_reports_detection_and_use():
    info = fastconv.cpu_info()
    assert set(info) == {"cpu", "detected_isa", "isa", "supported_isas", "cores", "threads"}
    assert info["detected_isa"] == info["supported_isas"][0]
    assert info["isa"] in info["supported_isas"]
    assert info["supported_isas"][-1] == "scalar"
    assert info["cores"] == os.cpu_count()
    assert info["threads"] == fastconv.get_num_threads()


def test_set_num_threads_roundtrip_and_errors(restore_threads):
    fastconv.set_num_threads(3)
    assert fastconv.get_num_threads() == 3
    assert fastconv.cpu_info()["threads"] == 3
    with pytest.raises(ValueError, match="n must be >= 1"):
        fastconv.set_num_threads(0)
    with pytest.raises(TypeError, match="n must be an int"):
        fastconv.set_num_threads(2.0)


def test_use_isa_is_scoped_and_thread_local():
    default = fastconv.cpu_info()["isa"]
    seen = {}
    with fastconv.use_isa("scalar"):
        assert fastconv.cpu_info()["isa"] == "scalar"
        t = threading.Thread(target=lambda: seen.setdefault("other", fastconv.cpu_info()["isa"]))
        t.start()
        t.join()
    assert seen["other"] == default
    assert fastconv.cpu_info()["isa"] == default
    with pytest.raises(ValueError, match="unknown ISA"):
        with fastconv.use_isa("sse9"):
            pass


@pytest.mark.parametrize("isa", fastconv.cpu_info()["supported_isas"])
def test_fastconv_isa_environment_variable_selects_the_path(isa):
    env = dict(os.environ, FASTCONV_ISA=isa)
    r = subprocess.run([sys.executable, "-c", "import fastconv; print(fastconv.cpu_info()['isa'])"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == isa


def test_unknown_fastconv_isa_fails_import_clearly():
    env = dict(os.environ, FASTCONV_ISA="avx9000")
    r = subprocess.run([sys.executable, "-c", "import fastconv"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and "FASTCONV_ISA='avx9000'" in r.stderr


def test_requesting_an_isa_the_cpu_lacks_is_an_error_not_a_crash():
    # The same resolution that runs at import, for a CPU whose best path is AVX2 / scalar.
    assert _core.resolve_isa_request("", "avx2") == "avx2"
    assert _core.resolve_isa_request("scalar", "avx2") == "scalar"
    with pytest.raises(ValueError, match="supports at most 'avx2'"):
        _core.resolve_isa_request("avx512", "avx2")
    with pytest.raises(ValueError, match="supports at most 'scalar'"):
        _core.resolve_isa_request("avx2", "scalar")


def test_import_is_fast_and_needs_no_torch():
    code = ("import sys, time; t = time.perf_counter(); import fastconv; "
            "print(time.perf_counter() - t, 'torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    seconds, torch_loaded = r.stdout.split()
    assert float(seconds) < 1.0
    assert torch_loaded == "False"


def test_kernels_release_the_gil(restore_threads):
    # Two Python threads running large convolutions overlap: with the GIL held
    # they would serialise, and the check below would see no concurrency.
    x = np.random.default_rng(0).standard_normal((1, 32, 64, 64), dtype=np.float32)
    w = np.random.default_rng(1).standard_normal((32, 32, 3, 3), dtype=np.float32)
    fastconv.set_num_threads(1)
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(1)
            stop.wait(0.001)

    t = threading.Thread(target=ticker)
    t.start()
    for _ in range(20):
        fastconv.ops.conv2d(x, w, padding=1)
    stop.set()
    t.join()
    assert len(ticks) > 5


def test_without_torch_fastconv_imports_and_fastconv_torch_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import fastconv, fastconv.nn, fastconv.models\n"
            "try:\n    import fastconv.torch\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "pip install torch" in out.stdout


_FORK_CHILD = """
import os, sys
import numpy as np
import fastconv
from fastconv import ops

fastconv.set_cache_limit(1 << 30)  # (the sanitizer build starts with the cache off)
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 64, 32, 32)).astype(np.float32)
w = rng.standard_normal((16, 64, 3, 3)).astype(np.float32)
y = ops.conv2d(x, w, padding=1)  # the parent runs parallel regions and fills the block cache
grads = ops.conv2d_backward(y, x, w, padding=1)
del grads
pid = os.fork()
if pid == 0:
    ok = (fastconv.get_num_threads() == 1
          and np.allclose(ops.conv2d(x, w, padding=1), y, rtol=1e-5, atol=1e-4)
          and ops.conv2d_backward(y, x, w, padding=1)[0].shape == x.shape
          and fastconv.memory_stats()["hits"] > 0)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), fastconv.get_num_threads())
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_the_kernels_on_one_thread_instead_of_hanging():
    # GNU OpenMP's thread pool does not survive fork(): without fastconv's fork handler the child's first
    # parallel region waits forever (the timeout below turns that into a failure).
    try:
        r = subprocess.run([sys.executable, "-c", _FORK_CHILD], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child hung in a parallel region")
    assert r.returncode == 0, r.stderr[-2000:]
    child, parent_threads = map(int, r.stdout.split())
    assert child == 0, "the child got wrong results or kept the parent's thread count"
    assert parent_threads == _core.num_cores()  # the parent keeps its default thread count
