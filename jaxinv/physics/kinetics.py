"""Heterogeneous reaction kinetics: a mineral dissolving into (or growing from) a closed fluid,
at a rate proportional to its reactive surface area.

Rate law (transition-state-theory form, one elementary reaction, affinity exponents 1):

    dm/dt = -k S(m) (1 - Omega),        Omega = Q / K,                              (1)

    m      moles of mineral in the reactor                          [mol]
    k      rate constant per unit surface area                      [mol m^-2 per unit of t]
    S(m)   reactive surface area                                    [m^2]
    Q      ion activity product  prod_j (gamma_j c_j)^nu_j          [-] (standard state 1 mol/L)
    K      equilibrium constant of the dissolution reaction         [-] (same standard state)

Omega < 1: undersaturated fluid, the mineral dissolves (dm/dt < 0); Omega > 1: supersaturated,
the mineral grows; Omega = 1: equilibrium.  (1) is the transition-state rate law of Lasaga
(1998, ch. 1), the general ``r = k A (1 - Omega^p)^q`` form used by Palandri & Kharaka (2004)
with p = q = 1 (their compilation gives k in mol m^-2 s^-1), the rate law of PHREEQC's RATES examples (Parkhurst &
Appelo 2013, ``k * A0/V * (m/m0)^0.67 * (1 - SR)``) and PFLOTRAN's MINERAL_KINETICS
(``rate = A k (1 - Q/K)``).  Omori et al. (2016) estimate such rate constants from the time
series of fluid composition by Bayesian inference (as the project's issue 4 describes it);
this module is the forward model for that.

Surface-area (geometry) law.  As the mineral dissolves its area shrinks:

    S(m) = S0 (m / m0)^n,        m > 0;      S = 0 once the mineral is used up,      (2)

with ``S0`` the area at the initial amount ``m0``.  For N identical particles of size r
shrinking without changing shape or number: a sphere has S ~ r^2, m ~ r^3, so n = 2/3; a
cylinder (or needle) thinning radially at fixed length has S ~ r, m ~ r^2, n = 1/2; a plate
thinning at fixed face area has n = 0 (constant area).  n = 2/3 is the "shrinking particle"
(shrinking-sphere) model (Levenspiel 1999, "Chemical Reaction Engineering", 3rd ed., ch. 25;
Lasaga 1998, ch. 1; the 0.67 exponent of PHREEQC's rate examples).  A free exponent n >= 0
covers other shapes and size distributions.  The same law is used for growth (Omega > 1) of a
seeded mineral; a mineral with m = 0 has no surface and does not nucleate.

Closed batch reactor (fluid volume V [L], aqueous concentrations c_j [mol/L], stoichiometric
coefficients nu_j of the dissolution reaction ``mineral -> sum_j nu_j X_j``; nu_j < 0 for
species consumed, e.g. H+):

    dc_j/dt = -nu_j (dm/dt) / V,                                                     (3)

so that ``m + V c_j / nu_j`` is conserved for every species with nu_j != 0 (mass balance).

Closed forms used to validate the solver (far from equilibrium, Omega ~ 0):

    n = 1:   m(t) = m0 exp(-k S0 t / m0)
    n != 1:  m(t)^(1-n) = m0^(1-n) - (1-n) k S0 m0^(-n) t     (until m = 0, for n < 1),

i.e. linear loss for plates (n = 0) and ``m^(1/3)`` linear in t for spheres (n = 2/3); and,
for plates (n = 0) with one product species (nu = 1, gamma = 1, Q = c):

    c(t) = K - (K - c0) exp(-k S0 t / (K V))        (approach to equilibrium).

Units.  Any consistent set; the one documented here (and used by
``problems/reaction_kinetics.py``) is t in s, k in mol m^-2 s^-1, S0 in m^2, m in mol, V in L,
c in mol/L.  Q and K are dimensionless (activities relative to 1 mol/L, activity coefficients
gamma_j fixed, default 1).  The ODE is solved internally for the dimensionless amounts
``m/m0`` and ``c_j V / m0`` (so tolerances are relative to the mineral inventory), and
returned in physical units.

References:
  * Lasaga, A. C. (1998), Kinetic Theory in the Earth Sciences, Princeton University Press,
    ch. 1 (rate laws, affinity, surface area) and ch. 2.
  * Palandri, J. L. & Kharaka, Y. K. (2004), A compilation of rate parameters of water-mineral
    interaction kinetics for application to geochemical modeling, USGS Open-File Report
    2004-1068.
  * Parkhurst, D. L. & Appelo, C. A. J. (2013), PHREEQC version 3, USGS Techniques and
    Methods 6-A43 (RATES / KINETICS, the (m/m0)^n surface-area factor).
  * Levenspiel, O. (1999), Chemical Reaction Engineering, 3rd ed., Wiley, ch. 25
    (shrinking-particle model).
  * Omori et al. (2016): Bayesian estimation of heterogeneous reaction kinetics from fluid
    composition (as cited in jaxinv issue 4; the paper itself was not consulted here).
"""

