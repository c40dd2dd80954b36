"""The solvable linear-regression problem: closed forms against brute-force quadrature,
the Laplace free energy against the closed form, and model selection."""

import math
import tomllib
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy.stats import multivariate_normal
from scipy.stats import norm

import jaxinv as ji
from problems import linear_regression as lr

ROOT = Path(__file__).resolve().parents[1]


def _small_data(noise_sd=0.3, n=12, seed=5):
    d = lr.simulate(jax.random.key(seed), n=n, noise_sd=noise_sd)
    return d.x, d.y


def _neg_log_joint(x, y, a, b, noise_sd, prior_mean, prior_sd):
    """-log p(y|a,b) - log p(a,b) straight from the densities (no algebra shared with the module);
    ``a``, ``b`` (``b=None`` for y=ax) and ``noise_sd`` broadcast against each other."""
    a = np.asarray(a, dtype=float)[..., None]
    bb = 0.0 if b is None else np.asarray(b, dtype=float)[..., None]
    s = np.asarray(noise_sd, dtype=float)[..., None]
    ll = norm.logpdf(y, loc=a * x + bb, scale=s).sum(-1)
    lp = norm.logpdf(a[..., 0], prior_mean, prior_sd)
    if b is not None:
        lp = lp + norm.logpdf(np.asarray(b, dtype=float), prior_mean, prior_sd)
    return -(ll + lp)


def _gauss_legendre(lo, hi, n_panels, n_nodes=20):
    """Composite Gauss-Legendre nodes and weights on [lo, hi]."""
    t, w = np.polynomial.legendre.leggauss(n_nodes)
    edges = np.linspace(lo, hi, n_panels + 1)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[:-1] + edges[1:])[:, None]
    return (mid + half * t).ravel(), (half * w).ravel()


@pytest.mark.parametrize("model", ["y=ax+b", "y=ax"])
def test_closed_form_matches_quadrature(model):
    """F, posterior mean and covariance against dense tensor Gauss-Legendre quadrature over
    (a, b) or a, +-12 posterior sd around the mean (smooth integrand: converged far below 1e-8)."""
    x, y = _small_data()
    s, m0, s0 = 0.3, 0.5, 2.0  # non-zero prior mean and a prior that is not negligible
    mean, cov = lr.exact_posterior(x, y, model, s, m0, s0)
    f_exact = lr.exact_free_energy(x, y, model, s, m0, s0)
    sd = np.sqrt(np.diag(cov))
    ga, wa = _gauss_legendre(mean[0] - 12 * sd[0], mean[0] + 12 * sd[0], 20)
    if model == "y=ax":
        A, B, W = ga, None, wa
        pts = [A]
    else:
        gb, wb = _gauss_legendre(mean[1] - 12 * sd[1], mean[1] + 12 * sd[1], 20)
        A, B = np.meshgrid(ga, gb, indexing="ij")
        W = np.outer(wa, wb)
        pts = [A, B]
    u = _neg_log_joint(x, y, A, B, s, m0, s0)
    shift = u.min()
    dens = np.exp(-(u - shift)) * W
    z = dens.sum()
    assert f_exact == pytest.approx(shift - math.log(z), rel=1e-8, abs=0)
    m = np.array([(p * dens).sum() / z for p in pts])
    np.testing.assert_allclose(m, mean, rtol=1e-9, atol=1e-12)
    c = np.array([[((p - mp) * (q - mq) * dens).sum() / z for q, mq in zip(pts, m)] for p, mp in zip(pts, m)])
    np.testing.assert_allclose(c, cov, rtol=1e-8, atol=1e-12 * cov.max())
    # and the marginal-likelihood form: y ~ N(X m0, s^2 I + X S0 X^T)
    X = lr.design_matrix(x, model)
    f_mvn = -multivariate_normal.logpdf(y, X @ np.full(X.shape[1], m0), s**2 * np.eye(len(y)) + s0**2 * X @ X.T)
    assert f_exact == pytest.approx(f_mvn, rel=1e-10)


