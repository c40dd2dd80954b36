"""Fisher information of the forward-model parameters, Cramér-Rao bounds, simulated data.

For data ``y_i`` whose distribution depends on theta only through the prediction
``mu_i = f_i(theta)`` (every jaxinv likelihood with its noise level known), the
Fisher information is exact and needs no simulation (e.g. Kay 1993,
"Fundamentals of Statistical Signal Processing: Estimation Theory", eq. 3.31;
Seber & Wild 1989, "Nonlinear Regression", sec. 2.1):

    F(theta) = J^T W J,     J_ij = d mu_i / d theta_j,     W = diag(w_i),

with ``w_i = E[(d log p(y_i | mu_i)/d mu_i)^2]`` the information about the mean:

    Normal(sigma)        w = 1 / sigma^2                 (the Gauss-Newton matrix)
    LogNormal(sigma)     w = 1 / (sigma^2 mu^2)
    Poisson              w = 1 / mu
    StudentT(nu, sigma)  w = (nu + 1) / ((nu + 3) sigma^2)   (Lange, Little & Taylor 1989, JASA 84, 881)

and ``F`` summed over the measurements of a Joint.  Units: ``F_jk`` is in
1/(units of theta_j x units of theta_k).  In unconstrained coordinates
``F_z = (dtheta/dz)^T F (dtheta/dz)``.  For any other likelihood,
:func:`score_fisher_information` averages the outer product of the score
``s = d log p(y | theta)/d theta`` over data simulated at theta,
``F = E_y[s s^T]``.

Cramér-Rao (Rao 1945; Cramér 1946): an unbiased estimator of theta_j has
``sd >= sqrt((F^-1)_jj)``, the large-sample sd of the MLE; the Bayesian posterior
covariance adds the prior precision (:mod:`.design`).

Layout: the parameters are the forward model's (``Model.priors`` order, each
flattened; noise parameters are held at the values in ``params`` and left out),
so ``F`` is ``(p, p)`` with ``p`` the total size; :func:`parameter_slices` maps
names to their rows.
"""

from __future__ import annotations

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ..likelihoods import Joint, Likelihood, LogNormal, Normal, Poisson, StudentT
from ..model import Model, Posterior

__all__ = [
    "fisher_information",
    "score_fisher_information",
    "cramer_rao_bound",
    "parameter_slices",
    "simulate_data",
]


def _model(model_or_posterior) -> Model:
    if isinstance(model_or_posterior, Posterior):
        return model_or_posterior.model
    if isinstance(model_or_posterior, Model):
        return model_or_posterior
    raise TypeError(f"expected a jaxinv Model or Posterior, got {type(model_or_posterior).__name__}")


def _forward_names(model: Model) -> tuple[str, ...]:
    """Parameters of the forward model proper (declared noise levels a likelihood reads left out)."""
    noise = set(model.likelihood.references())
    return tuple(name for name in model.priors if name not in noise)


def parameter_slices(model_or_posterior) -> dict[str, slice]:
    """``{name: slice}``: the rows/columns of each forward-model parameter in the
    Fisher matrix of :func:`fisher_information` (physical coordinates).

    Args:
        model_or_posterior: a Model or Posterior.
    """
    model = _model(model_or_posterior)
    out, start = {}, 0
    for name in _forward_names(model):
        size = math.prod(model.priors[name].shape)
        out[name] = slice(start, start + size)
        start += size
    return out


def _unconstrained_slices(model: Model) -> dict[str, slice]:
    out, start = {}, 0
    for name in _forward_names(model):
        size = model.priors[name].unconstrained_size
        out[name] = slice(start, start + size)
        start += size
    return out


def _check_params(model: Model, params: dict) -> dict:
    needed = set(model.parameter_names)
    missing = needed - set(params)
    if missing:
        raise ValueError(f"params lack value(s) for {sorted(missing)} (the model's parameters: {list(needed)})")
    return {k: jnp.asarray(v, dtype=jnp.result_type(float)) for k, v in params.items()}


