"""ji.batch: many datasets through one engine -- equality with single-dataset calls, keys,
failures marked (bad data, a dataset that raises), chunk files and resume, selection,
save/load; several devices and several processes in subprocesses (tests/scripts)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
import jaxinv.batching as jb

T = jnp.linspace(0.0, 4.0, 25)
SIGMA = 0.05


def decay(params):
    return params["amplitude"] * jnp.exp(-T / params["decay_time"])


def decay_model():
    priors = {"amplitude": ji.priors.Uniform(0.0, 5.0), "decay_time": ji.priors.LogUniform(0.1, 10.0)}
    return ji.Model(decay, priors, ji.likelihoods.Normal(sigma=SIGMA))


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    amplitude = rng.uniform(1.0, 3.0, n)
    tau = rng.uniform(0.5, 2.0, n)
    clean = amplitude[:, None] * np.exp(-np.asarray(T)[None] / tau[:, None])
    return clean + SIGMA * rng.standard_normal(clean.shape), amplitude, tau


@pytest.fixture(scope="module")
def map_batch():
    Y, _, _ = data(6)
    Y[2, 5] = np.nan  # a bad dataset: marked, not fatal
    Y[4] *= 2.5  # amplitude ~6.6, beyond the prior's bound 5: a MAP at the bound
    with pytest.warns(RuntimeWarning, match="1 of 6 datasets failed"):
        res = ji.batch(ji.map_estimate, decay_model(), Y, jax.random.key(3), n_starts=2)
    return Y, res


def test_map_batch_equals_single_calls(map_batch):
    """Dataset i of the batch is ``map_estimate(model.condition(Y[i]), fold_in(key, i))``:
    MAP, Laplace sds and the Laplace evidence to float tolerance."""
    Y, res = map_batch
    model = decay_model()
    for i in (0, 5):
        single = ji.map_estimate(model.condition(Y[i]), jax.random.fold_in(jax.random.key(3), i), n_starts=2)
        one = res[i]
        for name in single.params:
            np.testing.assert_allclose(one.params[name], single.params[name], rtol=1e-8)
            np.testing.assert_allclose(one.laplace.standard_errors[name], single.laplace.standard_errors[name],
                                       rtol=1e-6)
        np.testing.assert_allclose(one.log_evidence, single.log_evidence, rtol=1e-8)
        assert one.laplace.posterior is not None and one.laplace.at_boundary == ()
        assert bool(one.stats["converged"])
    assert list(res.params) == ["amplitude", "decay_time"]  # the model's order, not sorted


def test_bad_dataset_is_marked_and_blank(map_batch):
    _, res = map_batch
    assert res.failed.tolist() == [False, False, True, False, False, False]
    assert "NaN" in res.errors[2] and res.errors[0] is None
    assert np.isnan(np.asarray(res.params["amplitude"])[2])
    assert np.all(np.isfinite(np.asarray(res.params["amplitude"])[[0, 1, 3, 4, 5]]))


def test_summary_table_and_netcdf_round_trip(map_batch, tmp_path):
    _, res = map_batch
    rows = res.summary_table()
    assert len(rows) == 6 and rows[2]["failed"] and rows[0]["error"] == ""
    assert {"amplitude", "amplitude_sd", "decay_time", "free_energy", "converged"} <= set(rows[0])
    # the MAP of dataset 4 sits on the amplitude prior's upper bound: flagged, as by res[4]
    assert [r["at_boundary"] for r in rows] == ["", "", "", "", "amplitude", ""]
    assert res[4].laplace.at_boundary == ("amplitude",) and float(res.params["amplitude"][4]) == pytest.approx(5.0)
    # a batch row carries its best start's convergence as a scalar; caveats read both forms
    assert ji.selection.caveats(res[4]) == ["mode at the prior boundary of amplitude"]
    assert ji.selection.caveats(res[0]) == []
    stuck = ji.Result(params=res[0].params, method="map", sample_dims=0, stats={**res[0].stats, "converged": False})
    assert ji.selection.caveats(stuck) == [f"MAP search did not converge (gradient norm "
                                           f"{float(res[0].stats['gradient_norm']):.2g})"]
    res.write_table(tmp_path / "table.csv")
    assert (tmp_path / "table.csv").read_text().count("\n") == 7
    res.save(tmp_path / "batch.nc")
    back = jb.load_batch(tmp_path / "batch.nc")
    assert back.failed.tolist() == res.failed.tolist() and back.errors == res.errors and back.method == "map"
    np.testing.assert_array_equal(np.asarray(back.params["decay_time"]), np.asarray(res.params["decay_time"]))
    np.testing.assert_array_equal(back.log_evidence, res.log_evidence)


def test_hmc_batch_lane_efficiency_and_chunking():
    """Static-path HMC (the batch default) keeps every lane busy (efficiency 1); NUTS lanes
    wait for the deepest tree (efficiency < 1).  Chunks of 2 give the same draws, bit for
    bit, as one chunk of 4 (keys from the global dataset index); a padded chunk's dummy
    lane counts as paid work (3 datasets in chunks of 2: efficiency 3/4).  (A single ``ji.sample``
    call runs the same code unbatched; vmap rounds differently, so its chains differ.)"""
    Y, amplitude, tau = data(4, seed=1)
    model = decay_model()
    kw = dict(n_chains=2, n_warmup=150, n_draws=150)
    whole = ji.batch(ji.sample, model, Y, jax.random.key(0), **kw)
    chunked = ji.batch(ji.sample, model, Y, jax.random.key(0), chunk_size=2, **kw)
    assert whole.method == "hmc" and whole.lane_efficiency == 1.0
    np.testing.assert_array_equal(np.asarray(whole.params["decay_time"]), np.asarray(chunked.params["decay_time"]))
    assert np.asarray(whole.params["decay_time"]).shape == (4, 2, 150)
    # 3 datasets in chunks of 2: the padding lane of the second chunk is paid, not useful
    padded = ji.batch(ji.sample, model, Y[:3], jax.random.key(0), chunk_size=2, **kw)
    assert padded.lane_efficiency == 0.75
    np.testing.assert_array_equal(np.asarray(padded.params["decay_time"]), np.asarray(whole.params["decay_time"])[:3])
    assert np.all(np.asarray(whole.stats["rhat_max"]) < 1.1)
    # the posteriors sit on the truths (4 datasets x 2 parameters, 4 sd)
    for name, truth in (("amplitude", amplitude), ("decay_time", tau)):
        draws = np.asarray(whole.params[name]).reshape(4, -1)
        assert np.all(np.abs(draws.mean(1) - truth) < 4 * draws.std(1)), name
    nuts = ji.batch(ji.sample, model, Y, jax.random.key(0), method="nuts", n_chains=2, n_warmup=50, n_draws=50)
    assert 0.0 < nuts.lane_efficiency < 1.0
    # dataset 1 as a Result of its own: draws, diagnostics, no evidence (NaN)
    one = whole[1]
    assert one.method == "hmc" and one.params["decay_time"].shape == (2, 150)
    assert float(one.stats["rhat_max"]) < 1.1 and np.isnan(float(one.log_evidence))
    np.testing.assert_array_equal(one.observed, Y[1])


def test_a_dataset_that_raises_fails_alone():
    """A runtime error in one dataset (here ``eqx.error_if``; in practice an ODE solver
    giving up) does not kill the batch: the chunk is rerun dataset by dataset."""
    Y, _, _ = data(4, seed=2)
    Y[1] += 100.0

    def infer_one(post, key):
        level = eqx.error_if(post.y[0], post.y[0] > 50.0, "implausible first point")
        return {"level": level, "draw": jax.random.normal(key)}

    with pytest.warns(RuntimeWarning, match="1 of 4 datasets failed"):
        res = ji.batch(infer_one, decay_model(), Y, jax.random.key(1))
    assert res.failed.tolist() == [False, True, False, False]
    assert "implausible first point" in res.errors[1]
    np.testing.assert_allclose(res.stacked["level"][[0, 2, 3]], Y[[0, 2, 3], 0])
    assert np.isnan(res.stacked["level"][1])
    np.testing.assert_allclose(res.stacked["draw"][3], jax.random.normal(jax.random.fold_in(jax.random.key(1), 3)))


def test_resume_after_a_kill_recomputes_only_missing_chunks(map_batch, tmp_path, monkeypatch):
    Y, reference = map_batch
    model = decay_model()
    calls = []
    real = jb._run_chunk

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(jb, "_run_chunk", dies_on_third_chunk)
    kw = dict(n_starts=2, chunk_size=2, out=tmp_path / "run")
    with pytest.raises(KeyboardInterrupt), pytest.warns(RuntimeWarning):
        ji.batch(ji.map_estimate, model, Y, jax.random.key(3), **kw)
    assert sorted(p.name for p in (tmp_path / "run").glob("chunk_*.npz")) == ["chunk_000000.npz", "chunk_000001.npz"]
    calls.clear()
    with pytest.warns(RuntimeWarning, match="1 of 6"):
        resumed = ji.batch(ji.map_estimate, model, Y, jax.random.key(3), **kw)
    assert len(calls) == 1  # only the missing chunk
    assert resumed.errors == reference.errors
    for name in reference.params:
        np.testing.assert_allclose(resumed.params[name], reference.params[name], rtol=1e-10)
    with pytest.raises(ValueError, match="different batch"):
        ji.batch(ji.map_estimate, model, Y, jax.random.key(9), **kw)
    # another model with the same parameter names and sizes is another batch too
    other = ji.Model(decay, {"amplitude": ji.priors.Uniform(0.0, 6.0), "decay_time": ji.priors.LogUniform(0.1, 10.0)},
                     ji.likelihoods.Normal(sigma=SIGMA))
    with pytest.raises(ValueError, match="different batch"):
        ji.batch(ji.map_estimate, other, Y, jax.random.key(3), **kw)


def test_a_resumed_batch_refuses_chunks_run_under_other_resolved_defaults(map_batch, tmp_path, monkeypatch):
    """The same call under different library defaults (here: which kernel ``local_kernel="auto"``
    resolves to) is a different batch: its chunk store must not be reused."""
    from jaxinv.inference import _slice

    Y, _ = map_batch
    kw = dict(method="smc", n_particles=16, n_runs=1, max_mcmc_steps=20, out=tmp_path / "run")
    first = ji.batch(ji.sample, decay_model(), Y[:2], jax.random.key(3), **kw)
    assert first.stacked.settings_dict["kernel"] == "slice" and first[1].settings == first.stacked.settings
    assert ji.load_batch(first.save(tmp_path / "batch.nc")).stacked.settings == first.stacked.settings
    monkeypatch.setattr(_slice, "MAX_DIM", 0)  # kernel="auto" now resolves to HMC
    with pytest.raises(ValueError, match="different batch"):
        ji.batch(ji.sample, decay_model(), Y[:2], jax.random.key(3), **kw)


def test_batched_selection_matches_select_per_dataset():
    """Two models (one exponential, a constant) over 6 datasets by Laplace free energies:
    dataset i, model j equals ``ji.select(models, Y[i], fold_in(key, i))``."""
    Y, _, _ = data(6, seed=4)
    flat = ji.Model(lambda p: p["level"] * jnp.ones_like(T), {"level": ji.priors.Uniform(-1.0, 5.0)},
                    ji.likelihoods.Normal(sigma=SIGMA))
    models = {"decay": decay_model(), "flat": flat}
    sel = ji.batch(ji.select, models, Y, jax.random.key(4), n_starts=2)
    assert sel.selected == ["decay"] * 6
    assert sel.free_energies.shape == (6, 2) and np.all(sel.probabilities[:, 0] > 0.999)
    single = ji.select(models, Y[1], jax.random.fold_in(jax.random.key(4), 1), n_starts=2)
    for j, name in enumerate(sel.names):
        np.testing.assert_allclose(sel.free_energies[1, j], float(single.results[name].free_energy), rtol=1e-8)


def test_bad_calls_are_named():
    model = decay_model()
    with pytest.raises(ValueError, match="leading dataset axis"):
        ji.batch(ji.map_estimate, model, np.float64(1.0), jax.random.key(0))
    with pytest.raises(ValueError, match="no datasets"):
        ji.batch(ji.map_estimate, model, np.zeros((0, 25)), jax.random.key(0))
    with pytest.raises(ValueError, match="no dataset can be used"):
        ji.batch(ji.map_estimate, model, np.full((2, 25), np.nan), jax.random.key(0))
    with pytest.raises(ValueError, match="shape"):
        ji.batch(ji.map_estimate, model, np.zeros((2, 24)), jax.random.key(0))
    with pytest.raises(ValueError, match="unknown sampling method"):
        ji.batch(ji.sample, model, np.zeros((2, 25)), jax.random.key(0), method="gibbs")
    with pytest.raises(TypeError, match="functools.partial"):
        ji.batch(lambda post, key: post.y, model, np.zeros((2, 25)), jax.random.key(0), n_starts=3)
    with pytest.raises(ValueError, match="chunk_size"):
        ji.batch(ji.map_estimate, model, np.zeros((2, 25)), jax.random.key(0), chunk_size=0)


SCRIPTS = Path(__file__).parent / "scripts"


def _run_script(name, *args, env_extra=None, timeout=400):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(SCRIPTS / name), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_sharded_over_four_devices_matches_one_device():
    """4 simulated CPU devices: the dataset axis is split by shard_map.  MAP results equal
    the one-device run to float tolerance (the SPMD-partitioned program rounds a few
    gradients differently, so not bitwise); an ODE model (Diffrax inside shard_map) gives
    the same energies and gradients.  The slow variant below adds the ODE MAP and HMC."""
    out = _run_script("batch_devices.py")
    assert out["devices"] == 4
    assert out["map_max_rel_diff"] < 1e-7, out
    assert out["ode_max_rel_diff"] < 1e-9, out
    assert out["ode_failed"] == 0


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_sharded_ode_map_and_hmc_agree_with_one_device():
    """Slow (~3 CPU-minutes: six compiled batch programs in a fresh process): the ODE MAP
    sharded equals one device to float tolerance; sharded HMC draws agree with one-device
    draws within Monte Carlo error (|difference of means| < 4 standard errors over 8
    datasets x 2 parameters), with lane efficiency 1."""
    out = _run_script("batch_devices.py", "--slow", timeout=1200)
    assert out["ode_map_max_rel_diff"] < 1e-6, out
    assert out["ode_map_failed"] == 0
    assert out["hmc_max_z"] < 4.0, out
    assert out["hmc_efficiency"] == 1.0


def test_two_processes_give_the_single_process_result(tmp_path):
    """jax.distributed on 127.0.0.1: 2 processes x 4 CPU devices (gloo collectives) run one
    batch over the global 8-device mesh; both receive the full result, equal to one process
    with 8 devices (measured bit-identical; asserted to 1e-12)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1]) + os.pathsep + env.get("PYTHONPATH", "")
    script = str(SCRIPTS / "batch_multihost.py")
    # the workers' output goes to files: a full pipe would stall a worker inside a collective
    logs = [tmp_path / f"w{i}.log" for i in (0, 1)]
    sinks = [log.open("w") for log in logs]
    workers = [subprocess.Popen([sys.executable, script, "worker", str(port), str(i), str(tmp_path / f"w{i}.json")],
                                env=env, stdout=sink, stderr=subprocess.STDOUT) for i, sink in enumerate(sinks)]
    try:  # one budget for all three processes (~40 s normally), inside pytest's 900 s limit
        deadline = time.monotonic() + 600
        reference = subprocess.run([sys.executable, script, "reference", str(tmp_path / "ref.json")], env=env,
                                   capture_output=True, text=True, timeout=600)
        assert reference.returncode == 0, reference.stderr[-3000:]
        for w, log in zip(workers, logs):
            w.wait(timeout=max(deadline - time.monotonic(), 1.0))
            assert w.returncode == 0, log.read_text()[-3000:]
    finally:
        for w, sink in zip(workers, sinks):  # a failed or hung run leaves no process behind
            w.kill()
            w.wait()
            sink.close()
    ref = json.loads((tmp_path / "ref.json").read_text())
    assert ref["process_count"] == 1
    for i in (0, 1):
        got = json.loads((tmp_path / f"w{i}.json").read_text())
        assert got["process_count"] == 2 and got["failed"] == [False] * 8
        for k, v in ref["params"].items():
            np.testing.assert_allclose(got["params"][k], v, rtol=1e-12)


