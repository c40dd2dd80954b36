"""jaxinv.physics.kinetics: surface-area-controlled dissolution against closed forms, mass
balance, gradients, stiff solver, bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.physics import MineralReaction
from jaxinv.physics.kinetics import (
    GEOMETRY_EXPONENTS,
    far_from_equilibrium_moles,
    geometry_exponent,
    saturation_ratio,
    surface_area,
)

M0, S0, V = 2.5e-3, 30.0, 1.0  # mol, m^2, L
K_RATE = 2e-9  # mol m^-2 s^-1: the mineral would be used up (plates) at m0 / (k S0) = 41667 s
FAR = 1e30  # an equilibrium constant so large that Q/K ~ 0 (far from equilibrium)
T = np.linspace(0.0, 4e4, 21)


@pytest.mark.parametrize("geometry", ["plate", "cylinder", "sphere", 1.0])
def test_far_from_equilibrium_matches_the_shrinking_particle_law(geometry):
    n = geometry_exponent(geometry)
    model = MineralReaction(T, initial_moles=M0, initial_area=S0, volume=V, geometry=geometry)
    m = np.asarray(model.states({"rate_constant": K_RATE, "equilibrium_constant": FAR})["mineral"])
    exact = far_from_equilibrium_moles(T, K_RATE, S0, M0, n)
    np.testing.assert_allclose(m, exact, rtol=1e-6, atol=1e-9 * M0)
    if n == 0:  # plates: linear loss
        np.testing.assert_allclose(m, M0 - K_RATE * S0 * T, rtol=1e-7, atol=1e-12)
    if geometry == "sphere":  # m^(1/3) linear in t
        cube_root = np.cbrt(m)
        slope = np.diff(cube_root) / np.diff(T)
        np.testing.assert_allclose(slope, -K_RATE * S0 / (3 * M0 ** (2 / 3)), rtol=1e-5)


def test_plates_dissolve_completely_and_stop():
    t = np.linspace(0.0, 6e4, 13)  # beyond t* = m0 / (k S0) = 41667 s
    model = MineralReaction(t, initial_moles=M0, initial_area=S0, geometry="plate")
    s = model.states({"rate_constant": K_RATE, "equilibrium_constant": FAR})
    m = np.asarray(s["mineral"])
    assert np.all(m >= -1e-8 * M0) and abs(m[-1]) < 1e-8 * M0  # overshoot within atol
    np.testing.assert_allclose(np.asarray(s["concentrations"])[-1, 0], M0 / V, rtol=1e-7)


def test_approach_to_equilibrium_matches_the_linear_closed_form():
    """Plates, one product species (Q = c): c(t) = K - (K - c0) exp(-k S0 t / (K V))."""
    big_k, c0 = 1e-3, 2e-4
    t = np.linspace(0.0, 2e5, 31)
    model = MineralReaction(t, initial_moles=1.0, initial_area=S0, volume=V, initial_concentrations=c0,
                            geometry="plate")
    c = np.asarray(model({"rate_constant": K_RATE, "equilibrium_constant": big_k}))
    exact = big_k - (big_k - c0) * np.exp(-K_RATE * S0 * t / (big_k * V))
    np.testing.assert_allclose(c, exact, rtol=1e-7)


def test_supersaturated_fluid_grows_the_mineral():
    t = np.linspace(0.0, 1e5, 11)
    model = MineralReaction(t, initial_moles=1e-3, initial_area=S0, initial_concentrations=3e-3, geometry="sphere")
    s = model.states({"rate_constant": K_RATE, "equilibrium_constant": 2e-3})
    m, c = np.asarray(s["mineral"]), np.asarray(s["concentrations"])[:, 0]
    assert np.all(np.diff(m) > 0) and np.all(np.diff(c) < 0)
    assert c[-1] > 2e-3 - 1e-9  # approaches K from above, never crosses it


def test_mass_balance_for_several_species():
    """CaCO3 + H+ -> Ca2+ + HCO3- with nu = (1, 1, -1): m + V c_j / nu_j is conserved."""
    nu = np.array([1.0, 1.0, -1.0])
    c0 = np.array([0.0, 1e-4, 1e-2])
    gamma = np.array([0.8, 0.9, 0.95])
    t = np.linspace(0.0, 5e4, 26)
    model = MineralReaction(t, stoichiometry=nu, initial_moles=M0, initial_area=S0, volume=0.5,
                            initial_concentrations=c0, activity_coefficients=gamma, observed=(0, 1, 2))
    p = {"rate_constant": K_RATE, "equilibrium_constant": 1e-2}
    s = model.states(p)
    m, c = np.asarray(s["mineral"]), np.asarray(s["concentrations"])
    assert m[-1] < 0.9 * M0  # something dissolved
    for j in range(3):
        np.testing.assert_allclose(m + 0.5 * (c[:, j] - c0[j]) / nu[j], M0, rtol=1e-10)
    np.testing.assert_allclose(model(p), c)
    # Q/K from the saturation-ratio function agrees with the definition
    omega = saturation_ratio(c[-1], nu, 1e-2, gamma)
    assert float(omega) == pytest.approx(np.prod((gamma * c[-1]) ** nu) / 1e-2, rel=1e-12)


def test_gradients_match_finite_differences():
    t = np.linspace(3600.0, 2e5, 12)
    model = MineralReaction(t, initial_moles=M0, initial_area=S0, geometry="free")

    def loss(theta):  # log k, log K, n
        p = {"rate_constant": jnp.exp(theta[0]), "equilibrium_constant": jnp.exp(theta[1]),
             "surface_exponent": theta[2]}
        return jnp.sum((model(p) / 1e-3) ** 2)

    theta = jnp.array([np.log(K_RATE), np.log(2e-3), 0.6])
    grad = np.asarray(jax.grad(loss)(theta))
    h = 1e-5
    fd = np.array([(loss(theta.at[i].add(h)) - loss(theta.at[i].add(-h))) / (2 * h) for i in range(3)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5)
    assert np.all(np.abs(grad) > 1e-3)


def test_stiff_solver_agrees_and_surface_area_gradient_is_finite_at_zero():
    t = np.linspace(0.0, 2e5, 9)
    p = {"rate_constant": 1e-7, "equilibrium_constant": 2e-3}  # fast: k S0 / (K V) = 1.5 s^-1
    explicit = MineralReaction(t, initial_moles=M0, initial_area=S0, geometry="sphere")
    stiff = MineralReaction(t, initial_moles=M0, initial_area=S0, geometry="sphere", solver="kvaerno5")
    np.testing.assert_allclose(stiff(p), explicit(p), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(stiff(p))[1:], 2e-3, rtol=1e-6)
    g = jax.grad(lambda m: surface_area(m, M0, S0, 2 / 3))(0.0)
    assert np.isfinite(float(g)) and float(surface_area(-1e-6, M0, S0, 2 / 3)) == 0.0


def test_jit_and_vmap_over_parameters():
    model = MineralReaction(T, initial_moles=M0, initial_area=S0, geometry="sphere")
    ks = jnp.array([1e-9, 2e-9, 4e-9])
    out = jax.jit(jax.vmap(lambda k: model({"rate_constant": k, "equilibrium_constant": 2e-3})))(ks)
    assert out.shape == (3, T.size) and bool(jnp.all(jnp.diff(out, axis=0) > -1e-15))
    for i, k in enumerate(ks):
        np.testing.assert_allclose(out[i], model({"rate_constant": k, "equilibrium_constant": 2e-3}), rtol=1e-12)


def test_invalid_parameters_give_nan_under_tracing():
    model = MineralReaction(T, initial_moles=M0, initial_area=S0)
    out = jax.jit(lambda k: model({"rate_constant": k, "equilibrium_constant": 2e-3}))(-1e-9)
    assert bool(jnp.all(jnp.isnan(out)))


def test_geometry_names():
    assert GEOMETRY_EXPONENTS == {"sphere": 2 / 3, "cylinder": 0.5, "plate": 0.0}
    assert MineralReaction(T, initial_moles=M0, initial_area=S0, geometry="cylinder").geometry == "cylinder"
    assert MineralReaction(T, initial_moles=M0, initial_area=S0, geometry="free").geometry == "free"
    assert geometry_exponent(0.3) == 0.3


def test_bad_inputs_are_named():
    ok = dict(initial_moles=M0, initial_area=S0)
    with pytest.raises(ValueError, match="rate_constant = -1e-09 is invalid"):
        MineralReaction(T, **ok)({"rate_constant": -1e-9, "equilibrium_constant": 2e-3})
    with pytest.raises(ValueError, match="equilibrium_constant = 0.0 is invalid"):
        MineralReaction(T, **ok)({"rate_constant": 1e-9, "equilibrium_constant": 0.0})
    with pytest.raises(KeyError, match="surface_exponent"):
        MineralReaction(T, geometry="free", **ok)({"rate_constant": 1e-9, "equilibrium_constant": 2e-3})
    with pytest.raises(ValueError, match="non-decreasing"):
        MineralReaction([0.0, 2.0, 1.0], **ok)
    with pytest.raises(ValueError, match=">= t0"):
        MineralReaction([-1.0, 2.0], **ok)
    with pytest.raises(ValueError, match="unknown geometry"):
        MineralReaction(T, geometry="cube", **ok)
    with pytest.raises(ValueError, match="exponent must be finite and >= 0"):
        MineralReaction(T, geometry=-0.5, **ok)
    with pytest.raises(ValueError, match="initial_moles"):
        MineralReaction(T, initial_moles=0.0, initial_area=S0)
    with pytest.raises(ValueError, match="initial_area"):
        MineralReaction(T, initial_moles=M0, initial_area=-1.0)
    with pytest.raises(ValueError, match="initial_concentrations"):
        MineralReaction(T, initial_concentrations=-1e-3, **ok)
    with pytest.raises(ValueError, match="one per species"):
        MineralReaction(T, stoichiometry=[1.0, 1.0], initial_concentrations=[0.0, 0.0, 0.0], **ok)
    with pytest.raises(ValueError, match="not all zero"):
        MineralReaction(T, stoichiometry=0.0, **ok)
    with pytest.raises(ValueError, match="observed"):
        MineralReaction(T, observed=2, **ok)
