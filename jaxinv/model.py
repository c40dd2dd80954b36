"""Model (forward physics + priors + likelihood) and Posterior (its energy functions).

A :class:`Model` is conditioned on data to give a :class:`Posterior`, the only
thing inference engines see: a log-density over one flat unconstrained vector
``z`` (all parameters, each mapped to the real line by its prior's bijection).

    log p(z | y) = log L(y | f(theta(z))) + log p(theta(z)) + log |det dtheta/dz|  + const
    energy(z)    = -log L - log p_z(z)
    E_beta(z)    = -beta log L - log p_z(z)       (tempered energy, 0 <= beta <= 1)

All methods are pure functions of ``z`` and work under ``jit``, ``vmap`` and
``grad``; batch over many points with ``jax.vmap(post.energy)(zs)``.

Several measurements of one object (:class:`jaxinv.likelihoods.Joint`): the model
is ``Model(None, priors, joint)``; the data ``y`` and the prediction are then
dicts ``{measurement: array}``, and everything above holds with ``log L`` the
sum over measurements.  The Posterior reaches the data only through the
likelihood's hooks (``as_data``, ``check_prediction``, ``validate``,
``pointwise_log_prob``, ``least_squares_parts``), so engines need not know.
"""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .likelihoods import Likelihood, _MeasurementKeyError
from .priors import Prior, as_prior, dependency_order

__all__ = ["Model", "Posterior"]


def _scored(prediction, score):
    """``score(prediction)``, with no cotangent sent back into the forward model where the
    score is not finite.

    A prediction the likelihood cannot score (a negative concentration under a log-normal
    likelihood, a failed ODE solve) gives a non-finite energy, which the engines treat as
    zero probability.  Its cotangent is NaN, and sent back through an implicit ODE solver's
    adjoint it makes the linear solve raise (Diffrax's Kvaerno5: "A linear solver received
    non-finite (NaN or inf) input") instead of giving a NaN gradient.  The double ``where``
    (JAX FAQ, "Gradients contain NaN where using where") sends a zero cotangent there; the
    score is evaluated on the detached prediction first (XLA merges the two evaluations in
    the forward pass)."""
    detached = jax.lax.stop_gradient(prediction)
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree_util.tree_leaves(score(detached))]))
    return score(jax.tree_util.tree_map(lambda p, d: jnp.where(finite, p, d), prediction, detached))


class Model(eqx.Module):
    """A forward model with priors over its parameters and a likelihood.

    Args:
        forward: callable (usually an ``eqx.Module``) mapping a dict of named
            parameters (constrained, physical units) to the predicted data;
            ``None`` with a :class:`~jaxinv.likelihoods.Joint` likelihood, which
            carries the forward model of each measurement.
        priors: ``{name: prior}`` for every parameter ``forward`` reads; a prior
            is a :mod:`jaxinv.priors` object or any numpyro distribution.  A
            :class:`~jaxinv.priors.Conditional` prior (e.g. ``GaussianMRF(...,
            precision="smoothness")``) may depend on other parameters by name.
        likelihood: a :mod:`jaxinv.likelihoods` object; its inferred noise
            parameters join the parameter set under their own names.
    """

    forward: Callable
    priors: dict[str, Prior]
    likelihood: Likelihood
    parameter_names: tuple[str, ...] = eqx.field(static=True)
    sampling_order: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, forward: Callable | None, priors: dict[str, Any], likelihood: Likelihood):
        own = likelihood.forward_model() if isinstance(likelihood, Likelihood) else None
        if own is not None:
            if forward is not None:
                raise TypeError(
                    f"the {type(likelihood).__name__} likelihood carries the forward model of each measurement; "
                    "pass forward=None"
                )
            forward = own
        if not callable(forward):
            raise TypeError("forward must be callable: params dict -> prediction")
        if not isinstance(likelihood, Likelihood):
            raise TypeError(f"likelihood must be a jaxinv likelihood, got {type(likelihood).__name__}")
        if not priors:
            raise ValueError("a model needs at least one parameter with a prior")
        self.forward = forward
        self.priors = {str(k): as_prior(v) for k, v in priors.items()}
        self.likelihood = likelihood
        clash = set(self.priors) & set(likelihood.parameters())
        if clash:
            raise ValueError(f"parameter names used by both the forward model and the likelihood: {sorted(clash)}")
        likelihood.check_parameters(self.priors)
        # the order of z, fixed here: pytree flattening sorts dict keys, so a dict's
        # own order does not survive jit/vmap/tree_at
        self.parameter_names = tuple(self.priors) + tuple(likelihood.parameters())
        # hierarchical priors: parents must be parameters, no cycles; ancestral draw order
        self.sampling_order = dependency_order(self.all_priors)

    @property
    def all_priors(self) -> dict[str, Prior]:
        """Priors of every inferred parameter, in the order of ``z``: forward model's, then likelihood's."""
        priors = {**self.priors, **self.likelihood.parameters()}
        return {name: priors[name] for name in self.parameter_names}

    def condition(self, y=None) -> "Posterior":
        """The posterior given observed data ``y``.

        For a :class:`~jaxinv.likelihoods.Joint` likelihood ``y`` is a dict
        ``{measurement: array}`` (data not given there come from the Joint), or
        ``None`` to use the data stored in the Joint.

        Raises:
            ValueError: if ``y`` is empty, non-finite, of a shape other than the
                forward model's prediction, or outside the likelihood's support
                (for a Joint, the message names the measurement at fault).
        """
        return Posterior(self, y)


