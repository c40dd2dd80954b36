"""Sparse isocon analysis: mass changes and element transfers of altered rocks, with the
immobile elements found from the data.

Sources:
  * Grant, J. A. (1986), "The isocon diagram -- a simple solution to Gresens' equation for
    metasomatic alteration", Econ. Geol. 81, 1976-1982; Grant (2005), "Isocon analysis: a
    brief review of the method and applications", Phys. Chem. Earth 30, 997-1004, eq. 1.
  * Kuwatani, T., Yoshida, K., Ueki, K., Oyanagi, R., Uno, M. & Akaho, S. (2020), "Sparse
    isocon analysis: a data-driven approach for material transfer estimation", Chem. Geol.
    532, 119345.

Only the abstract of Kuwatani et al. (2020) could be read while this module was written:
one reference (protolith) composition and several altered samples; no presumed immobile
elements and no mass or volume conservation; the transfers of some elements are assumed
near zero (sparsity), the immobile elements are then selected automatically by optimising
an evaluation function, and the outputs are each element's gain or loss and each sample's
total mass-change ratio.  The objective below is built to that description (the
group-sparse penalty with sparsity exponent ``q`` over elements, shared by all samples); it
is *not* transcribed from the paper, whose equations and tuning rules may differ.

Mass balance (Grant 1986, 2005, eq. 1).  For element ``i`` of altered sample ``k``,
``C^k_i = (M^0 / M^k) (C^0_i + dC_ik)``, with ``M^k / M^0`` the mass of altered rock made
from a unit mass of protolith (the *mass ratio* ``r_k``; Grant's isocon slope is
``1 / r_k``) and ``dC_ik`` the gain (+) or loss (-) of the element per unit mass of
protolith, in the units of ``C^0_i``.  In logarithms, with the *log transfer factor*
``delta_ik = log(1 + dC_ik / C^0_i)``::

    log C^k_i = log C^0_i + delta_ik - log r_k                                  (1)

which is linear in ``theta_i = log C^0_i``, ``delta_ik`` and ``rho_k = log r_k``.  The
concentrations are measured with relative errors ``s_i`` (the sd of ``log C``), for the
reference and for every sample.  An element is immobile when ``delta_ik = 0`` in every
sample.  Equation (1) alone cannot separate ``rho_k`` from a common shift of all
``delta_ik`` (compositions are closed data), so a choice of immobile set fixes the mass
ratio: with the set given by hand this is Grant's isocon (:func:`grant_isocon`).

Sparse isocon (:func:`sparse_isocon`).  Minimise over ``theta``, ``delta``, ``rho``::

    (1/2n) [ sum_i ((log C^0_i - theta_i)/s_i)^2
             + sum_ik ((log C^k_i - theta_i - delta_ik + rho_k)/s_i)^2 ]
      + lambda sum_i (||delta_i.||_2 / s_i)^q                                  (2)

``n`` the number of measured concentrations.  The penalty is a group norm over the samples
(Yuan & Lin 2006): an element is immobile in all samples or in none, which is what lets
several samples fix one reference frame.  ``q = 1`` is the convex group lasso, solved by
:func:`jaxinv.sparse.penalised_least_squares` (FISTA) with ``theta`` and ``rho`` unpenalised
(group weight 0); ``q < 1`` approaches counting the mobile elements and is solved by the
local linear approximation (Zou & Li 2008, Ann. Stat. 36, 1509): a sequence of weighted
group lassos with weights ``q (||delta_i|| / s_i + eps)^(q - 1) / s_i``.  For an immobile
element, ``n`` times the penalty's critical value ``||grad_i|| / w_i`` is the norm of ``K``
standardised residuals, a chi variable with ``K`` degrees of freedom; the default strength
(``"universal"``) is ``lambda = (sqrt(K) + sqrt(2 log N)) / n``, the bound on the largest of
``N`` such norms (Gaussian concentration), so that pure noise does not make an element
mobile: the group analogue of Donoho & Johnstone's (1994) universal threshold.

Model selection (``jaxinv run sparse-isocon``).  The penalty's path proposes nested immobile
sets; each is a linear-Gaussian model (:func:`isocon_model`: priors ``theta_i ~ N(0, 10^2)``,
``rho_k ~ N(0, 0.5^2)``, ``delta_ik ~ N(0, transfer_scale^2)`` for the mobile elements only)
whose free energy is exact under the Laplace approximation, and the free energy picks the
set -- with posterior uncertainties of every mass ratio and transfer.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.problem import read_labelled_table

DATA_FILE = "synthetic_alteration.csv"
DEFAULT_SEED = 1986

# The protolith: a granodiorite (major oxides and LOI in wt%, traces in ppm), and the
# analytical relative errors (sd of log C): XRF-like, 1 % for majors, 3-5 % for minors/traces.
ELEMENTS = ("SiO2", "TiO2", "Al2O3", "Fe2O3", "MnO", "MgO", "CaO", "Na2O", "K2O", "P2O5", "LOI",
            "Zr", "Y", "Nb", "Rb", "Sr", "Ba")
UNITS = ("wt%",) * 11 + ("ppm",) * 6
REFERENCE = (67.5, 0.48, 15.4, 3.9, 0.07, 1.5, 3.4, 3.9, 2.8, 0.16, 0.8, 165.0, 24.0, 11.0, 92.0, 390.0, 640.0)
RELATIVE_ERROR = (0.01, 0.02, 0.01, 0.01, 0.05, 0.02, 0.01, 0.01, 0.01, 0.05, 0.05, 0.03, 0.03, 0.04, 0.03, 0.03, 0.03)
# The alteration (sericitic + propylitic style): log transfer factor of each element at full
# intensity; TiO2, Al2O3, Zr, Y and Nb are immobile.
FULL_LOG_TRANSFER = {"SiO2": 0.25, "Fe2O3": 0.45, "MnO": 0.5, "MgO": 0.6, "CaO": -1.0, "Na2O": -1.3,
                     "K2O": 0.7, "P2O5": -0.5, "LOI": 1.2, "Rb": 0.6, "Sr": -0.9, "Ba": 0.35}
INTENSITY = (0.2, 0.4, 0.6, 0.8, 1.0)
SAMPLES = tuple(f"altered-{k + 1}" for k in range(len(INTENSITY)))
MAJORS = tuple(i for i, u in enumerate(UNITS) if u == "wt%")


@dataclass(frozen=True)
class IsoconData:
    """Compositions of a protolith and altered samples.

    Attributes:
        elements: element (or oxide) names, ``N``.
        samples: altered sample names, ``K``.
        reference: protolith concentrations ``C^0``, ``(N,)``.
        altered: altered concentrations ``C^k``, ``(K, N)``, the same units per element.
        relative_error: sd of ``log C`` per element, ``(N,)``.
        units: the unit of each element (for labels).
    """

    elements: tuple
    samples: tuple
    reference: np.ndarray
    altered: np.ndarray
    relative_error: np.ndarray
    units: tuple = field(default=())

    def __post_init__(self):
        n = len(self.elements)
        if n < 3 or len(set(self.elements)) != n:
            raise ValueError(f"need at least 3 distinct elements, got {list(self.elements)}")
        if np.shape(self.reference) != (n,) or np.ndim(self.altered) != 2 or np.shape(self.altered)[1] != n:
            raise ValueError(f"reference must have shape ({n},) and altered (samples, {n}); got "
                             f"{np.shape(self.reference)} and {np.shape(self.altered)}")
        if np.shape(self.altered)[0] != len(self.samples) or len(self.samples) < 1:
            raise ValueError("need one name per altered sample and at least one altered sample")
        for what, v in (("reference", self.reference), ("altered", self.altered)):
            v = np.asarray(v, float)
            if not np.all(np.isfinite(v)) or np.any(v <= 0):
                bad = [self.elements[j] for j in np.unique(np.nonzero(~(np.isfinite(v) & (v > 0)))[-1])]
                raise ValueError(f"{what} concentrations must be positive and finite (isocon works on ratios); "
                                 f"check {bad}")
        s = np.asarray(self.relative_error, float)
        if s.shape != (n,) or not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"relative_error must be {n} positive numbers (sd of log concentration)")

    @property
    def log_concentrations(self) -> np.ndarray:
        """``(K + 1, N)``: ``log C^0`` then ``log C^k`` per sample."""
        return np.log(np.vstack([self.reference, self.altered]))


def _dataset(data: IsoconData, meta: dict) -> Dataset:
    y = data.log_concentrations
    return Dataset(x=data, y=y, sigma=np.broadcast_to(data.relative_error, y.shape).copy(), meta=meta)


# -- synthetic data -------------------------------------------------------------------------
def true_log_transfer() -> np.ndarray:
    """``delta_ik`` of the embedded experiment, ``(K, N)``."""
    full = np.array([FULL_LOG_TRANSFER.get(e, 0.0) for e in ELEMENTS])
    return np.asarray(INTENSITY)[:, None] * full[None, :]


def true_mass_ratio() -> np.ndarray:
    """``r_k = M^k / M^0``: closure of the major oxides and LOI (they sum to the same total
    before and after), ``r_k = sum_major C^0_i exp(delta_ik) / sum_major C^0_i``."""
    c0 = np.asarray(REFERENCE)[list(MAJORS)]
    return (c0 * np.exp(true_log_transfer()[:, list(MAJORS)])).sum(axis=1) / c0.sum()


def simulate(key) -> IsoconData:
    """The embedded experiment with log-normal analytical noise of ``RELATIVE_ERROR``."""
    k0, k1 = jax.random.split(key)
    s = np.asarray(RELATIVE_ERROR)
    c0 = np.asarray(REFERENCE)
    clean = c0 * np.exp(true_log_transfer()) / true_mass_ratio()[:, None]
    noisy0 = c0 * np.exp(s * np.asarray(jax.random.normal(k0, c0.shape)))
    noisy = clean * np.exp(s * np.asarray(jax.random.normal(k1, clean.shape)))
    return IsoconData(ELEMENTS, SAMPLES, noisy0, noisy, s, UNITS)


def write_default_data(path) -> None:
    """Write ``simulate(jax.random.key(DEFAULT_SEED))`` in the format :func:`load_data` reads."""
    data = simulate(jax.random.key(DEFAULT_SEED))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", *data.elements])
        w.writerow(["unit", *data.units])
        w.writerow(["reference", *(f"{v:.6g}" for v in data.reference)])
        for name, row in zip(data.samples, data.altered):
            w.writerow([name, *(f"{v:.6g}" for v in row)])
        w.writerow(["relative_error", *(f"{v:.6g}" for v in data.relative_error)])


def load_data(path: Path) -> Dataset:
    """A composition table (CSV): a header ``sample,<element>,...``, an optional ``unit`` row,
    a ``reference`` row (the protolith), one row per altered sample, and a
    ``relative_error`` row (sd of log concentration per element, e.g. 0.02 for 2 %)."""
    table = read_labelled_table(path, text_rows=("unit",))
    seen = [label[0] for label in table.labels]
    repeated = sorted({n for n in seen if seen.count(n) > 1})
    if repeated:
        raise ValueError(f"{path}: repeated row name(s) {repeated}")
    rows = {label[0]: v for label, v in zip(table.labels, table.values)}
    names = [label[0] for label in table.labels if label[0] not in ("reference", "relative_error")]
    if "reference" not in rows or "relative_error" not in rows or not names:
        raise ValueError(f"{path}: needs a 'reference' row, a 'relative_error' row and at least one altered sample")
    elements, units = table.header[1:], tuple(table.text_rows.get("unit", ()))
    reference, error = rows["reference"], rows["relative_error"]
    altered = [rows[n] for n in names]
    return _dataset(IsoconData(elements, tuple(names), reference, np.vstack(altered), error, units),
                    {"source": str(path)})


def default_data() -> Dataset:
    """The embedded synthetic alteration series, truth in ``meta``."""
    data = load_data(Path(str(files("problems") / "data" / "sparse_isocon" / DATA_FILE)))
    truth = {"mass_ratio": true_mass_ratio().tolist(), "log_transfer": true_log_transfer().tolist(),
             "immobile": [e for e in ELEMENTS if e not in FULL_LOG_TRANSFER]}
    return Dataset(x=data.x, y=data.y, sigma=data.sigma,
                   meta={"source": f"synthetic granodiorite alteration series (seed {DEFAULT_SEED})", "truth": truth})


# -- Grant's isocon --------------------------------------------------------------------------
def grant_isocon(data: IsoconData, immobile) -> np.ndarray:
    """Mass ratios ``r_k`` from a given immobile set (Grant 1986): the isocon through the
    origin fitted to the immobile elements in log space, ``log(1/r_k) = weighted mean over
    immobile i of log(C^k_i / C^0_i)``, weights ``1 / s_i^2``."""
    mask = _mask(data, immobile)
    if mask.sum() < 1:
        raise ValueError("the isocon needs at least one immobile element")
    w = 1.0 / np.asarray(data.relative_error)[mask] ** 2
    log_ratio = np.log(data.altered[:, mask] / data.reference[mask])
    return np.exp(-(log_ratio @ w) / w.sum())


def _mask(data: IsoconData, elements) -> np.ndarray:
    names = [elements] if isinstance(elements, str) else list(elements)
    unknown = [e for e in names if e not in data.elements]
    if unknown:
        raise ValueError(f"unknown element(s) {unknown}; the data have {list(data.elements)}")
    return np.isin(np.asarray(data.elements), names)


# -- sparse isocon ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SparseIsocon:
    """A sparse isocon estimate: the immobile set of objective (2) (module docstring), and the
    mass ratios and transfers refitted without the penalty on that set
    (:func:`least_squares_isocon`).

    Attributes:
        mass_ratio: ``r_k = M^k / M^0``, ``(K,)``.
        log_transfer: ``delta_ik``, ``(K, N)``; zero columns are the immobile elements.
        immobile: boolean ``(N,)``.
        strength: ``lambda`` used.
    """

    mass_ratio: np.ndarray
    log_transfer: np.ndarray
    immobile: np.ndarray
    strength: float


def _linear_system(data: IsoconData):
    """Whitened design ``A`` and data ``b`` of (1) in the unknowns ``[delta (K*N), theta (N), rho (K)]``,
    and the group labels (``delta`` by element; ``theta``, ``rho`` each its own group)."""
    K, N = data.altered.shape
    s = np.asarray(data.relative_error)
    rows, b = [], []
    for i in range(N):                                           # reference: log C0_i = theta_i
        a = np.zeros(K * N + N + K)
        a[K * N + i] = 1.0
        rows.append(a / s[i])
        b.append(np.log(data.reference[i]) / s[i])
    for k in range(K):                                           # sample k: theta_i + delta_ik - rho_k
        for i in range(N):
            a = np.zeros(K * N + N + K)
            a[k * N + i] = 1.0
            a[K * N + i] = 1.0
            a[K * N + N + k] = -1.0
            rows.append(a / s[i])
            b.append(np.log(data.altered[k, i]) / s[i])
    groups = np.concatenate([np.tile(np.arange(N), K), N + np.arange(N), 2 * N + np.arange(K)])
    return np.asarray(rows), np.asarray(b), groups


def _threshold_to_strength(threshold: float, q: float) -> float:
    """``lambda'`` whose ``q``-thresholding rule zeroes exactly the norms below ``threshold`` in
    ``min_x (1/2)||z - x||^2 + lambda' ||x||^q``: ``tau = (2 - q)/(2(1 - q)) (2 lambda' (1 - q))^(1/(2 - q))``
    (the threshold of the ``L_q`` penalty for ``0 < q < 1``; Marjanovic & Solo 2012, IEEE Trans.
    Signal Process. 60, 5714, eq. 6), and ``tau = lambda'`` for ``q = 1``."""
    if q == 1.0:
        return threshold
    return (threshold * 2.0 * (1.0 - q) / (2.0 - q)) ** (2.0 - q) / (2.0 * (1.0 - q))


