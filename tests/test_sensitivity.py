"""jaxinv.sensitivity: implicit MAP derivatives, posterior-expectation derivatives,
Fisher information, expected information gain and an NMR design optimisation.

References: finite differences of MAPs re-solved by ``ji.map_estimate`` (nonlinear
models), closed forms of the conjugate linear-Gaussian model (everything else).
Measured values are quoted next to each tolerance."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd
import pytest

import jaxinv as ji
from jaxinv import sensitivity as sens
from jaxinv.physics import InversionRecovery

# -- NMR inversion recovery: M(t) = M_eq (1 - 2 f exp(-t/T1)), known noise --------------------
N_TIMES, T_MIN, T_MAX, SIGMA = 12, 5e-3, 20.0, 0.01
TRUTH = {"inversion_efficiency": 0.95, "equilibrium_magnetization": 1.0, "relaxation_time": 1.3}


def nmr_model(t, t1_range=(1e-3, 1e2), f_range=(0.0, 1.0), m_range=(0.0, 2.0)):
    priors = {
        "inversion_efficiency": ji.priors.Uniform(*f_range),
        "equilibrium_magnetization": ji.priors.Uniform(*m_range),
        "relaxation_time": ji.priors.LogUniform(*t1_range),
    }
    return ji.Model(InversionRecovery(t), priors, ji.likelihoods.Normal(sigma=SIGMA))


def with_times(model, t):
    """The same model measured at other times (the times are a field of the forward module)."""
    return eqx.tree_at(lambda m: m.forward.t, model, t)


@pytest.fixture(scope="module")
def nmr():
    t = jnp.geomspace(0.01, 10.0, N_TIMES)
    model = nmr_model(t)
    y = model.forward(TRUTH) + SIGMA * jax.random.normal(jax.random.key(1), (N_TIMES,))
    inputs = {"y": y, "t": t}

    def make_posterior(u):
        return with_times(model, u["t"]).condition(u["y"])

    fit = ji.map_estimate(make_posterior(inputs), init=TRUTH)
    return make_posterior, inputs, fit


def refit(make_posterior, inputs, start):
    return ji.map_estimate(make_posterior(inputs), init=start).params


def central_difference(make_posterior, inputs, direction, h, start):
    up = refit(make_posterior, jax.tree.map(lambda a, d: a + h * d, inputs, direction), start)
    down = refit(make_posterior, jax.tree.map(lambda a, d: a - h * d, inputs, direction), start)
    return {k: (up[k] - down[k]) / (2 * h) for k in up}


def directional(jac, direction):
    return {k: sum(jnp.sum(j * d) for j, d in zip(jax.tree.leaves(jac[k]), jax.tree.leaves(direction))) for k in jac}


def test_nmr_map_jacobian_matches_refitted_finite_differences(nmr):
    make_posterior, inputs, fit = nmr
    jac = sens.map_jacobian(make_posterior, inputs, fit)
    assert jac["relaxation_time"]["t"].shape == (N_TIMES,)
    k1, k2 = jax.random.split(jax.random.key(2))
    zeros = jnp.zeros(N_TIMES)
    directions = {
        # data: a random direction (data units); times: random relative changes
        "y": {"y": jax.random.normal(k1, (N_TIMES,)), "t": zeros},
        "t": {"y": zeros, "t": inputs["t"] * jax.random.normal(k2, (N_TIMES,))},
    }
    worst = {}
    for which, direction in directions.items():
        fd = central_difference(make_posterior, inputs, direction, 1e-4, fit.params)
        implicit = directional(jac, direction)
        worst[which] = max(float(abs(fd[k] - implicit[k]) / abs(implicit[k])) for k in fd)
    print("largest relative difference, implicit vs refitted central differences:", worst)
    # measured: 2e-7 (data), 6e-9 (times) at h = 1e-4; limited by the refits' tolerance
    assert max(worst.values()) < 1e-5, worst


def test_differentiable_map_reverse_mode_and_jit(nmr):
    make_posterior, inputs, fit = nmr
    jac = sens.map_jacobian(make_posterior, inputs, fit)
    z0 = fit.stats["starts"][0]  # the truth: the solve must move to the MAP
    t1 = lambda u: sens.differentiable_map(make_posterior, u, z0)["relaxation_time"]
    value, grad = jax.jit(jax.value_and_grad(t1))(inputs)
    np.testing.assert_allclose(value, fit.params["relaxation_time"], rtol=1e-9)
    for leaf in ("y", "t"):
        # measured: agreement to 1e-15 relative
        np.testing.assert_allclose(grad[leaf], jac["relaxation_time"][leaf], rtol=1e-8, atol=1e-12)


def test_map_jacobian_vmapped_over_datasets(nmr):
    make_posterior, inputs, fit = nmr
    noise = SIGMA * jax.random.normal(jax.random.key(3), (3, N_TIMES))
    many = {"y": inputs["y"] + noise, "t": jnp.broadcast_to(inputs["t"], (3, N_TIMES))}
    datasets = [{"y": many["y"][i], "t": many["t"][i]} for i in range(3)]
    fits = [ji.map_estimate(make_posterior(u), init=TRUTH) for u in datasets]
    z_many = jnp.stack([f.stats["ends"][f.stats["best"]] for f in fits])
    jac = jax.vmap(lambda u, z: sens.map_jacobian(make_posterior, u, z))(many, z_many)
    assert jac["relaxation_time"]["y"].shape == (3, N_TIMES)
    one = sens.map_jacobian(make_posterior, datasets[1], z_many[1])
    np.testing.assert_allclose(jac["relaxation_time"]["y"][1], one["relaxation_time"]["y"], rtol=1e-10)


def test_misra1a_jacobian_matches_resolved_finite_differences():
    """NIST StRD Misra1a, y = b1 (1 - exp(-b2 x)), flat priors (least squares).  The
    perturbed problems are re-solved by the Levenberg-Marquardt solve of
    ``implicit_mode`` (whose forward pass is checked against the certified values),
    which compiles in a fraction of ``map_estimate``'s time."""
    from nist import load

    p = load("Misra1a")
    priors = {"b1": ji.priors.Flat(), "b2": ji.priors.Flat()}

    def make_posterior(u):
        forward = lambda th: th["b1"] * (1 - jnp.exp(-th["b2"] * u["x"]))
        return ji.Model(forward, priors, ji.likelihoods.Normal(sigma=1.0)).condition(u["y"])

    inputs = {"y": jnp.asarray(p.y), "x": jnp.asarray(p.x)}
    solve = jax.jit(lambda u, z0: sens.implicit_mode(make_posterior, u, z0))
    start = jnp.asarray(p.starts[1])  # NIST's second starting point
    z_map = solve(inputs, start)
    np.testing.assert_allclose(z_map, p.certified, rtol=1e-7)
    jac = sens.map_jacobian(make_posterior, inputs, z_map)
    direction = {"y": jax.random.normal(jax.random.key(4), p.y.shape), "x": jnp.zeros(p.x.shape)}
    h = 1e-2
    up = solve({"y": inputs["y"] + h * direction["y"], "x": inputs["x"]}, z_map)
    down = solve({"y": inputs["y"] - h * direction["y"], "x": inputs["x"]}, z_map)
    fd = {"b1": (up[0] - down[0]) / (2 * h), "b2": (up[1] - down[1]) / (2 * h)}
    implicit = directional(jac, direction)
    rel = max(float(abs(fd[k] - implicit[k]) / abs(implicit[k])) for k in fd)
    print("Misra1a largest relative difference:", rel)
    assert rel < 1e-5, rel  # measured 2e-9


