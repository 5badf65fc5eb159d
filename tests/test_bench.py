"""fastconv-bench: the cases measure and check what they claim, the command line behaves,
and the report holds every figure (tiny cases and zero budgets: no timing is asserted)."""

import dataclasses
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from importlib.metadata import entry_points

import numpy as np
import pytest

from fastconv.bench import cases as C
from fastconv.bench import cli, report, runner
from fastconv._timing import time_alternating

try:
    import torch
except ImportError:
    torch = None

LIMITS = {"peak_gflops": 100.0}

TINY_CASES = [
    C.GemmCase("mm", m=7, n=9, k=33),
    C.GemmCase("fc", m=5, n=11, k=40, linear=True),
    C.ConvCase("conv", n=2, c_in=4, c_out=6, size=9, kernel=3, padding=1),
    C.ConvCase("conv s2", direction="bwd", n=2, c_in=4, c_out=6, size=9, kernel=3, stride=2, padding=1),
    C.ConvCase("dw", n=2, c_in=5, c_out=5, size=10, kernel=3, padding=1, groups=5),
    C.ConvCase("dw", direction="bwd", n=2, c_in=5, c_out=5, size=10, kernel=3, padding=1, groups=5),
    *(C.PoolCase("pool", direction=d, shape=(2, 3, 9, 8), mode=m, kernel=k, stride=s, padding=p)
      for d in ("fwd", "bwd") for m in ("max", "avg") for k, s, p in ((2, 2, 0), (3, 2, 1))),
    C.BatchNormCase("bn", shape=(3, 4, 5, 6)),
    C.BatchNormCase("bn", direction="bwd", shape=(3, 4, 5, 6)),
    C.BatchNormCase("bn eval", shape=(3, 4, 5, 6), training=False),
    *(C.ActivationCase(name, direction=d, shape=(2, 3, 4, 5)) for name in ("relu", "sigmoid", "tanh", "gelu")
      for d in ("fwd", "bwd")),
    *(C.SoftmaxCase("softmax", direction=d, shape=(6, 13), log=log) for d in ("fwd", "bwd") for log in (False, True)),
    C.CrossEntropyCase("ce", shape=(6, 13)),
    C.ModelCase("lenet", direction="train", model="lenet5", batch=4, size=28, in_channels=1, num_classes=10),
    C.ModelCase("lenet", direction="infer", model="lenet5", batch=2, size=28, in_channels=1, num_classes=10),
]


@pytest.mark.parametrize("case", TINY_CASES, ids=lambda c: f"{type(c).__name__}-{c.label}")
def test_each_kind_of_case_runs_and_checks_its_answer(case):
    row = runner.run_case(case, LIMITS, torch=torch, budget_s=0.0)
    assert set(row) == set(report.ROW_KEYS)
    assert row["correct"], row
    assert row["max_abs_err"] <= row["tolerance"]
    assert row["fastconv_p25_s"] <= row["fastconv_median_s"] <= row["fastconv_p75_s"]
    assert row["fraction_of_limit"] > 0 and row["gbps"] > 0
    assert (row["gflops"] is None) == (case.flops() == 0)
    if case.bound == "memory":
        assert row["limit"] == "copy_bandwidth" and row["limit_gbps"] > 0
    else:
        assert row["limit"] == "gemm_peak" and row["gflops"] > 0
    if torch is not None:
        # PyTorch agrees with the same float64 reference: the reference is checked too.
        assert row["ratio_vs_torch"] > 0
        assert row["torch_max_abs_err"] <= row["tolerance"], row
    else:
        assert row["ratio_vs_torch"] is None and row["torch_median_s"] is None


@pytest.mark.parametrize("direction", ["train", "infer"])
def test_converted_model_case_runs_fastconv_torch_against_torch(direction):
    pytest.importorskip("torch", reason="a converted PyTorch model needs torch")
    case = C.ConvertedModelCase("converted lenet", direction=direction, model="lenet5", batch=4, size=28,
                                in_channels=1, num_classes=10)
    assert case.needs_torch
    row = runner.run_case(case, LIMITS, torch=torch, budget_s=0.0)
    assert row["correct"] and row["torch_max_abs_err"] <= row["tolerance"], row
    assert row["algo"] == "convert" and row["ratio_vs_torch"] > 0


