"""P–T–t path from a zoned garnet: growth, zoning record and diffusion, inverted.

After Kuwatani et al. (2018, Phys. Rev. E 98, 043311; cited as in issue 4, the paper could
not be read while this module was written): a garnet grows while pressure and temperature
change, every shell records the equilibrium composition of the moment, and diffusion
blurs the record afterwards.  Inverting the measured core-to-rim profile of (Mg, Fe, Mn,
Ca) through that whole forward model reads the pressure–temperature–*time* path.

**Forward model** (:class:`GarnetProfile`, built on :mod:`jaxinv.physics.growth`):

* path: ``P`` (kbar) and ``T`` (°C) at ``N_NODES`` times ``0 .. DURATION`` Myr, linear
  in between; the garnet grows over the first ``GROWTH_SEGMENTS`` segments and only
  diffuses during the rest (the post-peak stage);
* growth: :class:`~jaxinv.physics.growth.ArrheniusGrowth` ``v = k exp(-Ea/RT)`` with
  ``Ea = GROWTH_ACTIVATION_ENERGY`` and ``k = growth_rate`` unknown (µm/Myr);
* record: :class:`~jaxinv.physics.growth.GarnetEquilibrium` (garnet–biotite Fe–Mg
  exchange of Ferry & Spear 1978, GASP of Koziol & Newton 1988, an empirical Mn–T law);
* diffusion: one diffusivity for all components, the Fe tracer coefficient of
  Chakraborty & Ganguly (1992) (:func:`~jaxinv.physics.growth.garnet_diffusivity`),
  solved exactly on the Lagrangian shells;
* observation: composition at the measured radii (linear between shell midpoints) and
  the grain radius.

**Prior** (this module's choice, as in :mod:`problems.pt_inclusions`): second-order GMRF
in time for each of P and T sharing one dimensionless smoothness ``lambda``,
``Δ²P_k ~ N(0, s_P²/lambda)``, ``Δ²T_k ~ N(0, s_T²/lambda)`` with ``s_P = 1 kbar``,
``s_T = 25 °C``; the first two nodes ``~ N(PRIOR_MEAN, PRIOR_SD²)``; ``growth_rate ~
LogUniform``.

**Inversions**: (a) variational data assimilation -- the MAP through the whole solve by
gradient optimisation, with ``lambda`` chosen by the Laplace free energy over
``SMOOTHNESS_GRID`` (:func:`models` is that grid, so ``jaxinv run garnet-ptt`` does
exactly this); (b) the full posterior by NUTS or SMC (``--method nuts|smc``); (c) a
particle smoother over the growth steps (:func:`particle_smoother_path`, on
:func:`jaxinv.particle_smoother`).  Starting points of (a) come from conventional
thermobarometry (:func:`thermobarometry`, :func:`starting_path`) through
``Problem.fit_options``.

Data (CSV): ``radius_um, X_Mg, X_Fe, X_Mn, X_Ca`` with a comment line
``# grain_radius_um = R +- sd``.  The embedded dataset is synthetic, from a known
clockwise path (``problems/data/garnet_ptt/README.md``, :func:`simulate`).
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.physics.growth import ArrheniusGrowth, GarnetEquilibrium, GrowthZoning, garnet_diffusivity
from jaxinv.problem import pick_grid, read_table

COMPONENTS = ("Mg", "Fe", "Mn", "Ca")
DURATION = 12.0  # Myr
N_NODES = 13  # path nodes, one per Myr
GROWTH_SEGMENTS = 10  # growth during 0..10 Myr, diffusion only during 10..12 Myr
SHELLS_PER_SEGMENT = 3
GROWTH_ACTIVATION_ENERGY = 100e3  # J/mol
GROWTH_RATE_RANGE = (1e6, 1e10)  # µm/Myr (prefactor k)
SCALE = {"P": 1.0, "T": 25.0}  # kbar, °C per unit second difference at lambda = 1
PRIOR_MEAN = {"P": 6.0, "T": 550.0}
PRIOR_SD = {"P": 3.0, "T": 100.0}
SMOOTHNESS_GRID = (1.0, 10.0, 100.0, 1000.0)
NOISE_SD = 0.004  # mole fraction, EPMA
# -- the embedded dataset ---------------------------------------------------------------
TRUE_GROWTH_RATE = 1.0e8  # µm/Myr
N_POINTS = 40
RADIUS_SD = 10.0  # µm
DEFAULT_SEED = 2018
DATA_FILE = "garnet_ptt/synthetic.csv"


def node_times(duration: float = DURATION, n_nodes: int = N_NODES) -> np.ndarray:
    return np.linspace(0.0, duration, n_nodes)


def true_path(times=None) -> dict:
    """A clockwise path: pressure peaks (8.5 kbar) at 6 Myr and falls while temperature
    keeps rising to its peak (650 °C) at 10 Myr, the end of growth; then slow cooling.
    ``P = 5 + 3.5 sin(pi t / 12)``, ``T = 500 + 150 sin(pi t / 20)``."""
    t = node_times() if times is None else np.asarray(times, float)
    return {"P": 5.0 + 3.5 * np.sin(np.pi * t / 12.0), "T": 500.0 + 150.0 * np.sin(np.pi * t / 20.0)}


def zoning_model(times=None, shells_per_segment: int = SHELLS_PER_SEGMENT) -> GrowthZoning:
    """The forward physics of this problem (module docstring)."""
    times = node_times() if times is None else times
    return GrowthZoning(times, ArrheniusGrowth("growth_rate", GROWTH_ACTIVATION_ENERGY), GarnetEquilibrium(),
                        garnet_diffusivity("Fe"), shells_per_segment=shells_per_segment,
                        growth_segments=GROWTH_SEGMENTS)


class GarnetProfile(eqx.Module):
    """``params -> [compositions at the measured radii (M, 4) flattened, grain radius]``."""

    zoning: GrowthZoning
    radii: jax.Array

    def grow(self, params):
        return self.zoning(params["P"], params["T"], params)

    def __call__(self, params):
        z = self.grow(params)
        return jnp.concatenate([z.profile(self.radii).ravel(), z.radius[None]])


# -- data -----------------------------------------------------------------------------------


def _dataset(radii, compositions, grain_radius, grain_radius_sd, meta) -> Dataset:
    radii = np.asarray(radii, float)
    compositions = np.asarray(compositions, float)
    if np.any(radii < 0) or np.any(np.diff(radii) < 0):
        raise ValueError("radii must be >= 0 and increasing from core to rim")
    if not (grain_radius > 0 and grain_radius_sd > 0):
        raise ValueError(f"grain radius and its sd must be > 0, got {grain_radius} +- {grain_radius_sd}")
    if np.any(radii > grain_radius + 3 * grain_radius_sd):
        raise ValueError(f"a measured radius lies beyond the grain radius {grain_radius} µm")
    if np.any(compositions < 0) or np.any(compositions > 1):
        raise ValueError("mole fractions must lie in [0, 1]")
    y = np.concatenate([compositions.ravel(), [grain_radius]])
    sigma = np.concatenate([np.full(compositions.size, NOISE_SD), [grain_radius_sd]])
    return Dataset(x={"radius": radii, "grain_radius": float(grain_radius)}, y=y, sigma=sigma,
                   meta={"x_unit": "µm", "y_unit": "mole fraction", "components": COMPONENTS, **meta})


def simulate(key, n_points: int = N_POINTS, noise_sd: float = NOISE_SD, radius_sd: float = RADIUS_SD,
             growth_rate: float = TRUE_GROWTH_RATE, path=None) -> Dataset:
    """Synthetic traverse: the true path grown with 4x finer shells than the models use,
    sampled at ``n_points`` radii from core to 98 % of the rim, Gaussian noise."""
    path = true_path() if path is None else path
    z = zoning_model(shells_per_segment=4 * SHELLS_PER_SEGMENT)(path["P"], path["T"], {"growth_rate": growth_rate})
    radius = float(z.radius)
    radii = np.linspace(0.0, 0.98 * radius, n_points)
    k1, k2 = jax.random.split(key)
    clean = np.asarray(z.profile(jnp.asarray(radii)))
    comps = clean + noise_sd * np.asarray(jax.random.normal(k1, clean.shape))
    observed_radius = radius + radius_sd * float(jax.random.normal(k2))
    return _dataset(radii, comps, observed_radius, radius_sd,
                    {"truth": {"P": np.asarray(path["P"]), "T": np.asarray(path["T"]), "growth_rate": growth_rate},
                     "noise_sd": noise_sd})


_RADIUS_LINE = re.compile(r"#\s*grain_radius_um\s*=\s*([0-9.eE+-]+)\s*\+-\s*([0-9.eE+-]+)")


def load_data(path) -> Dataset:
    """A CSV ``radius_um, X_Mg, X_Fe, X_Mn, X_Ca`` with ``# grain_radius_um = R +- sd``."""
    path = Path(path)
    table = read_table(path, ("radius_um", "X_Mg", "X_Fe", "X_Mn", "X_Ca"))
    match = _RADIUS_LINE.search(path.read_text())
    if match is None:
        raise ValueError(f"{path}: needs a comment line '# grain_radius_um = R +- sd' (the grain radius, µm)")
    return _dataset(table[:, 0], table[:, 1:], float(match.group(1)), float(match.group(2)), {"source": str(path)})


