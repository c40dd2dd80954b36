"""``ji.sample``: posterior draws by the engine named in ``method``."""

from __future__ import annotations

from ..model import Posterior
from ..results import Result
from .map import map_estimate
from .mcmc import sample_hmc
from .replica_exchange import sample_remc
from .smc import sample_smc

__all__ = ["sample", "METHODS"]

METHODS = ("nuts", "hmc", "smc", "remc", "laplace")


def sample(post: Posterior, key, method: str = "nuts", **kwargs) -> Result:
    """Posterior draws as a :class:`~jaxinv.Result` of shape ``(chains, draws, ...)``.

    Args:
        post: the posterior.
        key: PRNG key.
        method: ``"nuts"`` / ``"hmc"`` (:func:`~jaxinv.inference.mcmc.sample_hmc`),
            ``"smc"`` (:func:`~jaxinv.inference.smc.sample_smc`, also the log evidence),
            ``"remc"`` (:func:`~jaxinv.inference.replica_exchange.sample_remc`, also the
            log evidence), or ``"laplace"`` (multi-start MAP, then ``n_draws`` draws
            from the Laplace approximation; ``n_starts`` passed to
            :func:`~jaxinv.map_estimate`).  Keyword arguments go to the engine.
    """
    if method in ("nuts", "hmc"):
        return sample_hmc(post, key, method, **kwargs)
    if method == "smc":
        return sample_smc(post, key, **kwargs)
    if method == "remc":
        return sample_remc(post, key, **kwargs)
    if method == "laplace":
        import jax

        fit_key, draw_key = jax.random.split(key)
        fit = map_estimate(post, fit_key, n_starts=kwargs.pop("n_starts", 32))
        return fit.laplace.sample(draw_key, **kwargs)
    raise ValueError(f"unknown sampling method {method!r}; available: {METHODS}")
