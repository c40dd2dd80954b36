"""Mineral growth with a zoning record and intracrystalline diffusion along a P–T–t path.

After Kuwatani et al. (2018, Phys. Rev. E 98, 043311; cited as in issue 4 -- the paper
itself could not be read while this module was written): a grain grows by a growth law,
each new shell records the equilibrium composition at the P–T of its growth, and
diffusion inside the grain acts on the grown part from then on.  The measured zoning
profile is the record after that diffusion.

**P–T–t path.**  Pressure ``P`` (kbar) and temperature ``T`` (°C) are given at path
nodes ``t_0 < ... < t_K`` (Myr) and interpolated linearly in time
(:func:`path_at`).  Growth happens on the first ``growth_segments`` segments of the path;
diffusion alone (annealing, cooling) on the rest.

**Growth** (Lagrangian shells).  Each growth segment is split into ``shells_per_segment``
equal time steps ``[tau_j, tau_j+1]``; in step ``j`` shell ``j`` grows with thickness and
composition

    dr_j = int v(P, T) dt,         c_j = int v c_eq(P, T) dt / dr_j                     (1)

(Gauss–Legendre quadrature over the step), i.e. the shell is the growth-weighted mean of
what the rim recorded while it grew; ``v`` the rim velocity of the growth law
(:class:`ConstantGrowth`, :class:`ArrheniusGrowth`), ``c_eq`` the equilibrium composition
(:class:`GarnetEquilibrium` or :class:`LinearisedEquilibrium`, or any callable
``(P, T, params) -> (n_components,)``).  Shell ``j`` spans ``r_{j-1} < r < r_j``,
``r_j = r_nucleus + sum_{i<=j} dr_i``: the grid moves with the crystal (no advection,
no numerical smearing of the record, unlike an Eulerian moving-boundary grid).

**Diffusion** on the grown shells (the rim closed: no exchange with the matrix), by
conservative finite volumes on that irregular grid (Patankar 1980, ch. 4), with a
diffusivity ``D(P, T)`` that does not vary in space:

    V_i dc_i/dt = D [ A_i (c_{i+1} - c_i)/h_i - A_{i-1} (c_i - c_{i-1})/h_{i-1} ]          (2)

``A_i = r_i^g`` the face areas, ``V_i = (r_i^{g+1} - r_{i-1}^{g+1})/(g+1)``, ``h_i`` the
distance between cell midpoints, ``g`` = 0, 1, 2 (slab, cylinder, sphere).  (2) is
``dc/dt = D(t) L c`` with a constant matrix ``L`` between shell additions, so over a
step its solution is *exact*:

    c(tau_j+1) = expm( L_j int D(P(t), T(t)) dt ) c(tau_j)                               (3)

(matrix exponential) with no time-stepping error and no stiffness.  It is evaluated
through the symmetric eigenproblem: with ``K`` the symmetric flux matrix of (2) and ``V``
the diagonal of volumes, ``L = V^-1 K`` and

    expm(d L) = V^-1/2 Q exp(d Λ) Q^T V^1/2,    V^-1/2 K V^-1/2 = Q Λ Q^T               (4)

(e.g. Moler & Van Loan 2003, SIAM Rev. 45, 3, method 14): all eigenvalues ``Λ <= 0``,
so (4) is stable at any ``D t / h^2`` (thin shells, long anneals), costs one ``eigh``
per step shared by all components, and is differentiable to any order (eigenvalues of
an irreducible tridiagonal matrix are distinct).  A general-purpose scaling-and-squaring
``expm`` needs ~60 squarings for a thin shell and was 5-20x slower here under ``grad``
and ``vmap``.  A shell added in step ``j``
diffuses for the whole of that step (first order in the step length).  With one
diffusivity for all components the sum of mole fractions stays exactly 1; per-component
diffusivities (shape ``(n_components,)``) diffuse each component separately (tracer
diffusion; the sum is then not kept -- the multicomponent coupling of Lasaga 1979 is
not modelled).  ``D = D0 exp(-(Ea + P Va)/(R T))`` with the Chakraborty & Ganguly (1992,
Contrib. Mineral. Petrol. 111, 74) tracer data is :func:`garnet_diffusivity`.

**Equilibrium composition** (:class:`GarnetEquilibrium`).  Garnet (Mg, Fe, Mn, Ca) in
equilibrium with biotite and plagioclase of fixed composition:

* garnet–biotite Fe–Mg exchange (Ferry & Spear 1978, Contrib. Mineral. Petrol. 66, 113):
  ``0 = ΔH - T ΔS + P ΔV + 3 R T ln K_D``, ``K_D = (Mg/Fe)_Grt / (Mg/Fe)_Bt``,
  ΔH = 52 090 J, ΔS = 19.506 J/K, ΔV = 0.238 J/bar;
* GASP, 3 An = Grs + 2 Ky + Qz (Koziol & Newton 1988, Am. Mineral. 73, 216):
  ``0 = ΔH - T ΔS + P ΔV + R T ln(a_Grs / a_An^3)``, ΔH = -48 357 J, ΔS = -150.66 J/K,
  ΔV = -6.608 J/bar, ideal ``a_Grs = X_Ca^3``, ``a_An = X_An``;
* Mn (this module's choice, not a calibrated equilibrium): ``X_Mn = X_Mn,ref exp(-(T -
  T_ref)/T_Mn)``, the decrease of spessartine with temperature seen in prograde garnet;
* closure: ``X_Mg + X_Fe = 1 - X_Ca - X_Mn`` split by ``K_D``.

Units: time Myr, length µm (any one unit, used consistently), D in length²/Myr, P kbar,
T °C.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .diffusion import _GEOMETRY, GAS_CONSTANT, arrhenius

__all__ = [
    "KELVIN",
    "SECONDS_PER_MYR",
    "ConstantGrowth",
    "ArrheniusGrowth",
    "ArrheniusDiffusivity",
    "GarnetEquilibrium",
    "LinearisedEquilibrium",
    "GrowthZoning",
    "Zoning",
    "garnet_diffusivity",
    "path_at",
]

KELVIN = 273.15
SECONDS_PER_MYR = 1e6 * 365.25 * 86400.0  # Julian years
BAR_PER_KBAR = 1e3
PA_PER_KBAR = 1e8


def _value(v, params):
    """A constant, or the value of the parameter named ``v``."""
    return params[v] if isinstance(v, str) else v


def path_at(times, nodes, t):
    """Linear interpolation of a path given at ``nodes`` (values at ``times``) at time(s) ``t``."""
    return jnp.interp(t, times, nodes)


# -- growth laws ----------------------------------------------------------------------------


class ConstantGrowth(eqx.Module):
    """Rim velocity ``v = velocity`` (length/time; a number or a parameter name)."""

    velocity: Any

    def __call__(self, pressure, temperature, params):
        return jnp.broadcast_to(jnp.asarray(_value(self.velocity, params), float), jnp.shape(temperature))


class ArrheniusGrowth(eqx.Module):
    """Interface-controlled growth (e.g. Kretz 1974; Christian 1975, ch. 10):

        v = k exp(-Ea / (R T)) * (dT / 1 K)^n,   dT = T - T_onset (the overstepping),

    ``k`` (length/time; number or parameter name), ``Ea`` (J/mol), ``T`` in °C.  Without
    ``onset_temperature`` the overstepping factor is 1 (``v = k exp(-Ea/RT)``).  A
    non-positive overstepping gives no growth (the shell then has the floor thickness of
    :class:`GrowthZoning`).
    """

    rate_constant: Any
    activation_energy: Any = 0.0
    onset_temperature: Any = None
    exponent: float = 1.0

    def __call__(self, pressure, temperature, params):
        k = _value(self.rate_constant, params)
        ea = _value(self.activation_energy, params)
        v = k * jnp.exp(-ea / (GAS_CONSTANT * (temperature + KELVIN)))
        if self.onset_temperature is not None:
            over = jnp.maximum(temperature - _value(self.onset_temperature, params), 0.0)
            v = v * over**self.exponent
        return v


# -- equilibrium composition ----------------------------------------------------------------

#: (ΔH J, ΔS J/K, ΔV J/bar) of the two calibrations (see the module docstring)
FERRY_SPEAR_1978 = (52090.0, 19.506, 0.238)
KOZIOL_NEWTON_1988 = (-48357.0, -150.66, -6.608)


class GarnetEquilibrium(eqx.Module):
    """Garnet ``(X_Mg, X_Fe, X_Mn, X_Ca)`` in equilibrium at ``(P kbar, T °C)`` with biotite
    of ``Mg/(Mg+Fe) = biotite_mg_number`` and plagioclase of anorthite activity
    ``anorthite_activity`` (module docstring: Ferry & Spear 1978, Koziol & Newton 1988,
    empirical Mn).  Every attribute may be a number or a parameter name."""

    biotite_mg_number: Any = 0.45
    anorthite_activity: Any = 0.4
    manganese_reference: Any = 0.12
    manganese_temperature_scale: Any = 80.0
    reference_temperature: float = 500.0

    components = ("Mg", "Fe", "Mn", "Ca")

    def __call__(self, pressure, temperature, params=None):
        params = {} if params is None else params
        t_k = temperature + KELVIN
        p_bar = pressure * BAR_PER_KBAR
        dh, ds, dv = FERRY_SPEAR_1978
        ln_kd = -(dh - t_k * ds + p_bar * dv) / (3 * GAS_CONSTANT * t_k)
        mg_bt = _value(self.biotite_mg_number, params)
        ratio = jnp.exp(ln_kd) * mg_bt / (1 - mg_bt)  # (Mg/Fe) in garnet
        dh, ds, dv = KOZIOL_NEWTON_1988
        ln_k = -(dh - t_k * ds + p_bar * dv) / (GAS_CONSTANT * t_k)
        a_an = _value(self.anorthite_activity, params)
        x_ca = jnp.exp((ln_k + 3 * jnp.log(a_an)) / 3)
        x_mn = _value(self.manganese_reference, params) * jnp.exp(
            -(temperature - self.reference_temperature) / _value(self.manganese_temperature_scale, params))
        rest = 1 - x_ca - x_mn
        return jnp.stack([rest * ratio / (1 + ratio), rest / (1 + ratio), x_mn, x_ca], axis=-1)

    def linearised(self, pressure, temperature, params=None) -> "LinearisedEquilibrium":
        """The first-order Taylor expansion about ``(pressure, temperature)``."""
        f = lambda p, t: self(p, t, params)  # noqa: E731
        p0, t0 = jnp.asarray(pressure, float), jnp.asarray(temperature, float)
        return LinearisedEquilibrium(p0, t0, f(p0, t0), jax.jacfwd(f, 0)(p0, t0), jax.jacfwd(f, 1)(p0, t0),
                                     self.components)


class LinearisedEquilibrium(eqx.Module):
    """``c_eq = c_ref + dc/dP (P - P_ref) + dc/dT (T - T_ref)`` (per component)."""

    reference_pressure: jax.Array
    reference_temperature: jax.Array
    reference_composition: jax.Array
    pressure_slope: jax.Array
    temperature_slope: jax.Array
    components: tuple = eqx.field(static=True, default=())

    def __call__(self, pressure, temperature, params=None):
        dp = jnp.asarray(pressure)[..., None] - self.reference_pressure
        dt = jnp.asarray(temperature)[..., None] - self.reference_temperature
        return self.reference_composition + self.pressure_slope * dp + self.temperature_slope * dt


#: Chakraborty & Ganguly (1992) tracer diffusion in garnet: (D0 m²/s, Ea J/mol, Va m³/mol)
CHAKRABORTY_GANGULY_1992 = {
    "Mg": (1.1e-7, 284_500.0, 5.3e-6),
    "Fe": (6.4e-8, 65_824.0 * 4.184, 5.6e-6),
    "Mn": (5.1e-8, 60_569.0 * 4.184, 6.0e-6),
}


class ArrheniusDiffusivity(eqx.Module):
    """``D(P kbar, T °C, params) = D0 exp(-(Ea + P Va)/(R T))`` in the unit of ``D0``.

    A module, not a closure, so that two models built alike compare equal and share one
    compiled program (a new closure per model would force a recompile)."""

    pre_exponential: Any  # D0, length²/Myr
    activation_energy: Any  # J/mol
    activation_volume: Any = 0.0  # m³/mol

    def __call__(self, pressure, temperature, params=None):
        params = {} if params is None else params
        return arrhenius(_value(self.pre_exponential, params), _value(self.activation_energy, params),
                         temperature + KELVIN, pressure * PA_PER_KBAR, _value(self.activation_volume, params))


def garnet_diffusivity(species: str = "Fe", length_unit: float = 1e-6) -> ArrheniusDiffusivity:
    """``D(P kbar, T °C, params)`` in ``length_unit``²/Myr (default µm²/Myr) from the
    Chakraborty & Ganguly (1992) tracer coefficients of ``species`` ("Mg", "Fe" or "Mn"):
    ``D = D0 exp(-(Ea + P Va)/(R T))``."""
    if species not in CHAKRABORTY_GANGULY_1992:
        raise ValueError(f"unknown species {species!r}; expected one of {sorted(CHAKRABORTY_GANGULY_1992)}")
    d0, ea, va = CHAKRABORTY_GANGULY_1992[species]
    return ArrheniusDiffusivity(d0 * SECONDS_PER_MYR / length_unit**2, ea, va)


# -- the recorder ---------------------------------------------------------------------------


class Zoning(eqx.Module):
    """A grown, diffused crystal: shells' ``outer_radii`` (N,), ``compositions`` (N, C)
    after diffusion, ``recorded`` (N, C) at growth, and each shell's growth mid-time,
    pressure and temperature ``times``, ``pressures``, ``temperatures`` (N,)."""

    outer_radii: jax.Array
    compositions: jax.Array
    recorded: jax.Array
    times: jax.Array
    pressures: jax.Array
    temperatures: jax.Array

    @property
    def radius(self):
        """The final radius."""
        return self.outer_radii[-1]

    @property
    def centres(self):
        inner = jnp.concatenate([self.outer_radii[:1] * 0, self.outer_radii[:-1]])
        return 0.5 * (inner + self.outer_radii)

    def profile(self, radii):
        """Composition at ``radii`` (M,) -> (M, C), linear between shell midpoints (constant
        beyond the first and last)."""
        centres = self.centres
        return jax.vmap(lambda c: jnp.interp(radii, centres, c), in_axes=1, out_axes=1)(self.compositions)


class GrowthZoning(eqx.Module):
    """Growth + zoning record + diffusion along a P–T–t path (module docstring, eqs. 1–3).

    Args:
        times: path node times ``t_0 < ... < t_K`` (Myr).
        growth_law: ``v(P, T, params)`` (length/Myr), e.g. :class:`ArrheniusGrowth`.
        equilibrium: ``c_eq(P, T, params)`` -> (C,), e.g. :class:`GarnetEquilibrium`.
        diffusivity: ``D`` (length²/Myr): a number, a parameter name, or a function
            ``(P, T, params)`` (e.g. :func:`garnet_diffusivity`); a scalar, or per component (C,).
            ``0`` switches diffusion off.
        shells_per_segment: shells grown per path segment (the resolution of the record).
        growth_segments: the first that many segments grow the crystal (default: all);
            the remaining ones only diffuse.
        geometry: "sphere" (default), "cylinder" or "slab".
        nucleus_radius: radius at ``t_0`` (length; the nucleus has the composition of the first shell).
        quadrature: Gauss–Legendre points per step for eqs. (1) and (3).
        min_thickness: floor on a shell's thickness (length), so that a pause in growth
            leaves a thin shell rather than a zero-volume cell.
    """

    times: jax.Array
    growth_law: Callable
    equilibrium: Callable
    diffusivity: Any = 0.0
    shells_per_segment: int = eqx.field(static=True, default=1)
    growth_segments: int = eqx.field(static=True, default=-1)
    exponent: int = eqx.field(static=True, default=2)
    nucleus_radius: float = 0.0
    quadrature: int = eqx.field(static=True, default=4)
    min_thickness: float = 1e-6

    def __init__(self, times, growth_law, equilibrium, diffusivity=0.0, *, shells_per_segment: int = 1,
                 growth_segments: int | None = None, geometry: str = "sphere", nucleus_radius: float = 0.0,
                 quadrature: int = 4, min_thickness: float = 1e-6):
        times = np.asarray(times, dtype=float)
        if times.ndim != 1 or times.size < 2 or not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
            raise ValueError(f"times must be a finite, strictly increasing 1-D array of >= 2 nodes, got {times}")
        if geometry not in _GEOMETRY:
            raise ValueError(f"unknown geometry {geometry!r}; expected one of {sorted(_GEOMETRY)}")
        n_seg = times.size - 1
        growth_segments = n_seg if growth_segments is None else int(growth_segments)
        if not 1 <= growth_segments <= n_seg:
            raise ValueError(f"growth_segments must be in 1..{n_seg} (the path has {n_seg} segments), "
                             f"got {growth_segments}")
        if int(shells_per_segment) < 1 or int(quadrature) < 1:
            raise ValueError("shells_per_segment and quadrature must be >= 1")
        if not (np.isfinite(nucleus_radius) and nucleus_radius >= 0):
            raise ValueError(f"nucleus_radius must be >= 0, got {nucleus_radius}")
        if not (np.isfinite(min_thickness) and min_thickness > 0):
            raise ValueError(f"min_thickness must be > 0, got {min_thickness}")
        self.times = jnp.asarray(times)
        self.growth_law = growth_law
        self.equilibrium = equilibrium
        self.diffusivity = diffusivity
        self.shells_per_segment = int(shells_per_segment)
        self.growth_segments = growth_segments
        self.exponent = _GEOMETRY[geometry]
        self.nucleus_radius = float(nucleus_radius)
        self.quadrature = int(quadrature)
        self.min_thickness = float(min_thickness)

    @property
    def n_shells(self) -> int:
        return self.growth_segments * self.shells_per_segment

    def step_times(self) -> jax.Array:
        """Boundaries of the time steps (growth steps first, then diffusion-only steps)."""
        t = self.times
        frac = jnp.arange(self.shells_per_segment) / self.shells_per_segment
        inner = t[:-1, None] + (t[1:] - t[:-1])[:, None] * frac
        return jnp.concatenate([inner.ravel(), t[-1:]])

    def _diffusivity(self, p, t, params):
        d = self.diffusivity
        if callable(d):
            return d(p, t, params)
        return jnp.broadcast_to(jnp.asarray(_value(d, params), float), jnp.shape(t))

    def __call__(self, pressure, temperature, params=None) -> Zoning:
        """Grow and diffuse along the path ``pressure`` (kbar), ``temperature`` (°C) at ``times``."""
        params = {} if params is None else params
        pressure = jnp.asarray(pressure, float)
        temperature = jnp.asarray(temperature, float)
        if pressure.shape != self.times.shape or temperature.shape != self.times.shape:
            raise ValueError(f"pressure and temperature need one value per path node {self.times.shape}, "
                             f"got {pressure.shape} and {temperature.shape}")
        edges = self.step_times()
        x, w = np.polynomial.legendre.leggauss(self.quadrature)
        lo, hi = edges[:-1, None], edges[1:, None]
        tq = 0.5 * (hi - lo) * jnp.asarray(x) + 0.5 * (hi + lo)  # (steps, q)
        wq = 0.5 * (hi - lo) * jnp.asarray(w)
        pq, tempq = path_at(self.times, pressure, tq), path_at(self.times, temperature, tq)

        n = self.n_shells
        v = self.growth_law(pq[:n], tempq[:n], params)  # (n, q)
        ceq = self.equilibrium(pq[:n], tempq[:n], params)  # (n, q, C)
        grown = jnp.sum(wq[:n] * v, axis=1)
        # growth-weighted mean (eq. 1); the plain time mean where nothing grew
        paused = grown <= 0
        weights = jnp.where(paused[:, None], wq[:n], wq[:n] * v)
        recorded = jnp.einsum("nq,nqc->nc", weights, ceq) / jnp.sum(weights, axis=1)[:, None]
        thickness = jnp.maximum(grown, self.min_thickness)
        outer = self.nucleus_radius + jnp.cumsum(thickness)
        integrated_d = jnp.einsum("sq,sq...->s...", wq, self._diffusivity(pq, tempq, params))  # (steps,) or (steps, C)

        mid = 0.5 * (edges[:-1] + edges[1:])[:n]
        zoning = dict(outer_radii=outer, recorded=recorded, times=mid,
                      pressures=path_at(self.times, pressure, mid), temperatures=path_at(self.times, temperature, mid))
        if self.diffusivity is None or (not callable(self.diffusivity) and not isinstance(self.diffusivity, str)
                                        and np.all(np.asarray(self.diffusivity) == 0)):
            return Zoning(compositions=recorded, **zoning)
        return Zoning(compositions=self._diffuse(outer, recorded, integrated_d), **zoning)

    def _operator(self, outer):
        """``L = V^-1 (-sum_faces G_f (e_f+1 - e_f)(e_f+1 - e_f)^T)`` pieces: face conductances
        ``G_f = A_f / h_f`` (n - 1,) and volumes ``V`` (n,)."""
        g = self.exponent
        inner = jnp.concatenate([jnp.full((1,), self.nucleus_radius * 0.0), outer[:-1]])
        volumes = (outer ** (g + 1) - inner ** (g + 1)) / (g + 1)
        # the nucleus is part of the first shell
        volumes = volumes.at[0].set(outer[0] ** (g + 1) / (g + 1))
        centres = 0.5 * (inner + outer)
        conductance = outer[:-1] ** g / jnp.diff(centres)
        return conductance, volumes

    def _diffuse(self, outer, recorded, integrated_d):
        n = recorded.shape[0]
        conductance, volumes = self._operator(outer)
        steps = integrated_d.shape[0]
        face = jnp.arange(n - 1)

        root_v = jnp.sqrt(volumes)

        def modes(n_active):
            # eigenpairs of M = V^-1/2 K V^-1/2 (K the symmetric flux matrix), eq. (4): the
            # shells not yet grown are decoupled and get distinct positive diagonal entries,
            # above every eigenvalue of the active block (all <= 0), so that no eigenvalue
            # is repeated (eigh's derivatives divide by eigenvalue gaps) and they are told
            # apart by sign; their values are overwritten when they appear.
            gf = jnp.where(face + 1 < n_active, conductance, 0.0)
            k = jnp.diag(gf, 1) + jnp.diag(gf, -1)
            k = k - jnp.diag(jnp.concatenate([gf, jnp.zeros(1)]) + jnp.concatenate([jnp.zeros(1), gf]))
            m = k / (root_v[:, None] * root_v[None, :])
            scale = jax.lax.stop_gradient(1.0 + jnp.max(jnp.abs(m)))
            inactive = jnp.arange(n) >= n_active
            m = m + jnp.diag(jnp.where(inactive, scale * (2.0 + jnp.arange(n)), 0.0))
            rates, vectors = jnp.linalg.eigh(m)
            return rates, vectors

        def propagate(rates, vectors, d, c):  # expm(d V^-1 K) c = V^-1/2 Q exp(d Λ) Q^T V^1/2 c  (eq. 4)
            decay = jnp.exp(d * jnp.minimum(rates, 0.0))  # inactive modes (> 0) held, not grown
            return vectors @ (decay[:, None] * (vectors.T @ (root_v[:, None] * c))) / root_v[:, None]

        def step(c, j):
            n_active = jnp.minimum(j + 1, n)
            c = jnp.where((jnp.arange(n) == j)[:, None], recorded, c)  # shell j appears
            rates, vectors = modes(n_active)
            dj = integrated_d[j]
            if dj.ndim == 0:
                c = propagate(rates, vectors, dj, c)
            else:  # one diffusivity per component, one eigendecomposition
                c = jax.vmap(lambda d, col: propagate(rates, vectors, d, col[:, None])[:, 0],
                             in_axes=(0, 1), out_axes=1)(dj, c)
            return c, None

        c, _ = jax.lax.scan(step, jnp.zeros_like(recorded), jnp.arange(steps))
        return c
