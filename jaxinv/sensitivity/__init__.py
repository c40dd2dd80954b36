"""Sensitivity: how answers move with inputs; Fisher information; experimental design.

* :mod:`.implicit` -- ``d theta_MAP / d inputs`` by implicit differentiation
  (``jax.lax.custom_root``): :func:`map_jacobian`, :func:`differentiable_map`.
* :mod:`.expectations` -- ``d/du E_post[f]``: score-function (posterior draws)
  and reparameterisation (Laplace) estimators with Monte Carlo standard errors.
* :mod:`.fisher` -- Fisher information ``J^T W J``, Cramér-Rao bounds, simulated data.
* :mod:`.design` -- expected information gain (Fisher, Laplace, nested Monte
  Carlo), expected posterior variance, gradient-based design optimisation.

See ``docs/sensitivity.md`` for the equations and a worked NMR example.
"""

from .design import expected_information_gain, expected_posterior_variance, optimize_design, prior_draws
from .expectations import laplace_expectation, laplace_expectation_gradient, score, score_function_gradient
from .fisher import cramer_rao_bound, fisher_information, parameter_slices, score_fisher_information, simulate_data
from .implicit import check_inputs, differentiable_map, implicit_mode, map_jacobian, newton_decrement

__all__ = [
    "check_inputs",
    "cramer_rao_bound",
    "differentiable_map",
    "expected_information_gain",
    "expected_posterior_variance",
    "fisher_information",
    "implicit_mode",
    "laplace_expectation",
    "laplace_expectation_gradient",
    "map_jacobian",
    "newton_decrement",
    "optimize_design",
    "parameter_slices",
    "prior_draws",
    "score",
    "score_fisher_information",
    "score_function_gradient",
    "simulate_data",
]
