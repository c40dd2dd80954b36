"""Latent Gaussian fields: a Gaussian Markov random field seen through a per-cell likelihood.

The model of a smooth unknown field ``x`` on a regular chain or grid (a map, a profile)
observed cell by cell:

    x ~ GaussianMRF(m, Q),   Q = tau R + b^-2 P          (:func:`jaxinv.priors.GaussianMRF`)
    y_i | x ~ p(y_i | x_i)   independently for each cell i.

The posterior is approximated by the Gaussian at its mode (Rue, Martino & Chopin 2009,
J. R. Stat. Soc. B 71, 319, eq. 3, the Gaussian approximation of INLA):

    p(x | y, tau) ≈ N(x*, H^-1),   H = Q + W,   W = diag(-d^2 log p(y_i | x_i) / dx_i^2) at x*,

exact when the likelihood is Gaussian.  Nothing here is dense, so fields of 10^5-10^6
cells fit:

* the mode by Newton's method, each step's system ``H dx = -grad E`` solved by conjugate
  gradients (:func:`jax.scipy.sparse.linalg.cg`, Jacobi preconditioner), ``Q`` applied
  matrix-free through the prior (``Q v = J^T J v``, ``J`` its scaled difference
  operator), with a backtracking line search on the energy
  ``E(x) = -sum_i log p(y_i | x_i) + (x - m)^T Q (x - m) / 2``;
* exact draws of ``N(x*, H^-1)`` by perturbation-optimisation (Papandreou & Yuille 2010,
  NIPS 23, "Gaussian sampling by local perturbations"; Rue & Held 2005, *Gaussian Markov
  Random Fields*, sec. 2.3): ``x = x* + H^-1 (J^T e_1 + W^(1/2) e_2)``, ``e_1, e_2 ~ N(0, I)``
  -- the right-hand side has covariance ``Q + W = H``, so ``x - x*`` has covariance
  ``H^-1`` -- one CG solve per draw;
* optionally the smoothness ``tau`` by type-II maximum likelihood (maximum of
  ``p(y | tau)``).  With ``log det Q = c + (N - r) log tau``
  (:meth:`~jaxinv.priors.GaussianMRFDistribution.log_det_precision`; ``N`` cells, ``r``
  boundary cells) the score in the Gaussian approximation is (the EM identity)

      2 d log p(y | tau) / d log tau = (N - r) - tau E_q[(x - m)^T R (x - m)],

  with ``E_q[.] = (x* - m)^T R (x* - m) + E_q[(x - x*)^T R (x - x*)]``, the second term
  estimated from draws with fixed random numbers (so the score is a smooth function of
  ``tau``).  Its root is found by a safeguarded secant search in ``log tau`` (steps of at
  most ``MAX_LOG_STEP`` towards the root until it is bracketed, then secant steps, with
  bisection where they would leave the bracket; clipped to ``precision_bounds``): plain
  EM iteration of ``tau <- (N - r) / E_q[...]`` crawls when most cells carry no data.  For a
  Gaussian likelihood the root is the exact maximum of the marginal likelihood, up to the
  Monte Carlo error of ``search_draws`` (``tests/test_latent_field.py`` checks it against
  the dense closed form).  The conjugate-gradient solves report no convergence flag
  (:func:`jax.scipy.sparse.linalg.cg` gives none); ``converged`` covers the Newton and the
  smoothness searches.

The likelihood must be *factorised*: ``log_likelihood(x)`` returns one value per cell,
the i-th depending on ``x_i`` only (its diagonal Hessian is taken as ``d/dx`` of the
gradient along a vector of ones).  Where it is not concave ``W`` is clipped at 0.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.sparse.linalg import cg

from ..priors import GaussianMRFDistribution, Prior

__all__ = ["LatentField", "gmrf_laplace"]

MAX_LOG_STEP = 2.0  # largest change of log tau per step of the smoothness search


class LatentField(eqx.Module):
    """A latent field's Gaussian approximation (:func:`gmrf_laplace`).

    Attributes:
        mode: the posterior mode ``x*`` (field shape).
        sd: the posterior standard deviation of each cell, from the draws.
        draws: ``(n_draws, *shape)`` exact draws of ``N(x*, H^-1)``.
        precision: the smoothness ``tau`` used (estimated when asked).
        newton_steps: Newton steps of the last mode search.
        converged: the last mode search met its tolerance, and the smoothness search (when
            run) too.
        search_steps: steps of the smoothness search (0 when ``tau`` was fixed or started on
            a bound it presses against).
    """

    mode: jax.Array
    sd: jax.Array
    draws: jax.Array
    precision: jax.Array
    newton_steps: jax.Array
    converged: jax.Array
    search_steps: jax.Array


def _distribution(prior) -> GaussianMRFDistribution:
    dist = prior.distribution if isinstance(prior, Prior) else prior
    if not isinstance(dist, GaussianMRFDistribution):
        raise TypeError("gmrf_laplace needs a GaussianMRF prior with a fixed precision "
                        f"(ji.priors.GaussianMRF(shape, precision=tau, ...)), got {type(dist).__name__}")
    return dist


def _with_precision(dist: GaussianMRFDistribution, tau) -> GaussianMRFDistribution:
    return GaussianMRFDistribution(dist.structure, tau, dist.loc, dist.boundary_sd)


def _tolerances(dtype):
    eps = float(jnp.finfo(dtype).eps)
    return 1e3 * eps, max(1e-10, 10 * eps)  # Newton decrement (relative to 1 + |E|), CG relative residual


def _curvature(log_likelihood, x):
    """Gradient and ``W = max(0, -diag Hessian)`` of the (factorised) log-likelihood."""
    gradient = jax.grad(lambda u: jnp.sum(log_likelihood(u)))
    g, h = jax.jvp(gradient, (x,), (jnp.ones_like(x),))
    return g, jnp.maximum(-h, 0.0)


def _solve(dist, weight, rhs, x0, cg_maxiter):
    """``(Q + diag(weight))^-1 rhs`` by Jacobi-preconditioned conjugate gradients."""
    _, cg_tol = _tolerances(rhs.dtype)
    inverse_diagonal = 1.0 / (dist.precision_diagonal() + weight)
    solution, _ = cg(lambda v: dist.precision_matvec(v) + weight * v, rhs, x0=x0, tol=cg_tol,
                     maxiter=cg_maxiter, M=lambda v: inverse_diagonal * v)
    return solution


def _mode(dist, log_likelihood, x0, max_steps, cg_maxiter):
    """Newton's method with a backtracking line search; returns ``(x*, W, steps, converged)``."""
    decrement_tol, _ = _tolerances(x0.dtype)

    def energy(x):
        return -jnp.sum(log_likelihood(x)) + 0.5 * dist.quadratic_form(x)

    def step(state):
        x, n, _ = state
        g_lik, weight = _curvature(log_likelihood, x)
        gradient = dist.precision_matvec(x - dist.loc) - g_lik
        dx = _solve(dist, weight, -gradient, jnp.zeros_like(x), cg_maxiter)
        decrement = -jnp.sum(gradient * dx)  # dx^T H dx: twice the predicted decrease
        e0 = energy(x)

        def shorter(carry):
            t, _ = carry
            return t * 0.5, energy(x + 0.5 * t * dx)

        def too_long(carry):  # Armijo with c = 1/4 (g^T dx = -decrement); after 30 halvings the step is taken
            t, e = carry
            return (~(e <= e0 - 0.25 * t * decrement)) & (t > 2.0**-30)

        t, _ = jax.lax.while_loop(too_long, shorter, (jnp.asarray(1.0, x.dtype), energy(x + dx)))
        done = 0.5 * decrement <= decrement_tol * (1.0 + jnp.abs(e0))
        x_new = jnp.where(done, x, x + t * dx)
        return x_new, n + 1, done

    def going(state):
        _, n, done = state
        return (~done) & (n < max_steps)

    x, n, done = jax.lax.while_loop(going, step, (x0, jnp.asarray(0), jnp.asarray(False)))
    _, weight = _curvature(log_likelihood, x)
    return x, weight, n, done


