"""ji.batch: many datasets through one engine -- equality with single-dataset calls, keys,
failures marked (bad data, a dataset that raises), chunk files and resume, selection,
save/load; several devices and several processes in subprocesses (tests/scripts)."""

import json
import os
import subprocess
import sys
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
    with pytest.warns(RuntimeWarning, match="1 of 6 datasets failed"):
        res = ji.batch(ji.map_estimate, decay_model(), Y, jax.random.key(3), n_starts=4)
    return Y, res


def test_map_batch_equals_single_calls(map_batch):
    """Dataset i of the batch is ``map_estimate(model.condition(Y[i]), fold_in(key, i))``:
    MAP, Laplace sds and the Laplace evidence to float tolerance."""
    Y, res = map_batch
    model = decay_model()
    for i in (0, 5):
        single = ji.map_estimate(model.condition(Y[i]), jax.random.fold_in(jax.random.key(3), i), n_starts=4)
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
    bit, as one chunk of 4 (keys from the global dataset index)."""
    Y, amplitude, tau = data(4, seed=1)
    model = decay_model()
    kw = dict(n_chains=2, n_warmup=150, n_draws=150)
    whole = ji.batch(ji.sample, model, Y, jax.random.key(0), **kw)
    chunked = ji.batch(ji.sample, model, Y, jax.random.key(0), chunk_size=2, **kw)
    assert whole.method == "hmc" and whole.lane_efficiency == 1.0
    np.testing.assert_array_equal(np.asarray(whole.params["decay_time"]), np.asarray(chunked.params["decay_time"]))
    assert np.asarray(whole.params["decay_time"]).shape == (4, 2, 150)
    assert np.all(np.asarray(whole.stats["rhat_max"]) < 1.1)
    # the posteriors sit on the truths (4 datasets x 2 parameters, 4 sd)
    for name, truth in (("amplitude", amplitude), ("decay_time", tau)):
        draws = np.asarray(whole.params[name]).reshape(4, -1)
        assert np.all(np.abs(draws.mean(1) - truth) < 4 * draws.std(1)), name
    nuts = ji.batch(ji.sample, model, Y, jax.random.key(0), method="nuts", **kw)
    assert 0.0 < nuts.lane_efficiency < 1.0
    # the single-dataset engine on dataset 1 draws from the same posterior (Monte Carlo error)
    single = ji.sample(model.condition(Y[1]), jax.random.fold_in(jax.random.key(0), 1), method="hmc", **kw)
    a, b = np.asarray(single.params["decay_time"]).ravel(), np.asarray(whole.params["decay_time"][1]).ravel()
    assert abs(a.mean() - b.mean()) < 0.5 * a.std(), (a.mean(), b.mean(), a.std())


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


def test_resume_after_a_kill_recomputes_only_missing_chunks(tmp_path, monkeypatch):
    Y, _, _ = data(6, seed=3)
    model = decay_model()
    reference = ji.batch(ji.map_estimate, model, Y, jax.random.key(2), n_starts=2)

    calls = []
    real = jb._run_chunk

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(jb, "_run_chunk", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        ji.batch(ji.map_estimate, model, Y, jax.random.key(2), n_starts=2, chunk_size=2, out=tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").glob("chunk_*.npz")) == ["chunk_000000.npz", "chunk_000001.npz"]
    calls.clear()
    resumed = ji.batch(ji.map_estimate, model, Y, jax.random.key(2), n_starts=2, chunk_size=2, out=tmp_path / "run")
    assert len(calls) == 1  # only the missing chunk
    for name in reference.params:
        np.testing.assert_allclose(resumed.params[name], reference.params[name], rtol=1e-10)
    with pytest.raises(ValueError, match="different batch"):
        ji.batch(ji.map_estimate, model, Y, jax.random.key(9), n_starts=2, chunk_size=2, out=tmp_path / "run")


def test_batched_selection_matches_select_per_dataset():
    """Two models (one exponential, a constant) over 3 datasets by Laplace free energies:
    dataset i, model j equals ``ji.select(models, Y[i], fold_in(key, i))``."""
    Y, _, _ = data(3, seed=4)
    flat = ji.Model(lambda p: p["level"] * jnp.ones_like(T), {"level": ji.priors.Uniform(-1.0, 5.0)},
                    ji.likelihoods.Normal(sigma=SIGMA))
    models = {"decay": decay_model(), "flat": flat}
    sel = ji.batch(ji.select, models, Y, jax.random.key(4), n_starts=4)
    assert sel.selected == ["decay"] * 3
    assert sel.free_energies.shape == (3, 2) and np.all(sel.probabilities[:, 0] > 0.999)
    single = ji.select(models, Y[1], jax.random.fold_in(jax.random.key(4), 1), n_starts=4)
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


def _run_script(name, *args, env_extra=None, timeout=600):
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
def test_sharded_ode_map_and_hmc_agree_with_one_device():
    """Slow (~3 CPU-minutes: six compiled batch programs in a fresh process): the ODE MAP
    sharded equals one device to float tolerance; sharded HMC draws agree with one-device
    draws within Monte Carlo error (|difference of means| < 4 standard errors over 8
    datasets x 2 parameters), with lane efficiency 1."""
    out = _run_script("batch_devices.py", "--slow")
    assert out["ode_map_max_rel_diff"] < 1e-6, out
    assert out["ode_map_failed"] == 0
    assert out["hmc_max_z"] < 4.0, out
    assert out["hmc_efficiency"] == 1.0