def test_converted_cases_are_skipped_without_torch(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--suite", "models", "--cases", "converted mobilenet_v2 b1", "--compare", "none",
                  "--out", str(tmp_path)])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "skipping 1 cases of fastconv.torch" in out.out and "install torch" in out.err


def test_a_wrong_answer_is_flagged():
    case = C.ActivationCase("relu", shape=(2, 3, 4, 5))

    class Broken(C.ActivationCase):
        def prepare(self, torch=None, place=C.CPU):
            p = case.prepare(torch, place)
            good = p.fastconv
            p.fastconv = lambda: good() + np.float32(1e-2)
            return p

    row = runner.run_case(Broken("relu", shape=(2, 3, 4, 5)), LIMITS, budget_s=0.0)
    assert not row["correct"] and row["max_abs_err"] == pytest.approx(1e-2, rel=1e-3)
    assert report.terminal_table([row]).splitlines()[-1].endswith("!")


def test_case_work_follows_the_formulas():
    stem = C.LAYER_CASES[0]
    assert stem.direction == "fwd" and stem.output_hw() == (112, 112)
    assert stem.flops() == 2 * 64 * 112 * 112 * 3 * 7 * 7
    assert dataclasses.replace(stem, direction="bwd").flops() == 2 * stem.flops()
    dw = C.ConvCase("dw", n=1, c_in=8, c_out=8, size=10, kernel=3, padding=1, groups=8)
    assert dw.depthwise and dw.bound == "memory" and dw.flops() == 2 * 8 * 10 * 10 * 9
    assert dw.bytes_moved() == 4 * (8 * 100 + 8 * 9 + 8 * 100)
    pool = C.PoolCase("p", shape=(2, 3, 8, 8), mode="max", kernel=2, stride=2)
    assert pool.out_shape() == (2, 3, 4, 4) and pool.bytes_moved() == 4 * (384 + 96)
    assert dataclasses.replace(pool, direction="bwd").bytes_moved() == 4 * (384 + 96) + 8 * 96
    assert C.GemmCase("g", m=2, n=3, k=4).flops() == 48


def test_suites_are_the_single_source_of_cases():
    assert set(C.SUITES) == {"gemm", "layers", "ops", "models"}
    quick = C.select(list(C.SUITES))
    full = C.select(list(C.SUITES), full=True)
    assert set(quick) < set(full) and len(full) == sum(map(len, C.SUITES.values()))
    assert [c.label for c in C.select(["ops"], contains="relu")] == ["relu fwd", "relu bwd"]
    labels = [c.label for c in full]
    assert len(labels) == len(set(labels)), "case labels must be unique"


def test_time_alternating_counts_blocks_and_orders_quantiles():
    calls = {"a": 0, "b": 0}

    def bump(k):
        calls[k] += 1

    t = time_alternating({"a": lambda: bump("a"), "b": lambda: bump("b")}, budget_s=0.0, min_rounds=3)
    for k in ("a", "b"):
        assert t[k]["runs"] >= 6 and calls[k] > t[k]["runs"]  # warm-up and discarded calls not counted
        assert t[k]["p25"] <= t[k]["median"] <= t[k]["p75"]


def test_gemm_peak_and_copy_bandwidth_are_measured():
    row = runner.gemm_peak(C.GemmCase("small", m=64, n=64, k=64), budget_s=0.0)
    assert row["fastconv_max_abs_err"] < 1e-3 and row["fastconv_gflops"] > 0 and row["numpy_gflops"] > 0
    assert row["peak_gflops"] == max(row["fastconv_gflops"], row["numpy_gflops"])
    assert runner.copy_bandwidth(1 << 20, budget_s=0.0) > 0


def test_parallel_copy_copies_and_checks_its_arguments():
    from fastconv import _core

    src = np.arange(100_003, dtype=np.float32)
    dst = np.zeros_like(src)
    _core.parallel_copy(src, dst)
    np.testing.assert_array_equal(src, dst)
    with pytest.raises(ValueError, match="bytes"):
        _core.parallel_copy(src, dst[:-1])
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.parallel_copy(src[::2], dst[:50002])
    ro = np.zeros_like(src)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        _core.parallel_copy(src, ro)


