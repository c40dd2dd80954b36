"""ODE posteriors: jaxinv NUTS against NumPyro NUTS on Lotka-Volterra, the cost of each adjoint
(Lotka-Volterra, reaction-diffusion), and the garnet growth model's derivatives.

    python benchmarks/ode.py            # 4 chains x (500 warmup + 500 draws), writes JSON
    python benchmarks/ode.py --smoke    # density check, adjoints, garnet at tiny sizes (~40 s), no JSON

Model: the lynx-hare Lotka-Volterra posterior of posteriordb (``problems/lotka_volterra.py``,
8 parameters, 21 x 2 log-normal observations), Tsit5 with rtol = atol = 1e-6, at most 4096
steps, in both libraries.

What is measured, in one run:

1. **NUTS ESS/s**: minimum bulk ESS over the 8 parameter components (ArviZ) per second of
   warmup + draws, compile excluded (the second of two runs with different keys), jaxinv
   ``ji.sample(method="nuts")`` against NumPyro ``MCMC(NUTS(model))`` on a NumPyro model
   written here with Diffrax called directly, the same priors (TruncatedNormal, LogNormal),
   likelihood, solver, tolerances and unconstrained parameterisation (its potential energy is
   checked against jaxinv's log density at random points first).  Both run ``--chains``
   vectorised chains from the same starting points (a fixed point in the posterior bulk,
   jittered by 0.05 in the unconstrained space).  The timing code (including taking
   NumPyro's recompilation inside the timed run out of its sampling time) is that of
   ``benchmarks/evidence.py``.  Compile times are reported separately.
2. **Adjoints**: for each Diffrax adjoint of :class:`jaxinv.physics.ode.ODE` --
   ``checkpoint`` (RecursiveCheckpointAdjoint), ``backsolve`` (BacksolveAdjoint), ``forward``
   (ForwardMode, gradient by ``jax.jacfwd``), ``direct`` (DirectAdjoint) -- the time of one
   jitted forward solve (prediction at the 21 times) and of one jitted gradient of the log
   posterior (8 parameters), median over ``--repeats`` calls after a first (compiling) call,
   whose excess is the compile time; and the gradient's largest relative difference from the
   checkpoint adjoint's.  The same for the reaction-diffusion problem (first-order model,
   40 finite volumes, at the true D and k) with ``--parts reaction-diffusion``.
3. **Garnet** (``--parts garnet``): the growth-zoning model of ``problems/garnet_ptt.py``
   has no Diffrax solve (diffusion is exact per growth step, through ``eigh``): forward,
   gradient, Hessian and an 8-way vmapped gradient.

Results go to ``benchmarks/results/ode-<hostname>-<date>.json`` with machine information.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import jaxinv  # noqa: E402  (float64 before any array is created)
from evidence import check_same_density, jaxinv_nuts, machine_info, numpyro_nuts  # noqa: E402
from problems import lotka_volterra as lv  # noqa: E402

ADJOINTS = ("checkpoint", "backsolve", "forward", "direct")
PARTS = ("nuts", "adjoints", "reaction-diffusion", "garnet")
BULK = {"alpha": 0.55, "beta": 0.028, "gamma": 0.80, "delta": 0.024, "z_init": [33.0, 6.0], "sigma": [0.25, 0.25]}


def lv_setup(adjoint="checkpoint"):
    """jaxinv posterior and the hand-written NumPyro model of the same posterior."""
    import diffrax
    import numpyro
    import numpyro.distributions as dist

    data = lv.default_data()
    post = lv.models(data, adjoint=adjoint)["lotka-volterra"].condition(data.y)
    times, y = jnp.asarray(data.x), jnp.asarray(data.y)

    def field(t, z, args):
        alpha, beta, gamma, delta = args
        return jnp.array([(alpha - beta * z[1]) * z[0], (-gamma + delta * z[0]) * z[1]])

    def model(times, y):
        alpha = numpyro.sample("alpha", dist.TruncatedNormal(1.0, 0.5, low=0.0))
        beta = numpyro.sample("beta", dist.TruncatedNormal(0.05, 0.05, low=0.0))
        gamma = numpyro.sample("gamma", dist.TruncatedNormal(1.0, 0.5, low=0.0))
        delta = numpyro.sample("delta", dist.TruncatedNormal(0.05, 0.05, low=0.0))
        z_init = numpyro.sample("z_init", dist.LogNormal(math.log(10.0), 1.0).expand([2]).to_event(1))
        sigma = numpyro.sample("sigma", dist.LogNormal(-1.0, 1.0).expand([2]).to_event(1))
        sol = diffrax.diffeqsolve(
            diffrax.ODETerm(field), diffrax.Tsit5(), t0=times[0], t1=times[-1], dt0=None, y0=z_init,
            args=(alpha, beta, gamma, delta), saveat=diffrax.SaveAt(ts=times),
            stepsize_controller=diffrax.PIDController(rtol=lv.RTOL, atol=lv.ATOL), max_steps=lv.MAX_STEPS,
            throw=False)
        # a failed solve is zero probability (jaxinv: NaN prediction); NumPyro validates the
        # distribution's arguments on concrete values (prior draws at start-up), so no NaN here
        # (nor a log of an overflowed or negative population)
        ok = (sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(sol.ys) & (sol.ys > 0))
        numpyro.factor("solve_failed", jnp.where(ok, 0.0, -jnp.inf))
        z = jnp.where(ok, sol.ys, 1.0)
        numpyro.sample("y", dist.LogNormal(jnp.log(z), sigma).to_event(2), obs=y)

    def to_numpyro(u):
        return dict(u)

    def from_numpyro(samples):
        return {k: samples[k] for k in lv.PARAMETERS}

    return post, (model, (times, y), to_numpyro, from_numpyro)


def starting_points(post, n_chains):
    z = post.unconstrain({k: jnp.asarray(v, dtype=float) for k, v in BULK.items()})
    return z + 0.05 * jax.random.normal(jax.random.key(6), (n_chains, post.dim))


def _time_calls(f, arg, repeats):
    t0 = time.perf_counter()
    first = jax.block_until_ready(f(arg))
    first_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(arg))
        times.append(time.perf_counter() - t0)
    steady = float(np.median(times))
    return first, steady, max(first_s - steady, 0.0)


def _adjoint_posterior(post, adjoint: str):
    """``post`` with its ODE's adjoint replaced (the forward model, or its ``ode`` field)."""
    import equinox as eqx

    from jaxinv.physics.ode import adjoint_from_name

    if hasattr(post.model.forward, "ode"):  # a forward model wrapping an ODE
        return eqx.tree_at(lambda p: p.model.forward.ode.adjoint, post, adjoint_from_name(adjoint))
    return eqx.tree_at(lambda p: p.model.forward.adjoint, post, adjoint_from_name(adjoint))


