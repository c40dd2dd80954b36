"""Jacobians and Hessians of energies whose forward models support only some autodiff modes.

A forward model built on Diffrax differentiates in the mode its adjoint allows:
``RecursiveCheckpointAdjoint`` and ``BacksolveAdjoint`` give first-order reverse mode
only (a ``custom_vjp``), ``ForwardMode`` forward mode only, ``DirectAdjoint`` both.
The engines that need second derivatives (Laplace, Levenberg-Marquardt, the Newton
decrement) ask here; each function tries the modes in order of cost and takes the
first the model supports, decided once at trace time:

* Jacobian: forward (``jacfwd``); without forward mode, reverse (``jacrev``, one pass
  per output) when there are no more outputs than inputs, else central differences
  ``(f(z + h_i e_i) - f(z - h_i e_i)) / (2 h_i)`` (two solves per input instead of one
  backward pass per datum; used by the Levenberg-Marquardt polish, whose steps need
  only approximate curvature: its acceptance test uses the energy itself).
* Hessian: forward-over-reverse, forward-over-forward, reverse-over-reverse, and as
  the last resort central differences of the reverse-mode gradient,

      H[:, i] = (g(z + h_i e_i) - g(z - h_i e_i)) / (2 h_i),  h_i = eps^(1/3) max(1, |z_i|),

  symmetrised; its relative error is O(h^2) plus (gradient error)/h, i.e. about 1e-3
  when the gradient comes from an ODE solved to rtol 1e-8.  Build the ODE with
  ``adjoint="direct"`` when the Hessian must be exact.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["gradient", "jacobian", "hessian"]

# what JAX/Equinox/Diffrax say when a derivative mode is not available
_MODE_ERRORS = (
    "custom_vjp",
    "Reverse-mode differentiation does not work",
    "filter_custom_vjp",
    "forward-mode",
    "jvp",
)


def _unsupported_mode(err: Exception) -> bool:
    return isinstance(err, (TypeError, ValueError, RuntimeError)) and any(s in str(err) for s in _MODE_ERRORS)


def _first_supported(attempts):
    last = None
    for attempt in attempts:
        try:
            return attempt()
        except Exception as err:  # noqa: BLE001 -- re-raised unless it is an unsupported mode
            if not _unsupported_mode(err):
                raise
            last = err
    raise last


def gradient(f: Callable) -> Callable:
    """Gradient of a scalar function: reverse mode, or forward mode (``jacfwd``) for a
    model that supports only that."""

    def grad(z):
        return _first_supported([lambda: jax.grad(f)(z), lambda: jax.jacfwd(f)(z)])

    return grad


def jacobian(f: Callable) -> Callable:
    """``z -> df/dz`` (shape ``f(z).shape + z.shape``) in the first mode ``f`` supports."""

    def reverse_or_differences(z):
        if jax.eval_shape(f, z).size <= z.size:
            return jax.jacrev(f)(z)
        return _finite_difference_jacobian(f, z)

    def jac(z):
        return _first_supported([lambda: jax.jacfwd(f)(z), lambda: reverse_or_differences(z)])

    return jac


def _steps(z):
    h = jnp.finfo(z.dtype).eps ** (1.0 / 3.0) * jnp.maximum(1.0, jnp.abs(z))
    return jnp.diag(h), h


def _finite_difference_jacobian(f: Callable, z):
    steps, h = _steps(z)
    columns = jax.vmap(lambda dz, hi: (f(z + dz) - f(z - dz)) / (2.0 * hi))(steps, h)
    return jnp.moveaxis(columns, 0, -1)


def _finite_difference_hessian(f: Callable, z):
    grad = jax.grad(f)
    steps, h = _steps(z)
    columns = jax.vmap(lambda dz, hi: (grad(z + dz) - grad(z - dz)) / (2.0 * hi))(steps, h)
    return 0.5 * (columns + columns.T)


def hessian(f: Callable) -> Callable:
    """``z -> d^2 f/dz^2`` for scalar ``f`` of a vector ``z`` (module docstring for the order)."""

    def hess(z):
        return _first_supported(
            [
                lambda: jax.jacfwd(jax.grad(f))(z),
                lambda: jax.jacfwd(jax.jacfwd(f))(z),
                lambda: jax.jacrev(jax.jacrev(f))(z),
                lambda: _finite_difference_hessian(f, z),
            ]
        )

    return hess