# ----------------------------------------------------------------------------- command line


@pytest.mark.parametrize("argv", [
    ["--suite", "nope"], ["--threads", "0"], ["--threads", "two"], ["--budget", "-1"], ["--budget", "x"],
    ["--device", "cuda"], ["--device", "tpu"], ["--quick", "--full"], ["--compare", "numpy"],
    ["--cases", "no case has this name"], ["--unknown"],
])
def test_bad_arguments_exit_with_status_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv + ["--out", str(tmp_path)])
    assert e.value.code == 2
    assert "fastconv-bench: error:" in capsys.readouterr().err


def test_console_script_is_installed():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("fastconv-bench") == "fastconv.bench.cli:main"


@pytest.fixture
def small_limits(monkeypatch):
    """The machine's limits from a small SGEMM and copy: quick, for tests of everything else."""
    monkeypatch.setattr(cli, "measure_limits", lambda budget, **kw: runner.measure_limits(
        0.0, peak_case=C.GemmCase("sgemm 256^3", m=256, n=256, k=256), copy_bytes=1 << 20, **kw))


def _run(tmp_path, *extra):
    out = tmp_path / "report"
    rc = cli.main(["--suite", "ops", "--cases", "relu", "--budget", "0", "--no-progress", "--out", str(out), *extra])
    return rc, out


def test_a_run_writes_the_three_report_files(tmp_path, capsys):
    rc, out = _run(tmp_path)
    printed = capsys.readouterr().out
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    assert doc["schema"] == report.SCHEMA and not doc["interrupted"]
    assert set(doc) == {"schema", "machine", "settings", "limits", "tuning", "interrupted", "results"}
    assert set(doc["machine"]) == set(report.MACHINE_KEYS)
    assert set(doc["limits"]) == set(report.LIMIT_KEYS)
    assert [r["case"] for r in doc["results"]] == ["relu fwd", "relu bwd"]
    assert all(set(r) == set(report.ROW_KEYS) and r["correct"] for r in doc["results"])
    assert doc["settings"]["compare"] == ("torch" if torch is not None else "none")
    md = (out / "report.md").read_text()
    assert "| relu fwd |" in md and doc["machine"]["cpu"] in md and doc["machine"]["date"] in md
    # The terminal output fits in 100 columns (but for the output directory's name) and names both cases.
    assert "relu bwd" in printed
    assert max(len(line.replace(str(out), "DIR")) for line in printed.splitlines()) <= 100
    png = out / "speedup.png"
    if importlib.util.find_spec("matplotlib") is None:
        assert not png.exists() and "no speedup.png" in printed
    else:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_none_reports_fastconv_alone(tmp_path, small_limits):
    rc, out = _run(tmp_path, "--compare", "none", "--threads", "1")
    doc = json.loads((out / "report.json").read_text())
    assert rc == 0 and doc["settings"]["threads"] == 1 and doc["machine"]["threads"] == 1
    assert all(r["ratio_vs_torch"] is None for r in doc["results"])


def test_wrong_answers_make_the_run_fail(tmp_path, monkeypatch, capsys, small_limits):
    class Broken(C.ActivationCase):
        def prepare(self, torch=None, place=C.CPU):
            p = super().prepare(torch, place)
            good = p.fastconv
            p.fastconv = lambda: good() * np.float32(2)
            return p

    monkeypatch.setattr(cli, "select", lambda *a, **k: [Broken("sigmoid", shape=(2, 3, 4, 5))])
    rc, out = _run(tmp_path)
    assert rc == 1 and "WRONG ANSWERS" in capsys.readouterr().err
    assert json.loads((out / "report.json").read_text())["results"][0]["correct"] is False


