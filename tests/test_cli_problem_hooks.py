"""The command line honours a problem's own defaults: ``Problem.default_method`` (the method
when ``--method`` is not given), ``Problem.fit_options`` (MAP options such as starting
points), NUTS chains started from the Laplace draws (``--dense-mass``: a dense metric); a single model is "selected" even
when its Laplace free energy is NaN."""

import dataclasses
import json

import jax
import numpy as np
import pytest

import jaxinv as ji
import jaxinv.batching
import jaxinv.cli
import problems.linear_regression as lr
from jaxinv.selection import Selection


def test_single_model_is_selected_even_with_nan_free_energy():
    one = Selection(results={"only": ji.Result(params={"a": np.zeros(1)}, method="map", sample_dims=0)})
    assert np.isnan(one.free_energies["only"])
    assert one.selected == "only"
    two = Selection(results={k: ji.Result(params={"a": np.zeros(1)}, method="map", sample_dims=0) for k in "ab"})
    with pytest.raises(ValueError, match="no model has a finite free energy"):
        two.selected


def test_cli_uses_problem_default_method_and_fit_options(tmp_path, monkeypatch):
    seen = {}

    def fit_options(data):
        seen["called"] = True
        return {"init": {"a": 1.0, "b": 0.2}}

    problem = dataclasses.replace(lr.problem, default_method="nuts", fit_options=fit_options)
    monkeypatch.setattr(jaxinv.cli, "load_problem", lambda name: problem)
    out = tmp_path / "run"
    assert jaxinv.cli.main(["run", "linear-regression", "--select", "2", "--out", str(out), "--draws", "400",
                            "--tune", "200", "--dense-mass", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "nuts" and seen["called"]
    (model,) = summary["models"]
    # NUTS draws (4 chains x 100) of the conjugate posterior: a ~ 1, b ~ 0.2 (simulated truth)
    assert model["posterior"]["a"]["mean"] == pytest.approx(1.0, abs=0.15)
    draws = ji.Result.load(out / "posterior.nc")
    assert draws.params["a"].shape[:2] == (4, 100)
    # --dense-mass: each chain adapted a full 2 x 2 inverse mass matrix (a, b are correlated)
    mass = np.asarray(draws.stats["inverse_mass_matrix"])
    assert mass.shape == (4, 2, 2) and np.all(np.abs(mass[:, 0, 1]) > 0)
    # an explicit --method still wins
    out2 = tmp_path / "run2"
    assert jaxinv.cli.main(["run", "linear-regression", "--select", "2", "--out", str(out2), "--method", "laplace",
                            "--quiet"]) == 0
    assert json.loads((out2 / "summary.json").read_text())["method"] == "laplace"


def test_chain_starts_come_from_the_laplace_approximation():
    data = lr.default_data()
    post = next(iter(lr.models(data, n_components=[2]).values())).condition(data.y)
    fit = ji.map_estimate(post, jax.random.key(0), n_starts=4)
    starts = jaxinv.cli._chain_starts(fit, jax.random.key(1), 4)
    assert starts.shape == (4, post.dim)
    # within 6 Laplace standard deviations of the mode
    sd = np.sqrt(np.diag(np.asarray(fit.laplace.covariance)))
    assert np.all(np.abs(np.asarray(starts) - np.asarray(fit.laplace.mode)) < 6 * sd)
    no_laplace = ji.Result(params=fit.params, method="map", sample_dims=0)
    assert jaxinv.cli._chain_starts(no_laplace, jax.random.key(1), 4) is None


def test_options_named_by_figures_go_to_figures(tmp_path, monkeypatch, capsys):
    seen = {}

    def figures(selection, data, out_dir, colour="grey"):
        seen["colour"] = colour
        return []

    problem = dataclasses.replace(lr.problem, figures=figures)
    monkeypatch.setattr(jaxinv.cli, "load_problem", lambda name: problem)
    assert jaxinv.cli.main(["run", "linear-regression", "--select", "1", "--out", str(tmp_path / "a"), "--quiet",
                            "--option", "colour=red"]) == 0
    assert seen["colour"] == "red"
    assert jaxinv.cli.main(["run", "linear-regression", "--select", "1", "--out", str(tmp_path / "b"), "--quiet",
                            "--option", "shade=red"]) != 0
    assert "does not take these options" in capsys.readouterr().err
    assert jaxinv.cli._parse_options(["a=false", "b=TRUE", "c=3", "d=spectral"]) == {
        "a": False, "b": True, "c": 3, "d": "spectral"}
    # a key that models and figures both take is refused, not silently given to one of them
    clash = dataclasses.replace(lr.problem, figures=lambda selection, data, out_dir, n_components=None: [])
    monkeypatch.setattr(jaxinv.cli, "load_problem", lambda name: clash)
    assert jaxinv.cli.main(["run", "linear-regression", "--out", str(tmp_path / "c"), "--quiet",
                            "--option", "n_components=[1]"]) != 0
    assert "taken by both its models and its figures" in capsys.readouterr().err


def test_batch_cli_passes_dense_mass_to_the_samplers(tmp_path, monkeypatch, capsys):
    import problems.nmr_relaxation as nmr

    class Stop(BaseException):
        pass

    seen = {}

    def fake_batch(engine, model, Y, key, **options):
        seen.update(options)
        raise Stop

    monkeypatch.setattr(jaxinv.batching, "batch", fake_batch)  # imported by the command when it runs
    y = nmr.default_data().y
    np.savetxt(tmp_path / "curves.csv", np.stack([y, y]), delimiter=",")
    args = ["batch", "nmr-relaxation", "--model", "single", "--dense-mass", "--data", str(tmp_path / "curves.csv"),
            "--quiet"]
    for method in ("hmc", "nuts"):
        seen.clear()
        with pytest.raises(Stop):
            jaxinv.cli.main([*args, "--method", method, "--out", str(tmp_path / method)])
        assert seen["method"] == method and seen["dense_mass"] is True
    # a method without a mass matrix: an error, not a silently ignored option
    assert jaxinv.cli.main([*args, "--method", "smc", "--out", str(tmp_path / "smc")]) == 2
    assert "--dense-mass applies to --method hmc or nuts, not smc" in capsys.readouterr().err
    assert jaxinv.cli.main(["run", "nmr-relaxation", "--method", "smc", "--dense-mass", "--quiet",
                            "--out", str(tmp_path / "run")]) == 2
    assert "--dense-mass applies to --method nuts, not smc" in capsys.readouterr().err
