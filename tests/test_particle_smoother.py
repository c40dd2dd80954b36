"""Particle filter and smoothers against the exact Kalman filter and RTS smoother.

Monte Carlo checks pool ``RUNS`` independent filter runs (one vmapped program) and
compare the pooled estimate with the exact value in units of its standard error
measured across the runs: ``z = (mean_r est_r - exact) / (sd_r(est_r) / sqrt(RUNS))``.
With ``RUNS = 20`` that is Student-t with 19 degrees of freedom for a correct
implementation, and ``P(|t_19| > 5) < 1e-4``: over the 30 time steps of one check a
correct filter fails with probability < 0.3%.  Every such check also bounds the
per-run spread, so that a filter whose errors are large cannot pass by being noisy.
"""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.stats import norm

import jaxinv as ji

# the module (``jaxinv.inference.particle_smoother`` is the function of that name)
ps = importlib.import_module("jaxinv.inference.particle_smoother")

# ------------------------------------------------------------------ exact reference


def kalman_rts(ys, F, Q, H, R, m0, P0):
    """Kalman filter and Rauch-Tung-Striebel smoother (numpy) for

        x_0 ~ N(m0, P0),   x_k = F_k x_{k-1} + N(0, Q),   y_k = H x_k + N(0, R_k);

    ``F`` and ``R`` are one matrix or one per step (``F[0]`` unused).  Rows of ``ys``
    that are all NaN are missing: the update is skipped."""
    ys = np.asarray(ys, dtype=float).reshape(len(ys), -1)
    n_steps, d = ys.shape[0], m0.shape[0]
    F = np.broadcast_to(F, (n_steps, d, d))
    R = np.broadcast_to(R, (n_steps,) + np.shape(R)[-2:])
    mp, Pp = np.zeros((n_steps, d)), np.zeros((n_steps, d, d))
    mf, Pf = np.zeros((n_steps, d)), np.zeros((n_steps, d, d))
    loglik, m, P = 0.0, m0, P0
    for k in range(n_steps):
        if k > 0:
            m, P = F[k] @ m, F[k] @ P @ F[k].T + Q
        mp[k], Pp[k] = m, P
        if not np.all(np.isnan(ys[k])):
            S = H @ P @ H.T + R[k]
            v = ys[k] - H @ m
            loglik -= 0.5 * (v @ np.linalg.solve(S, v) + np.linalg.slogdet(2 * np.pi * S)[1])
            gain = P @ H.T @ np.linalg.inv(S)
            m, P = m + gain @ v, P - gain @ S @ gain.T
        mf[k], Pf[k] = m, P
    ms, Ps = mf.copy(), Pf.copy()
    gains = np.zeros((n_steps - 1, d, d))
    for k in range(n_steps - 2, -1, -1):
        gains[k] = Pf[k] @ F[k + 1].T @ np.linalg.inv(Pp[k + 1])
        ms[k] = mf[k] + gains[k] @ (ms[k + 1] - mp[k + 1])
        Ps[k] = Pf[k] + gains[k] @ (Ps[k + 1] - Pp[k + 1]) @ gains[k].T
    # smoothed Cov(x_k, x_{k+1} | y) = G_k Ps_{k+1}
    lag_one = np.einsum("kij,kjl->kil", gains, Ps[1:])
    return {"loglik": loglik, "mf": mf, "Pf": Pf, "ms": ms, "Ps": Ps, "lag_one": lag_one}


# ------------------------------------------------------------------ AR(1): scalar state

# time-inhomogeneous, so that a wrong time index k passed to any callable shows:
# x_k = a_k x_{k-1} + N(0, Q1),  y_k = x_k + N(0, r_k),  a_k and r_k alternating in k
A, Q1, R1, P01 = 0.9, 1.0, 0.5, 1.0
K = 30


def a_k(k):
    return jnp.where(k % 2 == 0, A, 0.6)


def r_k(k):
    return jnp.where(k % 2 == 0, R1, 2.0)


def ar1_initial(key):
    return jnp.sqrt(P01) * jax.random.normal(key)


