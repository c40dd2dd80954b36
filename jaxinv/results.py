"""The one result type every engine returns, with ArviZ export and netCDF save/load.

``Result.params`` holds constrained (physical-unit) parameter values:

* point estimates (MAP): ``sample_dims == 0``, each array has the parameter's shape;
* draws (Laplace, samplers): ``sample_dims == 2``, shape ``(chains, draws, *shape)``.

``log_evidence`` is ``log p(y | model)`` where the engine estimates it (NaN
otherwise); ``free_energy = -log_evidence``.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["Result", "summarize_draws"]


def _az():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz as az
    return az


def named_dataset(arrays: dict, leading: tuple[str, ...]):
    """An ``xarray.Dataset`` of ``arrays`` whose first axes are named ``leading`` (as many as
    each array has) and the others ``NAME_dim_i``."""
    import xarray as xr

    data = {}
    for k, v in arrays.items():
        v = np.asarray(v)
        dims = leading[: v.ndim] + tuple(f"{k}_dim_{i}" for i in range(v.ndim - len(leading)))
        data[k] = (dims, v)
    return xr.Dataset(data)


def summarize_draws(draws: np.ndarray) -> dict[str, Any]:
    """Mean, sd, 5% and 95% quantiles over the leading (chain, draw) axes."""
    flat = np.asarray(draws).reshape((-1,) + np.shape(draws)[2:])
    q05, q95 = np.quantile(flat, [0.05, 0.95], axis=0)
    return {"mean": flat.mean(0), "sd": flat.std(0, ddof=1) if flat.shape[0] > 1 else np.zeros_like(flat[0]),
            "q05": q05, "q95": q95}


class Result(eqx.Module):
    """Output of an inference engine.

    Attributes:
        params: ``{name: array}`` in constrained space (see module docstring).
        method: engine name (``"map"``, ``"laplace"``, ``"nuts"``, ...).
        sample_dims: 0 for a point estimate, 2 for ``(chain, draw)`` draws.
        log_evidence: estimate of ``log p(y | model)`` (NaN if not estimated).
        log_evidence_se: its standard error (0 for deterministic approximations).
        stats: engine statistics (``{name: array}``), e.g. the energies of all starts.
        laplace: the Laplace approximation at the mode (MAP only).
        observed: the data the posterior was conditioned on: an array, or
            ``{measurement: array}`` for a :class:`~jaxinv.likelihoods.Joint`.
        approximation: the fitted variational distribution (SVI only; see
            :class:`jaxinv.inference.svi.Variational`); not saved by :meth:`save`.
        settings: the settings the engine ran with, as ``(name, value)`` pairs: defaults
            filled in and ``"auto"`` choices resolved, e.g. ``("kernel", "slice")`` where
            SMC's ``kernel="auto"`` chose slice moves (SMC and REMC; empty for the other
            engines); read them with :attr:`settings_dict`.
    """

    params: dict[str, jax.Array]
    method: str = eqx.field(static=True)
    sample_dims: int = eqx.field(static=True, default=0)
    log_evidence: jax.Array = eqx.field(default_factory=lambda: jnp.asarray(jnp.nan))
    log_evidence_se: jax.Array = eqx.field(default_factory=lambda: jnp.asarray(0.0))
    stats: dict[str, jax.Array] = eqx.field(default_factory=dict)
    laplace: Any = None
    observed: Any = None
    approximation: Any = None
    settings: tuple = eqx.field(static=True, default=())

    @property
    def settings_dict(self) -> dict[str, Any]:
        """:attr:`settings` as a dict."""
        return dict(self.settings)

    @property
    def free_energy(self) -> jax.Array:
        """Bayesian free energy ``F = -log p(y | model)`` (nats)."""
        return -self.log_evidence

    @property
    def free_energy_se(self) -> jax.Array:
        return self.log_evidence_se

    def summary(self) -> dict[str, dict[str, np.ndarray]]:
        """Per-parameter mean, sd, q05, q95 (draws) or value and Laplace sd (point)."""
        if self.sample_dims == 2:
            return {k: summarize_draws(np.asarray(v)) for k, v in self.params.items()}
        se = self.laplace.standard_errors if self.laplace is not None else {}
        out = {}
        for k, v in self.params.items():
            v = np.asarray(v)
            sd = np.asarray(se.get(k, np.full_like(v, np.nan)))
            out[k] = {"mean": v, "sd": sd, "q05": v - 1.6448536269514722 * sd, "q95": v + 1.6448536269514722 * sd}
        return out

    # -- ArviZ -------------------------------------------------------------------
    def _posterior_arrays(self) -> dict[str, np.ndarray]:
        if self.sample_dims == 2:
            return {k: np.asarray(v) for k, v in self.params.items()}
        return {k: np.asarray(v)[None, None] for k, v in self.params.items()}

    def to_arviz(self):
        """An ``arviz.InferenceData`` with ``posterior``, ``sample_stats`` (per-draw
        statistics), ``observed_data`` (variable ``y``, or one variable per
        measurement of a Joint) and, for engine-level statistics and the
        Laplace approximation, the extra groups ``engine_stats`` and ``laplace``."""
        az = _az()

        dataset = named_dataset
        post = self._posterior_arrays()
        chains, draws = next(iter(post.values())).shape[:2]
        per_draw = {k: v for k, v in self.stats.items() if self.sample_dims == 2 and np.shape(v)[:2] == (chains, draws)}
        engine = {k: v for k, v in self.stats.items() if k not in per_draw}
        attrs = {
            "jaxinv_method": self.method,
            "jaxinv_sample_dims": self.sample_dims,
            "log_evidence": float(self.log_evidence),
            "log_evidence_se": float(self.log_evidence_se),
            "jaxinv_settings": json.dumps(self.settings),
        }
        groups = {"posterior": dataset(post, ("chain", "draw"))}
        groups["posterior"].attrs.update(attrs)
        if per_draw:
            groups["sample_stats"] = dataset(per_draw, ("chain", "draw"))
        if isinstance(self.observed, Mapping):
            groups["observed_data"] = dataset({k: np.asarray(v) for k, v in self.observed.items()}, ())
            # the measurement order (netCDF need not keep variable order)
            groups["observed_data"].attrs["jaxinv_measurements"] = json.dumps(list(self.observed))
        elif self.observed is not None:
            groups["observed_data"] = dataset({"y": np.asarray(self.observed)}, ())
        if engine:
            groups["engine_stats"] = dataset(engine, ())
        if self.laplace is not None:
            groups["laplace"] = dataset(self.laplace.arrays(), ())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return az.InferenceData(**groups)

    # -- persistence -------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the result as netCDF (ArviZ groups, h5netcdf engine)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.to_arviz().to_netcdf(str(path), engine="h5netcdf")
        return path

    @classmethod
    def load(cls, path) -> "Result":
        """Read a result written by :meth:`save`."""
        from .inference.laplace import Laplace

        az = _az()
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"no result file at {path}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            idata = az.from_netcdf(str(path), engine="h5netcdf")
        post = idata.posterior
        attrs = post.attrs
        sample_dims = int(attrs["jaxinv_sample_dims"])
        params = {k: jnp.asarray(post[k].values if sample_dims == 2 else post[k].values[0, 0]) for k in post.data_vars}
        stats = {}
        for group in ("sample_stats", "engine_stats"):
            if group in idata.groups():
                stats.update({k: jnp.asarray(v.values) for k, v in idata[group].data_vars.items()})
        laplace = None
        if "laplace" in idata.groups():
            laplace = Laplace.from_arrays({k: v.values for k, v in idata["laplace"].data_vars.items()})
        observed = None
        if "observed_data" in idata.groups():
            obs = idata.observed_data
            if "jaxinv_measurements" in obs.attrs:
                observed = {k: jnp.asarray(obs[k].values) for k in json.loads(obs.attrs["jaxinv_measurements"])}
            else:
                observed = jnp.asarray(obs["y"].values)
        return cls(
            params=params,
            method=str(attrs["jaxinv_method"]),
            sample_dims=sample_dims,
            log_evidence=jnp.asarray(float(attrs["log_evidence"])),
            log_evidence_se=jnp.asarray(float(attrs["log_evidence_se"])),
            stats=stats,
            laplace=laplace,
            observed=observed,
            settings=settings_from_json(attrs.get("jaxinv_settings", "[]")),
        )


def engine_settings(config, **more) -> tuple:
    """An engine's resolved settings (a NamedTuple, plus keyword extras) as the hashable
    ``(name, value)`` pairs of :attr:`Result.settings`."""
    items = {**config._asdict(), **more}
    return tuple((name, _hashable(value)) for name, value in items.items())


def settings_from_json(text: str) -> tuple:
    """:attr:`Result.settings` from its JSON form (lists back to tuples)."""
    return tuple((name, _hashable(value)) for name, value in json.loads(text))


def _hashable(value):
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def to_json_value(x):
    """Numbers and arrays as JSON-ready Python values (NaN -> None)."""
    arr = np.asarray(x)
    if arr.ndim == 0:
        v = float(arr)
        return None if not math.isfinite(v) else v
    return [to_json_value(a) for a in arr]

