"""float64 by default; float32 selectable through JAXINV_PRECISION."""

import os
import subprocess
import sys
import textwrap

import jax.numpy as jnp

import jaxinv as ji


def test_float64_by_default():
    assert ji.precision() == "float64"
    assert ji.priors.Normal(0.0, 1.0).sample(__import__("jax").random.key(0), 2).dtype == jnp.float64


def test_float32_selectable():
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, jaxinv as ji
        from jaxinv.physics import InversionRecovery
        assert ji.precision() == "float32"
        tau = jnp.geomspace(0.01, 20.0, 30)
        truth = {"inversion_efficiency": 0.9, "equilibrium_magnetization": 1.0, "relaxation_time": 1.5}
        y = InversionRecovery(tau)(truth)
        model = ji.Model(InversionRecovery(tau),
            {"inversion_efficiency": ji.priors.Uniform(0.0, 1.0),
             "equilibrium_magnetization": ji.priors.Uniform(0.0, 2.0),
             "relaxation_time": ji.priors.LogUniform(1e-3, 1e3)},
            ji.likelihoods.Normal(sigma=0.01))
        fit = ji.map_estimate(model.condition(y), jax.random.key(0), n_starts=8)
        assert fit.params["relaxation_time"].dtype == jnp.float32, fit.params["relaxation_time"].dtype
        assert abs(float(fit.params["relaxation_time"]) - 1.5) < 1e-3, fit.params
        print("ok")
        """
    )
    env = {**os.environ, "JAXINV_PRECISION": "float32"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
