"""Weight-file fuzzing: truncated, bit-flipped, spliced and header-forged .safetensors and .npz
files make ``fastconv.load`` return numeric arrays or raise ``ValueError``: never a crash, a hang
or another exception. The loads run in a subprocess, so a crash of the interpreter shows as
its exit status instead of taking the test run down."""

import json
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

import fastconv

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")

CASES_PER_FORMAT = 700
FORMATS = ["npz", "safetensors"]

# Extreme 8-byte little-endian integers written over random positions (lengths, offsets, sizes).
EXTREMES = [0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 63 - 1, 2 ** 64 - 1]


def _original(tmp_path, fmt) -> bytes:
    path = tmp_path / f"orig.{fmt}"
    fastconv.save({"conv.weight": np.arange(96, dtype=np.float32).reshape(4, 2, 3, 4),
                   "bn.running_var": np.ones(4), "steps": np.array(3, np.int64),
                   "fc.bias": np.zeros(0, np.float32)}, path)
    return path.read_bytes()


def _mutants(data: bytes, rng):
    """(kind, bytes) of one mutation of ``data``."""
    n = len(data)
    kind = rng.integers(6)
    b = bytearray(data)
    if kind == 0:  # truncated anywhere
        return "truncated", bytes(b[: rng.integers(n)])
    if kind == 1:  # a few bits flipped anywhere
        for i in rng.integers(n, size=rng.integers(1, 9)):
            b[i] ^= 1 << rng.integers(8)
        return "bit flips", bytes(b)
    if kind == 2:  # bytes flipped in the headers (the first 200 bytes, and a zip's directory at the end)
        for i in rng.integers(min(n, 200), size=rng.integers(1, 5)):
            b[i] ^= rng.integers(1, 256)
        for i in n - 1 - rng.integers(min(n, 120), size=rng.integers(0, 4)):
            b[i] ^= rng.integers(1, 256)
        return "header bytes", bytes(b)
    if kind == 3:  # an extreme integer written over 8 bytes
        at = rng.integers(n - 8)
        b[at:at + 8] = int(EXTREMES[rng.integers(len(EXTREMES))]).to_bytes(8, "little")
        return "extreme integer", bytes(b)
    if kind == 4:  # a run of bytes deleted or duplicated
        at, length = rng.integers(n), rng.integers(1, 64)
        return "spliced", bytes(b[:at] + b[at + length:] if rng.integers(2) else b[:at] + b[at:at + length] + b[at:])
    return "random bytes", bytes(rng.integers(256, size=rng.integers(1, 400), dtype=np.uint8))


def _forged_safetensors():
    """Well-formed files whose header lies: shapes, offsets, dtypes and sizes that do not fit."""
    def file(header, body=b"\0" * 16):
        h = json.dumps(header).encode()
        return len(h).to_bytes(8, "little") + h + body

    yield file({"a": {"dtype": "F32", "shape": [2 ** 40], "data_offsets": [0, 16]}})
    yield file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 2 ** 62]}})
    yield file({"a": {"dtype": "F32", "shape": [4], "data_offsets": [16, 0]}})
    yield file({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}})
    yield file({"a": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}})
    yield file({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
                "b": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]}})
    yield file(["not", "a", "mapping"])
    yield (2 ** 63).to_bytes(8, "little") + b"{}"


def _forged_npz():
    """Zip archives whose members lie: a .npy header that claims far more data than it holds,
    a negative shape, an object dtype, a member that is not .npy at all."""
    def npy(header: str, body: bytes = b"\0" * 16) -> bytes:
        header = header + " " * (118 - len(header)) + "\n"
        return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + body

    for member in (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }"),
                   npy("{'descr': '<f4', 'fortran_order': False, 'shape': (500000000,), }"),
                   npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }"),
                   npy("{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"),
                   npy("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }"),
                   b"not a npy file"):
        yield member


RUNNER = textwrap.dedent("""
    import collections, json, sys
    import numpy as np
    import fastconv

    outcomes = collections.Counter()
    for path in sys.argv[1:]:
        try:
            state = fastconv.load(path)
        except ValueError:
            outcomes["ValueError"] += 1
            continue
        except BaseException as e:  # anything else is a failure, reported by its type
            outcomes[f"{type(e).__name__} ({path}): {e}"[:300]] += 1
            continue
        bad = [k for k, v in state.items() if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf"]
        outcomes["loaded" if not bad else f"non-numeric arrays {bad} ({path})"] += 1
    # VmHWM: this process's own peak (ru_maxrss would carry over the forking parent's).
    with open("/proc/self/status") as f:
        peak_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"outcomes": outcomes, "peak_mb": peak_mb}))
""")


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_and_forged_weight_files_raise_value_error_or_load(tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors", reason="safetensors is not installed")
    rng = np.random.default_rng(2026 + len(fmt))
    data = _original(tmp_path, fmt)
    paths = []
    for i in range(CASES_PER_FORMAT):
        _, mutant = _mutants(data, rng)
        p = tmp_path / f"m{i}.{fmt}"
        p.write_bytes(mutant)
        paths.append(str(p))
    if fmt == "safetensors":
        forged = list(_forged_safetensors())
    else:
        forged = []
        for j, member in enumerate(_forged_npz()):
            p = tmp_path / f"forged{j}.npz"
            with zipfile.ZipFile(p, "w") as z:
                z.writestr("a.npy", member)
            forged.append(p.read_bytes())
    for j, blob in enumerate(forged):
        p = tmp_path / f"f{j}.{fmt}"
        p.write_bytes(blob)
        paths.append(str(p))
    proc = subprocess.run([sys.executable, "-c", RUNNER, *paths], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"the loader process died (status {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    outcomes = report["outcomes"]
    assert sum(outcomes.values()) == len(paths)
    print(f"{fmt}: {len(paths)} files, outcomes {outcomes}, peak RSS {report['peak_mb']:.0f} MB")
    unexpected = {k: v for k, v in outcomes.items() if k not in ("ValueError", "loaded")}
    assert not unexpected, unexpected
    assert outcomes.get("ValueError", 0) > len(paths) // 3  # the mutations do break most files
    # No mutant made the loader hold more than the interpreter, numpy and a few small arrays.
    assert report["peak_mb"] < 400, report
