"""Record/compare each detector's scores and maps on fixed small data.

``python -m tests.golden`` (re)writes ``tests/data/golden.npz`` from the
current code; ``tests/test_golden.py`` compares against it.  It was first
written before the consolidation of issue 9 moved any code, so the test
proves that refactoring kept behaviour.
"""

import numpy as np

GOLDEN_PATH = __import__("pathlib").Path(__file__).parent / "data" / "golden.npz"


def golden_data():
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[:32, :32]
    base = 0.5 + 0.25 * np.sin(xx / 3.0) * np.cos(yy / 4.0)
    X = np.clip(base[None] + 0.05 * rng.standard_normal((12, 32, 32)), 0, 1).astype(np.float32)
    X_test = X[8:].copy()
    X_test[0, 10:16, 10:16] = 1.0
    X_test[1, 20:26, 4:8] = 0.0
    return X[:8], X_test


def compute(name, make):
    X_train, X_test = golden_data()
    det = make().fit(X_train)
    return det.score_samples(X_test), det.transform(X_test)


if __name__ == "__main__":
    import torch

    from tests.detectors import golden_factories

    torch.set_num_threads(1)
    out = {}
    for name, make in golden_factories().items():
        s, m = compute(name, make)
        out[f"{name}_scores"] = s
        out[f"{name}_maps"] = m
        print(name, s)
    np.savez_compressed(GOLDEN_PATH, **out)