def test_tune_flag_fills_the_cache_and_the_report(tmp_path, cache_dir, small_limits):
    import fastconv

    out = tmp_path / "r"
    rc = cli.main(["--suite", "layers", "--cases", "960", "--tune", "--budget", "0", "--no-progress",
                   "--out", str(out)])
    assert rc == 0
    doc = json.loads((out / "report.json").read_text())
    (t,) = doc["tuning"]
    assert t["case"] == "mbv2 dw 3x3 960 @7" and t["best"] in t["times_s"]
    assert set(t["times_s"]) == {"direct", "im2col", "depthwise"}
    assert fastconv.tuning.cache_path().is_file() and str(fastconv.tuning.cache_path()).startswith(str(cache_dir))
    assert doc["results"][0]["algo"] == t["best"]


def test_ctrl_c_stops_cleanly_and_keeps_the_finished_cases(tmp_path):
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "fastconv.bench", "--suite", "ops", "--budget", "0.2",
                             "--compare", "none", "--no-progress", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            done = 0
            if (out / "report.json").exists():
                done = len(json.loads((out / "report.json").read_text())["results"])
            if done >= 1 or proc.poll() is not None:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    doc = json.loads((out / "report.json").read_text())
    total = len(C.select(["ops"]))
    assert doc["interrupted"] and 1 <= len(doc["results"]) < total
    assert "Interrupted" in (out / "report.md").read_text()
    assert doc["results"][0]["case"] in stdout


def _benchmarks_dir():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
    if not os.path.isdir(path):
        pytest.skip("benchmarks/ is not part of this installation")
    return path


