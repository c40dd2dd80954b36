"""Mineral dissolution in a batch reactor: rate constant k, equilibrium constant K, and the
particle geometry (surface-area law) chosen by the Bayesian free energy.

Physics (:class:`jaxinv.physics.kinetics.MineralReaction`, units there): a mineral
``AB(s) -> X(aq)`` (nu = 1, e.g. amorphous silica ``SiO2 + 2 H2O -> H4SiO4``) dissolves into
an initially pure fluid of volume V,

    dm/dt = -k S0 (m/m0)^n (1 - c/K),     c = (m0 - m) / V,

and the dissolved concentration c(t) [mol/L] is measured at times t [s] with Gaussian errors.
The exponent n encodes how the reactive surface shrinks: ``sphere`` (n = 2/3), ``cylinder``
(1/2), ``plate`` (0) or ``free`` (n ~ Uniform(0, 1), a fourth model).  The inverse problem
(rate law and surface-area model from the fluid's time series) follows Omori et al. (2016) as
cited in the project's issue 4 (the paper was not consulted); Lasaga
(1998, ch. 1) and Palandri & Kharaka (2004) give the rate law.

Identifiability.  k and S0 enter only as the product k S0, so S0 (e.g. BET area) and m0, V
must be known.  The geometry acts through the slowing of the late approach to equilibrium:
when a fraction f of the mineral has dissolved the rate carries the factor (1 - f)^n, so the
data must reach well into the dissolution (here ~80 % of the mineral dissolves before
equilibrium) for the laws to differ.  K is identified by the plateau.

Embedded data (``problems/data/reaction_kinetics/``, README there): a synthetic experiment,
spheres, k = 2e-9 mol m^-2 s^-1, K = 2e-3, m0 = 2.5 mmol, S0 = 30 m^2, V = 1 L, 40 samples
every 2 h from 2 h to 80 h, noise sd 4e-5 mol/L (2 % of K), seed 2016 (:func:`simulate`).
The values are chosen to give a 3-day experiment, not to reproduce a measured mineral.

Data file (CSV): columns ``t_s, c_mol_per_L[, sigma]``; the reactor is described in comment
lines ``# initial_moles = ...`` (mol), ``# initial_area = ...`` (m^2), ``# volume = ...`` (L),
``# initial_concentration = ...`` (mol/L, default 0), which :func:`models` reads from the
dataset's ``meta`` (or pass them as options, e.g. ``--option initial_area=12.5``).
"""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.physics.kinetics import GEOMETRY_EXPONENTS, MineralReaction
from jaxinv.plotting import plot_free_energy
from jaxinv.problem import read_table

DATA_FILE = "synthetic_sphere.csv"
#: geometry laws compared by default ("free": exponent n inferred)
LAWS = ("sphere", "cylinder", "plate", "free")
#: the embedded experiment's reactor: m0 [mol], S0 [m^2], V [L], c0 [mol/L]
REACTOR = {"initial_moles": 2.2e-3, "initial_area": 30.0, "volume": 1.0, "initial_concentration": 0.0}
#: the embedded experiment's truth (k in mol m^-2 s^-1, K dimensionless)
TRUTH = {"geometry": "sphere", "rate_constant": 2e-9, "equilibrium_constant": 2e-3}
#: sampling times [s]: every 3 h from 3 h to 180 h
TIMES = 10800.0 * np.arange(1, 61)
#: measurement noise sd [mol/L] (1 % of K)
NOISE_SD = 2e-5
#: seed of the embedded data (jax.random.key(DEFAULT_SEED))
DEFAULT_SEED = 2016
#: prior widths (log-uniform, factors either side of the data's own scale; see models())
RATE_FACTOR = 100.0
K_FACTOR = 10.0
_REACTOR_KEYS = tuple(REACTOR)
#: ODE step budget of the models (the default data need ~40 Tsit5 steps; a small budget keeps
#: the reverse-mode checkpointing, and so compilation and every gradient, cheap)
MAX_STEPS = 512


