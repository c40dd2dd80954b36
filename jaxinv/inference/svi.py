"""Stochastic variational inference (SVI): a fitted distribution ``q(z)`` close to the posterior.

In the unconstrained space ``z`` of a :class:`~jaxinv.Posterior`, a family of
distributions ``q_phi`` is fitted by maximising the evidence lower bound

    ELBO(phi) = E_q[log p(y, z)] - E_q[log q(z)] = log p(y) - KL(q || p(. | y))  <=  log p(y),

with ``log p(y, z) = Posterior.log_density(z)`` (every normalising constant
included, so the bound is absolute).  The expectation is estimated with
``n_elbo_samples`` reparameterised draws ``z = T_phi(eps)``, ``eps ~ N(0, I)``
per step and maximised with optax (Adam by default), all steps in one
``lax.scan`` (automatic differentiation VI, ADVI: Kucukelbir et al. 2017, JMLR
18(14):1-45).  Families:

* ``"meanfield"``: ``N(mu, diag(sigma^2))``, ``sigma = exp(omega)`` (ADVI's
  mean-field family): ``2 d`` parameters, ignores correlations and, because
  ``KL(q || p)`` is zero-forcing, under-estimates marginal variances.
* ``"fullrank"``: ``N(mu, L L^T)`` with ``L`` lower-triangular, positive diagonal
  ``exp(.)``: exact for a Gaussian posterior (linear-Gaussian models).
* ``"flow"``: a normalising flow (Papamakarios et al. 2021, JMLR 22(57):1-64) from
  `flowjax <https://github.com/danielward27/flowjax>`_:
  ``flowjax.flows.masked_autoregressive_flow`` (or ``coupling_flow``) with
  rational-quadratic spline transformers (Durkan et al. 2019, NeurIPS), followed
  by a triangular affine map ``mu + L x`` that carries the location and scale,
  so that the splines (on ``[-interval, interval]``) only model the standardised
  shape: skewness, curved (banana) ridges, heavy-ish tails.

The Gaussian families are a few lines of JAX on optax (no flowjax needed): a
reparameterised ELBO with the "sticking the landing" gradient (Roeder et al.
2017, NeurIPS: the score term of ``log q`` is dropped, so the gradient variance
vanishes as ``q`` approaches the posterior).  ``blackjax.meanfield_vi`` /
``fullrank_vi`` would do the same job but keep their own state layout, step one
optimiser step per call and would give the flow family a second, different loss
code path; here all three families share one loss, one optimiser and one scan.

Diagnostics, on ``n_draws`` fresh draws from the fitted ``q``: importance
log-weights ``log w = log p(y, z) - log q(z)``; their mean is the final ELBO
(``Result.log_evidence``, a *lower bound* on ``log p(y)``, with its Monte Carlo
standard error), and Pareto-smoothed importance sampling (PSIS; Vehtari et al.
2024, JMLR 25(72):1-58) gives ``khat``, the fitted generalised-Pareto shape of
their upper tail, and ``log_evidence_is = log mean(w_PSIS)``.  As a VI
diagnostic (Yao et al. 2018, "Yes, but did it work?: Evaluating variational
inference", ICML): ``khat < 0.5`` the approximation is good and importance
sampling with it is reliable; ``0.5 < khat < 0.7`` usable, PSIS-corrected
estimates are still reliable; ``khat > 0.7`` the approximation misses mass of
the posterior and neither it nor its ELBO should be trusted.

Batching: :func:`run_svi` is the pure traced core (no host-side control flow on
values: it works under ``jit``, ``vmap`` and ``shard_map``, with the posterior
built from traced data) returning an :class:`SVIOutput` of arrays, and
:func:`finish_svi` the host-side step (PSIS with ArviZ, warnings, optional
importance resampling) that turns one dataset's output into a
:class:`~jaxinv.Result`.  :func:`svi` = validation + ``jit(run_svi)`` +
``finish_svi``.
"""

from __future__ import annotations

import abc
import math
import warnings
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..model import Posterior
from ..results import Result, _az
from ._draws import constrain_draws, nan_to_minus_inf

__all__ = [
    "FAMILIES",
    "FlowGaussian",
    "FullRankGaussian",
    "MeanFieldGaussian",
    "SVIConfig",
    "SVIInit",
    "SVIOutput",
    "Variational",
    "finish_svi",
    "run_svi",
    "svi",
]

