"""EPMA characteristic X-ray intensities for quantitative mapping: phase mixing, probe
current and its drift, detector dead time, Poisson counts.

Forward model for one pixel (or spot) and one element ``e`` measured on its own
wavelength-dispersive spectrometer (WDS):

    I_e    = sum_p w_p beta_pe C_pe + b_e                  b: (E,), one background per element  (1a)
    I_e    = sum_p w_p (beta_pe C_pe + b_pe)               b: (P, E), one per phase and element  (1b)
    R_e    = i_probe g(t) I_e                              true count rate at the detector  [cps] (2)
    R'_e   = R_e / (1 + tau_e R_e)                         observed (dead-time-limited) rate [cps] (3)
    lambda = t_dwell R'_e,         N_e ~ Poisson(lambda)   expected and observed counts  [counts] (4)

    w_p      mass fraction of phase p in the analysed volume                         [-]
    C_pe     concentration of element (or oxide) e in phase p, mass fraction         [-]
    beta_pe  intensity per unit concentration in phase p; absorbs the phase's matrix
             (ZAF) correction and the spectrometer efficiency       [cps/nA per mass fraction]
    b_e      background (continuum) intensity under the peak                         [cps/nA]
    i_probe  nominal probe current                                                    [nA]
    g(t)     beam-current drift: relative probe current at acquisition time t         [-]
    tau_e    dead time of the counting chain (non-paralysable)                        [s]
    t_dwell  counting (dwell) time                                                    [s]

The unit of ``beta``/``background`` is "per unit of ``probe_current``": with the default
``probe_current=1`` they are plain count rates [cps] at the current used for the map
(``lambda = t_dwell * I`` when there is no drift and no dead time).  Any concentration unit
works (wt% instead of mass fraction) as long as ``beta`` is per that unit.

Beam-current drift (2) is a low-order polynomial of the acquisition time, equal to one at
the reference time ``t_ref``:

    g(t) = 1 + sum_{k=1}^{K} c_k ((t - t_ref) / t_scale)^k                                (5)

(c_1 = relative change of the current per ``t_scale`` seconds; K = 1 is linear drift, the
usual case of a slowly decaying filament emission.)  It multiplies the rate of every
element (one beam for all spectrometers); coefficients of shape (K, E) give each element
its own factor (e.g. a spectrometer that drifts), shape (K,) one shared factor.

Dead time (3) is the non-paralysable counter model: a count occupies the chain for tau
seconds, so the observed rate is ``R / (1 + tau R)`` and the true rate is recovered by
``R'/(1 - tau R')`` (Knoll 2010, "Radiation Detection and Measurement", 4th ed., sec. 4.VII;
Reed 1993, "Electron Microprobe Analysis", 2nd ed., ch. 9).  This is the correction qntmap
applies to map counts (``read_xmap(DT = ...)``, dead time in ns, default 1100 ns in
``qntmap()``): ``N / (1 - tau N / t_dwell)``.  With dead time, counts are in fact
under-dispersed relative to Poisson; the Poisson law with the dead-time-corrected mean (4)
is the standard approximation while ``tau R`` is small (it is ~1e-2 or less at the
1e4 cps of a major element, tau ~ 1 us).

Relation to Yasumoto et al. (2018) and qntmap.  The paper (American Mineralogist 103,
1690-1698, doi:10.2138/am-2018-6323) could not be read here (only its abstract); the
equations below are taken from the qntmap R package source (github.com/atusy/qntmap,
v1.0.x: ``R/find-AG.R``, ``R/find-B.R``, ``R/find-AB.R``, ``R/find-XAG.R``,
``R/quantify.R``, ``R/read-xmap-.R``).  qntmap works in the *inverse* direction, from
intensities to concentrations:

    spot calibration, per element e (and phase p), least squares through the origin:
        C_spot = alpha_pe * I_net,spot       I_net: net (peak - background) spot intensity [cps/uA]
        gamma_pe = mean background intensity of the spots on phase p               [cps/uA]
        I_peak,spot = beta_e * N_map         N_map: raw (dead-time-corrected) counts of the
                                             mapped pixel under the spot; weighted by the
                                             pixel's membership (> 0.9, matching phase only)
    quantification of a pixel with phase memberships X_p (probabilities, sum to one):
        C_e = sum_p X_p alpha_pe (beta_e N_map,e - gamma_pe)                              (6)

i.e. for a single-phase pixel ``N_map = (C / alpha_pe + gamma_pe) / beta_e``: counts
linear in the concentration with a phase-dependent slope ``1/(alpha_pe beta_e)`` and a
phase-dependent background ``gamma_pe/beta_e``.  In this module's terms (no drift, no dead
time) ``t_dwell * beta_pe = 1/(alpha_pe beta_e)`` and, with the (P, E) background of (1b),
``t_dwell * b_pe = gamma_pe / beta_e``; the per-element background (1a) is the
simpler case the issue asks for.  Departures, and why:

* Mixing.  qntmap mixes *concentrations* inverted with every phase's calibration, weighted
  by membership probabilities (6).  Here the *intensity* of a mixed pixel is the
  mass-weighted sum of the phases' intensities (1), which is the forward physics of a beam
  straddling a grain boundary to first order (ignoring the matrix interaction between
  phases) and lets the posterior separate "uncertain which phase" from "several phases in
  the beam".  For a single-phase pixel (one w_p = 1) both agree exactly.
* Phase fractions are mass fractions and are not forced to sum to one (a pixel on a pore
  or epoxy has sum w_p < 1); priors decide.
* Dead time, probe current and drift are part of the forward model rather than
  corrections applied to the data, so that the counts keep their Poisson law; qntmap
  corrects the counts for dead time and rounds them.  Drift (5) is not modelled by qntmap
  (its ``maps_x``/``maps_y`` option fits ``beta`` separately on blocks of the map instead);
  the polynomial form is this module's choice.

Everything is a pure function of arrays (jit, vmap and grad work); :class:`XrayMap` bundles
them as an Equinox forward model ``params -> expected counts`` for :class:`jaxinv.Model`,
to be used with :class:`jaxinv.likelihoods.Poisson` (:func:`poisson_log_prob` is the same
log-probability as a plain function).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

__all__ = [
    "XrayMap",
    "beam_drift",
    "correct_counts",
    "dead_time_correction",
    "dead_time_loss",
    "expected_counts",
    "mixed_intensity",
    "pixel_times",
    "poisson_log_prob",
]


# -- validation ------------------------------------------------------------------------
def _concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array when its values are known (not traced), else ``None``."""
    if isinstance(x, jax.core.Tracer):
        return None
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError, jax.errors.ConcretizationTypeError):
        return None


