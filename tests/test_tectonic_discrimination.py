"""Tectonic discrimination (problems/tectonic_discrimination.py): cross-validated sparse
multinomial logistic regression on synthetic basalts recovers the settings and their
geochemical signatures; bad input."""

import json

import numpy as np
import pytest

from jaxinv.cli import main
from problems import tectonic_discrimination as td


def test_cli_accuracy_and_geochemical_signatures(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "tectonic-discrimination", "--out", str(out), "--quiet"]) == 0
    assert "held-out accuracy" in capsys.readouterr().out
    s = json.loads((out / "summary.json").read_text())
    assert s["settings"] == ["N-MORB", "E-MORB", "OIB", "arc basalt"]
    # overlapping classes: well above chance (0.25), short of perfect
    assert 0.8 < s["cv_accuracy"] < 0.97
    B = np.asarray(s["coefficients"])                  # (elements, settings)
    el = s["elements"].index
    arc, oib = s["settings"].index("arc basalt"), s["settings"].index("OIB")
    assert B[el("Nb"), arc] < 0 or B[el("Ta"), arc] < 0    # the subduction signature: Nb-Ta depletion
    assert B[el("Ba"), arc] > 0 or B[el("Rb"), arc] > 0    # and large-ion enrichment
    assert max(B[el(e), oib] for e in ("Nb", "Ta", "Th", "La")) > 0
    confusion = np.asarray(s["confusion"])
    recall = np.diag(confusion) / confusion.sum(axis=1)
    assert np.argmin(recall) == s["settings"].index("E-MORB")   # the intermediate setting is hardest
    assert (out / "tectonic_discrimination.png").stat().st_size > 0


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("setting,Nb,Zr\n" + "\n".join(f"{'A' if i % 2 else 'B'},{i + 1},0" for i in range(12)))
    with pytest.raises(ValueError, match="positive and finite"):
        td.load_data(bad)
    bad.write_text("setting,Nb,Zr\n" + "\n".join(f"A,{i + 1},2" for i in range(12)))
    with pytest.raises(ValueError, match="at least 2 settings"):
        td.load_data(bad)
    bad.write_text("setting,Nb,Zr\nA,1\n")
    with pytest.raises(ValueError, match="row 2 has 2 columns"):
        td.load_data(bad)