def ar1_transition(key, x, k):
    return a_k(k) * x + jnp.sqrt(Q1) * jax.random.normal(key)


def ar1_observation(y, x, k):
    return norm.logpdf(y, x, jnp.sqrt(r_k(k)))


def ar1_transition_log_prob(x_new, x_prev, k):
    return norm.logpdf(x_new, a_k(k) * x_prev, jnp.sqrt(Q1))


AR1 = ps.StateSpaceModel(ar1_initial, ar1_transition, ar1_observation, ar1_transition_log_prob)
AR1_NO_DENSITY = AR1._replace(transition_log_prob=None)


def _ar1_data():
    rng = np.random.default_rng(20180311)
    x = np.zeros(K)
    x[0] = np.sqrt(P01) * rng.normal()
    for k in range(1, K):
        x[k] = np.asarray(a_k(k)) * x[k - 1] + np.sqrt(Q1) * rng.normal()
    return x + np.sqrt(np.asarray(r_k(np.arange(K)))) * rng.normal(size=K)


Y = _ar1_data()
Y_MISSING = Y.copy()
Y_MISSING[[10, 11, 20]] = np.nan


def ar1_exact(ys):
    one, steps = np.eye(1), np.arange(K)
    a, r = np.asarray(a_k(steps))[:, None, None], np.asarray(r_k(steps))[:, None, None]
    return kalman_rts(ys, a * one, Q1 * one, one, r * one, np.zeros(1), P01 * one)


N, M, RUNS, Z_MAX = 400, 200, 20, 5.0


@jax.jit
def ar1_runs(keys, ys):
    """RUNS filters, and FFBSi and genealogy paths from each."""

    def one(key):
        key_filter, key_ffbsi, key_genealogy = jax.random.split(key, 3)
        fr = ps.particle_filter(AR1, ys, key_filter, N)
        return fr, ps.backward_simulation(AR1, fr, key_ffbsi, M), ps.genealogy(fr, key_genealogy, M)

    return jax.vmap(one)(keys)


@pytest.fixture(scope="module")
def ar1():
    return jax.device_get(ar1_runs(jax.random.split(jax.random.key(0), RUNS), jnp.asarray(Y)))


@pytest.fixture(scope="module")
def ar1_missing():
    return jax.device_get(ar1_runs(jax.random.split(jax.random.key(1), RUNS), jnp.asarray(Y_MISSING)))


def zscores(estimates, exact):
    """Pooled estimate minus the exact value, in across-run standard errors."""
    estimates = np.asarray(estimates)
    se = estimates.std(0, ddof=1) / np.sqrt(estimates.shape[0])
    return (estimates.mean(0) - exact) / se


def filter_moments(fr):
    w = np.exp(fr.log_weights)
    mean = (w * fr.particles).sum(-1)
    return mean, (w * fr.particles**2).sum(-1) - mean**2


def check_log_evidence(log_z, exact):
    """E[log Z-hat] = log Z - Var(log Z-hat)/2 to leading order (log-normal CLT for the
    unbiased Z-hat; Bérard, Del Moral & Doucet 2014), so the bias-corrected mean is
    compared with the exact value within 3 standard errors."""
    log_z = np.asarray(log_z)
    sd = log_z.std(ddof=1)
    assert 0 < sd < 1.0, sd  # N = 400 on 30 steps: sd(log Z-hat) is a few tenths
    assert abs(log_z.mean() + sd**2 / 2 - exact) < 3 * sd / np.sqrt(len(log_z)), (log_z.mean(), exact, sd)


def check_filter(fr, exact):
    mean, var = filter_moments(fr)
    pf = exact["Pf"][:, 0, 0]
    # per-run error of the filter mean is O(sqrt(Pf / N)); an order of magnitude more is a bug
    assert np.all(mean.std(0, ddof=1) < 10 * np.sqrt(pf / N))
    assert np.max(np.abs(zscores(mean, exact["mf"][:, 0]))) < Z_MAX
    assert np.max(np.abs(zscores(var, pf))) < Z_MAX


# ------------------------------------------------------------------ tests: AR(1)


