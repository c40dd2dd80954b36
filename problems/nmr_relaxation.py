"""NMR T1 by inversion recovery: real Bruker data -> T1 with uncertainty -> model choice.

Data: a pseudo-2D Bruker TopSpin experiment (one FID per recovery delay ``tau``
listed in ``vdlist``), read with nmrglue.  Each FID is processed to one number,
the integral of the (water) line:

1. keep the TD/2 acquired complex points, remove the Bruker digital-filter group
   delay (``nmrglue.bruker.remove_digital_filter``);
2. exponential apodisation ``exp(-pi * line_broadening * t)`` (Hz);
3. Fourier transform; zero-order phase chosen so that the most recovered
   spectrum (longest tau) has a purely positive real integral, and applied to
   every spectrum, so that the sign of M(tau) is kept;
4. integrate the real part over ``+- window_hz`` around the line;
5. the integral's noise, ``std(real baseline) * sqrt(points in window)`` from a
   signal-free quarter of the spectrum, is kept as ``Dataset.sigma``.

Integrals are divided by the largest |M| so that priors can be stated in
units of the signal.  Models (all ``jaxinv.physics.InversionRecovery``):

    single      M(tau) = M_eq [1 - 2 f exp(-tau/T1)]
    stretched   M(tau) = M_eq [1 - 2 f exp(-(tau/T1)^beta)],   0 < beta <= 1
    K=k         M(tau) = M_eq [1 - 2 f sum_k w_k exp(-tau/T1_k)],  T1 ordered

equivalent to ``M(tau) = M_inf - (M_inf - M_0) exp(-(tau/T1)^beta)`` with
``M_inf = M_eq``, ``M_0 = M_eq (1 - 2 f)``.  The noise level sigma is inferred
(log-uniform prior), so the free energy weighs misfit against complexity
honestly; ``noise="spectral"`` uses the spectral noise estimate instead.
"""

from __future__ import annotations

import re
import warnings
from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv.physics import InversionRecovery
from jaxinv.plotting import plot_fit, plot_free_energy
from jaxinv import Dataset, Problem
from jaxinv.problem import read_table

DEFAULT_EXPERIMENT = "dnplab_odnp_t1_304"
_UNITS = {"": 1.0, "s": 1.0, "m": 1e-3, "ms": 1e-3, "u": 1e-6, "us": 1e-6}


def read_vdlist(path: Path) -> np.ndarray:
    """Recovery delays in seconds from a Bruker ``vdlist`` ("20m" = 20 ms, "1.3" = 1.3 s)."""
    delays = []
    for line in Path(path).read_text().split():
        m = re.fullmatch(r"([0-9.eE+-]+)\s*([a-z]*)", line.strip())
        if not m or m.group(2) not in _UNITS:
            raise ValueError(f"cannot read delay {line!r} in {path}")
        delays.append(float(m.group(1)) * _UNITS[m.group(2)])
    return np.asarray(delays)