def universal_strength(data: IsoconData, q: float = 1.0) -> float:
    """``lambda`` of (2) whose threshold on ``||delta_i|| / s_i`` is ``sqrt(K) + sqrt(2 log N)``,
    over the ``n`` measured concentrations (module docstring)."""
    K, N = data.altered.shape
    return _threshold_to_strength(float(np.sqrt(K) + np.sqrt(2.0 * np.log(N))), q) / (N * (K + 1))


def _penalty_value(delta, s, q):
    return jnp.sum((jnp.linalg.norm(delta, axis=-2) / s) ** q)


@eqx.filter_jit
def _local_linear_approximation(A, b, penalty, x0, s, q, n_reweight, eps=1e-3):
    """``n_reweight`` weighted group lassos from ``x0`` (weights from the previous solution), and
    the value of objective (2) at the end.  ``jit``-ted once; ``vmap``-ped over starts."""
    K, N = (x0.shape[0] - s.shape[0]) // (s.shape[0] + 1), s.shape[0]
    zeros = jnp.zeros(N + K)

    def weights(x):
        norm = jnp.linalg.norm(x[: K * N].reshape(K, N), axis=0) / s
        return jnp.concatenate([q * (norm + eps) ** (q - 1.0) / s, zeros])

    def step(_, x):
        weighted = eqx.tree_at(lambda p: p.weights, penalty, weights(x))
        return ji.sparse.penalised_least_squares(A, b, weighted, fit_intercept=False, init=x, tol=1e-9).coef

    x = jax.lax.fori_loop(0, n_reweight, step, x0)
    loss = 0.5 * jnp.mean((b - A @ x) ** 2)
    return x, loss + penalty.strength * _penalty_value(x[: K * N].reshape(K, N), s, q)


