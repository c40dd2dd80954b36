"""The progress bar shared by the engines' run loops and ``ji.batch``."""

import io

import jax
import numpy as np
import pytest

import jaxinv as ji
from jaxinv.inference import _progress
from jaxinv.inference._progress import (ProgressBar, end_progress, progress_line, progress_reporter,
                                        report_progress)


class _Clock:
    def __init__(self, *times):
        self.times = iter(times)

    def monotonic(self):
        return next(self.times)


def test_bar_fills_in_proportion_and_states_the_time_left():
    assert progress_line("chunk ", 0, 4, None, None) == "chunk [" + "-" * 28 + "] 0/4   0%"
    half = progress_line("chunk ", 2, 4, 65.0, 65.0)
    assert half == "chunk [" + "#" * 14 + "-" * 14 + "] 2/4  50%  1:05, ~1:05 left"
    assert progress_line("", 4, 4, 3725.0, 0.0).endswith("] 4/4 100%  1:02:05")  # no "left" when done


def test_bar_redraws_in_place_erases_longer_lines_and_ends_its_line(monkeypatch):
    monkeypatch.setattr(_progress, "time", _Clock(100.0, 110.0, 130.0))
    out = io.StringIO()
    bar = ProgressBar("sweep ", stream=out)
    for done in (1, 2, 4):
        bar(done, 4)
    first, second, last = out.getvalue().split("\r")[1:]
    assert "1/4" in first and "left" not in first          # no rate yet
    assert second.endswith("2/4  50%  0:10, ~0:20 left")   # 1 unit per 10 s, 2 units to go
    assert last.endswith("\n") and last.startswith("sweep [") and len(last.rstrip("\n")) == len(second)  # padded over "~0:20 left"
    assert last.rstrip("\n").rstrip(" ").endswith("4/4 100%  0:30")


def test_a_run_that_stops_early_ends_its_line_and_the_next_run_starts_afresh(monkeypatch):
    monkeypatch.setattr(_progress, "time", _Clock(0.0, 50.0, 1000.0, 1010.0))
    out = io.StringIO()
    first = ProgressBar("beta ", stream=out)
    first(10, 100)
    first(40, 100)
    first.end()                       # SMC stopped at max_steps: the line is closed
    assert out.getvalue().endswith("\n")
    second = ProgressBar("beta ", stream=out)
    second(10, 100)
    second(20, 100)                   # 10 units in 10 s, 80 to go: the first run's clock is not used
    assert out.getvalue().rstrip(" ").endswith("20/100  20%  0:10, ~1:20 left")


def test_rebase_measures_the_rate_on_computed_work_only(monkeypatch):
    monkeypatch.setattr(_progress, "time", _Clock(0.0, 0.1, 0.1, 30.1))
    out = io.StringIO()
    bar = ProgressBar("chunk ", stream=out)
    bar(1, 10)                        # loaded from disk
    bar.rebase(2)                     # chunk 2 loaded too
    bar(2, 10)
    bar(3, 10)                        # one computed chunk in 30 s, 7 to go
    assert out.getvalue().rstrip(" ").endswith("3/10  30%  0:30, ~3:30 left")


def test_reporters_none_callable_and_bad_values():
    seen = []
    assert progress_reporter(None) is None and progress_reporter(False) is None
    report = progress_reporter(lambda done, total: seen.append((done, total)))
    report_progress(report, 3, 9)
    report_progress(None, 1, 2)
    end_progress(report)
    assert seen == [(3, 9)]
    assert isinstance(progress_reporter(True, "x "), ProgressBar)
    with pytest.raises(TypeError, match="progress must be"):
        progress_reporter("yes")


def test_batch_progress_true_draws_the_bar(capsys):
    Y = np.arange(6.0).reshape(3, 2)
    model = ji.Model(lambda p: p["level"] * np.ones(2), {"level": ji.priors.Uniform(-1.0, 10.0)},
                     ji.likelihoods.Normal(sigma=1.0))
    ji.batch(lambda post, key: {"first": post.y[0]}, model, Y, jax.random.key(0), chunk_size=1, progress=True)
    err = capsys.readouterr().err
    assert err.count("\r") == 3 and "chunk [" in err and err.endswith("\n")
    assert err.rstrip("\n").rstrip(" ").endswith("3/3 100%  0:00")
