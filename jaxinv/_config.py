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


def _serialise_cpu_programs() -> None:
    """jaxlib 0.10 runs a batched LAPACK call (Cholesky, LU, SVD under ``vmap``) by splitting
    its batch over XLA's CPU thread pool and *blocking* a pool thread until the pieces are
    done (``jax::ParallelBatchMap``); two such calls running at once can occupy every pool
    thread (2 on a 2-core machine) and wait for each other forever (seen here as hung
    MAP fits, gdb stacks in ``BlockingCounter::Wait`` under ``lapack_dpotrf_ffi`` and
    ``lapack_dgetrf_ffi``; jaxlib >= 0.11.1 builds without that path).  Two *programs* run
    at once when the CPU client dispatches asynchronously (a program still running while
    the next starts), so asynchronous dispatch is turned off on CPU for jaxlib < 0.11.1
    (``JAXINV_CPU_ASYNC_DISPATCH=1`` keeps it).  Within one program the engines order their
    LAPACK calls (``levenberg_marquardt``)."""
    if os.environ.get("JAXINV_CPU_ASYNC_DISPATCH") == "1":
        return
    import jaxlib

    version = tuple(int(v) for v in jaxlib.__version__.split(".")[:3] if v.isdigit())
    if version < (0, 11, 1):
        jax.config.update("jax_cpu_enable_async_dispatch", False)


_serialise_cpu_programs()

# several processes, one program (see jaxinv.cluster): before anything touches a device
from . import cluster as _cluster  # noqa: E402

_cluster.initialize_from_env()
