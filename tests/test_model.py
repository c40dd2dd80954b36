"""Model/Posterior: gradients vs finite differences, jit/vmap consistency, bad input."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from jaxinv.physics import MultiExponential

T = jnp.linspace(0.0, 5.0, 20)


def forward(params):
    return params["amplitude"] * jnp.exp(-T / params["time_constant"]) + 1.0


PRIORS = {"time_constant": ji.priors.LogUniform(0.1, 10.0), "amplitude": ji.priors.Uniform(0.5, 5.0)}
TRUTH = {"time_constant": 1.3, "amplitude": 2.0}
CLEAN = forward(TRUTH)

LIKELIHOODS = {
    "normal-known": (ji.likelihoods.Normal(sigma=0.1), CLEAN + 0.1 * jnp.sin(7 * T)),
    "normal-inferred": (ji.likelihoods.Normal(sigma=ji.priors.HalfNormal(1.0)), CLEAN + 0.1 * jnp.sin(7 * T)),
    "studentt": (ji.likelihoods.StudentT(df=ji.priors.Exponential(0.1), sigma=0.2), CLEAN + 0.1 * jnp.sin(7 * T)),
    "poisson": (ji.likelihoods.Poisson(), jnp.round(10 * CLEAN)),
    "lognormal": (ji.likelihoods.LogNormal(sigma=ji.priors.LogUniform(0.01, 1.0)), CLEAN * jnp.exp(0.05 * jnp.cos(3 * T))),
}


def posterior(name):
    lik, y = LIKELIHOODS[name]
    fwd = (lambda p: 10 * forward(p)) if name == "poisson" else forward
    return ji.Model(fwd, PRIORS, lik).condition(y)


@pytest.mark.parametrize("name", list(LIKELIHOODS))
def test_energy_gradients_match_finite_differences(name):
    post = posterior(name)
    z = post.init(jax.random.key(1), 3)
    for energy in (post.energy, post.map_energy, lambda v: post.tempered_energy(v, 0.3)):
        for zi in z:
            grad = jax.grad(energy)(zi)
            h = 1e-6
            fd = jnp.array([(energy(zi + h * e) - energy(zi - h * e)) / (2 * h) for e in jnp.eye(post.dim)])
            np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["normal-inferred", "lognormal"])
def test_least_squares_parts_add_up_to_energy(name):
    post = posterior(name)
    for z in post.init(jax.random.key(2), 4):
        r, g = post.least_squares_parts(z)
        assert float(0.5 * jnp.sum(r**2) + g) == pytest.approx(float(post.energy(z)), rel=1e-12)
        r, g = post.least_squares_parts(z, jacobian=False)
        assert float(0.5 * jnp.sum(r**2) + g) == pytest.approx(float(post.map_energy(z)), rel=1e-12)


def test_energy_same_inside_jit_and_vmap():
    """The layout of z must survive pytree flattening (which sorts dict keys)."""
    post = posterior("normal-inferred")
    assert post.names == ("time_constant", "amplitude", "sigma")  # not alphabetical
    z = post.init(jax.random.key(0), 5)
    eager = jnp.stack([post.energy(zi) for zi in z])
    jitted = eqx.filter_jit(lambda p, zz: jax.vmap(p.energy)(zz))(post, z)
    np.testing.assert_allclose(jitted, eager, rtol=1e-12)


def test_tempered_energy_endpoints():
    post = posterior("normal-known")
    z = post.init(jax.random.key(3), 1)[0]
    assert float(post.tempered_energy(z, 1.0)) == pytest.approx(float(post.energy(z)))
    assert float(post.tempered_energy(z, 0.0)) == pytest.approx(float(-post.log_prior(z)))


def test_constrain_unconstrain_round_trip():
    post = posterior("normal-inferred")
    params = {"time_constant": 2.0, "amplitude": 1.5, "sigma": 0.3}
    back = post.constrain(post.unconstrain(params))
    for k, v in params.items():
        assert float(back[k]) == pytest.approx(v, rel=1e-12)


def test_init_draws_inside_prior_support():
    post = posterior("normal-known")
    draws = jax.vmap(post.constrain)(post.init(jax.random.key(0), 200))
    assert bool(jnp.all((draws["time_constant"] > 0.1) & (draws["time_constant"] < 10.0)))
    assert post.n_data == 20


def test_bad_input_errors():
    model = ji.Model(forward, PRIORS, ji.likelihoods.Normal(sigma=0.1))
    y = np.asarray(CLEAN)
    with pytest.raises(ValueError, match="non-finite"):
        model.condition(np.where(np.arange(20) == 3, np.nan, y))
    with pytest.raises(ValueError, match="shape"):
        model.condition(y[:10])
    with pytest.raises(ValueError, match="empty"):
        model.condition(np.array([]))
    with pytest.raises(ValueError, match="positive"):
        ji.likelihoods.Normal(sigma=-0.1)
    with pytest.raises(ValueError, match="positive"):
        ji.likelihoods.Normal(sigma=np.array([0.1, 0.0]))
    with pytest.raises(ValueError, match="broadcast"):
        ji.Model(forward, PRIORS, ji.likelihoods.Normal(sigma=np.ones(7))).condition(y)
    with pytest.raises(ValueError, match="non-negative integer"):
        ji.Model(forward, PRIORS, ji.likelihoods.Poisson()).condition(y - 5.0)
    with pytest.raises(ValueError, match="strictly positive"):
        ji.Model(forward, PRIORS, ji.likelihoods.LogNormal(sigma=0.1)).condition(y - 5.0)
    with pytest.raises(ValueError, match="both"):
        ji.Model(forward, {**PRIORS, "sigma": ji.priors.HalfNormal(1.0)},
                 ji.likelihoods.Normal(sigma=ji.priors.HalfNormal(1.0)))


def test_prior_that_excludes_the_data():
    """A model that cannot produce finite energy anywhere in its prior is reported."""
    def broken(params):
        return jnp.log(-params["amplitude"]) * jnp.ones_like(T)  # NaN for every amplitude > 0

    post = ji.Model(broken, {"amplitude": ji.priors.Uniform(0.5, 5.0)}, ji.likelihoods.Normal(sigma=0.1)).condition(CLEAN)
    with pytest.raises(ValueError, match="non-finite energy"):
        ji.map_estimate(post, jax.random.key(0), n_starts=4)


def test_multiexponential_gradients_through_physics():
    model = MultiExponential(T, n_components=2)
    p = {"amplitude": jnp.array([1.0, 0.5]), "time_constant": jnp.array([0.3, 2.0]), "offset": 0.1}
    np.testing.assert_allclose(model(p), 1.0 * jnp.exp(-T / 0.3) + 0.5 * jnp.exp(-T / 2.0) + 0.1, rtol=1e-12)


def test_parameter_order_survives_a_model_passed_through_jit():
    model = ji.Model(forward, PRIORS, ji.likelihoods.Normal(sigma=0.1))
    z = jnp.array([0.3, -0.2])
    eager = model.condition(CLEAN).energy(z)
    inside = eqx.filter_jit(lambda m, y, v: m.condition(y).energy(v))(model, CLEAN, z)
    assert float(inside) == pytest.approx(float(eager), rel=1e-12)


def test_clear_errors_for_model_definition_mistakes():
    with pytest.raises(ValueError, match="reads parameter 'amplitude', which has no prior"):
        ji.Model(forward, {"time_constant": PRIORS["time_constant"]}, ji.likelihoods.Normal(sigma=0.1)).condition(CLEAN)
    with pytest.raises(ValueError, match="finite bounds"):
        ji.priors.Uniform(0.0, float("inf"))
    post = ji.Model(forward, PRIORS, ji.likelihoods.Normal(sigma=0.1)).condition(CLEAN)
    with pytest.raises(ValueError, match="missing"):
        ji.map_estimate(post, init={"amplitude": 1.0})
    with pytest.raises(ValueError, match="unknown"):
        ji.map_estimate(post, init={"amplitude": 1.0, "time_constant": 1.0, "tau": 2.0})
    # a plain list of per-point errors is an array, not a prior
    ji.Model(forward, PRIORS, ji.likelihoods.Normal(sigma=[0.1] * 20)).condition(CLEAN)


def test_likelihood_densities_match_numpyro():
    import numpyro.distributions as npd

    y, f, s = jnp.array([0.5, 1.2, 3.0]), jnp.array([0.7, 1.0, 2.5]), jnp.array([0.1, 0.3, 0.2])
    cases = [
        (ji.likelihoods.Normal(sigma=s), npd.Normal(f, s).log_prob(y)),
        (ji.likelihoods.LogNormal(sigma=s), npd.LogNormal(jnp.log(f), s).log_prob(y)),
        (ji.likelihoods.StudentT(df=3.0, sigma=s), npd.StudentT(3.0, f, s).log_prob(y)),
        (ji.likelihoods.Poisson(), npd.Poisson(f).log_prob(jnp.array([0.0, 1.0, 4.0]))),
    ]
    for lik, expected in cases:
        yy = jnp.array([0.0, 1.0, 4.0]) if isinstance(lik, ji.likelihoods.Poisson) else y
        np.testing.assert_allclose(lik.pointwise_log_prob(yy, f, {}), expected, rtol=1e-12)


def test_poisson_zero_counts_at_zero_expectation_have_finite_gradient():
    """An element absent from a phase (concentration 0, no background) predicts exactly
    zero counts; zero observed counts there are certain (log p = 0) and the gradient
    with respect to the prediction is -1, not 0/0."""
    lik = ji.likelihoods.Poisson()
    y = jnp.array([0.0, 3.0])
    grad = jax.grad(lambda f: jnp.sum(lik.pointwise_log_prob(y, f, {})))(jnp.array([0.0, 2.0]))
    np.testing.assert_allclose(grad, [-1.0, 3.0 / 2.0 - 1.0])
    np.testing.assert_allclose(lik.pointwise_log_prob(y, jnp.array([0.0, 2.0]), {})[0], 0.0)
    assert lik.pointwise_log_prob(jnp.array([1.0]), jnp.array([0.0]), {})[0] == -jnp.inf
