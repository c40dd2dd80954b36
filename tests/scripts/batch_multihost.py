"""ji.batch across 2 processes x 4 simulated CPU devices (jax.distributed, gloo) against one
process with 8 devices (run by tests/test_batch.py).

    python batch_multihost.py worker PORT PROCESS_ID OUT_JSON
    python batch_multihost.py reference OUT_JSON

Each writes the MAP of every dataset (8 datasets x 2 parameters) as JSON."""

import json
import os
import sys

MODE = sys.argv[1]
if MODE == "worker":  # joined inside "import jaxinv" (jaxinv.cluster.initialize_from_env)
    os.environ.update(JAXINV_COORDINATOR=f"127.0.0.1:{sys.argv[2]}", JAXINV_NUM_PROCESSES="2",
                      JAXINV_PROCESS_ID=sys.argv[3], JAXINV_CPU_DEVICES="4", JAXINV_HEARTBEAT_TIMEOUT="30")
else:
    os.environ["JAXINV_CPU_DEVICES"] = "8"

import jax  # noqa: E402

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import jaxinv as ji  # noqa: E402

T = jnp.linspace(0.0, 4.0, 25)


def decay(params):
    return params["amplitude"] * jnp.exp(-T / params["decay_time"])


def main():
    assert jax.device_count() == 8, jax.devices()
    rng = np.random.default_rng(0)
    amplitude, tau = rng.uniform(1.0, 3.0, 8), rng.uniform(0.5, 2.0, 8)
    Y = amplitude[:, None] * np.exp(-np.asarray(T)[None] / tau[:, None]) + 0.05 * rng.standard_normal((8, T.size))
    model = ji.Model(decay, {"amplitude": ji.priors.Uniform(0.0, 5.0), "decay_time": ji.priors.LogUniform(0.1, 10.0)},
                     ji.likelihoods.Normal(sigma=0.05))
    # Levenberg-Marquardt alone (the batch setting for small least-squares problems): a third of
    # the default's compile time in each of the three processes; tests/scripts/batch_devices.py
    # shards the default L-BFGS + LM
    res = ji.batch(ji.map_estimate, model, Y, jax.random.key(0), n_starts=2, optimizer=None)
    out = {"process_count": jax.process_count(), "failed": res.failed.tolist(),
           "params": {k: np.asarray(v).tolist() for k, v in res.params.items()}}
    with open(sys.argv[-1], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
