"""P–T history of a zoned host crystal from inclusion thermobarometry with a GMRF smoothness prior.

After Kuwatani, Nagata, Okada & Toriumi (2012), "Precise estimation of pressure–temperature
paths from zoned minerals using Markov random field modeling: theory and synthetic
inversion", Contrib. Mineral. Petrol. 163, 547–560, and Kuwatani, Nagata, Yoshida, Okada &
Toriumi (2018), "Bayesian probabilistic reconstruction of metamorphic P–T paths using
inclusion geothermobarometry", J. Mineral. Petrol. Sci. 113, 82–95.

**From the papers** (their abstracts were all that could be read while this module was
written): pressure and temperature at each growth zone of a host garnet are inferred
jointly from inclusion–host geothermometry (garnet–biotite) and geobarometry
(garnet–Al2SiO5–plagioclase, GASP); the continuity of P and T during growth enters as a
Gaussian Markov chain prior (a Markov random field, as in image restoration); the
answer is a probability distribution of the P–T path rather than a single solution,
and it survives the removal of a large part of the inclusions.

**This module's choices** (not transcribed from the papers):

* Radial grid.  ``P_k`` (kbar) and ``T_k`` (°C) on a regular grid of ``n`` cells from the
  core (``r = 0``) to the rim (``r = R``); inclusions at irregular radii ``r_i`` see the
  linear interpolation ``P(r_i) = sum_k W_ik P_k`` (and T), ``W`` the hat-function weights.
  (An irregular-spacing GMRF would be the alternative; the grid keeps the prior's
  precision banded and independent of where inclusions happen to sit.)
* Prior.  Second-order GMRF (:func:`jaxinv.priors.GaussianMRF`, ``order=2``) along the
  radius for each of P and T, sharing one dimensionless smoothness ``lambda``:

      Δ²P_k ~ N(0, s_P² / lambda),  Δ²T_k ~ N(0, s_T² / lambda),   s_P = 1 kbar, s_T = 25 °C,

  (a 1 kbar change in P counts as much as a 25 °C change in T), and the two core cells of
  each field ``~ N(PRIOR_MEAN, PRIOR_SD²)`` (the proper boundary term of GaussianMRF).
* Thermobarometers.  Each reaction j is the equilibrium condition

      0 = ΔH_j − T ΔS_j + P ΔV_j + n_j R T ln K_j          (J; T in K, P in bar)

  with end-member values in the style of the classic calibrations: garnet–biotite Fe–Mg
  exchange (Ferry & Spear 1978, Contrib. Mineral. Petrol. 66, 113; ΔH = 52 090 J,
  ΔS = 19.506 J/K, ΔV = 0.238 J/bar, n = 3, K = K_D) and GASP, 3 An = Grs + 2 Ky + Qz
  (Koziol & Newton 1988, Am. Mineral. 73, 216; ΔH = −48 357 J, ΔS = −150.66 J/K,
  ΔV = −6.608 J/bar, n = 1, K = a_Grs / a_An³), ideal activities folded into ln K.
  For a measured ``ln K_i`` the condition is a straight line in the P–T plane,

      a_i P + b_i T = c_i,   a_i = 1000 ΔV_j [J/kbar],  b_i = n_j R ln K_i − ΔS_j [J/K],
                             c_i = −ΔH_j − 273.15 b_i [J]        (P in kbar, T in °C),

  and an error ``δ`` in ``ln K_i`` leaves a residual ``n_j R T δ`` at the true (P, T).
  The likelihood is ``c_i ~ N(a_i P(r_i) + b_i T(r_i), sigma_i²)``, ``sigma_i = n_j R
  T_ref sd(ln K_i)``, with ``T_ref = T_REF_C`` °C standing in for the unknown T (this
  linearisation of the noise scale is the approximation; within the path's ±10 % range of
  absolute temperature).  The model is then linear-Gaussian: the posterior is Gaussian and
  its free energy exact (``method="analytic"`` or ``"laplace"``).
* Smoothness by evidence maximisation: ``lambda_hat = argmin_lambda F(lambda)``,
  ``F = -log p(data | lambda)`` on a grid of lambda (:func:`free_energy_curve`,
  :func:`evidence_smoothness`; the CLI's models are that grid, so ``jaxinv run
  pt-inclusions`` selects lambda by F); or hierarchical, lambda ~ LogUniform and sampled
  with the path by NUTS (:func:`hierarchical_model`).

Data file (CSV, header optional): ``radius_mm, reaction, ln_K[, sd_ln_K]``; reaction 0 =
garnet–biotite thermometer, 1 = GASP barometer; ``sd_ln_K`` defaults to
``DEFAULT_SD_LN_K`` of the reaction.  The embedded dataset is synthetic
(``problems/data/pt_inclusions/README.md``).
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
from jaxinv.problem import pick_grid, read_table

R_GAS = 8.314462618  # J/(mol K)
KELVIN = 273.15
#: reaction code -> (name, ΔH [J], ΔS [J/K], ΔV [J/bar], n)
REACTIONS = {
    0: ("garnet-biotite Fe-Mg exchange (Ferry & Spear 1978)", 52090.0, 19.506, 0.238, 3),
    1: ("GASP 3An = Grs + 2Ky + Qz (Koziol & Newton 1988)", -48357.0, -150.66, -6.608, 1),
}
DEFAULT_SD_LN_K = {0: 0.04, 1: 0.3}
T_REF_C = 575.0  # °C, reference temperature of the noise scale
SCALE_P = 0.5  # kbar
SCALE_T = 20.0  # °C
PRIOR_MEAN = {"P": 7.0, "T": 575.0}  # kbar, °C
PRIOR_SD = {"P": 4.0, "T": 150.0}  # kbar, °C: core cells
N_CELLS = 31
ORDER = 2
#: smoothness grid (dimensionless lambda) of the evidence curve and of the CLI's models
SMOOTHNESS_GRID = tuple(float(v) for v in np.logspace(0, 6, 13))

# -- the embedded synthetic dataset (this module's choice) --------------------------------
RADIUS_MM = 2.0
N_INCLUSIONS = 40
TRUE_SMOOTHNESS = 300.0
TRUE_CORE = {"P": 5.5, "T": 520.0}  # kbar, °C at r = 0
TRUE_SLOPE = {"P": 1.2, "T": 50.0}  # kbar/mm, °C/mm at the core
DEFAULT_SEED = 0
DATA_FILE = "pt_inclusions/synthetic.csv"


# -- thermobarometry ------------------------------------------------------------------------


def _check_reactions(reaction):
    reaction = np.asarray(reaction)
    bad = ~np.isin(reaction, list(REACTIONS))
    if np.any(bad):
        raise ValueError(f"reaction codes must be 0 (garnet-biotite thermometer) or 1 (GASP barometer), "
                         f"got {sorted(set(reaction[bad].tolist()))}")
    return reaction.astype(int)


def equilibrium_ln_k(reaction, pressure_kbar, temperature_c):
    """``ln K`` in equilibrium at (P, T): ``ln K = -(ΔH - T ΔS + P ΔV) / (n R T)`` (T in K, P in bar)."""
    reaction = _check_reactions(reaction)
    dh, ds, dv, n = (np.array([REACTIONS[int(j)][i] for j in np.ravel(reaction)]).reshape(reaction.shape)
                     for i in (1, 2, 3, 4))
    t = np.asarray(temperature_c) + KELVIN
    p = 1000.0 * np.asarray(pressure_kbar)
    return -(dh - t * ds + p * dv) / (n * R_GAS * t)


def constraint_rows(reaction, ln_k, sd_ln_k, t_ref_c: float = T_REF_C):
    """The lines ``a P + b T = c ± sigma`` (P kbar, T °C; a J/kbar, b J/K, c and sigma J)."""
    reaction = _check_reactions(reaction)
    ln_k = np.asarray(ln_k, dtype=float)
    dh = np.array([REACTIONS[int(j)][1] for j in reaction])
    ds = np.array([REACTIONS[int(j)][2] for j in reaction])
    dv = np.array([REACTIONS[int(j)][3] for j in reaction])
    n = np.array([REACTIONS[int(j)][4] for j in reaction])
    a = 1000.0 * dv
    b = n * R_GAS * ln_k - ds
    c = -dh - KELVIN * b
    sigma = n * R_GAS * (t_ref_c + KELVIN) * np.asarray(sd_ln_k, dtype=float)
    return a, b, c, sigma


def interpolation_matrix(grid, radius) -> np.ndarray:
    """Linear-interpolation weights ``W`` (``len(radius) x len(grid)``): ``f(r_i) = W @ f_grid``."""
    grid, radius = np.asarray(grid, dtype=float), np.asarray(radius, dtype=float)
    if np.any(radius < grid[0] - 1e-12) or np.any(radius > grid[-1] + 1e-12):
        raise ValueError(f"radii must lie on the grid [{grid[0]}, {grid[-1]}] mm")
    idx = np.clip(np.searchsorted(grid, radius, side="right") - 1, 0, grid.size - 2)
    t = (radius - grid[idx]) / (grid[idx + 1] - grid[idx])
    w = np.zeros((radius.size, grid.size))
    w[np.arange(radius.size), idx] = 1.0 - t
    w[np.arange(radius.size), idx + 1] = t
    return w


def radial_grid(data: Dataset, n_cells: int = N_CELLS) -> np.ndarray:
    """``n_cells`` radii (mm) from the core to the outermost inclusion (or ``meta['radius_mm']``)."""
    if int(n_cells) <= ORDER + 1:
        raise ValueError(f"n_cells must exceed {ORDER + 1}, got {n_cells}")
    rim = float(data.meta.get("radius_mm", np.max(data.x["radius"])))
    return np.linspace(0.0, rim, int(n_cells))


class InclusionForward(eqx.Module):
    """``c_i = a_i P(r_i) + b_i T(r_i)``, ``P(r_i) = (W P)_i``: the equilibrium lines of every
    inclusion at the interpolated path (J)."""

    w: jax.Array
    a: jax.Array
    b: jax.Array

    def __call__(self, params):
        return self.a * (self.w @ params["P"]) + self.b * (self.w @ params["T"])


# -- models ---------------------------------------------------------------------------------


def _forward(data: Dataset, n_cells: int):
    grid = radial_grid(data, n_cells)
    a, b, _, _ = constraint_rows(data.x["reaction"], data.x["ln_K"], data.x["sd_ln_K"])
    w = interpolation_matrix(grid, data.x["radius"])
    return InclusionForward(jnp.asarray(w), jnp.asarray(a), jnp.asarray(b))


def _path_priors(n_cells, precision):
    return {f: ji.priors.GaussianMRF(int(n_cells), order=ORDER, precision=precision, boundary_sd=PRIOR_SD[f],
                                     mean=PRIOR_MEAN[f], precision_scale=1.0 / s**2)
            for f, s in (("P", SCALE_P), ("T", SCALE_T))}


def make_model(data: Dataset, smoothness: float, n_cells: int = N_CELLS) -> ji.Model:
    """The model at a fixed smoothness ``lambda`` (``tau_P = lambda / s_P²``, ``tau_T = lambda / s_T²``)."""
    if not (np.isfinite(smoothness) and smoothness > 0):
        raise ValueError(f"smoothness must be positive and finite, got {smoothness}")
    return ji.Model(_forward(data, n_cells), _path_priors(n_cells, float(smoothness)),
                    ji.likelihoods.Normal(sigma=jnp.asarray(data.sigma)))


SMOOTHNESS_RANGE = (1e1, 1e6)


def hierarchical_model(data: Dataset, n_cells: int = N_CELLS, smoothness_range=SMOOTHNESS_RANGE) -> ji.Model:
    """Smoothness learnt with the path: ``lambda ~ LogUniform(smoothness_range)``, the two
    GMRFs conditional on it (``GaussianMRF(..., precision="smoothness")``); sample by NUTS."""
    priors = {"smoothness": ji.priors.LogUniform(*smoothness_range), **_path_priors(n_cells, "smoothness")}
    return ji.Model(_forward(data, n_cells), priors, ji.likelihoods.Normal(sigma=jnp.asarray(data.sigma)))


def hierarchical_init(post, data: Dataset, key, n_chains: int, smoothness=None) -> jax.Array:
    """NUTS starting points ``(n_chains, dim)`` near the posterior: lambda at the evidence
    maximum (or ``smoothness``) times ``exp(N(0, 0.5²))``, the path drawn from the exact
    Gaussian posterior at that lambda.  (Draws from the prior start chains deep in the
    funnel of small lambda and rough paths, where the centred parameterisation mixes badly.)"""
    n_cells = post.priors["P"].shape[0]
    lam = evidence_smoothness(data, n_cells=n_cells)[0] if smoothness is None else float(smoothness)
    model = make_model(data, lam, n_cells)
    fixed = model.condition(jnp.asarray(data.y))
    res = ji.free_energy(fixed, jax.random.key(0), method="analytic")
    mean, cov = res.stats["posterior_mean"], res.stats["posterior_covariance"]
    k1, k2 = jax.random.split(key)
    paths = jax.random.multivariate_normal(k1, mean, cov, (n_chains,))
    lams = lam * jnp.exp(0.5 * jax.random.normal(k2, (n_chains,)))
    low, high = post.priors["smoothness"].distribution.low, post.priors["smoothness"].distribution.high
    lams = jnp.clip(lams, 1.01 * low, 0.99 * high)
    return jnp.stack([post.unconstrain({"smoothness": l, "P": z[:n_cells], "T": z[n_cells:]})
                      for l, z in zip(lams, paths)])


def _name(smoothness: float) -> str:
    return f"lambda={smoothness:.4g}"


def models(data: Dataset, smoothness=SMOOTHNESS_GRID, n_cells: int = N_CELLS, n_components=None) -> dict:
    """``{"lambda=...": Model}`` over a grid of smoothness values: selecting the lowest free
    energy is evidence maximisation over lambda.  ``n_components`` (the CLI's ``--select``)
    picks grid indices (1-based)."""
    grid = pick_grid(smoothness, n_components)
    return {_name(v): make_model(data, v, n_cells) for v in grid}


def n_components(name: str):
    """Grid models carry no component count."""
    return None


def free_energy_curve(data: Dataset, smoothness=SMOOTHNESS_GRID, n_cells: int = N_CELLS,
                      method: str = "analytic") -> np.ndarray:
    """``F(lambda) = -log p(data | lambda)`` (nats) at each smoothness (``ji.free_energy``)."""
    key = jax.random.key(0)
    out = []
    for v in np.atleast_1d(smoothness):
        post = make_model(data, float(v), n_cells).condition(jnp.asarray(data.y))
        out.append(float(ji.free_energy(post, key, method=method).free_energy))
    return np.asarray(out)


def evidence_smoothness(data: Dataset, smoothness=SMOOTHNESS_GRID, n_cells: int = N_CELLS):
    """Evidence maximisation: ``(lambda_hat, grid, F)``; ``lambda_hat`` from a parabola in
    ``log lambda`` through the grid minimum and its neighbours (the grid end if the minimum is there)."""
    grid = np.asarray(smoothness, dtype=float)
    f = free_energy_curve(data, grid, n_cells)
    i = int(np.argmin(f))
    if 0 < i < grid.size - 1:
        x = np.log(grid[i - 1:i + 2])
        c2, c1, _ = np.polyfit(x, f[i - 1:i + 2], 2)
        best = float(np.exp(-c1 / (2 * c2))) if c2 > 0 else float(grid[i])
    else:
        best = float(grid[i])
    return best, grid, f


def posterior_path(data: Dataset, smoothness: float, n_cells: int = N_CELLS, level: float = 0.9) -> dict:
    """Exact Gaussian posterior of the path at a fixed smoothness: ``{"r", "P_mean", "P_lo",
    "P_hi", "T_mean", "T_lo", "T_hi"}`` (central ``level`` credible band, pointwise)."""
    post = make_model(data, smoothness, n_cells).condition(jnp.asarray(data.y))
    res = ji.free_energy(post, jax.random.key(0), method="analytic")
    mean = np.asarray(res.stats["posterior_mean"])
    sd = np.sqrt(np.diag(np.asarray(res.stats["posterior_covariance"])))
    zq = float(jax.scipy.special.ndtri(0.5 + level / 2))
    out, start = {"r": radial_grid(data, n_cells)}, 0
    for name in post.names:
        m, s = mean[start:start + n_cells], sd[start:start + n_cells]
        out.update({f"{name}_mean": m, f"{name}_lo": m - zq * s, f"{name}_hi": m + zq * s})
        start += n_cells
    return out


# -- data -----------------------------------------------------------------------------------


def true_path(key, n_cells: int = N_CELLS, smoothness: float = TRUE_SMOOTHNESS, radius_mm: float = RADIUS_MM) -> dict:
    """A path drawn from the order-2 GMRF conditional on its core: ``f_0`` and slope given
    (``TRUE_CORE``, ``TRUE_SLOPE`` times the cell width), second differences ``~ N(0, s² / lambda)``."""
    out = {}
    dr = radius_mm / (n_cells - 1)
    for k, (f, s) in zip(jax.random.split(key), (("P", SCALE_P), ("T", SCALE_T))):
        innov = np.asarray(jax.random.normal(k, (n_cells - 2,), dtype=jnp.float64)) * s / math.sqrt(smoothness)
        slope = TRUE_SLOPE[f] * dr + np.concatenate([[0.0], np.cumsum(innov)])
        out[f] = TRUE_CORE[f] + np.concatenate([[0.0], np.cumsum(slope)])
    return out


def simulate(key, n_inclusions: int = N_INCLUSIONS, smoothness: float = TRUE_SMOOTHNESS,
             radius_mm: float = RADIUS_MM, n_cells: int = N_CELLS) -> Dataset:
    """Synthetic inclusions: radii ``~ Uniform(0, R)`` (sorted), each with both reactions;
    ``ln K = equilibrium_ln_k(P(r), T(r)) + sd_ln_K (T_ref / T(r)) e`` (``e ~ N(0, 1)``,
    T in K), the path from :func:`true_path` interpolated linearly.  The factor
    ``T_ref / T`` makes the residual ``n R T δ`` exactly ``N(0, sigma²)``, so that the
    synthetic data follow the model (real ln K errors would not; see the module docstring).
    Truth in ``meta``."""
    kp, kr, ke = jax.random.split(key, 3)
    grid = np.linspace(0.0, radius_mm, n_cells)
    path = true_path(kp, n_cells, smoothness, radius_mm)
    r_incl = np.sort(np.asarray(jax.random.uniform(kr, (n_inclusions,), dtype=jnp.float64))) * radius_mm
    radius = np.repeat(r_incl, 2)
    reaction = np.tile([0, 1], n_inclusions)
    w = interpolation_matrix(grid, radius)
    sd = np.array([DEFAULT_SD_LN_K[j] for j in reaction])
    t_incl = w @ path["T"]
    ln_k = equilibrium_ln_k(reaction, w @ path["P"], t_incl)
    # errors scaled by T_ref/T: the residual n R T δ then has exactly the model's sd n R T_ref sd_ln_K
    scale = (T_REF_C + KELVIN) / (t_incl + KELVIN)
    ln_k = ln_k + sd * scale * np.asarray(jax.random.normal(ke, ln_k.shape, dtype=jnp.float64))
    truth = {"r": grid, "P": path["P"], "T": path["T"], "smoothness": smoothness}
    return _dataset(radius, reaction, ln_k, sd, {"source": "simulated", "truth": truth, "radius_mm": radius_mm})


def _dataset(radius, reaction, ln_k, sd, meta) -> Dataset:
    _, _, c, sigma = constraint_rows(reaction, ln_k, sd)
    x = {"radius": np.asarray(radius, dtype=float), "reaction": np.asarray(reaction, dtype=int),
         "ln_K": np.asarray(ln_k, dtype=float), "sd_ln_K": np.asarray(sd, dtype=float)}
    return Dataset(x=x, y=c, sigma=sigma, meta=meta)


def read_csv(path) -> Dataset:
    """``radius_mm, reaction, ln_K[, sd_ln_K]`` rows; errors name the file and the fault."""
    table = read_table(path, ("radius_mm", "reaction", "ln_K", "sd_ln_K"), n_optional=1, min_rows=4)
    radius, code, ln_k = table[:, 0], table[:, 1], table[:, 2]
    if np.any(radius < 0):
        raise ValueError(f"{path}: radius_mm must be >= 0 (row {int(np.argmax(radius < 0)) + 1})")
    if np.any(code != np.round(code)) or np.any(~np.isin(code, list(REACTIONS))):
        bad = int(np.argmax((code != np.round(code)) | ~np.isin(code, list(REACTIONS)))) + 1
        raise ValueError(f"{path}: row {bad}: reaction must be 0 (garnet-biotite thermometer) or "
                         f"1 (GASP barometer), got {code[bad - 1]:g}")
    code = code.astype(int)
    if table.shape[1] == 4:
        sd = table[:, 3]
        if np.any(sd <= 0):
            raise ValueError(f"{path}: row {int(np.argmax(sd <= 0)) + 1}: sd_ln_K must be positive")
    else:
        sd = np.array([DEFAULT_SD_LN_K[j] for j in code])
    for j, what in ((0, "thermometer (reaction 0)"), (1, "barometer (reaction 1)")):
        if not np.any(code == j):
            raise ValueError(f"{path}: no {what} rows; P and T need both kinds of constraint")
    if np.ptp(radius) <= 0:
        raise ValueError(f"{path}: all inclusions at one radius; a radial path needs several")
    return _dataset(radius, code, ln_k, sd, {"source": str(path)})


def load_data(path) -> Dataset:
    """A user's CSV of ``radius_mm, reaction, ln_K[, sd_ln_K]``."""
    return read_csv(path)


def default_data() -> Dataset:
    """The embedded synthetic dataset (``simulate(jax.random.key(DEFAULT_SEED))``), truth in ``meta``."""
    data = read_csv(Path(str(files("problems") / "data" / DATA_FILE)))
    path = true_path(jax.random.split(jax.random.key(DEFAULT_SEED), 3)[0])
    truth = {"r": np.linspace(0.0, RADIUS_MM, N_CELLS), **path, "smoothness": TRUE_SMOOTHNESS}
    return Dataset(x=data.x, y=data.y, sigma=data.sigma,
                   meta={**data.meta, "truth": truth, "radius_mm": RADIUS_MM})


def write_default_data(path) -> Path:
    """Regenerate the embedded CSV (17 significant digits)."""
    d = simulate(jax.random.key(DEFAULT_SEED))
    lines = ["radius_mm,reaction,ln_K,sd_ln_K"] + [
        f"{r:.17g},{j},{k:.17g},{s:.17g}"
        for r, j, k, s in zip(d.x["radius"], d.x["reaction"], d.x["ln_K"], d.x["sd_ln_K"])]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# -- figures --------------------------------------------------------------------------------


def single_inclusion_estimates(data: Dataset):
    """(r, P, T) where an inclusion's two lines cross (inclusions with both reactions only)."""
    a, b, c, _ = constraint_rows(data.x["reaction"], data.x["ln_K"], data.x["sd_ln_K"])
    r, p, t = [], [], []
    radius, code = data.x["radius"], data.x["reaction"]
    for ri in np.unique(radius):
        i0 = np.flatnonzero((radius == ri) & (code == 0))
        i1 = np.flatnonzero((radius == ri) & (code == 1))
        if i0.size and i1.size:
            m = np.array([[a[i0[0]], b[i0[0]]], [a[i1[0]], b[i1[0]]]])
            sol = np.linalg.solve(m, [c[i0[0]], c[i1[0]]])
            r.append(ri)
            p.append(sol[0])
            t.append(sol[1])
    return np.array(r), np.array(p), np.array(t)


def plot_path(data: Dataset, band: dict, path, title: str = "") -> Path:
    """P(r) and T(r): posterior mean, 90 % band, single-inclusion crossings and the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    r_i, p_i, t_i = single_inclusion_estimates(data)
    truth = data.meta.get("truth")
    for ax, f, unit, pts in ((axes[0], "P", "kbar", p_i), (axes[1], "T", "°C", t_i)):
        ax.fill_between(band["r"], band[f"{f}_lo"], band[f"{f}_hi"], color="C0", alpha=0.3,
                        label="90 % credible band")
        ax.plot(band["r"], band[f"{f}_mean"], color="C0", label="posterior mean")
        ax.plot(r_i, pts, "k.", ms=4, label="single inclusion")
        if truth is not None:
            ax.plot(truth["r"], truth[f], "r--", label="truth")
        ax.set_xlabel("radius (mm)")
        ax.set_ylabel(f"{f} ({unit})")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_free_energy_curve(grid, f, path, chosen=None, truth=None) -> Path:
    """F against the smoothness lambda (log axis), the minimum and the truth marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), constrained_layout=True)
    ax.semilogx(grid, f, "o-", ms=3)
    if chosen is not None:
        ax.axvline(chosen, color="C0", ls=":", label=f"evidence max. {chosen:.3g}")
    if truth is not None:
        ax.axvline(truth, color="r", ls="--", label=f"truth {truth:.3g}")
    ax.set_xlabel("smoothness λ")
    ax.set_ylabel("free energy F (nats)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def figures(selection, data: Dataset, out_dir) -> list[Path]:
    """``pt_path.png`` (the selected lambda's posterior) and ``free_energy.png`` (F vs lambda)."""
    out_dir = Path(out_dir)
    names = list(selection.results)
    grid = np.array([float(n.split("=", 1)[1]) for n in names])
    f = np.array([float(selection.results[n].free_energy) for n in names])
    order = np.argsort(grid)
    chosen = float(selection.selected.split("=", 1)[1])
    n_cells = selection.posteriors[selection.selected].priors["P"].shape[0]
    band = posterior_path(data, chosen, n_cells)
    truth = data.meta.get("truth", {}).get("smoothness")
    return [plot_path(data, band, out_dir / "pt_path.png", title=f"λ = {chosen:.3g} (evidence maximum)"),
            plot_free_energy_curve(grid[order], f[order], out_dir / "free_energy.png", chosen, truth)]


problem = Problem(
    name="pt-inclusions",
    description="P-T path of a zoned crystal from inclusion thermobarometry, GMRF smoothness by evidence "
                "(Kuwatani et al. 2012, 2018)",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    n_components=n_components,
)