# -- data -------------------------------------------------------------------------------------
def series(t, c, sigma=None, meta=None) -> Dataset:
    """A concentration time series as a :class:`~jaxinv.Dataset` (checked: 1-D, equal
    lengths, finite, times >= 0 and strictly increasing, concentrations >= 0)."""
    meta = dict(meta or {})
    source = meta.get("source", "data")
    t = np.asarray(t, dtype=float)
    c = np.asarray(c, dtype=float)
    if t.ndim != 1 or c.shape != t.shape:
        raise ValueError(f"{source}: times and concentrations must be 1-D of equal length, got {t.shape}, {c.shape}")
    if t.size < 3:
        raise ValueError(f"{source}: need at least 3 samples, got {t.size}")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(c))):
        raise ValueError(f"{source}: non-finite (NaN or infinite) times or concentrations")
    if np.any(t < 0):
        raise ValueError(f"{source}: row {int(np.argmax(t < 0)) + 1}: time must be >= 0 (t = 0 is the start)")
    if np.any(np.diff(t) <= 0):
        raise ValueError(f"{source}: row {int(np.argmax(np.diff(t) <= 0)) + 2}: times must be strictly increasing")
    if np.any(c < 0):
        raise ValueError(f"{source}: row {int(np.argmax(c < 0)) + 1}: negative concentration {c[np.argmax(c < 0)]:g}")
    if sigma is not None:
        sigma = np.broadcast_to(np.asarray(sigma, dtype=float), t.shape)
        if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
            raise ValueError(f"{source}: sigma must be positive and finite for every row")
    return Dataset(x=t, y=c, sigma=None if sigma is None else np.array(sigma), meta=meta)


def _reactor_from_comments(path: Path) -> dict:
    out = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"\s*#\s*([A-Za-z_]+)\s*[=:]\s*(\S+)\s*", line)
        if m and m.group(1) in _REACTOR_KEYS:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                raise ValueError(f"{path}: {m.group(1)} must be a number, got {m.group(2)!r}") from None
    return out


def load_data(path) -> Dataset:
    """A CSV ``t_s, c_mol_per_L[, sigma]`` (header and ``#`` comments allowed; reactor constants
    in comment lines ``# initial_moles = 2.5e-3`` etc., see the module docstring)."""
    path = Path(path)
    table = read_table(path, ("t_s", "c_mol_per_L", "sigma"), n_optional=1)
    return series(table[:, 0], table[:, 1], table[:, 2] if table.shape[1] == 3 else None,
                  meta={"source": str(path), "x_unit": "s", "y_unit": "mol/L", **_reactor_from_comments(path)})


def default_data() -> Dataset:
    """The embedded synthetic experiment (``simulate(jax.random.key(DEFAULT_SEED))``), truth in meta."""
    data = load_data(Path(str(files("problems") / "data" / "reaction_kinetics" / DATA_FILE)))
    return Dataset(x=data.x, y=data.y, sigma=data.sigma,
                   meta={**data.meta, "truth": dict(TRUTH), "seed": DEFAULT_SEED, "noise_sd": NOISE_SD})


def true_concentrations(t, geometry="sphere", rate_constant=TRUTH["rate_constant"],
                        equilibrium_constant=TRUTH["equilibrium_constant"], reactor=None) -> np.ndarray:
    """Noiseless c(t) [mol/L] of the reactor (default: the embedded experiment's)."""
    r = {**REACTOR, **(reactor or {})}
    forward = _forward(np.asarray(t, dtype=float), geometry, r)
    params = {"rate_constant": rate_constant, "equilibrium_constant": equilibrium_constant}
    if forward.exponent is None:
        raise ValueError("true_concentrations needs a fixed geometry (a name or an exponent), not 'free'")
    return np.asarray(forward(params))


def simulate(key, geometry="sphere", rate_constant=TRUTH["rate_constant"],
             equilibrium_constant=TRUTH["equilibrium_constant"], noise_sd=NOISE_SD, times=TIMES,
             reactor=None) -> Dataset:
    """Fresh synthetic data: c(t) of the reactor plus N(0, noise_sd^2) noise drawn with the JAX
    PRNG ``key`` (same key, same data).  ``geometry``: a name of
    :data:`~jaxinv.physics.kinetics.GEOMETRY_EXPONENTS` or an exponent n >= 0; ``reactor``
    overrides entries of :data:`REACTOR`.  Raises if the noise drives a sample below zero
    (measured concentrations are non-negative; use less noise or later samples)."""
    if not (np.isfinite(noise_sd) and noise_sd > 0):
        raise ValueError(f"noise_sd must be positive and finite, got {noise_sd}")
    if not (np.isfinite(rate_constant) and rate_constant >= 0):
        raise ValueError(f"rate_constant must be >= 0 (mol m^-2 s^-1), got {rate_constant}")
    if not (np.isfinite(equilibrium_constant) and equilibrium_constant > 0):
        raise ValueError(f"equilibrium_constant must be > 0, got {equilibrium_constant}")
    r = {**REACTOR, **(reactor or {})}
    t = np.asarray(times, dtype=float)
    c = true_concentrations(t, geometry, rate_constant, equilibrium_constant, r)
    c = c + float(noise_sd) * np.asarray(jax.random.normal(key, t.shape, dtype=jnp.float64))
    truth = {"geometry": geometry, "rate_constant": float(rate_constant),
             "equilibrium_constant": float(equilibrium_constant)}
    return series(t, c, np.full(t.shape, float(noise_sd)),
                  meta={"source": "simulated", "x_unit": "s", "y_unit": "mol/L", "truth": truth,
                        "noise_sd": float(noise_sd), **r})


