"""GaussianMRF prior and hierarchical (conditional) priors: exact normalisation against a
dense multivariate normal, draws against the precision inverse, gradients under jit/vmap,
evidence of a linear-Gaussian model, the precision learnt by NUTS, and bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
import pytest
from scipy.stats import multivariate_normal

import jaxinv as ji

CASES = [(9, 1), (9, 2), ((4, 5), 1), ((5, 4), 2)]


@pytest.mark.parametrize("shape,order", CASES)
def test_log_prob_equals_dense_multivariate_normal(shape, order):
    prior = ji.priors.GaussianMRF(shape, order=order, precision=3.7, boundary_sd=0.8, mean=0.25)
    dist = prior.distribution
    q = np.asarray(dist.precision_matrix)
    # the documented precision Q = tau sum_axes D_k^T D_k + P / b^2, built independently here
    n = np.shape(np.zeros(prior.shape))

    def dk(m):
        return np.diff(np.eye(m), n=order, axis=0)

    if len(n) == 1:
        rough = dk(n[0]).T @ dk(n[0])
        pins = np.zeros(n)
        pins[:order] = 1
    else:
        rough = np.kron(dk(n[0]).T @ dk(n[0]), np.eye(n[1])) + np.kron(np.eye(n[0]), dk(n[1]).T @ dk(n[1]))
        pins = np.zeros(n)
        pins[:order, :order] = 1
    np.testing.assert_allclose(q, 3.7 * rough + np.diag(pins.ravel()) / 0.64, rtol=1e-14, atol=1e-14)
    assert np.all(np.linalg.eigvalsh(q) > 0)  # proper
    ref = multivariate_normal(mean=np.full(q.shape[0], 0.25), cov=np.linalg.inv(q))
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = rng.normal(size=prior.shape) * 2.0
        assert float(prior.log_prob(x)) == pytest.approx(ref.logpdf(x.ravel()), rel=1e-10, abs=1e-9)
    # the O(1) log-determinant against a dense one
    assert float(dist.log_det_precision()) == pytest.approx(np.linalg.slogdet(q)[1], rel=1e-11, abs=1e-10)
    # and against numpyro's multivariate normal with the same precision
    mvn = npd.MultivariateNormal(jnp.full(q.shape[0], 0.25), precision_matrix=jnp.asarray(q))
    x = rng.normal(size=prior.shape)
    assert float(prior.log_prob(x)) == pytest.approx(float(mvn.log_prob(jnp.ravel(x))), rel=1e-10)


def test_normalising_constant_integrates_to_one_in_low_dimension():
    """Z = int exp(log_prob) over a 3-cell chain, by quadrature (independent of the dense check)."""
    prior = ji.priors.GaussianMRF(3, order=1, precision=2.0, boundary_sd=1.5)
    g = jnp.linspace(-9.0, 9.0, 121)
    xs = jnp.stack(jnp.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    dens = jnp.exp(jax.vmap(prior.log_prob)(xs))
    assert float(jnp.sum(dens) * (g[1] - g[0]) ** 3) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("shape,order", CASES)
def test_draws_have_the_precision_inverse_as_covariance(shape, order):
    prior = ji.priors.GaussianMRF(shape, order=order, precision=4.0, boundary_sd=0.5, mean=-1.0)
    n = 40_000
    x = np.asarray(prior.sample(jax.random.key(3), n)).reshape(n, -1)
    cov = np.linalg.inv(np.asarray(prior.distribution.precision_matrix))
    sd = np.sqrt(np.diag(cov))
    emp = np.cov(x.T)
    # correlations to ~4/sqrt(n) = 0.02; variances to ~4 sqrt(2/n) = 0.03 (relative)
    np.testing.assert_allclose(emp / np.outer(sd, sd), cov / np.outer(sd, sd), atol=0.025)
    assert np.all(np.abs(np.mean(x, axis=0) + 1.0) < 4 * sd / np.sqrt(n))


def test_gradient_jit_and_vmap():
    prior = ji.priors.GaussianMRF((3, 4), order=2, precision=1.7, boundary_sd=2.0, mean=0.3)
    q = prior.distribution.precision_matrix
    x = jax.random.normal(jax.random.key(0), (5, 3, 4))
    lp = jax.jit(jax.vmap(prior.log_prob))(x)
    np.testing.assert_allclose(lp, [float(prior.log_prob(xi)) for xi in x], rtol=1e-13)
    grad = jax.vmap(jax.grad(prior.log_prob))(x)
    np.testing.assert_allclose(grad.reshape(5, -1), -(x.reshape(5, -1) - 0.3) @ q, rtol=1e-10, atol=1e-12)

    # d/dtau log p = (N - r) / (2 tau) - |D x|^2 / 2: through the hierarchical prior
    h = ji.priors.GaussianMRF(12, order=1, precision="tau", boundary_sd=1.0)
    xi = jax.random.normal(jax.random.key(1), (12,))
    dtau = jax.grad(lambda t: h.log_prob(xi, {"tau": t}))(2.0)
    assert float(dtau) == pytest.approx(11 / 4.0 - 0.5 * float(jnp.sum(jnp.diff(xi) ** 2)), rel=1e-12)


def identity(params):
    return params["f"]


def hierarchical_model(n=40, sigma=0.05):
    priors = {"smoothness": ji.priors.LogUniform(0.1, 1e4),
              "f": ji.priors.GaussianMRF(n, order=1, precision="smoothness", boundary_sd=5.0)}
    return ji.Model(identity, priors, ji.likelihoods.Normal(sigma=sigma))


def test_hierarchical_log_prior_and_ancestral_draws():
    post = hierarchical_model().condition(jnp.zeros(40))
    z = post.init(jax.random.key(4), 4000)
    params = jax.vmap(post.constrain)(z)
    tau, f = params["smoothness"], params["f"]
    # each f was drawn from the GMRF at its own tau: standardised increments have unit variance,
    # which fails if f were drawn at any fixed precision (tau spans five decades)
    std = jnp.diff(f, axis=1) * jnp.sqrt(tau)[:, None]
    assert float(jnp.var(std)) == pytest.approx(1.0, abs=0.03)
    assert float(jnp.corrcoef(jnp.log(tau), jnp.log(jnp.var(jnp.diff(f, axis=1), axis=1)))[0, 1]) < -0.95
    # log prior = log p(tau) + log p(f | tau) + log-Jacobian of tau's map, under jit
    lp = jax.jit(lambda v: post.log_prior(v))(z[0])
    lu = ji.priors.LogUniform(0.1, 1e4)
    u = post.unravel(z[0])["smoothness"]
    ref = (lu.log_density_unconstrained(u)
           + ji.priors.GaussianMRF(40, order=1, precision=float(tau[0]), boundary_sd=5.0).log_prob(f[0]))
    assert float(lp) == pytest.approx(float(ref), rel=1e-12)
    g = jax.grad(post.log_density)(z[0])
    assert g.shape == z[0].shape and bool(jnp.all(jnp.isfinite(g)))


def test_hierarchical_precision_learnt_by_nuts():
    """Truth tau = 100 (increments sd 0.1), 60 cells, noise sd 0.1; seed 11.  The posterior
    of tau (NUTS, 2 chains x 400 draws) must cover the truth within its 5-95 % interval
    and have its median within a factor 2 of it (with noise as large as the increments the
    relative sd of tau is ~ 0.3-0.4), and the posterior mean of f must be closer to the
    truth than the data are."""
    true_tau, n, sigma = 100.0, 60, 0.1
    k1, k2 = jax.random.split(jax.random.key(11))
    truth = ji.priors.GaussianMRF(n, order=1, precision=true_tau, boundary_sd=5.0).sample(k1, 1)[0]
    y = truth + sigma * jax.random.normal(k2, (n,))
    post = hierarchical_model(n, sigma).condition(y)
    res = ji.sample(post, jax.random.key(12), method="nuts", n_chains=2, n_warmup=400, n_draws=400)
    tau = np.asarray(res.params["smoothness"]).ravel()
    lo, med, hi = np.quantile(tau, [0.05, 0.5, 0.95])
    assert lo < true_tau < hi, (lo, med, hi)
    assert true_tau / 2 < med < true_tau * 2
    assert res.stats["divergences"] <= 4
    f_mean = np.asarray(res.params["f"]).reshape(-1, n).mean(0)
    rmse = lambda v: np.sqrt(np.mean((np.asarray(v) - np.asarray(truth)) ** 2))  # noqa: E731
    assert rmse(f_mean) < 0.8 * rmse(y)  # the smoothness prior denoises


@pytest.mark.parametrize("shape,order", [(12, 2), ((3, 4), 1)])
def test_laplace_free_energy_equals_analytic_evidence(shape, order):
    prior = ji.priors.GaussianMRF(shape, order=order, precision=6.0, boundary_sd=2.0, mean=0.5)
    n = int(np.prod(prior.shape))
    a = jax.random.normal(jax.random.key(5), (15, n)) / np.sqrt(n)
    sigma = 0.1

    def forward(params):
        return a @ jnp.ravel(params["f"])

    truth = prior.sample(jax.random.key(6), 1)[0]
    y = forward({"f": truth}) + sigma * jax.random.normal(jax.random.key(7), (15,))
    post = ji.Model(forward, {"f": prior}, ji.likelihoods.Normal(sigma=sigma)).condition(y)
    cov = np.linalg.inv(np.asarray(prior.distribution.precision_matrix))
    a_ = np.asarray(a)
    ref = -multivariate_normal(a_ @ np.full(n, 0.5), sigma**2 * np.eye(15) + a_ @ cov @ a_.T).logpdf(np.asarray(y))
    analytic = ji.free_energy(post, jax.random.key(8), method="analytic")
    laplace = ji.free_energy(post, jax.random.key(8), method="laplace", n_starts=4)
    assert float(analytic.free_energy) == pytest.approx(ref, rel=1e-10)
    assert float(laplace.free_energy) == pytest.approx(ref, abs=1e-6)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="precision must be positive"):
        ji.priors.GaussianMRF(10, precision=-1.0)
    with pytest.raises(ValueError, match="boundary_sd must be positive"):
        ji.priors.GaussianMRF(10, boundary_sd=0.0)
    with pytest.raises(ValueError, match="order must be 1 or 2"):
        ji.priors.GaussianMRF(10, order=3)
    with pytest.raises(ValueError, match="more than 2 cells"):
        ji.priors.GaussianMRF((2, 5), order=2)
    with pytest.raises(ValueError, match="int \\(chain\\) or a pair"):
        ji.priors.GaussianMRF((2, 3, 4))
    with pytest.raises(ValueError, match="mean must be a scalar or of shape"):
        ji.priors.GaussianMRF(10, mean=jnp.zeros(9))
    prior = ji.priors.GaussianMRF(10, order=2)
    with pytest.raises(ValueError, match="shape \\(10,\\) got a value of shape \\(9,\\)"):
        prior.log_prob(jnp.zeros(9))
    with pytest.raises(ValueError, match="depends on \\['smooth'\\], which is not a parameter"):
        ji.Model(identity, {"f": ji.priors.GaussianMRF(10, precision="smooth")}, ji.likelihoods.Normal(sigma=1.0))
    cyc = {"a": ji.priors.Conditional(lambda p: npd.Normal(0.0, jnp.exp(p["b"])), parents="b"),
           "b": ji.priors.Conditional(lambda p: npd.Normal(0.0, jnp.exp(p["a"])), parents="a"),
           "f": ji.priors.Normal(0.0, 1.0)}
    with pytest.raises(ValueError, match="dependency cycle: a -> b -> a"):
        ji.Model(identity, cyc, ji.likelihoods.Normal(sigma=1.0))
    with pytest.raises(ValueError, match="depends on itself"):
        ji.Model(identity, {"f": ji.priors.GaussianMRF(10, precision="f")}, ji.likelihoods.Normal(sigma=1.0))
    post = hierarchical_model().condition(jnp.zeros(40))
    with pytest.raises(ValueError, match="analytic evidence needs"):
        ji.free_energy(post, jax.random.key(0), method="analytic")
    with pytest.raises(ValueError, match="conditional on \\['tau'\\]"):
        post2 = ji.Model(identity, {"tau": ji.priors.Normal(3.0, 0.1),
                                    "f": ji.priors.GaussianMRF(5, precision="tau")},
                         ji.likelihoods.Normal(sigma=1.0)).condition(jnp.zeros(5))
        ji.free_energy(post2, jax.random.key(0), method="analytic")
    with pytest.raises(ValueError, match="pass their values"):
        post.priors["f"].sample(jax.random.key(0), 3)


def test_generic_conditional_prior():
    """A hierarchical normal (x_i ~ N(0, s^2), s ~ HalfNormal) through Conditional."""
    priors = {"s": ji.priors.HalfNormal(2.0),
              "f": ji.priors.Conditional(lambda p: npd.Normal(0.0, p["s"]).expand((3,)), parents="s", shape=3)}
    post = ji.Model(identity, priors, ji.likelihoods.Normal(sigma=1.0)).condition(jnp.zeros(3))
    z = post.init(jax.random.key(2), 3)
    p = post.constrain(z[0])
    ref = (npd.HalfNormal(2.0).log_prob(p["s"]) + jnp.log(p["s"])  # log-Jacobian of exp
           + jnp.sum(npd.Normal(0.0, p["s"]).log_prob(p["f"])))
    assert float(post.log_prior(z[0])) == pytest.approx(float(ref), rel=1e-12)
    with pytest.raises(ValueError, match="distribution has shape \\(\\), the parameter has shape \\(3,\\)"):
        ji.priors.Conditional(lambda q: npd.Normal(0.0, q["s"]), parents="s", shape=3).log_prob(
            jnp.zeros(3), {"s": 1.0})


def test_precision_scale_multiplies_the_precision():
    x = jax.random.normal(jax.random.key(9), (8,))
    ref = ji.priors.GaussianMRF(8, order=2, precision=1.5, boundary_sd=2.0).log_prob(x)
    fixed = ji.priors.GaussianMRF(8, order=2, precision=6.0, boundary_sd=2.0, precision_scale=0.25).log_prob(x)
    hier = ji.priors.GaussianMRF(8, order=2, precision="lam", boundary_sd=2.0, precision_scale=0.25)
    assert float(fixed) == pytest.approx(float(ref), rel=1e-13)
    assert float(hier.log_prob(x, {"lam": 6.0})) == pytest.approx(float(ref), rel=1e-13)
    with pytest.raises(ValueError, match="precision_scale must be positive"):
        ji.priors.GaussianMRF(8, precision_scale=-1.0)


def test_smc_evidence_of_a_hierarchical_model_matches_quadrature():
    """log p(y) = log int p(y | tau) p(tau) dtau, with p(y | tau) the exact Gaussian marginal
    and tau ~ LogUniform(0.1, 1e4), by quadrature on 2001 points in log tau; SMC (1000
    particles x 4 runs, seed 1) must agree within 4 of its standard errors + 0.05 (measured
    3.682 +- 0.13 against 3.688)."""
    n, sigma = 20, 0.1
    y = np.sin(np.linspace(0.0, 3.0, n))
    priors = {"smoothness": ji.priors.LogUniform(0.1, 1e4),
              "f": ji.priors.GaussianMRF(n, order=1, precision="smoothness", boundary_sd=5.0)}
    post = ji.Model(identity, priors, ji.likelihoods.Normal(sigma=sigma)).condition(jnp.asarray(y))
    log_tau = np.linspace(np.log(0.1), np.log(1e4), 2001)
    d1 = np.diff(np.eye(n), axis=0)
    lz = []
    for t in np.exp(log_tau):
        q = t * d1.T @ d1
        q[0, 0] += 1 / 25.0
        lz.append(multivariate_normal(np.zeros(n), np.linalg.inv(q) + sigma**2 * np.eye(n)).logpdf(y))
    lz = np.asarray(lz)
    ref = np.log(np.trapezoid(np.exp(lz - lz.max()), log_tau)) + lz.max() - np.log(np.log(1e5))
    res = ji.free_energy(post, jax.random.key(1), method="smc", target_ess=0.5)  # as measured
    assert abs(float(res.log_evidence) - ref) < 4 * float(res.log_evidence_se) + 0.05


def test_prior_precision_operators_match_the_dense_matrix():
    d = ji.priors.GaussianMRF((7, 6), order=2, precision=2.5, boundary_sd=0.7).distribution
    q = np.asarray(d.precision_matrix)
    v = jax.random.normal(jax.random.key(0), (7, 6))
    np.testing.assert_allclose(np.ravel(d.precision_matvec(v)), q @ np.ravel(v), atol=1e-12)
    np.testing.assert_allclose(np.ravel(d.precision_diagonal()), np.diag(q), atol=1e-12)
    draws = jax.vmap(d.precision_draw)(jax.random.split(jax.random.key(1), 20000)).reshape(20000, -1)
    emp = np.asarray(draws.T @ draws) / 20000  # E[J^T e e^T J] = Q
    assert np.max(np.abs(emp - q)) < 0.05 * np.max(np.abs(q))
