"""The single skorch glue of skanomaly.

Every detector trains its network through :class:`UnsupervisedNet`, a
:class:`skorch.NeuralNet` for unlabelled image batches.  A detector supplies a
pure :class:`torch.nn.Module`, a criterion module called as
``criterion(y_pred, X_batch)``, and a :class:`torch.utils.data.Dataset`; it may
override :meth:`UnsupervisedNet.train_step` (adversarial methods) in a subclass.  The
estimator holds the net as a fitted attribute (``net_``); it never subclasses
``NeuralNet``.

:func:`make_net` wires the parameters every detector shares (``max_epochs``,
``batch_size``, ``lr``, ``device``, ``callbacks``, ``validation_fraction``,
``verbose``), so that skorch's callbacks (progress bar, early stopping,
checkpoints, learning-rate schedulers) reach users unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import sys
import threading

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import EarlyStopping
from skorch.dataset import ValidSplit
from skorch.utils import to_device

# Re-exported: the detectors and tests import these from here.
from ._callbacks import (  # noqa: F401
    FiniteLossGuard,
    FitProgressBar,
    FitTimeEstimate,
    LongFitWarning,
    TrainingDivergedError,
    _speed_hints,
)
from ._devices import (  # noqa: F401
    SUPPORTED_DEVICE_TYPES,
    float32_mode,
    resolve_device,
    runtime_device,
    seeded,
)
from ._schedules import WarmupCosineLR

__all__ = [
    "UnsupervisedNet",
    "ArrayDataset",
    "FitCancelled",
    "check_fit_cancelled",
    "stop_fit_when",
    "stop_when_task_cancelled",
    "WorkingSizeImages",
    "TrainingDivergedError",
    "FiniteLossGuard",
    "FitProgressBar",
    "FitTimeEstimate",
    "LongFitWarning",
    "make_net",
    "resolve_device",
    "seeded",
]


class FitCancelled(Exception):
    """A fit (or scoring pass) stopped because the Dask task running it was cancelled.

    Raised at the next training (or inference) batch of a fit or scoring pass
    that runs inside a Dask task once the task is cancelled
    (:func:`stop_when_task_cancelled`): a :func:`skanomaly.distributed.fit_per_group`
    call was interrupted or another group's fit failed, a
    :func:`skanomaly.distributed.score` call was interrupted, or the task
    (a search's under joblib's Dask backend, or the user's own) was
    cancelled.  Not a
    ``KeyboardInterrupt``, which skorch's ``partial_fit`` would swallow; the
    detector's ``fit`` discards its half-fitted state as for any error.
    """


#: The stop flag (a :class:`threading.Event`) of the fit running in the
#: current context; ``None`` (the default) outside :func:`stop_fit_when`, so
#: that a local fit never checks anything.
_STOP_FLAG = contextvars.ContextVar("skanomaly_stop_flag", default=None)


@contextlib.contextmanager
def stop_fit_when(flag):
    """Make the fits run inside the block stop once ``flag`` is set.

    Parameters
    ----------
    flag : threading.Event
        Set (from another thread) when the fit's work is no longer wanted;
        :func:`check_fit_cancelled` then raises :class:`FitCancelled` at the
        fit's next training batch.

    Yields
    ------
    flag : threading.Event
    """
    if not callable(getattr(flag, "is_set", None)):
        raise TypeError(
            f"flag must be a threading.Event (with is_set), got {type(flag).__name__}."
        )
    token = _STOP_FLAG.set(flag)
    try:
        yield flag
    finally:
        _STOP_FLAG.reset(token)


#: Seconds between two looks of a task's watcher at the task's state.
_WATCH_INTERVAL = 0.25

#: Worker-side states of a Dask task whose result is no longer wanted: an
#: executing task the scheduler released becomes "cancelled" (it returns to
#: "executing" through "resumed" if wanted again); the others follow.
_UNWANTED_STATES = frozenset({"cancelled", "released", "forgotten"})


def _current_dask_task():
    """The task table and key of the Dask task running this thread, or ``None``.

    ``None`` outside a Dask worker's task (and whenever ``distributed`` was
    never imported: then no worker can be running us), and in an actor's
    method, which runs under no task of the worker's table.
    """
    if "distributed" not in sys.modules:
        return None
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        worker = get_worker()
        tasks, key = worker.state.tasks, thread_state.key
    except (ImportError, ValueError, AttributeError):
        # Not in a task, or a distributed without these internals.
        return None
    # An actor's method runs under a key ("Class.method") that is no task:
    # only a task in the worker's table can be watched for its cancellation.
    if getattr(thread_state, "actor", False) or key not in tasks:
        return None
    return tasks, key


@contextlib.contextmanager
def stop_when_task_cancelled():
    """Stop the fits and scoring passes in the block once their Dask task is cancelled.

    Inside a Dask worker's task (a :func:`skanomaly.distributed.fit_per_group`
    fit, a :func:`skanomaly.distributed.score` partition, or a fit that
    joblib's Dask backend runs for ``GridSearchCV``), a daemon thread looks
    every ``_WATCH_INTERVAL`` seconds at the task's state on its worker; once
    the task is gone or no longer wanted, it sets the stop flag of
    :func:`stop_fit_when`, and the work raises :class:`FitCancelled` at its
    next batch.  The watcher ends with the block.  Outside a Dask task, or
    inside a block that already has a stop flag, it does nothing.
    """
    task = None if _STOP_FLAG.get() is not None else _current_dask_task()
    if task is None:
        yield
        return
    tasks, key = task
    stop, done = threading.Event(), threading.Event()

    def watch():
        # A plain read of the worker's task table (its event loop writes it).
        while not done.wait(_WATCH_INTERVAL):
            state = tasks.get(key)
            if state is None or state.state in _UNWANTED_STATES:
                stop.set()
                return

    watcher = threading.Thread(target=watch, name=f"skanomaly-watch-{key}", daemon=True)
    watcher.start()
    try:
        with stop_fit_when(stop):
            yield
    finally:
        done.set()
        watcher.join()


def check_fit_cancelled():
    """Raise :class:`FitCancelled` if the current fit's stop flag is set.

    Cheap enough for every training batch: outside :func:`stop_fit_when` it
    reads one context variable and returns.

    Raises
    ------
    FitCancelled
        Inside :func:`stop_fit_when` once its flag is set.
    """
    flag = _STOP_FLAG.get()
    if flag is not None and flag.is_set():
        raise FitCancelled(
            "stopped: the Dask task running it was cancelled (its fit_per_group "
            "or score call was interrupted, another of its tasks failed, or the "
            "task was cancelled)."
        )


class ArrayDataset(torch.utils.data.Dataset):
    """Unlabelled samples from an array, returned as float32 tensors.

    Parameters
    ----------
    data : ndarray or Tensor
        Samples along the first axis; any float dtype (float16 caches are
        converted per item, so the cache stays small).
    transform : callable, default=None
        Optional ``transform(sample, index)`` applied to each float32 sample.
    """

    def __init__(self, data, transform=None):
        self.data = data
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        item = self.data[i]
        if not isinstance(item, torch.Tensor):
            item = torch.from_numpy(np.asarray(item))
        item = item.to(torch.float32)
        if self.transform is not None:
            item = self.transform(item, i)
        # skorch unpacks (X, y); y is a placeholder for unlabelled training.
        return item, torch.zeros(())


class WorkingSizeImages(torch.utils.data.Dataset):
    """Images of an ImageSet, resized one by one when read (memory of one image).

    Training streams its images through this dataset: nothing of the
    collection is held but the reference to it, so memory does not grow with
    the number of images (a memmap or an
    :class:`~skanomaly.datasets.ImageFolderSequence` is read image by image,
    every epoch).  Each image is resized alone, which gives exactly the
    values of resizing it within a batch.

    Parameters
    ----------
    images : skanomaly.validation.ImageSet
    resize : callable
        Maps a float tensor ``(1, C, H, W)`` in [0, 1] to the working size.
    indices : array-like of int, default=None
        Item ``i`` is image ``indices[i]`` of ``images`` (a training or
        held-out split without copying it); ``None``: every image, in order.

    Attributes
    ----------
    shape : tuple of int
        ``(n, C, S_h, S_w)``, the shape of the images at the working size
        (known after the first image is resized).
    """

    def __init__(self, images, resize, indices=None):
        self.images = images
        self.resize = resize
        self.indices = None if indices is None else np.asarray(indices, dtype=np.intp)
        self._item_shape = None

    def __len__(self):
        if self.images is None:
            return 0
        return self.images.n_images if self.indices is None else len(self.indices)

    @property
    def shape(self):
        if self._item_shape is None:
            self._item_shape = tuple(self.image(0).shape) if len(self) else (0, 0, 0)
        return (len(self),) + self._item_shape

    def image(self, i):
        """Image ``i`` at the working size, a float32 tensor ``(C, S_h, S_w)``."""
        i = int(i) if self.indices is None else int(self.indices[i])
        x = self.resize(self.images.tensor(i, i + 1))[0]
        if self._item_shape is None:
            self._item_shape = tuple(x.shape)
        return x

    def __getitem__(self, i):
        return self.image(i), torch.zeros(())

    def release(self):
        """Drop the reference to the images (after training): a pickled net or
        callback that still holds this dataset then holds no training data."""
        self.images = None


#: The parameters of a net that trains a second network against ``module``
#: with an optimizer of its own (IGD's critics, SCADN's discriminator); each
#: such net fills in ``{name}`` and ``{default}`` with :meth:`str.format`.
SECOND_NETWORK_PARAMETERS_DOC = """\
Parameters
----------
module, criterion
    As in :class:`skorch.NeuralNet`.
{name} : nn.Module class or instance, default={default}
    The second network: the component ``{name}_``, set with ``{name}__*``.
