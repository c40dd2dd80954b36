"""Forward physics as Equinox modules: ``module(params_dict) -> prediction``."""

from .peaks import (
    ExponentialBackground,
    GaussianPeaks,
    LorentzianPeaks,
    PolynomialBackground,
    Prefixed,
    PseudoVoigtPeaks,
    Sum,
)
from .relaxation import InversionRecovery, MultiExponential, SaturationRecovery, StretchedExponential

__all__ = [
    "ExponentialBackground",
    "GaussianPeaks",
    "InversionRecovery",
    "LorentzianPeaks",
    "MultiExponential",
    "PolynomialBackground",
    "Prefixed",
    "PseudoVoigtPeaks",
    "SaturationRecovery",
    "StretchedExponential",
    "Sum",
]
from .kinetics import MineralReaction  # noqa: E402
__all__ += ["MineralReaction"]
