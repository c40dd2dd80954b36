"""EPMA X-ray intensity model (jaxinv.physics.xray): dead time, phase mixing, drift, counts,
gradients and input errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import jaxinv as ji
from jaxinv.physics import (
    XrayMap,
    beam_drift,
    correct_counts,
    dead_time_correction,
    dead_time_loss,
    expected_counts,
    mixed_intensity,
    pixel_times,
    poisson_log_prob,
)

P, E = 3, 4
RNG = np.random.default_rng(5)
BETA = RNG.uniform(2e4, 6e4, size=(P, E))  # cps per mass fraction at the map's current
CONC = RNG.dirichlet(np.ones(E), size=P)  # (P, E) mass fractions
BG = np.array([12.0, 30.0, 8.0, 20.0])  # cps


# -- dead time -------------------------------------------------------------------------
def test_dead_time_round_trip_and_closed_forms():
    rate = np.geomspace(1.0, 2e5, 50)
    tau = 1.1e-6  # s (qntmap's default 1100 ns)
    observed = dead_time_loss(rate, tau)
    np.testing.assert_allclose(observed, rate / (1 + tau * rate), rtol=1e-14)
    np.testing.assert_allclose(dead_time_correction(observed, tau), rate, rtol=1e-12)
    # the other direction: observed -> true -> observed
    obs = np.linspace(0.0, 0.99 / tau, 40)
    np.testing.assert_allclose(dead_time_loss(dead_time_correction(obs, tau), tau), obs, rtol=1e-9, atol=1e-9)
    # losses: ~tau R at low rate, and the observed rate never exceeds 1/tau
    assert np.all(np.asarray(observed) < 1 / tau)
    np.testing.assert_allclose(1 - observed[:5] / rate[:5], tau * rate[:5], rtol=1e-3)
    # per-element dead times broadcast over the element axis
    taus = np.array([0.0, 1e-6, 2e-6, 5e-6])
    r = np.full((7, 4), 3e4)
    np.testing.assert_allclose(dead_time_correction(dead_time_loss(r, taus), taus), r, rtol=1e-12)
    np.testing.assert_allclose(dead_time_loss(r, taus)[:, 0], r[:, 0])  # tau = 0: no loss
    # an observed rate at or above 1/tau is impossible: inf, not a negative rate
    assert np.isinf(dead_time_correction(1.0 / tau, tau)) and np.isinf(dead_time_correction(2.0 / tau, tau))


def test_correct_counts_is_qntmaps_correction():
    counts = np.array([[10004.0, 0.0], [4272.0, 5729.0]])
    dwell_ms, dt_ns = 100.0, 1100.0
    qntmap = counts / (1 - dt_ns / dwell_ms * 1e-6 * counts)  # R/read-xmap-.R correct_deadtime (unrounded)
    np.testing.assert_allclose(correct_counts(counts, dwell_ms * 1e-3, dt_ns * 1e-9), qntmap, rtol=1e-12)


# -- phase mixing ----------------------------------------------------------------------
def test_single_phase_pixel_is_beta_times_concentration_plus_background():
    for p in range(P):
        w = np.eye(P)[p]
        np.testing.assert_allclose(mixed_intensity(w, BETA, CONC, BG), BETA[p] * CONC[p] + BG, rtol=1e-14)


def test_mixing_is_linear_in_mass_fractions():
    w1, w2 = RNG.dirichlet(np.ones(P), size=(2, 10))  # (10, P) each
    a, b = 0.3, 0.7
    lin = mixed_intensity(a * w1 + b * w2, BETA, CONC)
    np.testing.assert_allclose(lin, a * mixed_intensity(w1, BETA, CONC) + b * mixed_intensity(w2, BETA, CONC),
                               rtol=1e-13)
    # = the mass-weighted sum of the phases' intensities (a per-element background added once)
    w = w1
    expect = w @ (BETA * CONC) + BG
    np.testing.assert_allclose(mixed_intensity(w, BETA, CONC, BG), expect, rtol=1e-13)
    # per-phase background (qntmap's gamma): mixed with the phase fractions
    bg_p = RNG.uniform(5, 40, size=(P, E))
    np.testing.assert_allclose(mixed_intensity(w, BETA, CONC, bg_p), w @ (BETA * CONC + bg_p), rtol=1e-13)
    # ...which is the per-element background when every phase has the same one (sum w = 1)
    np.testing.assert_allclose(mixed_intensity(w, BETA, CONC, np.broadcast_to(BG, (P, E))),
                               mixed_intensity(w, BETA, CONC, BG), rtol=1e-13)
    # per-pixel concentrations (zoning): (n, P, E)
    conc_px = CONC[None] * RNG.uniform(0.8, 1.2, size=(10, P, E))
    np.testing.assert_allclose(mixed_intensity(w, BETA, conc_px),
                               np.einsum("np,npe->ne", w, BETA[None] * conc_px), rtol=1e-13)


# -- probe current, drift, counts ------------------------------------------------------
def test_pixel_times_and_drift():
    t = pixel_times(3, 4, 0.1, overhead=0.02)
    assert t.shape == (3, 4)
    np.testing.assert_allclose(t[0, :2], [0.05, 0.17])
    np.testing.assert_allclose(t[1, 0], 4 * 0.12 + 0.05)
    np.testing.assert_allclose(pixel_times(3, 4, 0.1, row_major=False)[1, 0], 0.15)
    g = beam_drift(t, jnp.array([-0.02]), t_ref=t[0, 0], t_scale=t[-1, -1] - t[0, 0])
    np.testing.assert_allclose(g[0, 0], 1.0)
    np.testing.assert_allclose(g[-1, -1], 0.98)
    np.testing.assert_allclose(np.diff(np.asarray(g).ravel()), -0.02 / 11, rtol=1e-10)  # linear in time
    c = jnp.array([[0.01, -0.02], [0.005, 0.0]])  # (K=2, E=2): quadratic, per element
    s = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(beam_drift(s, c), 1 + s[:, None] * c[0] + s[:, None] ** 2 * c[1], rtol=1e-14)
    assert beam_drift(s, jnp.zeros((0,))).shape == (5,)  # K = 0: no drift
    np.testing.assert_allclose(beam_drift(s, jnp.zeros((0,))), 1.0)


def test_expected_counts_is_dwell_times_rate():
    intensity = mixed_intensity(RNG.dirichlet(np.ones(P), size=6), BETA, CONC, BG)  # (6, E)
    np.testing.assert_allclose(expected_counts(intensity, 0.1), 0.1 * intensity, rtol=1e-14)
    # per-nA beta at 20 nA, drift per pixel, per-element dead time
    g = np.linspace(1.0, 0.97, 6)
    tau = np.array([1e-6, 1.1e-6, 0.9e-6, 1.2e-6])
    lam = expected_counts(intensity / 20, 0.1, dead_time=tau, probe_current=20.0, drift=g)
    true = g[:, None] * intensity
    np.testing.assert_allclose(lam, 0.1 * true / (1 + tau * true), rtol=1e-13)
    # per-pixel dwell times
    t = np.linspace(0.05, 0.2, 6)
    np.testing.assert_allclose(expected_counts(intensity, t), t[:, None] * intensity, rtol=1e-14)


def test_xray_map_module_jit_vmap():
    times = pixel_times(5, 6, 0.1)
    model = XrayMap(0.1, P, E, dead_time=1.1e-6, time=times, drift_order=1)
    w = jnp.asarray(RNG.dirichlet(np.ones(P), size=(5, 6)))
    params = {"phase_fraction": w, "concentration": jnp.asarray(CONC), "beta": jnp.asarray(BETA),
              "background": jnp.asarray(BG), "drift": jnp.array([-0.03])}
    lam = model(params)
    assert lam.shape == (5, 6, E)
    g = 1 - 0.03 * (times - times.min()) / (times.max() - times.min())
    true = g[..., None] * (np.asarray(w) @ (BETA * CONC) + BG)
    np.testing.assert_allclose(lam, 0.1 * true / (1 + 1.1e-6 * true), rtol=1e-13)
    np.testing.assert_allclose(jax.jit(lambda m, p: m(p))(model, params), lam, rtol=1e-14)
    # vmap over parameter draws (e.g. posterior samples of beta)
    betas = jnp.asarray(BETA)[None] * jnp.array([1.0, 1.1])[:, None, None]
    batched = jax.vmap(lambda b: model({**params, "beta": b}))(betas)
    np.testing.assert_allclose(batched[1], model({**params, "beta": betas[1]}), rtol=1e-14)
    # a forward model for ji.Model with the Poisson likelihood
    counts = np.asarray(jax.random.poisson(jax.random.key(1), lam)).astype(float)
    m = ji.Model(forward=lambda p: model({**params, "concentration": p["concentration"]}),
                 priors={"concentration": ji.priors.Uniform(0.0, 1.0, shape=(P, E))},
                 likelihood=ji.likelihoods.Poisson())
    post = m.condition(counts)
    z = post.unconstrain({"concentration": jnp.asarray(CONC)})
    assert np.isfinite(float(post.log_density(z)))


def test_poisson_log_prob_matches_scipy_and_likelihood():
    n = np.array([0.0, 1.0, 7.0, 4272.0, 10004.0])
    lam = np.array([0.5, 2.0, 7.5, 4300.0, 1e4])
    np.testing.assert_allclose(poisson_log_prob(n, lam), stats.poisson.logpmf(n, lam), rtol=1e-12)
    np.testing.assert_allclose(poisson_log_prob(n, lam), ji.likelihoods.Poisson().pointwise_log_prob(n, lam, {}),
                               rtol=1e-14)
    assert float(poisson_log_prob(0.0, 0.0)) == 0.0  # 0 log 0 = 0


# -- gradients -------------------------------------------------------------------------
def _central_difference(f, x, h):
    x = np.asarray(x, dtype=float)
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        grad[i] = (f(x + e) - f(x - e)) / (2 * h)
    return grad


def test_gradients_match_finite_differences():
    times = pixel_times(4, 5, 0.1)
    model = XrayMap(0.1, P, E, dead_time=1.1e-6, time=times, drift_order=2)
    w = jnp.asarray(RNG.dirichlet(np.ones(P), size=(4, 5)))
    base = {"phase_fraction": w, "concentration": jnp.asarray(CONC), "beta": jnp.asarray(BETA),
            "background": jnp.asarray(BG), "drift": jnp.array([-0.02, 0.01])}
    counts = jax.random.poisson(jax.random.key(2), model(base)).astype(float)

    def loglik(name):
        f = jax.jit(lambda v: jnp.sum(poisson_log_prob(counts, model({**base, name: v}))))
        return lambda v: float(f(jnp.asarray(v)))

    for name, h in (("concentration", 1e-6), ("beta", 1e-2), ("phase_fraction", 1e-6), ("drift", 1e-7)):
        auto = jax.grad(lambda v, name=name: jnp.sum(poisson_log_prob(counts, model({**base, name: v}))))(base[name])
        numeric = _central_difference(loglik(name), base[name], h)
        np.testing.assert_allclose(auto, numeric, rtol=2e-5, atol=1e-6 * np.abs(numeric).max(), err_msg=name)
    # the intensity itself: d I_e / d C_pe = sum over pixels of w_p beta_pe
    jac = jax.grad(lambda c: jnp.sum(mixed_intensity(w, base["beta"], c)))(base["concentration"])
    np.testing.assert_allclose(jac, np.asarray(w).reshape(-1, P).sum(0)[:, None] * BETA, rtol=1e-12)
    # and through the dead-time correction
    r = jnp.array([1e3, 5e4, 2e5])
    d = jax.vmap(jax.grad(lambda x: dead_time_correction(x, 1.1e-6)))(r)
    np.testing.assert_allclose(d, 1 / (1 - 1.1e-6 * r) ** 2, rtol=1e-12)


# -- bad inputs ------------------------------------------------------------------------
def test_bad_inputs_raise_value_errors():
    w = np.full((2, P), 1 / P)
    with pytest.raises(ValueError, match="dwell_time"):
        expected_counts(np.ones((2, E)), -0.1)
    with pytest.raises(ValueError, match="dwell_time"):
        XrayMap(-0.1, P, E)
    with pytest.raises(ValueError, match="dwell_time"):
        correct_counts(np.ones(3), 0.0, 1e-6)
    with pytest.raises(ValueError, match="dead_time"):
        dead_time_loss(np.ones(3), -1e-6)
    with pytest.raises(ValueError, match="dead_time"):
        dead_time_correction(np.ones(3), -1e-6)
    with pytest.raises(ValueError, match="dead_time"):
        XrayMap(0.1, P, E, dead_time=-1e-6)
    with pytest.raises(ValueError, match="dead_time"):
        XrayMap(0.1, P, E, dead_time=np.ones(E + 1) * 1e-6)
    with pytest.raises(ValueError, match="probe_current"):
        expected_counts(np.ones((2, E)), 0.1, probe_current=0.0)
    with pytest.raises(ValueError, match="beta"):
        mixed_intensity(w, BETA[:2], CONC)  # 2 phases in beta, 3 in phase_fraction
    with pytest.raises(ValueError, match="concentration"):
        mixed_intensity(w, BETA, CONC[:, :2])  # elements differ
    with pytest.raises(ValueError, match="background"):
        mixed_intensity(w, BETA, CONC, np.ones(E + 1))
    with pytest.raises(ValueError, match="background"):
        mixed_intensity(w, BETA, CONC, np.ones((P + 1, E)))
    with pytest.raises(ValueError, match="do not broadcast"):
        mixed_intensity(np.full((5, P), 0.3), BETA, np.broadcast_to(CONC, (4, P, E)))
    with pytest.raises(ValueError, match="drift"):
        expected_counts(np.ones((2, E)), 0.1, drift=np.ones(3))
    with pytest.raises(ValueError, match="time"):
        XrayMap(0.1, P, E, drift_order=1)
    model = XrayMap(0.1, P, E, time=pixel_times(1, 2, 0.1), drift_order=1)
    params = {"phase_fraction": w, "concentration": CONC, "beta": BETA, "drift": np.ones(2)}
    with pytest.raises(ValueError, match="drift"):
        model(params)
    with pytest.raises(ValueError, match="phase_fraction"):
        model({**params, "phase_fraction": np.ones((2, P + 1)), "drift": np.ones(1)})
    with pytest.raises(ValueError, match="t_scale"):
        beam_drift(np.ones(3), np.ones(1), t_scale=0.0)
    with pytest.raises(ValueError, match="n_phases"):
        XrayMap(0.1, 0, E)
