"""Laplace approximation at a posterior mode, and the Laplace free energy.

In the unconstrained space the posterior is approximated by a Gaussian
``N(z*, H^-1)`` with ``H`` the Hessian of the energy at the mode ``z*``.  The
evidence follows (MacKay 2003, "Information Theory, Inference and Learning
Algorithms", eq. 28.10; Tierney & Kadane 1986, JASA 81, 82):

    log p(y | M) ≈ -E(z*) + (d/2) log 2 pi - 1/2 log det H,     F = -log p(y | M).

``E`` includes every normalising constant (likelihood, priors, log-Jacobians), so
the value is absolute, not up to a constant; it is exact for a linear-Gaussian
model.  Standard errors of the constrained parameters follow by the delta method,
``Cov(theta) ≈ J H^-1 J^T`` with ``J = dtheta/dz``.
"""

from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..model import Posterior
from ..results import Result
from . import _derivatives
from . import _small_linalg as linalg
from .levenberg_marquardt import newton_polish
from ._draws import constrain_draws

__all__ = ["Laplace", "laplace", "laplace_arrays"]


@functools.partial(jax.jit, static_argnums=3)
def _gaussian_draws(mode, covariance, key, shape):
    chol = jnp.linalg.cholesky(covariance)
    eps = jax.random.normal(key, shape + (mode.size,), dtype=mode.dtype)
    return mode + eps @ chol.T, jnp.all(jnp.isfinite(chol))


class Laplace(eqx.Module):
    """Gaussian approximation ``N(mode, covariance)`` in unconstrained space.

    Attributes:
        mode: the mode ``z*``.
        hessian: ``H``, the Hessian of the energy at the mode.
        covariance: ``H^-1``.
        log_evidence: Laplace estimate of ``log p(y | M)`` (NaN when a prior is
            improper or ``H`` is not positive definite).
        standard_errors: ``{name: sd}`` of the constrained parameters.
        at_boundary: names of parameters whose mode lies at the edge of a
            bounded prior support; the Gaussian (and its evidence) is then a poor
            description, and a sampling engine should be used for F.
        posterior: the posterior it approximates (for :meth:`sample`); ``None``
            after loading from disk.
    """

    mode: jax.Array
    hessian: jax.Array
    covariance: jax.Array
    log_evidence: jax.Array
    standard_errors: dict[str, jax.Array]
    at_boundary: tuple[str, ...] = eqx.field(static=True, default=())
    posterior: Any = None

    @property
    def free_energy(self):
        return -self.log_evidence

    def sample_unconstrained(self, key, shape=(1000,)) -> jax.Array:
        """Draws of ``z ~ N(mode, covariance)``, shape ``(*shape, dim)``."""
        z, ok = _gaussian_draws(self.mode, self.covariance, key, tuple(shape))
        if not bool(ok):
            raise ValueError("the Hessian at the mode is not positive definite: no Gaussian to draw from")
        return z

    def sample(self, key, n_draws: int = 2000, n_chains: int = 1) -> Result:
        """Draws of the constrained parameters from the Gaussian approximation,
        as a ``Result`` (method ``"laplace"``, shape ``(n_chains, n_draws, ...)``)."""
        if self.posterior is None:
            raise ValueError("this Laplace approximation has no posterior attached (loaded from disk?)")
        z = self.sample_unconstrained(key, (n_chains, n_draws))
        params, energy = constrain_draws(self.posterior, z)
        return Result(
            params=params,
            method="laplace",
            sample_dims=2,
            log_evidence=self.log_evidence,
            log_evidence_se=jnp.asarray(0.0),
            stats={"energy": energy},
            laplace=self,
            observed=self.posterior.y,
        )

    def arrays(self) -> dict[str, np.ndarray]:
        out = {
            "mode": np.asarray(self.mode),
            "hessian": np.asarray(self.hessian),
            "covariance": np.asarray(self.covariance),
            "log_evidence": np.asarray(self.log_evidence),
        }
        out.update({f"se_{k}": np.asarray(v) for k, v in self.standard_errors.items()})
        out.update({f"boundary_{k}": np.asarray(1) for k in self.at_boundary})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict) -> "Laplace":
        return cls(
            mode=jnp.asarray(arrays["mode"]),
            hessian=jnp.asarray(arrays["hessian"]),
            covariance=jnp.asarray(arrays["covariance"]),
            log_evidence=jnp.asarray(arrays["log_evidence"]),
            standard_errors={k[3:]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("se_")},
            at_boundary=tuple(k[len("boundary_"):] for k in arrays if k.startswith("boundary_")),
        )


