"""Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018,
arXiv:1804.06788) of the sampling engines: NUTS, adaptive tempered SMC, replica exchange.

Model: an exponential decay ``y_i = A exp(-t_i / tau) + eps_i``, ``eps_i ~ N(0, sigma^2)``
at 10 times, with three inferred parameters (``A ~ Normal(1, 0.3)``,
``tau ~ LogNormal(0, 0.5)``, ``sigma ~ LogNormal(log 0.1, 0.3)``): nonlinear in tau,
with the noise level a parameter as in most real fits, and cheap.

Each replication draws ``theta ~ prior`` and ``y ~ p(y | theta)``, conditions the model
on ``y`` and runs the engine's compiled internals on it, then ranks ``theta`` among
``L = 99`` thinned posterior draws.  All replications of one engine are a single
compiled program: the replication is ``vmap``-ed over PRNG keys, the Posterior built
from the traced ``y`` inside it.  Under a correct engine the ranks are uniform on
``{0, ..., 99}``; they are binned into 10 bins and a chi-square test must give
``p > 0.01`` for every parameter of every engine.  A negative control (data twice as
noisy as the model says) must fail it.

The replications are shared by the engines (same keys, hence the same ``theta`` and
``y``), so the three engines' rank histograms are comparable but not independent.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv.inference import mcmc, smc
from jaxinv.inference import replica_exchange as remc
from jaxinv.inference.diagnostics import rank_histogram, rank_uniformity_pvalue, sbc_ranks, thin

T = jnp.linspace(0.0, 3.0, 10)
L = 99        # posterior draws each true value is ranked among (L + 1 = 100 rank values)
N_BINS = 10   # 10 rank values per bin
N_REPS = 200  # 20 expected per bin
ALPHA = 0.01


class Decay(eqx.Module):
    t: jax.Array

    def __call__(self, p):
        return p["amplitude"] * jnp.exp(-self.t / p["tau"])


MODEL = ji.Model(
    Decay(T),
    {"amplitude": ji.priors.Normal(1.0, 0.3), "tau": ji.priors.LogNormal(0.0, 0.5)},
    ji.likelihoods.Normal(sigma=ji.priors.LogNormal(np.log(0.1), 0.3)),
)
PRIOR = MODEL.condition(np.zeros(T.shape))  # for prior draws and predictions only (its y is unused)
NAMES = PRIOR.names


# --- engines: each takes a Posterior and a key and returns unconstrained draws (chains, draws, dim),
# --- calling the same jitted internals as ji.sample, with modest run lengths
def nuts(post, key, *, n_chains=2, n_warmup=200, n_draws=200):
    # bulk ESS is ~250 of these 400 draws on this model: kept every 4th per chain is ~independent
    config = mcmc._Config("nuts", n_warmup, n_draws, 16, 0.8, 1.0)
    init_key, warm_key, draw_key = jax.random.split(key, 3)
    chains = mcmc._warmup(post, config, jax.random.split(warm_key, n_chains), post.init(init_key, n_chains))
    chains = mcmc._draw(post, config, jax.random.split(draw_key, n_chains), chains, jnp.asarray(n_draws))
    return chains.position


def tempered_smc(post, key, *, n_particles=200, kernel="hmc", num_mcmc_steps=5, max_mcmc_steps=30,
                 num_integration_steps=8):
    # sample_smc's HMC settings at target_ess 0.5 except max_mcmc_steps (default 100) -- kept low for speed
    config = smc._Config(kernel, "resample_move", num_mcmc_steps, max_mcmc_steps, 0.1, num_integration_steps,
                         0.5, 0.65 if kernel == "hmc" else 0.3, 200)
    init_key, run_key, draw_key, order_key = jax.random.split(key, 4)
    states = jax.tree_util.tree_map(lambda x: x[None], smc.init(post, init_key, n_particles, kernel, 200))
    states = smc._advance(post, config, run_key[None], states, jnp.asarray(config.max_steps))
    # resampled at beta = 1 as sample_smc returns them; systematic resampling orders particles by
    # ancestor, so shuffle before keeping a subset
    z = smc._final_draws(draw_key[None], states)
    return jax.random.permutation(order_key, z, axis=1)


def replica_exchange(post, key, *, n_replicas=8, n_tune=400, n_draws=400, beta_min=1e-3, local_kernel="hmc",
                     n_local_steps=1):
    config = remc._Config(local_kernel, "deo", n_local_steps, 8, n_tune, n_draws, 0.65, True, remc._round_ends(n_tune))
    betas = remc.geometric_ladder(n_replicas, beta_min)
    start_key, run_key = jax.random.split(key)
    runs = remc._starts(post, config, start_key[None], betas, 0.5 * post.dim ** -0.25)
    runs = remc._advance(post, config, run_key[None], runs, jnp.asarray(n_tune + n_draws))
    return runs.draws


ENGINES = {"nuts": nuts, "smc": tempered_smc, "remc": replica_exchange,
           # the default local kernel of sample_remc for models of <= 10 parameters (slice moves in
           # each rung's dense covariance metric), at 3 moves per sweep instead of the default 10
           "remc_slice": functools.partial(replica_exchange, local_kernel="slice", n_local_steps=3)}


def keep(z, n):
    """``n`` draws from ``z`` ``(chains, draws, dim)``: each chain thinned evenly, then pooled."""
    per = -(-n // z.shape[0])
    return thin(z, per, axis=1).reshape(-1, z.shape[-1])[:n]


def replication(engine, key, noise_scale):
    """One SBC replication: ranks of a prior draw among ``L`` draws from the engine's posterior
    given data simulated from it (with noise ``noise_scale`` times the model's: 1 is correct)."""
    theta_key, noise_key, engine_key = jax.random.split(key, 3)
    z_true = PRIOR.init(theta_key, 1)[0]
    theta = PRIOR.constrain(z_true)
    y = PRIOR.predict(z_true) + noise_scale * theta["sigma"] * jax.random.normal(noise_key, T.shape)
    post = MODEL.condition(y)
    draws = jax.vmap(post.constrain)(keep(engine(post, engine_key), L))
    return sbc_ranks(theta, draws)


@functools.cache
def program(name, settings=()):
    """All replications as one compiled program (one compilation per engine and settings)."""
    engine = functools.partial(ENGINES[name], **dict(settings))
    return jax.jit(jax.vmap(functools.partial(replication, engine), in_axes=(0, None)))


def sbc(name, n_reps=N_REPS, seed=0, noise_scale=1.0, **settings):
    keys = jax.random.split(jax.random.key(seed), n_reps)
    ranks = program(name, tuple(sorted(settings.items())))(keys, jnp.asarray(noise_scale))
    ranks = {k: np.asarray(v) for k, v in ranks.items()}
    pvalues = {k: float(rank_uniformity_pvalue(v, L, N_BINS)) for k, v in ranks.items()}
    return ranks, pvalues


def report(ranks, pvalues):
    return "; ".join(f"{k}: p={pvalues[k]:.3g} bins={np.asarray(rank_histogram(ranks[k], L, N_BINS)).tolist()}"
                     for k in ranks)


# --- the diagnostics themselves ----------------------------------------------------------
def test_pvalue_matches_scipy_chisquare():
    from scipy import stats

    ranks = np.random.default_rng(0).integers(0, L + 1, size=(N_REPS, 2))
    ranks[:40, 1] = 0  # a pile-up in the first bin
    counts = np.asarray(rank_histogram(ranks, L, N_BINS))
    p = np.asarray(rank_uniformity_pvalue(ranks, L, N_BINS))
    for j in range(2):
        np.testing.assert_allclose(p[j], stats.chisquare(counts[:, j]).pvalue, rtol=1e-8)
    assert p[0] > ALPHA > p[1]
    with pytest.raises(ValueError):
        rank_uniformity_pvalue(ranks, 100, N_BINS)  # 101 rank values do not fill 10 bins equally


def test_exact_posterior_draws_calibrate_and_a_too_narrow_one_does_not():
    """Conjugate normal model, exact posterior draws: uniform ranks; the same draws
    shrunk to half their spread around the posterior mean: a U-shaped histogram."""
    def ranks(key, shrink):
        k1, k2, k3 = jax.random.split(key, 3)
        mu = jax.random.normal(k1)                       # prior N(0, 1)
        y = mu + 0.5 * jax.random.normal(k2, (4,))       # 4 data, sigma 0.5
        precision = 1.0 + 4 / 0.25
        mean, sd = (jnp.sum(y) / 0.25) / precision, precision ** -0.5
        draws = mean + shrink * sd * jax.random.normal(k3, (L,))
        return sbc_ranks(mu, draws)

    keys = jax.random.split(jax.random.key(1), N_REPS)
    exact = jax.vmap(ranks, in_axes=(0, None))(keys, 1.0)
    narrow = jax.vmap(ranks, in_axes=(0, None))(keys, 0.5)
    assert float(rank_uniformity_pvalue(exact, L, N_BINS)) > ALPHA
    assert float(rank_uniformity_pvalue(narrow, L, N_BINS)) < ALPHA


# --- the engines -------------------------------------------------------------------------
# replica exchange with HMC local moves: in the slow set below (CI time)
@pytest.mark.parametrize("name", ["nuts", "smc", "remc_slice"])
def test_engine_is_calibrated(name):
    ranks, pvalues = sbc(name)
    print(f"{name}: {report(ranks, pvalues)}")
    assert all(r.shape == (N_REPS,) for r in ranks.values())
    bad = [k for k, p in pvalues.items() if not p > ALPHA]
    assert not bad, f"{name}: SBC ranks not uniform for {bad}: {report(ranks, pvalues)}"


def test_negative_control_misspecified_noise_fails():
    """Data simulated with twice the noise the model assumes (the fit's sigma is off by 2x):
    every posterior draw of sigma exceeds the true value, its ranks pile up at the bottom and the
    test must reject uniformity."""
    ranks, pvalues = sbc("nuts", noise_scale=2.0)
    print(f"nuts, noise 2x: {report(ranks, pvalues)}")
    assert pvalues["sigma"] < ALPHA, report(ranks, pvalues)
    assert np.mean(ranks["sigma"] < (L + 1) // 2) > 0.9, report(ranks, pvalues)


# --- bigger versions (-m slow) -------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name, settings", [
    ("nuts", dict(n_chains=4, n_warmup=500, n_draws=500)),
    ("smc", dict(n_particles=300, max_mcmc_steps=50)),
    ("smc", dict(n_particles=300, kernel="rwm", num_mcmc_steps=20, max_mcmc_steps=400)),
    ("remc", dict(n_tune=1000, n_draws=1000)),
])
def test_engine_is_calibrated_slow(name, settings):
    ranks, pvalues = sbc(name, n_reps=1000, seed=1, **settings)
    print(f"{name} {settings}: {report(ranks, pvalues)}")
    bad = [k for k, p in pvalues.items() if not p > ALPHA]
    assert not bad, f"{name} {settings}: SBC ranks not uniform for {bad}: {report(ranks, pvalues)}"
