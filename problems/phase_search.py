"""Sparse phase search: which few of hundreds of library phases explain a powder pattern.

An observed X-ray powder-diffraction pattern is a non-negative, sparse combination of the
patterns of the phases present (plus noise),

    y(2theta_i) = sum_j w_j L_j(2theta_i) + eps_i,   w_j >= 0,   eps_i ~ N(0, sigma^2),

where the library ``L`` holds one pattern per candidate phase (here M = 240 synthetic
phases, each a sum of 4-10 pseudo-Voigt peaks drawn from ``jaxinv.physics.peaks``, scaled
to a unit maximum) and only 2-4 weights are non-zero.  The weights get a non-negative
regularised horseshoe prior (``ji.sparse.sparse_regression_model(..., "horseshoe",
nonnegative=True)``: ``w_j = tau lambda_j z_j``, ``z_j ~ HalfNormal(1)``, ``lambda_j ~
HalfCauchy(1)``, ``tau ~ HalfCauchy(tau_0)`` with ``tau_0`` from the expected number of
phases, Piironen & Vehtari 2017, eq. 3.12), and the posterior is fitted by SVI
(``ji.svi``, mean-field Gaussian in the unconstrained space) -- the approach of the GPU XRD
phase search of Murakami, Nagata et al., who report MCMC 10 371.5 s, SVI on a CPU 260.8 s
and SVI on a GPU 7.2 s for their library (``benchmarks/batch.py`` compares SVI with NUTS on
this model).

A phase is reported present when the posterior probability that its weight exceeds the
detection limit ``w_min`` (default 0.02 of the unit-maximum pattern, ~2 noise sd at the
default noise) is above one half.

The embedded default data are one realisation of :func:`simulate` (three phases present);
:func:`simulate` draws fresh ones.  The library is rebuilt from its seed by
:func:`library` (the data file keeps only the observed pattern and the truth).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.physics.peaks import pseudo_voigt

TWO_THETA = np.round(np.arange(10.0, 80.0 + 1e-9, 0.05), 4)  # degrees, 1401 points
N_PHASES = 240
LIBRARY_SEED = 2024
DEFAULT_SEED = 7
NOISE_SD = 0.01
DETECTION_LIMIT = 0.02
DATA_FILE = "pattern.json"


def library(n_phases: int = N_PHASES, seed: int = LIBRARY_SEED, two_theta=TWO_THETA) -> np.ndarray:
    """Synthetic library ``(n_phases, n_points)``: phase ``j`` has 4-10 pseudo-Voigt peaks at
    uniform positions in [12, 78] degrees, FWHM 0.15-0.35 degrees, Lorentzian fraction
    0.3-0.7 and exponentially distributed intensities; each pattern scaled to maximum 1."""
    rng = np.random.default_rng(seed)
    n_peaks = rng.integers(4, 11, n_phases)
    shape = (n_phases, 10)
    position = rng.uniform(12.0, 78.0, shape)
    fwhm = rng.uniform(0.15, 0.35, shape)
    eta = rng.uniform(0.3, 0.7, shape)
    intensity = rng.exponential(1.0, shape) * (np.arange(10)[None] < n_peaks[:, None])  # 4-10 peaks each
    x = jnp.asarray(two_theta)

    def phase(p, w, e, a):
        return pseudo_voigt(x, p, w, e) @ a  # (points, peaks) @ (peaks,)

    patterns = np.asarray(jax.vmap(phase)(jnp.asarray(position), jnp.asarray(fwhm), jnp.asarray(eta),
                                          jnp.asarray(intensity)))
    patterns = patterns / patterns.max(axis=1, keepdims=True)
    return patterns


def simulate(key, phases=None, weights=None, noise_sd: float = NOISE_SD, library_patterns=None) -> Dataset:
    """An observed pattern: the given phases (default: three drawn from the library with
    ``key``) with the given weights (default 1.0, 0.6, 0.35 of the unit-maximum patterns),
    plus Gaussian noise of sd ``noise_sd``."""
    lib = library() if library_patterns is None else np.asarray(library_patterns)
    phase_key, noise_key = jax.random.split(key)
    if phases is None:
        phases = np.sort(np.asarray(jax.random.choice(phase_key, lib.shape[0], (3,), replace=False)))
    phases = np.asarray(phases, dtype=int)
    weights = np.asarray([1.0, 0.6, 0.35][: len(phases)] if weights is None else weights, dtype=float)
    if weights.shape != phases.shape or np.any(weights <= 0):
        raise ValueError("weights must be positive, one per phase")
    clean = weights @ lib[phases]
    y = clean + noise_sd * np.asarray(jax.random.normal(noise_key, clean.shape))
    return Dataset(x=TWO_THETA.copy(), y=y, meta={"truth": {"phases": phases.tolist(), "weights": weights.tolist()},
                                                  "noise_sd": noise_sd, "x_unit": "degrees 2theta",
                                                  "source": "simulated (jaxinv problems.phase_search)"})


def default_data() -> Dataset:
    """The embedded pattern (``simulate(key(DEFAULT_SEED))``, stored in ``problems/data/phase_search``)."""
    return load_data(Path(str(files("problems") / "data" / "phase_search" / DATA_FILE)))


def load_data(path) -> Dataset:
    """A pattern file: JSON ``{"two_theta": [...], "y": [...], "noise_sd": s[, "truth": ...]}``
    on the library's 2-theta grid."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    for field in ("two_theta", "y", "noise_sd"):
        if field not in raw:
            raise ValueError(f"{path}: missing field {field!r}")
    x, y = np.asarray(raw["two_theta"], float), np.asarray(raw["y"], float)
    if x.shape != TWO_THETA.shape or not np.allclose(x, TWO_THETA):
        raise ValueError(f"{path}: the pattern must be on the library grid (10-80 degrees, step 0.05)")
    if not float(raw["noise_sd"]) > 0:
        raise ValueError(f"{path}: noise_sd must be positive")
    return Dataset(x=x, y=y, meta={"noise_sd": float(raw["noise_sd"]), "truth": raw.get("truth"),
                                   "source": str(path), "x_unit": "degrees 2theta"})


