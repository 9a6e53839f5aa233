"""Behaviour preservation: scores and maps equal those recorded in tests/data/golden.npz.

The file was written by ``python -m tests.golden`` before issue 9's
consolidation moved any code.  A deliberate change of behaviour re-records
it and says why in the commit.
"""

import numpy as np
import pytest

from tests.detectors import golden_factories
from tests.golden import GOLDEN_PATH, compute

GOLDEN = np.load(GOLDEN_PATH)


@pytest.mark.parametrize("name", list(golden_factories()))
def test_scores_and_maps_unchanged(name):
    scores, maps = compute(name, golden_factories()[name])
    np.testing.assert_allclose(scores, GOLDEN[f"{name}_scores"], rtol=1e-4, atol=1e-6)
    ref = GOLDEN[f"{name}_maps"]
    np.testing.assert_allclose(maps, ref, rtol=1e-4, atol=1e-5 * float(np.ptp(ref) + 1e-12))
