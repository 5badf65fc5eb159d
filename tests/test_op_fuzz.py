"""Argument fuzzing of every public op: 10,500 random, adversarial cases (tests/fuzz_ops.py) in a
subprocess, so that a crash shows as the subprocess's exit status. Each case must return the
float64 reference's answer or raise TypeError, ValueError or MemoryError; cases drawn with only
valid arguments must return. FASTCONV_FUZZ_SEED picks other cases (default: the same every run)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from fastconv import ops

CASES = 10_500


def test_ten_thousand_adversarial_op_calls_answer_or_raise_cleanly():
    seed = int(os.environ.get("FASTCONV_FUZZ_SEED", "20261123"))
    script = Path(__file__).with_name("fuzz_ops.py")
    proc = subprocess.run([sys.executable, str(script), str(seed), str(CASES), "--trace"], capture_output=True,
                          text=True, timeout=900)
    last_case = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
    assert proc.returncode == 0, f"the fuzzing process died (status {proc.returncode}) at: {last_case}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    by_kind = {}
    for key, n in outcomes.items():
        kind = key.split(": ", 1)[1]
        by_kind[kind] = by_kind.get(kind, 0) + n
    print(f"seed {seed}: {report['cases']} cases; {by_kind}; failures {report['failed']}")
    assert report["failed"] == 0, "\n".join(report["failures"])
    assert sum(outcomes.values()) == CASES
    # Every public op was called (a case's op names, '+'-joined where one case calls two).
    ops_seen = {name for key in outcomes for name in key.split(": ", 1)[0].split("+")}
    public = {name for name in ops.__all__ if callable(getattr(ops, name)) and not isinstance(getattr(ops, name), type)}
    assert public <= ops_seen, f"ops not fuzzed: {sorted(public - ops_seen)}"
    assert by_kind.get("answer", 0) > CASES // 3 and by_kind.get("ValueError", 0) > CASES // 20
