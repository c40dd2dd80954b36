"""Soft clustering (jaxinv.clustering) against scikit-learn, on synthetic data with known
truth, under jit/vmap, and with bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.mixture import GaussianMixture

from jaxinv import clustering as cl

RNG = np.random.default_rng(0)
TRUE_MEANS = np.array([[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 5.0, 5.0], [3.0, 0.0, 4.0]])
X = np.concatenate([RNG.normal(c, [1.0, 1.5, 0.7], size=(150, 3)) for c in TRUE_MEANS])
INIT = X[RNG.choice(len(X), 4, replace=False)]  # deliberately poor: random samples

# Poisson counts: three "phases" with overlapping rates (several EM iterations needed)
RATES = np.array([[40.0, 8.0, 60.0], [55.0, 15.0, 45.0], [20.0, 30.0, 50.0]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
Z = RNG.choice(3, 4000, p=WEIGHTS)
COUNTS = RNG.poisson(RATES[Z]).astype(float)


def _rel(a, b):
    return np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b)))


# -- k-means ---------------------------------------------------------------------------
def test_kmeans_matches_sklearn_from_the_same_centres():
    for tol in (1e-4, 0.0):
        ours = cl.kmeans(X, init=INIT, tol=tol)
        ref = KMeans(4, init=INIT, n_init=1, tol=tol, algorithm="lloyd").fit(X)
        assert abs(float(ours.inertia) - ref.inertia_) <= 1e-6 * ref.inertia_
        assert _rel(ours.centers, ref.cluster_centers_) < 1e-6
        np.testing.assert_array_equal(ours.labels, ref.labels_)
        assert int(ours.n_iter) == ref.n_iter_ and bool(ours.converged)
    # inertia is the sum of squared distances to the assigned centres
    d2 = np.sum((X - np.asarray(ours.centers)[np.asarray(ours.labels)]) ** 2)
    np.testing.assert_allclose(float(ours.inertia), d2, rtol=1e-10)


def test_kmeans_plusplus_seeds_and_max_iter():
    separated = X + np.repeat(TRUE_MEANS * 4, 150, axis=0)  # clusters ~20 sd apart
    for seed in range(5):
        seeds = np.asarray(cl.kmeans_plusplus(jax.random.key(seed), separated, 4))
        rows = [np.flatnonzero(np.all(separated == s, axis=1)) for s in seeds]
        assert all(len(r) == 1 for r in rows)  # every seed is a sample
        # well-separated clusters: one seed in each (k-means++ D^2 sampling)
        assert sorted(r[0] // 150 for r in rows) == [0, 1, 2, 3]
    fit = cl.kmeans(X, 4, key=jax.random.key(3))
    assert bool(fit.converged)
    ref = KMeans(4, n_init=10, random_state=0).fit(X)
    assert float(fit.inertia) <= ref.inertia_ * (1 + 1e-9)
    # a run cut short reports it did not converge
    short = cl.kmeans(X, init=INIT, max_iter=1, tol=0.0)
    assert int(short.n_iter) == 1 and not bool(short.converged)


# -- Gaussian mixture ------------------------------------------------------------------
@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_gaussian_mixture_matches_sklearn(covariance_type):
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    precisions = (np.stack([np.diag([1.0, 0.5, 2.0])] * 4) if covariance_type == "full"
                  else np.tile([1.0, 0.5, 2.0], (4, 1)))
    opts = {"covariance_type": covariance_type, "reg_covar": 1e-4, "tol": 1e-6, "max_iter": 300}
    ours = cl.gaussian_mixture(X, means_init=INIT, weights_init=weights, precisions_init=precisions, **opts)
    ref = GaussianMixture(4, means_init=INIT, weights_init=weights, precisions_init=precisions, **opts).fit(X)
    assert bool(ours.converged) and ref.converged_
    assert int(ours.n_iter) == ref.n_iter_
    assert abs(float(ours.lower_bound) - ref.lower_bound_) <= 1e-6 * abs(ref.lower_bound_)
    assert _rel(ours.means, ref.means_) < 1e-6
    assert _rel(ours.covariances, ref.covariances_) < 1e-6
    assert _rel(ours.weights, ref.weights_) < 1e-6
    np.testing.assert_allclose(ours.responsibilities, ref.predict_proba(X), atol=1e-6)
    np.testing.assert_allclose(float(ours.log_likelihood), ref.score(X), rtol=1e-6)
    # the trace holds the EM log-likelihoods (non-decreasing), NaN after n_iter
    trace = np.asarray(ours.log_likelihood_trace)
    n = int(ours.n_iter)
    assert np.all(np.isnan(trace[n:])) and trace[n - 1] == float(ours.lower_bound)
    assert np.all(np.diff(trace[:n]) >= -1e-12)
    # applying the fit to the data again gives the same memberships
    resp, log_lik = cl.gaussian_mixture_responsibilities(X, ours.means, ours.covariances, ours.weights,
                                                         covariance_type)
    np.testing.assert_allclose(resp, ours.responsibilities, atol=1e-12)
    np.testing.assert_allclose(np.mean(log_lik), float(ours.log_likelihood), rtol=1e-12)


def test_gaussian_mixture_default_init_and_safe_responsibilities():
    fit = cl.gaussian_mixture(X, 4, key=jax.random.key(0), covariance_type="diag")
    assert bool(fit.converged)
    assert _rel(np.sort(np.asarray(fit.means), axis=0), np.sort(TRUE_MEANS, axis=0)) < 0.1
    np.testing.assert_allclose(np.sum(fit.responsibilities, axis=1), 1.0, atol=1e-12)
    # only means given: weights and covariances from the nearest-mean assignment
    fit2 = cl.gaussian_mixture(X, means_init=TRUE_MEANS)
    assert bool(fit2.converged) and _rel(fit2.means, TRUE_MEANS) < 0.1
    # far outliers: every component density underflows, log-sum-exp keeps rows summing to one
    far = np.array([[1e3, -1e3, 5e2], [40.0, 40.0, 40.0]])
    resp, log_lik = cl.gaussian_mixture_responsibilities(far, fit2.means, fit2.covariances, fit2.weights)
    assert np.all(np.isfinite(resp)) and np.all(np.isfinite(log_lik))
    np.testing.assert_allclose(np.sum(resp, axis=1), 1.0, atol=1e-12)
    # collinear features: singular covariances without reg_covar stop the loop, not converged;
    # reg_covar keeps them positive definite
    flat = np.repeat(X[:, :1], 2, axis=1)
    bad = cl.gaussian_mixture(flat, means_init=flat[:2], reg_covar=0.0)
    assert not bool(bad.converged) and int(bad.n_iter) < 100
    good = cl.gaussian_mixture(flat, means_init=flat[:2], reg_covar=1e-6)
    assert bool(good.converged) and np.isfinite(float(good.log_likelihood))


# -- Poisson mixture -------------------------------------------------------------------
def test_poisson_mixture_recovers_rates_and_weights():
    start = np.array([[30.0, 20.0, 50.0], [60.0, 10.0, 50.0], [30.0, 25.0, 40.0]])  # poor phase centres
    fit = cl.poisson_mixture(COUNTS, rates_init=start, tol=1e-9, max_iter=500)
    assert bool(fit.converged) and int(fit.n_iter) > 10
    np.testing.assert_allclose(fit.rates, RATES, rtol=0.05)
    np.testing.assert_allclose(fit.weights, WEIGHTS, atol=0.03)
    np.testing.assert_allclose(np.sum(fit.responsibilities, axis=1), 1.0, atol=1e-12)
    # EM never decreases the likelihood
    trace = np.asarray(fit.log_likelihood_trace)[: int(fit.n_iter)]
    assert np.all(np.diff(trace) >= -1e-10), np.diff(trace).min()
    assert float(fit.log_likelihood) >= trace[-1] - 1e-10
    # most samples are assigned to their true component
    assert np.mean(np.argmax(fit.responsibilities, axis=1) == Z) > 0.85
    # the likelihood at the truth is no higher than at the maximum-likelihood fit
    _, ll_true = cl.poisson_mixture_responsibilities(COUNTS, RATES, WEIGHTS)
    assert float(fit.log_likelihood) >= float(np.mean(ll_true))


def test_poisson_mixture_exposure_and_kmeans_init():
    exposure = RNG.uniform(0.5, 2.0, size=len(COUNTS))
    counts = RNG.poisson(RATES[Z] * exposure[:, None]).astype(float)
    fit = cl.poisson_mixture(counts, rates_init=RATES * 1.1, exposure=exposure, tol=1e-9, max_iter=500)
    np.testing.assert_allclose(fit.rates, RATES, rtol=0.06)
    # well-separated rates, no initial centres: k-means++ seeding
    sep = np.array([[50.0, 5.0, 200.0], [10.0, 80.0, 30.0], [300.0, 1.0, 1.0]])
    y = RNG.poisson(sep[Z]).astype(float)
    fit2 = cl.poisson_mixture(y, 3, key=jax.random.key(1))
    order = np.argsort(np.asarray(fit2.rates)[:, 0])
    np.testing.assert_allclose(np.asarray(fit2.rates)[order], sep[np.argsort(sep[:, 0])], rtol=0.03)
    # a feature that is zero for a whole component keeps finite log-likelihoods
    y0 = y.copy()
    y0[Z == 2, 1] = 0.0
    fit3 = cl.poisson_mixture(y0, rates_init=sep)
    assert np.isfinite(float(fit3.log_likelihood)) and np.all(np.isfinite(fit3.responsibilities))


# -- jit and vmap over datasets --------------------------------------------------------
def test_vmap_over_datasets_equals_separate_fits():
    # three datasets of the shapes used above (the separate fits reuse those compilations)
    perm = np.random.default_rng(1).permutation(len(X))
    data = np.stack([X, X[perm], X[perm] * 1.5 + 1.0])
    inits = np.stack([INIT, data[1][:4], data[2][:4]])
    counts = np.stack([COUNTS, COUNTS[::-1], COUNTS[:, ::-1]])
    keys = jax.random.split(jax.random.key(0), 3)
    gm_opts = {"covariance_type": "diag", "reg_covar": 1e-4, "tol": 1e-6, "max_iter": 300}
    pm_opts = {"rates_init": RATES, "tol": 1e-6, "max_iter": 500}

    def fit_all(x, c, y, key):
        return (cl.kmeans(x, init=c), cl.gaussian_mixture(x, means_init=c, **gm_opts),
                cl.poisson_mixture(y, **pm_opts), cl.kmeans(x, 4, key=key))

    km, gm, pm, seeded = jax.jit(jax.vmap(fit_all))(data, inits, counts, keys)
    for i in range(3):
        one = cl.kmeans(data[i], init=inits[i])
        np.testing.assert_allclose(km.inertia[i], one.inertia, rtol=1e-12)
        assert int(km.n_iter[i]) == int(one.n_iter)
        g = cl.gaussian_mixture(data[i], means_init=inits[i], **gm_opts)
        np.testing.assert_allclose(gm.means[i], g.means, rtol=1e-10)
        assert int(gm.n_iter[i]) == int(g.n_iter)
        p = cl.poisson_mixture(counts[i], **pm_opts)
        np.testing.assert_allclose(pm.rates[i], p.rates, rtol=1e-10)
    assert seeded.centers.shape == (3, 4, 3) and bool(jnp.all(seeded.converged))
    np.testing.assert_allclose(seeded.inertia[1], cl.kmeans(data[1], 4, key=keys[1]).inertia, rtol=1e-12)


# -- bad inputs ------------------------------------------------------------------------
def test_bad_inputs_raise_value_errors():
    with pytest.raises(ValueError, match="2-D"):
        cl.kmeans(X[:, 0], init=INIT)
    with pytest.raises(ValueError, match="shape"):
        cl.kmeans(X, init=INIT[:, :2])
    with pytest.raises(ValueError, match="key"):
        cl.kmeans(X, 4)
    with pytest.raises(ValueError, match="number of clusters"):
        cl.kmeans(X[:3], 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="initial"):
        cl.kmeans(X, 3, init=INIT)
    with pytest.raises(ValueError, match="non-finite"):
        cl.kmeans(np.where(X > 5, np.nan, X), init=INIT)
    with pytest.raises(ValueError, match="covariance_type"):
        cl.gaussian_mixture(X, means_init=INIT, covariance_type="spherical")
    with pytest.raises(ValueError, match="weights_init"):
        cl.gaussian_mixture(X, means_init=INIT, weights_init=np.ones(4))
    with pytest.raises(ValueError, match="precisions_init"):
        cl.gaussian_mixture(X, means_init=INIT, precisions_init=np.ones((4, 3)))
    with pytest.raises(ValueError, match="not both"):
        cl.gaussian_mixture(X, means_init=INIT, precisions_init=np.ones((4, 3, 3)),
                            covariances_init=np.ones((4, 3, 3)))
    with pytest.raises(ValueError, match="reg_covar"):
        cl.gaussian_mixture(X, means_init=INIT, reg_covar=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        cl.gaussian_mixture(X, means_init=INIT, max_iter=0)
    with pytest.raises(ValueError, match="negative"):
        cl.poisson_mixture(COUNTS - 50.0, rates_init=RATES)
    with pytest.raises(ValueError, match="exposure"):
        cl.poisson_mixture(COUNTS, rates_init=RATES, exposure=np.ones(3))
