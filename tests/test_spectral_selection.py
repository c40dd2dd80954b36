"""Model selection by REMC free energy on fresh synthetic spectra (Nagata et al. 2012 benchmark).

Twenty spectra are drawn with :func:`problems.spectral_deconvolution.simulate` from fresh
seeds (never the embedded default seed) at the paper's noise level (sigma = 0.1, 301
points on [0, 3], the paper's priors, positions ordered).  For each spectrum the free
energy F = -log p(y | K) of K = 3 and 4 peaks (and K = 2 in the slow run) comes from
replica exchange Monte Carlo, vmapped over the 20 spectra (one compiled program per K).
K = 1 is left out: on the
default data it is ~115 nats worse than K = 2 and ~210 nats worse than K = 3 (Laplace:
-44, -159, -256), so it can never be selected and only costs another compilation.

What the method achieves (measured; see the report of the branch that added this file):

* K = 2 is always far worse than K = 3 (by ~100 nats): the true peaks are never missed.
* K = 4 is only barely separated from K = 3.  With the paper's priors an extra peak cannot
  vanish (Gamma(5, rate 5) puts no mass near zero height), so a fourth peak splits a
  true one: on the default data the K = 4 posterior splits the tallest peak (height
  1.52 at 1.455) in 90% of the draws into two peaks ~0.05 apart of mean heights 0.88 and
  0.79 -- right at the mode (0.8) of the height prior -- and the prior-volume (Occam)
  penalty of the split is almost exactly paid back.
  Converged REMC on the default data: F(3) = -256.05 +- 0.06, F(4) = -255.77 +- 0.04
  (4000 + 8000 sweeps; four seeds -255.72 .. -256.04); F(4) - F(3) = +0.28 nats, i.e.
  p(K=3 | y) ~ 0.57 against K = 4.  Over the 20 fresh spectra the slow run below
  (24 replicas, 2 chains, 3000 sweeps) gives F(4) - F(3) = +0.30 nats on average, sd
  0.24 (range -0.15 .. +0.96): K = 3 has the lowest F in 18 of 20, and the two misses
  (-0.01, -0.15) are within its Monte Carlo error (s.e. ~0.1).  The short default run
  adds ~0.4 nats of noise (sd 0.60) and gets 13 of 20.  So the true K wins almost
  always, but by a Bayes factor of only ~1.35 -- never decisively -- and "at least 19
  of 20" sits at the edge of what even converged free energies give.  The tests assert
  what the method does achieve (K = 3 favoured on average and never decisively beaten;
  in the slow run, which also runs K = 2: true peaks always found, 18/20-level recovery).  The issue's strict
  19/20 is not asserted: converged free energies give 18/20 here (see the issue note).
* Posterior coverage of the K = 3 model is calibrated (see ``test_k3_posterior_covers_truth``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.inference import evidence
from jaxinv.inference import replica_exchange as rx
from jaxinv.inference._draws import constrain_draws
from problems import spectral_deconvolution as sd

N_REPLICATES = 20
#: fresh seeds: not the embedded default spectrum's (2012), not used by other tests
SEEDS = tuple(range(20261123, 20261123 + N_REPLICATES))
KS = (2, 3, 4)
TRUTH = {k: np.asarray(v) for k, v in sd.TRUTH.items()}

# default run (~100 s on 2 CPU cores): short, single-chain REMC of K = 3 and K = 4.  K = 2
# (~100 nats from K = 3) is in the slow run only; its fast twin is
# tests/test_spectral_deconvolution.py::test_laplace_free_energy_selects_three_peaks (K = 3
# beats K = 2 by > 20 nats on the default spectrum).
FAST = {
    3: dict(n_replicas=16, n_chains=1, n_tune=400, n_draws=800, n_local_steps=1, num_integration_steps=8),
    4: dict(n_replicas=16, n_chains=1, n_tune=400, n_draws=800, n_local_steps=1, num_integration_steps=8),
}
# slow run (~15 CPU-minutes): 24 replicas, 2 chains, 3000 sweeps of 2 local HMC moves for
# K = 3 and K = 4 (on the default data such runs agree with 12000-sweep runs to ~0.15 nats)
SLOW = {
    2: dict(n_replicas=16, n_chains=1, n_tune=400, n_draws=800, n_local_steps=1, num_integration_steps=8),
    3: dict(n_replicas=24, n_chains=2, n_tune=1000, n_draws=2000, n_local_steps=2, num_integration_steps=8),
    4: dict(n_replicas=24, n_chains=2, n_tune=1000, n_draws=2000, n_local_steps=2, num_integration_steps=8),
}


# ----------------------------------------------------------------------------- helper
def batched_remc(model, Y, key, *, n_replicas=24, n_chains=2, n_tune=1000, n_draws=2000, beta_min=1e-4,
                 n_local_steps=3, num_integration_steps=8, target_acceptance=0.65, n_batches=20):
    """``sample_remc`` (HMC local moves, DEO swaps, adaptive ladder) vmapped over the rows of ``Y``.

    One compiled program runs every dataset's ``n_chains`` replica-exchange systems: the
    Posterior is built inside the vmapped function from a traced ``y`` (its data checks
    skip tracers), and the engine's own ``_start``/``_advance_one`` do the sweeps.

    Returns ``{"F", "F_se", "F_ti", "params"}``: free energies ``(D,)`` (bridge sampling,
    its batch-means s.e., thermodynamic integration) and constrained draws
    ``{name: (D, chains, draws, ...)}`` of the beta = 1 replica.
    """
    Y = jnp.asarray(Y)
    post0 = model.condition(np.asarray(Y[0]))
    config = rx._Config("hmc", "deo", int(n_local_steps), int(num_integration_steps), int(n_tune), int(n_draws),
                        float(target_acceptance), True, rx._round_ends(int(n_tune)))
    betas = rx.geometric_ladder(n_replicas, beta_min)
    step_size = 0.5 * post0.dim ** -0.25  # as sample_remc
    total = config.n_tune + config.n_draws

    @jax.jit
    def run(Y, keys):
        def one(y, key):
            post = model.condition(y)
            init_key, run_key = jax.random.split(key)
            runs = jax.vmap(lambda k: rx._start(post, k, config, betas, step_size))(
                jax.random.split(init_key, n_chains))
            return jax.vmap(lambda k, r: rx._advance_one(post, config, k, r, total))(
                jax.random.split(run_key, n_chains), runs)

        return jax.vmap(one)(Y, keys)

    runs = run(Y, jax.random.split(key, Y.shape[0]))
    ll = np.asarray(runs.log_likelihood)    # (D, chains, draws, R)
    ladder = np.asarray(runs.state.betas)   # (D, chains, R)
    bridge = np.array([evidence.ladder_evidence(ladder[i], ll[i], "bridge", n_batches) for i in range(len(ll))])
    ti = np.array([evidence.ladder_evidence(ladder[i], ll[i], "ti", n_batches)[0] for i in range(len(ll))])
    params, _ = constrain_draws(post0, runs.draws)
    return {"F": -bridge[:, 0], "F_se": bridge[:, 1], "F_ti": -ti,
            "params": {k: np.asarray(v) for k, v in params.items()}}


def _datasets():
    return [sd.simulate(jax.random.key(seed)) for seed in SEEDS]


def _run_all(settings, key):
    """``{K: batched_remc(...)}`` for the K in ``settings``; each K keeps its own key (the one
    it has when every K in ``KS`` runs)."""
    data = _datasets()
    Y = np.stack([d.y for d in data])
    keys = dict(zip(KS, jax.random.split(key, len(KS))))
    out = {}
    for k in sorted(settings):
        model = sd.models(data[0], n_components=(k,))[f"K={k}"]
        out[k] = batched_remc(model, Y, keys[k], **settings[k])
    return out


def _coverage(params, level=0.90):
    """``(covered, z)``: per (replicate, parameter) whether the truth lies in the central
    ``level`` credible interval, and (posterior mean - truth) / posterior sd."""
    lo, hi = (1 - level) / 2, (1 + level) / 2
    covered, z = [], []
    for name, truth in TRUTH.items():
        draws = params[name].reshape(params[name].shape[0], -1, truth.size)  # (D, samples, K)
        q = np.quantile(draws, [lo, hi], axis=1)                             # (2, D, K)
        covered.append((q[0] <= truth) & (truth <= q[1]))
        z.append((draws.mean(axis=1) - truth) / draws.std(axis=1))
    return np.concatenate(covered, axis=1), np.concatenate(z, axis=1)


@pytest.fixture(scope="module")
def fast():
    return _run_all(FAST, jax.random.key(20120301))


def _selected(runs):
    """The K of lowest free energy, per spectrum."""
    f = np.stack([runs[k]["F"] for k in sorted(runs)], axis=1)  # (D, number of K run)
    return np.array(sorted(runs))[np.argmin(f, axis=1)]


# ----------------------------------------------------------------------------- default run
def test_remc_estimators_agree(fast):
    """Bridge sampling and thermodynamic integration over the same ladder agree to well
    within the K = 3 / K = 4 gap scale, and the batch-means errors are small."""
    for k in sorted(fast):
        assert np.all(np.isfinite(fast[k]["F"])), k
        assert np.max(np.abs(fast[k]["F"] - fast[k]["F_ti"])) < 0.5, (k, fast[k]["F"] - fast[k]["F_ti"])
    assert np.max(fast[3]["F_se"]) < 0.5 and np.max(fast[4]["F_se"]) < 0.5


def test_selection_prefers_three_peaks_on_average(fast):
    """K = 3 against K = 4: favoured on average, never decisively beaten -- but not 19/20.

    Measured in this run: F(4) - F(3) has mean +0.38 nats and sd 0.60 over the 20
    spectra (scatter between spectra plus ~0.3 nats of Monte Carlo error of this short
    run; t = 2.8 for the mean), ranging from -0.40 to +1.70; K = 3 has the lowest F in
    13 of 20.  Asserted with margins that survive another platform's floating point
    (different rounding gives different chains): mean > 0; no spectrum gives K = 4 a
    Bayes factor above e^2 (~7); K = 3 selected in >= 8 of 20 (binomial, p ~ 0.65: the
    probability of 7 or fewer is 0.6%, 2% at p = 0.6)."""
    delta = fast[4]["F"] - fast[3]["F"]
    assert delta.mean() > 0, delta
    assert np.all(delta > -2.0), delta
    n_true = int(np.sum(_selected(fast) == 3))
    assert n_true >= 8, (n_true, delta)


def test_k3_posterior_covers_truth(fast):
    """The K = 3 posterior (ordered positions, so labels match the truth) covers the truth.

    180 (replicate, parameter) pairs; for a calibrated posterior each 90% interval covers
    with probability 0.9: 162 expected, binomial sd 4.0; pairs of one spectrum are
    correlated (overlapping peaks), which at worst inflates the sd about threefold
    (9 correlated parameters).  >= 80% (144) is 4.5 binomial sd (2.6 inflated sd) below
    the nominal count.  The standardised errors z = (mean - truth) / sd must also look
    calibrated: E[z^2] = 1, asserted within [0.5, 2] (the mean of 180 chi^2_1 values has
    sd ~0.1 if independent)."""
    covered, z = _coverage(fast[3]["params"])
    assert covered.shape == (N_REPLICATES, 9)
    frac = covered.mean()
    assert frac >= 0.80, (frac, covered.mean(axis=0))
    assert 0.5 < np.mean(z**2) < 2.0, np.mean(z**2)
    # every parameter's posterior mean is near the truth (no label switching, no lost peak)
    assert np.all(np.abs(z) < 5), np.abs(z).max(axis=0)


# ----------------------------------------------------------------------------- slow: long runs
@pytest.fixture(scope="module")
def slow_runs():
    return _run_all(SLOW, jax.random.key(20120302))


@pytest.mark.slow
def test_selection_finds_the_true_peaks(slow_runs):
    """K = 2 is never selected: every true peak is resolved, by a wide margin."""
    gap = slow_runs[2]["F"] - slow_runs[3]["F"]
    assert np.all(gap > 40), gap
    assert np.all(_selected(slow_runs) >= 3)


@pytest.mark.slow
def test_slow_selection_and_coverage(slow_runs):
    """Longer runs (24 replicas, 2 chains): the same properties as the default run."""
    delta = slow_runs[4]["F"] - slow_runs[3]["F"]
    # measured: mean +0.30, sd 0.24 (t = 5.5), min -0.15, K = 3 lowest in 18 of 20
    assert delta.mean() > 3 * delta.std(ddof=1) / np.sqrt(delta.size), delta
    assert np.all(delta > -1.0), delta
    assert int(np.sum(_selected(slow_runs) == 3)) >= 16
    covered, z = _coverage(slow_runs[3]["params"])
    assert covered.mean() >= 0.80 and 0.5 < np.mean(z**2) < 2.0
