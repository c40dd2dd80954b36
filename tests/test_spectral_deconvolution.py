"""The spectral-deconvolution problem: Nagata, Sugita & Okada (2012) benchmark."""

import jax
import numpy as np
import pytest

import jaxinv as ji
from jaxinv import Dataset
from problems import spectral_deconvolution as sd

TRUTH = {k: np.asarray(v) for k, v in sd.TRUTH.items()}
# one compiled solver serves the selection and the direct MAP (same structure and options)
# (no Levenberg-Marquardt polish: the Laplace step polishes the mode anyway, and each
# distinct model structure costs ~10 s of tracing)
FIT_OPTIONS = {"n_starts": 16, "polish": False}


@pytest.fixture(scope="module")
def data():
    return sd.default_data()


@pytest.fixture(scope="module")
def selection(data):
    models = sd.models(data, n_components=(1, 2, 3))
    return ji.select(models, data.y, jax.random.key(1), method="laplace",
                     n_components={k: sd.n_components(k) for k in models}, **FIT_OPTIONS)


def test_default_data_is_the_nagata_setup(data):
    np.testing.assert_allclose(data.x, np.linspace(0.0, 3.0, 301), atol=1e-12)
    assert data.y.shape == (301,) and data.sigma is None
    assert data.meta["noise_sd"] == 0.1 and data.meta["seed"] == sd.DEFAULT_SEED
    residual = data.y - sd.true_spectrum(data.x)
    assert 0.085 < residual.std() < 0.115 and abs(residual.mean()) < 0.02
    # the shipped file is what its README says: simulate() with the default seed
    again = sd.simulate(jax.random.key(sd.DEFAULT_SEED))
    np.testing.assert_allclose(again.y, data.y, atol=1e-9)


def test_true_spectrum_peaks_overlap():
    """Three maxima, but the weak first peak is pulled off its position (1.21) by its
    neighbour: the peaks overlap, which is what makes the deconvolution hard."""
    x = np.linspace(0, 3, 3001)
    f = sd.true_spectrum(x)
    maxima = x[1:-1][(f[1:-1] > f[:-2]) & (f[1:-1] > f[2:])]
    assert maxima.size == 3
    assert maxima[0] - TRUTH["position"][0] > 0.02
    np.testing.assert_allclose(maxima[1:], TRUTH["position"][1:], atol=0.01)
    np.testing.assert_allclose(f.max(), 1.6, atol=0.05)


def test_simulate_is_reproducible_per_key():
    a = sd.simulate(jax.random.key(7))
    b = sd.simulate(jax.random.key(7))
    c = sd.simulate(jax.random.key(8))
    np.testing.assert_array_equal(a.y, b.y)
    assert np.max(np.abs(a.y - c.y)) > 0.1
    two = {"amplitude": [1.0, 0.5], "position": [0.8, 2.0], "precision": [50.0, 80.0]}
    d = sd.simulate(jax.random.key(3), n_points=101, noise_sd=1e-6, truth=two)
    assert d.x.shape == (101,) and d.meta["noise_sd"] == 1e-6
    np.testing.assert_allclose(d.y, sd.true_spectrum(d.x, two), atol=1e-5)
    with pytest.raises(ValueError, match="noise_sd"):
        sd.simulate(jax.random.key(0), noise_sd=0.0)
    with pytest.raises(ValueError, match="equal-length"):
        sd.simulate(jax.random.key(0), truth={"amplitude": [1.0], "position": [1.0, 2.0], "precision": [1.0]})


def test_models_build_and_condition(data):
    models = sd.models(data)
    assert list(models) == ["K=1", "K=2", "K=3", "K=4", "K=5"]
    assert [sd.problem.n_components(k) for k in models] == [1, 2, 3, 4, 5]
    k3 = models["K=3"]
    assert k3.priors["position"].ordered and k3.priors["amplitude"].shape == (3,)
    assert not sd.models(data, n_components=(3,), ordered=False)["K=3"].priors["position"].ordered
    assert float(k3.likelihood.sigma) == 0.1  # known noise level carried by the data
    for name, model in models.items():
        post = model.condition(data.y)
        assert post.dim == 3 * sd.n_components(name)
    # "scaled" priors carry the paper's over to another grid: the same on the paper's grid
    scaled = sd.models(data, n_components=(3,), priors="scaled")["K=3"].priors["position"].distribution.base_dist
    np.testing.assert_allclose([float(scaled.loc), float(scaled.scale)], [1.5, 5**-0.5], rtol=1e-12)
    wide = sd.models(Dataset(x=10 * data.x, y=data.y), n_components=(3,), priors="scaled")["K=3"]
    np.testing.assert_allclose(float(wide.priors["precision"].distribution.base_dist.rate), 0.04 * 100, rtol=1e-12)
    # the paper's truth is well inside the priors (finite density, near the bulk)
    post = k3.condition(data.y)
    assert np.isfinite(float(post.log_density(post.unconstrain(TRUTH))))


