"""Many inversions at once: one engine over a leading dataset axis, on one or many devices.

``ji.batch(engine, model, Y, key, **engine_options)`` runs ``engine`` (``ji.map_estimate``,
``ji.sample`` with any method, ``ji.svi``, ``ji.select``, or a user function
``infer_one(post, key) -> pytree``) on every dataset ``Y[i]``:

* **one compiled program** -- each engine provides a pure ``trace(post, key)`` (the same
  computation as its single-dataset call, with the same keys), which is ``vmap``-ed over
  the datasets of a chunk with the posterior built inside from the traced data;
* **keys** ``fold_in(key, i)`` for the global dataset index ``i``: the same draws whatever
  the chunking, device count or process layout (never keys from chunk-local indices);
* **memory-bounded chunks** of ``chunk_size`` datasets (the last one padded, so one
  compile serves all);
* **devices**: with more than one device the chunk's dataset axis is split over a 1-D mesh
  with ``jax.shard_map`` (``check_vma=False``) -- each device runs its own vmapped lanes with
  no cross-device communication.  Measured on JAX 0.10 (``../shared/notes/batch-and-cluster.md``):
  ``jit`` with ``NamedSharding`` auto-partitioning inserted an all-reduce into every
  iteration of a vmapped sampler's while loops (~37x slower than one device), and
  ``check_vma=True`` both breaks BlackJAX's ``cond`` and turns gradients of replicated
  constants into silent cross-device sums.  ``pmap`` is not used;
* **multi-host**: after ``jax.distributed.initialize()`` the mesh spans every process's
  devices; each process feeds the rows of its own devices and gathers the results
  (:mod:`jaxinv.cluster` has the launch recipes);
* **failures are marked, never dropped**: a dataset whose data are invalid, whose engine
  reports no finite answer (``stats["ok"]``) or whose parameters are non-finite is flagged
  in ``failed`` with the reason in ``errors``; when a whole chunk raises (e.g. an ODE
  solver error), its datasets are rerun one by one so that only the culprits fail;
* **resumable**: with ``out=DIR`` each finished chunk is written atomically
  (``chunk_NNNNNN.npz``) next to a manifest fingerprinting the run; a rerun after a kill
  loads the finished chunks and computes only the missing ones.

Samplers under ``vmap`` move in lockstep: every iteration costs the most expensive lane.
``BatchResult.lane_efficiency`` reports the useful fraction of the gradient evaluations
paid (for NUTS, the mean over lanes of the tree size divided by the largest one, per
device shard); the batch default for ``ji.sample`` is therefore static-path HMC, whose
lanes all take ``num_integration_steps`` gradients per iteration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .inference._checkpoint import atomic_write
from .inference._progress import ProgressBar, end_progress, progress_reporter, report_progress
from .inference.laplace import boundary_parameters
from .model import Model, Posterior
from .results import Result, named_dataset, settings_from_json, summarize_draws

__all__ = ["batch", "BatchResult", "BatchSelection", "load_batch"]

_MANIFEST = "manifest.json"


# ------------------------------------------------------------------------------- engines
class _UserTrace(eqx.Module):
    function: Callable = eqx.field(static=True)

    def __call__(self, post, key):
        return self.function(post, key)


def _adapter(engine, post0: Posterior, options: dict) -> tuple[Callable, Callable, str]:
    """``(trace, finish, name)`` of ``engine`` for a posterior shaped like ``post0``."""
    from .inference.map import batch_adapter as map_adapter
    from .inference.map import map_estimate
    from .inference.mcmc import sample_hmc
    from .inference.replica_exchange import sample_remc
    from .inference.sample import batch_adapter as sample_adapter
    from .inference.sample import sample
    from .inference.smc import sample_smc

    if engine is map_estimate:
        return (*map_adapter(post0, **options), "map")
    if engine in (sample, sample_hmc, sample_smc, sample_remc):
        options = dict(options)
        default = {sample: "hmc", sample_hmc: "nuts", sample_smc: "smc", sample_remc: "remc"}[engine]
        method = options.pop("method", default)
        return (*sample_adapter(post0, method, **options), method)
    from . import inference

    if engine in (inference.free_energy, inference.laplace, inference.gmrf_laplace, inference.particle_filter,
                  inference.particle_smoother):
        raise TypeError(f"{engine.__name__} has no batched form; ji.batch takes ji.map_estimate, ji.sample "
                        "(and sample_hmc/smc/remc), ji.svi, ji.select, or a pure function (post, key) -> pytree")
    svi = _svi_engine()
    if svi is not None and engine is svi[0]:
        return (*svi[1](post0, **options), "svi")
    if callable(engine):
        if options:
            raise TypeError(f"options {sorted(options)} given for a user function; bind them with functools.partial")

        return _UserTrace(engine), (lambda stacked: stacked), getattr(engine, "__name__", "custom")
    raise TypeError(f"engine must be ji.map_estimate, ji.sample, ji.svi, ji.select or a function "
                    f"(post, key) -> pytree; got {type(engine).__name__}")


def _svi_engine():
    try:
        from .inference.svi import batch_adapter, svi
    except ImportError:
        return None
    return svi, batch_adapter


# ------------------------------------------------------------------------------- data
def _n_datasets(Y) -> int:
    leaves = jax.tree.leaves(Y)
    if not leaves:
        raise ValueError("Y holds no data")
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if None in sizes:
        raise ValueError("Y needs a leading dataset axis (got a scalar)")
    if len(sizes) != 1:
        raise ValueError(f"every leaf of Y needs the same number of datasets along axis 0, got {sorted(sizes)}")
    n = sizes.pop()
    if n == 0:
        raise ValueError("Y holds no datasets (leading axis of length 0)")
    return int(n)


def _row(Y, i):
    return jax.tree.map(lambda x: np.asarray(x)[i], Y)


def _check_rows(model: Model, Y, n: int) -> list[str | None]:
    """Per dataset ``None`` or the reason its data cannot be used."""
    reasons: list[str | None] = [None] * n
    leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(Y)]
    finite = np.ones(n, bool)
    for leaf in leaves:
        if leaf.dtype.kind in "fc":
            finite &= np.isfinite(leaf.reshape(n, -1)).all(axis=1)
    for i in np.flatnonzero(~finite):
        reasons[i] = "data contain NaN or inf"
    validate = model.likelihood.validate
    for i in np.flatnonzero(finite):
        try:
            validate(model.likelihood.as_data(_row(Y, i)))
        except ValueError as err:
            reasons[i] = f"invalid data: {err}"
    return reasons


# ------------------------------------------------------------------------------- results
@dataclass
class BatchResult:
    """Results of one engine over many datasets.

    Attributes:
        stacked: a :class:`~jaxinv.Result` whose every array has a leading dataset axis
            (``params[name]`` is ``(n_datasets, *per_dataset_shape)``); failed datasets
            hold NaN.
        failed: ``(n_datasets,)`` bool.
        errors: per dataset ``None`` or the reason it failed.
        method: the engine's name.
        lane_efficiency: useful / paid gradient evaluations of the vmapped sampler lanes
            (1 for fixed-step kernels, NaN when not a gradient sampler).
        n_devices: devices the datasets were spread over (all processes together).
        model: the model (for ``result[i].laplace.sample`` and the like).
        Y: the data.
    """

    stacked: Result
    failed: np.ndarray
    errors: list
    method: str
    lane_efficiency: float = float("nan")
    n_devices: int = 1
    model: Any = None
    Y: Any = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.failed.shape[0])

    @property
    def params(self) -> dict[str, np.ndarray]:
        return self._result().params

    @property
    def log_evidence(self) -> np.ndarray:
        return np.asarray(self._result().log_evidence) * np.ones(len(self))

    @property
    def free_energy(self) -> np.ndarray:
        return -self.log_evidence

    @property
    def stats(self) -> dict:
        return self._result().stats

    def __getitem__(self, i: int):
        """The :class:`~jaxinv.Result` of dataset ``i`` (as the single-dataset engine gives it;
        for a user function, its output for dataset ``i``)."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"dataset {i} out of range for a batch of {n}")
        i = int(i) % n
        one = jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[i] if np.ndim(x) else x), self.stacked)
        if not isinstance(one, Result):
            return one
        observed = None if self.Y is None else jax.tree.map(jnp.asarray, _row(self.Y, i))
        laplace = one.laplace
        if laplace is not None and self.model is not None and observed is not None and not self.failed[i]:
            post = self.model.condition(observed)
            params = one.params if one.sample_dims == 0 else one.stats.get("_map", post.constrain(laplace.mode))
            at_boundary = boundary_parameters(post, params)
            laplace = dataclasses.replace(laplace, at_boundary=at_boundary, posterior=post)
        stats = {k: v for k, v in one.stats.items() if not k.startswith("_")}
        return Result(params={k: one.params[k] for k in self.stacked.params}, method=one.method,
                      sample_dims=one.sample_dims, log_evidence=one.log_evidence, log_evidence_se=one.log_evidence_se,
                      stats=stats, laplace=laplace, observed=observed, settings=one.settings)

    def _result(self) -> Result:
        if not isinstance(self.stacked, Result):
            raise TypeError(f"a batch of the user function {self.method!r} holds its outputs in .stacked "
                            "(no parameters, evidence or table)")
        return self.stacked

    def summary_table(self) -> list[dict]:
        """One row per dataset: ``dataset``, ``failed``, ``error``, ``free_energy``,
        ``free_energy_se``, per parameter element ``NAME[.j]_mean/_sd/_q05/_q95`` (draws) or
        ``NAME[.j]`` and ``NAME[.j]_sd`` (MAP, Laplace sd), the scalar diagnostics the
        engine reports (``rhat_max``, ``ess_min``, ``divergences``, ``converged``, ...) and,
        for a MAP, ``at_boundary``: the parameters whose MAP lies on a bound of its prior's
        support (space-separated; ``laplace.at_boundary`` of ``result[i]``)."""
        self._result()
        boundary = None
        if self.stacked.sample_dims == 0 and self.stacked.laplace is not None and self.model is not None:
            # the priors do not depend on the data: one vectorised check per parameter
            flags = {k: np.asarray(jax.vmap(p.boundary_flag)(jnp.asarray(self.stacked.params[k])))
                     for k, p in self.model.all_priors.items()}
            boundary = [" ".join(k for k, f in flags.items() if f[i]) for i in range(len(self))]
        rows = []
        stats = {k: np.asarray(v) for k, v in self.stacked.stats.items()
                 if not k.startswith("_") and not isinstance(v, tuple) and np.ndim(v) == 1}
        stats.pop("ok", None)
        le = np.asarray(self.stacked.log_evidence) * np.ones(len(self))
        le_se = np.asarray(self.stacked.log_evidence_se) * np.ones(len(self))
        for i in range(len(self)):
            row = {"dataset": i, "failed": bool(self.failed[i]), "error": self.errors[i] or "",
                   "free_energy": float(-le[i]), "free_energy_se": float(le_se[i])}
            for name, value in self.stacked.params.items():
                value = np.asarray(value[i])
                if self.stacked.sample_dims == 2:
                    summary = summarize_draws(value)
                    for label in _element_labels(name, value.shape[2:]):
                        for stat in ("mean", "sd", "q05", "q95"):
                            row[f"{label[0]}_{stat}"] = float(np.ravel(summary[stat])[label[1]])
                else:
                    sd = None
                    if self.stacked.laplace is not None:
                        sd = np.asarray(self.stacked.laplace.standard_errors[name][i])
                    for label in _element_labels(name, value.shape):
                        row[label[0]] = float(np.ravel(value)[label[1]])
                        if sd is not None:
                            row[f"{label[0]}_sd"] = float(np.ravel(sd)[label[1]])
            for k, v in stats.items():
                row[k] = v[i].item()
            if boundary is not None:
                row["at_boundary"] = "" if self.failed[i] else boundary[i]
            rows.append(row)
        return rows

    def write_table(self, path) -> Path:
        """:meth:`summary_table` as CSV."""
        import csv

        rows = self.summary_table()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path

    def save(self, path) -> Path:
        """Write the batch as one netCDF file with a ``dataset`` dimension: group
        ``posterior`` (``dataset, chain, draw, ...`` or ``dataset, ...`` for MAP),
        ``stats`` (engine statistics), ``laplace`` (when present) and ``batch``
        (``failed``, ``errors``, attributes ``method``, ``lane_efficiency``)."""
        import xarray as xr

        self._result()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lead = ("dataset", "chain", "draw") if self.stacked.sample_dims == 2 else ("dataset",)

        dataset = named_dataset
        stats = {k: v for k, v in self.stacked.stats.items() if not k.startswith("_")}
        batch = xr.Dataset({"failed": (("dataset",), self.failed.astype(np.int8)),
                            "log_evidence": (("dataset",), self.log_evidence * np.ones(len(self))),
                            "log_evidence_se": (("dataset",),
                                                np.asarray(self.stacked.log_evidence_se) * np.ones(len(self)))})
        batch.attrs.update({"method": self.method, "lane_efficiency": float(self.lane_efficiency),
                            "n_devices": int(self.n_devices), "sample_dims": int(self.stacked.sample_dims),
                            "errors": json.dumps(self.errors), "settings": json.dumps(getattr(self.stacked, "settings", ()))})
        if path.exists():
            path.unlink()
        batch.to_netcdf(path, group="batch", engine="h5netcdf", mode="w")
        dataset(self.stacked.params, lead).to_netcdf(path, group="posterior", engine="h5netcdf", mode="a")
        dataset(stats, ("dataset",)).to_netcdf(path, group="stats", engine="h5netcdf", mode="a")
        if self.stacked.laplace is not None:
            lap = self.stacked.laplace
            arrays = {"mode": lap.mode, "hessian": lap.hessian, "covariance": lap.covariance,
                      "log_evidence": lap.log_evidence}
            arrays.update({f"se_{k}": v for k, v in lap.standard_errors.items()})
            dataset(arrays, ("dataset",)).to_netcdf(path, group="laplace", engine="h5netcdf", mode="a")
        return path


