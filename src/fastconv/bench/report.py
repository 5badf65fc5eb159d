"""The benchmark's report: the terminal table, ``report.md``, ``report.json`` and ``speedup.png``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Dict, List, Optional

SCHEMA = "fastconv-bench/2"

# report.json's keys (documented in the README; a change of meaning bumps SCHEMA).
MACHINE_KEYS = ("cpu", "isa", "detected_isa", "cores", "threads", "fastconv", "numpy", "torch", "python", "platform",
                "date", "gpu")
GPU_KEYS = ("name", "compute_capability", "memory_gib", "driver", "numba_cuda", "simulator", "torch_cuda", "cudnn")
LIMIT_KEYS = ("case", "fastconv_gflops", "numpy_gflops", "cublas_gflops", "peak_gflops", "fastconv_max_abs_err",
              "copy_gbps", "copy_bytes")
ROW_KEYS = ("suite", "case", "name", "direction", "algo", "bound", "flops", "bytes",
            "fastconv_median_s", "fastconv_p25_s", "fastconv_p75_s", "fastconv_runs", "spread", "gflops", "gbps",
            "limit", "limit_gflops", "limit_gbps", "fraction_of_limit",
            "torch_median_s", "torch_p25_s", "torch_p75_s", "torch_runs", "ratio_vs_torch",
            "max_abs_err", "torch_max_abs_err", "tolerance", "correct")

SUITE_TITLES = {
    "gemm": "gemm: matmul / linear (float32)",
    "layers": "layers: conv2d, batch 1 unless noted",
    "ops": "ops: pooling, BatchNorm, activations, softmax, cross-entropy on (8, 64, 112, 112) / (8192, 1000)",
    "models": "models: SGD training steps (float32) and fused inference, against PyTorch eager",
}
GPU_SUITE_TITLES = {
    "gemm": "gemm on the GPU: matmul / linear (float32) against cuBLAS (TF32 off)",
    "layers": "layers on the GPU: conv2d at batch 32, against cuDNN (TF32 off)",
    "ops": "ops on the GPU: pooling, BatchNorm, activations, softmax, cross-entropy on (32, 64, 112, 112) / "
           "(32768, 1000)",
}

LEGEND = (
    "ratio = PyTorch median / fastconv median (> 1: fastconv faster); same threads, calls alternated.\n"
    "%lim = fraction of this machine's limit, measured in the same run: the SGEMM peak for GF/s rows\n"
    "(GF/s count the direct convolution's FLOPs, so Winograd rows, which make fewer, can pass 100%);\n"
    "for GB/s rows (compulsory traffic: inputs read and outputs written once) a parallel copy of as\n"
    "many bytes. IQR% = inter-quartile range / median. max err = max |fastconv - float64 reference|\n"
    "(numpy definitions; for models, the model in float64, its training step's loss); '!' marks an\n"
    "error above 1e-4 * (1 + max |reference|): a wrong answer."
)
GPU_LEGEND = (
    "ratio = PyTorch CUDA median / fastconv median (> 1: fastconv faster), PyTorch on cuDNN / cuBLAS in\n"
    "fp32 with TF32 off (cuDNN autotuner on); calls alternated in blocks, each block closed by a device\n"
    "synchronisation. %lim = fraction of the GPU's limit, measured in the same run: the SGEMM peak (the\n"
    "better of fastconv and cuBLAS) for GF/s rows; for GB/s rows (compulsory traffic) a device-to-device\n"
    "copy of as many bytes. IQR% = inter-quartile range / median. max err = max |fastconv - float64\n"
    "reference| (the same PyTorch call in float64 on the GPU; numpy definitions without PyTorch); '!'\n"
    "marks an error above 1e-4 * (1 + max |reference|): a wrong answer."
)


def legend(device: str = "cpu") -> str:
    return GPU_LEGEND if device == "cuda" else LEGEND


def suite_title(suite: str, device: str = "cpu") -> str:
    return (GPU_SUITE_TITLES if device == "cuda" else SUITE_TITLES).get(suite, suite)


def _torch_note(doc: dict) -> str:
    version = doc["machine"]["torch"]
    if version is None:
        return "torch not installed"
    if doc["settings"]["compare"] == "torch":
        return f"torch {version}"
    gpu = doc["machine"].get("gpu")
    why = "it has no CUDA" if gpu and gpu["torch_cuda"] is None else "--compare none"
    return f"torch {version} (not compared: {why})"


def _sorted(rows: List[dict]) -> List[dict]:
    """Rows grouped by suite (in run order), best first: by ratio vs PyTorch when measured,
    else by fraction of the machine's limit."""
    suites = list(dict.fromkeys(r["suite"] for r in rows))

    def key(r):
        v = r["ratio_vs_torch"] if r["ratio_vs_torch"] is not None else r["fraction_of_limit"]
        return -v

    return [r for s in suites for r in sorted((r for r in rows if r["suite"] == s), key=key)]


