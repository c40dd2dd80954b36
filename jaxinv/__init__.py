"""jaxinv: JAX-native Bayesian measurement.

Differentiable forward models, a generic layer that turns them into posterior
energies, and inference engines that give parameters with uncertainty and the
Bayesian free energy for model selection.  See ``docs/`` and DESIGN.md.
"""

from . import _config  # noqa: F401  (float64 by default; must run before any array is made)
from . import clustering, likelihoods, priors, sensitivity, sparse
from ._config import precision, set_precision
from .inference import (
    Laplace,
    StateSpaceModel,
    free_energy,
    gmrf_laplace,
    laplace,
    map_estimate,
    particle_filter,
    particle_smoother,
    sample,
    svi,
)
from .batching import BatchResult, BatchSelection, batch, load_batch
from .model import Model, Posterior
from .problem import Dataset, Problem
from .results import Result
from .selection import Selection, select

__version__ = "0.1.0"

__all__ = [
    "batch",
    "BatchResult",
    "BatchSelection",
    "load_batch",
    "clustering",
    "Dataset",
    "free_energy",
    "gmrf_laplace",
    "Laplace",
    "Problem",
    "Selection",
    "select",
    "Model",
    "Posterior",
    "Result",
    "StateSpaceModel",
    "laplace",
    "likelihoods",
    "map_estimate",
    "particle_filter",
    "particle_smoother",
    "precision",
    "priors",
    "sample",
    "sensitivity",
    "svi",
    "set_precision",
    "sparse",
]
