"""Figures of docs/geofluid.md (run from the repository root):
``python docs/scripts/geofluid_figures.py``; prints the numbers quoted on the page."""

import warnings

import jax
import numpy as np

import jaxinv as ji
import problems.geofluid as gf
from jaxinv.plotting import _pyplot

warnings.simplefilter("ignore", RuntimeWarning)
data = gf.default_data()
velocities_only = gf.without_conductivity(data)
quad = gf.quadrature_evidence(data, n_grid=301)
quad_v = gf.quadrature_evidence(velocities_only, n_grid=301)

# the `jaxinv run geofluid` flow: Laplace free energies of the six combinations
sel = ji.select(gf.models(data), data.y, jax.random.key(0), method="laplace", n_starts=32)
sel_v = ji.select(gf.models(velocities_only), velocities_only.y, jax.random.key(0), method="laplace", n_starts=32)
smc = ji.select(gf.models(data, lithologies="peridotite"), data.y, jax.random.key(0), method="smc", n_particles=500)

print(f"{'combination':28s} {'F quad':>9s} {'F laplace':>9s} {'F smc':>9s} {'p quad':>7s} | velocities only: "
      f"{'F quad':>9s} {'F laplace':>9s} {'p quad':>7s}")
p, p_v = gf.probabilities(quad["free_energy"]), gf.probabilities(quad_v["free_energy"])
for i, name in enumerate(quad["names"]):
    f_smc = float(smc.results[name].free_energy) if name in smc.results else float("nan")
    print(f"{name:28s} {quad['free_energy'][i]:9.3f} {sel.free_energies[name]:9.3f} {f_smc:9.3f} {p[i]:7.3f} | "
          f"{'':17s}{quad_v['free_energy'][i]:9.3f} {sel_v.free_energies[name]:9.3f} {p_v[i]:7.3f}")
for name in ("peridotite + melt", "peridotite + aqueous fluid"):
    print(name, "MAP", {k: round(float(v), 5) for k, v in sel.results[name].params.items()},
          "| velocities only MAP", {k: round(float(v), 5) for k, v in sel_v.results[name].params.items()})

gf.plot_probabilities(sel, quad, "docs/img/geofluid-probabilities.png")
gf.plot_posterior(sel, quad, "docs/img/geofluid-posterior.png", data.meta["truth"])

# data integration: the 95 % HPD regions of both peridotite combinations, velocities only vs joint
plt = _pyplot()
fig, axes = plt.subplots(1, 2, figsize=(9.5, 4.0), sharex=True, sharey=True)
phi, alpha = np.exp(quad["log_phi"]), np.exp(quad["log_alpha"])
for ax, q, title in ((axes[0], quad_v, "Vp, Vs"), (axes[1], quad, "Vp, Vs + log10 conductivity")):
    pr = dict(zip(q["names"], gf.probabilities(q["free_energy"])))
    for name, color in (("peridotite + melt", "tab:red"), ("peridotite + aqueous fluid", "tab:blue")):
        k = q["names"].index(name)
        mask = gf.credible_mask(q["log_posterior"][k], 0.95).astype(float)
        ax.contourf(alpha, phi, mask, levels=[0.5, 1.5], colors=[color], alpha=0.3)
        ax.contour(alpha, phi, mask, levels=[0.5], colors=[color], linewidths=1.0)
        ax.plot([], [], color=color, label=f"{name}: p = {pr[name]:.2f}")
    ax.plot(gf.TRUTH["aspect_ratio"], gf.TRUTH["porosity"], "k*", ms=11, label="truth (melt)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("aspect ratio alpha")
    ax.set_title(f"{title}: 95 % HPD", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")
axes[0].set_ylabel("porosity phi")
axes[0].set_xlim(1e-3, 1)
axes[0].set_ylim(1e-4, 0.3)
fig.tight_layout()
fig.savefig("docs/img/geofluid-conductivity.png", dpi=120)
plt.close(fig)
print("wrote docs/img/geofluid-probabilities.png, docs/img/geofluid-posterior.png, docs/img/geofluid-conductivity.png")
