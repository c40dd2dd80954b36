"""Drug elimination: one-compartment pharmacokinetics with first-order absorption and
Michaelis-Menten elimination, the posteriordb posterior ``one_comp_mm_elim_abs``.

Posterior ``one_comp_mm_elim_abs-one_comp_mm_elim_abs`` of posteriordb (M. Magnusson et al.,
"posteriordb: testing, benchmarking and developing Bayesian inference algorithms",
arXiv:2407.04967 (2024); GitHub ``stan-dev/posteriordb``), from the Stan program
``one_comp_mm_elim_abs.stan`` of stan-dev/stat_comp_benchmarks (``benchmarks/pkpd``).  The
data are synthetic: simulated by that repository's ``sim_one_comp_mm_elim_abs.stan`` with
``k_a = 0.75 /day``, ``K_m = 0.25 mg/L``, ``V_m = 1 /day``, ``sigma = 0.1``; shipped in
``problems/data/drug_elimination/`` (BSD-3, see its README).

Model (time ``t`` in days, concentration ``C`` in mg/L, dose ``D = 30`` mg given at
``t0 = 0`` into a compartment of volume ``V = 2`` L):

    dC/dt = [t > 0] (D k_a / V) exp(-k_a t)  -  (V_m / V) C / (K_m + C),      C(0) = 0

``k_a`` (1/day): first-order absorption rate; ``K_m`` (mg/L): Michaelis constant; ``V_m``
(mg/day): maximum elimination rate (``V_m / V`` in mg/L/day).  The factor ``[t > 0]``
(the dose term is switched on after ``t0``) is the Stan program's; it changes the right-hand
side at the single point ``t = 0`` only, so the exact solution is the same with or without it,
but a solver sees the jump in its first stage.

Priors (normalised): ``k_a, K_m, V_m, sigma ~ half-Cauchy(0, 1)`` (Stan: ``cauchy(0, 1)`` on
``<lower=0>`` parameters).  Likelihood: ``C_hat_n ~ LogNormal(log C(t_n), sigma)``, 20 times
0.5, 1, ..., 10 days.

The posterior.  ``k_a`` and ``sigma`` are well determined.  ``K_m`` is only weakly identified:
the concentrations (5-14 mg/L) stay far above any plausible ``K_m``, where the elimination
``V_m C / (K_m + C)`` is nearly saturated (zero order, ``~V_m``) and depends on ``K_m`` only
through ``V_m (1 - K_m / C)``; so ``K_m`` and ``V_m`` are strongly positively correlated and
``K_m``'s marginal is right-skewed with a long tail that the half-Cauchy prior shapes (its
sd is several times its median).  NUTS handles it in the default log-coordinates
(``biject_to(positive) = exp``) with a diagonal mass matrix, slowly (deep trees).

Solver.  The system is only mildly stiff in the posterior bulk, but small ``K_m`` makes the
elimination rate near ``C = 0`` (``V_m / (V K_m)``) large; Stan uses BDF.  ``solver="kvaerno5"``
selects the implicit (L-stable) Kvaerno5, stiff-capable; the default is the explicit Tsit5
(several times cheaper, accurate where the posterior lives), both with ``rtol = atol = 1e-6``
(Stan's BDF defaults).  Caveat: under NUTS, Kvaerno5 can stop the run with an
``EquinoxRuntimeError`` ("A linear solver received non-finite input") at extreme parameter
values instead of returning a NaN prediction (a Newton solve inside Diffrax/Lineax raises
despite ``throw=False``); that is why it is not the default.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.physics.ode import ODE
from jaxinv.problem import read_table

DATA_FILE = "drug_elimination/one_comp_mm_elim_abs.json"
PARAMETERS = ("k_a", "K_m", "V_m", "sigma")
DOSE = 30.0  # mg
VOLUME = 2.0  # L
PRIOR_SCALE = 1.0  # half-Cauchy(0, 1) for every parameter
SOLVER = "tsit5"
RTOL = 1e-6
ATOL = 1e-6
MAX_STEPS = 4096


# -- physics -----------------------------------------------------------------------------


def vector_field(t, c, p):
    """``dC/dt = [t > 0] (D k_a / V) exp(-k_a t) - (V_m / V) C / (K_m + C)`` (mg/L/day)."""
    dose = jnp.where(t > 0, jnp.exp(-p["k_a"] * t) * p["dose"] * p["k_a"] / p["volume"], 0.0)
    return dose - (p["V_m"] / p["volume"]) * c / (p["K_m"] + c)


class Concentration(eqx.Module):
    """Forward model ``params -> C(times)`` (mg/L), shape ``(len(times),)``: the ODE with
    the dose ``D`` (mg) and volume ``V`` (L) of the dataset and ``C(t0) = 0``."""

    ode: ODE
    dose: jax.Array
    volume: jax.Array

    def __init__(self, times, t0=0.0, dose=DOSE, volume=VOLUME, solver=SOLVER, rtol=RTOL, atol=ATOL,
                 adjoint="checkpoint", max_steps=MAX_STEPS):
        self.ode = ODE(vector_field, jnp.zeros(1), np.asarray(times, dtype=float), t0=float(t0), solver=solver,
                       adjoint=adjoint, rtol=rtol, atol=atol, max_steps=max_steps)
        self.dose = jnp.asarray(dose, dtype=jnp.result_type(float))
        self.volume = jnp.asarray(volume, dtype=jnp.result_type(float))

    @property
    def times(self):
        return self.ode.times

    def __call__(self, params):
        return self.ode({**params, "dose": self.dose, "volume": self.volume})[:, 0]


def priors() -> dict:
    """half-Cauchy(0, 1) on ``k_a, K_m, V_m`` (``sigma`` is the likelihood's)."""
    return {name: npd.HalfCauchy(jnp.asarray(PRIOR_SCALE)) for name in ("k_a", "K_m", "V_m")}


def model(data: Dataset, solver=SOLVER, rtol=RTOL, atol=ATOL, adjoint="checkpoint",
          max_steps=MAX_STEPS) -> ji.Model:
    """The posteriordb model on ``data`` (``x``: times; ``y``: concentrations; ``meta``: t0, D, V)."""
    meta = data.meta
    forward = Concentration(data.x, t0=meta.get("t0", 0.0), dose=meta.get("dose", DOSE),
                            volume=meta.get("volume", VOLUME), solver=solver, rtol=rtol, atol=atol,
                            adjoint=adjoint, max_steps=max_steps)
    likelihood = ji.likelihoods.LogNormal(sigma=npd.HalfCauchy(jnp.asarray(PRIOR_SCALE)), name="sigma")
    return ji.Model(forward, priors(), likelihood)


def models(data: Dataset, solver: str = SOLVER, rtol: float = RTOL, atol: float = ATOL,
           adjoint: str = "checkpoint", max_steps: int = MAX_STEPS, n_components=None) -> dict[str, ji.Model]:
    """``{"one-compartment": Model}`` (one candidate).

    Args:
        solver: ``"tsit5"`` (explicit; default), ``"kvaerno5"`` (implicit, stiff-capable; see
            the module docstring's caveat) or any name of :data:`jaxinv.physics.ode.SOLVERS`.
        rtol, atol, adjoint, max_steps: as :class:`jaxinv.physics.ode.ODE`.
        n_components: accepted for the command line's ``--select``; only ``1`` is valid.
    """
    if n_components is not None and [int(k) for k in n_components] != [1]:
        raise ValueError(f"drug-elimination has a single model (K = 1), got --select {list(n_components)}")
    return {"one-compartment": model(data, solver=solver, rtol=rtol, atol=atol, adjoint=adjoint,
                                     max_steps=max_steps)}


def n_components(name: str) -> int:
    if name != "one-compartment":
        raise ValueError(f"unknown model {name!r}; expected 'one-compartment'")
    return 1


# -- data --------------------------------------------------------------------------------


def _dataset(times, c_hat, t0, dose, volume, source) -> Dataset:
    times = np.asarray(times, dtype=float)
    c_hat = np.asarray(c_hat, dtype=float)
    if times.ndim != 1 or times.shape != c_hat.shape or times.size < 3:
        raise ValueError(f"drug-elimination: {source}: need at least 3 times and as many concentrations, "
                         f"got shapes {times.shape} and {c_hat.shape}")
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(c_hat))):
        raise ValueError(f"drug-elimination: {source}: non-finite times or concentrations")
    if not np.all(np.diff(times) > 0):
        raise ValueError(f"drug-elimination: {source}: times must be strictly increasing")
    if not times[0] > t0:
        raise ValueError(f"drug-elimination: {source}: measurement times must be after the dose time "
                         f"t0 = {t0}, got {times[0]}")
    if not np.all(c_hat > 0):
        raise ValueError(f"drug-elimination: {source}: concentrations must be positive (log-normal likelihood)")
    if not (np.isfinite(dose) and dose > 0 and np.isfinite(volume) and volume > 0):
        raise ValueError(f"drug-elimination: {source}: dose D and volume V must be positive, got {dose}, {volume}")
    return Dataset(x=times, y=c_hat, meta={"source": str(source), "t0": float(t0), "dose": float(dose),
                                           "volume": float(volume), "x_unit": "day", "y_unit": "mg/L"})


