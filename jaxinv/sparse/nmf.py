"""Non-negative matrix factorisation ``X ~ W H`` (``W >= 0``, ``H >= 0``) in JAX.

``X`` has shape ``(n_samples, n_features)`` (e.g. rocks x elements), ``W`` ``(n_samples, k)``
holds each sample's loadings on ``k`` end-members, the rows of ``H`` ``(k, n_features)`` are the
end-member compositions.  Two losses:

* ``"frobenius"``: ``D(X | WH) = (1/2) sum_ij m_ij (X_ij - (WH)_ij)^2``;
* ``"kl"``: the generalised Kullback-Leibler divergence
  ``D = sum_ij m_ij (X_ij log(X_ij / (WH)_ij) - X_ij + (WH)_ij)`` (Poisson deviance / 2);

``m_ij`` is an optional 0/1 mask (1 = observed): missing entries, and entries held out for
cross-validation of the rank (:func:`nmf_rank_cv`).  Two solvers:

* ``"mu"``: the multiplicative updates of Lee & Seung (2001, NIPS 13, eqs. 4 and 5), in the
  masked form (e.g. Fevotte & Idier 2011, Neural Comput. 23, 2421, sec. 4 with weights);
  ``W`` first, then ``H``, as scikit-learn's ``solver="mu"`` -- from the same start the
  iterates are the same;
* ``"hals"``: hierarchical alternating least squares (Cichocki & Phan 2009, IEICE Trans.
  Fundam. E92-A, 708, eq. 13) for the Frobenius loss without a mask: each column of ``W``
  (then each row of ``H``) is the exact non-negative minimiser given the others, updated in
  turn -- scikit-learn's ``solver="cd"`` with ``shuffle=False``.

Zero denominators and ``WH`` below ``EPSILON`` (float32 machine epsilon, as scikit-learn) are
clipped.  Stopping: every ``check_every`` iterations the loss is compared with its value at the
previous check, and the run stops when the decrease relative to the initial loss is below
``tol`` (scikit-learn's rule for ``"mu"``); ``tol=0`` runs exactly ``max_iter`` iterations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["NMFResult", "RankSelection", "nmf", "nmf_loss", "nmf_rank_cv"]

EPSILON = float(np.finfo(np.float32).eps)
_LOSSES = ("frobenius", "kl")
_SOLVERS = ("mu", "hals")


class NMFResult(NamedTuple):
    """An NMF fit.

    Attributes:
        W: loadings, shape ``(n_samples, k)``.
        H: components, shape ``(k, n_features)``.
        loss: the loss ``D(X | WH)`` at the end.
        n_iter: iterations done.
        converged: the tolerance was met before ``max_iter``.
    """

    W: jax.Array
    H: jax.Array
    loss: jax.Array
    n_iter: jax.Array
    converged: jax.Array


def nmf_loss(X, W, H, loss: str = "frobenius", mask=None):
    """``D(X | WH)`` over the entries where ``mask`` is 1 (all entries by default)."""
    WH = W @ H
    m = jnp.ones_like(X) if mask is None else mask
    if loss == "frobenius":
        return 0.5 * jnp.sum(m * (X - WH) ** 2)
    if loss == "kl":
        observed = m * (X > EPSILON)
        ratio = jnp.where(observed > 0, X / jnp.maximum(WH, EPSILON), 1.0)
        return jnp.sum(observed * X * jnp.log(ratio)) + jnp.sum(m * (WH - X))
    raise ValueError(f"unknown NMF loss {loss!r}; choose one of {_LOSSES}")


def _safe(denominator):
    return jnp.where(denominator == 0, EPSILON, denominator)


def _mu_step(X, W, H, m, loss):
    if loss == "frobenius":
        if m is None:
            W = W * (X @ H.T) / _safe(W @ (H @ H.T))
            H = H * (W.T @ X) / _safe((W.T @ W) @ H)
        else:
            W = W * ((m * X) @ H.T) / _safe((m * (W @ H)) @ H.T)
            H = H * (W.T @ (m * X)) / _safe(W.T @ (m * (W @ H)))
        return W, H
    ones = jnp.ones_like(X) if m is None else m
    mx = X if m is None else m * X
    W = W * ((mx / jnp.maximum(W @ H, EPSILON)) @ H.T) / _safe(ones @ H.T)
    H = H * (W.T @ (mx / jnp.maximum(W @ H, EPSILON))) / _safe(W.T @ ones)
    return W, H


def _hals_factor(W, HHt, XHt):
    """One sweep of exact coordinate updates of the columns of ``W`` (scikit-learn's
    ``_update_cdnmf_fast``): ``W[:, t] = max(W[:, t] - (W HHt - XHt)[:, t] / HHt[t, t], 0)``."""

    def column(t, W):
        grad = W @ HHt[:, t] - XHt[:, t]
        hess = HHt[t, t]
        new = jnp.where(hess != 0, jnp.maximum(W[:, t] - grad / jnp.where(hess != 0, hess, 1.0), 0.0), W[:, t])
        return W.at[:, t].set(new)

    return lax.fori_loop(0, W.shape[1], column, W)


def _hals_step(X, W, H):
    W = _hals_factor(W, H @ H.T, X @ H.T)
    Ht = _hals_factor(H.T, W.T @ W, X.T @ W)
    return W, Ht.T


def _random_init(key, X, k):
    """scikit-learn's ``init="random"``: ``|N(0, 1)| sqrt(mean(X) / k)``."""
    scale = jnp.sqrt(jnp.mean(X) / k)
    kw, kh = jax.random.split(key)
    W = scale * jnp.abs(jax.random.normal(kw, (X.shape[0], k), X.dtype))
    H = scale * jnp.abs(jax.random.normal(kh, (k, X.shape[1]), X.dtype))
    return W, H