def _element_labels(name: str, shape) -> list[tuple[str, int]]:
    size = math.prod(shape)
    if size == 1 and len(shape) == 0:
        return [(name, 0)]
    return [(f"{name}.{j}", j) for j in range(size)]


def load_batch(path) -> BatchResult:
    """Read a :class:`BatchResult` written by :meth:`BatchResult.save` (without model and data)."""
    import xarray as xr

    from .inference.laplace import Laplace

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no batch result file at {path}")
    with xr.open_dataset(path, group="batch", engine="h5netcdf") as b:
        b = b.load()
    sample_dims = int(b.attrs["sample_dims"])
    with xr.open_dataset(path, group="posterior", engine="h5netcdf") as p:
        params = {k: jnp.asarray(v.values) for k, v in p.load().data_vars.items()}
    with xr.open_dataset(path, group="stats", engine="h5netcdf") as s:
        stats = {k: jnp.asarray(v.values) for k, v in s.load().data_vars.items()}
    laplace = None
    try:
        with xr.open_dataset(path, group="laplace", engine="h5netcdf") as g:
            arrays = {k: v.values for k, v in g.load().data_vars.items()}
        laplace = Laplace(mode=jnp.asarray(arrays["mode"]), hessian=jnp.asarray(arrays["hessian"]),
                          covariance=jnp.asarray(arrays["covariance"]),
                          log_evidence=jnp.asarray(arrays["log_evidence"]),
                          standard_errors={k[3:]: jnp.asarray(v) for k, v in arrays.items() if k.startswith("se_")})
    except OSError:
        pass
    stacked = Result(params=params, method=str(b.attrs["method"]), sample_dims=sample_dims,
                     log_evidence=jnp.asarray(b["log_evidence"].values),
                     log_evidence_se=jnp.asarray(b["log_evidence_se"].values), stats=stats, laplace=laplace,
                     settings=settings_from_json(b.attrs.get("settings", "[]")))
    return BatchResult(stacked=stacked, failed=b["failed"].values.astype(bool), errors=json.loads(b.attrs["errors"]),
                       method=str(b.attrs["method"]), lane_efficiency=float(b.attrs["lane_efficiency"]),
                       n_devices=int(b.attrs["n_devices"]))


