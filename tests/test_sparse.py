"""jaxinv.sparse against scikit-learn on the same data: the same objective values (1e-6
relative), regularisation paths, cross-validation errors and NMF iterates; optimality
conditions where scikit-learn has no counterpart; Bayesian sparse regression through the
ordinary engines."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.decomposition import NMF
from sklearn.linear_model import ElasticNet, Lasso, LassoCV, MultiTaskLasso, lasso_path
from sklearn.model_selection import KFold

import jaxinv as ji
from jaxinv import sparse

RTOL = 1e-6


def _data(seed=0, n=60, p=20, tasks=None):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) * rng.uniform(0.5, 2.0, size=p)
    coef = np.zeros(p)
    coef[:4] = [2.0, -1.5, 1.0, 0.5]
    y = X @ coef + 0.5 * rng.normal(size=n) + 3.0
    if tasks:
        y = np.stack([y] + [X @ (coef * (k + 2) / 3) + rng.normal(size=n) for k in range(tasks - 1)], axis=1)
    return X, y


def _sk_objective(X, y, coef, intercept, penalty):
    r = y - X @ coef - intercept
    return 0.5 * np.sum(r**2) / X.shape[0] + penalty


@pytest.mark.parametrize("alpha", [0.01, 0.1, 0.6])
def test_lasso_nonnegative_lasso_and_elastic_net_match_sklearn(alpha):
    X, y = _data()
    sk = Lasso(alpha=alpha, tol=1e-14, max_iter=100_000).fit(X, y)
    ours = sparse.lasso(X, y, alpha)
    ref = _sk_objective(X, y, sk.coef_, sk.intercept_, alpha * np.abs(sk.coef_).sum())
    assert abs(float(ours.objective) - ref) <= RTOL * ref
    np.testing.assert_allclose(ours.coef, sk.coef_, atol=1e-6)
    assert bool(ours.converged)

    sk = Lasso(alpha=alpha, positive=True, tol=1e-14, max_iter=100_000).fit(X, y)
    ours = sparse.lasso(X, y, alpha, positive=True)
    ref = _sk_objective(X, y, sk.coef_, sk.intercept_, alpha * sk.coef_.sum())
    assert abs(float(ours.objective) - ref) <= RTOL * ref
    assert float(jnp.min(ours.coef)) >= 0.0

    sk = ElasticNet(alpha=alpha, l1_ratio=0.3, tol=1e-14, max_iter=100_000).fit(X, y)
    ours = sparse.elastic_net(X, y, alpha, 0.3)
    pen = alpha * (0.3 * np.abs(sk.coef_).sum() + 0.5 * 0.7 * np.sum(sk.coef_**2))
    ref = _sk_objective(X, y, sk.coef_, sk.intercept_, pen)
    assert abs(float(ours.objective) - ref) <= RTOL * ref


def test_multitask_lasso_matches_sklearn_and_zeroes_whole_rows():
    X, Y = _data(1, tasks=3)
    alpha = 0.3
    sk = MultiTaskLasso(alpha=alpha, tol=1e-14, max_iter=100_000).fit(X, Y)
    ours = sparse.multitask_lasso(X, Y, alpha)
    R = Y - X @ sk.coef_.T - sk.intercept_
    ref = 0.5 * np.sum(R**2) / X.shape[0] + alpha * np.linalg.norm(sk.coef_, axis=0).sum()  # coef_: (tasks, features)
    assert abs(float(ours.objective) - ref) <= RTOL * ref
    rows = np.linalg.norm(np.asarray(ours.coef), axis=1)
    assert np.all((rows == 0) | (rows > 1e-3))                 # rows vanish exactly or not at all
    assert set(np.flatnonzero(rows)) >= {0, 1, 2}


def test_group_lasso_satisfies_its_optimality_conditions():
    """KKT: for a non-zero group, grad_g f + alpha w_g b_g / ||b_g|| = 0; for a zero group,
    ||grad_g f|| <= alpha w_g (Yuan & Lin 2006, eq. 2.2)."""
    X, y = _data(2, p=12)
    groups = np.repeat(np.arange(4), 3)
    alpha = 0.4
    fit = sparse.group_lasso(X, y, alpha, groups)
    Xc, yc = X - X.mean(0), y - y.mean()
    grad = -Xc.T @ (yc - Xc @ np.asarray(fit.coef)) / X.shape[0]
    coef = np.asarray(fit.coef)
    n_zero = 0
    for g in range(4):
        sel = groups == g
        w = np.sqrt(sel.sum())
        norm = np.linalg.norm(coef[sel])
        if norm == 0:
            n_zero += 1
            assert np.linalg.norm(grad[sel]) <= alpha * w * (1 + 1e-8)
        else:
            np.testing.assert_allclose(grad[sel], -alpha * w * coef[sel] / norm, atol=1e-7)
    assert 0 < n_zero < 4                                      # the test exercises both cases
    # singleton groups without weights are the lasso
    single = sparse.group_lasso(X, y, 0.1, np.arange(12), weights="none")
    np.testing.assert_allclose(single.coef, sparse.lasso(X, y, 0.1).coef, atol=1e-8)


def test_path_starts_at_alpha_max_and_matches_sklearn():
    X, y = _data(3)
    path = sparse.regularisation_path(X, y, sparse.L1(0.0), n_alphas=20, eps=1e-2)
    top = float(np.max(np.abs((X - X.mean(0)).T @ (y - y.mean()))) / X.shape[0])
    assert float(path.alphas[0]) == pytest.approx(top, rel=1e-12)
    assert np.all(np.asarray(path.coef[0]) == 0) and np.any(np.asarray(path.coef[1]) != 0)
    alphas, coefs, _ = lasso_path(X - X.mean(0), y - y.mean(), alphas=np.asarray(path.alphas), tol=1e-14,
                                  max_iter=100_000)
    np.testing.assert_allclose(np.asarray(path.coef), coefs.T, atol=1e-6)
    assert bool(jnp.all(path.converged))


def test_cross_validation_matches_sklearn_lassocv():
    X, y = _data(4)
    alphas = np.geomspace(1.0, 1e-3, 15)
    sk = LassoCV(alphas=alphas, cv=KFold(5), tol=1e-14, max_iter=100_000).fit(X, y)
    cv = sparse.cross_validate(X, y, sparse.L1(0.0), alphas=alphas, n_folds=5)
    np.testing.assert_allclose(np.asarray(cv.fold_error).T, sk.mse_path_, rtol=RTOL)
    assert float(cv.best_alpha) == pytest.approx(sk.alpha_)
    assert float(cv.alpha_1se) >= float(cv.best_alpha)
    # the one-standard-error rule keeps the true support here and drops nothing it needs
    one_se = sparse.lasso(X, y, cv.alpha_1se)
    assert set(np.flatnonzero(np.asarray(one_se.coef))) >= {0, 1, 2, 3}


def test_vmap_over_datasets_equals_separate_fits():
    data = [_data(s) for s in range(3)]
    X = jnp.stack([d[0] for d in data])
    y = jnp.stack([d[1] for d in data])
    batched = jax.vmap(lambda X, y: sparse.lasso(X, y, 0.1))(X, y)
    for i in range(3):
        single = sparse.lasso(X[i], y[i], 0.1)
        np.testing.assert_allclose(batched.coef[i], single.coef, atol=1e-9)


def _nmf_data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.gamma(1.0, 1.0, (40, 3)) @ rng.gamma(1.0, 1.0, (3, 12)) + 0.05 * rng.random((40, 12))
    W0, H0 = np.abs(rng.normal(size=(40, 3))), np.abs(rng.normal(size=(3, 12)))
    return X, W0, H0


@pytest.mark.parametrize("loss, solver, sk_solver, beta", [("frobenius", "mu", "mu", 2), ("kl", "mu", "mu", 1),
                                                           ("frobenius", "hals", "cd", 2)])
def test_nmf_matches_sklearn_from_the_same_start(loss, solver, sk_solver, beta):
    X, W0, H0 = _nmf_data()
    sk = NMF(3, init="custom", solver=sk_solver, beta_loss=beta, tol=0.0, max_iter=300)
    W = sk.fit_transform(X, W=W0.copy(), H=H0.copy())
    ours = sparse.nmf(X, 3, init=(W0, H0), loss=loss, solver=solver, tol=0.0, max_iter=300)
    ref = 0.5 * sk.reconstruction_err_**2                       # scikit-learn reports sqrt(2 D)
    assert abs(float(ours.loss) - ref) <= RTOL * ref
    np.testing.assert_allclose(ours.W, W, rtol=1e-6, atol=1e-9)
    assert int(ours.n_iter) == 300


def test_nmf_rank_chosen_by_cross_validation():
    rng = np.random.default_rng(5)
    X = rng.gamma(1.0, 1.0, (40, 3)) @ rng.gamma(1.0, 1.0, (3, 12))
    X = np.abs(X + 0.05 * rng.normal(size=X.shape))
    sel = sparse.nmf_rank_cv(X, [2, 3, 4], jax.random.key(0), n_folds=4, n_starts=2)   # typed key
    assert sel.best_rank == 3 and sel.rank_1se == 3
    assert sel.mean_error[1] < 0.5 * sel.mean_error[0]


def test_laplace_prior_map_is_the_lasso():
    """-log p = ||r||^2 / (2 sigma^2) + ||b||_1 / scale: the MAP is the lasso at
    alpha = sigma^2 / (n scale).  Checked on the model's own energy: at the lasso solution its
    likelihood gradient is -sign(b_j) / scale for every non-zero coefficient and at most
    1 / scale in size for every zero one (the subgradient condition of the posterior mode)."""
    X, y = _data(6, n=50, p=8)
    sigma, scale = 0.5, 0.02
    model = sparse.sparse_regression_model(X, "laplace", noise=sigma, scale=scale, intercept=ji.priors.Normal(0, 1e3))
    post = model.condition(y)
    lasso = sparse.lasso(X, y, sigma**2 / (X.shape[0] * scale))
    z = post.unconstrain({"coef": lasso.coef, "intercept": lasso.intercept})
    grad = np.asarray(jax.grad(lambda z: -post.log_likelihood(z))(z))
    coef, g = np.asarray(lasso.coef), grad[:8]
    active = coef != 0
    assert 0 < active.sum() < 8                                  # both cases are exercised
    np.testing.assert_allclose(g[active], -np.sign(coef[active]) / scale, rtol=1e-6)
    assert np.all(np.abs(g[~active]) <= (1 + 1e-6) / scale)
    assert abs(grad[8]) < 1e-6 * X.shape[0] / sigma**2          # the intercept (nearly flat prior)
    # and the energy rises in every direction away from it
    energy = jax.jit(lambda v: post.energy(v))
    e0 = float(energy(z))
    for d in np.random.default_rng(0).normal(size=(20, 9)):
        assert float(energy(z + 1e-4 * d)) > e0


def test_horseshoe_shrinks_noise_coefficients_and_keeps_signals():
    rng = np.random.default_rng(7)
    n, p, sigma = 50, 10, 0.5
    X = rng.normal(size=(n, p))
    coef = np.zeros(p)
    coef[:3] = [2.0, -1.5, 1.0]
    y = X @ coef + sigma * rng.normal(size=n)
    model = sparse.sparse_regression_model(X, "horseshoe", noise=sigma, n_nonzero=3, slab_scale=3.0)
    res = ji.sample(model.condition(y), jax.random.PRNGKey(1), method="nuts", n_chains=2, n_warmup=300,
                    n_draws=300)
    draws = np.asarray(model.forward.coefficients(res.params)).reshape(-1, p)
    mean, sd = draws.mean(0), draws.std(0)
    assert np.all(np.abs(mean[:3] - coef[:3]) < 3 * sd[:3])   # signals: truth inside the posterior
    assert np.all(np.abs(mean[3:]) < 0.1)                      # noise: shrunk towards zero
    assert np.all(np.abs(mean[:3]) > 5 * sd[:3])


def test_bad_inputs_are_named():
    X, y = _data()
    with pytest.raises(ValueError, match="NaN"):
        sparse.lasso(np.where(np.eye(60, 20) > 0, np.nan, X), y, 0.1)
    with pytest.raises(ValueError, match="y must have shape"):
        sparse.lasso(X, y[:-1], 0.1)
    with pytest.raises(ValueError, match="strength"):
        sparse.L1(-1.0)
    with pytest.raises(ValueError, match="one integer label per feature"):
        sparse.group_lasso(X, y, 0.1, [0, 1])
    with pytest.raises(ValueError, match="without gaps"):
        sparse.GroupL1(0.1, np.array([0, 2, 2]))
    with pytest.raises(ValueError, match="n_folds"):
        sparse.cross_validate(X, y, sparse.L1(0.0), n_folds=1)
    with pytest.raises(ValueError, match="non-negative X"):
        sparse.nmf(-np.ones((3, 3)), 1, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="HALS"):
        sparse.nmf(np.ones((3, 3)), 1, jax.random.PRNGKey(0), loss="kl", solver="hals")
    with pytest.raises(ValueError, match="PRNG key"):
        sparse.nmf(np.ones((3, 3)), 1)
    with pytest.raises(ValueError, match="unknown sparsity prior"):
        sparse.sparse_regression_model(X, "spike")


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_sparse_multinomial_logistic_matches_sklearn(alpha):
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    n = len(y)
    ours = sparse.multinomial_logistic(X, y, alpha)
    sk = LogisticRegression(l1_ratio=1.0, C=1.0 / (n * alpha), solver="saga", tol=1e-12, max_iter=200_000).fit(X, y)
    p = sk.predict_proba(X)
    ref = -np.mean(np.log(p[np.arange(n), y])) + alpha * np.abs(sk.coef_).sum()
    assert abs(float(ours.objective) - ref) <= RTOL * ref
    np.testing.assert_allclose(sparse.predict_proba(ours, X), p, atol=1e-5)


def test_classifier_cross_validation_and_group_penalty():
    """The path starts with intercepts only; held-out accuracy rises along it; the group
    penalty zeroes whole rows (an element for all classes or none)."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    cv = sparse.cross_validate_classifier(X, y, jax.random.key(0), n_alphas=12, penalty="group")
    assert int(cv.n_selected[0]) == 0 and int(cv.n_selected[-1]) == 4
    assert float(cv.mean_accuracy[0]) < 0.5 < 0.9 < float(jnp.max(cv.mean_accuracy))
    for B in np.asarray(cv.path[0]):
        rows = np.linalg.norm(B, axis=1)
        assert np.all((rows == 0) | np.all(B != 0, axis=1))


def test_folds_match_sklearn_kfold_when_n_is_not_a_multiple_and_bad_folds_are_named():
    X, y = _data(8, n=62)
    alphas = np.geomspace(1.0, 1e-2, 6)
    sk = LassoCV(alphas=alphas, cv=KFold(5), tol=1e-14, max_iter=100_000).fit(X, y)
    cv = sparse.cross_validate(X, y, sparse.L1(0.0), alphas=alphas, n_folds=5)
    np.testing.assert_allclose(np.asarray(cv.fold_error).T, sk.mse_path_, rtol=RTOL)
    with pytest.raises(ValueError, match="empty"):
        sparse.cross_validate(X, y, sparse.L1(0.0), folds=np.where(np.arange(62) < 31, 0, 2))
