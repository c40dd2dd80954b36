"""Latent Gaussian fields (jaxinv/inference/latent_field.py) against dense linear algebra:
the Gaussian-likelihood posterior in closed form, the Poisson mode and curvature by a
dense Newton solve, and the smoothness by the exact marginal likelihood's maximum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar

import jaxinv as ji

NOISE = 0.3


def _gaussian_case(shape, order, seed=0):
    prior = ji.priors.GaussianMRF(shape, order=order, precision=3.0, boundary_sd=2.0, mean=0.5)
    truth = prior.distribution.sample(jax.random.key(seed))
    y = truth + NOISE * jax.random.normal(jax.random.key(seed + 1), truth.shape)
    return prior, y


def _dense_gaussian_posterior(prior, y):
    q = prior.distribution.precision_matrix
    h = q + jnp.eye(q.shape[0]) / NOISE**2
    mean = jnp.linalg.solve(h, q @ jnp.full(q.shape[0], 0.5) + y.ravel() / NOISE**2)
    return mean, jnp.linalg.inv(h)


@pytest.mark.parametrize("shape, order", [((12, 9), 1), (30, 2), ((8, 7), 2)])
def test_gaussian_likelihood_gives_the_exact_posterior(shape, order):
    prior, y = _gaussian_case(shape, order)
    field = ji.gmrf_laplace(prior, lambda x: -0.5 * ((y - x) / NOISE) ** 2, jax.random.key(3), n_draws=4000)
    mean, cov = _dense_gaussian_posterior(prior, y)
    assert bool(field.converged)
    np.testing.assert_allclose(np.ravel(field.mode), mean, atol=1e-8)
    sd = np.sqrt(np.diag(cov))
    # sd of a sample sd is sd / sqrt(2 n): 1.1 % for 4000 draws; 5 of those for the max over cells
    np.testing.assert_allclose(np.ravel(field.sd), sd, rtol=0.06)
    draws = np.reshape(field.draws, (4000, -1))
    emp = np.cov(draws[:, :2].T)  # a neighbour pair's covariance
    np.testing.assert_allclose(emp[0, 1] / np.sqrt(emp[0, 0] * emp[1, 1]),
                               cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1]), atol=0.06)


def test_poisson_mode_and_curvature_match_a_dense_newton_solve():
    shape = (10, 8)
    prior = ji.priors.GaussianMRF(shape, order=1, precision=4.0, boundary_sd=1.0, mean=1.0)
    rate = jnp.exp(prior.distribution.sample(jax.random.key(0)))
    counts = jax.random.poisson(jax.random.key(1), 3.0 * rate).astype(float)

    def log_likelihood(x):  # log-rate field, counts ~ Poisson(3 exp(x))
        return counts * (jnp.log(3.0) + x) - 3.0 * jnp.exp(x)

    field = ji.gmrf_laplace(prior, log_likelihood, jax.random.key(2), n_draws=4000)

    def energy(v):
        return -jnp.sum(log_likelihood(v.reshape(shape))) - prior.distribution.log_prob(v.reshape(shape))

    newton = jax.jit(lambda v: v - jnp.linalg.solve(jax.hessian(energy)(v), jax.grad(energy)(v)))
    x = jnp.full(counts.size, 1.0)
    for _ in range(30):
        x = newton(x)
    np.testing.assert_allclose(np.ravel(field.mode), x, atol=1e-8)
    sd = np.sqrt(np.diag(np.linalg.inv(jax.hessian(energy)(x))))
    np.testing.assert_allclose(np.ravel(field.sd), sd, rtol=0.06)


def test_smoothness_is_the_marginal_likelihood_maximum():
    """tau from the search equals the maximiser of the closed-form evidence
    ``y ~ N(m, Q(tau)^-1 + s^2 I)`` found on a fine grid of log tau."""
    shape = (20, 15)
    prior, y = _gaussian_case(shape, 1, seed=4)
    start = ji.priors.GaussianMRF(shape, order=1, precision=40.0, boundary_sd=2.0, mean=0.5)
    field = ji.gmrf_laplace(start, lambda x: -0.5 * ((y - x) / NOISE) ** 2, jax.random.key(5), n_draws=10,
                            estimate_precision=True, search_draws=128)
    n = y.size

    def neg_log_evidence(log_tau):
        d = ji.priors.GaussianMRF(shape, order=1, precision=float(np.exp(log_tau)), boundary_sd=2.0,
                                  mean=0.5).distribution
        c = np.linalg.inv(np.asarray(d.precision_matrix)) + NOISE**2 * np.eye(n)
        r = np.ravel(y) - 0.5
        return 0.5 * (np.linalg.slogdet(c)[1] + r @ np.linalg.solve(c, r))

    best = float(np.exp(minimize_scalar(neg_log_evidence, bounds=(-3.0, 5.0), method="bounded",
                                        options={"xatol": 1e-6}).x))
    assert bool(field.converged) and int(field.search_steps) > 1
    assert abs(float(field.precision) / best - 1.0) < 0.03, (float(field.precision), best)


def test_smoothness_stops_at_its_bound():
    shape = (12, 10)
    y = jnp.full(shape, 0.5) + NOISE * jax.random.normal(jax.random.key(0), shape)  # a featureless field
    prior = ji.priors.GaussianMRF(shape, order=1, precision=1.0, boundary_sd=2.0, mean=0.0)
    field = ji.gmrf_laplace(prior, lambda x: -0.5 * ((y - x) / NOISE) ** 2, jax.random.key(1), n_draws=10,
                            estimate_precision=True, precision_bounds=(1e-3, 50.0))
    assert float(field.precision) == pytest.approx(50.0)
    assert bool(field.converged)


def test_needs_a_gaussian_mrf_prior_with_a_fixed_precision():
    with pytest.raises(TypeError, match="GaussianMRF prior with a fixed precision"):
        ji.gmrf_laplace(ji.priors.Normal(0.0, 1.0, shape=(4, 4)), lambda x: -x**2, jax.random.key(0))
    with pytest.raises(TypeError, match="GaussianMRF prior with a fixed precision"):
        ji.gmrf_laplace(ji.priors.GaussianMRF((5, 5), precision="tau"), lambda x: -x**2, jax.random.key(0))
