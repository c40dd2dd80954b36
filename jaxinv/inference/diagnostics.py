"""Calibration diagnostics: simulation-based calibration (SBC) rank statistics.

Simulation-based calibration (Talts, Betancourt, Simpson, Vehtari & Gelman 2018,
"Validating Bayesian inference algorithms with simulation-based calibration",
arXiv:1804.06788) checks an inference engine against the model it claims to
invert.  For each replication

    theta ~ p(theta),   y ~ p(y | theta),   theta_1..theta_L ~ engine(p(theta | y)),

the rank ``r = #{l : theta_l < theta}`` of the true value among ``L`` posterior
draws is uniform on ``{0, ..., L}`` when the draws are exact and independent
(Talts et al., Theorem 1): averaging the posterior over the prior predictive
gives back the prior.  A posterior too narrow gives a U-shaped histogram of
ranks, one too wide a hump, a biased one a slope.  Autocorrelated draws also
pile ranks up at both ends, so MCMC draws must be thinned to roughly
independent ones first (Talts et al., sec. 5.1).

These functions are pure ``jax.numpy`` and work under ``jit``/``vmap``, so that
all replications can be run as one compiled program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sbc_ranks", "thin", "rank_histogram", "rank_uniformity_pvalue"]


def sbc_ranks(theta, draws):
    """SBC rank of each true parameter value among its posterior draws.

    Args:
        theta: the true value of one replication, a pytree (e.g. ``{name: value}``)
            of arrays of shape ``(...)``.
        draws: the same pytree with arrays of shape ``(L, ...)``: ``L`` posterior
            draws (thinned to be roughly independent).

    Returns:
        The pytree of integer ranks ``#{l : draws[l] < theta}`` in ``{0, ..., L}``,
        shape ``(...)``.  Ranks are invariant under monotone maps, so constrained
        and unconstrained draws give the same ranks.
    """
    return jax.tree_util.tree_map(
        lambda t, d: jnp.sum(d < jnp.asarray(t)[None], axis=0).astype(jnp.int32), theta, draws)


def thin(draws, n_keep: int, axis: int = 0):
    """``n_keep`` draws evenly spaced along ``axis`` (the last one kept), to reduce
    autocorrelation before ranking (Talts et al. 2018, sec. 5.1)."""
    n = draws.shape[axis]
    if not 1 <= n_keep <= n:
        raise ValueError(f"cannot keep {n_keep} of {n} draws")
    step = n // n_keep
    index = n - 1 - step * np.arange(n_keep)[::-1]
    return jnp.take(draws, jnp.asarray(index), axis=axis)


def rank_histogram(ranks, n_draws: int, n_bins: int):
    """Counts of ranks in ``{0, ..., n_draws}`` in ``n_bins`` equal bins.

    ``n_draws + 1`` must be a multiple of ``n_bins`` (every bin then holds the same
    number of rank values and has the same expected count under uniformity).
    Ranks are along the first axis; the result has shape ``(n_bins, ...)``.
    """
    if (n_draws + 1) % n_bins:
        raise ValueError(f"n_draws + 1 = {n_draws + 1} must be a multiple of n_bins = {n_bins}")
    ranks = jnp.asarray(ranks)
    width = (n_draws + 1) // n_bins
    bins = jnp.clip(ranks // width, 0, n_bins - 1)
    return jnp.sum(bins[None] == jnp.arange(n_bins).reshape((n_bins,) + (1,) * ranks.ndim), axis=1)


def rank_uniformity_pvalue(ranks, n_draws: int, n_bins: int = 10):
    """Chi-square p-value of the hypothesis that SBC ranks are uniform.

    The ranks of ``N`` replications (first axis) are binned into ``n_bins`` equal
    bins (``rank_histogram``); under uniformity each bin expects ``N / n_bins``
    and ``X^2 = sum (count - N/n_bins)^2 / (N/n_bins)`` is chi-square with
    ``n_bins - 1`` degrees of freedom (Talts et al. 2018, sec. 4.1, use the same
    binned histogram).  Keep ``N / n_bins`` at 5 or more for the chi-square
    approximation.

    Args:
        ranks: integer ranks in ``{0, ..., n_draws}``, shape ``(N, ...)``.
        n_draws: ``L``, the number of posterior draws each rank was taken among.
        n_bins: bins of the histogram; ``n_draws + 1`` must be a multiple of it.

    Returns:
        p-values, shape ``(...)`` (one per parameter component).
    """
    counts = rank_histogram(ranks, n_draws, n_bins).astype(jnp.result_type(float))
    expected = jnp.asarray(ranks).shape[0] / n_bins
    statistic = jnp.sum((counts - expected) ** 2, axis=0) / expected
    return jax.scipy.special.gammaincc((n_bins - 1) / 2.0, statistic / 2.0)