def _checked(value, name: str, *, positive: bool = False, unit: str = "") -> jax.Array:
    """``value`` as a float array; ``ValueError`` when concrete and negative (or <= 0 when
    ``positive``) or not finite.  Traced values pass unchecked."""
    a = jnp.asarray(value, dtype=jnp.result_type(float))
    v = _concrete(value)
    if v is not None:
        if not np.all(np.isfinite(v)):
            raise ValueError(f"{name} must be finite, got {v if v.size < 8 else 'non-finite values'}")
        bad = v <= 0 if positive else v < 0
        if np.any(bad):
            need = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be {need}{' ' + unit if unit else ''}, got min {float(v.min())}")
    return a


def _float(x) -> jax.Array:
    return jnp.asarray(x, dtype=jnp.result_type(float))


# -- pure functions --------------------------------------------------------------------
def mixed_intensity(phase_fraction, beta, concentration, background=0.0) -> jax.Array:
    """Intensity of a pixel holding several phases, eq. (1) of the module docstring.

    Args:
        phase_fraction: ``w``, mass fraction of each phase, shape ``(..., P)`` [-].
        beta: intensity per unit concentration, shape ``(P, E)`` or ``(..., P, E)``
            [cps/nA per mass fraction, or cps per mass fraction at the map's current].
        concentration: ``C``, shape ``(P, E)`` or ``(..., P, E)`` [mass fraction].
        background: shape ``()``/``(E,)`` (added once, eq. 1a) or ``(P, E)`` /
            ``(..., P, E)`` (per phase, mixed with the phase fractions, eq. 1b), in the
            unit of ``beta`` times concentration.

    Returns:
        ``I``, shape ``(..., E)``: linear in ``phase_fraction`` (and in ``concentration``).
    """
    w = _float(phase_fraction)
    beta, conc, bg = _float(beta), _float(concentration), _float(background)
    if w.ndim < 1:
        raise ValueError(f"phase_fraction must have a trailing phase axis (..., P), got shape {w.shape}")
    n_phases = w.shape[-1]
    for name, a in (("beta", beta), ("concentration", conc)):
        if a.ndim < 2 or a.shape[-2] != n_phases:
            raise ValueError(
                f"{name} has shape {a.shape}; expected (..., {n_phases}, E): one row per phase of "
                f"phase_fraction (shape {w.shape})"
            )
    if beta.shape[-1] != conc.shape[-1]:
        raise ValueError(
            f"beta has {beta.shape[-1]} elements (shape {beta.shape}) but concentration has "
            f"{conc.shape[-1]} (shape {conc.shape})"
        )
    n_elem = beta.shape[-1]
    try:
        per_phase = beta * conc  # (..., P, E)
    except (ValueError, TypeError):
        raise ValueError(f"beta {beta.shape} and concentration {conc.shape} do not broadcast") from None
    if bg.ndim >= 2:
        if bg.shape[-2:] != (n_phases, n_elem):
            raise ValueError(
                f"a per-phase background must have shape (..., {n_phases}, {n_elem}) (phases, elements), "
                f"got {bg.shape}"
            )
        per_phase = per_phase + bg
        bg = jnp.zeros((), dtype=per_phase.dtype)
    elif bg.ndim == 1 and bg.shape[0] != n_elem:
        raise ValueError(
            f"background has shape {bg.shape}; expected ({n_elem},), one per element, or ({n_phases}, {n_elem})"
        )
    try:
        jnp.broadcast_shapes(w.shape[:-1], per_phase.shape[:-2])
    except ValueError:
        raise ValueError(
            f"pixel (batch) shapes do not broadcast: phase_fraction {w.shape}, beta {beta.shape}, "
            f"concentration {conc.shape}"
        ) from None
    mixed = jnp.einsum("...p,...pe->...e", w, per_phase)
    return mixed + bg