FAMILIES = ("meanfield", "fullrank", "flow")
FLOW_TYPES = ("masked_autoregressive", "coupling")
SCHEDULES = ("constant", "cosine", "exponential")
_LOG_2PI = math.log(2.0 * math.pi)


# -- variational families -------------------------------------------------------------------
class Variational(eqx.Module):
    """A fitted variational distribution ``q(z)`` over the unconstrained vector ``z``.

    Draw more with :meth:`sample` (unconstrained, shape ``(n, dim)``; map to
    parameters with ``jax.vmap(post.constrain)``) and score points with
    :meth:`log_prob`.
    """

    @abc.abstractmethod
    def sample_and_log_prob(self, key, n: int):
        """``(z, log q(z))`` for ``n`` draws: shapes ``(n, dim)`` and ``(n,)``."""

    @abc.abstractmethod
    def log_prob(self, z) -> jax.Array:
        """``log q(z)`` for ``z`` of shape ``(..., dim)``."""

    def sample(self, key, n: int) -> jax.Array:
        """``n`` draws of ``z ~ q``, shape ``(n, dim)``."""
        return self.sample_and_log_prob(key, n)[0]


def _std_normal_log_prob(eps):
    return -0.5 * jnp.sum(eps**2, axis=-1) - 0.5 * eps.shape[-1] * _LOG_2PI


class MeanFieldGaussian(Variational):
    """``N(loc, diag(exp(log_scale))^2)``.

    Attributes:
        loc: mean, ``(dim,)``.
        log_scale: log standard deviations, ``(dim,)``.
    """

    loc: jax.Array
    log_scale: jax.Array

    @property
    def scale(self) -> jax.Array:
        return jnp.exp(self.log_scale)

    @property
    def covariance(self) -> jax.Array:
        return jnp.diag(self.scale**2)

    def sample_and_log_prob(self, key, n: int):
        eps = jax.random.normal(key, (n, self.loc.size), dtype=self.loc.dtype)
        return self.loc + self.scale * eps, _std_normal_log_prob(eps) - jnp.sum(self.log_scale)

    def log_prob(self, z) -> jax.Array:
        return _std_normal_log_prob((z - self.loc) / self.scale) - jnp.sum(self.log_scale)


class FullRankGaussian(Variational):
    """``N(loc, L L^T)``, ``L = tril(raw, -1) + diag(exp(diag(raw)))``.

    Attributes:
        loc: mean, ``(dim,)``.
        raw: unconstrained lower-triangular parameters of ``L``, ``(dim, dim)``
            (upper triangle ignored).
    """

    loc: jax.Array
    raw: jax.Array

    @property
    def cholesky(self) -> jax.Array:
        """The lower Cholesky factor ``L`` of the covariance."""
        return jnp.tril(self.raw, -1) + jnp.diag(jnp.exp(jnp.diag(self.raw)))

    @property
    def covariance(self) -> jax.Array:
        chol = self.cholesky
        return chol @ chol.T

    def sample_and_log_prob(self, key, n: int):
        eps = jax.random.normal(key, (n, self.loc.size), dtype=self.loc.dtype)
        return self.loc + eps @ self.cholesky.T, _std_normal_log_prob(eps) - jnp.sum(jnp.diag(self.raw))

    def log_prob(self, z) -> jax.Array:
        diff = jnp.reshape(z - self.loc, (-1, self.loc.size))
        eps = jax.scipy.linalg.solve_triangular(self.cholesky, diff.T, lower=True).T
        return jnp.reshape(_std_normal_log_prob(eps), jnp.shape(z)[:-1]) - jnp.sum(jnp.diag(self.raw))


class FlowGaussian(Variational):
    """A normalising flow: ``z = loc + L f(eps)``, ``eps ~ N(0, I)``, ``f`` a flowjax flow.

    Attributes:
        dist: the ``flowjax.distributions.Transformed`` distribution of ``z``
            (base ``N(0, I)``, bijection ``Chain([flow, TriangularAffine(loc, L)])``).
    """

    dist: Any

    def sample_and_log_prob(self, key, n: int):
        return _flow_sample_and_log_prob(self.dist, key, n)

    def log_prob(self, z) -> jax.Array:
        return _flow_log_prob(self.dist, z)


# compiled (flowjax's methods run op by op otherwise); inlined when called inside run_svi
@eqx.filter_jit
def _flow_sample_and_log_prob(dist, key, n: int):
    return dist.sample_and_log_prob(key, (n,))


