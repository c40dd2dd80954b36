"""Soft clustering in JAX: k-means with k-means++ seeding, Gaussian mixtures and Poisson
mixtures fitted by expectation-maximisation (EM).

General tools (no EPMA specifics): samples are the rows of ``X`` (shape ``(n, d)``, e.g.
one row per map pixel holding its counts of ``d`` elements).  Every function is
jit-compatible and can be ``jax.vmap``-ped over datasets (stacked ``X``, initial centres
and keys); iterations run in ``lax.while_loop`` until a tolerance is met or ``max_iter``
iterations are done, and report ``converged`` and ``n_iter``.

* :func:`kmeans` -- Lloyd's algorithm; seeding by :func:`kmeans_plusplus` (greedy
  k-means++ of Arthur & Vassilvitskii 2007, with ``2 + log K`` local trials per centre as in
  scikit-learn) or from given centres.  Stopping rule as scikit-learn's ``KMeans``: the
  labels no longer change, or the squared shift of the centres summed over clusters is at
  most ``tol`` times the mean variance of the features.  A cluster that becomes empty is
  moved onto the point farthest from its centre (scikit-learn does the same, but also
  removes that point from its old cluster's mean in the same iteration).
* :func:`gaussian_mixture` -- Gaussian mixture with ``"full"`` or ``"diag"`` covariances,
  ``reg_covar`` added to the diagonal of every covariance; the EM iteration, stopping rule
  (change of the mean log-likelihood per sample below ``tol``) and reported
  ``lower_bound`` follow scikit-learn's ``GaussianMixture`` (Bishop 2006, sec. 9.2), so the
  same initial means/weights/precisions give the same fit.
* :func:`poisson_mixture` -- mixture of independent Poisson distributions for count vectors,
  ``x_nd ~ Poisson(s_n lambda_kd)`` given component k (``s_n`` an optional exposure, e.g.
  dwell time x probe current of sample n).  EM: ``lambda_kd = sum_n r_nk x_nd / sum_n r_nk
  s_n``, ``pi_k = sum_n r_nk / n``.  This generalises qntmap's phase classification (Yasumoto
  et al. 2018), which assigns each pixel to the nearest initial centre and then applies one
  Poisson discriminant step (PoiClaClu::Classify, Witten 2011), to the full maximum-likelihood
  mixture.

Initial values: given centres (e.g. phase compositions measured by spot analyses), or, when
none are given, k-means seeded by k-means++ with an explicit PRNG ``key`` (as scikit-learn's
``init_params="kmeans"``).  Weights and covariances that are not given come from the hard
assignment of every sample to its nearest initial centre.

Log-likelihoods are per-sample means (scikit-learn's ``score``); responsibilities are the
posterior membership probabilities ``r_nk`` (rows sum to one), computed with log-sum-exp.

References:
  * Arthur & Vassilvitskii (2007), "k-means++: the advantages of careful seeding", SODA.
  * Bishop (2006), "Pattern Recognition and Machine Learning", ch. 9.
  * Witten (2011), "Classification and clustering of sequencing data using a Poisson model",
    Ann. Appl. Stat. 5, 2493-2518 (PoiClaClu).
  * Yasumoto et al. (2018), American Mineralogist 103, 1690-1698 (qntmap).
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np
from jax import lax
from jax.scipy.linalg import solve_triangular

__all__ = [
    "GaussianMixtureResult",
    "KMeansResult",
    "PoissonMixtureResult",
    "gaussian_mixture",
    "gaussian_mixture_responsibilities",
    "kmeans",
    "kmeans_plusplus",
    "poisson_mixture",
    "poisson_mixture_responsibilities",
]

_LOG_2PI = math.log(2.0 * math.pi)
_COVARIANCE_TYPES = ("full", "diag")


class KMeansResult(NamedTuple):
    """Result of :func:`kmeans`."""

    centers: jax.Array  #: (K, d) cluster centres
    labels: jax.Array  #: (n,) index of the nearest centre of every sample
    inertia: jax.Array  #: sum of squared distances of the samples to their centre
    n_iter: jax.Array  #: number of Lloyd iterations run
    converged: jax.Array  #: the stopping rule was met before ``max_iter``


class GaussianMixtureResult(NamedTuple):
    """Result of :func:`gaussian_mixture`."""

    means: jax.Array  #: (K, d)
    covariances: jax.Array  #: (K, d, d) for "full", (K, d) variances for "diag"
    weights: jax.Array  #: (K,) mixing proportions, sum to one
    responsibilities: jax.Array  #: (n, K) membership probabilities at the final parameters
    log_likelihood: jax.Array  #: mean log-likelihood per sample at the final parameters
    lower_bound: jax.Array  #: last entry of the trace (scikit-learn's ``lower_bound_``)
    log_likelihood_trace: jax.Array  #: (max_iter,) mean log-likelihood entering each iteration; NaN after n_iter
    n_iter: jax.Array
    converged: jax.Array


class PoissonMixtureResult(NamedTuple):
    """Result of :func:`poisson_mixture`."""

    rates: jax.Array  #: (K, d) Poisson rates per unit exposure
    weights: jax.Array  #: (K,)
    responsibilities: jax.Array  #: (n, K)
    log_likelihood: jax.Array  #: mean log-likelihood per sample at the final parameters
    log_likelihood_trace: jax.Array  #: (max_iter,) mean log-likelihood entering each iteration; NaN after n_iter
    n_iter: jax.Array
    converged: jax.Array


# -- validation ------------------------------------------------------------------------
def _concrete(x):
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _samples(X, name: str = "X") -> jax.Array:
    X = jnp.asarray(X, dtype=jnp.result_type(float))
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{name} must be a 2-D array (n_samples, n_features), got shape {X.shape}")
    v = _concrete(X)
    if v is not None and not np.all(np.isfinite(v)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(v)))} non-finite value(s)")
    return X


def _n_clusters(n_clusters, init, X, what: str) -> int:
    if init is not None:
        k = int(jnp.shape(init)[0]) if jnp.ndim(init) == 2 else -1
        if jnp.ndim(init) != 2 or jnp.shape(init)[1] != X.shape[1]:
            raise ValueError(f"initial {what} must have shape (K, {X.shape[1]}) (one row per cluster, "
                             f"one column per feature of X), got {jnp.shape(init)}")
        if n_clusters is not None and int(n_clusters) != k:
            raise ValueError(f"n_components/n_clusters = {n_clusters} but {k} initial {what} were given")
        n_clusters = k
    if n_clusters is None:
        raise ValueError(f"give the number of clusters or initial {what}")
    n_clusters = int(n_clusters)
    if not 1 <= n_clusters <= X.shape[0]:
        raise ValueError(f"the number of clusters must be in 1..n_samples = {X.shape[0]}, got {n_clusters}")
    return n_clusters


def _check_loop(tol, max_iter):
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    t = _concrete(tol)
    if t is not None and not (np.ndim(t) == 0 and np.isfinite(t) and t >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")


def _need_key(key, what: str):
    if key is None:
        raise ValueError(f"{what} without initial centres needs a PRNG key (key=jax.random.key(...)) "
                         "for k-means++ seeding")


# -- k-means ---------------------------------------------------------------------------
def _sq_distances(X, C):
    """Squared Euclidean distances (n, K), ``|x|^2 - 2 x.c + |c|^2`` clipped at zero."""
    d2 = jnp.sum(X**2, axis=1)[:, None] - 2.0 * X @ C.T + jnp.sum(C**2, axis=1)[None, :]
    return jnp.maximum(d2, 0.0)


def kmeans_plusplus(key, X, n_clusters: int, n_local_trials: int | None = None) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007), greedy variant: each new centre is
    the best of ``n_local_trials`` candidates (default ``2 + floor(log K)``, as
    scikit-learn) drawn with probability proportional to the squared distance to the
    nearest centre so far.  Returns ``(K, d)`` rows of ``X``."""
    X = _samples(X)
    k = _n_clusters(n_clusters, None, X, "centres")
    trials = 2 + int(math.log(k)) if n_local_trials is None else int(n_local_trials)
    if trials < 1:
        raise ValueError(f"n_local_trials must be >= 1, got {n_local_trials}")
    return _kmeans_plusplus(key, X, k, trials)


