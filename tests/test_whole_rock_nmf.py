"""Whole-rock NMF + k-means (problems/whole_rock_nmf.py) on synthetic metapelites with known
end-members: the rank by cross-validation, the end-members, the grade component; the command
line of an estimator problem (Problem.run); bad input."""

import json

import jax
import numpy as np
import pytest

from jaxinv.cli import main
from problems import whole_rock_nmf as wr


def test_cli_recovers_rank_end_members_and_grade_component(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "whole-rock-nmf", "--out", str(out), "--option", "ranks=(3, 4, 5)", "--quiet"]) == 0
    assert "grade component" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "estimator" and summary["rank"] == 4        # the true number of end-members
    errors = dict(zip(summary["ranks"], summary["cv_error"]))
    assert errors[4] < 0.2 * errors[3]                                      # rank 3 underfits clearly
    _, truth = wr.simulate(jax.random.key(wr.DEFAULT_SEED))
    perm, cos = wr.match_end_members(np.array(summary["end_members"]), truth["end_members"])
    # NMF is unique only up to the rotations the non-negativity allows: end-members sit at the
    # edge of the data cone, so they match the truth closely but not exactly
    assert np.all(cos > 0.9) and np.mean(cos) > 0.95
    grade = summary["grade_component"]
    assert perm[grade["end_member"] - 1] == 3                                 # the garnet-like member
    assert grade["spearman_rho"] > 0.9
    assert sum(summary["cluster_sizes"]) == 240 and min(summary["cluster_sizes"]) > 0
    for f in ("whole_rock_end_members.png", "whole_rock_loadings.png", "whole_rock_rank_cv.png"):
        assert (out / f).stat().st_size > 0
    # an estimator problem has no models to choose a method for
    assert main(["run", "whole-rock-nmf", "--out", str(out), "--method", "nuts", "--quiet"]) == 2
    assert "--method" in capsys.readouterr().err
    assert main(["run", "whole-rock-nmf", "--out", str(out), "--select", "1..3", "--quiet"]) == 2
    assert "--select do not apply" in capsys.readouterr().err
    # nor models for a batch
    assert main(["batch", "whole-rock-nmf", "--data", str(out), "--out", str(out / "b"), "--quiet"]) == 2
    assert "runs its own estimator" in capsys.readouterr().err


def test_bad_input_is_named(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sample,SiO2,Al2O3\n" + "\n".join(f"s{i},60,-1" for i in range(12)))
    with pytest.raises(ValueError, match="non-negative"):
        wr.load_data(bad)
    bad.write_text("sample,SiO2,Al2O3\n" + "\n".join(f"s{i},60,15" for i in range(3)))
    with pytest.raises(ValueError, match="at least 10 samples"):
        wr.load_data(bad)
    bad.write_text("sample,SiO2,Al2O3\ns1,60\n")
    with pytest.raises(ValueError, match="row 2 has 2 columns"):
        wr.load_data(bad)
    bad.write_text("sample,SiO2,Al2O3\n")
    with pytest.raises(ValueError, match="no data rows"):
        wr.load_data(bad)


def test_zone_column_may_be_empty_but_not_partly_missing(tmp_path):
    rows = [f"s{i},,{60 + i % 7},{15 - i % 3}" for i in range(12)]
    f = tmp_path / "rocks.csv"
    f.write_text("sample,zone,SiO2,Al2O3\n# a comment line\n" + "\n".join(rows))
    assert wr.load_data(f).x.zone is None
    rows[3] = "s3,2,61,14"
    f.write_text("sample,zone,SiO2,Al2O3\n" + "\n".join(rows))
    with pytest.raises(ValueError, match="have no zone"):
        wr.load_data(f)
    rows = [f"s{i},{i % 4},{60 + i % 7},{15 - i % 3}" for i in range(12)]
    rows[5] = "s5,1,sixty,15"
    f.write_text("sample,zone,SiO2,Al2O3\n#\n" + "\n".join(rows))
    with pytest.raises(ValueError, match="row 8"):                  # the file's line number
        wr.load_data(f)
    assert wr._average_ranks(np.array([3.0, 1.0, 1.0, 2.0])).tolist() == [3.0, 0.5, 0.5, 2.0]
