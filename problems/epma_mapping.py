"""EPMA quantitative mapping: composition maps with uncertainty from X-ray maps and spots.

After Yasumoto et al. (2018, American Mineralogist 103, 1690-1698, doi:10.2138/am-2018-6323)
and their R package qntmap: a fast *qualitative* X-ray map of an electron probe
micro-analyser (counts per pixel and element) plus a few *quantitative* spot analyses
(wt% of each oxide) give a quantitative composition map.  qntmap returns each pixel's
wt% with a standard error from its calibration; this problem returns the posterior of
every pixel's composition (counting, calibration and phase-fraction uncertainty).  The forward model is
:mod:`jaxinv.physics.xray` (its docstring gives the equations, and how they relate to
qntmap's); the soft phase clustering is :mod:`jaxinv.clustering`.

**Stages** (each one a function here, so they can be used one at a time):

1. *Calibration* (:func:`models`, the models ``jaxinv run`` fits and ranks by free energy).
   The map counts of the pixels under the spot analyses, with the spots' wt% as known
   concentrations, are Poisson counts of :class:`~jaxinv.physics.xray.XrayMap`:
   ``N_se ~ Poisson(t_dwell i_probe g(t_s) (beta_pe C_se + b_e))`` with ``p`` the spot's
   phase, through the detector's dead time.  Unknown: ``beta`` (P, E) [cps/nA per wt%],
   and in the candidate models that have them the background ``b`` (E,) [cps/nA] and a
   linear beam-current drift ``g(t) = 1 + c_1 (t - t_0)/T``.  The free energy decides
   whether the data need a background and a drift.
2. *Soft phase clustering* (:func:`memberships`): a Poisson mixture over the pixels'
   count vectors by EM (:func:`jaxinv.clustering.poisson_mixture`), initialised from the
   mean counts of the pixels under each phase's spots, with the drift as exposure.
3. *Phase fractions* (:func:`quantify`): per pixel, the mass fractions ``w`` (a point of
   the simplex) of the phases in the analysed volume, from
   ``N_e ~ NegBin(mean = lambda_e(w), var = lambda_e(w) + sum_p w_p^2 v_pe)`` with
   ``lambda_e(w)`` the forward model of a pixel holding each phase at its spot-mean
   composition and ``v_pe`` the within-phase compositional variance (from the spots'
   spread) in counts^2.  Prior ``w ~ Dirichlet(1)``; posterior by a Laplace
   approximation in additive-log-ratio coordinates, found by damped Newton steps.
4. *Composition* (:func:`quantify`): per pixel and element, the expected counts have the
   flat-prior posterior ``lambda | N ~ Gamma(N + 1, 1)``; each draw becomes a
   concentration by inverting the forward model,
   ``C = (R(lambda) / (i_probe g) - b) / beta_eff(w)``, ``R`` the dead-time-corrected
   rate, with ``beta``, ``b``, ``g`` from calibration draws and ``w`` from the pixel's
   phase-fraction draws.  Summaries per pixel: mean, sd and the 95 % highest-density
   interval of every oxide and of the total; mean and sd of the phase fractions.
5. *Spatial smoothing* (optional, ``quantify(..., smooth=True)``, :func:`smooth_counts`):
   step 4's per-pixel flat prior is replaced, on each phase's pure pixels, by a Gaussian
   Markov random field prior (:func:`jaxinv.priors.GaussianMRF`) per phase and element,
   whose smoothness is learnt from the map (maximum marginal likelihood); counting noise
   is then pooled over neighbouring pixels of the same phase, and zoning is kept where
   the map shows it.  Mixed pixels and outliers keep their own posterior.

``beta_eff`` of a mixed pixel.  The intensity of a pixel straddling phases is
``sum_p w_p beta_pe C_pe``: one number for P unknown ``C_pe``.  qntmap mixes the phases'
calibrations by membership probability (``C = sum_p X_p alpha_pe (...)``), which is
biased on grain boundaries when matrix corrections differ between phases.  Here the
element's mass is split among the phases in proportion to their spot-mean
compositions ``m_pe``, ``beta_eff = sum_p w_p beta_pe m_pe / sum_p w_p m_pe``: exact on
single-phase pixels and on mixtures whose phases sit at their mean compositions, and
exact for any mixture when the phases' ``beta`` agree.

Processing is chunked (``jax.lax.scan`` over blocks of ``chunk_size`` pixels): memory is
bounded by the chunk, not by the map, so 512 x 512 x 10 maps run in one call
(``benchmarks/epma.py``).

Data: a JEOL export folder (:func:`read_jeol`: ``.map/<n>/<k>_map.txt`` + ``<k>.cnd``
per element, ``.qnt/*.qnt`` spot files) -- the embedded default is qntmap's own example
(``problems/data/epma_mapping/qntmap_minimal``, MIT licence, its notice beside it) -- or
:func:`synthetic_map`, a generator with zoned phases, mixed boundary pixels, dead time,
drift and noisy spot analyses.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

import jaxinv as ji
from jaxinv import Dataset, Problem
from jaxinv.clustering import poisson_mixture
from jaxinv.inference import gmrf_laplace
from jaxinv.physics.xray import XrayMap, beam_drift, dead_time_correction, dead_time_loss, pixel_times

DEFAULT_FOLDER = "epma_mapping/qntmap_minimal"
CREDIBLE_MASS = 0.95
N_DRAWS = 200
CHUNK_SIZE = 2048
NEWTON_STEPS = 40
DIRICHLET_CONCENTRATION = 1.0
PURE_FRACTION = 0.9  # a pixel counts towards its phase's mean composition above this fraction
MAX_SMOOTHING_LENGTH = 20.0  # pixels; smooth=True only
EXPECTED_COUNT_FLOOR = 0.1  # counts; smooth=True only (see _ElementCounts)
SMOOTH_FRACTION = 0.9  # smooth=True: a pixel joins its phase's field above this fraction mean
SMOOTHNESS_DRAWS = 48  # smooth=True: draws per step of the smoothness search (its Monte Carlo error)
MIN_SMOOTH_COUNTS = 10.0  # smooth=True: an element whose mean counts in a phase fall below this is not smoothed there
FIELD_TRACE = 1e-3  # smooth=True: see _field_fractions
OUTLIER_Z = 4.0  # smooth=True: ... unless its counts are this many sd from the field's


# -- data --------------------------------------------------------------------------------
@dataclass(frozen=True)
class EpmaMap:
    """An X-ray map with its spot analyses.

    Attributes:
        counts: ``(n_x, n_y, E)`` raw counts per pixel and element (non-negative).
        elements: ``E`` element names of the X-ray lines (``"Si"``).
        oxides: ``E`` names of the reported concentrations (``"SiO2"``), one per element.
        dwell_time: map dwell time per pixel [s].
        probe_current: map probe current [nA].
        dead_time: detector dead time [s], scalar or ``(E,)``.
        spot_pixel: ``(S, 2)`` 0-based pixel ``(x, y)`` of every spot analysis.
        spot_wt: ``(S, E)`` spot concentrations [wt%] of the ``oxides``.
        spot_phase: ``S`` phase labels of the spots (``"Qtz"``).
        pixel_time: ``(n_x, n_y)`` acquisition time of every pixel [s] (for drift).
        step_um: pixel size [µm]; start_mm: stage position of pixel (0, 0) [mm].
        source: where the data came from.
    """

    counts: np.ndarray
    elements: tuple[str, ...]
    oxides: tuple[str, ...]
    dwell_time: float
    probe_current: float
    dead_time: np.ndarray
    spot_pixel: np.ndarray
    spot_wt: np.ndarray
    spot_phase: tuple[str, ...]
    pixel_time: np.ndarray | None = None
    step_um: float = 1.0
    start_mm: tuple[float, float] = (0.0, 0.0)
    source: str = ""

    def __post_init__(self):
        counts = np.asarray(self.counts, dtype=float)
        if counts.ndim != 3 or counts.shape[0] < 1 or counts.shape[1] < 1:
            raise ValueError(f"counts must be a map (n_x, n_y, elements), got shape {counts.shape}")
        n_el = counts.shape[2]
        if n_el < 1:
            raise ValueError("the map has no element")
        if not np.all(np.isfinite(counts)):
            raise ValueError(f"map counts contain {int(np.sum(~np.isfinite(counts)))} non-finite value(s)")
        if np.any(counts < 0):
            bad = np.argwhere(counts < 0)[0]
            raise ValueError(f"map counts must be non-negative; {int(np.sum(counts < 0))} are negative "
                             f"(first at pixel ({bad[0]}, {bad[1]}), element {self.elements[bad[2]] if len(self.elements) == n_el else bad[2]})")
        if len(self.elements) != n_el or len(self.oxides) != n_el:
            raise ValueError(f"the map has {n_el} element(s) but {len(self.elements)} element name(s) and "
                             f"{len(self.oxides)} oxide name(s)")
        if len(set(self.elements)) != n_el:
            raise ValueError(f"element names repeat: {self.elements}")
        for name, value in (("dwell_time", self.dwell_time), ("probe_current", self.probe_current),
                            ("step_um", self.step_um)):
            if not (np.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive and finite, got {value}")
        dead = np.asarray(self.dead_time, dtype=float)
        if dead.ndim > 1 or (dead.ndim == 1 and dead.shape != (n_el,)) or np.any(~np.isfinite(dead)) or np.any(dead < 0):
            raise ValueError(f"dead_time must be a non-negative scalar or one per element ({n_el},), got {dead}")
        pix = np.asarray(self.spot_pixel)
        wt = np.asarray(self.spot_wt, dtype=float)
        n_spots = len(self.spot_phase)
        if n_spots < 1:
            raise ValueError("no spot analyses: calibration needs at least one spot per phase")
        if pix.shape != (n_spots, 2):
            raise ValueError(f"spot_pixel must have shape ({n_spots}, 2), got {pix.shape}")
        if wt.shape != (n_spots, n_el):
            raise ValueError(f"spot_wt must have shape ({n_spots}, {n_el}) (one wt% per spot and element "
                             f"{self.oxides}), got {wt.shape}")
        missing = np.argwhere(~np.isfinite(wt))
        if missing.size:
            s, e = missing[0]
            raise ValueError(f"spot {s + 1} has no {self.oxides[e]} value (missing element in the spot analyses; "
                             f"{len(missing)} missing in all)")
        if np.any(wt < 0):
            s, e = np.argwhere(wt < 0)[0]
            raise ValueError(f"spot {s + 1}: {self.oxides[e]} = {wt[s, e]} wt% is negative")
        outside = [(i + 1, tuple(int(v) for v in p)) for i, p in enumerate(pix)
                   if not (0 <= p[0] < counts.shape[0] and 0 <= p[1] < counts.shape[1])]
        if outside:
            raise ValueError(f"{len(outside)} spot(s) lie outside the {counts.shape[0]} x {counts.shape[1]} map "
                             f"(spot, pixel): {outside[:5]}")
        pairs = [tuple(int(v) for v in p) for p in pix]
        if len(set(pairs)) != len(pairs):
            twice = sorted({p for p in pairs if pairs.count(p) > 1})
            raise ValueError(f"several spots on one pixel {twice[:5]}: its counts would enter the calibration "
                             "more than once; keep one spot per pixel")
        if self.pixel_time is not None and np.shape(self.pixel_time) != counts.shape[:2]:
            raise ValueError(f"pixel_time has shape {np.shape(self.pixel_time)}, the map {counts.shape[:2]}")
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "spot_wt", wt)
        object.__setattr__(self, "spot_pixel", pix.astype(int))
        object.__setattr__(self, "dead_time", dead)
        object.__setattr__(self, "spot_phase", tuple(str(p) for p in self.spot_phase))
        if self.pixel_time is None:
            object.__setattr__(self, "pixel_time", np.asarray(pixel_times(*counts.shape[:2], self.dwell_time)))

    @property
    def shape(self) -> tuple[int, int]:
        return self.counts.shape[:2]

    @property
    def phases(self) -> tuple[str, ...]:
        """Phase labels in order of first appearance among the spots."""
        return tuple(dict.fromkeys(self.spot_phase))

    @property
    def spot_counts(self) -> np.ndarray:
        """``(S, E)`` map counts of the pixels under the spots."""
        return self.counts[self.spot_pixel[:, 0], self.spot_pixel[:, 1]]

    @property
    def spot_time(self) -> np.ndarray:
        return self.pixel_time[self.spot_pixel[:, 0], self.spot_pixel[:, 1]]

    @property
    def drift_clock(self) -> tuple[float, float]:
        """``(t_ref, t_scale)`` of the drift polynomial: the first acquisition time and
        the span of the acquisition [s] (the same in calibration and quantification)."""
        t = self.pixel_time
        return float(t.min()), float(max(t.max() - t.min(), self.dwell_time))

    @property
    def spot_phase_index(self) -> np.ndarray:
        return np.array([self.phases.index(p) for p in self.spot_phase])


def as_dataset(epma: EpmaMap, meta: dict | None = None) -> Dataset:
    """The calibration dataset: ``y`` = counts of the pixels under the spots, ``x`` = the map."""
    return Dataset(x=epma, y=epma.spot_counts, meta={"source": epma.source, **(meta or {})})


# -- JEOL reader ---------------------------------------------------------------------------
def _cnd_dollar(path: Path) -> dict[str, list[str]]:
    """``$KEY value ...`` lines of a JEOL condition file."""
    out = {}
    for line in path.read_text(errors="replace").splitlines():
        parts = line.split()
        if parts and parts[0].startswith("$"):
            out[parts[0][1:].upper()] = parts[1:]
    return out


DWELL_UNITS = {"msec": 1e-3, "ms": 1e-3, "sec": 1.0, "s": 1.0, "usec": 1e-6, "us": 1e-6}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _qnt_table(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise ValueError(f"missing spot-analysis file {path}")
    rows = [line.split() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} is empty")
    return rows


def _conditions_csv(folder: Path) -> dict:
    path = folder / "conditions_xmap.csv"
    if not path.is_file():
        return {}
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    header = [h.strip() for h in lines[0].split(",")]
    first = [c.strip() for c in lines[1].split(",")] if len(lines) > 1 else []
    return dict(zip(header, first))


def read_jeol(folder, dead_time_ns: float | None = None, map_folder: str | None = None) -> EpmaMap:
    """A JEOL JXA map + spot-analysis export folder, as qntmap reads it.

    Layout: ``folder/.map/<n>/<k>_map.txt`` (whitespace-separated counts, one line per
    stage-x step, one column per stage-y step) with ``<k>.cnd`` (``$XM_ELEMENT``,
    ``$XM_DWELL_TIME`` [msec], ``$CM_CURRENT`` [A], ``$XM_STEP_SIZE`` [µm],
    ``$XM_MAP_START`` [mm], ``$XM_POINTS``) for each element ``k = 1, 2, ...``; and
    ``folder/.qnt/`` with ``elem.qnt`` (oxide names), ``elint.qnt`` (element names),
    ``wt.qnt`` (wt%), ``stg.qnt`` (spot number, two fields, number, stage x, y [mm], z,
    two flags, then the comment: the phase label, from the tenth field on).

    Traps (see the data README): the map file's *row* index is x and its column index is
    y; a spot's pixel is ``((x_mm - start_x) * 1000 / step_x_um, (y_mm - start_y) * 1000
    / step_y_um)`` (0-based, rounded).  Acquisition order (for the drift model): the
    export does not record it; the pixels are taken in file order, y the fast axis
    (:func:`jaxinv.physics.xray.pixel_times`); pass ``EpmaMap(pixel_time=...)`` otherwise.
    Two spots on one pixel would count that pixel twice in the calibration: the later
    ones are dropped with a warning (qntmap drops them too).

    Args:
        folder: the export folder.
        dead_time_ns: detector dead time; default: ``dead time [ns]`` of
            ``conditions_xmap.csv`` when present, else 0 (qntmap's ``qntmap()`` assumes
            1100 ns when it is not told).
        map_folder: the subfolder of ``.map`` (default: the first).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"no such folder: {folder}")
    maps_root = folder / ".map"
    if not maps_root.is_dir():
        raise ValueError(f"{folder} has no .map folder (not a JEOL export)")
    subs = sorted(p for p in maps_root.iterdir() if p.is_dir())
    if map_folder is not None:
        subs = [maps_root / map_folder]
    if not subs or not subs[0].is_dir():
        raise ValueError(f"{maps_root} has no map subfolder" + (f" {map_folder!r}" if map_folder else ""))
    sub = subs[0]
    maps, elements, conditions = [], [], []
    k = 1
    while (sub / f"{k}_map.txt").is_file():
        cnd_path = sub / f"{k}.cnd"
        if not cnd_path.is_file():
            raise ValueError(f"{sub / f'{k}_map.txt'} has no condition file {cnd_path.name}")
        cnd = _cnd_dollar(cnd_path)
        for key in ("XM_ELEMENT", "XM_DWELL_TIME", "CM_CURRENT", "XM_STEP_SIZE", "XM_POINTS"):
            if key not in cnd:
                raise ValueError(f"{cnd_path} lacks ${key}")
        text = (sub / f"{k}_map.txt").read_text().split()
        if not text:
            raise ValueError(f"{sub / f'{k}_map.txt'} is empty")
        n_x, n_y = int(cnd["XM_POINTS"][0]), int(cnd["XM_POINTS"][1])
        try:
            values = np.asarray(text, dtype=float)
        except ValueError:
            raise ValueError(f"{sub / f'{k}_map.txt'} has a non-numeric entry") from None
        if values.size != n_x * n_y:
            raise ValueError(f"{sub / f'{k}_map.txt'} has {values.size} values; its .cnd says {n_x} x {n_y}")
        maps.append(values.reshape(n_x, n_y))
        elements.append(cnd["XM_ELEMENT"][0])
        conditions.append(cnd)
        k += 1
    if not maps:
        raise ValueError(f"{sub} has no <k>_map.txt files")
    shapes = {m.shape for m in maps}
    if len(shapes) != 1:
        raise ValueError(f"element maps have different shapes: {dict(zip(elements, [m.shape for m in maps]))}")
    c0 = conditions[0]
    for name, cnd in zip(elements, conditions):
        for key in ("XM_DWELL_TIME", "CM_CURRENT", "XM_STEP_SIZE"):
            if cnd[key][:2] != c0[key][:2]:
                raise ValueError(f"map {name}: ${key} {cnd[key]} differs from {elements[0]}'s {c0[key]}")
    dwell = c0["XM_DWELL_TIME"]
    unit = dwell[1].lower() if len(dwell) > 1 else "msec"  # JEOL writes msec
    if unit not in DWELL_UNITS:
        raise ValueError(f"$XM_DWELL_TIME unit {dwell[1]!r} is not one of {sorted(DWELL_UNITS)}")
    dwell_s = float(dwell[0]) * DWELL_UNITS[unit]
    current_na = float(c0["CM_CURRENT"][0]) * 1e9
    steps = c0["XM_STEP_SIZE"]
    step_um = (float(steps[0]), float(steps[1]) if len(steps) > 1 and _is_number(steps[1]) else float(steps[0]))
    start = c0.get("XM_MAP_START", ["0", "0"])
    start_mm = (float(start[0]), float(start[1]))

    qnt = folder / ".qnt"
    elint = _qnt_table(qnt / "elint.qnt")
    elem = _qnt_table(qnt / "elem.qnt")
    wt_rows = _qnt_table(qnt / "wt.qnt")
    stg = _qnt_table(qnt / "stg.qnt")
    spot_elements = elint[0][2:2 + int(elint[0][1])]
    spot_oxides = elem[0][2:2 + int(elem[0][1])]
    missing = [e for e in elements if e not in spot_elements]
    if missing:
        raise ValueError(f"element(s) {missing} of the map are missing in the spot analyses (which have {spot_elements})")
    column = [spot_elements.index(e) for e in elements]
    oxides = tuple(spot_oxides[c] for c in column)
    if len(wt_rows) != len(stg):
        raise ValueError(f"wt.qnt has {len(wt_rows)} spots but stg.qnt has {len(stg)}")
    wt = np.full((len(wt_rows), len(elements)), np.nan)
    for s, row in enumerate(wt_rows):
        values = row[2:2 + int(row[1])]
        for j, c in enumerate(column):
            if c < len(values):
                wt[s, j] = float(values[c])
    xy_mm = np.array([[float(r[4]), float(r[5])] for r in stg])
    pixel = np.rint((xy_mm - np.asarray(start_mm)) * 1000.0 / np.asarray(step_um)).astype(int)
    labels = tuple(" ".join(r[9:]) for r in stg)
    unlabelled = [int(r[0]) for r, label in zip(stg, labels) if not label]
    if unlabelled:
        raise ValueError(f"stg.qnt: spot(s) {unlabelled[:5]} have no phase label (the comment after the 9th field)")
    first = {}
    keep = [first.setdefault(tuple(p), i) == i for i, p in enumerate(pixel)]
    if not all(keep):
        dropped = [i + 1 for i, k in enumerate(keep) if not k]
        warnings.warn(f"spot(s) {dropped} fall on the pixel of an earlier spot and are dropped "
                      "(one pixel's counts must enter the calibration once)", stacklevel=2)
        keep = np.asarray(keep)
        pixel, wt, labels = pixel[keep], wt[keep], tuple(la for la, k in zip(labels, keep) if k)
    csv = _conditions_csv(folder)
    if dead_time_ns is None:
        dead_time_ns = float(csv.get("dead time [ns]", 0.0) or 0.0)
    return EpmaMap(counts=np.stack(maps, axis=-1), elements=tuple(elements), oxides=oxides,
                   dwell_time=dwell_s, probe_current=current_na, dead_time=np.asarray(dead_time_ns * 1e-9),
                   spot_pixel=pixel, spot_wt=wt, spot_phase=labels, step_um=step_um[0], start_mm=start_mm,
                   source=f"JEOL export {folder.name}")


