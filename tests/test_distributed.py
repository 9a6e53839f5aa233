"""skanomaly on a Dask cluster: searches, per-group fits, collection scoring.

One real ``LocalCluster`` (2 worker processes, 1 thread each) serves the
whole module; detectors are tiny (16 px images, 1-2 epochs).  The clean-up
tests hold their tasks on the workers with a stand-in estimator that waits
for a Dask Event, and press Ctrl-C (SIGINT) in this process while the call
waits.
"""

import importlib
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")

import dask.array as da  # noqa: E402
from dask.distributed import (  # noqa: E402
    Client,
    Event,
    Future,
    LocalCluster,
    get_task_stream,
)
from joblib import parallel_config  # noqa: E402
from sklearn.base import BaseEstimator, clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_validate  # noqa: E402
from sklearn.utils.validation import check_is_fitted  # noqa: E402
from skorch.callbacks import Callback  # noqa: E402
from skorch.dataset import Dataset as SkorchDataset  # noqa: E402

import tests.detectors as table  # noqa: E402
from skanomaly import TiledDetector  # noqa: E402
from skanomaly._training import (  # noqa: E402
    FitCancelled,
    check_fit_cancelled,
    stop_fit_when,
    stop_when_task_cancelled,
)
from skanomaly.distributed import fit_per_group, score, worker_torch_threads  # noqa: E402
from skanomaly.igd._net import GaussianEStep  # noqa: E402
from skanomaly.metrics import image_auroc_scorer, pixel_auroc_scorer  # noqa: E402
from skanomaly.model_selection import NormalOnlyKFold  # noqa: E402
from skanomaly.registry import detector_names, get_detector  # noqa: E402

SIZE = 16


def small(name, **overrides):
    """A small detector from tests/detectors.py, whichever table it has."""
    if hasattr(table, "INIT_PARAMS"):
        params = {**table.INIT_PARAMS[name], **overrides}
        minimum = getattr(table, "MIN_IMAGE_SIZE", {}).get(name)
        if minimum and "image_size" in params:
            params["image_size"] = max(minimum, params["image_size"])
        return get_detector(name)(**params)
    return table.FACTORIES[name](**overrides)


