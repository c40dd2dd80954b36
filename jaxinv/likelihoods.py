"""Likelihoods: the probability of the data given the forward model's prediction.

A noise parameter (``sigma``, ``df``) is a fixed number/array, a prior
(:mod:`jaxinv.priors` or any numpyro distribution) -- then it is inferred with
the physical parameters under the name given by ``name``/``df_name`` -- or the
*name* of a parameter whose prior is declared in the model's ``priors`` (a
string, e.g. ``Normal(sigma="sigma_xrd")``; several likelihoods may then share
one noise level).  An inferred noise level must have a prior on positive values.

:class:`Joint` combines several measurements of one object, each with its own
forward model, likelihood and data, into one likelihood over shared parameters.

Least-squares likelihoods (:class:`Normal`, :class:`LogNormal`) also expose
standardised residuals ``r`` and normalisation ``c`` with
``-log L = 1/2 |r|^2 + c(noise)``, which the Gauss-Newton/Levenberg-Marquardt
polish of :func:`jaxinv.map_estimate` uses.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Mapping
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.special as jsp
import numpy as np

from .priors import Prior, as_prior

__all__ = ["Likelihood", "Normal", "StudentT", "Poisson", "LogNormal", "Joint"]

_LOG_2PI = math.log(2.0 * math.pi)


def _noise(value, what: str):
    """A fixed positive array, a Prior for an inferred parameter, or the name (str)
    of a parameter declared in the model's priors."""
    if isinstance(value, str):
        if not value:
            raise ValueError(f"{what}: a parameter name must be a non-empty string")
        return value
    if isinstance(value, Prior) or (value is not None and not _is_arraylike(value)):
        return as_prior(value)
    arr = jnp.asarray(value, dtype=jnp.result_type(float))
    if not isinstance(arr, jax.core.Tracer):
        if not bool(jnp.all(jnp.isfinite(arr))):
            raise ValueError(f"{what} must be finite, got non-finite values")
        if not bool(jnp.all(arr > 0)):
            raise ValueError(f"{what} must be positive, got min {float(jnp.min(arr))}")
    return arr


def _is_arraylike(x) -> bool:
    return isinstance(x, (int, float, list, tuple, jax.Array)) or hasattr(x, "__array__")


def as_data(y) -> jax.Array:
    """Observed data as a float array; ``ValueError`` when not numeric, empty or
    not finite (tracers pass unchecked)."""
    try:
        y = np.asarray(y, dtype=float) if not isinstance(y, jax.Array) else y
    except (TypeError, ValueError):
        raise ValueError("data must be a numeric array") from None
    if y.size == 0:
        raise ValueError("data are empty: nothing to condition on")
    if not isinstance(y, jax.core.Tracer) and not bool(np.all(np.isfinite(np.asarray(y)))):
        bad = int(np.sum(~np.isfinite(np.asarray(y))))
        raise ValueError(f"data contain {bad} non-finite value(s) (NaN or inf)")
    return jnp.asarray(y, dtype=jnp.result_type(float))


def _allows_non_positive(prior: Prior) -> bool:
    """True when the prior's support reaches zero or below (checked on the image of
    a grid of unconstrained values; False when the prior's parameters are traced)."""
    try:
        u = jnp.linspace(-30.0, 30.0, 61)
        x = jax.vmap(lambda c: prior.constrain(jnp.full(prior.unconstrained_shape, c)))(u)
        return not bool(jnp.all(x > 0))
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerBoolConversionError):
        return False