def read_json(path) -> Dataset:
    """posteriordb's format: ``{"t0", "D", "V", "N_t", "times", "C_hat"}``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"drug-elimination: no such file: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"drug-elimination: {path} is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"drug-elimination: {path}: expected a JSON object with keys times, C_hat")
    missing = [k for k in ("times", "C_hat") if k not in raw]
    if missing:
        raise ValueError(f"drug-elimination: {path}: missing key(s) {missing} "
                         f"(posteriordb format: t0, D, V, N_t, times, C_hat)")
    try:
        times = np.asarray(raw["times"], dtype=float)
        c_hat = np.asarray(raw["C_hat"], dtype=float)
        t0, dose, volume = (float(raw.get(k, d)) for k, d in (("t0", 0.0), ("D", DOSE), ("V", VOLUME)))
    except (TypeError, ValueError):
        raise ValueError(f"drug-elimination: {path}: t0, D, V, times and C_hat must be numeric") from None
    if "N_t" in raw and int(raw["N_t"]) != times.size:
        raise ValueError(f"drug-elimination: {path}: N_t = {raw['N_t']} but times has {times.size} entries")
    return _dataset(times, c_hat, t0, dose, volume, path)


def read_csv(path, t0: float = 0.0, dose: float = DOSE, volume: float = VOLUME) -> Dataset:
    """Columns ``t, C`` (days, mg/L; optional header, ``#`` comments); dose at ``t0 = 0``,
    ``D = 30`` mg, ``V = 2`` L unless given."""
    try:
        table = read_table(path, ("t", "C"))
    except ValueError as err:
        raise ValueError(f"drug-elimination: {err}") from None
    return _dataset(table[:, 0], table[:, 1], t0, dose, volume, path)


def load_data(path) -> Dataset:
    """A user's file: posteriordb JSON (``.json``) or CSV ``t, C``."""
    path = Path(path)
    return read_json(path) if path.suffix.lower() == ".json" else read_csv(path)


def default_data() -> Dataset:
    """posteriordb ``one_comp_mm_elim_abs``: 20 synthetic concentrations, D = 30 mg, V = 2 L."""
    data = read_json(Path(str(files("problems") / "data" / DATA_FILE)))
    return Dataset(x=data.x, y=data.y, meta={**data.meta, "source": "posteriordb one_comp_mm_elim_abs"})


# -- figures -----------------------------------------------------------------------------


def _draws(selection, name, n=400):
    res = selection.results[name]
    post = selection.posteriors[name]
    if res.sample_dims == 2:
        shapes = post.parameter_shapes()
        flat = {k: np.asarray(v).reshape((-1,) + tuple(shapes[k])) for k, v in res.params.items() if k in shapes}
    elif res.laplace is not None:
        flat = jax.vmap(post.constrain)(res.laplace.sample_unconstrained(jax.random.key(1), (n,)))
        flat = {k: np.asarray(v) for k, v in flat.items()}
    else:
        flat = {k: np.asarray(v)[None] for k, v in res.params.items()}
    total = next(iter(flat.values())).shape[0]
    idx = np.linspace(0, total - 1, min(n, total)).astype(int)
    return post, {k: jnp.asarray(v[idx]) for k, v in flat.items()}


def figures(selection, data: Dataset, out_dir) -> list[Path]:
    """``predictive.png``: data with the posterior median concentration and 90% bands of the
    curve and of new observations; ``km_vm.png``: the joint posterior of ``K_m`` and ``V_m``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    post, draws = _draws(selection, next(iter(selection.results)))  # the problem's single model
    base = post.model.forward
    grid = np.linspace(0.0, float(np.max(data.x)), 201)[1:]
    fine = Concentration(grid, t0=float(base.ode.t0), dose=base.dose, volume=base.volume, solver=base.ode.solver,
                         rtol=RTOL, atol=ATOL)
    curves = np.asarray(jax.jit(jax.vmap(fine))(draws))
    noise = np.asarray(jax.random.normal(jax.random.key(2), curves.shape))
    obs = curves * np.exp(np.asarray(draws["sigma"])[:, None] * noise)
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    for band, alpha, label in ((obs, 0.15, "90% predictive"), (curves, 0.35, "90% curve")):
        lo, hi = np.nanquantile(band, [0.05, 0.95], axis=0)
        ax.fill_between(grid, lo, hi, color="tab:blue", alpha=alpha, label=label)
    ax.plot(grid, np.nanmedian(curves, axis=0), color="tab:blue", label="median")
    ax.plot(data.x, data.y, "ko", ms=4, label="data")
    ax.set_xlabel("time (day)")
    ax.set_ylabel("concentration C (mg/L)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out_dir / "predictive.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4.0))
    ax.scatter(np.asarray(draws["K_m"]), np.asarray(draws["V_m"]), s=4, alpha=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("K_m (mg/L)")
    ax.set_ylabel("V_m (mg/day)")
    fig.tight_layout()
    paths.append(out_dir / "km_vm.png")
    fig.savefig(paths[1], dpi=120)
    plt.close(fig)
    return paths


problem = Problem(
    name="drug-elimination",
    description="One-compartment PK, first-order absorption, Michaelis-Menten elimination (posteriordb "
                "one_comp_mm_elim_abs), ODE",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    n_components=n_components,
    # K_m is weakly identified and its mode sits against K_m -> 0 in log coordinates: the
    # Laplace Hessian there is not positive definite, so the default is the NUTS posterior
    default_method="nuts",
)
