"""The ``jaxinv`` command.

    jaxinv problems
    jaxinv run PROBLEM [--data PATH] [--method laplace|nuts|smc|remc] [--select 1..3]
                       [--seed N] [--out DIR] [--n-starts N] [--option KEY=VALUE ...]
                       [--draws N] [--tune N] [--checkpoint DIR] [--quiet]

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
                                     checkpoint=ckpt, progress=show, **tune)
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
    r.add_argument("--checkpoint", metavar="DIR",
                   help="checkpoint folder for nuts/smc/remc: a killed run restarted with the same arguments resumes")
    r.add_argument("--quiet", action="store_true", help="no progress messages")
    r.set_defaults(func=run)
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
