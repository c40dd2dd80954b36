"""Shared by engines: map unconstrained draws to parameters in one compiled call, and
guard log-densities against NaN."""

from __future__ import annotations

import equinox as eqx
import jax

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


def nan_to_minus_inf(log_density):
    """``log_density`` with NaN (a forward model evaluated outside its domain) read as
    ``-inf``, i.e. zero density, so that samplers reject the point instead of propagating NaN."""

    def guarded(z):
        value = log_density(z)
        return jax.numpy.where(jax.numpy.isnan(value), -jax.numpy.inf, value)

    return guarded