def adjoint_costs(post, point: dict, repeats: int, label: str) -> dict:
    """Forward solve and log-posterior gradient per adjoint, at ``point`` (constrained)."""
    out, reference = {}, None
    for adjoint in ADJOINTS:
        p = _adjoint_posterior(post, adjoint)
        z = p.unconstrain({k: jnp.asarray(v, dtype=float) for k, v in point.items()})
        solve = jax.jit(lambda z, p=p: p.predict(z))
        density = lambda z, p=p: p.log_density(z)  # noqa: E731
        grad = jax.jit(jax.jacfwd(density) if adjoint == "forward" else jax.grad(density))
        _, solve_s, solve_compile = _time_calls(solve, z, repeats)
        g, grad_s, grad_compile = _time_calls(grad, z, repeats)
        g = np.asarray(g)
        if reference is None:
            reference = g
        rel = float(np.max(np.abs(g - reference) / np.maximum(np.abs(reference), 1e-12)))
        out[adjoint] = {"solve_s": solve_s, "solve_compile_s": solve_compile, "grad_s": grad_s,
                        "grad_compile_s": grad_compile, "grad_rel_diff_vs_checkpoint": rel,
                        "gradient_by": "jax.jacfwd" if adjoint == "forward" else "jax.grad"}
        print(f"  {label} {adjoint:>10}: solve {1e3 * solve_s:8.3f} ms (compile {solve_compile:5.1f} s)   "
              f"gradient {1e3 * grad_s:8.3f} ms (compile {grad_compile:5.1f} s)   |g - g_checkpoint|/|g| {rel:.1e}",
              flush=True)
    return out


def lv_adjoints(repeats: int) -> dict:
    post, _ = lv_setup()
    return adjoint_costs(post, BULK, repeats, "lotka-volterra")


def reaction_diffusion_adjoints(repeats: int) -> dict:
    """The reaction-diffusion problem's first-order model (40 finite volumes, Tsit5, 3
    snapshots) at the true (D, k)."""
    from problems import reaction_diffusion as rd

    data = rd.default_data()
    post = rd.models(data, reactions=("first-order",))["first-order"].condition(data.y)
    return adjoint_costs(post, data.meta["truth"], repeats, "reaction-diffusion")


