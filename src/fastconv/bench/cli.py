"""fastconv-bench: times fastconv's GEMM, convolution layers and memory-bound ops against
PyTorch and against this machine's own limits (its SGEMM peak and copy bandwidth, both
measured in the same run), checks every answer against a float64 numpy reference, and
writes report.md, report.json and speedup.png. With --device cuda the same suites run at
GPU sizes on fastconv's CUDA kernels, against PyTorch CUDA (cuDNN / cuBLAS, TF32 off)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from .. import tuning
from .cases import GPU_SUITES, LAYER_CASES, SUITES, select
from .progress import Progress
from .report import Report, legend, limits_line, summary_lines, terminal_table
from .runner import import_torch, machine, measure_limits, run_case, set_threads, torch_for_gpu

QUICK_BUDGET_S = 0.4
FULL_BUDGET_S = 2.0


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _budget(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 <= v <= 600:
        raise argparse.ArgumentTypeError(f"must be between 0 and 600 seconds, got {v}")
    return v


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastconv-bench", description=__doc__)
    p.add_argument("--suite", action="append", choices=("all",) + tuple(SUITES),
                   help="suite to run; repeat for several (default: all = gemm, layers, ops, models; "
                        "with --device cuda: gemm, layers, ops)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false",
                      help=f"the quick set of cases, {QUICK_BUDGET_S} s of timing each (the default; under 2 minutes)")
    mode.add_argument("--full", dest="full", action="store_true",
                      help=f"every case, {FULL_BUDGET_S} s of timing each")
    p.set_defaults(full=False)
    p.add_argument("--budget", type=_budget, default=None, metavar="SECONDS",
                   help="seconds of timing per case, instead of --quick's or --full's")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads for fastconv and PyTorch alike (default: the number of cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where to run (default: cpu); cuda runs the gemm, layers and ops suites at GPU sizes "
                        "on fastconv.cuda's kernels against PyTorch CUDA")
    p.add_argument("--compare", choices=("torch", "none"), default="torch",
                   help="also time PyTorch when it is installed (default: torch)")
    p.add_argument("--cases", default="", metavar="TEXT", help="only the cases whose label contains TEXT")
    p.add_argument("--out", type=Path, default=Path("bench-report"), metavar="DIR",
                   help="where report.md, report.json and speedup.png go (default: ./bench-report/)")
    p.add_argument("--tune", action="store_true",
                   help="first autotune the layer suite's convolutions (those matching --cases) and cache the "
                        "winners, which algo='auto' then uses (see fastconv.tune)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def _suites(requested: Optional[List[str]], device: str) -> List[str]:
    if not requested or "all" in requested:
        return list(GPU_SUITES if device == "cuda" else SUITES)
    return list(dict.fromkeys(requested))


def _tune(args, budget: float, report: Report) -> None:
    cases = [c for c in LAYER_CASES if c.direction == "fwd" and args.cases in c.label]
    print(f"\nautotuning {len(cases)} convolution shapes -> {tuning.cache_path()}", flush=True)
    results = []
    with Progress(len(cases), args.progress) as bar:
        for c in cases:
            bar.start(f"tune {c.name}")
            (r,) = tuning.tune([c], budget_s=budget)
            r["case"] = c.name
            results.append(r)
            bar.done()
    report.doc["tuning"] = results
    width = max([len(r["case"]) for r in results] + [4])
    for r in results:
        times = "  ".join(f"{a} {t * 1e3:.3f}" for a, t in sorted(r["times_s"].items(), key=lambda kv: kv[1]))
        print(f"  {r['case']:<{width}}  best {r['best']:<9} ({r['speedup']:.2f}x vs heuristic {r['heuristic']})  "
              f"ms: {times}", flush=True)


def _check_gpu(p: argparse.ArgumentParser, args) -> None:
    from .. import cuda

    why = cuda.why_unavailable()
    if why is not None:
        p.error(f"--device cuda: {why}")
    if cuda.is_simulator():
        p.error("--device cuda: NUMBA_ENABLE_CUDASIM is set; the simulator runs each GPU thread as a Python "
                "thread, so its timings mean nothing and the GPU suites would take hours (it is for the tests)")
    if args.tune:
        p.error("--tune autotunes the CPU kernels; it does not apply to --device cuda")


def _select(p: argparse.ArgumentParser, suites, args):
    try:
        return select(suites, full=args.full, contains=args.cases, device=args.device)
    except ValueError as e:
        p.error(f"--suite: {e}")


def _comparison(args):
    """PyTorch, set up for the device, or None (with the reason printed)."""
    if args.compare != "torch":
        return None
    torch = import_torch()
    if torch is None:
        print("torch is not installed: fastconv figures only (pip install torch to compare)", flush=True)
        return None
    if args.device == "cuda":
        if torch_for_gpu(torch) is None:
            print(f"torch {torch.__version__} has no CUDA device (a CPU build?): fastconv figures only, checked "
                  f"against the numpy references", flush=True)
            return None
        print(f"comparing against torch {torch.__version__} on CUDA {torch.version.cuda}, cuDNN "
              f"{torch.backends.cudnn.version()} (TF32 off)", flush=True)
    else:
        print(f"comparing against torch {torch.__version__}", flush=True)
    return torch


def main(argv: Optional[List[str]] = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.device == "cuda":
        _check_gpu(p, args)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        p.error(f"--out {args.out}: cannot create the directory ({e.strerror})")
    suites = _suites(args.suite, args.device)
    budget = args.budget if args.budget is not None else (FULL_BUDGET_S if args.full else QUICK_BUDGET_S)
    cases = _select(p, suites, args)
    if not cases:
        p.error(f"no case of suites {', '.join(suites)} matches --cases {args.cases!r}")

    torch = _comparison(args)
    if torch is None and any(c.needs_torch for c in cases):
        n = sum(c.needs_torch for c in cases)
        print(f"skipping {n} cases of fastconv.torch (converted PyTorch models): they need torch and "
              f"--compare torch", flush=True)
        cases = [c for c in cases if not c.needs_torch]
        if not cases:
            p.error("every selected case runs a converted PyTorch model: install torch and use --compare torch")
    threads = set_threads(args.threads, torch)
    info = machine(torch, args.device)
    settings = {"suites": suites, "mode": "full" if args.full else "quick", "budget_s": budget, "threads": threads,
                "device": args.device, "compare": "torch" if torch is not None else "none", "cases": args.cases,
                "tune": args.tune}
    report = Report(args.out, info, settings)
    print(f"fastconv-bench {info['fastconv']}: {len(cases)} cases, {budget} s of timing each", flush=True)
    print(f"machine: {info['cpu']} | ISA {info['isa']} (detected {info['detected_isa']}) | {info['cores']} cores | "
          f"{threads} threads", flush=True)
    if info["gpu"]:
        g = info["gpu"]
        print(f"GPU: {g['name']} (compute capability {g['compute_capability']}), numba-cuda {g['numba_cuda']}",
              flush=True)

    status = 0
    try:
        report.doc["limits"] = measure_limits(budget, device=args.device, torch=torch)
        print(limits_line(report.doc["limits"]), flush=True)
        if args.tune:
            _tune(args, budget, report)
        with Progress(len(cases), args.progress) as bar:
            for case in cases:
                bar.start(case.label)
                row = run_case(case, report.doc["limits"], torch=torch, budget_s=budget, device=args.device)
                report.add(row)
                bar.done(None if row["ratio_vs_torch"] is None else f"previous {row['ratio_vs_torch']:.2f}x vs torch")
    except KeyboardInterrupt:
        report.doc["interrupted"] = True
        status = 130
    rows = report.rows
    if rows:
        print(terminal_table(rows, args.device))
        print()
        for line in summary_lines(rows, args.device):
            print(line)
        print(legend(args.device))
    if status == 130:
        print(f"\ninterrupted: {len(rows)} of {len(cases)} cases finished; the report holds those", file=sys.stderr)
    why_no_chart = report.save()
    files = ["report.md", "report.json"] + ([] if why_no_chart else ["speedup.png"])
    print(f"\nwrote {', '.join(files)} in {args.out}/")
    if why_no_chart:
        print(f"no speedup.png: {why_no_chart}")
    wrong = [r["case"] for r in rows if not r["correct"]]
    if wrong:
        print(f"WRONG ANSWERS in {len(wrong)} cases: {', '.join(wrong)}", file=sys.stderr)
        status = status or 1
    return status
