"""Warm-started regularisation paths and K-fold cross-validation of the strength.

:func:`regularisation_path` solves the penalised least-squares problem of
:mod:`jaxinv.sparse.linear` for a decreasing sequence of strengths, each solve starting from
the previous solution (the "pathwise" strategy of Friedman, Hastie & Tibshirani 2010, J. Stat.
Softw. 33(1), sec. 2.5).  By default the sequence runs geometrically from ``alpha_max`` -- the
smallest strength at which all coefficients are zero, ``penalty.critical_strength(grad f(0))`` --
down to ``eps * alpha_max``, as glmnet and scikit-learn do.

:func:`cross_validate` estimates the prediction error of every strength on the path by
K-fold cross-validation (Hastie, Tibshirani & Friedman 2009, sec. 7.10): folds are held out by
zero sample weights, so all folds have the same shapes and run as one ``vmap``.  It reports the
strength of least mean error and the largest strength within one standard error of it (the
"one-standard-error rule", ibid. sec. 7.10.1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .fista import fista
from .linear import SparseRegression, _centre, _check_design, _coef_shape, _gradient_at_zero, _loss, penalised_least_squares
from .penalties import Penalty

__all__ = ["CrossValidation", "RegularisationPath", "alpha_max", "cross_validate", "regularisation_path"]


class RegularisationPath(NamedTuple):
    """Solutions along a path of strengths.

    Attributes:
        alphas: the strengths, decreasing, shape ``(n_alphas,)``.
        coef: shape ``(n_alphas, p)`` or ``(n_alphas, p, T)``.
        intercept: shape ``(n_alphas,)`` or ``(n_alphas, T)``.
        objective: penalised objective at each solution.
        n_iter: FISTA iterations per strength.
        converged: per strength.
    """

    alphas: jax.Array
    coef: jax.Array
    intercept: jax.Array
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def alpha_max(X, y, penalty: Penalty, *, fit_intercept: bool = True, sample_weight=None):
    """The smallest strength at which every coefficient is zero (the path's start)."""
    X, y, w = _check_design(X, y, sample_weight)
    data = _centre(X, y, w, fit_intercept)
    return penalty.with_strength(1.0).critical_strength(_gradient_at_zero(data))


def _alphas(X, y, penalty, alphas, n_alphas, eps, fit_intercept, sample_weight):
    if alphas is not None:
        alphas = jnp.asarray(alphas, jnp.result_type(float))
        if alphas.ndim != 1 or alphas.shape[0] == 0:
            raise ValueError(f"alphas must be a non-empty 1-D array, got shape {alphas.shape}")
        if not isinstance(alphas, jax.core.Tracer) and (np.any(np.asarray(alphas) < 0) or not np.all(np.isfinite(np.asarray(alphas)))):
            raise ValueError("alphas must be finite and >= 0")
        return alphas
    if n_alphas < 1 or not 0.0 < eps < 1.0:
        raise ValueError(f"need n_alphas >= 1 and 0 < eps < 1, got {n_alphas}, {eps}")
    top = alpha_max(X, y, penalty, fit_intercept=fit_intercept, sample_weight=sample_weight)
    return top * jnp.logspace(0.0, np.log10(eps), n_alphas, dtype=top.dtype)


def regularisation_path(X, y, penalty: Penalty, alphas=None, *, n_alphas: int = 100, eps: float = 1e-3,
                        fit_intercept: bool = True, sample_weight=None, tol: float = 1e-10,
                        max_iter: int = 20000) -> RegularisationPath:
    """Warm-started solutions of the penalised least-squares problem along ``alphas``.

    Args:
        X: design matrix ``(n, p)``.
        y: response ``(n,)`` or ``(n, T)``.
        penalty: the penalty; its own strength is ignored (replaced by each alpha).
        alphas: the strengths (solved in the order given; give them decreasing for warm
            starts to help). Default: ``n_alphas`` values from ``alpha_max`` down to
            ``eps * alpha_max``, evenly spaced in ``log alpha``.
        n_alphas: number of strengths of the default grid.
        eps: the default grid's smallest strength, as a fraction of ``alpha_max``.
        fit_intercept: fit an unpenalised intercept.
        sample_weight: ``w_i >= 0`` per sample (default 1).
        tol: FISTA's relative step tolerance.
        max_iter: FISTA's iteration limit per strength.
    """
    X, y, w = _check_design(X, y, sample_weight)
    alphas = _alphas(X, y, penalty, alphas, n_alphas, eps, fit_intercept, w)
    data = _centre(X, y, w, fit_intercept)
    loss = _loss(data)
    step = 1.0 / jnp.maximum(data.lipschitz, jnp.finfo(X.dtype).tiny)

    def solve(coef, alpha):
        res = fista(loss, penalty.with_strength(alpha), coef, step_size=step, tol=tol, max_iter=max_iter)
        intercept = data.y_mean - data.x_mean @ res.x
        return res.x, (res.x, intercept, res.objective, res.n_iter, res.converged)

    start = jnp.zeros(_coef_shape(X, y), X.dtype)
    _, (coef, intercept, objective, n_iter, converged) = lax.scan(solve, start, alphas)
    return RegularisationPath(alphas, coef, intercept, objective, n_iter, converged)


class CrossValidation(NamedTuple):
    """K-fold cross-validation along a regularisation path.

    Attributes:
        alphas: the strengths, shape ``(n_alphas,)``.
        fold_error: mean squared prediction error of every held-out fold, ``(n_folds, n_alphas)``
            (averaged over tasks for a 2-D ``y``).
        mean_error: mean over folds, ``(n_alphas,)``.
        standard_error: standard error of that mean (fold-to-fold sd over ``sqrt(n_folds)``).
        best_alpha: the strength of least ``mean_error``.
        alpha_1se: the largest strength whose mean error is within one standard error of the
            least (a sparser model that predicts as well, within the noise of the estimate).
        fit: the fit to all data at ``best_alpha``.
    """

    alphas: jax.Array
    fold_error: jax.Array
    mean_error: jax.Array
    standard_error: jax.Array
    best_alpha: jax.Array
    alpha_1se: jax.Array
    fit: SparseRegression


def _fold_labels(n, n_folds, key, folds):
    if folds is not None:
        labels = np.asarray(folds)
        if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError(f"folds must give a non-negative integer fold label per sample, shape ({n},)")
        k = int(labels.max()) + 1
        empty = np.flatnonzero(np.bincount(labels, minlength=k) == 0)
        if k < 2 or empty.size:
            raise ValueError(f"fold labels must run over 0..K-1 with K >= 2 and no empty fold; empty: {empty.tolist()}")
        return labels, k
    if not 2 <= n_folds <= n:
        raise ValueError(f"n_folds must lie in [2, n_samples={n}], got {n_folds}")
    if key is None:
        # contiguous blocks, the first n % K one longer (scikit-learn's KFold without shuffling)
        labels = np.repeat(np.arange(n_folds), n // n_folds + (np.arange(n_folds) < n % n_folds))
    else:
        labels = np.asarray(jax.random.permutation(key, np.arange(n) % n_folds))
    return labels, n_folds


def cross_validate(X, y, penalty: Penalty, key=None, *, n_folds: int = 5, folds=None, alphas=None,
                   n_alphas: int = 50, eps: float = 1e-3, fit_intercept: bool = True, tol: float = 1e-10,
                   max_iter: int = 20000) -> CrossValidation:
    """Choose the regularisation strength by K-fold cross-validation.

    Args:
        X: design matrix ``(n, p)``.
        y: response ``(n,)`` or ``(n, T)``.
        penalty: the penalty (its strength is ignored).
        key: PRNG key for a random assignment of samples to folds; ``None`` gives contiguous
            blocks of rows (scikit-learn's ``KFold`` without shuffling).
        n_folds: number of folds K.
        folds: explicit fold label per sample (overrides ``n_folds`` and ``key``).
        alphas: the strengths; default ``n_alphas`` from the full data's ``alpha_max`` down by ``eps``.
        n_alphas: number of strengths of the default grid.
        eps: the default grid's smallest strength, as a fraction of ``alpha_max``.
        fit_intercept: fit an unpenalised intercept.
        tol: FISTA's relative step tolerance.
        max_iter: FISTA's iteration limit per strength.
    """
    X, y, _ = _check_design(X, y, None)
    labels, k = _fold_labels(X.shape[0], n_folds, key, folds)
    alphas = _alphas(X, y, penalty, alphas, n_alphas, eps, fit_intercept, None)
    train = jnp.asarray(labels[None, :] != np.arange(k)[:, None], X.dtype)

    def fold(weights):
        path = regularisation_path(X, y, penalty, alphas, fit_intercept=fit_intercept, sample_weight=weights,
                                   tol=tol, max_iter=max_iter)
        pred = jnp.einsum("np,ap...->an...", X, path.coef) + path.intercept[:, None]
        sq = (y[None] - pred) ** 2
        sq = sq.reshape(sq.shape[0], sq.shape[1], -1).mean(axis=-1)
        held = 1.0 - weights
        return sq @ held / jnp.sum(held)

    fold_error = jax.vmap(fold)(train)
    mean = fold_error.mean(axis=0)
    se = fold_error.std(axis=0, ddof=1) / np.sqrt(k)
    best = jnp.argmin(mean)
    within = mean <= mean[best] + se[best]
    alpha_1se = jnp.max(jnp.where(within, alphas, -jnp.inf))
    fit = penalised_least_squares(X, y, penalty.with_strength(alphas[best]), fit_intercept=fit_intercept,
                                  tol=tol, max_iter=max_iter)
    return CrossValidation(alphas, fold_error, mean, se, alphas[best], alpha_1se, fit)
