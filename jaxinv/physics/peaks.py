"""Spectral line shapes: sums of Gaussian, Lorentzian and pseudo-Voigt peaks, backgrounds.

Each model is an Equinox module holding the spectral grid ``x`` (energy, wavenumber,
2-theta, chemical shift, ... -- any one unit); calling it with a dict of parameters
returns the predicted intensity at every grid point.  Positions and widths are in the
units of ``x``, amplitudes and areas in the units of the data (areas: data units times
x units).  ``amplitude`` always means the peak *height* (the value at the maximum).

Line shapes (for one peak at ``x = mu``; ``d = x - mu``):

    Gaussian (Nagata et al. 2012)   a exp(-b d^2 / 2)          b: precision [1/x^2]
        FWHM = 2 sqrt(2 ln 2 / b),  area = a sqrt(2 pi / b)
    Lorentzian (Cauchy)             a / (1 + (d / gamma)^2)    gamma: HWHM [x]
        FWHM = 2 gamma,  area = pi a gamma
    pseudo-Voigt (Ida et al. 2000)  eta L(d; Gamma) + (1 - eta) G(d; Gamma)
        L, G of unit area and the same FWHM Gamma; eta = Lorentzian *area* fraction

Sums of terms whose parameter dicts are disjoint (peaks + background) are formed with
:class:`Sum`; :class:`Prefixed` renames a term's parameters when two terms would use
the same names (e.g. Gaussian and Lorentzian peaks in one spectrum).

References:
  * Nagata, Sugita & Okada (2012), "Bayesian spectral deconvolution with the exchange
    Monte Carlo method", Neural Networks 28, 82-89 -- the Gaussian parameterisation
    ``a_k exp(-b_k (x - mu_k)^2 / 2)``.
  * Ida, Ando & Toraya (2000), J. Appl. Cryst. 33, 1311-1316 -- pseudo-Voigt as the
    area-weighted sum of a Lorentzian and a Gaussian of equal FWHM.
  * Thompson, Cox & Hastings (1987), J. Appl. Cryst. 20, 79-83 -- FWHM and mixing of
    the pseudo-Voigt that approximates a Voigt profile (error ~1% of the peak height).
  * Wertheim, Butler, West & Buchanan (1974), Rev. Sci. Instrum. 45, 1369 -- Gaussian
    and Lorentzian content of experimental line shapes.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp

__all__ = [
    "GaussianPeaks",
    "LorentzianPeaks",
    "PseudoVoigtPeaks",
    "PolynomialBackground",
    "ExponentialBackground",
    "Sum",
    "Prefixed",
    "gaussian",
    "lorentzian",
    "pseudo_voigt",
    "pseudo_voigt_maximum",
    "voigt_fwhm_and_mixing",
]

_LN2 = math.log(2.0)
# Thompson, Cox & Hastings (1987), eqs. (3)-(4): Voigt FWHM and pseudo-Voigt mixing
_TCH_FWHM = (1.0, 2.69269, 2.42843, 4.47163, 0.07842, 1.0)
_TCH_ETA = (1.36603, -0.47719, 0.11116)


# -- line shapes: pure functions, one column per peak ---------------------------------
def gaussian(x, position, fwhm):
    """Unit-area Gaussian of full width at half maximum ``fwhm``:
    ``G(d) = (2/Gamma) sqrt(ln2/pi) exp(-4 ln2 d^2/Gamma^2)``, ``d = x - position``.
    ``x`` (n,) and ``position``/``fwhm`` (K,) give shape (n, K)."""
    d = x[:, None] - jnp.atleast_1d(position)[None, :]
    fwhm = jnp.atleast_1d(fwhm)[None, :]
    return (2.0 / fwhm) * math.sqrt(_LN2 / math.pi) * jnp.exp(-4.0 * _LN2 * (d / fwhm) ** 2)


def lorentzian(x, position, fwhm):
    """Unit-area Lorentzian (Cauchy) of FWHM ``fwhm``:
    ``L(d) = (2/(pi Gamma)) / (1 + 4 d^2/Gamma^2)``; shape (n, K)."""
    d = x[:, None] - jnp.atleast_1d(position)[None, :]
    fwhm = jnp.atleast_1d(fwhm)[None, :]
    return (2.0 / (math.pi * fwhm)) / (1.0 + 4.0 * (d / fwhm) ** 2)


def pseudo_voigt(x, position, fwhm, eta):
    """Unit-area pseudo-Voigt ``eta L(d; Gamma) + (1 - eta) G(d; Gamma)`` (Ida et al.
    2000), ``0 <= eta <= 1`` the Lorentzian area fraction; shape (n, K)."""
    eta = jnp.atleast_1d(eta)[None, :]
    return eta * lorentzian(x, position, fwhm) + (1.0 - eta) * gaussian(x, position, fwhm)


def pseudo_voigt_maximum(fwhm, eta):
    """Peak value of the unit-area pseudo-Voigt:
    ``eta 2/(pi Gamma) + (1 - eta) (2/Gamma) sqrt(ln2/pi)``."""
    return eta * 2.0 / (math.pi * fwhm) + (1.0 - eta) * (2.0 / fwhm) * math.sqrt(_LN2 / math.pi)


def voigt_fwhm_and_mixing(gaussian_fwhm, lorentzian_fwhm):
    """FWHM ``Gamma`` and mixing ``eta`` of the pseudo-Voigt that approximates the Voigt
    profile (Gaussian of FWHM ``Gamma_G`` convolved with a Lorentzian of FWHM
    ``Gamma_L``), Thompson, Cox & Hastings (1987):

        Gamma^5 = G^5 + 2.69269 G^4 L + 2.42843 G^3 L^2 + 4.47163 G^2 L^3 + 0.07842 G L^4 + L^5
        eta = 1.36603 (L/Gamma) - 0.47719 (L/Gamma)^2 + 0.11116 (L/Gamma)^3
    """
    g, lo = jnp.asarray(gaussian_fwhm), jnp.asarray(lorentzian_fwhm)
    fwhm5 = sum(c * g ** (5 - i) * lo**i for i, c in enumerate(_TCH_FWHM))
    fwhm = fwhm5 ** 0.2
    r = lo / fwhm
    eta = _TCH_ETA[0] * r + _TCH_ETA[1] * r**2 + _TCH_ETA[2] * r**3
    return fwhm, eta


# -- modules ------------------------------------------------------------------------
def _grid(x) -> jax.Array:
    x = jnp.asarray(x, dtype=jnp.result_type(float))
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"the spectral grid x must be a non-empty 1-D array, got shape {x.shape}")
    return x


def _components(params, name: str, k: int, shared: bool = False):
    """``params[name]`` as a (k,) vector (a shared scalar is broadcast), shape checked."""
    value = jnp.asarray(params[name])
    if shared:
        if value.ndim != 0:
            raise ValueError(f"{name} is shared by all peaks and must be a scalar, got shape {value.shape}")
        return jnp.broadcast_to(value, (k,))
    value = jnp.atleast_1d(value)
    if value.shape != (k,):
        raise ValueError(f"{name} has shape {value.shape}, expected ({k},)")
    return value


class _OnGrid(eqx.Module):
    """A forward model on a spectral grid ``x``."""

    x: jax.Array

    def at(self, x):
        """The same model evaluated on another grid ``x`` (e.g. a dense one for plots)."""
        return eqx.tree_at(lambda m: m.x, self, _grid(x))


class _Peaks(_OnGrid):
    n_components: int = eqx.field(static=True)

    def __init__(self, x, n_components: int = 1):
        if int(n_components) < 1:
            raise ValueError("n_components must be >= 1")
        self.x = _grid(x)
        self.n_components = int(n_components)


class GaussianPeaks(_Peaks):
    """Sum of K Gaussian peaks, Nagata, Sugita & Okada (2012), eq. (2):

    ``f(x) = sum_k amplitude_k exp(-precision_k (x - position_k)^2 / 2)``

    Parameters (dict keys, each (K,)): ``amplitude`` a_k (peak height, data units),
    ``position`` mu_k (units of x), ``precision`` b_k > 0 (1 / x units^2; the inverse
    variance of the peak: standard deviation ``1/sqrt(b)``, FWHM ``2 sqrt(2 ln2 / b)``,
    area ``a sqrt(2 pi / b)``).
    """

    parameter_names = ("amplitude", "position", "precision")

    def __call__(self, params):
        k = self.n_components
        amplitude = _components(params, "amplitude", k)
        position = _components(params, "position", k)
        precision = _components(params, "precision", k)
        d = self.x[:, None] - position[None, :]
        return jnp.exp(-0.5 * precision[None, :] * d**2) @ amplitude


class LorentzianPeaks(_Peaks):
    """Sum of K Lorentzian (Cauchy) peaks, the lifetime-broadened line shape:

    ``f(x) = sum_k amplitude_k / (1 + ((x - position_k) / hwhm_k)^2)``

    Parameters (each (K,)): ``amplitude`` (peak height, data units), ``position``
    (units of x), ``hwhm`` > 0 (half width at half maximum, units of x; FWHM = 2 hwhm,
    area = pi amplitude hwhm).
    """

    parameter_names = ("amplitude", "position", "hwhm")

    def __call__(self, params):
        k = self.n_components
        amplitude = _components(params, "amplitude", k)
        position = _components(params, "position", k)
        hwhm = _components(params, "hwhm", k)
        d = (self.x[:, None] - position[None, :]) / hwhm[None, :]
        return (1.0 / (1.0 + d**2)) @ amplitude


class PseudoVoigtPeaks(_Peaks):
    """Sum of K pseudo-Voigt peaks (Ida, Ando & Toraya 2000):

    ``f(x) = sum_k A_k [eta_k L(x - mu_k; Gamma_k) + (1 - eta_k) G(x - mu_k; Gamma_k)]``

    with ``L``, ``G`` the unit-area Lorentzian and Gaussian of equal FWHM ``Gamma``
    (see :func:`pseudo_voigt`), ``eta`` in [0, 1] the Lorentzian fraction of the area.

    Conventions (constructor options):
        normalization: ``"area"`` -- key ``area``, A_k is the integrated intensity
            (data units x units of x); ``"height"`` -- key ``amplitude``, A_k is the
            peak height (each profile divided by its maximum).  ``eta`` is the area
            fraction in both.
        parameterization: ``"mixing"`` -- keys ``fwhm`` (Gamma, units of x) and
            ``eta``; ``"voigt"`` -- keys ``gaussian_fwhm`` and ``lorentzian_fwhm``,
            from which Gamma and eta follow by Thompson, Cox & Hastings (1987)
            (:func:`voigt_fwhm_and_mixing`), so that the peak approximates a Voigt
            profile (Gaussian instrument function convolved with a Lorentzian line).
        shared_width: the width parameter(s) are scalars shared by all peaks
            (instrument-limited broadening), else (K,) vectors.
        shared_mixing: ``eta`` is one scalar for all peaks (``"mixing"`` only).

    Other keys: ``position`` (K,), units of x.
    """

    normalization: str = eqx.field(static=True)
    parameterization: str = eqx.field(static=True)
    shared_width: bool = eqx.field(static=True)
    shared_mixing: bool = eqx.field(static=True)

    def __init__(
        self,
        x,
        n_components: int = 1,
        normalization: str = "area",
        parameterization: str = "mixing",
        shared_width: bool = False,
        shared_mixing: bool = False,
    ):
        super().__init__(x, n_components)
        if normalization not in ("area", "height"):
            raise ValueError(f"normalization must be 'area' or 'height', got {normalization!r}")
        if parameterization not in ("mixing", "voigt"):
            raise ValueError(f"parameterization must be 'mixing' or 'voigt', got {parameterization!r}")
        if shared_mixing and parameterization == "voigt":
            raise ValueError("shared_mixing applies to parameterization='mixing' only (eta follows from the widths)")
        self.normalization = normalization
        self.parameterization = parameterization
        self.shared_width = bool(shared_width)
        self.shared_mixing = bool(shared_mixing)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        scale = "area" if self.normalization == "area" else "amplitude"
        width = ("fwhm", "eta") if self.parameterization == "mixing" else ("gaussian_fwhm", "lorentzian_fwhm")
        return (scale, "position") + width

    def fwhm_and_mixing(self, params):
        """``(Gamma, eta)``, each (K,), from the parameters."""
        k = self.n_components
        if self.parameterization == "mixing":
            return (
                _components(params, "fwhm", k, self.shared_width),
                _components(params, "eta", k, self.shared_mixing),
            )
        return voigt_fwhm_and_mixing(
            _components(params, "gaussian_fwhm", k, self.shared_width),
            _components(params, "lorentzian_fwhm", k, self.shared_width),
        )

    def __call__(self, params):
        k = self.n_components
        position = _components(params, "position", k)
        fwhm, eta = self.fwhm_and_mixing(params)
        profiles = pseudo_voigt(self.x, position, fwhm, eta)
        if self.normalization == "area":
            return profiles @ _components(params, "area", k)
        return (profiles / pseudo_voigt_maximum(fwhm, eta)[None, :]) @ _components(params, "amplitude", k)


class PolynomialBackground(_OnGrid):
    """Polynomial baseline in a reduced coordinate:

    ``B(x) = sum_{j=0}^{degree} coefficients_j t^j``,   ``t = (x - center) / scale``

    Parameters: ``coefficients`` (degree + 1,), data units (c_0 is the value at
    ``x = center``).  ``center`` and ``scale`` (units of x; default 0 and 1, i.e. plain
    powers of x) are fixed; centring on the grid and scaling by its half-range keeps
    the coefficients commensurate and their posterior well conditioned.
    """

    degree: int = eqx.field(static=True)
    center: float = eqx.field(static=True)
    scale: float = eqx.field(static=True)
    parameter_names = ("coefficients",)

    def __init__(self, x, degree: int = 0, center: float = 0.0, scale: float = 1.0):
        if int(degree) < 0:
            raise ValueError(f"degree must be >= 0, got {degree}")
        if not (math.isfinite(scale) and scale > 0 and math.isfinite(center)):
            raise ValueError(f"center must be finite and scale positive, got center={center}, scale={scale}")
        self.x = _grid(x)
        self.degree = int(degree)
        self.center = float(center)
        self.scale = float(scale)

    def __call__(self, params):
        c = _components(params, "coefficients", self.degree + 1)
        t = (self.x - self.center) / self.scale
        return jnp.polyval(c[::-1], t)


class ExponentialBackground(_OnGrid):
    """Exponentially decaying baseline (e.g. a secondary-electron or fluorescence tail):

    ``B(x) = background_amplitude exp(-(x - reference) / decay_length)``

    Parameters: ``background_amplitude`` (data units, the value at ``x = reference``),
    ``decay_length`` > 0 (units of x; a negative value gives a rising baseline).
    ``reference`` (units of x, default 0) is fixed.
    """

    reference: float = eqx.field(static=True)
    parameter_names = ("background_amplitude", "decay_length")

    def __init__(self, x, reference: float = 0.0):
        self.x = _grid(x)
        self.reference = float(reference)

    def __call__(self, params):
        return params["background_amplitude"] * jnp.exp(-(self.x - self.reference) / params["decay_length"])


def _names(term) -> tuple[str, ...] | None:
    names = getattr(term, "parameter_names", None)
    return None if names is None else tuple(names)


class Sum(eqx.Module):
    """Sum of forward models on the same grid, e.g. peaks on a background:

    ``f(x) = sum_i term_i(params)``, every term reading its own keys of one dict.

    The terms' parameter names (their ``parameter_names``) must be disjoint, so that
    each parameter has one meaning; wrap a term in :class:`Prefixed` to rename its
    parameters where two terms would clash.
    """

    terms: tuple

    def __init__(self, *terms):
        if not terms:
            raise ValueError("Sum needs at least one term")
        for term in terms:
            if not callable(term):
                raise TypeError(f"every term must be a forward model (callable), got {type(term).__name__}")
        seen: dict[str, int] = {}
        for i, term in enumerate(terms):
            for name in _names(term) or ():
                if name in seen:
                    raise ValueError(
                        f"terms {seen[name]} and {i} both use the parameter {name!r}; "
                        f"wrap one in Prefixed(term, 'prefix_') to rename its parameters"
                    )
                seen[name] = i
        shapes = {tuple(t.x.shape) for t in terms if hasattr(t, "x")}
        if len(shapes) > 1:
            raise ValueError(f"terms are on grids of different shapes: {sorted(shapes)}")
        self.terms = tuple(terms)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(name for term in self.terms for name in (_names(term) or ()))

    def at(self, x):
        """Every term evaluated on another grid ``x``."""
        return Sum(*(term.at(x) for term in self.terms))

    def __call__(self, params):
        return sum(term(params) for term in self.terms)


class Prefixed(eqx.Module):
    """A forward model whose parameters are renamed ``prefix + name``, so that two
    terms of a :class:`Sum` can use the same physics names (e.g. ``Prefixed(
    LorentzianPeaks(x, 2), "lorentz_")`` reads ``lorentz_amplitude``, ...)."""

    term: eqx.Module
    prefix: str = eqx.field(static=True)

    def __init__(self, term, prefix: str):
        if not prefix:
            raise ValueError("prefix must be a non-empty string")
        self.term = term
        self.prefix = str(prefix)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self.prefix + name for name in (_names(self.term) or ()))

    @property
    def x(self):
        return self.term.x

    def at(self, x):
        return Prefixed(self.term.at(x), self.prefix)

    def __call__(self, params):
        n = len(self.prefix)
        return self.term({k[n:]: v for k, v in params.items() if k.startswith(self.prefix)})
