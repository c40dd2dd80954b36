"""Reaction-diffusion in a slab, cylinder or sphere by conservative finite volumes.

The equation, for a concentration ``c(x, t)`` on ``0 <= x <= L`` with geometry exponent
``g`` (0 slab, 1 cylinder, 2 sphere; ``x`` is the radius for g > 0):

    dc/dt = x^-g d/dx ( x^g D(c, x, t) dc/dx ) + R(c, x, t)                        (1)

(Crank 1975, "The Mathematics of Diffusion", 2nd ed., eqs. 1.7, 5.3, 6.4), and the
Arrhenius law for the diffusion coefficient with an activation volume,

    D = D0 exp( -(Ea + P Va) / (R T) )                                               (2)

(e.g. Chakraborty 2008, Annu. Rev. Earth Planet. Sci. 36, 153, eq. 3; Carlson 2006,
Am. Mineral. 91, 1 for garnet).  Units are the caller's, but consistent: ``x`` and ``L``
in one length unit, ``t`` in one time unit, ``D`` in length^2/time, ``R`` in
concentration/time; in (2) Ea in J/mol, Va in m^3/mol, P in Pa, T in K.

Method of lines (Patankar 1980, "Numerical Heat Transfer and Fluid Flow", ch. 4):
``n`` cells of equal width ``h = L/n`` with centres ``x_i``, faces ``x_{i+1/2}``,
face areas ``A = x^g`` and cell volumes ``V_i = (x_{i+1/2}^{g+1} - x_{i-1/2}^{g+1})/(g+1)``
(so that ``sum_i V_i c_i`` is exactly conserved by the interior fluxes):

    V_i dc_i/dt = A_{i+1/2} D_{i+1/2} (c_{i+1} - c_i)/h - A_{i-1/2} D_{i-1/2} (c_i - c_{i-1})/h + V_i R_i

with ``D`` at a face the harmonic mean of the two cells (exact for a layered medium).
Boundaries (:class:`Dirichlet` value, or :class:`Neumann` outward flux, each a constant or
a function ``(t, params)``): at ``x = L`` the flux through the face uses the half cell
``h/2`` to the boundary value; at ``x = 0`` the same for a slab, while for a cylinder or
sphere the centre face has zero area (symmetry).  Concentration may carry leading axes
(several species, each with its own D): shape ``(..., n)``.

Moving boundary (growth or dissolution of the domain, ``L = L(t)``): on the fixed
coordinate ``xi = x / L(t)`` in [0, 1] (Landau 1950, Q. Appl. Math. 8, 81; Crank 1984,
"Free and Moving Boundary Problems", sec. 3.3.2) equation (1) becomes

    dc/dt|_xi = (1/L^2) xi^-g d/dxi ( xi^g D dc/dxi ) + xi (L'/L) dc/dxi + R            (3)

The advection term carries material inwards in ``xi`` as the domain grows and is
discretised upwind (first order: its numerical diffusion is ``|xi L'/L| h_xi / 2`` in
xi-units, so refine the grid until the result stops changing).  A fixed domain is the
special case ``L' = 0``.

Stiffness: the diffusion term has eigenvalues up to ~ ``4 D / h^2``; solve with an implicit
solver (``solver="kvaerno5"``) unless ``D t / h^2`` is small.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .ode import ODE

__all__ = ["GAS_CONSTANT", "arrhenius", "Dirichlet", "Neumann", "Grid", "ReactionDiffusion"]

GAS_CONSTANT = 8.314462618  # J mol^-1 K^-1 (CODATA 2018, exact)

_GEOMETRY = {"slab": 0, "cylinder": 1, "sphere": 2}


def arrhenius(pre_exponential, activation_energy, temperature, pressure=0.0, activation_volume=0.0):
    """Eq. (2): ``D = D0 exp(-(Ea + P Va)/(R T))``.

    Args:
        pre_exponential: D0 (length^2/time; the unit of the result).
        activation_energy: Ea (J/mol).
        temperature: T (K, > 0).
        pressure: P (Pa).
        activation_volume: Va (m^3/mol).
    """
    return pre_exponential * jnp.exp(
        -(activation_energy + pressure * activation_volume) / (GAS_CONSTANT * temperature)
    )


def _value(v, t, params):
    return v(t, params) if callable(v) else v


class Dirichlet(eqx.Module):
    """Fixed concentration at the boundary: ``c = value`` (a constant, array over leading
    species axes, or a function ``(t, params)``)."""

    value: Any


class Neumann(eqx.Module):
    """Fixed outward diffusive flux ``-D dc/dx . n = flux`` through the boundary
    (concentration x length / time; 0 = no flux or symmetry), constant or ``(t, params)``."""

    flux: Any = 0.0


class Grid(eqx.Module):
    """``n_cells`` equal cells on ``0 <= x <= length`` in a slab, cylinder or sphere.

    Attributes: ``centres`` (n,), ``faces`` (n + 1,), ``areas`` (n + 1,: ``x^g`` at the
    faces), ``volumes`` (n,: ``(x_{i+1/2}^{g+1} - x_{i-1/2}^{g+1})/(g+1)``), all for a
    domain of unit length; multiply by powers of ``length`` for physical values.  Areas
    and volumes omit the constant ``2 pi`` / ``4 pi`` factors (they cancel).
    """

    length: jax.Array
    n_cells: int = eqx.field(static=True)
    exponent: int = eqx.field(static=True)

    def __init__(self, length, n_cells: int, geometry: str = "slab"):
        if geometry not in _GEOMETRY:
            raise ValueError(f"unknown geometry {geometry!r}; expected one of {sorted(_GEOMETRY)}")
        if int(n_cells) < 2:
            raise ValueError(f"n_cells must be >= 2, got {n_cells}")
        length = jnp.asarray(length, dtype=jnp.result_type(float))
        if not (length.ndim == 0 and bool(jnp.isfinite(length)) and bool(length > 0)):
            raise ValueError(f"length must be a positive finite number, got {length}")
        self.length = length
        self.n_cells = int(n_cells)
        self.exponent = _GEOMETRY[geometry]

    @property
    def faces(self) -> jax.Array:
        return jnp.linspace(0.0, 1.0, self.n_cells + 1, dtype=self.length.dtype)

    @property
    def centres(self) -> jax.Array:
        f = self.faces
        return 0.5 * (f[1:] + f[:-1])

    @property
    def areas(self) -> jax.Array:
        return self.faces**self.exponent

    @property
    def volumes(self) -> jax.Array:
        g = self.exponent + 1
        f = self.faces
        return (f[1:] ** g - f[:-1] ** g) / g

    def positions(self, length=None) -> jax.Array:
        """Cell centres in physical units for a domain of ``length`` (default: the grid's)."""
        return self.centres * (self.length if length is None else length)

    def total(self, c, length=None):
        """``sum_i V_i c_i`` in physical units (integral of c over the domain, without the
        2 pi or 4 pi of a cylinder or sphere): conserved with no-flux boundaries."""
        length = self.length if length is None else length
        return jnp.sum(c * self.volumes, axis=-1) * length ** (self.exponent + 1)


def _harmonic(a, b):
    """``2ab/(a+b)``, 0 where both vanish."""
    total = a + b
    safe = jnp.where(total > 0, total, 1.0)
    return jnp.where(total > 0, 2.0 * a * b / safe, 0.0)


class ReactionDiffusion(eqx.Module):
    """The right-hand side of eq. (1)/(3) on a :class:`Grid` (module docstring).

    Args:
        grid: cells and geometry; ``grid.length`` is L for a fixed domain.
        diffusivity: ``(c, x, t, params) -> D`` at the cell centres (broadcastable to
            ``c``; length^2/time), or a constant / parameter name (string) read from params.
        reaction: ``(c, x, t, params) -> R`` (concentration/time), or ``None``.
        outer: condition at ``x = L`` (:class:`Dirichlet` or :class:`Neumann`).
        inner: condition at ``x = 0`` (slab only; cylinder and sphere are symmetric there).
        domain_length: ``(t, params) -> L(t)`` for a moving boundary (eq. 3), or ``None``.
    """

    grid: Grid
    diffusivity: Any
    reaction: Callable | None
    outer: Dirichlet | Neumann
    inner: Dirichlet | Neumann
    domain_length: Callable | None

    def __init__(self, grid: Grid, diffusivity, reaction=None, outer=None, inner=None, domain_length=None):
        self.grid = grid
        self.diffusivity = diffusivity
        self.reaction = reaction
        self.outer = Neumann(0.0) if outer is None else outer
        if inner is not None and grid.exponent > 0:
            raise ValueError("a cylinder or sphere has no inner boundary condition (symmetry at the centre)")
        self.inner = Neumann(0.0) if inner is None else inner
        for where, bc in (("outer", self.outer), ("inner", self.inner)):
            if not isinstance(bc, (Dirichlet, Neumann)):
                raise TypeError(f"{where} boundary must be Dirichlet(...) or Neumann(...), got {type(bc).__name__}")
        self.domain_length = domain_length

    def length(self, t, params):
        """L(t): the grid's length, or ``domain_length(t, params)``."""
        return self.grid.length if self.domain_length is None else self.domain_length(t, params)

    def _diffusivity(self, c, x, t, params):
        d = self.diffusivity
        if isinstance(d, str):
            d = params[d]
        elif callable(d):
            d = d(c, x, t, params)
        return jnp.broadcast_to(jnp.asarray(d, dtype=c.dtype), c.shape)

    def vector_field(self, t, c, params):
        """``dc/dt`` at the cell centres, shape of ``c`` (``(..., n_cells)``)."""
        grid = self.grid
        h = 1.0 / grid.n_cells  # in xi = x / L
        if self.domain_length is None:
            length, rate = grid.length, jnp.zeros((), c.dtype)
        else:
            length, dlength = jax.jvp(lambda s: self.domain_length(s, params), (t,), (jnp.ones_like(t),))
            rate = dlength / length
        x = grid.centres * length
        d = self._diffusivity(c, x, t, params)
        area = grid.areas
        # interior faces: flux in xi units, -D dc/dxi
        d_face = _harmonic(d[..., 1:], d[..., :-1])
        interior = -d_face * (c[..., 1:] - c[..., :-1]) / h
        # outer face (xi = 1)
        if isinstance(self.outer, Dirichlet):
            c_out = jnp.broadcast_to(_value(self.outer.value, t, params), c[..., -1].shape)
            outer = -d[..., -1] * (c_out - c[..., -1]) / (0.5 * h)
        else:
            c_out = None
            outer = jnp.broadcast_to(_value(self.outer.flux, t, params) * length, c[..., -1].shape)
        # inner face (xi = 0)
        if grid.exponent > 0:
            inner = jnp.zeros_like(c[..., :1])[..., 0]
        elif isinstance(self.inner, Dirichlet):
            c_in = jnp.broadcast_to(_value(self.inner.value, t, params), c[..., 0].shape)
            inner = -d[..., 0] * (c[..., 0] - c_in) / (0.5 * h)
        else:
            inner = -jnp.broadcast_to(_value(self.inner.flux, t, params) * length, c[..., 0].shape)
        flux = jnp.concatenate([inner[..., None], interior, outer[..., None]], axis=-1) * area
        dcdt = -(flux[..., 1:] - flux[..., :-1]) / grid.volumes / length**2
        if self.domain_length is not None:
            # xi (L'/L) dc/dxi, upwind: for a growing domain information comes from larger xi
            xi = grid.centres
            c_right = jnp.concatenate([c[..., 1:], (c[..., -1:] if c_out is None else c_out[..., None])], axis=-1)
            h_right = jnp.concatenate([jnp.full((grid.n_cells - 1,), h), jnp.full((1,), 0.5 * h if c_out is not None else h)])
            forward = (c_right - c) / h_right
            c_left = jnp.concatenate([c[..., :1], c[..., :-1]], axis=-1)
            backward = (c - c_left) / jnp.concatenate([jnp.full((1,), h), jnp.full((grid.n_cells - 1,), h)])
            slope = jnp.where(rate >= 0, forward, backward)
            dcdt = dcdt + xi * rate * slope
        if self.reaction is not None:
            dcdt = dcdt + self.reaction(c, x, t, params)
        return dcdt

    def ode(self, initial_state, times, observe: Callable | None = None, *, solver="kvaerno5", **kwargs) -> ODE:
        """A :class:`~jaxinv.physics.ode.ODE` forward model of this system.

        Args:
            initial_state: concentration at ``t0`` on the cells (``(..., n_cells)``), or
                ``params -> c0``.
            times: snapshot times.
            observe: ``(c_at_times, params) -> prediction`` (default: the cell values,
                shape ``(n_times, ..., n_cells)``); see :meth:`profile_at`.
            solver: default implicit (the system is stiff); other keywords go to ``ODE``.
        """
        return ODE(self.vector_field, initial_state, times, observe, solver=solver, **kwargs)

    def profile_at(self, c, positions, t, params):
        """Concentration at physical ``positions`` from cell values ``c`` (``(..., n)``) at
        time ``t``: linear interpolation between centres, the boundary value (Dirichlet) or
        the nearest cell (Neumann) beyond the outermost centre."""
        length = self.length(t, params)
        xi = jnp.asarray(positions, dtype=c.dtype) / length
        nodes = self.grid.centres
        values = c
        if isinstance(self.outer, Dirichlet):
            edge = jnp.broadcast_to(_value(self.outer.value, t, params), c[..., -1].shape)
            nodes = jnp.concatenate([nodes, jnp.ones((1,), c.dtype)])
            values = jnp.concatenate([c, edge[..., None]], axis=-1)
        interp = lambda v: jnp.interp(xi, nodes, v)
        flat = values.reshape(-1, values.shape[-1])
        return jax.vmap(interp)(flat).reshape(values.shape[:-1] + xi.shape)