def images(n, seed=0):
    """Smooth random uint8 textures (n, 16, 16)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    out = []
    for _ in range(n):
        f1, f2, ph = rng.uniform(0.3, 0.8, size=3)
        img = 0.5 + 0.25 * np.sin(f1 * xx + 6 * ph) * np.cos(f2 * yy)
        out.append(img + 0.04 * rng.standard_normal((SIZE, SIZE)))
    return (np.clip(np.stack(out), 0, 1) * 255).astype(np.uint8)


def labelled(n_normal=12, n_anomalous=4):
    """Normal textures plus textures with a bright noisy square, and the masks."""
    X = images(n_normal + n_anomalous, seed=1)
    rng = np.random.default_rng(2)
    X[n_normal:, 4:12, 4:12] = rng.integers(180, 255, size=(n_anomalous, 8, 8))
    masks = np.zeros(X.shape, dtype=bool)
    masks[n_normal:, 4:12, 4:12] = True
    return X, masks


@pytest.fixture(scope="module")
def client():
    # Dask's nanny writes its worker environment (OMP_NUM_THREADS=1,
    # MALLOC_TRIM_THRESHOLD_, PYTHONHASHSEED) into this process's os.environ;
    # put it back so that later tests' subprocesses do not inherit it.
    environ = dict(os.environ)
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()
    os.environ.clear()
    os.environ.update(environ)


@pytest.fixture(scope="module")
def fitted_igd():
    # image_shape lets it read flattened (n, H*W) collections too.
    return small("igd", image_size=SIZE, image_shape=(SIZE, SIZE)).fit(images(10))


def _scores(results):
    """Every score and rank of ``cv_results_`` (not the timings)."""
    keys = [k for k in results if k.startswith(("split", "mean_test", "std_test", "rank"))]
    assert len(keys) == 2 * (2 + 3)  # 2 metrics x (2 splits, mean, std, rank)
    return {k: list(results[k]) for k in [*sorted(keys), "params"]}


# ---------------------------------------------------------------- searches
@pytest.mark.parametrize("name", detector_names())
def test_grid_search_on_dask_equals_sequential(client, name):
    X, y = labelled()
    search = GridSearchCV(
        small(name, image_size=SIZE),
        {"max_epochs": [1, 2]},
        # Image AUROC saturates at 1 on this data; pixel AUROC moves with
        # every weight, so equal scores mean equal models.
        scoring={"image_auroc": image_auroc_scorer, "pixel_auroc": pixel_auroc_scorer},
        cv=NormalOnlyKFold(2, random_state=0),
        refit=False,
    )
    threads = torch.get_num_threads()
    sequential = clone(search).fit(X, y).cv_results_
    with get_task_stream(client) as stream, parallel_config(backend="dask", n_jobs=-1):
        on_dask = clone(search).fit(X, y).cv_results_
    # The 2 x 2 fits ran on the cluster, not in this process.
    assert len(stream.data) >= 4
    assert _scores(on_dask) == _scores(sequential)
    assert np.isfinite(on_dask["mean_test_pixel_auroc"]).all()
    assert torch.get_num_threads() == threads


def test_cross_validate_brings_back_detectors_that_score_identically(client):
    X, y = labelled()
    kwargs = dict(
        scoring=image_auroc_scorer, cv=NormalOnlyKFold(2, random_state=0),
        return_estimator=True,
    )
    det = small("dfr", image_size=SIZE, max_epochs=1)
    sequential = cross_validate(det, X, y, **kwargs)
    with parallel_config(backend="dask", n_jobs=-1):
        on_dask = cross_validate(det, X, y, **kwargs)
    np.testing.assert_array_equal(on_dask["test_score"], sequential["test_score"])
    for remote, local in zip(on_dask["estimator"], sequential["estimator"]):
        assert remote.device_ == "cpu"
        np.testing.assert_array_equal(remote.score_samples(X), local.score_samples(X))


# ----------------------------------------------------------- fit_per_group
def test_fit_per_group_equals_local_fits(client):
    groups = {"bottle": images(8, seed=3), "cable": images(8, seed=4)}
    template = small("igd", image_size=SIZE)
    fitted = fit_per_group(template, groups)
    assert list(fitted) == ["bottle", "cable"]
    assert not hasattr(template, "offset_")  # the template is not fitted
    X = images(6, seed=5)
    for name, X_train in groups.items():
        local = clone(template).fit(X_train)
        assert fitted[name] is not template
        np.testing.assert_array_equal(fitted[name].score_samples(X), local.score_samples(X))
        np.testing.assert_array_equal(fitted[name].transform(X), local.transform(X))
    # The two groups' models differ (each saw its own images).
    assert not np.array_equal(
        fitted["bottle"].score_samples(X), fitted["cable"].score_samples(X)
    )


def test_fit_per_group_names_the_failing_group(client):
    bad = images(6).astype(float)
    bad[0, 0, 0] = np.nan
    groups = {"good": images(6), "scratched": bad}
    with pytest.raises(ValueError, match=r"group 'scratched' failed: ValueError: .*NaN"):
        fit_per_group(small("igd", image_size=SIZE), groups, client=client)


class _Gated(BaseEstimator):
    """A stand-in detector whose fit and score_samples wait for a Dask Event.

    With ``gate=None`` nothing waits; images holding a NaN fail at once.
    """

    def __init__(self, gate=None):
        self.gate = gate

    def _wait(self, X):
        X = np.asarray(X, dtype=float)
        if np.isnan(X).any():
            raise ValueError("Input X contains NaN.")
        if self.gate is not None:
            Event(self.gate).wait(timeout=120)
        return X.reshape(len(X), -1)

    def fit(self, X, y=None):
        self.mean_ = self._wait(X).mean()
        self.n_seen_ = len(X)
        return self

    def score_samples(self, X):
        return -np.abs(self._wait(X) - self.mean_).mean(axis=1)


def _scheduler_tasks(dask_scheduler):
    return {str(key) for key in dask_scheduler.tasks}


def _worker_data(dask_worker):
    return {str(key) for key in dask_worker.data}


def _leftovers(client, before, timeout=20):
    """Tasks on the scheduler and keys in the workers' memory not in ``before``.

    Releases travel to the scheduler asynchronously: wait up to ``timeout``
    seconds for them to arrive.
    """
    deadline = time.monotonic() + timeout
    while True:
        tasks = client.run_on_scheduler(_scheduler_tasks)
        data = set().union(*client.run(_worker_data).values())
        new = (tasks | data) - before
        if not new or time.monotonic() > deadline:
            return new
        time.sleep(0.1)


def _cluster_state(client):
    return client.run_on_scheduler(_scheduler_tasks) | set().union(
        *client.run(_worker_data).values()
    )


def _ctrl_c_when_processing(client, n_tasks):
    """Press Ctrl-C in this process once ``n_tasks`` tasks are on the workers.

    A thread watches the scheduler and sends SIGINT to the main thread, which
    then raises KeyboardInterrupt wherever it waits for the cluster.
    """
    main = threading.main_thread().ident

    def watch():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if sum(map(len, client.processing().values())) >= n_tasks:
                break
            time.sleep(0.05)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def ctrl_c():
    """Python's own SIGINT handler (KeyboardInterrupt) for the test's duration."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield _ctrl_c_when_processing
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("how", ["error", "ctrl-c"])
def test_fit_per_group_leaves_nothing_on_the_cluster_after_a_failure(
    client, ctrl_c, how, request
):
    gate = f"skanomaly-test-{request.node.name}"
    before = _cluster_state(client)
    bad = images(4).astype(float)
    bad[0, 0, 0] = np.nan
    if how == "error":
        # "stuck" waits on the gate while "bad" fails: the error cancels it.
        groups, expected = {"stuck": images(4), "bad": bad}, ValueError
    else:
        groups, expected = {"a": images(4), "b": images(5)}, KeyboardInterrupt
        watcher = ctrl_c(client, 2)
    try:
        # pytest keeps the traceback, and so every frame of the call, alive,
        # as IPython keeps sys.last_traceback.
        with pytest.raises(expected) as excinfo:
            fit_per_group(_Gated(gate), groups, client)
        if how == "error":
            assert "group 'bad' failed" in str(excinfo.value)
        else:
            watcher.join()
        # Neither the fits nor the scattered images are left on the cluster,
        # though the fits still wait on their workers.
        assert _leftovers(client, before) == set()
    finally:
        Event(gate, client=client).set()
    assert _leftovers(client, before) == set()
    assert excinfo.type is expected