def model(data: Dataset, library_patterns=None, expected_phases: float = 3.0, slab_scale: float = 2.0) -> ji.Model:
    """The sparse non-negative mixture ``y = L^T w + eps`` with the regularised horseshoe."""
    lib = library() if library_patterns is None else np.asarray(library_patterns)
    return ji.sparse.sparse_regression_model(lib.T, "horseshoe", noise=float(data.meta["noise_sd"]),
                                             n_nonzero=expected_phases, slab_scale=slab_scale, nonnegative=True)


def weights(result, m: ji.Model) -> np.ndarray:
    """Posterior draws of the weights ``(draws, M)`` from a Result of the model's parameters."""
    params = {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in result.params.items()}
    return np.asarray(m.forward.coefficients({k: jnp.asarray(v) for k, v in params.items()}))


def identify(draws: np.ndarray, detection_limit: float = DETECTION_LIMIT) -> np.ndarray:
    """Indices of the phases with ``P(w_j > detection_limit) > 1/2``."""
    return np.flatnonzero(np.mean(draws > detection_limit, axis=0) > 0.5)


def lasso_start(data: Dataset, m: ji.Model, library_patterns=None, alpha: float = 1e-5,
                floor: float = 1e-4) -> dict:
    """A starting point for SVI: the non-negative lasso weights (``ji.sparse.lasso``,
    ``positive=True``, a small ``alpha``), written as horseshoe parameters with ``z_j = 1``,
    ``tau = tau_0`` and ``lambda_j`` such that the regularised weight equals the lasso's
    (weights below ``floor`` raised to it)."""
    lib = library() if library_patterns is None else np.asarray(library_patterns)
    w = np.asarray(ji.sparse.lasso(lib.T, data.y, alpha, positive=True, fit_intercept=False).coef)
    c = float(m.forward.slab_scale)
    w = np.clip(w, floor, 0.9 * c)
    tau = float(m.priors["global_scale"].distribution.scale)
    # regularised horseshoe: w^2 = c^2 x / (c^2 + x), x = tau^2 lambda^2  ->  x = w^2 c^2 / (c^2 - w^2)
    x = w**2 * c**2 / (c**2 - w**2)
    return {"coef_std": np.ones_like(w), "local_scale": np.sqrt(x) / tau, "global_scale": np.asarray(tau)}