def test_log_evidence_matches_kalman_likelihood(ar1):
    fr, _, _ = ar1
    check_log_evidence(fr.log_evidence, ar1_exact(Y)["loglik"])


def test_filter_means_and_variances_match_kalman(ar1):
    fr, _, _ = ar1
    check_filter(fr, ar1_exact(Y))
    np.testing.assert_allclose(jax.scipy.special.logsumexp(fr.log_weights, axis=-1), 0.0, atol=1e-12)
    ess = np.asarray(fr.ess)
    assert np.all((ess >= 1 - 1e-9) & (ess <= N + 1e-6))
    # adaptive resampling: triggered on some steps, not all, and never before step 1
    assert not fr.resampled[:, 0].any() and 0 < fr.resampled.mean() < 1
    np.testing.assert_array_equal(fr.resampled[:, 1:], fr.ess[:, :-1] < 0.5 * N)


def path_moments(paths):
    paths = np.asarray(paths)  # (RUNS, K, M)
    mean, sd = paths.mean(-1), paths.std(-1, ddof=1)
    centred = paths - mean[..., None]
    corr = (centred[:, :-1] * centred[:, 1:]).mean(-1) / (centred[:, :-1].std(-1) * centred[:, 1:].std(-1))
    return mean, sd, corr


def test_ffbsi_matches_rts_smoother(ar1):
    _, paths, _ = ar1
    exact = ar1_exact(Y)
    ps_var = exact["Ps"][:, 0, 0]
    mean, sd, corr = path_moments(paths)
    # per run: M paths given a filter of N particles, error O(sqrt(Ps (1/M + 1/N)))
    assert np.all(mean.std(0, ddof=1) < 10 * np.sqrt(ps_var * (1 / M + 1 / N)))
    assert np.max(np.abs(zscores(mean, exact["ms"][:, 0]))) < Z_MAX
    assert np.max(np.abs(zscores(sd, np.sqrt(ps_var)))) < Z_MAX
    # the paths are joint draws: consecutive states correlate as under the RTS smoother
    exact_corr = exact["lag_one"][:, 0, 0] / np.sqrt(ps_var[:-1] * ps_var[1:])
    assert np.max(np.abs(zscores(corr, exact_corr))) < Z_MAX
    # smoothing differs from filtering here, so the check has power against a smoother
    # that returns filter draws: the filter means are many standard errors off
    filter_z = zscores(mean, exact["mf"][:, 0])
    assert np.max(np.abs(filter_z)) > 10 * Z_MAX


def test_genealogy_matches_rts_where_lines_survive(ar1):
    """The genealogy smoother is consistent at every time, but its ancestral lines
    coalesce: its means are checked at all times (pooled over runs they are unbiased to
    O(1/N)), its spreads only where >= 50 distinct particles survive in every run (a
    handful of lines gives a strongly under-dispersed sample sd)."""
    _, _, paths = ar1
    exact = ar1_exact(Y)
    ps_var = exact["Ps"][:, 0, 0]
    mean, sd, _ = path_moments(paths)
    assert np.max(np.abs(zscores(mean, exact["ms"][:, 0]))) < Z_MAX
    distinct = np.array([[len(np.unique(p)) for p in run] for run in np.asarray(paths)]).min(0)
    valid = distinct >= 50
    assert valid[-1] and valid[-2]
    assert distinct[0] < distinct[-1] / 2  # path degeneracy at early times, as documented
    assert np.max(np.abs(zscores(sd[:, valid], np.sqrt(ps_var[valid])))) < Z_MAX


def test_paths_are_filter_particles_along_ancestor_lines(ar1):
    fr, ffbsi, lines = ar1
    particles, ancestors = np.asarray(fr.particles[0]), np.asarray(fr.ancestors[0])
    # continuous states: a value identifies its particle
    ffbsi_index = np.abs(particles[:, None, :] - np.asarray(ffbsi[0])[:, :, None]).argmin(-1)
    np.testing.assert_array_equal(np.take_along_axis(particles, ffbsi_index, 1), ffbsi[0])
    index = np.abs(particles[:, None, :] - np.asarray(lines[0])[:, :, None]).argmin(-1)
    np.testing.assert_array_equal(np.take_along_axis(particles, index, 1), lines[0])
    np.testing.assert_array_equal(np.take_along_axis(ancestors[1:], index[1:], 1), index[:-1])
    assert np.any(np.take_along_axis(ancestors[1:], ffbsi_index[1:], 1) != ffbsi_index[:-1])