def _starts(data: IsoconData) -> np.ndarray:
    """One start per element ``j``, in the reference frame where ``j`` is immobile:
    ``rho_k = -log(C^k_j / C^0_j)``, ``theta = log C^0``, ``delta`` from (1)."""
    K, N = data.altered.shape
    theta = np.log(data.reference)
    log_ratio = np.log(data.altered) - theta                          # (K, N) = delta - rho
    out = []
    for j in range(N):
        rho = -log_ratio[:, j]
        delta = log_ratio + rho[:, None]
        out.append(np.concatenate([delta.ravel(), theta, rho]))
    return np.asarray(out)


def _fit_strengths(data: IsoconData, q: float, strengths, n_reweight: int):
    """Objective (2) minimised at each strength from every start; the best start per strength."""
    A, b, groups = _linear_system(data)
    K, N = data.altered.shape
    s = jnp.asarray(data.relative_error)
    base = ji.sparse.GroupL1(1.0, groups, np.concatenate([1.0 / np.asarray(data.relative_error), np.zeros(N + K)]))
    starts = jnp.asarray(_starts(data))
    A, b = jnp.asarray(A), jnp.asarray(b)

    def at(lam):
        penalty = base.with_strength(lam)
        xs, objectives = jax.vmap(lambda x0: _local_linear_approximation(A, b, penalty, x0, s, q, n_reweight))(starts)
        return xs[jnp.argmin(objectives)]

    return np.asarray(jax.lax.map(at, jnp.asarray(strengths, float)))