class Likelihood(eqx.Module):
    """Base class.  Subclasses implement :meth:`pointwise_log_prob`."""

    _noise_fields = ()  # attribute names holding noise values (number, Prior or str)

    def parameters(self) -> dict[str, Prior]:
        """Priors of the likelihood's own inferred parameters (noise levels)."""
        return {}

    def references(self) -> tuple[str, ...]:
        """Names of parameters declared in the model's priors that the likelihood reads
        (noise levels given as a string)."""
        return tuple(v for v in (getattr(self, f, None) for f in self._noise_fields) if isinstance(v, str))

    def _noise_priors(self, priors: dict[str, Prior]) -> dict[str, Prior]:
        """``{name: prior}`` of every inferred noise level (own or referenced)."""
        out = dict(self.parameters())
        out.update({name: priors[name] for name in self.references() if name in priors})
        return out

    def check_parameters(self, priors: dict[str, Prior]) -> None:
        """Raise ``ValueError`` when a referenced noise parameter has no prior in
        ``priors`` (the model's), or an inferred noise level's prior allows values <= 0."""
        missing = [name for name in self.references() if name not in priors]
        if missing:
            raise ValueError(
                f"the likelihood reads noise parameter(s) {missing}, which have no prior "
                f"(parameters with priors: {list(priors)})"
            )
        for name, prior in self._noise_priors(priors).items():
            if _allows_non_positive(prior):
                raise ValueError(
                    f"noise parameter {name!r} must be positive, but its prior allows values <= 0 "
                    f"(support {prior.support}); use e.g. LogUniform, HalfNormal or Exponential"
                )

    def _value(self, field, name, params):
        if isinstance(field, str):
            return params[field]
        return params[name] if isinstance(field, Prior) else field

    # -- data handling (a Joint overrides these to take a dict per measurement) -------
    def as_data(self, y):
        """The observed data as the likelihood takes them (validated float array)."""
        if y is None:
            raise ValueError("condition(y) needs the observed data y")
        return as_data(y)

    def forward_model(self) -> Callable | None:
        """The forward model the likelihood carries itself (a :class:`Joint`'s), else ``None``."""
        return None

    def check_prediction(self, y, predicted) -> None:
        """Raise ``ValueError`` when the forward model's prediction (a shape
        struct) does not match the data."""
        shape = getattr(predicted, "shape", None)
        if shape is None:
            raise ValueError(f"the forward model must return an array, got {type(predicted).__name__}")
        if tuple(shape) != tuple(jnp.shape(y)):
            raise ValueError(
                f"data have shape {tuple(jnp.shape(y))}, but the forward model predicts shape {tuple(shape)}"
            )

    @abc.abstractmethod
    def pointwise_log_prob(self, y, prediction, params):
        """``log p(y_i | prediction_i, noise)`` for every datum (shape of ``y``)."""

    def log_prob(self, y, prediction, params):
        """Total log-likelihood (a scalar)."""
        return jnp.sum(self.pointwise_log_prob(y, prediction, params))

    def least_squares_parts(self, y, prediction, params):
        """``(r, c)`` with ``-log L = 1/2 |r|^2 + c``: standardised residuals and the
        normalisation, computed separately so that optimisers can compare tiny
        residual sums without cancellation.  ``None`` when the likelihood is not
        of least-squares form."""
        return None

    @property
    def least_squares(self) -> bool:
        return False

    def validate(self, y) -> None:
        """Raise ``ValueError`` when ``y`` is outside the likelihood's support or
        a fixed noise array does not match it."""
        sigma = getattr(self, "sigma", None)
        if sigma is not None and not isinstance(sigma, (Prior, str)):
            try:
                jnp.broadcast_shapes(jnp.shape(sigma), jnp.shape(y))
            except ValueError:
                raise ValueError(
                    f"sigma has shape {jnp.shape(sigma)}, which does not broadcast to the data shape {jnp.shape(y)}"
                ) from None


class _GaussianResiduals(Likelihood):
    """Gaussian noise on ``g(y)``: ``g(y_i) ~ N(g(f_i), sigma_i^2)``, with ``g`` the
    identity (:class:`Normal`) or ``log`` (:class:`LogNormal`).  Per datum

        -log p(y_i) = 1/2 r_i^2 + c_i,   r_i = (g(y_i) - g(f_i)) / sigma_i,
        c_i = log sigma_i + log |g'(y_i)| + 1/2 log 2 pi,

    one definition serving both the log-density and the least-squares parts."""

    sigma: Any
    name: str = eqx.field(static=True, default="sigma")
    _noise_fields = ("sigma",)

    def __init__(self, sigma, name: str = "sigma"):
        self.sigma = _noise(sigma, f"{type(self).__name__} likelihood sigma")
        self.name = name

    def parameters(self):
        return {self.name: self.sigma} if isinstance(self.sigma, Prior) else {}

    @property
    def least_squares(self) -> bool:
        return True

    def _map(self, values):
        return values

    def _log_jacobian(self, y):
        """``log |g'(y)|``: the change of variables from ``g(y)`` back to ``y``."""
        return jnp.zeros_like(y)

    def _pointwise_parts(self, y, prediction, params):
        sigma = jnp.broadcast_to(self._value(self.sigma, self.name, params), jnp.shape(y))
        r = (self._map(y) - self._map(prediction)) / sigma
        return r, jnp.log(sigma) + self._log_jacobian(y) + 0.5 * _LOG_2PI

    def pointwise_log_prob(self, y, prediction, params):
        r, c = self._pointwise_parts(y, prediction, params)
        return -0.5 * r**2 - c

    def least_squares_parts(self, y, prediction, params):
        r, c = self._pointwise_parts(y, prediction, params)
        return r, jnp.sum(c)


