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


def _jaxlib_version() -> tuple[int, ...]:
    import jaxlib

    return tuple(int(v) for v in jaxlib.__version__.split(".")[:3] if v.isdigit())


def _guard_cpu_lapack_pool() -> None:
    """jaxlib 0.10 runs a batched LAPACK call (Cholesky, LU, SVD under ``vmap``) by splitting
    its batch over XLA's CPU thread pool and *blocking* the calling pool thread until the
    pieces are done (``jax::ParallelBatchMap`` in ``jaxlib/cpu/lapack_kernels.cc``; open-source
    builds from jaxlib 0.11.1 leave that path out).  XLA's CPU runtime runs independent
    operations of one program concurrently on the same pool, so as many batched LAPACK calls
    at once as the pool has threads each hold a thread and wait for pieces no thread is left
    to run: a silent, permanent hang.  The pool is sized from the CPU affinity (2 threads on
    a 2-core machine), so small machines hang most (seen here as hung MAP fits and test runs,
    gdb stacks in ``BlockingCounter::Wait`` under ``lapack_dpotrf_ffi`` and
    ``lapack_dgetrf_ffi``; the same stacks are reported by other projects on jaxlib 0.10.2).

    For jaxlib < 0.11.1 two things are done before the CPU client starts:

    * the pool gets 4 threads more than the CPUs (``PJRT_NPROC``, read by XLA's CPU client;
      idle threads cost nothing), so a hang needs more concurrent batched LAPACK calls
      than the pool has threads: 6 on 2 cores, where the hangs seen here had 2.  This makes
      the hang unlikely, not impossible;
    * asynchronous dispatch is turned off on CPU, so two *programs* never run at once
      (with it, a program still running while the next starts doubles the concurrency).

    ``PJRT_NPROC`` set in the environment is kept; ``JAXINV_CPU_ASYNC_DISPATCH=1`` keeps
    asynchronous dispatch.  The pool is made when JAX first computes: when that happened
    before jaxinv was imported (importing BlackJAX computes), a warning says so.  Within
    one program the engines also order their LAPACK calls (``levenberg_marquardt``)."""
    if _jaxlib_version() >= (0, 11, 1):
        return
    if "PJRT_NPROC" not in os.environ:
        from jax._src import xla_bridge

        if xla_bridge.backends_are_initialized():
            import warnings

            warnings.warn("JAX computed before jaxinv was imported, so jaxinv could not widen XLA's CPU thread "
                          "pool: on jaxlib < 0.11.1 batched linear algebra can then hang on machines with few "
                          "cores; import jaxinv first or set PJRT_NPROC (e.g. the number of CPUs + 4)",
                          RuntimeWarning, stacklevel=3)
        try:
            n_cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            n_cpus = os.cpu_count() or 1
        os.environ["PJRT_NPROC"] = str(n_cpus + 4)
    if os.environ.get("JAXINV_CPU_ASYNC_DISPATCH") != "1":
        jax.config.update("jax_cpu_enable_async_dispatch", False)


_guard_cpu_lapack_pool()


#: XLA flag that selects the CPU backend's LLVM-IR fusion emitters instead of the newer
#: MLIR-based ones (see :func:`_prefer_fast_cpu_compiles`)
CPU_COMPILE_FLAG = "--xla_cpu_use_fusion_emitters=false"


def _prefer_fast_cpu_compiles() -> None:
    """Compile CPU programs with XLA's LLVM-IR fusion emitters (jaxlib 0.10.x only).

    Compiling, not computing, is what an inversion costs on a CPU the first time a model is
    seen: a multi-start MAP with its Laplace approximation on a 3-parameter NMR curve took
    25.7 s on one core of a 2-core EPYC (jaxlib 0.10.2, 2026-12-07), of which 22.0 s was XLA
    compiling and 0.03 s the fit itself.  jaxlib 0.10's CPU backend emits its fusions through
    MLIR by default; with ``--xla_cpu_use_fusion_emitters=false`` it uses the older LLVM-IR
    emitters, and the same first call took 14.8 s (10.7 s compiling); ``jaxinv run
    nmr-relaxation`` on both cores 62 s -> 48 s, the test suite (2 workers) 1630 s -> 1380 s.
    Steady-state run times moved little and not one way (default -> this flag): 1024 batched
    MAP fits 3.28 -> 3.41 s, multi-start MAP medians within 6 % (bench_map sizes), NUTS (4
    chains x 1500 steps) 0.59 -> 0.35 s, tempered SMC 111.7 -> 110.7 s, EPMA quantification
    2.02 -> 1.65 s; results agree to round-off (the batched MAP fits bit for bit).

    The flag is added to ``XLA_FLAGS`` before the CPU client starts, only for jaxlib 0.10.x
    (where it was measured: an XLA build that no longer knows a flag aborts the process),
    never over a value of the same flag already in ``XLA_FLAGS``, and not at all with
    ``JAXINV_XLA_CPU_DEFAULTS=1`` in the environment.  GPU programs are not affected."""
    if os.environ.get("JAXINV_XLA_CPU_DEFAULTS") == "1" or _jaxlib_version()[:2] != (0, 10):
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_COMPILE_FLAG.split("=")[0] in flags:
        return
    from jax._src import xla_bridge

    if not xla_bridge.backends_are_initialized():
        os.environ["XLA_FLAGS"] = f"{flags} {CPU_COMPILE_FLAG}".strip()


_prefer_fast_cpu_compiles()

# several processes, one program (see jaxinv.cluster): before anything touches a device
from . import cluster as _cluster  # noqa: E402

_cluster.initialize_from_env()