def test_bad_inputs_give_clear_errors(nmr):
    make_posterior, inputs, fit = nmr
    z_map = fit.stats["ends"][fit.stats["best"]]
    with pytest.raises(ValueError, match="not converged: gradient norm"):
        sens.map_jacobian(make_posterior, inputs, z_map + 0.01)
    with pytest.raises(ValueError, match="not converged"):  # the fit belongs to other data
        sens.map_jacobian(make_posterior, {**inputs, "y": inputs["y"] + 0.05}, fit)
    with pytest.raises(TypeError, match=r"inputs\['n'\] has dtype int"):
        sens.map_jacobian(lambda u: make_posterior(inputs), {**inputs, "n": jnp.arange(3)}, fit)
    with pytest.raises(ValueError, match="shape"):
        sens.map_jacobian(make_posterior, inputs, z_map[:2])
    with pytest.raises(TypeError, match="must return a jaxinv Posterior"):
        sens.map_jacobian(lambda u: make_posterior(u).model, inputs, fit)
    with pytest.raises((eqx.EquinoxRuntimeError, jax.errors.JaxRuntimeError), match="not a converged mode"):
        jax.jit(lambda u: sens.map_jacobian(make_posterior, u, z_map + 0.01))(inputs)


# -- conjugate linear-Gaussian model: theta ~ N(m0, S0), y ~ N(X theta, sigma^2 I) ------------------
X = jnp.stack([jnp.ones(6), jnp.linspace(-1.0, 2.0, 6)], axis=1)
LIN_SIGMA, M0, S0 = 0.5, jnp.array([0.5, -0.3]), jnp.array([1.0, 2.0])


