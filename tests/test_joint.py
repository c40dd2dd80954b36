"""Data integration: ji.likelihoods.Joint (several measurements, one posterior).

Reference for the exact tests: two linear-Gaussian measurements y_m = X_m theta + e_m,
e_m ~ N(0, diag(s_m^2)), theta ~ N(m0, S0).  With A the stacked design, s the
stacked noise and y the concatenated data (Bishop 2006, PRML eqs. 2.113-2.117, 3.86):

    p(y)          = N(y; A m0, diag(s^2) + A S0 A^T)
    Cov(theta|y)  = (S0^-1 + A^T diag(s^-2) A)^-1
    E(theta|y)    = Cov (S0^-1 m0 + A^T diag(s^-2) y)
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxinv as ji

# -- the linear-Gaussian pair -----------------------------------------------------
# part "nmr" reads a (shared) and b (2-vector); part "xrd" reads a (shared) and c
RNG = np.random.default_rng(20240611)
X1 = np.column_stack([np.ones(12), np.linspace(-1, 1, 12), np.linspace(-1, 1, 12) ** 2])  # [a, b0, b1]
X2 = np.column_stack([np.linspace(0, 2, 9), np.ones(9)])  # [a, c]
S1 = 0.3
S2 = np.linspace(0.1, 0.4, 9)  # known per-point errors
M0 = np.array([1.0, 0.0, 0.5, -1.0])  # prior means of [a, b0, b1, c]
SD0 = np.array([2.0, 1.0, 1.0, 0.5])
THETA = np.array([0.7, -0.4, 0.9, -1.2])
Y1 = X1 @ THETA[:3] + S1 * RNG.standard_normal(12)
Y2 = X2 @ THETA[[0, 3]] + S2 * RNG.standard_normal(9)


def f1(p):
    return p["a"] * X1[:, 0] + X1[:, 1:] @ p["b"]


def f2(p):
    return p["a"] * X2[:, 0] + p["c"] * X2[:, 1]


PRIORS = {
    "a": ji.priors.Normal(M0[0], SD0[0]),
    "b": ji.priors.Normal(M0[1:3], SD0[1:3]),
    "c": ji.priors.Normal(M0[3], SD0[3]),
}


def joint_model(**data):
    joint = ji.likelihoods.Joint({
        "nmr": (f1, ji.likelihoods.Normal(sigma=S1), data.get("nmr", Y1)),
        "xrd": (f2, ji.likelihoods.Normal(sigma=S2), data.get("xrd", Y2)),
    })
    return ji.Model(None, PRIORS, joint)


def exact_gaussian():
    """Stacked design, evidence, posterior mean and covariance of [a, b0, b1, c]."""
    A = np.zeros((21, 4))
    A[:12, :3] = X1
    A[12:, 0] = X2[:, 0]
    A[12:, 3] = X2[:, 1]
    s = np.concatenate([np.full(12, S1), S2])
    y = np.concatenate([Y1, Y2])
    S0 = np.diag(SD0**2)
    log_evidence = stats.multivariate_normal(A @ M0, np.diag(s**2) + A @ S0 @ A.T).logpdf(y)
    cov = np.linalg.inv(np.linalg.inv(S0) + A.T @ (A / s[:, None] ** 2))
    mean = cov @ (np.linalg.solve(S0, M0) + A.T @ (y / s**2))
    return log_evidence, mean, cov


@pytest.fixture(scope="module")
def joint_fit():
    post = joint_model().condition()
    return post, ji.map_estimate(post, jax.random.key(0), n_starts=4)


def test_laplace_evidence_and_covariance_are_exact_for_linear_gaussian(joint_fit):
    post, fit = joint_fit
    log_evidence, mean, cov = exact_gaussian()
    assert post.n_data == 21 and post.least_squares
    assert float(fit.log_evidence) == pytest.approx(log_evidence, abs=1e-8)
    # Normal priors: z is theta itself, so the Laplace covariance is Cov(theta | y)
    np.testing.assert_allclose(np.asarray(fit.laplace.covariance), cov, rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(np.asarray(fit.laplace.mode), mean, rtol=1e-9, atol=1e-12)
    got = np.concatenate([np.ravel(fit.params[k]) for k in ("a", "b", "c")])
    np.testing.assert_allclose(got, mean, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(float(fit.laplace.standard_errors["a"]), np.sqrt(cov[0, 0]), rtol=1e-9)


def test_posterior_pieces_are_per_measurement(joint_fit):
    post, fit = joint_fit
    z = post.unconstrain(fit.params)
    pred = post.predict(z)
    assert list(pred) == ["nmr", "xrd"] and pred["nmr"].shape == (12,) and pred["xrd"].shape == (9,)
    pointwise = post.pointwise_log_likelihood(z)
    assert pointwise.shape == (21,)
    # concatenated in measurement order, each the Gaussian log density of its datum
    expected = np.concatenate([stats.norm(np.asarray(pred["nmr"]), S1).logpdf(Y1),
                               stats.norm(np.asarray(pred["xrd"]), S2).logpdf(Y2)])
    np.testing.assert_allclose(np.asarray(pointwise), expected, rtol=1e-12)
    r, g = post.least_squares_parts(z)
    assert r.shape == (21,)
    assert float(0.5 * jnp.sum(r**2) + g) == pytest.approx(float(post.energy(z)), rel=1e-12)
    assert float(post.rss(z)) == pytest.approx(float(np.sum((Y1 - pred["nmr"]) ** 2) + np.sum((Y2 - pred["xrd"]) ** 2)))
    # data given to condition() replace the Joint's, one measurement at a time
    other = joint_model().condition({"xrd": Y2 + 1.0})
    np.testing.assert_array_equal(np.asarray(other.y["xrd"]), Y2 + 1.0)
    np.testing.assert_array_equal(np.asarray(other.y["nmr"]), Y1)
    assert float(other.log_density(z)) != pytest.approx(float(post.log_density(z)))


def test_integrating_data_shrinks_the_shared_parameter(joint_fit):
    _, both = joint_fit
    # each measurement alone, its Laplace approximation (exact: linear-Gaussian) at its exact mode
    alone = {
        "nmr": (ji.Model(f1, {"a": PRIORS["a"], "b": PRIORS["b"]}, ji.likelihoods.Normal(sigma=S1)).condition(Y1),
                X1, np.full(12, S1), Y1, [0, 1, 2]),
        "xrd": (ji.Model(f2, {"a": PRIORS["a"], "c": PRIORS["c"]}, ji.likelihoods.Normal(sigma=S2)).condition(Y2),
                X2, S2, Y2, [0, 3]),
    }
    sd = {}
    for name, (post, X, s, y, idx) in alone.items():
        _, mode, cov = exact_alone(X, s, y, idx)
        sd[name] = float(ji.laplace(post, mode).standard_errors["a"])
        assert sd[name] == pytest.approx(np.sqrt(cov[0, 0]), rel=1e-9)
    sd_both = float(both.laplace.standard_errors["a"])
    assert sd_both < 0.9 * min(sd.values()), (sd_both, sd)


def exact_alone(X, s, y, idx):
    """Evidence, posterior mean and covariance of one measurement alone."""
    S0 = np.diag(SD0[idx] ** 2)
    cov = np.linalg.inv(np.linalg.inv(S0) + X.T @ (X / s[:, None] ** 2))
    mean = cov @ (np.linalg.solve(S0, M0[idx]) + X.T @ (y / s**2))
    log_evidence = stats.multivariate_normal(X @ M0[idx], np.diag(s**2) + X @ S0 @ X.T).logpdf(y)
    return log_evidence, mean, cov


def test_single_part_joint_equals_plain_model():
    priors = {"a": PRIORS["a"], "c": PRIORS["c"]}
    plain = ji.Model(f2, priors, ji.likelihoods.Normal(sigma=S2)).condition(Y2)
    single = ji.Model(None, priors, ji.likelihoods.Joint({"xrd": (f2, ji.likelihoods.Normal(sigma=S2), Y2)}))
    single = single.condition()
    fit = ji.map_estimate(single, jax.random.key(4), n_starts=4)
    log_evidence, mean, cov = exact_alone(X2, S2, Y2, [0, 3])
    # the single-part Joint's MAP is the plain model's (closed-form) mode ...
    np.testing.assert_allclose([float(fit.params["a"]), float(fit.params["c"])], mean, rtol=1e-10)
    # ... where both give the same density, evidence and covariance
    a = ji.laplace(plain, mean)
    assert float(fit.log_evidence) == pytest.approx(float(a.log_evidence), rel=1e-12)
    assert float(a.log_evidence) == pytest.approx(log_evidence, abs=1e-9)
    np.testing.assert_allclose(fit.laplace.covariance, a.covariance, rtol=1e-10)
    for z in (jnp.asarray(mean), jnp.array([0.3, -2.0])):
        assert float(single.log_density(z)) == pytest.approx(float(plain.log_density(z)), rel=1e-14)


def test_single_part_joint_has_the_plain_log_density():
    """Nonlinear forward model, inferred noise: same parameters, densities, residuals."""
    t = jnp.linspace(0.0, 5.0, 25)

    def forward(p):
        return p["amplitude"] * jnp.exp(-t / p["tau"]) + 0.2

    priors = {"tau": ji.priors.LogUniform(0.1, 10.0), "amplitude": ji.priors.Uniform(0.5, 5.0)}
    y = forward({"tau": 1.3, "amplitude": 2.0}) + 0.05 * jnp.sin(5.0 * t)
    noise = ji.likelihoods.Normal(sigma=ji.priors.HalfNormal(1.0), name="sigma")
    plain = ji.Model(forward, priors, noise).condition(y)
    single = ji.Model(None, priors, ji.likelihoods.Joint({"only": (forward, noise, y)})).condition()
    assert plain.names == single.names and plain.n_data == single.n_data
    for z in plain.init(jax.random.key(3), 2):
        assert float(single.log_density(z)) == pytest.approx(float(plain.log_density(z)), rel=1e-13)
        r1, g1 = plain.least_squares_parts(z)
        r2, g2 = single.least_squares_parts(z)
        np.testing.assert_allclose(r1, r2, rtol=1e-13)
        np.testing.assert_allclose(single.pointwise_log_likelihood(z), plain.pointwise_log_likelihood(z), rtol=1e-13)


# -- unknown noise per measurement --------------------------------------------------
N_NOISE = 200
T_NOISE = np.linspace(0.0, 3.0, N_NOISE)
X_NOISE = np.linspace(-1.0, 1.0, N_NOISE)
SIGMA_A, SIGMA_B = 0.01, 1.0  # a hundredfold apart
EPS_A = SIGMA_A * np.random.default_rng(7).standard_normal(N_NOISE)
EPS_B = SIGMA_B * np.random.default_rng(8).standard_normal(N_NOISE)


def noise_model():
    """Shared slope k, seen by a precise line (a) and a noisy one (b); sigma_a
    declared in its likelihood, sigma_b in the model's priors (both declaration styles)."""
    fa = lambda p: p["amplitude"] - p["k"] * T_NOISE
    fb = lambda p: 2.0 * p["k"] * X_NOISE + p["offset"]
    ya = fa({"amplitude": 1.5, "k": 0.8}) + EPS_A
    yb = fb({"k": 0.8, "offset": 0.3}) + EPS_B
    joint = ji.likelihoods.Joint({
        "a": (fa, ji.likelihoods.Normal(sigma=ji.priors.HalfNormal(2.0), name="sigma_a"), ya),
        "b": (fb, ji.likelihoods.Normal(sigma="sigma_b"), yb),
    })
    priors = {"k": ji.priors.Normal(0.0, 5.0), "amplitude": ji.priors.Normal(0.0, 5.0),
              "offset": ji.priors.Normal(0.0, 5.0), "sigma_b": ji.priors.HalfNormal(2.0)}
    return ji.Model(None, priors, joint)


