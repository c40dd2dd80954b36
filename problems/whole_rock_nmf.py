"""Whole-rock chemistry of metamorphic rocks by non-negative matrix factorisation and k-means.

Source: Yoshida, K., Kuwatani, T., Hirajima, T., Iwamori, H. & Akaho, S. (2018), "Progressive
evolution of whole-rock composition during metamorphism revealed by multivariate statistical
analyses", J. Metamorph. Geol. 36, 41-54.  From its abstract: 296 metapelites of the Sanbagawa
belt (central Shikoku), 14 elements (Si, Ti, Al, Fe, Mn, Mg, Ca, Na, K, P, Rb, Sr, Zr, Ba);
k-means gave 5 clusters and NMF 4 end-members, which separate the variation of the protoliths
from a component that grows with metamorphic grade (SiO2 and Na2O fall with grade; the
grade end-member is close to garnet in composition).  Only the abstract and summaries could be
read while this module was written: the preprocessing and the choices of rank and cluster
number below are this module's, not transcriptions.

Model.  A sample's composition (row of ``X``, ``n_samples x 14``) is a non-negative mixture of
end-member compositions (rows of ``H``) with loadings ``W >= 0``::

    X ~ W H,            minimise (1/2) ||X D^-1 - W H'||_F^2,   H = H' D

where ``D = diag(mean of each element)`` puts wt% and ppm on one scale (each column of
``X D^-1`` has mean 1).  The factorisation is :func:`jaxinv.sparse.nmf` (HALS, best of
``n_starts`` random starts); the rank by element-wise cross-validation
(:func:`jaxinv.sparse.nmf_rank_cv`: held-out entries, one-standard-error rule).  End-members
are reported in the data's units, scaled so that their major oxides sum to 100 wt%, and the
loadings as fractions of each sample (rows summing to one).  The samples are grouped by
k-means (:func:`jaxinv.clustering.kmeans`, k-means++ seeding) on those fractions.

The embedded data are synthetic with known truth (:func:`simulate`): three protolith
end-members (psammitic, pelitic, mafic volcaniclastic) mixed at random and a garnet-like
component whose share grows with the metamorphic zone, plus 3 % analytical noise.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import jax
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.problem import read_labelled_table

DATA_FILE = "synthetic_metapelites.csv"
DEFAULT_SEED = 2018
ELEMENTS = ("SiO2", "TiO2", "Al2O3", "FeO*", "MnO", "MgO", "CaO", "Na2O", "K2O", "P2O5", "Rb", "Sr", "Zr", "Ba")
UNITS = ("wt%",) * 10 + ("ppm",) * 4
MAJORS = slice(0, 10)
# end-member compositions (wt% oxides, ppm traces); the first three are protoliths
END_MEMBERS = {
    "psammitic": (80.0, 0.3, 9.0, 2.0, 0.03, 0.8, 1.0, 2.8, 1.5, 0.06, 50.0, 120.0, 250.0, 300.0),
    "pelitic": (58.0, 0.9, 20.0, 7.0, 0.08, 2.5, 0.6, 1.2, 4.2, 0.15, 180.0, 90.0, 160.0, 700.0),
    "mafic volcaniclastic": (49.0, 1.8, 15.0, 11.0, 0.18, 7.0, 9.0, 2.5, 0.4, 0.2, 10.0, 250.0, 110.0, 100.0),
    "garnet-like (grade)": (37.0, 0.1, 21.0, 30.0, 3.0, 3.0, 5.0, 0.05, 0.05, 0.05, 1.0, 5.0, 20.0, 10.0),
}
ZONES = ("chlorite", "garnet", "albite-biotite", "oligoclase-biotite")
GRADE_SHARE_PER_ZONE = 0.05        # mass fraction of the grade component added per zone
NOISE = 0.03                       # relative analytical error


@dataclass(frozen=True)
class WholeRockData:
    """Whole-rock compositions.

    Attributes:
        elements: names, ``(E,)``; units: ``(E,)``.
        samples: names, ``(n,)``.
        compositions: ``(n, E)``, positive.
        zone: metamorphic zone index per sample (0 = lowest), or ``None``.
    """

    elements: tuple
    units: tuple
    samples: tuple
    compositions: np.ndarray
    zone: np.ndarray | None = None

    def __post_init__(self):
        X = np.asarray(self.compositions, float)
        if X.ndim != 2 or X.shape[1] != len(self.elements) or X.shape[0] != len(self.samples):
            raise ValueError(f"compositions must be (samples, elements) = ({len(self.samples)}, "
                             f"{len(self.elements)}), got {X.shape}")
        if X.shape[0] < 10:
            raise ValueError(f"need at least 10 samples for a factorisation, got {X.shape[0]}")
        if not np.all(np.isfinite(X)) or np.any(X < 0):
            raise ValueError("compositions must be finite and non-negative")


def simulate(key, n_samples: int = 240) -> tuple[WholeRockData, dict]:
    """Synthetic metapelites and their truth: protolith fractions ``~ Dirichlet(0.4, 0.4, 0.4)``,
    a grade component of mass fraction ``0.05 x zone + N(0, 0.015^2)`` (clipped at 0), closure,
    and log-normal noise of 3 %."""
    k_zone, k_mix, k_grade, k_noise = jax.random.split(key, 4)
    zone = np.asarray(jax.random.randint(k_zone, (n_samples,), 0, len(ZONES)))
    protolith = np.asarray(jax.random.dirichlet(k_mix, np.full(3, 0.4), (n_samples,)))
    grade = np.maximum(GRADE_SHARE_PER_ZONE * zone + 0.015 * np.asarray(jax.random.normal(k_grade, (n_samples,))), 0.0)
    loadings = np.hstack([protolith * (1.0 - grade)[:, None], grade[:, None]])
    H = np.asarray(list(END_MEMBERS.values()))
    X = loadings @ H * np.exp(NOISE * np.asarray(jax.random.normal(k_noise, (n_samples, len(ELEMENTS)))))
    data = WholeRockData(ELEMENTS, UNITS, tuple(f"S{i + 1:03d}" for i in range(n_samples)), X, zone)
    return data, {"end_members": H, "loadings": loadings, "end_member_names": list(END_MEMBERS)}


def write_default_data(path) -> None:
    data, _ = simulate(jax.random.key(DEFAULT_SEED))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample", "zone", *data.elements])
        for name, z, row in zip(data.samples, data.zone, data.compositions):
            w.writerow([name, int(z), *(f"{v:.5g}" for v in row)])


def load_data(path: Path) -> Dataset:
    """A CSV with a header ``sample,[zone,]<element>,...`` and one row per sample (the optional
    ``zone`` column: an integer metamorphic zone, lowest grade 0; empty where unknown)."""
    path = Path(path)
    first_line = next((line for line in (path.read_text().splitlines() if path.is_file() else [])
                       if line.strip() and not line.lstrip().startswith("#")), "")
    header = [c.strip().lower() for c in first_line.split(",")]
    has_zone = len(header) > 1 and header[1] == "zone"
    table = read_labelled_table(path, label_columns=2 if has_zone else 1)
    elements = tuple(table.header[2 if has_zone else 1:])
    names = [label[0] for label in table.labels]
    X = table.values
    zone = None
    if has_zone:
        cells = [label[1] for label in table.labels]
        try:
            zones = [int(c) for c in cells if c]
        except ValueError:
            raise ValueError(f"{path}: the zone column must hold integers (or be empty)") from None
        if len(zones) == len(cells) and min(zones) >= 0:
            zone = np.asarray(zones)
        elif zones:
            raise ValueError(f"{path}: {len(cells) - len(zones)} sample(s) have no zone; give every sample a "
                             "non-negative zone, or leave the column empty for all")
    units = tuple("ppm" if e in ("Rb", "Sr", "Zr", "Ba", "Y", "Nb", "Th", "Pb", "Ni", "Cr", "V") else "wt%" for e in elements)
    data = WholeRockData(elements, units, tuple(names), np.asarray(X), zone)
    return Dataset(x=data, y=data.compositions, meta={"source": str(path)})


def default_data() -> Dataset:
    """The embedded synthetic metapelites (truth from :func:`simulate` with ``DEFAULT_SEED``)."""
    data = load_data(Path(str(files("problems") / "data" / "whole_rock_nmf" / DATA_FILE)))
    return Dataset(x=data.x, y=data.y, meta={"source": f"synthetic metapelites (seed {DEFAULT_SEED})",
                                             "truth_seed": DEFAULT_SEED})


@dataclass(frozen=True)
class Decomposition:
    """End-members, loadings and clusters of a whole-rock dataset.

    Attributes:
        rank_selection: the cross-validation of the rank.
        rank: the rank used.
        end_members: ``(rank, E)`` in the data's units, majors summing to 100 wt%.
        fractions: ``(n, rank)``, each sample's share of every end-member (rows sum to 1).
        clusters: k-means cluster of each sample.
        cluster_centres: ``(n_clusters, rank)`` in fractions.
        loss: the NMF loss of the scaled data.
    """

    rank_selection: object
    rank: int
    end_members: np.ndarray
    fractions: np.ndarray
    clusters: np.ndarray
    cluster_centres: np.ndarray
    loss: float


def decompose(data: WholeRockData, key, ranks=(2, 3, 4, 5, 6), rank: int | None = None, n_clusters: int = 4,
              n_starts: int = 8, n_folds: int = 5) -> Decomposition:
    """NMF of the mean-scaled compositions with the rank by cross-validation (the one-standard-
    error rule) unless ``rank`` is given, then k-means on the end-member fractions."""
    X = np.asarray(data.compositions, float)
    scale = X.mean(axis=0)
    if np.any(scale <= 0):
        raise ValueError(f"element(s) {[e for e, s in zip(data.elements, scale) if s <= 0]} are zero in every sample")
    Xs = X / scale
    k_cv, k_fit, k_means = jax.random.split(key, 3)
    selection = ji.sparse.nmf_rank_cv(Xs, list(ranks), k_cv, n_folds=n_folds)
    k = int(rank) if rank is not None else selection.rank_1se
    fits = [ji.sparse.nmf(Xs, k, kk, solver="hals", tol=1e-10, max_iter=5000)
            for kk in jax.random.split(k_fit, n_starts)]
    best = min(fits, key=lambda f: float(f.loss))
    H = np.asarray(best.H) * scale                                     # data units
    majors = [i for i, u in enumerate(data.units) if u == "wt%"] or list(range(len(data.elements)))
    norm = H[:, majors].sum(axis=1) / 100.0
    H = H / norm[:, None]
    W = np.asarray(best.W) * norm[None, :]
    fractions = W / W.sum(axis=1, keepdims=True)
    clustering = ji.clustering.kmeans(fractions, n_clusters, key=k_means)
    return Decomposition(selection, k, H, fractions, np.asarray(clustering.labels), np.asarray(clustering.centers),
                         float(best.loss))


def match_end_members(estimated, reference) -> tuple[tuple[int, ...], np.ndarray]:
    """The assignment of estimated to reference end-members of largest total cosine similarity
    (all permutations: ranks are small), and the similarities of the matched pairs.  Rows are
    compared after scaling every element by the reference's mean, so that ppm and wt% weigh alike."""
    scale = np.asarray(reference).mean(axis=0)
    a, b = np.asarray(estimated) / scale, np.asarray(reference) / scale
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    cos = a @ b.T
    if cos.shape[0] > cos.shape[1]:
        raise ValueError(f"more estimated ({cos.shape[0]}) than reference ({cos.shape[1]}) end-members; "
                         "match the other way round")
    k = cos.shape[0]
    best = max(itertools.permutations(range(cos.shape[1]), k), key=lambda p: sum(cos[i, p[i]] for i in range(k)))
    return best, np.array([cos[i, best[i]] for i in range(k)])


