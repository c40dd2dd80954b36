"""Levenberg-Marquardt (damped generalised Gauss-Newton) on a posterior energy.

The MAP polish.  For a least-squares likelihood the energy splits as

    E(z) = 1/2 |r(z)|^2 + g(z),

r the standardised residuals and g the rest (noise normalisation, prior,
log-Jacobian), given by ``parts(z) -> (r, g)``.  The two terms are compared
separately between iterates, so that residual sums far below the size of the
constant normalisation (NIST Lanczos: RSS ~ 1e-11 beside n/2 log 2 pi ~ 22)
still decide acceptance.  The curvature used is the generalised Gauss-Newton matrix
``H = J^T J + hess g`` (J = dr/dz); for other likelihoods it is the exact
Hessian of E.  Each step solves

    (H + lambda D) dz = -grad E(z),       D = diag(max(|diag H|, eps))

(Marquardt 1963, SIAM J. Appl. Math. 11, 431, with his diagonal scaling) and
updates the damping with Nielsen's gain-ratio rule (Madsen, Nielsen & Tingleff
2004, "Methods for non-linear least squares problems", eq. 2.21 and Alg. 3.16).

An optional per-coordinate ``step_limit`` shortens a step (keeping its direction) so that
no coordinate moves by more than its limit: for the unconstrained coordinate of a bounded
parameter (a logit) a Gauss-Newton step far from the optimum can jump to |z| ~ 1e3, where
the parameter sits at its bound, the sigmoid has underflowed and the gradient along that
coordinate is exactly 0 -- a plateau the iteration never leaves.  A shortened damped
Gauss-Newton step is still a descent direction, so the gain-ratio test is unchanged (a
bound on the step in the spirit of the trust region of More 1978, sec. 5, but per
coordinate and in the coordinates where saturation happens).

``optimistix.LevenbergMarquardt`` only handles a pure sum of squares; this
version carries the prior and Jacobian terms g that every jaxinv energy has,
which is why it is written here.  Pure function of arrays: ``jit``/``vmap`` safe.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from . import _derivatives
from . import _small_linalg as linalg

__all__ = ["LMState", "init", "step", "run", "newton_polish", "step_limit", "SATURATING_STEP_LIMIT"]

#: largest step in the unconstrained coordinate of a parameter with a bounded support (a
#: logit): a step changes the parameter's odds within its range by at most e^4 ~ 55x, so that a
#: Gauss-Newton step cannot jump onto the plateau where the sigmoid has saturated
SATURATING_STEP_LIMIT = 4.0


def step_limit(saturating) -> jax.Array:
    """The ``step_limit`` of :func:`run` for a posterior: :data:`SATURATING_STEP_LIMIT` on the
    coordinates flagged in ``saturating`` (``Posterior.saturating``), none elsewhere."""
    return jnp.where(jnp.asarray(saturating, bool), SATURATING_STEP_LIMIT, jnp.inf)


class LMState(NamedTuple):
    """``converged``: the last accepted step was below ``xtol`` (a stationary
    point); ``stalled``: the damping grew without bound, no step lowers the energy
    any more (at round-off level of a minimum, or stuck)."""

    z: jax.Array  # current point
    half_rss: jax.Array  # 1/2 |r(z)|^2 (0 for a non-least-squares energy)
    rest: jax.Array  # E(z) - 1/2 |r(z)|^2
    damping: jax.Array  # lambda
    nu: jax.Array  # damping growth factor after a rejected step
    n_steps: jax.Array
    converged: jax.Array
    stalled: jax.Array
    scale: jax.Array  # running maximum of the curvature diagonal (More 1978)

    @property
    def energy(self):
        return self.half_rss + self.rest


def _evaluate(energy: Callable, parts: Callable | None, z):
    """``(1/2 |r|^2, g)``, each +inf when not finite."""
    if parts is None:
        half, rest = jnp.zeros((), z.dtype), energy(z)
    else:
        r, rest = parts(z)
        half = 0.5 * jnp.sum(r**2)
    ok = jnp.isfinite(half) & jnp.isfinite(rest)
    return jnp.where(ok, half, jnp.inf), jnp.where(ok, rest, jnp.inf)


def _damping_scale(diag, previous):
    """Marquardt's diagonal scaling, kept as a running maximum over iterations
    (More 1978, "The Levenberg-Marquardt algorithm: implementation and theory",
    Lecture Notes in Math. 630, eq. 6.3), which makes the method invariant to the
    units of the parameters."""
    diag = jnp.maximum(jnp.abs(diag), previous)
    return jnp.maximum(diag, jnp.finfo(diag.dtype).eps * jnp.maximum(jnp.max(diag), 1.0))


def _step_exact(energy: Callable, z, damping, scale):
    """Damped Newton step with the exact Hessian (non-least-squares energies)."""
    grad = jax.grad(energy)(z)
    hess = _derivatives.hessian(energy)(z)
    scale = _damping_scale(jnp.diag(hess), scale)
    a = hess + damping * jnp.diag(scale)
    return linalg.solve(a, -grad), grad, hess, scale


def _step_least_squares(parts: Callable, z, damping, scale):
    """Damped generalised Gauss-Newton step, solved as a linear least-squares
    problem so that the conditioning of J (not of J^T J) matters:

        min |J dz + r|^2 + dz^T (G + lambda D) dz + 2 grad_g . dz
      = min |[J; L^T] dz + [r; L^-1 grad_g]|^2 ,   L L^T = G + lambda D.
    """
    residuals = lambda v: parts(v)[0]
    rest = lambda v: parts(v)[1]
    r = residuals(z)
    jac = _derivatives.jacobian(residuals)(z)
    grad_g = jax.grad(rest)(z)
    hess_g = _derivatives.hessian(rest)(z)
    jtj = jac.T @ jac
    scale = _damping_scale(jnp.diag(jtj) + jnp.abs(jnp.diag(hess_g)), scale)
    damped_g = hess_g + damping * jnp.diag(scale)
    chol = linalg.cholesky(damped_g)
    extra = linalg.solve_triangular(chol, grad_g, lower=True)
    system = jnp.concatenate([jac, chol.T], axis=0)
    rhs = -jnp.concatenate([r, extra])
    dz = linalg.lstsq(system, rhs)
    grad = jac.T @ r + grad_g
    # G + lambda D need not be positive definite (e.g. an inferred noise level
    # with a log-uniform prior): then solve the damped normal equations directly.
    # The barrier orders this solve after the factorisations above: above
    # linalg.MAX_UNROLLED unknowns, under vmap each is a batched LAPACK call that splits its
    # batch over XLA's CPU thread pool and waits for the pieces, so two running at once can
    # occupy every pool thread (2 on a 2-core machine) and wait for each other forever
    # (jaxlib 0.10 ParallelBatchMap).
    dz, normal_matrix = jax.lax.optimization_barrier((dz, jtj + damped_g))
    dz_normal = linalg.solve(normal_matrix, -grad)
    dz = jnp.where(jnp.all(jnp.isfinite(chol)), dz, dz_normal)
    return dz, grad, jtj + hess_g, scale


def init(energy: Callable, z, parts: Callable | None = None, damping: float = 1e-3) -> LMState:
    z = jnp.asarray(z)
    half, rest = _evaluate(energy, parts, z)
    return LMState(
        z=z,
        half_rss=half,
        rest=rest,
        damping=jnp.asarray(damping, z.dtype),
        nu=jnp.asarray(2.0, z.dtype),
        n_steps=jnp.asarray(0),
        converged=jnp.asarray(False),
        stalled=jnp.asarray(False),
        scale=jnp.zeros_like(z),
    )


def _limited(dz, step_limit):
    """``dz`` shortened (same direction) so that ``|dz_i| <= step_limit_i`` for every ``i``,
    and the factor it was shortened by (1 where it was not)."""
    if step_limit is None:
        return dz, jnp.ones((), dz.dtype)
    ratio = jnp.min(jnp.where(jnp.abs(dz) > step_limit, step_limit / jnp.where(dz == 0, 1.0, jnp.abs(dz)), 1.0))
    return dz * ratio, ratio


def step(energy: Callable, parts: Callable | None, state: LMState, xtol: float, step_limit=None) -> LMState:
    """One damped step; rejected steps raise the damping and leave ``z`` unchanged.
    ``step_limit``: per-coordinate bound on ``|dz|`` (``inf`` for none; see the module
    docstring), or ``None``."""
    z = state.z
    if parts is None:
        dz, grad, hess, scale = _step_exact(energy, z, state.damping, state.scale)
    else:
        dz, grad, hess, scale = _step_least_squares(parts, z, state.damping, state.scale)
    dz = jnp.where(jnp.all(jnp.isfinite(dz)), dz, jnp.zeros_like(dz))
    dz, shortened = _limited(dz, step_limit)
    z_new = z + dz
    half, rest = _evaluate(energy, parts, z_new)
    predicted = -(grad @ dz + 0.5 * dz @ hess @ dz)
    actual = (state.half_rss - half) + (state.rest - rest)
    actual = jnp.where(jnp.isfinite(actual), actual, -jnp.inf)
    rho = actual / jnp.where(predicted > 0, predicted, jnp.inf)
    accept = (actual > 0) & (rho > 0)
    damping = jnp.where(
        accept,
        state.damping * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3),
        state.damping * state.nu,
    )
    # a shortened step asks for more damping: the damping term lambda D dominates in the
    # flat coordinates that made the step too long, so raising lambda by the factor the
    # step was shortened by brings the next step near the limit there while the others keep
    # their Gauss-Newton steps (as More 1978, sec. 5, adjusts lambda to the trust radius);
    # at most 1e3 per step, so that one near-singular step cannot send the damping past the
    # stall threshold at once
    raised = state.damping * jnp.minimum(1.0 / shortened, 1e3)
    damping = jnp.where(shortened < 1.0, jnp.maximum(damping, raised), damping)
    nu = jnp.where(accept, 2.0, 2.0 * state.nu)
    small_step = jnp.linalg.norm(dz) <= xtol * (jnp.linalg.norm(z) + xtol)
    stalled = state.damping > 1e16  # no direction decreases the energy any more
    # a tiny step only means convergence when it was not forced tiny by heavy damping
    converged = accept & small_step & (state.damping < 1e3)
    return LMState(
        z=jnp.where(accept, z_new, z),
        half_rss=jnp.where(accept, half, state.half_rss),
        rest=jnp.where(accept, rest, state.rest),
        damping=jnp.clip(damping, 1e-15, 1e20),
        nu=nu,
        n_steps=state.n_steps + 1,
        converged=converged,
        stalled=stalled,
        scale=scale,
    )


def newton_polish(energy: Callable, z, grad, chol):
    """One Newton step ``-H^-1 g`` from ``z`` for the last digits of a minimum; returns the
    point, its energy and its gradient.

    The damped iteration stalls where the gain ``g^T H^-1 g / 2`` falls below the
    resolution of the energy (``eps |E|``) while the gradient is still ~``sqrt(eps |E| |H|)``:
    the gain ratio then sees only round-off, and where it happens to accept a last tiny step
    decides the final digits.  ``chol`` is the Cholesky factor of the Hessian at ``z`` (NaN
    where it is not positive definite: then ``z`` stays -- no step towards a saddle).  The
    step is taken when its predicted gain is at most 1e-6 nats (a small correction, for
    which the Hessian at ``z`` still holds), the gradient norm falls and the energy does not
    rise beyond ``16 eps (|E| + 1)`` -- a test on the gradient, which keeps its resolution
    where the energy's is lost.  (For an ODE model without forward mode the Hessian is
    central differences, ~1e-3 relative: the step then still lowers the gradient or is
    refused.)"""
    gradient = _derivatives.gradient(energy)
    step = -linalg.solve_triangular(chol.T, linalg.solve_triangular(chol, grad, lower=True), lower=False)
    ok = jnp.all(jnp.isfinite(step))
    polished = z + jnp.where(ok, step, 0.0)
    e_z, e_polished = energy(z), energy(polished)
    grad_polished = gradient(polished)
    floor = 16.0 * jnp.finfo(z.dtype).eps * (jnp.abs(e_z) + 1.0)
    keep = (ok & (0.5 * jnp.abs(grad @ step) <= 1e-6) & (jnp.linalg.norm(grad_polished) < jnp.linalg.norm(grad))
            & jnp.isfinite(e_polished) & (e_polished - e_z <= floor))
    return jnp.where(keep, polished, z), jnp.where(keep, e_polished, e_z), jnp.where(keep, grad_polished, grad)


def run(
    energy: Callable,
    z0,
    parts: Callable | None = None,
    max_steps: int = 2000,
    xtol: float | None = None,
    damping0: float = 1e-3,
    step_limit=None,
) -> LMState:
    """Minimise ``energy`` from ``z0``.

    Args:
        energy: scalar function of the flat vector ``z``.
        z0: starting point.
        parts: ``z -> (r, g)`` with ``energy = 1/2|r|^2 + g`` (Gauss-Newton
            curvature, cancellation-free comparisons), or ``None`` (exact Hessian).
        max_steps: iteration cap.
        xtol: relative step tolerance (default ``eps**0.75``, about 2e-12 in float64).
        damping0: initial damping lambda (relative to the scaled diagonal).
        step_limit: per-coordinate bound on the step ``|dz_i|`` (array broadcastable to
            ``z``, ``inf`` where there is none), or ``None`` (no bound).
    """
    z0 = jnp.asarray(z0)
    xtol = float(jnp.finfo(z0.dtype).eps) ** 0.75 if xtol is None else xtol

    def cond(s):
        return (~s.converged) & (~s.stalled) & (s.n_steps < max_steps) & jnp.isfinite(s.energy)

    return jax.lax.while_loop(cond, lambda s: step(energy, parts, s, xtol, step_limit), init(energy, z0, parts, damping0))