def _rate(r: dict) -> str:
    return f"{r['gflops']:.1f} GF/s" if r["bound"] == "compute" else f"{r['gbps']:.1f} GB/s"


def _err(r: dict) -> str:
    if r["max_abs_err"] is None:
        return "shape!"
    return f"{r['max_abs_err']:.1e}" + ("" if r["correct"] else "!")


def _cells(r: dict) -> List[str]:
    torch_ms = "-" if r["torch_median_s"] is None else f"{r['torch_median_s'] * 1e3:.3f}"
    ratio = "-" if r["ratio_vs_torch"] is None else f"{r['ratio_vs_torch']:.2f}x"
    return [r["case"], r["algo"], f"{r['fastconv_median_s'] * 1e3:.3f}", f"{100 * r['spread']:.1f}", _rate(r),
            f"{100 * r['fraction_of_limit']:.0f}%", torch_ms, ratio, _err(r)]


_HEAD = ["case", "algo", "ms", "IQR%", "rate", "%lim", "torch ms", "ratio", "max err"]
_WIDTH = [32, 9, 8, 4, 10, 5, 8, 7, 8]


def geomean(values) -> Optional[float]:
    values = [v for v in values if v is not None and v > 0]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


# The GPU backend's speed goals: memory-bound kernels at >= 70 % of the copy bandwidth; fp32
# 3x3 convolutions (the layer suite at batch 32) and SGEMM at >= 40 % of cuDNN / cuBLAS.
GPU_GOAL_BANDWIDTH = 0.70
GPU_GOAL_VS_VENDOR = 0.40


def gpu_goal_lines(rows: List[dict]) -> List[str]:
    """How the GPU rows stand against the speed goals (:data:`GPU_GOAL_BANDWIDTH`, :data:`GPU_GOAL_VS_VENDOR`)."""
    out = []
    mem = [r for r in rows if r["bound"] == "memory"]
    if mem:
        ok = sum(r["fraction_of_limit"] >= GPU_GOAL_BANDWIDTH for r in mem)
        worst = min(mem, key=lambda r: r["fraction_of_limit"])
        out.append(f"goal: memory-bound kernels >= {GPU_GOAL_BANDWIDTH:.0%} of copy bandwidth: {ok} of {len(mem)} "
                   f"(lowest {worst['fraction_of_limit']:.0%}, {worst['case']})")
    vendor = [r for r in rows if r["bound"] == "compute" and r["ratio_vs_torch"] is not None
              and ((r["suite"] == "layers" and "3x3" in r["name"]) or r["name"].startswith("sgemm"))]
    if vendor:
        ok = sum(r["ratio_vs_torch"] >= GPU_GOAL_VS_VENDOR for r in vendor)
        worst = min(vendor, key=lambda r: r["ratio_vs_torch"])
        out.append(f"goal: fp32 3x3 convolution and SGEMM >= {GPU_GOAL_VS_VENDOR:.0%} of cuDNN / cuBLAS: {ok} of "
                   f"{len(vendor)} (lowest {worst['ratio_vs_torch']:.2f}x, {worst['case']})")
    return out


def summary_lines(rows: List[dict], device: str = "cpu") -> List[str]:
    """Per suite: cases, geomean ratio vs PyTorch, wrong answers; on the GPU, the speed goals."""
    out = []
    for s in dict.fromkeys(r["suite"] for r in rows):
        rs = [r for r in rows if r["suite"] == s]
        g = geomean(r["ratio_vs_torch"] for r in rs)
        line = f"{s}: {len(rs)} cases"
        if g is not None:
            wins = sum(r["ratio_vs_torch"] > 1 for r in rs if r["ratio_vs_torch"] is not None)
            line += f", geomean ratio vs PyTorch {g:.2f}x, fastconv faster in {wins}"
        wrong = sum(not r["correct"] for r in rs)
        line += f", {wrong} WRONG ANSWERS" if wrong else ", all answers correct"
        out.append(line)
    return out + (gpu_goal_lines(rows) if device == "cuda" else [])


def _size(nbytes: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):g} {unit}"
    return f"{nbytes} B"


