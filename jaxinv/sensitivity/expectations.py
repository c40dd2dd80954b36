"""Derivatives of posterior expectations ``d/du E_{p(theta | y, u)}[f(theta)]``.

Two Monte Carlo estimators, each returned with its Monte Carlo standard error.

**Score function** (likelihood ratio; Glynn 1990, Commun. ACM 33, 75; for posterior
expectations e.g. Gustafson 1996, "Local sensitivity of posterior expectations",
Ann. Stat. 24, 174).  Write the posterior as ``p(theta | u) = q(theta; u) / Z(u)``
with ``q(theta; u) = p(y | theta, u) p(theta | u)`` (``u``: the data, a known input
of the forward model, or a hyperparameter of the prior).  Then
``d log Z/du = E[d log q/du]`` and

    d/du E[f] = E[f d log q/du] - E[f] E[d log q/du] = Cov_post(f(theta), s(theta)),
    s(theta)  = d/du log p(y | theta, u) + d/du log p(theta | u).

Terms of ``log q`` that do not depend on theta (normalising constants, e.g. the
``log sigma`` of a known noise level) cancel in the covariance, so the
unnormalised ``-map_energy`` is used: ``s = -d/du map_energy(unconstrain(theta))``
at fixed theta.  ``u`` may not move the support of theta (a Uniform bound that
depends on u adds a boundary term this estimator misses).  The draws are the
posterior's (NUTS, SMC, ...); the estimator is unbiased up to O(1/n) and works
for any f, but its variance grows with the spread of ``s`` (many data, large
``d log L/du``).

**Reparameterisation** (pathwise; Kingma & Welling 2014, ICLR; Rezende et al.
2014, ICML) for the Laplace approximation in unconstrained space:
``theta = T(z*(u) + L(u)^-T eps)``, ``eps ~ N(0, I)``, ``H(u) = L L^T`` the Hessian
of the energy at the mode ``z*(u)`` (itself differentiated implicitly,
:mod:`.implicit`), so that

    d/du E_Laplace[f] = E_eps[ d/du f(T(z*(u) + L(u)^-T eps)) ],

exact in expectation for the Laplace posterior (and for the true posterior when
that is Gaussian in z, e.g. a linear-Gaussian model).
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from .implicit import _posterior, _unconstrained_point, check_inputs, implicit_mode

__all__ = ["score_function_gradient", "laplace_expectation", "laplace_expectation_gradient"]


def _flat_draws(draws) -> dict[str, jax.Array]:
    """``{name: (n, *shape)}`` from a Result (its sample axes flattened) or a dict
    with one leading draw axis."""
    params = getattr(draws, "params", None)
    if params is not None:
        dims = int(getattr(draws, "sample_dims", 1))
        if dims == 0:
            raise ValueError("the Result holds one point (a MAP), not posterior draws")
        return {k: jnp.reshape(v, (-1,) + jnp.shape(v)[dims:]) for k, v in params.items()}
    if not isinstance(draws, dict):
        raise TypeError(f"draws must be a Result or a dict {{name: (n, ...) array}}, got {type(draws).__name__}")
    return {k: jnp.asarray(v) for k, v in draws.items()}


def _mean_and_se(per_draw):
    """Mean over axis 0 and its standard error ``sd / sqrt(n)`` (independent draws)."""
    n = per_draw.shape[0]
    return jnp.mean(per_draw, axis=0), jnp.std(per_draw, axis=0, ddof=1) / jnp.sqrt(n)


def score(make_posterior: Callable, inputs, params: dict) -> Any:
    """``s(theta) = d/du log q(theta; u)`` at fixed physical ``theta`` (a pytree
    like ``inputs``): likelihood and prior terms that depend on ``u``.

    Args:
        make_posterior: ``inputs -> Posterior``.
        inputs: pytree of floating arrays.
        params: ``{name: value}`` (one point, physical units).
    """

    def log_q(u):
        post = _posterior(make_posterior, u)
        return -post.map_energy(post.unconstrain(params))

    return jax.grad(log_q)(inputs)


@eqx.filter_jit
def _score_terms(make_posterior, inputs, draws, quantity):
    q = jax.vmap(quantity)(draws)
    s = jax.vmap(lambda p: score(make_posterior, inputs, p))(draws)

    def covariance_terms(q_leaf):
        qc = q_leaf - jnp.mean(q_leaf, axis=0)

        def per_input(s_leaf):
            sc = s_leaf - jnp.mean(s_leaf, axis=0)
            n = qc.shape[0]
            prod = jnp.reshape(qc, (n, -1))[:, :, None] * jnp.reshape(sc, (n, -1))[:, None, :]
            prod = prod * n / (n - 1.0)  # unbiased covariance
            shape = qc.shape[1:] + sc.shape[1:]
            mean, se = _mean_and_se(prod)
            return jnp.reshape(mean, shape), jnp.reshape(se, shape)

        return jax.tree_util.tree_map(per_input, s)

    return jax.tree_util.tree_map(covariance_terms, q)


def score_function_gradient(make_posterior: Callable, inputs, draws, quantity: Callable) -> tuple[Any, Any]:
    """``d/du E_post[f(theta)] = Cov_post(f(theta), d/du log q(theta; u))`` from posterior draws.

    Module docstring for the derivation.  The standard error treats the draws as
    independent; for MCMC draws divide by the effective sample size instead
    (multiply the s.e. by ``sqrt(n / ess)``).

    Args:
        make_posterior: ``inputs -> Posterior`` (traceable in ``inputs``).
        inputs: pytree of floating arrays the draws were made at.
        draws: posterior draws: a Result (``sample``, ``Laplace.sample``) or
            ``{name: (n, *shape)}`` in physical units.
        quantity: ``f(params) -> array`` (or pytree of arrays) for one draw.

    Returns:
        ``(gradient, standard_error)``: pytrees with the structure of
        ``quantity``'s output, each leaf a pytree like ``inputs`` with leaves of
        shape ``f_shape + input_leaf_shape`` (units of f per unit of u).
    """
    check_inputs(inputs)
    flat = _flat_draws(draws)
    post = _posterior(make_posterior, inputs)
    missing = set(post.names) - set(flat)
    if missing:
        raise ValueError(f"draws lack parameter(s) {sorted(missing)} of the posterior")
    if jnp.shape(next(iter(flat.values())))[0] < 2:
        raise ValueError("the score-function estimator needs at least 2 draws")
    out = _score_terms(make_posterior, inputs, {k: flat[k] for k in post.names}, quantity)
    is_pair = lambda x: isinstance(x, tuple) and len(x) == 2 and not isinstance(x[0], tuple)
    gradient = jax.tree_util.tree_map(lambda pair: pair[0], out, is_leaf=is_pair)
    se = jax.tree_util.tree_map(lambda pair: pair[1], out, is_leaf=is_pair)
    return gradient, se


def _laplace_point(make_posterior, inputs, z0, eps, max_steps):
    """Laplace draw(s) ``z*(u) + L(u)^-T eps`` in z, ``H(u) = L L^T`` (energy with log-Jacobian)."""
    z_star = implicit_mode(make_posterior, inputs, z0, energy="laplace", max_steps=max_steps)
    post = _posterior(make_posterior, inputs)
    h = jax.hessian(post.energy)(z_star)
    chol = jnp.linalg.cholesky(0.5 * (h + h.T))
    offsets = jax.scipy.linalg.solve_triangular(chol.T, eps.T, lower=False).T  # rows ~ N(0, H^-1)
    return post, z_star + offsets


def _laplace_values(make_posterior, inputs, z0, quantity, eps, max_steps):
    """``f(T(z*(u) + L(u)^-T eps_s))`` for every row ``eps_s``: a pytree with leading axis n."""
    post, z = _laplace_point(make_posterior, inputs, z0, eps, max_steps)
    return jax.vmap(lambda zi: quantity(post.constrain(zi)))(z)


def laplace_expectation(make_posterior: Callable, inputs, z0, quantity: Callable, eps, *, max_steps: int = 500):
    """``E[f(theta)]`` under the Laplace approximation, as a differentiable function of ``inputs``.

    ``(1/n) sum_s f(T(z*(u) + L(u)^-T eps_s))`` with fixed standard-normal ``eps``;
    ``jax.jacfwd``/``jax.grad`` with respect to ``inputs`` give the
    reparameterisation estimator (module docstring), through the implicit mode
    and the Hessian's Cholesky factor.

    Args:
        make_posterior: ``inputs -> Posterior`` (traceable in ``inputs``).
        inputs: pytree of floating arrays.
        z0: starting point for the mode, e.g. ``fit.laplace.mode``.
        quantity: ``f(params) -> array`` for one draw (physical units).
        eps: ``(n, dim)`` standard-normal draws (``jax.random.normal(key, (n, dim))``).
        max_steps: Levenberg-Marquardt iteration cap for the mode.

    Returns:
        The Monte Carlo mean of ``f`` (the shape of ``f``'s output).
    """
    values = _laplace_values(make_posterior, inputs, jnp.asarray(z0), quantity, eps, max_steps)
    return jax.tree_util.tree_map(lambda v: jnp.mean(v, axis=0), values)


@eqx.filter_jit
def _per_draw_gradients(make_posterior, inputs, z0, quantity, eps, max_steps):
    # one mode solve and one Hessian for all draws; d/du of every draw's value at once
    return jax.jacfwd(lambda u: _laplace_values(make_posterior, u, z0, quantity, eps, max_steps))(inputs)


def laplace_expectation_gradient(
    make_posterior: Callable, inputs, fit: Any, quantity: Callable, key, n_draws: int = 1000, *, max_steps: int = 500
) -> tuple[Any, Any]:
    """Reparameterisation estimate of ``d/du E_Laplace[f(theta)]`` with its standard error.

    Per draw ``eps_s``: ``g_s = d/du f(T(z*(u) + L(u)^-T eps_s))``; the estimate is
    the mean of ``g_s``, the s.e. their sd over ``sqrt(n_draws)`` (independent
    draws).

    Args:
        make_posterior: ``inputs -> Posterior`` (traceable in ``inputs``).
        inputs: pytree of floating arrays.
        fit: a :func:`~jaxinv.map_estimate` Result (its ``laplace.mode`` starts the
            solve) or an unconstrained starting point ``(dim,)``.
        quantity: ``f(params) -> array`` for one draw (physical units).
        key: PRNG key for ``eps``.
        n_draws: number of draws.
        max_steps: Levenberg-Marquardt iteration cap for the mode.

    Returns:
        ``(gradient, standard_error)``, each with the structure of
        ``jax.jacfwd(lambda u: f(...))(inputs)``.
    """
    check_inputs(inputs)
    post = _posterior(make_posterior, inputs)
    laplace = getattr(fit, "laplace", None)
    z0 = laplace.mode if laplace is not None else _unconstrained_point(post, fit)
    eps = jax.random.normal(key, (n_draws, post.dim), dtype=jnp.result_type(float))
    per_draw = _per_draw_gradients(make_posterior, inputs, jnp.asarray(z0), quantity, eps, max_steps)
    gradient = jax.tree_util.tree_map(lambda g: jnp.mean(g, axis=0), per_draw)
    se = jax.tree_util.tree_map(lambda g: jnp.std(g, axis=0, ddof=1) / jnp.sqrt(n_draws), per_draw)
    return gradient, se
