"""NIST StRD nonlinear regression: certified values from both NIST starting points,
through the public API only (Flat priors = plain least squares)."""

import numpy as np
import pytest
from numpyro.distributions import constraints

import jaxinv as ji
from nist import FORMULAS, Curve, load

# Prior knowledge a user states through the prior's support: positive scale or
# amplitude parameters.  The certified optimum lies strictly inside.
#   Eckerle4: (b1, b2) and (-b1, -b2) give the same curve; b2 is a peak width > 0.
#   MGH10:    b1 is a positive prefactor; from start 1 (b1=2, b2=4e5, b3=2.5e4)
#             the unconstrained LM path lets b1 collapse towards 0 (docs/validation.md).
POSITIVE = {"Eckerle4": (0, 1), "MGH10": (0,)}


def fit(name, start):
    p = load(name)
    n = len(p.certified)
    names = [f"b{i + 1}" for i in range(n)]
    priors = {
        b: ji.priors.Flat(support=constraints.positive if i in POSITIVE.get(name, ()) else constraints.real)
        for i, b in enumerate(names)
    }
    # the same formula over data of the same length (both starts, Lanczos1-3, Gauss1-3) reuses
    # one compiled MAP
    model = ji.Model(Curve(FORMULAS[name], tuple(names), np.asarray(p.x)), priors, ji.likelihoods.Normal(sigma=1.0))
    post = model.condition(p.y)
    res = ji.map_estimate(post, init=dict(zip(names, p.starts[start])))
    b = np.array([float(res.params[k]) for k in names])
    return p, post, res, b


@pytest.mark.parametrize("start", [0, 1], ids=["start1", "start2"])
@pytest.mark.parametrize("name", list(FORMULAS))
def test_certified_values(name, start):
    p, post, res, b = fit(name, start)
    # at least 6 significant digits of every parameter
    np.testing.assert_allclose(b, p.certified, rtol=5e-7, atol=0)
    assert bool(res.stats["converged"][int(res.stats["best"])])
    if name != "Lanczos1":  # its certified RSS (1.4e-25) is below float64 resolution of the data
        rss = float(post.rss(post.unconstrain(res.params)))
        assert abs(rss - p.certified_rss) <= 5e-9 * p.certified_rss


def test_certified_standard_errors_misra1a():
    """With sigma fixed to the certified residual sd, the Laplace standard errors
    (exact Hessian of 1/2 RSS / s^2) match NIST's linearised standard deviations."""
    p = load("Misra1a")
    s = np.sqrt(p.certified_rss / (len(p.y) - 2))
    x = np.asarray(p.x)
    model = ji.Model(
        lambda th: p.formula(th["b"], x), {"b": ji.priors.Flat(shape=2)}, ji.likelihoods.Normal(sigma=s)
    )
    res = ji.map_estimate(model.condition(p.y), init={"b": p.starts[0]})
    # exact and Gauss-Newton Hessians differ by the small-residual term: 1%
    np.testing.assert_allclose(res.laplace.standard_errors["b"], p.certified_sd, rtol=1e-2)
    assert np.isnan(float(res.log_evidence))  # improper prior: no evidence
