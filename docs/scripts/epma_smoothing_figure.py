"""Figure and numbers of the smoothing section of docs/epma-mapping.md (run from the
repository root): ``python docs/scripts/epma_smoothing_figure.py``."""

import warnings

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import jaxinv as ji  # noqa: E402
from problems import epma_mapping as em  # noqa: E402

warnings.simplefilter("ignore", RuntimeWarning)
e, truth = em.synthetic_map(seed=3, shape=(64, 64), n_grains=20)
data = em.as_dataset(e)
model = em.calibration_model(e, background=True, drift=True)
result = ji.map_estimate(model.condition(data.y), jax.random.key(0), n_starts=4)
draws = em.calibration_draws(result, jax.random.key(1))
c = truth["concentration"]
maps = {}
for smooth in (False, True):
    q = em.quantify(e, draws, jax.random.key(2), smooth=smooth)
    maps[smooth] = q
    inside = (q.lower <= c) & (c <= q.upper)
    rmse = np.sqrt(np.mean((q.mean - c) ** 2, axis=(0, 1)))
    print("smoothed" if smooth else "raw", "coverage", round(float(inside.mean()), 3),
          dict(zip(e.oxides, inside.mean(axis=(0, 1)).round(3))), "rmse", dict(zip(e.oxides, rmse.round(3))),
          "mean sd", dict(zip(e.oxides, q.sd.mean(axis=(0, 1)).round(3))))
for phase, fields in maps[True].meta["smoothing"].items():
    print(phase, fields["pixels"], "pixels,", fields["outliers"], "outliers; lengths",
          {o: round(fields[o]["smoothing_length"], 2) if "smoothing_length" in fields[o] else "not smoothed"
           for o in e.oxides})

k = e.oxides.index("FeO")
fig, axes = plt.subplots(1, 5, figsize=(16, 3.4))
vmax = float(np.max(c[..., k]))
panels = [(c[..., k], "FeO truth", "viridis", (0, vmax)),
          (maps[False].mean[..., k], "FeO mean, per pixel", "viridis", (0, vmax)),
          (maps[True].mean[..., k], "FeO mean, smoothed", "viridis", (0, vmax)),
          (maps[False].sd[..., k], "FeO sd, per pixel", "magma", (0, float(np.max(maps[False].sd[..., k])))),
          (maps[True].sd[..., k], "FeO sd, smoothed", "magma", (0, float(np.max(maps[False].sd[..., k]))))]
for ax, (image, title, cmap, (lo, hi)) in zip(axes, panels):
    em._panel(fig, ax, image, title + " (wt%)", cmap=cmap, vmin=lo, vmax=hi)
fig.tight_layout()
fig.savefig("docs/img/epma-smoothing.png", dpi=100)