@partial(jax.jit, static_argnums=(2, 3))
def _kmeans_plusplus(key, X, k, trials):
    n = X.shape[0]
    key0, key = jax.random.split(key)
    first = jax.random.randint(key0, (), 0, n)
    centers = jnp.zeros((k, X.shape[1]), X.dtype).at[0].set(X[first])
    closest = _sq_distances(X, X[first][None])[:, 0]

    def body(c, carry):
        centers, closest, key = carry
        key, sub = jax.random.split(key)
        potential = jnp.sum(closest)
        u = jax.random.uniform(sub, (trials,), X.dtype) * potential
        ids = jnp.clip(jnp.searchsorted(jnp.cumsum(closest), u), 0, n - 1)
        d = jnp.minimum(closest[None, :], _sq_distances(X[ids], X))  # (trials, n)
        best = jnp.argmin(jnp.sum(d, axis=1))
        return centers.at[c].set(X[ids[best]]), d[best], key

    centers, _, _ = lax.fori_loop(1, k, body, (centers, closest, key))
    return centers


@partial(jax.jit, static_argnums=(3,))
def _lloyd(X, centers, tol, max_iter):
    n, _ = X.shape
    k = centers.shape[0]
    tol_abs = tol * jnp.mean(jnp.var(X, axis=0))

    def update(centers):
        d2 = _sq_distances(X, centers)
        labels = jnp.argmin(d2, axis=1).astype(jnp.int32)
        onehot = jax.nn.one_hot(labels, k, dtype=X.dtype)
        counts = onehot.sum(0)
        new = (onehot.T @ X) / jnp.maximum(counts, 1.0)[:, None]
        # empty clusters move onto the samples farthest from their centre
        empty = counts == 0
        far = jnp.argsort(-jnp.min(d2, axis=1))
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, n - 1)
        new = jnp.where(empty[:, None], X[far[rank]], new)
        return labels, new

    def cond(state):
        _, _, i, done = state
        return (i < max_iter) & ~done

    def body(state):
        centers, labels_old, i, _ = state
        labels, new = update(centers)
        shift = jnp.sum((new - centers) ** 2)
        done = jnp.all(labels == labels_old) | (shift <= tol_abs)
        return new, labels, i + 1, done

    init = (centers, jnp.full((n,), -1, dtype=jnp.int32), jnp.asarray(0), jnp.asarray(False))
    centers, _, n_iter, done = lax.while_loop(cond, body, init)
    d2 = _sq_distances(X, centers)
    labels = jnp.argmin(d2, axis=1).astype(jnp.int32)
    inertia = jnp.sum(jnp.take_along_axis(d2, labels[:, None], axis=1))
    return KMeansResult(centers, labels, inertia, n_iter, done)


