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

Hierarchical priors: a :class:`Conditional` prior is a function of other
parameters of the same model (its *parents*), e.g. a smoothness prior whose
precision is itself inferred::

    priors = {"smoothness": ji.priors.LogUniform(1e-2, 1e4),
              "f": ji.priors.GaussianMRF(shape=50, order=2, precision="smoothness", boundary_sd=10.0)}

The joint prior is the product of the conditionals,
``log p(theta) = sum_j log p(theta_j | parents(theta_j))``, evaluated with the
parents' constrained values; prior draws (starting points, SMC particles) are
ancestral, parents before children.  :class:`jaxinv.Model` checks that every
parent is a parameter of the model and that the dependencies have no cycle.
The support (hence the unconstrained map) of a conditional prior must not
depend on its parents.
"""

from __future__ import annotations

import math
from typing import Any, Callable

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
    "HalfCauchy",
    "HalfNormal",
    "LogNormal",
    "Exponential",
    "Laplace",
    "Dirichlet",
    "Conditional",
    "GaussianMRF",
    "GaussianMRFDistribution",
    "as_prior",
    "dependency_order",
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

    @property
    def saturates(self) -> bool:
        """True when the support is bounded on both sides (an interval, a simplex), so that
        the map from the real line onto it is a sigmoid (or stick-breaking): far from 0 in
        unconstrained space the parameter sits at a bound and the gradient underflows (the
        MAP search limits its steps in these coordinates)."""
        support = self.support
        while isinstance(support, constraints._IndependentConstraint):  # e.g. Uniform(lo, hi).to_event(1)
            support = support.base_constraint
        return isinstance(support, (constraints._Interval, constraints._Simplex))

    @property
    def parents(self) -> tuple[str, ...]:
        """Names of the parameters this prior depends on (none for a plain prior)."""
        return ()

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
        return bool(self.boundary_flag(x, logit_limit))

    def boundary_flag(self, x, logit_limit: float = 9.0) -> jax.Array:
        """:meth:`at_boundary` as a traceable boolean scalar (``jit``/``vmap`` over many
        values, e.g. the MAPs of a batch)."""
        x = jnp.asarray(x)
        if isinstance(self.support, constraints._Simplex):
            return jnp.min(x) < 1e-4
        if isinstance(self.support, constraints._Interval):
            return jnp.max(jnp.abs(self._support_map().inv(x))) > logit_limit
        return jnp.asarray(False)

    # -- densities -------------------------------------------------------------
    def log_prob(self, x, parents=None):
        """Log prior density of the parameter value ``x`` (summed over components).

        ``parents``: ``{name: value}`` of the parameters a :class:`Conditional`
        prior depends on; ignored by a plain prior."""
        if self.distribution is None:
            return jnp.zeros((), dtype=jnp.result_type(float))
        lp = jnp.sum(self.distribution.log_prob(x))
        if self.ordered:
            lp = lp + math.lgamma(self.shape[0] + 1)
        return lp

    def log_density_unconstrained(self, u, parents=None):
        """``log p(T(u)) + log|det dT/du|``: the prior density of ``u`` (given ``parents``
        for a :class:`Conditional` prior)."""
        x = self.transform(u)
        return self.log_prob(x, parents) + jnp.sum(self.transform.log_abs_det_jacobian(u, x))

    def sample(self, key, n: int, parents=None):
        """``n`` draws of the parameter, shape ``(n, *shape)``.  ``parents``:
        ``{name: (n, *shape) values}`` for a :class:`Conditional` prior (one parent
        value per draw); ignored by a plain prior."""
        if self.distribution is None:
            raise ValueError("an improper Flat prior cannot be sampled; give starting points explicitly (init=...)")
        x = self.distribution.sample(key, (n,))
        if self.ordered:
            x = jnp.sort(x, axis=-1)
        return x


class Conditional(Prior):
    """A prior that is a function of other parameters of the model (its parents).

    ``p(x | parents) = factory({parent: value}).log_prob(x)``: ``factory`` maps a
    dict of the parents' constrained values to a numpyro distribution (or a
    :class:`Prior`) over ``x``.  :class:`jaxinv.Model` evaluates it with the
    parents' current values and draws ancestrally (parents first).

    Args:
        factory: ``{name: value} -> distribution``; must work under ``jit``/``vmap``
            (no Python branching on the values).
        parents: the parent parameter name(s).
        shape: the parameter's shape.
        support: the parameter's support, which must not depend on the parents
            (default: the real line; the unconstrained map is ``biject_to(support)``).

    Example::

        ji.priors.Conditional(lambda p: npd.Normal(0.0, p["tau"]), parents="tau", shape=3)
    """

    factory: Callable = eqx.field(static=True, default=None)
    parent_names: tuple[str, ...] = eqx.field(static=True, default=())

    def __init__(self, factory, parents, shape=(), support=constraints.real):
        if not callable(factory):
            raise TypeError(f"a conditional prior needs a callable factory, got {type(factory).__name__}")
        names = (parents,) if isinstance(parents, str) else tuple(parents)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"a conditional prior needs one or more parent names (strings), got {parents!r}")
        if len(set(names)) != len(names):
            raise ValueError(f"repeated parent names: {names}")
        self.distribution = None
        self.shape = _shape(shape)
        self.ordered = False
        self.flat_support = support
        self.factory = factory
        self.parent_names = names

    @property
    def is_proper(self) -> bool:
        return True

    @property
    def parents(self) -> tuple[str, ...]:
        return self.parent_names

    def bind(self, parents) -> Prior:
        """The plain prior of ``x`` at the given parent values ``{name: value}``."""
        if parents is None:
            raise ValueError(f"this prior depends on {list(self.parent_names)}; pass their values (parents=...)")
        missing = [n for n in self.parent_names if n not in parents]
        if missing:
            raise ValueError(f"missing value(s) of parent parameter(s) {missing}")
        dist = self.factory({n: parents[n] for n in self.parent_names})
        prior = as_prior(dist)
        if prior.shape != self.shape:
            raise ValueError(f"the conditional prior's distribution has shape {prior.shape}, "
                             f"the parameter has shape {self.shape}")
        return prior

    def log_prob(self, x, parents=None):
        return self.bind(parents).log_prob(x)

    def sample(self, key, n: int, parents=None):
        if parents is None:
            raise ValueError(f"this prior depends on {list(self.parent_names)}; pass their values (parents=...)")
        values = {name: jnp.asarray(parents[name]) for name in self.parent_names}
        for name, v in values.items():
            if v.ndim == 0 or v.shape[0] != n:
                raise ValueError(f"parent {name!r} needs one value per draw: leading dimension {n}, got shape {v.shape}")
        return jax.vmap(lambda k, v: self.bind(v).sample(k, 1)[0])(jax.random.split(key, n), values)

    def boundary_flag(self, x, logit_limit: float = 9.0) -> jax.Array:
        return jnp.asarray(False)


def dependency_order(priors: dict) -> tuple[str, ...]:
    """The names of ``priors`` ordered so that every parent comes before its children.

    Raises:
        ValueError: a parent that is not among the names, or a dependency cycle.
    """
    names = list(priors)
    for name, prior in priors.items():
        unknown = [p for p in getattr(prior, "parents", ()) if p not in priors]
        if unknown:
            raise ValueError(f"the prior of {name!r} depends on {unknown}, which "
                             f"{'is not a parameter' if len(unknown) == 1 else 'are not parameters'} "
                             f"of the model (parameters: {names})")
        if name in getattr(prior, "parents", ()):
            raise ValueError(f"the prior of {name!r} depends on itself")
    order, state = [], {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "active":
            cycle = path[path.index(name):] + [name]
            raise ValueError(f"the priors form a dependency cycle: {' -> '.join(cycle)}")
        state[name] = "active"
        for parent in priors[name].parents:
            visit(parent, path + [name])
        state[name] = "done"
        order.append(name)

    for name in names:
        visit(name, [])
    return tuple(order)


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


def HalfCauchy(scale, shape=None, ordered: bool = False) -> Prior:
    """Half-Cauchy on ``x > 0``: ``p(x) = 2 / (pi scale (1 + (x/scale)^2))``; the heavy-tailed
    scale prior of the horseshoe (Carvalho, Polson & Scott 2010) and of hierarchical models
    (Gelman 2006)."""
    _check_positive("HalfCauchy scale", scale)
    return Prior(npd.HalfCauchy(_f(scale)), shape=shape, ordered=ordered)


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


# ----------------------------------------------------------------------------- Gaussian Markov random field
class _GridStructure:
    """Static description of a regular 1-D chain or 2-D grid and its difference operator
    (hashable; holds Python floats only, so that it can be a static pytree field)."""

    def __init__(self, shape: tuple[int, ...], order: int):
        self.shape = shape
        self.order = order
        self.size = math.prod(shape)
        self.n_pinned = order ** len(shape)  # dimension of the null space of R = boundary cells
        self.log_det_structure = _log_det_structure(shape, order)

    def _key(self):
        return (self.shape, self.order)

    def __eq__(self, other):
        return isinstance(other, _GridStructure) and self._key() == other._key()

    def __hash__(self):
        return hash(self._key())

    def __repr__(self):
        return f"_GridStructure(shape={self.shape}, order={self.order})"


def _difference_matrix(n: int, order: int):
    import numpy as np

    return np.diff(np.eye(n), n=order, axis=0)  # (n - order, n): rows x_{i+order} - ... (binomial weights)


def _log_det_structure(shape, order) -> float:
    """``c`` in ``log det Q = c + (N - r) log tau - 2 r log b`` (see :func:`GaussianMRF`)."""
    import numpy as np

    if len(shape) == 1:
        return 0.0  # Q = L^T L with L square lower-triangular, diag (1/b,.., sqrt(tau),..)
    k = order
    eig, vec = [], []
    for n in shape:
        d = _difference_matrix(n, k)
        w, v = np.linalg.eigh(d.T @ d)
        w[:k] = 0.0  # the null space (polynomials of degree < k) is exactly k-dimensional
        eig.append(w)
        vec.append(v)
    a, b = eig
    total = a[:, None] + b[None, :]
    total[:k, :k] = 1.0  # leave out the k^2 null directions
    c = float(np.sum(np.log(total)))
    for v in vec:  # det(E_pins^T U_0)^2, U_0 = null vectors, a Kronecker product
        c += 2 * k * math.log(abs(np.linalg.det(v[:k, :k])))
    return c


class GaussianMRFDistribution(npd.Distribution):
    """Proper Gaussian Markov random field on a regular chain/grid (see :func:`GaussianMRF`).

    ``x ~ N(mean, Q^-1)`` with ``Q = tau R + b^-2 P``: ``R`` the sum over axes of
    ``D_k^T D_k`` (k-th differences), ``P`` the diagonal selector of the boundary
    (corner) cells.  Event shape ``shape``; batch shape ``()``.
    """

    arg_constraints = {"precision": constraints.positive, "boundary_sd": constraints.positive}
    reparametrized_params = ["precision", "mean", "boundary_sd"]
    pytree_data_fields = ("precision", "loc", "boundary_sd")
    pytree_aux_fields = ("structure",)

    def __init__(self, structure: _GridStructure, precision, mean, boundary_sd, validate_args=None):
        self.structure = structure
        self.precision = precision
        self.loc = mean
        self.boundary_sd = boundary_sd
        super().__init__(batch_shape=(), event_shape=structure.shape, validate_args=validate_args)

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.structure.shape))

    # -- pieces ----------------------------------------------------------------
    def _axes(self):
        nd = len(self.structure.shape)
        return tuple(range(-nd, 0))

    def _pinned(self, r):
        k = self.structure.order
        return r[..., :k] if len(self.structure.shape) == 1 else r[..., :k, :k]

    def _check(self, x):
        shape = self.structure.shape
        if tuple(jnp.shape(x)[len(jnp.shape(x)) - len(shape):]) != shape or jnp.ndim(x) < len(shape):
            raise ValueError(f"GaussianMRF of shape {shape} got a value of shape {jnp.shape(x)}")

    def log_det_precision(self):
        """``log det Q = c + (N - r) log tau - 2 r log b`` (exact; O(1))."""
        s = self.structure
        return (s.log_det_structure + (s.size - s.n_pinned) * jnp.log(self.precision)
                - 2 * s.n_pinned * jnp.log(self.boundary_sd))

    def _differences(self, r):
        k = self.structure.order
        return [jnp.diff(r, n=k, axis=a) for a in self._axes()]

    def _whitened(self, r):
        """``J r`` with ``Q = J^T J``: the scaled k-th differences along each axis and the
        scaled boundary cells, a list of arrays whose squares sum to ``r^T Q r``."""
        return [jnp.sqrt(self.precision) * d for d in self._differences(r)] + [self._pinned(r) / self.boundary_sd]

    def roughness(self, x):
        """``(x - m)^T R (x - m) = sum_axes |D_k (x - m)|^2`` (the penalty without ``tau``)."""
        self._check(x)
        axes = self._axes()
        return sum(jnp.sum(d**2, axis=axes) for d in self._differences(x - self.loc))

    def quadratic_form(self, x):
        """``(x - m)^T Q (x - m) = tau sum_axes |D_k (x - m)|^2 + |(x - m)_pins|^2 / b^2`` in O(N)."""
        pins = jnp.sum(self._pinned(x - self.loc) ** 2, axis=self._axes())
        return self.precision * self.roughness(x) + pins / self.boundary_sd**2

    def precision_matvec(self, v):
        """``Q v`` for one field ``v`` of the event shape, matrix-free in O(N) (``J^T J v``)."""
        _, transpose = jax.vjp(self._whitened, v)
        return transpose(self._whitened(v))[0]

    def precision_diagonal(self):
        """``diag Q`` as a field of the event shape (for preconditioning)."""
        import numpy as np

        shape, k = self.structure.shape, self.structure.order
        stencil = np.array([math.comb(k, i) ** 2 for i in range(k + 1)], dtype=float)
        diag = np.zeros(shape)
        for axis, n in enumerate(shape):
            d = np.convolve(np.ones(n - k), stencil)  # diag of D_k^T D_k, O(n): [1, 2, .., 2, 1] for k = 1
            diag = diag + np.expand_dims(d, tuple(i for i in range(len(shape)) if i != axis))
        pins = np.zeros(shape)
        pins[(slice(0, k),) * len(shape)] = 1.0
        return self.precision * jnp.asarray(diag) + jnp.asarray(pins) / self.boundary_sd**2

    def precision_draw(self, key):
        """One draw of ``N(0, Q)`` (not of the field: of its precision), ``J^T e`` with
        ``e ~ N(0, I)``; the perturbation that :mod:`jaxinv.inference.latent_field` needs."""
        zero = jnp.zeros(self.structure.shape, jnp.result_type(float))
        whitened, transpose = jax.vjp(self._whitened, zero)
        keys = jax.random.split(key, len(whitened))
        e = [jax.random.normal(k, w.shape, w.dtype) for k, w in zip(keys, whitened)]
        return transpose(e)[0]

    def log_prob(self, x):
        """``log N(x | m, Q^-1) = 1/2 log det Q - N/2 log(2 pi) - 1/2 (x-m)^T Q (x-m)``."""
        n = self.structure.size
        return 0.5 * self.log_det_precision() - 0.5 * n * math.log(2 * math.pi) - 0.5 * self.quadratic_form(x)

    @property
    def precision_matrix(self):
        """The dense ``N x N`` precision ``Q`` (cells in row-major order)."""
        import numpy as np

        shape, k = self.structure.shape, self.structure.order
        if len(shape) == 1:
            d = _difference_matrix(shape[0], k)
            rough = d.T @ d
        else:
            d1, d2 = (_difference_matrix(n, k) for n in shape)
            rough = np.kron(d1.T @ d1, np.eye(shape[1])) + np.kron(np.eye(shape[0]), d2.T @ d2)
        pins = np.zeros(shape)
        if len(shape) == 1:
            pins[:k] = 1.0
        else:
            pins[:k, :k] = 1.0
        return self.precision * jnp.asarray(rough) + jnp.diag(jnp.asarray(pins.ravel())) / self.boundary_sd**2

    @property
    def covariance_matrix(self):
        """``Q^-1`` (dense; for tests and the closed-form evidence)."""
        q = self.precision_matrix
        return jnp.linalg.inv(q)

    @property
    def variance(self):
        return jnp.reshape(jnp.diag(self.covariance_matrix), self.structure.shape)

    @property
    def mean(self):
        return jnp.broadcast_to(self.loc, self.structure.shape)

    def sample(self, key, sample_shape=()):
        """Exact draws: in 1-D in O(N) by the recursion (boundary values, then k-th
        differences ``~ N(0, 1/tau)`` summed k times); in 2-D through the dense Cholesky
        factor of ``Q`` (``x = m + L^-T e``, ``Q = L L^T``), O(N^3) once per call."""
        shape, k = self.structure.shape, self.structure.order
        dtype = jnp.result_type(float)
        if len(shape) == 1:
            n = shape[0]
            kb, ke = jax.random.split(key)
            start = self.boundary_sd * jax.random.normal(kb, (*sample_shape, k), dtype)
            innov = jax.random.normal(ke, (*sample_shape, n - k), dtype) / jnp.sqrt(self.precision)
            if k == 1:
                r = start + jnp.concatenate([jnp.zeros((*sample_shape, 1), dtype), jnp.cumsum(innov, -1)], -1)
            else:
                d0 = start[..., 1:2] - start[..., 0:1]  # first difference x_2 - x_1
                d = d0 + jnp.concatenate([jnp.zeros((*sample_shape, 1), dtype), jnp.cumsum(innov, -1)], -1)
                r = start[..., 0:1] + jnp.concatenate([jnp.zeros((*sample_shape, 1), dtype),
                                                       jnp.cumsum(d, -1)], -1)
            return self.loc + r
        chol = jnp.linalg.cholesky(self.precision_matrix)
        e = jax.random.normal(key, (*sample_shape, self.structure.size), dtype)
        r = jax.scipy.linalg.solve_triangular(chol, e.reshape(-1, self.structure.size).T, lower=True, trans="T")
        return self.loc + jnp.reshape(r.T, (*sample_shape, *shape))


def _grid_shape(shape) -> tuple[int, ...]:
    try:
        s = _shape(shape)
    except (TypeError, ValueError):
        raise ValueError(f"GaussianMRF shape must be an int (chain) or a pair (grid), got {shape!r}") from None
    if len(s) not in (1, 2):
        raise ValueError(f"GaussianMRF shape must be an int (chain) or a pair (grid), got {shape!r}")
    return s


def GaussianMRF(shape, order: int = 1, precision=1.0, boundary_sd=1.0, mean=0.0, precision_scale=1.0) -> Prior:
    """Proper Gaussian Markov random field (smoothness prior) on a regular 1-D chain or 2-D grid.

    Intrinsic part (Rue & Held 2005, *Gaussian Markov Random Fields*, ch. 3):
    the k-th differences along each axis (``k = order``, 1 or 2) are
    independent ``N(0, 1/tau)``, ``tau = precision`` in ``1 / (units of x)^2``
    per cell^(2k) -- it penalises ``tau/2 sum_axes |D_k x|^2``.  That density is
    improper (flat along polynomials of degree < k).  It is made proper -- and
    the free energy thus defined -- by a Gaussian ``N(mean, b^2)``,
    ``b = boundary_sd`` (units of x), on each *boundary cell*: the first ``k``
    values of a chain, the ``k x k`` corner block ``x[:k, :k]`` of a grid.  The
    number of boundary cells equals the dimension ``r`` of the null space of the
    difference penalty (k in 1-D; k^2 in 2-D: the bilinear functions for k = 2),
    so that the prior is

        p(x) = N(x | mean, Q^-1),   Q = tau R + b^-2 P,   R = sum_axes D_k^T D_k,

    with ``P`` the diagonal 0/1 selector of the boundary cells, and

        log det Q = c + (N - r) log tau - 2 r log b                          (exact)

    where, with ``U_0`` the null vectors of R and ``lambda_+`` its positive
    eigenvalues (separable: sums of the 1-D ones), ``c = sum log lambda_+ + log
    det(P-rows of U_0)^2`` (Schur complement on the null space).  In 1-D
    ``c = 0``: ``Q = L^T L`` with ``L`` = (boundary rows / b, ``sqrt(tau) D_k``)
    square lower-triangular with diagonal ``(1/b, ..., sqrt(tau), ...)``; then the
    prior is the directed chain ``x_1..x_k ~ N(mean, b^2)``, ``Δ^k x_i ~ N(0, 1/tau)``.

    ``log_prob`` costs O(N) (differences and a constant), in 1-D and 2-D; draws
    are O(N) in 1-D and use a dense Cholesky of Q in 2-D (fine up to a few
    thousand cells).  Works under ``jit``, ``vmap`` and ``grad``.

    Args:
        shape: ``n`` (chain of n cells) or ``(n1, n2)`` (grid; row-major), each ``n > order``.
        order: 1 (first differences: piecewise-flat/random walk) or 2 (second differences:
            piecewise-linear/integrated random walk).
        precision: ``tau > 0``, or the *name* of another parameter of the model whose
            value is ``tau`` (hierarchical: it then needs its own prior, e.g.
            ``LogUniform``, and is learnt with x); returns a :class:`Conditional` prior.
        boundary_sd: ``b > 0``, standard deviation of the boundary cells about ``mean``.
        mean: the prior mean (scalar or an array of ``shape``), units of x.
        precision_scale: ``s > 0``; ``tau = s * precision``, so that fields in different
            units can share one dimensionless smoothness parameter (e.g. ``s = 1/(25 C)^2``
            for a temperature field and ``1/(1 kbar)^2`` for a pressure field).
    """
    s = _grid_shape(shape)
    if order not in (1, 2):
        raise ValueError(f"GaussianMRF order must be 1 or 2, got {order!r}")
    if min(s) <= order:
        raise ValueError(f"GaussianMRF of order {order} needs more than {order} cells along each axis, got shape {s}")
    _check_positive("GaussianMRF boundary_sd", boundary_sd)
    _check_positive("GaussianMRF precision_scale", precision_scale)
    scale = float(precision_scale)
    b = _f(boundary_sd)
    if jnp.ndim(b) != 0:
        raise ValueError(f"GaussianMRF boundary_sd must be a scalar, got shape {jnp.shape(b)}")
    m = _f(mean)
    if jnp.ndim(m) != 0 and tuple(jnp.shape(m)) != s:
        raise ValueError(f"GaussianMRF mean must be a scalar or of shape {s}, got shape {jnp.shape(m)}")
    structure = _GridStructure(s, int(order))
    if isinstance(precision, str):
        return Conditional(_MRFFactory(structure, precision, m, b, scale), parents=precision, shape=s)
    _check_positive("GaussianMRF precision", precision)
    tau = scale * _f(precision)
    if jnp.ndim(tau) != 0:
        raise ValueError(f"GaussianMRF precision must be a scalar or a parameter name, got shape {jnp.shape(tau)}")
    return Prior(GaussianMRFDistribution(structure, tau, m, b))


class _MRFFactory:
    """``{precision name: tau} -> GaussianMRFDistribution`` (hashable, for a static field)."""

    def __init__(self, structure, name, mean, boundary_sd, scale=1.0):
        self.structure, self.name = structure, name
        self.mean, self.boundary_sd, self.scale = mean, boundary_sd, scale
        import numpy as np

        self._key = (structure, name, np.asarray(mean).tobytes(), np.asarray(mean).shape, float(boundary_sd),
                     float(scale))

    def __call__(self, parents):
        tau = parents[self.name]
        if jnp.ndim(tau) != 0:
            raise ValueError(f"the GaussianMRF precision {self.name!r} must be a scalar parameter, "
                             f"got shape {jnp.shape(tau)}")
        return GaussianMRFDistribution(self.structure, self.scale * tau, self.mean, self.boundary_sd)

    def __eq__(self, other):
        return isinstance(other, _MRFFactory) and self._key == other._key

    def __hash__(self):
        return hash(self._key)