def dead_time_loss(rate, dead_time) -> jax.Array:
    """Observed count rate of a non-paralysable counter, eq. (3): ``R / (1 + tau R)``.

    Args:
        rate: true rate ``R`` [cps] (any shape).
        dead_time: ``tau`` [s], >= 0, broadcast against ``rate`` (e.g. ``(E,)`` per element).
    """
    tau = _checked(dead_time, "dead_time", unit="s")
    rate = _float(rate)
    return rate / (1.0 + tau * rate)


def dead_time_correction(observed_rate, dead_time) -> jax.Array:
    """True count rate from an observed one, the inverse of :func:`dead_time_loss`:
    ``R = R' / (1 - tau R')``.  Where ``tau R' >= 1`` (an observed rate no non-paralysable
    counter can reach) the result is ``inf``.

    Args:
        observed_rate: ``R'`` [cps].
        dead_time: ``tau`` [s], >= 0.
    """
    tau = _checked(dead_time, "dead_time", unit="s")
    r = _float(observed_rate)
    denom = 1.0 - tau * r
    ok = denom > 0
    return jnp.where(ok, r / jnp.where(ok, denom, 1.0), jnp.inf)


def correct_counts(counts, dwell_time, dead_time) -> jax.Array:
    """Dead-time-corrected counts ``N / (1 - tau N / t_dwell)`` (qntmap's
    ``correct_deadtime``, without its rounding).

    Args:
        counts: observed counts ``N`` in ``dwell_time``.
        dwell_time: ``t_dwell`` [s], > 0.
        dead_time: ``tau`` [s], >= 0.
    """
    t = _checked(dwell_time, "dwell_time", positive=True, unit="s")
    return t * dead_time_correction(_float(counts) / t, dead_time)


def beam_drift(time, coefficients, t_ref=0.0, t_scale=1.0) -> jax.Array:
    """Relative probe current ``g(t) = 1 + sum_k c_k ((t - t_ref)/t_scale)^k``, eq. (5).

    Args:
        time: acquisition times ``t`` [s], shape ``(...)``.
        coefficients: ``c_1..c_K``, shape ``(K,)`` (one factor for all elements) or
            ``(K, E)`` (one per element); ``K = 0`` means no drift.
        t_ref: time where ``g = 1`` [s] (e.g. the start of the map, or the time the
            current was measured).
        t_scale: time unit of the polynomial [s], > 0 (e.g. the map's duration, so that
            ``c_1`` is the relative change over the whole map).

    Returns:
        ``g``, shape ``(...)`` for ``(K,)`` coefficients, ``(..., E)`` for ``(K, E)``.
    """
    c = _float(coefficients)
    if c.ndim not in (1, 2):
        raise ValueError(f"drift coefficients must have shape (K,) or (K, E), got {c.shape}")
    t_scale = _checked(t_scale, "t_scale", positive=True, unit="s")
    s = (_float(time) - _float(t_ref)) / t_scale
    powers = s[..., None] ** jnp.arange(1, c.shape[0] + 1, dtype=s.dtype)  # (..., K)
    return 1.0 + jnp.tensordot(powers, c, axes=([-1], [0]))


