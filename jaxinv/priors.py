"""Prior distributions and their maps to an unconstrained space.

Every prior is a thin wrapper around a :mod:`numpyro.distributions` object; the
map from the unconstrained real space (where optimisers and samplers move) to
the prior's support is numpyro's ``biject_to(support)``.  Any numpyro
distribution can be given directly wherever a prior is expected.

For a parameter ``x = T(u)`` with ``u`` unconstrained, the density of ``u`` is

    log p_u(u) = log p_x(T(u)) + log |det dT/du|,

which is what :meth:`Prior.log_density_unconstrained` returns.

``ordered=True`` (vectors of i.i.d. components only) restricts the prior to
``x_1 < x_2 < ... < x_K``, so that e.g. relaxation times of a multi-exponential
cannot swap labels.  The unconstrained map becomes numpyro's
``OrderedTransform`` followed by the elementwise (monotone increasing) support
map, and the density is that of the order statistics of K i.i.d. draws,
``K! prod_k p(x_k)``, so that it stays normalised (the free energy depends on
it).
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpyro.distributions as npd
from numpyro.distributions import constraints
from numpyro.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    ExpTransform,
    OrderedTransform,
    SigmoidTransform,
    biject_to,
)

__all__ = [
    "Prior",
    "Flat",
    "Uniform",
    "LogUniform",
    "Normal",
    "HalfNormal",
    "LogNormal",
    "Exponential",
    "Laplace",
    "Dirichlet",
    "as_prior",
]


def _shape(shape) -> tuple[int, ...]:
    if shape is None:
        return ()
    if isinstance(shape, int):
        return (shape,)
    return tuple(int(s) for s in shape)


class Prior(eqx.Module):
    """A prior over one named parameter (scalar or array).

    Attributes:
        distribution: a numpyro distribution whose ``batch_shape + event_shape``
            is the parameter's shape, or ``None`` for an improper flat prior.
        shape: the parameter's shape.
        ordered: constrain a vector parameter to increasing order.
        flat_support: the constraint of a flat prior (unused otherwise).
    """

    distribution: Any
    shape: tuple[int, ...] = eqx.field(static=True)
    ordered: bool = eqx.field(static=True, default=False)
    flat_support: Any = eqx.field(static=True, default=None)

    def __init__(self, distribution, *, ordered: bool = False, shape=None, support=None):
        if distribution is not None and not isinstance(distribution, npd.Distribution):
            raise TypeError(f"a prior must wrap a numpyro distribution, got {type(distribution).__name__}")
        if distribution is not None:
            full = tuple(distribution.batch_shape) + tuple(distribution.event_shape)
            if shape is not None and _shape(shape) != full:
                distribution = distribution.expand(_shape(shape))
                full = _shape(shape)
            shape = full
            support = None
        elif support is None:
            support = constraints.real
        self.distribution = distribution
        self.shape = _shape(shape)
        self.ordered = bool(ordered)
        self.flat_support = support
        if self.ordered:
            if len(self.shape) != 1 or self.shape[0] < 2:
                raise ValueError(f"ordered=True needs a vector of at least 2 components, got shape {self.shape}")
            if distribution is not None:
                iid = isinstance(distribution, npd.ExpandedDistribution) and distribution.base_dist.batch_shape == ()
                if not iid or distribution.event_shape != ():
                    raise ValueError(
                        "ordered=True needs i.i.d. scalar components (scalar distribution "
                        "arguments with shape=K); the order-statistics normalisation is K! only then"
                    )

    # -- the unconstrained map -------------------------------------------------
    @property
    def support(self):
        """The constraint the parameter lives in."""
        return self.flat_support if self.distribution is None else self.distribution.support

    def _support_map(self):
        """Elementwise bijection from the real line onto the support."""
        return _natural_bijection(self.distribution) or biject_to(self.support)

    @property
    def transform(self):
        """numpyro transform from unconstrained space to the support."""
        base = self._support_map()
        if self.ordered:
            return ComposeTransform([OrderedTransform(), base])
        return base

    @property
    def unconstrained_shape(self) -> tuple[int, ...]:
        return tuple(self.transform.inverse_shape(self.shape))

    @property
    def unconstrained_size(self) -> int:
        return math.prod(self.unconstrained_shape)

    @property
    def is_proper(self) -> bool:
        return self.distribution is not None

    def constrain(self, u):
        """Map unconstrained ``u`` to the parameter value."""
        return self.transform(u)

    def unconstrain(self, x):
        """Map a parameter value to unconstrained space (inverse of :meth:`constrain`)."""
        return self.transform.inv(jnp.asarray(x, dtype=jnp.result_type(float)))

    def at_boundary(self, x, logit_limit: float = 9.0) -> bool:
        """True when ``x`` sits at the edge of a bounded support: for an interval,
        a component whose logit (in the prior's natural coordinate, log for
        LogUniform) exceeds ``logit_limit`` (within ~1e-4 of the range from a
        bound); for a simplex, a component below 1e-4.  A Laplace approximation
        at such a mode is unreliable (the mass is cut by the bound)."""
        x = jnp.asarray(x)
        if isinstance(self.support, constraints._Simplex):
            return bool(jnp.min(x) < 1e-4)
        if isinstance(self.support, constraints._Interval):
            return bool(jnp.max(jnp.abs(self._support_map().inv(x))) > logit_limit)
        return False

    # -- densities -------------------------------------------------------------
    def log_prob(self, x):
        """Log prior density of the parameter value ``x`` (summed over components)."""
        if self.distribution is None:
            return jnp.zeros((), dtype=jnp.result_type(float))
        lp = jnp.sum(self.distribution.log_prob(x))
        if self.ordered:
            lp = lp + math.lgamma(self.shape[0] + 1)
        return lp

    def log_density_unconstrained(self, u):
        """``log p(T(u)) + log|det dT/du|``: the prior density of ``u``."""
        x = self.transform(u)
        return self.log_prob(x) + jnp.sum(self.transform.log_abs_det_jacobian(u, x))

    def sample(self, key, n: int):
        """``n`` draws of the parameter, shape ``(n, *shape)``."""
        if self.distribution is None:
            raise ValueError("an improper Flat prior cannot be sampled; give starting points explicitly (init=...)")
        x = self.distribution.sample(key, (n,))
        if self.ordered:
            x = jnp.sort(x, axis=-1)
        return x


def _natural_bijection(distribution):
    """A better-conditioned map than ``biject_to(support)`` where one is known.

    LogUniform(low, high): ``x = exp(log low + log(high/low) sigmoid(u))`` -- the
    sigmoid acts on log x, so that u moves in relative (scale) units, not in a
    linear interval spanning many decades.
    """
    base = distribution.base_dist if isinstance(distribution, npd.ExpandedDistribution) else distribution
    if isinstance(base, npd.LogUniform):
        log_low = jnp.log(base.low)
        return ComposeTransform(
            [SigmoidTransform(), AffineTransform(log_low, jnp.log(base.high) - log_low), ExpTransform()]
        )
    return None


def as_prior(p) -> Prior:
    """Accept a :class:`Prior` or any numpyro distribution."""
    if isinstance(p, Prior):
        return p
    if isinstance(p, npd.Distribution):
        return Prior(p)
    raise TypeError(f"expected a jaxinv prior or a numpyro distribution, got {type(p).__name__}")


def _f(x):
    return jnp.asarray(x, dtype=jnp.result_type(float))


def _check_bounds(name, low, high):
    if isinstance(low, jax.core.Tracer) or isinstance(high, jax.core.Tracer):
        return
    if not (bool(jnp.all(jnp.isfinite(low))) and bool(jnp.all(jnp.isfinite(high)))):
        raise ValueError(f"{name} prior needs finite bounds, got low={low}, high={high}")
    if not bool(jnp.all(high > low)):
        raise ValueError(f"{name} prior needs high > low, got low={low}, high={high}")


def _check_positive(name, value):
    if not isinstance(value, jax.core.Tracer):
        v = jnp.asarray(value)
        if not bool(jnp.all(jnp.isfinite(v))) or not bool(jnp.all(v > 0)):
            raise ValueError(f"{name} must be positive and finite, got {value}")


def Flat(shape=(), support=constraints.real) -> Prior:
    """Improper flat prior ``p(x) = 1`` on ``support`` (default: the real line).

    Gives plain (weighted) least squares under MAP.  It has no normalisation,
    so evidences and free energies of models that use it are undefined (NaN).
    """
    return Prior(None, shape=shape, support=support)


def Uniform(low, high, shape=None, ordered: bool = False) -> Prior:
    """Uniform on ``(low, high)``: ``p(x) = 1/(high - low)``."""
    low, high = _f(low), _f(high)
    _check_bounds("Uniform", low, high)
    return Prior(npd.Uniform(low, high), shape=shape, ordered=ordered)


def LogUniform(low, high, shape=None, ordered: bool = False) -> Prior:
    """Log-uniform (Jeffreys, scale-invariant) on ``(low, high)``, ``low > 0``:
    ``p(x) = 1 / (x log(high/low))``."""
    _check_positive("LogUniform low", low)
    low, high = _f(low), _f(high)
    _check_bounds("LogUniform", low, high)
    return Prior(npd.LogUniform(low, high), shape=shape, ordered=ordered)


def Normal(loc, scale, shape=None, ordered: bool = False) -> Prior:
    """Normal (Gaussian) with mean ``loc`` and standard deviation ``scale``."""
    _check_positive("Normal scale", scale)
    return Prior(npd.Normal(_f(loc), _f(scale)), shape=shape, ordered=ordered)


def HalfNormal(scale, shape=None, ordered: bool = False) -> Prior:
    """Half-normal on ``x > 0``: ``p(x) = 2 N(x | 0, scale^2)``."""
    _check_positive("HalfNormal scale", scale)
    return Prior(npd.HalfNormal(_f(scale)), shape=shape, ordered=ordered)


def LogNormal(loc, scale, shape=None, ordered: bool = False) -> Prior:
    """Log-normal: ``log x ~ N(loc, scale^2)``."""
    _check_positive("LogNormal scale", scale)
    return Prior(npd.LogNormal(_f(loc), _f(scale)), shape=shape, ordered=ordered)


def Exponential(rate, shape=None, ordered: bool = False) -> Prior:
    """Exponential on ``x > 0``: ``p(x) = rate exp(-rate x)``."""
    _check_positive("Exponential rate", rate)
    return Prior(npd.Exponential(_f(rate)), shape=shape, ordered=ordered)


def Laplace(loc, scale, shape=None, ordered: bool = False) -> Prior:
    """Laplace (double exponential): ``p(x) = exp(-|x - loc|/scale) / (2 scale)``;
    the MAP under it is the L1-penalised (lasso) estimate."""
    _check_positive("Laplace scale", scale)
    return Prior(npd.Laplace(_f(loc), _f(scale)), shape=shape, ordered=ordered)


def Dirichlet(concentration, shape=None) -> Prior:
    """Dirichlet on the simplex (fractions summing to one).

    ``concentration`` is a vector (length K) or a scalar together with
    ``shape=K`` for the symmetric Dirichlet.  Unconstrained dimension K - 1
    (stick-breaking transform).
    """
    conc = _f(concentration)
    if conc.ndim == 0:
        if shape is None:
            raise ValueError("a scalar Dirichlet concentration needs shape=K")
        conc = jnp.full(_shape(shape), conc)
        shape = None
    _check_positive("Dirichlet concentration", conc)
    return Prior(npd.Dirichlet(conc), shape=shape)
