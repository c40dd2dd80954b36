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
from .xray import (  # noqa: E402
    XrayMap,
    beam_drift,
    correct_counts,
    dead_time_correction,
    dead_time_loss,
    expected_counts,
    mixed_intensity,
    pixel_times,
    poisson_log_prob,
)
__all__ += ["XrayMap", "beam_drift", "correct_counts", "dead_time_correction", "dead_time_loss",
            "expected_counts", "mixed_intensity", "pixel_times", "poisson_log_prob"]