def _average_ranks(x) -> np.ndarray:
    """Ranks with ties given their average rank (as Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    values, inverse = np.unique(x, return_inverse=True)
    return (np.bincount(inverse, weights=ranks) / np.bincount(inverse))[inverse]


def grade_component(dec: Decomposition, zone) -> tuple[int, float]:
    """The end-member whose share correlates best (Spearman) with the metamorphic zone."""
    rank_z = _average_ranks(np.asarray(zone, float))
    rhos = [float(np.corrcoef(_average_ranks(dec.fractions[:, j]), rank_z)[0, 1]) for j in range(dec.rank)]
    j = int(np.argmax(rhos))
    return j, rhos[j]


def figures(dec: Decomposition, data: WholeRockData, out_dir) -> list[Path]:
    """End-member compositions (normalised to the mean sample), sample fractions by zone or
    cluster, and the cross-validated rank curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    mean = np.asarray(data.compositions).mean(axis=0)
    fig, ax = plt.subplots(figsize=(9, 4))
    x = np.arange(len(data.elements))
    width = 0.8 / dec.rank
    for j in range(dec.rank):
        ax.bar(x + (j - (dec.rank - 1) / 2) * width, dec.end_members[j] / mean, width, label=f"end-member {j + 1}")
    ax.set_yscale("log")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set_xticks(x, data.elements, rotation=45)
    ax.set_ylabel("end-member / mean sample")
    ax.set_title(f"NMF end-members (rank {dec.rank}, chosen by cross-validation)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "whole_rock_end_members.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    order = np.lexsort((dec.fractions[:, 0], dec.clusters if data.zone is None else data.zone))
    bottom = np.zeros(len(order))
    for j in range(dec.rank):
        axes[0].bar(np.arange(len(order)), dec.fractions[order, j], 1.0, bottom=bottom, label=f"end-member {j + 1}")
        bottom += dec.fractions[order, j]
    axes[0].set_xlabel("sample (sorted by " + ("zone" if data.zone is not None else "cluster") + ")")
    axes[0].set_ylabel("fraction")
    axes[0].legend(fontsize=7)
    if data.zone is not None:
        j, rho = grade_component(dec, data.zone)
        groups = [dec.fractions[data.zone == z, j] for z in np.unique(data.zone)]
        axes[1].boxplot(groups)
        axes[1].set_xticks(np.arange(1, len(groups) + 1), [str(int(z)) for z in np.unique(data.zone)])
        axes[1].set_xlabel("metamorphic zone")
        axes[1].set_ylabel(f"fraction of end-member {j + 1}")
        axes[1].set_title(f"grade component (Spearman rho = {rho:.2f})")
    else:
        for c in np.unique(dec.clusters):
            sel = dec.clusters == c
            axes[1].scatter(dec.fractions[sel, 0], dec.fractions[sel, 1], s=8, label=f"cluster {c + 1}")
        axes[1].set_xlabel("fraction of end-member 1")
        axes[1].set_ylabel("fraction of end-member 2")
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    path = out_dir / "whole_rock_loadings.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)

    sel = dec.rank_selection
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(sel.ranks, sel.mean_error, yerr=sel.standard_error, marker="o", capsize=3)
    ax.axvline(dec.rank, color="C3", ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("rank")
    ax.set_ylabel("held-out error per entry")
    ax.set_title("NMF rank by cross-validation")
    fig.tight_layout()
    path = out_dir / "whole_rock_rank_cv.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    written.append(path)
    return written


def run(data: Dataset, out_dir, key, rank: int | None = None, ranks=(2, 3, 4, 5, 6), n_clusters: int = 4,
        n_starts: int = 8) -> dict:
    """``jaxinv run whole-rock-nmf``: decomposition, figures and a summary (options: a fixed
    ``rank``, the ``ranks`` cross-validated, ``n_clusters``, ``n_starts``)."""
    rock = data.x
    dec = decompose(rock, key, ranks=tuple(np.atleast_1d(ranks)), rank=rank, n_clusters=n_clusters,
                    n_starts=n_starts)
    written = figures(dec, rock, out_dir) if out_dir is not None else []
    lines = ["rank  held-out error (mean ± se)"]
    for r, m, s in zip(dec.rank_selection.ranks, dec.rank_selection.mean_error, dec.rank_selection.standard_error):
        lines.append(f"{int(r):4d}  {m:.4g} ± {s:.2g}" + ("   <- chosen" if int(r) == dec.rank else ""))
    lines.append("end-members (" + ", ".join(f"{e} [{u}]" for e, u in zip(rock.elements, rock.units)) + "):")
    for j, h in enumerate(dec.end_members):
        lines.append(f"  {j + 1}: " + " ".join(f"{v:.3g}" for v in h))
    summary = {"rank": dec.rank, "ranks": dec.rank_selection.ranks.tolist(),
               "cv_error": dec.rank_selection.mean_error.tolist(),
               "cv_standard_error": dec.rank_selection.standard_error.tolist(),
               "elements": list(rock.elements), "end_members": dec.end_members.tolist(),
               "cluster_sizes": np.bincount(dec.clusters, minlength=n_clusters).tolist()}
    if rock.zone is not None:
        j, rho = grade_component(dec, rock.zone)
        summary["grade_component"] = {"end_member": j + 1, "spearman_rho": rho}
        lines.append(f"grade component: end-member {j + 1} (Spearman rho with zone = {rho:.3f})")
    summary["report"] = "\n".join(lines)
    summary["figures"] = [str(p) for p in written]
    return summary


problem = Problem(
    name="whole-rock-nmf",
    description="end-members and metamorphic-grade component of whole-rock chemistry by NMF + k-means "
                "(Yoshida et al. 2018)",
    models=None,
    default_data=default_data,
    load_data=load_data,
    run=run,
)
