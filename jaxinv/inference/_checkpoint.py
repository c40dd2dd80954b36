"""Atomic checkpoints of an engine's state (a PyTree of arrays).

A checkpoint is an ``.npz`` file holding the state's leaves and a fingerprint of
the run (engine, key, settings, data).  It is written to a temporary file in the
same directory and renamed over the old one (``os.replace`` is atomic on POSIX),
so a run killed at any moment leaves either the previous or the new checkpoint,
never a torn one.  A checkpoint whose fingerprint differs from the current run
is refused rather than silently resumed.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import jax
import numpy as np

__all__ = ["atomic_write", "fingerprint", "save", "restore"]


def fingerprint(engine: str, post, key, *settings) -> str:
    """Hash of what determines a run: engine, PRNG key, settings, data and parameter layout."""
    h = hashlib.sha256()
    h.update(engine.encode())
    h.update(np.asarray(jax.random.key_data(key)).tobytes())
    h.update(repr(settings).encode())
    for leaf in jax.tree.leaves(post.y):
        h.update(np.asarray(leaf).tobytes())
    h.update(repr((post.names, post.dim)).encode())
    return h.hexdigest()


def save(path, fp: str, state) -> None:
    """Write ``state`` atomically to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
    atomic_write(path, lambda f: np.savez(f, fingerprint=np.asarray(fp),
                                          **{f"leaf_{i}": x for i, x in enumerate(leaves)}))


def atomic_write(path, write) -> None:
    """``write(file)`` into a temporary file beside ``path``, flushed to disk, then renamed
    over ``path`` (``os.replace`` is atomic on POSIX): readers see the old or the new file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def restore(path, fp: str, template):
    """The state saved at ``path`` (shaped like ``template``: arrays or
    ``jax.ShapeDtypeStruct``), or ``None`` when there is no checkpoint yet."""
    path = Path(path)
    if not path.exists():
        return None
    leaves, treedef = jax.tree.flatten(template)
    try:
        with np.load(path) as data:
            if str(data["fingerprint"]) != fp:
                raise ValueError(f"checkpoint {path} belongs to a different run (other key, settings or data); "
                                 "remove it or choose another path")
            loaded = [data[f"leaf_{i}"] for i in range(len(leaves))]
    except (OSError, KeyError, EOFError) as err:
        raise ValueError(f"checkpoint {path} cannot be read ({err}); remove it to start afresh") from None
    for new, old in zip(loaded, leaves):
        if tuple(new.shape) != tuple(old.shape):
            raise ValueError(f"checkpoint {path} does not match this run's state shapes")
    return jax.tree.unflatten(treedef, [jax.numpy.asarray(x, dtype=old.dtype) for x, old in zip(loaded, leaves)])
