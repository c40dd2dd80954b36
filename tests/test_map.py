"""MAP, Laplace standard errors and the Laplace evidence against exact references."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv.physics import InversionRecovery, MultiExponential


def test_laplace_evidence_exact_for_linear_gaussian():
    """y = A w + e, w ~ N(m0, S0), e ~ N(0, s^2 I): log p(y) = log N(y | A m0, s^2 I + A S0 A^T)."""
    x = jnp.linspace(-1.0, 1.0, 15)
    design = jnp.stack([jnp.ones_like(x), x, x**2], axis=1)
    m0, s0, s = jnp.array([0.5, -1.0, 0.2]), jnp.array([1.0, 2.0, 0.5]), 0.3
    y = design @ jnp.array([0.8, -0.4, 1.1]) + s * jnp.sin(11 * x)
    model = ji.Model(lambda p: design @ p["w"], {"w": ji.priors.Normal(m0, s0, shape=3)}, ji.likelihoods.Normal(sigma=s))
    fit = ji.map_estimate(model.condition(y), jax.random.key(0), n_starts=4)
    cov = s**2 * jnp.eye(15) + design @ jnp.diag(s0**2) @ design.T
    exact = jax.scipy.stats.multivariate_normal.logpdf(y, design @ m0, cov)
    assert float(fit.log_evidence) == pytest.approx(float(exact), abs=1e-9)
    assert float(fit.free_energy) == pytest.approx(-float(exact), abs=1e-9)
    # posterior covariance is exact too
    post_cov = jnp.linalg.inv(design.T @ design / s**2 + jnp.diag(1 / s0**2))
    np.testing.assert_allclose(fit.laplace.standard_errors["w"], jnp.sqrt(jnp.diag(post_cov)), rtol=1e-8)


def test_laplace_evidence_matches_quadrature_with_transforms():
    """1-parameter nonlinear model with a LogUniform prior: Laplace free energy within
    a few % of the evidence by numerical quadrature (it is an approximation)."""
    from scipy import integrate

    t = jnp.linspace(0.05, 3.0, 25)
    y = jnp.exp(-t / 0.7) + 0.02 * jnp.cos(13 * t)
    model = ji.Model(lambda p: jnp.exp(-t / p["tau"]), {"tau": ji.priors.LogUniform(0.01, 100.0)},
                     ji.likelihoods.Normal(sigma=0.02))
    post = model.condition(y)
    fit = ji.map_estimate(post, jax.random.key(0), n_starts=8)
    shift = float(post.energy(fit.laplace.mode))
    energy = jax.jit(lambda u: post.energy(jnp.reshape(u, (1,))))
    f = lambda u: math.exp(-(float(energy(u)) - shift))
    z_mode = float(fit.laplace.mode[0])
    val, _ = integrate.quad(f, z_mode - 1.0, z_mode + 1.0, points=[z_mode], limit=200)
    exact = math.log(val) - shift
    assert float(fit.log_evidence) == pytest.approx(exact, abs=0.02)


@pytest.mark.parametrize("seed", [0, 1])
def test_map_recovers_synthetic_relaxation_within_error_bars(seed):
    tau = jnp.geomspace(0.01, 20.0, 30)
    truth = {"inversion_efficiency": 0.93, "equilibrium_magnetization": 1.0, "relaxation_time": 1.7}
    sigma = 0.01
    y = InversionRecovery(tau)(truth) + sigma * jax.random.normal(jax.random.key(100 + seed), tau.shape)
    model = ji.Model(
        InversionRecovery(tau),
        {"inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
         "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0),
         "relaxation_time": ji.priors.LogUniform(1e-3, 1e3)},
        ji.likelihoods.Normal(sigma=sigma),
    )
    fit = ji.map_estimate(model.condition(y), jax.random.key(seed), n_starts=16)
    for name, value in truth.items():
        err = float(fit.laplace.standard_errors[name])
        assert 0 < err < 0.1
        assert abs(float(fit.params[name]) - value) < 4 * err, name
    # Levenberg-Marquardt alone (the fast batch setting) from the same starts: the same MAP
    lm_only = ji.map_estimate(model.condition(y), jax.random.key(seed), n_starts=16, optimizer=None)
    assert bool(jnp.all(lm_only.stats["polish_steps"] > 0)) and bool(lm_only.stats["converged"][lm_only.stats["best"]])
    for name in truth:
        assert float(lm_only.params[name]) == pytest.approx(float(fit.params[name]), rel=1e-7), name
        assert float(lm_only.laplace.standard_errors[name]) == pytest.approx(
            float(fit.laplace.standard_errors[name]), rel=1e-6), name
    with pytest.raises(ValueError, match="polish=True"):
        ji.map_estimate(model.condition(y), jax.random.key(seed), optimizer=None, polish=False)


@pytest.mark.slow
def test_map_two_components_ordered_and_selected_by_free_energy():
    """Slow (~1 CPU-minute: three MAP programs compiled).  Fast twin:
    tests/test_spectral_deconvolution.py::test_laplace_free_energy_selects_three_peaks
    (``ji.select`` by Laplace free energy over K = 1, 2, 3 ordered components picks the true
    K = 3) and, for the rejection of an over-complete model, tests/test_nmr_cli.py::
    test_cli_run_default_data (the two-component relaxation loses to the single one on the
    real T1 series) and tests/test_linear_regression.py::
    test_selection_rate_matches_exact_free_energies (with b = 0 the model without the
    intercept is chosen at least 90 % of the time, free energies exact)."""
    t = jnp.geomspace(0.01, 50.0, 60)
    truth = {"amplitude": jnp.array([0.6, 0.4]), "time_constant": jnp.array([0.2, 5.0]), "offset": 0.0}
    y = MultiExponential(t, 2)(truth) + 0.005 * jax.random.normal(jax.random.key(7), t.shape)

    def make(k):
        return ji.Model(
            MultiExponential(t, k),
            {"amplitude": ji.priors.Uniform(0.0, 1.5, shape=k),
             "time_constant": ji.priors.LogUniform(5e-3, 5e2, shape=k, ordered=True) if k > 1
             else ji.priors.LogUniform(5e-3, 5e2, shape=1),
             "offset": ji.priors.Uniform(-0.2, 0.2)},
            ji.likelihoods.Normal(sigma=0.005),
        )

    sel = ji.select({f"K={k}": make(k) for k in (1, 2, 3)}, y, jax.random.key(0), n_starts=24,
                    n_components={"K=1": 1, "K=2": 2, "K=3": 3})
    assert sel.selected == "K=2"
    fit = sel.results["K=2"]
    np.testing.assert_allclose(fit.params["time_constant"], truth["time_constant"], rtol=0.1)
    assert sel.table[1]["K"] == 2 and sum(r["probability"] for r in sel.table) == pytest.approx(1.0)


def test_explicit_init_and_adam():
    x = jnp.linspace(0, 1, 10)
    model = ji.Model(lambda p: p["a"] * x + p["b"], {"a": ji.priors.Normal(0, 10), "b": ji.priors.Normal(0, 10)},
                     ji.likelihoods.Normal(sigma=0.1))
    post = model.condition(2 * x + 1)
    fit = ji.map_estimate(post, init=[{"a": 0.0, "b": 0.0}, {"a": 5.0, "b": -5.0}], optimizer="adam", max_steps=200)
    assert fit.stats["energies"].shape == (2,)
    assert float(fit.params["a"]) == pytest.approx(2.0, rel=1e-4)
    batched = ji.map_estimate(post, init={"a": jnp.array([0.0, 1.0, 3.0]), "b": jnp.array([1.0, 2.0, 0.5])})
    assert batched.stats["starts"].shape == (3, 2)
    assert float(batched.params["b"]) == pytest.approx(float(fit.params["b"]), rel=1e-8)
    with pytest.raises(ValueError, match="outside the prior support"):
        ji.map_estimate(ji.Model(lambda p: p["s"] * x, {"s": ji.priors.HalfNormal(1.0)},
                                 ji.likelihoods.Normal(sigma=0.1)).condition(x), init={"s": -1.0})


def test_result_save_load_and_arviz(tmp_path):
    x = jnp.linspace(0, 1, 10)
    model = ji.Model(lambda p: p["a"] * x, {"a": ji.priors.Normal(0, 10)}, ji.likelihoods.Normal(sigma=0.1))
    fit = ji.map_estimate(model.condition(2 * x), jax.random.key(0), n_starts=2)
    draws = fit.laplace.sample(jax.random.key(1), n_draws=500, n_chains=2)
    idata = draws.to_arviz()
    assert idata.posterior["a"].shape == (2, 500)
    assert "observed_data" in idata.groups() and "laplace" in idata.groups()
    for res in (fit, draws):
        path = res.save(tmp_path / f"{res.method}.nc")
        back = ji.Result.load(path)
        assert back.method == res.method and back.sample_dims == res.sample_dims
        np.testing.assert_allclose(back.params["a"], res.params["a"])
        assert float(back.log_evidence) == pytest.approx(float(res.log_evidence))
        np.testing.assert_allclose(back.laplace.covariance, res.laplace.covariance)
    with pytest.raises(ValueError, match="no result file"):
        ji.Result.load(tmp_path / "missing.nc")


def test_mode_at_prior_boundary_is_flagged():
    x = jnp.linspace(0, 1, 10)
    model = ji.Model(lambda p: p["a"] * x + p["b"],
                     {"a": ji.priors.Uniform(0.0, 1.0), "b": ji.priors.LogUniform(1e-3, 10.0)},
                     ji.likelihoods.Normal(sigma=0.01))
    fit = ji.map_estimate(model.condition(3.0 * x + 0.5), jax.random.key(0), n_starts=4)
    assert fit.laplace.at_boundary == ("a",)  # the data want a = 3 > 1; b = 0.5 is interior
    assert float(fit.params["a"]) == pytest.approx(1.0, abs=1e-3)
    assert ji.selection.caveats(fit) == ["mode at the prior boundary of a"]


def test_unconverged_map_is_a_caveat_of_its_free_energy():
    """A Laplace free energy at a point that is not a mode is marked in the selection table
    and the printed report (e.g. two relaxation components the data cannot separate)."""
    from jaxinv.report import format_table

    x = jnp.linspace(0, 1, 10)
    model = ji.Model(lambda p: p["a"] * jnp.exp(-x / p["b"]),
                     {"a": ji.priors.Normal(0.0, 10.0), "b": ji.priors.LogUniform(1e-2, 1e2)},
                     ji.likelihoods.Normal(sigma=0.01))
    y = 2.0 * jnp.exp(-x / 0.3)
    cut_short = ji.map_estimate(model.condition(y), jax.random.key(0), n_starts=2, optimizer=None, polish_steps=2)
    assert not bool(cut_short.stats["converged"][cut_short.stats["best"]])
    (caveat,) = ji.selection.caveats(cut_short)
    assert caveat.startswith("MAP search did not converge (gradient norm")
    full = ji.map_estimate(model.condition(y), jax.random.key(0), n_starts=2, optimizer=None)
    assert ji.selection.caveats(full) == []
    sel = ji.Selection(results={"cut short": cut_short, "full": full})
    assert [row["caveats"] for row in sel.table] == [[caveat], []]
    assert f"! {caveat}: the Laplace free energy of this model is unreliable" in format_table(sel)


def test_levenberg_marquardt_alone_does_not_jump_onto_a_saturated_bound():
    """A Gauss-Newton step from a poor start can jump to |logit| ~ 1e2, where a bounded
    parameter sits at its bound and its gradient underflows: a plateau the iteration never
    leaves (found on 0.16 % of a 10 000-curve batch).  The MAP search limits its steps in
    the coordinates of bounded parameters; from every start of a box in z it must reach the
    minimum."""
    from jaxinv.inference import levenberg_marquardt as lm

    delays = jnp.geomspace(0.01, 20.0, 16)
    model = ji.Model(InversionRecovery(delays),
                     {"inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
                      "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0),
                      "relaxation_time": ji.priors.LogUniform(1e-2, 1e2)},
                     ji.likelihoods.Normal(sigma=0.01))
    noise = 0.01 * np.random.default_rng(7).standard_normal(16)
    post = model.condition(1.0 - 2 * 0.95 * jnp.exp(-delays / 1.0) + noise)
    starts = jax.random.uniform(jax.random.key(3), (400, 3), minval=-4.0, maxval=4.0)
    fit = ji.map_estimate(post, init=starts, optimizer=None)
    # every start reaches the MAP found by scipy from the true values: the energy is
    # 1/2 |r / sigma|^2 + log T1 (the log-uniform prior's density is 1/T1, the uniform ones
    # are flat), written as a sum of squares with the extra residual sqrt(2 (log T1 + 10))
    from scipy.optimize import least_squares

    y, t = np.asarray(post.y), np.asarray(delays)
    residuals = lambda p: np.append((p[1] * (1 - 2 * p[0] * np.exp(-t / p[2])) - y) / 0.01,
                                    np.sqrt(2 * (np.log(p[2]) + 10)))
    reference = least_squares(residuals, [0.95, 1.0, 1.0], method="lm", xtol=1e-15, ftol=1e-15, gtol=1e-15).x
    ends = jax.vmap(post.constrain)(fit.stats["ends"])
    for k, name in enumerate(post.names):
        np.testing.assert_allclose(ends[name], reference[k], rtol=1e-6)
    np.testing.assert_allclose(fit.stats["energies"], fit.stats["energy"], rtol=0, atol=1e-8)
    assert bool(jnp.all(fit.stats["converged"])) and fit.laplace.at_boundary == ()
    assert int(jnp.max(fit.stats["polish_steps"])) < 300
    # the hazard: without the step limit many of these starts end on a plateau
    parts = lambda z: post.least_squares_parts(z, jacobian=False)
    unlimited = jax.jit(jax.vmap(lambda z: lm.run(post.map_energy, z, parts)))(starts)
    stuck = np.asarray(unlimited.energy) > float(fit.stats["energy"]) + 1.0
    assert stuck.sum() > 50 and np.all(np.max(np.abs(np.asarray(unlimited.z)[stuck]), axis=1) > 20)


def test_polish_converges_with_inferred_noise_level():
    """The noise term's curvature is indefinite for sigma in the upper part of a
    log-uniform prior; the polish must still reach a stationary point quickly."""
    x = jnp.linspace(0, 1, 200)
    y = 2 * x + 1 + 0.3 * jnp.sin(37 * x)
    model = ji.Model(lambda p: p["a"] * x + p["b"], {"a": ji.priors.Normal(0, 10), "b": ji.priors.Normal(0, 10)},
                     ji.likelihoods.Normal(sigma=ji.priors.LogUniform(1e-3, 1.0)))
    fit = ji.map_estimate(model.condition(y), jax.random.key(0), n_starts=4)
    assert float(fit.stats["gradient_norm"]) < 1e-6
    assert float(fit.stats["laplace_gradient_norm"]) < 1e-6
    assert int(jnp.max(fit.stats["polish_steps"])) < 200
    resid_sd = float(jnp.sqrt(jnp.mean((y - fit.params["a"] * x - fit.params["b"]) ** 2)))
    assert float(fit.params["sigma"]) == pytest.approx(resid_sd, rel=1e-2)


def test_laplace_error_bars_are_calibrated():
    """Over repeated synthetic experiments the 90% Laplace interval covers the true T1
    about 90% of the time (binomial sd 0.039 for 60 trials; half-size error bars
    would give ~59%, doubled ones ~100%)."""
    tau = jnp.geomspace(0.02, 20.0, 12)
    truth = {"inversion_efficiency": 0.9, "equilibrium_magnetization": 1.0, "relaxation_time": 2.0}
    clean = InversionRecovery(tau)(truth)
    model = ji.Model(
        InversionRecovery(tau),
        {"inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
         "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0),
         "relaxation_time": ji.priors.LogUniform(1e-2, 1e2)},
        ji.likelihoods.Normal(sigma=0.02),
    )
    covered = []
    for i in range(60):
        y = clean + 0.02 * jax.random.normal(jax.random.key(1000 + i), tau.shape)
        fit = ji.map_estimate(model.condition(y), jax.random.key(i), n_starts=4)
        err = abs(float(fit.params["relaxation_time"]) - 2.0)
        covered.append(err < 1.6449 * float(fit.laplace.standard_errors["relaxation_time"]))
    assert 0.78 <= np.mean(covered) <= 0.99
