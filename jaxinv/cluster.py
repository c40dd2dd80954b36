"""Batches across hosts: static task partitions (the default) and ``jax.distributed``.

Independent inversions need no communication between datasets, so the robust way to
spread a batch over many hosts is **static partitioning**: every task (a SLURM job-array
element, an ``srun`` task, a process started by hand) runs :func:`jaxinv.batch` on all its
own devices with ``out=`` a shared folder and ``task=(task_id, n_tasks)``; it computes
the chunks ``c`` with ``c % n_tasks == task_id`` and writes each atomically.  A lost task
costs only its chunks: rerun it (finished chunks are skipped).  When all have finished,
one more call without ``task`` (on any host) loads every chunk and computes nothing.

Recipe A, a SLURM job array (no coordinator; each task uses every GPU of its node)::

    #SBATCH --array=0-31 --gpus-per-node=4 --cpus-per-task=16 --requeue
    export JAX_COMPILATION_CACHE_DIR=$SCRATCH/jax_cache   # compile once, reuse everywhere
    srun python my_batch.py          # inside: ji.batch(..., out=OUT, task=task_from_env())

Recipe B, one SPMD program over the devices of every process (``jax.distributed``; one
lost process aborts all the others, measured: SIGABRT ~13 s after the peer died, so
``out=`` chunk files are what survives)::

    #SBATCH --nodes=4 --ntasks-per-node=4 --gpus-per-node=4   # one process per GPU
    export JAXINV_DISTRIBUTED=slurm  # import jaxinv then joins (jax.distributed.initialize())
    srun python my_batch.py

Without SLURM, give the layout: ``JAXINV_COORDINATOR=host:port JAXINV_NUM_PROCESSES=2
JAXINV_PROCESS_ID=i python my_batch.py`` on each host (:func:`initialize_from_env`).  The
multi-process program must be joined before any JAX computation, and importing BlackJAX
already computes, so this happens inside ``import jaxinv`` (or call
``jax.distributed.initialize`` yourself before importing jaxinv).
On CPU the collectives are gloo (the JAX 0.10 default); measured with 2 processes x 4
simulated CPU devices on one machine, the batch result equals one process with 8
devices (``tests/scripts/batch_multihost.py``).  With ``jax.distributed`` running,
:func:`jaxinv.batch` spans every process's devices; each process feeds the rows of its
own devices and all processes receive the full result.

Measured facts behind these choices: ``../shared/notes/batch-and-cluster.md``.
"""

from __future__ import annotations

import os

import jax

__all__ = ["initialize_from_env", "task_from_env"]


def initialize_from_env() -> bool:
    """Join a multi-process JAX program when the environment asks for it; called by
    ``import jaxinv`` before anything touches a device (importing BlackJAX already does,
    so a later ``jax.distributed.initialize`` would come too late).

    Variables: ``JAXINV_CPU_DEVICES=n`` exposes ``n`` CPU devices (``jax_num_cpu_devices``;
    testing and CPU clusters).  ``JAXINV_DISTRIBUTED=slurm`` calls
    ``jax.distributed.initialize()``, which reads the SLURM variables itself;
    ``JAXINV_COORDINATOR=host:port`` with ``JAXINV_NUM_PROCESSES`` and
    ``JAXINV_PROCESS_ID`` gives the layout explicitly (a loopback coordinator is also
    bound to loopback only).  ``JAXINV_HEARTBEAT_TIMEOUT`` (seconds, default 100): how long
    the coordinator waits for a silent process before aborting all of them.  Without these
    variables nothing happens, and a script may equally call
    ``jax.distributed.initialize(...)`` itself before ``import jaxinv``.

    Returns:
        True when a multi-process program was joined.
    """
    env = os.environ
    if "JAXINV_CPU_DEVICES" in env:
        jax.config.update("jax_num_cpu_devices", int(env["JAXINV_CPU_DEVICES"]))
    timeout = int(env.get("JAXINV_HEARTBEAT_TIMEOUT", 100))
    if env.get("JAXINV_DISTRIBUTED", "").lower() == "slurm":
        jax.distributed.initialize(heartbeat_timeout_seconds=timeout)
        return True
    coordinator = env.get("JAXINV_COORDINATOR")
    if not coordinator:
        return False
    missing = [v for v in ("JAXINV_NUM_PROCESSES", "JAXINV_PROCESS_ID") if v not in env]
    if missing:
        raise ValueError(f"JAXINV_COORDINATOR is set but {missing} are not")
    kwargs = {}
    if coordinator.startswith(("127.", "localhost:")):
        kwargs["coordinator_bind_address"] = coordinator  # the default binds every interface
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=int(env["JAXINV_NUM_PROCESSES"]),
                               process_id=int(env["JAXINV_PROCESS_ID"]), heartbeat_timeout_seconds=timeout,
                               **kwargs)
    return True


def task_from_env() -> tuple[int, int]:
    """``(task_id, n_tasks)`` of this process for :func:`jaxinv.batch`'s ``task=``: from a
    SLURM job array (``SLURM_ARRAY_TASK_ID``, ``SLURM_ARRAY_TASK_COUNT``, ids counted from
    ``SLURM_ARRAY_TASK_MIN`` in steps of ``SLURM_ARRAY_TASK_STEP``), else SLURM tasks (``SLURM_PROCID``, ``SLURM_NTASKS``), else
    ``JAXINV_TASK_ID``/``JAXINV_N_TASKS``, else ``(0, 1)``.

    Raises:
        ValueError: a task id outside ``[0, n_tasks)``.
    """
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        step = int(env.get("SLURM_ARRAY_TASK_STEP", 1) or 1)  # --array=0-31:2
        task = (int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", 0))) // step
        n = int(env["SLURM_ARRAY_TASK_COUNT"])
    elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        task, n = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
    else:
        task, n = int(env.get("JAXINV_TASK_ID", 0)), int(env.get("JAXINV_N_TASKS", 1))
    if not 0 <= task < n:
        raise ValueError(f"task id {task} is outside [0, {n}) (check the SLURM array range or JAXINV_TASK_ID)")
    return task, n