def read_bruker(folder, *, line_broadening: float = 5.0, window_hz: float = 250.0) -> Dataset:
    """Integrated inversion-recovery series from a Bruker experiment folder.

    Args:
        folder: folder holding ``ser``, ``acqus``, ``acqu2s`` and ``vdlist``.
        line_broadening: exponential apodisation in Hz.
        window_hz: half-width of the integration window around the line, Hz.
    """
    import nmrglue as ng

    folder = Path(folder)
    for name in ("ser", "acqus", "vdlist"):
        if not (folder / name).is_file():
            raise ValueError(f"{folder} is not a Bruker pseudo-2D experiment: no {name!r} file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pulse program / referencing notices
        dic, data = ng.bruker.read(str(folder))
    tau = read_vdlist(folder / "vdlist")
    if data.ndim != 2 or data.shape[0] != tau.size:
        raise ValueError(f"{folder}: {data.shape[0] if data.ndim == 2 else 1} FIDs but {tau.size} delays in vdlist")
    acq = dic["acqus"]
    sw = float(acq["SW_h"])
    fid = ng.bruker.remove_digital_filter(dic, data[:, : int(acq["TD"]) // 2])
    n = fid.shape[1]
    fid = fid * np.exp(-np.pi * line_broadening * np.arange(n) / sw)
    spectra = np.fft.fftshift(np.fft.fft(fid, axis=1), axes=1)
    last = spectra[np.argmax(tau)]
    peak = int(np.argmax(np.abs(last)))
    half = max(1, int(round(window_hz * n / sw)))
    window = slice(max(0, peak - half), min(n, peak + half + 1))
    phase = -np.angle(last[window].sum())
    spectra = spectra * np.exp(1j * phase)
    integrals = spectra[:, window].real.sum(axis=1)
    far = slice(0, n // 4) if peak > n // 2 else slice(3 * n // 4, n)
    noise = spectra[:, far].real.std(axis=1) * np.sqrt(window.stop - window.start)
    scale = np.max(np.abs(integrals))
    return Dataset(
        x=tau,
        y=integrals / scale,
        sigma=noise / scale,
        meta={
            "source": str(folder),
            "x_unit": "s",
            "y_unit": "integral / max|integral|",
            "scale": float(scale),
            "processing": {"line_broadening_hz": line_broadening, "window_hz": window_hz, "phase_rad": float(phase)},
        },
    )


def read_csv(path) -> Dataset:
    """A user's recovery curve: columns ``t, y[, sigma]`` (comma-separated, optional header)."""
    table = read_table(path, ("t", "y", "sigma"), n_optional=1)
    return Dataset(
        x=table[:, 0],
        y=table[:, 1],
        sigma=table[:, 2] if table.shape[1] == 3 else None,
        meta={"source": str(path), "x_unit": "s"},
    )


def load_data(path) -> Dataset:
    """A Bruker experiment folder or a CSV file."""
    path = Path(path)
    if path.is_dir():
        return read_bruker(path)
    if path.is_file():
        return read_csv(path)
    raise ValueError(f"no such file or folder: {path}")


def default_data() -> Dataset:
    """Experiment 304 of DNPLab's ODNP set (microwaves off), shipped with the package."""
    return read_bruker(Path(str(files("problems") / "data" / DEFAULT_EXPERIMENT)))


def models(data: Dataset, n_components=(1, 2), stretched: bool = True, noise: str = "fit") -> dict[str, ji.Model]:
    """Candidate models: a K-component recovery for each K in ``n_components``
    (K=1 is named "single") and, if ``stretched``, the stretched recovery."""
    tau = np.asarray(data.x, dtype=float)
    if np.any(tau < 0):
        raise ValueError("recovery delays must be non-negative")
    y = np.asarray(data.y, dtype=float)
    scale = float(np.max(np.abs(y)))
    if noise == "fit":
        likelihood = ji.likelihoods.Normal(sigma=ji.priors.LogUniform(1e-5 * scale, scale))
    elif noise == "spectral":
        if data.sigma is None:
            raise ValueError("noise='spectral' needs per-point sigma in the data")
        likelihood = ji.likelihoods.Normal(sigma=data.sigma)
    else:
        raise ValueError(f"noise must be 'fit' or 'spectral', got {noise!r}")
    positive = tau[tau > 0]
    if positive.size == 0:
        raise ValueError("all recovery delays are zero: T1 cannot be measured")
    t1_range = (float(positive.min()) / 10.0, float(tau.max()) * 10.0)

    def model(k: int, stretch: bool) -> ji.Model:
        priors = {
            "inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
            "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0 * scale),
            "relaxation_time": ji.priors.LogUniform(*t1_range)
            if k == 1
            else ji.priors.LogUniform(*t1_range, shape=k, ordered=True),
        }
        if k > 1:
            priors["weight"] = ji.priors.Dirichlet(1.0, shape=k)
        if stretch:
            priors["stretch"] = ji.priors.Uniform(0.0, 1.0)
        return ji.Model(InversionRecovery(tau, n_components=k, stretched=stretch), priors, likelihood)

    out = {}
    for k in n_components:
        out["single" if k == 1 else f"K={k}"] = model(int(k), False)
        if k == 1 and stretched:
            out["stretched"] = model(1, True)
    if stretched and 1 not in n_components:
        out["stretched"] = model(1, True)
    return out


def n_components(name: str) -> int:
    return 1 if name in ("single", "stretched") else int(name.split("=")[1])


def _on_delays(forward, tau):
    """The same recovery model evaluated at other delays (for smooth curves)."""
    return eqx.tree_at(lambda m: m.t, forward, jnp.asarray(tau, dtype=forward.t.dtype))


def figures(selection, data: Dataset, out_dir) -> list[Path]:
    out_dir = Path(out_dir)
    tau = np.asarray(data.x)
    fine = np.geomspace(max(tau[tau > 0].min() / 2, 1e-6), tau.max() * 1.5, 200)
    return [
        plot_fit(
            selection, data.x, data.y, out_dir / "fit.png",
            xlabel="recovery delay tau [s]", ylabel="M(tau) / max|M|", logx=True,
            fine_x=fine, forward_at=_on_delays,
        ),
        plot_free_energy(selection, out_dir / "free_energy.png"),
    ]


problem = Problem(
    name="nmr-relaxation",
    description="NMR T1 from inversion recovery (Bruker raw data): single, stretched, K-component; free-energy selection",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
    n_components=n_components,
)