def kmeans(X, n_clusters: int | None = None, *, init=None, key=None, max_iter: int = 300,
           tol: float = 1e-4) -> KMeansResult:
    """k-means clustering (Lloyd's algorithm).

    Args:
        X: samples, shape ``(n, d)``.
        n_clusters: K; may be omitted when ``init`` is given.
        init: initial centres ``(K, d)``; when ``None``, k-means++ seeding with ``key``.
        key: PRNG key for k-means++ (needed when ``init`` is ``None``).
        max_iter: maximum number of Lloyd iterations (static).
        tol: relative tolerance: stop when the summed squared shift of the centres is
            ``<= tol * mean(var(X, axis=0))`` (scikit-learn's rule), or the labels no longer
            change.

    Returns:
        :class:`KMeansResult` (labels and inertia w.r.t. the final centres).
    """
    X = _samples(X)
    k = _n_clusters(n_clusters, init, X, "centres")
    _check_loop(tol, max_iter)
    if init is None:
        _need_key(key, "kmeans")
        centers = kmeans_plusplus(key, X, k)
    else:
        centers = jnp.asarray(init, dtype=X.dtype)
    return _lloyd(X, centers, jnp.asarray(tol, X.dtype), int(max_iter))


def _hard_init(X, centers, key, k, what):
    """Initial centres (given, or k-means from k-means++ seeds) and the one-hot
    responsibilities of the nearest centre."""
    if centers is None:
        _need_key(key, what)
        centers = kmeans(X, k, key=key).centers
    else:
        centers = jnp.asarray(centers, dtype=X.dtype)
    labels = jnp.argmin(_sq_distances(X, centers), axis=1)
    return centers, jax.nn.one_hot(labels, k, dtype=X.dtype)