def test_tasks_split_the_chunks_and_a_final_call_gathers_them(map_batch, tmp_path, monkeypatch):
    """Static partition (a SLURM job array): task t computes the chunks c % n == t into the
    shared folder; a call without task then loads all of them and computes nothing."""
    from jaxinv.cluster import task_from_env

    Y, reference = map_batch
    model = decay_model()
    kw = dict(n_starts=2, chunk_size=2, out=tmp_path / "run")
    with pytest.warns(RuntimeWarning, match="2 of 6 datasets failed"):
        first = ji.batch(ji.map_estimate, model, Y, jax.random.key(3), task=(0, 2), **kw)
    assert first.failed.tolist() == [False, False, True, True, False, False]
    assert "not computed by this task (chunk 1 belongs to task 1 of 2)" in first.errors[3]
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    assert task_from_env() == (1, 2)
    with pytest.warns(RuntimeWarning):
        ji.batch(ji.map_estimate, model, Y, jax.random.key(3), task=task_from_env(), **kw)
    calls = []
    monkeypatch.setattr(jb, "_run_chunk", lambda *a, **k: calls.append(1))
    with pytest.warns(RuntimeWarning, match="1 of 6"):
        gathered = ji.batch(ji.map_estimate, model, Y, jax.random.key(3), **kw)
    assert calls == [] and gathered.errors == reference.errors
    np.testing.assert_allclose(gathered.params["decay_time"], reference.params["decay_time"], rtol=1e-10)
    with pytest.raises(ValueError, match="give out"):
        ji.batch(ji.map_estimate, model, Y, jax.random.key(3), task=(0, 2))
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "9")
    with pytest.raises(ValueError, match="outside"):
        task_from_env()