@eqx.filter_jit
def _flow_log_prob(dist, z):
    return dist.log_prob(z)


# -- configuration, initial point, output ----------------------------------------------------
class SVIConfig(NamedTuple):
    """Static settings of :func:`run_svi` (hashable; see :func:`svi` for their meaning)."""

    family: str = "fullrank"
    n_steps: int = 2000
    n_elbo_samples: int = 16
    n_draws: int = 2000
    learning_rate: float = 1e-2
    schedule: str = "constant"
    optimizer: Any = None
    stick_the_landing: bool = True
    init_scale: float = 0.1
    n_init: int = 16
    flow_type: str = "masked_autoregressive"
    flow_layers: int = 4
    knots: int = 8
    interval: float = 5.0
    nn_width: int = 32
    nn_depth: int = 1


class SVIInit(NamedTuple):
    """Initial Gaussian of the fit: mean ``loc`` ``(dim,)`` and lower Cholesky factor
    ``chol`` ``(dim, dim)`` of its covariance (positive diagonal); the mean-field
    family uses ``diag(chol)`` as its standard deviations."""

    loc: jax.Array
    chol: jax.Array


class SVIOutput(NamedTuple):
    """Everything :func:`run_svi` computes (arrays only, so it can be vmapped).

    Attributes:
        z: ``n_draws`` draws from the fitted ``q``, unconstrained, ``(n_draws, dim)``.
        params: those draws constrained, ``{name: (1, n_draws, *shape)}``.
        energy: ``-log p(y, z)`` of the draws, ``(1, n_draws)``.
        log_weights: ``log p(y, z) - log q(z)`` of the draws, ``(n_draws,)``.
        elbo: the ELBO estimate at every optimisation step, ``(n_steps,)``.
        elbo_final: mean of ``log_weights``: the final ELBO.
        elbo_se: its Monte Carlo standard error.
        init: the :class:`SVIInit` the fit started from.
        q_arrays: the arrays of the fitted :class:`Variational` (other leaves
            ``None``); :func:`finish_svi` rebuilds the distribution.
    """

    z: jax.Array
    params: dict
    energy: jax.Array
    log_weights: jax.Array
    elbo: jax.Array
    elbo_final: jax.Array
    elbo_se: jax.Array
    init: SVIInit
    q_arrays: Any


# -- the pure core ------------------------------------------------------------------------------
def _default_init(post: Posterior, key, config: SVIConfig) -> SVIInit:
    """The lowest-energy of ``n_init`` prior draws (the origin for improper priors), scale ``init_scale``."""
    dim, dtype = post.dim, jnp.result_type(float)
    if post.is_proper and config.n_init > 0:
        z0 = post.init(key, config.n_init)
        energy = jax.vmap(post.energy)(z0)
        loc = z0[jnp.argmin(jnp.where(jnp.isfinite(energy), energy, jnp.inf))]
    else:
        loc = jnp.zeros(dim, dtype)
    return SVIInit(loc.astype(dtype), config.init_scale * jnp.eye(dim, dtype=dtype))


def _flow(config: SVIConfig, init: SVIInit, key) -> FlowGaussian:
    from flowjax import flows
    from flowjax.bijections import Chain, RationalQuadraticSpline, TriangularAffine
    from flowjax.distributions import Normal, Transformed

    dim = init.loc.shape[0]
    build = flows.masked_autoregressive_flow if config.flow_type == "masked_autoregressive" else flows.coupling_flow
    # invert=False: sampling (the ELBO's direction) is the fast, parallel pass
    shape = build(
        key,
        base_dist=Normal(jnp.zeros(dim, init.loc.dtype)),
        transformer=RationalQuadraticSpline(knots=config.knots, interval=config.interval),
        flow_layers=config.flow_layers,
        nn_width=config.nn_width,
        nn_depth=config.nn_depth,
        invert=False,
    )
    affine = TriangularAffine(init.loc, init.chol)
    return FlowGaussian(Transformed(shape.base_dist, Chain([shape.bijection, affine])))