def _check(X, n_components, loss, solver, mask, tol, max_iter, check_every):
    X = jnp.asarray(X, jnp.result_type(float))
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D array (samples x features), got shape {X.shape}")
    if not isinstance(X, jax.core.Tracer):
        values = np.asarray(X)
        if not np.all(np.isfinite(values)):
            raise ValueError("X contains NaN or infinite values (use mask= for missing entries, with any finite fill)")
        if np.any(values < 0):
            raise ValueError("NMF needs a non-negative X; it has negative entries")
    if loss not in _LOSSES:
        raise ValueError(f"unknown NMF loss {loss!r}; choose one of {_LOSSES}")
    if solver not in _SOLVERS:
        raise ValueError(f"unknown NMF solver {solver!r}; choose one of {_SOLVERS}")
    if solver == "hals" and (loss != "frobenius" or mask is not None):
        raise ValueError("the HALS solver is for the Frobenius loss without a mask; use solver='mu'")
    if not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ValueError(f"n_components must be a positive integer, got {n_components!r}")
    if tol < 0 or max_iter < 1 or check_every < 1:
        raise ValueError(f"need tol >= 0, max_iter >= 1 and check_every >= 1; got {tol}, {max_iter}, {check_every}")
    if mask is not None:
        mask = jnp.asarray(mask, X.dtype)
        if mask.shape != X.shape:
            raise ValueError(f"mask must have X's shape {X.shape}, got {mask.shape}")
    return X, mask


def nmf(X, n_components: int, key=None, *, init=None, loss: str = "frobenius", solver: str = "mu", mask=None,
        tol: float = 1e-4, max_iter: int = 1000, check_every: int = 10) -> NMFResult:
    """Factorise ``X ~ W H`` with ``n_components`` non-negative components.

    Args:
        X: non-negative data, shape ``(n_samples, n_features)``.
        n_components: the rank ``k``.
        key: PRNG key for the random start (scikit-learn's ``init="random"``); needed unless
            ``init`` is given.
        init: ``(W0, H0)``, a given non-negative start.
        loss: ``"frobenius"`` or ``"kl"``.
        solver: ``"mu"`` (multiplicative updates, any loss, mask allowed) or ``"hals"``.
        mask: 0/1 array of ``X``'s shape, 1 where ``X`` is observed.
        tol: stop when the loss falls by less than ``tol`` times the initial loss between checks.
        max_iter: iteration limit.
        check_every: iterations between checks of the loss.
    """
    X, mask = _check(X, n_components, loss, solver, mask, tol, max_iter, check_every)
    if init is None:
        if key is None:
            raise ValueError("give a PRNG key for the random start, or init=(W0, H0)")
        W, H = _random_init(key, X, n_components)
    else:
        W, H = (jnp.asarray(a, X.dtype) for a in init)
        if W.shape != (X.shape[0], n_components) or H.shape != (n_components, X.shape[1]):
            raise ValueError(f"init must be W {(X.shape[0], n_components)} and H {(n_components, X.shape[1])}, "
                             f"got {W.shape} and {H.shape}")

    def step(W, H):
        return _hals_step(X, W, H) if solver == "hals" else _mu_step(X, W, H, mask, loss)

    initial = nmf_loss(X, W, H, loss, mask)

    def cond(state):
        _, _, n, _, done = state
        return jnp.logical_and(~done, n < max_iter)

    def body(state):
        W, H, n, previous, _ = state
        W, H = step(W, H)
        n = n + 1
        check = n % check_every == 0
        current = lax.cond(check, lambda: nmf_loss(X, W, H, loss, mask), lambda: previous)
        done = (tol > 0) & check & ((previous - current) <= tol * initial)
        return W, H, n, current, done

    W, H, n, _, done = lax.while_loop(cond, body, (W, H, jnp.asarray(0), initial, jnp.asarray(False)))
    return NMFResult(W, H, nmf_loss(X, W, H, loss, mask), n, done)