def expected_counts(intensity, dwell_time, *, dead_time=0.0, probe_current=1.0, drift=1.0) -> jax.Array:
    """Expected counts, eqs. (2)-(4): ``t_dwell * D(i_probe * g * I)`` with ``D`` the
    dead-time loss.

    Args:
        intensity: ``I``, shape ``(..., E)`` [cps per unit probe current].
        dwell_time: ``t_dwell`` [s], > 0; scalar, ``(...)`` per pixel (broadcast over the
            element axis) or ``(..., E)``.
        dead_time: ``tau`` [s], >= 0; scalar or ``(E,)``.
        probe_current: ``i_probe`` [nA, or 1 when ``I`` is already at the map's current], > 0.
        drift: ``g``, the relative current (:func:`beam_drift`); scalar, ``(...)`` per pixel
            or ``(..., E)``.

    Returns:
        ``lambda`` [counts], shape ``(..., E)``.
    """
    intensity = _float(intensity)
    t = _checked(dwell_time, "dwell_time", positive=True, unit="s")
    current = _checked(probe_current, "probe_current", positive=True)
    g = _float(drift)
    t = _to_elements(t, intensity, "dwell_time")
    g = _to_elements(g, intensity, "drift")
    return t * dead_time_loss(current * g * intensity, dead_time)


def _to_elements(a: jax.Array, intensity: jax.Array, name: str) -> jax.Array:
    """A per-pixel array ``(...)`` gets a trailing element axis; one broadcastable to the
    intensities ``(..., E)`` passes; anything else is a ``ValueError``."""
    if a.ndim == 0:
        return a
    pixels = intensity.shape[:-1]
    if a.ndim == intensity.ndim - 1 and _broadcasts_to(a.shape, pixels):
        return a[..., None]
    if _broadcasts_to(a.shape, intensity.shape):
        return a
    raise ValueError(f"{name} has shape {a.shape}, which matches neither the pixels {pixels} "
                     f"nor the intensities {intensity.shape}")


def _broadcasts_to(shape, target) -> bool:
    try:
        return tuple(jnp.broadcast_shapes(tuple(shape), tuple(target))) == tuple(target)
    except ValueError:
        return False


def poisson_log_prob(counts, expected) -> jax.Array:
    """Pointwise Poisson log-probability ``N log lambda - lambda - log N!`` (0 log 0 = 0);
    the same as :class:`jaxinv.likelihoods.Poisson`."""
    n, lam = _float(counts), _float(expected)
    return jsp.xlogy(n, lam) - lam - jsp.gammaln(n + 1.0)


def pixel_times(n_rows: int, n_cols: int, dwell_time, *, overhead=0.0, start=0.0, row_major: bool = True) -> jax.Array:
    """Acquisition time of every pixel of a stage-scanned map [s], shape ``(n_rows, n_cols)``:
    pixels are visited along a row (``row_major``) or a column first, each taking
    ``dwell_time + overhead`` seconds (``overhead``: stage move and settling per pixel).
    The time of a pixel is the middle of its dwell."""
    if int(n_rows) < 1 or int(n_cols) < 1:
        raise ValueError(f"a map needs n_rows, n_cols >= 1, got {n_rows} x {n_cols}")
    t = _checked(dwell_time, "dwell_time", positive=True, unit="s")
    overhead = _checked(overhead, "overhead", unit="s")
    if t.ndim != 0 or overhead.ndim != 0:
        raise ValueError("dwell_time and overhead of pixel_times must be scalars")
    index = jnp.arange(n_rows * n_cols, dtype=t.dtype)
    index = index.reshape(n_rows, n_cols) if row_major else index.reshape(n_cols, n_rows).T
    return _float(start) + index * (t + overhead) + 0.5 * t


