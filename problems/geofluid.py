"""Geofluids from seismic velocities (and electrical conductivity): porosity phi and pore
aspect ratio alpha for every host lithology x fluid combination, and the combination chosen
by the Bayesian free energy (phi and alpha marginalised).

After Kuwatani et al. (2014, Earth Planets Space 66:5), who infer the fluid fraction and
pore shape from seismic velocity structure (there with Takei's 2002 constitutive model, a
Markov random field over cells, and melt assumed).  Here: one location, the Kuster-Toksöz /
Berryman spheroidal-pore model (:mod:`jaxinv.physics.rock_physics`), and the host
lithology and fluid type are themselves hypotheses, compared by their evidence

    p(d | m) = ∫∫ p(d | phi, alpha, m) p(phi) p(alpha) dphi dalpha.

Data ``d`` (at one location): Vp, Vs [km/s] and optionally log10 of the bulk electrical
conductivity [S/m], each with a Gaussian standard deviation, one joint likelihood::

    d ~ N(f_m(phi, alpha), diag(sd^2)),
    f_m = (Vp, Vs[, log10 sigma_HS+]),
    (K, G) = Kuster-Toksöz(K_s, G_s; K_f, G_f = 0; phi, alpha),   rho = (1 - phi) rho_s + phi rho_f,
    Vp = sqrt((K + 4/3 G)/rho),  Vs = sqrt(G/rho),
    sigma_HS+ = sigma_f + (1 - phi) / [1/(sigma_s - sigma_f) + phi/(3 sigma_f)]   (Hashin & Shtrikman 1962).

Priors: phi ~ LogUniform(1e-4, 0.3), alpha ~ LogUniform(1e-3, 1): scale-invariant over
3.5 and 3 decades (a melt or fluid fraction from 0.01 % to 30 %, pores from thin cracks
to spheres), the same for every combination, so the free energies compare the hypotheses
and not their priors.  Kuster-Toksöz is a dilute scheme (valid for phi/alpha << 1 for thin
pores); in the corner phi/alpha >~ 1 of the prior its shear modulus turns negative, and
the moduli pass through a smooth floor at 1e-3 of the host's (:data:`MODULUS_FLOOR`), where
the predicted velocities (~3 % of the host's) are rejected by any data.  The embedded
truth (phi = 0.02, alpha = 0.05) has crack density 3 phi / (4 pi alpha) ~ 0.1, the edge of
the dilute regime: a self-consistent or differential scheme (not implemented) would give
somewhat lower moduli there, so the inferred (phi, alpha) carry this model error too.

Properties of the hypotheses (moduli K, G [GPa], density rho [g/cm^3], conductivity
sigma [S/m]).  The rock moduli are derived as K = rho (Vp^2 - 4/3 Vs^2), G = rho Vs^2 from
the typical velocities and densities in the table (order of Christensen & Mooney 1995,
JGR 100(B6), 9761-9788, for granite-gneiss, gabbro and peridotite at crustal/upper-mantle
pressure; the exact numbers were NOT checked against that paper).  The fluid and
conductivity values are typical literature ranges, NOT verified against a primary source
(see ``problems/data/geofluid/README.md``):

| name | Vp, Vs [km/s] | K | G | rho | sigma | source / status |
| --- | --- | --- | --- | --- | --- | --- |
| granite (felsic crust) | 6.2, 3.6 | 56.07 | 34.34 | 2.65 | 1e-4 | typical; unverified |
| gabbro (mafic lower crust) | 6.9, 3.9 | 81.99 | 45.63 | 3.00 | 1e-3 | typical; unverified |
| peridotite (upper mantle) | 8.0, 4.5 | 122.10 | 66.83 | 3.30 | 1e-2 | typical; unverified (olivine K 129, G 81, Mavko et al.) |
| aqueous fluid | - | 5.0 | 0 | 1.0 | 30 | saline (~5 wt % NaCl) fluid at ~1 GPa; typical, unverified |
| basaltic melt | - | 15.0 | 0 | 2.7 | 3 | typical (Roberts & Tyburczy 1999 range 1-10 S/m); unverified |

Embedded data (``problems/data/geofluid/``): synthetic, peridotite + melt with phi = 0.02,
alpha = 0.05 (a mantle wedge below a volcanic front), observed Vp, Vs, log10 sigma with
Gaussian noise of sd 0.05 km/s, 0.03 km/s and 0.15, seed 2014 (:func:`simulate`).

Data file (CSV, :func:`load_data`): rows ``quantity,value,sd`` with quantities
``vp_km_s``, ``vs_km_s`` (both required) and ``log10_conductivity`` (log10 of S/m,
optional); a header row and ``#`` comments are allowed.

Exact reference: :func:`quadrature_evidence` computes every combination's log evidence and
its (log phi, log alpha) posterior on a grid, ``jax.vmap``-ed over the combinations.
"""