def _vector_to_params(model: Model, params: dict, v, unconstrained: bool) -> dict:
    """``params`` with the forward-model parameters replaced from the flat vector ``v``."""
    slices = _unconstrained_slices(model) if unconstrained else parameter_slices(model)
    out = dict(params)
    for name, sl in slices.items():
        prior = model.priors[name]
        if unconstrained:
            out[name] = prior.constrain(jnp.reshape(v[sl], prior.unconstrained_shape))
        else:
            out[name] = jnp.reshape(v[sl], prior.shape)
    return out


def _params_to_vector(model: Model, params: dict, unconstrained: bool):
    parts = []
    for name in _forward_names(model):
        x = params[name]
        parts.append(jnp.ravel(model.priors[name].unconstrain(x) if unconstrained else x))
    return jnp.concatenate(parts)


def _mean_information(likelihood: Likelihood, mu, params):
    """Per-datum Fisher information about the mean, ``w_i`` (module docstring)."""
    if isinstance(likelihood, Joint):
        return {n: _mean_information(likelihood.likelihoods[n], mu[n], params) for n in likelihood.names}
    if isinstance(likelihood, (Normal, LogNormal)):
        sigma = jnp.broadcast_to(likelihood._value(likelihood.sigma, likelihood.name, params), jnp.shape(mu))
        w = 1.0 / sigma**2
        return w / mu**2 if isinstance(likelihood, LogNormal) else w
    if isinstance(likelihood, Poisson):
        return 1.0 / mu
    if isinstance(likelihood, StudentT):
        sigma = likelihood._value(likelihood.sigma, likelihood.name, params)
        nu = likelihood._value(likelihood.df, likelihood.df_name, params)
        return jnp.broadcast_to((nu + 1.0) / ((nu + 3.0) * sigma**2), jnp.shape(mu))
    raise ValueError(
        f"no closed-form Fisher information for the {type(likelihood).__name__} likelihood; "
        "use score_fisher_information (Monte Carlo over simulated data)"
    )


def fisher_information(model_or_posterior, params: dict, *, unconstrained: bool = False) -> jax.Array:
    """Expected Fisher information ``F = J^T W J`` of the forward-model parameters at ``params``.

    Exact for Normal, LogNormal, Poisson, StudentT likelihoods and Joints of them
    (module docstring); for Normal noise of known sigma it is the Gauss-Newton
    matrix ``J^T Sigma^-1 J``.  The data are not used (F is an expectation over
    them), so a Model will do.  Pure and differentiable in ``params`` and in the
    model's arrays (measurement times, ...): ``jit``/``vmap``/``grad`` safe.

    Args:
        model_or_posterior: a Model or Posterior.
        params: ``{name: value}`` for every parameter (physical units; noise
            levels included when they are inferred).
        unconstrained: return ``F_z = (dtheta/dz)^T F (dtheta/dz)`` in the
            unconstrained coordinates of the forward-model parameters instead.

    Returns:
        ``(p, p)`` matrix; rows in the order of :func:`parameter_slices`.
    """
    model = _model(model_or_posterior)
    params = _check_params(model, params)
    v = _params_to_vector(model, params, unconstrained)

    def prediction(v):
        return model.forward(_vector_to_params(model, params, v, unconstrained))

    mu = prediction(v)
    jac = jax.jacfwd(prediction)(v)
    w = _mean_information(model.likelihood, mu, params)

    def block(j, wi):
        j = jnp.reshape(j, (-1, v.size))
        return j.T @ (jnp.ravel(wi)[:, None] * j)

    blocks = jax.tree_util.tree_leaves(jax.tree_util.tree_map(block, jac, w))
    return sum(blocks)


def simulate_data(model_or_posterior, params: dict, key) -> Any:
    """One simulated dataset ``y ~ p(y | theta)`` from the model's likelihood.

    Normal: ``mu + sigma eps``; LogNormal: ``mu exp(sigma eps)``; Poisson counts;
    StudentT: ``mu + sigma t_nu``; a Joint: ``{measurement: y}``.  Differentiable
    in ``params`` except for Poisson (reparameterisation).

    Args:
        model_or_posterior: a Model or Posterior.
        params: ``{name: value}`` for every parameter (physical units).
        key: PRNG key.
    """
    model = _model(model_or_posterior)
    params = _check_params(model, params)
    mu = model.forward({k: params[k] for k in model.priors})
    return _simulate(model.likelihood, mu, params, key)


