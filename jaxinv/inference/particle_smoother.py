"""Sequential Monte Carlo over time: bootstrap particle filter and particle smoothers.

A state-space model with hidden states ``x_0, ..., x_{K-1}`` and observations
``y_0, ..., y_{K-1}``,

    x_0 ~ mu(x_0),        x_k | x_{k-1} ~ f_k(x_k | x_{k-1}),        y_k | x_k ~ g_k(y_k | x_k),

is given as a :class:`StateSpaceModel` of per-particle callables.  The time index
``k = 0, ..., K-1`` is passed to every callable, so the model may be
time-inhomogeneous (e.g. one growth step of a zoned crystal per ``k``, Kuwatani
et al. 2018, Phys. Rev. E 98, 043311).

**Filter** (:func:`particle_filter`).  The bootstrap filter (Gordon, Salmond &
Smith 1993; Doucet & Johansen 2009, "A tutorial on particle filtering and
smoothing", sec. 4) carries ``N`` particles ``x_k^i`` with normalised weights
``W_k^i``.  At ``k = 0`` the particles are drawn from ``mu`` and weighted by
``g_0(y_0 | x_0^i)``.  At each later step

1. if ``ESS_{k-1} = 1 / sum_i (W_{k-1}^i)^2 < ess_threshold * N`` the ancestors
   ``a_k^i`` are resampled with probabilities ``W_{k-1}`` and the weights reset to
   ``1/N`` (adaptive resampling, Doucet & Johansen 2009, sec. 3.5); otherwise
   ``a_k^i = i`` and the weights are kept;
2. the particles move, ``x_k^i ~ f_k( . | x_{k-1}^{a_k^i})``;
3. they are reweighted, ``W_k^i ∝ W̃_{k-1}^i g_k(y_k | x_k^i)`` with ``W̃`` the
   weights after step 1.

The log marginal likelihood is the sum of the logs of the (weighted) mean
incremental weights,

    log p̂(y_{0:K-1}) = sum_k log( sum_i W̃_{k-1}^i g_k(y_k | x_k^i) ),

an unbiased estimate of ``p(y_{0:K-1})`` on the natural scale (Del Moral 2004),
and so usable inside particle-marginal Metropolis-Hastings (Andrieu, Doucet &
Holenstein 2010, JRSS B 72, 269).

*Missing observations*: a row ``y_k`` whose entries are all NaN is missing; its
weight update is skipped (``g_k = 1``: the particles only propagate, and the
evidence increment is zero).  Rows with only some NaN entries are passed to
``observation_log_prob`` unchanged, which must then handle them itself.  A NaN
returned by ``observation_log_prob`` counts as ``-inf`` (zero likelihood).  If
every particle has zero likelihood at some step the log evidence is ``-inf`` and
the weights are reset to uniform, so the result stays free of NaN (a sampler
using the evidence then rejects cleanly).

**Smoothers** (:func:`particle_smoother`).  Both return ``n_paths`` trajectories
``x_{0:K-1}`` approximately distributed as ``p(x_{0:K-1} | y_{0:K-1})``:

* ``"ffbsi"`` -- forward-filtering backward-simulation (Godsill, Doucet & West
  2004, JASA 99, 156; Doucet & Johansen 2009, sec. 5.1): draw
  ``x̃_{K-1} ~ sum_i W_{K-1}^i δ(x_{K-1}^i)``, then for ``k = K-2, ..., 0``

      P(x̃_k = x_k^i)  ∝  W_k^i f_{k+1}(x̃_{k+1} | x_k^i).

  Cost ``O(K N n_paths)``.  Paths may combine particles from different ancestral
  lines, so it does not degenerate at early times, but it needs the transition
  density ``transition_log_prob`` and that density must not vanish (for
  deterministic or nearly deterministic transitions use ``"genealogy"``).
* ``"genealogy"`` -- the path (fixed-interval) smoother read off the filter's
  genealogy (Kitagawa 1996, J. Comput. Graph. Stat. 5, 1; Doucet & Johansen
  2009, sec. 5.1): draw final indices ``j ~ W_{K-1}`` and follow the ancestor
  indices back, ``i_{k-1} = a_k^{i_k}``.  Cost ``O(K n_paths)`` and no transition
  density is needed, but repeated resampling collapses the ancestral lines, so at
  times far before ``K-1`` only a few distinct particles (often one) survive: the
  smoothed marginals there are badly under-dispersed.  It is reliable only over a
  lag of a few resampling steps before the end (Kitagawa's fixed-lag smoother).

Everything is a pure function of an explicit PRNG key, compiled with
``jax.lax.scan`` over time, and can be called inside ``jax.jit`` or ``jax.vmap``
(e.g. over independent runs).  A particle may be an array of any shape or a
PyTree of arrays; the results carry the time axis first and the particle axis
second on every leaf.  The model's callables are treated as static by the
compiled functions: pass the same callables to reuse the compiled program.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, NamedTuple

import blackjax.smc.resampling as _resampling
import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

__all__ = [
    "FilterResult",
    "SmootherResult",
    "StateSpaceModel",
    "backward_simulation",
    "genealogy",
    "particle_filter",
    "particle_smoother",
]

#: resampling schemes (BlackJAX implementations), by name
RESAMPLERS = {
    "systematic": _resampling.systematic,
    "stratified": _resampling.stratified,
    "multinomial": _resampling.multinomial,
}
#: smoothing methods, by name
SMOOTHERS = ("ffbsi", "genealogy")


class StateSpaceModel(NamedTuple):
    """A state-space model as per-particle callables (no batch axis: they are vmapped).

    Attributes:
        initial_sample: ``(key) -> x_0``, a draw from ``mu(x_0)``.
        transition_sample: ``(key, x_prev, k) -> x_k``, a draw from
            ``f_k(x_k | x_{k-1} = x_prev)``; ``k`` is the integer time index (traced).
        observation_log_prob: ``(y_k, x_k, k) -> log g_k(y_k | x_k)``, a scalar.
            Only the weights' dependence on ``x_k`` matters for the smoothers;
            the normalising constant matters for the log evidence.
        transition_log_prob: ``(x_new, x_prev, k) -> log f_k(x_new | x_prev)``, a
            scalar, where ``k`` is the time of ``x_new``.  Needed by FFBSi only.
    """

    initial_sample: Callable
    transition_sample: Callable
    observation_log_prob: Callable
    transition_log_prob: Callable | None = None


class FilterResult(NamedTuple):
    """Output of :func:`particle_filter` (``K`` time steps, ``N`` particles).

    Attributes:
        particles: ``x_k^i``, shape ``(K, N, ...)`` (every leaf, for a PyTree state).
        log_weights: normalised log weights ``log W_k^i``, ``(K, N)``
            (``logsumexp`` over particles is 0 at every ``k``).
        ancestors: ``a_k^i``, the index into ``particles[k-1]`` of the parent of
            ``particles[k, i]``, ``(K, N)`` int; ``ancestors[0] = arange(N)``,
            and ``ancestors[k] = arange(N)`` wherever ``resampled[k]`` is False.
        ess: effective sample size ``1 / sum_i (W_k^i)^2`` of the weights at each
            step, ``(K,)``.
        log_evidence: estimate of ``log p(y_{0:K-1})``, scalar.
        resampled: ``(K,)`` bool, whether the ancestors of step ``k`` were
            resampled (decided on ``ess[k-1]``); ``resampled[0]`` is False.
    """

    particles: Any
    log_weights: jax.Array
    ancestors: jax.Array
    ess: jax.Array
    log_evidence: jax.Array
    resampled: jax.Array


class SmootherResult(NamedTuple):
    """Output of :func:`particle_smoother`.

    Attributes:
        paths: smoothed trajectories, shape ``(K, n_paths, ...)`` (every leaf).
        filter: the :class:`FilterResult` they were drawn from.
    """

    paths: Any
    filter: FilterResult


# --------------------------------------------------------------------------- helpers


def _take(tree, idx):
    """Rows ``idx`` of the leading axis of every leaf."""
    return jax.tree.map(lambda leaf: jnp.take(leaf, idx, axis=0), tree)


def _ess(log_w: jax.Array) -> jax.Array:
    """``1 / sum_i W_i^2`` for normalised log weights."""
    return jnp.exp(-logsumexp(2.0 * log_w))


def _stack_first(first, rest):
    """Prepend one time step ``first`` to the scanned ``rest`` (every leaf)."""
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b], axis=0), first, rest)


def _reweight(model: StateSpaceModel, y, x, k, log_w_prev):
    """Normalised log weights ``log W_k`` and the evidence increment ``log sum_i W̃^i g_k``.

    An all-NaN ``y`` is missing: no update.  NaN log-likelihoods count as ``-inf``.
    """
    missing = jnp.all(jnp.isnan(y))
    # a harmless stand-in where missing, so neither values nor gradients see NaN
    y_used = jnp.where(missing, jnp.zeros_like(y), y)
    log_g = jax.vmap(model.observation_log_prob, in_axes=(None, 0, None))(y_used, x, k)
    log_g = jnp.where(jnp.isnan(log_g), -jnp.inf, log_g)
    log_g = jnp.where(missing, jnp.zeros_like(log_g), log_g)
    unnormalised = log_w_prev + log_g
    increment = logsumexp(unnormalised)
    n = log_w_prev.shape[0]
    alive = jnp.isfinite(increment)
    log_w = jnp.where(alive, unnormalised - increment, -jnp.log(n))
    return log_w, increment


# --------------------------------------------------------------------------- validation


def _check_count(value, name: str) -> int:
    if isinstance(value, bool) or not _is_integer(value):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    value = operator.index(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _is_integer(value) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def _check_model(model, *, need_transition_log_prob: bool, what: str) -> None:
    for field in ("initial_sample", "transition_sample", "observation_log_prob"):
        if not callable(getattr(model, field, None)):
            raise TypeError(f"model.{field} must be callable (a StateSpaceModel), got {getattr(model, field, None)!r}")
    if need_transition_log_prob and not callable(getattr(model, "transition_log_prob", None)):
        raise ValueError(
            f"{what} needs the transition density: model.transition_log_prob is None "
            "(give it, or use method='genealogy')"
        )


def _check_resample(resample: str):
    if resample not in RESAMPLERS:
        raise ValueError(f"unknown resample scheme {resample!r}; choose one of {sorted(RESAMPLERS)}")
    return resample


def _check_threshold(ess_threshold):
    if isinstance(ess_threshold, jax.core.Tracer):  # traced (e.g. vmapped over): unchecked
        return ess_threshold
    try:
        value = float(ess_threshold)
    except (TypeError, ValueError):
        raise ValueError(f"ess_threshold must be a number in [0, 1], got {ess_threshold!r}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {value}")
    return value


def _check_observations(observations) -> jax.Array:
    observations = jnp.asarray(observations)
    if observations.ndim < 1:
        raise ValueError(
            f"observations must be at least 1-D with time on the leading axis, got shape {observations.shape}"
        )
    if observations.shape[0] < 1:
        raise ValueError("observations must have at least one time step (leading axis of length 0)")
    return observations


def _check_shapes(model: StateSpaceModel, observations: jax.Array, key) -> None:
    """Trace the callables once (no FLOPs) so that mismatches fail here, clearly."""
    k = jax.ShapeDtypeStruct((), jnp.arange(1).dtype)
    y = jax.ShapeDtypeStruct(observations.shape[1:], observations.dtype)
    x0 = jax.eval_shape(model.initial_sample, key)
    x1 = jax.eval_shape(model.transition_sample, key, x0, k)
    s0, s1 = jax.tree.structure(x0), jax.tree.structure(x1)
    if s0 != s1:
        raise ValueError(f"transition_sample returns a state of structure {s1}, initial_sample {s0}")
    for a, b in zip(jax.tree.leaves(x0), jax.tree.leaves(x1)):
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(
                f"transition_sample returns a state of shape {b.shape} ({b.dtype}); "
                f"initial_sample gives {a.shape} ({a.dtype}): they must agree"
            )
    log_g = jax.eval_shape(model.observation_log_prob, y, x0, k)
    if getattr(log_g, "shape", None) != ():
        raise ValueError(f"observation_log_prob must return a scalar, got shape {getattr(log_g, 'shape', log_g)}")
    if model.transition_log_prob is not None:
        log_f = jax.eval_shape(model.transition_log_prob, x0, x0, k)
        if getattr(log_f, "shape", None) != ():
            raise ValueError(f"transition_log_prob must return a scalar, got shape {getattr(log_f, 'shape', log_f)}")


def _check_filter_result(filter_result) -> None:
    if not isinstance(filter_result, FilterResult):
        raise TypeError(f"filter_result must be a FilterResult, got {type(filter_result).__name__}")


# --------------------------------------------------------------------------- filter


@eqx.filter_jit
def _filter(model: StateSpaceModel, observations, key, n: int, resample: str, ess_threshold) -> FilterResult:
    resample_fn = RESAMPLERS[resample]
    n_steps = observations.shape[0]
    times = jnp.arange(n_steps)
    keys = jax.random.split(key, n_steps)
    identity = jnp.arange(n, dtype=jnp.int32)

    x0 = jax.vmap(model.initial_sample)(jax.random.split(keys[0], n))
    log_w0, log_z0 = _reweight(model, observations[0], x0, times[0], jnp.full(n, -jnp.log(n)))
    first = (x0, log_w0, identity, _ess(log_w0), jnp.asarray(False))

    def step(carry, inputs):
        x_prev, log_w_prev, log_z = carry
        k, y, key_k = inputs
        key_resample, key_move = jax.random.split(key_k)
        do_resample = _ess(log_w_prev) < ess_threshold * n
        drawn = resample_fn(key_resample, jnp.exp(log_w_prev), n).astype(jnp.int32)
        ancestors = jnp.where(do_resample, drawn, identity)
        log_w_base = jnp.where(do_resample, jnp.full(n, -jnp.log(n)), log_w_prev)
        x = jax.vmap(model.transition_sample, in_axes=(0, 0, None))(
            jax.random.split(key_move, n), _take(x_prev, ancestors), k
        )
        log_w, increment = _reweight(model, y, x, k, log_w_base)
        return (x, log_w, log_z + increment), (x, log_w, ancestors, _ess(log_w), do_resample)

    (_, _, log_z), rest = jax.lax.scan(step, (x0, log_w0, log_z0), (times[1:], observations[1:], keys[1:]))
    particles, log_weights, ancestors, ess, resampled = _stack_first(first, rest)
    return FilterResult(particles, log_weights, ancestors, ess, log_z, resampled)


def particle_filter(
    model: StateSpaceModel,
    observations,
    key,
    n_particles: int,
    *,
    resample: str = "systematic",
    ess_threshold: float = 0.5,
) -> FilterResult:
    """Bootstrap particle filter with adaptive resampling (see the module docstring).

    Args:
        model: the :class:`StateSpaceModel`.
        observations: array ``(K, ...)`` with time on the leading axis; ``y_k =
            observations[k]`` is passed to ``observation_log_prob`` with ``k`` the
            integer index ``0..K-1``.  A row that is all NaN is missing (no weight
            update at that step).
        key: PRNG key.
        n_particles: number of particles ``N``.
        resample: ``"systematic"`` (default), ``"stratified"`` or ``"multinomial"``
            (``blackjax.smc.resampling``).
        ess_threshold: resample before step ``k`` when ``ESS_{k-1} <
            ess_threshold * N``; 0 never resamples (sequential importance
            sampling), 1 resamples at every step with non-uniform weights.

    Returns:
        A :class:`FilterResult`.

    Raises:
        ValueError: for ``n_particles < 1``, an unknown ``resample``,
            ``ess_threshold`` outside ``[0, 1]``, 0-D or empty ``observations``,
            or model callables whose outputs do not fit together.
    """
    _check_model(model, need_transition_log_prob=False, what="particle_filter")
    n_particles = _check_count(n_particles, "n_particles")
    resample = _check_resample(resample)
    ess_threshold = _check_threshold(ess_threshold)
    observations = _check_observations(observations)
    _check_shapes(model, observations, key)
    # an array, not a static float: one compiled program serves every threshold
    return _filter(model, observations, key, n_particles, resample, jnp.asarray(ess_threshold, dtype=float))


# --------------------------------------------------------------------------- smoothers


@eqx.filter_jit
def _backward_simulation(model: StateSpaceModel, filter_result: FilterResult, key, n_paths: int):
    particles, log_weights = filter_result.particles, filter_result.log_weights
    n_steps = log_weights.shape[0]
    keys = jax.random.split(key, n_steps)
    final = jax.random.categorical(keys[-1], log_weights[-1], shape=(n_paths,))
    last = _take(jax.tree.map(lambda leaf: leaf[-1], particles), final)

    def step(x_next, inputs):
        x_k, log_w_k, k, key_k = inputs  # the filter at time k; x_next: the paths at k+1

        def log_f(x_new):  # log f_{k+1}(x_new | x_k^i) for every particle i
            return jax.vmap(model.transition_log_prob, in_axes=(None, 0, None))(x_new, x_k, k + 1)

        logits = log_w_k[None, :] + jax.vmap(log_f)(x_next)  # (n_paths, N)
        logits = jnp.where(jnp.isnan(logits), -jnp.inf, logits)
        x = _take(x_k, jax.random.categorical(key_k, logits, axis=-1))
        return x, x

    earlier = jax.tree.map(lambda leaf: leaf[:-1], particles)
    inputs = (earlier, log_weights[:-1], jnp.arange(n_steps - 1), keys[:-1])
    _, paths = jax.lax.scan(step, last, inputs, reverse=True)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]], axis=0), paths, last)


def backward_simulation(model: StateSpaceModel, filter_result: FilterResult, key, n_paths: int):
    """Forward-filtering backward-simulation (FFBSi; Godsill, Doucet & West 2004).

    Draws ``n_paths`` independent (given the filter) trajectories from the particle
    approximation of ``p(x_{0:K-1} | y_{0:K-1})``:

        x̃_{K-1} ~ W_{K-1},        P(x̃_k = x_k^i | x̃_{k+1}) ∝ W_k^i f_{k+1}(x̃_{k+1} | x_k^i).

    Cost ``O(K N n_paths)`` time and ``O(N n_paths)`` memory per step.

    Args:
        model: the :class:`StateSpaceModel`; ``transition_log_prob`` is required.
        filter_result: output of :func:`particle_filter` for the same model.
        key: PRNG key.
        n_paths: number of trajectories.

    Returns:
        The paths, shape ``(K, n_paths, ...)`` (every leaf).
    """
    _check_model(model, need_transition_log_prob=True, what="backward_simulation (FFBSi)")
    _check_filter_result(filter_result)
    n_paths = _check_count(n_paths, "n_paths")
    return _backward_simulation(model, filter_result, key, n_paths)


@eqx.filter_jit
def _genealogy(filter_result: FilterResult, key, n_paths: int):
    particles, log_weights = filter_result.particles, filter_result.log_weights
    final = jax.random.categorical(key, log_weights[-1], shape=(n_paths,)).astype(jnp.int32)

    def step(index_next, inputs):
        ancestors_next, x_k = inputs
        index = ancestors_next[index_next]
        return index, _take(x_k, index)

    earlier = jax.tree.map(lambda leaf: leaf[:-1], particles)
    _, paths = jax.lax.scan(step, final, (filter_result.ancestors[1:], earlier), reverse=True)
    last = _take(jax.tree.map(lambda leaf: leaf[-1], particles), final)
    return jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]], axis=0), paths, last)


def genealogy(filter_result: FilterResult, key, n_paths: int):
    """Path smoother from the filter's genealogy (Kitagawa 1996).

    Draws final indices ``i_{K-1} ~ W_{K-1}`` (independently) and follows the
    ancestor lines back, ``i_{k-1} = a_k^{i_k}``; path ``k`` is ``x_k^{i_k}``.  At
    ``K-1`` the paths are draws from the filter; at earlier times the ancestral
    lines coalesce (see the module docstring), so use it over a short lag only,
    or use :func:`backward_simulation`.

    Args:
        filter_result: output of :func:`particle_filter`.
        key: PRNG key.
        n_paths: number of trajectories.

    Returns:
        The paths, shape ``(K, n_paths, ...)`` (every leaf).
    """
    _check_filter_result(filter_result)
    n_paths = _check_count(n_paths, "n_paths")
    return _genealogy(filter_result, key, n_paths)


def particle_smoother(
    model: StateSpaceModel,
    observations,
    key,
    n_particles: int,
    n_paths: int,
    *,
    method: str = "ffbsi",
    resample: str = "systematic",
    ess_threshold: float = 0.5,
) -> SmootherResult:
    """Particle filter followed by a smoother: trajectories from ``p(x_{0:K-1} | y_{0:K-1})``.

    Args:
        model: the :class:`StateSpaceModel`.
        observations: array ``(K, ...)``, as for :func:`particle_filter`.
        key: PRNG key (split between the filter and the smoother).
        n_particles: number of filter particles ``N``.
        n_paths: number of smoothed trajectories.
        method: ``"ffbsi"`` (:func:`backward_simulation`, default; needs
            ``model.transition_log_prob``) or ``"genealogy"`` (:func:`genealogy`).
        resample: resampling scheme of the filter.
        ess_threshold: the filter's resampling threshold.

    Returns:
        A :class:`SmootherResult`: ``paths`` ``(K, n_paths, ...)`` and the filter.

    Raises:
        ValueError: for an unknown ``method``, ``"ffbsi"`` without
            ``transition_log_prob``, ``n_paths < 1``, or any bad filter argument.
    """
    if method not in SMOOTHERS:
        raise ValueError(f"unknown smoothing method {method!r}; choose one of {list(SMOOTHERS)}")
    _check_model(model, need_transition_log_prob=method == "ffbsi", what="method='ffbsi' (FFBSi)")
    n_paths = _check_count(n_paths, "n_paths")
    key_filter, key_smooth = jax.random.split(key)
    filtered = particle_filter(
        model, observations, key_filter, n_particles, resample=resample, ess_threshold=ess_threshold
    )
    if method == "ffbsi":
        paths = _backward_simulation(model, filtered, key_smooth, n_paths)
    else:
        paths = _genealogy(filtered, key_smooth, n_paths)
    return SmootherResult(paths, filtered)
