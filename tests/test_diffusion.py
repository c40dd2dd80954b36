"""jaxinv.physics.diffusion against Crank's (1975) series solutions, conservation laws and
closed forms; convergence order; moving boundary; gradients."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.physics.diffusion import GAS_CONSTANT, Dirichlet, Grid, Neumann, ReactionDiffusion, arrhenius

TIMES = jnp.array([0.0, 0.5, 2.0])


def crank_slab(x, t, d, length, n_terms=200):
    """Crank (1975) eq. 4.17: slab -L < x < L (here 0 <= x <= L with a no-flux centre),
    initially 0, surface held at 1."""
    n = np.arange(n_terms)[:, None]
    k = (2 * n + 1) * np.pi / (2 * length)
    return 1 - 4 / np.pi * np.sum((-1.0) ** n / (2 * n + 1) * np.exp(-d * k**2 * t) * np.cos(k * x), axis=0)


def crank_sphere(r, t, d, radius, n_terms=400):
    """Crank (1975) eq. 6.18: sphere of radius a, initially 0, surface held at 1."""
    n = np.arange(1, n_terms)[:, None]
    series = (-1.0) ** n / n * np.sin(n * np.pi * r / radius) * np.exp(-d * n**2 * np.pi**2 * t / radius**2)
    return 1 + 2 * radius / (np.pi * r) * np.sum(series, axis=0)


def _max_error(n_cells, geometry):
    if geometry == "slab":
        grid, d, exact = Grid(2.0, n_cells, "slab"), 0.3, crank_slab
    else:
        grid, d, exact = Grid(1.0, n_cells, "sphere"), 0.1, crank_sphere
    system = ReactionDiffusion(grid, d, outer=Dirichlet(1.0))
    c = np.asarray(system.ode(jnp.zeros(n_cells), TIMES)({}))
    x = np.asarray(grid.positions())
    ref = np.stack([exact(x, float(t), d, float(grid.length)) for t in TIMES[1:]])
    return np.max(np.abs(c[1:] - ref))


@pytest.mark.parametrize("geometry", ["slab", "sphere"])
def test_crank_series_solution_with_second_order_convergence(geometry):
    coarse, fine = _max_error(50, geometry), _max_error(100, geometry)
    assert fine < 1e-4
    assert coarse / fine > 3.5  # O(h^2): halving h quarters the error


@pytest.mark.parametrize("geometry", ["slab", "cylinder", "sphere"])
def test_no_flux_conserves_mass_with_concentration_dependent_diffusivity(geometry):
    grid = Grid(1.5, 40, geometry)
    system = ReactionDiffusion(grid, lambda c, x, t, p: 0.05 * (1.0 + 4.0 * c**2), outer=Neumann(0.0))
    c0 = jnp.exp(-((grid.positions() - 0.5) ** 2) / 0.02)
    c = system.ode(c0, jnp.array([0.0, 1.0, 5.0]))({})
    totals = np.asarray(grid.total(c))
    np.testing.assert_allclose(totals, totals[0], rtol=1e-9)
    assert np.ptp(np.asarray(c[-1])) < 0.5 * np.ptp(np.asarray(c0))  # and it did diffuse


def test_influx_adds_mass_at_the_given_rate():
    """Outward flux -F through x = L of a slab: d/dt int c dx = F."""
    grid = Grid(1.0, 30, "slab")
    system = ReactionDiffusion(grid, 0.2, outer=Neumann(-0.7))
    c = system.ode(jnp.zeros(30), jnp.array([0.0, 1.0, 3.0]))({})
    np.testing.assert_allclose(np.asarray(grid.total(c)), [0.0, 0.7, 2.1], rtol=1e-8, atol=1e-10)


def test_first_order_reaction_in_a_closed_domain():
    grid = Grid(1.0, 20, "sphere")
    system = ReactionDiffusion(grid, 0.1, reaction=lambda c, x, t, p: -p["rate_constant"] * c)
    c = system.ode(jnp.full(20, 2.0), TIMES)({"rate_constant": 0.8})
    # global error of the implicit solve at rtol 1e-8 is a few 1e-7
    np.testing.assert_allclose(c, 2.0 * np.exp(-0.8 * np.asarray(TIMES))[:, None] * np.ones(20), rtol=2e-6)


def test_species_axis_is_independent_diffusion_per_species():
    grid = Grid(1.0, 25, "slab")
    both = ReactionDiffusion(grid, jnp.array([[0.05], [0.4]]), outer=Dirichlet(jnp.array([1.0, 2.0])))
    c = both.ode(jnp.zeros((2, 25)), TIMES)({})
    for i, (d, edge) in enumerate([(0.05, 1.0), (0.4, 2.0)]):
        alone = ReactionDiffusion(grid, d, outer=Dirichlet(edge)).ode(jnp.zeros(25), TIMES)({})
        # one joint solve shares its steps: agreement to the solver's tolerances
        np.testing.assert_allclose(c[:, i], alone, rtol=1e-6, atol=1e-8)


def test_moving_boundary_records_the_rim_value():
    """Pure growth (D = 0) of a sphere, L = 1 + t, rim value c = t: the shell grown at time
    s sits at x = 1 + s and keeps c = s, so c(x, 1) = x - 1 outside the seed.  First-order
    upwind: the mean error halves as the cells halve."""
    errors = []
    for n in (100, 200):
        grid = Grid(1.0, n, "sphere")
        system = ReactionDiffusion(grid, 0.0, outer=Dirichlet(lambda t, p: t), domain_length=lambda t, p: 1.0 + t)
        c = np.asarray(system.ode(jnp.zeros(n), jnp.array([0.0, 1.0]), solver="tsit5")({})[-1])
        exact = np.clip(np.asarray(grid.centres) * 2.0 - 1.0, 0.0, None)
        errors.append(np.mean(np.abs(c - exact)))
    assert errors[1] < 2e-3
    assert errors[0] / errors[1] > 1.7


def test_gradient_matches_finite_differences_and_adjoints_agree():
    grid = Grid(1.0, 30, "sphere")
    system = ReactionDiffusion(grid, "diffusivity", reaction=lambda c, x, t, p: -p["rate_constant"] * c,
                               outer=Dirichlet(1.0))

    def loss(theta, adjoint):
        model = system.ode(jnp.zeros(30), TIMES, adjoint=adjoint)
        c = model({"diffusivity": theta[0], "rate_constant": theta[1]})
        return jnp.sum(c**2)

    theta = jnp.array([0.1, 0.5])
    grad = jax.grad(loss)(theta, "checkpoint")
    h = 1e-6
    fd = np.array([(loss(theta.at[i].add(h), "checkpoint") - loss(theta.at[i].add(-h), "checkpoint")) / (2 * h)
                   for i in range(2)])
    np.testing.assert_allclose(grad, fd, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(loss)(theta, "direct"), grad, rtol=1e-8)


def test_arrhenius_with_activation_volume():
    d0, ea, t, p, va = 1e-6, 250e3, 1073.15, 1e9, 5e-6
    expected = d0 * math.exp(-(ea + p * va) / (GAS_CONSTANT * t))
    np.testing.assert_allclose(arrhenius(d0, ea, t, p, va), expected, rtol=1e-14)
    # doubling the pressure term = the factor exp(-P Va / R T) again
    np.testing.assert_allclose(arrhenius(d0, ea, t, 2 * p, va) / arrhenius(d0, ea, t, p, va),
                               math.exp(-p * va / (GAS_CONSTANT * t)), rtol=1e-12)


def test_profile_at_interpolates_and_reaches_the_boundary_value():
    grid = Grid(2.0, 4, "slab")
    system = ReactionDiffusion(grid, 1.0, outer=Dirichlet(5.0))
    c = jnp.array([1.0, 2.0, 3.0, 4.0])  # centres at 0.25, 0.75, 1.25, 1.75
    out = system.profile_at(c, jnp.array([0.25, 0.5, 1.75, 2.0]), 0.0, {})
    np.testing.assert_allclose(out, [1.0, 1.5, 4.0, 5.0])


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="geometry"):
        Grid(1.0, 10, "torus")
    with pytest.raises(ValueError, match="n_cells"):
        Grid(1.0, 1)
    with pytest.raises(ValueError, match="length"):
        Grid(-1.0, 10)
    with pytest.raises(ValueError, match="no inner boundary"):
        ReactionDiffusion(Grid(1.0, 10, "sphere"), 1.0, inner=Dirichlet(0.0))
    with pytest.raises(TypeError, match="Dirichlet"):
        ReactionDiffusion(Grid(1.0, 10), 1.0, outer=1.0)