@pytest.mark.parametrize(
    "options,extra",
    [
        ({"shape": "lorentzian"}, {"hwhm"}),
        ({"shape": "pseudo-voigt"}, {"fwhm", "eta"}),
        ({"background": "linear"}, {"precision", "coefficients"}),
        ({"background": "exponential", "noise_sd": None}, {"precision", "background_amplitude", "decay_length",
                                                           "sigma"}),
    ],
)
def test_model_options_condition(data, options, extra):
    model = sd.models(data, n_components=(2,), **options)["K=2"]
    post = model.condition(data.y)
    assert extra <= set(post.names) and {"amplitude", "position"} <= set(post.names)


def test_unordered_posterior_is_exchangeable(data):
    """ordered=False keeps all K! labellings: the density is invariant under relabelling."""
    post = sd.models(data, n_components=(3,), ordered=False)["K=3"].condition(data.y)
    perm = [2, 0, 1]
    swapped = {k: v[perm] for k, v in TRUTH.items()}
    lp = float(post.log_density(post.unconstrain(TRUTH)))
    np.testing.assert_allclose(float(post.log_density(post.unconstrain(swapped))), lp, rtol=1e-12)
    moved = {**TRUTH, "position": TRUTH["position"] + np.array([0.0, 0.05, 0.0])}
    assert abs(float(post.log_density(post.unconstrain(moved))) - lp) > 1.0  # and it does see the data


def test_map_recovers_the_truth(data, selection):
    fit = ji.map_estimate(sd.models(data, n_components=(3,))["K=3"].condition(data.y), jax.random.key(1),
                          **FIT_OPTIONS)
    for name, truth in TRUTH.items():
        est = np.asarray(fit.params[name])
        se = np.asarray(fit.laplace.standard_errors[name])
        assert np.all(se > 0) and np.all(np.isfinite(se)), name
        assert np.all(np.abs(est - truth) < 4 * se), (name, est, truth, se)
    # the same answer as the K=3 member of the selection
    np.testing.assert_allclose(fit.params["position"], selection.results["K=3"].params["position"], rtol=1e-5)


def test_laplace_free_energy_selects_three_peaks(selection):
    f = selection.free_energies
    assert selection.selected == "K=3"
    assert f["K=3"] < f["K=2"] - 20 and f["K=2"] < f["K=1"]
    assert [row["K"] for row in selection.table] == [1, 2, 3]
    assert selection.probabilities["K=3"] > 0.99


def test_figures(selection, data, tmp_path):
    paths = sd.figures(selection, data, tmp_path)
    assert [p.name for p in paths] == ["fit.png", "free_energy.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def _write(tmp_path, text, name="spectrum.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_load_data_reads_csv(tmp_path):
    path = _write(tmp_path, "x,y,sigma\n# comment\n0.0,1.0,0.1\n0.5,2.0,0.1\n1.0,1.5,0.2\n")
    d = sd.load_data(path)
    np.testing.assert_allclose(d.x, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(d.sigma, [0.1, 0.1, 0.2])
    # per-point sigma from the file is the known noise level under noise_sd="auto"
    model = sd.models(d, n_components=(1,))["K=1"]
    np.testing.assert_allclose(model.likelihood.sigma, [0.1, 0.1, 0.2])


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty"),
        ("x,y\n", "no data rows"),
        ("0,1\n1,nan\n2,3\n", "non-finite"),
        ("0,1\n1,2,3,4\n2,3\n", "columns"),
        ("0\n1\n2\n", "columns"),
        ("0,1\n1,abc\n2,3\n", "non-numeric"),
        ("0,1\n1,2\n", "at least 3"),
        ("0,1\n0,2\n1,3\n", "repeated x"),
    ],
)
def test_bad_csv_gives_a_clear_error(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        sd.load_data(_write(tmp_path, text))


def test_bad_input_gives_a_clear_error(data, tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        sd.load_data(tmp_path / "missing.csv")
    with pytest.raises(ValueError, match="equal length"):
        sd.spectrum(np.arange(5.0), np.ones(4))
    with pytest.raises(ValueError, match="non-finite"):
        sd.models(Dataset(x=np.array([0.0, np.nan, 1.0]), y=np.ones(3)))
    with pytest.raises(ValueError, match="shape"):
        sd.models(data, shape="voigt")
    with pytest.raises(ValueError, match="background"):
        sd.models(data, background="cubic")
    with pytest.raises(ValueError, match="n_components"):
        sd.models(data, n_components=(0, 1))
    model = sd.models(data, n_components=(1,))["K=1"]
    with pytest.raises(ValueError, match="non-finite"):
        model.condition(np.where(np.arange(301) == 5, np.nan, data.y))
    with pytest.raises(ValueError, match="shape"):
        model.condition(data.y[:-1])
