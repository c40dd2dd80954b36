"""Penalised linear least squares: lasso, non-negative lasso, elastic net, group lasso.

The objective (scikit-learn's convention, so ``alpha`` means the same thing there)::

    (1 / (2 W)) sum_i w_i ||y_i - x_i B - b||^2 + g(B),        W = sum_i w_i

for a response ``y`` of shape ``(n,)`` (``B`` of shape ``(p,)``) or ``(n, T)`` (``T`` tasks,
``B`` of shape ``(p, T)``), sample weights ``w_i >= 0`` (default 1; a 0/1 weight is how
cross-validation holds rows out without changing shapes) and an unpenalised intercept ``b``,
which is removed exactly by weighted centring of ``X`` and ``y``.  ``g`` is a
:class:`~jaxinv.sparse.Penalty`.  The solver is :func:`~jaxinv.sparse.fista` with the exact
Lipschitz constant ``L = sigma_max(D^{1/2} X_c)^2 / W`` of the gradient.

Every function is ``jit``-able and ``vmap``-able over datasets (stacked ``X``/``y``/weights)
and over regularisation strengths.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .fista import fista
from .penalties import ElasticNet, GroupL1, L1, Penalty

__all__ = [
    "SparseRegression",
    "elastic_net",
    "group_lasso",
    "lasso",
    "multitask_lasso",
    "penalised_least_squares",
]


class SparseRegression(NamedTuple):
    """A penalised least-squares fit.

    Attributes:
        coef: ``B``, shape ``(p,)`` or ``(p, T)``.
        intercept: ``b``, shape ``()`` or ``(T,)`` (0 without an intercept).
        objective: the penalised objective at the solution.
        n_iter: FISTA iterations.
        converged: the solver's stopping rule was met.
    """

    coef: jax.Array
    intercept: jax.Array
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def _concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _check_design(X, y, sample_weight):
    X = jnp.asarray(X, dtype=jnp.result_type(float))
    y = jnp.asarray(y, dtype=X.dtype)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D design matrix (samples x features), got shape {X.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_tasks) to match X {X.shape}, "
                         f"got {y.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X is empty: shape {X.shape}")
    w = jnp.ones(X.shape[0], X.dtype) if sample_weight is None else jnp.asarray(sample_weight, X.dtype)
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape}")
    if _concrete(X) and not np.all(np.isfinite(np.asarray(X))):
        raise ValueError("X contains NaN or infinite values")
    if _concrete(y) and not np.all(np.isfinite(np.asarray(y))):
        raise ValueError("y contains NaN or infinite values")
    if _concrete(w) and (not np.all(np.isfinite(np.asarray(w)) & (np.asarray(w) >= 0)) or float(np.sum(w)) <= 0):
        raise ValueError("sample_weight must be finite, >= 0 and not all zero")
    return X, y, w


class _Centred(NamedTuple):
    X: jax.Array
    y: jax.Array
    w: jax.Array
    x_mean: jax.Array
    y_mean: jax.Array
    lipschitz: jax.Array


def _centre(X, y, w, fit_intercept) -> _Centred:
    total = jnp.sum(w)
    if fit_intercept:
        x_mean = w @ X / total
        y_mean = jnp.tensordot(w, y, axes=1) / total
    else:
        x_mean = jnp.zeros(X.shape[1], X.dtype)
        y_mean = jnp.zeros(y.shape[1:], X.dtype)
    Xc, yc = X - x_mean, y - y_mean
    lipschitz = jnp.linalg.norm(jnp.sqrt(w)[:, None] * Xc, ord=2) ** 2 / total
    return _Centred(Xc, yc, w / total, x_mean, y_mean, lipschitz)


def _loss(data: _Centred):
    def loss(coef):
        r = data.y - data.X @ coef
        if r.ndim == 1:
            return 0.5 * jnp.sum(data.w * r**2)
        return 0.5 * jnp.sum(data.w[:, None] * r**2)

    return loss


def _gradient_at_zero(data: _Centred):
    return -(data.X.T @ (data.w[:, None] * data.y if data.y.ndim == 2 else data.w * data.y))


def _coef_shape(X, y):
    return (X.shape[1],) + y.shape[1:]


def penalised_least_squares(X, y, penalty: Penalty, *, fit_intercept: bool = True, sample_weight=None,
                            init=None, tol: float = 1e-10, max_iter: int = 20000) -> SparseRegression:
    """Minimise the penalised least-squares objective of this module by FISTA.

    Args:
        X: design matrix, shape ``(n, p)``.
        y: response, shape ``(n,)`` or ``(n, T)``.
        penalty: the penalty ``g`` (e.g. ``L1(alpha)``).
        fit_intercept: fit an unpenalised intercept.
        sample_weight: ``w_i >= 0`` per sample (default 1).
        init: starting coefficients (a warm start), default 0.
        tol: FISTA's relative step tolerance.
        max_iter: FISTA's iteration limit.
    """
    X, y, w = _check_design(X, y, sample_weight)
    data = _centre(X, y, w, fit_intercept)
    shape = _coef_shape(X, y)
    x0 = jnp.zeros(shape, X.dtype) if init is None else jnp.asarray(init, X.dtype)
    if x0.shape != shape:
        raise ValueError(f"init must have the coefficients' shape {shape}, got {x0.shape}")
    res = fista(_loss(data), penalty, x0, step_size=1.0 / jnp.maximum(data.lipschitz, jnp.finfo(X.dtype).tiny), tol=tol,
                max_iter=max_iter)
    intercept = data.y_mean - data.x_mean @ res.x
    return SparseRegression(res.x, intercept, res.objective, res.n_iter, res.converged)


def lasso(X, y, alpha, *, positive: bool = False, **kwargs) -> SparseRegression:
    """Lasso: ``(1/2n) ||y - X b - b0||^2 + alpha ||b||_1`` (scikit-learn's ``Lasso``);
    ``positive=True`` for the non-negative lasso.  Keyword arguments as
    :func:`penalised_least_squares`."""
    return penalised_least_squares(X, y, L1(alpha, positive), **kwargs)


def elastic_net(X, y, alpha, l1_ratio=0.5, *, positive: bool = False, **kwargs) -> SparseRegression:
    """Elastic net: ``(1/2n) ||y - X b - b0||^2 + alpha (l1_ratio ||b||_1 + (1 - l1_ratio) ||b||^2 / 2)``
    (scikit-learn's ``ElasticNet``)."""
    return penalised_least_squares(X, y, ElasticNet(alpha, l1_ratio, positive), **kwargs)


def _feature_groups(groups, coef_shape):
    labels = np.asarray(groups)
    if labels.shape != coef_shape[:1]:
        raise ValueError(f"groups must give one integer label per feature, shape ({coef_shape[0]},), got {labels.shape}")
    if len(coef_shape) == 2:
        labels = np.repeat(labels[:, None], coef_shape[1], axis=1)
    return labels


def group_lasso(X, y, alpha, groups, *, weights="sqrt_size", **kwargs) -> SparseRegression:
    """Group lasso: ``(1/2n) ||y - X B - b||^2 + alpha sum_g w_g ||B_g||_2`` (Yuan & Lin 2006).

    ``groups`` labels every feature (``0 .. G-1``); with a 2-D ``y`` a group holds its features'
    coefficients for all tasks.  ``weights``: ``w_g`` (default ``sqrt`` of the group size)."""
    X, y, _ = _check_design(X, y, kwargs.get("sample_weight"))
    penalty = GroupL1(alpha, _feature_groups(groups, _coef_shape(X, y)), weights)
    return penalised_least_squares(X, y, penalty, **kwargs)


def multitask_lasso(X, Y, alpha, **kwargs) -> SparseRegression:
    """Multi-task lasso: ``(1/2n) ||Y - X B - b||_F^2 + alpha sum_j ||B_j||_2`` over the rows
    ``B_j`` of ``B`` (scikit-learn's ``MultiTaskLasso``): a feature is used by all tasks or by none."""
    Y = jnp.asarray(Y)
    if Y.ndim != 2:
        raise ValueError(f"the multi-task lasso needs Y of shape (n, n_tasks), got {Y.shape}")
    X = jnp.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D design matrix (samples x features), got shape {X.shape}")
    return penalised_least_squares(X, Y, GroupL1.rows(alpha, (X.shape[1], Y.shape[1])), **kwargs)
