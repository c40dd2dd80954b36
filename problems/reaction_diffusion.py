"""Reaction-diffusion: diffusion and reaction coefficients from concentration profiles.

A reactive species enters a slab (a rock or crystal in contact with a fluid at
``x = 0``) by diffusion and is consumed by a reaction as it goes:

    dc/dt = D d^2c/dx^2 - k c^m,    c(0, t) = c_fluid,   dc/dx(L, t) = 0,   c(x, 0) = 0

(Crank 1975, "The Mathematics of Diffusion", sec. 14.2, diffusion with an irreversible
first-order reaction, m = 1; Lasaga 1998, "Kinetic Theory in the Earth Sciences",
ch. 5).  Concentrations are normalised by ``c_fluid`` (dimensionless), x in mm, t in h,
D in mm^2/h, k in 1/h (first order) or 1/h per unit normalised concentration (second
order, m = 2).

What the data identify.  Late profiles are near the steady state, whose shape for
m = 1 is ``cosh((L - x)/l)/cosh(L/l)`` with the penetration length ``l = sqrt(D/k)``:
one late snapshot fixes only D/k, so the posterior of (log D, log k) is a ridge with a
correlation near +1.  The transient (early snapshots) adds the time scale ``l^2/D = 1/k``
and separates the two.  The problem shows both: ``snapshots=`` selects which of the
measured times are used.

Model selection: the reaction law -- first order, second order, or no reaction
(pure diffusion) -- by free energy.

Embedded data (``problems/data/reaction_diffusion/default.csv``, this module's
:func:`simulate` with the settings in ``problems/data/reaction_diffusion/README.md``):
snapshots at 1, 3 and 10 h, 25 positions each, Gaussian noise of sd 0.02.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.physics.diffusion import Dirichlet, Grid, Neumann, ReactionDiffusion
from jaxinv.physics.ode import ODE
from jaxinv.problem import read_table

# -- the setting of the embedded dataset and of simulate() (this module's choice) ------
LENGTH = 1.0  # mm
TRUE_DIFFUSIVITY = 0.02  # mm^2/h
TRUE_RATE_CONSTANT = 0.5  # 1/h
SNAPSHOT_TIMES = (1.0, 3.0, 10.0)  # h
N_POSITIONS = 25
NOISE_SD = 0.02
DEFAULT_SEED = 1975
N_CELLS = 40
DATA_FILE = "reaction_diffusion/default.csv"
REACTIONS = {"first-order": 1, "second-order": 2, "no-reaction": 0}


def _reaction_order(order: int):
    """``R(c) = -k c^m``; ``None`` for no reaction."""
    if order == 0:
        return None

    def consumption(c, x, t, params):
        return -params["rate_constant"] * (c if order == 1 else c * c)

    return consumption


class Profiles(eqx.Module):
    """Predicted concentrations at the measured (time, position) pairs.

    Solves the PDE of the module docstring on ``n_cells`` finite volumes (Kvaerno5,
    implicit) at the distinct measured times and interpolates each snapshot at its
    positions.  Parameters: ``diffusivity`` (mm^2/h) and, with a reaction,
    ``rate_constant``.
    """

    ode: ODE
    system: ReactionDiffusion
    time_index: jax.Array
    positions: jax.Array

    def __init__(self, times, positions, order: int = 1, length: float = LENGTH, n_cells: int = N_CELLS,
                 solver: str = "tsit5"):
        times = np.asarray(times, dtype=float)
        positions = np.asarray(positions, dtype=float)
        if times.shape != positions.shape or times.ndim != 1:
            raise ValueError(f"times and positions must be 1-D of equal length, got {times.shape}, {positions.shape}")
        if np.any(times <= 0):
            raise ValueError("measurement times must be > 0 (the experiment starts at t = 0)")
        if np.any(positions < 0) or np.any(positions > length):
            raise ValueError(f"positions must lie in the slab [0, {length}] mm")
        distinct, index = np.unique(times, return_inverse=True)
        self.system = ReactionDiffusion(
            Grid(length, n_cells, "slab"), "diffusivity", reaction=_reaction_order(order),
            inner=Dirichlet(1.0), outer=Neumann(0.0),
        )
        # Explicit Tsit5: on this grid and the prior's range of D the system is only mildly
        # stiff (D/h^2 <= 160/h, a few thousand steps at worst), and an explicit solver
        # compiles and runs far faster than Kvaerno5 (measured: 56 implicit steps cost more
        # than 300 explicit ones).  Finer grids: pass solver="kvaerno5".  Tolerances are far
        # below the noise (0.02) and the O(h^2) grid error.
        self.ode = self.system.ode(jnp.zeros(n_cells), distinct, t0=0.0, solver=solver, rtol=1e-6, atol=1e-8)
        self.time_index = jnp.asarray(index)
        self.positions = jnp.asarray(positions)

    def snapshots(self, params, positions):
        """Profiles at every distinct time, at ``positions`` (mm): shape ``(n_times, n_positions)``."""
        c = self.ode(params)
        nodes = jnp.concatenate([jnp.zeros(1), self.system.grid.centres])  # c = 1 at x = 0
        values = jnp.concatenate([jnp.ones((c.shape[0], 1)), c], axis=1)
        xi = positions / self.system.grid.length
        return jax.vmap(lambda v: jnp.interp(xi, nodes, v, right=v[-1]))(values)

    def __call__(self, params):
        every = self.snapshots(params, self.positions)
        return every[self.time_index, jnp.arange(self.positions.shape[0])]


def simulate(key, snapshot_times=SNAPSHOT_TIMES, n_positions=N_POSITIONS, diffusivity=TRUE_DIFFUSIVITY,
             rate_constant=TRUE_RATE_CONSTANT, noise_sd=NOISE_SD, order: int = 1, n_cells: int = 200) -> Dataset:
    """Synthetic profiles: the PDE solved on a finer grid (``n_cells``) than the models use,
    sampled at ``n_positions`` evenly spaced points per snapshot in (0, L], plus Gaussian noise."""
    positions = np.linspace(LENGTH / n_positions, LENGTH, n_positions)
    t = np.repeat(np.asarray(snapshot_times, dtype=float), n_positions)
    x = np.tile(positions, len(snapshot_times))
    truth = Profiles(t, x, order=order, n_cells=n_cells)({"diffusivity": diffusivity, "rate_constant": rate_constant})
    y = np.asarray(truth) + noise_sd * np.asarray(jax.random.normal(key, truth.shape))
    return Dataset(
        x=np.stack([t, x], axis=1), y=y,
        meta={"noise_sd": noise_sd, "truth": {"diffusivity": diffusivity, "rate_constant": rate_constant},
              "x_unit": "(h, mm)", "y_unit": "c / c_fluid"},
    )


def _dataset(table: np.ndarray, source: str) -> Dataset:
    t, x, y = table[:, 0], table[:, 1], table[:, 2]
    if np.any(t <= 0):
        raise ValueError(f"{source}: times must be > 0 h")
    if np.any(x < 0) or np.any(x > LENGTH):
        raise ValueError(f"{source}: positions must lie in [0, {LENGTH}] mm")
    return Dataset(x=np.stack([t, x], axis=1), y=y, meta={"source": source, "noise_sd": NOISE_SD,
                                                           "x_unit": "(h, mm)", "y_unit": "c / c_fluid"})


def load_data(path) -> Dataset:
    """A CSV with columns ``time_h, position_mm, concentration`` (header line optional)."""
    table = read_table(path, ("time_h", "position_mm", "concentration"))
    return _dataset(table, str(path))


def default_data() -> Dataset:
    """The embedded synthetic dataset (module docstring)."""
    path = files("problems") / "data" / DATA_FILE
    table = read_table(Path(str(path)), ("time_h", "position_mm", "concentration"))
    data = _dataset(table, DATA_FILE)
    data.meta["truth"] = {"diffusivity": TRUE_DIFFUSIVITY, "rate_constant": TRUE_RATE_CONSTANT}
    return data


def select_snapshots(data: Dataset, snapshots) -> Dataset:
    """The rows of ``data`` measured at the times in ``snapshots`` (h)."""
    t = np.asarray(data.x)[:, 0]
    keep = np.isin(t, np.asarray(snapshots, dtype=float))
    if not keep.any():
        raise ValueError(f"no measurement at the times {list(snapshots)}; measured: {sorted(set(t.tolist()))}")
    return Dataset(x=np.asarray(data.x)[keep], y=np.asarray(data.y)[keep], meta=dict(data.meta))


def models(data: Dataset, reactions=tuple(REACTIONS), noise_sd="auto", n_cells: int = N_CELLS) -> dict[str, ji.Model]:
    """Candidate reaction laws ``{name: Model}`` (``"first-order"``, ``"second-order"``,
    ``"no-reaction"``).

    Priors: D ~ LogUniform(1e-4, 0.1) mm^2/h, k ~ LogUniform(1e-3, 10) (1/h), scale-free
    over the ranges hours of data on a 1 mm slab can resolve (penetration lengths
    sqrt(D t) from 0.01 mm to the slab's length).
    ``noise_sd``: known noise sd (``"auto"``: the data's ``meta["noise_sd"]``), or
    ``None`` to infer it (LogUniform(1e-3, 1)).
    """
    x = np.asarray(data.x, dtype=float)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError("data.x must have columns (time, position)")
    if isinstance(reactions, str):  # from the command line: "first-order,no-reaction"
        reactions = tuple(r.strip() for r in reactions.split(","))
    if noise_sd == "auto":
        noise_sd = data.meta.get("noise_sd")
    likelihood = ji.likelihoods.Normal(
        sigma=ji.priors.LogUniform(1e-3, 1.0) if noise_sd is None else float(noise_sd))
    out = {}
    for name in reactions:
        if name not in REACTIONS:
            raise ValueError(f"unknown reaction law {name!r}; expected some of {list(REACTIONS)}")
        order = REACTIONS[name]
        priors = {"diffusivity": ji.priors.LogUniform(1e-4, 0.1)}
        if order:
            priors["rate_constant"] = ji.priors.LogUniform(1e-3, 10.0)
        out[name] = ji.Model(Profiles(x[:, 0], x[:, 1], order=order, n_cells=n_cells), priors, likelihood)
    return out


def log_correlation(result, a="diffusivity", b="rate_constant") -> float:
    """Posterior correlation of ``log a`` and ``log b`` (from draws, or the Laplace covariance
    when ``result`` is a MAP/Laplace result: the unconstrained coordinates are monotone in
    the logs)."""
    if result.laplace is not None and result.sample_dims == 0:
        draws = result.laplace.sample(jax.random.key(0), n_draws=4000).params
    else:
        draws = result.params
    la, lb = np.log(np.ravel(draws[a])), np.log(np.ravel(draws[b]))
    return float(np.corrcoef(la, lb)[0, 1])


# -- figures ------------------------------------------------------------------------
def figures(selection, data: Dataset, out_dir) -> list[Path]:
    """Profiles with the best model's 90 % band per snapshot; free energy per reaction law;
    joint posterior of (D, k)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = selection.selected
    result = selection.results[best]
    draws = result.laplace.sample(jax.random.key(1), n_draws=200).params if result.sample_dims == 0 else result.params
    flat = {k: np.reshape(np.asarray(v), (-1,) + np.shape(v)[result.sample_dims or 1:]) for k, v in draws.items()}
    post = selection.posteriors.get(best)
    forward = post.model.forward if post is not None else None
    x = np.asarray(data.x)
    fine = np.linspace(0.0, LENGTH, 200)
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4))
    times = np.unique(x[:, 0])
    colours = plt.cm.viridis(np.linspace(0.1, 0.9, len(times)))
    if forward is not None:
        n = flat["diffusivity"].shape[0]
        take = np.linspace(0, n - 1, min(n, 200)).astype(int)
        curves = np.stack([np.asarray(forward.snapshots({k: v[i] for k, v in flat.items()}, jnp.asarray(fine)))
                           for i in take])
        for j, colour in enumerate(colours):
            lo, mid, hi = np.percentile(curves[:, j], [5, 50, 95], axis=0)
            ax.fill_between(fine, lo, hi, color=colour, alpha=0.3)
            ax.plot(fine, mid, color=colour)
    for t, colour in zip(times, colours):
        rows = x[:, 0] == t
        ax.plot(x[rows, 1], np.asarray(data.y)[rows], "o", ms=3, color=colour, label=f"t = {t:g} h")
    ax.set_xlabel("position x (mm)")
    ax.set_ylabel("c / c_fluid")
    ax.set_title(f"{best}: median and 90 % band")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / "profiles.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if "rate_constant" in flat:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(flat["diffusivity"], flat["rate_constant"], ".", ms=2, alpha=0.5)
        truth = data.meta.get("truth")
        if truth:
            ax.plot(truth["diffusivity"], truth["rate_constant"], "r*", ms=12, label="truth")
            ax.legend()
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("D (mm²/h)")
        ax.set_ylabel("k (1/h)")
        ax.set_title(f"corr(log D, log k) = {log_correlation(result):.2f}")
        fig.tight_layout()
        paths.append(out_dir / "joint_posterior.png")
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    from jaxinv.plotting import plot_free_energy

    paths.append(plot_free_energy(selection, out_dir / "free_energy.png"))
    return paths


problem = Problem(
    name="reaction-diffusion",
    description="Diffusion and reaction coefficients (and the reaction law) from concentration profiles",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
)