def _immobile_set(data: IsoconData, x, threshold) -> np.ndarray:
    K, N = data.altered.shape
    return np.linalg.norm(x[: K * N].reshape(K, N), axis=0) <= threshold


def least_squares_isocon(data: IsoconData, immobile) -> tuple[np.ndarray, np.ndarray]:
    """Mass ratios ``r_k`` ``(K,)`` and log transfers ``delta`` ``(K, N)`` by weighted least
    squares of (1) with ``delta = 0`` for the given immobile elements and free for the
    others (the unpenalised refit on a selected set that removes the shrinkage of the
    penalty: the "relaxed" estimate of Meinshausen 2007, Comput. Stat. Data Anal. 52, 374)."""
    mask = _mask(data, immobile)
    if not mask.any():
        raise ValueError("the isocon needs at least one immobile element")
    A, b, _ = _linear_system(data)
    K, N = data.altered.shape
    free = np.concatenate([np.tile(~mask, K), np.ones(N + K, bool)])
    x = np.zeros(A.shape[1])
    x[free] = np.linalg.lstsq(A[:, free], b, rcond=None)[0]
    return np.exp(x[K * N + N:]), x[: K * N].reshape(K, N)


def _estimate(data: IsoconData, x, strength, threshold) -> SparseIsocon:
    immobile = _immobile_set(data, x, threshold)
    ratio, delta = least_squares_isocon(data, [e for e, m in zip(data.elements, immobile) if m])
    return SparseIsocon(ratio, delta, immobile, float(strength))