class Posterior(eqx.Module):
    """Energy functions of a model conditioned on data.  See module docstring."""

    model: Model
    y: Any  # an array, or {measurement: array} for a Joint likelihood
    sizes: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, model: Model, y=None):
        likelihood = model.likelihood
        self.model = model
        self.y = likelihood.as_data(y)
        self.sizes = tuple(p.unconstrained_size for p in model.all_priors.values())
        try:
            predicted = jax.eval_shape(self.predict, jnp.zeros(self.dim))
        except KeyError as err:
            where = f"measurement {err.measurement!r}: " if isinstance(err, _MeasurementKeyError) else ""
            raise ValueError(
                f"{where}the forward model reads parameter {err.args[0]!r}, which has no prior "
                f"(parameters with priors: {list(model.priors)})"
            ) from None
        likelihood.check_prediction(self.y, predicted)
        if not any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(self.y)):
            likelihood.validate(self.y)

    # -- layout ------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in the order of ``z``."""
        return self.model.parameter_names

    @property
    def priors(self) -> dict[str, Prior]:
        """``{name: prior}`` in the fixed order of ``z`` (``Model.parameter_names``)."""
        return self.model.all_priors

    @property
    def dim(self) -> int:
        """Dimension of the unconstrained vector ``z``."""
        return int(sum(self.sizes))

    @property
    def n_data(self) -> int:
        """Number of data points (summed over the measurements of a Joint)."""
        return int(sum(np.size(leaf) for leaf in jax.tree_util.tree_leaves(self.y)))

    @property
    def is_proper(self) -> bool:
        """True when every prior is normalised (evidence is then defined)."""
        return all(p.is_proper for p in self.priors.values())

    @property
    def saturating(self) -> np.ndarray:
        """Boolean mask over ``z``: the coordinates of parameters whose support is bounded
        on both sides (:attr:`Prior.saturates`), where the unconstrained map saturates."""
        flags = [np.full(size, prior.saturates) for prior, size in zip(self.priors.values(), self.sizes)]
        return np.concatenate(flags) if flags else np.zeros(0, bool)

    def unravel(self, z) -> dict[str, jax.Array]:
        """Split ``z`` into ``{name: unconstrained array}``."""
        out, start = {}, 0
        for (name, prior), size in zip(self.priors.items(), self.sizes):
            out[name] = jnp.reshape(z[start : start + size], prior.unconstrained_shape)
            start += size
        return out

    def constrain(self, z) -> dict[str, jax.Array]:
        """Map ``z`` to ``{name: parameter value}`` in physical units."""
        u = self.unravel(z)
        return {name: prior.constrain(u[name]) for name, prior in self.priors.items()}

    def unconstrain(self, params: dict) -> jax.Array:
        """Inverse of :meth:`constrain`: a dict of parameter values to ``z``."""
        missing = set(self.names) - set(params)
        if missing:
            raise ValueError(f"missing parameter value(s): {sorted(missing)}")
        parts = []
        for name, prior in self.priors.items():
            x = jnp.asarray(params[name], dtype=jnp.result_type(float))
            if x.shape != prior.shape:
                raise ValueError(f"parameter {name!r} has shape {x.shape}, expected {prior.shape}")
            parts.append(jnp.ravel(prior.unconstrain(x)))
        return jnp.concatenate(parts)

    # -- densities ---------------------------------------------------------------
    def _forward_params(self, params):
        return {k: params[k] for k in self.model.priors}

    def forward_params(self, z) -> dict[str, jax.Array]:
        """The forward model's parameters at ``z`` (constrained; noise parameters left out),
        e.g. to evaluate the forward model on another grid."""
        return self._forward_params(self.constrain(z))

    def predict(self, z) -> jax.Array:
        """Forward-model prediction at ``z`` (``{measurement: array}`` for a Joint)."""
        return self.model.forward(self.forward_params(z))

    def _parent_values(self, z):
        """Constrained values of every parameter, when some prior needs its parents' values."""
        if any(prior.parents for prior in self.priors.values()):
            return self.constrain(z)
        return None

    def log_prior(self, z) -> jax.Array:
        """Prior log-density of ``z`` (includes the log-Jacobian of the transforms);
        conditional priors are evaluated at their parents' constrained values:
        ``sum_j log p(theta_j | parents_j) + log |det dtheta/dz|``."""
        u = self.unravel(z)
        parents = self._parent_values(z)
        return sum(prior.log_density_unconstrained(u[name], parents) for name, prior in self.priors.items())

    def pointwise_log_likelihood(self, z) -> jax.Array:
        """``log p(y_i | theta(z))`` per datum (for LOO/WAIC): the shape of ``y``,
        or for a Joint all measurements flattened and concatenated in their order."""
        params = self.constrain(z)
        fwd = self._forward_params(params)
        score = lambda prediction: self.model.likelihood.pointwise_log_prob(self.y, prediction, params)
        return _scored(self.model.forward(fwd), score)

    def log_likelihood(self, z) -> jax.Array:
        """``log p(y | theta(z))``."""
        return jnp.sum(self.pointwise_log_likelihood(z))

    def log_density(self, z) -> jax.Array:
        """Unnormalised log posterior density of ``z``."""
        return self.log_likelihood(z) + self.log_prior(z)

    def energy(self, z) -> jax.Array:
        """``-log_density(z)``."""
        return -self.log_density(z)

    def map_energy(self, z) -> jax.Array:
        """``-log L - log p(theta(z))`` without the log-Jacobian: minus the log posterior
        density in parameter space, whose minimum is the MAP in physical units
        (the least-squares solution under flat priors), evaluated through ``z``."""
        params = self.constrain(z)
        return -self.log_likelihood(z) - self._log_prior_parameter_space(params)

    def _log_prior_parameter_space(self, params):
        return sum(prior.log_prob(params[name], params) for name, prior in self.priors.items())

    def tempered_energy(self, z, beta) -> jax.Array:
        """``E_beta(z) = -beta log L(z) - log p_z(z)``; beta=0 prior, beta=1 posterior."""
        return -beta * self.log_likelihood(z) - self.log_prior(z)

    # -- least-squares structure ---------------------------------------------------
    @property
    def least_squares(self) -> bool:
        """True when ``-log L = 1/2 |r(z)|^2 + c(z)`` with standardised residuals ``r``."""
        return self.model.likelihood.least_squares

    def least_squares_parts(self, z, jacobian: bool = True):
        """``(r, g)`` with ``energy(z) = 1/2 |r|^2 + g`` (``map_energy`` when
        ``jacobian=False``): flattened standardised residuals and the rest (noise
        normalisation, prior, log-Jacobian), kept apart to avoid cancellation."""
        if not self.least_squares:
            raise ValueError(f"{type(self.model.likelihood).__name__} likelihood has no least-squares form")
        params = self.constrain(z)
        fwd = self._forward_params(params)
        r, c = _scored(self.model.forward(fwd),
                       lambda prediction: self.model.likelihood.least_squares_parts(self.y, prediction, params))
        if jacobian:
            rest = c - self.log_prior(z)
        else:
            rest = c - self._log_prior_parameter_space(params)
        return jnp.ravel(r), rest

    def rss(self, z) -> jax.Array:
        """Unweighted residual sum of squares ``sum (y - f)^2`` (over all measurements)."""
        sq = jax.tree_util.tree_map(lambda y, f: jnp.sum((y - f) ** 2), self.y, self.predict(z))
        return sum(jax.tree_util.tree_leaves(sq))

    # -- starting points -------------------------------------------------------------
    def init(self, key, n: int) -> jax.Array:
        """``n`` draws from the prior, in unconstrained space: shape ``(n, dim)``.
        Ancestral: parents are drawn before the conditional priors that depend on them."""
        flat = [name for name, p in self.priors.items() if not p.is_proper]
        if flat:
            raise ValueError(f"parameters {flat} have improper Flat priors and cannot be drawn; pass init= explicitly")
        priors = self.priors
        keys = dict(zip(self.names, jax.random.split(key, len(self.names))))
        drawn = {}
        for name in self.model.sampling_order:
            prior = priors[name]
            drawn[name] = prior.sample(keys[name], n, drawn) if prior.parents else prior.sample(keys[name], n)
        parts = []
        for name, prior in priors.items():
            u = jax.vmap(prior.unconstrain)(drawn[name])
            parts.append(jnp.reshape(u, (n, -1)))
        return jnp.concatenate(parts, axis=1)

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: p.shape for name, p in self.priors.items()}

