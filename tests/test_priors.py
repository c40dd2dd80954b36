"""Priors: transforms round-trip, log-Jacobians against numerical derivatives,
normalisation (including ordered vectors), bad arguments."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
import pytest
from scipy import integrate

import jaxinv as ji

SCALAR_PRIORS = {
    "uniform": ji.priors.Uniform(-1.0, 3.0),
    "loguniform": ji.priors.LogUniform(1e-3, 1e2),
    "normal": ji.priors.Normal(0.5, 2.0),
    "halfnormal": ji.priors.HalfNormal(1.5),
    "lognormal": ji.priors.LogNormal(0.0, 1.0),
    "exponential": ji.priors.Exponential(2.0),
    "laplace": ji.priors.Laplace(0.0, 1.0),
    "numpyro-gamma": ji.priors.as_prior(npd.Gamma(2.0, 3.0)),
}


@pytest.mark.parametrize("name", list(SCALAR_PRIORS))
def test_round_trip_and_log_jacobian(name):
    prior = SCALAR_PRIORS[name]
    u = jnp.linspace(-3.0, 3.0, 13)
    x = jax.vmap(prior.constrain)(u)
    np.testing.assert_allclose(jax.vmap(prior.unconstrain)(x), u, rtol=1e-9, atol=1e-9)
    # log|dT/du| from the density of u minus the density of x
    logjac = jax.vmap(prior.log_density_unconstrained)(u) - jax.vmap(prior.log_prob)(x)
    numeric = np.log(np.abs(np.asarray(jax.vmap(jax.grad(prior.constrain))(u))))
    np.testing.assert_allclose(logjac, numeric, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", list(SCALAR_PRIORS))
def test_unconstrained_density_normalised(name):
    prior = SCALAR_PRIORS[name]
    log_density = jax.jit(prior.log_density_unconstrained)  # one compile, not one dispatch per op and node
    total, _ = integrate.quad(lambda u: math.exp(float(log_density(u))), -60, 60, limit=400)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_ordered_vector_is_sorted_and_normalised():
    prior = ji.priors.LogUniform(0.1, 10.0, shape=2, ordered=True)
    u = jnp.array([0.3, -2.0])
    x = prior.constrain(u)
    assert x[0] < x[1]
    np.testing.assert_allclose(prior.unconstrain(x), u, rtol=1e-10)
    # numerical log|det J| for the vector map
    jac = jax.jacfwd(prior.constrain)(u)
    logdet = np.log(abs(np.linalg.det(np.asarray(jac))))
    np.testing.assert_allclose(prior.log_density_unconstrained(u) - prior.log_prob(x), logdet, rtol=1e-9)
    # density of the order statistics integrates to one over x1 < x2
    log_prob = jax.jit(lambda x1, x2: prior.log_prob(jnp.stack([x1, x2])))
    f = lambda x2, x1: math.exp(float(log_prob(x1, x2)))
    total, _ = integrate.dblquad(f, 0.1, 10.0, lambda x1: x1, lambda x1: 10.0)
    assert total == pytest.approx(1.0, rel=1e-6)
    draws = prior.sample(jax.random.key(0), 100)
    assert bool(jnp.all(draws[:, 0] < draws[:, 1]))


def test_dirichlet_simplex():
    prior = ji.priors.Dirichlet(1.0, shape=3)
    assert prior.unconstrained_shape == (2,)
    x = prior.constrain(jnp.array([0.2, -0.4]))
    assert float(jnp.sum(x)) == pytest.approx(1.0)
    np.testing.assert_allclose(prior.unconstrain(x), [0.2, -0.4], rtol=1e-9)


def test_saturating_coordinates_are_those_of_bounded_supports():
    """The MAP search limits its steps where the unconstrained map is a sigmoid."""
    bounded = [ji.priors.Uniform(0.0, 1.0), ji.priors.LogUniform(1e-2, 1e2, shape=2), ji.priors.Dirichlet(1.0, shape=3),
               ji.priors.Flat(support=npd.constraints.interval(0.0, 1.0)),
               ji.priors.as_prior(npd.Uniform(jnp.zeros(2), 1.0).to_event(1))]  # through the event wrapper
    open_ended = [ji.priors.Normal(0.0, 1.0), ji.priors.HalfNormal(1.0), ji.priors.LogNormal(0.0, 1.0),
                  ji.priors.Exponential(1.0), ji.priors.Flat()]
    assert all(p.saturates for p in bounded) and not any(p.saturates for p in open_ended)
    priors = {"a": ji.priors.Normal(0.0, 1.0), "w": ji.priors.Dirichlet(1.0, shape=3),
              "b": ji.priors.LogUniform(1e-2, 1e2, shape=2)}
    model = ji.Model(lambda p: p["a"] + p["w"][0] * p["b"][0], priors, ji.likelihoods.Normal(sigma=1.0))
    assert model.condition(jnp.zeros(())).saturating.tolist() == [False, True, True, True, True]


def test_bad_prior_arguments():
    with pytest.raises(ValueError, match="high > low"):
        ji.priors.Uniform(2.0, 1.0)
    with pytest.raises(ValueError, match="positive"):
        ji.priors.Normal(0.0, -1.0)
    with pytest.raises(ValueError, match="positive"):
        ji.priors.LogUniform(0.0, 1.0)
    with pytest.raises(ValueError, match="i.i.d."):
        ji.priors.Prior(npd.Normal(jnp.array([0.0, 1.0]), 1.0), ordered=True)
    with pytest.raises(ValueError, match="improper"):
        ji.priors.Flat().sample(jax.random.key(0), 3)