@pytest.mark.parametrize("model", ["y=ax+b", "y=ax"])
def test_laplace_free_energy_equals_exact(model):
    """Linear-Gaussian with known noise: the Laplace evidence of map_estimate is exact."""
    data = lr.default_data()
    m = lr.models(data)[model]
    fit = ji.map_estimate(m.condition(data.y), jax.random.key(0), n_starts=4)
    exact = lr.exact_free_energy(data.x, data.y, model)
    assert float(fit.free_energy) == pytest.approx(exact, rel=1e-8)
    mean, cov = lr.exact_posterior(data.x, data.y, model)
    names = ["a", "b"][: len(mean)]
    np.testing.assert_allclose([float(fit.params[n]) for n in names], mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose([float(fit.laplace.standard_errors[n]) for n in names], np.sqrt(np.diag(cov)),
                               rtol=1e-7)


def test_select_chooses_true_model_on_default_data():
    data = lr.default_data()
    sel = ji.select(lr.models(data), data.y, jax.random.key(1), method="laplace",
                    n_components={n: lr.n_components(n) for n in lr.MODELS}, n_starts=4)
    assert sel.selected == "y=ax+b" == lr.exact_selection(data.x, data.y)
    for name, f in lr.exact_free_energies(data.x, data.y).items():
        assert sel.free_energies[name] == pytest.approx(f, rel=1e-8)
    assert sel.probabilities["y=ax+b"] > 0.99
    assert [row["K"] for row in sel.table] == [2, 1]


@pytest.mark.parametrize("noise_sd", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("true_b", [lr.TRUE_B, 0.0])
def test_selection_rate_matches_exact_free_energies(noise_sd, true_b):
    """20 simulated datasets: jaxinv's choice equals the closed-form choice on every one,
    hence the same rate of choosing the true model."""
    truth = "y=ax+b" if true_b else "y=ax"
    keys = jax.random.split(jax.random.key(int(1000 * noise_sd) + (7 if true_b else 0)), 20)
    ours, exact = [], []
    for k in keys:
        d = lr.simulate(k, b=true_b, noise_sd=noise_sd)
        sel = ji.select(lr.models(d, noise_sd=noise_sd), d.y, jax.random.key(0), n_starts=4)
        ours.append(sel.selected)
        exact.append(lr.exact_selection(d.x, d.y, noise_sd=noise_sd))
        for name, f in lr.exact_free_energies(d.x, d.y, noise_sd=noise_sd).items():
            assert sel.free_energies[name] == pytest.approx(f, rel=1e-8)
    assert ours == exact
    rate = np.mean([s == truth for s in ours])
    assert rate == np.mean([s == truth for s in exact])
    if noise_sd <= 0.3 or not true_b:
        assert rate >= 0.9  # the noise level at which the right model is chosen (and y=ax whenever b = 0)


def test_noise_estimate_flat_prior_limit_and_minimum():
    x, y = _small_data(noise_sd=0.4, n=30)
    for model, k in lr.MODELS.items():
        s_hat, f_min = lr.estimate_noise_sd(x, y, model, prior_sd=1e6)
        X = lr.design_matrix(x, model)
        rss = np.sum((y - X @ np.linalg.lstsq(X, y, rcond=None)[0]) ** 2)
        assert s_hat**2 == pytest.approx(rss / (len(y) - k), rel=1e-6)
        # a true minimum of F(sigma) at the paper-style prior too
        s_hat, f_min = lr.estimate_noise_sd(x, y, model)
        for f in (0.99, 1.01):
            assert lr.exact_free_energy(x, y, model, s_hat * f) > f_min


def test_free_energy_unknown_noise_matches_quadrature():
    """Log-uniform sigma, y=ax: tensor quadrature over (a, t = log sigma) of the raw joint density."""
    x, y = _small_data(noise_sd=0.3, n=12)
    low, high = 0.01, 10.0
    f = lr.free_energy_unknown_noise(x, y, "y=ax", low, high)
    # where the mass is: sigma within a factor 30 of the least-squares rms residual r
    a_ls = float(x @ y / (x @ x))
    r = math.sqrt(np.mean((y - a_ls * x) ** 2))
    gt, wt = _gauss_legendre(max(math.log(low), math.log(r / 30)), min(math.log(high), math.log(r * 30)), 30)
    half = 40 * r / math.sqrt(x @ x)  # +- 40 sd of a at sigma = r
    ga, wa = _gauss_legendre(a_ls - half, a_ls + half, 30)
    A, T = np.meshgrid(ga, gt, indexing="ij")
    u = _neg_log_joint(x, y, A, None, np.exp(T), lr.PRIOR_MEAN, lr.PRIOR_SD) + math.log(math.log(high / low))
    shift = u.min()
    z = (np.exp(-(u - shift)) * np.outer(wa, wt)).sum()
    assert f == pytest.approx(shift - math.log(z), rel=1e-8)
    # the matching jaxinv model infers sigma under the same prior
    m = lr.models(ji.Dataset(x=x, y=y), noise="fit", sigma_range=(low, high))["y=ax"]
    assert m.parameter_names == ("a", "sigma")
    sigma_prior = m.all_priors["sigma"]
    assert float(sigma_prior.log_prob(0.5)) == pytest.approx(-math.log(0.5 * math.log(high / low)), rel=1e-12)


def test_default_data_is_reproducible_and_documented(tmp_path):
    data = lr.default_data()
    assert data.x.shape == data.y.shape == (lr.N_POINTS,)
    regenerated = lr.read_csv(lr.write_default_data(tmp_path / "d.csv"))
    np.testing.assert_array_equal(regenerated.x, data.x)
    np.testing.assert_array_equal(regenerated.y, data.y)
    readme = (ROOT / "problems" / "data" / "linear_regression" / "README.md").read_text()
    assert str(lr.DEFAULT_SEED) in readme and "simulate" in readme
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["jaxinv.problems"]
    assert entry["linear-regression"] == "problems.linear_regression:problem"
    assert lr.problem.name == "linear-regression"
    assert {n: lr.n_components(n) for n in lr.models(data)} == {"y=ax+b": 2, "y=ax": 1}
    assert list(lr.models(data, n_components=[1])) == ["y=ax"]


def test_figures(tmp_path):
    data = lr.default_data()
    sel = ji.select(lr.models(data), data.y, jax.random.key(0), n_starts=4)
    paths = lr.figures(sel, data, tmp_path)
    assert [p.name for p in paths] == ["fit.png", "free_energy.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "empty"),
        ("x,y\n", "no data rows"),
        ("x,y\n1,2\n2,nan\n3,4\n", "NaN"),
        ("x,y,z\n1,2,3\n2,3,4\n3,4,5\n", "expected 2"),
        ("1,2\n2\n3,4\n", "expected 2"),
        ("1,2\n2,abc\n3,4\n", "non-numeric"),
        ("1,2\n2,3\n", "at least 3"),
    ],
)
def test_load_data_rejects_bad_files(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        lr.load_data(p)


def test_load_data_reads_good_file_and_other_errors(tmp_path):
    p = tmp_path / "good.csv"
    p.write_text("# a comment\nx,y\n0,1\n1,3\n2,5.5\n")
    d = lr.load_data(p)
    np.testing.assert_array_equal(d.x, [0, 1, 2])
    np.testing.assert_array_equal(d.y, [1, 3, 5.5])
    with pytest.raises(ValueError, match="no such file"):
        lr.load_data(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="unknown model"):
        lr.exact_free_energy(d.x, d.y, "y=ax^2")
    with pytest.raises(ValueError, match="noise_sd"):
        lr.exact_free_energy(d.x, d.y, "y=ax", noise_sd=0.0)
    with pytest.raises(ValueError, match="equal length"):
        lr.exact_posterior([1.0, 2.0], [1.0], "y=ax")
    with pytest.raises(ValueError, match="noise must be"):
        lr.models(d, noise="guess")
    with pytest.raises(ValueError, match="n_components"):
        lr.models(d, n_components=[3])
    with pytest.raises(ValueError, match="noise_sd"):
        lr.simulate(jax.random.key(0), noise_sd=-1.0)


def test_cli_run(tmp_path, monkeypatch, capsys):
    """End to end through ``jaxinv run`` (the entry point is resolved here directly, since the
    installed package metadata may predate this problem's registration)."""
    import json

    from jaxinv import cli

    monkeypatch.setattr(cli, "load_problem", lambda name: {"linear-regression": lr.problem}[name])
    out = tmp_path / "run"
    assert cli.main(["run", "linear-regression", "--out", str(out), "--n-starts", "4", "--draws", "200",
                     "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selected"] == "y=ax+b"
    assert [(m["name"], m["K"]) for m in summary["models"]] == [("y=ax+b", 2), ("y=ax", 1)]
    data = lr.default_data()
    for m in summary["models"]:
        assert m["free_energy"] == pytest.approx(lr.exact_free_energy(data.x, data.y, m["name"]), rel=1e-8)
    assert (out / "fit.png").stat().st_size > 0
    capsys.readouterr()
    assert cli.main(["run", "linear-regression", "--select", "1", "--out", str(tmp_path / "k1"), "--n-starts", "4",
                     "--draws", "100", "--quiet"]) == 0
    assert json.loads((tmp_path / "k1" / "summary.json").read_text())["selected"] == "y=ax"
