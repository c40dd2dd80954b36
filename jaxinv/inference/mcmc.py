"""Hamiltonian Monte Carlo: BlackJAX NUTS and HMC with window adaptation.

Each chain starts from its own prior draw (over-dispersed, so that R-hat can
see chains that disagree), tunes its step size and diagonal inverse mass matrix
with ``blackjax.window_adaptation`` (Stan's three-phase warmup), then draws with
the tuned kernel.  Chains run in parallel under ``vmap``; the whole run is one
compiled program.  Draws are returned in constrained (physical) space, with the
convergence diagnostics of Vehtari et al. (2021, Bayesian Analysis 16, 667):
rank-normalised split R-hat and bulk/tail effective sample sizes (via ArviZ).
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import blackjax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..model import Posterior
from ..results import Result, _az
from . import _checkpoint
from ._draws import constrain_draws, feasible_prior_draws, feasible_prior_draws_traced
from ._progress import end_progress, progress_reporter, report_progress

__all__ = ["sample_hmc"]

_METHODS = ("nuts", "hmc")


def _algorithm(method: str, num_integration_steps: int):
    if method == "nuts":
        return blackjax.nuts, {}
    if method == "hmc":
        return blackjax.hmc, {"num_integration_steps": num_integration_steps}
    raise ValueError(f"unknown HMC method {method!r}; available: {_METHODS}")


class _Config(NamedTuple):
    method: str
    n_warmup: int
    n_draws: int
    num_integration_steps: int
    target_acceptance: float
    beta: float
    dense_mass: bool = False


class _Chain(NamedTuple):
    """One chain between draws: sampler state, tuned parameters, draws so far."""

    state: Any
    parameters: dict
    n_done: jax.Array
    position: jax.Array
    energy: jax.Array
    diverging: jax.Array
    acceptance: jax.Array
    n_steps: jax.Array
    log_likelihood: jax.Array


def _logdensity(post: Posterior, beta):
    def logdensity(z):
        # the power posterior p(y|z)^beta p(z); beta = 1 is the posterior
        return post.log_prior(z) + beta * post.log_likelihood(z)

    return logdensity


@eqx.filter_jit
def _warmup(post: Posterior, config: _Config, keys, z0, inverse_mass_matrix=None):
    """Window adaptation of every chain (vmapped); returns the chains ready to draw."""
    algorithm, extra = _algorithm(config.method, config.num_integration_steps)
    logdensity = _logdensity(post, config.beta)
    if inverse_mass_matrix is not None:
        extra = {**extra, "initial_inverse_mass_matrix": inverse_mass_matrix}

    def one_chain(key, z):
        warmup = blackjax.window_adaptation(
            algorithm, logdensity, is_mass_matrix_diagonal=not config.dense_mass,
            target_acceptance_rate=config.target_acceptance, **extra
        )
        # the tuned parameters include the fixed ones (num_integration_steps for HMC)
        (state, parameters), _ = warmup.run(key, z, num_steps=config.n_warmup)
        n, d, dtype = config.n_draws, z.shape[0], z.dtype
        return _Chain(state, parameters, jnp.asarray(0), jnp.zeros((n, d), dtype), jnp.zeros(n, dtype),
                      jnp.zeros(n, bool), jnp.zeros(n, dtype), jnp.zeros(n, jnp.int32), jnp.zeros(n, dtype))

    return jax.vmap(one_chain)(keys, z0)


@eqx.filter_jit
def _draw(post: Posterior, config: _Config, keys, chains: _Chain, stop_at):
    """Advance every chain to ``min(stop_at, n_draws)`` draws; draw ``i`` uses ``fold_in(key, i)``."""
    algorithm, _ = _algorithm(config.method, config.num_integration_steps)
    logdensity = _logdensity(post, config.beta)

    def one_chain(key, chain: _Chain):
        def body(c: _Chain):
            i = c.n_done
            jitter_key, step_key = jax.random.split(jax.random.fold_in(key, i))
            tuned = dict(c.parameters)
            if config.method == "hmc":
                # a fixed path length resonates with near-Gaussian targets; jitter the
                # step size by +-20% each transition (Neal 2011, Handbook of MCMC, sec. 5.4.2.3)
                tuned["step_size"] = tuned["step_size"] * jax.random.uniform(jitter_key, minval=0.8, maxval=1.2)
            state, info = algorithm(logdensity, **tuned).step(step_key, c.state)
            return c._replace(
                state=state, n_done=i + 1,
                position=c.position.at[i].set(state.position), energy=c.energy.at[i].set(-state.logdensity),
                diverging=c.diverging.at[i].set(info.is_divergent),
                acceptance=c.acceptance.at[i].set(info.acceptance_rate),
                n_steps=c.n_steps.at[i].set(info.num_integration_steps),
                log_likelihood=c.log_likelihood.at[i].set(post.log_likelihood(state.position)),
            )

        return jax.lax.while_loop(lambda c: (c.n_done < stop_at) & (c.n_done < config.n_draws), body, chain)

    return jax.vmap(one_chain)(keys, chains)


def _diagnostics(params: dict) -> tuple[dict, dict, dict]:
    """Per-parameter max R-hat, min bulk ESS and min tail ESS."""
    az = _az()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_dict(posterior={k: np.asarray(v) for k, v in params.items()})
        rhat = az.rhat(idata)
        bulk = az.ess(idata, method="bulk")
        tail = az.ess(idata, method="tail")
        # NaN where undefined (R-hat of a single chain)
        pick = lambda ds, f: {k: float(f(ds[k].values)) for k in params}
        return pick(rhat, np.nanmax), pick(bulk, np.nanmin), pick(tail, np.nanmin)


def sample_hmc(
    post: Posterior,
    key,
    method: str = "nuts",
    *,
    n_chains: int = 4,
    n_warmup: int = 1000,
    n_draws: int = 1000,
    init=None,
    num_integration_steps: int = 16,
    target_acceptance: float = 0.8,
    beta: float = 1.0,
    dense_mass: bool = False,
    inverse_mass_matrix=None,
    checkpoint=None,
    checkpoint_every: int = 200,
    progress=None,
) -> Result:
    """Posterior draws by NUTS (default) or static-path HMC.

    Args:
        post: the posterior.
        key: PRNG key.
        method: ``"nuts"`` or ``"hmc"``.
        n_chains: independent chains, run in parallel (vmap).
        n_warmup: adaptation steps per chain (step size, diagonal mass matrix).
        n_draws: kept draws per chain.
        init: unconstrained starting points ``(n_chains, dim)``; default: prior draws.
        num_integration_steps: leapfrog steps per HMC proposal (``"hmc"`` only).
        target_acceptance: dual-averaging target acceptance rate.
        dense_mass: adapt a dense inverse mass matrix (the posterior covariance) instead
            of a diagonal one: for strongly correlated posteriors (smoothness priors,
            e.g. a GMRF path), where a diagonal metric forces deep trees.
        inverse_mass_matrix: the adaptation's starting inverse mass matrix, ``(dim,)``
            (diagonal) or ``(dim, dim)`` (with ``dense_mass``), e.g. the Laplace
            covariance at the MAP; default the identity.
        beta: inverse temperature: draws from the power posterior
            ``p(y | theta)^beta p(theta)`` (1: the posterior; WBIC uses ``1/log n``).
        checkpoint: checkpoint file: written atomically after warmup and every
            ``checkpoint_every`` draws; a run restarted with the same arguments
            resumes from it and yields the same draws as an uninterrupted run.
        progress: ``callable(done, total)`` called as draws complete (or ``True``
            for a progress line on stderr).

    Returns:
        A :class:`~jaxinv.Result` with ``params`` of shape ``(n_chains, n_draws, ...)``
        and ``stats``: per-draw ``energy``, ``log_likelihood``, ``diverging``, ``acceptance_rate``,
        ``n_steps`` (leapfrog steps); per chain ``step_size``; and ``rhat_max``,
        ``ess_min`` (bulk), ``ess_tail_min``, ``divergences`` (total), plus
        per-parameter ``rhat_NAME``, ``ess_bulk_NAME``, ``ess_tail_NAME``.
        Warns (``RuntimeWarning``) naming every parameter with R-hat > 1.01, and
        when any transition diverged.
    """
    config = _make_config(method, n_chains, n_warmup, n_draws, num_integration_steps, target_acceptance, beta,
                          dense_mass)
    init_key, run_key = jax.random.split(key)
    if init is None:
        z0 = feasible_prior_draws(post, init_key, n_chains)
    else:
        z0 = jnp.asarray(init, dtype=jnp.result_type(float))
    if z0.shape != (n_chains, post.dim):
        raise ValueError(f"init must have shape ({n_chains}, {post.dim}), got {z0.shape}")
    if inverse_mass_matrix is not None:
        inverse_mass_matrix = jnp.asarray(inverse_mass_matrix, dtype=z0.dtype)
        expected = (post.dim, post.dim) if dense_mass else (post.dim,)
        if inverse_mass_matrix.shape != expected:
            raise ValueError(f"inverse_mass_matrix must have shape {expected} "
                             f"({'dense' if dense_mass else 'diagonal'} mass), got {inverse_mass_matrix.shape}")
        if not bool(jnp.all(jnp.isfinite(inverse_mass_matrix))):
            raise ValueError("inverse_mass_matrix has non-finite entries")
    warm_key, draw_key = jax.random.split(run_key)
    fp = None
    chains = None
    if checkpoint is not None:
        imm_bytes = b"" if inverse_mass_matrix is None else np.asarray(inverse_mass_matrix).tobytes()
        fp = _checkpoint.fingerprint("hmc", post, key, config, n_chains, np.asarray(z0).tobytes() + imm_bytes)
        template = jax.eval_shape(lambda: _warmup(post, config, jax.random.split(warm_key, n_chains), z0,
                                                  inverse_mass_matrix))
        chains = _checkpoint.restore(checkpoint, fp, template)
    if chains is None:
        chains = _warmup(post, config, jax.random.split(warm_key, n_chains), z0, inverse_mass_matrix)
        if checkpoint is not None:
            _checkpoint.save(checkpoint, fp, chains)
    every = checkpoint_every if checkpoint is not None else (max(n_draws // 20, 1) if progress else n_draws)
    draw_keys = jax.random.split(draw_key, n_chains)
    report = progress_reporter(progress, "draws ")
    while (done := int(jnp.min(chains.n_done))) < n_draws:
        chains = _draw(post, config, draw_keys, chains, jnp.asarray(done + every))
        if checkpoint is not None:
            _checkpoint.save(checkpoint, fp, chains)
        report_progress(report, int(jnp.min(chains.n_done)), n_draws)
    end_progress(report)
    z, energy, diverging = chains.position, chains.energy, chains.diverging
    acceptance, n_steps, log_likelihood = chains.acceptance, chains.n_steps, chains.log_likelihood
    step_size = chains.parameters["step_size"]
    params, _ = constrain_draws(post, z)
    rhat, ess_bulk, ess_tail = _diagnostics(params)
    divergences = int(jnp.sum(diverging))
    bad = [f"{k} (R-hat {v:.3f})" for k, v in rhat.items() if np.isfinite(v) and v > 1.01]
    if bad:
        warnings.warn(f"chains disagree: R-hat > 1.01 for {', '.join(bad)}; run longer or reparameterise",
                      RuntimeWarning, stacklevel=2)
    if divergences:
        warnings.warn(f"{divergences} divergent transition(s) after warmup: the posterior has regions the "
                      "integrator cannot follow; the draws may be biased", RuntimeWarning, stacklevel=2)
    stats = {
        "energy": energy,
        "log_likelihood": log_likelihood,
        "diverging": diverging,
        "acceptance_rate": acceptance,
        "n_steps": n_steps,
        "step_size": step_size,
        "inverse_mass_matrix": chains.parameters["inverse_mass_matrix"],  # adapted: (chains, dim[, dim])
        "rhat_max": jnp.asarray(max(rhat.values())),
        "ess_min": jnp.asarray(min(ess_bulk.values())),
        "ess_tail_min": jnp.asarray(min(ess_tail.values())),
        "divergences": jnp.asarray(divergences),
    }
    for name in post.names:
        stats[f"rhat_{name}"] = jnp.asarray(rhat[name])
        stats[f"ess_bulk_{name}"] = jnp.asarray(ess_bulk[name])
        stats[f"ess_tail_{name}"] = jnp.asarray(ess_tail[name])
    return Result(params=params, method=method, sample_dims=2, stats=stats, observed=post.y)


# -- many datasets (jaxinv.batch) ---------------------------------------------------------------
def batch_adapter(post0: Posterior, method: str = "hmc", *, n_chains: int = 4, n_warmup: int = 1000,
                  n_draws: int = 1000, num_integration_steps: int = 16, target_acceptance: float = 0.8,
                  beta: float = 1.0, dense_mass: bool = False):
    """``(trace, finish)`` for :func:`jaxinv.batch`: :func:`sample_hmc` as one pure function
    of a posterior and a key (same keys, same draws as a single call), and a host step that
    adds the convergence diagnostics of every dataset at once (ArviZ, the dataset axis
    treated as one more parameter dimension).

    Under ``vmap`` the datasets' chains run in lockstep: every NUTS iteration waits for
    the deepest tree among them.  Static-path HMC (``"hmc"``, the batch default) spends
    the same ``num_integration_steps`` gradients in every lane; ``stats["n_steps"]``
    records what each lane used, from which :func:`jaxinv.batch` reports the lane
    efficiency."""
    config = _make_config(method, n_chains, n_warmup, n_draws, num_integration_steps, target_acceptance, beta,
                          dense_mass)
    return _HMCTrace(config, int(n_chains)), _with_diagnostics


def _make_config(method, n_chains, n_warmup, n_draws, num_integration_steps, target_acceptance, beta,
                 dense_mass) -> _Config:
    """The settings shared by :func:`sample_hmc` and its batch adapter, checked once."""
    _algorithm(method, num_integration_steps)  # validates the name
    if not 0.0 < beta <= 1.0:
        raise ValueError(f"beta must lie in (0, 1], got {beta}")
    if n_chains < 1 or n_draws < 1 or n_warmup < 0:
        raise ValueError("n_chains and n_draws must be >= 1 and n_warmup >= 0")
    return _Config(method, int(n_warmup), int(n_draws), int(num_integration_steps), float(target_acceptance),
                   float(beta), bool(dense_mass))


def _with_diagnostics(stacked: Result) -> Result:
    return eqx.tree_at(lambda r: r.stats, stacked, {**stacked.stats, **batch_diagnostics(stacked.params)})


class _HMCTrace(eqx.Module):
    """:func:`sample_hmc` as one pure function ``(post, key) -> Result`` (same keys)."""

    config: _Config = eqx.field(static=True)
    n_chains: int = eqx.field(static=True)

    def __call__(self, post: Posterior, key) -> Result:
        config, n_chains = self.config, self.n_chains
        init_key, run_key = jax.random.split(key)
        z0 = feasible_prior_draws_traced(post, init_key, n_chains)
        warm_key, draw_key = jax.random.split(run_key)
        chains = _warmup(post, config, jax.random.split(warm_key, n_chains), z0)
        chains = _draw(post, config, jax.random.split(draw_key, n_chains), chains, jnp.asarray(config.n_draws))
        params = jax.vmap(jax.vmap(post.constrain))(chains.position)
        ok = jnp.all(jnp.isfinite(chains.energy)) & jnp.all(jnp.isfinite(z0))
        stats = {"energy": chains.energy, "log_likelihood": chains.log_likelihood, "diverging": chains.diverging,
                 "acceptance_rate": chains.acceptance, "n_steps": chains.n_steps,
                 "step_size": chains.parameters["step_size"], "divergences": jnp.sum(chains.diverging), "ok": ok}
        return Result(params={name: params[name] for name in post.names}, method=config.method, sample_dims=2,
                      stats=stats)


def batch_diagnostics(params: dict) -> dict:
    """R-hat and bulk/tail ESS of draws ``{name: (datasets, chains, draws, ...)}``, per
    dataset: ``rhat_max``, ``ess_min``, ``ess_tail_min`` (shape ``(datasets,)``) and per
    parameter ``rhat_NAME``... (the worst element of each parameter)."""
    az = _az()
    moved = {k: np.moveaxis(np.asarray(v), 0, 2) for k, v in params.items()}  # (chains, draws, datasets, ...)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = az.from_dict(posterior=moved)
        measures = {"rhat": az.rhat(idata), "ess_bulk": az.ess(idata, method="bulk"),
                    "ess_tail": az.ess(idata, method="tail")}
    out = {}
    for label, ds in measures.items():
        worst = np.nanmax if label == "rhat" else np.nanmin
        per_param = []
        for name in params:
            values = np.asarray(ds[name].values)
            values = values.reshape(values.shape[0], -1)  # (datasets, elements)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN (one chain)
                per_param.append(worst(values, axis=1))
            out[f"{label}_{name}"] = jnp.asarray(per_param[-1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out[{"rhat": "rhat_max", "ess_bulk": "ess_min", "ess_tail": "ess_tail_min"}[label]] = jnp.asarray(
                worst(np.stack(per_param), axis=0))
    return out