def _weights_init(weights_init, k, dtype):
    w = jnp.asarray(weights_init, dtype=dtype)
    if w.shape != (k,):
        raise ValueError(f"weights_init must have shape ({k},), got {w.shape}")
    v = _concrete(w)
    if v is not None and (np.any(v < 0) or not np.isclose(v.sum(), 1.0, rtol=0, atol=1e-6)):
        raise ValueError(f"weights_init must be non-negative and sum to one, got {v}")
    return w


# -- EM loop shared by the mixtures ----------------------------------------------------
def _em(e_step, m_step, params, tol, max_iter, dtype):
    """scikit-learn's EM loop: the E-step gives the mean log-likelihood of the current
    parameters and the responsibilities; the M-step updates the parameters; stop when the
    log-likelihood changed by less than ``tol`` (converged) or became NaN (not converged)."""
    trace0 = jnp.full((max_iter,), jnp.nan, dtype)

    def cond(state):
        _, previous, i, converged, _ = state
        return (i < max_iter) & ~converged & ~jnp.isnan(previous)

    def body(state):
        params, previous, i, _, trace = state
        ll, log_resp = e_step(params)
        params = m_step(jnp.exp(log_resp))
        converged = jnp.abs(ll - previous) < tol  # False for NaN (e.g. a singular covariance): stop, not converged
        return params, ll, i + 1, converged, trace.at[i].set(ll)

    state = (params, jnp.asarray(-jnp.inf, dtype), jnp.asarray(0), jnp.asarray(False), trace0)
    params, lower_bound, n_iter, converged, trace = lax.while_loop(cond, body, state)
    ll, log_resp = e_step(params)
    return params, jnp.exp(log_resp), ll, lower_bound, trace, n_iter, converged


def _normalise(weighted_log_prob):
    """Mean log-likelihood and log-responsibilities from ``log pi_k + log p(x_n | k)``."""
    log_norm = jsp.logsumexp(weighted_log_prob, axis=1)
    return jnp.mean(log_norm), weighted_log_prob - log_norm[:, None]


# -- Gaussian mixture ------------------------------------------------------------------
def _gaussian_log_prob(X, means, covariances, covariance_type):
    """``log N(x_n | mu_k, Sigma_k)``, shape (n, K)."""
    d = X.shape[1]
    diff = X[:, None, :] - means[None, :, :]  # (n, K, d)
    if covariance_type == "diag":
        return -0.5 * (d * _LOG_2PI + jnp.sum(jnp.log(covariances), axis=1)[None, :]
                       + jnp.sum(diff**2 / covariances[None], axis=2))
    chol = jnp.linalg.cholesky(covariances)  # (K, d, d)
    z = solve_triangular(chol, jnp.transpose(diff, (1, 2, 0)), lower=True)  # (K, d, n)
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=1, axis2=2)), axis=1)
    return -0.5 * (d * _LOG_2PI + log_det[None, :] + jnp.sum(z**2, axis=1).T)


def _gaussian_m_step(X, resp, reg_covar, covariance_type):
    eps = 10.0 * jnp.finfo(X.dtype).eps
    nk = resp.sum(0) + eps
    means = (resp.T @ X) / nk[:, None]
    diff = X[None, :, :] - means[:, None, :]  # (K, n, d)
    if covariance_type == "diag":
        cov = jnp.einsum("nk,knd->kd", resp, diff**2) / nk[:, None] + reg_covar
    else:
        cov = jnp.einsum("nk,knd,kne->kde", resp, diff, diff) / nk[:, None, None]
        cov = cov + reg_covar * jnp.eye(X.shape[1], dtype=X.dtype)
    return nk / jnp.sum(nk), means, cov


def gaussian_mixture_responsibilities(X, means, covariances, weights, covariance_type: str = "full"):
    """Membership probabilities ``(n, K)`` and the log-likelihood of every sample ``(n,)``
    under a fitted Gaussian mixture (e.g. to apply a fit on a subset to a whole map)."""
    X = _samples(X)
    if covariance_type not in _COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {_COVARIANCE_TYPES}, got {covariance_type!r}")
    weighted = _gaussian_log_prob(X, means, covariances, covariance_type) + jnp.log(weights)[None, :]
    log_norm = jsp.logsumexp(weighted, axis=1)
    return jnp.exp(weighted - log_norm[:, None]), log_norm


