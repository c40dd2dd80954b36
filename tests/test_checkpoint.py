"""Long runs survive being stopped: a run restarted with the same arguments resumes from its
checkpoint and yields exactly the draws of an uninterrupted run (NUTS, SMC, replica exchange).

Fast in-process checks stop each engine by an exception right after its first checkpoint;
the subprocess checks kill a real run with SIGKILL (NUTS in the default run, SMC and replica
exchange with ``-m slow``)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

SCRIPT = Path(__file__).parent / "scripts" / "checkpointed_run.py"
_spec = importlib.util.spec_from_file_location("checkpointed_run", SCRIPT)
run_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(run_script)


class _Stop(Exception):
    pass


def _arrays(res):
    return {"log_evidence": np.asarray(res.log_evidence), **{k: np.asarray(v) for k, v in res.params.items()}}


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.mark.parametrize("engine", ["nuts", "smc", "remc"])
def test_stopped_run_resumes_with_identical_draws(engine, tmp_path):
    sampler, options = run_script.SETTINGS[engine]
    post, key, ckpt = run_script.posterior(), jax.random.key(11), tmp_path / "run.ckpt"

    def stop(done, total):
        raise _Stop

    with pytest.raises(_Stop):
        sampler(post, key, checkpoint=ckpt, progress=stop, **options)
    assert ckpt.exists()
    resumed = _arrays(sampler(post, key, checkpoint=ckpt, **options))
    straight = _arrays(sampler(post, key))
    _assert_same(resumed, straight)
    # a different key must not pick up this checkpoint
    with pytest.raises(ValueError, match="different run"):
        sampler(post, jax.random.key(12), checkpoint=ckpt, **options)


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                          timeout=250)  # two processes per test (~15-25 s each) inside pytest's 900 s


# the checkpoint files are written by one module (jaxinv/inference/_checkpoint.py) for every
# engine: NUTS (the cheapest to compile) checks crash safety by default, SMC and REMC in the slow set
@pytest.mark.parametrize("engine", ["nuts", pytest.param("smc", marks=pytest.mark.slow),
                                    pytest.param("remc", marks=pytest.mark.slow)])
def test_sigkilled_run_resumes_with_identical_draws(engine, tmp_path):
    ckpt = tmp_path / f"{engine}.ckpt"
    killed = _run(engine, ckpt, tmp_path / "killed.npz", "--kill")
    assert killed.returncode == -9, killed.stderr[-2000:]        # died by SIGKILL mid-run
    assert ckpt.exists() and not (tmp_path / "killed.npz").exists()
    assert not list(tmp_path.glob("*.tmp"))                      # no torn temporary file left
    # the resumed run in a fresh process, then (same process) an uninterrupted one
    resumed = _run(engine, ckpt, tmp_path / "resumed.npz", "--straight", tmp_path / "straight.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "resumed.npz"), np.load(tmp_path / "straight.npz")
    _assert_same({k: a[k] for k in a.files}, {k: b[k] for k in b.files})