class Normal(_GaussianResiduals):
    """Gaussian noise: ``y_i ~ N(f_i, sigma_i^2)``.

    ``-log L = 1/2 sum_i ((y_i - f_i)/sigma_i)^2 + sum_i log sigma_i + n/2 log 2 pi``.

    Args:
        sigma: noise standard deviation in the units of ``y``: a positive number,
            an array broadcastable to ``y`` (known per-point errors), a prior
            (inferred, one scalar or an array), or the name of a parameter
            whose prior is declared in the model's ``priors``.
        name: the parameter name when ``sigma`` is inferred.
    """


class StudentT(Likelihood):
    """Student-t noise (robust to outliers):

    ``p(y|f) = Gamma((nu+1)/2) / (Gamma(nu/2) sqrt(nu pi) sigma) (1 + r^2/nu)^(-(nu+1)/2)``,
    ``r = (y - f)/sigma``.

    Args:
        df: degrees of freedom ``nu > 0`` (number, prior, or a parameter name).
        sigma: scale (number, array, prior, or a parameter name).
    """

    df: Any
    sigma: Any
    name: str = eqx.field(static=True, default="sigma")
    df_name: str = eqx.field(static=True, default="df")
    _noise_fields = ("sigma", "df")

    def __init__(self, df, sigma, name: str = "sigma", df_name: str = "df"):
        self.df = _noise(df, "StudentT df")
        self.sigma = _noise(sigma, "StudentT sigma")
        self.name = name
        self.df_name = df_name

    def parameters(self):
        out = {}
        if isinstance(self.sigma, Prior):
            out[self.name] = self.sigma
        if isinstance(self.df, Prior):
            out[self.df_name] = self.df
        return out

    def pointwise_log_prob(self, y, prediction, params):
        sigma = self._value(self.sigma, self.name, params)
        nu = self._value(self.df, self.df_name, params)
        r = (y - prediction) / sigma
        return (
            jsp.gammaln(0.5 * (nu + 1.0))
            - jsp.gammaln(0.5 * nu)
            - 0.5 * jnp.log(nu * jnp.pi)
            - jnp.log(sigma)
            - 0.5 * (nu + 1.0) * jnp.log1p(r**2 / nu)
        )


class Poisson(Likelihood):
    """Counting statistics: ``y_i ~ Poisson(f_i)``, ``f_i > 0`` the expected counts
    (e.g. X-ray counts).  ``log p = y log f - f - log y!``."""

    def pointwise_log_prob(self, y, prediction, params):
        # y log f with its gradient kept finite where y = 0 and f = 0 (a zero-count
        # element whose expected count is exactly zero, e.g. an absent element with no
        # background): xlogy's derivative y/f is 0/0 there.
        observed = y > 0
        y_log_f = jnp.where(observed, y * jnp.log(jnp.where(observed, prediction, 1.0)), 0.0)
        return y_log_f - prediction - jsp.gammaln(y + 1.0)

    def validate(self, y) -> None:
        y = jnp.asarray(y)
        if bool(jnp.any(y < 0)) or not bool(jnp.all(y == jnp.round(y))):
            raise ValueError("Poisson likelihood needs non-negative integer counts in the data")


class LogNormal(_GaussianResiduals):
    """Multiplicative noise: ``log y_i ~ N(log f_i, sigma^2)`` for ``y, f > 0``.

    ``sigma`` is the standard deviation of ``log y`` (≈ relative error); the
    density of ``y`` carries the Jacobian ``1/y``."""

    def _map(self, values):
        return jnp.log(values)

    def _log_jacobian(self, y):
        return jnp.log(y)

    def validate(self, y) -> None:
        super().validate(y)
        if not bool(jnp.all(jnp.asarray(y) > 0)):
            raise ValueError("LogNormal likelihood needs strictly positive data")


class _MeasurementKeyError(KeyError):
    """A forward model of a :class:`Joint` read a parameter that does not exist."""

    def __init__(self, key, measurement: str):
        super().__init__(key)
        self.measurement = measurement


