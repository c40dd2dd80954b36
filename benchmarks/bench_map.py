"""Throughput of multi-start MAP (+ Laplace) on inversion-recovery curves.

    python benchmarks/bench_map.py            # full sizes, prints a table
    python benchmarks/bench_map.py --smoke    # tiny sizes, for CI

Reports compile time (first call) and steady-state time per call for a given
number of starts; run on CPU and, when present, GPU (JAX picks the device).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import jaxinv as ji
from jaxinv.physics import InversionRecovery


def make_posterior(n_points: int, seed: int = 0):
    tau = jnp.geomspace(0.01, 30.0, n_points)
    truth = {"inversion_efficiency": 0.9, "equilibrium_magnetization": 1.0, "relaxation_time": 2.0}
    y = InversionRecovery(tau)(truth) + 0.01 * jax.random.normal(jax.random.key(seed), tau.shape)
    model = ji.Model(
        InversionRecovery(tau),
        {
            "inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
            "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0),
            "relaxation_time": ji.priors.LogUniform(1e-3, 1e3),
        },
        ji.likelihoods.Normal(sigma=ji.priors.LogUniform(1e-4, 1.0)),
    )
    return model.condition(y)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    sizes = [(8, 4)] if args.smoke else [(8, 32), (64, 32), (64, 256), (512, 256)]
    print(f"device: {jax.devices()[0].platform}, precision: {ji.precision()}")
    print(f"{'n_points':>8} {'n_starts':>8} {'first call s':>12} {'steady s':>9}")
    for n_points, n_starts in sizes:
        post = make_posterior(n_points)
        t0 = time.perf_counter()
        fit = ji.map_estimate(post, jax.random.key(0), n_starts=n_starts)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit = ji.map_estimate(post, jax.random.key(1), n_starts=n_starts)
        jax.block_until_ready(fit.params)
        steady = time.perf_counter() - t0
        assert abs(float(fit.params["relaxation_time"]) - 2.0) < 0.5
        print(f"{n_points:>8} {n_starts:>8} {first:>12.2f} {steady:>9.2f}")


if __name__ == "__main__":
    main()