@eqx.filter_jit
def _expand(post: Posterior, mode):
    """Everything numerical of the Laplace approximation at ``mode``, compiled:
    Hessian, covariance (if positive definite), log-evidence, constrained sds, and the
    mode after :func:`~jaxinv.inference.levenberg_marquardt.newton_polish` with its gradient
    norm.  The Hessian is that of the given point (the polish moves by at most a predicted
    1e-6 nats); the energy, the sds and the constrained mode are those of the polished one."""
    # improper priors: no density of z to expand; use the parameter-space energy
    energy = post.energy if post.is_proper else post.map_energy
    hessian = _derivatives.hessian(energy)(mode)
    hessian = 0.5 * (hessian + hessian.T)
    chol = linalg.cholesky(hessian)
    mode, _, grad = newton_polish(energy, mode, _derivatives.gradient(energy)(mode), chol)
    gradient_norm = jnp.linalg.norm(grad)
    # the solves below after the polish's (see levenberg_marquardt._step_least_squares on
    # independent batched LAPACK calls and jaxlib 0.10's CPU thread pool)
    mode, chol, hessian = jax.lax.optimization_barrier((mode, chol, hessian))
    positive_definite = jnp.all(jnp.isfinite(chol))
    inv_chol = linalg.solve_triangular(chol, jnp.eye(mode.size, dtype=mode.dtype), lower=True)
    covariance = jnp.where(positive_definite, inv_chol.T @ inv_chol, jnp.linalg.pinv(hessian))
    log_det = 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    log_evidence = -energy(mode) + 0.5 * mode.size * math.log(2.0 * math.pi) - 0.5 * log_det
    log_evidence = jnp.where(positive_definite & post.is_proper, log_evidence, jnp.nan)

    def flat_params(z):
        return jnp.concatenate([jnp.ravel(v) for v in post.constrain(z).values()])

    jac = jax.jacfwd(flat_params)(mode)
    sd = jnp.sqrt(jnp.maximum(jnp.einsum("ij,jk,ik->i", jac, covariance, jac), 0.0))
    return hessian, covariance, log_evidence, sd, positive_definite, post.constrain(mode), mode, gradient_norm


def boundary_parameters(post: Posterior, params: dict) -> tuple[str, ...]:
    """Names of the parameters whose value in ``params`` lies at a bound of its prior's
    support (:meth:`Prior.at_boundary`): where a Laplace approximation is unreliable."""
    return tuple(name for name, prior in post.priors.items() if prior.at_boundary(params[name]))


def _standard_errors(post: Posterior, sd) -> dict:
    standard_errors, start = {}, 0
    for name, shape in post.parameter_shapes().items():
        size = math.prod(shape)
        standard_errors[name] = jnp.reshape(sd[start : start + size], shape)
        start += size
    return standard_errors


def laplace_arrays(post: Posterior, mode) -> Laplace:
    """The numbers of :func:`laplace` as a pure function (``jit``/``vmap`` safe): no
    warning, ``at_boundary`` left empty and no posterior attached (the batch layer adds
    them on the host); the mode is polished as in :func:`laplace`."""
    return _laplace_arrays(post, mode)[0]


def _laplace_arrays(post: Posterior, mode):
    """:func:`laplace_arrays` and the gradient norm at its (polished) mode."""
    hessian, covariance, log_evidence, sd, _, _, mode, gradient_norm = _expand(post, mode)
    return Laplace(mode=mode, hessian=hessian, covariance=covariance, log_evidence=log_evidence,
                   standard_errors=_standard_errors(post, sd)), gradient_norm


def laplace(post: Posterior, mode, boundary_params: dict | None = None) -> Laplace:
    """Laplace approximation of ``post`` at ``mode`` (a point in unconstrained space).

    ``boundary_params``: the parameter values to test against the prior bounds
    (default: the constrained ``mode``); :func:`~jaxinv.map_estimate` passes the
    MAP, which sits closer to a bound than the unconstrained mode does.

    A last Newton step is taken from ``mode`` when it is a small correction towards the
    minimum (predicted gain <= 1e-6 nats, positive definite Hessian, falling gradient:
    :func:`~jaxinv.inference.levenberg_marquardt.newton_polish`); ``Laplace.mode`` is that
    point."""
    return _laplace(post, mode, boundary_params)[0]


def _laplace(post: Posterior, mode, boundary_params: dict | None = None):
    """:func:`laplace` and the gradient norm at its (polished) mode."""
    mode = jnp.asarray(mode)
    hessian, covariance, log_evidence, sd, positive_definite, at_mode, mode, gradient_norm = _expand(post, mode)
    if not bool(positive_definite):
        warnings.warn(
            "the Hessian of the energy at the mode is not positive definite (a flat or "
            "unidentified direction): Laplace covariance is a pseudo-inverse and the evidence is NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    standard_errors = {k: jnp.asarray(np.asarray(v)) for k, v in _standard_errors(post, np.asarray(sd)).items()}
    params = at_mode if boundary_params is None else boundary_params
    at_boundary = boundary_parameters(post, params)
    return Laplace(
        mode=mode,
        hessian=hessian,
        covariance=covariance,
        log_evidence=log_evidence,
        standard_errors=standard_errors,
        at_boundary=at_boundary,
        posterior=post,
    ), gradient_norm
