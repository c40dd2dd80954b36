"""Inference engines.  Each sees only a :class:`~jaxinv.Posterior`."""

from .laplace import Laplace, laplace
from .map import map_estimate

__all__ = ["Laplace", "laplace", "map_estimate"]