from __future__ import annotations

from typing import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .ode import ODE

__all__ = [
    "GEOMETRY_EXPONENTS",
    "MineralReaction",
    "far_from_equilibrium_moles",
    "geometry_exponent",
    "reaction_rate",
    "saturation_ratio",
    "surface_area",
]

#: surface-area exponent n of S = S0 (m/m0)^n for each particle geometry
GEOMETRY_EXPONENTS: dict[str, float] = {"sphere": 2.0 / 3.0, "cylinder": 0.5, "plate": 0.0}


def geometry_exponent(geometry) -> float | None:
    """The exponent n of a geometry name (:data:`GEOMETRY_EXPONENTS`), a number n >= 0 as
    given, or ``None`` for ``"free"`` (n is then the parameter ``surface_exponent``)."""
    if isinstance(geometry, str):
        name = geometry.lower()
        if name == "free":
            return None
        if name in GEOMETRY_EXPONENTS:
            return GEOMETRY_EXPONENTS[name]
        raise ValueError(f"unknown geometry {geometry!r}; give one of {sorted(GEOMETRY_EXPONENTS) + ['free']} "
                         "or an exponent n >= 0")
    n = float(geometry)
    if not (np.isfinite(n) and n >= 0):
        raise ValueError(f"the surface-area exponent must be finite and >= 0, got {geometry!r}")
    return n


def surface_area(moles, initial_moles, initial_area, exponent):
    """Reactive surface area ``S = S0 (m/m0)^n`` for m > 0, 0 for m <= 0 (eq. 2 of the module
    docstring) [units of ``initial_area``, m^2].  Finite gradients everywhere (double where)."""
    x = jnp.asarray(moles) / initial_moles
    positive = x > 0
    safe = jnp.where(positive, x, 1.0)
    return jnp.where(positive, initial_area * safe ** exponent, 0.0)


def saturation_ratio(concentrations, stoichiometry, equilibrium_constant, activity_coefficients=1.0):
    """``Omega = Q / K`` with ``Q = prod_j (gamma_j c_j)^nu_j`` (c in mol/L, activities relative
    to 1 mol/L).  A product species (nu_j > 0) at zero concentration gives Omega = 0; a
    consumed species (nu_j < 0) at zero concentration, Omega = inf."""
    a = jnp.asarray(activity_coefficients) * jnp.asarray(concentrations)
    nu = jnp.asarray(stoichiometry, dtype=a.dtype)
    positive = a > 0
    safe = jnp.where(positive, a, 1.0)
    log_q = jnp.sum(jnp.where(nu != 0, nu * jnp.log(safe), 0.0), axis=-1)
    omega = jnp.exp(log_q - jnp.log(equilibrium_constant))
    no_product = jnp.any(~positive & (nu > 0), axis=-1)
    no_reactant = jnp.any(~positive & (nu < 0), axis=-1)
    omega = jnp.where(no_reactant, jnp.inf, omega)
    return jnp.where(no_product, 0.0, omega)


