"""Figures of docs/pt-inclusions.md (run from the repository root):
``python docs/scripts/pt_inclusions_figures.py``; prints the numbers quoted on the page."""

import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
import problems.pt_inclusions as pt

data = pt.default_data()
truth = data.meta["truth"]
best, grid, f = pt.evidence_smoothness(data)
print(f"evidence maximum lambda = {best:.4g} (truth {pt.TRUE_SMOOTHNESS:g}); F - min F on the grid:")
print(np.round(f - f.min(), 2))
pt.plot_free_energy_curve(grid, f, "docs/img/pt-inclusions-free-energy.png", best, pt.TRUE_SMOOTHNESS)
band = pt.posterior_path(data, best)
pt.plot_path(data, band, "docs/img/pt-inclusions-path.png", title=f"evidence maximum λ = {best:.3g}")


def cover(b):
    return {v: float(np.mean((truth[v] >= b[f"{v}_lo"]) & (truth[v] <= b[f"{v}_hi"]))) for v in ("P", "T")}


print("coverage (evidence lambda):", cover(band))

post = pt.hierarchical_model(data).condition(jnp.asarray(data.y))
init = pt.hierarchical_init(post, data, jax.random.key(1), 4)
res = ji.sample(post, jax.random.key(11), method="nuts", n_chains=4, n_warmup=500, n_draws=500, init=init)
lam = np.asarray(res.params["smoothness"]).ravel()
print("hierarchical lambda 5/50/95 %:", np.round(np.quantile(lam, [0.05, 0.5, 0.95]), 1),
      "rhat_max", round(float(res.stats["rhat_max"]), 3), "ess_min", round(float(res.stats["ess_min"])),
      "divergences", int(res.stats["divergences"]))
hb = {"r": band["r"]}
for v in ("P", "T"):
    x = np.asarray(res.params[v]).reshape(-1, pt.N_CELLS)
    hb[f"{v}_mean"] = x.mean(0)
    hb[f"{v}_lo"], hb[f"{v}_hi"] = np.quantile(x, [0.05, 0.95], axis=0)
print("coverage (hierarchical):", cover(hb))
pt.plot_path(data, hb, "docs/img/pt-inclusions-hierarchical.png", title="λ sampled by NUTS (hierarchical)")
