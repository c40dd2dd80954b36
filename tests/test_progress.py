"""The progress bar shared by the engines' run loops and ``ji.batch``."""

from jaxinv.inference import _progress
from jaxinv.inference._progress import progress_line, report_progress


def test_bar_fills_in_proportion_and_states_the_time_left():
    assert progress_line("chunk ", 0, 4, None, None) == "chunk [" + "-" * 28 + "] 0/4   0%"
    half = progress_line("chunk ", 2, 4, 65.0, 65.0)
    assert half == "chunk [" + "#" * 14 + "-" * 14 + "] 2/4  50%  1:05, ~1:05 left"
    assert progress_line("", 4, 4, 3725.0, 0.0).endswith("] 4/4 100%  1:02:05")  # no "left" when done


def test_report_progress_true_draws_in_place_and_ends_the_line(capsys, monkeypatch):
    clock = iter([100.0, 110.0, 130.0])
    monkeypatch.setattr(_progress.time, "monotonic", lambda: next(clock))
    for done in (1, 2, 4):
        report_progress(True, done, 4, "sweep ")
    err = capsys.readouterr().err
    first, second, last = err.split("\r")[1:]
    assert "1/4" in first and "left" not in first          # no rate yet
    assert second.endswith("2/4  50%  0:10, ~0:20 left")   # 1 unit per 10 s, 2 units to go
    assert last.endswith("4/4 100%  0:30\n")
    assert ("sweep ", 4) not in _progress._first_report   # the next run starts afresh


def test_report_progress_calls_a_callable_and_ignores_none():
    seen = []
    report_progress(lambda done, total: seen.append((done, total)), 3, 9)
    report_progress(None, 1, 2)
    report_progress(False, 1, 2)
    assert seen == [(3, 9)]
