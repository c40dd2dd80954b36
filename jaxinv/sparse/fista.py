"""FISTA: accelerated proximal gradient for ``min_x f(x) + g(x)``.

``f`` is smooth (its gradient comes from JAX), ``g`` is a :class:`~jaxinv.sparse.penalties.Penalty`
with a cheap proximal map.  One iteration (Beck & Teboulle 2009, SIAM J. Imaging Sci. 2, 183-202,
"FISTA with backtracking", their eqs. 4.1-4.3)::

    x_k     = prox_{s g}(y_k - s grad f(y_k))          # s = 1/L, shrunk until the majoriser holds:
              f(x_k) <= f(y_k) + <grad f(y_k), x_k - y_k> + ||x_k - y_k||^2 / (2 s)
    t_{k+1} = (1 + sqrt(1 + 4 t_k^2)) / 2
    y_{k+1} = x_k + ((t_k - 1) / t_{k+1}) (x_k - x_{k-1})

with the gradient-based adaptive restart of O'Donoghue & Candes (2015, Found. Comput. Math. 15,
715-732, sec. 3.2): when ``<y_k - x_k, x_k - x_{k-1}> > 0`` the momentum points uphill and is
reset (``t = 1``), which restores linear convergence on strongly convex problems such as the
lasso with more samples than features.

Stops when the step is small, ``||x_k - x_{k-1}|| <= tol * max(1, ||x_k||)``, or after
``max_iter`` iterations.  Everything is a ``lax.while_loop`` over arrays: the solver can be
``jit``-ted and ``vmap``-ped over datasets (each lane runs until all have stopped; stopped lanes
are frozen).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["ProximalResult", "fista"]


class ProximalResult(NamedTuple):
    """Result of a proximal-gradient solve.

    Attributes:
        x: the minimiser (same shape as the start).
        objective: ``f(x) + g(x)`` at ``x``.
        n_iter: iterations done.
        converged: the step-size stopping rule was met before ``max_iter``.
        step_size: the final step ``1/L`` (after backtracking).
    """

    x: jax.Array
    objective: jax.Array
    n_iter: jax.Array
    converged: jax.Array
    step_size: jax.Array


class _State(NamedTuple):
    x: jax.Array
    x_prev: jax.Array
    y: jax.Array
    t: jax.Array
    step: jax.Array
    n_iter: jax.Array
    done: jax.Array


def _vdot(a, b):
    return jnp.sum(a * b)


def fista(smooth: Callable, penalty, x0, *, step_size=None, tol: float = 1e-10, max_iter: int = 20000,
          shrink: float = 0.5, restart: bool = True, max_backtracks: int = 60) -> ProximalResult:
    """Minimise ``smooth(x) + penalty(x)`` by FISTA with backtracking and adaptive restart.

    Args:
        smooth: differentiable scalar function ``f(x)``.
        penalty: object with ``penalty(x)`` (its value) and ``penalty.prox(v, step)`` (the
            minimiser of ``step * g(u) + ||u - v||^2 / 2``), e.g. :class:`~jaxinv.sparse.L1`.
        x0: starting point (warm start along a regularisation path).
        step_size: initial step ``1/L``; the exact inverse Lipschitz constant of ``grad f``
            when known (then no backtracking happens), else a guess that is shrunk by
            ``shrink`` until the quadratic majoriser holds. Default 1.
        tol: relative step size at which to stop.
        max_iter: iteration limit.
        shrink: factor applied to the step at each backtracking trial, in (0, 1).
        restart: use the gradient-based adaptive restart.
        max_backtracks: limit on trials per iteration.
    """
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"shrink must lie in (0, 1), got {shrink}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter}")
    x0 = jnp.asarray(x0)
    dtype = x0.dtype if jnp.issubdtype(x0.dtype, jnp.floating) else jnp.result_type(float)
    x0 = x0.astype(dtype)
    step0 = jnp.asarray(1.0 if step_size is None else step_size, dtype)
    value_and_grad = jax.value_and_grad(smooth)

    def proximal_step(y, f_y, g_y, step):
        def trial(s):
            x = penalty.prox(y - s * g_y, s)
            d = x - y
            majoriser = f_y + _vdot(g_y, d) + _vdot(d, d) / (2.0 * s)
            return x, smooth(x) <= majoriser + 1e-12 * jnp.abs(f_y)

        def cond(carry):
            _, _, ok, n = carry
            return jnp.logical_and(~ok, n < max_backtracks)

        def body(carry):
            s, _, _, n = carry
            s = s * shrink
            x, ok = trial(s)
            return s, x, ok, n + 1

        x, ok = trial(step)
        step, x, _, _ = lax.while_loop(cond, body, (step, x, ok, 0))
        return x, step

    def cond(state):
        return jnp.logical_and(~state.done, state.n_iter < max_iter)

    def body(state):
        f_y, g_y = value_and_grad(state.y)
        x, step = proximal_step(state.y, f_y, g_y, state.step)
        dx = x - state.x
        small = jnp.sqrt(_vdot(dx, dx)) <= tol * jnp.maximum(1.0, jnp.sqrt(_vdot(x, x)))
        t_next = 0.5 * (1.0 + jnp.sqrt(1.0 + 4.0 * state.t**2))
        uphill = _vdot(state.y - x, dx) > 0.0
        if restart:
            t = jnp.where(uphill, 1.0, state.t)
            t_next = jnp.where(uphill, 1.0, t_next)
        else:
            t = state.t
        y = x + ((t - 1.0) / t_next) * dx
        return _State(x, state.x, y, t_next, step, state.n_iter + 1, small)

    init = _State(x0, x0, x0, jnp.asarray(1.0, dtype), step0, jnp.asarray(0), jnp.asarray(False))
    state = lax.while_loop(cond, body, init)
    objective = smooth(state.x) + penalty(state.x)
    return ProximalResult(state.x, objective, state.n_iter, state.done, state.step)
