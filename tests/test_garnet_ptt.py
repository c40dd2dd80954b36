"""P–T–t path from a zoned garnet (problems/garnet_ptt.py): the command line end to end
(lambda by Laplace evidence, the recovered path inside its 90 % band at >= 90 % of the
nodes, the particle smoother's band likewise), the thermobarometric starting path, the
smoother's state-space model against its Gaussian transition density, the data files and
their errors, and (slow) the NUTS posterior."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxinv as ji
import jaxinv.cli
import problems.garnet_ptt as g


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("garnet")
    assert jaxinv.cli.main(["run", "garnet-ptt", "--out", str(out), "--draws", "500", "--quiet"]) == 0
    return out


def test_laplace_and_smoother_bands_cover_the_true_path():
    """Fast version of the CLI check below, at the evidence-chosen lambda = 10: (a) MAP and
    Laplace through the whole solve, (c) the particle smoother; both bands contain the truth
    at >= 90 % of their points."""
    data = g.default_data()
    truth = data.meta["truth"]
    post = g.make_model(data, 10.0).condition(data.y)
    fit = ji.map_estimate(post, None, **g.fit_options(data))
    assert g.coverage(g.path_band(fit, n_draws=500), truth) >= 0.9
    band = g.particle_smoother_path(data, jax.random.key(0), 10.0, fit=fit, n_particles=1000, n_paths=200,
                                    n_conditioning=8)
    assert g.coverage(band, truth) >= 0.9


@pytest.mark.slow
def test_cli_selects_smoothness_and_recovers_the_clockwise_path(cli_run):
    summary = json.loads((cli_run / "summary.json").read_text())
    names = [m["name"] for m in summary["models"]]
    assert names == [f"lambda={v:.4g}" for v in g.SMOOTHNESS_GRID]
    energies = {m["name"]: m["free_energy"] for m in summary["models"]}
    assert all(np.isfinite(list(energies.values())))
    assert summary["selected"] == min(energies, key=energies.get)
    # the stiffest path cannot follow the true curvature: evidence must reject it
    assert energies[f"lambda={g.SMOOTHNESS_GRID[-1]:.4g}"] > energies[summary["selected"]] + 10
    truth = g.default_data().meta["truth"]
    laplace_band = g.read_band(cli_run / "pt_path.csv")
    np.testing.assert_allclose(laplace_band["t"], g.node_times())
    assert g.coverage(laplace_band, truth) >= 0.9
    # (c) the particle smoother over the growth steps
    smoother_band = g.read_band(cli_run / "pt_path_smoother.csv")
    assert len(smoother_band["t"]) == g.GROWTH_SEGMENTS * g.SHELLS_PER_SEGMENT
    assert smoother_band["t"].max() < g.node_times()[g.GROWTH_SEGMENTS]
    assert g.coverage(smoother_band, truth) >= 0.9
    # bands are informative, not vacuous: the 90 % T band is narrower than 40 °C mid-growth
    mid = slice(3, 9)
    assert np.all(laplace_band["T_hi"][mid] - laplace_band["T_lo"][mid] < 40.0)
    for name in ("pt_path.png", "profiles.png", "free_energy.png", "posterior.nc"):
        assert (cli_run / name).stat().st_size > 0


def test_coverage_counts_the_band():
    t = g.node_times()
    truth = g.true_path()
    band = {"t": t, "P_lo": truth["P"] - 0.1, "P_hi": truth["P"] + 0.1, "T_lo": truth["T"] - 1, "T_hi": truth["T"] + 1}
    assert g.coverage(band, truth) == 1.0
    band["T_lo"] = truth["T"] + 0.5  # T misses everywhere
    assert g.coverage(band, truth) == 0.5


def test_thermobarometry_inverts_the_equilibrium_model():
    pressures, temperatures = np.linspace(4.0, 9.0, 6), np.linspace(480.0, 680.0, 6)
    comps = np.asarray(g.GarnetEquilibrium()(jnp.asarray(pressures), jnp.asarray(temperatures)))
    data = g._dataset(np.linspace(0, 500, 6), comps, 510.0, 5.0, {})
    tb = g.thermobarometry(data)
    np.testing.assert_allclose(tb["P"], pressures, atol=1e-6)
    np.testing.assert_allclose(tb["T"], temperatures, atol=1e-4)


def test_starting_path_grows_the_measured_grain():
    data = g.default_data()
    start = g.starting_path(data)
    assert start["P"].shape == start["T"].shape == (g.N_NODES,)
    z = g.zoning_model()(jnp.asarray(start["P"]), jnp.asarray(start["T"]), {"growth_rate": start["growth_rate"]})
    assert float(z.radius) == pytest.approx(float(data.x["grain_radius"]), rel=0.02)


def test_state_space_transition_is_the_integrated_random_walk():
    times = np.array([0.0, 0.5, 1.25])
    smoothness = 4.0
    model = g.growth_state_space(times, smoothness)
    x = jnp.array([6.0, 550.0, 0.3, 12.0])
    k, h = 2, 0.75  # step 1 -> 2
    # exact discretisation: N(F x, q [[h^3/3, h^2/2], [h^2/2, h]]) per field, fields independent
    mean = np.array([6.0 + h * 0.3, 550.0 + h * 12.0, 0.3, 12.0])
    cov = np.zeros((4, 4))
    for i, f in enumerate(("P", "T")):
        q = g.SCALE[f] ** 2 / smoothness
        block = q * np.array([[h**3 / 3, h**2 / 2], [h**2 / 2, h]])
        cov[np.ix_([i, i + 2], [i, i + 2])] = block
    x_new = jnp.array([6.5, 560.0, 0.1, 9.0])
    expected = stats.multivariate_normal(mean, cov).logpdf(np.asarray(x_new))
    assert float(model.transition_log_prob(x_new, x, k)) == pytest.approx(expected, rel=1e-10)
    draws = jax.vmap(lambda key: model.transition_sample(key, x, k))(jax.random.split(jax.random.key(1), 40000))
    draws = np.asarray(draws)
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * np.sqrt(np.diag(cov) / 40000))
    sd = np.sqrt(np.diag(cov))
    # sampling error of a correlation from 40000 draws is <= 1/sqrt(40000) = 0.005
    assert np.max(np.abs(np.cov(draws.T) - cov) / np.outer(sd, sd)) < 0.03
    # the observation is the equilibrium composition with the EPMA noise
    y = np.asarray(g.GarnetEquilibrium()(6.0, 550.0))
    assert float(model.observation_log_prob(jnp.asarray(y), x, 0)) == pytest.approx(
        4 * stats.norm(0, g.NOISE_SD).logpdf(0.0))


def test_data_file_round_trip_and_errors(tmp_path):
    data = g.default_data()
    path = g.write_data(data, tmp_path / "grain.csv")
    back = g.load_data(path)
    np.testing.assert_allclose(back.y, data.y, atol=1e-6)
    np.testing.assert_allclose(back.x["radius"], data.x["radius"], atol=1e-3)
    text = path.read_text()
    no_radius = tmp_path / "no_radius.csv"
    no_radius.write_text("\n".join(text.splitlines()[1:]))
    with pytest.raises(ValueError, match="grain_radius_um"):
        g.load_data(no_radius)
    lines = text.splitlines()
    bad = tmp_path / "bad_fraction.csv"
    bad.write_text("\n".join(lines[:2] + ["10.0,1.2,0.1,0.1,0.1"] + lines[3:]))
    with pytest.raises(ValueError, match=r"mole fractions must lie in \[0, 1\]"):
        g.load_data(bad)
    beyond = tmp_path / "beyond.csv"
    beyond.write_text("\n".join(lines[:-1] + ["5000.0,0.1,0.7,0.1,0.1"]))
    with pytest.raises(ValueError, match="beyond the grain radius"):
        g.load_data(beyond)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty"):
        g.load_data(empty)


def test_model_options_are_checked():
    data = g.default_data()
    assert list(g.models(data, n_components=[2])) == [f"lambda={g.SMOOTHNESS_GRID[1]:.4g}"]
    with pytest.raises(ValueError, match="smoothness grid"):
        g.models(data, n_components=[9])
    with pytest.raises(ValueError, match="smoothness must be positive"):
        g.make_model(data, -1.0)


@pytest.mark.slow
def test_nuts_posterior_covers_the_true_path():
    """(b) the full posterior by NUTS at the evidence-chosen smoothness."""
    data = g.default_data()
    post = g.make_model(data, g.SMOOTHNESS_GRID[1]).condition(data.y)
    fit = ji.map_estimate(post, None, **g.fit_options(data))
    init = fit.laplace.sample_unconstrained(jax.random.key(3), (4,))
    # the GMRF path is strongly correlated: a dense metric started at the Laplace covariance
    # (measured: ~170 leapfrog steps per draw, ~6-12 min on 2 cores)
    res = ji.sample(post, jax.random.key(4), method="nuts", n_warmup=150, n_draws=150, init=init,
                    dense_mass=True, inverse_mass_matrix=fit.laplace.covariance)
    assert res.stats["rhat_max"] < 1.05
    assert g.coverage(g.path_band(res), data.meta["truth"]) >= 0.9
