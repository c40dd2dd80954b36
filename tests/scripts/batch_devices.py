"""ji.batch over 4 simulated CPU devices against one device (run by tests/test_batch.py).

Prints one JSON line: the largest relative MAP difference between the sharded and the
one-device run (closed-form decay model); for an ODE model solved by Diffrax, the largest
relative difference of energies and gradients at prior draws (``--slow``: of the MAP);
with ``--slow`` also the largest |difference of posterior means| in Monte Carlo standard
errors between sharded and one-device HMC, and HMC's lane efficiency."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import json  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxinv as ji  # noqa: E402
from jaxinv.physics.ode import ODE  # noqa: E402

T = jnp.linspace(0.0, 4.0, 25)
SIGMA = 0.05


def decay(params):
    return params["amplitude"] * jnp.exp(-T / params["decay_time"])


def rate(t, state, params):
    return -state / params["decay_time"]


def start(params):
    return params["amplitude"]


def models():
    priors = {"amplitude": ji.priors.Uniform(0.0, 5.0), "decay_time": ji.priors.LogUniform(0.1, 10.0)}
    closed = ji.Model(decay, priors, ji.likelihoods.Normal(sigma=SIGMA))
    ode = ji.Model(ODE(rate, start, T), priors, ji.likelihoods.Normal(sigma=SIGMA))
    return closed, ode


def energy_and_gradient(post, key):
    """A cheap engine: the energy and its gradient (through the ODE solve) at prior draws."""
    z = post.init(key, 4)
    return {"energy": jax.vmap(post.energy)(z), "gradient": jax.vmap(jax.grad(post.energy))(z)}


def rel_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(a.params[k]) - np.asarray(b.params[k])) / np.abs(np.asarray(b.params[k]))))
               for k in b.params)


def main():
    assert jax.device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    n = 8
    amplitude, tau = rng.uniform(1.0, 3.0, n), rng.uniform(0.5, 2.0, n)
    Y = amplitude[:, None] * np.exp(-np.asarray(T)[None] / tau[:, None]) + SIGMA * rng.standard_normal((n, T.size))
    closed, ode = models()
    key = jax.random.key(0)
    one = [jax.devices()[0]]
    out = {"devices": jax.device_count()}
    sharded = ji.batch(ji.map_estimate, closed, Y, key, n_starts=4)
    single = ji.batch(ji.map_estimate, closed, Y, key, n_starts=4, devices=one)
    out["map_max_rel_diff"] = rel_diff(sharded, single)
    sharded = ji.batch(energy_and_gradient, ode, Y, key)
    single = ji.batch(energy_and_gradient, ode, Y, key, devices=one)
    # relative to each array's scale (a gradient element near zero has no relative precision)
    out["ode_max_rel_diff"] = max(float(np.max(np.abs(sharded.stacked[k] - single.stacked[k])
                                               / np.max(np.abs(single.stacked[k])))) for k in ("energy", "gradient"))
    out["ode_failed"] = int(sharded.failed.sum())
    if "--slow" not in sys.argv:
        print(json.dumps(out))
        return
    sharded = ji.batch(ji.map_estimate, ode, Y, key, n_starts=2)
    single = ji.batch(ji.map_estimate, ode, Y, key, n_starts=2, devices=one)
    out["ode_map_max_rel_diff"] = rel_diff(sharded, single)
    out["ode_map_failed"] = int(sharded.failed.sum())
    kw = dict(n_chains=2, n_warmup=200, n_draws=300)
    sharded = ji.batch(ji.sample, closed, Y, key, **kw)
    single = ji.batch(ji.sample, closed, Y, key, devices=one, **kw)
    z = 0.0
    for k in closed.priors:
        a = np.asarray(sharded.params[k]).reshape(n, -1)
        b = np.asarray(single.params[k]).reshape(n, -1)
        # difference of two means, each with Monte Carlo error ~ sd / sqrt(ESS)
        ess = np.minimum(np.asarray(sharded.stats["ess_min"]), np.asarray(single.stats["ess_min"]))
        z = max(z, float(np.max(np.abs(a.mean(1) - b.mean(1)) / (b.std(1) * np.sqrt(2.0 / ess)))))
    out["hmc_max_z"] = z
    out["hmc_efficiency"] = sharded.lane_efficiency
    print(json.dumps(out))


if __name__ == "__main__":
    main()