def write_default_data(path) -> Path:
    """Regenerate the embedded CSV (17 significant digits, reactor in comment lines)."""
    d = simulate(jax.random.key(DEFAULT_SEED))
    lines = [f"# {k} = {REACTOR[k]!r}" for k in _REACTOR_KEYS] + ["t_s,c_mol_per_L,sigma"]
    lines += [f"{t:.17g},{c:.17g},{s:.17g}" for t, c, s in zip(d.x, d.y, d.sigma)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


# -- models -----------------------------------------------------------------------------------
def _forward(t, geometry, reactor: dict, solver="tsit5", max_steps=MAX_STEPS) -> MineralReaction:
    return MineralReaction(
        t, stoichiometry=1.0, initial_moles=reactor["initial_moles"], initial_area=reactor["initial_area"],
        volume=reactor["volume"], initial_concentrations=reactor["initial_concentration"], geometry=geometry,
        solver=solver, max_steps=max_steps,
    )


def _reactor(data: Dataset, overrides: dict) -> dict:
    r = {}
    for key in _REACTOR_KEYS:
        value = overrides.get(key)
        if value is None:
            value = data.meta.get(key)
        if value is None and key == "initial_concentration":
            value = 0.0
        if value is None:
            raise ValueError(f"the reactor's {key} is unknown: give it as a '# {key} = value' comment line in the "
                             f"data file or as an option ({key}=...)")
        r[key] = float(value)
    return r


def _likelihood(data: Dataset, noise_sd):
    if isinstance(noise_sd, str):
        if noise_sd != "auto":
            raise ValueError(f"noise_sd must be a number, 'auto' or None, got {noise_sd!r}")
        if data.sigma is not None:
            return ji.likelihoods.Normal(sigma=np.asarray(data.sigma, dtype=float))
        noise_sd = data.meta.get("noise_sd")
    if noise_sd is None:
        scale = float(np.max(np.abs(data.y))) or 1.0
        return ji.likelihoods.Normal(sigma=ji.priors.LogUniform(1e-5 * scale, scale))
    if not (np.isfinite(noise_sd) and float(noise_sd) > 0):
        raise ValueError(f"noise_sd must be positive, got {noise_sd}")
    return ji.likelihoods.Normal(sigma=float(noise_sd))


def models(data: Dataset, laws=LAWS, noise_sd="auto", rate_range=None, equilibrium_range=None,
           exponent_range=(0.0, 1.0), solver="tsit5", initial_moles=None, initial_area=None, volume=None,
           initial_concentration=None) -> dict[str, ji.Model]:
    """Candidate models ``{law: Model}``, one per surface-area law.

    Args:
        data: the time series (``x`` = t [s], ``y`` = c [mol/L]).
        laws: names among ``"sphere"``, ``"cylinder"``, ``"plate"``, ``"free"``.
        noise_sd: the noise sd [mol/L]; ``"auto"``: the data's sigma column, else
            ``meta["noise_sd"]``, else inferred; ``None``: inferred (log-uniform prior).
        rate_range, equilibrium_range: log-uniform prior ranges of k [mol m^-2 s^-1] and K [-];
            default: ``RATE_FACTOR`` either side of the initial-rate estimate
            ``c(t_1) V / (t_1 S0)`` and ``K_FACTOR`` either side of max c (:func:`data_scales`;
            data-dependent, but the same for every law, so the comparison is fair; a wider
            prior adds the same log-width to every F and slows the engines on stiff corners).
        exponent_range: uniform prior range of n for the ``"free"`` law.
        solver: Diffrax solver name (``"kvaerno5"`` for stiff settings).
        initial_moles, initial_area, volume, initial_concentration: the reactor (mol, m^2, L,
            mol/L), overriding the data's ``meta``.
    """
    laws = (laws,) if isinstance(laws, str) else tuple(laws)
    t = series(data.x, data.y, meta={"source": data.meta.get("source", "data")}).x
    reactor = _reactor(data, {"initial_moles": initial_moles, "initial_area": initial_area, "volume": volume,
                              "initial_concentration": initial_concentration})
    k0, big_k0 = data_scales(data, reactor)
    rate_range = (k0 / RATE_FACTOR, k0 * RATE_FACTOR) if rate_range is None else tuple(rate_range)
    equilibrium_range = (big_k0 / K_FACTOR, big_k0 * K_FACTOR) if equilibrium_range is None else tuple(equilibrium_range)
    unknown = [law for law in laws if law not in (*GEOMETRY_EXPONENTS, "free")]
    if not laws or unknown:
        raise ValueError(f"laws must be among {(*GEOMETRY_EXPONENTS, 'free')}, got {laws!r}")
    for name, (lo, hi) in (("rate_range", rate_range), ("equilibrium_range", equilibrium_range)):
        if not (0 < lo < hi < np.inf):
            raise ValueError(f"{name} must be 0 < low < high, got {(lo, hi)}")
    if not (0 <= exponent_range[0] < exponent_range[1] < np.inf):
        raise ValueError(f"exponent_range must be 0 <= low < high, got {exponent_range}")
    likelihood = _likelihood(data, noise_sd)
    priors = {"rate_constant": ji.priors.LogUniform(*rate_range),
              "equilibrium_constant": ji.priors.LogUniform(*equilibrium_range)}
    out = {}
    for law in laws:
        p = dict(priors)
        if law == "free":
            p["surface_exponent"] = ji.priors.Uniform(*exponent_range)
        out[law] = ji.Model(_forward(t, law, reactor, solver), p, likelihood)
    return out


def data_scales(data: Dataset, reactor: dict | None = None) -> tuple[float, float]:
    """Rough scales from the data: k0 = (c(t_1) - c0) V / (t_1 S0) (initial rate, Omega ~ 0,
    S ~ S0) [mol m^-2 s^-1] and K0 = max c [-] (the plateau, for nu = 1)."""
    r = reactor or _reactor(data, {})
    t, c = np.asarray(data.x, dtype=float), np.asarray(data.y, dtype=float)
    i = int(np.argmax(t > 0))
    rise = max(float(c[i]) - r["initial_concentration"], 0.05 * float(np.max(c) - r["initial_concentration"]))
    k0 = max(rise, 1e-300) * r["volume"] / (float(t[i]) * r["initial_area"])
    return float(k0), float(max(np.max(c), 1e-300))


def initial_guess(data: Dataset, law: str, reactor: dict | None = None) -> list[dict]:
    """Starting points for the MAP search of one law: k0 x (1/3, 1, 3) at K = 1.02 max c (and
    n = 0.5 for ``"free"``), from :func:`data_scales`."""
    k0, big_k0 = data_scales(data, reactor)
    out = []
    for factor in (1 / 3, 1.0, 3.0):
        p = {"rate_constant": jnp.asarray(k0 * factor), "equilibrium_constant": jnp.asarray(1.02 * big_k0)}
        if law == "free":
            p["surface_exponent"] = jnp.asarray(0.5)
        out.append(p)
    return out


def select_laws(data: Dataset, key, method: str = "laplace", laws=LAWS, model_options=None, **kwargs):
    """``ji.select`` over the geometry laws, with the MAP search started at
    :func:`initial_guess` for ``method="laplace"`` (fast and reliable: random prior draws
    land in stiff corners where every ODE solve takes its full step budget).  Other methods
    (``"smc"``, ``"remc"``) go straight to :func:`jaxinv.select`; ``kwargs`` go to the engine.
    Returns a :class:`jaxinv.Selection`."""
    candidates = models(data, laws=laws, **(model_options or {}))
    if method != "laplace" or "init" in kwargs:
        return ji.select(candidates, data.y, key, method=method, n_components={n: n_components(n) for n in candidates},
                         **kwargs)
    reactor = _reactor(data, {k: (model_options or {}).get(k) for k in _REACTOR_KEYS})
    # the gradient of an ODE solved to rtol 1e-8 is itself accurate to ~1e-7 relative: a
    # tighter gradient tolerance is never met and every start would run to the step cap
    kwargs.setdefault("gtol", 1e-5)
    kwargs.setdefault("max_steps", 200)
    results, posteriors = {}, {}
    for (name, model), k in zip(candidates.items(), jax.random.split(key, len(candidates))):
        posteriors[name] = model.condition(data.y)
        results[name] = ji.map_estimate(posteriors[name], k, init=initial_guess(data, name, reactor), **kwargs)
    return ji.Selection(results=results, n_components={n: n_components(n) for n in candidates},
                        posteriors=posteriors)


def n_components(name: str) -> int:
    """Number of physical parameters of a law's model (k, K, and n for "free")."""
    return 3 if name == "free" else 2


# -- figures ----------------------------------------------------------------------------------
def _draws(selection, name, key, n_draws):
    """Unconstrained posterior draws of one model (Laplace or sampling result)."""
    from jaxinv.plotting import _posterior_of, _unconstrained_draws

    post = _posterior_of(selection, name)
    res = selection.results[name]
    if res.sample_dims == 0:
        if res.laplace is None or not np.isfinite(float(res.log_evidence)):
            return post, post.unconstrain(res.params)[None]
        return post, res.laplace.sample_unconstrained(key, (n_draws,))
    return post, _unconstrained_draws(post, res, key, n_draws)


def predictive_bands(selection, data: Dataset, fine_t, key=None, n_draws=300) -> dict:
    """Per law: median and 90 % bands of the mean curve c(t) on ``fine_t`` and of the
    posterior predictive (curve + noise) at the data times."""
    key = jax.random.key(0) if key is None else key
    out = {}
    for name, k in zip(selection.results, jax.random.split(key, len(selection.results))):
        post, zs = _draws(selection, name, k, n_draws)
        forward = post.model.forward.at(fine_t)
        curves = np.asarray(jax.vmap(lambda z: forward(post.forward_params(z)))(zs))
        at_data = np.asarray(jax.vmap(lambda z: post.model.forward(post.forward_params(z)))(zs))
        draws = jax.vmap(post.constrain)(zs)
        if "sigma" in draws:  # inferred noise: its draws
            sigma = np.asarray(draws["sigma"]).reshape(-1, 1)
        else:
            sigma = np.asarray(post.model.likelihood.sigma, dtype=float)
        noisy = at_data + np.asarray(sigma) * np.random.default_rng(0).standard_normal(at_data.shape)
        lo, med, hi = np.quantile(curves, [0.05, 0.5, 0.95], axis=0)
        plo, phi = np.quantile(noisy, [0.05, 0.95], axis=0)
        out[name] = {"t": np.asarray(fine_t), "median": med, "lo": lo, "hi": hi, "pred_lo": plo, "pred_hi": phi}
    return out


def plot_laws(selection, data: Dataset, path, key=None) -> Path:
    """One panel per geometry law: data, median curve, 90 % band of the curve and 90 %
    posterior predictive band; F in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(data.x)
    fine = np.linspace(0.0, t.max(), 200)
    bands = predictive_bands(selection, data, fine, key)
    names = list(bands)
    cols = min(2, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    f = selection.free_energies
    best = selection.selected
    hours = 3600.0
    for ax, name in zip(axes.ravel(), names):
        b = bands[name]
        ax.fill_between(t / hours, b["pred_lo"] * 1e3, b["pred_hi"] * 1e3, color="tab:orange", alpha=0.2,
                        label="90% predictive")
        ax.fill_between(b["t"] / hours, b["lo"] * 1e3, b["hi"] * 1e3, color="tab:blue", alpha=0.35,
                        label="90% curve")
        ax.plot(b["t"] / hours, b["median"] * 1e3, "tab:blue", lw=1.2)
        ax.plot(t / hours, np.asarray(data.y) * 1e3, "k.", ms=4, label="data")
        ax.set_title(f"{name}: F = {f[name]:.1f}" + ("  (selected)" if name == best else ""), fontsize=10)
        ax.set_xlabel("time [h]")
        ax.set_ylabel("c [mmol/L]")
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def figures(selection, data: Dataset, out_dir) -> list[Path]:
    """``laws.png`` (data and bands per geometry law) and ``free_energy.png`` (F per law)."""
    out_dir = Path(out_dir)
    return [plot_laws(selection, data, out_dir / "laws.png"),
            plot_free_energy(selection, out_dir / "free_energy.png")]


problem = Problem(
    name="reaction-kinetics",
    description="Mineral dissolution kinetics: rate constant k, equilibrium constant K, surface-area law "
                "(sphere/cylinder/plate/free) by free energy",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    n_components=n_components,
)