def test_each_measurement_learns_its_own_noise_level():
    post = noise_model().condition()
    assert post.names == ("k", "amplitude", "offset", "sigma_b", "sigma_a")
    fit = ji.map_estimate(post, jax.random.key(5), n_starts=8)
    for name, eps, truth in (("sigma_a", EPS_A, SIGMA_A), ("sigma_b", EPS_B, SIGMA_B)):
        got = float(fit.params[name])
        # deterministic: the MAP noise level is the rms residual sqrt(RSS/n) (the weak half-normal
        # prior shifts it by < 1e-4 relative), which differs from the rms of the actual noise
        # draws by O(p/n) ~ 1%
        assert got == pytest.approx(np.sqrt(np.mean(eps**2)), rel=0.03), name
        # statistical: sd of a noise-level estimate from n residuals is sigma/sqrt(2n) (5% here);
        # 4 such sds would still separate levels differing by much less than 100x
        assert abs(got - truth) < 4 * truth / np.sqrt(2 * N_NOISE), (name, got)
    # chains start from draws of the Laplace approximation: from prior draws (sigma_a ~ 1,
    # a hundred times its value) the early warmup windows adapt to a region whose scales
    # differ by orders of magnitude, and a chain can leave warmup not yet converged
    init = fit.laplace.sample_unconstrained(jax.random.key(11), (4,))
    res = ji.sample(post, jax.random.key(6), method="nuts", n_chains=4, n_warmup=400, n_draws=400, init=init)
    assert int(res.stats["divergences"]) == 0 and float(res.stats["rhat_max"]) < 1.02
    for name, truth in (("sigma_a", SIGMA_A), ("sigma_b", SIGMA_B)):
        draws = np.asarray(res.params[name])
        assert abs(draws.mean() - truth) < 4 * truth / np.sqrt(2 * N_NOISE), name
        # the posterior sd itself is ~ sigma/sqrt(2n)
        assert draws.std() == pytest.approx(truth / np.sqrt(2 * N_NOISE), rel=0.3), name