def gaussian_mixture(X, n_components: int | None = None, *, means_init=None, weights_init=None,
                     precisions_init=None, covariances_init=None, covariance_type: str = "full",
                     reg_covar: float = 1e-6, tol: float = 1e-3, max_iter: int = 100,
                     key=None) -> GaussianMixtureResult:
    """Gaussian mixture fitted by EM.

    Args:
        X: samples ``(n, d)``.
        n_components: K; may be omitted when ``means_init`` is given.
        means_init: initial means ``(K, d)``; when ``None``, k-means (k-means++ seeded with
            ``key``) gives them, and the initial weights and covariances come from its hard
            assignment (scikit-learn's ``init_params="kmeans"``).
        weights_init: ``(K,)``; default: fractions of samples nearest to each initial mean.
        precisions_init: initial inverse covariances, ``(K, d, d)`` (``"full"``) or
            ``(K, d)`` (``"diag"``); default: from the covariance of the samples nearest to
            each initial mean (plus ``reg_covar``).  Give at most one of the two.
        covariances_init: initial covariances, same shapes, instead of ``precisions_init``.
        covariance_type: ``"full"`` or ``"diag"`` (static).
        reg_covar: added to the diagonal of every covariance in the M-step (>= 0).
        tol: stop when the mean log-likelihood per sample changes by less than ``tol``.
        max_iter: maximum number of EM iterations (static).
        key: PRNG key for k-means++ when ``means_init`` is ``None``.

    Returns:
        :class:`GaussianMixtureResult`.
    """
    X = _samples(X)
    k = _n_clusters(n_components, means_init, X, "means")
    _check_loop(tol, max_iter)
    if covariance_type not in _COVARIANCE_TYPES:
        raise ValueError(f"covariance_type must be one of {_COVARIANCE_TYPES}, got {covariance_type!r}")
    r = _concrete(reg_covar)
    if r is not None and not (np.ndim(r) == 0 and np.isfinite(r) and r >= 0):
        raise ValueError(f"reg_covar must be a finite number >= 0, got {reg_covar}")
    if precisions_init is not None and covariances_init is not None:
        raise ValueError("give precisions_init or covariances_init, not both")
    d = X.shape[1]
    cov_shape = (k, d, d) if covariance_type == "full" else (k, d)

    means, resp = _hard_init(X, means_init, key, k, "gaussian_mixture")
    weights, _, covariances = _gaussian_m_step(X, resp, reg_covar, covariance_type)
    if weights_init is not None:
        weights = _weights_init(weights_init, k, X.dtype)
    for name, given in (("precisions_init", precisions_init), ("covariances_init", covariances_init)):
        if given is None:
            continue
        given = jnp.asarray(given, dtype=X.dtype)
        if given.shape != cov_shape:
            raise ValueError(f"{name} must have shape {cov_shape} for covariance_type={covariance_type!r}, "
                             f"got {given.shape}")
        if name == "covariances_init":
            covariances = given
        elif covariance_type == "diag":
            covariances = 1.0 / given
        else:
            covariances = jnp.linalg.inv(given)
            covariances = 0.5 * (covariances + jnp.swapaxes(covariances, 1, 2))

    return _fit_gaussian_mixture(X, (weights, means, covariances), reg_covar, tol, int(max_iter), covariance_type)


@partial(jax.jit, static_argnums=(4, 5))
def _fit_gaussian_mixture(X, params, reg_covar, tol, max_iter, covariance_type):
    def e_step(params):
        w, mu, cov = params
        return _normalise(_gaussian_log_prob(X, mu, cov, covariance_type) + jnp.log(w)[None, :])

    def m_step(resp):
        return _gaussian_m_step(X, resp, reg_covar, covariance_type)

    (w, mu, cov), resp, ll, lower_bound, trace, n_iter, converged = _em(e_step, m_step, params, tol, max_iter,
                                                                        X.dtype)
    return GaussianMixtureResult(mu, cov, w, resp, ll, lower_bound, trace, n_iter, converged)


# -- Poisson mixture -------------------------------------------------------------------
def _poisson_log_prob(X, rates, exposure):
    """``sum_d log Poisson(x_nd | s_n lambda_kd)``, shape (n, K)."""
    mean = exposure[:, None, None] * rates[None, :, :]  # (n, K, d)
    return jnp.sum(jsp.xlogy(X[:, None, :], mean) - mean, axis=2) - jnp.sum(jsp.gammaln(X + 1.0), axis=1)[:, None]


