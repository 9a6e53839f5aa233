"""Test configuration: one torch thread (tiny tensors; 2-core CI machines).

With ``SKANOMALY_REQUIRE_TEST_DATA=1`` (set by ``.ci/run``) a test skipped
because test data, a browser or an optional package is missing FAILS
instead: CI installs all of them, and a silent skip would hide a broken
install.
"""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SKANOMALY_TEST_THREADS", "1")))

_REQUIRE = os.environ.get("SKANOMALY_REQUIRE_TEST_DATA") == "1"
# Skips that CI must never see (scikit-learn's own optional-dependency skips,
# e.g. pandas or the array API, are not ours and stay skips).
_MISSING = (
    "Fashion-MNIST",
    "chromium",
    "Chromium",
    "skanomaly[pretrained]",
    "could not import 'timm'",
    "could not import 'matplotlib'",
    "could not import 'distributed'",
    "could not import 'skimage'",
    "could not import 'onnx",
    "could not import 'safetensors'",
)


def _missing(report):
    if not (_REQUIRE and report.skipped):
        return False
    text = str(report.longrepr)
    return any(key in text for key in _MISSING)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if _missing(report):
        report.outcome = "failed"
        report.longrepr = f"required test dependency missing in CI: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    report = outcome.get_result()
    if _missing(report):
        report.outcome = "failed"
        report.longrepr = f"required test dependency missing in CI: {report.longrepr}"


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module's tests: tiny networks gain nothing
    from threads on the shared 2-core machine, and OpenMP spinning makes
    them up to 10x slower (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
