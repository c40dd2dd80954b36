"""Geofluid problem (problems/geofluid.py): lithology x fluid selection by free energy on the
embedded data, the truth inside the 95 % posterior region, engine free energies (Laplace, SMC)
against the exact quadrature, conductivity sharpening the choice and the posterior, the
`jaxinv run` flow and figures, and bad data files."""

import json

import jax
import numpy as np
import pytest

import jaxinv as ji
import jaxinv.cli
import problems.geofluid as gf

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")
TRUE = "peridotite + melt"


@pytest.fixture(scope="module")
def data():
    return gf.default_data()


@pytest.fixture(scope="module")
def quad(data):
    return gf.quadrature_evidence(data, n_grid=301)


@pytest.fixture(scope="module")
def laplace_selection(data):
    # the `jaxinv run geofluid` flow (default method laplace), fewer starts than the CLI's 32
    return ji.select(gf.models(data), data.y, jax.random.key(0), method="laplace", n_starts=8)


def _f(quad, name):
    return float(quad["free_energy"][quad["names"].index(name)])


def test_default_data_is_the_documented_simulation(data):
    s = gf.simulate(jax.random.key(gf.DEFAULT_SEED))
    np.testing.assert_allclose(data.y, s.y, rtol=1e-14)
    np.testing.assert_allclose(data.sigma, [gf.NOISE_SD[q] for q in gf.QUANTITIES])
    assert data.x == gf.QUANTITIES and data.meta["truth"] == gf.TRUTH


def test_quadrature_is_converged_and_batched_over_combinations(data, quad):
    """The vmapped quadrature over all six combinations equals one-at-a-time calls, and the
    grid is converged (measured: 201 vs 301 points agree to < 1e-4 nats)."""
    coarse = gf.quadrature_evidence(data, n_grid=201)
    np.testing.assert_allclose(coarse["free_energy"], quad["free_energy"], atol=1e-3)
    assert len(quad["names"]) == len(gf.LITHOLOGIES) * len(gf.FLUIDS)
    for name in ("granite + aqueous fluid", TRUE):
        r, f = name.split(" + ")
        single = gf.quadrature_evidence(data, lithologies=r, fluids=f, n_grid=301)
        np.testing.assert_allclose(single["free_energy"][0], _f(quad, name), rtol=1e-12)
    # the posterior on the grid is normalised: sum p du dv = 1
    du = quad["log_phi"][1] - quad["log_phi"][0]
    dv = quad["log_alpha"][1] - quad["log_alpha"][0]
    np.testing.assert_allclose(np.exp(quad["log_posterior"]).sum(axis=(1, 2)) * du * dv, 1.0, atol=2e-2)


def test_true_combination_selected_and_truth_in_95_region(quad, laplace_selection):
    """Measured on the embedded data: quadrature F (nats) granite ~602/627, gabbro ~153/170,
    peridotite + aqueous fluid 2.02, peridotite + melt -0.16: p(true) = 0.90; the host
    velocities rule out granite and gabbro outright (pores only lower velocities)."""
    assert laplace_selection.selected == TRUE, laplace_selection.free_energies
    p = dict(zip(quad["names"], gf.probabilities(quad["free_energy"])))
    assert max(p, key=p.get) == TRUE and p[TRUE] > 0.8, p
    assert sum(v for k, v in p.items() if not k.startswith("peridotite")) < 1e-30
    t = gf.TRUTH
    assert gf.in_credible_region(quad, TRUE, t["porosity"], t["aspect_ratio"], 0.95)
    # ... and not a region so wide that it would hold anything: a point 3x off in phi is outside
    assert not gf.in_credible_region(quad, TRUE, 3 * t["porosity"], t["aspect_ratio"], 0.95)
    assert not gf.in_credible_region(quad, TRUE, t["porosity"] / 3, t["aspect_ratio"], 0.95)


def test_laplace_free_energies_match_quadrature(quad, laplace_selection):
    """With Vp, Vs and conductivity every posterior is inside the prior and near-Gaussian in
    the unconstrained space: measured |F_laplace - F_quad| <= 0.16 nats for all six
    combinations.  (Velocities only, the Laplace approximation fails: for granite and gabbro
    the MAP sits on the phi = 1e-4 prior bound and F is overestimated by up to 19 nats, and
    for peridotite + melt the posterior is a curved ridge, 0.66 nats off; see the docs.)"""
    for name, f in laplace_selection.free_energies.items():
        assert abs(f - _f(quad, name)) < 0.3, (name, f, _f(quad, name))


def test_smc_free_energy_matches_quadrature(data, quad):
    """Tempered SMC (300 particles x 4 runs) on the true combination: asserted
    |F_smc - F_quad| < 0.3 nats.  Measured (seed 1): 0.001 nats (se 0.11); on both peridotite
    combinations with 500 particles (docs script) 0.020 and 0.035 nats, and through
    `jaxinv run --method smc --draws 1200` <= 0.10 nats for all six combinations."""
    model = gf.models(data, lithologies="peridotite", fluids="melt")
    sel = ji.select(model, data.y, jax.random.key(1), method="smc", n_particles=300, kernel="hmc",
                    target_ess=0.5)  # as measured
    res = sel.results[TRUE]
    assert abs(float(res.free_energy) - _f(quad, TRUE)) < 0.3, (float(res.free_energy), _f(quad, TRUE))
    # the particles cover the truth's phi within their 2.5-97.5 % range
    phi = np.asarray(res.params["porosity"]).ravel()
    lo, hi = np.quantile(phi, [0.025, 0.975])
    assert lo < gf.TRUTH["porosity"] < hi, (lo, hi)


