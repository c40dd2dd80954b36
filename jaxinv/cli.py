"""The ``jaxinv`` command.

    jaxinv problems
    jaxinv run PROBLEM [--data PATH] [--method laplace|nuts|smc|remc] [--select 1..3]
                       [--seed N] [--out DIR] [--n-starts N] [--option KEY=VALUE ...]
                       [--draws N] [--tune N] [--dense-mass] [--checkpoint DIR] [--quiet]
    jaxinv batch PROBLEM --data DIR_OR_FILE [--method laplace|hmc|nuts|smc|remc|svi]
                         [--model NAME] [--select 1..3] [--layout rows|columns] [--x FILE]
                         [--chunk-size N] [--seed N] [--out DIR] [--n-starts N] [--draws N]
                         [--tune N] [--dense-mass] [--option KEY=VALUE ...] [--quiet]

``run`` fits every candidate model of the problem, compares their free energies,
prints a table, and writes ``DIR/summary.json``, ``DIR/posterior.nc`` (the
selected model) and the problem's PNG figures.  Methods: ``laplace`` (multi-start
MAP, Laplace free energy and draws), ``nuts`` (Laplace free energy, posterior by
NUTS), ``smc`` and ``remc`` (posterior and free energy by tempered SMC or
replica exchange).  A problem that is an estimator rather than a choice among
models (``Problem.run``, e.g. a matrix factorisation) runs that instead, with the
``--option`` keys, and writes its summary and figures.  ``--checkpoint DIR`` keeps one checkpoint per model there, so
a killed run restarted with the same arguments resumes.  Errors are one line on
stderr with exit status 2.

``batch`` inverts many datasets of one problem with :func:`jaxinv.batch`: every file (or
sub-folder) of ``--data DIR`` read by the problem's reader, or every row (``--layout
columns``: column) of an array file (``.npy``, ``.csv``, ``.txt``; the independent
variable from ``--x FILE`` or the problem's embedded data).  The models are built from
the first readable dataset (its ``x`` and the problem's data-dependent prior ranges);
datasets recorded at other ``x`` or unreadable are marked failed, not fatal.  One model
(``--model``, or a problem with one) is inverted by ``--method``; several are compared
per dataset by their free energies (``laplace``, ``smc`` or ``remc``).  Writes
``DIR/batch.nc`` (one model; netCDF with a ``dataset`` dimension) or one ``.nc`` per
model plus ``DIR/selection.csv``, and ``DIR/summary.csv`` (one row per dataset).
Finished chunks are kept in ``DIR/chunks``: a killed run restarted with the same
arguments computes only the missing ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import sys
import warnings
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from .problem import available_problems, load_problem
from .report import format_table, summary_dict, write_summary
from .inference.mcmc import sample_hmc
from .selection import _file_name, select

METHODS = ("laplace", "nuts", "smc", "remc")


def _parse_select(text: str | None):
    """``"1..3"`` -> [1, 2, 3]; ``"1,3"`` -> [1, 3]."""
    if text is None:
        return None
    try:
        if ".." in text:
            lo, hi = (int(v) for v in text.split("..", 1))
            values = list(range(lo, hi + 1))
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"--select expects a range like 1..3 or a list like 1,2,4, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"--select needs component counts >= 1, got {text!r}")
    return values


def _parse_options(items) -> dict:
    """``["noise=spectral", "stretched=false"]`` -> ``{"noise": "spectral", "stretched": False}``
    (``true``/``false`` in any case are booleans; other values Python literals, else strings)."""
    import ast

    options = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        if value.strip().lower() in ("true", "false"):  # any case: smooth=true, smooth=False
            options[key.strip()] = value.strip().lower() == "true"
            continue
        try:
            options[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key.strip()] = value
    return options


def _progress(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


N_CHAINS = 4


def _chain_starts(result, key, n_chains: int):
    """NUTS starting points: draws from the Laplace approximation at the MAP when it is a
    proper Gaussian (chains start in the posterior bulk), else ``None`` (prior draws)."""
    laplace = result.laplace
    if laplace is None or not bool(jax.numpy.isfinite(laplace.log_evidence)):
        return None
    try:
        return laplace.sample_unconstrained(key, (n_chains,))
    except ValueError:  # Hessian not positive definite at the mode
        return None


def _figure_options(problem, options: dict) -> dict:
    """Move the ``--option`` keys that the problem's ``figures`` takes as keywords (after
    ``selection, data, out_dir``) out of ``options``: they shape the outputs, not the models."""
    if problem.figures is None:
        return {}
    params = list(inspect.signature(problem.figures).parameters.values())[3:]
    names = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    model_params = inspect.signature(problem.models).parameters
    both = sorted(names & set(model_params) & set(options))
    if both:
        raise ValueError(f"{problem.name}: option(s) {both} are taken by both its models and its figures")
    return {k: options.pop(k) for k in list(options) if k in names}


def _run_estimator(problem, args, data, options) -> int:
    """A problem with its own estimator (``Problem.run``): no models, no free energies."""
    if args.method is not None or args.select is not None:
        raise ValueError(f"{problem.name} runs its own estimator; --method and --select do not apply")
    try:
        inspect.signature(problem.run).bind(data, None, None, **options)
    except TypeError as err:
        raise ValueError(f"{problem.name} does not take these options ({err})") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = problem.run(data, out, jax.random.key(args.seed), **options)
    summary = {"problem": problem.name, "method": "estimator", "seed": args.seed, **summary,
               "figures": [str(p) for p in summary.get("figures", [])]}
    write_summary(out / "summary.json", summary)
    print(f"{problem.name}: {data.meta.get('source', 'data')}")
    print(summary.get("report", ""))
    print(f"wrote {out / 'summary.json'}" + "".join(f", {p}" for p in summary["figures"]))
    return 0


def run(args) -> int:
    problem = load_problem(args.problem)
    data = problem.load_data(Path(args.data)) if args.data else problem.default_data()
    options = _parse_options(args.option)
    if problem.run is not None:
        return _run_estimator(problem, args, data, options)
    if args.method is None:
        args.method = problem.default_method
    if args.dense_mass and args.method != "nuts":
        raise ValueError(f"--dense-mass applies to --method nuts, not {args.method}")
    components = _parse_select(args.select)
    if components is not None:
        options["n_components"] = components
    figure_options = _figure_options(problem, options)
    try:
        inspect.signature(problem.models).bind(data, **options)
    except TypeError as err:
        raise ValueError(f"{problem.name} does not take these options ({err})") from None
    models = problem.models(data, **options)
    show = not args.quiet and sys.stderr.isatty()
    free_energy_method = "laplace" if args.method in ("laplace", "nuts") else args.method
    if free_energy_method == "laplace":
        engine_options = {"n_starts": args.n_starts}
        if problem.fit_options is not None:
            engine_options.update(problem.fit_options(data))
    elif free_energy_method == "smc":  # --draws particles over 4 independent runs
        engine_options = {"progress": show, "n_particles": max(args.draws // 4, 2)}
    else:  # remc: --draws kept sweeps, --tune tuning sweeps
        engine_options = {"progress": show, "n_draws": args.draws}
        if args.tune is not None:
            engine_options["n_tune"] = args.tune
    _progress(show, f"fitting {len(models)} model(s) of {problem.name} ({args.method})")
    key = jax.random.key(args.seed)
    fit_key, draw_key = jax.random.split(key)
    names = list(models)
    ks = {n: (problem.n_components(n) if problem.n_components else None) for n in names}
    checkpoints = Path(args.checkpoint) if args.checkpoint else None
    selection = select(
        models, data.y, fit_key, method=free_energy_method, n_components=ks,
        on_model=lambda name: _progress(show, f"  {name} ..."),
        checkpoint_dir=checkpoints if free_energy_method != "laplace" else None, **engine_options,
    )
    draws = {}
    for name, k in zip(names, jax.random.split(draw_key, len(names))):
        result = selection.results[name]
        if args.method == "nuts":
            _progress(show, f"  {name}: NUTS ...")
            ckpt = checkpoints / f"{_file_name(name)}.nuts.ckpt" if checkpoints else None
            tune = {} if args.tune is None else {"n_warmup": args.tune}
            init_key, k = jax.random.split(k)
            draws[name] = sample_hmc(selection.posteriors[name], k, "nuts", n_draws=max(args.draws // 4, 1),
                                     init=_chain_starts(result, init_key, N_CHAINS), n_chains=N_CHAINS,
                                     checkpoint=ckpt, progress=show, dense_mass=args.dense_mass, **tune)
        elif result.sample_dims == 2:
            draws[name] = result
        elif result.laplace is not None and bool(jax.numpy.isfinite(result.laplace.log_evidence)):
            draws[name] = result.laplace.sample(k, n_draws=args.draws)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summary_dict(problem.name, args.method, args.seed, selection, draws)
    summary["free_energy_method"] = free_energy_method
    write_summary(out / "summary.json", summary)
    chosen = selection.selected
    (draws.get(chosen) or selection.results[chosen]).save(out / "posterior.nc")
    shown = selection
    if args.method == "nuts":  # figures from the NUTS draws, ranked by the Laplace free energy
        shown = dataclasses.replace(selection, results={
            name: eqx.tree_at(lambda r: (r.log_evidence, r.log_evidence_se), draws[name],
                              (result.log_evidence, result.log_evidence_se))
            for name, result in selection.results.items()})
    written = problem.figures(shown, data, out, **figure_options) if problem.figures else []
    print(f"{problem.name}: {data.meta.get('source', 'data')}  (n = {data.y.size})")
    print(format_table(selection))
    print(f"wrote {out / 'summary.json'}, {out / 'posterior.nc'}" + "".join(f", {p}" for p in written))
    return 0


BATCH_METHODS = ("laplace", "hmc", "nuts", "smc", "remc", "svi")
_ARRAY_SUFFIXES = (".npy", ".csv", ".txt", ".tsv", ".dat")


def _read_array(path: Path):
    if path.suffix == ".npy":
        return np.load(path)
    delimiter = "," if path.suffix == ".csv" else None
    return np.loadtxt(path, delimiter=delimiter, ndmin=2)


def _batch_datasets(problem, path: Path, layout: str, x_path) -> tuple[list, list, list]:
    """``(datasets, labels, errors)``: one entry per dataset, ``None`` and a reason where it
    could not be read."""
    from .problem import Dataset

    if not path.exists():
        raise ValueError(f"no such file or folder: {path}")
    if path.is_dir():
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        if not entries:
            raise ValueError(f"{path} holds no data files")
        datasets, errors = [], []
        for entry in entries:
            try:
                datasets.append(problem.load_data(entry))
                errors.append(None)
            except (ValueError, OSError, KeyError, IndexError) as err:
                datasets.append(None)
                errors.append(f"cannot read {entry.name}: {err}")
        return datasets, [p.name for p in entries], errors
    if path.suffix not in _ARRAY_SUFFIXES:
        raise ValueError(f"{path}: a batch needs a folder of data files or an array file ({', '.join(_ARRAY_SUFFIXES)})")
    table = np.asarray(_read_array(path), dtype=float)
    if table.ndim != 2 or table.size == 0:
        raise ValueError(f"{path}: expected a 2-D array (one dataset per {layout[:-1]}), got shape {table.shape}")
    rows = table if layout == "rows" else table.T
    x = np.asarray(_read_array(Path(x_path)), dtype=float).ravel() if x_path else problem.default_data().x
    if not isinstance(x, np.ndarray) or x.ndim != 1:
        raise ValueError(f"{problem.name}: its data are not one curve over a 1-D x, so an array file cannot hold "
                         "them; give a folder of data files")
    if np.shape(x)[0] != rows.shape[1]:
        raise ValueError(f"{path}: each dataset has {rows.shape[1]} values but x has {np.shape(x)[0]}"
                         + ("" if x_path else " (the embedded data's; give --x FILE)"))
    datasets, errors = [], []
    for i, y in enumerate(rows):
        try:
            datasets.append(Dataset(x=x, y=y, meta={"source": f"{path.name}[{i}]"}))
            errors.append(None)
        except ValueError as err:
            datasets.append(None)
            errors.append(f"{layout[:-1]} {i}: {err}")
    return datasets, [f"{path.name}[{i}]" for i in range(len(rows))], errors


def _same_values(a, b) -> bool:
    """Equal structure and values (floats to 1e-9 relative), for arrays, dicts, tuples or None."""
    la, ta = jax.tree.flatten(a)
    lb, tb = jax.tree.flatten(b)
    if ta != tb or len(la) != len(lb):
        return False
    for u, v in zip(la, lb):
        u, v = np.asarray(u), np.asarray(v)
        if u.shape != v.shape:
            return False
        if u.dtype.kind in "fc" and v.dtype.kind in "fc":
            if not np.allclose(u, v, rtol=1e-9, atol=0.0):
                return False
        elif not np.array_equal(u, v):
            return False
    return True


def _write_rows(path: Path, rows: list[dict]) -> None:
    import csv

    fields = list(dict.fromkeys(k for row in rows for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def run_batch(args) -> int:
    from .batching import batch
    from .inference.map import map_estimate
    from .inference.sample import sample
    from .inference.svi import svi

    problem = load_problem(args.problem)
    if problem.run is not None:
        raise ValueError(f"{problem.name} runs its own estimator, not models; jaxinv batch needs models")
    datasets, labels, errors = _batch_datasets(problem, Path(args.data), args.layout, args.x)
    good = [i for i, d in enumerate(datasets) if d is not None]
    if not good:
        raise ValueError(f"no dataset could be read; first: {errors[0]}")
    first = datasets[good[0]]
    for i in good[1:]:
        d = datasets[i]
        if not _same_values(d.x, first.x):
            datasets[i], errors[i] = None, f"{labels[i]}: recorded at other x than {labels[good[0]]} (a batch shares x)"
        elif np.shape(d.y) != np.shape(first.y):
            datasets[i], errors[i] = None, f"{labels[i]}: {np.size(d.y)} values, the first dataset has {np.size(first.y)}"
        elif not _same_values(d.sigma, first.sigma):
            datasets[i], errors[i] = None, (f"{labels[i]}: other per-point sigma than {labels[good[0]]} (the models, "
                                            "noise included, are built from the first dataset)")
    options = _parse_options(args.option)
    components = _parse_select(args.select)
    if components is not None:
        options["n_components"] = components
    try:
        inspect.signature(problem.models).bind(first, **options)
    except TypeError as err:
        raise ValueError(f"{problem.name} does not take these options ({err})") from None
    models = problem.models(first, **options)
    if args.model is not None:
        if args.model not in models:
            raise ValueError(f"{problem.name} has no model {args.model!r} (models: {', '.join(models)})")
        models = {args.model: models[args.model]}
    method = args.method or "laplace"
    if args.dense_mass and method not in ("hmc", "nuts"):
        raise ValueError(f"--dense-mass applies to --method hmc or nuts, not {method}")
    if problem.fit_options is not None and method == "laplace":
        print(f"jaxinv: note: {problem.name} recommends per-dataset MAP options (fit_options); a batch uses "
              "prior-draw starts for every dataset", file=sys.stderr)
    task = None
    if args.task is not None:
        from .cluster import task_from_env

        if args.task == "auto":
            task = task_from_env()
        else:
            try:
                task = tuple(int(v) for v in args.task.split("/"))
                assert len(task) == 2
            except (ValueError, AssertionError):
                raise ValueError(f"--task expects I/N (e.g. 3/32) or auto, got {args.task!r}") from None
    Y = np.stack([np.asarray(d.y, dtype=float) if d is not None else np.full(np.shape(first.y), np.nan)
                  for d in datasets])
    show = not args.quiet and sys.stderr.isatty()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    common = {"chunk_size": args.chunk_size, "out": out / "chunks", "progress": show, "task": task}
    _progress(show, f"{problem.name}: {len(Y)} datasets, {len(models)} model(s), {method}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # failures are in the table
        if len(models) == 1:
            (name, model), = models.items()
            if method == "laplace":
                res = batch(map_estimate, model, Y, key, n_starts=args.n_starts, **common)
            elif method == "svi":
                res = batch(svi, model, Y, key, n_draws=args.draws, **common)
            else:
                tune = {} if args.tune is None else {"n_tune" if method == "remc" else "n_warmup": args.tune}
                size = {"smc": {"n_particles": max(args.draws // 4, 2)}}.get(method, {"n_draws": args.draws})
                dense = {"dense_mass": True} if args.dense_mass else {}
                res = batch(sample, model, Y, key, method=method, **size, **tune, **dense, **common)
            results = {name: res}
        else:
            if method not in ("laplace", "smc", "remc"):
                raise ValueError(f"comparing {len(models)} models needs --method laplace, smc or remc "
                                 f"(or --model NAME to invert one)")
            engine_options = {"n_starts": args.n_starts} if method == "laplace" else {}
            from .selection import select

            sel = batch(select, models, Y, key, method=method, **engine_options, **common)
            results = sel.results
    for res in results.values():
        for i, reason in enumerate(errors):
            if reason is not None:
                res.errors[i] = reason
        res.failed[:] = [r is not None for r in res.errors]
    if task is not None:
        print(f"{problem.name}: task {task[0]} of {task[1]} computed its chunks in {out / 'chunks'}; run again "
              "without --task to gather them and write the outputs")
        return 0
    if jax.process_index() != 0:  # one writer in a multi-process program
        return 0
    written = []
    if len(results) == 1:
        (name, res), = results.items()
        written.append(res.save(out / "batch.nc"))
        rows = res.summary_table()
        for row, label in zip(rows, labels):
            row["source"] = label
        _write_rows(out / "summary.csv", rows)
        written.append(out / "summary.csv")
        n_failed = int(res.failed.sum())
    else:
        rows = []
        f = sel.free_energies
        prob = sel.probabilities
        for i, (label, chosen) in enumerate(zip(labels, sel.selected)):
            failures = [f"{k}: {results[k].errors[i]}" for k in results if results[k].errors[i] is not None]
            row = {"dataset": i, "source": label, "error": errors[i] or "; ".join(failures),
                   "selected": chosen or ""}
            for j, name in enumerate(results):
                row[f"F[{name}]"] = float(f[i, j])
                row[f"p[{name}]"] = float(prob[i, j]) if np.isfinite(f[i]).any() else float("nan")
            rows.append(row)
        _write_rows(out / "selection.csv", rows)
        written.append(out / "selection.csv")
        for name, res in results.items():
            written.append(res.save(out / f"{_file_name(name)}.nc"))
        n_failed = int(np.sum(~np.isfinite(f).any(axis=1)))
    print(f"{problem.name}: {len(labels)} datasets, {n_failed} failed ({method}; "
          f"{next(iter(results.values())).n_devices} device(s))")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def list_problems(args) -> int:
    for name, description in available_problems().items():
        print(f"{name:24s} {description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxinv", description="Bayesian measurement with JAX")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("problems", help="list the installed problems").set_defaults(func=list_problems)
    r = sub.add_parser("run", help="fit a problem's models and select by free energy")
    r.add_argument("problem")
    r.add_argument("--data", help="the problem's data file or folder (default: embedded data)")
    r.add_argument("--method", default=None, choices=METHODS,
                   help="inference method (default: the problem's, laplace for most)")
    r.add_argument("--select", help="component counts to compare, e.g. 1..3")
    r.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="problem option passed to its models(), e.g. noise=spectral (repeatable)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", default="runs/latest", help="output folder")
    r.add_argument("--n-starts", type=int, default=32, help="optimiser starts per model (laplace, nuts)")
    r.add_argument("--draws", type=int, default=4000,
                   help="posterior draws: laplace draws; nuts: total over 4 chains; smc: particles over 4 runs; "
                        "remc: kept sweeps")
    r.add_argument("--tune", type=int, default=None,
                   help="nuts warmup steps / remc tuning sweeps (default: the engine's)")
    r.add_argument("--dense-mass", action="store_true",
                   help="nuts: adapt a dense inverse mass matrix (the posterior covariance; for strongly "
                        "correlated parameters) instead of a diagonal one")
    r.add_argument("--checkpoint", metavar="DIR",
                   help="checkpoint folder for nuts/smc/remc: a killed run restarted with the same arguments resumes")
    r.add_argument("--quiet", action="store_true", help="no progress messages")
    r.set_defaults(func=run)
    b = sub.add_parser("batch", help="invert many datasets of a problem at once (jaxinv.batch)")
    b.add_argument("problem")
    b.add_argument("--data", required=True,
                   help="a folder with one dataset per file/sub-folder, or an array file with one per row")
    b.add_argument("--method", default=None, choices=BATCH_METHODS, help="engine (default laplace)")
    b.add_argument("--model", help="invert only this model of the problem")
    b.add_argument("--select", help="component counts to compare, e.g. 1..3")
    b.add_argument("--layout", choices=("rows", "columns"), default="rows",
                   help="array file: one dataset per row (default) or per column")
    b.add_argument("--x", help="array file: the independent variable (default: the embedded data's)")
    b.add_argument("--chunk-size", type=int, default=None, help="datasets per compiled chunk (default 256)")
    b.add_argument("--option", action="append", metavar="KEY=VALUE", help="problem option (repeatable)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--out", default="runs/batch", help="output folder")
    b.add_argument("--n-starts", type=int, default=8, help="optimiser starts per dataset (laplace)")
    b.add_argument("--draws", type=int, default=1000,
                   help="draws per chain (hmc, nuts, remc), particles over 4 runs (smc), q draws (svi)")
    b.add_argument("--tune", type=int, default=None, help="warmup steps / tuning sweeps (default: the engine's)")
    b.add_argument("--dense-mass", action="store_true", help="hmc, nuts: adapt a dense inverse mass matrix")
    b.add_argument("--task", metavar="I/N",
                   help="compute only chunks c with c %% N == I (one task of a job array; 'auto' reads SLURM); "
                        "a final run without --task gathers them and writes the outputs")
    b.add_argument("--quiet", action="store_true", help="no progress messages")
    b.set_defaults(func=run_batch)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return args.func(args)
    except (ValueError, TypeError, FileNotFoundError, OSError) as err:
        print(f"jaxinv: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