optimizer_{name} : optimizer class, default=torch.optim.Adam
    Its optimizer ``optimizer_{name}_``; the learning rate defaults to ``lr``."""


class UnsupervisedNet(NeuralNet):
    """A :class:`skorch.NeuralNet` that trains on unlabelled image batches.

    ``y`` is ignored; the loss is ``criterion(y_pred, X_batch)`` where
    ``X_batch`` is the batch on the net's device.  Subclasses for adversarial
    methods override :meth:`train_step` and register extra modules and
    optimizers in ``initialize_module``/``initialize_optimizer`` as skorch
    documents.  Every batch (training and validation) first checks the stop
    flag of :func:`stop_fit_when`, so a fit whose Dask task was cancelled
    raises :class:`FitCancelled` at its next batch.
    """

    def on_batch_begin(self, net, batch=None, training=False, **kwargs):
        # Stop a fit whose Dask task was cancelled (see stop_fit_when).
        check_fit_cancelled()
        super().on_batch_begin(net, batch=batch, training=training, **kwargs)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        X = to_device(X, self.device)
        return self.criterion_(y_pred, X)

    def fit(self, X, y=None, **fit_params):
        return super().fit(X, None, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """As skorch's, except that ``KeyboardInterrupt`` propagates.

        skorch's ``partial_fit`` catches ``KeyboardInterrupt`` and returns a
        half-trained net as if training had finished; here an interrupt
        reaches the caller (the detector then discards its fitted state).
        """
        if not self.initialized_:
            self.initialize()
        self.notify("on_train_begin", X=X, y=None)
        try:
            self.fit_loop(X, None, **fit_params)
        except KeyboardInterrupt as exc:
            # skorch's EarlyStopping stops training by raising KeyboardInterrupt.
            if not _raised_by_early_stopping(exc):
                raise
        self.notify("on_train_end", X=X, y=None)
        return self


def _raised_by_early_stopping(exc):
    """Whether a KeyboardInterrupt is skorch's EarlyStopping ending training.

    skorch's :class:`~skorch.callbacks.EarlyStopping` raises
    ``KeyboardInterrupt`` from its ``on_epoch_end`` once ``misses_`` reaches
    ``patience``; a user's Ctrl-C is raised anywhere else.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return False
    owner = tb.tb_frame.f_locals.get("self")
    return (
        isinstance(owner, EarlyStopping)
        and tb.tb_frame.f_code.co_name == "on_epoch_end"
        and owner.misses_ >= owner.patience
    )