def _simulate(likelihood: Likelihood, mu, params, key):
    if isinstance(likelihood, Joint):
        keys = dict(zip(likelihood.names, jax.random.split(key, len(likelihood.names))))
        return {n: _simulate(likelihood.likelihoods[n], mu[n], params, keys[n]) for n in likelihood.names}
    shape = jnp.shape(mu)
    if isinstance(likelihood, (Normal, LogNormal)):
        sigma = likelihood._value(likelihood.sigma, likelihood.name, params)
        eps = sigma * jax.random.normal(key, shape, dtype=jnp.result_type(float))
        return mu * jnp.exp(eps) if isinstance(likelihood, LogNormal) else mu + eps
    if isinstance(likelihood, Poisson):
        return jax.random.poisson(key, mu, shape).astype(jnp.result_type(float))
    if isinstance(likelihood, StudentT):
        sigma = likelihood._value(likelihood.sigma, likelihood.name, params)
        nu = likelihood._value(likelihood.df, likelihood.df_name, params)
        return mu + sigma * jax.random.t(key, nu, shape, dtype=jnp.result_type(float))
    raise ValueError(f"cannot simulate data from the {type(likelihood).__name__} likelihood")


@eqx.filter_jit
def _score_outer_products(model: Model, params, keys, unconstrained: bool):
    v = _params_to_vector(model, params, unconstrained)

    def log_likelihood(v, y):
        p = _vector_to_params(model, params, v, unconstrained)
        return model.likelihood.log_prob(y, model.forward({k: p[k] for k in model.priors}), p)

    def one(key):
        y = _simulate(model.likelihood, model.forward({k: params[k] for k in model.priors}), params, key)
        s = jax.grad(log_likelihood)(v, y)
        return jnp.outer(s, s)

    return jax.vmap(one)(keys)


def score_fisher_information(
    model_or_posterior, params: dict, key, n_simulations: int = 1000, *, unconstrained: bool = False
) -> tuple[jax.Array, jax.Array]:
    """Monte Carlo Fisher information ``F = E_y[s s^T]``, ``s = d log p(y | theta)/d theta``.

    For likelihoods without the closed form of :func:`fisher_information` (and to
    check it): ``n_simulations`` datasets are drawn at ``params``
    (:func:`simulate_data`) and the outer products of their scores averaged.

    Args:
        model_or_posterior: a Model or Posterior.
        params: ``{name: value}`` for every parameter (physical units).
        key: PRNG key for the simulated data.
        n_simulations: number of simulated datasets.
        unconstrained: differentiate in unconstrained coordinates.

    Returns:
        ``(F, standard_error)``, both ``(p, p)``.
    """
    model = _model(model_or_posterior)
    params = _check_params(model, params)
    products = _score_outer_products(model, params, jax.random.split(key, n_simulations), unconstrained)
    return jnp.mean(products, axis=0), jnp.std(products, axis=0, ddof=1) / jnp.sqrt(n_simulations)


def cramer_rao_bound(model_or_posterior, fisher) -> dict[str, jax.Array]:
    """Cramér-Rao lower bounds ``sd_j >= sqrt((F^-1)_jj)`` per parameter (physical units).

    Args:
        model_or_posterior: the Model or Posterior ``fisher`` was computed for
            (physical coordinates, for the layout).
        fisher: the ``(p, p)`` matrix of :func:`fisher_information`.

    Returns:
        ``{name: sd}`` with each parameter's shape; inf/NaN where ``F`` is singular
        (a parameter the design cannot determine).
    """
    model = _model(model_or_posterior)
    variances = jnp.diag(jnp.linalg.inv(fisher))
    return {
        name: jnp.reshape(jnp.sqrt(variances[sl]), model.priors[name].shape)
        for name, sl in parameter_slices(model).items()
    }