def test_readme_report_embeds_a_report_between_the_markers():
    spec = importlib.util.spec_from_file_location("readme_report", os.path.join(_benchmarks_dir(), "readme_report.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = f"intro\n{mod.START}\nold table\n{mod.END}\noutro\n"
    once = mod.embed("# fastconv-bench report (2026-01-01)\n\n### layers\n\n| a |\n", readme)
    assert once == f"intro\n{mod.START}\n\n#### layers\n\n| a |\n\n{mod.END}\noutro\n"
    assert mod.embed("# t\n\n### layers\n\n| a |\n", once) == once
    with pytest.raises(SystemExit):
        mod.embed("| a |", "no markers")


@pytest.mark.skipif(os.environ.get("FASTCONV_ISA") not in (None, ""), reason="runs the default ISA only")
def test_benchmarks_directory_collects_every_case():
    bench_dir = _benchmarks_dir()
    root = os.path.dirname(bench_dir)
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", bench_dir],
                         capture_output=True, text=True, cwd=root)
    assert res.returncode == 0, res.stdout + res.stderr
    collected = [line for line in res.stdout.splitlines() if "::" in line]
    n = sum(map(len, C.SUITES.values()))
    assert len(collected) == 2 * n  # fastconv and torch for every case (torch ones skip without torch)


# --------------------------------------------------------------------------- --device cuda
# On Numba's CUDA simulator without a GPU (tests/conftest.py), on the GPU with one.

import fastconv.cuda as fcuda  # noqa: E402

needs_gpu_path = pytest.mark.skipif(not fcuda.is_available(), reason=f"fastconv.cuda: {fcuda.why_unavailable()}")

# Smaller than TINY_CASES where a simulated kernel would take seconds; one case of each kind.
GPU_TINY_CASES = [
    *TINY_CASES[:2],  # the GEMM cases
    C.ConvCase("conv", n=1, c_in=2, c_out=3, size=5, kernel=3, padding=1),
    C.ConvCase("conv s2", direction="bwd", n=1, c_in=2, c_out=3, size=5, kernel=3, stride=2, padding=1),
    C.ConvCase("dw", n=1, c_in=3, c_out=3, size=5, kernel=3, padding=1, groups=3),
    *(C.PoolCase("pool", direction=d, shape=(1, 2, 5, 4), mode=m, kernel=3, stride=2, padding=1)
      for d in ("fwd", "bwd") for m in ("max", "avg")),
    C.BatchNormCase("bn", shape=(2, 2, 3, 2)),
    C.BatchNormCase("bn", direction="bwd", shape=(2, 2, 3, 2)),
    C.BatchNormCase("bn eval", shape=(2, 2, 3, 2), training=False),
    C.ActivationCase("relu", shape=(2, 3, 4)),
    C.ActivationCase("relu", direction="bwd", shape=(2, 3, 4)),
    C.ActivationCase("sigmoid", direction="bwd", shape=(2, 3, 4)),
    C.SoftmaxCase("softmax", shape=(3, 7)),
    C.SoftmaxCase("log_softmax", direction="bwd", shape=(3, 7), log=True),
    C.CrossEntropyCase("ce", shape=(3, 5)),
]


@pytest.fixture
def few_calls(monkeypatch):
    """One timed block per callable: simulated kernels are slow, and no timing is asserted."""
    import functools

    monkeypatch.setattr(runner, "time_alternating", functools.partial(time_alternating, min_rounds=1, discard=0))


def _gpu_torch():
    """PyTorch set up as the GPU reference, or None (no torch, or a CPU build as on this machine)."""
    return runner.torch_for_gpu(torch)


@needs_gpu_path
@pytest.mark.parametrize("case", GPU_TINY_CASES, ids=lambda c: f"{type(c).__name__}-{c.label}")
def test_each_kind_of_case_runs_on_the_gpu_and_checks_its_answer(case, few_calls):
    gpu_torch = _gpu_torch()
    row = runner.run_case(case, LIMITS, torch=gpu_torch, budget_s=0.0, device="cuda")
    assert set(row) == set(report.ROW_KEYS)
    assert row["correct"] and row["max_abs_err"] <= row["tolerance"], row
    assert row["fastconv_median_s"] > 0 and row["fraction_of_limit"] > 0
    if case.bound == "memory":
        assert row["limit"] == "copy_bandwidth" and row["limit_gbps"] > 0
    if gpu_torch is not None:
        # PyTorch CUDA in float32 agrees with the float64 reference (PyTorch CUDA in double).
        assert row["ratio_vs_torch"] > 0 and row["torch_max_abs_err"] <= row["tolerance"], row
    else:
        assert row["ratio_vs_torch"] is None


@needs_gpu_path
def test_a_wrong_gpu_answer_is_flagged(few_calls):
    from fastconv import ops

    class Doubled(C.ActivationCase):
        def prepare(self, torch=None, place=C.CPU):
            p = super().prepare(torch, place)
            good = p.fastconv
            p.fastconv = lambda: ops.add(good(), good())
            return p

    row = runner.run_case(Doubled("relu", shape=(2, 3, 4)), LIMITS, budget_s=0.0, device="cuda")
    assert not row["correct"] and row["max_abs_err"] > row["tolerance"]


@needs_gpu_path
def test_gpu_limits_are_measured():
    gpu_torch = _gpu_torch()
    lim = runner.measure_limits(0.0, peak_case=C.GemmCase("sgemm 16^3", m=16, n=16, k=16), copy_bytes=1 << 12,
                                device="cuda", torch=gpu_torch)
    assert set(lim) == set(report.LIMIT_KEYS) and lim["numpy_gflops"] is None
    assert lim["fastconv_max_abs_err"] < 1e-4 and lim["copy_gbps"] > 0 and lim["copy_bytes"] == 1 << 12
    assert lim["peak_gflops"] == max(v for v in (lim["fastconv_gflops"], lim["cublas_gflops"]) if v is not None)
    assert (lim["cublas_gflops"] is None) == (gpu_torch is None)
    assert "GPU limits: SGEMM 16^3" in report.limits_line(lim)


def test_gpu_suites_are_the_cpu_suites_at_gpu_sizes():
    layers = C.select(["layers"], full=True, device="cuda")
    assert len(layers) == len(C.LAYER_CASES)
    assert all(c.n >= C.GPU_BATCH for c in layers)
    assert all(c.name.endswith(f"batch {c.n}") for c in layers)
    ops_ = C.select(["ops"], full=True, device="cuda")
    assert {c.shape for c in ops_} == {C.GPU_ACT_SHAPE, C.GPU_LOGITS_SHAPE}
    assert all("8192" not in c.name for c in ops_)
    assert C.GPU_PEAK_CASE in C.select(["gemm"], device="cuda")
    with pytest.raises(ValueError, match="no suite models on device 'cuda'"):
        C.select(["models"], device="cuda")
    with pytest.raises(ValueError, match="CPU only"):
        C.ModelCase("m", model="lenet5", size=28, in_channels=1, num_classes=10).prepare(None, C.Place("cuda"))


def test_gpu_goal_lines_count_the_cases_that_meet_the_goals():
    def row(name, suite, bound, frac, ratio):
        return {"case": f"{name} fwd", "name": name, "suite": suite, "bound": bound, "fraction_of_limit": frac,
                "ratio_vs_torch": ratio}

    rows = [row("relu", "ops", "memory", 0.8, 1.0), row("bn", "ops", "memory", 0.5, 0.9),
            row("3x3 64 @56 batch 32", "layers", "compute", 0.3, 0.45),
            row("1x1 256->64 @56 batch 32", "layers", "compute", 0.2, 0.1),  # not a 3x3: not in the goal
            row("sgemm 4096^3", "gemm", "compute", 0.3, 0.35)]
    mem, vendor = report.gpu_goal_lines(rows)
    assert "1 of 2 (lowest 50%, bn fwd)" in mem
    assert "1 of 2 (lowest 0.35x, sgemm 4096^3 fwd)" in vendor


@pytest.mark.skipif(not fcuda.is_simulator(), reason="the simulator is not switched on")
def test_device_cuda_refuses_the_simulator(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--device", "cuda", "--out", str(tmp_path)])
    assert e.value.code == 2 and "simulator" in capsys.readouterr().err


def test_device_cuda_says_why_it_cannot_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fcuda, "why_unavailable", lambda: 'numba-cuda is not installed: pip install "fastconv[cuda]"')
    with pytest.raises(SystemExit) as e:
        cli.main(["--device", "cuda", "--out", str(tmp_path)])
    assert e.value.code == 2 and "--device cuda: numba-cuda is not installed" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [(["--suite", "models"], "no suite models on device 'cuda'"),
                                            (["--tune"], "--tune autotunes the CPU kernels")])
