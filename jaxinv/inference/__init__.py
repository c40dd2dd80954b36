"""Inference engines.  Each sees only a :class:`~jaxinv.Posterior`.

The function :func:`particle_smoother` takes the name of its module here; reach the
module by its dotted path (``from jaxinv.inference.particle_smoother import genealogy``).
"""

from . import diagnostics, evidence, replica_exchange, smc
from .evidence import free_energy
from .laplace import Laplace, laplace
from .latent_field import LatentField, gmrf_laplace
from .map import map_estimate
from .mcmc import sample_hmc
from .particle_smoother import StateSpaceModel, particle_filter, particle_smoother
from .replica_exchange import sample_remc
from .sample import sample
from .smc import sample_smc
from .svi import Variational, svi

__all__ = [
    "Laplace",
    "LatentField",
    "StateSpaceModel",
    "diagnostics",
    "evidence",
    "free_energy",
    "gmrf_laplace",
    "laplace",
    "map_estimate",
    "particle_filter",
    "particle_smoother",
    "replica_exchange",
    "sample",
    "sample_hmc",
    "sample_remc",
    "sample_smc",
    "smc",
    "svi",
    "Variational",
]
