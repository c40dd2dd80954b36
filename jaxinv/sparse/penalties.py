"""Sparsity penalties ``g(x)`` with their proximal maps, for :func:`~jaxinv.sparse.fista`.

Each penalty is an immutable Equinox module holding its ``strength`` (the regularisation
parameter, ``alpha`` in scikit-learn's notation), so a regularisation path is the same penalty
with another strength (:meth:`Penalty.with_strength`) and a stack of penalties can be
``vmap``-ped.  Each gives

* ``penalty(x)``: its value;
* ``penalty.prox(v, step)``: ``argmin_u step * g(u) + ||u - v||^2 / 2`` (closed form);
* ``penalty.critical_strength(gradient)``: the smallest strength at which ``x = 0``
  minimises ``f + g`` when ``gradient = grad f(0)`` (the dual norm of the gradient): the
  start ``alpha_max`` of a regularisation path.

Proximal maps: soft thresholding for the L1 norm (Donoho 1995), its one-sided form for the
non-negative lasso, scaled soft thresholding for the elastic net (Zou & Hastie 2005), block
soft thresholding for the group lasso (Yuan & Lin 2006); see Parikh & Boyd (2014),
"Proximal algorithms", Found. Trends Optim. 1, sec. 6.5.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["ElasticNet", "GroupL1", "L1", "Penalty", "soft_threshold"]


def soft_threshold(v, threshold):
    """``sign(v) max(|v| - threshold, 0)``: the proximal map of ``threshold * ||.||_1``."""
    return jnp.sign(v) * jnp.maximum(jnp.abs(v) - threshold, 0.0)


class Penalty(eqx.Module):
    """Base class: a convex penalty ``strength * h(x)``."""

    strength: jax.Array

    def with_strength(self, strength) -> "Penalty":
        """The same penalty with another regularisation strength."""
        return eqx.tree_at(lambda p: p.strength, self, jnp.asarray(strength, jnp.result_type(float)))

    @abc.abstractmethod
    def __call__(self, x):
        """The penalty's value ``g(x)``."""

    @abc.abstractmethod
    def prox(self, v, step):
        """``argmin_u step * g(u) + ||u - v||^2 / 2``."""

    @abc.abstractmethod
    def critical_strength(self, gradient):
        """The smallest strength at which ``x = 0`` is optimal, given ``grad f(0)``."""


def _strength(strength):
    if isinstance(strength, (int, float)) and (not np.isfinite(strength) or strength < 0):
        raise ValueError(f"the regularisation strength must be finite and >= 0, got {strength}")
    return jnp.asarray(strength, jnp.result_type(float))


class L1(Penalty):
    """Lasso penalty ``strength * sum_j w_j |x_j|`` (Tibshirani 1996); with ``positive=True``,
    ``x >= 0`` is also imposed (the non-negative lasso: ``g = strength * sum_j w_j x_j`` on
    ``x >= 0``, ``+inf`` elsewhere).

    ``weights`` ``w_j >= 0`` (default 1, an array of ``x``'s shape or broadcastable to it): 0
    leaves a coefficient unpenalised (an intercept), other values give the adaptive lasso
    (Zou 2006)."""

    weights: jax.Array | float = 1.0
    positive: bool = eqx.field(static=True, default=False)

    def __init__(self, strength, positive: bool = False, weights=1.0):
        w = np.asarray(weights, float) if not isinstance(weights, jax.core.Tracer) else weights
        if isinstance(w, np.ndarray) and (not np.all(np.isfinite(w)) or np.any(w < 0)):
            raise ValueError("L1 weights must be finite and >= 0")
        self.strength = _strength(strength)
        self.positive = bool(positive)
        self.weights = jnp.asarray(w, jnp.result_type(float))

    def __call__(self, x):
        return self.strength * (jnp.sum(self.weights * x) if self.positive else jnp.sum(self.weights * jnp.abs(x)))

    def prox(self, v, step):
        threshold = step * self.strength * self.weights
        if self.positive:
            return jnp.maximum(v - threshold, 0.0)
        return soft_threshold(v, threshold)

    def critical_strength(self, gradient):
        w = jnp.broadcast_to(self.weights, jnp.shape(gradient))
        g = jnp.maximum(-gradient, 0.0) if self.positive else jnp.abs(gradient)
        return jnp.max(jnp.where(w > 0, g / jnp.where(w > 0, w, 1.0), 0.0))


