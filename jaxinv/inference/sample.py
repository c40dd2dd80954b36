"""``ji.sample``: posterior draws by the engine named in ``method``."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax

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
        fit_key, draw_key = jax.random.split(key)
        fit = map_estimate(post, fit_key, n_starts=kwargs.pop("n_starts", 32))
        return fit.laplace.sample(draw_key, **kwargs)
    raise ValueError(f"unknown sampling method {method!r}; available: {METHODS}")


def batch_adapter(post0: Posterior, method: str = "hmc", **kwargs):
    """``(trace, finish)`` of the engine named in ``method`` for :func:`jaxinv.batch`.
    The batch default is static-path ``"hmc"``: a fixed number of gradient evaluations per
    iteration keeps every vmapped lane busy (NUTS lanes wait for the deepest tree)."""
    from . import mcmc, replica_exchange, smc

    if method in ("nuts", "hmc"):
        return mcmc.batch_adapter(post0, method, **kwargs)
    if method == "smc":
        return smc.batch_adapter(post0, **kwargs)
    if method == "remc":
        return replica_exchange.batch_adapter(post0, **kwargs)
    if method == "laplace":
        return _laplace_batch_adapter(post0, **kwargs)
    raise ValueError(f"unknown sampling method {method!r}; available: {METHODS}")


def _laplace_batch_adapter(post0: Posterior, n_starts: int = 32, n_draws: int = 2000, n_chains: int = 1):
    from . import map as map_module

    map_trace, finish = map_module.batch_adapter(post0, n_starts=n_starts)
    return _LaplaceDrawsTrace(map_trace, int(n_draws), int(n_chains)), finish


class _LaplaceDrawsTrace(eqx.Module):
    """``sample(method="laplace")`` as one pure function (same keys)."""

    map_trace: Any
    n_draws: int = eqx.field(static=True)
    n_chains: int = eqx.field(static=True)

    def __call__(self, post: Posterior, key) -> Result:
        from .laplace import _gaussian_draws

        fit_key, draw_key = jax.random.split(key)
        fit = self.map_trace(post, fit_key)
        z, _ = _gaussian_draws(fit.laplace.mode, fit.laplace.covariance, draw_key, (self.n_chains, self.n_draws))
        params = jax.vmap(jax.vmap(post.constrain))(z)
        energy = jax.vmap(jax.vmap(post.energy))(z)
        return Result(params={name: params[name] for name in post.names}, method="laplace", sample_dims=2,
                      log_evidence=fit.log_evidence,
                      stats={"energy": energy, "ok": fit.stats["ok"], "_map": fit.params},  # _map: prior bounds
                      laplace=fit.laplace)
