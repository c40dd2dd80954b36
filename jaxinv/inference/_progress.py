"""Progress reporting shared by the engines' chunked run loops (MCMC draws, SMC tempering,
REMC sweeps, ``ji.batch`` chunks)."""

from __future__ import annotations

import sys
import time

__all__ = ["report_progress"]

_BAR_WIDTH = 28
# (label, total) -> (time, done) of the first report of the run in progress
_first_report: dict[tuple[str, int], tuple[float, int]] = {}


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(label: str, done: int, total: int, elapsed: float | None, remaining: float | None) -> str:
    """``label [#########-------] 12/40  30%  0:05, ~0:12 left``."""
    fraction = min(max(done / max(total, 1), 0.0), 1.0)
    filled = int(round(_BAR_WIDTH * fraction))
    line = f"{label}[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {done}/{total} {100 * fraction:3.0f}%"
    if elapsed is not None:
        line += f"  {_clock(elapsed)}"
        if remaining is not None and done < total:
            line += f", ~{_clock(remaining)} left"
    return line


def report_progress(progress, done: int, total: int, label: str = "") -> None:
    """Report that ``done`` of ``total`` units of work are finished.

    ``progress`` is falsy (nothing), a ``callable(done, total)``, or ``True``: a bar redrawn in
    place on stderr, with the time since the first report and the time left at the rate
    since then.
    """
    if not progress:
        return
    if callable(progress):
        progress(done, total)
        return
    now = time.monotonic()
    key = (label, total)
    started, done_then = _first_report.setdefault(key, (now, done))
    if done < done_then:  # a new run with the same label and total
        _first_report[key] = started, done_then = now, done
    elapsed = now - started
    remaining = elapsed * (total - done) / (done - done_then) if done > done_then else None
    finished = done >= total
    print("\r" + progress_line(label, done, total, elapsed, remaining), end="\n" if finished else "",
          file=sys.stderr, flush=True)
    if finished:
        _first_report.pop(key, None)