def limits_line(limits: Optional[dict]) -> str:
    if not limits:
        return "machine limits: not measured (interrupted)"
    if limits.get("numpy_gflops") is not None:
        who, other = "machine", f"numpy BLAS {limits['numpy_gflops']:.1f} GF/s"
    elif limits.get("cublas_gflops") is not None:
        who, other = "GPU", f"cuBLAS (TF32 off) {limits['cublas_gflops']:.1f} GF/s"
    else:
        who, other = "GPU", "cuBLAS not measured (no PyTorch with CUDA)"
    copy = "device-to-device copy" if who == "GPU" else "copy bandwidth"
    return (f"{who} limits: SGEMM {limits['case'].split()[-1]} fastconv {limits['fastconv_gflops']:.1f} GF/s, "
            f"{other} -> peak {limits['peak_gflops']:.1f} GF/s;\n"
            f"{copy} {limits['copy_gbps']:.1f} GB/s ({_size(limits['copy_bytes'])}; memory-bound cases are rated "
            f"against a copy of their own size)")


def terminal_table(rows: List[dict], device: str = "cpu") -> str:
    """The compact table (at most 100 columns), one section per suite, best first."""
    lines = []
    current = None
    for r in _sorted(rows):
        if r["suite"] != current:
            current = r["suite"]
            lines.append("")
            lines.append(f"== {suite_title(current, device)}")
            lines.append(" ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(_HEAD, _WIDTH))))
        cells = _cells(r)
        lines.append(" ".join((c[:w].ljust(w) if i < 2 else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, _WIDTH))))
    return "\n".join(lines)


def markdown(doc: dict) -> str:
    """report.md: the table plus the machine, the limits and the date."""
    m = doc["machine"]
    device = doc["settings"].get("device", "cpu")
    out = [f"# fastconv-bench report ({m['date'][:10]})", ""]
    if doc["interrupted"]:
        out += ["**Interrupted:** only the cases below finished.", ""]
    out += ["| machine | |", "|---|---|",
            f"| CPU | {m['cpu']} |", f"| ISA in use | {m['isa']} (detected: {m['detected_isa']}) |",
            f"| cores / threads | {m['cores']} / {m['threads']} |",
            f"| versions | fastconv {m['fastconv']}, numpy {m['numpy']}, {_torch_note(doc)}, Python {m['python']} |",
            f"| platform | {m['platform']} |", *_gpu_rows(m.get("gpu")), f"| date (UTC) | {m['date']} |",
            f"| settings | {doc['settings']['mode']} ({doc['settings']['budget_s']} s per case), "
            f"suites {', '.join(doc['settings']['suites'])} |", "",
            limits_line(doc["limits"]), ""]
    current = None
    for r in _sorted(doc["results"]):
        if r["suite"] != current:
            current = r["suite"]
            out += ["", f"### {suite_title(current, device)}", "",
                    "| " + " | ".join(_HEAD) + " |", "|---|---|" + "---:|" * (len(_HEAD) - 2)]
        out.append("| " + " | ".join(_cells(r)) + " |")
    out += ["", *(f"- {s}" for s in summary_lines(doc["results"], device)), "", legend(device).replace("\n", " "), ""]
    return "\n".join(out)


def _gpu_rows(gpu: Optional[dict]) -> List[str]:
    if not gpu:
        return []
    sim = " (Numba's CUDA simulator: timings mean nothing)" if gpu["simulator"] else ""
    mem = "" if gpu["memory_gib"] is None else f", {gpu['memory_gib']} GiB"
    sw = [f"driver {gpu['driver']}" if gpu["driver"] else None, f"numba-cuda {gpu['numba_cuda']}",
          f"torch CUDA {gpu['torch_cuda']}" if gpu["torch_cuda"] else None,
          f"cuDNN {gpu['cudnn']}" if gpu["cudnn"] else None]
    return [f"| GPU | {gpu['name']} (compute capability {gpu['compute_capability']}{mem}){sim} |",
            f"| CUDA software | {', '.join(s for s in sw if s)} |"]