class JointForward(eqx.Module):
    """The forward models of a :class:`Joint`: ``params -> {measurement: prediction}``.
    Every part receives the same parameter dict and reads the subset it needs."""

    forwards: dict[str, Callable]
    names: tuple[str, ...] = eqx.field(static=True)

    def __call__(self, params):
        out = {}
        for name in self.names:
            try:
                out[name] = self.forwards[name](params)
            except KeyError as err:
                if isinstance(err, _MeasurementKeyError):
                    raise
                raise _MeasurementKeyError(err.args[0] if err.args else None, name) from err
        return out


def _prefixed(name: str, err: ValueError) -> ValueError:
    return ValueError(f"measurement {name!r}: {err}")


class Joint(Likelihood):
    """Data integration: several measurements of one object, one posterior.

    Measurement ``m`` has its own forward model ``f_m`` (reading any subset of
    the shared parameters ``theta``), its own likelihood (noise model) and its
    own data ``y_m``.  Given ``theta`` the measurements are independent:

        log p(y_1, ..., y_M | theta) = sum_m log p_m(y_m | f_m(theta), noise_m)

    where ``noise_m`` is the measurement's noise level: known (a number or array),
    or a parameter whose value the posterior learns (a prior given in the part's
    likelihood with its own ``name``, or the name of a parameter declared in the
    model's ``priors``, which several parts may then share).

    A ``Joint`` is an ordinary likelihood whose data, predictions and forward
    model are dicts keyed by measurement name; a :class:`~jaxinv.Model` built with
    ``forward=None`` takes its forward model from the ``Joint``, and every engine
    works on the resulting :class:`~jaxinv.Posterior` unchanged:

    * ``Posterior.y`` and ``Posterior.predict(z)`` are ``{measurement: array}``;
      ``Posterior.n_data`` is the total number of data;
    * ``pointwise_log_prob`` (``Posterior.pointwise_log_likelihood``) is the
      flattened per-datum values of every measurement, concatenated in the
      order of the measurements (for LOO/WAIC);
    * when every part is of least-squares form (:class:`Normal`,
      :class:`LogNormal`), ``least_squares_parts`` concatenates the standardised
      residuals of all parts and sums their normalisations, so that the
      Levenberg-Marquardt polish of :func:`~jaxinv.map_estimate` uses
      Gauss-Newton curvature; otherwise ``least_squares`` is False and the
      engines use the exact Hessian.

    Example:
        ```python
        joint = ji.likelihoods.Joint({
            "nmr": (nmr_forward, ji.likelihoods.Normal(sigma=0.01), y_nmr),
            "xrd": (xrd_forward, ji.likelihoods.Normal(sigma="sigma_xrd"), y_xrd),
        })
        model = ji.Model(None, {"k": ji.priors.LogUniform(1e-3, 1e1),
                                "sigma_xrd": ji.priors.LogUniform(1e-3, 1.0)}, joint)
        post = model.condition()                 # or model.condition({"nmr": y1, "xrd": y2})
        fit = ji.map_estimate(post, jax.random.key(0))
        post.predict(post.unconstrain(fit.params))["xrd"]
        ```

    Args:
        measurements: ``{name: (forward, likelihood)}`` or ``{name: (forward,
            likelihood, y)}``; ``forward`` maps the dict of the model's
            parameters to the prediction of that measurement, ``likelihood`` is
            any non-joint likelihood, ``y`` the data (optional: data may instead be
            given to ``Model.condition``).  The dict's order fixes the order of
            the concatenated pointwise log-likelihood and residuals.

    Raises:
        ValueError: for an empty dict, a malformed entry, or an inferred noise
            parameter declared (with a prior) by two measurements under one name;
            data problems (shape, non-finite values, support) are reported by
            ``Model.condition`` naming the measurement.
    """

    forwards: dict[str, Callable]
    likelihoods: dict[str, Likelihood]
    data: dict[str, Any]
    names: tuple[str, ...] = eqx.field(static=True)

    def __init__(self, measurements: dict):
        if not isinstance(measurements, Mapping) or not measurements:
            raise ValueError("Joint needs a non-empty dict {name: (forward, likelihood[, y])}")
        forwards, likelihoods, data = {}, {}, {}
        for name, part in measurements.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"measurement names must be non-empty strings, got {name!r}")
            if not isinstance(part, (tuple, list)) or len(part) not in (2, 3):
                raise ValueError(f"measurement {name!r}: expected a tuple (forward, likelihood) or "
                                 f"(forward, likelihood, y), got {type(part).__name__}")
            forward, likelihood, y = (*part, None) if len(part) == 2 else part
            if not callable(forward):
                raise TypeError(f"measurement {name!r}: forward must be callable: params dict -> prediction")
            if not isinstance(likelihood, Likelihood) or isinstance(likelihood, Joint):
                raise TypeError(f"measurement {name!r}: expected a jaxinv likelihood (not a Joint), "
                                f"got {type(likelihood).__name__}")
            if y is not None and not isinstance(y, jax.Array):
                try:
                    y = np.asarray(y, dtype=float)
                except (TypeError, ValueError):
                    raise ValueError(f"measurement {name!r}: data must be a numeric array") from None
            forwards[name], likelihoods[name], data[name] = forward, likelihood, y
        owners: dict[str, str] = {}
        for name, likelihood in likelihoods.items():
            for param in likelihood.parameters():
                if param in owners:
                    raise ValueError(
                        f"measurements {owners[param]!r} and {name!r} both declare a noise parameter named "
                        f"{param!r}: give each its own name (e.g. Normal(sigma=prior, name='sigma_{name}')), "
                        f"or declare one shared prior in the model's priors and pass its name as sigma"
                    )
                owners[param] = name
        self.forwards = forwards
        self.likelihoods = likelihoods
        self.data = data
        self.names = tuple(measurements)

    # -- parameters ----------------------------------------------------------------
    def parameters(self) -> dict[str, Prior]:
        out = {}
        for name in self.names:
            out.update(self.likelihoods[name].parameters())
        return out

    def references(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(r for name in self.names for r in self.likelihoods[name].references()))

    def check_parameters(self, priors: dict[str, Prior]) -> None:
        for name in self.names:
            try:
                self.likelihoods[name].check_parameters(priors)
            except ValueError as err:
                raise _prefixed(name, err) from None

    # -- data ------------------------------------------------------------------------
    def forward_model(self) -> JointForward:
        return JointForward(self.forwards, self.names)

    def as_data(self, y):
        """``{measurement: array}``: the data stored in the Joint, replaced by those
        in ``y`` (a dict, possibly partial) where given."""
        if y is None:
            given = {}
        elif isinstance(y, Mapping):
            given = dict(y)
        else:
            raise ValueError(
                f"a Joint likelihood takes data as a dict {{measurement: array}} with measurements "
                f"{list(self.names)} (or none, to use the data given to the Joint), got {type(y).__name__}"
            )
        unknown = [k for k in given if k not in self.names]
        if unknown:
            raise ValueError(f"data given for unknown measurement(s) {unknown}; the Joint has {list(self.names)}")
        missing = [n for n in self.names if given.get(n) is None and self.data[n] is None]
        if missing:
            raise ValueError(f"no data for measurement(s) {missing}: give them in the Joint or to condition()")
        out = {}
        for name in self.names:
            try:
                out[name] = as_data(given[name] if given.get(name) is not None else self.data[name])
            except ValueError as err:
                raise _prefixed(name, err) from None
        return out

    def check_prediction(self, y, predicted) -> None:
        if not isinstance(predicted, Mapping):
            raise ValueError("the forward model of a Joint must return a dict {measurement: prediction}")
        for name in self.names:
            try:
                self.likelihoods[name].check_prediction(y[name], predicted[name])
            except ValueError as err:
                raise _prefixed(name, err) from None

    def validate(self, y) -> None:
        for name in self.names:
            try:
                self.likelihoods[name].validate(y[name])
            except ValueError as err:
                raise _prefixed(name, err) from None

    # -- densities --------------------------------------------------------------------
    def pointwise_log_prob(self, y, prediction, params):
        """Per-datum log-likelihood of every measurement, flattened and concatenated
        in measurement order (a 1-D array of length ``n_data``)."""
        return jnp.concatenate([
            jnp.ravel(self.likelihoods[n].pointwise_log_prob(y[n], prediction[n], params)) for n in self.names
        ])

    def log_prob(self, y, prediction, params):
        return sum(self.likelihoods[n].log_prob(y[n], prediction[n], params) for n in self.names)

    @property
    def least_squares(self) -> bool:
        """True when every measurement's likelihood is of least-squares form."""
        return all(self.likelihoods[n].least_squares for n in self.names)

    def least_squares_parts(self, y, prediction, params):
        """Concatenated standardised residuals of all measurements and the summed
        normalisations; ``None`` unless every part is of least-squares form."""
        if not self.least_squares:
            return None
        rs, cs = [], []
        for n in self.names:
            r, c = self.likelihoods[n].least_squares_parts(y[n], prediction[n], params)
            rs.append(jnp.ravel(r))
            cs.append(c)
        return jnp.concatenate(rs), sum(cs)
