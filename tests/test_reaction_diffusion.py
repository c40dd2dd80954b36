"""problems/reaction_diffusion.py: the forward model against closed forms, what the
snapshots identify (Fisher information), selection of the reaction law, bad files."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxinv as ji
from problems import reaction_diffusion as rd

TRUTH = {"diffusivity": rd.TRUE_DIFFUSIVITY, "rate_constant": rd.TRUE_RATE_CONSTANT}


def test_pure_diffusion_matches_crank_series():
    """No reaction: the slab 0..L with c = 1 at x = 0 and no flux at x = L is half of Crank's
    (1975, eq. 4.17) symmetric slab of half-width L, mirrored (x -> L - x)."""
    x = np.linspace(0.05, 1.0, 20)
    t = np.array([1.0, 3.0])
    model = rd.Profiles(np.repeat(t, x.size), np.tile(x, t.size), order=0)
    c = np.asarray(model({"diffusivity": 0.05})).reshape(t.size, x.size)
    n = np.arange(200)[:, None, None]
    k = (2 * n + 1) * np.pi / (2 * rd.LENGTH)
    series = (-1.0) ** n / (2 * n + 1) * np.exp(-0.05 * k**2 * t[None, :, None]) * np.cos(k * (rd.LENGTH - x))
    exact = 1 - 4 / np.pi * np.sum(series, axis=0)
    np.testing.assert_allclose(c, exact, atol=2e-3)  # O(h^2) of the 40-cell grid


def test_first_order_reaction_reaches_the_cosh_steady_state():
    """Crank (1975) sec. 14.2: the steady profile is cosh((L - x)/l)/cosh(L/l), l = sqrt(D/k)."""
    x = np.linspace(0.0, 1.0, 21)
    model = rd.Profiles(np.full(x.size, 100.0), x, order=1)
    c = np.asarray(model(TRUTH))
    ell = np.sqrt(rd.TRUE_DIFFUSIVITY / rd.TRUE_RATE_CONSTANT)
    np.testing.assert_allclose(c, np.cosh((1.0 - x) / ell) / np.cosh(1.0 / ell), atol=3e-3)


def _fisher_correlation(data):
    """corr(log D, log k) from the Fisher information at the truth, J^T J / sigma^2 with
    J = d prediction / d(log D, log k) (central differences of the forward model)."""
    x = np.asarray(data.x)
    model = rd.Profiles(x[:, 0], x[:, 1], order=1)

    def predict(logs):
        return model({"diffusivity": jnp.exp(logs[0]), "rate_constant": jnp.exp(logs[1])})

    logs = jnp.log(jnp.array([rd.TRUE_DIFFUSIVITY, rd.TRUE_RATE_CONSTANT]))
    h = 1e-4
    jac = np.stack([(predict(logs.at[i].add(h)) - predict(logs.at[i].add(-h))) / (2 * h) for i in range(2)], axis=1)
    fisher = jac.T @ jac / rd.NOISE_SD**2
    cov = np.linalg.inv(fisher)
    return cov[0, 1] / np.sqrt(cov[0, 0] * cov[1, 1])


def test_a_late_snapshot_fixes_only_the_ratio_d_over_k():
    """Near steady state the profile depends on D/k alone: corr(log D, log k) -> +1; the
    transient snapshots carry the time scale 1/k and lower the correlation."""
    data = rd.default_data()
    late = _fisher_correlation(rd.select_snapshots(data, [10.0]))
    every = _fisher_correlation(data)
    assert late > 0.99
    assert every < 0.95
    assert every < late - 0.05


def test_simulate_is_reproducible_and_noisy_around_the_truth():
    a = rd.simulate(jax.random.key(3), snapshot_times=(2.0,), n_positions=10)
    b = rd.simulate(jax.random.key(3), snapshot_times=(2.0,), n_positions=10)
    np.testing.assert_array_equal(a.y, b.y)
    x = np.asarray(a.x)
    clean = np.asarray(rd.Profiles(x[:, 0], x[:, 1], n_cells=200)(TRUTH))
    resid = a.y - clean
    assert 0.3 * rd.NOISE_SD < np.std(resid) < 3 * rd.NOISE_SD


@pytest.mark.slow
def test_laplace_selects_the_first_order_law_and_covers_the_truth():
    data = rd.default_data()
    sel = ji.select(rd.models(data), data.y, jax.random.key(0), method="laplace", n_starts=4)
    assert sel.selected == "first-order"
    fit = sel.results["first-order"]
    for name, value in TRUTH.items():  # the MAP within 20 % of the truth (posterior sd ~ 5-10 %)
        assert abs(np.log(float(fit.params[name]) / value)) < 0.2, name


def test_bad_files_are_named(tmp_path):
    good = "time_h,position_mm,concentration\n1,0.1,0.5\n1,0.2,0.4\n3,0.1,0.7\n"
    (tmp_path / "ok.csv").write_text(good)
    assert rd.load_data(tmp_path / "ok.csv").y.shape == (3,)
    (tmp_path / "time.csv").write_text(good.replace("3,0.1", "-3,0.1"))
    with pytest.raises(ValueError, match="times must be > 0"):
        rd.load_data(tmp_path / "time.csv")
    (tmp_path / "pos.csv").write_text(good.replace("1,0.2", "1,2.5"))
    with pytest.raises(ValueError, match="positions"):
        rd.load_data(tmp_path / "pos.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError):
        rd.load_data(tmp_path / "empty.csv")
    with pytest.raises(ValueError, match="no measurement"):
        rd.select_snapshots(rd.default_data(), [7.0])
    with pytest.raises(ValueError, match="unknown reaction law"):
        rd.models(rd.default_data(), reactions=["zeroth-order"])
