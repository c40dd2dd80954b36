"""Derivatives of the MAP with respect to data and fixed inputs (implicit differentiation).

The user describes how the posterior depends on its inputs by a function
``make_posterior(inputs) -> Posterior``; ``inputs`` is any pytree of floating
arrays the model reads (the data ``y``, measurement times, known temperatures,
prior means ...).  The MAP ``z*(u)`` (unconstrained coordinates) is the root of
the gradient of the MAP energy ``E(z; u) = post(u).map_energy(z)``:

    g(z*(u); u) = dE/dz (z*(u); u) = 0.

By the implicit function theorem (e.g. Krantz & Parks 2013, "The Implicit
Function Theorem", Thm 3.3.1), wherever the Hessian ``H = d^2E/dz^2`` at ``z*`` is
non-singular,

    dz*/du = -H^-1 d^2E/(dz du),          dtheta/du = (dtheta/dz) dz*/du,

with ``theta = post.constrain(z)`` the physical parameters, so ``dtheta/du`` is in
units of theta per unit of u.  The derivative needs no derivative of the
optimiser: only the optimum and second derivatives of the energy there
(Blondel et al. 2022, "Efficient and modular implicit differentiation",
NeurIPS 35; Gould et al. 2016, arXiv:1607.05447 on argmin differentiation).

The mechanism is ``jax.lax.custom_root``: the forward solve finds the root of
``g`` by Levenberg-Marquardt from a starting point, and the tangent solve is one
linear solve with ``H`` (wrapped in ``jax.lax.custom_linear_solve`` with
``symmetric=True``, so that reverse mode, ``jax.grad``, transposes it).  The
derivative therefore holds for ``jax.jvp``/``jacfwd`` and ``jax.grad``/``jacrev``,
and under ``jit`` and ``vmap``.  The forward model must support
forward-over-reverse differentiation (every closed-form physics module does; a
Diffrax ODE needs ``adjoint="direct"``).

Not covered: a MAP on the edge of a bounded prior (``z*`` at infinity, H
singular) and non-isolated optima (H singular): the derivative is then
undefined, and :func:`map_jacobian` raises.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from ..inference import levenberg_marquardt as lm
from ..model import Posterior

__all__ = ["differentiable_map", "implicit_mode", "map_jacobian", "newton_decrement"]

_ENERGIES = {"map": "map_energy", "laplace": "energy"}


def _posterior(make_posterior: Callable, inputs) -> Posterior:
    post = make_posterior(inputs)
    if not isinstance(post, Posterior):
        raise TypeError(f"make_posterior(inputs) must return a jaxinv Posterior, got {type(post).__name__}")
    return post


def check_inputs(inputs) -> None:
    """Raise ``TypeError`` unless every leaf of ``inputs`` is a floating-point array
    (an integer or boolean leaf cannot be differentiated; convert it with
    ``jnp.asarray(x, float)`` or close over it in ``make_posterior``)."""
    leaves = jax.tree_util.tree_leaves_with_path(inputs)
    if not leaves:
        raise TypeError("inputs is an empty pytree: there is nothing to differentiate with respect to")
    for path, leaf in leaves:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(
                f"inputs{jax.tree_util.keystr(path)} has dtype {dtype}; every leaf of inputs must be a "
                "floating-point array (the quantities to differentiate with respect to)"
            )


def _energy(post: Posterior, which: str) -> Callable:
    if which not in _ENERGIES:
        raise ValueError(f"energy must be 'map' (the MAP) or 'laplace' (the unconstrained mode), got {which!r}")
    return getattr(post, _ENERGIES[which])


def _least_squares_parts(post: Posterior, which: str):
    if not post.least_squares:
        return None
    return lambda z: post.least_squares_parts(z, jacobian=(which == "laplace"))


def _dense_symmetric_solve(matvec: Callable, b):
    """Solve ``H x = b`` for the symmetric ``H`` given as a linear map (dense: the
    parameter dimension of a jaxinv posterior is small)."""
    hessian = jax.jacfwd(matvec)(b)
    return jnp.linalg.solve(0.5 * (hessian + hessian.T), b)


def _tangent_solve(linearised_gradient: Callable, b):
    return jax.lax.custom_linear_solve(linearised_gradient, b, _dense_symmetric_solve, symmetric=True)


def _root(make_posterior: Callable, inputs, z0, which: str, solve: Callable):
    def gradient(z):
        return jax.grad(_energy(_posterior(make_posterior, inputs), which))(z)

    return jax.lax.custom_root(gradient, z0, solve, _tangent_solve)


def _unconstrained_point(post: Posterior, point) -> jax.Array:
    """``z`` from an unconstrained array, a ``{name: value}`` dict, or a Result of
    :func:`~jaxinv.map_estimate` (its best end point, the MAP in z)."""
    stats = getattr(point, "stats", None)
    if stats is not None and "ends" in stats and "best" in stats:
        names = tuple(point.params)
        if set(names) != set(post.names):
            raise ValueError(
                f"the fit has parameters {sorted(names)} but make_posterior(inputs) has {sorted(post.names)}: "
                "a fit of another model?"
            )
        z = stats["ends"][stats["best"]]
    elif isinstance(point, dict):
        z = post.unconstrain(point)
    else:
        z = jnp.asarray(point, dtype=jnp.result_type(float))
    if z.shape != (post.dim,):
        raise ValueError(f"the MAP point has shape {z.shape}; the posterior's unconstrained vector has ({post.dim},)")
    return z


def implicit_mode(make_posterior: Callable, inputs, z0, *, energy: str = "map", max_steps: int = 500) -> jax.Array:
    """The mode ``z*(inputs)`` in unconstrained space, differentiable in ``inputs``.

    Forward pass: Levenberg-Marquardt (:mod:`jaxinv.inference.levenberg_marquardt`)
    from ``z0`` on the chosen energy; derivative: ``dz*/du = -H^-1 d^2E/(dz du)``
    through ``jax.lax.custom_root`` (module docstring).  Nothing checks that the
    solve converged (this runs under ``jit``/``vmap``); start near the mode, e.g.
    from a :func:`~jaxinv.map_estimate` fit of nearby inputs, and see
    :func:`newton_decrement`.

    Args:
        make_posterior: ``inputs -> Posterior``, built from traceable operations
            on ``inputs`` (e.g. ``model.condition(inputs["y"])``, or an
            ``eqx.tree_at`` that puts ``inputs["t"]`` into the forward model).
        inputs: pytree of floating arrays the posterior depends on.
        z0: starting point, shape ``(dim,)`` (unconstrained).
        energy: ``"map"`` for the minimum of ``map_energy`` (the MAP in physical
            parameters) or ``"laplace"`` for the minimum of ``energy`` (with the
            log-Jacobian: the centre of the Laplace approximation).
        max_steps: Levenberg-Marquardt iteration cap.

    Returns:
        ``z*``, shape ``(dim,)``.
    """
    z0 = jnp.asarray(z0, dtype=jnp.result_type(float))

    def solve(_, z_start):
        post = _posterior(make_posterior, jax.lax.stop_gradient(inputs))
        state = lm.run(_energy(post, energy), z_start, _least_squares_parts(post, energy), max_steps=max_steps,
                       step_limit=lm.step_limit(post.saturating))
        return state.z

    return _root(make_posterior, inputs, z0, energy, solve)


def differentiable_map(make_posterior: Callable, inputs, z0, *, max_steps: int = 500) -> dict[str, jax.Array]:
    """The MAP parameters ``theta*(inputs)`` (physical units), differentiable in ``inputs``.

    ``jax.jacfwd``/``jax.grad`` through it give the implicit derivative
    ``dtheta/du = (dtheta/dz) (-H^-1 d^2E/(dz du))`` at the solved MAP; ``jit`` and
    ``vmap`` work (e.g. ``jax.vmap`` over many datasets with one starting point).

    Args:
        make_posterior: ``inputs -> Posterior`` (traceable in ``inputs``).
        inputs: pytree of floating arrays.
        z0: unconstrained starting point ``(dim,)``, e.g. ``fit.stats["ends"][fit.stats["best"]]``.
        max_steps: Levenberg-Marquardt iteration cap.

    Returns:
        ``{name: value}`` as ``Posterior.constrain``.
    """
    z = implicit_mode(make_posterior, inputs, z0, energy="map", max_steps=max_steps)
    return _posterior(make_posterior, inputs).constrain(z)


def newton_decrement(post: Posterior, z, *, energy: str = "map") -> tuple[jax.Array, jax.Array]:
    """Distance from ``z`` to the mode in posterior standard deviations, and the gradient norm.

    ``lambda = sqrt(g^T H^-1 g)`` with ``g``, ``H`` the gradient and Hessian of the
    energy at ``z`` (Boyd & Vandenberghe 2004, "Convex Optimization", sec. 9.5.1):
    the length of the Newton step in the metric of the local Gaussian, i.e. how many
    posterior sds the point is off the mode.  NaN when ``H`` is not positive
    definite (not a minimum).

    Args:
        post: the posterior.
        z: unconstrained point ``(dim,)``.
        energy: ``"map"`` or ``"laplace"`` (see :func:`implicit_mode`).

    Returns:
        ``(lambda, |g|)``.
    """
    f = _energy(post, energy)
    g = jax.grad(f)(z)
    h = jax.hessian(f)(z)
    chol = jnp.linalg.cholesky(0.5 * (h + h.T))
    w = jax.scipy.linalg.solve_triangular(chol, g, lower=True)
    return jnp.sqrt(jnp.sum(w**2)), jnp.linalg.norm(g)


@eqx.filter_jit
def _newton_decrement_jit(post: Posterior, z, energy: str):
    return newton_decrement(post, z, energy=energy)


def _is_traced(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


def check_converged(post: Posterior, z, tol: float, energy: str = "map"):
    """Raise ``ValueError`` (or, under ``jit``/``vmap``, an Equinox runtime error) when
    ``z`` is not a minimum to within ``tol`` posterior sds; returns ``z``."""
    decrement, gradient_norm = _newton_decrement_jit(post, z, energy)
    bad = ~(decrement <= tol)
    if _is_traced((z, decrement)):
        return eqx.error_if(
            z, bad, f"the point is not a converged mode: Newton decrement above {tol} posterior sds "
            "(large gradient norm) or a Hessian that is not positive definite"
        )
    if bool(bad):
        raise ValueError(
            f"the MAP is not converged: gradient norm {float(gradient_norm):.3g} of the MAP energy, "
            f"Newton decrement {float(decrement):.3g} posterior sds (tolerance {tol:g}; NaN: the Hessian is "
            "not positive definite, not a minimum). Implicit derivatives hold only at the optimum: refit, "
            "or pass the inputs the fit was made with"
        )
    return z


def map_jacobian(make_posterior: Callable, inputs, fit: Any, *, tol: float = 1e-6) -> dict[str, Any]:
    """``dtheta_MAP / d inputs`` at a converged MAP, by implicit differentiation.

    ``dtheta/du = (dtheta/dz) (-H^-1 d^2E/(dz du))``, ``E = map_energy``, ``H`` its
    Hessian in z at the MAP (module docstring).  Works under ``jit`` and ``vmap``
    (pass ``fit`` as an array of MAP points then), where a non-converged point
    raises an Equinox runtime error instead of ``ValueError``.

    Args:
        make_posterior: ``inputs -> Posterior`` (traceable in ``inputs``).
        inputs: pytree of floating arrays at which the MAP was found.
        fit: the converged MAP: a :func:`~jaxinv.map_estimate` Result for
            ``make_posterior(inputs)``, a ``{name: value}`` dict, or the
            unconstrained point ``(dim,)``.
        tol: largest accepted Newton decrement (distance from the mode in
            posterior sds, :func:`newton_decrement`).

    Returns:
        ``{name: J}`` where ``J`` has the structure of ``inputs`` and each leaf
        the shape ``param_shape + input_leaf_shape`` (as ``jax.jacfwd`` of
        ``inputs -> params``), in units of the parameter per unit of the input.

    Raises:
        TypeError: if a leaf of ``inputs`` is not floating-point, or
            ``make_posterior`` does not return a Posterior.
        ValueError: if the MAP point has the wrong size or belongs to another
            model, or is not converged (gradient norm and Newton decrement named).
    """
    check_inputs(inputs)
    post = _posterior(make_posterior, inputs)
    z_star = check_converged(post, _unconstrained_point(post, fit), tol)
    return _jacobian_at(make_posterior, inputs, z_star)


@eqx.filter_jit
def _jacobian_at(make_posterior: Callable, inputs, z_star):
    def params_of(u):
        # the point is already the root: the "solve" returns it, the tangent solve differentiates
        z = _root(make_posterior, u, jax.lax.stop_gradient(z_star), "map", lambda _, z: z)
        return _posterior(make_posterior, u).constrain(z)

    n_in = sum(jnp.size(x) for x in jax.tree_util.tree_leaves(inputs))
    jac = jax.jacrev if z_star.size < n_in else jax.jacfwd
    return jac(params_of)(inputs)
