"""A second run of an engine on new data of the same shape reuses the compiled program.

Every engine compiles its whole run as one program at the outer scope (``eqx.filter_jit``
around a ``lax.while_loop``/``scan``), and the data reach it as array leaves of the
``Posterior`` -- never as Python constants baked into the trace.  Here the engine's jitted
internals are swapped, for the test only, for fresh ``filter_jit`` wrappers around
``eqx.debug.assert_max_traces(fn, max_traces=1)``: a retrace raises.  On top, no XLA
compilation at all may happen during the second run (the JAX monitoring event emitted by
every backend compile is counted), which also covers the small eager operations around the
compiled loops.

The data-dependent prior bounds (``Uniform(0, 2 max|y|)``, as in the nmr-relaxation problem)
make sure that values derived from the data are traced, not baked in as constants.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import pytest

import jaxinv as ji
from jaxinv.inference import mcmc, replica_exchange, smc
from jaxinv.physics import InversionRecovery

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
# tiny runs: their convergence warnings are beside the point here
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

TAU = jnp.geomspace(0.01, 10.0, 13)  # an odd length, so that no other test shares the shapes


def _posterior(seed: int):
    truth = {"inversion_efficiency": 0.95, "equilibrium_magnetization": 1.0, "relaxation_time": 1.5}
    y = InversionRecovery(TAU)(truth) + 0.02 * jax.random.normal(jax.random.key(seed), TAU.shape)
    scale = float(jnp.max(jnp.abs(y)))
    model = ji.Model(
        InversionRecovery(TAU),
        {
            "inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
            "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0 * scale),
            "relaxation_time": ji.priors.LogUniform(1e-3, 1e2),
        },
        ji.likelihoods.Normal(sigma=ji.priors.LogUniform(1e-5 * scale, scale)),
    )
    return model.condition(y)


@pytest.fixture
def compiles():
    """Durations of the XLA backend compilations that happen while the fixture is live."""
    events = []

    def listener(event, duration, **kwargs):
        if event == BACKEND_COMPILE:
            events.append(duration)

    jax.monitoring.register_event_duration_secs_listener(listener)
    yield events
    jax.monitoring.unregister_event_duration_listener(listener)


def _guard(monkeypatch, module, name):
    """Replace ``module.name`` (an ``eqx.filter_jit`` function) by a fresh jitted copy that
    raises if traced more than once; returns the trace-counted function."""
    counted = eqx.debug.assert_max_traces(getattr(module, name).__wrapped__, max_traces=1)
    monkeypatch.setattr(module, name, eqx.filter_jit(counted))
    return counted


ENGINES = {
    "smc": (smc.sample_smc, [(smc, "_advance"), (smc, "_final_draws")],
            dict(n_particles=24, n_runs=2, max_mcmc_steps=10, target_ess=0.5)),
    "remc": (replica_exchange.sample_remc, [(replica_exchange, "_advance"), (replica_exchange, "_starts")],
             dict(n_replicas=5, n_chains=2, n_tune=40, n_draws=60, n_batches=5)),
    "nuts": (mcmc.sample_hmc, [(mcmc, "_warmup"), (mcmc, "_draw")],
             dict(n_chains=2, n_warmup=30, n_draws=40)),
}


@pytest.mark.parametrize("engine", sorted(ENGINES))
def test_second_run_on_new_data_does_not_recompile(engine, monkeypatch, compiles):
    sampler, internals, options = ENGINES[engine]
    counted = [_guard(monkeypatch, module, name) for module, name in internals]
    first_post, second_post = _posterior(1), _posterior(2)
    assert float(jnp.max(jnp.abs(first_post.y - second_post.y))) > 0  # really new data

    first = sampler(first_post, jax.random.key(0), **options)
    assert [eqx.debug.get_num_traces(f) for f in counted] == [1] * len(counted)
    n_first = len(compiles)
    assert n_first > 0  # the listener sees compilations

    second = sampler(second_post, jax.random.key(1), **options)
    # assert_max_traces would have raised on a retrace; state it explicitly as well
    assert [eqx.debug.get_num_traces(f) for f in counted] == [1] * len(counted)
    assert len(compiles) == n_first, f"{len(compiles) - n_first} XLA compilation(s) in the second run"
    for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(second.params)):
        assert a.shape == b.shape
        assert bool(jnp.any(a != b))