def _build(config: SVIConfig, init: SVIInit, key) -> Variational:
    diag = jnp.diag(init.chol)
    if config.family == "meanfield":
        return MeanFieldGaussian(init.loc, jnp.log(diag))
    if config.family == "fullrank":
        return FullRankGaussian(init.loc, jnp.tril(init.chol, -1) + jnp.diag(jnp.log(diag)))
    if config.family == "flow":
        return _flow(config, init, key)
    raise ValueError(f"unknown SVI family {config.family!r}; available: {FAMILIES}")


def _partition(q: Variational):
    import paramax

    return eqx.partition(q, eqx.is_inexact_array, is_leaf=lambda leaf: isinstance(leaf, paramax.NonTrainable))


def _partition_gaussian(q: Variational):
    return eqx.partition(q, eqx.is_inexact_array)


def _optimizer(config: SVIConfig) -> optax.GradientTransformation:
    if config.optimizer is not None:
        opt = config.optimizer
    else:
        lr = config.learning_rate
        if config.schedule == "cosine":
            lr = optax.cosine_decay_schedule(lr, config.n_steps, alpha=0.01)
        elif config.schedule == "exponential":
            lr = optax.exponential_decay(lr, config.n_steps, decay_rate=0.01)
        opt = optax.adam(lr)
    # a step whose ELBO gradient is not finite (a draw outside the model's domain) is skipped
    return optax.apply_if_finite(opt, max_consecutive_errors=2**31 - 1)


def run_svi(post: Posterior, key, config: SVIConfig, init: SVIInit | None = None) -> SVIOutput:
    """The pure SVI core: fit ``q`` by ``config.n_steps`` optax steps in one ``lax.scan``,
    then draw ``config.n_draws`` from it.

    No host-side work: usable under ``jit``, ``vmap`` and ``shard_map``, also with a
    posterior built from traced data inside the mapped function.  Arguments are not
    validated (:func:`svi` does that).

    Args:
        post: the posterior.
        key: PRNG key.
        config: static settings.
        init: initial Gaussian; default: the lowest-energy of ``config.n_init`` prior
            draws (the origin if a prior is improper) with scale ``config.init_scale``.

    Returns:
        An :class:`SVIOutput`.
    """
    init_key, flow_key, fit_key, draw_key = jax.random.split(key, 4)
    if init is None:
        init = _default_init(post, init_key, config)
    q = _build(config, init, flow_key)
    params, static = _partition_gaussian(q) if config.family != "flow" else _partition(q)
    log_joint = nan_to_minus_inf(post.log_density)
    n = config.n_elbo_samples

    def negative_elbo(params, key):
        q = eqx.combine(params, static)
        z, log_q = q.sample_and_log_prob(key, n)
        if config.stick_the_landing:
            # Roeder et al. 2017: log q with the parameters held fixed (no score term)
            log_q = eqx.combine(jax.lax.stop_gradient(params), static).log_prob(z)
        return -jnp.mean(jax.vmap(log_joint)(z) - log_q)

    opt = _optimizer(config)

    def step(carry, key):
        params, state = carry
        loss, grads = jax.value_and_grad(negative_elbo)(params, key)
        updates, state = opt.update(grads, state, params)
        return (optax.apply_updates(params, updates), state), -loss

    (params, _), elbo = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(fit_key, config.n_steps))
    q = eqx.combine(params, static)
    z, log_q = q.sample_and_log_prob(draw_key, config.n_draws)
    constrained, energy = constrain_draws(post, z[None])  # (1, n_draws, ...): one chain
    log_p = jnp.where(jnp.isnan(energy[0]), -jnp.inf, -energy[0])
    log_w = log_p - log_q
    log_w = jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)
    elbo_final = jnp.mean(log_w)
    elbo_se = jnp.std(log_w, ddof=1) / math.sqrt(config.n_draws)
    return SVIOutput(
        z=z, params=constrained, energy=energy, log_weights=log_w, elbo=elbo,
        elbo_final=elbo_final, elbo_se=elbo_se, init=init, q_arrays=eqx.filter(q, eqx.is_array),
    )


_run_svi_jit = eqx.filter_jit(run_svi)


