"""Run one engine with a checkpoint; with --kill, SIGKILL itself right after the first save.

Used by tests/test_checkpoint.py: the draws of a killed-and-resumed run must equal
those of an uninterrupted run.
"""

import argparse
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np

import jaxinv as ji
from jaxinv.inference.mcmc import sample_hmc
from jaxinv.inference.replica_exchange import sample_remc
from jaxinv.inference.smc import sample_smc

T = jnp.linspace(0.1, 3.0, 12)
Y = 1.3 * jnp.exp(-T / 0.8) + 0.05 * jnp.sin(7.0 * T)


def posterior():
    model = ji.Model(lambda p: p["amplitude"] * jnp.exp(-T / p["time_constant"]),
                     {"amplitude": ji.priors.Uniform(0.0, 3.0), "time_constant": ji.priors.LogUniform(0.05, 20.0)},
                     ji.likelihoods.Normal(sigma=0.05))
    return model.condition(Y)


SETTINGS = {
    "nuts": (lambda post, key, **kw: sample_hmc(post, key, n_chains=2, n_warmup=100, n_draws=60, **kw),
             dict(checkpoint_every=20)),
    "smc": (lambda post, key, **kw: sample_smc(post, key, n_particles=200, n_runs=2, target_ess=0.5, **kw), dict(checkpoint_every=2)),
    "remc": (lambda post, key, **kw: sample_remc(post, key, n_replicas=6, n_chains=2, n_tune=100, n_draws=200,
                                                 n_batches=10, **kw), dict(checkpoint_every=50)),
}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=sorted(SETTINGS))
    parser.add_argument("checkpoint")
    parser.add_argument("out")
    parser.add_argument("--kill", action="store_true")
    parser.add_argument("--straight", metavar="OUT", help="then also run without a checkpoint (in the same "
                        "process: the compiled programs are reused) and save its result here")
    args = parser.parse_args()
    sampler, options = SETTINGS[args.engine]

    def progress(done, total):
        if args.kill:
            os.kill(os.getpid(), signal.SIGKILL)

    kwargs = dict(options, progress=progress) if args.checkpoint != "none" else {}
    if args.checkpoint != "none":
        kwargs["checkpoint"] = args.checkpoint
    _save(args.out, sampler(posterior(), jax.random.key(11), **kwargs))
    if args.straight:
        _save(args.straight, sampler(posterior(), jax.random.key(11)))


def _save(path, res):
    np.savez(path, log_evidence=np.asarray(res.log_evidence), **{k: np.asarray(v) for k, v in res.params.items()})


if __name__ == "__main__":
    main()
