"""The guard against jaxlib 0.10's LAPACK thread-pool hang (jaxinv/_config.py): a fresh
process that imports jaxinv gets an XLA CPU pool of CPUs + 4 threads; a PJRT_NPROC set by
the user is kept; JAX computing before the import is warned about.  (Linux, as every machine
of this project: the pool's threads are counted by name in /proc.)  And the compile-time
setting beside it: on jaxlib 0.10 the CPU backend is asked for its LLVM-IR fusion emitters,
unless the user chose otherwise."""

import os
import subprocess
import sys

from jaxinv._config import CPU_COMPILE_FLAG, _jaxlib_version

COUNT_POOL = """
import os, jaxinv, jax.numpy as jnp
(jnp.ones((8, 8)) @ jnp.ones((8, 8))).block_until_ready()
names = [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]
print(sum(n == "tf_XLAEigen" for n in names), len(os.sched_getaffinity(0)))
"""

TOO_LATE = """
import warnings, jax.numpy as jnp
jnp.ones(3).block_until_ready()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import jaxinv
print(sum("could not widen" in str(w.message) for w in caught))
"""


XLA_FLAGS_SEEN = """
import os, jaxinv, jax.numpy as jnp
jnp.ones(3).block_until_ready()
print(os.environ.get("XLA_FLAGS", ""))
"""


def _flags_seen(**env_extra):
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "JAXINV_XLA_CPU_DEFAULTS")}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", XLA_FLAGS_SEEN], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def _run(code, **env_extra):
    env = {k: v for k, v in os.environ.items() if k != "PJRT_NPROC"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return [int(v) for v in out.stdout.split()]


def test_pool_has_four_threads_more_than_cpus_on_jaxlib_0_10():
    threads, cpus = _run(COUNT_POOL)
    assert threads == (cpus + 4 if _jaxlib_version() < (0, 11, 1) else cpus)
    assert _run(COUNT_POOL, PJRT_NPROC="3")[0] == 3


def test_computing_before_the_import_is_warned_about():
    assert _run(TOO_LATE) == [1 if _jaxlib_version() < (0, 11, 1) else 0]


def test_cpu_programs_compile_with_the_llvm_ir_emitters_on_jaxlib_0_10_unless_told_otherwise():
    on_0_10 = _jaxlib_version()[:2] == (0, 10)
    assert _flags_seen() == ([CPU_COMPILE_FLAG] if on_0_10 else [])
    # flags of the user's own are kept, the setting is added beside them
    device_count = "--xla_force_host_platform_device_count=2"
    assert _flags_seen(XLA_FLAGS=device_count) == [device_count] + ([CPU_COMPILE_FLAG] if on_0_10 else [])
    # the user's own value of the same flag wins; JAXINV_XLA_CPU_DEFAULTS=1 leaves XLA's default
    assert _flags_seen(XLA_FLAGS="--xla_cpu_use_fusion_emitters=true") == ["--xla_cpu_use_fusion_emitters=true"]
    assert _flags_seen(JAXINV_XLA_CPU_DEFAULTS="1") == []
