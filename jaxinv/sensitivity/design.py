"""Bayesian experimental design: expected information gain, expected posterior variance.

A design ``d`` (measurement times, temperatures, ...) enters through the model,
``make_model(d) -> Model``; every function here is a pure, differentiable
function of that model's arrays, so ``jax.grad(lambda d: criterion(make_model(d)))``
optimises a design (:func:`optimize_design`).  Prior draws are made from an
explicit key; keeping the key fixed while the design changes (common random
numbers) makes the criterion a smooth deterministic function of the design.

**Expected information gain** (Lindley 1956, Ann. Math. Stat. 27, 986; Chaloner &
Verdinelli 1995, Statist. Sci. 10, 273; Ryan et al. 2016, Int. Stat. Rev. 84, 128):

    EIG(d) = E_{theta, y | d}[ log p(y | theta, d) - log p(y | d) ]
           = H[p(theta)] - E_y[ H[p(theta | y, d)] ]          (nats).

Three estimators:

* ``"fisher"``: the posterior precision at the truth is approximated by
  ``F_z(theta) + P(z)`` (Fisher information in unconstrained coordinates plus
  the prior's local precision ``P = -d^2 log p_z/dz^2``), the prior by the
  Gaussian with precision ``P``:
  ``EIG ≈ E_{theta ~ prior}[1/2 log det(I + P^-1 F_z)]``; exact for a
  linear-Gaussian model, ``1/2 log det(I + Sigma_0 X^T Sigma^-1 X)``.
* ``"laplace"``: the exact prior entropy (Monte Carlo of ``-log p_z``) minus the
  Laplace posterior entropy ``1/2 log det(2 pi e (F_z + P)^-1)``, both in z.
* ``"nested"``: nested Monte Carlo (Ryan 2003, J. Comput. Graph. Stat. 12, 585),
  ``(1/N) sum_n [log p(y_n | theta_n) - log (1/M) sum_m p(y_n | theta_m)]``,
  ``y_n ~ p(y | theta_n)``, with one shared inner set of M prior draws; consistent
  for any model, biased upwards by O(1/M).

The Fisher-based estimators need known noise levels (the likelihood has no
inferred parameters); the nested estimator does not.

**Expected posterior variance** of a scalar quantity q(theta) (e.g. log T1):
``E_{theta ~ prior}[grad_z q^T (F_z + P)^-1 grad_z q]``, the Bayesian
(prior-averaged) large-sample posterior variance, the quantity an A-optimal /
c-optimal Bayesian design minimises (Chaloner & Verdinelli 1995, sec. 2.2).
"""

from __future__ import annotations

import math
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax

from ..model import Model
from .fisher import _forward_names, _model, _simulate, _unconstrained_slices, fisher_information

__all__ = ["prior_draws", "expected_information_gain", "expected_posterior_variance", "optimize_design"]


def prior_draws(model: Model, key, n: int) -> dict[str, jax.Array]:
    """``n`` ancestral draws of every parameter from the prior, ``{name: (n, *shape)}``.

    Args:
        model: the Model.
        key: PRNG key.
        n: number of draws.
    """
    model = _model(model)
    priors = model.all_priors
    flat = [name for name, p in priors.items() if not p.is_proper]
    if flat:
        raise ValueError(f"parameters {flat} have improper Flat priors: there is no prior to draw from")
    keys = dict(zip(model.parameter_names, jax.random.split(key, len(model.parameter_names))))
    drawn = {}
    for name in model.sampling_order:
        prior = priors[name]
        drawn[name] = prior.sample(keys[name], n, drawn) if prior.parents else prior.sample(keys[name], n)
    return {name: drawn[name] for name in model.parameter_names}


def _require_known_noise(model: Model, method: str):
    inferred = list(model.likelihood.parameters()) + list(model.likelihood.references())
    if inferred:
        raise ValueError(
            f"the {method!r} estimator needs known noise levels, but the likelihood infers {inferred}; "
            "fix them, or use method='nested'"
        )


def _log_prior_z(model: Model, v, params):
    """``log p_z`` of the forward-model parameters in unconstrained coordinates ``v``,
    other parameters (parents of conditional priors) held at ``params``."""
    values = dict(params)
    slices = _unconstrained_slices(model)
    for name, sl in slices.items():
        values[name] = model.priors[name].constrain(jnp.reshape(v[sl], model.priors[name].unconstrained_shape))
    total = 0.0
    for name, sl in slices.items():
        prior = model.priors[name]
        u = jnp.reshape(v[sl], prior.unconstrained_shape)
        total = total + prior.log_density_unconstrained(u, values if prior.parents else None)
    return total


def _z_vector(model: Model, params):
    return jnp.concatenate([jnp.ravel(model.priors[n].unconstrain(params[n])) for n in _forward_names(model)])


def _local_terms(model: Model, params):
    """``(log p_z(z), log det P, log det (F_z + P), P + F_z)`` at one prior draw."""
    v = _z_vector(model, params)
    prior_precision = -jax.hessian(lambda w: _log_prior_z(model, w, params))(v)
    posterior_precision = prior_precision + fisher_information(model, params, unconstrained=True)
    logdet = lambda a: 2.0 * jnp.sum(jnp.log(jnp.diag(jnp.linalg.cholesky(0.5 * (a + a.T)))))
    return _log_prior_z(model, v, params), logdet(prior_precision), logdet(posterior_precision), posterior_precision


def _mean_se(values):
    n = values.shape[0]
    return jnp.mean(values), jnp.std(values, ddof=1) / jnp.sqrt(n)


