"""Hit-and-run slice sampling in a given metric, on BlackJAX's slice kernel.

One step draws a direction uniformly on the ellipsoid of the metric
(``d = S xi / |xi|``, ``xi ~ N(0, I)``, ``S`` a lower Cholesky factor of the
metric), brackets the slice ``{t : log p(x + t d) > log p(x) + log u}``
by stepping out with width ``width`` at most ``max_expansions`` times per side,
and shrinks the bracket until a point lies in the slice (Neal 2003, Ann. Stat. 31,
705, Figs. 3 and 5).  No step size: the bracket adapts to the local scale, which
is what a funnel (a noise level inferred with a log-uniform prior) needs.  The
step leaves ``p`` invariant for every fixed metric.  Used by the SMC and the
replica-exchange engines.
"""

from __future__ import annotations

from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp

#: kernel="auto" (SMC moves, replica-exchange local moves) samples by slice up to this many
#: parameters, by HMC above: a hit-and-run step moves along one direction, so it needs ~dim
#: steps where HMC's gradient moves all at once (measured: a 21-parameter GMRF model with a
#: precision hyperparameter kept 0.92 of its SMC log-density correlation after 500 slice steps)
MAX_DIM = 10
#: initial slice bracket, in units of the metric
WIDTH = 1.5
#: stepping-out steps per side at most (Neal 2003's m)
MAX_EXPANSIONS = 10

init = blackjax.mcmc.slice.init


def resolve(kernel: str, dim: int) -> str:
    """``"auto"``: ``"slice"`` for at most ``MAX_DIM`` parameters, ``"hmc"`` above; others as given."""
    if kernel == "auto":
        return "slice" if dim <= MAX_DIM else "hmc"
    return kernel


class SliceInfo(NamedTuple):
    acceptance_rate: jax.Array  # 1 once shrinkage finds a point in the slice (it always does)


def build_kernel(width: float = WIDTH, max_expansions: int = MAX_EXPANSIONS):
    """``step(key, state, logdensity_fn, metric) -> (state, SliceInfo)``, ``metric`` a
    ``(d, d)`` lower Cholesky factor."""
    kernel = blackjax.mcmc.slice.build_kernel(blackjax.mcmc.slice.stepping_out, max_expansions)

    def step(key, state, logdensity_fn, metric):
        def proposal(key, position, logdensity_fn):
            xi = jax.random.normal(key, position.shape, position.dtype)
            u = xi / jnp.linalg.norm(xi)
            direction = metric @ u

            def slice_fn(t):
                x = position + t * direction
                return blackjax.mcmc.slice.SliceState(x, logdensity_fn(x)), True

            return slice_fn

        state, info = kernel(key, state, logdensity_fn, proposal, width)
        return state, SliceInfo(info.is_accepted.astype(state.position.dtype))

    return step