def test_device_cuda_refuses_what_has_no_gpu_form(tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(fcuda, "why_unavailable", lambda: None)
    monkeypatch.setattr(fcuda, "is_simulator", lambda: False)
    with pytest.raises(SystemExit) as e:
        cli.main(["--device", "cuda", "--out", str(tmp_path), *extra])
    assert e.value.code == 2 and message in capsys.readouterr().err


@needs_gpu_path
def test_a_gpu_run_writes_its_report(tmp_path, monkeypatch, capsys, few_calls):
    # The real GPU suites are far too large for the simulator: the run gets two tiny cases
    # (and the simulator is let through).
    monkeypatch.setattr(cli, "_check_gpu", lambda p, args: None)
    picked = {}

    def tiny(suites, **kw):
        picked.update(kw, suites=suites)
        return [C.ActivationCase("relu", shape=(2, 3, 4)),
                C.ConvCase("3x3 conv", n=1, c_in=2, c_out=3, size=5, kernel=3, padding=1)]

    monkeypatch.setattr(cli, "select", tiny)
    monkeypatch.setattr(cli, "measure_limits", lambda budget, **kw: runner.measure_limits(
        0.0, peak_case=C.GemmCase("sgemm 16^3", m=16, n=16, k=16), copy_bytes=1 << 12, **kw))
    out = tmp_path / "r"
    rc = cli.main(["--device", "cuda", "--budget", "0", "--no-progress", "--out", str(out)])
    printed = capsys.readouterr().out
    assert rc == 0 and picked["device"] == "cuda" and picked["suites"] == list(C.GPU_SUITES)
    doc = json.loads((out / "report.json").read_text())
    gpu = doc["machine"]["gpu"]
    assert doc["settings"]["device"] == "cuda" and set(gpu) == set(report.GPU_KEYS)
    assert gpu["simulator"] == fcuda.is_simulator()
    assert [r["case"] for r in doc["results"]] == ["relu fwd", "3x3 conv fwd"]
    assert all(r["correct"] for r in doc["results"])
    assert "GPU limits: SGEMM 16^3" in printed and "goal: memory-bound kernels" in printed
    assert "device-to-device copy" in printed
    md = (out / "report.md").read_text()
    assert f"| GPU | {gpu['name']}" in md and "ops on the GPU" in md