from __future__ import annotations

from functools import partial
from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.physics import rock_physics as rp

#: host rocks: K, G [GPa], rho [g/cm^3], sigma [S/m] (module docstring: sources and status)
LITHOLOGIES = {
    "granite": {"k": 56.074, "g": 34.344, "rho": 2.65, "sigma": 1e-4, "label": "felsic crust"},
    "gabbro": {"k": 81.99, "g": 45.63, "rho": 3.00, "sigma": 1e-3, "label": "mafic lower crust"},
    "peridotite": {"k": 122.1, "g": 66.825, "rho": 3.30, "sigma": 1e-2, "label": "upper mantle"},
}
#: pore fluids: K [GPa], rho [g/cm^3], sigma [S/m] (G = 0)
FLUIDS = {
    "aqueous fluid": {"k": 5.0, "rho": 1.0, "sigma": 30.0},
    "melt": {"k": 15.0, "rho": 2.7, "sigma": 3.0},
}
#: observed quantities, in the order of the data vector
QUANTITIES = ("vp_km_s", "vs_km_s", "log10_conductivity")
#: prior ranges (log-uniform)
PHI_RANGE = (1e-4, 0.3)
ALPHA_RANGE = (1e-3, 1.0)
#: smooth floor on the Kuster-Toksöz moduli, as a fraction of the host's (see the docstring)
MODULUS_FLOOR = 1e-3
#: the embedded data's truth and noise
TRUTH = {"lithology": "peridotite", "fluid": "melt", "porosity": 0.02, "aspect_ratio": 0.05}
NOISE_SD = {"vp_km_s": 0.05, "vs_km_s": 0.03, "log10_conductivity": 0.15}
DEFAULT_SEED = 2014
DATA_FILE = "synthetic_mantle_wedge.csv"


def combination_name(lithology: str, fluid: str) -> str:
    """``"peridotite + melt"``."""
    return f"{lithology} + {fluid}"


def combinations(lithologies=None, fluids=None) -> dict[str, tuple[str, str]]:
    """``{name: (lithology, fluid)}`` for every lithology x fluid (default: all)."""
    lithologies = tuple(LITHOLOGIES) if lithologies is None else _names(lithologies, LITHOLOGIES, "lithology")
    fluids = tuple(FLUIDS) if fluids is None else _names(fluids, FLUIDS, "fluid")
    return {combination_name(r, f): (r, f) for r in lithologies for f in fluids}


def _names(given, table, what):
    given = (given,) if isinstance(given, str) else tuple(given)
    bad = [g for g in given if g not in table]
    if not given or bad:
        raise ValueError(f"unknown {what}(s) {bad}; available: {sorted(table)}")
    return given


def properties(lithology: str, fluid: str) -> jnp.ndarray:
    """The property vector ``(K_s, G_s, rho_s, sigma_s, K_f, rho_f, sigma_f)`` of a combination."""
    r, f = LITHOLOGIES[lithology], FLUIDS[fluid]
    return jnp.asarray([r["k"], r["g"], r["rho"], r["sigma"], f["k"], f["rho"], f["sigma"]], dtype=float)


def predict(props, phi, alpha, conductivity: bool = True):
    """``(Vp [km/s], Vs [km/s][, log10 sigma_HS+ [S/m]])`` of a combination's property vector
    (:func:`properties`) at porosity ``phi`` and aspect ratio ``alpha`` (broadcasting over
    ``phi`` and ``alpha``; the quantities along the last axis)."""
    k_s, g_s, rho_s, sig_s, k_f, rho_f, sig_f = (props[..., i] for i in range(7))
    vp, vs = rp.seismic_velocities(k_s, g_s, rho_s, k_f, rho_f, phi, alpha, floor=MODULUS_FLOOR)
    out = [vp, vs]
    if conductivity:
        out.append(jnp.log10(rp.hashin_shtrikman_upper(sig_s, sig_f, phi)))
    return jnp.stack(jnp.broadcast_arrays(*out), axis=-1)


