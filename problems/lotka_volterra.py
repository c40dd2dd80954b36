"""Lynx and hare: the Lotka-Volterra predator-prey posterior of posteriordb.

Posterior ``hudson_lynx_hare-lotka_volterra`` of posteriordb (M. Magnusson, J. Torgovitski,
P. Buerkner, A. Vehtari et al., "posteriordb: testing, benchmarking and developing Bayesian
inference algorithms", arXiv:2407.04967 (2024); GitHub ``stan-dev/posteriordb``), the model
of B. Carpenter, "Predator-Prey Population Dynamics: the Lotka-Volterra model in Stan"
(Stan case study, 2018; stan-dev/example-models ``knitr/lotka-volterra``).

Data: Hudson's Bay Company lynx and hare pelts, thousands per year, 1900-1920 (C. G. Hewitt,
*The Conservation of the Wild Life of Canada*, 1921; digitised by D. R. Howard, 2009), shipped
in ``problems/data/lotka_volterra/`` (BSD-3, see its README).  Column 1 = hare (prey),
column 2 = lynx (predator).

Model (time ``t`` in years after 1900; populations in thousands of pelts):

    du/dt = (alpha - beta v) u          hare (prey)        alpha: 1/yr, beta: 1/(yr * 1000 pelts)
    dv/dt = (-gamma + delta u) v        lynx (predator)    gamma: 1/yr, delta: 1/(yr * 1000 pelts)
    (u, v)(t0 = 0) = z_init

Priors (all normalised, so that free energies are defined):

    alpha, gamma ~ Normal(1, 0.5) truncated to (0, inf)
    beta, delta  ~ Normal(0.05, 0.05) truncated to (0, inf)
    z_init_k     ~ LogNormal(log 10, 1)            k = hare, lynx
    sigma_k      ~ LogNormal(-1, 1)

Likelihood (multiplicative, log-normal noise, one sigma per species), including the 1900
observation ``y_init`` of the initial state:

    y_init_k ~ LogNormal(log z_init_k, sigma_k),    y_{n,k} ~ LogNormal(log z_k(t_n), sigma_k),
    t_n = 1, ..., 20.

The forward model is :class:`jaxinv.physics.ode.ODE` (Diffrax) observed at ``t = 0, 1, ..., 20``,
so that the prediction at ``t = 0`` is ``z_init`` itself and the data are one ``(21, 2)`` array
``[y_init; y]``.  Stan solves the ODE with RK45 (Dormand-Prince), relative tolerance 1e-5,
absolute 1e-3, at most 500 steps; here the default is Tsit5 (a 5(4) Runge-Kutta pair like
Dormand-Prince) with tighter tolerances ``rtol = atol = 1e-6`` (the populations are 1-100, so
the solution error is far below the posterior's width either way) and 4096 steps; a failed
solve is a NaN prediction, i.e. zero probability.

Parameters: ``alpha, beta, gamma, delta`` (scalars), ``z_init`` (2: hare, lynx),
``sigma`` (2: hare, lynx).
"""

from __future__ import annotations

import json
import math
from importlib.resources import files
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as npd

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.physics.ode import ODE
from jaxinv.problem import read_table

DATA_FILE = "lotka_volterra/hudson_lynx_hare.json"
SPECIES = ("hare", "lynx")
PARAMETERS = ("alpha", "beta", "gamma", "delta", "z_init", "sigma")

# priors of posteriordb / Carpenter (2018)
PRIOR_RATE = (1.0, 0.5)  # alpha, gamma: Normal(1, 0.5) truncated to > 0
PRIOR_INTERACTION = (0.05, 0.05)  # beta, delta: Normal(0.05, 0.05) truncated to > 0
PRIOR_Z_INIT = (math.log(10.0), 1.0)  # LogNormal(log 10, 1)
PRIOR_SIGMA = (-1.0, 1.0)  # LogNormal(-1, 1)