def test_nuts_on_joint_matches_exact_gaussian_posterior():
    post = joint_model().condition()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no R-hat or divergence warnings
        res = ji.sample(post, jax.random.key(7), method="nuts", n_chains=4, n_warmup=400, n_draws=500)
    _, mean, cov = exact_gaussian()
    draws = np.concatenate([np.asarray(res.params["a"])[..., None], np.asarray(res.params["b"]),
                            np.asarray(res.params["c"])[..., None]], axis=-1).reshape(-1, 4)
    ess = float(res.stats["ess_min"])
    assert ess > 300
    mcse = np.sqrt(np.diag(cov) / ess)  # conservative: the smallest ESS for every component
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * mcse), (draws.mean(0) - mean) / mcse
    np.testing.assert_allclose(draws.std(0), np.sqrt(np.diag(cov)), rtol=0.15)
    assert isinstance(res.observed, dict) and list(res.observed) == ["nmr", "xrd"]
    # pointwise log-likelihood of every draw: concatenated over measurements, usable for LOO
    import arviz as az

    z = jax.vmap(jax.vmap(post.unconstrain))(res.params)
    loglik = np.asarray(jax.vmap(jax.vmap(post.pointwise_log_likelihood))(z))
    assert loglik.shape == (4, 500, 21)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loo = az.loo(az.from_dict(posterior={"a": np.asarray(res.params["a"])}, log_likelihood={"y": loglik}))
    assert np.isfinite(float(loo.elpd_loo))