@eqx.filter_jit
def _eig_local(model: Model, draws, laplace: bool):
    def one(params):
        log_pz, logdet_prior, logdet_post, _ = _local_terms(model, params)
        if laplace:
            d = sum(model.priors[n].unconstrained_size for n in _forward_names(model))
            return -log_pz - 0.5 * d * math.log(2.0 * math.pi * math.e) + 0.5 * logdet_post
        return 0.5 * (logdet_post - logdet_prior)

    return _mean_se(jax.vmap(one)(draws))


@eqx.filter_jit
def _eig_nested(model: Model, outer, inner, key):
    def forward(p):
        return model.forward({k: p[k] for k in model.priors})

    def log_lik(y, mu, p):
        return model.likelihood.log_prob(y, mu, p)

    mu_inner = jax.vmap(forward)(inner)
    n_inner = jax.tree_util.tree_leaves(inner)[0].shape[0]
    keys = jax.random.split(key, jax.tree_util.tree_leaves(outer)[0].shape[0])

    def one(args):
        p, k = args
        mu = forward(p)
        y = _simulate(model.likelihood, mu, p, k)
        inner_ll = jax.vmap(lambda m, q: log_lik(y, m, q))(mu_inner, inner)
        return log_lik(y, mu, p) - (jax.scipy.special.logsumexp(inner_ll) - math.log(n_inner))

    return _mean_se(jax.lax.map(one, (outer, keys)))


def expected_information_gain(
    model: Model, key, n_outer: int = 256, *, method: str = "fisher", n_inner: int = 1024
) -> tuple[jax.Array, jax.Array]:
    """Expected information gain (nats) of the experiment the model describes.

    Module docstring for the three estimators and their sources.  Differentiable
    in the model's arrays (the design) for ``"fisher"`` and ``"laplace"``, and
    for ``"nested"`` with reparameterisable noise (not Poisson).

    Args:
        model: ``make_model(design)``: forward model, priors and likelihood.
        key: PRNG key for the prior draws (and the simulated data of ``"nested"``).
        n_outer: number of prior draws (outer samples).
        method: ``"fisher"``, ``"laplace"`` or ``"nested"``.
        n_inner: inner prior draws of the nested estimator.

    Returns:
        ``(eig, standard_error)``: the estimate and its Monte Carlo s.e. over the
        outer draws (for ``"nested"`` the O(1/n_inner) bias is not included).
    """
    model = _model(model)
    if method in ("fisher", "laplace"):
        _require_known_noise(model, method)
        return _eig_local(model, prior_draws(model, key, n_outer), method == "laplace")
    if method == "nested":
        k_outer, k_inner, k_data = jax.random.split(key, 3)
        return _eig_nested(model, prior_draws(model, k_outer, n_outer), prior_draws(model, k_inner, n_inner), k_data)
    raise ValueError(f"method must be 'fisher', 'laplace' or 'nested', got {method!r}")


@eqx.filter_jit
def _posterior_variances(model: Model, draws, quantity: Callable):
    def one(params):
        *_, precision = _local_terms(model, params)
        v = _z_vector(model, params)
        slices = _unconstrained_slices(model)

        def q_of(w):
            p = dict(params)
            for name, sl in slices.items():
                p[name] = model.priors[name].constrain(jnp.reshape(w[sl], model.priors[name].unconstrained_shape))
            return quantity(p)

        g = jax.grad(q_of)(v)
        return g @ jnp.linalg.solve(precision, g)

    return jax.vmap(one)(draws)


def expected_posterior_variance(
    model: Model, key, quantity: Callable, n_draws: int = 256
) -> tuple[jax.Array, jax.Array]:
    """Prior-averaged large-sample posterior variance of a scalar ``quantity(params)``.

    ``E_{theta ~ prior}[grad_z q^T (F_z(theta) + P(z))^-1 grad_z q]`` (module
    docstring), in the squared units of ``q``.  A c-optimal Bayesian design
    criterion: minimise it over the design.  Needs known noise levels.

    Args:
        model: ``make_model(design)``.
        key: PRNG key for the prior draws (keep it fixed while optimising).
        quantity: scalar function of ``{name: value}`` (physical units), e.g.
            ``lambda p: jnp.log(p["relaxation_time"])``.
        n_draws: number of prior draws.

    Returns:
        ``(variance, standard_error)`` over the prior draws.
    """
    model = _model(model)
    _require_known_noise(model, "expected_posterior_variance")
    return _mean_se(_posterior_variances(model, prior_draws(model, key, n_draws), quantity))


def optimize_design(
    criterion: Callable, design, *, steps: int = 300, learning_rate: float = 0.05, optimizer=None
):
    """Minimise ``criterion(design)`` by gradient descent (optax Adam by default).

    Args:
        criterion: differentiable scalar function of the design pytree, e.g.
            ``lambda a: expected_posterior_variance(make_model(a), key, q)[0]``.
        design: starting design (pytree of floating arrays, best in unbounded
            coordinates, e.g. logits of the times within their range).
        steps: number of optimiser steps.
        learning_rate: Adam step size (ignored when ``optimizer`` is given).
        optimizer: an ``optax.GradientTransformation``.

    Returns:
        ``(design, history)``: the final design and the criterion at every step.
    """
    opt = optax.adam(learning_rate) if optimizer is None else optimizer
    value_and_grad = jax.value_and_grad(criterion)

    @jax.jit
    def run(design):
        def step(carry, _):
            d, state = carry
            value, grad = value_and_grad(d)
            updates, state = opt.update(grad, state, d)
            return (optax.apply_updates(d, updates), state), value

        (d, _), history = jax.lax.scan(step, (design, opt.init(design)), None, length=steps)
        return d, history

    return run(design)
