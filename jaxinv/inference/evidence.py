"""The Bayesian free energy ``F = -log p(y | model)``: every estimator in one place.

``free_energy(post, key, method=...)`` returns a :class:`~jaxinv.Result` whose
``log_evidence`` (and ``free_energy = -log_evidence``) and ``log_evidence_se`` come
from one of

* ``"laplace"`` -- multi-start MAP and the Gaussian approximation at the mode
  (exact for linear-Gaussian models; MacKay 2003, ch. 27);
* ``"smc"`` -- adaptive tempered SMC, product of mean incremental weights, s.e.
  from independent runs (:mod:`~jaxinv.inference.smc`);
* ``"remc"`` / ``"remc_ti"`` / ``"remc_bridge"`` / ``"remc_stepping_stone"`` --
  replica exchange over a ladder of power posteriors, with the ladder estimators
  below (:mod:`~jaxinv.inference.replica_exchange`);
* ``"wbic"`` -- Watanabe's widely applicable BIC (Watanabe 2013, JMLR 14, 867):
  ``F ≈ WBIC = -E_{beta*}[log p(y | theta)]`` at ``beta* = 1 / log n``, the
  expectation taken by NUTS on the power posterior; asymptotically unbiased
  also for singular models (mixtures, peak sums), but only to O(sqrt(log n)),
  so a model-comparison criterion rather than an exact evidence;
* ``"analytic"`` -- closed form for conjugate linear-Gaussian models
  (Normal, multivariate normal or fixed-precision GaussianMRF priors, forward model affine in the parameters, Normal likelihood with
  known sigma): ``p(y) = N(y | A m0 + b, Sigma + A S0 A^T)`` (Bishop 2006, eq. 3.86).

Ladder estimators, for draws ``L_r^(s) = log p(y | theta^(s))`` at the rungs
``0 = beta_1 < ... < beta_R = 1`` (``Δ_r = beta_{r+1} - beta_r``):

* thermodynamic integration with the corrected trapezoid rule of Friel, Hurn &
  Wyse (2014, Stat. Comput. 24, 709, eq. 8), using ``d E_beta[L] / d beta = Var_beta[L]``:
  ``log Z ≈ sum_r Δ_r (E_r + E_{r+1}) / 2 - sum_r Δ_r^2 (V_{r+1} - V_r) / 12``, each
  term clipped to ``[Δ_r E_r, Δ_r E_{r+1}]`` (``E_beta`` is nondecreasing in beta);
  where a term needed clipping the ladder does not resolve ``E_beta`` there and
  the TI estimate is unreliable (:func:`ti_unresolved_intervals`; the samplers warn);
* bridge sampling between neighbouring rungs with the geometric bridge
  ``p_{r+1/2} ∝ L^{(beta_r + beta_{r+1})/2} p`` (Meng & Wong 1996, Stat. Sinica 6, 831, eq. 3.3):
  ``log Z_{r+1}/Z_r = log E_r[exp(Δ_r L / 2)] - log E_{r+1}[exp(-Δ_r L / 2)]``;
* stepping stone (Xie, Lewis, Fan, Kuo & Chen 2011, Syst. Biol. 60, 150):
  ``log Z_{r+1}/Z_r = log E_r[exp(Δ_r L)]``.

Standard errors by batch means: the draws are cut into ``n_batches`` contiguous
batches, the estimator is applied to each, and ``se = sd(batch estimates) /
sqrt(n_batches)``; independent chains (each with its own adapted ladder) are
averaged and their standard errors combined, and the result is never smaller
than ``sd(chain estimates) / sqrt(chains)`` (chains stuck in different modes of
a multimodal posterior agree less than their batch means suggest).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
from jax.scipy.special import logsumexp

from ..model import Posterior
from ..priors import GaussianMRFDistribution
from ..results import Result
from . import _derivatives

__all__ = [
    "LADDER_ESTIMATORS",
    "METHODS",
    "analytic",
    "bridge",
    "free_energy",
    "ladder_evidence",
    "stepping_stone",
    "thermodynamic_integration",
    "ti_unresolved_intervals",
    "wbic",
]

LADDER_ESTIMATORS = ("bridge", "ti", "stepping_stone")
METHODS = ("laplace", "smc", "remc", "remc_ti", "remc_bridge", "remc_stepping_stone", "wbic", "analytic")


# ----------------------------------------------------------------------------- ladder estimators
def _log_mean_exp(x, axis=0):
    return logsumexp(x, axis=axis) - math.log(x.shape[axis])


def _ti_intervals(betas, log_likelihood):
    """Per-interval corrected-trapezoid terms and whether each was bounded.

    ``d log Z / d beta = E_beta[L]`` is nondecreasing (its derivative is
    ``Var_beta[L] >= 0``), so ``log Z_{r+1} - log Z_r`` lies between ``Δ_r E_r`` and
    ``Δ_r E_{r+1}``.  Friel et al.'s correction assumes ``E_beta`` is resolved by the
    ladder; where it is not (a rung at ``beta = 0`` whose prior draws give
    ``Var[L] ~ 1e20`` beside one at ``beta = 4e-7``) the correction can leave that
    interval by orders of magnitude, and the term is clipped back into it."""
    betas, ll = jnp.asarray(betas), jnp.asarray(log_likelihood)
    mean, var = jnp.mean(ll, axis=0), jnp.var(ll, axis=0, ddof=1)
    d = jnp.diff(betas)
    corrected = d * (mean[1:] + mean[:-1]) / 2 - d**2 * (var[1:] - var[:-1]) / 12
    low, high = d * jnp.minimum(mean[:-1], mean[1:]), d * jnp.maximum(mean[:-1], mean[1:])
    bounded = jnp.clip(corrected, low, high)
    return bounded, bounded != corrected


def thermodynamic_integration(betas, log_likelihood) -> jax.Array:
    """``log Z`` from draws ``log_likelihood`` ``(n, R)`` on the ladder ``betas`` ``(R,)``
    (corrected trapezoid rule, Friel et al. 2014, each interval's term kept within the
    bounds that the monotonicity of ``E_beta[L]`` gives)."""
    return jnp.sum(_ti_intervals(betas, log_likelihood)[0])


def ti_unresolved_intervals(betas, log_likelihood) -> np.ndarray:
    """Indices ``r`` of the ladder intervals ``[beta_r, beta_{r+1}]`` on which the
    corrected trapezoid left the monotonicity bounds: there ``E_beta[L]`` changes
    faster than the ladder resolves, and the TI estimate is only bounded."""
    return np.flatnonzero(np.asarray(_ti_intervals(betas, log_likelihood)[1]))


def bridge(betas, log_likelihood) -> jax.Array:
    """``log Z`` by geometric bridge sampling between neighbouring rungs (Meng & Wong 1996)."""
    betas, ll = jnp.asarray(betas), jnp.asarray(log_likelihood)
    d = jnp.diff(betas)
    up = _log_mean_exp(d * ll[:, :-1] / 2)
    down = _log_mean_exp(-d * ll[:, 1:] / 2)
    return jnp.sum(up - down)


def stepping_stone(betas, log_likelihood) -> jax.Array:
    """``log Z`` by stepping-stone sampling (Xie et al. 2011)."""
    betas, ll = jnp.asarray(betas), jnp.asarray(log_likelihood)
    return jnp.sum(_log_mean_exp(jnp.diff(betas) * ll[:, :-1]))


_LADDER = {"ti": thermodynamic_integration, "bridge": bridge, "stepping_stone": stepping_stone}


def ladder_evidence(betas, log_likelihood, estimator: str = "bridge", n_batches: int = 20) -> tuple[float, float]:
    """``(log Z, batch-means s.e.)`` from one or several chains.

    Args:
        betas: ``(R,)`` or ``(chains, R)`` ladders.
        log_likelihood: ``(n, R)`` or ``(chains, n, R)`` draws of ``log p(y | theta)`` per rung.
        estimator: ``"bridge"``, ``"ti"`` or ``"stepping_stone"``.
        n_batches: contiguous batches per chain for the standard error.
    """
    if estimator not in _LADDER:
        raise ValueError(f"unknown ladder estimator {estimator!r}; available: {LADDER_ESTIMATORS}")
    fn = _LADDER[estimator]
    betas, ll = np.asarray(betas), np.asarray(log_likelihood)
    if betas.ndim == 1:
        betas, ll = betas[None], ll[None]
    n = ll.shape[1]
    if n < 2 * n_batches:
        raise ValueError(f"need at least {2 * n_batches} draws for {n_batches} batches, got {n}")
    values, variances = [], []
    for b, x in zip(betas, ll):
        values.append(float(fn(b, x)))
        size = n // n_batches
        batches = np.array([float(fn(b, x[i * size:(i + 1) * size])) for i in range(n_batches)])
        variances.append(np.var(batches, ddof=1) / n_batches)
    c = len(values)
    se = float(np.sqrt(np.sum(variances)) / c)
    if c > 1:
        # chains that settled in different modes disagree by more than their batch means
        # show: never report less than the spread of the chain estimates
        se = max(se, float(np.std(values, ddof=1) / np.sqrt(c)))
    return float(np.mean(values)), se


# ----------------------------------------------------------------------------- closed form
def _gaussian_prior(name, prior):
    if prior.parents:
        raise ValueError(f"analytic evidence needs fixed Gaussian priors; parameter {name!r} has a prior "
                         f"conditional on {list(prior.parents)}")
    dist = prior.distribution
    if isinstance(dist, GaussianMRFDistribution):
        return jnp.ravel(dist.mean), dist.covariance_matrix
    while isinstance(dist, npd.ExpandedDistribution):
        dist = dist.base_dist
    if prior.ordered or not isinstance(prior.distribution, npd.Distribution) or not isinstance(
            dist, (npd.Normal, npd.MultivariateNormal)):
        raise ValueError(f"analytic evidence needs Normal priors; parameter {name!r} has "
                         f"{type(dist).__name__ if dist is not None else 'a flat'} prior"
                         f"{' (ordered)' if prior.ordered else ''}")
    mean = jnp.broadcast_to(prior.distribution.mean, prior.shape).ravel()
    if isinstance(dist, npd.MultivariateNormal):
        cov = jnp.asarray(dist.covariance_matrix)
    else:
        cov = jnp.diag(jnp.broadcast_to(prior.distribution.variance, prior.shape).ravel())
    return mean, cov


def analytic(post: Posterior, check_points: int = 3, key=None) -> Result:
    """Exact evidence and posterior of a conjugate linear-Gaussian model.

    ``y = A theta + b + e``, ``theta ~ N(m0, S0)``, ``e ~ N(0, diag(sigma^2))``:

        log p(y) = log N(y | A m0 + b, diag(sigma^2) + A S0 A^T)
        S_post = (S0^-1 + A^T Sigma^-1 A)^-1,   m_post = S_post (S0^-1 m0 + A^T Sigma^-1 (y - b))

    ``A`` and ``b`` are read off the forward model by automatic differentiation,
    and linearity is checked at ``check_points`` random points (an error if the
    model is not affine).  Returns a Result holding the posterior mean as a point
    estimate and ``stats["posterior_mean"]``/``stats["posterior_covariance"]``
    over the flattened parameter vector in the order of ``post.names``.
    """
    from .. import likelihoods

    lik = post.model.likelihood
    if type(lik) is not likelihoods.Normal or lik.parameters():
        raise ValueError("analytic evidence needs a Normal likelihood with known sigma")
    means, covs = zip(*(_gaussian_prior(k, p) for k, p in post.priors.items()))
    m0 = jnp.concatenate(means)
    s0 = jax.scipy.linalg.block_diag(*covs)
    # Normal priors: z is theta itself (identity transform), so the forward map of z is the model
    f = lambda z: jnp.ravel(post.predict(z))
    a = _derivatives.jacobian(f)(m0)
    b = f(m0) - a @ m0
    key = jax.random.key(0) if key is None else key
    for z in m0 + jax.random.normal(key, (check_points, m0.size)) @ jnp.linalg.cholesky(s0).T:
        err = jnp.max(jnp.abs(f(z) - (a @ z + b)))
        if not bool(err <= 1e-8 * (1.0 + jnp.max(jnp.abs(f(z))))):
            raise ValueError(f"analytic evidence needs a forward model affine in its parameters "
                             f"(deviation {float(err):.3g} from the linearisation)")
    y = jnp.ravel(post.y)
    noise_var = jnp.broadcast_to(jnp.asarray(lik.sigma) ** 2, post.y.shape).ravel()
    cov_y = jnp.diag(noise_var) + a @ s0 @ a.T
    log_z = jax.scipy.stats.multivariate_normal.logpdf(y, a @ m0 + b, cov_y)
    precision = jnp.linalg.inv(s0) + a.T @ (a / noise_var[:, None])
    cov_post = jnp.linalg.inv(precision)
    mean_post = cov_post @ (jnp.linalg.solve(s0, m0) + a.T @ ((y - b) / noise_var))
    params = post.constrain(mean_post)
    return Result(params={k: params[k] for k in post.names}, method="analytic", sample_dims=0,
                  log_evidence=log_z, log_evidence_se=jnp.asarray(0.0),
                  stats={"posterior_mean": mean_post, "posterior_covariance": cov_post}, observed=post.y)


# ----------------------------------------------------------------------------- WBIC
def wbic(post: Posterior, key, **kwargs) -> Result:
    """Watanabe's WBIC: NUTS on the power posterior at ``beta* = 1/log n``.

    Returns a Result with the tempered draws, ``log_evidence = -WBIC`` and the
    Monte Carlo standard error of the mean log-likelihood (from its bulk ESS).
    ``kwargs`` go to :func:`~jaxinv.inference.mcmc.sample_hmc`.
    """
    from ..results import _az
    from .mcmc import sample_hmc

    if post.n_data < 2:
        raise ValueError("WBIC needs at least 2 data points (beta* = 1/log n)")
    beta = 1.0 / math.log(post.n_data)
    res = sample_hmc(post, key, "nuts", beta=beta, **kwargs)
    ll = np.asarray(res.stats["log_likelihood"])  # (chains, draws)
    ess = float(_az().ess(ll))
    wbic_value = -float(np.mean(ll))
    se = float(np.std(ll, ddof=1) / np.sqrt(max(ess, 1.0)))
    stats = dict(res.stats)
    stats["beta"] = jnp.asarray(beta)
    return Result(params=res.params, method="wbic", sample_dims=2, log_evidence=jnp.asarray(-wbic_value),
                  log_evidence_se=jnp.asarray(se), stats=stats, observed=post.y)


# ----------------------------------------------------------------------------- dispatch
def free_energy(post: Posterior, key, method: str = "laplace", **kwargs) -> Result:
    """A Result carrying ``log_evidence`` (``free_energy``) by the estimator ``method``.

    ``"remc_ti"``, ``"remc_bridge"`` and ``"remc_stepping_stone"`` run replica
    exchange and report that ladder estimator (``"remc"``: bridge); keyword
    arguments go to the engine.
    """
    if method == "laplace":
        from .map import map_estimate

        return map_estimate(post, key, **kwargs)
    if method == "smc":
        from .smc import sample_smc

        return sample_smc(post, key, **kwargs)
    if method.startswith("remc"):
        from .replica_exchange import sample_remc

        estimator = {"remc": "bridge", "remc_ti": "ti", "remc_bridge": "bridge",
                     "remc_stepping_stone": "stepping_stone"}.get(method)
        if estimator is None:
            raise ValueError(f"unknown free-energy method {method!r}; available: {METHODS}")
        return sample_remc(post, key, evidence_estimator=estimator, **kwargs)
    if method == "wbic":
        return wbic(post, key, **kwargs)
    if method == "analytic":
        return analytic(post, **kwargs)
    raise ValueError(f"unknown free-energy method {method!r}; available: {METHODS}")
