"""The convolution-algorithm cache that ``algo='auto'`` consults (written by :func:`fastconv.tune`).

One JSON file in the user's cache directory maps (shape, dtype, thread count, ISA) to the
fastest algorithm measured. It is never trusted blindly: a file that is not valid JSON, is
not a fastconv tuning cache, has another cache version or was tuned on another CPU model is
ignored with a ``RuntimeWarning``; malformed entries are dropped (with a warning); and a
cached algorithm is used only where it can run the shape it is asked for.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Dict, Optional

from .. import _core
from .._runtime import backend, get_num_threads

FORMAT = "fastconv-tune-cache"
VERSION = 1
FILENAME = "conv_algos.json"
_ALGOS = ("direct", "im2col", "pointwise", "depthwise", "winograd")

_lock = threading.Lock()
_entries: Optional[Dict[str, str]] = None  # key -> algorithm; None: not read yet


def cache_dir() -> Path:
    """The directory of the tuning cache (it need not exist yet)."""
    explicit = os.environ.get("FASTCONV_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "fastconv"


def cache_path() -> Path:
    """The tuning cache file: ``cache_dir() / 'conv_algos.json'``."""
    return cache_dir() / FILENAME


def _machine() -> str:
    return _core.cpu_model()


def _warn(path: Path, why: str) -> None:
    warnings.warn(f"fastconv: ignoring the tuning cache {path}: {why}", RuntimeWarning, stacklevel=2)


def _read(path: Path) -> Dict[str, dict]:
    """The valid entries of the cache file (empty, with a warning, for anything untrustworthy)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        _warn(path, f"cannot read it ({e})")
        return {}
    try:
        doc = json.loads(text)
    except ValueError as e:
        _warn(path, f"not valid JSON ({e})")
        return {}
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        _warn(path, "not a fastconv tuning cache")
        return {}
    if doc.get("version") != VERSION:
        _warn(path, f"written in cache version {doc.get('version')!r}, this fastconv reads version {VERSION}")
        return {}
    if doc.get("machine") != _machine():
        _warn(path, f"tuned on another CPU ({doc.get('machine')!r}); its timings do not apply to {_machine()!r}")
        return {}
    entries = doc.get("entries")
    if not isinstance(entries, dict):
        _warn(path, "its 'entries' is not a mapping")
        return {}
    good = {k: v for k, v in entries.items()
            if isinstance(k, str) and isinstance(v, dict) and v.get("algo") in _ALGOS}
    if len(good) != len(entries):
        _warn(path, f"{len(entries) - len(good)} malformed entries (the other {len(good)} are used)")
    return good


def _loaded() -> Dict[str, str]:
    global _entries
    entries = _entries
    if entries is None:
        with _lock:
            if _entries is None:
                _entries = {k: v["algo"] for k, v in _read(cache_path()).items()}
            entries = _entries
    return entries


def reload_cache() -> None:
    """Forget the cache read so far; the next ``algo='auto'`` call reads the file again
    (e.g. after changing ``FASTCONV_CACHE_DIR``)."""
    global _entries
    with _lock:
        _entries = None


def clear_cache() -> None:
    """Delete the cache file (if any) and forget its entries."""
    global _entries
    with _lock:
        try:
            cache_path().unlink()
        except FileNotFoundError:
            pass
        _entries = {}


def key(conv) -> str:
    """The cache key of a validated convolution (``fastconv.ops.conv._Conv``) here and now."""
    s, p, d = conv.stride, (conv.pad_before, conv.pad_after), conv.dilation

    def dims(v):
        return "x".join(str(int(e)) for e in v)

    return (f"{backend().isa}|t{get_num_threads()}|{conv.dtype.name}|in {dims(conv.x.shape)}|w {dims(conv.w.shape)}"
            f"|s {dims(s)}|p {dims(p[0])},{dims(p[1])}|d {dims(d)}|g {conv.groups}")


def lookup(conv) -> Optional[str]:
    """The cached algorithm for a validated convolution (``fastconv.ops.conv._Conv``),
    or None when there is none or it cannot run this shape."""
    entries = _loaded()
    if not entries:
        return None
    algo = entries.get(key(conv))
    if algo is None or conv.unsupported(algo) is not None:
        return None
    return algo


def _write(path: Path, entries: Dict[str, dict]) -> None:
    doc = {"format": FORMAT, "version": VERSION, "machine": _machine(), "entries": entries}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".conv_algos.", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def store(results) -> None:
    """Adds ``{key: {"algo": ..., "times_s": ..., "date": ...}}`` entries to the cache file
    (keeping its valid entries; an untrustworthy file is warned about and replaced) and
    makes them the ones in use."""
    global _entries
    with _lock:
        path = cache_path()
        stored = _read(path)
        stored.update(results)
        _write(path, stored)
        _entries = {k: v["algo"] for k, v in stored.items()}
