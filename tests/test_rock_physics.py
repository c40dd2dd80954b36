"""jaxinv.physics.rock_physics against independent references: Berryman's P, Q at alpha = 1
against the closed-form sphere factors, at alpha -> 0 against the penny-crack limit (fluid and
dry); Kuster-Toksöz for spheres against the Hashin-Shtrikman bounds (a separate formula);
velocity trends with porosity and aspect ratio; conductivity bounds' limits and ordering;
jax.grad against finite differences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv  # noqa: F401  (float64)
from jaxinv.physics import rock_physics as rp

# peridotite-like host, basaltic-melt-like fluid (GPa, g/cm^3)
KM, GM, RHOM = 122.1, 66.8, 3.3
KF, RHOF = 15.0, 2.7


def test_theta_f_sphere_values_and_continuity():
    theta, f = rp.spheroid_theta_f(jnp.array([1.0]))
    np.testing.assert_allclose([float(theta[0]), float(f[0])], [2 / 3, -0.4], rtol=1e-15)
    # series and closed form agree where they meet
    e = rp._E_SERIES
    lo = rp.spheroid_theta_f(jnp.sqrt(1 - (e - 1e-12)))
    hi = rp.spheroid_theta_f(jnp.sqrt(1 - (e + 1e-12)))
    np.testing.assert_allclose(np.array(lo), np.array(hi), rtol=1e-10)  # measured ~2e-11 at e = 0.02
    # thin spheroids: theta -> pi alpha / 2 (leading term of the closed form)
    a = 1e-6
    np.testing.assert_allclose(float(rp.spheroid_theta_f(a)[0]), np.pi * a / 2, rtol=1e-5)


@pytest.mark.parametrize("k_i,g_i", [(KF, 0.0), (0.0, 0.0), (40.0, 20.0)])
def test_sphere_limit_equals_closed_form(k_i, g_i):
    p, q = rp.spheroid_pq(KM, GM, k_i, g_i, 1.0)
    ps, qs = rp.sphere_pq(KM, GM, k_i, g_i)
    np.testing.assert_allclose([float(p), float(q)], [ps, qs], rtol=1e-12)


@pytest.mark.parametrize("k_i", [KF, 2.2, 0.0])
def test_crack_limit_equals_penny_crack(k_i):
    """alpha -> 0: Berryman's spheroid P, Q tend to the penny-crack expressions; the relative
    difference is O(alpha) (measured ~1e-3 at alpha = 1e-3, ~1e-4 at 1e-4)."""
    errors = []
    for a in (1e-3, 1e-4):
        p, q = rp.spheroid_pq(KM, GM, k_i, 0.0, a)
        pc, qc = rp.penny_crack_pq(KM, GM, k_i, 0.0, a)
        errors.append(max(abs(float(p) / pc - 1), abs(float(q) / qc - 1)))
    assert errors[1] < 5e-4, errors
    assert errors[1] < 0.2 * errors[0], errors  # converging linearly in alpha


def test_kt_spheres_equal_hashin_shtrikman_upper_bound():
    """Kuster-Toksöz with spheres is the Hashin-Shtrikman bound with the host as phase 1, at any
    porosity (Mavko et al. section 4.7); checked against the separate HS formula."""
    for phi in (0.01, 0.1, 0.3):
        k, g = rp.kuster_toksoz(KM, GM, KF, 0.0, phi, 1.0)
        kh, gh = rp.hashin_shtrikman_moduli(KM, GM, KF, 1e-300, 1.0 - phi)
        np.testing.assert_allclose([float(k), float(g)], [kh, gh], rtol=1e-10)


def test_kt_dry_thin_crack_limits():
    """Dry penny cracks at small crack density (phi/alpha small), first order in phi:
    K/K_m - 1 = -phi P and G/G_m - 1 = -phi Q with the penny-crack P = K_m/(pi alpha beta_m),
    Q = (1 + 8 G_m/(pi alpha (G_m + 2 beta_m)) + 2 (2/3 G_m)/(pi alpha beta_m))/5: the
    compliance of a dilute crack set grows as phi/alpha."""
    beta = GM * (3 * KM + GM) / (3 * KM + 4 * GM)
    for a in (1e-3, 1e-4):
        phi = 1e-3 * a  # phi/alpha = 1e-3
        k, g = rp.kuster_toksoz(KM, GM, 0.0, 0.0, phi, a)
        p = KM / (np.pi * a * beta)
        q = (1 + 8 * GM / (np.pi * a * (GM + 2 * beta)) + 2 * (2 / 3 * GM) / (np.pi * a * beta)) / 5
        np.testing.assert_allclose(float(k) / KM - 1, -phi * p, rtol=5e-3)
        np.testing.assert_allclose(float(g) / GM - 1, -phi * q, rtol=5e-3)


def test_velocities_drop_with_porosity_and_vp_vs_rises_for_thin_pores():
    phi = jnp.linspace(1e-3, 0.05, 30)
    v0 = rp.velocities(KM, GM, RHOM)
    ratio_drop = []
    for a in (1.0, 0.1, 0.01):
        vp, vs = rp.seismic_velocities(KM, GM, RHOM, KF, RHOF, phi, a)
        assert np.all(np.diff(np.asarray(vp)) < 0) and np.all(np.diff(np.asarray(vs)) < 0)
        dlnvp, dlnvs = float(vp[0] / v0[0] - 1), float(vs[0] / v0[1] - 1)
        ratio_drop.append(dlnvs / dlnvp)
    # thin fluid-filled pores: Vs drops faster than Vp, so Vp/Vs rises (Nakajima et al. 2005's signal)
    # measured dlnVs/dlnVp: 1.06 (spheres), 1.00 (alpha 0.1), 1.73 (alpha 0.01)
    assert ratio_drop[2] > 1.5 and ratio_drop[2] > max(ratio_drop[:2]) + 0.5, ratio_drop
    vp, vs = rp.seismic_velocities(KM, GM, RHOM, KF, RHOF, 0.01, jnp.array([0.5, 0.05, 0.01]))
    assert np.all(np.diff(np.asarray(vp / vs)) > 0)
    # at fixed phi, thinner pores lower both velocities
    assert np.all(np.diff(np.asarray(vp)) < 0) and np.all(np.diff(np.asarray(vs)) < 0)


def test_floor_changes_nothing_in_the_valid_range_and_keeps_velocities_finite():
    a = jnp.array([1.0, 0.1, 0.01])
    v1 = rp.seismic_velocities(KM, GM, RHOM, KF, RHOF, 0.01, a)
    v2 = rp.seismic_velocities(KM, GM, RHOM, KF, RHOF, 0.01, a, floor=1e-3)
    np.testing.assert_allclose(np.array(v1), np.array(v2), rtol=1e-14)
    # far outside KT's validity (phi/alpha = 300) the shear modulus is negative; the floor keeps
    # the velocity finite, positive and near sqrt(floor) of the host's
    g = rp.kuster_toksoz(KM, GM, KF, 0.0, 0.3, 1e-3)[1]
    assert float(g) < 0
    _, vs = rp.seismic_velocities(KM, GM, RHOM, KF, RHOF, 0.3, 1e-3, floor=1e-3)
    assert np.isfinite(float(vs)) and 0 < float(vs) < 0.1 * float(rp.velocities(KM, GM, RHOM)[1])


def test_hashin_shtrikman_conductivity_limits_and_ordering():
    ss, sf = 1e-3, 3.0
    lo0, up0 = rp.hashin_shtrikman_conductivity(ss, sf, 0.0)
    lo1, up1 = rp.hashin_shtrikman_conductivity(ss, sf, 1.0)
    np.testing.assert_allclose([float(lo0), float(up0)], [ss, ss], rtol=1e-12)
    np.testing.assert_allclose([float(lo1), float(up1)], [sf, sf], rtol=1e-12)
    phi = jnp.linspace(0.001, 0.999, 50)
    lo, up = rp.hashin_shtrikman_conductivity(ss, sf, phi)
    series = 1.0 / ((1 - phi) / ss + phi / sf)
    parallel = (1 - phi) * ss + phi * sf
    # Wiener bounds contain the HS bounds
    assert np.all(series <= lo * (1 + 1e-12)) and np.all(lo < up) and np.all(up <= parallel * (1 + 1e-12))
    assert np.all(np.diff(np.asarray(up)) > 0)
    # dilute fluid, connected: sigma_HS+ ~ sigma_s + 2/3 phi sigma_f (phi -> 0, sigma_s << sigma_f)
    small = 1e-4
    np.testing.assert_allclose(float(rp.hashin_shtrikman_upper(0.0 + 1e-12, sf, small)), 2 / 3 * small * sf, rtol=1e-3)


def test_archie():
    np.testing.assert_allclose(float(rp.archie(3.0, 0.01, m=0.98, c=0.73)), 0.73 * 3.0 * 0.01**0.98, rtol=1e-14)
    np.testing.assert_allclose(float(rp.archie(3.0, 1.0)), 3.0)


def test_gradients_match_finite_differences():
    def f(x):
        phi, alpha, kf = x
        vp, vs = rp.seismic_velocities(KM, GM, RHOM, kf, RHOF, phi, alpha)
        return vp + 2.0 * vs + jnp.log10(rp.hashin_shtrikman_upper(1e-2, 3.0, phi))

    for x0 in ([0.02, 0.05, 15.0], [0.005, 0.9999, 5.0], [0.01, 0.3, 2.0], [0.001, 0.002, 15.0]):
        x0 = jnp.asarray(x0)
        g = np.asarray(jax.grad(f)(x0))
        h = 1e-6 * np.abs(np.asarray(x0))
        fd = [(float(f(x0.at[i].add(h[i]))) - float(f(x0.at[i].add(-h[i])))) / (2 * h[i]) for i in range(3)]
        np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)
    # at the sphere exactly: finite gradient
    ga = jax.grad(lambda a: rp.seismic_velocities(KM, GM, RHOM, KF, RHOF, 0.02, a)[1])(1.0)
    assert np.isfinite(float(ga))


def test_vmappable_over_properties():
    props = jnp.array([[KM, GM, KF], [82.0, 45.6, 5.0]])
    out = jax.vmap(lambda p: jnp.stack(rp.kuster_toksoz(p[0], p[1], p[2], 0.0, 0.02, 0.05)))(props)
    for i in range(2):
        np.testing.assert_allclose(np.asarray(out[i]),
                                   np.array(rp.kuster_toksoz(props[i, 0], props[i, 1], props[i, 2], 0.0, 0.02, 0.05)))
