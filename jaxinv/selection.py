"""Model selection by the Bayesian free energy ``F = -log p(y | M)``.

Posterior model probabilities under equal prior model weights are
``p(M_k | y) = exp(-F_k) / sum_j exp(-F_j)``; the selected model has the lowest F.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import jax
import numpy as np

from .model import Model, Posterior
from .results import Result

__all__ = ["Selection", "select", "caveats"]


def caveats(result: Result) -> list[str]:
    """Why a model's free energy may be unreliable, as short sentences (empty when there is
    no known reason): for a Laplace free energy, a mode at a prior bound (the Gaussian
    leaves the support) or a MAP search whose best start did not converge (the Gaussian is
    taken at a point that is not a mode: typically a nearly degenerate model, e.g. two
    relaxation components that the data cannot tell apart, whose optimum lies at infinity
    in the unconstrained space)."""
    out = []
    if result.laplace is not None and result.laplace.at_boundary:
        out.append(f"mode at the prior boundary of {', '.join(result.laplace.at_boundary)}")
    stats = result.stats or {}
    if result.method == "map" and "converged" in stats:
        converged = np.asarray(stats["converged"])  # per start, or the best start's (a batch row)
        if not bool(converged[int(stats["best"])] if "best" in stats and converged.ndim else converged):
            norm = f" (gradient norm {float(stats['gradient_norm']):.2g})" if "gradient_norm" in stats else ""
            out.append(f"MAP search did not converge{norm}")
    return out


@dataclass(frozen=True)
class Selection:
    """Results of several models on one dataset, ranked by free energy.

    Attributes:
        results: ``{name: Result}``.
        n_components: ``{name: K}`` where the caller gave it (else ``None``).
        posteriors: ``{name: Posterior}`` the results were computed from (for
            predictions and figures).
    """

    results: dict[str, Result]
    n_components: dict[str, int | None] = field(default_factory=dict)
    posteriors: dict[str, Posterior] = field(default_factory=dict)

    @property
    def free_energies(self) -> dict[str, float]:
        return {k: float(r.free_energy) for k, r in self.results.items()}

    @property
    def probabilities(self) -> dict[str, float]:
        """Posterior model probabilities (equal prior weights)."""
        names = list(self.results)
        f = np.array([self.free_energies[k] for k in names])
        ok = np.isfinite(f)
        p = np.zeros_like(f)
        if ok.any():
            w = np.exp(-(f[ok] - f[ok].min()))
            p[ok] = w / w.sum()
        return dict(zip(names, p.tolist()))

    @property
    def selected(self) -> str:
        """Name of the model with the lowest free energy (a single model is selected
        whatever its free energy, e.g. a NaN Laplace evidence before NUTS)."""
        f = self.free_energies
        if len(f) == 1:
            return next(iter(f))
        finite = {k: v for k, v in f.items() if np.isfinite(v)}
        if not finite:
            raise ValueError("no model has a finite free energy (improper priors?)")
        return min(finite, key=finite.get)

    @property
    def table(self) -> list[dict]:
        """Rows: name, K, free energy, its standard error, posterior probability, and
        ``caveats`` (:func:`caveats`: reasons the free energy may be unreliable)."""
        prob = self.probabilities
        return [
            {
                "name": k,
                "K": self.n_components.get(k),
                "free_energy": float(r.free_energy),
                "free_energy_se": float(r.free_energy_se),
                "probability": prob[k],
                "caveats": caveats(r),
            }
            for k, r in self.results.items()
        ]


def select(
    models: dict[str, Model], y, key, method: str = "laplace", n_components=None, on_model=None,
    checkpoint_dir=None, **kwargs
) -> Selection:
    """Fit every model to ``y`` and compare their free energies.

    Args:
        models: ``{name: Model}``.
        y: the data.
        key: PRNG key (split across models).
        method: free-energy estimator, one of
            :data:`jaxinv.inference.evidence.METHODS`: ``"laplace"`` (multi-start MAP
            and the Laplace free energy), ``"smc"``, ``"remc"`` (bridge sampling over the
            ladder; ``"remc_ti"``, ``"remc_stepping_stone"`` for the other estimators),
            ``"wbic"``, ``"analytic"`` (conjugate linear-Gaussian models).
        n_components: optional ``{name: K}`` for the table.
        on_model: optional ``callable(name)`` called before each model is fitted.
        checkpoint_dir: for the sampling estimators (``"smc"``, ``"remc*"``): one
            checkpoint file per model in this folder, so that a killed selection
            resumes where it stopped.
        **kwargs: passed to the engine (e.g. ``n_starts``, ``n_replicas``, ``progress``).
    """
    from .inference.evidence import METHODS, free_energy

    if method not in METHODS:
        raise ValueError(f"unknown selection method {method!r}; available: {METHODS}")
    if not models:
        raise ValueError("select needs at least one model")
    keys = jax.random.split(key, len(models))
    results, posteriors = {}, {}
    for (name, model), k in zip(models.items(), keys):
        if on_model is not None:
            on_model(name)
        posteriors[name] = model.condition(y)
        options = dict(kwargs)
        if checkpoint_dir is not None:
            options["checkpoint"] = Path(checkpoint_dir) / f"{_file_name(name)}.{method}.ckpt"
        results[name] = free_energy(posteriors[name], k, method=method, **options)
    return Selection(results=results, n_components=dict(n_components or {}), posteriors=posteriors)


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
