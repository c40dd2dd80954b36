"""Sparse multinomial logistic regression: classification with feature selection.

For samples ``x_i`` (``p`` features) with class labels ``y_i`` in ``0 .. C-1``, the class
probabilities are ``P(c | x) = softmax(x B + b)_c`` (``B`` ``(p, C)``, intercepts ``b`` ``(C,)``)
and the estimate minimises the penalised mean negative log-likelihood (scikit-learn's
``LogisticRegression`` with ``C = 1 / (n alpha)``; glmnet's multinomial lasso)::

    (1/W) sum_i w_i [ logsumexp_c(x_i B_c + b_c) - (x_i B_{y_i} + b_{y_i}) ] + g(B)

with ``g`` either ``alpha ||B||_1`` (``"l1"``: each element may matter for some classes
only; Krishnapuram et al. 2005, IEEE TPAMI 27, 957) or ``alpha sum_j ||B_j.||_2``
(``"group"``: an element is used for all classes or for none; the grouped multinomial lasso of
glmnet, Friedman, Hastie & Tibshirani 2010, sec. 4).  The intercepts are unpenalised.  The
solver is :func:`~jaxinv.sparse.fista` with the step from Bohning's (1992, Ann. Inst. Stat.
Math. 44, 197) bound on the Hessian, ``(1/2) [X 1]^T D [X 1] / W``.  Folds of a cross-validation
are zero sample weights, so everything is ``vmap``-able.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .fista import fista
from .path import _fold_labels
from .penalties import GroupL1, L1

__all__ = ["ClassifierCV", "SparseClassifier", "cross_validate_classifier", "multinomial_logistic",
           "predict_proba"]

_PENALTIES = ("l1", "group")


class SparseClassifier(NamedTuple):
    """A sparse multinomial logistic fit.

    Attributes:
        coef: ``B``, shape ``(p, C)``.
        intercept: ``b``, shape ``(C,)``.
        objective: the penalised objective.
        n_iter: FISTA iterations.
        converged: the stopping rule was met.
    """

    coef: jax.Array
    intercept: jax.Array
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def predict_proba(fit, X) -> jax.Array:
    """Class probabilities ``softmax(X B + b)``, shape ``(n, C)``."""
    return jax.nn.softmax(jnp.asarray(X) @ fit.coef + fit.intercept, axis=-1)


def _check(X, y, n_classes, sample_weight, penalty):
    X = jnp.asarray(X, jnp.result_type(float))
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (samples x features), got shape {X.shape}")
    if not isinstance(X, jax.core.Tracer) and not np.all(np.isfinite(np.asarray(X))):
        raise ValueError("X contains NaN or infinite values")
    y = jnp.asarray(y)
    if y.shape != (X.shape[0],) or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"y must be integer class labels, shape ({X.shape[0]},), got {y.shape} {y.dtype}")
    if n_classes is None:
        if isinstance(y, jax.core.Tracer):
            raise ValueError("give n_classes when y is traced (under jit/vmap)")
        n_classes = int(np.max(np.asarray(y))) + 1
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    if not isinstance(y, jax.core.Tracer) and (np.min(np.asarray(y)) < 0 or np.max(np.asarray(y)) >= n_classes):
        raise ValueError(f"class labels must lie in 0..{n_classes - 1}")
    w = jnp.ones(X.shape[0], X.dtype) if sample_weight is None else jnp.asarray(sample_weight, X.dtype)
    if w.shape != (X.shape[0],):
        raise ValueError(f"sample_weight must have shape ({X.shape[0]},), got {w.shape}")
    if not isinstance(w, jax.core.Tracer):
        wv = np.asarray(w)
        if not np.all(np.isfinite(wv) & (wv >= 0)) or wv.sum() <= 0:
            raise ValueError("sample_weight must be finite, >= 0 and not all zero")
    if penalty not in _PENALTIES:
        raise ValueError(f"unknown penalty {penalty!r}; choose one of {_PENALTIES}")
    return X, y, w, int(n_classes)


def _problem(X, y, w, n_classes, penalty, fit_intercept):
    n, p = X.shape
    Xt = jnp.concatenate([X, jnp.ones((n, 1), X.dtype)], axis=1) if fit_intercept else X
    onehot = jax.nn.one_hot(y, n_classes, dtype=X.dtype)
    wn = w / jnp.sum(w)

    def loss(theta):
        z = Xt @ theta
        return jnp.sum(wn * (jax.nn.logsumexp(z, axis=1) - jnp.sum(onehot * z, axis=1)))

    lipschitz = 0.5 * jnp.linalg.norm(jnp.sqrt(wn)[:, None] * Xt, ord=2) ** 2
    rows = p + (1 if fit_intercept else 0)
    row_weight = np.concatenate([np.ones(p), np.zeros(rows - p)])
    if penalty == "l1":
        pen = L1(0.0, weights=np.repeat(row_weight[:, None], n_classes, axis=1))
    else:
        pen = GroupL1(0.0, np.repeat(np.arange(rows)[:, None], n_classes, axis=1), row_weight)
    # the intercept-only solution (log class frequencies), where a path starts
    start = jnp.zeros((rows, n_classes), X.dtype)
    if fit_intercept:
        freq = jnp.maximum(wn @ onehot, 1e-12)
        start = start.at[p].set(jnp.log(freq) - jnp.mean(jnp.log(freq)))
    return loss, lipschitz, pen, start


def _unpack(theta, p, fit_intercept):
    return theta[:p], (theta[p] if fit_intercept else jnp.zeros(theta.shape[1], theta.dtype))


def multinomial_logistic(X, y, alpha, *, n_classes: int | None = None, penalty: str = "l1",
                         fit_intercept: bool = True, sample_weight=None, init=None, tol: float = 1e-10,
                         max_iter: int = 50000) -> SparseClassifier:
    """Penalised multinomial logistic regression (module docstring).

    Args:
        X: features ``(n, p)`` (standardise them: the penalty is not scale-invariant).
        y: integer labels ``(n,)`` in ``0 .. C-1``.
        alpha: regularisation strength.
        n_classes: ``C`` (default: ``max(y) + 1``; needed under ``jit``/``vmap``).
        penalty: ``"l1"`` or ``"group"``.
        fit_intercept: fit unpenalised per-class intercepts.
        sample_weight: ``w_i >= 0``.
        init: starting ``(B, b)`` (a warm start).
        tol: FISTA's relative step tolerance.
        max_iter: FISTA's iteration limit.
    """
    X, y, w, C = _check(X, y, n_classes, sample_weight, penalty)
    loss, lipschitz, pen, start = _problem(X, y, w, C, penalty, fit_intercept)
    if init is not None:
        B, b = init
        start = jnp.concatenate([jnp.asarray(B), jnp.asarray(b)[None]], axis=0) if fit_intercept else jnp.asarray(B)
    res = fista(loss, pen.with_strength(alpha), start, step_size=1.0 / lipschitz, tol=tol, max_iter=max_iter)
    coef, intercept = _unpack(res.x, X.shape[1], fit_intercept)
    return SparseClassifier(coef, intercept, res.objective, res.n_iter, res.converged)


class ClassifierCV(NamedTuple):
    """Cross-validation of a sparse classifier along a path of strengths.

    Attributes:
        alphas: the strengths (decreasing).
        accuracy: held-out accuracy per fold and strength, ``(n_folds, n_alphas)``.
        deviance: held-out mean negative log-likelihood per fold and strength.
        mean_accuracy, mean_deviance: over folds; standard_error: of the mean deviance.
        best_alpha: least mean deviance; alpha_1se: largest strength within one standard error.
        n_selected: features with a non-zero coefficient at each strength (fit to all data).
        path: ``(coef, intercept)`` of the fits to all data, ``(n_alphas, p, C)`` and ``(n_alphas, C)``.
    """

    alphas: jax.Array
    accuracy: jax.Array
    deviance: jax.Array
    mean_accuracy: jax.Array
    mean_deviance: jax.Array
    standard_error: jax.Array
    best_alpha: jax.Array
    alpha_1se: jax.Array
    n_selected: jax.Array
    path: tuple


def _path(X, y, w, C, penalty, fit_intercept, alphas, tol, max_iter):
    loss, lipschitz, pen, start = _problem(X, y, w, C, penalty, fit_intercept)

    def solve(theta, alpha):
        res = fista(loss, pen.with_strength(alpha), theta, step_size=1.0 / lipschitz, tol=tol, max_iter=max_iter)
        return res.x, res.x

    _, thetas = lax.scan(solve, start, alphas)
    return thetas


def cross_validate_classifier(X, y, key=None, *, n_folds: int = 5, folds=None, alphas=None, n_alphas: int = 30,
                              eps: float = 1e-2, penalty: str = "l1", n_classes: int | None = None,
                              fit_intercept: bool = True, tol: float = 1e-8, max_iter: int = 20000) -> ClassifierCV:
    """K-fold cross-validation of :func:`multinomial_logistic` along a warm-started path.

    The default path runs from ``alpha_max`` (only intercepts) down to ``eps * alpha_max``,
    evenly in ``log alpha``; folds are random (``key``) or contiguous blocks (``key=None``) or
    given (``folds``).  Strengths are scored by held-out deviance (mean negative
    log-likelihood) and accuracy."""
    X, y, w, C = _check(X, y, n_classes, None, penalty)
    labels, k = _fold_labels(X.shape[0], n_folds, key, folds)
    p = X.shape[1]
    if alphas is None:
        loss, _, pen, start = _problem(X, y, w, C, penalty, fit_intercept)
        top = pen.with_strength(1.0).critical_strength(jax.grad(loss)(start))
        alphas = top * jnp.logspace(0.0, np.log10(eps), n_alphas, dtype=X.dtype)
    alphas = jnp.asarray(alphas, X.dtype)
    train = jnp.asarray(labels[None, :] != np.arange(k)[:, None], X.dtype)

    def fold(weights):
        thetas = _path(X, y, weights, C, penalty, fit_intercept, alphas, tol, max_iter)
        B, b = thetas[:, :p], (thetas[:, p] if fit_intercept else jnp.zeros((alphas.shape[0], C), X.dtype))
        logp = jax.nn.log_softmax(jnp.einsum("np,apc->anc", X, B) + b[:, None], axis=-1)
        held = 1.0 - weights
        nll = -jnp.take_along_axis(logp, y[None, :, None], axis=-1)[..., 0]
        correct = (jnp.argmax(logp, axis=-1) == y[None]).astype(X.dtype)
        return correct @ held / jnp.sum(held), nll @ held / jnp.sum(held)

    accuracy, deviance = jax.vmap(fold)(train)
    mean_dev = deviance.mean(axis=0)
    se = deviance.std(axis=0, ddof=1) / np.sqrt(k)
    best = jnp.argmin(mean_dev)
    alpha_1se = jnp.max(jnp.where(mean_dev <= mean_dev[best] + se[best], alphas, -jnp.inf))
    thetas = _path(X, y, w, C, penalty, fit_intercept, alphas, tol, max_iter)
    B = thetas[:, :p]
    b = thetas[:, p] if fit_intercept else jnp.zeros((alphas.shape[0], C), X.dtype)
    n_selected = jnp.sum(jnp.any(B != 0, axis=-1), axis=-1)
    return ClassifierCV(alphas, accuracy, deviance, accuracy.mean(axis=0), mean_dev, se, alphas[best], alpha_1se,
                        n_selected, (B, b))
