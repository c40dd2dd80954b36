"""Inference engines.  Each sees only a :class:`~jaxinv.Posterior`."""

from . import diagnostics, evidence, replica_exchange, smc
from .evidence import free_energy
from .laplace import Laplace, laplace
from .map import map_estimate
from .mcmc import sample_hmc
from .replica_exchange import sample_remc
from .sample import sample
from .smc import sample_smc

__all__ = [
    "Laplace",
    "diagnostics",
    "evidence",
    "free_energy",
    "laplace",
    "map_estimate",
    "replica_exchange",
    "sample",
    "sample_hmc",
    "sample_remc",
    "sample_smc",
    "smc",
]
