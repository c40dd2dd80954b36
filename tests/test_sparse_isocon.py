"""Sparse isocon (problems/sparse_isocon.py): the immobile set and the mass changes of a
synthetic alteration series with known truth, Grant's isocon on a given set, the free energy
over candidate sets, the command line, and bad input."""

import json

import jax
import numpy as np
import pytest

from jaxinv.cli import main
from problems import sparse_isocon as si

TRUE_IMMOBILE = ["TiO2", "Al2O3", "Zr", "Y", "Nb"]


def _immobile(fit, data):
    return [e for e, m in zip(data.elements, fit.immobile) if m]


def test_immobile_set_exact_and_mass_ratios_within_two_percent():
    data = si.default_data()
    assert data.meta["truth"]["immobile"] == TRUE_IMMOBILE          # 5 of 17 elements
    fit = si.sparse_isocon(data.x, q=0.5)
    assert _immobile(fit, data.x) == TRUE_IMMOBILE
    np.testing.assert_allclose(fit.mass_ratio, si.true_mass_ratio(), rtol=0.02)
    # on its set, the refit is Grant's isocon (weighted mean log ratio of the immobile elements)
    np.testing.assert_allclose(fit.mass_ratio, si.grant_isocon(data.x, TRUE_IMMOBILE), rtol=1e-10)
    # the convex group lasso (q = 1) cannot find the frame when the immobile elements are a
    # minority by weight: why the sparsity exponent is below 1
    assert _immobile(si.sparse_isocon(data.x, q=1.0), data.x) != TRUE_IMMOBILE


def test_fresh_replicates_recover_the_immobile_set():
    for seed in range(5):
        data = si.simulate(jax.random.key(100 + seed))
        fit = si.sparse_isocon(data, q=0.5)
        assert _immobile(fit, data) == TRUE_IMMOBILE, seed
        assert np.all(np.abs(np.log(fit.mass_ratio / si.true_mass_ratio())) < 0.05)


def test_cli_selects_the_true_set_by_free_energy_with_honest_errors(tmp_path, capsys):
    """Candidate sets from the path plus a hand-picked wrong set (Ba is mobile); the free
    energy prefers the true set, whose posterior covers the true mass ratios."""
    out = tmp_path / "run"
    assert main(["run", "sparse-isocon", "--out", str(out), "--option", "n_strengths=3",
                 "--option", "immobile=TiO2,Al2O3,Zr,Y,Nb,Ba", "--n-starts", "4", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    names = [m["name"] for m in summary["models"]]
    assert "immobile: TiO2,Al2O3,Zr,Y,Nb,Ba" in names and len(names) >= 3
    assert summary["selected"] == "immobile: " + ",".join(TRUE_IMMOBILE)
    chosen = next(m for m in summary["models"] if m["name"] == summary["selected"])
    log_ratio = np.asarray(chosen["map"]["log_mass_ratio"])
    se = np.asarray(chosen["map_se"]["log_mass_ratio"])
    truth = np.log(si.true_mass_ratio())
    assert np.all(np.abs(log_ratio - truth) < 3 * se) and np.all(se < 0.02)
    for f in ("sparse_isocon_transfers.png", "sparse_isocon_diagram.png", "sparse_isocon_free_energy.png"):
        assert (out / f).stat().st_size > 0


def test_bad_input_is_named(tmp_path):
    data = si.default_data().x
    with pytest.raises(ValueError, match="sparsity exponent"):
        si.sparse_isocon(data, q=1.5)
    with pytest.raises(ValueError, match="unknown element"):
        si.isocon_model(data, ["TiO2", "Unobtainium"])
    bad = tmp_path / "bad.csv"
    bad.write_text("sample,SiO2,TiO2,Al2O3\nreference,60,0.5,15\nrelative_error,0.01,0.02,0.01\n")
    with pytest.raises(ValueError, match="at least one altered sample"):
        si.load_data(bad)
    bad.write_text("sample,SiO2,TiO2,Al2O3\nreference,60,0.5,15\na,61,-0.5,14\nrelative_error,0.01,0.02,0.01\n")
    with pytest.raises(ValueError, match="positive and finite"):
        si.load_data(bad)
    bad.write_text("sample,SiO2,TiO2,Al2O3\nreference,60,0.5\n")
    with pytest.raises(ValueError, match="row 2 has 3 columns"):
        si.load_data(bad)
    with pytest.raises(ValueError, match="no such file"):
        si.load_data(tmp_path / "missing.csv")