def test_svi_batch_equals_single_calls():
    """ji.svi over datasets: the same keys as single calls, so the same ELBO and draws;
    PSIS k-hat per dataset from the host step."""
    Y, _, _ = data(2, seed=5)
    model = decay_model()
    kw = dict(n_steps=300, n_draws=200)
    res = ji.batch(ji.svi, model, Y, jax.random.key(6), **kw)
    single = ji.svi(model.condition(Y[1]), jax.random.fold_in(jax.random.key(6), 1), **kw)
    np.testing.assert_allclose(res.log_evidence[1], float(single.log_evidence), rtol=1e-8)
    np.testing.assert_allclose(res.params["decay_time"][1], single.params["decay_time"], rtol=1e-8)
    np.testing.assert_allclose(res.stats["khat"][1], float(single.stats["khat"]), rtol=1e-6)
    assert res.method == "svi" and np.isnan(res.lane_efficiency)


def test_command_line_batch_folder_and_array_file(tmp_path, monkeypatch, capsys):
    """``jaxinv batch``: a folder with one CSV per curve (one unreadable, one recorded at
    other delays: both marked, not fatal) and the same curves as rows of an array file give
    the same MAPs; a rerun after the first finds its chunks and computes nothing."""
    import csv

    import jaxinv.cli
    import problems.nmr_relaxation as nmr

    d = nmr.default_data()
    rng = np.random.default_rng(0)
    curves = [d.y + 0.01 * rng.standard_normal(d.y.size) for _ in range(3)]
    folder = tmp_path / "curves"
    folder.mkdir()
    for i, y in enumerate(curves):
        with open(folder / f"c{i}.csv", "w", newline="") as f:
            csv.writer(f).writerows(zip(d.x, y))
    (folder / "c3.csv").write_text("t,y\n1,2,3,4\n")
    with open(folder / "c4.csv", "w", newline="") as f:
        csv.writer(f).writerows(zip(2 * np.asarray(d.x), curves[0]))
    args = ["batch", "nmr-relaxation", "--model", "single", "--n-starts", "4", "--quiet"]
    assert jaxinv.cli.main([*args, "--data", str(folder), "--out", str(tmp_path / "a")]) == 0
    with open(tmp_path / "a" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["failed"] for r in rows] == ["False", "False", "False", "True", "True"]
    assert "c3.csv" in rows[3]["error"] and "other x" in rows[4]["error"]
    assert list(rows[0])[5:7] == ["inversion_efficiency", "inversion_efficiency_sd"]  # the model's order
    # rows 3 and 4 unusable (NaN), as in the folder: the same chunk shape, one compiled program
    np.savetxt(tmp_path / "curves.csv", np.stack(curves + [np.full(d.y.size, np.nan)] * 2), delimiter=",")
    assert jaxinv.cli.main([*args, "--data", str(tmp_path / "curves.csv"), "--out", str(tmp_path / "b")]) == 0
    from_folder = jb.load_batch(tmp_path / "a" / "batch.nc")
    from_array = jb.load_batch(tmp_path / "b" / "batch.nc")
    np.testing.assert_allclose(np.asarray(from_array.params["relaxation_time"])[:3],
                               np.asarray(from_folder.params["relaxation_time"])[:3], rtol=1e-6)
    assert from_array.failed.tolist() == [False, False, False, True, True]
    calls = []
    monkeypatch.setattr(jb, "_run_chunk", lambda *a, **k: calls.append(1))
    assert jaxinv.cli.main([*args, "--data", str(tmp_path / "curves.csv"), "--out", str(tmp_path / "b")]) == 0
    assert calls == []
    assert jaxinv.cli.main([*args, "--data", str(tmp_path / "none"), "--out", str(tmp_path / "c")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def _linear_gaussian(n_datasets):
    """test_evidence.py's conjugate linear-Gaussian model (3 weights, 15 points) and
    ``n_datasets`` data sets drawn from it, with their closed-form log evidences
    ``log N(y | A m0, s^2 I + A S0 A^T)`` and exact posterior means and sds."""
    from test_evidence import DESIGN, M0, S0, SIGMA, X

    model = ji.Model(lambda p: DESIGN @ p["w"], {"w": ji.priors.Normal(M0, S0, shape=3)},
                     ji.likelihoods.Normal(sigma=SIGMA))
    rng = np.random.default_rng(7)
    w = rng.normal(np.asarray(M0), np.asarray(S0), (n_datasets, 3))
    Y = w @ np.asarray(DESIGN).T + SIGMA * rng.standard_normal((n_datasets, X.size))
    cov = SIGMA**2 * jnp.eye(X.size) + DESIGN @ jnp.diag(S0**2) @ DESIGN.T
    exact = np.array([float(jax.scipy.stats.multivariate_normal.logpdf(y, DESIGN @ M0, cov)) for y in Y])
    posterior_cov = np.linalg.inv(np.diag(1 / np.asarray(S0) ** 2) + np.asarray(DESIGN.T @ DESIGN) / SIGMA**2)
    posterior_mean = (posterior_cov @ (np.asarray(M0 / S0**2)[:, None] + np.asarray(DESIGN).T @ Y.T / SIGMA**2)).T
    return model, Y, exact, posterior_mean, np.sqrt(np.diag(posterior_cov))


@pytest.mark.parametrize("method, options", [
    ("smc", dict(n_particles=250, n_runs=8, num_mcmc_steps=10, kernel="hmc", target_ess=0.5)),
    ("remc", dict(n_replicas=12, n_chains=2, n_tune=500, n_draws=1000)),
])
def test_evidence_engines_batch_to_the_analytic_free_energy(method, options):
    """Tempered SMC and replica exchange over 3 datasets of a conjugate model: every
    dataset's free energy within 4 of its own standard errors of the closed form
    (measured: |dF| <= 0.08 nats, se 0.03-0.07), and the posterior means within 4 Monte
    Carlo standard errors (sd / sqrt(ESS)) of the exact ones; dataset 1 as a Result of its
    own."""
    model, Y, exact, mean, sd = _linear_gaussian(3)
    res = ji.batch(ji.sample, model, Y, jax.random.key(8), method=method, **options)
    assert res.method == method and not res.failed.any()
    log_z = np.asarray(res.log_evidence)
    se = np.asarray(res.stacked.log_evidence_se)
    assert np.all(np.isfinite(se)) and np.all(se > 0)
    assert np.all(np.abs(log_z - exact) < 4 * se), (log_z, exact, se)
    draws = np.asarray(res.params["w"]).reshape(3, -1, 3)
    ess = np.asarray(res.stats["ess_min"])[:, None]
    assert np.all(np.abs(draws.mean(1) - mean) < 4 * sd / np.sqrt(ess)), (draws.mean(1) - mean) / sd
    one = res[1]
    assert one.method == method and float(one.log_evidence) == log_z[1]
    assert float(one.stats["rhat_max"]) < 1.05
