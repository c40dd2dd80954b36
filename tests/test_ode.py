"""jaxinv.physics.ode: user ODEs as forward models (accuracy, adjoints, failures, engines)."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import jaxinv as ji
from jaxinv.physics.ode import ADJOINTS, ODE

T = jnp.linspace(0.0, 2.0, 11)


def decay(t, state, p):
    return -p["rate"] * state


def initial_amount(p):
    return p["amount"]


def logistic(t, state, p):
    return p["growth_rate"] * state * (1.0 - state / p["capacity"])


def robertson(t, y, p):
    """Robertson (1966) stiff chemical kinetics; rate constants 0.04, 1e4, 3e7."""
    y1, y2, y3 = y
    return jnp.stack([-0.04 * y1 + 1e4 * y2 * y3, 0.04 * y1 - 1e4 * y2 * y3 - 3e7 * y2**2, 3e7 * y2**2])


def test_exponential_decay_matches_closed_form():
    model = ODE(decay, initial_amount, T)
    out = model({"rate": 1.3, "amount": 2.0})
    np.testing.assert_allclose(out, 2.0 * np.exp(-1.3 * np.asarray(T)), rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("adjoint", sorted(ADJOINTS))
def test_every_adjoint_gives_the_analytic_gradient(adjoint):
    """d/dk sum_i a exp(-k t_i) = -sum_i a t_i exp(-k t_i), through each adjoint."""
    model = ODE(decay, initial_amount, T, adjoint=adjoint)

    def total(rate):
        return jnp.sum(model({"rate": rate, "amount": 2.0}))

    exact = -np.sum(2.0 * np.asarray(T) * np.exp(-1.3 * np.asarray(T)))
    derivative = jax.jacfwd(total)(1.3) if adjoint == "forward" else jax.grad(total)(1.3)
    np.testing.assert_allclose(derivative, exact, rtol=1e-6)


def test_gradient_matches_finite_differences_for_a_nonlinear_ode():
    model = ODE(logistic, initial_amount, jnp.linspace(0.0, 5.0, 20))

    def loss(theta):
        p = {"growth_rate": theta[0], "capacity": theta[1], "amount": theta[2]}
        return jnp.sum(model(p) ** 2)

    theta = jnp.array([1.1, 3.0, 0.2])
    grad = jax.grad(loss)(theta)
    h = 1e-6
    fd = np.array([(loss(theta.at[i].add(h)) - loss(theta.at[i].add(-h))) / (2 * h) for i in range(3)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6)


def test_jit_and_vmap_over_parameter_sets():
    model = ODE(decay, initial_amount, T)
    rates = jnp.array([0.5, 1.0, 2.0])
    out = jax.jit(jax.vmap(lambda r: model({"rate": r, "amount": 1.0})))(rates)
    np.testing.assert_allclose(out, np.exp(-np.outer(rates, T)), rtol=1e-7, atol=1e-10)


def test_derivative_with_respect_to_the_observation_times():
    """Measurement times as differentiable inputs (experimental design): d y(t_i)/d t_i is the
    vector field there, -k y(t_i)."""

    def observed(times):
        return ODE(decay, initial_amount, times, t0=0.0)({"rate": 1.3, "amount": 2.0})

    times = jnp.array([0.5, 1.0, 2.0])
    jac = jax.jacrev(observed)(times)
    np.testing.assert_allclose(jnp.diag(jac), -1.3 * 2.0 * np.exp(-1.3 * np.asarray(times)), rtol=1e-6)
    np.testing.assert_allclose(jac - jnp.diag(jnp.diag(jac)), 0.0, atol=1e-10)


def test_pytree_state_and_observation_operator():
    """A two-species chain A -> B -> C, state as a dict, observing only B."""

    def chain(t, s, p):
        return {"a": -p["k1"] * s["a"], "b": p["k1"] * s["a"] - p["k2"] * s["b"]}

    model = ODE(chain, {"a": 1.0, "b": 0.0}, T, observe=lambda s, p: s["b"])
    k1, k2 = 2.0, 0.7
    t = np.asarray(T)
    exact = k1 / (k2 - k1) * (np.exp(-k1 * t) - np.exp(-k2 * t))  # Bateman (1910)
    np.testing.assert_allclose(model({"k1": k1, "k2": k2}), exact, rtol=1e-7, atol=1e-10)


def test_stiff_system_needs_an_implicit_solver():
    """Robertson's problem: Kvaerno5 agrees with scipy's Radau; Tsit5 runs out of steps and
    the failure is a NaN prediction, not an exception."""
    times = jnp.array([0.0, 0.4, 4.0, 40.0, 400.0])
    y0 = jnp.array([1.0, 0.0, 0.0])
    stiff = ODE(robertson, y0, times, solver="kvaerno5", rtol=1e-8, atol=1e-12)
    ref = solve_ivp(lambda t, y: np.asarray(robertson(t, jnp.asarray(y), {})), (0.0, 400.0), np.asarray(y0),
                    method="Radau", t_eval=np.asarray(times), rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(stiff({}), ref.y.T, rtol=1e-5, atol=1e-11)
    explicit = ODE(robertson, y0, times, solver="tsit5", max_steps=200)
    out = explicit({})
    assert out.shape == (5, 3) and bool(jnp.all(jnp.isnan(out)))
    assert not bool(explicit.solve({}).result == diffrax.RESULTS.successful)  # diffrax reports the failure


def _failing_model():
    """Decay solved with a step budget that rates above ~5 exhaust (rate 1 needs 25 of the 40
    steps): the forward model fails (NaN) over half the prior's range, as a stiff region would."""
    t = jnp.linspace(0.0, 1.0, 8)
    forward = ODE(decay, 1.0, t, solver="tsit5", rtol=1e-10, atol=1e-12, max_steps=40)
    return forward, t