def _posterior_sd(quad, name):
    k = quad["names"].index(name)
    p = np.exp(quad["log_posterior"][k])
    p /= p.sum()
    out = []
    for axis, grid in ((1, quad["log_phi"]), (0, quad["log_alpha"])):
        m = p.sum(axis=axis)
        mu = (m * grid).sum()
        out.append(float(np.sqrt((m * (grid - mu) ** 2).sum())))
    return out


def test_conductivity_sharpens_the_choice_and_the_posterior(data, quad):
    """Velocities alone hardly separate melt from aqueous fluid (two data, two unknowns: both
    fluids fit at different phi, alpha); the conductivity does, since sigma_HS+ ~ 2/3 phi sigma_f
    pins phi for each fluid.  Measured on the embedded data: p(melt) 0.64 -> 0.90, posterior sd
    of log phi 0.71 -> 0.35 and of log alpha 1.32 -> 0.51.  Over fresh replicates (seeds 0-39,
    quadrature, 151^2 grid), without -> with conductivity: mean p(peridotite + melt) 0.57 ->
    0.76; p > 0.85 in 0 -> 20 of 40 (max 0.65 without); truth in the 95 % HPD region 39 and 37
    of 40 (nominal 38).  A likelihood that ignored the conductivity would give equal numbers."""
    vel = gf.quadrature_evidence(gf.without_conductivity(data), n_grid=301)
    p_vel = dict(zip(vel["names"], gf.probabilities(vel["free_energy"])))
    p_all = dict(zip(quad["names"], gf.probabilities(quad["free_energy"])))
    assert p_vel[TRUE] < 0.75 and p_all[TRUE] > 0.85, (p_vel[TRUE], p_all[TRUE])
    sd_vel, sd_all = _posterior_sd(vel, TRUE), _posterior_sd(quad, TRUE)
    assert sd_all[0] < 0.6 * sd_vel[0] and sd_all[1] < 0.6 * sd_vel[1], (sd_vel, sd_all)
    p_with, p_without, covered = [], [], 0
    t = gf.TRUTH
    for seed in range(40):
        d = gf.simulate(jax.random.key(seed))
        q = gf.quadrature_evidence(d, n_grid=151)
        p_with.append(gf.probabilities(q["free_energy"])[q["names"].index(TRUE)])
        covered += gf.in_credible_region(q, TRUE, t["porosity"], t["aspect_ratio"], 0.95)
        q = gf.quadrature_evidence(gf.without_conductivity(d), n_grid=151)
        p_without.append(gf.probabilities(q["free_energy"])[q["names"].index(TRUE)])
    p_with, p_without = np.array(p_with), np.array(p_without)
    assert p_with.mean() > p_without.mean() + 0.1, (p_with.mean(), p_without.mean())
    assert np.sum(p_with > 0.85) >= 14 and np.sum(p_without > 0.85) <= 2, (p_with, p_without)
    assert covered >= 34, covered


def test_jaxinv_run_flow_and_figures(tmp_path, monkeypatch, data, laplace_selection):
    (tmp_path / "direct").mkdir()
    paths = gf.figures(laplace_selection, data, tmp_path / "direct", n_grid=151)
    assert [p.name for p in paths] == ["probabilities.png", "posterior.png"] and all(p.stat().st_size > 5000 for p in paths)
    # the command line, with the problem registered by hand (entry points are read from the
    # installed package, which does not know this worktree's problem)
    monkeypatch.setattr(jaxinv.cli, "load_problem", lambda name: gf.problem)
    csv = tmp_path / "obs.csv"
    csv.write_text("quantity,value,sd\nvp_km_s,7.60,0.05\nvs_km_s,4.22,0.03\nlog10_conductivity,-1.4,0.15\n")
    out = tmp_path / "run"
    rc = jaxinv.cli.main(["run", "geofluid", "--data", str(csv), "--n-starts", "8", "--draws", "200",
                          "--out", str(out), "--quiet", "--option", "n_grid=101"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected"] == TRUE and len(summary["models"]) == 6
    assert (out / "probabilities.png").is_file() and (out / "posterior.png").is_file()


@pytest.mark.parametrize("text,match", [
    (None, "no such file"),
    ("", "no data rows"),
    ("# only a comment\n", "no data rows"),
    ("quantity,value,sd\nvp_km_s,7.6,-0.05\nvs_km_s,4.2,0.03\n", "sd must be positive"),
    ("vp_km_s,nan,0.05\nvs_km_s,4.2,0.03\n", "finite"),
    ("vp_km_s,7.6,0.05\nvs_km_s,4.2,0.03\nresistivity,100,10\n", "unknown quantity 'resistivity'"),
    ("vp_km_s,7.6,0.05\nvs_km_s,4.2,0.03\nvs_km_s,4.3,0.03\n", "given twice"),
    ("vp_km_s,7.6,0.05\nlog10_conductivity,-1,0.1\n", "vs_km_s is required"),
    ("vp_km_s,7.6\nvs_km_s,4.2,0.03\n", "expected 3"),
    ("vp_km_s,fast,0.05\nvs_km_s,4.2,0.03\n", "non-numeric"),
    ("vp_km_s,4.0,0.05\nvs_km_s,4.2,0.03\n", "must be below Vp"),
])
def test_bad_data_files(tmp_path, text, match):
    path = tmp_path / "obs.csv"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ValueError, match=match):
        gf.load_data(path)


def test_bad_options(data):
    with pytest.raises(ValueError, match="unknown lithology"):
        gf.models(data, lithologies="basalt")
    with pytest.raises(ValueError, match="phi_range"):
        gf.models(data, phi_range=(0.0, 0.3))
    with pytest.raises(ValueError, match="alpha_range"):
        gf.models(data, alpha_range=(1e-3, 2.0))
