"""Bayesian sparse linear regression through jaxinv's ordinary engines.

The penalised estimates of :mod:`jaxinv.sparse.linear` are modes of posteriors; the posterior
itself gives honest uncertainty and, through the engines' free energy, model comparison.
:func:`sparse_regression_model` builds a :class:`jaxinv.Model` for ``y ~ N(X b + b0, sigma^2)``
with one of two sparsity priors on ``b``:

* ``"laplace"``: ``b_j ~ Laplace(0, scale)`` (the Bayesian lasso, Park & Casella 2008, JASA
  103, 681).  With a fixed ``sigma`` and a flat intercept its MAP is the lasso estimate with
  ``alpha = sigma^2 / (n scale)``: ``-log p = (1/2 sigma^2) ||r||^2 + ||b||_1 / scale``.
* ``"horseshoe"``: ``b_j = z_j lambda_j tau`` with ``z_j ~ N(0, 1)``, local scales
  ``lambda_j ~ HalfCauchy(1)`` and global scale ``tau ~ HalfCauchy(tau_0)`` (Carvalho, Polson
  & Scott 2010, Biometrika 97, 465), in the non-centred form that Hamiltonian Monte Carlo can
  follow; ``tau_0 = p_0 / (p - p_0) sigma / sqrt(n)`` for ``p_0`` expected non-zero
  coefficients (Piironen & Vehtari 2017, Electron. J. Stat. 11, 5018, eq. 3.12).  With a
  ``slab_scale`` ``c`` the local scales are regularised,
  ``lambda~_j^2 = c^2 lambda_j^2 / (c^2 + tau^2 lambda_j^2)`` (ibid. eq. 2.8), so that large
  coefficients are shrunk as by ``N(0, c^2)`` instead of not at all.

The horseshoe parameters are ``coef_std``, ``local_scale`` and ``global_scale``;
:meth:`SparseLinear.coefficients` turns draws of them into draws of ``b``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .. import likelihoods, priors
from ..model import Model

__all__ = ["SparseLinear", "horseshoe_global_scale", "sparse_regression_model"]

_PRIORS = ("laplace", "horseshoe")


class SparseLinear(eqx.Module):
    """Forward model ``f = X b + b0`` with ``b`` given directly (``"laplace"``) or by its
    horseshoe factors.

    Attributes:
        design: ``X``, shape ``(n, p)``.
        prior: ``"laplace"`` or ``"horseshoe"``.
        slab_scale: ``c`` of the regularised horseshoe (``None``: plain horseshoe).
        intercept: whether the model has an intercept ``b0``.
    """

    design: jax.Array
    prior: str = eqx.field(static=True)
    slab_scale: float | None = eqx.field(static=True, default=None)
    intercept: bool = eqx.field(static=True, default=False)

    def coefficients(self, params):
        """``b`` from the parameters (any leading draw dimensions)."""
        if self.prior == "laplace":
            return params["coef"]
        tau = jnp.asarray(params["global_scale"])[..., None]
        lam = params["local_scale"]
        if self.slab_scale is not None:
            c2 = self.slab_scale**2
            lam = jnp.sqrt(c2 * lam**2 / (c2 + tau**2 * lam**2))
        return params["coef_std"] * lam * tau

    def __call__(self, params):
        prediction = self.design @ self.coefficients(params)
        return prediction + params["intercept"] if self.intercept else prediction


def horseshoe_global_scale(n_nonzero: float, n_features: int, n_samples: int, noise: float) -> float:
    """Piironen & Vehtari's (2017, eq. 3.12) prior guess ``tau_0 = p_0 / (p - p_0) sigma / sqrt(n)``."""
    if not 0 < n_nonzero < n_features:
        raise ValueError(f"the expected number of non-zero coefficients must lie in (0, {n_features}), got {n_nonzero}")
    return float(n_nonzero / (n_features - n_nonzero) * noise / np.sqrt(n_samples))


def sparse_regression_model(X, prior: str = "laplace", *, noise=1.0, scale: float = 1.0, global_scale=None,
                            n_nonzero: float | None = None, slab_scale: float | None = None,
                            intercept=None, nonnegative: bool = False) -> Model:
    """A :class:`jaxinv.Model` of ``y ~ N(X b + b0, sigma^2)`` with a sparsity prior on ``b``.

    Args:
        X: design matrix ``(n, p)``.
        prior: ``"laplace"`` or ``"horseshoe"``.
        noise: ``sigma``: a positive number (known) or a prior (inferred, named ``"sigma"``).
        scale: Laplace scale of ``b_j`` (``"laplace"``).
        global_scale: ``tau_0`` of the horseshoe's ``HalfCauchy`` global scale; default from
            ``n_nonzero`` by :func:`horseshoe_global_scale` (needs a numeric ``noise``), else 1.
        n_nonzero: the expected number of non-zero coefficients ``p_0`` (horseshoe).
        slab_scale: ``c`` of the regularised horseshoe.
        intercept: ``None`` for no intercept (centre ``y`` and ``X``), or a prior of ``b0``
            (``ji.priors.Flat()`` for the lasso-equivalent MAP; a proper prior for evidences).
        nonnegative: coefficients ``b_j >= 0`` (amounts, phase fractions): the Laplace prior
            becomes ``Exponential(1 / scale)`` (the non-negative lasso's), the horseshoe's
            ``z_j ~ HalfNormal(1)``.

    Condition the model on ``y`` as any other: ``model.condition(y)``.
    """
    X = jnp.asarray(X, jnp.result_type(float))
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"X must be a non-empty 2-D design matrix, got shape {X.shape}")
    if not np.all(np.isfinite(np.asarray(X))):
        raise ValueError("X contains NaN or infinite values")
    if prior not in _PRIORS:
        raise ValueError(f"unknown sparsity prior {prior!r}; choose one of {_PRIORS}")
    n, p = X.shape
    forward = SparseLinear(X, prior, slab_scale, intercept is not None)
    if prior == "laplace":
        coef_priors = {"coef": priors.Exponential(1.0 / scale, shape=p) if nonnegative
                       else priors.Laplace(0.0, scale, shape=p)}
    else:
        if global_scale is None:
            if n_nonzero is not None:
                if not isinstance(noise, (int, float)):
                    raise ValueError("the default global scale needs a numeric noise; give global_scale")
                global_scale = horseshoe_global_scale(n_nonzero, p, n, noise)
            else:
                global_scale = 1.0
        coef_priors = {"coef_std": priors.HalfNormal(1.0, shape=p) if nonnegative
                       else priors.Normal(0.0, 1.0, shape=p),
                       "local_scale": priors.HalfCauchy(1.0, shape=p),
                       "global_scale": priors.HalfCauchy(global_scale)}
    if intercept is not None:
        coef_priors["intercept"] = intercept
    return Model(forward, coef_priors, likelihoods.Normal(noise))
