"""A multimodal posterior (label switching without ordering): replica exchange explores both
modes, a single NUTS chain stays in the one it started in."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv.inference.mcmc import sample_hmc
from jaxinv.inference.replica_exchange import sample_remc

X = jnp.linspace(0.0, 1.0, 60)
WIDTH = 0.05


def _two_peaks(p):
    """Two unit Gaussian peaks at exchangeable positions: (mu1, mu2) and (mu2, mu1) fit equally."""
    mu = p["position"]
    return jnp.sum(jnp.exp(-0.5 * ((X[:, None] - mu[None, :]) / WIDTH) ** 2), axis=1)


def _posterior():
    truth = {"position": jnp.array([0.3, 0.7])}
    y = _two_peaks(truth) + 0.05 * jnp.cos(37.0 * X)  # deterministic "noise"
    model = ji.Model(_two_peaks, {"position": ji.priors.Uniform(0.0, 1.0, shape=2)}, ji.likelihoods.Normal(sigma=0.05))
    return model.condition(y)


def _fraction_first_left(res):
    mu = np.asarray(res.params["position"])
    return (mu[..., 0] < mu[..., 1]).mean(axis=-1)  # per chain


def test_remc_visits_both_label_modes_where_nuts_is_stuck():
    post = _posterior()
    nuts = sample_hmc(post, jax.random.key(0), n_chains=1, n_warmup=300, n_draws=1000)
    stuck = float(_fraction_first_left(nuts)[0])
    assert stuck < 0.01 or stuck > 0.99  # one mode only: the barrier is ~100 nats high

    remc = sample_remc(post, jax.random.key(1), n_chains=1, n_replicas=16, n_tune=500, n_draws=3000)
    mixed = float(_fraction_first_left(remc)[0])
    assert 0.3 < mixed < 0.7  # both symmetric modes, in (near) equal proportion
    assert int(remc.stats["round_trips"][0]) >= 10  # walkers travel the whole ladder
    # within each mode the positions are the truth
    mu = np.sort(np.asarray(remc.params["position"])[0], axis=-1)
    np.testing.assert_allclose(mu.mean(0), [0.3, 0.7], atol=0.01)