def _draws(dist, weight, mode, key, n_draws, cg_maxiter, batch_size):
    """``n_draws`` exact draws of ``N(mode, (Q + diag(weight))^-1)`` (perturbation-optimisation)."""
    def one(k):
        k1, k2 = jax.random.split(k)
        rhs = dist.precision_draw(k1) + jnp.sqrt(weight) * jax.random.normal(k2, mode.shape, mode.dtype)
        return mode + _solve(dist, weight, rhs, jnp.zeros_like(mode), cg_maxiter)

    return jax.lax.map(one, jax.random.split(key, n_draws), batch_size=batch_size)


@eqx.filter_jit
def gmrf_laplace(prior, log_likelihood: Callable[[jax.Array], jax.Array], key, *, n_draws: int = 100,
                 init: Any = None, estimate_precision: bool = False, precision_bounds=(0.0, jnp.inf),
                 search_draws: int = 8, max_search_steps: int = 100, search_tol: float = 0.005,
                 max_newton_steps: int = 50,
                 cg_maxiter: int = 5000, draw_batch: int = 16) -> LatentField:
    """Gaussian approximation of a latent GMRF's posterior, with exact draws of it.

    Args:
        prior: ``ji.priors.GaussianMRF(shape, precision=tau, ...)`` (a fixed ``tau``; with
            ``estimate_precision`` it is the starting value).
        log_likelihood: ``x -> (per-cell log p(y_i | x_i))`` of the field's shape, each
            value depending on its own cell only.  A function, or an ``eqx.Module`` holding
            the data as arrays (then one compilation serves every dataset of that shape).
        key: PRNG key of the draws (and of the smoothness search's draws).
        n_draws: draws returned.
        init: starting field of the mode search (default the prior mean).
        estimate_precision: find ``tau`` by type-II maximum likelihood.
        precision_bounds: ``(lower, upper)`` bounds of ``tau`` in the search: the upper bound stops
            a field that the data find featureless from going to an infinitely stiff prior
            (and the CG solves from stiffening with it).
        search_draws: draws per step of the search (the score's Monte Carlo error falls as
            ``1/sqrt(search_draws)``; raise it where most cells carry no data).
        max_search_steps: at most this many steps of the search.
        search_tol: the search stops when ``|Delta log tau| < search_tol`` inside a bracket
            of the root (or the bracket is that narrow).
        max_newton_steps: Newton iterations per mode search.
        cg_maxiter: conjugate-gradient iterations per linear solve.
        draw_batch: draws solved at once (memory ``~ draw_batch x N``).
    """
    dist = _distribution(prior)
    shape = dist.structure.shape
    x0 = jnp.broadcast_to(dist.loc if init is None else jnp.asarray(init), shape).astype(jnp.result_type(float))
    n_free = dist.structure.size - dist.structure.n_pinned
    log_lower, log_upper = jnp.log(precision_bounds[0]), jnp.log(precision_bounds[1])
    key_search, key_draws = jax.random.split(key)

    def score(log_tau, x):
        """``2/(N - r) d log p(y | tau)/d log tau = 1 - tau E_q[(x-m)^T R (x-m)] / (N - r)``
        (from draws with fixed random numbers, so a smooth function of ``tau``), and the mode."""
        d = _with_precision(dist, jnp.exp(log_tau))
        x, weight, _, newton_ok = _mode(d, log_likelihood, x, max_newton_steps, cg_maxiter)
        draws = _draws(d, weight, x, key_search, search_draws, cg_maxiter, draw_batch)
        # E_q[(x-m)^T R (x-m)] = (x*-m)^T R (x*-m) + E_q[(x-x*)^T R (x-x*)]: only the trace
        # term is estimated, without the zero-mean cross term's noise
        spread = jnp.mean(jax.vmap(lambda v: d.roughness(v - x + d.loc))(draws))
        return 1.0 - jnp.exp(log_tau) * (d.roughness(x) + spread) / n_free, x, newton_ok

    def search_step(state):
        u, h, u_prev, h_prev, lo, hi, x, n, _, ok = state
        outward = u + jnp.sign(h) * MAX_LOG_STEP  # towards the root while none is bracketed
        secant = u - h * (u - u_prev) / jnp.where(h == h_prev, 1.0, h - h_prev)
        proposal = jnp.where((n == 0) | (h == h_prev), outward, secant)
        proposal = jnp.clip(proposal, u - MAX_LOG_STEP, u + MAX_LOG_STEP)
        bracketed = jnp.isfinite(lo) & jnp.isfinite(hi)
        inside = (proposal > lo) & (proposal < hi)
        proposal = jnp.where(inside, proposal, jnp.where(bracketed, 0.5 * (lo + hi), outward))
        proposal = jnp.clip(proposal, log_lower, log_upper)
        h_new, x, newton_ok = score(proposal, x)
        lo = jnp.where(h_new > 0, proposal, lo)  # the likelihood still rises with tau: the root is above
        hi = jnp.where(h_new > 0, hi, proposal)
        pinned = ((proposal >= log_upper) & (h_new > 0)) | ((proposal <= log_lower) & (h_new < 0))
        small_step = (jnp.abs(proposal - u) < search_tol) & jnp.isfinite(lo) & jnp.isfinite(hi)
        done = small_step | pinned | (hi - lo < search_tol)
        return proposal, h_new, u, h, lo, hi, x, n + 1, done, ok & newton_ok

    def searching(state):
        n, done = state[-3], state[-2]
        return (~done) & (n < max_search_steps)

    log_tau0 = jnp.clip(jnp.log(jnp.asarray(dist.precision, x0.dtype)), log_lower, log_upper)
    if estimate_precision:
        h0, x0, ok0 = score(log_tau0, x0)
        inf = jnp.asarray(jnp.inf, x0.dtype)
        lo0, hi0 = jnp.where(h0 > 0, log_tau0, -inf), jnp.where(h0 > 0, inf, log_tau0)
        pinned0 = ((log_tau0 >= log_upper) & (h0 > 0)) | ((log_tau0 <= log_lower) & (h0 < 0))
        state = (log_tau0, h0, log_tau0, h0, lo0, hi0, x0, jnp.asarray(0), pinned0, ok0)
        log_tau, _, _, _, _, _, x0, search_steps, done, ok = jax.lax.while_loop(searching, search_step, state)
        search_ok = done & ok
    else:
        log_tau, search_steps, search_ok = log_tau0, jnp.asarray(0), jnp.asarray(True)
    d = _with_precision(dist, jnp.exp(log_tau))
    mode, weight, newton_steps, newton_ok = _mode(d, log_likelihood, x0, max_newton_steps, cg_maxiter)
    draws = _draws(d, weight, mode, key_draws, n_draws, cg_maxiter, draw_batch)
    return LatentField(mode, jnp.std(draws, axis=0), draws, jnp.exp(log_tau), newton_steps, search_ok & newton_ok,
                       search_steps)