class RankSelection(NamedTuple):
    """Cross-validated choice of the NMF rank.

    Attributes:
        ranks: the ranks tried.
        fold_error: held-out loss per held-out entry, shape ``(n_ranks, n_folds)``.
        mean_error: mean over folds.
        standard_error: its standard error.
        best_rank: the rank of least mean held-out error.
        rank_1se: the smallest rank within one standard error of the best.
    """

    ranks: np.ndarray
    fold_error: np.ndarray
    mean_error: np.ndarray
    standard_error: np.ndarray
    best_rank: int
    rank_1se: int


def nmf_rank_cv(X, ranks, key, *, n_folds: int = 5, loss: str = "frobenius", max_iter: int = 2000,
                tol: float = 1e-6, n_starts: int = 3) -> RankSelection:
    """Choose the NMF rank by K-fold cross-validation over the entries of ``X``.

    Every entry is assigned at random to one of ``n_folds`` folds.  For each fold and rank the
    factorisation is fitted on the other entries (masked multiplicative updates, the best of
    ``n_starts`` random starts) and scored by its loss on the held-out entries, per entry
    (Wold's element-wise cross-validation, Owen & Perry 2009, Ann. Appl. Stat. 3, 564; used for
    NMF e.g. by Kanagal & Sindhwani 2010).  Too small a rank underfits and too large a rank
    fits the noise of the training entries, so the held-out error has a minimum.  Folds and
    starts run as one ``vmap``.
    """
    X = jnp.asarray(X, jnp.result_type(float))
    ranks = np.asarray(ranks, int)
    if ranks.ndim != 1 or ranks.size == 0 or np.any(ranks < 1):
        raise ValueError(f"ranks must be a non-empty list of positive integers, got {ranks}")
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    k_fold, k_start = jax.random.split(key)
    labels = jax.random.permutation(k_fold, jnp.arange(X.size) % n_folds).reshape(X.shape)
    held = jnp.stack([(labels == f).astype(X.dtype) for f in range(n_folds)])
    errors = []
    for rank in ranks:
        keys = jax.random.split(jax.random.fold_in(k_start, int(rank)), n_folds * n_starts)
        keys = keys.reshape((n_folds, n_starts) + keys.shape[1:])        # raw (uint32) or typed keys

        def fold(held_out, fold_keys, rank=int(rank)):
            def start(k):
                fit = nmf(X, rank, k, loss=loss, mask=1.0 - held_out, tol=tol, max_iter=max_iter)
                return fit.loss, nmf_loss(X, fit.W, fit.H, loss, held_out)

            train, test = jax.vmap(start)(fold_keys)
            return test[jnp.argmin(train)] / jnp.sum(held_out)

        errors.append(np.asarray(jax.jit(jax.vmap(fold))(held, keys)))
    fold_error = np.stack(errors)
    mean = fold_error.mean(axis=1)
    se = fold_error.std(axis=1, ddof=1) / np.sqrt(n_folds)
    best = int(np.argmin(mean))
    rank_1se = int(ranks[mean <= mean[best] + se[best]].min())
    return RankSelection(ranks, fold_error, mean, se, int(ranks[best]), rank_1se)