def reaction_rate(moles, concentrations, *, rate_constant, equilibrium_constant, exponent, initial_moles,
                  initial_area, stoichiometry, activity_coefficients=1.0):
    """``dm/dt = -k S(m) (1 - Q/K)`` [mol per unit of t] (eq. 1): negative while the mineral
    dissolves, positive while it grows."""
    s = surface_area(moles, initial_moles, initial_area, exponent)
    omega = saturation_ratio(concentrations, stoichiometry, equilibrium_constant, activity_coefficients)
    return -rate_constant * s * (1.0 - omega)


def far_from_equilibrium_moles(t, rate_constant, initial_area, initial_moles, exponent):
    """Closed form of ``dm/dt = -k S0 (m/m0)^n`` (Omega = 0): ``m0 exp(-k S0 t / m0)`` for n = 1,
    else ``[m0^(1-n) - (1-n) k S0 m0^(-n) t]^(1/(1-n))`` clipped at 0 (n < 1: the mineral is
    used up at ``t* = m0 / ((1-n) k S0)``) [mol]."""
    t = np.asarray(t, dtype=float)
    k, s0, m0, n = float(rate_constant), float(initial_area), float(initial_moles), float(exponent)
    if n == 1.0:
        return m0 * np.exp(-k * s0 * t / m0)
    base = m0 ** (1 - n) - (1 - n) * k * s0 * m0 ** (-n) * t
    return np.where(base > 0, np.abs(base) ** (1.0 / (1 - n)), 0.0)


# -- the ODE (module-level functions: static under jit, no recompilation per model) -----------
def _vector_field(t, state, args):
    """Dimensionless state: x = m/m0, y_j = c_j V / m0; d/dt of both (eqs. 1-3)."""
    m0, volume = args["initial_moles"], args["volume"]
    c = state["fluid"] * m0 / volume
    rate = reaction_rate(
        state["mineral"] * m0, c,
        rate_constant=args["rate_constant"], equilibrium_constant=args["equilibrium_constant"],
        exponent=args["exponent"], initial_moles=m0, initial_area=args["initial_area"],
        stoichiometry=args["stoichiometry"], activity_coefficients=args["activity_coefficients"],
    )  # dm/dt, mol per unit of t
    dx = rate / m0
    return {"mineral": dx, "fluid": -args["stoichiometry"] * dx}


def _initial_state(args):
    m0 = args["initial_moles"]
    return {"mineral": jnp.ones_like(m0), "fluid": args["initial_concentrations"] * args["volume"] / m0}


def _observe(states, args):
    return states


def _positive(value, name: str, allow_zero: bool = False) -> jax.Array:
    a = jnp.asarray(value, dtype=jnp.result_type(float))
    ok = np.all(np.isfinite(np.asarray(a))) and (np.all(np.asarray(a) >= 0) if allow_zero else np.all(np.asarray(a) > 0))
    if not ok:
        raise ValueError(f"{name} must be finite and {'>= 0' if allow_zero else '> 0'}, got {np.asarray(value)}")
    return a


