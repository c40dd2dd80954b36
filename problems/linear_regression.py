"""Linear regression, the solvable model of Bayesian measurement.

Reference: S. Katakami, S. Kashiwamura, K. Nagata, M. Mizumaki, M. Okada,
"Mesoscopic Bayesian Inference by Solvable Models", arXiv:2406.02869 (2024).
The paper studies ``y_i = a x_i + b + n_i`` with Gaussian noise
``n_i ~ N(0, sigma^2)`` at a *finite* number of points N, where posterior and
free energy are known in closed form, and compares the models ``y = ax + b`` and
``y = ax`` by their free energies.

Only the abstract of the paper could be read while this module was written (see
``problems/data/linear_regression/README.md``): the equations below are derived
here from the model and are *not* transcribed from the paper, and the priors,
true values, N and noise levels are this module's choices, not the paper's.

Notation (design matrix ``X``: columns ``[x, 1]`` for ``y = ax + b``, ``[x]`` for
``y = ax``; coefficients ``w = (a, b)`` or ``w = (a,)``, k of them):

    likelihood   p(y | w)  = N(y | X w, sigma^2 I)
    prior        p(w)      = N(w | m0, S0),  S0 = diag(xi^2)                  (Gaussian, independent)
    mean squared error      E(w) = 1/(2N) sum_i (y_i - x_i . w)^2            (the paper's E(a, b))

Posterior (exact, Gaussian):                                                   [eq. P]

    Lambda = X^T X / sigma^2 + S0^-1,   Sigma = Lambda^-1,
    mu     = Sigma (X^T y / sigma^2 + S0^-1 m0).

Free energy, ``F = -log p(y) = -log int p(y|w) p(w) dw`` (exact):             [eq. F]

    F = N E(mu) / sigma^2 + 1/2 (mu - m0)^T S0^-1 (mu - m0)
        + 1/2 log det(S0 Lambda) + N/2 log(2 pi sigma^2)

equivalently ``F = -log N(y | X m0, sigma^2 I + X S0 X^T)``.  Every term depends
on the data only through the sums ``sum x^2, sum x, sum y, sum xy, sum y^2``,
the O(1) "mesoscopic" statistics of the paper.

Unknown noise level (two treatments, both with the inner integral over w exact):

* estimated (empirical Bayes, the "noise variance by free-energy minimisation"
  of Bayesian measurement): ``sigma_hat = argmin_sigma F(sigma)``
  (:func:`estimate_noise_sd`).  In the flat-prior limit ``xi -> inf`` this is
  ``sigma_hat^2 = 2 N E(w_LS) / (N - k)``, the unbiased residual variance.
* marginalised with a log-uniform (Jeffreys) prior on sigma, as the ``noise="fit"``
  models do: ``F = -log int p(y | sigma) p(sigma) dsigma``, a 1-D integral done by
  adaptive quadrature (:func:`free_energy_unknown_noise`); there is no closed form
  for independent Gaussian priors on w.
"""

from __future__ import annotations

import math
from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.problem import read_table
from jaxinv.plotting import plot_fit, plot_free_energy

# -- the setting of the embedded dataset and the simulations (this module's choice) --
N_POINTS = 100
X_RANGE = (-1.0, 1.0)
TRUE_A = 1.0
TRUE_B = 0.2
NOISE_LEVELS = (0.1, 0.3, 0.5, 1.0)  # noise standard deviations of the simulation studies
DEFAULT_NOISE_SD = 0.3  # of the embedded dataset
DEFAULT_SEED = 2406
PRIOR_MEAN = 0.0
PRIOR_SD = 10.0

MODELS = {"y=ax+b": 2, "y=ax": 1}  # model name -> number of regression coefficients
_BY_K = {k: name for name, k in MODELS.items()}
DATA_FILE = "linear_regression/default.csv"


# -- closed-form reference (plain numpy; independent of jaxinv's engines) -------------


def design_matrix(x, model: str) -> np.ndarray:
    """``[x, 1]`` for ``"y=ax+b"``, ``[x]`` for ``"y=ax"`` (shape ``(N, k)``)."""
    x = np.asarray(x, dtype=float).ravel()
    if model == "y=ax+b":
        return np.stack([x, np.ones_like(x)], axis=1)
    if model == "y=ax":
        return x[:, None]
    raise ValueError(f"unknown model {model!r}; expected one of {list(MODELS)}")


