"""Maximum a posteriori estimation: multi-start optax run, LM polish, Laplace.

1. Starting points: ``n_starts`` prior draws, or the explicit ``init=`` values.
2. All starts run at once (``vmap``) through an optax optimiser on the energy in
   unconstrained space: L-BFGS with zoom line search by default
   (``optax.lbfgs``), or any ``optax.GradientTransformation`` (e.g. ``"adam"``).
3. Every end point is polished by Levenberg-Marquardt on the same energy
   (generalised Gauss-Newton curvature for least-squares likelihoods), which
   brings NIST StRD problems to their certified values, and a last checked Newton
   step takes the digits that energy comparisons cannot resolve
   (:func:`~jaxinv.inference.levenberg_marquardt.newton_polish`).  With
   ``optimizer=None`` step 2 is skipped: LM alone from the starts.
4. The best end point is the MAP (the mode in physical parameter space).  A
   short further polish with the log-Jacobian reaches the mode in unconstrained
   space, where the Laplace approximation gives standard errors and the Laplace
   log-evidence (:mod:`jaxinv.inference.laplace`).
"""

from __future__ import annotations

import functools
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
import optax.tree_utils as otu

from ..model import Posterior
from ..results import Result
from . import _derivatives
from . import _small_linalg as linalg
from . import levenberg_marquardt as lm
from ._draws import feasible_prior_draws, feasible_prior_draws_traced
from .laplace import _laplace, _laplace_arrays

__all__ = ["map_estimate"]


def _starting_points(post: Posterior, key, n_starts: int, init) -> jax.Array:
    if init is None:
        if key is None:
            raise ValueError("map_estimate needs a PRNG key (or explicit init=) to draw starting points")
        if n_starts < 1:
            raise ValueError(f"n_starts must be >= 1, got {n_starts}")
        return feasible_prior_draws(post, key, n_starts)
    if isinstance(init, dict):
        init = [init]
    if isinstance(init, (list, tuple)):
        zs = []
        for point in init:
            if not isinstance(point, dict):
                raise ValueError(f"init entries must be dicts of parameter values, got {type(point).__name__}")
            missing, unknown = set(post.names) - set(point), set(point) - set(post.names)
            if missing or unknown:
                raise ValueError(
                    f"init must give exactly the parameters {list(post.names)}"
                    + (f"; missing {sorted(missing)}" if missing else "")
                    + (f"; unknown {sorted(unknown)}" if unknown else "")
                )
            shapes = post.parameter_shapes()
            first = next(iter(shapes))
            batched = jnp.ndim(point[first]) == len(shapes[first]) + 1
            if batched:
                zs.extend(jax.vmap(post.unconstrain)({k: jnp.asarray(v) for k, v in point.items()}))
            else:
                zs.append(post.unconstrain(point))
        z0 = jnp.stack(zs)
    else:
        z0 = jnp.atleast_2d(jnp.asarray(init, dtype=jnp.result_type(float)))
        if z0.shape[-1] != post.dim:
            raise ValueError(f"init has {z0.shape[-1]} unconstrained coordinates, the posterior has {post.dim}")
    if not bool(jnp.all(jnp.isfinite(z0))):
        raise ValueError("a starting point lies outside the prior support (non-finite after the unconstrained map)")
    return z0


@eqx.filter_jit
def _best(post: Posterior, z, energies):
    """The lowest finite energy's point, its parameters and the gradient norm there."""
    best = jnp.argmin(jnp.where(jnp.isfinite(energies), energies, jnp.inf))
    z_map = z[best]
    return best, z_map, post.constrain(z_map), jnp.linalg.norm(jax.grad(post.map_energy)(z_map))