class FluidRock(eqx.Module):
    """Forward model of one combination: ``{"porosity", "aspect_ratio"} -> (Vp, Vs[, log10 sigma])``."""

    props: jax.Array
    conductivity: bool = eqx.field(static=True)

    def __init__(self, lithology: str, fluid: str, conductivity: bool = True):
        self.props = properties(lithology, fluid)
        self.conductivity = bool(conductivity)

    def __call__(self, params):
        return predict(self.props, params["porosity"], params["aspect_ratio"], self.conductivity)


# -- data -------------------------------------------------------------------------------------
def observation(values: dict, sds: dict, meta=None) -> Dataset:
    """A :class:`~jaxinv.Dataset` from ``{quantity: value}`` and ``{quantity: sd}``
    (``vp_km_s`` and ``vs_km_s`` required, ``log10_conductivity`` optional); ``x`` holds the
    quantity names, ``y`` the values, ``sigma`` the sds."""
    meta = dict(meta or {})
    source = meta.get("source", "data")
    unknown = [q for q in (*values, *sds) if q not in QUANTITIES]
    if unknown:
        raise ValueError(f"{source}: unknown quantit{'y' if len(unknown) == 1 else 'ies'} {sorted(set(unknown))}; "
                         f"expected {QUANTITIES}")
    for q in ("vp_km_s", "vs_km_s"):
        if q not in values:
            raise ValueError(f"{source}: {q} is required")
    if set(values) != set(sds):
        raise ValueError(f"{source}: every quantity needs a value and an sd")
    names = tuple(q for q in QUANTITIES if q in values)
    y = np.asarray([values[q] for q in names], dtype=float)
    sd = np.asarray([sds[q] for q in names], dtype=float)
    for q, v, s in zip(names, y, sd):
        if not np.isfinite(v) or not np.isfinite(s):
            raise ValueError(f"{source}: {q}: value and sd must be finite (got {v}, {s})")
        if s <= 0:
            raise ValueError(f"{source}: {q}: sd must be positive, got {s}")
    if y[0] <= 0 or y[1] <= 0:
        raise ValueError(f"{source}: velocities must be positive (km/s), got Vp = {y[0]}, Vs = {y[1]}")
    if y[1] >= y[0]:
        raise ValueError(f"{source}: Vs ({y[1]}) must be below Vp ({y[0]})")
    return Dataset(x=names, y=y, sigma=sd, meta={**meta, "quantities": names})


