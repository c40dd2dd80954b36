"""Peak shapes and backgrounds (jaxinv.physics.peaks) against independent formulas and scipy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from jaxinv.physics import (
    ExponentialBackground,
    GaussianPeaks,
    LorentzianPeaks,
    PolynomialBackground,
    Prefixed,
    PseudoVoigtPeaks,
    Sum,
)
from jaxinv.physics.peaks import voigt_fwhm_and_mixing

X = np.linspace(-6.0, 8.0, 2801)
SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def _half_max_width(x, f):
    """FWHM measured on the curve: distance between the outermost points above half maximum
    (linear interpolation at both crossings)."""
    half = f.max() / 2
    above = np.nonzero(f >= half)[0]
    i, j = above[0], above[-1]
    left = np.interp(half, [f[i - 1], f[i]], [x[i - 1], x[i]])
    right = np.interp(half, [f[j + 1], f[j]], [x[j + 1], x[j]])
    return right - left


def test_gaussian_peaks_is_nagata_parameterisation():
    p = {"amplitude": jnp.array([0.587, 1.522]), "position": jnp.array([1.21, 1.455]),
         "precision": jnp.array([95.689, 146.837])}
    expect = sum(a * np.exp(-b * (X - m) ** 2 / 2) for a, m, b in zip(*(np.asarray(p[k]) for k in p)))
    np.testing.assert_allclose(GaussianPeaks(X, 2)(p), expect, rtol=1e-12, atol=1e-15)


def test_gaussian_width_and_area_conventions():
    a, mu, b = 2.0, 0.5, 3.0
    f = np.asarray(GaussianPeaks(X, 1)({"amplitude": jnp.array([a]), "position": jnp.array([mu]),
                                        "precision": jnp.array([b])}))
    np.testing.assert_allclose(f, a * math.sqrt(2 * math.pi / b) * stats.norm.pdf(X, mu, 1 / math.sqrt(b)), rtol=1e-12)
    np.testing.assert_allclose(_half_max_width(X, f), 2 * math.sqrt(2 * math.log(2) / b), rtol=1e-4)
    np.testing.assert_allclose(integrate.trapezoid(f, X), a * math.sqrt(2 * math.pi / b), rtol=1e-8)


def test_lorentzian_against_cauchy():
    a, mu, g = 1.5, 0.3, 0.4
    f = np.asarray(LorentzianPeaks(X, 1)({"amplitude": jnp.array([a]), "position": jnp.array([mu]),
                                          "hwhm": jnp.array([g])}))
    np.testing.assert_allclose(f, a * math.pi * g * stats.cauchy.pdf(X, mu, g), rtol=1e-12)
    np.testing.assert_allclose(f.max(), a, rtol=1e-4)
    np.testing.assert_allclose(_half_max_width(X, f), 2 * g, rtol=1e-4)
    # area on the finite grid: a g [atan((R - mu)/g) - atan((L - mu)/g)], -> pi a g
    finite = a * g * (math.atan((X[-1] - mu) / g) - math.atan((X[0] - mu) / g))
    np.testing.assert_allclose(integrate.trapezoid(f, X), finite, rtol=1e-5)


def _pv(x, n=1, **options):
    return PseudoVoigtPeaks(x, n, **options)


@pytest.mark.parametrize("fwhm", [0.3, 1.1])
def test_pseudo_voigt_limits_are_gaussian_and_lorentzian(fwhm):
    base = {"area": jnp.array([2.0]), "position": jnp.array([0.7]), "fwhm": jnp.array([fwhm])}
    gauss = _pv(X)({**base, "eta": jnp.array([0.0])})
    lorentz = _pv(X)({**base, "eta": jnp.array([1.0])})
    np.testing.assert_allclose(gauss, 2.0 * stats.norm.pdf(X, 0.7, fwhm * SIGMA_PER_FWHM), rtol=1e-10, atol=1e-300)
    np.testing.assert_allclose(lorentz, 2.0 * stats.cauchy.pdf(X, 0.7, fwhm / 2), rtol=1e-10)
    # the same limits of the Voigt profile (scipy) and the TCH parameterisation
    np.testing.assert_allclose(gauss, 2.0 * special.voigt_profile(X - 0.7, fwhm * SIGMA_PER_FWHM, 0.0), rtol=1e-10,
                               atol=1e-300)
    np.testing.assert_allclose(lorentz, 2.0 * special.voigt_profile(X - 0.7, 0.0, fwhm / 2), rtol=1e-10)


def test_pseudo_voigt_area_height_and_fwhm():
    eta, fwhm = 0.4, 0.8
    p = {"position": jnp.array([0.0]), "fwhm": jnp.array([fwhm]), "eta": jnp.array([eta])}
    wide = np.linspace(-400, 400, 400001)
    by_area = np.asarray(_pv(wide)({**p, "area": jnp.array([3.0])}))
    # Lorentzian tails beyond +-400 hold eta * area * (1 - 2/pi atan(800/fwhm)) ~ 1e-3 * eta * area
    tail = 3.0 * eta * (1 - 2 / math.pi * math.atan(2 * 400 / fwhm))
    np.testing.assert_allclose(integrate.trapezoid(by_area, wide) + tail, 3.0, rtol=1e-7)
    # both components have FWHM Gamma, so their sum does too
    np.testing.assert_allclose(_half_max_width(X, np.asarray(_pv(X)({**p, "area": jnp.array([1.0])}))), fwhm, rtol=1e-4)
    by_height = np.asarray(_pv(X, normalization="height")({**p, "amplitude": jnp.array([1.7])}))
    np.testing.assert_allclose(by_height.max(), 1.7, rtol=1e-12)
    ratio = by_height / np.asarray(_pv(X)({**p, "area": jnp.array([1.0])}))
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)  # same shape, only the scale differs


@pytest.mark.parametrize("g,lo", [(1.0, 0.05), (1.0, 1.0), (0.3, 1.2), (0.05, 1.0)])
def test_voigt_parameterisation_approximates_scipy_voigt(g, lo):
    """Thompson-Cox-Hastings pseudo-Voigt: within ~1.5% of the peak of the exact Voigt."""
    f = np.asarray(_pv(X, parameterization="voigt")(
        {"area": jnp.array([1.0]), "position": jnp.array([0.0]), "gaussian_fwhm": jnp.array([g]),
         "lorentzian_fwhm": jnp.array([lo])}))
    v = special.voigt_profile(X, g * SIGMA_PER_FWHM, lo / 2)
    assert np.max(np.abs(f - v)) < 0.015 * v.max()
    fwhm, _ = voigt_fwhm_and_mixing(g, lo)
    np.testing.assert_allclose(float(fwhm), _half_max_width(X, v), rtol=0.01)


def test_voigt_fwhm_and_mixing_limits():
    fwhm, eta = voigt_fwhm_and_mixing(0.7, 0.0)
    np.testing.assert_allclose([float(fwhm), float(eta)], [0.7, 0.0], atol=1e-12)
    fwhm, eta = voigt_fwhm_and_mixing(1e-9, 0.7)
    np.testing.assert_allclose([float(fwhm), float(eta)], [0.7, 1.0], atol=1e-5)


def test_shared_width_and_mixing_broadcast():
    x = jnp.linspace(0, 3, 50)
    pos, area = jnp.array([1.0, 2.0]), jnp.array([1.0, 0.5])
    shared = _pv(x, 2, shared_width=True, shared_mixing=True)({"area": area, "position": pos, "fwhm": 0.3, "eta": 0.2})
    each = _pv(x, 2)({"area": area, "position": pos, "fwhm": jnp.array([0.3, 0.3]), "eta": jnp.array([0.2, 0.2])})
    np.testing.assert_allclose(shared, each, rtol=1e-14)
    assert _pv(x, 2, shared_width=True).parameter_names == ("area", "position", "fwhm", "eta")
    with pytest.raises(ValueError, match="scalar"):
        _pv(x, 2, shared_width=True)({"area": area, "position": pos, "fwhm": jnp.array([0.3, 0.3]), "eta": pos / 4})


def test_gradients_are_finite_at_and_off_the_peak():
    x = jnp.array([0.0, 0.5, 1.0, 2.0])  # x = 1.0 is exactly at a peak
    cases = [
        (GaussianPeaks(x, 2), {"amplitude": jnp.array([1.0, 0.5]), "position": jnp.array([1.0, 1.5]),
                               "precision": jnp.array([10.0, 4.0])}),
        (LorentzianPeaks(x, 2), {"amplitude": jnp.array([1.0, 0.5]), "position": jnp.array([1.0, 1.5]),
                                 "hwhm": jnp.array([0.1, 0.3])}),
        (_pv(x, 2, parameterization="voigt", normalization="height"),
         {"amplitude": jnp.array([1.0, 0.5]), "position": jnp.array([1.0, 1.5]),
          "gaussian_fwhm": jnp.array([0.2, 0.3]), "lorentzian_fwhm": jnp.array([0.1, 0.4])}),
        (Sum(PolynomialBackground(x, 2), ExponentialBackground(x)),
         {"coefficients": jnp.array([0.1, 0.2, 0.3]), "background_amplitude": 1.0, "decay_length": 0.5}),
    ]
    for forward, params in cases:
        grads = jax.jit(jax.grad(lambda p: jnp.sum(forward(p) ** 2)))(params)
        for name, g in grads.items():
            assert np.all(np.isfinite(np.asarray(g))), (type(forward).__name__, name)
            assert np.any(np.asarray(g) != 0), (type(forward).__name__, name)


def test_backgrounds():
    x = np.linspace(2.0, 6.0, 9)
    c = np.array([0.5, -1.0, 0.25])
    f = PolynomialBackground(x, 2, center=4.0, scale=2.0)({"coefficients": jnp.asarray(c)})
    np.testing.assert_allclose(f, np.polynomial.polynomial.polyval((x - 4.0) / 2.0, c), rtol=1e-13)
    np.testing.assert_allclose(PolynomialBackground(x)({"coefficients": jnp.array([0.3])}), np.full(9, 0.3))
    e = ExponentialBackground(x, reference=2.0)({"background_amplitude": 2.0, "decay_length": 1.5})
    np.testing.assert_allclose(e, 2.0 * np.exp(-(x - 2.0) / 1.5), rtol=1e-13)
    with pytest.raises(ValueError, match="coefficients has shape"):
        PolynomialBackground(x, 2)({"coefficients": jnp.ones(2)})
    with pytest.raises(ValueError):
        PolynomialBackground(x, -1)
    with pytest.raises(ValueError):
        PolynomialBackground(x, 1, scale=0.0)


def test_sum_of_peaks_and_background_in_a_model():
    x = np.linspace(0, 3, 61)
    peaks, base = GaussianPeaks(x, 2), PolynomialBackground(x, 1)
    s = Sum(peaks, base)
    p = {"amplitude": jnp.array([1.0, 0.5]), "position": jnp.array([1.0, 2.0]), "precision": jnp.array([20.0, 30.0]),
         "coefficients": jnp.array([0.1, 0.05])}
    np.testing.assert_allclose(s(p), peaks(p) + base(p), rtol=1e-14)
    assert s.parameter_names == ("amplitude", "position", "precision", "coefficients")
    fine = np.linspace(0, 3, 301)
    np.testing.assert_allclose(s.at(fine)(p), GaussianPeaks(fine, 2)(p) + PolynomialBackground(fine, 1)(p), rtol=1e-14)


def test_sum_rejects_clashing_names_and_prefixed_resolves_them():
    x = np.linspace(0, 3, 31)
    gauss, lorentz = GaussianPeaks(x, 1), LorentzianPeaks(x, 1)
    with pytest.raises(ValueError, match="'amplitude'.*Prefixed"):
        Sum(gauss, lorentz)
    with pytest.raises(ValueError, match="different shapes"):
        Sum(gauss, PolynomialBackground(x[:10]))
    renamed = Prefixed(lorentz, "lorentz_")
    s = Sum(gauss, renamed)
    assert renamed.parameter_names == ("lorentz_amplitude", "lorentz_position", "lorentz_hwhm")
    pg = {"amplitude": jnp.array([1.0]), "position": jnp.array([1.0]), "precision": jnp.array([9.0])}
    pl = {"amplitude": jnp.array([0.4]), "position": jnp.array([2.0]), "hwhm": jnp.array([0.2])}
    both = {**pg, **{"lorentz_" + k: v for k, v in pl.items()}}
    np.testing.assert_allclose(s(both), gauss(pg) + lorentz(pl), rtol=1e-14)
    assert s.at(x[:5])(both).shape == (5,)


def test_bad_construction_and_parameters():
    with pytest.raises(ValueError, match="1-D"):
        GaussianPeaks(np.ones((3, 2)), 1)
    with pytest.raises(ValueError, match="n_components"):
        LorentzianPeaks(X, 0)
    with pytest.raises(ValueError, match="normalization"):
        PseudoVoigtPeaks(X, 1, normalization="peak")
    with pytest.raises(ValueError, match="parameterization"):
        PseudoVoigtPeaks(X, 1, parameterization="tch")
    with pytest.raises(ValueError, match="amplitude has shape"):
        GaussianPeaks(X, 2)({"amplitude": jnp.ones(3), "position": jnp.ones(2), "precision": jnp.ones(2)})
    with pytest.raises(ValueError, match="at least one term"):
        Sum()