def linear_forward(p):
    return X @ p["theta"]


def linear_posterior(u):
    # a numpyro Normal: ji.priors.Normal validates its scale with bool(), which fails under tracing
    prior = npd.Normal(u["prior_mean"], S0)
    return ji.Model(linear_forward, {"theta": prior}, ji.likelihoods.Normal(LIN_SIGMA)).condition(u["y"])


@pytest.fixture(scope="module")
def linear():
    y = linear_forward({"theta": jnp.array([1.0, 0.7])}) + LIN_SIGMA * jax.random.normal(jax.random.key(0), (6,))
    precision0 = jnp.diag(1.0 / S0**2)
    cov = jnp.linalg.inv(X.T @ X / LIN_SIGMA**2 + precision0)
    mean = cov @ (X.T @ y / LIN_SIGMA**2 + precision0 @ M0)
    exact = {"y": cov @ X.T / LIN_SIGMA**2, "prior_mean": cov @ precision0}  # d mean / d input
    return {"y": y, "prior_mean": M0}, mean, cov, exact


def test_linear_map_jacobian_is_exact(linear):
    inputs, mean, _, exact = linear
    jac = sens.map_jacobian(linear_posterior, inputs, {"theta": mean})
    for leaf in ("y", "prior_mean"):
        np.testing.assert_allclose(jac["theta"][leaf], exact[leaf], atol=1e-12)  # measured 3e-17


def quantities(p):
    return {"linear": p["theta"], "square": p["theta"][0] ** 2}


def exact_quantity_derivatives(mean, exact):
    # E[theta_0^2] = mean_0^2 + cov_00, cov independent of y and m0
    return {
        "linear": exact,
        "square": {leaf: 2.0 * mean[0] * exact[leaf][0] for leaf in exact},
    }


def z_scores(estimate, se, reference):
    return jax.tree.leaves(jax.tree.map(lambda e, s, r: float(jnp.max(jnp.abs(e - r) / s)), estimate, se, reference))


def test_score_function_gradient_matches_conjugate_derivative(linear):
    inputs, mean, cov, exact = linear
    n = 4000
    draws = {"theta": mean + jax.random.normal(jax.random.key(1), (n, 2)) @ jnp.linalg.cholesky(cov).T}
    gradient, se = sens.score_function_gradient(linear_posterior, inputs, draws, quantities)
    reference = exact_quantity_derivatives(mean, exact)
    # measured: largest |error| / s.e. = 1.65 over 28 entries (s.e. up to 0.014 for theta_0^2 w.r.t. y)
    assert max(z_scores(gradient, se, reference)) < 4.0


def test_laplace_reparameterisation_gradient_matches_conjugate_derivative(linear):
    inputs, mean, _, exact = linear
    gradient, se = sens.laplace_expectation_gradient(linear_posterior, inputs, mean, quantities, jax.random.key(2), 1000)
    reference = exact_quantity_derivatives(mean, exact)
    for leaf in ("y", "prior_mean"):  # linear f: the pathwise derivative is exact for every draw
        np.testing.assert_allclose(gradient["linear"][leaf], exact[leaf], atol=1e-12)
    # measured: largest |error| / s.e. = 0.34 (s.e. up to 0.0037)
    assert max(z_scores(gradient["square"], se["square"], reference["square"])) < 4.0


def test_fisher_information_and_cramer_rao_linear(linear):
    inputs, *_ = linear
    model = linear_posterior(inputs).model
    params = {"theta": jnp.array([1.0, 0.7])}
    exact = X.T @ X / LIN_SIGMA**2
    fisher = sens.fisher_information(model, params)
    np.testing.assert_allclose(fisher, exact, rtol=1e-12)
    bound = sens.cramer_rao_bound(model, fisher)["theta"]
    np.testing.assert_allclose(bound, jnp.sqrt(jnp.diag(jnp.linalg.inv(exact))), rtol=1e-12)
    mc, se = sens.score_fisher_information(model, params, jax.random.key(3), 4000)
    assert float(jnp.max(jnp.abs(mc - exact) / se)) < 4.0  # measured 1.6


