"""Fit and score skanomaly detectors on a Dask cluster.

Three tools, for the work that outgrows one machine:

- :func:`fit_per_group` fits one clone of a detector per group of images (an
  MVTec category, a production line, a camera) on the cluster's workers and
  brings the fitted detectors back.
- :func:`score` applies a fitted detector's ``score_samples``,
  ``decision_function``, ``predict`` or ``transform`` to a collection of
  images (a :class:`dask.array.Array` chunked along the images, or a NumPy
  array or memmap split into partitions) after sending the detector to every
  worker once.
- :func:`worker_torch_threads` gives a task run on a worker the threads that
  worker was started with; both functions above run their tasks inside it.

Hyper-parameter searches need nothing from this module:
:class:`~sklearn.model_selection.GridSearchCV` and
:func:`~sklearn.model_selection.cross_validate` run on a cluster inside
``joblib.parallel_config(backend="dask")``.

Dask's ``distributed`` scheduler is an optional dependency, installed with
``pip install 'skanomaly[distributed]'``.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Mapping
from numbers import Integral

import numpy as np

try:
    import dask
    import dask.array as da
    from dask.distributed import Client, as_completed, get_client, get_worker
except ImportError as exc:  # pragma: no cover - exercised by a test with dask hidden
    raise ImportError(
        "skanomaly.distributed needs Dask's distributed scheduler, an optional "
        "dependency; install it with: pip install 'skanomaly[distributed]'"
    ) from exc

import torch
from sklearn.base import clone
from sklearn.utils.validation import check_is_fitted

__all__ = ["fit_per_group", "score", "worker_torch_threads"]

#: The methods :func:`score` may apply.
SCORE_METHODS = ("score_samples", "decision_function", "predict", "transform")


# ------------------------------------------------------------------ threads
def _worker_nthreads():
    """The number of threads of the Dask worker running this code, or None."""
    try:
        worker = get_worker()
    except ValueError:
        return None
    state = getattr(worker, "state", None)
    nthreads = getattr(state, "nthreads", None) or getattr(worker, "nthreads", None)
    return int(nthreads) if nthreads else None


@contextlib.contextmanager
def worker_torch_threads(n_threads=None):
    """Run a block with torch using the threads of the Dask worker it runs on.

    torch's intra-op thread count is set with :func:`torch.set_num_threads`
    on entry and set back to its previous value on exit, from the thread that
    runs the block (the Dask task's thread), so no setting leaks into later
    tasks of the worker.  Outside a Dask worker with ``n_threads=None``
    nothing changes.

    Parameters
    ----------
    n_threads : int or None, default=None
        Threads for torch inside the block; ``None`` takes the ``nthreads``
        the worker was started with (``threads_per_worker`` of a
        :class:`~dask.distributed.LocalCluster`, ``--nthreads`` of
        ``dask worker``).

    Yields
    ------
    n_threads : int
        The thread count in force inside the block.

    See Also
    --------
    fit_per_group, score : Run their tasks inside this context.

    Notes
    -----
    A worker with ``nthreads=k`` runs up to ``k`` tasks at once, and each of
    them gets ``k`` torch threads: for CPU work, start workers as processes
    with one thread each, or pass ``n_threads=1``.

    Examples
    --------
    >>> from skanomaly.distributed import worker_torch_threads
    >>> def fit_on_worker(detector, X):  # a task for client.submit
    ...     with worker_torch_threads():
    ...         return detector.fit(X)
    """
    n_threads = _check_threads(n_threads)
    previous = torch.get_num_threads()
    wanted = n_threads if n_threads is not None else _worker_nthreads()
    if wanted is None:
        yield previous
        return
    torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        torch.set_num_threads(previous)


def _check_threads(n_threads, name="n_threads"):
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, Integral):
        raise TypeError(
            f"{name} must be a positive int or None, got {type(n_threads).__name__}."
        )
    if n_threads < 1:
        raise ValueError(f"{name} must be a positive int or None, got {n_threads}.")
    return int(n_threads)


# ------------------------------------------------------------------ helpers
def _resolve_client(client, caller):
    """``client`` itself, or the current default Dask client."""
    if client is not None:
        if not isinstance(client, Client):
            raise TypeError(
                f"client must be a dask.distributed.Client or None, got "
                f"{type(client).__name__}."
            )
        return client
    try:
        return get_client()
    except ValueError:
        raise ValueError(
            f"{caller} found no Dask client: create one first "
            f"(client = dask.distributed.Client(...)) or pass client=."
        ) from None


def _reraise_for_group(name, exc):
    """Raise ``exc`` again, of the same type where possible, naming the group."""
    message = f"fitting group {name!r} failed: {type(exc).__name__}: {exc}"
    try:
        new = type(exc)(message)
    except Exception:  # exception types whose constructor needs more arguments
        new = RuntimeError(message)
    raise new from exc


def _cancel(client, futures):
    """Stop this call's own futures on the cluster after a failure.

    Only futures whose keys this call made belong here (a computed Dask
    collection's key may be shared with the caller: that one is only
    released, by :func:`_release`).  Errors of the cleanup itself (a closed
    client) are swallowed so that the original exception propagates
    unchanged.
    """
    with contextlib.suppress(Exception):
        client.cancel([future for future in futures if future is not None])


def _release(*collections):
    """Release every future in ``collections`` and empty them.

    :meth:`~dask.distributed.Future.release` drops this call's hold on the
    key at once (without waiting for garbage collection, which a traceback
    kept by IPython or a debugger would delay forever); the scheduler then
    forgets the task and the workers free its data.
    """
    for futures in collections:
        for future in futures:
            if future is not None:
                future.release()
        futures.clear()


def _fit_task(estimator, X, torch_threads):
    """Worker side of :func:`fit_per_group`: fit, return the fitted estimator.

    A skanomaly detector's fit stops at its next training batch once the task
    is cancelled (:func:`skanomaly._training.stop_when_task_cancelled`, in the
    detector's own ``fit``).
    """
    with worker_torch_threads(torch_threads):
        return estimator.fit(X)


def _apply_task(block, detector, method, torch_threads):
    """Worker side of :func:`score`: one block of images through ``method``.

    A skanomaly detector's scoring stops at its next inference batch once the
    task is cancelled (its scoring loop watches the task).
    """
    with worker_torch_threads(torch_threads):
        return getattr(detector, method)(block)


# ------------------------------------------------------------ fit_per_group
def fit_per_group(estimator, groups, client=None, *, torch_threads=None, resources=None):
    """Fit one clone of ``estimator`` per group of images on a Dask cluster.

    Each group's images are sent to one worker and a
    :func:`~sklearn.base.clone` of ``estimator`` is fitted there; the fitted
    detectors come back to the caller.  With a fixed ``random_state`` each
    detector equals the one ``clone(estimator).fit(X)`` gives locally.

    Parameters
    ----------
    estimator : estimator object
        The unfitted template, e.g. ``DFRDetector(random_state=0)``; it is
        not changed.
    groups : mapping of hashable to array-like
        Group name -> the normal training images of that group, in any
        layout ``fit`` accepts, or a Dask collection (computed on the
        workers, never gathered to the caller).  Names are any keys a dict
        takes (str, int, tuple, ...); names that print alike, such as ``1``
        and ``"1"``, are different groups.
    client : dask.distributed.Client or None, default=None
        The cluster to use; ``None`` takes the current default client.
    torch_threads : int or None, default=None
        Number of torch threads of each fit; ``None`` gives each fit the ``nthreads``
        of the worker it runs on (see :func:`worker_torch_threads`).
    resources : dict or None, default=None
        Dask worker resources each fit needs, e.g. ``{"GPU": 1}`` to run at
        most one fit at a time on each worker started with
        ``--resources GPU=1``.

    Returns
    -------
    fitted : dict
        Group name (the keys of ``groups``) -> fitted clone, in the order of
        ``groups``.

    Raises
    ------
    ValueError
        ``groups`` is empty, or no client is given or current; a fit's own
        error is raised again with the same type where possible and the
        group's name in its message.
    TypeError
        ``estimator`` is not a scikit-learn estimator or ``groups`` is not a
        mapping.

    See Also
    --------
    score : Apply the fitted detectors to collections on the cluster.

    Notes
    -----
    When a fit fails, or the call is interrupted (``KeyboardInterrupt``,
    e.g. Ctrl-C while it waits), every fit of the call is cancelled and
    every group's images are released from the workers' memory before the
    exception propagates unchanged; nothing of the call stays on the
    cluster, even while a kept traceback (IPython keeps the last one) holds
    the call's frame.  On success the images are released as soon as the fitted
    detectors are back.  A fit already running on a worker stops at its next
    training batch, raising :class:`~skanomaly._training.FitCancelled` there,
    and its result is dropped: its worker notices the cancellation within
    0.25 s, and the batch under way runs to its end (milliseconds on a GPU
    to seconds for large images on a CPU).  The passes over the training
    images outside the training batches stop at their next batch too: DFR's
    feature extraction, IGD's E-step and the threshold pass that ends every
    fit.

    Examples
    --------
    >>> from dask.distributed import Client, LocalCluster
    >>> from skanomaly import DFRDetector
    >>> from skanomaly.distributed import fit_per_group
    >>> if __name__ == "__main__":  # doctest: +SKIP
    ...     with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \\
    ...             Client(cluster) as client:
    ...         models = fit_per_group(DFRDetector(random_state=0),
    ...                                {"bottle": X_bottle, "cable": X_cable})
    """
    if not (hasattr(estimator, "fit") and hasattr(estimator, "get_params")):
        raise TypeError(
            f"estimator must be a scikit-learn estimator (with fit and get_params), "
            f"got {type(estimator).__name__}."
        )
    if not isinstance(groups, Mapping):
        raise TypeError(
            f"groups must be a mapping of group name -> images (e.g. a dict), got "
            f"{type(groups).__name__}."
        )
    if len(groups) == 0:
        raise ValueError("groups is empty: give at least one group name -> images.")
    torch_threads = _check_threads(torch_threads, "torch_threads")
    client = _resolve_client(client, "fit_per_group")

    names = list(groups)
    # Task keys hold the group's position and a token of this call, never the
    # name: names that print alike (1 and "1") must not share a task.
    token = uuid.uuid4().hex
    scattered, computed, fits = [], [], []
    try:
        # Images: Dask collections are computed where they live; everything
        # else is scattered in one call, which spreads the groups over the
        # workers.
        data = [None] * len(names)
        local = [i for i, name in enumerate(names)
                 if not dask.is_dask_collection(groups[name])]
        if local:
            scattered.extend(
                client.scatter([groups[names[i]] for i in local], hash=False)
            )
            for i, future in zip(local, scattered):
                data[i] = future
        for i, name in enumerate(names):
            if data[i] is None:
                computed.append(client.compute(groups[name]))
                data[i] = computed[-1]
        for i, name in enumerate(names):
            fits.append(
                client.submit(
                    _fit_task,
                    clone(estimator),
                    data[i],
                    torch_threads,
                    key=f"skanomaly-fit-{i}-{token}",
                    pure=False,
                    resources=resources,
                )
            )
        data.clear()
        position = {future.key: i for i, future in enumerate(fits)}
        fitted = [None] * len(names)
        for future in as_completed(fits):
            i = position[future.key]
            if future.status == "error":
                _reraise_for_group(names[i], future.exception())
            fitted[i] = future.result()
        future = None
        return {name: fitted[i] for i, name in enumerate(names)}
    except BaseException:
        # An error, or Ctrl-C while waiting: no fit may go on running and no
        # group's images may stay in worker memory, even while a kept
        # traceback holds this frame.
        future = data = fitted = None
        _cancel(client, [*fits, *scattered])
        raise
    finally:  # on success too: the images are no longer needed
        _release(fits, scattered, computed)


# -------------------------------------------------------------------- score
def _check_collection(collection):
    """``"dask"`` or ``"numpy"``, after checking the collection's type and layout."""
    if isinstance(collection, da.Array):
        kind = "dask"
    elif isinstance(collection, np.ndarray):  # np.memmap included
        kind = "numpy"
    else:
        raise TypeError(
            f"collection must be a dask.array.Array or a NumPy array (np.memmap "
            f"included), got {type(collection).__name__}; convert it with "
            f"np.asarray(...) or dask.array.from_array(...)."
        )
    if collection.ndim not in (2, 3, 4):
        raise ValueError(
            f"collection must hold images as (n, H, W), (n, H, W, C) or flattened "
            f"(n, n_features), got an array of shape {collection.shape}."
        )
    if collection.shape[0] == 0:
        raise ValueError("collection holds no images (its first axis has length 0).")
    if kind == "dask":
        split = [axis for axis, c in enumerate(collection.chunks) if axis and len(c) > 1]
        if split:
            spec = ", ".join(f"{axis}: -1" for axis in range(1, collection.ndim))
            raise ValueError(
                f"collection is chunked along axis {split[0]} (chunks "
                f"{collection.chunks[split[0]]}); skanomaly.distributed.score needs "
                f"whole images in each chunk, i.e. chunks along axis 0 only: rechunk "
                f"it with collection.rechunk({{{spec}}})."
            )
    return kind


def _output_layout(detector, method, shape):
    """Dtype and per-image shape of ``method``'s output for input ``shape``."""
    if method in ("score_samples", "decision_function"):
        return np.dtype(np.float64), ()
    if method == "predict":
        return np.dtype(int), ()
    # transform: (n, H, W) for image input, (n, H*W) for flattened input.
    if len(shape) == 2:
        channels = getattr(detector, "input_shape_", (None, None, 1))[-1] or 1
        return np.dtype(np.float32), (shape[1] // channels,)
    return np.dtype(np.float32), tuple(shape[1:3])


def _default_partition_size(detector, n_images, client):
    """About two partitions per worker thread, whole inference batches each."""
    n_threads = max(1, sum(client.nthreads().values()))
    size = max(1, math.ceil(n_images / (2 * n_threads)))
    batch = getattr(detector, "batch_size", None)
    if isinstance(batch, Integral) and batch > 0:
        size = math.ceil(size / batch) * batch
    return size


def score(
    detector,
    collection,
    client=None,
    method="score_samples",
    *,
    compute=True,
    partition_size=None,
    torch_threads=None,
    resources=None,
):
    """Apply a fitted detector to a collection of images on a Dask cluster.

    The detector is sent to every worker once
    (:meth:`~dask.distributed.Client.scatter` with ``broadcast=True``); each
    chunk of images is then scored where it lives, and the results equal
    those of calling ``method`` locally.

    Parameters
    ----------
    detector : fitted detector
        A fitted skanomaly detector (or any fitted estimator with ``method``).
    collection : dask.array.Array or ndarray
        Images ``(n, H, W)``, ``(n, H, W, C)`` or flattened ``(n, n_features)``.
        A Dask array must be chunked along axis 0 only (whole images in each
        chunk), and each chunk is one task; a NumPy array or
        :class:`numpy.memmap` is cut into partitions of ``partition_size``
        images, sent to the workers.
    client : dask.distributed.Client or None, default=None
        The cluster to use; ``None`` takes the current default client.
    method : {"score_samples", "decision_function", "predict", "transform"}, \
            default="score_samples"
        The detector method to apply.
    compute : bool, default=True
        ``True`` returns a NumPy array; ``False`` returns a lazy
        :class:`dask.array.Array` (the detector stays on the workers as long
        as the array is referenced).
    partition_size : int or None, default=None
        Images per task for NumPy input (ignored for Dask arrays, whose
        chunks decide); ``None`` makes about two partitions per worker thread,
        rounded up to whole inference batches (``detector.batch_size``) so
        that every batch holds the images it holds locally.
    torch_threads : int or None, default=None
        Number of torch threads of each task; ``None`` gives each task the ``nthreads``
        of its worker (see :func:`worker_torch_threads`).
    resources : dict or None, default=None
        Dask worker resources each task needs (e.g. ``{"GPU": 1}``); applied
        when ``compute=True``.

    Returns
    -------
    result : ndarray or dask.array.Array
        ``(n,)`` for ``score_samples``, ``decision_function`` and ``predict``;
        ``(n, H, W)`` float32 maps (``(n, H*W)`` for flattened input) for
        ``transform``.

    Raises
    ------
    NotFittedError
        ``detector`` is not fitted (raised before any work is sent).
    ValueError
        Unknown ``method``, a collection that is empty, of the wrong
        dimension or chunked along another axis than 0, a bad
        ``partition_size``, or no client.
    TypeError
        ``collection`` is neither a Dask nor a NumPy array.

    See Also
    --------
    fit_per_group : Fit one detector per group of images on the cluster.

    Notes
    -----
    When a task fails, or the call is interrupted (``KeyboardInterrupt``,
    e.g. Ctrl-C while it waits), the tasks are cancelled and the partitions
    and the detector are released from the workers before the exception
    propagates unchanged; with ``compute=True`` they are released once the
    result is back too.  A task already scoring on a worker stops at its next
    inference batch (its worker notices the cancellation within 0.25 s) and
    its result is dropped.

    Examples
    --------
    >>> import dask.array as da
    >>> from skanomaly.distributed import score
    >>> images = da.from_zarr("test_images.zarr")  # doctest: +SKIP
    >>> normality = score(detector, images.rechunk({1: -1, 2: -1}))  # doctest: +SKIP
    """
    check_is_fitted(detector)
    if method not in SCORE_METHODS:
        raise ValueError(f"method must be one of {list(SCORE_METHODS)}, got {method!r}.")
    if not callable(getattr(detector, method, None)):
        raise TypeError(f"{type(detector).__name__} has no method {method!r}.")
    if not isinstance(compute, (bool, np.bool_)):
        raise TypeError(f"compute must be True or False, got {compute!r}.")
    if partition_size is not None:
        if isinstance(partition_size, bool) or not isinstance(partition_size, Integral):
            raise TypeError(
                f"partition_size must be a positive int or None, got "
                f"{type(partition_size).__name__}."
            )
        if partition_size < 1:
            raise ValueError(
                f"partition_size must be a positive int or None, got {partition_size}."
            )
    torch_threads = _check_threads(torch_threads, "torch_threads")
    kind = _check_collection(collection)
    client = _resolve_client(client, "score")

    # Futures of this call: NumPy partitions, the detector, the result.
    owned = []
    lazy = False
    try:
        if kind == "numpy":
            n = collection.shape[0]
            size = partition_size or _default_partition_size(detector, n, client)
            starts = range(0, n, size)
            # One scatter call spreads the partitions over the workers (a
            # memmap is read as its partitions are pickled); collections
            # larger than memory belong in a Dask array that the workers read
            # themselves.
            owned.extend(
                client.scatter([collection[i : i + size] for i in starts], hash=False)
            )
            images = da.concatenate(
                [
                    da.from_delayed(part, shape=(min(size, n - i), *collection.shape[1:]),
                                    dtype=collection.dtype)
                    for part, i in zip(owned, starts)
                ]
            )
        else:
            images = collection

        owned.extend(client.scatter([detector], broadcast=True, hash=False))
        dtype, tail = _output_layout(detector, method, images.shape)
        out_ndim = 1 + len(tail)
        result = images.map_blocks(
            _apply_task,
            owned[-1],
            method,
            torch_threads,
            dtype=dtype,
            drop_axis=list(range(out_ndim, images.ndim)),
            chunks=(images.chunks[0], *((t,) for t in tail)),
            meta=np.empty((0,) * out_ndim, dtype=dtype),
            name=f"skanomaly-{method}-{uuid.uuid4().hex[:8]}",
        )
        if not compute:
            # The lazy array holds the scattered futures from here on.
            lazy = True
            return result
        owned.append(client.compute(result, resources=resources))
        return client.gather(owned[-1])
    except BaseException:
        # An error, or Ctrl-C while waiting: stop the tasks and free the
        # partitions and the detector on the workers, even while a kept
        # traceback holds this frame.
        lazy = False
        images = result = None
        _cancel(client, owned)
        raise
    finally:
        if not lazy:
            _release(owned)
