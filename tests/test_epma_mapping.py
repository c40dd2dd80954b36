"""EPMA quantitative mapping (problems/epma_mapping.py): the JEOL reader on qntmap's example,
known truth recovered through ``jaxinv run epma-mapping``, coverage on synthetic maps with
known truth, and one clear error per kind of bad input."""

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.stats as st
import xarray as xr

import jaxinv as ji
import jaxinv.cli
from problems import epma_mapping as em

QNTMAP_TRUTH = {"Qtz": (100.0, 0.0), "Ol": (42.71, 57.29)}  # wt% SiO2, MgO (the data README)


def test_reader_gets_the_qntmap_example_orientation_and_conditions():
    data = em.default_data()
    e = data.x
    assert e.counts.shape == (100, 100, 2)
    assert e.elements == ("Si", "Mg") and e.oxides == ("SiO2", "MgO")
    assert e.dwell_time == pytest.approx(0.1) and e.probe_current == pytest.approx(100.0)
    assert e.step_um == 1000.0 and float(e.dead_time) == 0.0
    assert e.phases == ("Qtz", "Ol") and len(e.spot_phase) == 40
    # row index = stage x: every quartz spot sits on a Mg-free pixel, every olivine spot on Mg
    mg = e.spot_counts[:, 1]
    qtz = np.array([p == "Qtz" for p in e.spot_phase])
    assert np.all(mg[qtz] == 0) and np.all(mg[~qtz] > 5000)
    np.testing.assert_allclose(e.spot_wt[~qtz], np.tile([42.71, 57.29], (20, 1)))
    np.testing.assert_array_equal(data.y, e.spot_counts)


@pytest.fixture(scope="module")
def qntmap_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("epma")
    # --select 1,3: "no background" and "background" (the drift variants add ~25 s)
    assert jaxinv.cli.main(["run", "epma-mapping", "--out", str(out), "--quiet", "--n-starts", "4",
                            "--select", "1,3"]) == 0
    return out


def test_cli_reproduces_the_qntmap_truth_within_posterior_bands(qntmap_run):
    summary = json.loads((qntmap_run / "summary.json").read_text())
    # the data have no background: the free energy says so
    assert [m["name"] for m in summary["models"]] == ["no background", "background"]
    assert summary["selected"] == "no background"
    for name in ("epma_maps.nc", "epma_concentration.png", "epma_phases.png", "epma_phases.txt"):
        assert (qntmap_run / name).stat().st_size > 0
    ds = xr.open_dataset(qntmap_run / "epma_maps.nc", engine="h5netcdf")
    e = em.default_data().x
    is_qtz = e.counts[..., 1] == 0  # 1000 quartz, 9000 olivine pixels (data README)
    truth = np.where(is_qtz[..., None], QNTMAP_TRUTH["Qtz"], QNTMAP_TRUTH["Ol"])
    lo, hi = ds["concentration_lower"].values, ds["concentration_upper"].values
    inside = (lo <= truth) & (truth <= hi)
    # pixels share one calibration, so their misses are correlated; still near nominal
    assert inside.mean() > 0.9
    assert np.all(inside[is_qtz][:, 1])  # zero MgO: [0, upper limit] bands
    # every pixel pure: phase fractions near 0 or 1
    fq = ds["phase_fraction_mean"].sel(phase="Qtz").values
    assert np.mean(np.abs(fq - is_qtz)) < 0.02
    total = ds["total_mean"].values
    assert abs(np.mean(total) - 100.0) < 0.5
    # phase-level posterior (map-wide mean composition): the truth inside its 95 % band
    lines = [ln for ln in (qntmap_run / "epma_phases.txt").read_text().splitlines() if not ln.startswith("#")]
    assert sorted(ln.split(":")[0] for ln in lines) == sorted(QNTMAP_TRUTH)
    for line in lines:
        phase, text = line.split(":")
        for part, wt in zip(text.split(","), QNTMAP_TRUTH[phase]):
            lo, hi = (float(v) for v in part.split("(")[1].rstrip(")").split(" to "))
            assert lo <= wt <= hi, (phase, part)
    ds.close()