def load_data(path) -> Dataset:
    """A JEOL export folder (see :func:`read_jeol`)."""
    return as_dataset(read_jeol(path))


def default_data() -> Dataset:
    """qntmap's minimal example (synthetic quartz + olivine, 100 x 100 pixels, 40 spots)."""
    data = as_dataset(read_jeol(Path(str(files("problems") / "data" / DEFAULT_FOLDER))),
                      {"licence": "MIT (qntmap, Copyright 2017 YASUMOTO Atsushi; data (c) 2018 JAMSTEC)"})
    return data


# -- synthetic maps ------------------------------------------------------------------------
SYNTHETIC_OXIDES = ("SiO2", "Al2O3", "FeO", "MgO", "CaO", "Na2O", "K2O", "TiO2", "MnO", "Cr2O3")
SYNTHETIC_ELEMENTS = ("Si", "Al", "Fe", "Mg", "Ca", "Na", "K", "Ti", "Mn", "Cr")
#: core and rim compositions [wt%] of the synthetic phases (garnet and plagioclase zoned)
SYNTHETIC_PHASES = {
    "Grt": (np.array([37.0, 21.0, 34.0, 2.5, 5.5, 0.0, 0.0, 0.1, 1.6, 0.05]),
            np.array([37.5, 21.2, 30.0, 5.0, 2.5, 0.0, 0.0, 0.05, 0.4, 0.05])),
    "Pl": (np.array([55.0, 28.0, 0.1, 0.0, 10.5, 5.5, 0.1, 0.0, 0.0, 0.0]),
           np.array([61.0, 24.5, 0.1, 0.0, 6.0, 8.2, 0.4, 0.0, 0.0, 0.0])),
    "Qtz": (np.array([100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]),
            np.array([100.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])),
}
#: sensitivity [cps/nA per wt%] of each X-ray line, and each phase's matrix factor on it
SYNTHETIC_SENSITIVITY = np.array([4.0, 4.5, 3.0, 6.0, 5.0, 2.5, 5.5, 3.5, 3.2, 3.0])
SYNTHETIC_MATRIX = {"Grt": np.array([0.97, 1.02, 0.95, 1.04, 0.98, 1.0, 1.0, 0.97, 0.96, 0.98]),
                    "Pl": np.array([1.03, 0.98, 1.02, 1.0, 1.03, 0.96, 1.02, 1.0, 1.0, 1.0])}
