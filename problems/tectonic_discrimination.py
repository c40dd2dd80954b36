"""Tectonic setting of basalts from their trace elements by sparse multinomial logistic regression.

Source: Ueki, K., Hino, H. & Kuwatani, T. (2018), "Geochemical discrimination and
characteristics of magmatic tectonic settings: a machine-learning-based approach", Geochem.
Geophys. Geosyst. 19, 1327-1347.  From its abstract: support vector machines, random forests
and sparse multinomial regression (SMR) on 24 elements and 5 isotope ratios of basalts from
eight settings; SMR is the interpretable one -- it says which elements select each setting and
gives each sample's membership probabilities.  Their compiled dataset carries no licence we
could confirm, so the embedded data here are synthetic (see below); a user's table in the same
format (:func:`load_data`) runs the same analysis.

Method.  Features are ``log10`` concentrations, standardised (mean 0, sd 1 per element), so that
the penalty treats elements alike.  :func:`jaxinv.sparse.cross_validate_classifier` fits the
L1-penalised multinomial logistic regression along a warm-started path of strengths and scores
each strength by K-fold held-out deviance and accuracy; the reported model is the sparsest one
within one standard error of the best deviance (``alpha_1se``), and an element "matters" for a
setting where its coefficient there is non-zero.

Embedded data (:func:`simulate`): four settings -- N-MORB, E-MORB, ocean-island basalt (OIB)
and arc basalt -- with class means at the reference compositions of Sun & McDonough (1989,
Geol. Soc. Spec. Publ. 42, 313-345; N-MORB and OIB as stored in pyrolite) and typical E-MORB and
island-arc basalt values (not from one source; ``problems/data/tectonic_discrimination/README.md``),
scattered by a shared degree-of-melting / fractionation factor (0.25 dex on the most
incompatible elements, less on the others) and independent 0.35 dex per element, so that the
settings overlap about as much as natural basalts do (held-out accuracy near 0.9).  Arc basalts carry the subduction signature
(Nb, Ta and Ti low against Th, La, Ba and Sr), OIB are enriched in every incompatible element,
E-MORB lie between N-MORB and OIB.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import jax
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.problem import read_labelled_table

DATA_FILE = "synthetic_basalts.csv"
DEFAULT_SEED = 2018
ELEMENTS = ("Rb", "Ba", "Th", "Nb", "Ta", "La", "Ce", "Sr", "Sm", "Zr", "Hf", "Ti", "Y", "Yb")
# class means, ppm
SETTINGS = {
    "N-MORB": (0.56, 6.3, 0.12, 2.33, 0.132, 2.5, 7.5, 90.0, 2.63, 74.0, 2.05, 7600.0, 28.0, 3.05),
    "E-MORB": (5.04, 57.0, 0.6, 8.3, 0.47, 6.3, 15.0, 155.0, 2.6, 73.0, 2.03, 6000.0, 22.0, 2.37),
    "OIB": (31.0, 350.0, 4.0, 48.0, 2.7, 37.0, 80.0, 660.0, 10.0, 280.0, 7.8, 17200.0, 29.0, 2.16),
    "arc basalt": (15.0, 250.0, 1.5, 2.0, 0.12, 8.0, 18.0, 400.0, 2.5, 70.0, 2.0, 5400.0, 22.0, 2.2),
}
# incompatibility (loading on the shared melting/fractionation factor)
LOADING = (1.0, 1.0, 1.0, 1.0, 1.0, 0.9, 0.85, 0.6, 0.6, 0.6, 0.6, 0.5, 0.3, 0.2)
SHARED_SD, ELEMENT_SD = 0.25, 0.35      # dex


@dataclass(frozen=True)
class BasaltData:
    """Trace-element concentrations (ppm) of basalts with their tectonic setting.

    Attributes:
        elements: ``(E,)``; settings: class names ``(C,)``.
        concentrations: ``(n, E)`` ppm, positive.
        labels: setting index per sample ``(n,)``.
    """

    elements: tuple
    settings: tuple
    concentrations: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        X = np.asarray(self.concentrations, float)
        if X.ndim != 2 or X.shape[1] != len(self.elements) or X.shape[0] != len(self.labels):
            raise ValueError(f"concentrations must be (samples, elements), got {X.shape} for {len(self.labels)} "
                             f"labels and {len(self.elements)} elements")
        if not np.all(np.isfinite(X)) or np.any(X <= 0):
            raise ValueError("concentrations must be positive and finite (the features are their logarithms)")
        counts = np.bincount(np.asarray(self.labels), minlength=len(self.settings))
        if len(self.settings) < 2 or np.any(counts < 5):
            raise ValueError(f"need at least 2 settings with 5 or more samples each, got "
                             f"{dict(zip(self.settings, counts.tolist()))}")

    @property
    def features(self) -> np.ndarray:
        """Standardised ``log10`` concentrations."""
        z = np.log10(self.concentrations)
        return (z - z.mean(axis=0)) / z.std(axis=0)


def simulate(key, n_per_setting: int = 100) -> BasaltData:
    """Synthetic basalts (module docstring)."""
    C, E = len(SETTINGS), len(ELEMENTS)
    k_shared, k_element = jax.random.split(key)
    mean = np.log10(np.asarray(list(SETTINGS.values())))
    labels = np.repeat(np.arange(C), n_per_setting)
    shared = SHARED_SD * np.asarray(jax.random.normal(k_shared, (labels.size, 1)))
    noise = ELEMENT_SD * np.asarray(jax.random.normal(k_element, (labels.size, E)))
    log_c = mean[labels] + shared * np.asarray(LOADING) + noise
    return BasaltData(ELEMENTS, tuple(SETTINGS), 10.0**log_c, labels)


def write_default_data(path) -> None:
    data = simulate(jax.random.key(DEFAULT_SEED))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["setting", *data.elements])
        for label, row in zip(data.labels, data.concentrations):
            w.writerow([data.settings[label], *(f"{v:.5g}" for v in row)])


def load_data(path: Path) -> Dataset:
    """A CSV with a header ``setting,<element>,...`` and one row per sample: the setting's name
    and concentrations (ppm, positive)."""
    table = read_labelled_table(path)
    header, names, X = table.header, [label[0] for label in table.labels], table.values
    settings = tuple(dict.fromkeys(names))
    labels = np.array([settings.index(n) for n in names])
    data = BasaltData(tuple(header[1:]), settings, np.asarray(X), labels)
    return Dataset(x=data, y=labels, meta={"source": str(path)})


def default_data() -> Dataset:
    data = load_data(Path(str(files("problems") / "data" / "tectonic_discrimination" / DATA_FILE)))
    return Dataset(x=data.x, y=data.y, meta={"source": f"synthetic basalts, 4 settings (seed {DEFAULT_SEED})"})


def discriminate(data: BasaltData, key, penalty: str = "l1", n_folds: int = 5, n_alphas: int = 30):
    """Cross-validated sparse multinomial logistic regression: the CV result, the index of
    ``alpha_1se`` on the path, the coefficients there ``(E, C)``, and the confusion matrix of the
    all-data fit at ``alpha_1se`` (rows = true setting, columns = predicted)."""
    X = data.features
    cv = ji.sparse.cross_validate_classifier(X, data.labels, key, n_folds=n_folds, n_alphas=n_alphas,
                                             penalty=penalty, n_classes=len(data.settings))
    index = int(np.argmin(np.abs(np.asarray(cv.alphas) - float(cv.alpha_1se))))
    B, b = np.asarray(cv.path[0][index]), np.asarray(cv.path[1][index])
    predicted = np.argmax(X @ B + b, axis=1)
    C = len(data.settings)
    confusion = np.zeros((C, C), int)
    np.add.at(confusion, (data.labels, predicted), 1)
    return cv, index, B, confusion


def figures(cv, index, B, data: BasaltData, out_dir) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    alphas = np.asarray(cv.alphas)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].errorbar(alphas, np.asarray(cv.mean_deviance), yerr=np.asarray(cv.standard_error), capsize=2)
    axes[0].set_xscale("log")
    axes[0].axvline(float(cv.alpha_1se), color="C3", ls=":", label="alpha_1se")
    axes[0].set_xlabel("alpha")
    axes[0].set_ylabel("held-out deviance per sample")
    ax2 = axes[0].twinx()
    ax2.plot(alphas, np.asarray(cv.mean_accuracy), "C2-", label="accuracy")
    ax2.set_ylabel("held-out accuracy", color="C2")
    axes[0].legend(fontsize=7)
    limit = np.max(np.abs(B)) or 1.0
    im = axes[1].imshow(B.T, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    axes[1].set_xticks(np.arange(len(data.elements)), data.elements, rotation=45)
    axes[1].set_yticks(np.arange(len(data.settings)), data.settings)
    axes[1].set_title(f"coefficients at alpha_1se ({int(cv.n_selected[index])} elements)")
    fig.colorbar(im, ax=axes[1])
    fig.tight_layout()
    path = out_dir / "tectonic_discrimination.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [path]


def run(data: Dataset, out_dir, key, penalty: str = "l1", n_folds: int = 5, n_alphas: int = 30) -> dict:
    """``jaxinv run tectonic-discrimination``: CV path, selected elements, confusion matrix, figure."""
    basalts = data.x
    cv, index, B, confusion = discriminate(basalts, key, penalty, n_folds, n_alphas)
    written = figures(cv, index, B, basalts, out_dir) if out_dir is not None else []
    matters = {s: [e for e, c in zip(basalts.elements, B[:, k]) if c != 0] for k, s in enumerate(basalts.settings)}
    best = int(np.argmin(np.asarray(cv.mean_deviance)))
    lines = [f"held-out accuracy {float(cv.mean_accuracy[index]):.3f} at alpha_1se = {float(cv.alpha_1se):.3g} "
             f"({int(cv.n_selected[index])} of {len(basalts.elements)} elements); "
             f"{float(cv.mean_accuracy[best]):.3f} at the least deviance"]
    for s in basalts.settings:
        k = basalts.settings.index(s)
        signed = [f"{e}{'+' if B[j, k] > 0 else '-'}" for j, e in enumerate(basalts.elements) if B[j, k] != 0]
        lines.append(f"  {s}: " + (" ".join(signed) or "(intercept only)"))
    lines.append("confusion (rows true, columns predicted): " + str(confusion.tolist()))
    return {"settings": list(basalts.settings), "elements": list(basalts.elements),
            "alpha_1se": float(cv.alpha_1se), "cv_accuracy": float(cv.mean_accuracy[index]),
            "cv_accuracy_best": float(cv.mean_accuracy[best]), "n_selected": int(cv.n_selected[index]),
            "coefficients": B.tolist(), "elements_that_matter": matters, "confusion": confusion.tolist(),
            "report": "\n".join(lines), "figures": [str(p) for p in written]}


problem = Problem(
    name="tectonic-discrimination",
    description="tectonic setting of basalts from trace elements by sparse multinomial logistic regression "
                "(Ueki et al. 2018)",
    models=None,
    default_data=default_data,
    load_data=load_data,
    run=run,
)