# -- host side -----------------------------------------------------------------------------------
def psis(log_weights) -> tuple[np.ndarray, float, float]:
    """Pareto-smoothed importance weights (ArviZ ``psislw``, Vehtari et al. 2024).

    Args:
        log_weights: log importance weights ``log p(y, z) - log q(z)``, shape ``(n,)``.

    Returns:
        ``(normalised smoothed log-weights, khat, log mean of the smoothed weights)``;
        the last is the PSIS estimate of ``log p(y)``.
    """
    lw = np.asarray(log_weights, dtype=float)
    lw = np.where(np.isnan(lw), -np.inf, lw)
    if not np.any(np.isfinite(lw)):
        return np.full_like(lw, -np.log(lw.size)), float("inf"), float("-inf")
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed, khat = az.psislw(lw.copy(), normalize=False)
    smoothed = np.asarray(smoothed)
    top = np.max(smoothed)
    log_sum = top + np.log(np.sum(np.exp(smoothed - top)))
    return smoothed - log_sum, float(khat), float(log_sum - np.log(lw.size))


def _approximation(post: Posterior, config: SVIConfig, out: SVIOutput) -> Variational:
    """The fitted distribution: the output's arrays put back into the family's structure."""
    if config.family != "flow":
        return out.q_arrays  # every leaf of a Gaussian family is an array
    # the static skeleton (functions, ints) of the flow, built eagerly (flowjax closures hold
    # constants, so it cannot come from eval_shape); every array comes from the output
    skeleton = eqx.filter(_build(config, out.init, jax.random.key(0)), eqx.is_array, inverse=True)
    return eqx.combine(out.q_arrays, skeleton)


def finish_svi(post: Posterior, out: SVIOutput, config: SVIConfig, *, key=None,
               importance_resample: bool = False) -> Result:
    """Host-side end of an SVI run for one dataset: PSIS ``khat`` and importance-sampling
    evidence (ArviZ), warnings, optional importance resampling, the :class:`~jaxinv.Result`.

    A batch layer vmaps :func:`run_svi` over datasets and calls this once per dataset
    with that dataset's slice of the output.

    Args:
        post: the posterior (of this dataset).
        out: the :class:`SVIOutput` of :func:`run_svi` (unbatched).
        config: the config the output was computed with.
        key: PRNG key for importance resampling.
        importance_resample: resample the returned draws with the PSIS weights.

    Returns:
        The :class:`~jaxinv.Result` described in :func:`svi`.
    """
    log_w = np.asarray(out.log_weights)
    weights, khat, log_evidence_is = psis(log_w)
    elbo_final, elbo_se = float(out.elbo_final), float(out.elbo_se)
    if not np.isfinite(elbo_final):
        warnings.warn(
            f"the final ELBO is not finite ({elbo_final}): some draws of q have zero posterior density or the "
            "fit diverged; lower learning_rate, pass init= (e.g. a map_estimate result) or check the model",
            RuntimeWarning, stacklevel=3,
        )
    if khat > 0.7:
        warnings.warn(
            f"Pareto k-hat of the importance weights is {khat:.2f} > 0.7: the {config.family} approximation "
            "misses posterior mass (Yao et al. 2018); its draws, ELBO" + (" and importance resampling"
                                                                           if importance_resample else "")
            + " are unreliable; try family='flow', more steps, or NUTS",
            RuntimeWarning, stacklevel=3,
        )
    params, energy = out.params, out.energy
    w = np.exp(weights)
    is_ess = 1.0 / np.sum(w**2)
    if importance_resample:
        if key is None:
            raise ValueError("importance_resample needs a PRNG key")
        idx = jax.random.choice(key, log_w.size, (log_w.size,), replace=True, p=jnp.asarray(w / w.sum()))
        params = {k: v[:, idx] for k, v in params.items()}
        energy = energy[:, idx]
    stats = {
        "elbo": out.elbo,
        "elbo_final": jnp.asarray(elbo_final),
        "khat": jnp.asarray(khat),
        "log_evidence_is": jnp.asarray(log_evidence_is if post.is_proper else np.nan),
        "is_ess": jnp.asarray(is_ess),
        "log_weights": jnp.asarray(log_w),
        "energy": energy,
    }
    return Result(
        params={name: params[name] for name in post.names},
        method="svi",
        sample_dims=2,
        log_evidence=jnp.asarray(elbo_final if post.is_proper else np.nan),
        log_evidence_se=jnp.asarray(elbo_se if post.is_proper else np.nan),
        stats=stats,
        observed=post.y,
        approximation=_approximation(post, config, out),
    )