def _best_and_laplace_point(post: Posterior, z, energies, polish_steps: int, proper: bool):
    """:func:`_best`, and the point where the Laplace approximation is taken: the mode of the
    unconstrained density (with the log-Jacobian), polished from the MAP; for an improper
    prior the MAP itself.  Returns ``best, params, gradient_norm, z_laplace``."""
    best, z_map, params, gradient_norm = _best(post, z, energies)
    z_laplace = _unconstrained_mode(post, z_map, polish_steps) if proper else z_map
    return best, params, gradient_norm, z_laplace


@functools.lru_cache(maxsize=None)
def _named_optimizer(name: str) -> optax.GradientTransformation:
    # cached so that repeated calls reuse one compiled solver
    if name == "lbfgs":
        return optax.lbfgs()
    if name == "adam":
        return optax.adam(1e-2)
    raise ValueError(f"unknown optimizer {name!r}: use 'lbfgs', 'adam' or an optax GradientTransformation")


def _optimizer(optimizer) -> optax.GradientTransformation | None:
    if optimizer is None:
        return None
    return _named_optimizer(optimizer) if isinstance(optimizer, str) else optimizer


def _checked_optimizer(optimizer, polish: bool):
    if optimizer is None and not polish:
        raise ValueError("optimizer=None runs Levenberg-Marquardt alone: it needs polish=True")
    return _optimizer(optimizer)


def _run_optax(energy, z0, opt, max_steps: int, gtol: float):
    """Minimise ``energy`` from ``z0`` with ``opt``; L-BFGS-style optimisers get the
    value function for their line search."""
    value_and_grad = optax.value_and_grad_from_state(energy)
    # line-search optimisers (optax.lbfgs) keep the value and gradient in their state
    uses_linesearch = otu.tree_get(opt.init(z0), "value") is not None

    # A line search that no longer lowers the energy (two iterations in a row) ends the
    # run: energies computed to a finite accuracy (an ODE solved to rtol ~ 1e-8) may never
    # reach gtol, and every start would otherwise run all max_steps.
    ftol = 10.0 * float(jnp.finfo(z0.dtype).eps)

    def step(carry):
        z, state, it, previous, stuck = carry
        if uses_linesearch:
            value, grad = value_and_grad(z, state=state)
            updates, state = opt.update(grad, state, z, value=value, grad=grad, value_fn=energy)
            no_progress = previous - value <= ftol * (1.0 + jnp.abs(value))
            stuck = jnp.where(no_progress & (it > 0), stuck + 1, 0)
            previous = value
        else:
            grad = jax.grad(energy)(z)
            updates, state = opt.update(grad, state, z)
        return optax.apply_updates(z, updates), state, it + 1, previous, stuck

    def keep_going(carry):
        z, state, it, _, stuck = carry
        grad = otu.tree_get(state, "grad")
        if grad is None:
            grad = jax.grad(energy)(z)
        small = otu.tree_norm(grad) < gtol
        return (it == 0) | ((it < max_steps) & ~small & (stuck < 2) & jnp.all(jnp.isfinite(z)))

    start = (z0, opt.init(z0), jnp.asarray(0), jnp.asarray(jnp.inf, z0.dtype), jnp.asarray(0))
    z, _, it, _, _ = jax.lax.while_loop(keep_going, step, start)
    return z, it


def _polish_end(energy, z):
    """An end point after :func:`levenberg_marquardt.newton_polish` (the last digits, where
    energy comparisons are round-off), its energy, and the Newton decrement
    ``|g^T H^-1 g| / 2`` at the polished point (Hessian of the end point; where it is not
    positive definite, ``H + ridge`` with ``ridge = max(1e-12, 100 eps) max|diag H|``, which
    leaves the step in the range of ``H``, where ``g`` lies at a stationary point)."""
    hess = _derivatives.hessian(energy)(z)
    hess = 0.5 * (hess + hess.T)
    chol = linalg.cholesky(hess)
    z, value, grad = lm.newton_polish(energy, z, _derivatives.gradient(energy)(z), chol)
    half_step = linalg.solve_triangular(chol, grad, lower=True)
    # where H is not positive definite, the regularised solve; the barrier orders it after
    # the factorisation above (two independent batched LAPACK calls can deadlock jaxlib
    # 0.10's CPU thread pool: see levenberg_marquardt._step_least_squares)
    ridge = max(1e-12, 100.0 * float(jnp.finfo(z.dtype).eps)) * jnp.maximum(jnp.max(jnp.abs(jnp.diag(hess))), 1e-300)
    grad, regularised, half_step = jax.lax.optimization_barrier((grad, hess + ridge * jnp.eye(z.size, dtype=z.dtype),
                                                                 half_step))
    decrement = jnp.where(jnp.all(jnp.isfinite(chol)), 0.5 * jnp.sum(half_step**2),
                          0.5 * jnp.abs(grad @ linalg.solve(regularised, grad)))
    return z, jnp.where(jnp.isfinite(value), value, jnp.inf), decrement


