"""SMC and replica exchange reproduce the exact free energy of the solvable linear-regression
problem (Katakami et al. 2024) within 0.05 nats, and choose the right model; the CLI runs them.
The replica-exchange (HMC local moves) 0.05-nat check is in the slow set; by default REMC's TI
and bridge estimates are checked within 0.05 nats on a conjugate model with the default slice
moves (tests/test_evidence.py), and the CLI REMC run here against the exact values."""

import json

import jax
import pytest

import jaxinv as ji
from jaxinv.cli import main
from problems import linear_regression as lr


@pytest.fixture(scope="module")
def problem():
    data = lr.default_data()
    exact = lr.exact_free_energies(data.x, data.y)
    return data, lr.models(data), exact


def test_smc_free_energy_within_005_nats_of_exact(problem):
    data, models, exact = problem
    # two parameters: random-walk moves with the particle covariance are the cheap inner kernel
    sel = ji.select(models, data.y, jax.random.key(0), method="smc", kernel="rwm", n_particles=1000, n_runs=16,
                    target_ess=0.8)
    for name, f in sel.free_energies.items():
        assert abs(f - exact[name]) < 0.05, (name, f, exact[name], float(sel.results[name].free_energy_se))
    assert sel.selected == lr.exact_selection(data.x, data.y)


@pytest.mark.slow
def test_remc_free_energy_within_005_nats_of_exact(problem):
    """Slow (~40 s on 2 cores).  Fast twin: tests/test_evidence.py::
    test_remc_free_energy_ti_and_bridge_agree_with_analytic (TI and bridge within 0.05 nats of
    a conjugate Gaussian model's exact evidence, and of each other within their errors) -- with
    the default slice local moves and N(0, 1)-scale priors; this test pins HMC moves and has
    N(0, 10^2) priors, where TI needs 32 rungs."""
    data, models, exact = problem
    # 32 rungs: with N(0, 10^2) priors the integrand of TI swings by 10^4 nats between beta = 0
    # and the first rung; 16 rungs leave a ~0.1 nat quadrature bias in TI (bridge is unaffected)
    # HMC local moves, as measured (the default slice moves are checked through a funnel in
    # test_evidence.py and by the CLI test below; here they would double the time)
    sel = ji.select(models, data.y, jax.random.key(1), method="remc", n_chains=4, n_replicas=32, n_tune=500,
                    n_draws=3000, local_kernel="hmc")
    for name, res in sel.results.items():
        assert abs(float(res.free_energy) - exact[name]) < 0.05, (name, float(res.free_energy), exact[name])
        ti, ti_se = -float(res.stats["log_evidence_ti"]), float(res.stats["log_evidence_ti_se"])
        assert abs(ti - exact[name]) < 0.05
        assert abs(ti - float(res.free_energy)) < 3 * (ti_se + float(res.free_energy_se))
    assert sel.selected == lr.exact_selection(data.x, data.y)


def test_cli_remc_run_writes_free_energies_with_errors(tmp_path, problem):
    data, _, exact = problem
    out = tmp_path / "remc"
    assert main(["run", "linear-regression", "--method", "remc", "--draws", "600", "--tune", "300",
                 "--out", str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "remc" and summary["free_energy_method"] == "remc"
    for m in summary["models"]:
        assert m["free_energy_se"] > 0
        assert abs(m["free_energy"] - exact[m["name"]]) < 5 * m["free_energy_se"] + 0.05
        assert m["map"] == {} and set(m["posterior"]) == {"a", "b"} if m["name"] == "y=ax+b" else {"a"}
        assert m["diagnostics"]["rhat_max"] < 1.05
    for f in ("posterior.nc", "fit.png", "free_energy.png"):
        assert (out / f).stat().st_size > 0
