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


# Files with the longest run (module fixtures that fit whole model sets, NUTS/REMC references),
# measured with --durations on 2 cores.  pytest-xdist (--dist loadfile) hands files to the two
# workers in collection order; starting with the longest ones keeps a long file from running
# alone at the end (longest-processing-time-first scheduling).  Order within a file is kept.
LONGEST_FIRST = (
    "test_reaction_kinetics.py", "test_spectral_selection.py", "test_epma_mapping.py", "test_garnet_ptt.py",
    "test_batch.py", "test_lotka_volterra.py", "test_map.py", "test_nmr_cli.py", "test_geofluid.py", "test_evidence.py",
    "test_gmrf.py", "test_checkpoint.py", "test_pt_inclusions.py", "test_sparse.py", "test_sparse_isocon.py",
    "test_drug_elimination.py", "test_free_energy_engines.py", "test_spectral_deconvolution.py", "test_sensitivity.py",
    "test_svi.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))
