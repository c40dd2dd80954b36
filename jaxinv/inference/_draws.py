"""Shared by engines: map unconstrained draws to parameters in one compiled call, and
guard log-densities against NaN."""

from __future__ import annotations

import equinox as eqx
import jax
import numpy as np

from ..model import Posterior


@eqx.filter_jit
def _constrain(post: Posterior, z):
    flat = z.reshape(-1, z.shape[-1])
    params = jax.vmap(post.constrain)(flat)
    params = {k: v.reshape(z.shape[:-1] + v.shape[1:]) for k, v in params.items()}
    return params, jax.vmap(post.energy)(flat).reshape(z.shape[:-1])


def constrain_draws(post: Posterior, z):
    """``({name: draws}, energy)`` for unconstrained draws ``z`` of shape ``(..., dim)``;
    the dict in the order of ``post.names`` (jit returns dicts key-sorted)."""
    params, energy = _constrain(post, z)
    return {name: params[name] for name in post.names}, energy


@eqx.filter_jit
def _draws_and_energies(post: Posterior, key, n: int):
    z = post.init(key, n)
    return z, jax.vmap(post.energy)(z)


def feasible_prior_draws(post: Posterior, key, n: int, spare: int = 16) -> jax.Array:
    """``n`` prior draws (unconstrained, ``(n, dim)``) at which the energy is finite.

    Starting points for optimisers and MCMC chains: a draw where the forward model fails
    (an ODE solve that runs out of steps gives NaN) or the likelihood is zero would
    leave a chain stuck.  The first ``n`` prior draws are kept where feasible (so the
    result equals ``post.init(key, n)`` when all are) and the others replaced by
    feasible ones from ``spare * n`` further draws.

    Raises:
        ValueError: if fewer than ``n`` of all the draws are feasible.
    """
    z, energy = _draws_and_energies(post, key, n)
    bad = ~np.isfinite(np.asarray(energy))
    if not bad.any():
        return z
    extra, extra_energy = _draws_and_energies(post, jax.random.fold_in(key, 1), spare * n)
    pool = np.asarray(extra)[np.isfinite(np.asarray(extra_energy))]
    if pool.shape[0] < bad.sum():
        feasible = int((~bad).sum()) + pool.shape[0]
        raise ValueError(
            f"{(1 + spare) * n - feasible} of {(1 + spare) * n} prior draws have a non-finite energy (needed "
            f"{n} finite ones): the prior may exclude the data, or the forward model fails (NaN) over most of "
            "the prior; narrow the prior or pass init="
        )
    z = np.asarray(z).copy()
    z[bad] = pool[: bad.sum()]
    return jax.numpy.asarray(z)


def feasible_prior_draws_traced(post: Posterior, key, n: int, spare: int = 16) -> jax.Array:
    """:func:`feasible_prior_draws` as a pure function (``jit``/``vmap`` over datasets):
    the same points when enough draws are feasible -- infeasible ones among the first
    ``n`` replaced, in order, by the feasible ones among the ``spare * n`` further
    draws; where too few are feasible the remaining points keep a non-finite energy
    (the caller reports the dataset as failed instead of raising)."""
    jnp = jax.numpy
    z, energy = _draws_and_energies(post, key, n)
    extra, extra_energy = _draws_and_energies(post, jax.random.fold_in(key, 1), spare * n)
    bad = ~jnp.isfinite(energy)
    order = jnp.argsort(~jnp.isfinite(extra_energy), stable=True)  # feasible spares first, in order
    rank = jnp.clip(jnp.cumsum(bad) - 1, 0, spare * n - 1)
    return jnp.where(bad[:, None], extra[order][rank], z)


def nan_to_minus_inf(log_density):
    """``log_density`` with NaN (a forward model evaluated outside its domain) read as
    ``-inf``, i.e. zero density, so that samplers reject the point instead of propagating NaN."""

    def guarded(z):
        value = log_density(z)
        return jax.numpy.where(jax.numpy.isnan(value), -jax.numpy.inf, value)

    return guarded
