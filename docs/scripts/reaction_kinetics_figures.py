"""Figures of docs/reaction-kinetics.md (run from the repository root):
``python docs/scripts/reaction_kinetics_figures.py``; prints the numbers quoted on the page."""

import warnings

import jax
import numpy as np

import problems.reaction_kinetics as rk
from jaxinv.plotting import plot_free_energy

warnings.simplefilter("ignore", RuntimeWarning)
data = rk.default_data()
sel = rk.select_laws(data, jax.random.key(0), polish=False)
f = sel.free_energies
print("F - min F:", {k: round(v - min(f.values()), 2) for k, v in f.items()}, "selected:", sel.selected)
for law, res in sel.results.items():
    draws = res.laplace.sample(jax.random.key(1), n_draws=4000)
    row = {p: np.round(np.quantile(np.asarray(v).ravel(), [0.05, 0.5, 0.95]), 12 if p == "rate_constant" else 6)
           for p, v in draws.params.items()}
    print(law, row)
rk.plot_laws(sel, data, "docs/img/reaction-kinetics-laws.png")
plot_free_energy(sel, "docs/img/reaction-kinetics-free-energy.png")