def _check_q(q):
    if not 0.0 < q <= 1.0:
        raise ValueError(f"the sparsity exponent q must lie in (0, 1], got {q}")


def sparse_isocon(data: IsoconData, q: float = 0.5, strength="universal", n_reweight: int = 10,
                  threshold: float = 1e-8) -> SparseIsocon:
    """Minimise objective (2) (module docstring) with sparsity exponent ``q`` in (0, 1].

    For ``q < 1`` the objective is not convex: it is minimised from ``N`` starts, one per
    reference frame in which one element is immobile (:func:`_starts`), each by ``n_reweight``
    local-linear-approximation steps, and the start of least objective is kept.

    Args:
        data: the compositions.
        q: sparsity exponent: 1 is the group lasso, smaller is closer to counting the
            mobile elements (less shrinkage of large transfers, and the immobile frame is
            found even when the immobile elements are a minority).
        strength: ``lambda``, or ``"universal"`` (:func:`universal_strength`).
        n_reweight: local-linear-approximation steps (1 suffices for ``q = 1``).
        threshold: a group whose ``||delta_i||`` is below this is immobile.
    """
    _check_q(q)
    lam = universal_strength(data, q) if strength == "universal" else float(strength)
    if not np.isfinite(lam) or lam < 0:
        raise ValueError(f"strength must be 'universal' or a number >= 0, got {strength!r}")
    x = _fit_strengths(data, q, [lam], n_reweight if q < 1.0 else 1)[0]
    return _estimate(data, x, lam, threshold)