def test_missing_observations_skip_the_update(ar1_missing):
    fr, paths, _ = ar1_missing
    exact = ar1_exact(Y_MISSING)
    check_log_evidence(fr.log_evidence, exact["loglik"])
    check_filter(fr, exact)
    mean, _, _ = path_moments(paths)
    assert np.max(np.abs(zscores(mean, exact["ms"][:, 0]))) < Z_MAX
    # at a missing step the weights are those carried over (uniform after resampling)
    for k in (10, 11, 20):
        carried = np.where(fr.resampled[:, k, None], -np.log(N), fr.log_weights[:, k - 1])
        np.testing.assert_allclose(fr.log_weights[:, k], carried, atol=1e-12)


def test_all_observations_missing_gives_zero_evidence():
    fr = ps.particle_filter(AR1, jnp.full(K, jnp.nan), jax.random.key(2), N)
    assert float(fr.log_evidence) == 0.0
    np.testing.assert_allclose(fr.log_weights, -np.log(N), atol=1e-12)
    assert not np.asarray(fr.resampled).any()
    # the particles are draws from the prior, which the Kalman filter without data gives
    prior = ar1_exact(np.full(K, np.nan))
    np.testing.assert_allclose(prior["mf"], 0.0)
    assert np.all(np.abs(np.asarray(fr.particles).mean(1)) < 5 * np.sqrt(prior["Pf"][:, 0, 0] / N))


def test_zero_likelihood_everywhere_gives_minus_inf_evidence_without_nan():
    def observation(y, x, k):
        return jnp.where(k == 5, -jnp.inf, jnp.where(k == 7, jnp.nan, ar1_observation(y, x, k)))

    fr = ps.particle_filter(AR1._replace(observation_log_prob=observation), Y[:10], jax.random.key(3), 100)
    assert float(fr.log_evidence) == -np.inf
    assert np.all(np.isfinite(fr.log_weights)) and np.all(np.isfinite(fr.particles))


@pytest.mark.parametrize("scheme", ["systematic", "stratified", "multinomial"])
def test_each_resampling_scheme(scheme):
    """ess_threshold = 1: resampling at every step with non-uniform weights."""
    run = jax.jit(jax.vmap(lambda key: ps.particle_filter(AR1, Y, key, N, resample=scheme, ess_threshold=1.0)))
    fr = jax.device_get(run(jax.random.split(jax.random.key(4), RUNS)))
    exact = ar1_exact(Y)
    check_log_evidence(fr.log_evidence, exact["loglik"])
    check_filter(fr, exact)
    assert not fr.resampled[:, 0].any() and fr.resampled[:, 1:].all()
    ancestors = np.asarray(fr.ancestors)
    assert ancestors.min() >= 0 and ancestors.max() < N
    assert np.all(np.diff(ancestors[:, 1:], axis=-1) >= 0)  # inverse-CDF indices are sorted


def test_threshold_zero_never_resamples():
    fr = ps.particle_filter(AR1, Y, jax.random.key(5), N, ess_threshold=0.0)
    assert not np.asarray(fr.resampled).any() and float(fr.ess[-1]) < 0.5 * N
    np.testing.assert_array_equal(fr.ancestors, np.broadcast_to(np.arange(N), (K, N)))