def _failing_posterior():
    forward, t = _failing_model()
    ok = forward({"rate": 1.0})
    failed = forward({"rate": 400.0})
    assert bool(jnp.all(jnp.isfinite(ok))) and bool(jnp.all(jnp.isnan(failed)))
    y = np.exp(-1.0 * np.asarray(t)) + 0.01 * np.random.default_rng(0).normal(size=t.shape)
    model = ji.Model(forward, {"rate": ji.priors.LogUniform(0.1, 1000.0)}, ji.likelihoods.Normal(0.01))
    post = model.condition(y)
    assert bool(jnp.isnan(post.energy(post.unconstrain({"rate": 400.0}))))
    return post


def _check_smc_on_failing_model(post, key, n_particles):
    res = ji.sample(post, key, method="smc", n_particles=n_particles, n_runs=1, kernel="rwm",
                    target_ess=0.5)
    rate = np.asarray(res.params["rate"])
    assert np.all(np.isfinite(rate))
    assert abs(np.mean(rate) - 1.0) < 0.1
    # evidence over the feasible region, vs quadrature in log(rate)
    log_rate = np.linspace(np.log(0.1), np.log(1000.0), 20001)
    log_like = np.array(jax.vmap(lambda r: post.log_likelihood(post.unconstrain({"rate": r})))(jnp.exp(log_rate)))
    log_like = np.where(np.isnan(log_like), -np.inf, log_like)
    prior = 1.0 / np.log(1e4)  # LogUniform density in log(rate)
    peak = log_like.max()
    log_z = peak + np.log(np.trapezoid(np.exp(log_like - peak), log_rate) * prior)
    assert abs(float(res.log_evidence) - log_z) < 0.1


def test_failed_solves_are_zero_probability_for_smc():
    """Fast twin of the every-engine test below (MAP and NUTS compile the failing solve
    into their loops, ~80 s on 2 cores): NaN energy where the solve fails, and SMC's
    draws and evidence over the feasible region only."""
    _check_smc_on_failing_model(_failing_posterior(), jax.random.PRNGKey(0), n_particles=1000)


@pytest.mark.slow
def test_failed_solves_are_zero_probability_for_every_engine():
    post = _failing_posterior()
    key = jax.random.PRNGKey(0)
    fit = ji.map_estimate(post, key, n_starts=8)
    assert abs(float(fit.params["rate"]) - 1.0) < 0.1
    res = ji.sample(post, key, method="nuts", n_chains=2, n_warmup=150, n_draws=150)
    rate = np.asarray(res.params["rate"])
    assert np.all(np.isfinite(rate))
    assert abs(np.mean(rate) - 1.0) < 0.1
    _check_smc_on_failing_model(post, key, n_particles=1000)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="non-decreasing"):
        ODE(decay, 1.0, [0.0, 2.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        ODE(decay, 1.0, [[0.0, 1.0]])
    with pytest.raises(ValueError, match="after the first observation"):
        ODE(decay, 1.0, [0.0, 1.0], t0=0.5)
    with pytest.raises(ValueError, match="unknown ODE solver"):
        ODE(decay, 1.0, T, solver="rk99")
    with pytest.raises(ValueError, match="unknown adjoint"):
        ODE(decay, 1.0, T, adjoint="magic")
    with pytest.raises(ValueError, match="dt0"):
        ODE(decay, 1.0, T, adaptive=False)
    with pytest.raises(TypeError, match="vector_field"):
        ODE(3.0, 1.0, T)
