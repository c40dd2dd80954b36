"""Likelihoods: the probability of the data given the forward model's prediction.

A noise parameter (``sigma``, ``df``) is either a fixed number/array or a prior
(:mod:`jaxinv.priors` or any numpyro distribution); in the second case it is
inferred with the physical parameters under the name given by ``name``/``df_name``.

Least-squares likelihoods (:class:`Normal`, :class:`LogNormal`) also expose
standardised residuals ``r`` and normalisation ``c`` with
``-log L = 1/2 |r|^2 + c(noise)``, which the Gauss-Newton/Levenberg-Marquardt
polish of :func:`jaxinv.map_estimate` uses.
"""

from __future__ import annotations

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp

from .priors import Prior, as_prior

__all__ = ["Likelihood", "Normal", "StudentT", "Poisson", "LogNormal"]

_LOG_2PI = math.log(2.0 * math.pi)


def _noise(value, what: str):
    """A fixed positive array, or a Prior for an inferred parameter."""
    if isinstance(value, Prior) or (value is not None and not _is_arraylike(value)):
        return as_prior(value)
    arr = jnp.asarray(value, dtype=jnp.result_type(float))
    if not isinstance(arr, jax.core.Tracer):
        if not bool(jnp.all(jnp.isfinite(arr))):
            raise ValueError(f"{what} must be finite, got non-finite values")
        if not bool(jnp.all(arr > 0)):
            raise ValueError(f"{what} must be positive, got min {float(jnp.min(arr))}")
    return arr


def _is_arraylike(x) -> bool:
    return isinstance(x, (int, float, list, tuple, jax.Array)) or hasattr(x, "__array__")


class Likelihood(eqx.Module):
    """Base class.  Subclasses implement :meth:`pointwise_log_prob`."""

    def parameters(self) -> dict[str, Prior]:
        """Priors of the likelihood's own inferred parameters (noise levels)."""
        return {}

    def _value(self, field, name, params):
        return params[name] if isinstance(field, Prior) else field

    @abc.abstractmethod
    def pointwise_log_prob(self, y, prediction, params):
        """``log p(y_i | prediction_i, noise)`` for every datum (shape of ``y``)."""

    def log_prob(self, y, prediction, params):
        """Total log-likelihood (a scalar)."""
        return jnp.sum(self.pointwise_log_prob(y, prediction, params))

    def least_squares_parts(self, y, prediction, params):
        """``(r, c)`` with ``-log L = 1/2 |r|^2 + c``: standardised residuals and the
        normalisation, computed separately so that optimisers can compare tiny
        residual sums without cancellation.  ``None`` when the likelihood is not
        of least-squares form."""
        return None

    @property
    def least_squares(self) -> bool:
        return False

    def validate(self, y) -> None:
        """Raise ``ValueError`` when ``y`` is outside the likelihood's support or
        a fixed noise array does not match it."""
        sigma = getattr(self, "sigma", None)
        if sigma is not None and not isinstance(sigma, Prior):
            try:
                jnp.broadcast_shapes(jnp.shape(sigma), jnp.shape(y))
            except ValueError:
                raise ValueError(
                    f"sigma has shape {jnp.shape(sigma)}, which does not broadcast to the data shape {jnp.shape(y)}"
                ) from None


class _GaussianResiduals(Likelihood):
    """Gaussian noise on ``g(y)``: ``g(y_i) ~ N(g(f_i), sigma_i^2)``, with ``g`` the
    identity (:class:`Normal`) or ``log`` (:class:`LogNormal`).  Per datum

        -log p(y_i) = 1/2 r_i^2 + c_i,   r_i = (g(y_i) - g(f_i)) / sigma_i,
        c_i = log sigma_i + log |g'(y_i)| + 1/2 log 2 pi,

    one definition serving both the log-density and the least-squares parts."""

    sigma: Any
    name: str = eqx.field(static=True, default="sigma")

    def __init__(self, sigma, name: str = "sigma"):
        self.sigma = _noise(sigma, f"{type(self).__name__} likelihood sigma")
        self.name = name

    def parameters(self):
        return {self.name: self.sigma} if isinstance(self.sigma, Prior) else {}

    @property
    def least_squares(self) -> bool:
        return True

    def _map(self, values):
        return values

    def _log_jacobian(self, y):
        """``log |g'(y)|``: the change of variables from ``g(y)`` back to ``y``."""
        return jnp.zeros_like(y)

    def _pointwise_parts(self, y, prediction, params):
        sigma = jnp.broadcast_to(self._value(self.sigma, self.name, params), jnp.shape(y))
        r = (self._map(y) - self._map(prediction)) / sigma
        return r, jnp.log(sigma) + self._log_jacobian(y) + 0.5 * _LOG_2PI

    def pointwise_log_prob(self, y, prediction, params):
        r, c = self._pointwise_parts(y, prediction, params)
        return -0.5 * r**2 - c

    def least_squares_parts(self, y, prediction, params):
        r, c = self._pointwise_parts(y, prediction, params)
        return r, jnp.sum(c)