def _prior(model: str, prior_mean, prior_sd):
    k = MODELS[model] if model in MODELS else design_matrix([0.0], model).shape[1]
    m0 = np.broadcast_to(np.asarray(prior_mean, dtype=float), (k,)).copy()
    s0 = np.broadcast_to(np.asarray(prior_sd, dtype=float), (k,)).copy()
    if not np.all(np.isfinite(s0)) or np.any(s0 <= 0):
        raise ValueError(f"prior_sd must be positive and finite, got {prior_sd}")
    return m0, s0


def _check_xy(x, y):
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"x and y must be non-empty and of equal length, got {x.size} and {y.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("x and y must be finite")
    return x, y


def exact_posterior(x, y, model: str, noise_sd=DEFAULT_NOISE_SD, prior_mean=PRIOR_MEAN, prior_sd=PRIOR_SD):
    """Exact Gaussian posterior of the coefficients, eq. [P] of the module docstring.

    Args:
        x, y: the data (length N).
        model: ``"y=ax+b"`` (coefficients ``(a, b)``) or ``"y=ax"`` (``(a,)``).
        noise_sd: the known noise standard deviation sigma.
        prior_mean, prior_sd: Gaussian prior ``w_j ~ N(prior_mean_j, prior_sd_j^2)``
            (scalars or one value per coefficient).

    Returns:
        ``(mean, covariance)``: shapes ``(k,)`` and ``(k, k)``.
    """
    x, y = _check_xy(x, y)
    if not (np.isfinite(noise_sd) and noise_sd > 0):
        raise ValueError(f"noise_sd must be positive and finite, got {noise_sd}")
    X = design_matrix(x, model)
    m0, s0 = _prior(model, prior_mean, prior_sd)
    s2 = float(noise_sd) ** 2
    precision = X.T @ X / s2 + np.diag(1.0 / s0**2)
    chol = np.linalg.cholesky(precision)
    cov = np.linalg.inv(precision)
    cov = 0.5 * (cov + cov.T)
    rhs = X.T @ y / s2 + m0 / s0**2
    mean = np.linalg.solve(chol.T, np.linalg.solve(chol, rhs))
    return mean, cov


def exact_free_energy(x, y, model: str, noise_sd=DEFAULT_NOISE_SD, prior_mean=PRIOR_MEAN, prior_sd=PRIOR_SD):
    """Exact free energy ``F = -log p(y | model)`` (nats), eq. [F] of the module docstring:

        F = N E(mu)/sigma^2 + 1/2 (mu - m0)^T S0^-1 (mu - m0) + 1/2 log det(S0 Lambda) + N/2 log(2 pi sigma^2)

    with ``E(w) = 1/(2N) sum (y_i - x_i . w)^2`` and ``mu, Lambda`` the posterior
    mean and precision.  Arguments as :func:`exact_posterior`.
    """
    x, y = _check_xy(x, y)
    mean, _ = exact_posterior(x, y, model, noise_sd, prior_mean, prior_sd)
    X = design_matrix(x, model)
    m0, s0 = _prior(model, prior_mean, prior_sd)
    s2 = float(noise_sd) ** 2
    n = y.size
    resid = y - X @ mean
    two_n_e = float(resid @ resid)  # 2 N E(mu)
    # det(S0 Lambda) = det(I + S0^1/2 X^T X S0^1/2 / sigma^2), symmetric positive definite
    scaled = (X * s0).T @ (X * s0) / s2 + np.eye(X.shape[1])
    _, logdet = np.linalg.slogdet(scaled)
    return float(
        0.5 * two_n_e / s2
        + 0.5 * np.sum(((mean - m0) / s0) ** 2)
        + 0.5 * logdet
        + 0.5 * n * math.log(2.0 * math.pi * s2)
    )


def exact_free_energies(x, y, **kwargs) -> dict[str, float]:
    """``{model name: exact F}`` for both models."""
    return {name: exact_free_energy(x, y, name, **kwargs) for name in MODELS}


def exact_selection(x, y, **kwargs) -> str:
    """The model with the lower exact free energy."""
    f = exact_free_energies(x, y, **kwargs)
    return min(f, key=f.get)