# -- forward model ---------------------------------------------------------------------
class XrayMap(eqx.Module):
    """Expected X-ray counts of mapped pixels (or spots): ``params -> lambda``, shape
    ``(..., E)``, eqs. (1)-(5) of the module docstring.

    Parameters (the ``params`` dict):
        ``phase_fraction``  (..., P) mass fraction of each phase in each pixel [-]
        ``concentration``   (..., P, E) or (P, E) concentration of each element in each
                            phase [mass fraction]
        ``beta``            (P, E) intensity per unit concentration [cps/(probe-current unit)]
        ``background``      (E,) or (P, E) background intensity (absent: zero)
        ``drift``           (K,) or (K, E) drift coefficients c_1..c_K of eq. (5) (only
                            when ``drift_order > 0``)

    Args:
        dwell_time: [s], > 0; scalar or one per pixel ``(...)``.
        n_phases: P (shapes are checked against it).
        n_elements: E (shapes are checked against it).
        dead_time: [s], >= 0; scalar or ``(E,)``.
        probe_current: [nA] (``beta`` per nA), or 1 (default) when ``beta`` is at the map's current.
        time: acquisition time of every pixel [s], shape ``(...)``; needed when
            ``drift_order > 0`` (see :func:`pixel_times`).
        drift_order: K, the degree of the drift polynomial (0: no drift).
        t_ref: reference time of the drift polynomial [s]; by default the first
            acquisition time.
        t_scale: time unit of the drift polynomial [s]; by default the span of ``time``.
    """

    dwell_time: jax.Array
    dead_time: jax.Array
    probe_current: jax.Array
    time: jax.Array | None
    t_ref: jax.Array
    t_scale: jax.Array
    n_phases: int = eqx.field(static=True)
    n_elements: int = eqx.field(static=True)
    drift_order: int = eqx.field(static=True)

    def __init__(self, dwell_time, n_phases: int, n_elements: int, *, dead_time=0.0, probe_current=1.0,
                 time=None, drift_order: int = 0, t_ref=None, t_scale=None):
        if int(n_phases) < 1 or int(n_elements) < 1:
            raise ValueError(f"n_phases and n_elements must be >= 1, got {n_phases} and {n_elements}")
        if int(drift_order) < 0:
            raise ValueError(f"drift_order must be >= 0, got {drift_order}")
        self.n_phases, self.n_elements, self.drift_order = int(n_phases), int(n_elements), int(drift_order)
        self.dwell_time = _checked(dwell_time, "dwell_time", positive=True, unit="s")
        self.dead_time = _checked(dead_time, "dead_time", unit="s")
        if self.dead_time.ndim > 1 or (self.dead_time.ndim == 1 and self.dead_time.shape[0] != self.n_elements):
            raise ValueError(f"dead_time must be a scalar or have shape ({self.n_elements},), got {self.dead_time.shape}")
        self.probe_current = _checked(probe_current, "probe_current", positive=True)
        if self.drift_order > 0 and time is None:
            raise ValueError("drift_order > 0 needs the acquisition time of every pixel (time=...)")
        self.time = None if time is None else _float(time)
        if self.time is not None:
            if not np.all(np.isfinite(np.asarray(self.time))):
                raise ValueError("acquisition times must be finite")
            if self.dwell_time.ndim > 0 and self.dwell_time.shape != self.time.shape:
                raise ValueError(f"dwell_time has shape {self.dwell_time.shape} but time has shape {self.time.shape}")
        if t_ref is None:
            t_ref = 0.0 if self.time is None else float(jnp.min(self.time))
        if t_scale is None:
            span = 0.0 if self.time is None else float(jnp.max(self.time) - jnp.min(self.time))
            t_scale = span if span > 0 else 1.0
        self.t_ref = _float(t_ref)
        self.t_scale = _checked(t_scale, "t_scale", positive=True, unit="s")

    def drift(self, params) -> jax.Array:
        """Relative probe current ``g`` per pixel, ``(...)`` or ``(..., E)`` (1.0 without drift)."""
        if self.drift_order == 0:
            return jnp.ones(())
        c = _float(params["drift"])
        if c.shape not in ((self.drift_order,), (self.drift_order, self.n_elements)):
            raise ValueError(f"drift has shape {c.shape}; expected ({self.drift_order},) or "
                             f"({self.drift_order}, {self.n_elements})")
        return beam_drift(self.time, c, self.t_ref, self.t_scale)

    def intensity(self, params) -> jax.Array:
        """``I`` of eq. (1), shape ``(..., E)`` [cps per unit probe current]."""
        w = _float(params["phase_fraction"])
        beta = _float(params["beta"])
        if w.ndim < 1 or w.shape[-1] != self.n_phases:
            raise ValueError(f"phase_fraction has shape {w.shape}; expected (..., {self.n_phases})")
        if beta.shape[-2:] != (self.n_phases, self.n_elements):
            raise ValueError(f"beta has shape {beta.shape}; expected ({self.n_phases}, {self.n_elements})")
        return mixed_intensity(w, beta, params["concentration"], params.get("background", 0.0))

    def __call__(self, params) -> jax.Array:
        intensity = self.intensity(params)
        return expected_counts(intensity, self.dwell_time, dead_time=self.dead_time,
                               probe_current=self.probe_current, drift=self.drift(params))
