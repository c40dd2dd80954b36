"""The unrolled small-system linear algebra against LAPACK (numpy), one matrix and vmapped;
and the checked Newton step that uses it for the last digits of a minimum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxinv.inference import _small_linalg as linalg
from jaxinv.inference import levenberg_marquardt as lm

SIZES = (1, 2, 3, linalg.MAX_UNROLLED, linalg.MAX_UNROLLED + 3)  # the last one through LAPACK


@pytest.mark.parametrize("n", SIZES)
def test_factorisations_and_solves_match_lapack(n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n + 7, n))
    b = rng.standard_normal(n + 7)
    columns = rng.standard_normal((n + 7, 3))
    spd = a.T @ a + 0.1 * np.eye(n)
    square = rng.standard_normal((n, n)) + 3 * np.eye(n)

    np.testing.assert_allclose(linalg.lstsq(jnp.asarray(a), jnp.asarray(b)), np.linalg.lstsq(a, b, rcond=None)[0],
                               rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(linalg.lstsq(jnp.asarray(a), jnp.asarray(columns)),
                               np.linalg.lstsq(a, columns, rcond=None)[0], rtol=1e-12, atol=1e-13)
    chol = linalg.cholesky(jnp.asarray(spd))
    np.testing.assert_allclose(chol, np.linalg.cholesky(spd), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(linalg.solve(jnp.asarray(square), jnp.asarray(b[:n])),
                               np.linalg.solve(square, b[:n]), rtol=1e-11, atol=1e-12)
    lower = np.asarray(chol)
    np.testing.assert_allclose(linalg.solve_triangular(chol, jnp.asarray(columns[:n]), lower=True),
                               np.linalg.solve(lower, columns[:n]), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(linalg.solve_triangular(chol.T, jnp.asarray(b[:n]), lower=False),
                               np.linalg.solve(lower.T, b[:n]), rtol=1e-12, atol=1e-13)


def test_ill_conditioned_least_squares_keeps_the_accuracy_of_qr():
    """A 40 x n system with singular values 1 .. 1e-8 (cond 1e8): through QR the relative
    error is ~cond * eps ~ 1e-8; the normal equations (cond^2 = 1e16) lose almost every digit."""
    n = linalg.MAX_UNROLLED
    rng = np.random.default_rng(1)
    left, _ = np.linalg.qr(rng.standard_normal((40, n)))
    right, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = left @ np.diag(np.geomspace(1.0, 1e-8, n)) @ right.T
    truth = np.arange(1.0, n + 1.0)
    b = a @ truth
    assert np.linalg.cond(a) > 1e7
    normal_equations = np.linalg.solve(a.T @ a, a.T @ b)
    assert np.max(np.abs(normal_equations - truth) / truth) > 1e-3
    np.testing.assert_allclose(linalg.lstsq(jnp.asarray(a), jnp.asarray(b)), truth, rtol=1e-6)


def test_not_positive_definite_gives_nan_like_lapack():
    indefinite = jnp.array([[1.0, 2.0], [2.0, 1.0]])
    assert not bool(jnp.all(jnp.isfinite(linalg.cholesky(indefinite))))
    assert not bool(jnp.all(jnp.isfinite(jnp.linalg.cholesky(indefinite))))


def test_vmapped_over_a_batch_and_larger_systems_use_lapack():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((16, 9, 3))
    b = rng.standard_normal((16, 9))
    expected = np.stack([np.linalg.lstsq(ai, bi, rcond=None)[0] for ai, bi in zip(a, b)])
    np.testing.assert_allclose(jax.jit(jax.vmap(linalg.lstsq))(jnp.asarray(a), jnp.asarray(b)), expected,
                               rtol=1e-12, atol=1e-13)
    big = linalg.MAX_UNROLLED + 1
    a = rng.standard_normal((big + 4, big))
    b = rng.standard_normal(big + 4)
    np.testing.assert_allclose(linalg.lstsq(jnp.asarray(a), jnp.asarray(b)), np.linalg.lstsq(a, b, rcond=None)[0],
                               rtol=1e-12, atol=1e-13)
    text = jax.jit(linalg.lstsq).lower(jnp.asarray(a), jnp.asarray(b)).as_text()
    small = jax.jit(linalg.lstsq).lower(jnp.asarray(a[:, :3]), jnp.asarray(b)).as_text()
    assert "custom_call" in text and "custom_call" not in small  # LAPACK only above MAX_UNROLLED


def test_householder_is_immune_to_the_scale_of_the_columns():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((9, 3))
    b = rng.standard_normal(9)
    expected = np.linalg.lstsq(a, b, rcond=None)[0]
    for scale in (1e-200, 1e200):  # sum of squares under- or overflows without scaling
        np.testing.assert_allclose(linalg.lstsq(jnp.asarray(a * scale), jnp.asarray(b * scale)), expected, rtol=1e-12)


def _quadratic(centre, curvature):
    return lambda z: 0.5 * (z - centre) @ curvature @ (z - centre) + 3.0


def test_newton_polish_takes_the_last_digits_of_a_minimum():
    centre = jnp.array([1.0, -2.0])
    curvature = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    energy = _quadratic(centre, curvature)
    z = centre + jnp.array([3e-6, -2e-6])  # the gain of the step is ~1e-11 nats
    z_new, e_new, g_new = lm.newton_polish(energy, z, jax.grad(energy)(z), linalg.cholesky(curvature))
    np.testing.assert_allclose(z_new, centre, rtol=0, atol=1e-14)
    assert float(jnp.linalg.norm(g_new)) < 1e-13 and float(e_new) == pytest.approx(3.0, abs=1e-15)


def test_newton_polish_refuses_large_steps_and_saddles():
    centre = jnp.array([1.0, -2.0])
    curvature = jnp.array([[4.0, 1.0], [1.0, 3.0]])
    energy = _quadratic(centre, curvature)
    far = centre + jnp.array([0.5, 0.5])  # predicted gain ~1 nat: not a last-digit correction
    z_new, _, _ = lm.newton_polish(energy, far, jax.grad(energy)(far), linalg.cholesky(curvature))
    np.testing.assert_array_equal(z_new, far)
    saddle = _quadratic(centre, jnp.diag(jnp.array([1.0, -1.0])))
    near = centre + 1e-6
    indefinite = linalg.cholesky(jax.hessian(saddle)(near))
    z_new, _, _ = lm.newton_polish(saddle, near, jax.grad(saddle)(near), indefinite)
    np.testing.assert_array_equal(z_new, near)  # no step onto the saddle point