def candidate_immobile_sets(data: IsoconData, q: float = 0.5, n_strengths: int = 16, span: float = 30.0,
                            min_immobile: int = 2, n_reweight: int = 10) -> list[tuple[str, ...]]:
    """The distinct immobile sets of :func:`sparse_isocon` over ``n_strengths`` strengths from
    ``span`` times the universal strength down to ``1/span`` of it, largest set first; sets
    with fewer than ``min_immobile`` elements are left out."""
    _check_q(q)
    lam = universal_strength(data, q)
    strengths = np.geomspace(lam * span, lam / span, n_strengths)
    out = []
    for x in _fit_strengths(data, q, strengths, n_reweight if q < 1.0 else 1):
        chosen = tuple(e for e, m in zip(data.elements, _immobile_set(data, x, 1e-8)) if m)
        if len(chosen) >= min_immobile and chosen not in out:
            out.append(chosen)
    return out


# -- the Bayesian model per immobile set ---------------------------------------------------------
class IsoconForward(eqx.Module):
    """Equation (1): predicted ``log C``, ``(K + 1, N)`` (reference row first), from
    ``log_reference`` (``theta``, ``(N,)``), ``log_mass_ratio`` (``rho``, ``(K,)``) and
    ``log_transfer`` (``delta`` of the mobile elements, ``(K, M)``)."""

    mobile: tuple = eqx.field(static=True)
    n_elements: int = eqx.field(static=True)

    def log_transfer(self, params):
        """``delta`` of every element, ``(..., K, N)`` (zeros for the immobile ones)."""
        rho = jnp.asarray(params["log_mass_ratio"])
        full = jnp.zeros(rho.shape + (self.n_elements,))
        if self.mobile:
            full = full.at[..., jnp.asarray(self.mobile)].set(params["log_transfer"])
        return full

    def __call__(self, params):
        theta = params["log_reference"]
        altered = theta[None, :] + self.log_transfer(params) - params["log_mass_ratio"][:, None]
        return jnp.vstack([theta[None, :], altered])


def isocon_model(data: IsoconData, immobile, transfer_scale: float = 1.0, mass_scale: float = 0.5) -> ji.Model:
    """The linear-Gaussian model of equation (1) with the given immobile set."""
    mask = _mask(data, immobile)
    K, N = data.altered.shape
    mobile = tuple(int(i) for i in np.flatnonzero(~mask))
    priors = {"log_reference": ji.priors.Normal(0.0, 10.0, shape=N),
              "log_mass_ratio": ji.priors.Normal(0.0, mass_scale, shape=K)}
    if mobile:
        priors["log_transfer"] = ji.priors.Normal(0.0, transfer_scale, shape=(K, len(mobile)))
    sigma = np.broadcast_to(np.asarray(data.relative_error), (K + 1, N)).copy()
    return ji.Model(IsoconForward(mobile, N), priors, ji.likelihoods.Normal(sigma))


def _model_name(immobile) -> str:
    return "immobile: " + ",".join(immobile)


def models(data: Dataset, immobile=None, q: float = 0.5, transfer_scale: float = 1.0,
           n_strengths: int = 24) -> dict[str, ji.Model]:
    """One model per candidate immobile set from the sparse path
    (:func:`candidate_immobile_sets`), plus a hand-picked set (``immobile``: names, or one
    comma-separated string, e.g. ``--option immobile=TiO2,Al2O3,Zr``)."""
    iso = data.x
    sets = candidate_immobile_sets(iso, q, n_strengths)
    if immobile is not None:
        given = tuple(e.strip() for e in immobile.split(",")) if isinstance(immobile, str) else tuple(immobile)
        _mask(iso, given)
        given = tuple(e for e in iso.elements if e in given)       # the data's order
        if given not in sets:
            sets.append(given)
    return {_model_name(s): isocon_model(iso, s, transfer_scale) for s in sets}