def _init_from(post: Posterior, init, family: str, scale: float) -> SVIInit | None:
    """An :class:`SVIInit` from the ``init=`` argument of :func:`svi`."""
    from .laplace import Laplace

    if init is None:
        return None
    dim, dtype = post.dim, jnp.result_type(float)
    if isinstance(init, Result):
        if init.laplace is None:
            raise ValueError("init= Result has no Laplace approximation: pass a map_estimate result, "
                             "its .laplace, or an unconstrained vector")
        init = init.laplace
    if isinstance(init, Laplace):
        loc = jnp.asarray(init.mode, dtype)
        if loc.shape != (dim,):
            raise ValueError(f"init= Laplace mode has shape {loc.shape}, the posterior has {dim} coordinates")
        chol = np.linalg.cholesky(np.asarray(init.covariance)) if np.all(np.isfinite(init.covariance)) else None
        if chol is None or not np.all(np.isfinite(chol)):
            warnings.warn("init= Laplace covariance is not positive definite: starting from its mode with "
                          f"scale {scale}", RuntimeWarning, stacklevel=3)
            chol = scale * np.eye(dim)
        elif family == "meanfield":
            # the optimal mean-field Gaussian of a Gaussian has precisions diag(H)
            chol = np.diag(1.0 / np.sqrt(np.diag(np.asarray(init.hessian))))
        return SVIInit(loc, jnp.asarray(chol, dtype))
    if isinstance(init, dict):
        loc = post.unconstrain(init)
    else:
        loc = jnp.asarray(init, dtype)
        if loc.shape != (dim,):
            raise ValueError(f"init must be an unconstrained vector of shape ({dim},), a dict of parameter values, "
                             f"a map_estimate Result or a Laplace; got shape {loc.shape}")
    if not bool(jnp.all(jnp.isfinite(loc))):
        raise ValueError("init lies outside the prior support (non-finite unconstrained value)")
    return SVIInit(loc.astype(dtype), scale * jnp.eye(dim, dtype=dtype))


