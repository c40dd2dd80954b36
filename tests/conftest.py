import sys
from pathlib import Path

import jaxinv  # noqa: F401  (float64 before any test creates arrays)

sys.path.insert(0, str(Path(__file__).parent))  # tests/nist.py
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