def garnet_costs(repeats: int, full: bool = True) -> dict:
    """The garnet growth-zoning forward model of ``problems/garnet_ptt.py`` (30 shells, 36
    steps, exact diffusion by ``eigh`` per step: no Diffrax, so no adjoint to choose): one
    forward solve, the gradient and the Hessian of the log posterior (27 parameters) at the
    true path, and the gradient vmapped over 8 paths."""
    from problems import garnet_ptt as g

    data = g.default_data()
    post = g.make_model(data, 10.0).condition(data.y)
    z = post.unconstrain({**{k: jnp.asarray(v) for k, v in g.true_path().items()},
                          "growth_rate": jnp.asarray(g.TRUE_GROWTH_RATE)})
    batch = z + 0.01 * jax.random.normal(jax.random.key(0), (8, z.size))
    density = lambda z: post.log_density(z)  # noqa: E731
    calls = {"solve": (jax.jit(lambda z: post.predict(z)), z),
             "grad": (jax.jit(jax.grad(density)), z),
             "hessian": (jax.jit(jax.hessian(density)), z),
             "grad_vmap8": (jax.jit(jax.vmap(jax.grad(density))), batch)}
    if not full:  # smoke: the code path, without the costly compiles
        calls = {k: calls[k] for k in ("solve", "grad")}
    out = {}
    for name, (f, arg) in calls.items():
        _, steady, compile_s = _time_calls(f, arg, repeats)
        out[name] = {"time_s": steady, "compile_s": compile_s}
        print(f"  garnet {name:>10}: {1e3 * steady:8.3f} ms (compile {compile_s:5.1f} s)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, no JSON (CI)")
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per adjoint")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", FutureWarning)
    if args.smoke:
        args.chains, args.warmup, args.draws, args.repeats = 2, 50, 50, 5
        global ADJOINTS
        ADJOINTS = ("checkpoint", "forward")  # the code path of every part, at a fraction of the compile
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, load {info['load_average'][0]:.1f}; jax {info['jax']} "
          f"on {info['device']}, {info['precision']}")
    out = {"machine": info, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "smoke": args.smoke, "precision": jaxinv.precision(), "model": "lotka-volterra (posteriordb hudson_lynx_hare), Tsit5 rtol=atol=1e-6",
           "settings": {"chains": args.chains, "warmup": args.warmup, "draws": args.draws,
                        "repeats": args.repeats}}
    if "nuts" in args.parts:
        post, setup = lv_setup()
        out["density_check"] = check_same_density(post, setup, jax.random.key(7))
        runs = "density check only (smoke)" if args.smoke else f"NUTS, {args.chains} chains x ({args.warmup} + {args.draws})"
        print(f"== {runs}; |jaxinv log density + numpyro potential| at random points: {out['density_check']:.2e}",
              flush=True)
    if "nuts" in args.parts and not args.smoke:
        # (smoke: the two models' densities are checked above; the NUTS runners are
        # evidence.py's, which its own smoke run exercises: ~100 s of compiles saved in CI)
        init = starting_points(post, args.chains)
        _, out["nuts_jaxinv"] = jaxinv_nuts(post, init, args.warmup, args.draws)
        out["nuts_numpyro"] = numpyro_nuts(post, setup, init, args.warmup, args.draws)
        for who in ("jaxinv", "numpyro"):
            r = out[f"nuts_{who}"]
            print(f"  NUTS {who:>8}: min bulk ESS {r['ess_min']:7.0f} in {r['time_s']:6.2f} s = "
                  f"{r['ess_per_s']:8.1f} ESS/s (compile {r['compile_s']:.1f} s; {r['divergences']} divergences)",
                  flush=True)
        out["nuts_ratio"] = out["nuts_jaxinv"]["ess_per_s"] / out["nuts_numpyro"]["ess_per_s"]
        print(f"  ratio jaxinv / numpyro ESS/s: {out['nuts_ratio']:.2f}")
    if "adjoints" in args.parts:
        print(f"== adjoints, Lotka-Volterra (median of {args.repeats} calls)", flush=True)
        out["adjoints"] = lv_adjoints(args.repeats)
    if "reaction-diffusion" in args.parts:
        print(f"== adjoints, reaction-diffusion (median of {args.repeats} calls)", flush=True)
        out["reaction_diffusion_adjoints"] = reaction_diffusion_adjoints(args.repeats)
    if "garnet" in args.parts:
        print(f"== garnet growth-zoning model (median of {args.repeats} calls)", flush=True)
        out["garnet"] = garnet_costs(args.repeats, full=not args.smoke)
    if not args.smoke:
        path = Path(args.out)
        path.mkdir(parents=True, exist_ok=True)
        suffix = "" if set(args.parts) == set(PARTS) else "-" + "-".join(args.parts)
        path = path / f"ode-{info['hostname']}-{datetime.date.today().isoformat()}{suffix}.json"
        path.write_text(json.dumps(out, indent=1))
        print(f"written {path}")


if __name__ == "__main__":
    main()