# solver defaults (Stan: RK45, rtol 1e-5, atol 1e-3, max 500 steps)
SOLVER = "tsit5"
RTOL = 1e-6
ATOL = 1e-6
MAX_STEPS = 4096


# -- physics -----------------------------------------------------------------------------


def vector_field(t, z, p):
    """Lotka-Volterra: ``d(u, v)/dt = ((alpha - beta v) u, (-gamma + delta u) v)``."""
    u, v = z[0], z[1]
    return jnp.stack([(p["alpha"] - p["beta"] * v) * u, (-p["gamma"] + p["delta"] * u) * v])


def initial_state(p):
    """``(u, v)(t0) = z_init``."""
    return p["z_init"]


def forward(times, solver=SOLVER, rtol=RTOL, atol=ATOL, adjoint="checkpoint", max_steps=MAX_STEPS) -> ODE:
    """The forward model ``params -> (u, v)(times)``, shape ``(len(times), 2)``.

    ``times[0]`` is the time of the initial state ``z_init`` (``t0``).  ``solver``,
    ``adjoint``, ``rtol``, ``atol``, ``max_steps``: as :class:`jaxinv.physics.ode.ODE`."""
    times = np.asarray(times, dtype=float)
    return ODE(vector_field, initial_state, times, t0=float(times[0]), solver=solver, adjoint=adjoint,
               rtol=rtol, atol=atol, max_steps=max_steps)


def priors() -> dict:
    """The posteriordb priors (truncated normals are numpyro ``TruncatedNormal``, normalised)."""
    rate = [jnp.asarray(v) for v in PRIOR_RATE]
    inter = [jnp.asarray(v) for v in PRIOR_INTERACTION]
    return {
        "alpha": npd.TruncatedNormal(*rate, low=0.0),
        "beta": npd.TruncatedNormal(*inter, low=0.0),
        "gamma": npd.TruncatedNormal(*rate, low=0.0),
        "delta": npd.TruncatedNormal(*inter, low=0.0),
        "z_init": ji.priors.LogNormal(*PRIOR_Z_INIT, shape=2),
    }


def model(data: Dataset, **solver_options) -> ji.Model:
    """The posteriordb model on ``data`` (``x``: times with ``x[0] = t0``; ``y``: ``(n, 2)``)."""
    _check(data.x, data.y, "data")
    likelihood = ji.likelihoods.LogNormal(sigma=ji.priors.LogNormal(*PRIOR_SIGMA, shape=2), name="sigma")
    return ji.Model(forward(data.x, **solver_options), priors(), likelihood)


def models(data: Dataset, solver: str = SOLVER, rtol: float = RTOL, atol: float = ATOL,
           adjoint: str = "checkpoint", max_steps: int = MAX_STEPS, n_components=None) -> dict[str, ji.Model]:
    """``{"lotka-volterra": Model}`` (one candidate).

    Args:
        data: times (``x``, first entry = time of the initial state) and populations
            (``y``, shape ``(n, 2)``: hare, lynx in thousands).
        solver, rtol, atol, adjoint, max_steps: ODE solver settings
            (:class:`jaxinv.physics.ode.ODE`); defaults Tsit5, 1e-6, 1e-6, checkpointed
            reverse mode, 4096 steps.
        n_components: accepted for the command line's ``--select``; only ``1`` is valid.
    """
    if n_components is not None and [int(k) for k in n_components] != [1]:
        raise ValueError(f"lotka-volterra has a single model (K = 1), got --select {list(n_components)}")
    return {"lotka-volterra": model(data, solver=solver, rtol=rtol, atol=atol, adjoint=adjoint,
                                    max_steps=max_steps)}


def n_components(name: str) -> int:
    if name != "lotka-volterra":
        raise ValueError(f"unknown model {name!r}; expected 'lotka-volterra'")
    return 1


# -- data --------------------------------------------------------------------------------