def _make_config(post, family, n_steps, n_elbo_samples, n_draws, learning_rate, schedule, optimizer, init_scale,
                 stick_the_landing, flow_type, flow_layers, knots, interval, nn_width, nn_depth) -> SVIConfig:
    """Checked settings of :func:`svi` (family-dependent defaults filled in)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown SVI family {family!r}; available: {', '.join(FAMILIES)}")
    if learning_rate is None:
        learning_rate = 5e-3 if family == "flow" else 1e-2
    if schedule is None:
        schedule = "cosine" if family == "flow" else "constant"
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; available: {', '.join(SCHEDULES)}")
    if flow_type not in FLOW_TYPES:
        raise ValueError(f"unknown flow_type {flow_type!r}; available: {', '.join(FLOW_TYPES)}")
    for name, value, low in (("n_steps", n_steps, 1), ("n_elbo_samples", n_elbo_samples, 1),
                             ("n_draws", n_draws, 30), ("flow_layers", flow_layers, 1), ("knots", knots, 1),
                             ("nn_width", nn_width, 1), ("nn_depth", nn_depth, 0)):
        if int(value) != value or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value}")
    for name, value in (("learning_rate", learning_rate), ("init_scale", init_scale), ("interval", interval)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive and finite, got {value}")
    if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer must be an optax.GradientTransformation, got {type(optimizer).__name__}")
    if family == "flow":
        try:
            import flowjax  # noqa: F401
        except ImportError:
            raise ImportError("family='flow' needs the optional dependency flowjax (pip install flowjax)") from None
        if post.dim == 1 and flow_type == "coupling":
            raise ValueError("a coupling flow needs at least 2 unconstrained coordinates; use "
                             "flow_type='masked_autoregressive'")
    if stick_the_landing is None:
        stick_the_landing = family != "flow"
    return SVIConfig(
        family=family, n_steps=int(n_steps), n_elbo_samples=int(n_elbo_samples), n_draws=int(n_draws),
        learning_rate=float(learning_rate), schedule=schedule, optimizer=optimizer,
        stick_the_landing=bool(stick_the_landing), init_scale=float(init_scale), flow_type=flow_type,
        flow_layers=int(flow_layers), knots=int(knots), interval=float(interval), nn_width=int(nn_width),
        nn_depth=int(nn_depth),
    )


def svi(
    post: Posterior,
    key,
    family: str = "fullrank",
    *,
    n_steps: int = 2000,
    n_elbo_samples: int = 16,
    n_draws: int = 2000,
    learning_rate: float | None = None,
    schedule: str | None = None,
    optimizer: optax.GradientTransformation | None = None,
    init=None,
    init_scale: float = 0.1,
    importance_resample: bool = False,
    stick_the_landing: bool | None = None,
    flow_type: str = "masked_autoregressive",
    flow_layers: int = 4,
    knots: int = 8,
    interval: float = 5.0,
    nn_width: int = 32,
    nn_depth: int = 1,
) -> Result:
    """Stochastic variational inference: fit ``q(z)`` by maximising the ELBO, return its draws.

    ``ELBO = E_q[log p(y, z)] - E_q[log q(z)] = log p(y) - KL(q || p(z | y)) <= log p(y)``
    (Kucukelbir et al. 2017, JMLR 18:14), estimated with ``n_elbo_samples``
    reparameterised draws per step and maximised with optax in one ``lax.scan``.
    See the module docstring for the families and diagnostics.

    Args:
        post: the posterior (``model.condition(y)``).
        key: PRNG key.
        family: ``"meanfield"`` (diagonal Gaussian), ``"fullrank"`` (Gaussian with a
            Cholesky factor) or ``"flow"`` (normalising flow; needs flowjax).
        n_steps: optimisation steps.
        n_elbo_samples: Monte Carlo draws of the ELBO per step.
        n_draws: draws from the fitted ``q`` returned, and used for the final ELBO,
            its standard error and PSIS ``khat``.
        learning_rate: Adam's (initial) learning rate; default 1e-2 for the
            Gaussian families, 5e-3 for the flow.
        schedule: ``"constant"``, ``"cosine"`` (cosine decay to 1% of
            ``learning_rate`` at ``n_steps``) or ``"exponential"`` (the same end
            value).  Default ``"constant"`` for the Gaussian families (with the
            sticking-the-landing gradient the noise vanishes at the optimum of an
            exact family, so a constant rate converges), ``"cosine"`` for the flow
            (whose final parameters otherwise keep Adam's step noise, measured as a
            larger PSIS ``khat``).
        optimizer: any ``optax.GradientTransformation``, replacing Adam
            (``learning_rate`` and ``schedule`` then unused).
        init: starting point: an unconstrained vector ``(dim,)``, a dict of parameter
            values, a :func:`~jaxinv.map_estimate` Result or its ``.laplace``
            (fullrank and flow start at the Laplace Gaussian, meanfield at its
            optimal mean-field Gaussian, precisions ``diag(H)``).  Default: the
            lowest-energy of 16 prior draws (the origin if a prior is improper).
        init_scale: initial standard deviation in every coordinate of ``z``, when
            ``init`` is not a Laplace approximation.
        importance_resample: return the draws resampled (with replacement) by their
            PSIS importance weights, which corrects ``q`` towards the posterior when
            ``khat`` is below 0.7.
        stick_the_landing: the gradient estimator of Roeder et al. (2017); default on
            for the Gaussian families, off for the flow (its ``log_prob`` is the slow,
            sequential direction of an autoregressive flow built for sampling).
        flow_type: ``"masked_autoregressive"`` or ``"coupling"`` (flowjax flows).
        flow_layers: number of flow layers.
        knots: inner knots of each rational-quadratic spline.
        interval: the splines act on ``[-interval, interval]`` of the standardised
            coordinates (identity outside).
        nn_width: hidden width of the flow's conditioner networks.
        nn_depth: hidden layers of the flow's conditioner networks.

    Returns:
        A :class:`~jaxinv.Result` with ``method="svi"``, ``params`` of shape
        ``(1, n_draws, *shape)`` (constrained draws from ``q``), ``log_evidence`` the
        final ELBO (a *lower bound* on ``log p(y)``; NaN if a prior is improper),
        ``log_evidence_se`` its Monte Carlo standard error, ``approximation`` the
        fitted :class:`Variational` (``.sample(key, n)``, ``.log_prob(z)``), and
        ``stats``: ``elbo`` (per step), ``elbo_final``, ``khat`` (PSIS Pareto k of
        the importance weights), ``log_evidence_is`` (PSIS importance-sampling
        estimate of ``log p(y)``), ``is_ess`` (importance-sampling effective sample
        size), ``log_weights`` (per draw, before resampling) and ``energy`` (per
        returned draw).

    Warns:
        RuntimeWarning: when ``khat > 0.7`` (naming it), and when the final ELBO is
            not finite (a warning, not an error, so that one failed dataset of a
            batch does not stop the others; ``log_evidence`` is then ``-inf``/NaN).

    Raises:
        ValueError: unknown ``family``, ``schedule`` or ``flow_type`` (listing the
            available ones), ``n_steps < 1``, ``n_elbo_samples < 1``, ``n_draws < 30``,
            a non-positive ``learning_rate`` or ``init_scale``, or a malformed ``init``.
    """
    if not isinstance(post, Posterior):
        raise TypeError(f"svi needs a jaxinv Posterior (model.condition(y)), got {type(post).__name__}")
    config = _make_config(post, family, n_steps, n_elbo_samples, n_draws, learning_rate, schedule, optimizer,
                          init_scale, stick_the_landing, flow_type, flow_layers, knots, interval, nn_width, nn_depth)
    start = _init_from(post, init, family, float(init_scale))
    run_key, resample_key = jax.random.split(key)
    out = _run_svi_jit(post, run_key, config, start)
    return finish_svi(post, out, config, key=resample_key, importance_resample=importance_resample)


# -- many datasets (jaxinv.batch) ---------------------------------------------------------------
def batch_adapter(post0: Posterior, family: str = "fullrank", *, n_steps: int = 2000, n_elbo_samples: int = 16,
                  n_draws: int = 2000, learning_rate: float | None = None, schedule: str | None = None,
                  optimizer: optax.GradientTransformation | None = None, init=None, init_scale: float = 0.1,
                  importance_resample: bool = False, stick_the_landing: bool | None = None,
                  flow_type: str = "masked_autoregressive", flow_layers: int = 4, knots: int = 8,
                  interval: float = 5.0, nn_width: int = 32, nn_depth: int = 1):
    """``(trace, finish)`` for :func:`jaxinv.batch`: :func:`run_svi` per dataset (the same
    keys as :func:`svi`), then on the host the PSIS k-hat, the importance-sampling evidence
    and its effective sample size of every dataset.  The fitted distributions are not kept
    (a batch keeps draws and statistics); ``importance_resample`` is refused (resample
    from ``stats["log_weights"]`` if needed)."""
    if importance_resample:
        raise ValueError("importance_resample is not available in a batch; the per-dataset log weights are in "
                         "stats['log_weights']")
    config = _make_config(post0, family, n_steps, n_elbo_samples, n_draws, learning_rate, schedule, optimizer,
                          init_scale, stick_the_landing, flow_type, flow_layers, knots, interval, nn_width, nn_depth)
    start = _init_from(post0, init, family, float(init_scale))
    return _SVITrace(start, config, post0.is_proper), _psis_all


class _SVITrace(eqx.Module):
    """:func:`svi` as one pure function ``(post, key) -> Result`` (draws, ELBO, log weights)."""

    start: Any
    config: SVIConfig = eqx.field(static=True)
    proper: bool = eqx.field(static=True)

    def __call__(self, post: Posterior, key) -> Result:
        run_key, _ = jax.random.split(key)
        out = run_svi(post, run_key, self.config, self.start)
        nan = jnp.asarray(jnp.nan, out.elbo_final.dtype)
        ok = jnp.isfinite(out.elbo_final)
        stats = {"elbo": out.elbo, "elbo_final": out.elbo_final, "log_weights": out.log_weights,
                 "energy": out.energy, "ok": ok}
        return Result(params={name: out.params[name] for name in post.names}, method="svi", sample_dims=2,
                      log_evidence=out.elbo_final if self.proper else nan,
                      log_evidence_se=out.elbo_se if self.proper else nan, stats=stats)


def _psis_all(stacked: Result) -> Result:
    log_w = np.asarray(stacked.stats["log_weights"])
    khat, log_evidence_is, is_ess = [], [], []
    for row in log_w:
        weights, k, log_z = psis(row)
        khat.append(k)
        log_evidence_is.append(log_z)
        is_ess.append(1.0 / np.sum(np.exp(weights) ** 2))
    # NaN where the ELBO is (an improper prior: no evidence)
    log_evidence_is = np.where(np.isnan(np.asarray(stacked.log_evidence)), np.nan, log_evidence_is)
    stats = {**stacked.stats, "khat": jnp.asarray(khat), "is_ess": jnp.asarray(is_ess),
             "log_evidence_is": jnp.asarray(log_evidence_is)}
    return eqx.tree_at(lambda r: r.stats, stacked, stats)