@eqx.filter_jit
def _solve(post: Posterior, z0, opt, max_steps: int, gtol: float, polish: bool, polish_steps: int):
    """All starts at once: optax stage, then LM polish (see module docstring)."""
    energy = post.map_energy
    parts = (lambda z: post.least_squares_parts(z, jacobian=False)) if post.least_squares else None
    limit = lm.step_limit(post.saturating)
    if opt is None:  # Levenberg-Marquardt alone, from the starts
        polished = jax.vmap(lambda z: lm.run(energy, z, parts, max_steps=polish_steps, step_limit=limit))(z0)
        z_end, e_end, decrement = jax.vmap(lambda z: _polish_end(energy, z))(polished.z)
        converged = polished.converged | (polished.stalled & (decrement < 1e-8))
        return z_end, e_end, jnp.zeros_like(polished.n_steps), polished.n_steps, converged, polished.stalled
    z1, it1 = jax.vmap(lambda z: _run_optax(energy, z, opt, max_steps, gtol))(z0)
    e0, e1 = jax.vmap(energy)(z0), jax.vmap(energy)(z1)
    better = jnp.isfinite(e1) & ~(e1 > e0)
    z1 = jnp.where(better[:, None], z1, z0)
    if polish:
        # polish both the optimiser's end point and the raw start: L-BFGS can
        # wander on badly scaled problems where LM from the start does not
        # one batch, not two loops side by side: XLA's CPU runtime would run two
        # independent loops at once, and their batched LAPACK calls can deadlock the
        # thread pool (see levenberg_marquardt._step_least_squares)
        polish_all = jax.vmap(lambda z: lm.run(energy, z, parts, max_steps=polish_steps, step_limit=limit))
        both = polish_all(jnp.concatenate([z1, z0]))
        n = z0.shape[0]
        a = jax.tree_util.tree_map(lambda x: x[:n], both)
        b = jax.tree_util.tree_map(lambda x: x[n:], both)
        take_b = b.energy < a.energy
        pick = lambda x, y: jnp.where(take_b.reshape(take_b.shape + (1,) * (x.ndim - 1)), y, x)
        best = jax.tree_util.tree_map(pick, a, b)
        # a stall at round-off level is convergence when the Newton decrement
        # g^T H^-1 g / 2 (the predicted gain of a full Newton step, in nats; Boyd &
        # Vandenberghe 2004, sec. 9.5.1) is negligible there
        z_end, e_end, decrement = jax.vmap(lambda z: _polish_end(energy, z))(best.z)
        converged = best.converged | (best.stalled & (decrement < 1e-8))
        return z_end, e_end, it1, best.n_steps, converged, best.stalled
    e1 = jax.vmap(energy)(z1)
    e1 = jnp.where(jnp.isfinite(e1), e1, jnp.inf)
    converged = jax.vmap(lambda z: jnp.linalg.norm(jax.grad(energy)(z)) < gtol)(z1)
    return z1, e1, it1, jnp.zeros_like(it1), converged, jnp.zeros_like(converged)


