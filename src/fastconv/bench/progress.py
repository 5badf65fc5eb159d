"""A progress bar naming the running case: tqdm's on a terminal when tqdm is installed
(the ``bench`` extra), else one plain line per case on stderr (readable in a CI log)."""

from __future__ import annotations

import sys
from typing import Optional


class Progress:
    def __init__(self, total: int, enabled: bool = True):
        self.total, self.enabled, self.count = total, enabled, 0
        self._bar = None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(total=total, file=sys.stderr, unit="case", dynamic_ncols=True, leave=False,
                                 bar_format="{n_fmt}/{total_fmt} |{bar:20}| {elapsed}<{remaining} {desc}{postfix}")

    def start(self, label: str) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_description_str(label)
        else:
            print(f"[{self.count + 1}/{self.total}] {label}", file=sys.stderr, flush=True)

    def done(self, note: Optional[str] = None) -> None:
        self.count += 1
        if self._bar is not None:
            self._bar.update(1)
            if note:
                self._bar.set_postfix_str(note, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
