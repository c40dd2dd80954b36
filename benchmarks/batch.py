"""Batch inversions: ji.batch against a per-dataset loop, and the batched energy against the FLOP rate.

    python benchmarks/batch.py            # full sizes (10 000 curves), writes benchmarks/results/
    python benchmarks/batch.py --smoke    # tiny sizes, for CI
    python benchmarks/batch.py --sections map,energy   # some sections (own results file)

1. **Batch MAP of NMR inversion-recovery curves** (3 parameters, known noise, 16 delays):
   ``ji.batch(ji.map_estimate, ...)`` over every curve against a Python loop of
   ``scipy.optimize.curve_fit`` (trust-region reflective, the same least-squares objective,
   started at the truth's neighbourhood as a user would) over the same curves, for each of
   :data:`MAP_SETTINGS` (the default L-BFGS + LM, and LM alone).  Reported: the wall times
   (jaxinv's compile time apart), their ratio, and the agreement of T1 between the two
   (median relative difference; the MAP includes the priors, so it differs from the
   least-squares fit by ~1e-4; curves differing by more than 1 %), and for LM alone the curves
   whose MAP energy is above the default's (a worse optimum: 16 of 10 000 on 2026-12-07, every
   start on a plateau at a prior bound, before LM's steps were limited in the coordinates of
   bounded parameters; none since) with how many of them ``laplace.at_boundary`` flags.
   Under ``vmap`` a chunk's while loops run in lockstep: every curve of a chunk waits for the
   slowest start's last
   iteration (the best start's LM iterations over 10 000 curves: median 23, max 279), so the wall time follows
   the iteration cap ``polish_steps`` more than the typical curve.
2. **Energy + gradient evaluations per second** of the batched NMR energy
   (``vmap(value_and_grad(post.energy))`` over datasets x points), against the CPU's measured
   FLOP rate (a float64 matrix product): XLA's own FLOP count of the compiled program
   (``cost_analysis``) times evaluations per second, as a fraction of that peak.  The energy is
   dominated by ``exp`` and reductions over 16 points, so it is bound by transcendental
   throughput and memory traffic, not by multiply-adds: the roofline estimate is stated next to
   the achieved fraction.

3. **Phase search** (``problems/phase_search.py``, 240 library phases, 481 unconstrained
   coordinates): SVI (the problem's default, mean-field from the lasso start) against NUTS
   (BlackJAX, window adaptation) on the same model and data: wall time after compilation and
   the phases each identifies (full run only).

4. **Batch model selection** (full run only): ``ji.batch(ji.select, ...)`` with tempered SMC
   (4 runs x 1000 particles) over NMR inversion-recovery curves x {single, stretched, K=2}
   against a Python loop of dynesty (static nested sampling, 400 live points, the same
   likelihood jitted, the prior transform from the same priors as ``benchmarks/evidence.py``)
   on a subset of the curves, timed per (curve, model).  Accuracy: jaxinv's standard errors
   (spread of the 4 runs) and the agreement of the two F on the subset; the speed ratio is per
   (curve, model) at those settings.  A 2-core CPU runs 64 curves by default
   (``--selection-curves``), not the issue's 1000 spectra x K = 1..4 (that size is for a GPU).

Results (with machine information) go to ``benchmarks/results/batch-<host>-<date>.json``.
Not yet here: GPU figures (no GPU was lent to the session that wrote this).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from datetime import date
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv.physics import InversionRecovery

DELAYS = np.geomspace(0.01, 20.0, 16)
NOISE = 0.01


def model():
    return ji.Model(InversionRecovery(jnp.asarray(DELAYS)),
                    {"inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
                     "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0),
                     "relaxation_time": ji.priors.LogUniform(1e-2, 1e2)},
                    ji.likelihoods.Normal(sigma=NOISE))


def curves(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = {"inversion_efficiency": rng.uniform(0.8, 1.0, n), "equilibrium_magnetization": rng.uniform(0.5, 1.5, n),
             "relaxation_time": np.exp(rng.uniform(np.log(0.1), np.log(5.0), n))}
    clean = truth["equilibrium_magnetization"][:, None] * (
        1.0 - 2.0 * truth["inversion_efficiency"][:, None] * np.exp(-DELAYS[None] / truth["relaxation_time"][:, None]))
    return clean + NOISE * rng.standard_normal(clean.shape), truth


def recovery(t, efficiency, magnetization, relaxation_time):
    return magnetization * (1.0 - 2.0 * efficiency * np.exp(-t / relaxation_time))


#: the batch MAP settings compared with the curve_fit loop: the library default (multi-start
#: L-BFGS, then LM polish of every end point and every start) and Levenberg-Marquardt alone
#: from the starts (``optimizer=None``), both with the Laplace approximation per curve
MAP_SETTINGS = {"lbfgs+lm": dict(optimizer="lbfgs"), "lm": dict(optimizer=None)}


def bench_map(n: int, n_starts: int) -> dict:
    from scipy.optimize import curve_fit

    Y, truth = curves(n)
    m = model()
    t0 = time.perf_counter()
    t1_scipy = np.empty(n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(n):
            p, _ = curve_fit(recovery, DELAYS, Y[i], p0=(0.9, float(np.max(np.abs(Y[i]))), 1.0),
                             bounds=([0.0, 0.0, 1e-2], [1.0, 2.0, 1e2]), method="trf")
            t1_scipy[i] = p[2]
    loop_s = time.perf_counter() - t0
    out = {"n_curves": n, "n_starts": n_starts, "scipy_loop_s": loop_s,
           "note": "jaxinv: multi-start MAP + Laplace (standard errors, evidence) per curve; "
                   "scipy: one curve_fit (trf) per curve from a data-based start, no uncertainty beyond its covariance"}
    default_energy = None
    for name, settings in MAP_SETTINGS.items():
        kw = dict(n_starts=n_starts, chunk_size=min(n, 1024), **settings)
        t0 = time.perf_counter()
        ji.batch(ji.map_estimate, m, Y[:8], jax.random.key(0), **kw)  # compiles (chunks of one size)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = ji.batch(ji.map_estimate, m, Y, jax.random.key(1), **kw)
        batch_s = time.perf_counter() - t0
        t1 = np.asarray(res.params["relaxation_time"])
        ok = ~res.failed
        out[name] = {
            "settings": {k: str(v) for k, v in settings.items()}, "jaxinv_compile_s": compile_s,
            "jaxinv_batch_s": batch_s, "speedup": loop_s / batch_s, "failed": int(res.failed.sum()),
            "median_rel_diff_t1": float(np.median(np.abs(t1[ok] - t1_scipy[ok]) / t1_scipy[ok])),
            "n_differ_1pct": int(np.sum(np.abs(t1[ok] - t1_scipy[ok]) > 0.01 * t1_scipy[ok])),
            # LM iterations of the best start per curve (the lockstep cost is the chunk's maximum)
            "polish_steps_median": float(np.median(np.asarray(res.stats["polish_steps"]))),
            "polish_steps_max": int(np.max(np.asarray(res.stats["polish_steps"]))),
            "median_rel_err_t1_vs_truth": float(np.median(np.abs(t1[ok] - truth["relaxation_time"][ok])
                                                          / truth["relaxation_time"][ok]))}
        energy = np.asarray(res.stats["energy"])
        if default_energy is None:  # the first setting (the library default) is the reference
            default_energy = energy
        else:
            # curves whose MAP energy is above the default's (a worse optimum), and how many of
            # them the result flags (MAP at a prior bound: laplace.at_boundary)
            worse = np.flatnonzero(energy > default_energy + 1e-6 * (np.abs(default_energy) + 1.0))
            out[name]["n_worse_than_default"] = int(worse.size)
            out[name]["n_worse_flagged_at_boundary"] = int(sum(bool(res[int(i)].laplace.at_boundary) for i in worse))
    return out


def peak_flops(n: int = 1024, repeats: int = 5) -> float:
    a = jnp.ones((n, n))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    t0 = time.perf_counter()
    for _ in range(repeats):
        f(a).block_until_ready()
    return 2.0 * n**3 * repeats / (time.perf_counter() - t0)


def bench_energy(n_datasets: int, n_points: int, repeats: int) -> dict:
    Y, _ = curves(n_datasets, seed=1)
    m = model()
    z = jax.random.normal(jax.random.key(0), (n_datasets, n_points, 3))

    def one(y, zs):
        post = m.condition(y)
        return jax.vmap(jax.value_and_grad(post.energy))(zs)

    f = jax.jit(jax.vmap(one))
    compiled = f.lower(jnp.asarray(Y), z).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = float(cost.get("flops", float("nan")))
    transcendentals = float(cost.get("transcendentals", float("nan")))
    jax.block_until_ready(compiled(jnp.asarray(Y), z))
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(compiled(jnp.asarray(Y), z))
    seconds = (time.perf_counter() - t0) / repeats
    evaluations = n_datasets * n_points
    peak = peak_flops()
    achieved = flops / seconds
    return {"evaluations_per_s": evaluations / seconds, "flops_per_evaluation": flops / evaluations,
            "transcendentals_per_evaluation": transcendentals / evaluations, "achieved_flops_per_s": achieved,
            "peak_matmul_flops_per_s": peak, "achieved_fraction_of_peak": achieved / peak,
            "roofline_note": "each evaluation does ~2 exp/log per delay and short reductions: bound by "
                             "transcendental throughput (not counted as FLOPs by XLA) and by memory traffic, "
                             "so the FLOP fraction of a matmul peak is expected to be far below 30 %"}


def bench_phase(n_warmup: int, n_draws: int) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import problems.phase_search as ps

    lib = ps.library()
    data = ps.default_data()
    ps.search(data, jax.random.key(0), library_patterns=lib)  # compile
    t0 = time.perf_counter()
    _, draws, present = ps.search(data, jax.random.key(1), library_patterns=lib)
    svi_s = time.perf_counter() - t0
    m = ps.model(data, lib)
    post = m.condition(data.y)
    start = post.unconstrain({k: jnp.asarray(v) for k, v in ps.lasso_start(data, m, lib).items()})
    init = jnp.tile(start, (1, 1))
    kw = dict(n_chains=1, n_warmup=n_warmup, n_draws=n_draws, init=init)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ji.sample(post, jax.random.key(2), method="nuts", **{**kw, "n_warmup": 10, "n_draws": 10})
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        nuts = ji.sample(post, jax.random.key(3), method="nuts", **kw)
    nuts_s = time.perf_counter() - t0
    nuts_draws = ps.weights(nuts, m)
    return {"svi_s": svi_s, "svi_present": present.tolist(), "nuts_s": nuts_s, "nuts_compile_and_short_run_s": compile_s,
            "nuts_present": ps.identify(nuts_draws).tolist(), "nuts_warmup": n_warmup, "nuts_draws": n_draws,
            "nuts_mean_leapfrog_steps": float(np.mean(np.asarray(nuts.stats["n_steps"]))),
            "truth": data.meta["truth"]["phases"], "ratio": nuts_s / svi_s}


def bench_selection(n_curves: int, n_dynesty: int) -> dict:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import problems.nmr_relaxation as nmr
    from evidence import dynesty_problem, run_dynesty

    data = nmr.default_data()
    models = nmr.models(data, n_components=(1, 2), stretched=True)
    fit = ji.map_estimate(models["single"].condition(data.y), jax.random.key(0), n_starts=8)
    post0 = models["single"].condition(data.y)
    clean = np.asarray(post0.predict(post0.unconstrain(fit.params)))
    rng = np.random.default_rng(5)
    noisy = clean[None] + float(fit.params["sigma"]) * rng.standard_normal((2 * n_curves, clean.size))
    Y, warm_up = noisy[:n_curves], noisy[n_curves:]
    kw = dict(method="smc", n_particles=1000, n_runs=4, chunk_size=n_curves)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # compile on other curves of the same chunk shape: the timed call reuses the programs
        ji.batch(ji.select, models, warm_up, jax.random.key(0), **kw)
        t0 = time.perf_counter()
        sel = ji.batch(ji.select, models, Y, jax.random.key(1), **kw)
        jaxinv_s = time.perf_counter() - t0
    per_jaxinv = jaxinv_s / (n_curves * len(models))
    dyn = []
    t0 = time.perf_counter()
    for i in range(n_dynesty):
        row = []
        for m in models.values():
            free_energy, _ = run_dynesty(dynesty_problem(m.condition(Y[i])), 400, seed=i)
            row.append(free_energy)
        dyn.append(row)
    dynesty_s = time.perf_counter() - t0
    per_dynesty = dynesty_s / (n_dynesty * len(models))
    f_dyn = np.asarray(dyn)
    return {"n_curves": n_curves, "models": list(models), "jaxinv_s": jaxinv_s, "jaxinv_s_per_curve_model": per_jaxinv,
            "jaxinv_median_se": float(np.nanmedian(sel.free_energy_se)), "dynesty_curves": n_dynesty,
            "dynesty_s_per_curve_model": per_dynesty,
            "median_abs_diff_F": float(np.median(np.abs(f_dyn - sel.free_energies[:n_dynesty]))),
            "selected_same": float(np.mean(np.argmin(f_dyn, 1) == np.nanargmin(sel.free_energies[:n_dynesty], 1))),
            "speedup_per_curve_model": per_dynesty / per_jaxinv,
            "jaxinv_F": np.asarray(sel.free_energies[:n_dynesty]).tolist(),
            "jaxinv_F_se": np.asarray(sel.free_energy_se[:n_dynesty]).tolist(), "dynesty_F": f_dyn.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--sections", default="map,energy,phase_search,selection",
                        help="comma-separated subset of map, energy, phase_search, selection (full run)")
    parser.add_argument("--selection-curves", type=int, default=64,
                        help="curves in the batch selection section (on a 2-core CPU the batched SMC "
                             "costs ~21 s per curve and model: 2 curves x 3 models took 128 s after "
                             "a 145 s warm-up, 2026-12-07)")
    parser.add_argument("--dynesty-curves", type=int, default=None,
                        help="curves of the selection section also run through dynesty (default: up to 4; "
                             "dynesty took 15 s, 36 s and > 9 minutes for the single, stretched and K=2 "
                             "models of one curve on a 2-core CPU, 2026-12-07)")
    args = parser.parse_args()
    sections = {name.strip() for name in args.sections.split(",") if name.strip()}
    unknown = sections - {"map", "energy", "phase_search", "selection"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}")
    if args.smoke:
        sections &= {"map", "energy"}
    if args.dynesty_curves is not None and args.dynesty_curves < 1:
        parser.error("--dynesty-curves must be >= 1 (the ratio needs a dynesty timing)")
    if not sections:
        parser.error("no section to run (--smoke runs only map and energy)")
    device = jax.devices()[0]
    info = {"device": f"{device.platform} ({device.device_kind})", "n_devices": jax.device_count(),
            "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "jax": jax.__version__, "precision": ji.precision(), "date": str(date.today())}
    print(json.dumps(info))
    sizes = (64, 4, 8, 64, 3) if args.smoke else (10_000, 4, 1000, 64, 20)
    n_curves, n_starts, n_datasets, n_points, repeats = sizes
    results = Path(__file__).parent / "results"
    path = results / f"batch-{platform.node() or 'host'}-{date.today()}.json"
    if len(sections) < 4:  # a partial run keeps its own file, never a complete one's name
        path = path.with_name(f"{path.stem}-{'-'.join(sorted(sections))}.json")

    def record(section: str, figures: dict) -> None:
        """Keep each section's figures as soon as they are measured (a full run takes minutes)."""
        out[section] = figures
        if not args.smoke:
            results.mkdir(exist_ok=True)
            path.write_text(json.dumps(out, indent=2))

    out = {"machine": info}
    if "map" in sections:
        record("map", bench_map(n_curves, n_starts))
    if "energy" in sections:
        record("energy", bench_energy(n_datasets, n_points, repeats))
    if "phase_search" in sections:
        record("phase_search", bench_phase(500, 500))
    if "selection" in sections:
        n_dynesty = min(4, args.selection_curves) if args.dynesty_curves is None else args.dynesty_curves
        record("selection", bench_selection(args.selection_curves, min(n_dynesty, args.selection_curves)))
    m = out.get("map", {})
    for name in MAP_SETTINGS if m else ():
        r = m[name]
        print(f"batch MAP ({name}) of {m['n_curves']} curves: jaxinv {r['jaxinv_batch_s']:.2f} s "
              f"(+{r['jaxinv_compile_s']:.1f} s compile) vs scipy curve_fit loop {m['scipy_loop_s']:.2f} s -> "
              f"{r['speedup']:.2f}x; |dT1|/T1 between them median {r['median_rel_diff_t1']:.2e}, "
              f"{r['n_differ_1pct']} curves differ by > 1 %; failed {r['failed']}"
              + (f"; {r['n_worse_than_default']} end above the default's energy "
                 f"({r['n_worse_flagged_at_boundary']} flagged at a prior bound)" if "n_worse_than_default" in r else ""))
    if "energy" in out:
        e = out["energy"]
        print(f"energy+gradient: {e['evaluations_per_s']:.3g} evaluations/s, {e['flops_per_evaluation']:.0f} FLOP "
              f"each (+{e['transcendentals_per_evaluation']:.0f} transcendental); {e['achieved_flops_per_s']:.3g} "
              f"FLOP/s = {100 * e['achieved_fraction_of_peak']:.1f} % of the measured matmul peak "
              f"{e['peak_matmul_flops_per_s']:.3g}")
    if "phase_search" in out:
        p = out["phase_search"]
        print(f"phase search: SVI {p['svi_s']:.1f} s -> {p['svi_present']}; NUTS ({p['nuts_warmup']} + "
              f"{p['nuts_draws']}) {p['nuts_s']:.1f} s -> {p['nuts_present']} (truth {p['truth']}); "
              f"NUTS / SVI = {p['ratio']:.0f}x")
    if "selection" in out:
        q = out["selection"]
        print(f"batch selection ({q['n_curves']} curves x {len(q['models'])} models, SMC): "
              f"{q['jaxinv_s_per_curve_model']:.3f} s per (curve, model), median se {q['jaxinv_median_se']:.3f}; "
              f"dynesty loop {q['dynesty_s_per_curve_model']:.2f} s; "
              f"{q['speedup_per_curve_model']:.1f}x; median |dF| {q['median_abs_diff_F']:.3f}; "
              f"same selection {100 * q['selected_same']:.0f} %")
    if not args.smoke:
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
