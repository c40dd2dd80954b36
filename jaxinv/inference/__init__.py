"""Inference engines.  Each sees only a :class:`~jaxinv.Posterior`."""

from .laplace import Laplace, laplace
from .map import map_estimate
from .mcmc import sample_hmc
from .sample import sample

__all__ = ["Laplace", "laplace", "map_estimate", "sample", "sample_hmc"]