def _check(times, y, source) -> None:
    times = np.asarray(times, dtype=float)
    y = np.asarray(y, dtype=float)
    if times.ndim != 1 or y.ndim != 2 or y.shape != (times.size, 2):
        raise ValueError(f"lotka-volterra: {source}: need times (n,) and populations (n, 2) [hare, lynx], "
                         f"got shapes {times.shape} and {y.shape}")
    if times.size < 3:
        raise ValueError(f"lotka-volterra: {source}: need at least 3 time points, got {times.size}")
    if not (np.all(np.isfinite(times)) and np.all(np.isfinite(y))):
        raise ValueError(f"lotka-volterra: {source}: non-finite times or populations")
    if not np.all(np.diff(times) > 0):
        raise ValueError(f"lotka-volterra: {source}: times must be strictly increasing")
    if not np.all(y > 0):
        raise ValueError(f"lotka-volterra: {source}: populations must be positive (log-normal likelihood)")


def _dataset(times, y, source) -> Dataset:
    _check(times, y, source)
    return Dataset(x=np.asarray(times, dtype=float), y=np.asarray(y, dtype=float),
                   meta={"source": str(source), "columns": list(SPECIES), "x_unit": "years after 1900",
                         "y_unit": "thousands of pelts"})


def read_json(path) -> Dataset:
    """posteriordb's format: ``{"N", "ts", "y_init": [hare, lynx], "y": [[hare, lynx], ...]}``;
    the initial state is at ``t0 = 0`` (posteriordb's model), so ``x = [0, ts...]`` and
    ``y = [y_init; y]``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"lotka-volterra: no such file: {path}")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"lotka-volterra: {path} is not valid JSON ({err})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"lotka-volterra: {path}: expected a JSON object with keys ts, y_init, y")
    missing = [k for k in ("ts", "y_init", "y") if k not in raw]
    if missing:
        raise ValueError(f"lotka-volterra: {path}: missing key(s) {missing} (posteriordb format: N, ts, y_init, y)")
    try:
        ts = np.asarray(raw["ts"], dtype=float)
        y0 = np.asarray(raw["y_init"], dtype=float)
        y = np.asarray(raw["y"], dtype=float)
    except (TypeError, ValueError):
        raise ValueError(f"lotka-volterra: {path}: ts, y_init and y must be numeric arrays") from None
    if y0.shape != (2,) or y.ndim != 2 or y.shape[1:] != (2,) or ts.shape != (y.shape[0],):
        raise ValueError(f"lotka-volterra: {path}: need ts (N,), y_init (2,), y (N, 2); got shapes "
                         f"{ts.shape}, {y0.shape}, {y.shape}")
    if "N" in raw and int(raw["N"]) != ts.size:
        raise ValueError(f"lotka-volterra: {path}: N = {raw['N']} but ts has {ts.size} entries")
    if ts.size and not ts[0] > 0:
        raise ValueError(f"lotka-volterra: {path}: ts must be after t0 = 0, got ts[0] = {ts[0]}")
    return _dataset(np.concatenate([[0.0], ts]), np.vstack([y0, y]), path)


def read_csv(path) -> Dataset:
    """Columns ``t, hare, lynx`` (comma-separated, optional header, ``#`` comments); the first
    row is the time of the initial state (its populations are observations of ``z_init``)."""
    try:
        table = read_table(path, ("t", "hare", "lynx"))
    except ValueError as err:
        raise ValueError(f"lotka-volterra: {err}") from None
    return _dataset(table[:, 0], table[:, 1:], path)


def load_data(path) -> Dataset:
    """A user's file: posteriordb JSON (``.json``) or CSV ``t, hare, lynx``."""
    path = Path(path)
    return read_json(path) if path.suffix.lower() == ".json" else read_csv(path)


def default_data() -> Dataset:
    """Hudson's Bay Company pelts 1900-1920 (posteriordb ``hudson_lynx_hare``): 21 x 2."""
    data = read_json(Path(str(files("problems") / "data" / DATA_FILE)))
    return Dataset(x=data.x, y=data.y, meta={**data.meta, "source": "posteriordb hudson_lynx_hare (Hewitt 1921)"})


# -- figures -----------------------------------------------------------------------------


def posterior_predictive(post, draws: dict, key, n_draws: int = 400, times=None):
    """Draws of the ODE solution and of new observations (log-normal noise) at ``times``
    (default: a fine grid over the data's range) from posterior ``draws`` (``{name: (chains,
    draws, ...)}`` or ``{name: (n, ...)}``).  Returns ``(times, states, observations)``,
    the last two of shape ``(n, len(times), 2)``."""
    import jax

    x = np.asarray(post.model.forward.times)
    grid = np.linspace(x[0], x[-1], 201) if times is None else np.asarray(times, dtype=float)
    shapes = post.parameter_shapes()
    flat = {k: np.asarray(v).reshape((-1,) + tuple(shapes[k])) for k, v in draws.items() if k in shapes}
    total = next(iter(flat.values())).shape[0]
    idx = np.linspace(0, total - 1, min(n_draws, total)).astype(int)
    ode = forward(grid, solver=post.model.forward.solver, rtol=RTOL, atol=ATOL)
    sub = {k: jnp.asarray(v[idx]) for k, v in flat.items()}
    states = np.asarray(jax.jit(jax.vmap(ode))(sub))
    noise = np.asarray(jax.random.normal(key, states.shape))
    obs = states * np.exp(np.asarray(sub["sigma"])[:, None, :] * noise)
    return grid, states, obs


def plot_predictive(post, draws, data: Dataset, path, key=None, n_draws: int = 400) -> Path:
    """Data with the posterior median of the ODE solution and 90% bands of the solution and of
    the posterior predictive (new observations), one panel per species."""
    import jax
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = jax.random.key(0) if key is None else key
    grid, states, obs = posterior_predictive(post, draws, key, n_draws)
    fig, axes = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True)
    for k, (ax, name) in enumerate(zip(axes, SPECIES)):
        lo, hi = np.quantile(obs[..., k], [0.05, 0.95], axis=0)
        ax.fill_between(1900 + grid, lo, hi, color="tab:blue", alpha=0.15, label="90% predictive")
        lo, hi = np.quantile(states[..., k], [0.05, 0.95], axis=0)
        ax.fill_between(1900 + grid, lo, hi, color="tab:blue", alpha=0.35, label="90% ODE solution")
        ax.plot(1900 + grid, np.median(states[..., k], axis=0), color="tab:blue", label="median")
        ax.plot(1900 + np.asarray(data.x), np.asarray(data.y)[:, k], "ko", ms=4, label="pelts")
        ax.set_ylabel(f"{name} (thousands)")
    axes[0].legend(fontsize=8, ncol=2)
    axes[1].set_xlabel("year")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def figures(selection, data: Dataset, out_dir) -> list[Path]:
    """``predictive.png``: data with the posterior predictive band for hare and lynx (the
    sampled posterior for NUTS/SMC/REMC results, the Laplace approximation otherwise)."""
    import jax

    out_dir = Path(out_dir)
    name = next(iter(selection.results))  # the problem's single model
    res = selection.results[name]
    post = selection.posteriors[name]
    if res.sample_dims == 2:
        draws = res.params
    elif res.laplace is not None:
        z = res.laplace.sample_unconstrained(jax.random.key(1), (400,))
        draws = jax.vmap(post.constrain)(z)
    else:
        draws = {k: np.asarray(v)[None] for k, v in res.params.items()}
    return [plot_predictive(post, draws, data, out_dir / "predictive.png")]


problem = Problem(
    name="lotka-volterra",
    description="Lynx-hare Lotka-Volterra ODE (posteriordb hudson_lynx_hare), 8 parameters, log-normal noise",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    n_components=n_components,
)