def estimate_noise_sd(x, y, model: str, prior_mean=PRIOR_MEAN, prior_sd=PRIOR_SD):
    """Noise level by free-energy minimisation: ``argmin_sigma F(sigma)`` and the minimum.

    Returns ``(sigma_hat, F(sigma_hat))``.  The minimiser is bracketed between
    1e-6 and 10 times the root mean square of y.
    """
    from scipy.optimize import minimize_scalar

    x, y = _check_xy(x, y)
    n, k = y.size, design_matrix(x, model).shape[1]
    if n <= k:
        raise ValueError(f"estimating the noise needs more points than coefficients ({n} <= {k})")
    scale = float(np.sqrt(np.mean(y**2))) or 1.0
    f = lambda log_s: exact_free_energy(x, y, model, math.exp(log_s), prior_mean, prior_sd)  # noqa: E731
    res = minimize_scalar(f, bounds=(math.log(1e-6 * scale), math.log(10.0 * scale)), method="bounded",
                          options={"xatol": 1e-10})
    return math.exp(res.x), float(res.fun)


def free_energy_unknown_noise(x, y, model: str, sigma_low: float, sigma_high: float,
                              prior_mean=PRIOR_MEAN, prior_sd=PRIOR_SD) -> float:
    """``F = -log int p(y | sigma) p(sigma) dsigma`` with ``p(sigma)`` log-uniform on
    ``(sigma_low, sigma_high)``; ``p(y | sigma) = exp(-F(sigma))`` from eq. [F].

    In ``t = log sigma`` the prior is uniform, so ``F = -log[ int exp(-F(e^t)) dt / log(high/low) ]``,
    computed by adaptive quadrature (relative accuracy ~1e-10)."""
    from scipy.integrate import quad

    if not (0 < sigma_low < sigma_high < np.inf):
        raise ValueError(f"need 0 < sigma_low < sigma_high < inf, got {sigma_low}, {sigma_high}")
    x, y = _check_xy(x, y)
    lo, hi = math.log(sigma_low), math.log(sigma_high)
    g = lambda t: exact_free_energy(x, y, model, math.exp(t), prior_mean, prior_sd)  # noqa: E731
    s_hat, _ = estimate_noise_sd(x, y, model, prior_mean, prior_sd)
    t_hat = min(max(math.log(s_hat), lo), hi)
    f_min = g(t_hat)
    inner = lambda t: math.exp(-(g(t) - f_min))  # noqa: E731
    pts = [p for p in (t_hat - 0.5, t_hat, t_hat + 0.5) if lo < p < hi]
    val, _ = quad(inner, lo, hi, points=pts or None, limit=500, epsabs=0.0, epsrel=1e-12)
    return float(f_min - math.log(val) + math.log(hi - lo))


# -- data --------------------------------------------------------------------------------


def simulate(key, n: int = N_POINTS, a: float = TRUE_A, b: float = TRUE_B, noise_sd: float = DEFAULT_NOISE_SD,
             x_range=X_RANGE) -> Dataset:
    """Fresh synthetic data: ``x_i ~ Uniform(x_range)`` (sorted), ``y_i = a x_i + b + sigma e_i``,
    ``e_i ~ N(0, 1)``; ``key`` a JAX PRNG key.  The truth goes to ``meta``."""
    n = int(n)
    if n < 2:
        raise ValueError(f"need at least 2 points, got {n}")
    if not (np.isfinite(noise_sd) and noise_sd > 0):
        raise ValueError(f"noise_sd must be positive and finite, got {noise_sd}")
    kx, ke = jax.random.split(key)
    x = np.sort(np.asarray(jax.random.uniform(kx, (n,), minval=x_range[0], maxval=x_range[1], dtype=jnp.float64)))
    e = np.asarray(jax.random.normal(ke, (n,), dtype=jnp.float64))
    y = a * x + b + noise_sd * e
    return Dataset(x=x, y=y, meta={"source": "simulated", "truth": {"a": a, "b": b, "noise_sd": noise_sd}})


def read_csv(path) -> Dataset:
    """Columns ``x, y`` (comma-separated, optional header line, ``#`` comments)."""
    table = read_table(path, ("x", "y"))
    return Dataset(x=table[:, 0], y=table[:, 1], meta={"source": str(path)})


def load_data(path) -> Dataset:
    """A user's CSV file of ``x, y``."""
    return read_csv(path)


