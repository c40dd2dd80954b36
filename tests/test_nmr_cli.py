"""The NMR problem and the command line, end to end."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.cli import main
from jaxinv.physics import InversionRecovery, SaturationRecovery, StretchedExponential
from problems import nmr_relaxation as nmr
from conftest import SHARED_DATA


def test_recovery_formulas():
    t = jnp.array([0.0, 0.5, 2.0])
    p = {"inversion_efficiency": 0.9, "equilibrium_magnetization": 2.0, "relaxation_time": 1.0}
    np.testing.assert_allclose(InversionRecovery(t)(p), 2.0 * (1 - 1.8 * np.exp(-np.asarray(t))), rtol=1e-12)
    p2 = {"equilibrium_magnetization": 1.0, "relaxation_time": jnp.array([0.5, 2.0]), "weight": jnp.array([0.3, 0.7]),
          "stretch": 0.8}
    expect = 1 - (0.3 * np.exp(-(np.asarray(t) / 0.5) ** 0.8) + 0.7 * np.exp(-(np.asarray(t) / 2.0) ** 0.8))
    np.testing.assert_allclose(SaturationRecovery(t, 2, stretched=True)(p2), expect, rtol=1e-12)
    s = {"amplitude": 1.0, "time_constant": 1.0, "stretch": 0.5, "offset": 0.0}
    np.testing.assert_allclose(StretchedExponential(t)(s), np.exp(-np.sqrt(np.asarray(t))), rtol=1e-12)


def test_default_data_is_the_real_inversion_recovery():
    data = nmr.default_data()
    np.testing.assert_allclose(data.x[[0, -1]], [0.020, 30.0])
    assert data.y.shape == (8,) and data.y[0] < -0.7 and data.y[-1] > 0.95  # inverted, then recovered
    assert np.all(data.sigma < 0.01)


def test_read_bruker_agrees_across_the_six_experiments():
    """All six shared experiments load; zero crossing (~T1 ln 2) lies between 0.46 and 3.7 s."""
    for exp in ("304", "28", "29", "30", "31", "32"):
        data = nmr.load_data(SHARED_DATA / "dnplab_odnp_t1" / exp)
        crossing = np.argmax(data.y > 0)
        assert 0.45 < data.x[crossing - 1] and data.x[crossing] < 3.8


def test_cli_problems_lists_nmr(capsys):
    assert main(["problems"]) == 0
    assert "nmr-relaxation" in capsys.readouterr().out


def test_cli_run_default_data(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "nmr-relaxation", "--out", str(out), "--n-starts", "8", "--draws", "500", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "selected" in text and "relaxation_time" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["problem"] == "nmr-relaxation" and summary["method"] == "laplace"
    names = [m["name"] for m in summary["models"]]
    assert names == ["single", "stretched", "K=2"] and summary["selected"] in names
    energies = {m["name"]: m["free_energy"] for m in summary["models"]}
    assert energies["K=2"] > energies["single"] + 1.0  # the over-complete model loses on the real series
    single = summary["models"][0]
    # T1 of water with 100 uM spin label, microwaves off: about 2.1 s
    assert 1.9 < single["map"]["relaxation_time"] < 2.4
    assert 0 < single["map_se"]["relaxation_time"] < 0.2
    assert set(single["posterior"]["relaxation_time"]) == {"mean", "sd", "q05", "q95"}
    assert {"rhat_max", "ess_min", "divergences"} <= set(single["diagnostics"])
    assert single["free_energy_caveats"] == []  # converged, interior mode
    for f in ("posterior.nc", "fit.png", "free_energy.png"):
        assert (out / f).stat().st_size > 0


def test_cli_run_user_csv_and_bad_input(tmp_path, capsys):
    tau = np.geomspace(0.01, 20, 8)  # as many points as the default data: compiled programs reused
    y = 1 - 1.8 * np.exp(-tau / 0.8) + 0.003 * np.cos(5 * tau)
    csv = tmp_path / "curve.csv"
    csv.write_text("t,y\n" + "\n".join(f"{a},{b}" for a, b in zip(tau, y)))
    out = tmp_path / "csv"
    assert main(["run", "nmr-relaxation", "--data", str(csv), "--out", str(out), "--n-starts", "8",
                 "--draws", "200", "--select", "1", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == ["single", "stretched"]
    assert summary["models"][0]["map"]["relaxation_time"] == pytest.approx(0.8, rel=0.02)
    capsys.readouterr()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["run", "nmr-relaxation", "--data", str(empty), "--out", str(out)]) == 2
    assert "empty" in capsys.readouterr().err
    header_only = tmp_path / "header.csv"
    header_only.write_text("t,y\n# nothing measured\n")
    assert main(["run", "nmr-relaxation", "--data", str(header_only), "--out", str(out)]) == 2
    assert "no data rows" in capsys.readouterr().err
    nan = tmp_path / "nan.csv"
    nan.write_text("t,y\n0.1,1\n0.2,nan\n0.3,2\n")
    assert main(["run", "nmr-relaxation", "--data", str(nan), "--out", str(out)]) == 2
    assert "non-finite" in capsys.readouterr().err
    assert main(["run", "no-such-problem"]) == 2
    assert "unknown problem" in capsys.readouterr().err
    assert main(["run", "nmr-relaxation", "--data", str(csv), "--option", "noise=spectral", "--out", str(out)]) == 2
    assert "sigma" in capsys.readouterr().err  # the CSV has no sigma column
    assert main(["run", "nmr-relaxation", "--data", str(csv), "--option", "colour=red", "--out", str(out)]) == 2
    assert "does not take" in capsys.readouterr().err