def _copy_callback(cb, index):
    """A fresh instance of the user's callback ``callbacks[index]`` (classes
    and None as they are), built from its parameters.

    The parameter values are shared, not copied (a list the callback writes
    to, a TensorBoard writer), so the callback still reports where the user
    asked; the state it gains in training lives on the new instance only.
    A callback that cannot be rebuilt from ``get_params`` is copied shallowly.
    """
    if cb is None or isinstance(cb, type):
        return cb
    try:
        return type(cb)(**cb.get_params(deep=False))
    except Exception:  # noqa: BLE001 - not rebuildable from its parameters
        pass
    try:
        return copy.copy(cb)
    except Exception as exc:  # noqa: BLE001 - any failure: say which callback
        raise TypeError(
            f"callbacks[{index}] ({type(cb).__name__}) cannot be copied for training "
            f"({type(exc).__name__}: {exc}); pass the callback class instead."
        ) from exc


def make_net(
    estimator,
    module,
    criterion,
    *,
    net_class=UnsupervisedNet,
    optimizer=torch.optim.Adam,
    training=True,
    desc=None,
    **kwargs,
):
    """Build the skorch net of a detector from its shared parameters.

    Parameters
    ----------
    estimator : BaseDetector
        Supplies ``max_epochs``, ``batch_size``, ``lr``, ``device_``,
        ``callbacks``, ``validation_fraction``, ``verbose`` and ``_seed_``.
    module, criterion : torch.nn.Module (instances or classes)
        The pure network and its loss ``criterion(y_pred, X_batch)``.
    net_class : type, default=UnsupervisedNet
        An :class:`UnsupervisedNet` subclass (e.g. with an adversarial train step).
    optimizer : type, default=torch.optim.Adam
    training : bool, default=True
        ``True`` for the detector's training net: the user's ``callbacks``
        and ``early_stopping`` are added.  ``False`` for an auxiliary net
        (IGD's distillation), which gets only the progress bar, the time
        estimate and the divergence guard.
    desc : str, default=None
        Label of the progress bar (default: the estimator's class name).
    **kwargs
        Further skorch parameters (``optimizer__betas``, ``module__...``).

    Returns
    -------
    net : UnsupervisedNet
        Not yet initialised.
    """
    callbacks = [("finite_loss", FiniteLossGuard())]
    callbacks.append(("time_estimate", FitTimeEstimate(_speed_hints(estimator))))
    if estimator.verbose:
        callbacks.append(("progress_bar", FitProgressBar(desc or type(estimator).__name__)))
    if training and getattr(estimator, "early_stopping", False):
        callbacks.append((
            "early_stopping",
            EarlyStopping(
                monitor="valid_loss",
                patience=int(estimator.n_iter_no_change),
                threshold=float(estimator.tol),
                threshold_mode="abs",
                lower_is_better=True,
            ),
        ))
    if training and getattr(estimator, "lr_schedule", "paper") == "warmup_cosine":
        callbacks.append(("lr_schedule", WarmupCosineLR()))
    # The user's callbacks are rebuilt from their parameters (unfitted, as
    # scikit-learn clones a meta-estimator's parts), so fit never changes the
    # ``callbacks`` parameter nor leaves training outputs in it.  A (name, callback) pair
    # named like the progress bar or the time estimate replaces it (None
    # switches it off, as in skorch); _check_shared_params refuses the names
    # of the other built-in callbacks.
    for i, cb in enumerate(estimator.callbacks or () if training else ()):
        name, cb = cb if isinstance(cb, tuple) else (f"user_{i}", cb)
        cb = _copy_callback(cb, i)
        callbacks = [c for c in callbacks if c[0] != name]
        callbacks.append((name, cb))  # (name, None) also switches off a net default
    fraction = estimator._validation_fraction()
    train_split = (
        ValidSplit(fraction, stratified=False, random_state=estimator._seed_)
        if fraction
        else None
    )
    params = dict(
        module=module,
        criterion=criterion,
        optimizer=optimizer,
        # The detector's parameters that skorch takes under the same names.
        **{name: getattr(estimator, name) for name in ("lr", "max_epochs", "batch_size")},
        device=estimator.device_,
        train_split=train_split,
        iterator_train__shuffle=True,
        callbacks=callbacks,
        # verbose=1: one progress bar; >= 2 adds skorch's per-epoch table.
        verbose=int(estimator.verbose >= 2),
    )
    params.update(kwargs)
    return net_class(**params)