def default_data() -> Dataset:
    """The embedded synthetic dataset (``problems/data/linear_regression/default.csv``;
    ``simulate(jax.random.key(DEFAULT_SEED))``: N=100, a=1, b=0.2, sigma=0.3)."""
    data = read_csv(Path(str(files("problems") / "data" / DATA_FILE)))
    meta = {**data.meta, "truth": {"a": TRUE_A, "b": TRUE_B, "noise_sd": DEFAULT_NOISE_SD}}
    return Dataset(x=data.x, y=data.y, meta=meta)


def write_default_data(path) -> Path:
    """Regenerate the embedded CSV (17 significant digits, round-trips exactly)."""
    data = simulate(jax.random.key(DEFAULT_SEED))
    lines = ["x,y"] + [f"{xi:.17g},{yi:.17g}" for xi, yi in zip(data.x, data.y)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# -- models ------------------------------------------------------------------------------


class Line(eqx.Module):
    """``y = a x + b`` (``intercept=True``) or ``y = a x``."""

    x: jax.Array
    intercept: bool = eqx.field(static=True)

    def __call__(self, params):
        y = params["a"] * self.x
        return y + params["b"] if self.intercept else y


def models(data: Dataset, noise: str = "known", noise_sd: float = DEFAULT_NOISE_SD,
           prior_mean: float = PRIOR_MEAN, prior_sd: float = PRIOR_SD, n_components=(2, 1),
           sigma_range=None) -> dict[str, ji.Model]:
    """The candidates ``{"y=ax+b": Model, "y=ax": Model}``.

    Args:
        data: the dataset (its ``x`` enters the forward model).
        noise: ``"known"`` -- Normal likelihood with ``sigma = noise_sd`` (the
            setting in which :func:`exact_free_energy` is the exact reference and
            the Laplace free energy is exact); ``"fit"`` -- sigma inferred with a
            LogUniform prior on ``sigma_range`` (default: 1e-3 to 10 times the rms
            of y), reference :func:`free_energy_unknown_noise`.
        prior_mean, prior_sd: Gaussian prior of each coefficient.
        n_components: numbers of coefficients to include (2: ``y=ax+b``, 1: ``y=ax``),
            as given by the command line's ``--select``.
    """
    x = np.asarray(data.x, dtype=float)
    y = np.asarray(data.y, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"x and y must be vectors of equal length, got shapes {x.shape} and {y.shape}")
    if noise == "known":
        likelihood = ji.likelihoods.Normal(sigma=float(noise_sd))
    elif noise == "fit":
        if sigma_range is None:
            rms = float(np.sqrt(np.mean(y**2))) or 1.0
            sigma_range = (1e-3 * rms, 10.0 * rms)
        likelihood = ji.likelihoods.Normal(sigma=ji.priors.LogUniform(*sigma_range))
    else:
        raise ValueError(f"noise must be 'known' or 'fit', got {noise!r}")
    wanted = [int(k) for k in n_components]
    unknown = sorted(set(wanted) - set(_BY_K))
    if unknown:
        raise ValueError(f"n_components must be among {sorted(_BY_K)} (2: y=ax+b, 1: y=ax), got {unknown}")
    xj = jnp.asarray(x)
    out = {}
    for k in sorted(set(wanted), reverse=True):
        priors = {"a": ji.priors.Normal(prior_mean, prior_sd)}
        if k == 2:
            priors["b"] = ji.priors.Normal(prior_mean, prior_sd)
        out[_BY_K[k]] = ji.Model(Line(xj, intercept=k == 2), priors, likelihood)
    return out


def n_components(name: str) -> int:
    """Number of regression coefficients of a model name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {list(MODELS)}")
    return MODELS[name]


def _on_x(forward, x):
    return eqx.tree_at(lambda m: m.x, forward, jnp.asarray(x, dtype=forward.x.dtype))


def figures(selection, data: Dataset, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    x = np.asarray(data.x)
    fine = np.linspace(x.min(), x.max(), 200)
    return [
        plot_fit(selection, data.x, data.y, out_dir / "fit.png", xlabel="x", ylabel="y",
                 fine_x=fine, forward_at=_on_x),
        plot_free_energy(selection, out_dir / "free_energy.png"),
    ]


problem = Problem(
    name="linear-regression",
    description="Solvable model (Katakami et al. 2024): y=ax+b vs y=ax, Gaussian priors, exact free energy",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    n_components=n_components,
)