def test_phase_composition_bands_contain_the_qntmap_truth():
    data = em.default_data()
    e = data.x
    model = em.calibration_model(e, background=False, drift=False)
    result = ji.map_estimate(model.condition(data.y), jax.random.key(0), n_starts=4)
    q = em.quantify(e, em.calibration_draws(result, jax.random.key(1)), jax.random.key(2))
    phases = q.phase_composition()
    for name, wt in QNTMAP_TRUTH.items():
        band = phases[name]
        assert np.all(band["lower"] <= wt) and np.all(np.asarray(wt) <= band["upper"]), (name, band)
        assert np.all(band["sd"] < 0.5)


@pytest.fixture(scope="module")
def synthetic():
    e, truth = em.synthetic_map(seed=3, shape=(40, 40), n_grains=14)
    data = em.as_dataset(e)
    model = em.calibration_model(e, background=True, drift=True)
    result = ji.map_estimate(model.condition(data.y), jax.random.key(0), n_starts=4)
    q = em.quantify(e, em.calibration_draws(result, jax.random.key(1)), jax.random.key(2), chunk_size=512)
    return e, truth, q, result


def test_synthetic_concentrations_within_credible_intervals(synthetic):
    """>= 93 % of the (pixel, oxide) concentrations inside their 95 % intervals.  All the
    pixels of a phase share one calibration draw's error, so one map's coverage of one
    oxide scatters around 95 % by more than pixel noise would (measured 0.92-0.99 over
    seeds 0, 3, 5, 7): per oxide the floor is 0.90."""
    e, truth, q, _ = synthetic
    _assert_coverage(e, truth, q, overall=0.93, per_oxide=0.90, totals=0.93)


def _assert_coverage(e, truth, q, overall, per_oxide, totals):
    c = truth["concentration"]
    inside = (q.lower <= c) & (c <= q.upper)
    assert inside.mean() >= overall
    for oxide, frac in zip(e.oxides, inside.mean(axis=(0, 1))):
        assert frac >= per_oxide, (oxide, frac)
    total = c.sum(-1)
    assert np.mean((q.total_lower <= total) & (total <= q.total_upper)) >= totals


def test_smoothed_maps_are_closer_to_the_truth_and_keep_their_coverage(synthetic):
    """smooth=True (a Gaussian Markov random field per phase and element, its smoothness
    by maximum marginal likelihood).  Measured over seeds 0, 3, 5 and 7: every oxide's RMSE
    to the truth falls to 0.43-0.77 of the unsmoothed one; the 95 % intervals hold
    0.933-0.957 of the pixel-oxide pairs, 0.85-1.00 per oxide (once the counting noise is
    pooled, the calibration error that all the pixels of a phase share dominates one
    oxide's misses), and 0.90-1.00 of the totals."""
    e, truth, q, result = synthetic
    s = em.quantify(e, em.calibration_draws(result, jax.random.key(1)), jax.random.key(2), chunk_size=512,
                    smooth=True)
    c = truth["concentration"]
    rmse = {name: np.sqrt(np.mean((m.mean - c) ** 2, axis=(0, 1))) for name, m in (("raw", q), ("smooth", s))}
    assert np.all(rmse["smooth"] < 0.8 * rmse["raw"]), rmse
    _assert_coverage(e, truth, s, overall=0.93, per_oxide=0.84, totals=0.90)
    info = s.meta["smoothing"]
    assert set(info) == set(e.phases)
    for fields in info.values():
        assert fields["pixels"] > 50
        smoothed = [o for o in e.oxides if "smoothing_length" in fields[o]]
        assert all(fields[o]["converged"] and 0 < fields[o]["smoothing_length"] <= 20.0 + 1e-9 for o in smoothed)
        # an element the phase hardly counts keeps its per-pixel posterior
        for o in set(e.oxides) - set(smoothed):
            assert fields[o]["mean_counts"] < em.MIN_SMOOTH_COUNTS
    assert sum("smoothing_length" in fields[o] for fields in info.values() for o in e.oxides) >= 10
    # the phase fractions are not smoothed
    np.testing.assert_allclose(s.fraction_mean, q.fraction_mean)


def test_synthetic_phase_fractions_on_mixed_pixels(synthetic):
    _, truth, q, _ = synthetic
    f = truth["phase_fraction"]
    mixed = f.max(-1) < 0.95
    assert mixed.sum() > 50  # grain boundaries give mixed pixels
    error = np.abs(q.fraction_mean - f).max(-1)[mixed]
    assert np.mean(error <= 0.1) >= 0.9 and np.median(error) < 0.06
    # cluster memberships name the majority phase
    assert np.mean(q.membership.argmax(-1) == f.argmax(-1)) > 0.95


