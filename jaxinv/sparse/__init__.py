"""Sparse modelling in JAX: proximal solvers (lasso, non-negative lasso, elastic net, group
lasso) with regularisation paths and cross-validation, non-negative matrix factorisation, and
Bayesian sparse regression through jaxinv's ordinary engines.

The solvers (``fista``, the penalised regressions, paths, ``multinomial_logistic``, ``nmf``)
are pure functions over arrays, ``jit``-able and ``vmap``-able over datasets; the
cross-validation drivers run their folds as one ``vmap`` but take concrete keys and options.
"""

from .bayesian import SparseLinear, horseshoe_global_scale, sparse_regression_model
from .fista import ProximalResult, fista
from .linear import SparseRegression, elastic_net, group_lasso, lasso, multitask_lasso, penalised_least_squares
from .path import CrossValidation, RegularisationPath, alpha_max, cross_validate, regularisation_path
from .logistic import ClassifierCV, SparseClassifier, cross_validate_classifier, multinomial_logistic, predict_proba
from .nmf import NMFResult, RankSelection, nmf, nmf_loss, nmf_rank_cv
from .penalties import ElasticNet, GroupL1, L1, Penalty, soft_threshold

__all__ = [
    "ClassifierCV",
    "CrossValidation",
    "ElasticNet",
    "GroupL1",
    "L1",
    "NMFResult",
    "Penalty",
    "ProximalResult",
    "RankSelection",
    "RegularisationPath",
    "SparseClassifier",
    "SparseLinear",
    "SparseRegression",
    "alpha_max",
    "cross_validate",
    "cross_validate_classifier",
    "elastic_net",
    "fista",
    "group_lasso",
    "horseshoe_global_scale",
    "lasso",
    "multinomial_logistic",
    "multitask_lasso",
    "nmf",
    "nmf_loss",
    "nmf_rank_cv",
    "penalised_least_squares",
    "predict_proba",
    "regularisation_path",
    "soft_threshold",
    "sparse_regression_model",
]