@eqx.filter_jit
def _unconstrained_mode(post: Posterior, z_map, max_steps: int):
    """Mode of the density of ``z`` (energy with log-Jacobian), from the MAP.

    The MAP in parameter space and the mode in unconstrained space differ by the
    Jacobian term; the Laplace approximation is built at the latter, where the
    unconstrained energy's gradient vanishes."""
    parts = post.least_squares_parts if post.least_squares else None
    state = lm.run(post.energy, z_map, parts, max_steps=max_steps, step_limit=lm.step_limit(post.saturating))
    return jnp.where(state.energy <= post.energy(z_map), state.z, z_map)


def map_estimate(
    post: Posterior,
    key=None,
    n_starts: int = 32,
    *,
    optimizer: Any = "lbfgs",
    init=None,
    max_steps: int = 1000,
    polish: bool = True,
    polish_steps: int = 2000,
    gtol: float = 1e-8,
) -> Result:
    """Posterior mode by multi-start optimisation, with a Laplace approximation.

    Args:
        post: the posterior (``model.condition(y)``).
        key: PRNG key for the prior draws used as starting points.
        n_starts: number of prior draws (ignored when ``init`` is given).
        optimizer: ``"lbfgs"`` (default), ``"adam"``, an optax optimiser, or ``None``:
            Levenberg-Marquardt alone from each start (needs ``polish=True``; ``max_steps``
            and ``gtol`` then do not apply, ``polish_steps`` caps the iterations).  L-BFGS
            first makes the search robust on badly scaled problems; ``None`` is several
            times faster where LM from the starts suffices (smooth least-squares
            problems with a few parameters, e.g. batches of relaxation curves).  Every LM
            step is limited to ``levenberg_marquardt.SATURATING_STEP_LIMIT`` in the
            unconstrained coordinates of bounded parameters, so that a Gauss-Newton step
            from a poor start cannot jump onto the plateau where the parameter sits at its
            bound (without the limit: 0.16 % of 10 000 NMR curves ended there, docs/batch.md).
        init: explicit starting point(s) instead of prior draws: a dict
            ``{name: value}`` (values may carry a leading batch axis), a list of
            such dicts, or an array of unconstrained points ``(n, dim)``.
        max_steps: optimiser iterations per start.
        polish: run the Levenberg-Marquardt polish after the optimiser.
        polish_steps: LM iteration cap.
        gtol: gradient-norm tolerance of the optimiser stage.

    The MAP is the minimum of :meth:`~jaxinv.Posterior.map_energy`, the posterior
    mode in physical parameter space (plain least squares under flat priors),
    found by moving in unconstrained space.  The Laplace approximation is taken at
    the mode of the unconstrained density (with the log-Jacobian), reached by a
    further polish from the MAP; with an improper (Flat) prior it is taken at the
    MAP and its evidence is NaN.

    Returns:
        A :class:`~jaxinv.Result` with ``params`` the MAP (constrained),
        ``laplace`` the Laplace approximation, ``log_evidence`` its Laplace
        estimate, and ``stats``: ``energies`` (final energy of every start),
        ``starts`` (unconstrained starting points), ``optimizer_steps``,
        ``polish_steps``, ``converged`` (per start: the polish ended on a step
        below tolerance, or stalled where the Newton decrement, taken after the
        final Newton step, is below 1e-8 nats), ``stalled`` (no step lowered the energy any more), ``best``,
        ``gradient_norm`` (of the MAP energy at the MAP, in z) and
        ``laplace_gradient_norm`` (of the energy at the Laplace point).
    """
    z0 = _starting_points(post, key, n_starts, init)
    opt = _checked_optimizer(optimizer, polish)

    z, energies, opt_steps, lm_steps, converged, stalled = _solve(
        post, z0, opt, max_steps, gtol, polish, polish_steps
    )
    if not bool(jnp.any(jnp.isfinite(energies))):
        raise ValueError(
            "every start has a non-finite energy: the prior may exclude the data, or the forward "
            "model returns NaN/inf over the prior's range"
        )
    best, params, gradient_norm, z_laplace = _best_and_laplace_point(post, z, energies, polish_steps, post.is_proper)
    params = {name: params[name] for name in post.names}  # jit returns dicts key-sorted
    approx, laplace_gradient = _laplace(post, z_laplace, boundary_params=params)
    return Result(
        params=params,
        method="map",
        sample_dims=0,
        log_evidence=approx.log_evidence,
        log_evidence_se=jnp.asarray(0.0),
        stats={
            "energies": energies,
            "starts": z0,
            "ends": z,
            "optimizer_steps": opt_steps,
            "polish_steps": lm_steps,
            "converged": converged,
            "stalled": stalled,
            "best": best,
            "energy": energies[best],
            "gradient_norm": gradient_norm,
            "laplace_gradient_norm": laplace_gradient,
        },
        laplace=approx,
        observed=post.y,
    )