def _exposure(exposure, X):
    if exposure is None:
        return jnp.ones((X.shape[0],), X.dtype)
    s = jnp.asarray(exposure, dtype=X.dtype)
    if s.shape != (X.shape[0],):
        raise ValueError(f"exposure must have shape ({X.shape[0]},), one per sample, got {s.shape}")
    v = _concrete(s)
    if v is not None and not np.all(v > 0):
        raise ValueError("exposure must be > 0 for every sample")
    return s


def _counts(X):
    X = _samples(X)
    v = _concrete(X)
    if v is not None and np.any(v < 0):
        raise ValueError(f"counts must be >= 0; X has {int(np.sum(v < 0))} negative value(s)")
    return X


def poisson_mixture_responsibilities(X, rates, weights, exposure=None):
    """Membership probabilities ``(n, K)`` and the log-likelihood of every sample ``(n,)``
    under a fitted Poisson mixture."""
    X = _counts(X)
    s = _exposure(exposure, X)
    weighted = _poisson_log_prob(X, jnp.asarray(rates, X.dtype), s) + jnp.log(weights)[None, :]
    log_norm = jsp.logsumexp(weighted, axis=1)
    return jnp.exp(weighted - log_norm[:, None]), log_norm


def poisson_mixture(X, n_components: int | None = None, *, rates_init=None, weights_init=None,
                    exposure=None, tol: float = 1e-3, max_iter: int = 100, min_rate: float = 1e-10,
                    key=None) -> PoissonMixtureResult:
    """Mixture of independent Poisson distributions fitted by EM (count vectors).

    Model: component ``k`` with probability ``pi_k``, then ``x_nd ~ Poisson(s_n lambda_kd)``
    independently over features ``d``.

    Args:
        X: counts ``(n, d)``, >= 0 (need not be integers, e.g. dead-time-corrected counts).
        n_components: K; may be omitted when ``rates_init`` is given.
        rates_init: initial rates ``(K, d)`` per unit exposure (e.g. phase centres from spot
            analyses); when ``None``, k-means (k-means++ seeded with ``key``) centres of
            ``X / exposure``.
        weights_init: ``(K,)``; default: fractions of samples nearest to each initial centre.
        exposure: ``s_n`` ``(n,)``, > 0 (e.g. dwell time x probe current); default 1.
        tol: stop when the mean log-likelihood per sample changes by less than ``tol``.
        max_iter: maximum number of EM iterations (static).
        min_rate: floor on the rates, keeps ``log lambda`` finite when a feature is zero in
            every sample of a component.
        key: PRNG key for k-means++ when ``rates_init`` is ``None``.

    Returns:
        :class:`PoissonMixtureResult`.  The EM log-likelihood trace is non-decreasing (up
        to rounding, and to the ``min_rate`` floor when it binds).
    """
    X = _counts(X)
    k = _n_clusters(n_components, rates_init, X, "rates")
    _check_loop(tol, max_iter)
    s = _exposure(exposure, X)
    rates, resp = _hard_init(X / s[:, None], rates_init, key, k, "poisson_mixture")
    eps = 10.0 * jnp.finfo(X.dtype).eps
    nk = resp.sum(0) + eps
    weights = nk / jnp.sum(nk) if weights_init is None else _weights_init(weights_init, k, X.dtype)
    rates = jnp.maximum(rates, min_rate)

    return _fit_poisson_mixture(X, s, (weights, rates), tol, min_rate, int(max_iter))


@partial(jax.jit, static_argnums=(5,))
def _fit_poisson_mixture(X, s, params, tol, min_rate, max_iter):
    eps = 10.0 * jnp.finfo(X.dtype).eps

    def e_step(params):
        w, lam = params
        return _normalise(_poisson_log_prob(X, lam, s) + jnp.log(w)[None, :])

    def m_step(resp):
        nk = resp.sum(0) + eps
        lam = (resp.T @ X) / (resp.T @ s + eps)[:, None]
        return nk / jnp.sum(nk), jnp.maximum(lam, min_rate)

    (w, lam), resp, ll, _, trace, n_iter, converged = _em(e_step, m_step, params, tol, max_iter, X.dtype)
    return PoissonMixtureResult(lam, w, resp, ll, trace, n_iter, converged)