# ------------------------------------------------------------------------------- chunk files
def _hash_value(h, value) -> None:
    """Feed ``value`` into the hash ``h``: arrays by their bytes, pytrees leaf by leaf, the
    rest by a repr without memory addresses (functions and optax optimisers print them)."""
    import re

    leaves, treedef = jax.tree.flatten(value, is_leaf=lambda x: isinstance(x, (np.ndarray, jax.Array)))
    h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", str(treedef)).encode())
    for leaf in leaves:
        if isinstance(leaf, (np.ndarray, jax.Array)) or np.isscalar(leaf):
            if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            arr = np.ascontiguousarray(np.asarray(leaf))
            h.update(repr((arr.dtype.str, arr.shape)).encode())
            h.update(arr.tobytes())
        else:
            h.update(re.sub(r" at 0x[0-9a-fA-F]+", "", repr(leaf)).encode())


def _fingerprint(name: str, key, options: dict, Y, n: int, chunk_size: int, model: Model, template) -> str:
    """Hash of what determines a batch's chunks: engine, key, options, data, chunking, the
    model (its arrays by bytes, its structure and functions by name), the precision, the
    jaxinv version and the output's structure, shapes and dtypes."""
    from . import __version__

    h = hashlib.sha256()
    h.update(repr((name, n, chunk_size, __version__, jax.config.jax_enable_x64)).encode())
    for part in (key, sorted(options.items(), key=lambda kv: kv[0]), Y, model):
        _hash_value(h, part)
    h.update(repr([(t.shape, str(t.dtype)) for t in jax.tree.leaves(template)]).encode())
    return h.hexdigest()