class _BatchLog(Callback):
    """Appends a line to the file ``path`` after every training batch."""

    def __init__(self, path=None):
        self.path = path

    def on_batch_end(self, net, batch=None, training=False, **kwargs):
        if training:
            with open(self.path, "a") as f:
                f.write("batch\n")


def _lines(path):
    return path.read_text().count("\n") if path.exists() else 0


def _executing(dask_worker):
    return len(dask_worker.state.executing)


def _assert_nothing_executing(client, timeout=10):
    """Every worker's running tasks end within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while sum(client.run(_executing).values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run(_executing) == dict.fromkeys(client.nthreads(), 0)


def _wait_for_lines(log, n_lines, timeout=60):
    """Wait until ``log`` has ``n_lines`` lines (or ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while _lines(log) < n_lines and time.monotonic() < deadline:
        time.sleep(0.05)


def _wait_until_settled(log, timeout=15):
    """The log's line count once unchanged for 1.5 s (or after ``timeout`` s).

    1.5 s, so that a worker briefly descheduled on a loaded machine is not
    taken for a stopped one.
    """
    deadline = time.monotonic() + timeout
    count, still = _lines(log), 0
    while still < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = _lines(log)
        still = still + 1 if now == count else 0
        count = now
    return count


def _long_igd(log, max_epochs=2000):
    """A tiny IGD that would train for hours (batches of about 30 ms), logging
    each batch.  No E-step after the first (``e_step_interval=max_epochs``):
    the training batches' own check must stop it."""
    return small("igd", image_size=SIZE, max_epochs=max_epochs, batch_size=2,
                 e_step_interval=max_epochs, callbacks=[_BatchLog(str(log))])


def _ctrl_c_once_logged(log, n_lines):
    """Press Ctrl-C in this process once ``log`` has ``n_lines`` lines."""
    main = threading.main_thread().ident

    def press():
        _wait_for_lines(log, n_lines)
        signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=press, daemon=True)
    thread.start()
    return thread


