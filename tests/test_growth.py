"""physics/growth.py: growth record, exact diffusion on the Lagrangian shells, equilibria."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.physics.diffusion import GAS_CONSTANT
from jaxinv.physics.growth import (
    KELVIN,
    ArrheniusGrowth,
    ConstantGrowth,
    GarnetEquilibrium,
    GrowthZoning,
    garnet_diffusivity,
)


def _identity_equilibrium(fn):
    """An 'equilibrium' that records ``fn(T)``: with constant growth from r=0, T(t) = r(t)
    makes the record a known function of radius."""
    return lambda p, t, params=None: fn(t)[..., None]


def test_record_without_diffusion_is_the_rim_history():
    # constant growth, T linear in t -> the rim at radius r recorded T(t(r)) = r exactly;
    # a nonlinear recorded quantity checks the growth-weighted shell mean (eq. 1) to O(h^2)
    times = np.array([0.0, 2.0, 5.0])
    radius = 5.0
    zone = GrowthZoning(times, ConstantGrowth(1.0), _identity_equilibrium(jnp.sin), 0.0, shells_per_segment=40)
    z = zone(jnp.zeros(3), jnp.array([0.0, 2.0, 5.0]))
    np.testing.assert_allclose(z.outer_radii[-1], radius, rtol=1e-12)
    np.testing.assert_allclose(z.outer_radii, zone.step_times()[1:], rtol=1e-12)  # v = 1: r(t) = t
    inner = np.r_[0.0, np.asarray(z.outer_radii[:-1])]
    outer = np.asarray(z.outer_radii)
    cell_mean = (np.cos(inner) - np.cos(outer)) / (outer - inner)  # exact mean of sin(r) over the shell
    np.testing.assert_allclose(z.compositions[:, 0], cell_mean, atol=1e-10)
    np.testing.assert_allclose(z.temperatures, z.centres, atol=1e-12)


def test_growth_follows_the_arrhenius_law():
    times = np.array([0.0, 4.0])
    law = ArrheniusGrowth("k", activation_energy=80e3)
    zone = GrowthZoning(times, law, _identity_equilibrium(jnp.cos), 0.0, shells_per_segment=10, quadrature=6)
    temperature = jnp.array([500.0, 600.0])
    z = zone(jnp.zeros(2), temperature, {"k": 3e6})
    # R = int_0^4 k exp(-Ea / R (T(t) + 273.15)) dt, T linear: reference by dense trapezoid
    t = np.linspace(0, 4, 200001)
    v = 3e6 * np.exp(-80e3 / (GAS_CONSTANT * (500 + 25 * t + KELVIN)))
    np.testing.assert_allclose(z.radius, np.trapezoid(v, t), rtol=1e-7)


def test_overstepping_growth_pauses_below_onset():
    law = ArrheniusGrowth(2.0, 0.0, onset_temperature=550.0, exponent=1.0)
    v = law(0.0, jnp.array([500.0, 550.0, 560.0]), {})
    np.testing.assert_allclose(v, [0.0, 0.0, 20.0])
    # a pause leaves thin shells, not a broken grid
    zone = GrowthZoning([0.0, 1.0, 2.0], law, _identity_equilibrium(jnp.cos), 5.0, shells_per_segment=4)
    z = zone(jnp.zeros(3), jnp.array([500.0, 540.0, 600.0]))
    assert np.all(np.isfinite(np.asarray(z.compositions)))
    assert np.all(np.diff(np.asarray(z.outer_radii)) > 0)


def _j0(x):
    return jnp.sinc(x / jnp.pi)  # sin(x)/x


def test_diffusion_matches_the_spherical_eigenmode():
    # closed sphere of radius R: c = sin(kr)/(kr) with tan(kR) = kR decays as exp(-D k^2 t)
    # (Crank 1975, eq. 6.18's eigenfunctions).  Grow the profile with no diffusion (P = 0), then
    # anneal: D(P) = D P, P rising 0 -> 1 over [1, 2] and 1 on [2, 3] -> int D dt = 1.5 D.
    radius, d = 2.0, 0.05
    k = 4.493409457909064 / radius
    times = np.array([0.0, 1.0, 2.0, 3.0])
    errors = []
    for n in (40, 80):
        zone = GrowthZoning(times, ConstantGrowth(radius), _identity_equilibrium(lambda r: _j0(k * r)),
                            lambda p, t, params: d * p, shells_per_segment=n, growth_segments=1)
        z = zone(jnp.array([0.0, 0.0, 1.0, 1.0]), jnp.array([0.0, radius, radius, radius]))
        expected = np.exp(-1.5 * d * k**2) * np.asarray(_j0(k * z.centres))
        errors.append(np.max(np.abs(np.asarray(z.compositions[:, 0]) - expected)))
    # the decay factor is ~0.38; second-order convergence in the shell width
    assert errors[0] < 2e-3
    assert errors[1] < errors[0] / 3.0


@pytest.mark.parametrize("geometry", ["sphere", "cylinder", "slab"])
def test_diffusion_conserves_each_component(geometry):
    times = np.linspace(0, 6, 7)
    zone = GrowthZoning(times, ArrheniusGrowth(40.0), GarnetEquilibrium(), 30.0, shells_per_segment=3,
                        growth_segments=4, geometry=geometry)
    p = jnp.linspace(4.0, 8.0, 7)
    t = jnp.linspace(480.0, 640.0, 7)
    z = zone(p, t)
    g = {"sphere": 2, "cylinder": 1, "slab": 0}[geometry]
    outer = np.asarray(z.outer_radii)
    volumes = (outer ** (g + 1) - np.r_[0, outer[:-1]] ** (g + 1))
    before = volumes @ np.asarray(z.recorded)
    after = volumes @ np.asarray(z.compositions)
    np.testing.assert_allclose(after, before, rtol=1e-11)
    np.testing.assert_allclose(np.asarray(z.compositions).sum(1), 1.0, atol=1e-12)
    # diffusion did act: the profile is smoother than the record
    assert np.abs(np.diff(np.asarray(z.compositions), axis=0)).sum() < np.abs(np.diff(np.asarray(z.recorded), axis=0)).sum()


def test_garnet_equilibrium_satisfies_both_calibrations():
    eq = GarnetEquilibrium(biotite_mg_number=0.4, anorthite_activity=0.35)
    p, t = jnp.array([3.0, 6.5, 9.0]), jnp.array([480.0, 560.0, 650.0])
    x = np.asarray(eq(p, t))
    np.testing.assert_allclose(x.sum(-1), 1.0, atol=1e-14)
    tk, pbar = np.asarray(t) + KELVIN, np.asarray(p) * 1e3
    kd = (x[:, 0] / x[:, 1]) / (0.4 / 0.6)
    np.testing.assert_allclose(52090 - tk * 19.506 + pbar * 0.238 + 3 * GAS_CONSTANT * tk * np.log(kd), 0, atol=1e-8)
    np.testing.assert_allclose(-48357 + tk * 150.66 - pbar * 6.608 + GAS_CONSTANT * tk * np.log(x[:, 3] ** 3 / 0.35**3),
                               0, atol=1e-8)
    # thermometer and barometer senses: X_Mg/X_Fe rises with T, X_Ca falls with P? (GASP: Grs grows with P)
    assert eq(6.0, 600.0)[0] / eq(6.0, 600.0)[1] > eq(6.0, 500.0)[0] / eq(6.0, 500.0)[1]
    assert eq(8.0, 550.0)[3] > eq(5.0, 550.0)[3]
    lin = eq.linearised(6.0, 560.0)
    np.testing.assert_allclose(lin(6.0, 560.0), eq(6.0, 560.0), atol=1e-14)
    np.testing.assert_allclose(lin(6.01, 560.0), eq(6.01, 560.0), atol=1e-6)


def test_garnet_diffusivity_units():
    d = garnet_diffusivity("Fe")
    # Chakraborty & Ganguly (1992): D0 = 6.4e-4 cm^2/s, Ea = 65 824 cal/mol, Va = 5.6 cm^3/mol
    t_k, p_pa = 1000.0, 1e9
    expected_m2_s = 6.4e-8 * np.exp(-(65824 * 4.184 + p_pa * 5.6e-6) / (GAS_CONSTANT * t_k))
    np.testing.assert_allclose(d(10.0, t_k - KELVIN), expected_m2_s * 1e12 * 3.15576e13, rtol=1e-12)
    with pytest.raises(ValueError, match="unknown species"):
        garnet_diffusivity("Ca2")


def test_gradients_match_finite_differences_and_jit_vmap():
    times = np.linspace(0, 8, 5)
    zone = GrowthZoning(times, ArrheniusGrowth("k", 60e3), GarnetEquilibrium(), garnet_diffusivity("Fe"),
                        shells_per_segment=3, growth_segments=3)

    def summary(theta):
        p, t, logk = theta[:5], theta[5:10], theta[10]
        z = zone(p, t, {"k": jnp.exp(logk)})
        radii = jnp.linspace(0.0, 200.0, 9)
        return jnp.sum(z.profile(radii) * jnp.arange(1, 5)) + 1e-3 * z.radius

    theta = jnp.concatenate([jnp.linspace(4, 8, 5), jnp.array([520, 560, 610, 650, 600.0]), jnp.array([11.0])])
    grad = jax.jit(jax.grad(summary))  # one compiled gradient (eager scans are slow)
    g = grad(theta)
    eps = 1e-5
    steps = jnp.concatenate([eps * jnp.eye(theta.size), -eps * jnp.eye(theta.size)])
    values = jax.jit(jax.vmap(summary))(theta + steps)  # vmap: one compiled batch
    fd = (values[: theta.size] - values[theta.size:]) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(values[0], jax.jit(summary)(theta.at[0].add(eps)), rtol=1e-12)
    # second derivatives (Laplace needs them): forward-over-reverse vs differences of the gradient
    h_row = jax.jit(lambda t: jax.jvp(jax.grad(summary), (t,), (jnp.eye(theta.size)[10],))[1])(theta)
    fd_row = (grad(theta.at[10].add(1e-4)) - grad(theta.at[10].add(-1e-4))) / 2e-4
    np.testing.assert_allclose(h_row, fd_row, rtol=1e-4, atol=1e-7)


def test_bad_inputs_name_the_problem():
    eq, law = GarnetEquilibrium(), ConstantGrowth(1.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        GrowthZoning([0.0, 0.0, 1.0], law, eq)
    with pytest.raises(ValueError, match="growth_segments"):
        GrowthZoning([0.0, 1.0, 2.0], law, eq, growth_segments=3)
    with pytest.raises(ValueError, match="geometry"):
        GrowthZoning([0.0, 1.0], law, eq, geometry="cube")
    with pytest.raises(ValueError, match="one value per path node"):
        GrowthZoning([0.0, 1.0, 2.0], law, eq)(jnp.zeros(2), jnp.zeros(3))