def test_expected_information_gain_linear_gaussian(linear):
    inputs, *_ = linear
    model = linear_posterior(inputs).model
    exact = 0.5 * jnp.linalg.slogdet(jnp.eye(2) + jnp.diag(S0**2) @ X.T @ X / LIN_SIGMA**2)[1]  # 3.9256 nats
    key = jax.random.key(4)
    fisher, _ = sens.expected_information_gain(model, key, 64, method="fisher")
    np.testing.assert_allclose(fisher, exact, rtol=1e-10)  # exact for a linear-Gaussian model
    laplace, se = sens.expected_information_gain(model, key, 512, method="laplace")
    assert abs(float(laplace - exact)) < 4 * float(se)  # measured 3.892 +- 0.042
    nested, se = sens.expected_information_gain(model, key, 512, method="nested", n_inner=4096)
    assert abs(float(nested - exact)) < 4 * float(se)  # measured 3.976 +- 0.063


# -- Bayesian design of inversion-recovery delays ---------------------------------------------------
def delays(logits):
    """Times within [T_MIN, T_MAX], log-scaled: t = t_min (t_max/t_min)^sigmoid(a)."""
    return T_MIN * (T_MAX / T_MIN) ** jax.nn.sigmoid(logits)


def delay_logits(t):
    x = jnp.log(t / T_MIN) / jnp.log(T_MAX / T_MIN)
    return jnp.log(x / (1.0 - x))


def log_t1(p):
    return jnp.log(p["relaxation_time"])


def test_optimised_delays_shrink_t1_uncertainty(nmr):
    make_posterior, *_ = nmr  # shares the compiled MAP solver with the fixture's model structure
    design_prior = dict(t1_range=(0.2, 5.0), f_range=(0.8, 1.0), m_range=(0.5, 1.5))
    base = nmr_model(jnp.geomspace(T_MIN, T_MAX, N_TIMES), **design_prior)
    make_model = lambda a: with_times(base, delays(a))
    key = jax.random.key(0)
    criterion = lambda a: sens.expected_posterior_variance(make_model(a), key, log_t1, 128)[0]
    log_spaced = delay_logits(jnp.geomspace(T_MIN * 1.0001, T_MAX / 1.0001, N_TIMES))
    optimised, history = sens.optimize_design(criterion, log_spaced, steps=300)
    assert history[-1] < history[0]
    # the criterion on fresh prior draws
    check = jax.random.key(7)
    v_log, _ = sens.expected_posterior_variance(make_model(log_spaced), check, log_t1, 1024)
    v_opt, _ = sens.expected_posterior_variance(make_model(optimised), check, log_t1, 1024)
    print("expected var log T1:", float(v_log), float(v_opt), float(v_log / v_opt), np.sort(delays(optimised)).round(4))
    assert v_opt < v_log / 1.2  # measured: 2.44e-4 -> 1.94e-4, ratio 1.26 (sd of log T1 0.0156 -> 0.0139)
    # independent check: Laplace fits (ji.map_estimate) to simulated data at the same 12 truths
    truths = sens.prior_draws(base, jax.random.key(8), 12)
    variances = {"log-spaced": [], "optimised": []}
    for i in range(12):
        truth = {k: v[i] for k, v in truths.items()}
        eps = jax.random.normal(jax.random.key(100 + i), (N_TIMES,))
        for name, a in (("log-spaced", log_spaced), ("optimised", optimised)):
            model = make_model(a)
            fit = ji.map_estimate(model.condition(model.forward(truth) + SIGMA * eps), init=truth)
            sd = fit.laplace.standard_errors["relaxation_time"] / fit.params["relaxation_time"]
            variances[name].append(float(sd) ** 2)
    ratio = np.mean(variances["log-spaced"]) / np.mean(variances["optimised"])
    print("Laplace variance of log T1, log-spaced / optimised:", ratio, {k: np.mean(v) for k, v in variances.items()})
    assert ratio > 1.1, ratio  # measured 1.31 (mean Laplace variance 2.00e-4 -> 1.53e-4)