def load_data(path) -> Dataset:
    """A CSV of rows ``quantity,value,sd`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no such file: {path}")
    rows = [r.strip() for r in path.read_text().splitlines()]
    rows = [r for r in rows if r and not r.startswith("#")]
    if rows and rows[0].replace(" ", "").lower().startswith("quantity,"):
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{path} has no data rows (expected rows 'quantity,value,sd')")
    values, sds = {}, {}
    for i, row in enumerate(rows, start=1):
        cells = [c.strip() for c in row.split(",")]
        if len(cells) != 3:
            raise ValueError(f"{path}: row {i} has {len(cells)} columns; expected 3 (quantity,value,sd)")
        q = cells[0]
        if q not in QUANTITIES:
            raise ValueError(f"{path}: row {i}: unknown quantity {q!r}; expected one of {QUANTITIES}")
        if q in values:
            raise ValueError(f"{path}: row {i}: {q} given twice")
        try:
            values[q], sds[q] = float(cells[1]), float(cells[2])
        except ValueError:
            raise ValueError(f"{path}: row {i} has a non-numeric entry: {row!r}") from None
    return observation(values, sds, meta={"source": str(path)})


def simulate(key, lithology=TRUTH["lithology"], fluid=TRUTH["fluid"], porosity=TRUTH["porosity"],
             aspect_ratio=TRUTH["aspect_ratio"], noise_sd=None, conductivity: bool = True) -> Dataset:
    """A synthetic observation: :func:`predict` plus Gaussian noise (``noise_sd``:
    ``{quantity: sd}``, default :data:`NOISE_SD`) drawn with ``key``; truth in ``meta``."""
    noise_sd = {**NOISE_SD, **(noise_sd or {})}
    if not (PHI_RANGE[0] <= porosity <= PHI_RANGE[1] and ALPHA_RANGE[0] <= aspect_ratio <= ALPHA_RANGE[1]):
        raise ValueError(f"porosity must be in {PHI_RANGE} and aspect_ratio in {ALPHA_RANGE}, "
                         f"got {porosity}, {aspect_ratio}")
    clean = np.asarray(predict(properties(lithology, fluid), porosity, aspect_ratio, conductivity))
    names = QUANTITIES if conductivity else QUANTITIES[:2]
    sd = np.asarray([noise_sd[q] for q in names])
    y = clean + sd * np.asarray(jax.random.normal(key, clean.shape, dtype=jnp.float64))
    truth = {"lithology": lithology, "fluid": fluid, "porosity": float(porosity), "aspect_ratio": float(aspect_ratio)}
    return observation(dict(zip(names, y)), dict(zip(names, sd)), meta={"source": "simulated", "truth": truth})


def write_default_data(path) -> Path:
    """Regenerate the embedded CSV (``simulate(jax.random.key(DEFAULT_SEED))``, 17 digits)."""
    d = simulate(jax.random.key(DEFAULT_SEED))
    lines = ["# synthetic: " + ", ".join(f"{k} = {v}" for k, v in TRUTH.items()) + f", seed {DEFAULT_SEED}",
             "quantity,value,sd"] + [f"{q},{v:.17g},{s:.17g}" for q, v, s in zip(d.x, d.y, d.sigma)]
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def default_data() -> Dataset:
    """The embedded synthetic observation (truth in ``meta``)."""
    d = load_data(Path(str(files("problems") / "data" / "geofluid" / DATA_FILE)))
    return Dataset(x=d.x, y=d.y, sigma=d.sigma, meta={**d.meta, "truth": dict(TRUTH), "seed": DEFAULT_SEED})


def without_conductivity(data: Dataset) -> Dataset:
    """The same observation with the conductivity dropped (velocities only)."""
    keep = [i for i, q in enumerate(data.x) if q != "log10_conductivity"]
    return Dataset(x=tuple(data.x[i] for i in keep), y=np.asarray(data.y)[keep], sigma=np.asarray(data.sigma)[keep],
                   meta={**data.meta, "quantities": tuple(data.x[i] for i in keep)})


# -- models -----------------------------------------------------------------------------------
def _check(data: Dataset) -> tuple[bool, np.ndarray]:
    names = tuple(data.x)
    if names not in (QUANTITIES, QUANTITIES[:2]) or data.sigma is None:
        raise ValueError(f"data must hold {QUANTITIES[:2]} (and optionally log10_conductivity) with sds, "
                         f"got {names}")
    return names == QUANTITIES, np.asarray(data.sigma, dtype=float)


def priors(phi_range=PHI_RANGE, alpha_range=ALPHA_RANGE) -> dict:
    """``{"porosity": LogUniform(*phi_range), "aspect_ratio": LogUniform(*alpha_range)}``."""
    if not (0 < phi_range[0] < phi_range[1] < 1):
        raise ValueError(f"phi_range must satisfy 0 < low < high < 1, got {phi_range}")
    if not (0 < alpha_range[0] < alpha_range[1] <= 1):
        raise ValueError(f"alpha_range must satisfy 0 < low < high <= 1 (oblate pores), got {alpha_range}")
    return {"porosity": ji.priors.LogUniform(*phi_range), "aspect_ratio": ji.priors.LogUniform(*alpha_range)}


def models(data: Dataset, lithologies=None, fluids=None, phi_range=PHI_RANGE,
           alpha_range=ALPHA_RANGE) -> dict[str, ji.Model]:
    """One :class:`jaxinv.Model` per lithology x fluid, ``{"peridotite + melt": Model, ...}``.

    Args:
        data: an observation (:func:`observation`, :func:`load_data`); with or without
            ``log10_conductivity``, which joins Vp and Vs in one Gaussian likelihood with the
            data's per-quantity sds.
        lithologies, fluids: subsets of :data:`LITHOLOGIES`, :data:`FLUIDS` (default: all).
        phi_range, alpha_range: log-uniform prior ranges.
    """
    conductivity, sd = _check(data)
    p = priors(phi_range, alpha_range)
    likelihood = ji.likelihoods.Normal(sigma=sd)
    return {name: ji.Model(FluidRock(r, f, conductivity), p, likelihood)
            for name, (r, f) in combinations(lithologies, fluids).items()}


def n_components(name: str) -> int:
    """Two parameters (phi, alpha) per combination."""
    return 2


# -- exact reference: quadrature --------------------------------------------------------------
def _log_trapezoid_weights(n, length):
    w = jnp.full(n, length / (n - 1)).at[jnp.array([0, -1])].multiply(0.5)
    return jnp.log(w)


@partial(jax.jit, static_argnames="conductivity")
def _quadrature(props, y, sd, u, v, conductivity):
    """Log evidence and grid log posterior of each row of ``props`` (vmapped)."""
    n_u, n_v = u.shape[0], v.shape[0]
    lw = _log_trapezoid_weights(n_u, u[-1] - u[0])[:, None] + _log_trapezoid_weights(n_v, v[-1] - v[0])[None, :]
    log_volume = jnp.log((u[-1] - u[0]) * (v[-1] - v[0]))

    def one(prop):
        f = predict(prop, jnp.exp(u)[:, None], jnp.exp(v)[None, :], conductivity)  # (n_u, n_v, q)
        loglik = jnp.sum(-0.5 * ((y - f) / sd) ** 2 - jnp.log(sd) - 0.5 * jnp.log(2 * jnp.pi), axis=-1)
        log_z = jax.scipy.special.logsumexp(loglik + lw) - log_volume
        # density of (u, v): prior 1/volume times likelihood over evidence
        return log_z, loglik - log_volume - log_z

    return jax.vmap(one)(props)


def quadrature_evidence(data: Dataset, lithologies=None, fluids=None, n_grid: int = 401,
                        phi_range=PHI_RANGE, alpha_range=ALPHA_RANGE) -> dict:
    """Every combination's log evidence by 2-D trapezoidal quadrature over
    ``(u, v) = (log phi, log alpha)``, where the priors are uniform::

        log Z_m = log sum_ij w_i w_j p(d | e^u_i, e^v_j, m) - log(L_u L_v),

    on an ``n_grid x n_grid`` grid, all combinations at once (``jax.vmap`` over their stacked
    property vectors).  Returns ``{"names", "log_evidence" (C,), "free_energy" (C,),
    "log_phi" (n,), "log_alpha" (n,), "log_posterior" (C, n, n)}`` (the normalised log
    density of (u, v) on the grid, rows phi, columns alpha)."""
    conductivity, sd = _check(data)
    priors(phi_range, alpha_range)
    if int(n_grid) < 3:
        raise ValueError(f"n_grid must be >= 3, got {n_grid}")
    n_grid = int(n_grid)
    combos = combinations(lithologies, fluids)
    props = jnp.stack([properties(r, f) for r, f in combos.values()])
    u = jnp.linspace(np.log(phi_range[0]), np.log(phi_range[1]), n_grid)
    v = jnp.linspace(np.log(alpha_range[0]), np.log(alpha_range[1]), n_grid)
    log_z, log_post = _quadrature(props, jnp.asarray(data.y), jnp.asarray(sd), u, v, conductivity)
    return {"names": list(combos), "log_evidence": np.asarray(log_z), "free_energy": -np.asarray(log_z),
            "log_phi": np.asarray(u), "log_alpha": np.asarray(v), "log_posterior": np.asarray(log_post)}


def probabilities(free_energies) -> np.ndarray:
    """Posterior model probabilities ``exp(-F_m) / sum exp(-F)`` (equal prior weights)."""
    f = np.asarray(free_energies, dtype=float)
    w = np.exp(-(f - np.min(f)))
    return w / w.sum()


def credible_mask(log_posterior, level=0.95) -> np.ndarray:
    """Grid cells of the highest-posterior-density region holding ``level`` of the mass
    (equal cells in (log phi, log alpha))."""
    lp = np.asarray(log_posterior)
    p = np.exp(lp - lp.max()).ravel()
    order = np.argsort(p)[::-1]
    cum = np.cumsum(p[order]) / p.sum()
    mask = np.zeros(p.size, bool)
    mask[order[: int(np.searchsorted(cum, level)) + 1]] = True
    return mask.reshape(lp.shape)


def in_credible_region(quad: dict, name: str, porosity: float, aspect_ratio: float, level=0.95) -> bool:
    """Whether (porosity, aspect_ratio) lies in the ``level`` HPD region of ``name``'s
    quadrature posterior (:func:`quadrature_evidence`)."""
    k = quad["names"].index(name)
    i = int(np.argmin(np.abs(quad["log_phi"] - np.log(porosity))))
    j = int(np.argmin(np.abs(quad["log_alpha"] - np.log(aspect_ratio))))
    return bool(credible_mask(quad["log_posterior"][k], level)[i, j])


# -- figures ----------------------------------------------------------------------------------
def plot_probabilities(selection, quad: dict, path) -> Path:
    """Bars: posterior probability of each combination from the selection's free energies
    and from the quadrature."""
    from jaxinv.plotting import _pyplot

    plt = _pyplot()
    names = [n for n in quad["names"] if n in selection.results]
    p_sel = probabilities([selection.free_energies[n] for n in names])
    p_quad = probabilities([quad["free_energy"][quad["names"].index(n)] for n in names])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    ax.bar(x - 0.2, p_sel, 0.4, label="engine (selection)", color="tab:blue")
    ax.bar(x + 0.2, p_quad, 0.4, label="quadrature (exact)", color="tab:orange")
    ax.set_xticks(x, [n.replace(" + ", "\n+ ") for n in names], fontsize=8)
    ax.set_ylabel("p(lithology, fluid | data)")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    ax.set_title(f"selected: {selection.selected}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_posterior(selection, quad: dict, path, truth=None) -> Path:
    """The (phi, alpha) posterior density of the selected combination (quadrature grid, 50/95 %
    HPD contours), its MAP from the selection, and the truth when known."""
    from jaxinv.plotting import _pyplot

    plt = _pyplot()
    name = selection.selected
    k = quad["names"].index(name)
    lp = quad["log_posterior"][k]
    phi, alpha = np.exp(quad["log_phi"]), np.exp(quad["log_alpha"])
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    ax.pcolormesh(alpha, phi, np.exp(lp - lp.max()), cmap="Blues", shading="auto")
    ax.contour(alpha, phi, credible_mask(lp, 0.95).astype(float), levels=[0.5], colors="k", linewidths=1.0)
    ax.contour(alpha, phi, credible_mask(lp, 0.5).astype(float), levels=[0.5], colors="k", linewidths=0.6,
               linestyles="--")
    params = selection.results[name].params
    if np.ndim(params["porosity"]) == 0:
        ax.plot(float(params["aspect_ratio"]), float(params["porosity"]), "r+", ms=10, label="MAP (engine)")
    if truth is not None and combination_name(truth["lithology"], truth["fluid"]) == name:
        ax.plot(truth["aspect_ratio"], truth["porosity"], "r*", ms=12, label="truth")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("aspect ratio alpha")
    ax.set_ylabel("porosity phi")
    ax.set_title(f"{name}: posterior (50 %, 95 % HPD)", fontsize=10)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def figures(selection, data: Dataset, out_dir, n_grid: int = 301) -> list[Path]:
    """``probabilities.png`` (combination probabilities, engine and quadrature) and
    ``posterior.png`` ((phi, alpha) posterior of the selected combination)."""
    out_dir = Path(out_dir)
    quad = quadrature_evidence(data, n_grid=int(n_grid))
    return [plot_probabilities(selection, quad, out_dir / "probabilities.png"),
            plot_posterior(selection, quad, out_dir / "posterior.png", data.meta.get("truth"))]


problem = Problem(
    name="geofluid",
    description="Fluid fraction and pore shape from Vp, Vs (and conductivity); lithology x fluid by free energy "
                "(Kuster-Toksöz/Berryman, Hashin-Shtrikman)",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    n_components=n_components,
)