def test_synthetic_calibration_recovers_sensitivities(synthetic):
    e, truth, _, result = synthetic
    beta = np.asarray(result.params["beta"])
    sd = np.asarray(result.laplace.standard_errors["beta"])
    # identified entries (the phase contains the element): within 4 sd of the truth
    idx = e.spot_phase_index
    present = np.stack([e.spot_wt[idx == p].min(0) > 1.0 for p in range(len(e.phases))])
    z = (beta - truth["beta"]) / sd
    assert np.all(np.abs(z[present]) < 4.0), z


def test_chunking_does_not_change_the_maps():
    e, _ = em.synthetic_map(seed=1, shape=(9, 11), n_grains=4, spots_per_phase=3)
    draws = {"beta": np.tile(np.full((len(e.phases), 6), 4.0), (16, 1, 1)), "background": np.ones((16, 6))}
    a = em.quantify(e, draws, jax.random.key(0), chunk_size=1000)
    b = em.quantify(e, draws, jax.random.key(0), chunk_size=7)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10)
    np.testing.assert_allclose(a.upper, b.upper, rtol=1e-10)
    np.testing.assert_allclose(a.phase_draws, b.phase_draws, rtol=1e-10)


def test_gamma_draws_follow_the_gamma_law():
    shapes = np.array([1.0, 2.0, 7.0, 60.0, 4000.0])
    x = np.asarray(em.gamma_draws(jax.random.key(0), shapes, 20000))
    for k, a in enumerate(shapes):
        assert st.kstest(x[:, k], st.gamma(a).cdf).pvalue > 1e-3, a


def test_intervals_highest_density_and_detection_limit():
    z = jax.random.normal(jax.random.key(0), (40000,))
    lo, hi = em.hdi(z)
    assert abs(float(lo) + 1.96) < 0.05 and abs(float(hi) - 1.96) < 0.05
    x = jax.random.exponential(jax.random.key(1), (40000,))
    lo, hi = em.interval(x, True, 0.0)
    assert float(lo) == 0.0 and abs(float(hi) - st.expon.ppf(0.95)) < 0.1
    lo, hi = em.interval(x, False, 0.0)
    assert float(lo) > 0.0


# -- bad input ---------------------------------------------------------------------------
def _copy_example(tmp_path) -> Path:
    src = Path(str(em.files("problems") / "data" / em.DEFAULT_FOLDER))
    dst = tmp_path / "export"
    shutil.copytree(src, dst)
    return dst


def _map_kwargs(**change):
    e = em.default_data().x
    kw = {"counts": e.counts, "elements": e.elements, "oxides": e.oxides, "dwell_time": e.dwell_time,
          "probe_current": e.probe_current, "dead_time": e.dead_time, "spot_pixel": e.spot_pixel,
          "spot_wt": e.spot_wt, "spot_phase": e.spot_phase}
    kw.update(change)
    return kw