class ElasticNet(Penalty):
    """Elastic-net penalty ``strength * (l1_ratio ||x||_1 + (1 - l1_ratio) ||x||^2 / 2)``
    (Zou & Hastie 2005, in scikit-learn's ``ElasticNet`` parameterisation); ``positive=True``
    adds ``x >= 0``."""

    l1_ratio: jax.Array
    positive: bool = eqx.field(static=True, default=False)

    def __init__(self, strength, l1_ratio=0.5, positive: bool = False):
        if isinstance(l1_ratio, (int, float)) and not 0.0 <= l1_ratio <= 1.0:
            raise ValueError(f"l1_ratio must lie in [0, 1], got {l1_ratio}")
        self.strength = _strength(strength)
        self.l1_ratio = jnp.asarray(l1_ratio, jnp.result_type(float))
        self.positive = bool(positive)

    def __call__(self, x):
        l1 = jnp.sum(x) if self.positive else jnp.sum(jnp.abs(x))
        return self.strength * (self.l1_ratio * l1 + 0.5 * (1.0 - self.l1_ratio) * jnp.sum(x**2))

    def prox(self, v, step):
        threshold = step * self.strength * self.l1_ratio
        shrunk = jnp.maximum(v - threshold, 0.0) if self.positive else soft_threshold(v, threshold)
        return shrunk / (1.0 + step * self.strength * (1.0 - self.l1_ratio))

    def critical_strength(self, gradient):
        g = jnp.maximum(jnp.max(-gradient), 0.0) if self.positive else jnp.max(jnp.abs(gradient))
        return g / jnp.maximum(self.l1_ratio, jnp.finfo(jnp.result_type(g)).tiny)


class GroupL1(Penalty):
    """Group-lasso penalty ``strength * sum_g w_g ||x_g||_2`` (Yuan & Lin 2006).

    Args:
        strength: the regularisation strength.
        groups: integer group label of every entry of ``x`` (same shape as ``x``), labels
            ``0 .. n_groups-1``.  For a multi-task lasso (scikit-learn's ``MultiTaskLasso``)
            with ``x`` of shape ``(n_features, n_tasks)``, label the entries by their row:
            :meth:`rows`.
        weights: ``w_g`` per group; default ``sqrt(size of g)`` (Yuan & Lin), or ``"none"``
            for ``w_g = 1`` (scikit-learn's ``MultiTaskLasso``).
    """

    groups: jax.Array
    weights: jax.Array
    n_groups: int = eqx.field(static=True)

    def __init__(self, strength, groups, weights="sqrt_size"):
        labels = np.asarray(groups)
        if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise ValueError("groups must be non-negative integer labels, one per coefficient")
        self.n_groups = int(labels.max()) + 1
        sizes = np.bincount(labels.ravel(), minlength=self.n_groups)
        if np.any(sizes == 0):
            raise ValueError(f"group labels must run over 0..{self.n_groups - 1} without gaps; "
                             f"empty group(s) {np.flatnonzero(sizes == 0).tolist()}")
        if isinstance(weights, str):
            if weights == "sqrt_size":
                w = np.sqrt(sizes)
            elif weights == "none":
                w = np.ones(self.n_groups)
            else:
                raise ValueError(f"weights must be 'sqrt_size', 'none' or an array, got {weights!r}")
        else:
            w = np.asarray(weights, float)
            if w.shape != (self.n_groups,) or np.any(~np.isfinite(w)) or np.any(w < 0):
                raise ValueError(f"weights must be {self.n_groups} finite non-negative numbers, got shape {w.shape}")
        self.strength = _strength(strength)
        self.groups = jnp.asarray(labels)
        self.weights = jnp.asarray(w, jnp.result_type(float))

    @classmethod
    def rows(cls, strength, shape, weights="none") -> "GroupL1":
        """Groups = the rows of a ``(n_features, n_tasks)`` coefficient matrix."""
        n_rows, n_cols = shape
        return cls(strength, np.repeat(np.arange(n_rows)[:, None], n_cols, axis=1), weights)

    def group_norms(self, x):
        """``||x_g||_2`` for every group, shape ``(n_groups,)``."""
        return jnp.sqrt(jax.ops.segment_sum(jnp.ravel(x**2), jnp.ravel(self.groups), self.n_groups))

    def __call__(self, x):
        return self.strength * jnp.sum(self.weights * self.group_norms(x))

    def prox(self, v, step):
        norms = self.group_norms(v)
        threshold = step * self.strength * self.weights
        safe = jnp.where(norms > 0, norms, 1.0)
        scale = jnp.where(norms > 0, jnp.maximum(1.0 - threshold / safe, 0.0), 0.0)
        return v * scale[self.groups]

    def critical_strength(self, gradient):
        ratio = self.group_norms(gradient) / jnp.where(self.weights > 0, self.weights, jnp.inf)
        return jnp.max(ratio)
