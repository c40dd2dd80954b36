"""Dense linear algebra for the few-parameter systems of one inversion, in plain JAX.

The MAP polish (:mod:`~jaxinv.inference.levenberg_marquardt`) and the Laplace
approximation solve one ``n x n`` system per dataset per iteration, with ``n`` the number
of parameters (3 for an NMR recovery curve, ~10 for a spectrum of three peaks).
``jnp.linalg`` sends each to LAPACK (cuSOLVER on a GPU); under ``vmap`` over thousands of
datasets that is a batched custom call per iteration, whose fixed cost per matrix
(~16 us measured on the CPU of ``benchmarks/batch.py``) is many times the arithmetic of a
3 x 3 system.  Written out as a fixed sequence of array operations, the same
factorisations become elementwise work across the batch, which XLA fuses and vectorises on
a CPU and a GPU alike -- and, on jaxlib 0.10's CPU runtime, they never enter the LAPACK
thread-pool path that can deadlock (see ``jaxinv/_config.py``).

The loops below run over the matrix dimension in Python, so the compiled program grows
as ``n^2`` to ``n^3``; :data:`MAX_UNROLLED` bounds the size that takes this path, and larger
systems go to ``jnp.linalg``.  Measured (2-core CPU, jaxlib 0.10): on 1024 three-parameter
curves the unrolled LM runs 27 % faster than with LAPACK, but at seven parameters it doubles
the compile time of the MAP (5 s -> 10 s), hence the bound of 4.  Algorithms (Golub & Van Loan, *Matrix Computations*, 4th ed. 2013):

* :func:`cholesky`: the column (gaxpy) Cholesky of Alg. 4.2.1; non-finite where the
  matrix is not positive definite.
* :func:`solve_triangular`: forward/back substitution (Alg. 3.1.1, 3.1.2).
* :func:`lstsq`: Householder QR (Alg. 5.2.1) then back substitution -- the least-squares
  solution of a full-column-rank system through ``R``, so that the conditioning of ``A``
  (not of ``A^T A``) matters, as with ``jnp.linalg.lstsq``; a rank-deficient ``A`` gives
  non-finite entries instead of the SVD's minimum-norm solution.
* :func:`solve`: a square system by the same QR (stable without pivoting decisions).

Each function takes one matrix (no batch axes; ``vmap`` adds them) and dispatches on the
static size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["MAX_UNROLLED", "cholesky", "solve_triangular", "lstsq", "solve"]

#: largest number of unknowns solved by the unrolled code; larger systems use jnp.linalg
MAX_UNROLLED = 4


def _small(n: int) -> bool:
    return n <= MAX_UNROLLED


def cholesky(a: jax.Array) -> jax.Array:
    """Lower-triangular ``L`` with ``L L^T = a`` (``a`` symmetric, lower half read).
    Where ``a`` is not positive definite, NaN from the first failing column on (LAPACK
    through ``jnp.linalg.cholesky`` gives an all-NaN matrix): test ``all(isfinite(L))``."""
    n = a.shape[-1]
    if not _small(n):
        return jnp.linalg.cholesky(a)
    rows = jnp.arange(n)
    columns = []
    for j in range(n):
        col = a[:, j]
        for previous in columns:
            col = col - previous * previous[j]
        pivot = col[j]
        # sqrt of a non-positive pivot -> NaN, like LAPACK's failure through jnp.linalg
        root = jnp.sqrt(jnp.where(pivot > 0, pivot, jnp.nan))
        columns.append(jnp.where(rows >= j, col / root, 0.0))
    return jnp.stack(columns, axis=-1)


def solve_triangular(t: jax.Array, b: jax.Array, *, lower: bool) -> jax.Array:
    """``x`` with ``t x = b`` for triangular ``t`` (``b`` a vector or a matrix of columns)."""
    n = t.shape[-1]
    if not _small(n):
        return jax.scipy.linalg.solve_triangular(t, b, lower=lower)
    order = range(n) if lower else range(n - 1, -1, -1)
    x = [None] * n
    done = []
    for i in order:
        acc = b[i]
        for k in done:
            acc = acc - t[i, k] * x[k]
        x[i] = acc / t[i, i]
        done.append(i)
    return jnp.stack(x, axis=0)


def _householder_reduce(a: jax.Array, b: jax.Array):
    """``R`` (the top ``n`` rows of ``Q^T a``) and ``Q^T b`` (``b`` of shape ``(m, k)``) by
    Householder reflections."""
    m, n = a.shape
    rows = jnp.arange(m)
    for j in range(min(n, m - 1)):
        v = jnp.where(rows >= j, a[:, j], 0.0)
        # the reflection I - 2 v v^T / v^T v does not depend on the length of v: scaling by
        # max|v| keeps v^T v clear of overflow and underflow (as LAPACK's dnrm2 does)
        largest = jnp.max(jnp.abs(v))
        v = v / jnp.where(largest > 0, largest, 1.0)
        norm = jnp.sqrt(jnp.sum(v * v))
        alpha = -jnp.where(a[j, j] >= 0, 1.0, -1.0) * norm
        v = v.at[j].add(-alpha)
        v_norm2 = jnp.sum(v * v)
        # a column already zero on and below the diagonal needs no reflection (H = I)
        scale = jnp.where(v_norm2 > 0, 2.0 / jnp.where(v_norm2 > 0, v_norm2, 1.0), 0.0)
        a = a - (scale * v)[:, None] * jnp.sum(v[:, None] * a, axis=0)[None, :]
        b = b - (scale * v)[:, None] * jnp.sum(v[:, None] * b, axis=0)[None, :]
    return a[:n], b[:n]


def lstsq(a: jax.Array, b: jax.Array) -> jax.Array:
    """Least-squares solution of ``a x = b`` (``a`` of shape ``(m, n)``, ``m >= n``, full
    column rank; ``b`` a vector or a matrix of columns)."""
    m, n = a.shape
    if not _small(n) or m < n:
        return jnp.linalg.lstsq(a, b)[0]
    r, qtb = _householder_reduce(a, b if b.ndim == 2 else b[:, None])
    x = solve_triangular(r, qtb, lower=False)
    return x if b.ndim == 2 else x[:, 0]


def solve(a: jax.Array, b: jax.Array) -> jax.Array:
    """``x`` with ``a x = b`` for a square non-singular ``a`` (non-finite where singular)."""
    n = a.shape[-1]
    if not _small(n):
        return jnp.linalg.solve(a, b)
    return lstsq(a, b)
