"""Run summaries: the printed table and ``summary.json`` (DESIGN.md section 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .results import Result, to_json_value
from .selection import Selection, caveats

__all__ = ["summary_dict", "format_table", "write_summary"]


def _diagnostics(result: Result) -> dict:
    stats = result.stats
    get = lambda k: to_json_value(stats[k]) if k in stats else None
    boundary = list(result.laplace.at_boundary) if result.laplace is not None else []
    return {"rhat_max": get("rhat_max"), "ess_min": get("ess_min"), "divergences": get("divergences"),
            "at_prior_boundary": boundary}


def model_entry(name: str, result: Result, draws: Result | None, k) -> dict:
    """One ``models[]`` entry of summary.json.  ``map`` is empty when the engine
    gives draws only (SMC, replica exchange)."""
    if draws is None and result.sample_dims == 2:
        draws = result
    posterior = {}
    if draws is not None:
        for param, s in draws.summary().items():
            posterior[param] = {stat: to_json_value(v) for stat, v in s.items()}
    return {
        "name": name,
        "K": k,
        "free_energy": to_json_value(result.free_energy),
        "free_energy_se": to_json_value(result.free_energy_se),
        "map": {p: to_json_value(v) for p, v in result.params.items()} if result.sample_dims == 0 else {},
        "map_se": (
            {p: to_json_value(v) for p, v in result.laplace.standard_errors.items()} if result.laplace is not None else {}
        ),
        "posterior": posterior,
        "diagnostics": _diagnostics(draws if draws is not None else result),
        "free_energy_caveats": caveats(result),
    }


def summary_dict(problem: str, method: str, seed: int, selection: Selection, draws: dict[str, Result]) -> dict:
    models = [
        model_entry(name, res, draws.get(name), selection.n_components.get(name))
        for name, res in selection.results.items()
    ]
    prob = selection.probabilities
    for m in models:
        m["probability"] = prob[m["name"]]
    return {"problem": problem, "method": method, "seed": seed, "models": models, "selected": selection.selected}


def _fmt(value, se) -> str:
    value = np.asarray(value, dtype=float).ravel()  # matrices (e.g. per phase and element) row by row
    se = np.asarray(se, dtype=float).ravel()
    if se.size == 1:
        se = np.broadcast_to(se, value.shape)
    if se.size != value.size:
        raise ValueError(f"{value.size} values but {se.size} standard errors")
    parts = [f"{v:.5g} ± {s:.2g}" for v, s in zip(value, se)]
    return parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"


def format_table(selection: Selection) -> str:
    """Human-readable table: MAP ± Laplace standard error (or posterior mean ± sd
    for sampling engines) per model, free energy ± its standard error,
    posterior probability; the selected model marked with ``*``."""
    chosen = selection.selected
    prob = selection.probabilities
    lines = []
    for name, res in selection.results.items():
        mark = "*" if name == chosen else " "
        k = selection.n_components.get(name)
        lines.append(
            f"{mark} {name}" + (f"  (K={k})" if k is not None else "")
            + f"   F = {float(res.free_energy):.3f}" + (f" ± {float(res.free_energy_se):.2g}" if float(res.free_energy_se) > 0 else "")
            + f" nats   p(model|data) = {prob[name]:.3g}"
        )
        if res.sample_dims == 2:  # draws: posterior mean ± sd
            for param, s in res.summary().items():
                lines.append(f"      {param:28s} {_fmt(s['mean'], s['sd'])}")
        else:  # point estimate ± Laplace standard error
            se = res.laplace.standard_errors if res.laplace is not None else {}
            for param, value in res.params.items():
                lines.append(f"      {param:28s} {_fmt(value, se.get(param, np.nan))}")
        for caveat in caveats(res):
            lines.append(f"      ! {caveat}: the Laplace free energy of this model is unreliable")
    lines.append(f"selected (lowest free energy): {chosen}")
    return "\n".join(lines)


def write_summary(path: Path, summary: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, allow_nan=False))
    return path