def test_jit_compatible_and_deterministic(ar1):
    """The fixture ran jit(vmap(...)); run 0 called eagerly gives the same numbers."""
    fr_jit, ffbsi_jit, lines_jit = jax.tree.map(lambda leaf: leaf[0], ar1)
    key = jax.random.split(jax.random.key(0), RUNS)[0]
    key_filter, key_ffbsi, key_genealogy = jax.random.split(key, 3)
    fr = ps.particle_filter(AR1, Y, key_filter, N)
    same = ps.particle_filter(AR1, Y, key_filter, N)
    for x, y in zip(jax.tree.leaves(fr), jax.tree.leaves(same), strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(fr), jax.tree.leaves(fr_jit), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ps.backward_simulation(AR1, fr, key_ffbsi, M), ffbsi_jit, rtol=1e-12)
    np.testing.assert_allclose(ps.genealogy(fr, key_genealogy, M), lines_jit, rtol=1e-12)
    # particle_smoother: one filter for either method; another key, other paths
    a = ps.particle_smoother(AR1, Y, key, N, M)
    b = ps.particle_smoother(AR1, Y, key, N, M, method="genealogy")
    for x, y in zip(jax.tree.leaves(a.filter), jax.tree.leaves(b.filter), strict=True):
        np.testing.assert_array_equal(x, y)
    assert a.paths.shape == b.paths.shape == (K, M)
    assert not np.allclose(ps.particle_smoother(AR1, Y, jax.random.key(7), N, M).paths, a.paths)


# ------------------------------------------------------------------ 2-D constant velocity

DT, QV, RV = 1.0, 0.05, 0.25
F_CV = np.array([[1.0, DT], [0.0, 1.0]])
Q_CV = QV * np.array([[DT**3 / 3, DT**2 / 2], [DT**2 / 2, DT]])
H_CV, R_CV = np.array([[1.0, 0.0]]), np.array([[RV]])
M0_CV, P0_CV = np.array([0.0, 1.0]), np.diag([1.0, 0.25])
K_CV = 20


def cv_initial(key):
    return M0_CV + jnp.linalg.cholesky(P0_CV) @ jax.random.normal(key, (2,))


def cv_transition(key, x, k):
    return F_CV @ x + jnp.linalg.cholesky(Q_CV) @ jax.random.normal(key, (2,))


def cv_observation(y, x, k):
    return norm.logpdf(y[0], x[0], jnp.sqrt(RV))


Q_CV_INV, Q_CV_LOGDET = np.linalg.inv(Q_CV), np.linalg.slogdet(2 * np.pi * Q_CV)[1]


def cv_transition_log_prob(x_new, x_prev, k):
    r = x_new - F_CV @ x_prev
    return -0.5 * (r @ Q_CV_INV @ r + Q_CV_LOGDET)


CV = ps.StateSpaceModel(cv_initial, cv_transition, cv_observation, cv_transition_log_prob)


def cv_data(seed):
    rng = np.random.default_rng(seed)
    x = M0_CV + np.linalg.cholesky(P0_CV) @ rng.normal(size=2)
    ys = []
    for _ in range(K_CV):
        ys.append(H_CV @ x + np.sqrt(RV) * rng.normal(size=1))
        x = F_CV @ x + np.linalg.cholesky(Q_CV) @ rng.normal(size=2)
    return np.array(ys)  # (K_CV, 1)


def test_two_dimensional_state():
    """Constant velocity, position observed: shapes, evidence, smoothed position and velocity."""
    ys = cv_data(7)
    exact = kalman_rts(ys, F_CV, Q_CV, H_CV, R_CV, M0_CV, P0_CV)
    n, m = 400, 200
    run = jax.jit(jax.vmap(lambda key: ps.particle_smoother(CV, ys, key, n, m)))
    res = jax.device_get(run(jax.random.split(jax.random.key(8), RUNS)))
    fr = res.filter
    assert fr.particles.shape == (RUNS, K_CV, n, 2) and res.paths.shape == (RUNS, K_CV, m, 2)
    assert fr.log_weights.shape == fr.ancestors.shape == (RUNS, K_CV, n)
    assert fr.ess.shape == fr.resampled.shape == fr.log_evidence.shape[:1] + (K_CV,)
    assert np.issubdtype(fr.ancestors.dtype, np.integer) and fr.resampled.dtype == np.bool_
    check_log_evidence(fr.log_evidence, exact["loglik"])
    sd = np.sqrt(np.diagonal(exact["Ps"], axis1=1, axis2=2))
    assert np.max(np.abs(zscores(res.paths.mean(2), exact["ms"]))) < Z_MAX
    assert np.max(np.abs(zscores(res.paths.std(2, ddof=1), sd))) < Z_MAX
    one_filter = jax.tree.map(lambda leaf: leaf[0], fr)
    assert ps.genealogy(one_filter, jax.random.key(9), m).shape == (K_CV, m, 2)


