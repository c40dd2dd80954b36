import sys
from pathlib import Path

import jax
import pytest

import jaxinv  # noqa: F401  (float64 before any test creates arrays)

sys.path.insert(0, str(Path(__file__).parent))  # tests/nist.py
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop compiled programs after each test module.  Every XLA CPU executable keeps its
    own memory mappings; the whole suite compiles hundreds of programs in one process and
    would otherwise reach the kernel's per-process mapping limit (vm.max_map_count, 65530),
    where LLVM aborts mid-compile."""
    yield
    jax.clear_caches()