SYNTHETIC_BACKGROUND = np.array([3.0, 2.5, 2.0, 1.5, 1.5, 1.0, 1.2, 1.4, 1.8, 1.6])  # cps/nA


def _pixel_mean(a, m: int):
    """Average over the ``m x m`` sub-pixels of each pixel (leading two axes)."""
    return a.reshape(a.shape[0] // m, m, a.shape[1] // m, m, *a.shape[2:]).mean(axis=(1, 3))


def synthetic_map(seed: int = 0, shape=(64, 64), n_grains: int | None = None, n_elements: int = 6,
                  supersample: int = 4, dwell_time: float = 0.05, probe_current: float = 50.0,
                  dead_time: float = 1.1e-6, drift: float = -0.03, spots_per_phase: int = 12,
                  spot_noise: float = 0.005, phases: dict | None = None) -> tuple[EpmaMap, dict]:
    """A synthetic EPMA map with known truth.

    Grains are Voronoi cells (random seeds, random phase, every phase present); each
    zoned phase goes from its core to its rim composition with the distance from the
    grain's seed.  Pixels are averaged over ``supersample**2`` sub-pixels, so grain
    boundaries give mixed pixels.  Counts: ``Poisson(t R / (1 + tau R))`` with
    ``R = i g(t) mean_sub(beta C + b)`` (phase matrix factors on ``beta``, linear drift
    ``g`` from 1 to ``1 + drift`` over the acquisition).  Spots: ``spots_per_phase`` pure
    pixels per phase, analysed as the pixel's true composition times
    ``1 + spot_noise * N(0, 1)``.

    Args:
        n_grains: default one grain per ~300 pixels (at least 6).
        n_elements: the first ``n_elements`` of ``SYNTHETIC_OXIDES`` (1 to 10).

    Returns:
        ``(map, truth)`` with truth ``concentration`` (n_x, n_y, E) [wt%] (mass-weighted
        pixel average), ``phase_fraction`` (n_x, n_y, P), ``beta`` (P, E), ``background``
        (E,), ``drift`` (1,).
    """
    phases = SYNTHETIC_PHASES if phases is None else phases
    if not 1 <= n_elements <= len(SYNTHETIC_OXIDES):
        raise ValueError(f"n_elements must be 1..{len(SYNTHETIC_OXIDES)}, got {n_elements}")
    names = tuple(phases)
    el = slice(0, n_elements)
    rng = np.random.default_rng(seed)
    n_x, n_y = shape
    m = int(supersample)
    if n_grains is None:
        n_grains = max(6, n_x * n_y // 300)
    seeds = rng.uniform(0, 1, (n_grains, 2)) * np.array([n_x, n_y])
    grain_phase = np.concatenate([np.arange(len(names)), rng.integers(0, len(names), n_grains - len(names))])
    core = np.stack([phases[n][0][el] for n in names])
    rim = np.stack([phases[n][1][el] for n in names])
    beta = SYNTHETIC_SENSITIVITY[el][None, :] * np.stack([SYNTHETIC_MATRIX.get(n, np.ones(10))[el] for n in names])
    background = SYNTHETIC_BACKGROUND[el]
    sy = (np.arange(n_y * m) + 0.5) / m

    def nearest(x0, x1):  # grain index and distance of the sub-pixels of pixel rows x0..x1
        sx = (np.arange(x0 * m, x1 * m) + 0.5) / m
        d2 = (sx[:, None, None] - seeds[:, 0]) ** 2 + (sy[None, :, None] - seeds[:, 1]) ** 2
        return np.argmin(d2, axis=-1), np.sqrt(np.min(d2, axis=-1))

    reach = np.zeros(n_grains)  # farthest sub-pixel of each grain: zoning runs 0 (seed) to 1 (rim)
    rows = max(1, 2_000_000 // max(n_y * m * m * n_grains, 1))
    for x0 in range(0, n_x, rows):
        grain, dist = nearest(x0, min(n_x, x0 + rows))
        np.maximum.at(reach, grain.ravel(), dist.ravel())
    fraction = np.zeros((n_x, n_y, len(names)))
    conc = np.zeros((n_x, n_y, n_elements))
    intensity = np.zeros((n_x, n_y, n_elements))
    for x0 in range(0, n_x, rows):
        x1 = min(n_x, x0 + rows)
        grain, dist = nearest(x0, x1)
        u = dist / np.maximum(reach[grain], 1e-12)
        sub_phase = grain_phase[grain]
        sub_c = core[sub_phase] + (rim - core)[sub_phase] * u[..., None] ** 1.5

        fraction[x0:x1] = _pixel_mean(np.eye(len(names))[sub_phase], m)
        conc[x0:x1] = _pixel_mean(sub_c, m)  # equal densities: mass fraction = area fraction
        intensity[x0:x1] = _pixel_mean(beta[sub_phase] * sub_c + background, m)
    time = np.asarray(pixel_times(n_x, n_y, dwell_time))
    g = 1.0 + drift * (time - time.min()) / (time.max() - time.min())
    rate = probe_current * g[..., None] * intensity
    observed = rate / (1.0 + dead_time * rate)
    counts = rng.poisson(dwell_time * observed).astype(float)
    spots, labels = [], []
    for p, name in enumerate(names):
        pure = np.argwhere(fraction[..., p] > 0.999)
        pick = rng.choice(len(pure), size=min(spots_per_phase, len(pure)), replace=False)
        spots.extend(pure[pick])
        labels.extend([name] * len(pick))
    spots = np.asarray(spots)
    wt = conc[spots[:, 0], spots[:, 1]] * (1.0 + spot_noise * rng.standard_normal((len(spots), n_elements)))
    epma = EpmaMap(counts=counts, elements=SYNTHETIC_ELEMENTS[el], oxides=SYNTHETIC_OXIDES[el],
                   dwell_time=dwell_time, probe_current=probe_current, dead_time=np.asarray(dead_time),
                   spot_pixel=spots, spot_wt=np.maximum(wt, 0.0), spot_phase=tuple(labels), pixel_time=time,
                   source=f"synthetic map (seed {seed})")
    order = [names.index(n) for n in epma.phases]
    truth = {"concentration": conc, "phase_fraction": fraction[..., order], "beta": beta[order],
             "background": background.copy(), "drift": np.array([drift])}
    return epma, truth


# -- calibration models -----------------------------------------------------------------
class SpotCalibration(eqx.Module):
    """Expected map counts of the pixels under the spots: :class:`XrayMap` with each spot
    a pure pixel of its phase at its measured composition."""

    xray: XrayMap
    phase_fraction: jax.Array
    concentration: jax.Array
    background: bool = eqx.field(static=True)

    def __call__(self, params):
        full = {"phase_fraction": self.phase_fraction, "concentration": self.concentration, "beta": params["beta"]}
        if self.background:
            full["background"] = params["background"]
        if self.xray.drift_order:
            full["drift"] = params["drift"]
        return self.xray(full)


def _map_xray(epma: EpmaMap, time, drift: bool) -> XrayMap:
    t_ref, t_scale = epma.drift_clock
    return XrayMap(epma.dwell_time, len(epma.phases), len(epma.elements), dead_time=epma.dead_time,
                   probe_current=epma.probe_current, time=time, drift_order=int(drift),
                   t_ref=t_ref, t_scale=t_scale)


def sensitivity_guess(epma: EpmaMap) -> np.ndarray:
    """``(E,)`` rough counts-per-wt% scale of each element [cps/nA per wt%] (prior centre)."""
    n = epma.spot_counts
    c = epma.spot_wt
    scale = epma.dwell_time * epma.probe_current
    guess = np.sum(n, axis=0) / np.maximum(np.sum(c, axis=0), 1e-12) / scale
    mean_rate = np.mean(epma.counts, axis=(0, 1)) / scale
    return np.where(np.sum(c, axis=0) > 0, guess, np.maximum(mean_rate, 1.0 / scale) / 10.0)


def calibration_model(epma: EpmaMap, background: bool = True, drift: bool = False) -> ji.Model:
    """Poisson calibration of ``beta`` (and background, drift) on the spot pixels.

    Priors (this module's choice): ``beta_pe ~ LogNormal(log beta0_e, 1)`` with ``beta0``
    the element's pooled counts-per-wt% (:func:`sensitivity_guess`); background
    ``b_e ~ HalfNormal(5 beta0_e)`` (up to a few wt% equivalent); drift coefficient
    ``c_1 ~ N(0, 0.1^2)`` (relative change over the map).
    """
    n_phases, n_el = len(epma.phases), len(epma.elements)
    one_hot = np.eye(n_phases)[epma.spot_phase_index]
    conc = np.broadcast_to(epma.spot_wt[:, None, :], (len(epma.spot_phase), n_phases, n_el))
    forward = SpotCalibration(_map_xray(epma, epma.spot_time, drift), jnp.asarray(one_hot), jnp.asarray(conc),
                              bool(background))
    beta0 = sensitivity_guess(epma)
    priors = {"beta": ji.priors.LogNormal(np.broadcast_to(np.log(beta0), (n_phases, n_el)), 1.0)}
    if background:
        priors["background"] = ji.priors.HalfNormal(5.0 * beta0)
    if drift:
        priors["drift"] = ji.priors.Normal(0.0, 0.1, shape=(1,))
    return ji.Model(forward, priors, ji.likelihoods.Poisson())


def _name(background: bool, drift: bool) -> str:
    return ("background" if background else "no background") + (" + drift" if drift else "")


def models(data: Dataset, background=(False, True), drift=(False, True), n_components=None) -> dict[str, ji.Model]:
    """Candidate calibrations: with and without a background, with and without drift
    (``--select`` picks among them by 1-based index, in this order).

    A model without background predicts exactly zero counts for an element a spot does
    not contain; if such a spot's pixel has counts, that model's evidence is exactly zero
    (F = +inf) and it is left out."""
    epma = data.x
    impossible = np.any((epma.spot_wt == 0) & (epma.spot_counts > 0))
    backgrounds = [bool(b) for b in np.atleast_1d(background) if b or not impossible]
    if not backgrounds:
        raise ValueError("spots with zero concentration have counts: the data need a background (background=True)")
    out = {_name(b, bool(d)): calibration_model(epma, b, bool(d)) for b in backgrounds for d in np.atleast_1d(drift)}
    if n_components is not None:
        names = list(out)
        bad = [k for k in n_components if not 1 <= int(k) <= len(names)]
        if bad:
            raise ValueError(f"--select indexes the calibration models 1..{len(names)} "
                             f"({', '.join(f'{i + 1}: {n}' for i, n in enumerate(names))}), got {bad}")
        out = {names[int(k) - 1]: out[names[int(k) - 1]] for k in n_components}
    return out


def calibration_draws(result: ji.Result, key, n_draws: int = N_DRAWS) -> dict[str, np.ndarray]:
    """``n_draws`` draws of the calibration parameters from a Laplace (MAP) or sampled
    result, flattened over chains."""
    if result.sample_dims == 2:
        params = result.params
    elif result.laplace is not None:
        params = result.laplace.sample(key, n_draws=n_draws).params
    else:
        raise ValueError("the calibration result has neither draws nor a Laplace approximation")
    flat = {k: np.asarray(v).reshape(-1, *np.shape(v)[2:]) for k, v in params.items()}
    n = next(iter(flat.values())).shape[0]
    index = np.asarray(jax.random.choice(jax.random.fold_in(key, 1), n, (n_draws,), replace=n < n_draws))
    return {k: v[index] for k, v in flat.items()}


# -- phase statistics -------------------------------------------------------------------------
def phase_compositions(epma: EpmaMap) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(P, E)`` and within-phase variance ``(P, E)`` of the spots' wt% per phase
    (variance 0 for a phase with one spot)."""
    idx = epma.spot_phase_index
    mean = np.stack([epma.spot_wt[idx == p].mean(0) for p in range(len(epma.phases))])
    var = np.stack([epma.spot_wt[idx == p].var(0, ddof=1) if np.sum(idx == p) > 1 else np.zeros(len(epma.elements))
                    for p in range(len(epma.phases))])
    return mean, var


def memberships(epma: EpmaMap, drift=None, max_iter: int = 200):
    """Soft phase clustering of the pixels: :func:`jaxinv.clustering.poisson_mixture`
    initialised from the mean counts of the pixels under each phase's spots, with the
    beam-current factor ``g`` (from ``drift`` coefficients, shape (1,)) as exposure.
    Returns ``(membership (n_x, n_y, P), PoissonMixtureResult)``."""
    n_x, n_y, n_el = epma.counts.shape
    idx = epma.spot_phase_index
    centres = np.stack([epma.spot_counts[idx == p].mean(0) for p in range(len(epma.phases))])
    exposure = np.ones(n_x * n_y)
    if drift is not None:
        exposure = np.asarray(beam_drift(epma.pixel_time, jnp.asarray(drift), *epma.drift_clock)).reshape(-1)
    fit = poisson_mixture(epma.counts.reshape(-1, n_el), rates_init=centres, exposure=exposure, max_iter=max_iter)
    return np.asarray(fit.responsibilities).reshape(n_x, n_y, -1), fit


# -- per-pixel posterior --------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantMap:
    """Posterior summaries of every pixel (arrays ``(n_x, n_y, ...)``).

    ``mean``/``sd``/``lower``/``upper``: ``(n_x, n_y, E)`` concentration of each oxide [wt%]
    (``lower``/``upper``: the ``CREDIBLE_MASS`` highest-density interval); ``total_*``:
    ``(n_x, n_y)`` sum of the oxides; ``fraction_*``: ``(n_x, n_y, P)`` phase mass fractions;
    ``membership``: ``(n_x, n_y, P)`` cluster probabilities; ``deviance``: ``(n_x, n_y)``
    Poisson deviance of the phase-fraction fit (large where the pixel matches no mixture of
    the known phases: cracks, pores, an unlabelled phase).
    """

    oxides: tuple[str, ...]
    phases: tuple[str, ...]
    mean: np.ndarray
    sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    total_mean: np.ndarray
    total_sd: np.ndarray
    total_lower: np.ndarray
    total_upper: np.ndarray
    fraction_mean: np.ndarray
    fraction_sd: np.ndarray
    membership: np.ndarray
    deviance: np.ndarray
    phase_draws: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    def phase_composition(self) -> dict:
        """Posterior of each phase's map-wide mean composition: per calibration draw, the
        mean concentration over the pixels whose phase-fraction draw exceeds
        ``PURE_FRACTION``.  Counting noise averages out over the pixels; the calibration
        uncertainty, shared by every pixel, does not.  ``{phase: {"mean", "sd", "lower",
        "upper"}}`` (arrays over the oxides, wt%; the 95 % HDI)."""
        out = {}
        for p, name in enumerate(self.phases):
            d = self.phase_draws[:, p, :]
            if not np.all(np.isfinite(d)):
                warnings.warn(f"phase {name}: some draws have no pixel above fraction {PURE_FRACTION}; "
                              "no map-wide composition", stacklevel=2)
            else:
                lo, hi = hdi(jnp.asarray(d.T))
                out[name] = {"mean": d.mean(0), "sd": d.std(0), "lower": np.asarray(lo), "upper": np.asarray(hi)}
        return out

    def to_netcdf(self, path) -> Path:
        """Write every map as a variable of one netCDF file (h5netcdf)."""
        import xarray as xr

        dims = ("x", "y")
        ds = xr.Dataset(
            {
                "concentration_mean": (dims + ("oxide",), self.mean, {"units": "wt%"}),
                "concentration_sd": (dims + ("oxide",), self.sd, {"units": "wt%"}),
                "concentration_lower": (dims + ("oxide",), self.lower, {"units": "wt%"}),
                "concentration_upper": (dims + ("oxide",), self.upper, {"units": "wt%"}),
                "total_mean": (dims, self.total_mean, {"units": "wt%"}),
                "total_sd": (dims, self.total_sd, {"units": "wt%"}),
                "total_lower": (dims, self.total_lower, {"units": "wt%"}),
                "total_upper": (dims, self.total_upper, {"units": "wt%"}),
                "phase_fraction_mean": (dims + ("phase",), self.fraction_mean),
                "phase_fraction_sd": (dims + ("phase",), self.fraction_sd),
                "membership": (dims + ("phase",), self.membership),
                "deviance": (dims, self.deviance),
            },
            coords={"oxide": list(self.oxides), "phase": list(self.phases)},
            attrs={"credible_mass": CREDIBLE_MASS, **{k: str(v) for k, v in self.meta.items()}},
        )
        path = Path(path)
        ds.to_netcdf(path, engine="h5netcdf")
        return path


def hdi(draws, mass: float = CREDIBLE_MASS):
    """Highest-density interval of draws along the last axis: the shortest window holding
    ``mass`` of the sorted draws."""
    s = jnp.sort(draws, axis=-1)
    n = s.shape[-1]
    k = min(max(math.ceil(mass * n), 1), n)
    widths = s[..., k - 1:] - s[..., : n - k + 1]
    start = jnp.argmin(widths, axis=-1)
    lo = jnp.take_along_axis(s, start[..., None], axis=-1)[..., 0]
    hi = jnp.take_along_axis(s, (start + k - 1)[..., None], axis=-1)[..., 0]
    return lo, hi


def gamma_draws(key, shape_param, n_draws: int, rounds: int = 2):
    """``n_draws`` draws of ``Gamma(shape_param, 1)`` for ``shape_param >= 1`` (any array
    shape), output ``(n_draws, *shape_param.shape)``.

    Marsaglia & Tsang (2000, ACM TOMS 26, 363-372) squeeze-free acceptance test with a
    fixed number of proposals instead of a rejection loop: for shape >= 1 a proposal is
    accepted with probability >= 0.95 (>= 0.995 from shape 10), so both proposals of the
    default ``rounds=2`` fail with probability <= 0.0025 at shape 1 (<= 2.5e-5 from
    shape 10); the last proposal, itself a close approximation, is then kept.  Several
    times faster on CPU than ``jax.random.gamma`` (1.6 us per draw there), whose
    ``while_loop`` runs every lane until the slowest one is accepted; the random numbers
    are the cost, so ``rounds`` trades exactness at tiny shapes for speed.
    """
    a = jnp.asarray(shape_param, dtype=float)
    d = a - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    k_z, k_u = jax.random.split(key)
    shape = (rounds, n_draws) + a.shape
    z = jax.random.normal(k_z, shape)
    log_u = jnp.log(jax.random.uniform(k_u, shape, minval=jnp.finfo(float).tiny))
    v = (1.0 + c * z) ** 3
    ok = (v > 0) & (log_u < 0.5 * z**2 + d - d * v + d * jnp.log(jnp.where(v > 0, v, 1.0)))
    first = jnp.where(jnp.any(ok, axis=0), jnp.argmax(ok, axis=0), rounds - 1)
    v = jnp.take_along_axis(v, first[None], axis=0)[0]
    return d * jnp.maximum(v, 0.0)


def interval(draws, no_counts, lower_bound):
    """The ``CREDIBLE_MASS`` highest-density interval of concentration draws (last axis).

    Without a background the concentration is ``C = lambda * a`` with ``a > 0``
    independent of ``lambda``; when the element has no counts, ``lambda | N=0 ~ Exp(1)``
    has a decreasing density, and so has any scale mixture of it, so the highest-density
    interval is exactly ``[0, quantile(mass)]`` (the one-sided upper limit of an
    element below detection).  Elsewhere it is the sample HDI.
    """
    lo, hi = hdi(draws, CREDIBLE_MASS)
    if not np.isfinite(lower_bound):
        return lo, hi
    upper = jnp.quantile(draws, CREDIBLE_MASS, axis=-1)
    return jnp.where(no_counts, lower_bound, lo), jnp.where(no_counts, upper, hi)


def _negbin_log_prob(n, mean, extra_var):
    """Negative-binomial log-probability with mean ``mean`` and variance
    ``mean + extra_var``; the Poisson law where ``extra_var < 1e-3 mean`` (the two differ
    by less than 0.1 % in variance there, and the negative binomial's
    ``gammaln(n + r) - gammaln(r)`` cancels catastrophically as ``r -> inf``, badly so in
    float32, where it stays unreliable for ``r`` beyond ~1e5)."""
    mean = jnp.maximum(mean, 1e-12)
    poisson = jsp.xlogy(n, mean) - mean - jsp.gammaln(n + 1.0)
    near_poisson = extra_var < 1e-3 * mean
    r = mean**2 / jnp.where(near_poisson, mean, extra_var)
    negbin = (jsp.gammaln(n + r) - jsp.gammaln(r) - jsp.gammaln(n + 1.0)
              - r * jnp.log1p(mean / r) + jsp.xlogy(n, mean / (r + mean)))
    return jnp.where(near_poisson, poisson, negbin)


def _alr_to_fraction(z):
    return jax.nn.softmax(jnp.concatenate([z, jnp.zeros(z.shape[:-1] + (1,))], axis=-1), axis=-1)


class _PixelModel(eqx.Module):
    """Per-pixel phase fractions and composition (stages 3 and 4 of the module docstring)."""

    dwell_time: jax.Array
    probe_current: jax.Array
    dead_time: jax.Array  # (E,)
    t_ref: jax.Array
    t_scale: jax.Array
    beta: jax.Array  # (S, P, E) calibration draws
    background: jax.Array  # (S, E)
    drift: jax.Array  # (S, K)
    phase_mean: jax.Array  # (P, E) spot-mean wt%
    phase_var: jax.Array  # (P, E) within-phase wt% variance
    lower_bound: float = eqx.field(static=True)

    def gain(self, time, drift):
        """Beam-current factor ``g`` at ``time`` for drift coefficients ``(K,)``, or per
        draw ``(S,)`` for coefficients ``(S, K)``."""
        if drift.shape[-1] == 0:
            return jnp.ones(drift.shape[:-1])
        if drift.ndim == 2:
            return jax.vmap(lambda c: beam_drift(time, c, self.t_ref, self.t_scale))(drift)
        return beam_drift(time, drift, self.t_ref, self.t_scale)

    def fraction_energy(self, z, counts, time):
        """Negative log posterior of the additive log-ratio ``z`` of the phase fractions."""
        w = _alr_to_fraction(z)
        beta = jnp.mean(self.beta, axis=0)
        g = self.gain(time, jnp.mean(self.drift, axis=0))
        mean = self._mean_counts(w, time)
        extra = (w**2) @ ((self.dwell_time * self.probe_current * g * beta) ** 2 * self.phase_var)
        log_lik = jnp.sum(_negbin_log_prob(counts, mean, extra))
        # Dirichlet(alpha) prior on w; the ALR Jacobian adds prod_p w_p
        return -(log_lik + DIRICHLET_CONCENTRATION * jnp.sum(jnp.log(w)))

    def fraction_mode(self, counts, time, z0):
        value_and_grad = jax.value_and_grad(self.fraction_energy)
        hess = jax.hessian(self.fraction_energy)

        def step(_, z):
            energy, g = value_and_grad(z, counts, time)
            h = hess(z, counts, time)
            eig = jnp.linalg.eigvalsh(h)
            damp = jnp.maximum(0.0, -eig[0]) + 1e-6 * jnp.maximum(1.0, eig[-1])
            dz = -jnp.linalg.solve(h + damp * jnp.eye(z.shape[0]), g)
            norm = jnp.linalg.norm(dz)
            dz = dz * jnp.minimum(1.0, 2.0 / jnp.maximum(norm, 1e-30))
            z_new = z + dz
            better = self.fraction_energy(z_new, counts, time) <= energy
            return jnp.where(better, z_new, z + 0.25 * dz)

        z = jax.lax.fori_loop(0, NEWTON_STEPS, step, z0)
        h = hess(z, counts, time)
        return z, h

    def pixel(self, counts, time, z0, key, expected_counts=None, smoothed_phase=None, smoothed=None):
        """Summaries of one pixel: counts (E,), acquisition time, ALR start (P-1,), key;
        ``expected_counts`` (S, E): draws of the expected counts from the spatially smoothed
        posterior (:func:`smooth_counts`) of phase ``smoothed_phase``, used instead of this
        pixel's own ``Gamma(N + 1)`` for the elements where ``smoothed`` (E,) is true; those
        take the pixel as that phase (:func:`_field_fractions`) when counts become
        concentrations."""
        n_draws = self.beta.shape[0]
        k_w, k_c = jax.random.split(key)
        if z0.shape[0] == 0:  # one phase: every pixel is all of it
            z = z0
            w = jnp.ones((n_draws, 1))
        else:
            z, h = self.fraction_mode(counts, time, z0)
            eig, vec = jnp.linalg.eigh(h)
            eig = jnp.maximum(eig, 1e-8)
            eps = jax.random.normal(k_w, (n_draws, z.shape[0]))
            w = _alr_to_fraction(z + (eps / jnp.sqrt(eig)) @ vec.T)  # (S, P)
        # expected counts | N ~ Gamma(N + 1, 1) (flat prior), per draw and element
        lam = gamma_draws(k_c, counts + 1.0, n_draws)
        beta_eff = _effective_sensitivity(w, self.phase_mean, self.beta)  # (S, E)
        if expected_counts is None:
            smoothed = jnp.zeros(counts.shape, bool)
        else:
            lam = jnp.where(smoothed, expected_counts, lam)
            field = _effective_sensitivity(_field_fractions(smoothed_phase, w), self.phase_mean, self.beta)
            beta_eff = jnp.where(smoothed, field, beta_eff)
        g = self.gain(time, self.drift)  # (S,)

        def concentration(expected_counts):  # invert eqs. (1)-(4) of jaxinv.physics.xray
            observed_rate = expected_counts / self.dwell_time
            # inf where tau R' >= 1 (beyond the counter's saturation), as in xray.dead_time_correction
            rate = dead_time_correction(observed_rate, self.dead_time)
            return (rate / (self.probe_current * g[:, None]) - self.background) / beta_eff

        conc = concentration(lam)  # (S, E)
        # pooled over many pixels the flat prior's one pseudo-count per pixel would add up
        # (e.g. +1 count per pixel of an absent element): the phase means use lambda - 1,
        # unbiased for the counts' mean (E[lambda - 1 | N] = N).
        conc_pooled = jnp.where(smoothed, conc, concentration(lam - 1.0))
        # a smoothed pixel's draws come from a Gaussian field, which may cross the physical
        # bound: its interval is the draws' HDI, stopped at the bound
        no_counts = (counts == 0) & ~smoothed  # (E,)
        lo, hi = interval(conc.T, no_counts, self.lower_bound)
        lo = jnp.where(smoothed, jnp.maximum(lo, self.lower_bound), lo)
        hi = jnp.where(smoothed, jnp.maximum(hi, self.lower_bound), hi)
        total = jnp.sum(conc, axis=1)
        t_lo, t_hi = interval(total, jnp.all(no_counts), self.lower_bound)
        w_mode = _alr_to_fraction(z)
        mean_counts = self._mean_counts(w_mode, time)
        deviance = 2.0 * jnp.sum(jsp.xlogy(counts, counts / jnp.maximum(mean_counts, 1e-12)) - (counts - mean_counts))
        summary = (jnp.mean(conc, 0), jnp.std(conc, 0), lo, hi, jnp.mean(total), jnp.std(total), t_lo, t_hi,
                   jnp.mean(w, 0), jnp.std(w, 0), deviance)
        # per draw: this pixel's share in each phase's map-wide mean composition
        pure = (w > PURE_FRACTION).astype(conc.dtype)  # (S, P)
        return summary, (pure[:, :, None] * conc_pooled[:, None, :], pure)

    def _mean_counts(self, w, time):
        """Expected counts ``(E,)`` of a pixel with phase fractions ``w``, each phase at its
        spot-mean composition (posterior-mean calibration), through the dead time."""
        beta = jnp.mean(self.beta, axis=0)
        g = self.gain(time, jnp.mean(self.drift, axis=0))
        rate = w @ (self.probe_current * g * (beta * self.phase_mean + jnp.mean(self.background, axis=0)))
        return self.dwell_time * dead_time_loss(rate, self.dead_time)


def _effective_sensitivity(fractions, phase_mean, beta):
    """``beta_eff = sum_p w_p beta_pe m_pe / sum_p w_p m_pe`` (module docstring) for phase
    fractions ``(..., P)``, spot means ``(P, E)`` and ``beta`` ``(..., P, E)``: ``(..., E)``."""
    weight = fractions[..., :, None] * (phase_mean + 1e-6)
    return jnp.sum(weight * beta, axis=-2) / jnp.sum(weight, axis=-2)


def _field_fractions(phase, w):
    """The phase fractions a smoothed field's pixel is converted with: all phase ``phase``
    but a ``FIELD_TRACE`` share of its fractions ``w``, so that an element the phase does
    not hold (whose ``beta`` its spots cannot calibrate) takes the ``beta`` of the phases
    that hold it, as in the unsmoothed ``beta_eff``."""
    one_hot = jax.nn.one_hot(phase, w.shape[-1], dtype=w.dtype)
    return (1.0 - FIELD_TRACE) * one_hot + FIELD_TRACE * w


class _ElementCounts(eqx.Module):
    """Poisson log-likelihood of one element's counts ``(n_x, n_y)`` as a function of a
    concentration field ``c`` [wt%], on the pixels where ``mask`` is 1 (0 elsewhere):
    ``N ~ Poisson(t R / (1 + tau_d R))`` (``tau_d`` the dead time), ``R = a c + o`` (``a = i g beta_eff``,
    ``o = i g b``: posterior-mean calibration and phase fractions).  Below
    ``EXPECTED_COUNT_FLOOR`` expected counts it continues as its second-order expansion at
    the floor (concave and smooth), so that a Gaussian field may dip below zero counts
    where an element is absent instead of meeting a wall."""

    counts: jax.Array
    scale: jax.Array
    offset: jax.Array
    dwell_time: jax.Array
    dead_time: jax.Array
    mask: jax.Array

    def expected_counts(self, concentration):
        return self.dwell_time * dead_time_loss(self.scale * concentration + self.offset, self.dead_time)

    def __call__(self, concentration):
        lam = self.expected_counts(concentration)
        n, floor = self.counts, EXPECTED_COUNT_FLOOR
        safe = jnp.maximum(lam, floor)
        d = lam - floor
        below = jsp.xlogy(n, floor) - floor + (n / floor - 1.0) * d - 0.5 * n / floor**2 * d**2
        return self.mask * jnp.where(lam >= floor, jsp.xlogy(n, safe) - safe, below)


def smooth_counts(epma: EpmaMap, model: _PixelModel, fraction_mean, phase_level, key,
                  max_smoothing_length: float = MAX_SMOOTHING_LENGTH
                  ) -> tuple[jax.Array, jax.Array, jax.Array, dict]:
    """Spatially smoothed posterior draws of the expected counts of every phase's pure pixels.

    Zoning is smooth *within* a phase, and phases meet at sharp boundaries; so each phase
    ``p`` and element ``e`` has its own field: the concentration ``c(x)`` [wt%] of the
    pixels whose phase-fraction mean exceeds ``SMOOTH_FRACTION`` for ``p``, taken as pure
    ``p`` (:func:`_field_fractions`; posterior-mean calibration), with the prior
    ``c ~ GaussianMRF(order 1, mean l_pe, precision tau_pe)`` on the whole grid (``l_pe``
    the phase's map-wide mean from the unsmoothed pass) and Poisson counts
    (:class:`_ElementCounts`) on that phase's pixels only.  Grains of one phase are tied
    only weakly, through the data-free cells between them.  The posterior is the Gaussian
    approximation of :func:`jaxinv.inference.latent_field.gmrf_laplace`, with ``tau_pe``
    by type-II maximum likelihood: how strongly the phase is zoned in that element,
    learnt from the map.  ``tau`` is bounded by a smoothing length
    ``sqrt(tau / W) <= max_smoothing_length`` pixels (``W`` the median Fisher information
    of one pixel's counts about ``c``), so a featureless phase is shrunk towards its level
    over that many pixels, not the whole map.

    Pixels the smooth field cannot explain -- counts more than ``OUTLIER_Z`` sd from the
    field's prediction in any element: a sliver of another phase, an inclusion, a crack --
    leave the field (which is then fitted again without them) and, like the mixed pixels,
    keep their own unsmoothed posterior.

    Each field draw ``s`` becomes expected counts through the mean calibration; the pixel
    stage turns them back into concentrations with calibration draw ``s`` of phase ``p``,
    exactly as the unsmoothed draws.

    An element that a phase's pixels count little (mean counts below
    ``MIN_SMOOTH_COUNTS``) is not smoothed in that phase: there the Poisson posterior is
    skewed, or sits on the bound ``C >= 0`` (absent, no background), and the field's
    Gaussian approximation would bias it (measured on synthetic maps: at ~2.5 background
    counts per pixel, smoothing made the RMSE worse).

    Returns ``(expected counts (n_x * n_y, S, E), phase of each smoothed pixel
    (n_x * n_y,), -1 where none, smoothed elements (n_x * n_y, E), {phase: {"pixels",
    "outliers", oxide: {"precision", "smoothing_length", "search_steps", "converged"} or
    {"smoothed": False, "mean_counts"}}})``.
    """
    n_x, n_y, n_el = epma.counts.shape
    n_draws = model.beta.shape[0]
    w = jnp.asarray(fraction_mean).reshape(n_x, n_y, -1)
    beta = jnp.mean(model.beta, axis=0)
    g = model.gain(jnp.asarray(epma.pixel_time, dtype=float), jnp.mean(model.drift, axis=0))
    current = model.probe_current * jnp.broadcast_to(g, (n_x, n_y))
    background = jnp.mean(model.background, axis=0)
    counts = jnp.asarray(epma.counts, dtype=float)
    expected = jnp.zeros((n_draws, n_x, n_y, n_el))
    use = jnp.zeros((n_x, n_y, n_el), bool)
    phase_of_pixel = jnp.full((n_x, n_y), -1)
    keys = jax.random.split(key, (len(epma.phases), n_el))
    info = {}

    def fit(p, e, mask, beta_eff, start=None):
        scale = current * beta_eff[..., e]
        likelihood = _ElementCounts(counts[..., e], scale, current * background[e], model.dwell_time,
                                    model.dead_time[e], mask.astype(float))
        fisher = float(jnp.median(((model.dwell_time * scale) ** 2 / jnp.maximum(counts[..., e], 1.0))[mask]))
        level = float(phase_level[p, e])
        spread = max(float(np.sqrt(model.phase_var[p, e])), 1e-3 * abs(level), 1e-6)
        bounds = (jnp.asarray(1e-4 * fisher), jnp.asarray(max_smoothing_length**2 * fisher))
        tau0 = 1.0 / spread**2 if start is None else float(start.precision)
        prior = ji.priors.GaussianMRF((n_x, n_y), order=1, boundary_sd=spread, mean=level,
                                      precision=float(np.clip(tau0, *map(float, bounds))))
        init = jnp.full((n_x, n_y), level) if start is None else start.mode
        field = gmrf_laplace(prior, likelihood, keys[p, e], n_draws=n_draws, init=init,
                             estimate_precision=True, precision_bounds=bounds, search_draws=SMOOTHNESS_DRAWS)
        return likelihood, field, fisher

    for p, phase in enumerate(epma.phases):
        mask = w[..., p] > SMOOTH_FRACTION
        if not bool(jnp.any(mask)):
            continue
        mean_counts = [float(jnp.mean(counts[..., e][mask])) for e in range(n_el)]
        elements = [e for e in range(n_el) if mean_counts[e] >= MIN_SMOOTH_COUNTS]
        if not elements:
            continue
        beta_eff = _effective_sensitivity(_field_fractions(p, w), model.phase_mean, beta)  # as in the pixel stage
        outlier = jnp.zeros((n_x, n_y), bool)
        first = {}
        for e in elements:
            likelihood, field, _ = fit(p, e, mask, beta_eff)
            first[e] = field
            lam = likelihood.expected_counts(field.draws)
            expected_mean = jnp.maximum(jnp.mean(lam, 0), 0.0)  # a Gaussian field may dip below zero counts
            z = (counts[..., e] - expected_mean) / jnp.sqrt(expected_mean + jnp.var(lam, 0) + 1.0)
            outlier = outlier | (mask & (jnp.abs(z) > OUTLIER_Z))
        mask = mask & ~outlier
        phase_of_pixel = jnp.where(mask, p, phase_of_pixel)
        info[phase] = {"pixels": int(jnp.sum(mask)), "outliers": int(jnp.sum(outlier))}
        for e, oxide in enumerate(epma.oxides):
            if e not in elements:
                info[phase][oxide] = {"smoothed": False, "mean_counts": mean_counts[e]}
                continue
            use = use.at[..., e].set(use[..., e] | mask)
            likelihood, field, fisher = fit(p, e, mask, beta_eff, start=first[e])  # from the first fit's tau and mode
            if not bool(field.converged):
                warnings.warn(f"{phase} {oxide}: the smoothed field's mode or smoothness search did not converge "
                              f"({int(field.newton_steps)} Newton, {int(field.search_steps)} search steps)", stacklevel=2)
            info[phase][oxide] = {"precision": float(field.precision),
                                  "smoothing_length": float(np.sqrt(float(field.precision) / fisher)),
                                  "search_steps": int(field.search_steps), "converged": bool(field.converged)}
            expected = expected.at[..., e].add(mask * likelihood.expected_counts(field.draws))
    return (jnp.transpose(expected.reshape(n_draws, n_x * n_y, n_el), (1, 0, 2)), phase_of_pixel.reshape(-1),
            use.reshape(-1, n_el), info)


def quantify(epma: EpmaMap, calibration: dict, key, chunk_size: int = CHUNK_SIZE,
             membership: np.ndarray | None = None, smooth: bool = False,
             max_smoothing_length: float = MAX_SMOOTHING_LENGTH) -> QuantMap:
    """Posterior composition maps of every pixel (stages 2-4 of the module docstring).

    Args:
        epma: the map and spots.
        calibration: draws ``{"beta": (S, P, E), "background": (S, E) (optional),
            "drift": (S, 1) (optional)}`` (:func:`calibration_draws`); ``S`` is the number of
            draws per pixel.
        key: PRNG key.
        chunk_size: pixels per vectorised block (bounds the memory: about
            ``chunk_size * S * E * 8`` bytes per intermediate array).
        membership: cluster probabilities ``(n_x, n_y, P)``; default :func:`memberships`.
        smooth: spatial smoothing of the concentration maps (:func:`smooth_counts`): a
            Gaussian Markov random field prior about the phase map, its smoothness learnt
            from the map.  Costs a second pass and holds ``S x pixels x E`` draws in memory.
        max_smoothing_length: the largest smoothing length [pixels] (:func:`smooth_counts`).
    """
    n_x, n_y, n_el = epma.counts.shape
    beta = jnp.asarray(calibration["beta"], dtype=float)
    if beta.ndim != 3 or beta.shape[1:] != (len(epma.phases), n_el):
        raise ValueError(f"calibration beta must have shape (draws, {len(epma.phases)}, {n_el}), got {beta.shape}")
    n_draws = beta.shape[0]
    has_background = "background" in calibration
    background = jnp.asarray(calibration["background"], dtype=float) if has_background else jnp.zeros((n_draws, n_el))
    drift = jnp.asarray(calibration["drift"], dtype=float) if "drift" in calibration else jnp.zeros((n_draws, 0))
    if membership is None:
        membership, _ = memberships(epma, np.mean(np.asarray(drift), 0) if drift.shape[1] else None)
    phase_mean, phase_var = phase_compositions(epma)
    t = epma.pixel_time
    model = _PixelModel(jnp.asarray(epma.dwell_time, dtype=float), jnp.asarray(epma.probe_current, dtype=float),
                        jnp.broadcast_to(jnp.asarray(epma.dead_time, dtype=float), (n_el,)),
                        *(jnp.asarray(v) for v in epma.drift_clock),
                        beta, background, drift, jnp.asarray(phase_mean), jnp.asarray(phase_var),
                        -np.inf if has_background else 0.0)
    n_phases = len(epma.phases)
    w0 = 0.9 * membership.reshape(-1, n_phases) + 0.1 / n_phases
    z0 = np.log(w0[:, :-1] / w0[:, -1:])
    n_pix = n_x * n_y
    keys = jax.random.split(key, n_pix)
    inputs = (jnp.asarray(epma.counts.reshape(-1, n_el)), jnp.asarray(t.reshape(-1), dtype=float),
              jnp.asarray(z0), keys)
    n_chunks = -(-n_pix // max(int(chunk_size), 1))
    chunk = -(-n_pix // n_chunks)  # equal chunks, least padding
    out, (sum_c, count) = _run(model, inputs, chunk)
    meta = {"source": epma.source, "draws_per_pixel": n_draws}
    if smooth:
        fraction_mean = np.asarray(out[8])[:n_pix]
        n_pure = np.mean(np.asarray(count), 0)
        level = np.mean(np.asarray(sum_c), 0) / np.maximum(n_pure, 1.0)[:, None]  # map-wide phase means
        level = np.where(n_pure[:, None] > 0, level, phase_mean)
        expected, smoothed_phase, smoothed, info = smooth_counts(epma, model, fraction_mean, level, jax.random.fold_in(key, 1),
                                                 max_smoothing_length)
        out, (sum_c, count) = _run(model, inputs + (expected, smoothed_phase, smoothed), chunk)
        meta["smoothing"] = info
    out = [np.asarray(o)[:n_pix].reshape(n_x, n_y, *np.shape(o)[1:]) for o in out]
    mean, sd, lo, hi, tm, ts, tlo, thi, fm, fs, dev = out
    phase_draws = np.asarray(sum_c) / np.maximum(np.asarray(count), 1.0)[:, :, None]  # (S, P, E)
    phase_draws[np.asarray(count) == 0] = np.nan
    return QuantMap(epma.oxides, epma.phases, mean, sd, lo, hi, tm, ts, tlo, thi, fm, fs, membership, dev,
                    phase_draws, meta=meta)


@eqx.filter_jit
def _run(model, inputs, chunk_size):
    """``model.pixel`` over every pixel, ``chunk_size`` pixels at a time (a scan over
    chunks, each vectorised), summing the per-draw phase composition over the chunks."""
    n_pix = inputs[0].shape[0]
    n_chunks = -(-n_pix // chunk_size)
    pad = n_chunks * chunk_size - n_pix
    valid = jnp.arange(n_chunks * chunk_size) < n_pix

    def chunked(a):
        a = jnp.concatenate([a, jnp.repeat(a[-1:], pad, axis=0)]) if pad else a
        return a.reshape(n_chunks, chunk_size, *a.shape[1:])

    xs = jax.tree.map(chunked, inputs) + (valid.reshape(n_chunks, chunk_size),)
    n_draws, n_phases, n_el = model.beta.shape

    def body(carry, x):
        *args, ok = x
        summary, (c, n) = jax.vmap(model.pixel)(*args)
        m = ok.astype(c.dtype)
        carry = (carry[0] + jnp.einsum("i,ispe->spe", m, c), carry[1] + jnp.einsum("i,isp->sp", m, n))
        return carry, summary

    init = (jnp.zeros((n_draws, n_phases, n_el)), jnp.zeros((n_draws, n_phases)))
    totals, out = jax.lax.scan(body, init, xs)
    out = jax.tree.map(lambda o: o.reshape(n_chunks * chunk_size, *o.shape[2:]), out)
    return out, totals


# -- CLI figures ------------------------------------------------------------------------------
def figures(selection, data: Dataset, out_dir, smooth: bool = False,
            max_smoothing_length: float = MAX_SMOOTHING_LENGTH) -> list[Path]:
    """Quantify the map with the selected calibration and write ``epma_maps.nc``, the
    figures ``epma_concentration.png`` (mean and sd per oxide) and ``epma_phases.png``
    (phase fractions, memberships, totals), and ``epma_phases.txt`` (each phase's
    map-wide mean composition, :meth:`QuantMap.phase_composition`).  ``smooth``
    (``jaxinv run epma-mapping --option smooth=True``): spatially smoothed maps
    (:func:`quantify`)."""
    out_dir = Path(out_dir)
    epma = data.x
    result = selection.results[selection.selected]
    key = jax.random.key(0)
    draws = calibration_draws(result, key)
    q = quantify(epma, draws, jax.random.fold_in(key, 2), smooth=smooth, max_smoothing_length=max_smoothing_length)
    written = [q.to_netcdf(out_dir / "epma_maps.nc")]
    written += plot_maps(q, out_dir)
    lines = [f"# map-wide mean composition of each phase [wt%]: mean ± sd (95 % HDI), {q.meta['source']}"]
    for phase, row in q.phase_composition().items():
        lines.append(f"{phase}: " + ", ".join(
            f"{o} {m:.4g} ± {s:.2g} ({lo:.4g} to {hi:.4g})"
            for o, m, s, lo, hi in zip(q.oxides, row["mean"], row["sd"], row["lower"], row["upper"])))
    for phase, fields in q.meta.get("smoothing", {}).items():
        lengths = ", ".join(f"{o} {fields[o]['smoothing_length']:.3g}" if "smoothing_length" in fields[o]
                            else f"{o} not smoothed (mean counts {fields[o]['mean_counts']:.2g})"
                            for o in q.oxides if o in fields)
        lines.append(f"# {phase}: smoothed over {fields['pixels']} pixels ({fields['outliers']} outliers kept "
                     f"unsmoothed); smoothing length [pixels]: {lengths}")
    (out_dir / "epma_phases.txt").write_text("\n".join(lines) + "\n")
    written.append(out_dir / "epma_phases.txt")
    return written


def _panel(fig, ax, image, title, **imshow):
    im = ax.imshow(image, **imshow)
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, shrink=0.8)


def plot_maps(q: QuantMap, out_dir) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    n_el = len(q.oxides)
    fig, axes = plt.subplots(2, n_el, figsize=(3.0 * n_el, 5.6), squeeze=False)
    for e, oxide in enumerate(q.oxides):
        for row, (arr, label) in enumerate(((q.mean[..., e], "mean"), (q.sd[..., e], "sd"))):
            _panel(fig, axes[row, e], arr, f"{oxide} {label} (wt%)", cmap="viridis" if row == 0 else "magma")
    fig.tight_layout()
    conc_path = out_dir / "epma_concentration.png"
    fig.savefig(conc_path, dpi=110)
    plt.close(fig)

    n_p = len(q.phases)
    fig, axes = plt.subplots(2, n_p + 1, figsize=(3.0 * (n_p + 1), 5.6), squeeze=False)
    for p, name in enumerate(q.phases):
        for row, (arr, label) in enumerate(((q.fraction_mean[..., p], "fraction"), (q.membership[..., p], "membership"))):
            _panel(fig, axes[row, p], arr, f"{name} {label}", cmap="cividis", vmin=0, vmax=1)
    for row, (arr, label) in enumerate(((q.total_mean, "total (wt%)"), (q.total_sd, "total sd (wt%)"))):
        _panel(fig, axes[row, n_p], arr, label, cmap="coolwarm" if row == 0 else "magma",
               **({"vmin": 95, "vmax": 105} if row == 0 else {}))
    fig.tight_layout()
    phase_path = out_dir / "epma_phases.png"
    fig.savefig(phase_path, dpi=110)
    plt.close(fig)
    return [conc_path, phase_path]


problem = Problem(
    name="epma-mapping",
    description="EPMA quantitative composition maps with uncertainty from X-ray maps + spot analyses "
                "(Yasumoto et al. 2018, qntmap)",
    models=models,
    default_data=default_data,
    load_data=load_data,
    figures=figures,
)