def test_pytree_state():
    def initial(key):
        pos, vel = cv_initial(key)
        return {"pos": pos, "vel": vel}

    def as_array(x):
        return jnp.stack([x["pos"], x["vel"]])

    def transition(key, x, k):
        pos, vel = cv_transition(key, as_array(x), k)
        return {"pos": pos, "vel": vel}

    def observation(y, x, k):
        return norm.logpdf(y[0], x["pos"], jnp.sqrt(RV))

    def transition_log_prob(x_new, x_prev, k):
        return cv_transition_log_prob(as_array(x_new), as_array(x_prev), k)

    model = ps.StateSpaceModel(initial, transition, observation, transition_log_prob)
    ys = jnp.arange(8.0)[:, None]
    res = ps.particle_smoother(model, ys, jax.random.key(9), 64, 16)
    assert res.paths["pos"].shape == res.paths["vel"].shape == (8, 16)
    assert res.filter.particles["vel"].shape == (8, 64)
    lines = ps.genealogy(res.filter, jax.random.key(10), 16)
    assert lines["pos"].shape == (8, 16)


# ------------------------------------------------------------------ validation and exports


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: ps.particle_filter(AR1, Y, jax.random.key(0), 0), "n_particles must be >= 1"),
        (lambda: ps.particle_filter(AR1, Y, jax.random.key(0), 2.5), "n_particles must be a positive integer"),
        (lambda: ps.particle_filter(AR1, Y, jax.random.key(0), 10, resample="residual"), "unknown resample scheme"),
        (lambda: ps.particle_filter(AR1, Y, jax.random.key(0), 10, ess_threshold=1.5), "ess_threshold"),
        (lambda: ps.particle_filter(AR1, Y, jax.random.key(0), 10, ess_threshold=-0.1), "ess_threshold"),
        (lambda: ps.particle_filter(AR1, jnp.array(1.0), jax.random.key(0), 10), "at least 1-D"),
        (lambda: ps.particle_filter(AR1, jnp.zeros(0), jax.random.key(0), 10), "at least one time step"),
        (lambda: ps.particle_smoother(AR1, Y, jax.random.key(0), 10, 5, method="forward"), "unknown smoothing method"),
        (lambda: ps.particle_smoother(AR1_NO_DENSITY, Y, jax.random.key(0), 10, 5), "transition_log_prob"),
        (lambda: ps.particle_smoother(AR1, Y, jax.random.key(0), 10, 0), "n_paths must be >= 1"),
        (lambda: ps.backward_simulation(AR1_NO_DENSITY, None, jax.random.key(0), 5), "transition_log_prob"),
        (lambda: ps.particle_filter(AR1._replace(transition_sample=lambda key, x, k: jnp.zeros(2)), Y,
                                    jax.random.key(0), 10), "transition_sample returns a state of shape"),
        (lambda: ps.particle_filter(AR1._replace(observation_log_prob=lambda y, x, k: jnp.zeros(3)), Y,
                                    jax.random.key(0), 10), "observation_log_prob must return a scalar"),
    ],
)
def test_bad_inputs_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_types_raise():
    with pytest.raises(TypeError, match="initial_sample must be callable"):
        ps.particle_filter(AR1._replace(initial_sample=None), Y, jax.random.key(0), 10)
    with pytest.raises(TypeError, match="filter_result must be a FilterResult"):
        ps.genealogy({"particles": 1}, jax.random.key(0), 5)


def test_exported():
    assert ji.particle_filter is ps.particle_filter and ji.particle_smoother is ps.particle_smoother
    assert ji.StateSpaceModel is ps.StateSpaceModel
    assert ji.inference.particle_smoother is ps.particle_smoother
    assert {"particle_filter", "particle_smoother", "StateSpaceModel"} <= set(ji.__all__) & set(ji.inference.__all__)