def write_data(data: Dataset, path) -> Path:
    path = Path(path)
    comps = np.asarray(data.y[:-1]).reshape(-1, 4)
    lines = [f"# grain_radius_um = {data.y[-1]:.3f} +- {data.sigma[-1]:.3f}", "radius_um,X_Mg,X_Fe,X_Mn,X_Ca"]
    lines += [f"{r:.3f}," + ",".join(f"{c:.6f}" for c in row) for r, row in zip(data.x["radius"], comps)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def default_data() -> Dataset:
    """The embedded synthetic traverse (module docstring), with its truth in ``meta``."""
    data = load_data(Path(str(files("problems") / "data" / DATA_FILE)))
    data.meta.update(source=DATA_FILE, truth={**true_path(), "growth_rate": TRUE_GROWTH_RATE})
    return data


# -- conventional thermobarometry: the starting path ----------------------------------------


def thermobarometry(data: Dataset, equilibrium=None, n_iterations: int = 30) -> dict:
    """Conventional garnet thermobarometry: ``P`` (kbar), ``T`` (°C) at each measured point
    from that point's composition alone, as a petrologist would read core and rim -- the
    equilibrium model fitted to the four mole fractions by damped Gauss–Newton, diffusion
    ignored.  ``{"radius", "P", "T"}``, clipped to 1..20 kbar, 350..900 °C."""
    equilibrium = GarnetEquilibrium() if equilibrium is None else equilibrium
    observed = jnp.asarray(np.asarray(data.y[:-1]).reshape(-1, len(COMPONENTS)))
    scale = jnp.array([1.0, 100.0])  # kbar, 100 °C: comparable steps

    def residual(u, c):
        return equilibrium(u[0] * scale[0], u[1] * scale[1]) - c

    def solve(c):
        def step(u, _):
            r = residual(u, c)
            jac = jax.jacfwd(residual)(u, c)
            du = jnp.linalg.solve(jac.T @ jac + 1e-6 * jnp.eye(2), -jac.T @ r)
            return jnp.clip(u + du, jnp.array([1.0, 3.5]), jnp.array([20.0, 9.0])), None

        u, _ = jax.lax.scan(step, jnp.array([PRIOR_MEAN["P"], PRIOR_MEAN["T"] / 100.0]), None, length=n_iterations)
        return u * scale

    pt = np.asarray(jax.jit(jax.vmap(solve))(observed))
    return {"radius": np.asarray(data.x["radius"]), "P": pt[:, 0], "T": pt[:, 1]}


def starting_path(data: Dataset) -> dict:
    """A starting point for the MAP: the thermobarometric ``P``, ``T`` of the point at
    radius ``R t / t_growth`` (steady radial growth) at each growth node, the rim values
    held afterwards, and the Arrhenius prefactor that grows the measured grain radius
    along that path."""
    tb = thermobarometry(data)
    times = node_times()
    t_growth = times[GROWTH_SEGMENTS]
    grain = float(data.x["grain_radius"])
    radius_at = grain * np.minimum(times / t_growth, 1.0)
    path = {f: np.interp(radius_at, tb["radius"], tb[f]) for f in ("P", "T")}
    fine = np.linspace(0.0, t_growth, 401)
    kelvin = np.interp(fine, times, path["T"]) + 273.15
    rate = np.exp(-GROWTH_ACTIVATION_ENERGY / (8.314462618 * kelvin))
    integral = float(np.sum(0.5 * (rate[1:] + rate[:-1]) * np.diff(fine)))
    growth_rate = float(np.clip(grain / integral, *GROWTH_RATE_RANGE))
    return {"P": path["P"], "T": path["T"], "growth_rate": growth_rate}


def fit_options(data: Dataset) -> dict:
    """MAP starting points for this problem's models: the thermobarometric path
    (:func:`starting_path`) and the prior-mean path with the same growth rate.  Prior draws
    of a 13-node GMRF path are poor starts (wild paths grow odd garnets).  From these starts
    Levenberg–Marquardt alone (``optimizer=None``) reaches the same optima as L-BFGS + LM at
    every smoothness of :data:`SMOOTHNESS_GRID` (energies equal to ~1e-8 nats, free energies to
    ~1e-9 relative) with a ~25 % smaller compiled program (36 s instead of 47 s to build on 2
    CPU cores) and half the run time."""
    start = starting_path(data)
    flat = {"P": np.full(N_NODES, PRIOR_MEAN["P"]), "T": np.full(N_NODES, PRIOR_MEAN["T"]),
            "growth_rate": start["growth_rate"]}
    return {"init": [start, flat], "optimizer": None}


# -- models -----------------------------------------------------------------------------


def _priors(precision) -> dict:
    priors = {f: ji.priors.GaussianMRF(N_NODES, order=2, precision=precision, boundary_sd=PRIOR_SD[f],
                                       mean=PRIOR_MEAN[f], precision_scale=1.0 / SCALE[f] ** 2)
              for f in ("P", "T")}
    priors["growth_rate"] = ji.priors.LogUniform(*GROWTH_RATE_RANGE)
    return priors


def make_model(data: Dataset, smoothness: float) -> ji.Model:
    """The model at a fixed smoothness ``lambda``."""
    if not (np.isfinite(smoothness) and smoothness > 0):
        raise ValueError(f"smoothness must be positive and finite, got {smoothness}")
    forward = GarnetProfile(zoning_model(), jnp.asarray(data.x["radius"]))
    return ji.Model(forward, _priors(float(smoothness)), ji.likelihoods.Normal(sigma=jnp.asarray(data.sigma)))


def models(data: Dataset, smoothness=SMOOTHNESS_GRID, n_components=None) -> dict:
    """``{"lambda=...": Model}`` over the smoothness grid (``--select`` picks grid indices)."""
    grid = pick_grid(smoothness, n_components)
    return {f"lambda={v:.4g}": make_model(data, v) for v in grid}


def path_band(result, level: float = 0.9, n_draws: int = 2000, key=None) -> dict:
    """Pointwise central credible band of the path from a result (its draws, or its Laplace
    approximation): ``{"t", "P_mid", "P_lo", "P_hi", "T_mid", "T_lo", "T_hi"}``."""
    key = jax.random.key(0) if key is None else key
    if result.sample_dims == 0:
        draws = result.laplace.sample(key, n_draws=n_draws).params
    else:
        draws = result.params
    out = {"t": node_times()}
    q = [50 * (1 - level), 50, 50 * (1 + level)]
    for f in ("P", "T"):
        flat = np.reshape(np.asarray(draws[f]), (-1, N_NODES))
        lo, mid, hi = np.percentile(flat, q, axis=0)
        out.update({f"{f}_lo": lo, f"{f}_mid": mid, f"{f}_hi": hi})
    return out


def coverage(band: dict, truth: dict) -> float:
    """Fraction of (time, field) pairs of ``band`` whose true value lies in it; ``truth``
    is the path at the nodes (interpolated linearly to the band's times)."""
    inside = []
    for f in ("P", "T"):
        true = np.interp(band["t"], node_times(), np.asarray(truth[f]))
        inside.append((band[f"{f}_lo"] <= true) & (true <= band[f"{f}_hi"]))
    return float(np.mean(np.concatenate(inside)))


# -- (c) particle smoother over the growth steps ---------------------------------------------

#: initial velocity spread of the smoother's state (kbar/Myr, °C/Myr)
VELOCITY_SD = {"P": 1.0, "T": 30.0}


def _shell_record(data: Dataset, params: dict) -> tuple[np.ndarray, np.ndarray]:
    """Step times and the *diffusion-corrected* measured record of each growth shell for a
    path and growth rate ``params``: the measured profile interpolated at the shell centre
    plus that history's own diffusion shift there (recorded minus diffused), i.e.
    diffusion linearised about ``params``."""
    params = {k: jnp.asarray(v) for k, v in params.items()}
    z = zoning_model()(params["P"], params["T"], params)
    centres = np.asarray(z.centres)
    measured = np.asarray(data.y[:-1]).reshape(-1, len(COMPONENTS))
    at_centres = np.stack([np.interp(centres, data.x["radius"], measured[:, i]) for i in range(len(COMPONENTS))], 1)
    shift = np.asarray(z.recorded) - np.asarray(z.profile(jnp.asarray(centres)))
    return np.asarray(z.times), at_centres + shift


def growth_state_space(step_times, smoothness: float, noise_sd: float = NOISE_SD,
                       equilibrium=None) -> ji.StateSpaceModel:
    """The garnet record as a state-space model over growth steps (Kuwatani et al. 2018's
    particle-smoother view): state ``x = (P, T, dP/dt, dT/dt)``; between steps ``h`` apart
    each of P, T is an integrated random walk (the continuous-time analogue of the
    second-order GMRF prior: acceleration white noise of intensity ``q = s² / lambda`` per
    Myr³, exact transition ``N(F x, q [[h³/3, h²/2], [h²/2, h]])``); each step records
    ``c_eq(P, T)`` observed with Gaussian noise ``noise_sd``."""
    equilibrium = GarnetEquilibrium() if equilibrium is None else equilibrium
    step_times = jnp.asarray(step_times, float)
    gaps = jnp.concatenate([jnp.diff(step_times), jnp.ones(1)])  # gaps[k - 1]: step k-1 -> k
    intensity = jnp.array([SCALE["P"] ** 2, SCALE["T"] ** 2]) / smoothness
    mean0 = jnp.array([PRIOR_MEAN["P"], PRIOR_MEAN["T"], 0.0, 0.0])
    sd0 = jnp.array([PRIOR_SD["P"], PRIOR_SD["T"], VELOCITY_SD["P"], VELOCITY_SD["T"]])

    def chol(h):  # Cholesky factor of [[h³/3, h²/2], [h²/2, h]] (unit intensity)
        a = jnp.sqrt(h**3 / 3)
        b = (h**2 / 2) / a
        return jnp.array([[a, 0.0], [b, jnp.sqrt(h - b**2)]])

    def move(x, k):
        h = gaps[k - 1]
        return jnp.concatenate([x[:2] + h * x[2:], x[2:]]), chol(h)

    def transition_sample(key, x, k):
        mean, low = move(x, k)
        e = jax.random.normal(key, (2, 2)) * jnp.sqrt(intensity)[:, None]  # rows P, T; cols (pos, vel)
        noise = e @ low.T
        return mean + jnp.concatenate([noise[:, 0], noise[:, 1]])

    def transition_log_prob(x_new, x, k):
        mean, low = move(x, k)
        r = (x_new - mean).reshape(2, 2) / jnp.sqrt(intensity)[None, :]  # rows (pos, vel), columns (P, T)
        w = jax.scipy.linalg.solve_triangular(low, r, lower=True)
        return (-0.5 * jnp.sum(w**2) - 2 * jnp.sum(jnp.log(jnp.diag(low)))
                - jnp.sum(jnp.log(intensity)) - 2 * jnp.log(2 * jnp.pi))

    def observation_log_prob(y, x, k):
        c = equilibrium(x[0], x[1])
        return jnp.sum(jax.scipy.stats.norm.logpdf(y, c, noise_sd))

    return ji.StateSpaceModel(
        initial_sample=lambda key: mean0 + sd0 * jax.random.normal(key, (4,)),
        transition_sample=transition_sample,
        observation_log_prob=observation_log_prob,
        transition_log_prob=transition_log_prob,
    )


def particle_smoother_path(data: Dataset, key, smoothness: float, fit=None, n_particles: int = 2000,
                           n_paths: int = 400, n_conditioning: int = 16, level: float = 0.9) -> dict:
    """Inversion (c): the P–T path over the growth steps by forward-filtering
    backward-simulation (:func:`jaxinv.particle_smoother`) on :func:`growth_state_space`.

    The state-space view needs the shell radii (which shell grew in which step) and the
    diffusion correction, both functions of the growth rate and the whole path; they are
    taken from ``n_conditioning`` draws of the Laplace approximation at the MAP ``fit``
    (computed at this ``smoothness`` when not given), one smoother run per draw, and the
    smoothed paths pooled -- so their uncertainty is carried into the band rather than
    fixed at the MAP.

    Returns a band like :func:`path_band` at the growth-step times, plus ``"paths"``
    ``(K, n_paths, 4)`` and ``"log_evidence"`` (the filters' mean log evidence)."""
    if fit is None:
        post = make_model(data, smoothness).condition(data.y)
        fit = ji.map_estimate(post, key, **fit_options(data))
    key_draws, key_smooth = jax.random.split(key)
    draws = fit.laplace.sample(key_draws, n_draws=n_conditioning).params
    per_run = max(n_paths // n_conditioning, 1)
    model = None
    paths, log_evidence = [], []
    for i, k in enumerate(jax.random.split(key_smooth, n_conditioning)):
        times, record = _shell_record(data, {name: v[0, i] for name, v in draws.items()})
        model = growth_state_space(times, smoothness) if model is None else model  # one compiled program
        smoothed = ji.particle_smoother(model, jnp.asarray(record), k, n_particles, per_run)
        paths.append(np.asarray(smoothed.paths))
        log_evidence.append(float(smoothed.filter.log_evidence))
    paths = np.concatenate(paths, axis=1)
    q = [50 * (1 - level), 50, 50 * (1 + level)]
    out = {"t": times, "paths": paths, "log_evidence": float(np.mean(log_evidence))}
    for i, f in enumerate(("P", "T")):
        lo, mid, hi = np.percentile(paths[:, :, i], q, axis=1)
        out.update({f"{f}_lo": lo, f"{f}_mid": mid, f"{f}_hi": hi})
    return out


# -- figures ----------------------------------------------------------------------------


def write_band(band: dict, path) -> Path:
    """A band (:func:`path_band`, :func:`particle_smoother_path`) as CSV:
    ``t_Myr, P_lo, P_mid, P_hi, T_lo, T_mid, T_hi`` (kbar, °C)."""
    columns = ("t", "P_lo", "P_mid", "P_hi", "T_lo", "T_mid", "T_hi")
    table = np.column_stack([np.asarray(band[c], float) for c in columns])
    path = Path(path)
    np.savetxt(path, table, delimiter=",", fmt="%.6g", header="t_Myr," + ",".join(columns[1:]), comments="")
    return path


def read_band(path) -> dict:
    """The inverse of :func:`write_band`."""
    table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return dict(zip(("t", "P_lo", "P_mid", "P_hi", "T_lo", "T_mid", "T_hi"), table.T))



def figures(selection, data: Dataset, out_dir) -> list[Path]:
    """P–T path and P(t), T(t) with the 90 % band over the truth (when known), with the
    particle smoother's band over the growth steps; observed vs fitted zoning profiles;
    free energy against lambda.  The bands also go to ``pt_path.csv`` and
    ``pt_path_smoother.csv`` (:func:`write_band`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxinv.plotting import plot_free_energy

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    best = selection.selected
    result = selection.results[best]
    band = path_band(result)
    truth = data.meta.get("truth")
    paths = [write_band(band, out_dir / "pt_path.csv")]
    smoother = None
    if result.sample_dims == 0 and result.laplace is not None and np.isfinite(float(result.laplace.log_evidence)):
        smoothness = float(best.split("=")[1]) if best.startswith("lambda=") else SMOOTHNESS_GRID[0]
        smoother = particle_smoother_path(data, jax.random.key(0), smoothness, fit=result)
        paths.append(write_band(smoother, out_dir / "pt_path_smoother.csv"))

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    ax.errorbar(band["T_mid"], band["P_mid"], fmt="b-o", ms=3, lw=1, elinewidth=0.8, alpha=0.8,
                xerr=[band["T_mid"] - band["T_lo"], band["T_hi"] - band["T_mid"]],
                yerr=[band["P_mid"] - band["P_lo"], band["P_hi"] - band["P_mid"]],
                label="posterior median, 90 % intervals")
    if truth is not None:
        ax.plot(truth["T"], truth["P"], "k--", label="true path")
    ax.set_xlabel("T (°C)")
    ax.set_ylabel("P (kbar)")
    ax.legend(fontsize=8)
    for ax, f, unit in ((axes[1], "P", "kbar"), (axes[2], "T", "°C")):
        ax.fill_between(band["t"], band[f"{f}_lo"], band[f"{f}_hi"], color="b", alpha=0.2, label="90 % band")
        ax.plot(band["t"], band[f"{f}_mid"], "b-", label="median")
        if smoother is not None:
            ax.fill_between(smoother["t"], smoother[f"{f}_lo"], smoother[f"{f}_hi"], color="orange", alpha=0.3,
                            label="90 % band, particle smoother")
        if truth is not None:
            ax.plot(band["t"], truth[f], "k--", label="truth")
        ax.axvline(node_times()[GROWTH_SEGMENTS], color="grey", lw=0.8, ls=":")
        ax.set_xlabel("t (Myr)")
        ax.set_ylabel(f"{f} ({unit})")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"garnet P–T–t path ({best})")
    fig.tight_layout()
    paths.append(out_dir / "pt_path.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    post = selection.posteriors[best]
    params = result.params if result.sample_dims == 0 else {
        k: np.median(np.reshape(np.asarray(v), (-1,) + np.shape(v)[result.sample_dims:]), axis=0)
        for k, v in result.params.items()}
    fine = jnp.linspace(0.0, float(data.x["grain_radius"]), 200)
    fitted = post.model.forward.grow({k: jnp.asarray(v) for k, v in params.items()})
    observed = np.asarray(data.y[:-1]).reshape(-1, 4)
    fig, axes = plt.subplots(1, 4, figsize=(14, 3.5))
    for i, (ax, name) in enumerate(zip(axes, COMPONENTS)):
        ax.plot(data.x["radius"], observed[:, i], "k.", label="measured")
        ax.plot(fine, np.asarray(fitted.profile(fine))[:, i], "r-", label="fitted")
        ax.plot(np.asarray(fitted.centres), np.asarray(fitted.recorded)[:, i], "r:", lw=0.8, label="recorded (no diffusion)")
        ax.set_xlabel("radius (µm)")
        ax.set_title(f"X_{name}")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    paths.append(out_dir / "profiles.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)
    if len(selection.results) > 1:
        paths.append(plot_free_energy(selection, out_dir / "free_energy.png"))
    return paths


problem = Problem(
    name="garnet-ptt",
    description="P-T-t path from a zoned garnet (growth, zoning, diffusion; GMRF prior, lambda by evidence)",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    fit_options=fit_options,
)