def fit_options(data: Dataset) -> dict:
    return {"n_starts": 4}


# -- figures ------------------------------------------------------------------------------------
def _immobile_of(name: str) -> tuple[str, ...]:
    return tuple(name.removeprefix("immobile: ").split(","))


def figures(selection, data: Dataset, out_dir, n_draws: int = 400) -> list[Path]:
    """Mass transfer chart (relative gain/loss of every element per sample, 2-sd bars, immobile
    elements shaded), Grant's isocon diagram in ratio form, and the free energy per candidate set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iso = data.x
    out_dir = Path(out_dir)
    name = selection.selected
    result = selection.results[name]
    forward = selection.posteriors[name].model.forward
    if result.sample_dims == 2:
        params = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:]) for k, v in result.params.items()}
    else:
        params = result.laplace.sample(jax.random.key(0), n_draws=n_draws).params
        params = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:]) for k, v in params.items()}
    delta = np.asarray(forward.log_transfer(params))                  # (draws, K, N)
    relative = 100.0 * (np.exp(delta) - 1.0)                          # dC/C0 in %
    ratio = np.exp(np.asarray(params["log_mass_ratio"]))
    K, N = iso.altered.shape
    immobile = np.isin(iso.elements, _immobile_of(name))
    written = []

    fig, ax = plt.subplots(figsize=(max(8, 0.6 * N), 4.5))
    width = 0.8 / K
    x = np.arange(N)
    for k in range(K):
        ax.bar(x + (k - (K - 1) / 2) * width, relative[:, k].mean(0), width, yerr=2 * relative[:, k].std(0),
               label=f"{iso.samples[k]} (M/M0 = {ratio[:, k].mean():.3f} ± {ratio[:, k].std():.3f})", capsize=1.5)
    for i in np.flatnonzero(immobile):
        ax.axvspan(i - 0.45, i + 0.45, color="0.9", zorder=0)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_yscale("symlog", linthresh=10)
    ax.set_xticks(x, iso.elements, rotation=45)
    ax.set_ylabel("mass transfer dC/C0 (%)")
    ax.set_title(f"sparse isocon: selected {name} (shaded)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "sparse_isocon_transfers.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    # Grant's isocon in ratio form: C^k_i / C^0_i per element; the isocon is the line 1/r_k,
    # on which the immobile elements lie (points above it gained mass, below it lost)
    fig, ax = plt.subplots(figsize=(max(8, 0.6 * N), 4.5))
    for k in range(K):
        offset = (k - (K - 1) / 2) * 0.8 / K
        measured = iso.altered[k] / iso.reference
        colour = f"C{k}"
        ax.plot(x[immobile] + offset, measured[immobile], "s", color=colour, ms=5)
        ax.plot(x[~immobile] + offset, measured[~immobile], "o", color=colour, ms=4, mfc="none")
        ax.axhline(1.0 / ratio[:, k].mean(), color=colour, lw=0.8,
                   label=f"{iso.samples[k]}: isocon slope M0/M = {1 / ratio[:, k].mean():.3f}")
    for i in np.flatnonzero(immobile):
        ax.axvspan(i - 0.45, i + 0.45, color="0.9", zorder=0)
    ax.set_yscale("log")
    ax.set_xticks(x, iso.elements, rotation=45)
    ax.set_ylabel("C / C0 (altered / reference)")
    ax.set_title("isocon diagram, ratio form (squares: immobile; lines: isocons)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "sparse_isocon_diagram.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    names = list(selection.results)
    free = np.array([float(selection.results[n].free_energy) for n in names])
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    ax.barh(np.arange(len(names)), free - free.min(), color=["C3" if n == name else "C0" for n in names])
    ax.set_yticks(np.arange(len(names)), [", ".join(_immobile_of(n)) for n in names], fontsize=7)
    ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel("F - F_min (nats)")
    ax.set_title("free energy per candidate immobile set")
    fig.tight_layout()
    path = out_dir / "sparse_isocon_free_energy.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


problem = Problem(
    name="sparse-isocon",
    description="mass change and element transfer of altered rocks, immobile elements found by a group-sparse "
                "isocon (Kuwatani et al. 2020; Grant 1986)",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    fit_options=fit_options,
)
