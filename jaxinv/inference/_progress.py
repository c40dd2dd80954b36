"""Progress reporting shared by the engines' chunked run loops."""

from __future__ import annotations

import sys

__all__ = ["report_progress"]


def report_progress(progress, done: int, total: int, label: str = "") -> None:
    """Call ``progress(done, total)``; ``progress=True`` writes a line to stderr."""
    if not progress:
        return
    if callable(progress):
        progress(done, total)
        return
    end = "\n" if done >= total else ""
    print(f"\r{label}{done}/{total} ({100 * done / max(total, 1):.0f}%)", end=end, file=sys.stderr, flush=True)
