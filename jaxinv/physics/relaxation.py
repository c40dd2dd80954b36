"""Relaxation curves: sums of exponentials, stretched exponentials, NMR T1 recovery.

Each model is an Equinox module holding the sampling times; calling it with a
dict of parameters returns the predicted signal at those times.  Times and time
constants share one unit (whatever ``t`` is in, e.g. seconds); amplitudes,
offsets and magnetisations are in the units of the data.

References:
  * Vold, Waugh, Klein & Phelps (1968), J. Chem. Phys. 48, 3831 -- inversion
    recovery ``M(tau) = M0 (1 - 2 exp(-tau/T1))``.
  * Johnston (2006), Phys. Rev. B 74, 184430 -- stretched exponential
    ``exp(-(t/T)^beta)``, 0 < beta <= 1, as a distribution of relaxation rates.
  * Ueda et al. (2023), J. Phys. Soc. Jpn. 92, 054002 -- Bayesian T1 analysis
    with K-component and stretched recovery models selected by free energy.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = ["MultiExponential", "StretchedExponential", "SaturationRecovery", "InversionRecovery"]


def _times(t) -> jax.Array:
    t = jnp.asarray(t, dtype=jnp.result_type(float))
    if t.ndim != 1:
        raise ValueError(f"times must be a 1-D array, got shape {t.shape}")
    return t


def _decay(t, time_constant, stretch=None):
    """``exp(-(t/T)^beta)`` for every time (rows) and component (columns)."""
    x = t[:, None] / jnp.atleast_1d(time_constant)[None, :]
    if stretch is not None:
        # (t/T)^beta with finite gradients at t = 0 (double-where)
        positive = x > 0
        safe = jnp.where(positive, x, 1.0)
        x = jnp.where(positive, safe ** jnp.atleast_1d(stretch)[None, :], 0.0)
    return jnp.exp(-x)


class MultiExponential(eqx.Module):
    """Sum of K exponential decays on a constant offset.

    ``y(t) = sum_k amplitude_k exp(-t / time_constant_k) + offset``

    Parameters (dict keys): ``amplitude`` (K,), ``time_constant`` (K,, units of
    t, > 0), ``offset`` (scalar).
    """

    t: jax.Array
    n_components: int = eqx.field(static=True)

    def __init__(self, t, n_components: int = 1):
        if n_components < 1:
            raise ValueError("n_components must be >= 1")
        self.t = _times(t)
        self.n_components = int(n_components)

    def __call__(self, params):
        amplitude = jnp.atleast_1d(params["amplitude"])
        if amplitude.shape != (self.n_components,):
            raise ValueError(f"amplitude has shape {amplitude.shape}, expected ({self.n_components},)")
        decay = _decay(self.t, params["time_constant"])
        if decay.shape[1] != self.n_components:
            raise ValueError(f"time_constant has {decay.shape[1]} components, expected {self.n_components}")
        return decay @ amplitude + params["offset"]


class StretchedExponential(eqx.Module):
    """Kohlrausch stretched exponential on an offset (Johnston 2006).

    ``y(t) = amplitude exp(-(t / time_constant)^stretch) + offset``, stretch in (0, 1].

    Parameters: ``amplitude``, ``time_constant`` (> 0, units of t), ``stretch``, ``offset``.
    """

    t: jax.Array

    def __init__(self, t):
        self.t = _times(t)

    def __call__(self, params):
        decay = _decay(self.t, params["time_constant"], params["stretch"])[:, 0]
        return params["amplitude"] * decay + params["offset"]


class _Recovery(eqx.Module):
    t: jax.Array
    n_components: int = eqx.field(static=True)
    stretched: bool = eqx.field(static=True)

    def __init__(self, t, n_components: int = 1, stretched: bool = False):
        if n_components < 1:
            raise ValueError("n_components must be >= 1")
        self.t = _times(t)
        self.n_components = int(n_components)
        self.stretched = bool(stretched)

    def _remaining(self, params):
        """``sum_k w_k exp(-(t/T1_k)^beta)``: the fraction not yet recovered."""
        decay = _decay(self.t, params["relaxation_time"], params["stretch"] if self.stretched else None)
        if self.n_components == 1:
            return decay[:, 0]
        return decay @ params["weight"]


class SaturationRecovery(_Recovery):
    """NMR saturation recovery with K components (Ueda et al. 2023).

    ``M(t) = M_eq [1 - sum_k w_k exp(-(t / T1_k)^beta)]``

    Parameters: ``equilibrium_magnetization`` M_eq (data units),
    ``relaxation_time`` T1 (K,, units of t), ``weight`` w (K,, on the simplex;
    only when K > 1), ``stretch`` beta in (0, 1] (only when ``stretched=True``).
    """

    def __call__(self, params):
        return params["equilibrium_magnetization"] * (1.0 - self._remaining(params))


class InversionRecovery(_Recovery):
    """NMR inversion recovery with K components (Vold et al. 1968; Ueda et al. 2023).

    ``M(t) = M_eq [1 - 2 f sum_k w_k exp(-(t / T1_k)^beta)]``

    ``f`` is the inversion efficiency (1 for a perfect pi pulse, so
    ``M(0) = -M_eq``); equivalently ``M(t) = M_inf - (M_inf - M_0) exp(...)``
    with ``M_inf = M_eq`` and ``M_0 = M_eq (1 - 2 f)``.

    Parameters: ``equilibrium_magnetization``, ``inversion_efficiency`` f,
    ``relaxation_time`` (K,), ``weight`` (K,, K > 1 only), ``stretch`` (stretched only).
    """

    def __call__(self, params):
        f = params["inversion_efficiency"]
        return params["equilibrium_magnetization"] * (1.0 - 2.0 * f * self._remaining(params))