class MineralReaction(eqx.Module):
    """A mineral reacting with a closed fluid (batch reactor): ``params -> concentrations``.

    Solves eqs. (1)-(3) of the module docstring with :class:`jaxinv.physics.ode.ODE` (Diffrax)
    and returns the concentrations [mol/L] of the ``observed`` species at ``times``: shape
    ``(len(times),)`` for one observed species (an int), ``(len(times), len(observed))`` for a
    sequence.

    Parameters (the ``params`` dict): ``rate_constant`` k [mol m^-2 per unit of t, >= 0],
    ``equilibrium_constant`` K [-, > 0], and ``surface_exponent`` n [-, >= 0] when
    ``geometry="free"``.  A negative k, non-positive K or negative n gives a NaN prediction
    (zero probability for the engines; a ``ValueError`` when the values are concrete), as does
    a failed solve.

    Args:
        times: sampling times (1-D, non-decreasing, >= ``t0``; unit of t, e.g. s).
        stoichiometry: nu_j of ``mineral -> sum_j nu_j X_j`` for each aqueous species (number
            or 1-D sequence; not all zero).
        initial_moles: m0, mineral at t0 [mol], > 0.
        initial_area: S0, reactive surface area at m0 [m^2], > 0.
        volume: fluid volume V [L], > 0.
        initial_concentrations: c_j(t0) [mol/L], >= 0 (default 0).
        activity_coefficients: gamma_j [-], > 0 (default 1: ideal solution).
        geometry: ``"sphere"`` (n = 2/3), ``"cylinder"`` (1/2), ``"plate"`` (0), a number
            n >= 0, or ``"free"`` (n from ``params["surface_exponent"]``).
        observed: index (int) or indices of the species returned [default 0].
        t0: start of the experiment [default 0].
        solver: Diffrax solver or name (``"tsit5"`` default; ``"kvaerno5"`` for stiff
            systems, e.g. fast reactions near equilibrium: k S0 / (K V) large against
            1 / (time span)).
        adjoint: gradient method, as :class:`~jaxinv.physics.ode.ODE` [``"checkpoint"``].
        rtol: relative tolerance (of the dimensionless amounts m/m0 and c V/m0).
        atol: absolute tolerance (same dimensionless amounts).
        max_steps: step budget of one solve; a solve that needs more gives NaN.
    """

    ode: ODE
    stoichiometry: jax.Array
    initial_moles: jax.Array
    initial_area: jax.Array
    volume: jax.Array
    initial_concentrations: jax.Array
    activity_coefficients: jax.Array
    exponent: jax.Array | None
    observed: tuple[int, ...] | int = eqx.field(static=True)

    def __init__(
        self,
        times,
        *,
        stoichiometry=1.0,
        initial_moles,
        initial_area,
        volume=1.0,
        initial_concentrations=0.0,
        activity_coefficients=1.0,
        geometry="sphere",
        observed: int | Sequence[int] = 0,
        t0=0.0,
        solver="tsit5",
        adjoint="checkpoint",
        rtol: float | None = None,
        atol: float | None = None,
        max_steps: int = 16384,
    ):
        nu = jnp.atleast_1d(jnp.asarray(stoichiometry, dtype=jnp.result_type(float)))
        if nu.ndim != 1 or not np.all(np.isfinite(np.asarray(nu))) or not np.any(np.asarray(nu) != 0):
            raise ValueError(f"stoichiometry must be a 1-D sequence of finite numbers, not all zero, got {stoichiometry!r}")
        n_species = nu.size
        self.stoichiometry = nu
        self.initial_moles = _positive(initial_moles, "initial_moles (m0)")
        self.initial_area = _positive(initial_area, "initial_area (S0)")
        self.volume = _positive(volume, "volume (V)")
        for name, value in (("initial_moles", self.initial_moles), ("initial_area", self.initial_area),
                            ("volume", self.volume)):
            if value.ndim != 0:
                raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
        c0 = jnp.broadcast_to(_positive(initial_concentrations, "initial_concentrations (c0)", allow_zero=True),
                              (n_species,)) if np.ndim(initial_concentrations) == 0 else \
            _positive(initial_concentrations, "initial_concentrations (c0)", allow_zero=True)
        gamma = jnp.broadcast_to(_positive(activity_coefficients, "activity_coefficients"), (n_species,)) \
            if np.ndim(activity_coefficients) == 0 else _positive(activity_coefficients, "activity_coefficients")
        for name, value in (("initial_concentrations", c0), ("activity_coefficients", gamma)):
            if value.shape != (n_species,):
                raise ValueError(f"{name} has shape {value.shape}; expected ({n_species},), one per species")
        self.initial_concentrations = c0
        self.activity_coefficients = gamma
        n = geometry_exponent(geometry)
        self.exponent = None if n is None else jnp.asarray(n, dtype=jnp.result_type(float))
        indices = [observed] if isinstance(observed, (int, np.integer)) else list(observed)
        if not indices or any(not isinstance(i, (int, np.integer)) or not 0 <= i < n_species for i in indices):
            raise ValueError(f"observed must be species indices in 0..{n_species - 1}, got {observed!r}")
        self.observed = int(observed) if isinstance(observed, (int, np.integer)) else tuple(int(i) for i in indices)
        t = jnp.asarray(times, dtype=jnp.result_type(float))
        if t.ndim == 1 and t.size and bool(jnp.any(t < t0)):
            raise ValueError(f"sampling times must be >= t0 = {t0} (the start of the experiment)")
        self.ode = ODE(_vector_field, _initial_state, times, _observe, t0=t0, solver=solver, adjoint=adjoint,
                       rtol=rtol, atol=atol, max_steps=max_steps)

    @property
    def times(self) -> jax.Array:
        return self.ode.times

    @property
    def geometry(self) -> str:
        """Name of the surface-area law (``"free"`` when n is a parameter)."""
        if self.exponent is None:
            return "free"
        for name, n in GEOMETRY_EXPONENTS.items():
            if float(self.exponent) == n:
                return name
        return f"n={float(self.exponent):g}"

    def at(self, times) -> "MineralReaction":
        """The same reactor sampled at other times (for smooth curves)."""
        t = jnp.asarray(times, dtype=self.ode.times.dtype)
        return eqx.tree_at(lambda m: m.ode, self, ODE(
            _vector_field, _initial_state, t, _observe, t0=self.ode.t0, solver=self.ode.solver,
            adjoint=self.ode.adjoint, rtol=self.ode.stepsize_controller.rtol,
            atol=self.ode.stepsize_controller.atol, max_steps=self.ode.max_steps))

    def _args(self, params) -> tuple[dict, jax.Array]:
        k = jnp.asarray(params["rate_constant"], dtype=self.volume.dtype)
        big_k = jnp.asarray(params["equilibrium_constant"], dtype=self.volume.dtype)
        if self.exponent is None:
            if "surface_exponent" not in params:
                raise KeyError("geometry='free' needs params['surface_exponent'] (the exponent n of S0 (m/m0)^n)")
            n = jnp.asarray(params["surface_exponent"], dtype=self.volume.dtype)
        else:
            n = self.exponent
        for name, value, bad in (("rate_constant", k, lambda v: v < 0), ("equilibrium_constant", big_k, lambda v: v <= 0),
                                 ("surface_exponent", n, lambda v: v < 0)):
            if value.shape != ():
                raise ValueError(f"{name} must be a scalar, got shape {value.shape}")
            try:  # concrete values are checked here; traced ones give NaN below
                invalid = bool(bad(value)) or not bool(jnp.isfinite(value))
            except jax.errors.ConcretizationTypeError:
                invalid = False
            if invalid:
                raise ValueError(f"{name} = {float(value)} is invalid: need k >= 0, K > 0, n >= 0 (all finite)")
        valid = (k >= 0) & (big_k > 0) & (n >= 0)
        args = {
            "rate_constant": jnp.where(valid, k, 0.0),
            "equilibrium_constant": jnp.where(valid, big_k, 1.0),
            "exponent": jnp.where(valid, n, 0.0),
            "initial_moles": self.initial_moles,
            "initial_area": self.initial_area,
            "volume": self.volume,
            "stoichiometry": self.stoichiometry,
            "initial_concentrations": self.initial_concentrations,
            "activity_coefficients": self.activity_coefficients,
        }
        return args, valid

    def states(self, params) -> dict[str, jax.Array]:
        """``{"mineral": m(t) [mol], "concentrations": c(t) [mol/L] (times, species)}``; NaN where
        the solve failed or the parameters are invalid."""
        args, valid = self._args(params)
        raw = self.ode(args)
        m0 = self.initial_moles
        out = {"mineral": raw["mineral"] * m0, "concentrations": raw["fluid"] * m0 / self.volume}
        return jax.tree_util.tree_map(lambda a: jnp.where(valid, a, jnp.nan), out)

    def __call__(self, params) -> jax.Array:
        """Concentrations [mol/L] of the observed species at ``times``."""
        c = self.states(params)["concentrations"]
        return c[:, self.observed] if isinstance(self.observed, int) else c[:, list(self.observed)]