def _assert_stopped(client, log, limit):
    """Training batches stop (the log settles, then stays, below ``limit``)
    and no task runs on the workers."""
    count = _wait_until_settled(log)
    time.sleep(2)
    assert _lines(log) == count < limit
    _assert_nothing_executing(client)


def test_fit_per_group_stops_a_running_fit_after_ctrl_c(client, ctrl_c, tmp_path):
    log = tmp_path / "batches.log"
    before = _cluster_state(client)
    watcher = _ctrl_c_once_logged(log, 5)
    with pytest.raises(KeyboardInterrupt):
        fit_per_group(_long_igd(log), {"a": images(8)}, client)
    watcher.join()
    assert _lines(log) >= 5  # the worker was training when Ctrl-C came
    # The worker stops at its next batch, far below the 7 x 2000 of the fit.
    _assert_stopped(client, log, 7 * 2000 // 10)
    assert _leftovers(client, before) == set()


def test_a_fit_in_any_dask_task_stops_once_the_task_is_cancelled(client, ctrl_c, tmp_path):
    # The user's own task: client.submit(detector.fit, X), then cancel().
    log = tmp_path / "submitted.log"
    future = client.submit(_long_igd(log).fit, images(8))
    _wait_for_lines(log, 5)
    assert _lines(log) >= 5
    future.cancel()
    _assert_stopped(client, log, 7 * 2000 // 10)

    # GridSearchCV under joblib's Dask backend.  joblib keeps the futures of
    # an interrupted search (they are not cancelled); cancelling them, as
    # docs/distributed.rst says, stops every fit at its next batch.
    log = tmp_path / "search.log"
    search = GridSearchCV(_long_igd(log), {"lr": [1e-4, 2e-4]},
                          cv=NormalOnlyKFold(2, random_state=0),
                          scoring=image_auroc_scorer, refit=False)
    X, y = labelled(n_normal=16)
    watcher = _ctrl_c_once_logged(log, 10)
    with parallel_config(backend="dask", n_jobs=-1), pytest.raises(KeyboardInterrupt):
        search.fit(X, y)
    watcher.join()
    assert _lines(log) >= 10  # the workers were training when Ctrl-C came
    client.cancel([Future(key, client) for key in list(client.futures)])
    _assert_stopped(client, log, 4 * 4 * 2000 // 10)


class _LoopActor:
    """A Dask actor whose method checks the stop flag for about a second."""

    def run(self):
        with stop_when_task_cancelled():
            for _ in range(20):
                check_fit_cancelled()
                time.sleep(0.05)
        return "done"


def test_an_actor_method_is_not_taken_for_a_cancelled_task(client):
    # An actor's method runs under a key that is no task of the worker's:
    # its absence from the task table is no cancellation.
    actor = client.submit(_LoopActor, actor=True).result()
    assert actor.run().result() == "done"


def test_tiled_scoring_in_a_cancelled_task_stops(client):
    # 200 images of 16 tiles scored one tile at a time, 20 ms each: over a
    # minute of work in chunks far shorter than the watcher's 0.25 s.
    inner = _SlowIGD(**small("igd", image_size=16, batch_size=4).get_params())
    X = np.tile(images(1), (2, 4, 4))
    tiled = TiledDetector(inner, tile_size=SIZE).fit(X)
    tiled.detector_.set_params(batch_size=1)
    future = client.submit(tiled.score_samples, np.repeat(X[:1], 200, axis=0))
    deadline = time.monotonic() + 30
    while not sum(client.run(_executing).values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1)
    assert sum(client.run(_executing).values()) == 1
    future.cancel()
    _assert_nothing_executing(client)


def test_stop_flag_stops_a_fit_only_inside_its_context():
    check_fit_cancelled()  # no flag: a local fit checks nothing
    flag = threading.Event()
    with stop_fit_when(flag) as inside:
        assert inside is flag
        check_fit_cancelled()  # not set yet
        flag.set()
        with pytest.raises(FitCancelled, match="Dask task running it was cancelled"):
            check_fit_cancelled()
    check_fit_cancelled()  # the flag is gone with the block
    # A detector's fit stops at its first batch and keeps no fitted state.
    detector = small("igd", image_size=SIZE)
    with stop_fit_when(flag), pytest.raises(FitCancelled):
        detector.fit(images(4))
    with pytest.raises(NotFittedError):
        check_is_fitted(detector)
    assert not hasattr(detector, "net_")
    with pytest.raises(TypeError, match="flag must be a threading.Event"):
        with stop_fit_when(True):
            pass
    # The passes over the training images outside skorch's batches stop too:
    # fit's threshold pass (the scoring loop) and IGD's E-step.
    fitted = small("igd", image_size=SIZE).fit(images(4))
    with stop_fit_when(flag):
        with pytest.raises(FitCancelled):
            fitted.score_samples(images(2))
        with pytest.raises(FitCancelled):
            GaussianEStep().e_step(fitted.net_, SkorchDataset(torch.zeros(2, 1, SIZE, SIZE)))
    assert np.isfinite(fitted.score_samples(images(2))).all()  # outside: unaffected


def test_fit_per_group_keeps_groups_whose_names_print_alike(client):
    before = _cluster_state(client)
    fitted = fit_per_group(_Gated(), {1: images(3), "1": images(5), (1,): images(2)}, client)
    assert list(fitted) == [1, "1", (1,)]
    assert [fitted[name].n_seen_ for name in fitted] == [3, 5, 2]
    # The scattered images are released once the detectors are back.
    assert _leftovers(client, before) == set()


def test_fit_per_group_checks_its_arguments():
    det = small("igd")
    with pytest.raises(ValueError, match="groups is empty"):
        fit_per_group(det, {})
    with pytest.raises(TypeError, match="groups must be a mapping"):
        fit_per_group(det, [images(4)])
    with pytest.raises(TypeError, match="estimator must be a scikit-learn estimator"):
        fit_per_group("igd", {"a": images(4)})


# ------------------------------------------------------------------- score
@pytest.mark.parametrize("method", ["score_samples", "decision_function", "predict", "transform"])
def test_score_equals_local(client, fitted_igd, method, tmp_path):
    X = images(13, seed=6)
    memmap = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=X.dtype,
                                       shape=X.shape)
    memmap[:] = X
    expected = getattr(fitted_igd, method)(X)
    assert fitted_igd.batch_size == 8
    # label -> (collection, partition_size, exact): partitions of whole
    # inference batches (the default) give the local batches, hence equal
    # floats; other partitions may differ in the last float32 bit.
    collections = {
        "numpy": (X, None, True),
        "memmap": (memmap, None, True),
        "dask, chunks of 8": (da.from_array(X, chunks=(8, SIZE, SIZE)), None, True),
        "numpy, partitions of 3": (X, 3, False),
        "dask, chunks of 5, channels last": (
            da.from_array(X[..., None], chunks=(5, SIZE, SIZE, 1)), None, False
        ),
    }
    for label, (collection, size, exact) in collections.items():
        got = score(fitted_igd, collection, client, method=method, partition_size=size)
        assert isinstance(got, np.ndarray), label
        assert got.dtype == expected.dtype and got.shape == expected.shape, label
        if exact:
            np.testing.assert_array_equal(got, expected, err_msg=label)
        else:
            np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6, err_msg=label)
    flat = X.reshape(len(X), -1)
    np.testing.assert_array_equal(
        score(fitted_igd, flat, client, method=method), getattr(fitted_igd, method)(flat)
    )


def test_score_lazily_returns_a_dask_array(client, fitted_igd):
    X = images(9, seed=7)
    lazy = score(fitted_igd, da.from_array(X, chunks=(4, SIZE, SIZE)), client, "transform", compute=False)
    assert isinstance(lazy, da.Array)
    assert lazy.shape == (9, SIZE, SIZE) and lazy.dtype == np.float32
    assert lazy.chunks[0] == (4, 4, 1)
    np.testing.assert_array_equal(lazy.compute(), fitted_igd.transform(X))


def test_score_leaves_nothing_on_the_cluster_after_ctrl_c(client, ctrl_c, request):
    gate = f"skanomaly-test-{request.node.name}"
    detector = _Gated().fit(images(4)).set_params(gate=gate)
    before = _cluster_state(client)
    watcher = ctrl_c(client, 2)
    try:
        with pytest.raises(KeyboardInterrupt) as excinfo:
            score(detector, images(6), client, partition_size=3)
        watcher.join()
        # Neither the partitions, the detector nor the tasks stay, though
        # the traceback keeps every frame of the call alive.
        assert _leftovers(client, before) == set()
    finally:
        Event(gate, client=client).set()
    assert _leftovers(client, before) == set()
    assert excinfo.type is KeyboardInterrupt


class _SlowIGD(get_detector("igd")):
    """IGD whose every inference batch takes at least 20 ms (scoring that lasts)."""

    def _anomaly_batch(self, x):
        time.sleep(0.02)
        return super()._anomaly_batch(x)


def test_score_stops_a_running_partition_after_ctrl_c(client, ctrl_c):
    detector = _SlowIGD(**small("igd", image_size=SIZE).get_params()).fit(images(4))
    # Two partitions of 1500 images, one inference batch each: at least 30 s
    # of scoring on each worker.
    detector.set_params(batch_size=1)
    before = _cluster_state(client)
    watcher = ctrl_c(client, 2)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        score(detector, np.repeat(images(1), 3000, axis=0), client, partition_size=1500)
    watcher.join()
    # Both partitions stop at their next batch, long before their 30 s.
    _assert_nothing_executing(client)
    assert time.monotonic() - started < 25
    assert _leftovers(client, before) == set()


class _NoCluster:
    """A stand-in client that fails on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"client.{name} used")


def test_score_refuses_unfitted_detector_before_any_work():
    with pytest.raises(NotFittedError):
        score(small("igd"), images(4), client=_NoCluster())


def test_score_refuses_bad_collections_and_arguments(client, fitted_igd):
    X = images(6)
    with pytest.raises(ValueError, match=r"chunked along axis 1 .*rechunk\({1: -1, 2: -1}\)"):
        score(fitted_igd, da.from_array(X, chunks=(3, 8, SIZE)), client)
    with pytest.raises(ValueError, match="method must be one of"):
        score(fitted_igd, X, client, method="fit")
    with pytest.raises(TypeError, match="collection must be a dask.array.Array or a NumPy"):
        score(fitted_igd, list(X), client)
    with pytest.raises(ValueError, match="holds no images"):
        score(fitted_igd, X[:0], client)
    with pytest.raises(ValueError, match="partition_size must be a positive int"):
        score(fitted_igd, X, client, partition_size=0)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        score(fitted_igd, X, client="tcp://127.0.0.1:8786")


# ----------------------------------------------------------------- threads
def _threads_inside_and_after():
    torch.set_num_threads(3)
    with worker_torch_threads() as n:
        inside = (n, torch.get_num_threads())
    after = torch.get_num_threads()
    torch.set_num_threads(1)
    return inside, after


def test_worker_tasks_use_the_workers_threads_and_restore_them(client, fitted_igd):
    # A task thread set to 3 torch threads gets the worker's 1 inside, 3 after.
    assert client.submit(_threads_inside_and_after, pure=False).result() == ((1, 1), 3)
    # score's tasks restore the thread count they found on the worker.
    workers = sorted(client.nthreads())

    def on_each(func, *args):
        return [client.submit(func, *args, workers=[w], pure=False).result() for w in workers]

    on_each(torch.set_num_threads, 3)
    score(fitted_igd, images(8), client, partition_size=2)
    assert on_each(torch.get_num_threads) == [3, 3]
    on_each(torch.set_num_threads, 1)
    # Outside a worker nothing changes.
    before = torch.get_num_threads()
    with worker_torch_threads() as n:
        assert n == before == torch.get_num_threads()


# --------------------------------------------------------------- packaging
def test_import_without_dask_says_how_to_install(monkeypatch):
    for module in ("dask", "distributed", "dask.distributed", "dask.array"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.delitem(sys.modules, "skanomaly.distributed")
    with pytest.raises(ImportError, match=r"pip install 'skanomaly\[distributed\]'"):
        importlib.import_module("skanomaly.distributed")
