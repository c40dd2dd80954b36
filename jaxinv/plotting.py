"""Figures shared by problems: free energy per model, data with fitted curves."""

from __future__ import annotations

from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .selection import Selection

__all__ = ["plot_free_energy", "plot_fit"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@eqx.filter_jit
def _curves(post, forward, zs):
    """``forward`` evaluated at the forward parameters of each row of ``zs``."""
    return jax.vmap(lambda z: forward(post.forward_params(z)))(zs)


def plot_free_energy(selection: Selection, path) -> Path:
    """Free energy F (nats) of each model, the selected one highlighted."""
    plt = _pyplot()
    names = list(selection.results)
    f = np.array([selection.free_energies[n] for n in names])
    se = np.array([float(selection.results[n].free_energy_se) for n in names])
    chosen = selection.selected
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    colors = ["tab:red" if n == chosen else "tab:blue" for n in names]
    ax.errorbar(range(len(names)), f, yerr=se, fmt="none", ecolor="k", capsize=3)
    ax.scatter(range(len(names)), f, c=colors, zorder=3)
    labels = [n if selection.n_components.get(n) is None or n.startswith("K=")
              else f"{n}\nK={selection.n_components[n]}" for n in names]
    ax.set_xticks(range(len(names)), labels)
    ax.set_ylabel("free energy F = -log p(y|M)  [nats]")
    ax.set_title(f"model selection: {chosen} (lowest F)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def _posterior_of(selection: Selection, name: str):
    post = selection.posteriors.get(name)
    if post is None:
        res = selection.results[name]
        if res.laplace is None:
            raise ValueError(f"no posterior recorded for model {name!r}")
        post = res.laplace.posterior
    return post


def _unconstrained_draws(post, res, key, n_draws: int):
    """Up to ``n_draws`` unconstrained draws of a sampling Result (evenly thinned)."""
    flat = {k: np.asarray(v).reshape((-1,) + np.shape(v)[2:]) for k, v in res.params.items()}
    total = next(iter(flat.values())).shape[0]
    idx = np.linspace(0, total - 1, min(n_draws, total)).astype(int)
    return jax.vmap(post.unconstrain)({k: v[idx] for k, v in flat.items()})


def _forward_of(post, measurement):
    """The forward model to draw: the model's, or one measurement's of a Joint."""
    parts = getattr(post.model.likelihood, "forwards", None)
    if parts is None:
        if measurement is not None:
            raise ValueError(f"measurement={measurement!r} given, but the model has a single measurement")
        return post.model.forward
    if measurement not in parts:
        raise ValueError(f"the model joins several measurements {list(parts)}: choose one with measurement=")
    return parts[measurement]


def plot_fit(
    selection: Selection, x, y, path, *, xlabel="x", ylabel="y", logx=False, fine_x=None, forward_at=None,
    key=None, n_draws=400, measurement=None,
) -> Path:
    """Data with every model's curve, a 90% band of the selected model, and its
    residuals below.

    The curve is the MAP (with the band from the Laplace approximation) for
    point-estimate results, and the pointwise posterior median (band from the
    draws) for sampling results (NUTS, SMC, replica exchange).

    Args:
        fine_x, forward_at: optional dense grid and ``forward_at(forward, fine_x)``
            returning the forward model evaluated there, for smooth curves.
        measurement: for models with a :class:`~jaxinv.likelihoods.Joint`
            likelihood, the measurement that ``x``, ``y`` belong to (its forward
            model is drawn).
    """
    plt = _pyplot()
    x, y = np.asarray(x), np.asarray(y)
    key = jax.random.key(0) if key is None else key
    chosen = selection.selected
    smooth = fine_x is not None and forward_at is not None
    grid = np.asarray(fine_x) if smooth else x
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6.5, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(x, y, "ko", label="data", zorder=4)
    for name, res in selection.results.items():
        post = _posterior_of(selection, name)
        base = _forward_of(post, measurement)
        forward = forward_at(base, grid) if smooth else base
        if res.sample_dims == 0:
            z_map = post.unconstrain(res.params)[None]
            line = np.asarray(_curves(post, forward, z_map)[0])
            at_data = np.asarray(_curves(post, base, z_map)[0])
            band = None
            if name == chosen and res.laplace is not None and np.isfinite(float(res.log_evidence)):
                band = np.asarray(_curves(post, forward, res.laplace.sample_unconstrained(key, (n_draws,))))
        else:
            zs = _unconstrained_draws(post, res, key, n_draws)
            band = np.asarray(_curves(post, forward, zs))
            line = np.median(band, axis=0)
            at_data = np.median(np.asarray(_curves(post, base, zs)), axis=0)
        top.plot(grid, line, "-" if name == chosen else "--", label=name)
        if name == chosen:
            resid = y - at_data
            if band is not None:
                lo, hi = np.quantile(band, [0.05, 0.95], axis=0)
                top.fill_between(grid, lo, hi, alpha=0.25, label=f"{name} 90% band")
    bottom.axhline(0.0, color="0.5", lw=0.8)
    bottom.plot(x, resid, "ko")
    bottom.set_ylabel("residual")
    bottom.set_xlabel(xlabel)
    top.set_ylabel(ylabel)
    top.legend(fontsize=8)
    if logx:
        bottom.set_xscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
