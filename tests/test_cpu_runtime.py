"""The guard against jaxlib 0.10's LAPACK thread-pool hang (jaxinv/_config.py): a fresh
process that imports jaxinv gets an XLA CPU pool of CPUs + 4 threads; a value set by the
user is kept."""

import os
import subprocess
import sys

import jaxlib
import pytest

COUNT_POOL = """
import os, jaxinv, jax.numpy as jnp
(jnp.ones((8, 8)) @ jnp.ones((8, 8))).block_until_ready()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(sum(n == "tf_XLAEigen" for n in names), len(os.sched_getaffinity(0)))
"""


def _pool_size(**env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PJRT_NPROC", "NPROC")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", COUNT_POOL], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    threads, cpus = map(int, out.stdout.split())
    return threads, cpus


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread names are read from /proc (Linux)")
def test_pool_has_four_threads_more_than_cpus_on_jaxlib_0_10():
    threads, cpus = _pool_size()
    version = tuple(int(v) for v in jaxlib.__version__.split(".")[:3])
    assert threads == (cpus + 4 if version < (0, 11, 1) else cpus)
    assert _pool_size(PJRT_NPROC="3")[0] == 3
