"""Progress reporting shared by the engines' chunked run loops (MCMC draws, SMC tempering,
REMC sweeps, ``ji.batch`` chunks).

An engine turns its ``progress=`` argument into a reporter once per run
(:func:`progress_reporter`), calls :func:`report_progress` as units of work finish, and
:func:`end_progress` when its loop ends (a run may stop before its total, e.g. SMC at
``max_steps``)."""

from __future__ import annotations

import sys
import time

__all__ = ["ProgressBar", "end_progress", "progress_reporter", "report_progress"]

_BAR_WIDTH = 28


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


class ProgressBar:
    """A bar redrawn in place on stderr for one run: the time since its first report and
    the time left at the rate since the *rate baseline* (the first report, or the last
    :meth:`rebase`, which work that was loaded rather than computed calls)."""

    def __init__(self, label: str = "", stream=None):
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self._first: float | None = None
        self._baseline: tuple[float, int] | None = None
        self._width = 0          # characters of the line on screen (0: none open)

    def rebase(self, done: int) -> None:
        """Work up to ``done`` was not computed in this run (loaded from disk, another
        task's): measure the rate from here."""
        self._baseline = (time.monotonic(), done)

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._first is None:
            self._first = now
        if self._baseline is None:
            self._baseline = (now, done)
        since, done_then = self._baseline
        remaining = (now - since) * (total - done) / (done - done_then) if done > done_then else None
        line = progress_line(self.label, done, total, now - self._first, remaining)
        padding = " " * max(self._width - len(line), 0)   # "\r" does not erase a longer line
        finished = done >= total
        print("\r" + line + padding, end="\n" if finished else "", file=self.stream, flush=True)
        self._width = 0 if finished else len(line)

    def end(self) -> None:
        """End a line left open by a run that stopped before its total."""
        if self._width:
            print(file=self.stream, flush=True)
            self._width = 0


def progress_reporter(progress, label: str = ""):
    """The reporter of one run: ``None`` (``progress`` falsy), the user's
    ``callable(done, total)``, or a new :class:`ProgressBar` (``progress=True``)."""
    if not progress:
        return None
    if progress is True:
        return ProgressBar(label)
    if not callable(progress):
        raise TypeError(f"progress must be True, False/None or a callable(done, total), got {progress!r}")
    return progress


def report_progress(reporter, done: int, total: int) -> None:
    """Report that ``done`` of ``total`` units of work are finished."""
    if reporter is not None:
        reporter(done, total)


def end_progress(reporter) -> None:
    if isinstance(reporter, ProgressBar):
        reporter.end()
