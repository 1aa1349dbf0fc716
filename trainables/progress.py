"""Progress of a long loop (teacher pairs, corpus encoding, warm-up steps): a bar on a terminal, plain lines in a log.

A cluster job writes to a file, where a tqdm bar is either nothing or a stream of carriage returns.
Off a terminal, `progress_bar` returns `PlainProgress` instead: a line on stdout at most once per
`progress_interval()` seconds,

    kd-study: teacher pairs 12,000/40,000 (30%), 410 pair/s, ETA 1m33s

and a closing line when it printed any (a loop shorter than the interval prints nothing). The
interval is `KD_PROGRESS_INTERVAL_S` (default 60 s; tests set it low); the study's per-trial
progress lines (study/console/progress.py) use the same one.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

PROGRESS_INTERVAL_ENV = "KD_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 60.0


def progress_interval() -> float:
    """Seconds between two progress lines of one loop or trial (`KD_PROGRESS_INTERVAL_S`, default 60)."""
    raw = os.environ.get(PROGRESS_INTERVAL_ENV, "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_INTERVAL_S
    except ValueError:
        return DEFAULT_INTERVAL_S


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, leave: bool = True) -> Any:
    """A tqdm bar on a terminal (stderr), `PlainProgress` lines elsewhere, a silent bar when not `enabled`."""
    from tqdm.auto import tqdm

    if not enabled or _is_terminal(sys.stderr):
        return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave)
    return PlainProgress(total, desc, unit)


def duration(seconds: float) -> str:
    """`42s`, `3m05s`, `1h02m`."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class PlainProgress:
    """tqdm's `update`/`close` as plain lines: done/total, rate, ETA, at most one line per `interval` seconds."""

    def __init__(self, total: int, desc: str, unit: str, interval: float | None = None,
                 clock: Callable[[], float] = time.monotonic, write: Callable[[str], None] | None = None):
        self.total, self.desc, self.unit = int(total), desc, unit
        self.interval = progress_interval() if interval is None else interval
        self.clock = clock
        self.write = write or (lambda line: print(line, flush=True))
        self.done = 0
        self.started = self.last = clock()
        self.lines = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.interval and self.done < self.total:
            self.last = now
            self._line(now)

    def close(self) -> None:
        if self.lines:   # a loop that printed progress says it ended; a short one stays silent
            elapsed = self.clock() - self.started
            rate = f", {_rate(self.done / elapsed)} {self.unit}/s" if elapsed > 0 else ""
            self.write(f"kd-study: {self.desc} {self.done:,}/{self.total:,} done in {duration(elapsed)}{rate}")
            self.lines = 0

    def _line(self, now: float) -> None:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        eta = f", ETA {duration((self.total - self.done) / rate)}" if rate > 0 and self.total else ""
        self.write(f"kd-study: {self.desc} {self.done:,}/{self.total:,}{share}, {_rate(rate)} {self.unit}/s{eta}")
        self.lines += 1


def _rate(per_second: float) -> str:
    return f"{per_second:,.0f}" if per_second >= 10 else f"{per_second:.2g}"


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