def _write_text(path: Path, text: str) -> None:
    """Replaces ``path`` whole (through a temporary file), so an interrupted write leaves the old report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_chart(doc: dict, path: Path) -> Optional[str]:
    """speedup.png: per case, the ratio vs PyTorch (log scale, 1x line) and the fraction of the
    machine's limit. Returns None, or why no chart was drawn."""
    rows = _sorted(doc["results"])
    if not rows:
        return "no finished cases"
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'fastconv[bench]')"
    n = len(rows)
    fig, (ax_r, ax_f) = plt.subplots(1, 2, sharey=True, figsize=(12, 1.4 + 0.24 * n), layout="constrained",
                                     gridspec_kw={"width_ratios": [3, 2]})
    ys = list(range(n))[::-1]
    labels = [r["case"] for r in rows]
    ratios = [r["ratio_vs_torch"] for r in rows]
    if any(v is not None for v in ratios):
        vals = [v if v is not None else 1.0 for v in ratios]
        colors = ["#2e8b57" if v >= 1 else "#c0392b" for v in vals]
        ax_r.barh(ys, [v - 1 for v in vals], left=1, color=colors, height=0.7)
        ax_r.set_xscale("log")
        lo, hi = min(vals + [0.5]), max(vals + [2.0])
        ax_r.set_xlim(lo / 1.6, hi * 1.6)
        for y, v, raw in zip(ys, vals, ratios):
            if raw is not None:
                ax_r.text(v * (1.04 if v >= 1 else 0.96), y, f"{v:.2f}x", va="center", fontsize=7,
                          ha="left" if v >= 1 else "right")
        ax_r.axvline(1.0, color="black", linewidth=1)
        ticks = [2.0 ** e for e in range(-6, 8) if lo / 1.6 <= 2.0 ** e <= hi * 1.6]
        ax_r.set_xticks(ticks)
        ax_r.set_xticklabels([f"{t:g}x" for t in ticks])
        ax_r.minorticks_off()
        ax_r.set_xlabel("speed vs PyTorch: PyTorch time / fastconv time (log scale; > 1: fastconv faster)",
                        fontsize=9)
    else:
        ax_r.text(0.5, 0.5, f"PyTorch not compared ({_torch_note(doc)})",
                  ha="center", va="center", transform=ax_r.transAxes)
        ax_r.set_xticks([])
    ax_r.set_yticks(ys)
    ax_r.set_yticklabels(labels, fontsize=7)
    fracs = [100 * r["fraction_of_limit"] for r in rows]
    colors = ["#2c6fbb" if r["bound"] == "compute" else "#e08e0b" for r in rows]
    ax_f.barh(ys, fracs, color=colors, height=0.7)
    for y, v in zip(ys, fracs):
        ax_f.text(v + 1, y, f"{v:.0f}%", va="center", fontsize=7)
    ax_f.set_xlim(0, max(110, max(fracs) * 1.15))
    ax_f.axvline(100, color="black", linewidth=1)
    ax_f.set_xlabel("% of machine limit (blue: SGEMM peak; orange: copy)", fontsize=9)
    # Separate and name the suites.
    starts = [i for i in range(n) if i == 0 or rows[i]["suite"] != rows[i - 1]["suite"]]
    for ax in (ax_r, ax_f):
        ax.set_ylim(-0.7, n - 0.3)
        for b in starts[1:]:
            ax.axhline(n - b - 0.5, color="grey", linewidth=0.6, linestyle="--")
        ax.grid(axis="x", linewidth=0.3)
    for b in starts:
        # Top left of each group: rows are sorted best first, so the bars there point right.
        ax_r.text(0.01, n - b - 1, rows[b]["suite"], transform=ax_r.get_yaxis_transform(), ha="left", va="center",
                  fontsize=9, style="italic", color="grey")
    m = doc["machine"]
    where = (f"{m['gpu']['name']} (GPU)" if m.get("gpu") else f"{m['cpu']} | {m['isa']} | {m['threads']} threads")
    fig.suptitle(f"fastconv-bench {m['date'][:10]} | {where} | {_torch_note(doc)}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


class Report:
    """The run's document (``report.json``'s content), written out after every finished case."""

    def __init__(self, out_dir: Path, machine: dict, settings: dict):
        self.out_dir = Path(out_dir)
        self.doc: Dict = {"schema": SCHEMA, "machine": machine, "settings": settings, "limits": None,
                          "tuning": None, "interrupted": False, "results": []}

    @property
    def rows(self) -> List[dict]:
        return self.doc["results"]

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.save_tables()

    def save_tables(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _write_text(self.out_dir / "report.json", json.dumps(self.doc, indent=1, allow_nan=False) + "\n")
        _write_text(self.out_dir / "report.md", markdown(self.doc))

    def save(self) -> Optional[str]:
        """Writes all three files; returns why the chart is missing, if it is."""
        self.save_tables()
        return write_chart(self.doc, self.out_dir / "speedup.png")
