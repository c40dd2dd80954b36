"""Model selection by the Bayesian free energy ``F = -log p(y | M)``.

Posterior model probabilities under equal prior model weights are
``p(M_k | y) = exp(-F_k) / sum_j exp(-F_j)``; the selected model has the lowest F.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import jax
import numpy as np

from .inference.map import map_estimate
from .model import Model
from .results import Result

__all__ = ["Selection", "select"]


@dataclass(frozen=True)
class Selection:
    """Results of several models on one dataset, ranked by free energy.

    Attributes:
        results: ``{name: Result}``.
        n_components: ``{name: K}`` where the caller gave it (else ``None``).
    """

    results: dict[str, Result]
    n_components: dict[str, int | None] = field(default_factory=dict)

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
        """Name of the model with the lowest free energy."""
        f = self.free_energies
        finite = {k: v for k, v in f.items() if np.isfinite(v)}
        if not finite:
            raise ValueError("no model has a finite free energy (improper priors?)")
        return min(finite, key=finite.get)

    @property
    def table(self) -> list[dict]:
        """Rows: name, K, free energy, its standard error, posterior probability."""
        prob = self.probabilities
        return [
            {
                "name": k,
                "K": self.n_components.get(k),
                "free_energy": float(r.free_energy),
                "free_energy_se": float(r.free_energy_se),
                "probability": prob[k],
            }
            for k, r in self.results.items()
        ]


def select(
    models: dict[str, Model], y, key, method: str = "laplace", n_components=None, progress=None, **kwargs
) -> Selection:
    """Fit every model to ``y`` and compare their free energies.

    Args:
        models: ``{name: Model}``.
        y: the data.
        key: PRNG key (split across models).
        method: ``"laplace"`` -- multi-start MAP and the Laplace free energy.
        n_components: optional ``{name: K}`` for the table.
        progress: optional ``callable(name)`` called before each model is fitted.
        **kwargs: passed to the engine (e.g. ``n_starts``).
    """
    if method != "laplace":
        raise ValueError(f"unknown selection method {method!r}; available: 'laplace'")
    if not models:
        raise ValueError("select needs at least one model")
    keys = jax.random.split(key, len(models))
    results = {}
    for (name, model), k in zip(models.items(), keys):
        if progress is not None:
            progress(name)
        results[name] = map_estimate(model.condition(y), k, **kwargs)
    return Selection(results=results, n_components=dict(n_components or {}))