def test_hmc_and_laplace_draws_on_a_joint():
    post = joint_model().condition()
    _, mean, _ = exact_gaussian()
    lap = ji.sample(post, jax.random.key(8), method="laplace", n_draws=4000, n_starts=4)
    assert lap.log_evidence == pytest.approx(exact_gaussian()[0], abs=1e-8)
    assert float(np.mean(lap.params["a"])) == pytest.approx(mean[0], abs=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        hmc = ji.sample(post, jax.random.key(9), method="hmc", n_chains=2, n_warmup=200, n_draws=200)
    assert np.all(np.isfinite(np.asarray(hmc.params["b"]))) and hmc.params["b"].shape == (2, 200, 2)


def test_save_load_round_trip_with_dict_observed_data(joint_fit, tmp_path):
    _, fit = joint_fit
    idata = fit.to_arviz()
    assert set(idata.observed_data.data_vars) == {"nmr", "xrd"}
    np.testing.assert_array_equal(idata.observed_data["xrd"].values, Y2)
    back = ji.Result.load(fit.save(tmp_path / "joint.nc"))
    assert list(back.observed) == ["nmr", "xrd"]
    np.testing.assert_array_equal(np.asarray(back.observed["nmr"]), Y1)
    np.testing.assert_array_equal(np.asarray(back.observed["xrd"]), Y2)
    for k in fit.params:
        np.testing.assert_array_equal(np.asarray(back.params[k]), np.asarray(fit.params[k]))
    assert float(back.log_evidence) == float(fit.log_evidence)
    # a plain model still writes a single variable y
    plain = ji.Model(f2, {"a": PRIORS["a"], "c": PRIORS["c"]}, ji.likelihoods.Normal(sigma=S2)).condition(Y2)
    res = ji.laplace(plain, jnp.zeros(2)).sample(jax.random.key(2), n_draws=10)
    back = ji.Result.load(res.save(tmp_path / "plain.nc"))
    np.testing.assert_array_equal(np.asarray(back.observed), Y2)


def test_non_least_squares_part_falls_back_to_exact_curvature():
    """A StudentT part: no least-squares form for the whole Joint; MAP still finds the mode."""
    joint = ji.likelihoods.Joint({
        "nmr": (f1, ji.likelihoods.Normal(sigma=S1), Y1),
        "xrd": (f2, ji.likelihoods.StudentT(df=4.0, sigma=0.3), Y2),
    })
    post = ji.Model(None, PRIORS, joint).condition()
    assert not post.least_squares
    with pytest.raises(ValueError, match="least-squares"):
        post.least_squares_parts(jnp.zeros(post.dim))
    fit = ji.map_estimate(post, jax.random.key(10), n_starts=4)
    assert float(fit.stats["gradient_norm"]) < 1e-6
    z = post.unconstrain(fit.params)
    p = post.constrain(z)
    expected = stats.norm(f1(p), S1).logpdf(Y1).sum() + stats.t(4.0, f2(p), 0.3).logpdf(Y2).sum()
    assert float(post.log_likelihood(z)) == pytest.approx(expected, rel=1e-12)


def test_errors_name_the_measurement():
    with pytest.raises(ValueError, match="measurement 'xrd'.*shape"):
        joint_model(xrd=Y2[:5]).condition()
    bad = Y1.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="measurement 'nmr'.*non-finite"):
        joint_model(nmr=bad).condition()
    with pytest.raises(ValueError, match="measurement 'xrd'.*non-finite"):
        joint_model().condition({"xrd": np.where(np.arange(9) == 0, np.inf, Y2)})
    # a forward model reading a parameter without prior
    joint = ji.likelihoods.Joint({"nmr": (f1, ji.likelihoods.Normal(sigma=S1), Y1),
                                  "xrd": (f2, ji.likelihoods.Normal(sigma=S2), Y2)})
    with pytest.raises(ValueError, match="measurement 'xrd'.*reads parameter 'c', which has no prior"):
        ji.Model(None, {"a": PRIORS["a"], "b": PRIORS["b"]}, joint).condition()
    # a noise level named but never given a prior, or with a prior allowing sigma <= 0
    lik = lambda sigma: ji.likelihoods.Joint({"nmr": (f1, ji.likelihoods.Normal(sigma=S1), Y1),
                                              "xrd": (f2, ji.likelihoods.Normal(sigma=sigma, name="s_xrd"), Y2)})
    with pytest.raises(ValueError, match="measurement 'xrd'.*'s_xrd'.*no prior"):
        ji.Model(None, PRIORS, lik("s_xrd"))
    with pytest.raises(ValueError, match="measurement 'xrd'.*'s_xrd' must be positive"):
        ji.Model(None, PRIORS, lik(ji.priors.Normal(0.0, 1.0)))
    with pytest.raises(ValueError, match="measurement 'xrd'.*'s_xrd' must be positive"):
        ji.Model(None, {**PRIORS, "s_xrd": ji.priors.Uniform(-1.0, 1.0)}, lik("s_xrd"))
    with pytest.raises(ValueError, match="positive"):
        ji.likelihoods.Normal(sigma=-0.1)  # a fixed negative sigma fails where it is written
    # per-point errors that do not fit the data
    bad_sigma = ji.likelihoods.Joint({"nmr": (f1, ji.likelihoods.Normal(sigma=np.ones(5)), Y1)})
    with pytest.raises(ValueError, match="measurement 'nmr'.*broadcast"):
        ji.Model(None, {"a": PRIORS["a"], "b": PRIORS["b"]}, bad_sigma).condition()
    # data of the wrong kind or for unknown / missing measurements
    with pytest.raises(ValueError, match="dict"):
        joint_model().condition(Y1)
    with pytest.raises(ValueError, match="unknown measurement"):
        joint_model().condition({"ir": Y1})
    no_data = ji.Model(None, PRIORS, ji.likelihoods.Joint({"nmr": (f1, ji.likelihoods.Normal(sigma=S1)),
                                                          "xrd": (f2, ji.likelihoods.Normal(sigma=S2), Y2)}))
    with pytest.raises(ValueError, match=r"no data for measurement\(s\) \['nmr'\]"):
        no_data.condition()
    assert no_data.condition({"nmr": Y1}).n_data == 21
    # two parts declaring one inferred noise name; forward given beside a Joint
    with pytest.raises(ValueError, match="both declare a noise parameter named 'sigma'"):
        ji.likelihoods.Joint({"nmr": (f1, ji.likelihoods.Normal(sigma=ji.priors.HalfNormal(1.0)), Y1),
                              "xrd": (f2, ji.likelihoods.Normal(sigma=ji.priors.HalfNormal(1.0)), Y2)})
    with pytest.raises(TypeError, match="forward=None"):
        ji.Model(f1, PRIORS, joint)
    with pytest.raises(TypeError, match="measurement 'nmr'"):
        ji.likelihoods.Joint({"nmr": (f1, "normal", Y1)})


def test_shared_noise_parameter_by_name():
    """Two measurements on one instrument may share one inferred noise level."""
    joint = ji.likelihoods.Joint({"nmr": (f1, ji.likelihoods.Normal(sigma="sigma"), Y1),
                                  "xrd": (f2, ji.likelihoods.Normal(sigma="sigma"), Y2)})
    post = ji.Model(None, {**PRIORS, "sigma": ji.priors.LogUniform(1e-3, 10.0)}, joint).condition()
    assert post.names == ("a", "b", "c", "sigma")
    p = {"a": 0.7, "b": jnp.array([-0.4, 0.9]), "c": -1.2, "sigma": 0.25}
    z = post.unconstrain(p)
    pred = post.predict(z)
    expected = stats.norm(pred["nmr"], 0.25).logpdf(Y1).sum() + stats.norm(pred["xrd"], 0.25).logpdf(Y2).sum()
    assert float(post.log_likelihood(z)) == pytest.approx(expected, rel=1e-12)