def test_bad_inputs_raise_one_clear_error_each(tmp_path):
    e = em.default_data().x
    # maps of different shapes
    folder = _copy_example(tmp_path)
    cnd = folder / ".map" / "1" / "2.cnd"
    cnd.write_text(cnd.read_text().replace("$XM_POINTS          100 100", "$XM_POINTS          100 99"))
    rows = (folder / ".map" / "1" / "2_map.txt").read_text().splitlines()
    (folder / ".map" / "1" / "2_map.txt").write_text("\n".join(" ".join(r.split()[:99]) for r in rows))
    with pytest.raises(ValueError, match="different shapes"):
        em.read_jeol(folder)
    # spot coordinates outside the map
    pixel = e.spot_pixel.copy()
    pixel[3] = (100, 5)
    with pytest.raises(ValueError, match=r"1 spot\(s\) lie outside the 100 x 100 map.*\(4, \(100, 5\)\)"):
        em.EpmaMap(**_map_kwargs(spot_pixel=pixel))
    # negative counts
    counts = e.counts.copy()
    counts[2, 3, 1] = -4
    with pytest.raises(ValueError, match=r"non-negative.*pixel \(2, 3\), element Mg"):
        em.EpmaMap(**_map_kwargs(counts=counts))
    # missing element in the spots: a NaN, or a whole element absent from the .qnt files
    wt = e.spot_wt.copy()
    wt[6, 1] = np.nan
    with pytest.raises(ValueError, match="spot 7 has no MgO value"):
        em.EpmaMap(**_map_kwargs(spot_wt=wt))
    folder2 = _copy_example(tmp_path / "b")
    elint = folder2 / ".qnt" / "elint.qnt"
    elint.write_text("\n".join(r.replace("Si Mg", "Si Al") for r in elint.read_text().splitlines()))
    with pytest.raises(ValueError, match=r"element\(s\) \['Mg'\] of the map are missing in the spot analyses"):
        em.read_jeol(folder2)
    # empty map file, and a folder that is not an export
    folder3 = _copy_example(tmp_path / "c")
    (folder3 / ".map" / "1" / "1_map.txt").write_text("")
    with pytest.raises(ValueError, match="1_map.txt is empty"):
        em.read_jeol(folder3)
    with pytest.raises(ValueError, match="has no .map folder"):
        em.read_jeol(tmp_path)
    # NaN counts, wrong shape of spot compositions
    counts = e.counts.copy()
    counts[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        em.EpmaMap(**_map_kwargs(counts=counts))
    with pytest.raises(ValueError, match=r"spot_wt must have shape \(40, 2\)"):
        em.EpmaMap(**_map_kwargs(spot_wt=e.spot_wt[:, :1]))


def test_single_phase_map():
    """One phase (no additive-log-ratio coordinates): every pixel is all of it, and the
    concentrations still invert the counts."""
    e, truth = em.synthetic_map(seed=2, shape=(6, 5), n_grains=1, spots_per_phase=4,
                                phases={"Qtz": em.SYNTHETIC_PHASES["Qtz"]})
    assert e.phases == ("Qtz",)
    draws = {"beta": np.tile(truth["beta"], (64, 1, 1)), "background": np.tile(truth["background"], (64, 1)),
             "drift": np.full((64, 1), truth["drift"][0])}
    q = em.quantify(e, draws, jax.random.key(0))
    np.testing.assert_array_equal(q.fraction_mean, 1.0)
    assert np.mean((q.lower <= truth["concentration"]) & (truth["concentration"] <= q.upper)) > 0.85


def test_reader_steps_labels_and_duplicate_spots(tmp_path):
    """Non-square steps, phase labels with spaces, and two spots on one pixel."""
    folder = _copy_example(tmp_path)
    for k in (1, 2):
        cnd = folder / ".map" / "1" / f"{k}.cnd"
        cnd.write_text(cnd.read_text().replace("1000 1000", "1000 2000"))
    stg = folder / ".qnt" / "stg.qnt"
    rows = [r.split() for r in stg.read_text().splitlines()]
    rows = [r[:9] + (["Grt", "rim"] if r[-1] == "Ol" else r[9:]) for r in rows]
    stg.write_text("\n".join(" ".join(r) for r in rows))
    e = em.read_jeol(folder)
    assert e.phases == ("Qtz", "Grt rim")
    # y pixel = y_mm * 1000 / 2000: spot 1 at (22, 82) mm
    assert tuple(e.spot_pixel[0]) == (22, 41)
    rows[1][4:6] = rows[0][4:6]  # spot 2 on spot 1's pixel
    stg.write_text("\n".join(" ".join(r) for r in rows))
    with pytest.warns(UserWarning, match=r"spot\(s\) \[2\] fall on the pixel of an earlier spot"):
        e = em.read_jeol(folder)
    assert len(e.spot_phase) == 39
    with pytest.raises(ValueError, match="several spots on one pixel"):
        em.EpmaMap(**_map_kwargs(spot_pixel=np.vstack([e.spot_pixel[:1], e.spot_pixel[:39]]),
                                 spot_wt=em.default_data().x.spot_wt, spot_phase=em.default_data().x.spot_phase))


def test_negative_binomial_is_stable_near_the_poisson_limit():
    n = np.array([9990.0, 10000.0, 10010.0])
    nb = np.asarray(em._negbin_log_prob(n, 10000.0, 1e-6))
    np.testing.assert_allclose(nb, st.poisson(10000.0).logpmf(n), rtol=1e-10)
    r = 50.0  # clearly over-dispersed: scipy's nbinom(r, p) with mean 10, variance 12
    got = np.asarray(em._negbin_log_prob(np.arange(30.0), 10.0, 10.0**2 / r))
    np.testing.assert_allclose(got, st.nbinom(r, r / (r + 10.0)).logpmf(np.arange(30)), rtol=1e-10)