class Normal(_GaussianResiduals):
    """Gaussian noise: ``y_i ~ N(f_i, sigma_i^2)``.

    ``-log L = 1/2 sum_i ((y_i - f_i)/sigma_i)^2 + sum_i log sigma_i + n/2 log 2 pi``.

    Args:
        sigma: noise standard deviation in the units of ``y``: a positive number,
            an array broadcastable to ``y`` (known per-point errors), or a prior
            (inferred, one scalar or an array).
        name: the parameter name when ``sigma`` is inferred.
    """


class StudentT(Likelihood):
    """Student-t noise (robust to outliers):

    ``p(y|f) = Gamma((nu+1)/2) / (Gamma(nu/2) sqrt(nu pi) sigma) (1 + r^2/nu)^(-(nu+1)/2)``,
    ``r = (y - f)/sigma``.

    Args:
        df: degrees of freedom ``nu > 0`` (number or prior).
        sigma: scale (number, array or prior).
    """

    df: Any
    sigma: Any
    name: str = eqx.field(static=True, default="sigma")
    df_name: str = eqx.field(static=True, default="df")

    def __init__(self, df, sigma, name: str = "sigma", df_name: str = "df"):
        self.df = _noise(df, "StudentT df")
        self.sigma = _noise(sigma, "StudentT sigma")
        self.name = name
        self.df_name = df_name

    def parameters(self):
        out = {}
        if isinstance(self.sigma, Prior):
            out[self.name] = self.sigma
        if isinstance(self.df, Prior):
            out[self.df_name] = self.df
        return out

    def pointwise_log_prob(self, y, prediction, params):
        sigma = self._value(self.sigma, self.name, params)
        nu = self._value(self.df, self.df_name, params)
        r = (y - prediction) / sigma
        return (
            jsp.gammaln(0.5 * (nu + 1.0))
            - jsp.gammaln(0.5 * nu)
            - 0.5 * jnp.log(nu * jnp.pi)
            - jnp.log(sigma)
            - 0.5 * (nu + 1.0) * jnp.log1p(r**2 / nu)
        )


class Poisson(Likelihood):
    """Counting statistics: ``y_i ~ Poisson(f_i)``, ``f_i > 0`` the expected counts
    (e.g. X-ray counts).  ``log p = y log f - f - log y!``."""

    def pointwise_log_prob(self, y, prediction, params):
        return jsp.xlogy(y, prediction) - prediction - jsp.gammaln(y + 1.0)

    def validate(self, y) -> None:
        y = jnp.asarray(y)
        if bool(jnp.any(y < 0)) or not bool(jnp.all(y == jnp.round(y))):
            raise ValueError("Poisson likelihood needs non-negative integer counts in the data")


class LogNormal(_GaussianResiduals):
    """Multiplicative noise: ``log y_i ~ N(log f_i, sigma^2)`` for ``y, f > 0``.

    ``sigma`` is the standard deviation of ``log y`` (≈ relative error); the
    density of ``y`` carries the Jacobian ``1/y``."""

    def _map(self, values):
        return jnp.log(values)

    def _log_jacobian(self, y):
        return jnp.log(y)

    def validate(self, y) -> None:
        super().validate(y)
        if not bool(jnp.all(jnp.asarray(y) > 0)):
            raise ValueError("LogNormal likelihood needs strictly positive data")