# -- many datasets (jaxinv.batch) ---------------------------------------------------------------
def batch_adapter(post0: Posterior, *, n_starts: int = 32, optimizer: Any = "lbfgs", init=None,
                  max_steps: int = 1000, polish: bool = True, polish_steps: int = 2000, gtol: float = 1e-8):
    """``(trace, finish)`` for :func:`jaxinv.batch`: ``trace(post, key)`` is
    :func:`map_estimate` as one pure function of a posterior (built from traced data) and a
    key, returning a :class:`~jaxinv.Result` of arrays (its Laplace approximation without
    ``at_boundary``, which the batch result fills in per dataset); ``finish`` has nothing to add.

    The starting points are the same prior draws as ``map_estimate``'s (infeasible ones
    replaced the same way), so a dataset's MAP equals a single ``map_estimate`` call's to
    float tolerance.  ``stats["ok"]`` is False where no start had a finite energy."""
    if init is not None:
        z_init = _starting_points(post0, None, n_starts, init)
    elif n_starts < 1:
        raise ValueError(f"n_starts must be >= 1, got {n_starts}")
    trace = _MapTrace(z_init if init is not None else None, int(n_starts), _checked_optimizer(optimizer, polish),
                      int(max_steps),
                      bool(polish), int(polish_steps), float(gtol), post0.is_proper)
    return trace, _unchanged


def _unchanged(stacked: Result) -> Result:
    return stacked


class _MapTrace(eqx.Module):
    """:func:`map_estimate` as one pure function ``(post, key) -> Result`` (static settings
    hashed, so that repeated batches reuse one compiled program)."""

    z_init: Any
    n_starts: int = eqx.field(static=True)
    opt: Any = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    polish: bool = eqx.field(static=True)
    polish_steps: int = eqx.field(static=True)
    gtol: float = eqx.field(static=True)
    proper: bool = eqx.field(static=True)

    def __call__(self, post: Posterior, key) -> Result:
        z0 = self.z_init if self.z_init is not None else feasible_prior_draws_traced(post, key, self.n_starts)
        z, energies, opt_steps, lm_steps, converged, stalled = _solve(post, z0, self.opt, self.max_steps, self.gtol,
                                                                      self.polish, self.polish_steps)
        best, params, gradient_norm, z_laplace = _best_and_laplace_point(post, z, energies, self.polish_steps,
                                                                          self.proper)
        approx, laplace_gradient = _laplace_arrays(post, z_laplace)
        finite = jnp.isfinite(energies[best]) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in params.values()]))
        return Result(
            params={name: params[name] for name in post.names}, method="map", sample_dims=0,
            log_evidence=approx.log_evidence, log_evidence_se=jnp.zeros_like(approx.log_evidence),
            stats={"energy": energies[best], "energies": energies, "converged": converged[best],
                   "n_converged": jnp.sum(converged), "optimizer_steps": opt_steps[best],
                   "polish_steps": lm_steps[best], "gradient_norm": gradient_norm,
                   "laplace_gradient_norm": laplace_gradient, "ok": finite},
            laplace=approx,
        )
