"""Free energy and NUTS against peers: jaxinv SMC / REMC against dynesty, jaxinv NUTS against NumPyro.

    python benchmarks/evidence.py                  # both problems, prints tables, writes JSON
    python benchmarks/evidence.py --smoke          # tiny sizes (< 60 s of sampling), for CI
    python benchmarks/evidence.py --models nmr     # one problem

Models (the problems' default data):

* ``spectra`` -- spectral-deconvolution, K = 3 Gaussian peaks (9 parameters, 301 points,
  known noise, the Nagata et al. 2012 priors, ordered positions);
* ``nmr`` -- nmr-relaxation ``single`` (inversion recovery, 4 parameters with the noise level).

What is measured, in one run:

1. **Reference free energy** ``F_ref``: importance sampling with a multivariate Student-t
   proposal (5 degrees of freedom, mean and covariance of jaxinv NUTS draws around the MAP
   in the unconstrained space, covariance inflated by 1.5), ``--ref-draws`` draws; its
   standard error comes from the weights.  It is independent of the engines being timed; it
   covers the main mode only (other modes of the ordered K = 3 spectra model fit far worse;
   the long SMC/REMC runs check that they carry no weight).
2. **Time to |F - F_ref| < 0.1**: each engine is run at geometrically growing sizes
   (SMC: particles; REMC: sweeps; dynesty: live points), ``--seeds`` seeds per size; the
   first size whose root-mean-square error over the seeds is below 0.1 is the engine's
   operating point, and its mean wall time per run the figure.  Compile time is excluded
   (a first run at every size compiles and is timed apart: ``compile_s`` = first run minus
   the mean of the later ones).  dynesty (static nested sampling, ``sample="auto"``, default
   bounds) runs on the jitted jaxinv log-likelihood of the same model, called from NumPy one
   point at a time as dynesty does, with the prior transform built from the same priors
   (inverse CDFs, sorted for ordered vectors -- the order statistics of i.i.d. draws, which is
   jaxinv's ``K! prod p`` prior).  A size cap or time budget may stop an engine before it gets
   there; it is then reported as not reached, with the best RMSE it got.
3. **NUTS ESS/s**: minimum bulk ESS over all parameter components per second of sampling
   (warmup + draws, compile excluded: the second of two runs with different keys), for
   jaxinv NUTS and NumPyro NUTS on the same model, data and unconstrained parameterisation,
   4 chains vectorised in both, all starting at the multi-start MAP (jittered by 1e-3): from
   prior draws the spectra chains stick in separate local modes in both libraries.  The NumPyro models are written by hand below; their
   potential energy is checked against jaxinv's at random points before timing.

Ratios: ``dynesty_time / engine_time`` (> 1: jaxinv faster) and
``jaxinv_ess_per_s / numpyro_ess_per_s``.  Results go to
``benchmarks/results/evidence-<hostname>-<date>.json`` with machine information.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import socket
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jaxinv as ji  # noqa: E402
from jaxinv.inference.mcmc import _diagnostics  # noqa: E402
from problems import nmr_relaxation, spectral_deconvolution  # noqa: E402

TOLERANCE = 0.1


# ----------------------------------------------------------------------------- models
def spectra_setup():
    data = spectral_deconvolution.default_data()
    post = spectral_deconvolution.models(data, n_components=(3,))["K=3"].condition(data.y)

    import numpyro
    import numpyro.distributions as dist
    from numpyro.distributions import constraints

    x, y = jnp.asarray(data.x), jnp.asarray(data.y)
    a_shape, a_rate = spectral_deconvolution.PRIOR_AMPLITUDE
    mu0, mu_sd = spectral_deconvolution.PRIOR_POSITION
    b_shape, b_rate = spectral_deconvolution.PRIOR_PRECISION
    sigma = spectral_deconvolution.NOISE_SD

    def model(x, y):
        a = numpyro.sample("amplitude", dist.Gamma(a_shape, a_rate).expand([3]))
        mu = numpyro.sample("position", dist.ImproperUniform(constraints.ordered_vector, (), (3,)))
        numpyro.factor("position_prior", jnp.sum(dist.Normal(mu0, mu_sd).log_prob(mu)) + math.lgamma(4))
        b = numpyro.sample("precision", dist.Gamma(b_shape, b_rate).expand([3]))
        pred = jnp.exp(-0.5 * b * (x[:, None] - mu) ** 2) @ a
        numpyro.sample("y", dist.Normal(pred, sigma), obs=y)

    def to_numpyro(u):  # jaxinv's unconstrained blocks -> numpyro's unconstrained sites
        return {"amplitude": u["amplitude"], "position": u["position"], "precision": u["precision"]}

    def from_numpyro(samples):  # constrained numpyro draws -> jaxinv parameter dict
        return {k: samples[k] for k in ("amplitude", "position", "precision")}

    return post, (model, (x, y), to_numpyro, from_numpyro)


def nmr_setup():
    data = nmr_relaxation.default_data()
    post = nmr_relaxation.models(data, n_components=(1,), stretched=False)["single"].condition(data.y)

    import numpyro
    import numpyro.distributions as dist

    tau, y = jnp.asarray(data.x), jnp.asarray(data.y)
    scale = float(np.max(np.abs(data.y)))
    lo, hi = float(tau[tau > 0].min()) / 10.0, float(tau.max()) * 10.0

    def model(tau, y):
        f = numpyro.sample("inversion_efficiency", dist.Uniform(0.0, 1.0))
        m = numpyro.sample("equilibrium_magnetization", dist.Uniform(0.0, 2.0 * scale))
        # log-uniform priors written as uniform priors on the logarithm (scale-free geometry)
        t1 = jnp.exp(numpyro.sample("log_relaxation_time", dist.Uniform(math.log(lo), math.log(hi))))
        sigma = jnp.exp(numpyro.sample("log_sigma", dist.Uniform(math.log(1e-5 * scale), math.log(scale))))
        numpyro.deterministic("relaxation_time", t1)
        numpyro.deterministic("sigma", sigma)
        numpyro.sample("y", dist.Normal(m * (1.0 - 2.0 * f * jnp.exp(-tau / t1)), sigma), obs=y)

    def to_numpyro(u):
        return {"inversion_efficiency": u["inversion_efficiency"],
                "equilibrium_magnetization": u["equilibrium_magnetization"],
                "log_relaxation_time": u["relaxation_time"], "log_sigma": u["sigma"]}

    def from_numpyro(samples):
        return {k: samples[k] for k in ("inversion_efficiency", "equilibrium_magnetization", "relaxation_time",
                                        "sigma")}

    return post, (model, (tau, y), to_numpyro, from_numpyro)


SETUPS = {"spectra": spectra_setup, "nmr": nmr_setup}


# ----------------------------------------------------------------------------- reference F
def reference_free_energy(post, z_draws, key, n_draws: int, df: float = 5.0, inflate: float = 1.5,
                          chunk: int = 1 << 15) -> dict:
    """``F`` by importance sampling from a multivariate t fitted to posterior draws ``z_draws``."""
    z = np.asarray(z_draws).reshape(-1, post.dim)
    mean = jnp.asarray(z.mean(0))
    chol = jnp.linalg.cholesky(jnp.asarray(np.cov(z.T) * inflate).reshape(post.dim, post.dim))
    d = post.dim
    log_det = jnp.sum(jnp.log(jnp.diag(chol)))
    const = (math.lgamma((df + d) / 2) - math.lgamma(df / 2) - 0.5 * d * math.log(df * math.pi))

    @jax.jit
    def log_weights(key):
        k1, k2 = jax.random.split(key)
        eps = jax.random.normal(k1, (chunk, d))
        g = jax.random.gamma(k2, df / 2, (chunk,)) / (df / 2)
        x = mean + (eps @ chol.T) / jnp.sqrt(g)[:, None]
        maha = jnp.sum(jnp.linalg.solve(chol, (x - mean).T) ** 2, axis=0)
        log_q = const - log_det - 0.5 * (df + d) * jnp.log1p(maha / df)
        log_p = jax.vmap(post.log_density)(x)
        return jnp.where(jnp.isfinite(log_p), log_p - log_q, -jnp.inf)

    lw = np.concatenate([np.asarray(log_weights(k)) for k in jax.random.split(key, max(1, n_draws // chunk))])
    m = lw.max()
    w = np.exp(lw - m)
    log_z = m + math.log(w.mean())
    se = float(w.std(ddof=1) / math.sqrt(w.size) / w.mean())  # delta method on log mean w
    ess = float(w.sum() ** 2 / np.sum(w**2))
    return {"method": "importance sampling, multivariate t (df 5) from NUTS draws, cov x1.5",
            "F": -float(log_z), "se": se, "n_draws": int(w.size), "weights_ess": ess}


# ----------------------------------------------------------------------------- dynesty
def _inverse_cdf(base):
    """NumPy inverse CDF of a scalar numpyro distribution (the prior transform of dynesty); for
    a Dirichlet, K uniforms to the simplex through K independent Gamma(alpha_k, 1) inverse CDFs,
    normalised (the Gamma representation of the Dirichlet: the pushed-forward measure is the
    Dirichlet, one redundant cube direction)."""
    import numpyro.distributions as npd
    from scipy import special

    p = {k: np.asarray(getattr(base, k), dtype=float) for k in base.arg_constraints}
    if isinstance(base, npd.LogUniform):
        lo, hi = np.log(p["low"]), np.log(p["high"])
        return lambda u: np.exp(lo + u * (hi - lo))
    if isinstance(base, npd.Uniform):
        return lambda u: p["low"] + u * (p["high"] - p["low"])
    if isinstance(base, npd.Normal):
        return lambda u: p["loc"] + p["scale"] * special.ndtri(u)
    if isinstance(base, npd.Gamma):
        return lambda u: special.gammaincinv(p["concentration"], u) / p["rate"]
    if isinstance(base, npd.Dirichlet):
        return lambda u: (lambda g: g / np.sum(g))(special.gammaincinv(p["concentration"], u))
    raise NotImplementedError(f"no prior transform for {type(base).__name__}")


def dynesty_problem(post):
    """``(loglike(theta), prior_transform(u), ndim)`` on the constrained parameters of ``post``:
    the jitted jaxinv log-likelihood of the same model, and inverse CDFs of the same priors
    (sorted for ordered vectors: the order statistics of i.i.d. draws, jaxinv's K! prod p)."""
    import numpyro.distributions as npd

    blocks = []
    for name, prior in post.priors.items():
        dist = prior.distribution
        base = dist.base_dist if isinstance(dist, npd.ExpandedDistribution) else dist
        size = int(np.prod(prior.shape)) if prior.shape else 1
        blocks.append((name, prior.shape, size, _inverse_cdf(base), prior.ordered))
    ndim = sum(b[2] for b in blocks)

    def transform(u):
        out, i = [], 0
        for _, _, size, icdf, ordered in blocks:
            x = icdf(u[i:i + size])
            out.append(np.sort(x) if ordered else x)
            i += size
        return np.concatenate(out)

    def unflatten(theta):
        out, i = {}, 0
        for name, shape, size, _, _ in blocks:
            out[name] = theta[i:i + size].reshape(shape)
            i += size
        return out

    def loglike(theta):
        z = post.unconstrain(unflatten(theta))
        v = post.log_likelihood(z)
        return jnp.where(jnp.isfinite(v), v, -1e300)

    ll = jax.jit(loglike).lower(jnp.asarray(transform(np.full(ndim, 0.5)))).compile()
    return (lambda theta: float(ll(np.asarray(theta)))), transform, ndim


def run_dynesty(problem, nlive: int, seed: int) -> tuple[float, float]:
    import dynesty

    loglike, transform, ndim = problem
    sampler = dynesty.NestedSampler(loglike, transform, ndim, nlive=nlive, rstate=np.random.default_rng(seed))
    t0 = time.perf_counter()
    sampler.run_nested(print_progress=False)
    elapsed = time.perf_counter() - t0
    return -float(sampler.results.logz[-1]), elapsed


# ----------------------------------------------------------------------------- time to accuracy
def ladder(name, run, sizes, seeds, f_ref, budget_s, compiles=True) -> dict:
    """Run ``run(size, seed) -> F`` (timed) at growing sizes until the RMSE over seeds < TOLERANCE."""
    levels, t_start = [], time.perf_counter()
    for size in sizes:
        compile_s = None
        if compiles:
            t0 = time.perf_counter()
            run(size, 1000)
            first = time.perf_counter() - t0
        values, times = [], []
        for seed in range(seeds):
            t0 = time.perf_counter()
            values.append(run(size, seed))
            times.append(time.perf_counter() - t0)
        if compiles:
            compile_s = max(first - float(np.mean(times)), 0.0)
        err = np.asarray(values) - f_ref
        rmse = float(np.sqrt(np.mean(err**2)))
        level = {"size": size, "F": values, "time_s": times, "mean_time_s": float(np.mean(times)),
                 "rmse": rmse, "bias": float(np.mean(err)), "compile_s": compile_s}
        levels.append(level)
        print(f"  {name:>8} size {size:>6}: F = {np.mean(values):9.3f} rmse {rmse:7.3f}  "
              f"{np.mean(times):8.2f} s/run" + (f"  (compile {compile_s:.1f} s)" if compiles else ""), flush=True)
        if rmse < TOLERANCE:
            return {"reached": True, "size": size, "time_s": level["mean_time_s"], "rmse": rmse,
                    "compile_s": compile_s, "levels": levels}
        if time.perf_counter() - t_start > budget_s:
            break
    best = min(levels, key=lambda lv: lv["rmse"])
    return {"reached": False, "size": None, "time_s": None, "rmse": best["rmse"],
            "compile_s": levels[-1]["compile_s"], "max_time_s": levels[-1]["mean_time_s"], "levels": levels}


# ----------------------------------------------------------------------------- NUTS
class XLACompileTime:
    """Seconds spent in XLA backend compilation while the context is open (JAX monitoring
    events).  NumPyro's ``MCMC.run`` compiles part of its sampler again on every call (also
    with ``jit_model_args=True``); that time is taken out of its sampling time."""

    def __enter__(self):
        self.seconds = 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def _listen(self, event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            self.seconds += duration

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)


def _timed(run):
    with XLACompileTime() as xla:
        t0 = time.perf_counter()
        out = run()
        elapsed = time.perf_counter() - t0
    return out, elapsed, xla.seconds


def starting_points(post, n_chains=4):
    """The MAP (multi-start) plus a small jitter per chain, unconstrained: both NUTS samplers
    start there (from prior draws, chains on the spectra posterior stick in separate local
    modes and the ESS measures nothing but that)."""
    fit = ji.map_estimate(post, jax.random.key(5), n_starts=32)
    z = post.unconstrain({k: jnp.asarray(v) for k, v in fit.params.items()})
    return z + 1e-3 * jax.random.normal(jax.random.key(6), (n_chains, post.dim))


def jaxinv_nuts(post, init, n_warmup, n_draws):
    n_chains = init.shape[0]
    t0 = time.perf_counter()
    ji.sample(post, jax.random.key(100), method="nuts", n_chains=n_chains, n_warmup=n_warmup, n_draws=n_draws,
              init=init)
    first = time.perf_counter() - t0
    res, elapsed, xla = _timed(lambda: jax.block_until_ready(
        ji.sample(post, jax.random.key(1), method="nuts", n_chains=n_chains, n_warmup=n_warmup, n_draws=n_draws,
                  init=init)))
    _, bulk, _ = _diagnostics(res.params)
    ess = min(bulk.values())
    return res, {"ess_min": ess, "wall_s": elapsed, "xla_compile_in_run_s": xla, "time_s": elapsed - xla,
                 "ess_per_s": ess / (elapsed - xla), "compile_s": max(first - elapsed, 0.0),
                 "divergences": int(res.stats["divergences"])}


def numpyro_nuts(post, setup, init, n_warmup, n_draws):
    from numpyro.infer import MCMC, NUTS

    model, args, to_numpyro, from_numpyro = setup
    n_chains = init.shape[0]
    init_params = jax.vmap(lambda z: to_numpyro(post.unravel(z)))(init)
    # jit_model_args: NumPyro's own way to reuse the compiled sampler across runs
    mcmc = MCMC(NUTS(model), num_warmup=n_warmup, num_samples=n_draws, num_chains=n_chains,
                chain_method="vectorized", progress_bar=False, jit_model_args=True)
    t0 = time.perf_counter()
    mcmc.run(jax.random.key(100), *args, init_params=init_params)
    jax.block_until_ready(mcmc.get_samples())
    first = time.perf_counter() - t0

    def second():
        mcmc.run(jax.random.key(1), *args, init_params=init_params)
        return jax.block_until_ready(mcmc.get_samples(group_by_chain=True))

    samples, elapsed, xla = _timed(second)
    divergences = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    _, bulk, _ = _diagnostics(from_numpyro(samples))
    ess = min(bulk.values())
    return {"ess_min": ess, "wall_s": elapsed, "xla_compile_in_run_s": xla, "time_s": elapsed - xla,
            "ess_per_s": ess / (elapsed - xla), "compile_s": max(first - elapsed, 0.0) + xla,
            "divergences": divergences}


def check_same_density(post, setup, key, n=5) -> float:
    """Largest spread over random points of jaxinv's log density + NumPyro's potential energy
    (the same model and unconstrained parameterisation: a constant, here 0)."""
    from numpyro.infer.util import potential_energy

    model, args, to_numpyro, _ = setup
    diffs = []
    for z in post.init(key, n):
        pe = potential_energy(model, args, {}, to_numpyro(post.unravel(z)))
        diffs.append(float(post.log_density(z) + pe))
    return float(np.max(np.abs(diffs)))


# ----------------------------------------------------------------------------- main
def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import blackjax
    import numpyro

    try:
        import dynesty
        dynesty_version = dynesty.__version__
    except ImportError:
        dynesty_version = None
    return {"hostname": socket.gethostname(), "cpu": cpu, "cores": os.cpu_count(),
            "load_average": list(os.getloadavg()), "platform": platform.platform(),
            "python": platform.python_version(), "jax": jax.__version__, "device": str(jax.devices()[0]),
            "precision": ji.precision(), "blackjax": blackjax.__version__, "numpyro": numpyro.__version__,
            "dynesty": dynesty_version}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for CI")
    parser.add_argument("--models", nargs="+", choices=list(SETUPS),
                        help="default: all (--smoke: nmr only)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per size")
    parser.add_argument("--budget", type=float, default=600.0, help="seconds per engine and model before giving up")
    parser.add_argument("--ref-draws", type=int, default=1 << 20)
    parser.add_argument("--parts", nargs="+", default=["nuts", "evidence"], choices=["nuts", "evidence"],
                        help="what to measure (evidence needs NUTS draws for its reference all the same)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", FutureWarning)
    try:
        import dynesty  # noqa: F401
        have_dynesty = True
    except ImportError:
        have_dynesty = False
        print("dynesty is not installed (pip install '.[bench]'): that peer is reported as unavailable")

    if args.smoke:
        nuts = (100, 100)
        sizes = {"smc": [32], "remc": [80], "dynesty": [25]}
        seeds, ref_draws, budget = 1, 1 << 15, 0.0
    else:
        nuts = (1000, 1000)
        sizes = {"smc": [128, 512, 2048, 8192], "remc": [500, 2000, 8000, 32000],
                 "dynesty": [100, 400, 1600, 6400]}
        seeds, ref_draws, budget = args.seeds, args.ref_draws, args.budget
    if args.models is None:
        args.models = ["nmr"] if args.smoke else list(SETUPS)
    info = machine_info()
    print(f"{info['cpu']}, {info['cores']} cores, load {info['load_average'][0]:.1f}; jax {info['jax']} "
          f"on {info['device']}, {info['precision']}")
    out = {"machine": info, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "smoke": args.smoke, "tolerance": TOLERANCE, "seeds": seeds, "models": {}}
    for name in args.models:
        post, setup = SETUPS[name]()
        print(f"\n== {name}: {post.dim} parameters, {post.n_data} data points")
        record = {"dim": post.dim, "n_data": post.n_data}
        record["density_check"] = check_same_density(post, setup, jax.random.key(7))
        print(f"  |jaxinv log density + numpyro potential| at random points: {record['density_check']:.2e}")

        init = starting_points(post)
        res, record["nuts_jaxinv"] = jaxinv_nuts(post, init, *nuts)
        if "nuts" in args.parts:
            record["nuts_numpyro"] = numpyro_nuts(post, setup, init, *nuts)
            for who in ("jaxinv", "numpyro"):
                r = record[f"nuts_{who}"]
                print(f"  NUTS {who:>8}: min bulk ESS {r['ess_min']:7.0f} in {r['time_s']:6.2f} s = "
                      f"{r['ess_per_s']:8.1f} ESS/s (compile {r['compile_s']:.1f} s, of which "
                      f"{r['xla_compile_in_run_s']:.1f} s again in the timed run and taken out; "
                      f"{r['divergences']} divergences)")
            record["nuts_ratio"] = record["nuts_jaxinv"]["ess_per_s"] / record["nuts_numpyro"]["ess_per_s"]
        if "evidence" in args.parts:
            evidence_ladders(post, res, record, have_dynesty, sizes, seeds, ref_draws, budget)
        out["models"][name] = record
        if not args.smoke:
            write(out, args.out, info, args.parts)
    print_tables(out)
    if not args.smoke:
        print(f"\nwritten {write(out, args.out, info, args.parts)}")


def evidence_ladders(post, res, record, have_dynesty, sizes, seeds, ref_draws, budget) -> None:
    """Reference F, then each engine's time to reach it within TOLERANCE."""

    z = jax.vmap(post.unconstrain)({k: v.reshape((-1,) + v.shape[2:]) for k, v in res.params.items()})
    t0 = time.perf_counter()
    ref = reference_free_energy(post, z, jax.random.key(3), ref_draws)
    ref["time_s"] = time.perf_counter() - t0
    record["reference"] = ref
    f_ref = ref["F"]
    print(f"  reference F = {f_ref:.4f} +- {ref['se']:.4f} ({ref['n_draws']} IS draws, weight ESS "
          f"{ref['weights_ess']:.0f})")

    def smc_run(n, seed):
        return float(ji.sample(post, jax.random.key(seed), method="smc", n_particles=n).free_energy)

    def remc_run(n, seed):
        return float(ji.sample(post, jax.random.key(seed), method="remc", n_draws=n, n_tune=n // 2,
                               n_batches=min(20, n // 4)).free_energy)

    engines = {"smc": (smc_run, True), "remc": (remc_run, True)}
    if have_dynesty:
        problem = dynesty_problem(post)
        engines["dynesty"] = (lambda n, seed: run_dynesty(problem, n, seed)[0], False)
    for engine, (run, compiles) in engines.items():
        record[engine] = ladder(engine, run, sizes[engine], seeds, f_ref, budget, compiles)
    if not have_dynesty:
        record["dynesty"] = {"available": False}


def print_tables(out) -> None:
    print(f"\n{'model':>8} {'engine':>8} {'reached':>8} {'size':>6} {'s/run':>8} {'compile s':>9} "
          f"{'rmse':>6} {'dynesty/engine':>15}")
    for name, r in out["models"].items():
        if "dynesty" not in r:
            continue
        dyn = r["dynesty"]
        for engine in ("smc", "remc", "dynesty"):
            e = r[engine]
            if e.get("available") is False:
                print(f"{name:>8} {engine:>8} {'n/a':>8}")
                continue
            ratio = "-"
            if engine != "dynesty" and e["reached"] and dyn.get("available", True):
                if dyn["reached"]:
                    e["dynesty_ratio"] = dyn["time_s"] / e["time_s"]
                    ratio = f"{e['dynesty_ratio']:.1f}"
                else:  # dynesty never got there: its last size's time is a lower bound
                    e["dynesty_ratio_lower_bound"] = dyn["max_time_s"] / e["time_s"]
                    ratio = f">{e['dynesty_ratio_lower_bound']:.1f}"
            t = f"{e['time_s']:.2f}" if e["reached"] else f">{e['max_time_s']:.2f}"
            c = "-" if e["compile_s"] is None else f"{e['compile_s']:.1f}"
            print(f"{name:>8} {engine:>8} {str(e['reached']):>8} {str(e['size'] or '-'):>6} {t:>8} {c:>9} "
                  f"{e['rmse']:6.3f} {ratio:>15}")
    print(f"\n{'model':>8} {'jaxinv ESS/s':>12} {'numpyro ESS/s':>13} {'ratio':>6} {'compile s (jaxinv/numpyro)':>27}")
    for name, r in out["models"].items():
        if "nuts_numpyro" not in r:
            continue
        a, b = r["nuts_jaxinv"], r["nuts_numpyro"]
        print(f"{name:>8} {a['ess_per_s']:12.1f} {b['ess_per_s']:13.1f} {r['nuts_ratio']:6.2f} "
              f"{a['compile_s']:13.1f} / {b['compile_s']:.1f}")


def write(out, folder, info, parts) -> Path:
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    suffix = "" if set(parts) == {"nuts", "evidence"} else "-" + "-".join(parts)
    path = path / f"evidence-{info['hostname']}-{datetime.date.today().isoformat()}{suffix}.json"
    path.write_text(json.dumps(out, indent=1))
    return path


if __name__ == "__main__":
    main()
