"""Throughput of EPMA quantitative mapping (problems/epma_mapping.py): pixels per second.

    python benchmarks/epma.py            # 512 x 512 pixels x 10 elements, prints a table
    python benchmarks/epma.py --smoke    # 48 x 48 x 10, for CI
    python benchmarks/epma.py --size 1024 --chunk 8192 --draws 100

One synthetic map (three phases, zoning, mixed boundary pixels, dead time, drift), one
calibration (MAP + Laplace of the background + drift model on the spot pixels), then the
whole per-pixel posterior (phase fractions by Laplace, ``--draws`` composition draws per
pixel, summaries) in one chunked call.  The first call includes compilation; the second
is the steady state.  Runs on whatever device JAX picks (GPU when present).
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import jaxinv as ji
from problems import epma_mapping as em


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--elements", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=em.CHUNK_SIZE)
    parser.add_argument("--draws", type=int, default=em.N_DRAWS)
    args = parser.parse_args()
    size = 48 if args.smoke else args.size
    print(f"device: {jax.devices()[0].platform} ({jax.device_count()}), precision: {ji.precision()}")
    t0 = time.perf_counter()
    epma, truth = em.synthetic_map(seed=0, shape=(size, size), n_elements=args.elements)
    t_gen = time.perf_counter() - t0
    data = em.as_dataset(epma)
    model = em.calibration_model(epma, background=True, drift=True)
    t0 = time.perf_counter()
    fit = ji.map_estimate(model.condition(data.y), jax.random.key(0), n_starts=4)
    t_cal = time.perf_counter() - t0
    draws = em.calibration_draws(fit, jax.random.key(1), n_draws=args.draws)
    t0 = time.perf_counter()
    membership, _ = em.memberships(epma, draws["drift"].mean(0))
    t_mem = time.perf_counter() - t0
    times = []
    for k in range(2):
        t0 = time.perf_counter()
        q = em.quantify(epma, draws, jax.random.key(2 + k), chunk_size=args.chunk, membership=membership)
        times.append(time.perf_counter() - t0)
    n_pix = size * size
    c = truth["concentration"]
    coverage = float(np.mean((q.lower <= c) & (c <= q.upper)))
    assert coverage > 0.85, coverage  # a sanity check, not the test (tests/test_epma_mapping.py)
    print(f"map {size} x {size} x {args.elements} elements, {len(epma.phases)} phases, {args.draws} draws/pixel, "
          f"chunk {args.chunk}")
    print(f"{'stage':<34} {'s':>8} {'pixels/s':>10}")
    print(f"{'synthetic map (numpy)':<34} {t_gen:>8.2f}")
    print(f"{'calibration (MAP + Laplace)':<34} {t_cal:>8.2f}")
    print(f"{'memberships (Poisson mixture EM)':<34} {t_mem:>8.2f} {n_pix / t_mem:>10.0f}")
    print(f"{'quantify, first call':<34} {times[0]:>8.2f} {n_pix / times[0]:>10.0f}")
    print(f"{'quantify, steady':<34} {times[1]:>8.2f} {n_pix / times[1]:>10.0f}")
    print(f"coverage of the 95 % intervals: {coverage:.3f}")


if __name__ == "__main__":
    main()
