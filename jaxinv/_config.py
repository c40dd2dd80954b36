"""Numerical precision.

jaxinv computes in float64 by default: the NIST reference fits, Laplace
log-determinants and free-energy differences between models need more than the
~7 digits float32 carries.  Set ``JAXINV_PRECISION=float32`` in the environment
before importing jaxinv (or call :func:`set_precision` before creating any
arrays) to run in float32, e.g. for large batched runs on GPUs.
"""

from __future__ import annotations

import os

import jax

_PRECISIONS = ("float64", "float32")


def set_precision(precision: str) -> None:
    """Select the floating-point precision of everything jaxinv creates.

    Args:
        precision: ``"float64"`` (default) or ``"float32"``.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    jax.config.update("jax_enable_x64", precision == "float64")


def precision() -> str:
    """The precision in force: ``"float64"`` or ``"float32"``."""
    return "float64" if jax.config.jax_enable_x64 else "float32"


set_precision(os.environ.get("JAXINV_PRECISION", "float64"))

# several processes, one program (see jaxinv.cluster): before anything touches a device
from . import cluster as _cluster  # noqa: E402

_cluster.initialize_from_env()
