"""Forward physics as Equinox modules: ``module(params_dict) -> prediction``."""

from .relaxation import InversionRecovery, MultiExponential, SaturationRecovery, StretchedExponential

__all__ = ["InversionRecovery", "MultiExponential", "SaturationRecovery", "StretchedExponential"]