def _open_store(out, fingerprint: str) -> Path:
    """The chunk folder, with a manifest naming the batch it belongs to.  The manifest is
    created exclusively (``O_EXCL``), so two tasks started with different settings cannot
    both claim the folder; then it is read back and checked."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / _MANIFEST
    payload = json.dumps({"fingerprint": fingerprint}).encode()
    try:
        fd = os.open(manifest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    try:
        found = json.loads(manifest.read_text() or "{}").get("fingerprint")
    except json.JSONDecodeError:
        found = None
    if found != fingerprint:
        raise ValueError(f"{out} holds chunks of a different batch (other engine, options, model, key or data); "
                         "remove it or choose another out=")
    return out


def _atomic_write(path: Path, payload: bytes) -> None:
    atomic_write(path, lambda f: f.write(payload))


def _chunk_path(out: Path, c: int) -> Path:
    return out / f"chunk_{c:06d}.npz"


def _save_chunk(out: Path, c: int, leaves: list, errors: list, lane: tuple) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, errors=np.asarray(json.dumps(errors)), lane=np.asarray(lane, float),
             **{f"leaf_{j}": x for j, x in enumerate(leaves)})
    _atomic_write(_chunk_path(out, c), buffer.getvalue())


def _load_chunk(out: Path, c: int, leaves_t: list, n_rows: int):
    """``(leaves, errors, lane)`` of a finished chunk, or ``None`` when it is not on disk."""
    path = _chunk_path(out, c)
    if not path.exists():
        return None
    try:
        with np.load(path) as data:
            leaves = [data[f"leaf_{j}"] for j in range(len(leaves_t))]
            errors = json.loads(str(data["errors"]))
            lane = tuple(float(v) for v in data["lane"]) if "lane" in data else (0.0, 0.0)
    except (OSError, KeyError, EOFError, ValueError) as err:
        raise ValueError(f"chunk file {path} cannot be read ({err}); remove it to recompute that chunk") from None
    for leaf, t in zip(leaves, leaves_t):
        if leaf.shape != (n_rows,) + tuple(t.shape):
            raise ValueError(f"chunk file {path} does not match this batch's outputs; remove it to recompute it")
    return leaves, errors, lane


# ------------------------------------------------------------------------------- runner
def _mesh(devices) -> Mesh | None:
    if len(devices) == 1:
        return None
    from jax.sharding import AxisType

    return Mesh(np.asarray(devices), ("batch",), axis_types=(AxisType.Auto,))


def _dataset_key(key, gid, model_slot):
    """``fold_in(key, gid)``; for model ``j`` of ``M`` in a selection ``split(., M)[j]``."""
    k = jax.random.fold_in(key, gid)
    if model_slot is None:
        return k
    j, n_models = model_slot
    return jax.random.split(k, n_models)[j]


@eqx.filter_jit
def _run_chunk_compiled(trace, model: Model, key, model_slot, mesh, gids, Y):
    """One compiled program over a chunk: ``vmap`` of ``trace``, split over ``mesh`` by
    ``shard_map`` when there is one.  The arguments other than arrays (the engine's
    settings inside ``trace``, the mesh, the model's static parts) are hashed, so
    repeated batches of the same engine reuse the compiled program."""

    def one(gid, y):
        return trace(model.condition(y), _dataset_key(key, gid, model_slot))

    many = jax.vmap(one)
    if mesh is None:
        return many(gids, Y)
    spec = PartitionSpec("batch")
    return jax.shard_map(many, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)(gids, Y)


@eqx.filter_jit
def _run_one_compiled(trace, model: Model, key, model_slot, gid, y):
    return trace(model.condition(y), _dataset_key(key, gid, model_slot))


def _placer(mesh: Mesh | None, device):
    """Put a chunk's host array where the compiled program reads it: on ``device``, or split
    over the mesh (with several processes each one supplies its own devices' rows)."""
    if mesh is None:
        return lambda x: jax.device_put(np.asarray(x), device)
    sharding = NamedSharding(mesh, PartitionSpec("batch"))
    if jax.process_count() == 1:
        return lambda x: jax.device_put(np.asarray(x), sharding)

    def place(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return place


def _fetch(tree):
    """Device outputs as numpy arrays on this host (gathered across processes)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        tree = multihost_utils.process_allgather(tree, tiled=True)
    return jax.tree.map(np.asarray, tree)


def batch(engine, model, Y, key, *, chunk_size: int | None = None, devices=None, out=None, task=None,
          progress=None, **options) -> BatchResult | BatchSelection:
    """Run ``engine`` on every dataset of ``Y`` (leading axis), in compiled chunks.

    Args:
        engine: ``ji.map_estimate``, ``ji.sample`` (``method=`` any of its methods;
            default ``"hmc"``, see the module docstring), ``ji.svi``, ``ji.select``
            (then ``model`` is ``{name: Model}`` and ``method=`` names the engine of
            each model's free energy), or a function ``infer_one(post, key) -> pytree``
            that is pure (``jit``/``vmap``-able).
        model: the :class:`~jaxinv.Model` every dataset shares (a dict of models for
            ``ji.select``).
        Y: data with a leading dataset axis: an array ``(n_datasets, *data_shape)``, or
            for a :class:`~jaxinv.likelihoods.Joint` a dict of such arrays.
        key: PRNG key; dataset ``i`` uses ``fold_in(key, i)``.
        chunk_size: datasets per compiled call (memory bound; default 256, or all
            datasets when fewer).  Rounded up to a multiple of the number of devices.
        devices: devices to spread each chunk over (default: every device of every
            process, ``jax.devices()``).
        out: directory for per-chunk result files; a rerun with the same arguments
            resumes from them.
        task: ``(task_id, n_tasks)``: compute only the chunks ``c`` with
            ``c % n_tasks == task_id`` (needs ``out``), e.g. one task of a SLURM job
            array (:func:`jaxinv.cluster.task_from_env`); datasets of other tasks'
            chunks not yet on disk are marked "not computed".  When every task has
            finished, a call without ``task`` loads all chunks and computes nothing.
        progress: ``callable(done, total)`` per finished chunk, or ``True`` for a line
            on stderr.
        **options: the engine's keyword arguments (e.g. ``n_starts``, ``n_draws``,
            ``method``).

    Returns:
        A :class:`BatchResult` (a :class:`BatchSelection` for ``ji.select``).

    Raises:
        ValueError: ``Y`` without a leading dataset axis or of a shape the model does
            not predict, every dataset invalid, or ``out`` holding another batch.
    """
    return _batch(engine, model, Y, key, None, chunk_size=chunk_size, devices=devices, out=out, task=task,
                  progress=progress, **options)


def _batch(engine, model, Y, key, model_slot, *, chunk_size=None, devices=None, out=None, task=None, progress=None,
           **options):
    from .selection import select

    if engine is select:
        return _batch_select(model, Y, key, chunk_size=chunk_size, devices=devices, out=out, task=task,
                             progress=progress, **options)
    if task is not None:
        task_id, n_tasks = (int(v) for v in task)
        if out is None:
            raise ValueError("task= splits the chunks between processes that share out=; give out")
        if not 0 <= task_id < n_tasks:
            raise ValueError(f"task must be (task_id, n_tasks) with 0 <= task_id < n_tasks, got {task}")
    if not isinstance(model, Model):
        raise TypeError(f"model must be a jaxinv Model, got {type(model).__name__}")
    n = _n_datasets(Y)
    reasons = _check_rows(model, Y, n)
    good = [i for i in range(n) if reasons[i] is None]
    if not good:
        raise ValueError(f"no dataset can be used: {reasons[0]}")
    post0 = model.condition(jax.tree.map(jnp.asarray, _row(Y, good[0])))
    trace, finish, name = _adapter(engine, post0, options)
    devices = list(jax.devices() if devices is None else devices)
    n_dev = len(devices)
    if chunk_size is None:
        chunk_size = min(n, 256)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    chunk_size = n_dev * math.ceil(chunk_size / n_dev)
    mesh = _mesh(devices)
    place = _placer(mesh, devices[0])

    def f(gids, rows):
        return _run_chunk_compiled(trace, model, key, model_slot, mesh, gids, rows)

    def single(gid, y):
        return _run_one_compiled(trace, model, key, model_slot, gid, y)

    template = eqx.filter_eval_shape(single, jnp.asarray(0, jnp.int32), jax.tree.map(jnp.asarray, _row(Y, good[0])))
    leaves_t, treedef = jax.tree.flatten(template)

    # invalid rows are replaced by a valid one for the computation and marked afterwards
    Y_run = jax.tree.map(lambda x: np.array(x, copy=True), Y)
    for i in range(n):
        if reasons[i] is not None:
            Y_run = jax.tree.map(lambda x, i=i: _assign(x, i, np.asarray(x)[good[0]]), Y_run)

    store = None
    if out is not None:
        # the trace carries the engine's resolved settings (e.g. kernel="auto" -> "slice"),
        # so chunks run under other defaults are never mixed in
        store = _open_store(out, _fingerprint(name, key, {**options, "model_slot": model_slot, "_trace": trace}, Y, n,
                                              chunk_size, model, template))

    n_chunks = math.ceil(n / chunk_size)
    outputs, useful, paid = [], 0.0, 0.0
    report = progress_reporter(progress, "chunk ")
    for c in range(n_chunks):
        ids = np.arange(c * chunk_size, min((c + 1) * chunk_size, n))
        loaded = _load_chunk(store, c, leaves_t, ids.size) if store is not None else None
        computed = loaded is None and (task is None or c % n_tasks == task_id)
        if loaded is not None:
            leaves, errors, lane = loaded
        elif not computed:
            leaves, lane = _failed_leaves(leaves_t, ids.size), (0.0, 0.0)
            errors = [f"not computed by this task (chunk {c} belongs to task {c % n_tasks} of {n_tasks})"] * ids.size
        else:
            leaves, errors, lane = _run_chunk(f, single, place, Y_run, ids, chunk_size, n_dev, treedef, leaves_t)
            if store is not None and jax.process_index() == 0:
                _save_chunk(store, c, leaves, errors, lane)
        for j, i in enumerate(ids):
            if reasons[i] is None and errors[j] is not None:
                reasons[i] = errors[j]
        useful, paid = useful + lane[0], paid + lane[1]
        outputs.append(leaves)
        if isinstance(report, ProgressBar) and not computed:
            report.rebase(c + 1)  # the time left comes from the chunks computed here
        report_progress(report, c + 1, n_chunks)
    end_progress(report)
    leaves = [np.concatenate([o[j] for o in outputs]) for j in range(len(leaves_t))]
    stacked = jax.tree.unflatten(treedef, leaves)
    if not isinstance(stacked, Result):
        failed = np.array([r is not None for r in reasons])
        _warn_failures(reasons, n)
        return BatchResult(stacked=_blank(stacked, failed), failed=failed, errors=reasons, method=name,
                           n_devices=n_dev, model=model, Y=Y)
    ok = np.asarray(stacked.stats.get("ok", np.ones(n, bool))).astype(bool)
    finite = np.ones(n, bool)
    for v in stacked.params.values():
        finite &= np.isfinite(np.asarray(v).reshape(n, -1)).all(axis=1)
    for i in range(n):
        if reasons[i] is None and not ok[i]:
            reasons[i] = f"{name}: {_NO_ANSWER.get(name, 'no finite answer')}"
        elif reasons[i] is None and not finite[i]:
            reasons[i] = f"{name}: non-finite parameter values"
    failed = np.array([r is not None for r in reasons])
    stacked = _blank(stacked, failed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        stacked = finish(stacked)
    # host statistics of failed datasets (k-hat, ESS, R-hat) mean nothing either
    stacked = _in_order(_blank(stacked, failed), post0.names)
    _warn_failures(reasons, n)
    efficiency = useful / paid if paid > 0 else float("nan")
    return BatchResult(stacked=stacked, failed=failed, errors=reasons, method=name, lane_efficiency=efficiency,
                       n_devices=n_dev, model=model, Y=Y)


#: why an engine's ``stats["ok"]`` is False, per engine name
_NO_ANSWER = {
    "map": "no start reached a finite energy (the prior may exclude the data)",
    "laplace": "no start reached a finite energy (the prior may exclude the data)",
    "hmc": "a chain has a non-finite energy (no feasible start, or the sampler diverged to NaN)",
    "nuts": "a chain has a non-finite energy (no feasible start, or the sampler diverged to NaN)",
    "smc": "tempering did not reach beta = 1 within max_steps, or the evidence is not finite",
    "remc": "a replica has a non-finite log-likelihood",
    "svi": "the final ELBO is not finite",
}


def _in_order(result: Result, names) -> Result:
    """Parameters in the model's order (pytree flattening sorts dict keys)."""
    # dataclasses.replace keeps the dicts as given (eqx.tree_at would rebuild them key-sorted)
    laplace = result.laplace
    if laplace is not None:
        se = laplace.standard_errors
        laplace = dataclasses.replace(laplace, standard_errors={k: se[k] for k in names if k in se})
    return dataclasses.replace(result, params={k: result.params[k] for k in names if k in result.params},
                               laplace=laplace)


def _warn_failures(reasons: list, n: int) -> None:
    bad = [i for i, r in enumerate(reasons) if r is not None]
    if bad:
        warnings.warn(f"{len(bad)} of {n} datasets failed (see BatchResult.errors); first: dataset {bad[0]}: "
                      f"{reasons[bad[0]]}", RuntimeWarning, stacklevel=3)


def _assign(x, i, value):
    x[i] = value
    return x


def _blank(stacked, failed: np.ndarray):
    """Mark the outputs of failed datasets: NaN in floats, -1 in integers, False in booleans
    (their numbers mean nothing, and some are another dataset's)."""
    if not failed.any():
        return stacked

    def blank(x):
        x = np.array(x, copy=True)
        if x.ndim >= 1 and x.shape[0] == failed.shape[0]:
            if x.dtype.kind in "fc":
                x[failed] = np.nan
            elif x.dtype.kind in "iu":
                x[failed] = -1 if x.dtype.kind == "i" else 0
            elif x.dtype.kind == "b":
                x[failed] = False
        return x

    return jax.tree.map(blank, stacked)


def _run_chunk(f, single, place, Y, ids, chunk_size, n_dev, treedef, leaves_t):
    """``(leaves, errors, (useful, paid))`` for datasets ``ids``: the outputs, per dataset
    ``None`` or why it failed, and the lane bookkeeping of a gradient sampler (leapfrog
    steps used by the real lanes, and paid by every lane of each device shard, padding
    included: every draw costs the shard's largest tree)."""
    pad = chunk_size - ids.size
    gids = np.concatenate([ids, np.full(pad, ids[0])]).astype(np.int32)
    rows = jax.tree.map(lambda x: np.asarray(x)[gids], Y)
    try:
        result = jax.block_until_ready(f(place(gids), jax.tree.map(place, rows)))
        full = _fetch(result)
    except Exception as err:  # noqa: BLE001 -- one bad dataset must not kill the batch
        if jax.process_count() > 1:
            raise RuntimeError(f"a chunk failed in a multi-process batch ({_describe(err)}); datasets cannot be "
                               "isolated across processes: run independent tasks (task=, jaxinv.cluster) "
                               "instead") from err
        if _out_of_memory(err):
            raise MemoryError(f"a chunk of {chunk_size} datasets does not fit in device memory ({_describe(err)}); "
                              "lower chunk_size") from err
        if ids.size == 1:
            return _failed_leaves(leaves_t, 1), [_describe(err)], (0.0, 0.0)
        warnings.warn(f"a chunk of {ids.size} datasets raised ({_describe(err)}); rerunning its datasets one by one",
                      RuntimeWarning, stacklevel=4)
        return _one_by_one(single, Y, ids, leaves_t)
    lane = (0.0, 0.0)
    if isinstance(full, Result) and full.sample_dims == 2 and "n_steps" in full.stats:
        steps = np.asarray(full.stats["n_steps"])           # (chunk, chains, draws)
        real = np.arange(chunk_size) < ids.size
        useful = float(steps[real].sum())
        paid = 0.0
        for shard in np.split(steps, n_dev, axis=0):        # shard_map's split of the padded chunk
            lanes = shard.reshape(-1, shard.shape[-1])
            paid += float(lanes.max(axis=0).sum() * lanes.shape[0])
        lane = (useful, paid)
    return [x[: ids.size] for x in jax.tree.leaves(full)], [None] * ids.size, lane


def _one_by_one(single, Y, ids, leaves_t):
    """Rerun the datasets of a chunk that raised, one compiled call each (one process)."""
    per, errors = [], []
    for i in ids:
        try:
            out = jax.block_until_ready(single(jnp.asarray(i, jnp.int32),
                                               jax.tree.map(lambda x, i=i: jnp.asarray(np.asarray(x)[i]), Y)))
            per.append([np.asarray(x)[None] for x in jax.tree.leaves(out)])
            errors.append(None)
        except Exception as err:  # noqa: BLE001
            per.append(_failed_leaves(leaves_t, 1))
            errors.append(_describe(err))
    return [np.concatenate([p[j] for p in per]) for j in range(len(leaves_t))], errors, (0.0, 0.0)


def _out_of_memory(err: Exception) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or isinstance(err, MemoryError)


def _failed_leaves(leaves_t, n: int) -> list:
    out = []
    for t in leaves_t:
        dtype = np.dtype(t.dtype) if not jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key) else np.uint32
        fill = np.nan if dtype.kind in "fc" else 0
        out.append(np.full((n,) + tuple(t.shape), fill, dtype=dtype))
    return out


def _describe(err: Exception) -> str:
    """``Type: message`` in one line.  A runtime error raised inside compiled code
    (``eqx.error_if``, Diffrax's ``throw=True``) carries its message inside a traceback
    text; that message is what is kept."""
    import re

    text = str(err)
    found = re.search(r"EquinoxRuntimeError: (.+)", text)
    if found:
        return f"EquinoxRuntimeError: {found.group(1).strip()}"[:300]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(("File ", "Traceback", "^", "-----"))] or [""]
    return f"{type(err).__name__}: {lines[0]}"[:300]


# ------------------------------------------------------------------------------- selection
@dataclass
class BatchSelection:
    """Model selection over many datasets.

    Attributes:
        names: model names, in the order of the columns below.
        free_energies: ``(n_datasets, n_models)`` F = -log p(y | model) (NaN where failed).
        free_energy_se: its standard errors, same shape.
        results: ``{name: BatchResult}``.
    """

    names: list
    free_energies: np.ndarray
    free_energy_se: np.ndarray
    results: dict

    @property
    def selected(self) -> list:
        """Per dataset the name of the model with the lowest free energy (``None`` if all failed)."""
        out = []
        for row in self.free_energies:
            out.append(None if not np.isfinite(row).any() else self.names[int(np.nanargmin(row))])
        return out

    @property
    def probabilities(self) -> np.ndarray:
        """Posterior model probabilities ``(n_datasets, n_models)`` under equal prior odds."""
        f = np.where(np.isfinite(self.free_energies), self.free_energies, np.inf)
        f = f - f.min(axis=1, keepdims=True)
        w = np.exp(-f)
        return w / w.sum(axis=1, keepdims=True)


def _batch_select(models, Y, key, *, method: str = "laplace", chunk_size=None, devices=None, out=None, task=None,
                  progress=None, **options) -> BatchSelection:
    """Dataset ``i``, model ``j`` (of ``M``) uses the key ``split(fold_in(key, i), M)[j]``: the same
    as ``ji.select(models, Y[i], fold_in(key, i), method)`` gives that model."""
    from .inference.map import map_estimate
    from .inference.sample import sample

    if not isinstance(models, dict) or not models:
        raise TypeError("ji.batch(ji.select, ...) needs a non-empty dict {name: Model}")
    estimators = {"laplace": (map_estimate, {}), "smc": (sample, {"method": "smc"}),
                  "remc": (sample, {"method": "remc"}), "remc_bridge": (sample, {"method": "remc"}),
                  "remc_ti": (sample, {"method": "remc", "evidence_estimator": "ti"}),
                  "remc_stepping_stone": (sample, {"method": "remc", "evidence_estimator": "stepping_stone"})}
    if method not in estimators:
        raise ValueError(f"batched selection supports the free-energy methods {sorted(estimators)}, got {method!r}")
    engine, fixed = estimators[method]
    n_models = len(models)
    results = {}
    for j, (name, model) in enumerate(models.items()):
        sub_out = None if out is None else Path(out) / f"model_{j}"
        results[name] = _batch(engine, model, Y, key, (j, n_models), chunk_size=chunk_size,
                               devices=devices, out=sub_out, task=task, progress=progress, **{**fixed, **options})
    names = list(models)
    f = np.stack([np.where(results[k].failed, np.nan, results[k].free_energy) for k in names], axis=1)
    se = np.stack([np.asarray(results[k].stacked.log_evidence_se) * np.ones(len(results[k])) for k in names], axis=1)
    return BatchSelection(names=names, free_energies=f, free_energy_se=se, results=results)