def search(data: Dataset, key, *, n_steps: int = 2000, family: str = "meanfield", learning_rate: float = 0.01,
           library_patterns=None, detection_limit: float = DETECTION_LIMIT):
    """SVI on the sparse mixture from the non-negative lasso start (:func:`lasso_start`);
    returns ``(result, weight draws, present phases)``.

    From prior-draw starts, 3000 mean-field steps often stopped in poor optima on a four-phase
    pattern (ELBOs 3082 and -4313 against 4309 when converged, with spurious phases); the
    lasso start removes that.  PSIS k-hat stays large (>4): importance weights in 481
    dimensions cannot certify a mean-field fit, so the weights' intervals are approximate
    (mean-field under-disperses); NUTS on the same model is the reference
    (``benchmarks/batch.py``)."""
    lib = library() if library_patterns is None else np.asarray(library_patterns)
    m = model(data, lib)
    start = lasso_start(data, m, lib)
    res = ji.svi(m.condition(data.y), key, family=family, n_steps=n_steps, n_draws=1000,
                 learning_rate=learning_rate, init=start)
    draws = weights(res, m)
    return res, draws, identify(draws, detection_limit)


def figures(data: Dataset, draws: np.ndarray, present, out_dir, library_patterns=None) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lib = library() if library_patterns is None else np.asarray(library_patterns)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6))
    top.plot(data.x, data.y, lw=0.6, color="k", label="observed")
    top.plot(data.x, np.median(draws, 0) @ lib, lw=0.8, color="C3", label="posterior median fit")
    for j in present:
        top.plot(data.x, np.median(draws[:, j]) * lib[j], lw=0.6, label=f"phase {j}")
    top.set_xlabel("2θ (degrees)")
    top.set_ylabel("intensity")
    top.legend(fontsize=7)
    mean = draws.mean(0)
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=0)
    bottom.errorbar(np.arange(len(mean)), mean, yerr=[mean - lo, hi - mean], fmt=".", ms=2, lw=0.5)
    bottom.axhline(DETECTION_LIMIT, color="grey", lw=0.5, ls="--")
    bottom.set_xlabel("library phase")
    bottom.set_ylabel("weight (90 % interval)")
    fig.tight_layout()
    path = out_dir / "phases.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def run(data: Dataset, out_dir, key, n_steps: int = 2000, family: str = "meanfield",
        detection_limit: float = DETECTION_LIMIT) -> dict:
    """``jaxinv run phase-search``: SVI, the phases present, a figure."""
    import time

    start = time.perf_counter()
    res, draws, present = search(data, key, n_steps=n_steps, family=family, detection_limit=detection_limit)
    seconds = time.perf_counter() - start
    written = figures(data, draws, present, out_dir) if out_dir is not None else []
    truth = (data.meta.get("truth") or {}).get("phases")
    lines = [f"SVI ({family}, {n_steps} steps) over {draws.shape[1]} library phases: {seconds:.1f} s "
             f"(including compilation); ELBO {float(res.log_evidence):.1f}, k-hat {float(res.stats['khat']):.2f}",
             "phase  weight (mean, 90 % interval)  P(w > limit)"]
    prob = np.mean(draws > detection_limit, axis=0)
    for j in present:
        lo, hi = np.quantile(draws[:, j], [0.05, 0.95])
        lines.append(f"{j:5d}  {draws[:, j].mean():.3f} [{lo:.3f}, {hi:.3f}]  {prob[j]:.2f}")
    if truth is not None:
        lines.append(f"true phases: {truth}")
    return {"present": [int(j) for j in present], "weights_mean": draws.mean(0).tolist(),
            "probability_present": prob.tolist(), "elbo": float(res.log_evidence),
            "khat": float(res.stats["khat"]), "seconds": seconds, "truth": truth,
            "report": "\n".join(lines), "figures": [str(p) for p in written]}


problem = Problem(
    name="phase-search",
    description="which few of 240 library phases explain a powder pattern: sparse non-negative mixture, "
                "horseshoe prior, SVI",
    models=None,
    default_data=default_data,
    load_data=load_data,
    run=run,
)
