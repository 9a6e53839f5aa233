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
import math
import time
import warnings

import numpy as np
import torch
from skorch import NeuralNet
from skorch.callbacks import Callback, EarlyStopping
from skorch.dataset import ValidSplit
from skorch.utils import to_device

__all__ = [
    "UnsupervisedNet",
    "ArrayDataset",
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


class TrainingDivergedError(RuntimeError):
    """Raised when a training loss becomes NaN, infinite or explodes."""


class FiniteLossGuard(Callback):
    """Stop training with a clear error when it diverges or collapses.

    Checks, during training only:

    - the batch loss: NaN, infinite, or above ``max_loss`` in magnitude;
    - the gradients (``on_grad_computed``, where the net reports them): any
      NaN or infinite entry;
    - the learnable parameters of every module after each batch: any NaN or
      infinite entry, or a magnitude above ``max_weight``;
    - saturated output: a network whose output (``y_pred``) lies within
      ``saturation_tol`` of 0 or 1 in every element while its gradients are
      all exactly zero has stopped learning (a sigmoid pushed to its bounds
      by too large a learning rate).  This counts as divergence when it
      lasts a whole epoch, or when training ends on such a batch.

    A bounded loss (e.g. a reconstruction error of sigmoid outputs) never
    becomes infinite, so the last two checks catch divergence the loss
    check cannot see.

    Parameters
    ----------
    max_loss : float, default=1e8
        A finite batch loss above this value also counts as divergence.
    max_weight : float, default=1e6
        A parameter entry above this magnitude counts as divergence.
    saturation_tol : float, default=1e-6
        Distance to 0 or 1 under which an output element counts as saturated.
    """

    def __init__(self, max_loss=1e8, max_weight=1e6, saturation_tol=1e-6):
        self.max_loss = max_loss
        self.max_weight = max_weight
        self.saturation_tol = saturation_tol

    def initialize(self):
        self.on_train_begin(None)
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self.grad_max_ = None
        self.epoch_batches_ = 0
        self.saturated_batches_ = 0
        self.last_saturated_ = False

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self.epoch_batches_ = 0
        self.saturated_batches_ = 0

    def on_batch_begin(self, net, batch=None, training=None, **kwargs):
        if training:
            self.grad_max_ = None

    def _raise(self, net, what):
        epoch = len(net.history)
        raise TrainingDivergedError(
            f"Training diverged in epoch {epoch}: {what}. Lower lr (now "
            f"{getattr(net, 'lr', '?')!r}), check the input images, or change "
            f"random_state."
        )

    def on_grad_computed(self, net, named_parameters, X=None, y=None, training=None,
                         **kwargs):
        grads = [p.grad.detach() for _, p in named_parameters if p.grad is not None]
        if not grads:
            return
        # One synchronisation per batch: the largest gradient magnitude.
        largest = float(torch.stack([g.abs().max() for g in grads if g.numel()]).max())
        self.grad_max_ = largest
        if not math.isfinite(largest):
            self._raise(net, f"a gradient is {largest!r}")

    def _check_weights(self, net):
        try:
            params = [p.detach() for _, p in net.get_all_learnable_params()]
        except AttributeError:  # not initialised the usual way
            return
        params = [p for p in params if p.numel()]
        if not params:
            return
        largest = float(torch.stack([p.abs().max() for p in params]).max())
        if not math.isfinite(largest):
            self._raise(net, f"a network weight is {largest!r}")
        if largest > self.max_weight:
            self._raise(
                net, f"a network weight reached {largest:.6g}, above max_weight="
                f"{self.max_weight:g} (the weights are exploding)"
            )

    def _saturated(self, y_pred):
        if not isinstance(y_pred, torch.Tensor) or not y_pred.is_floating_point():
            return False
        if y_pred.numel() == 0 or self.grad_max_ is not None and self.grad_max_ != 0.0:
            return False
        y = y_pred.detach()
        tol = self.saturation_tol
        return bool(((y.abs() <= tol) | ((y - 1).abs() <= tol)).all())

    def on_batch_end(self, net, batch=None, training=None, **kwargs):
        if not training:
            return
        loss = net.history[-1, "batches", -1].get("train_loss")
        if loss is not None and (not math.isfinite(loss) or abs(loss) > self.max_loss):
            self._raise(net, f"the batch loss is {loss!r}")
        self._check_weights(net)
        self.last_saturated_ = self._saturated(kwargs.get("y_pred"))
        self.epoch_batches_ += 1
        self.saturated_batches_ += int(self.last_saturated_)

    _SATURATED = (
        "the network's output is stuck at 0/1 (saturated) with zero gradients"
    )

    def on_epoch_end(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        if self.epoch_batches_ and self.saturated_batches_ == self.epoch_batches_:
            self._raise(net, self._SATURATED + " for the whole epoch")

    def on_train_end(self, net, X=None, y=None, **kwargs):
        if self.last_saturated_ and self.grad_max_ == 0.0:
            self._raise(net, self._SATURATED + " at the end of training")


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

    Parameters
    ----------
    images : skanomaly.validation.ImageSet
    resize : callable
        Maps a float tensor ``(1, C, H, W)`` in [0, 1] to the working size.
    """

    def __init__(self, images, resize):
        self.images = images
        self.resize = resize

    def __len__(self):
        return self.images.n_images

    def __getitem__(self, i):
        x = self.resize(self.images.tensor(i, i + 1))[0]
        return x, torch.zeros(())


class UnsupervisedNet(NeuralNet):
    """A :class:`skorch.NeuralNet` that trains on unlabelled image batches.

    ``y`` is ignored; the loss is ``criterion(y_pred, X_batch)`` where
    ``X_batch`` is the batch on the net's device.  Subclasses for adversarial
    methods override :meth:`train_step` and register extra modules and
    optimizers in ``initialize_module``/``initialize_optimizer`` as skorch
    documents.
    """

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


#: Device types skanomaly's detectors run on.
SUPPORTED_DEVICE_TYPES = ("cpu", "cuda")


def resolve_device(device):
    """Map ``"auto"`` to ``"cuda"`` when available, else ``"cpu"``; check others.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Returns
    -------
    device : str

    Raises
    ------
    ValueError
        ``device`` is not a torch device, is of a type other than CPU or CUDA
        (``"mps"``, ``"xpu"``, ``"meta"``, ...), or asks for CUDA (or a CUDA
        index) that this machine does not have.
    """
    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"device must be a string such as 'auto', 'cpu' or 'cuda', got "
            f"{type(device).__name__} {device!r}."
        )
    device = str(device)
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'auto', 'cpu', "
            f"'cuda' or 'cuda:N'."
        ) from exc
    if parsed.type not in SUPPORTED_DEVICE_TYPES:
        raise ValueError(
            f"device={device!r} is not supported: skanomaly's detectors run on "
            f"'cpu' or 'cuda' ('cuda:N'); use device='auto' or 'cpu'."
        )
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                f"machine; use device='auto' or 'cpu'."
            )
        count = torch.cuda.device_count()
        if parsed.index is not None and parsed.index >= count:
            raise ValueError(
                f"device={device!r} was requested but this machine has {count} CUDA "
                f"device(s) (cuda:0..cuda:{count - 1}); use one of them or 'auto'."
            )
    return device


def runtime_device(device):
    """The device to run a fitted model on: its own, or the CPU when that is gone."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return "cpu"
    return device


@contextlib.contextmanager
def seeded(seed, device="cpu"):
    """Run a block with torch's global RNGs seeded and cuDNN deterministic.

    Inside the block torch's CPU (and, for a CUDA ``device``, that device's)
    random generators are seeded with ``seed``, and cuDNN is told to pick
    deterministic algorithms (``torch.backends.cudnn.deterministic = True``,
    ``benchmark = False``), so that fitting twice with the same seed on the
    same CUDA device gives the same network.  All of these are restored on
    exit, also when the block raises.

    Parameters
    ----------
    seed : int
        Seed of torch's generators.
    device : str or torch.device, default="cpu"
        The device the block runs on.

    Notes
    -----
    Deterministic cuDNN costs speed on CUDA: convolutions cannot use the
    fastest (non-deterministic or auto-tuned) algorithms, which typically
    makes training some 10-30 % slower, more for large batches of big
    images.  It has no effect on the CPU.  A few CUDA operations have no
    deterministic implementation at all (scatter-add in backward passes,
    some interpolation gradients); those may still differ in the last bits
    between runs.
    """
    devices = []
    dev = torch.device(device)
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark)
    try:
        with torch.random.fork_rng(devices=devices):
            cudnn.deterministic, cudnn.benchmark = True, False
            torch.manual_seed(seed)
            yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved


class LongFitWarning(UserWarning):
    """A fit is projected to take longer than an hour at its settings."""


class FitProgressBar(Callback):
    """One progress bar over the whole fit, with an ETA (``verbose=1``).

    The bar counts training batches over all ``max_epochs`` epochs and shows
    the epoch and the latest losses; skorch's per-epoch table is printed only
    with ``verbose >= 2``.

    Parameters
    ----------
    desc : str, default="fit"
        Label of the bar.
    """

    def __init__(self, desc="fit"):
        self.desc = desc

    def initialize(self):
        self._bar = None
        return self

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if self._bar is None:
            from tqdm.auto import tqdm

            per_epoch = math.ceil(len(dataset_train) / net.batch_size) if dataset_train else 0
            remaining = net.max_epochs - (len(net.history) - 1)
            self._bar = tqdm(total=per_epoch * max(1, remaining), desc=self.desc, unit="batch")

    def on_batch_end(self, net, training=None, **kwargs):
        if training and self._bar is not None:
            self._bar.update(1)

    def on_epoch_end(self, net, **kwargs):
        if self._bar is not None:
            row = net.history[-1]
            post = {"epoch": row["epoch"]}
            for key in ("train_loss", "valid_loss"):
                if key in row:
                    post[key] = f"{row[key]:.4g}"
            self._bar.set_postfix(post, refresh=False)

    def on_train_end(self, net, **kwargs):
        self._close()

    def _close(self):
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
        self._bar = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_bar"] = None
        return state


class FitTimeEstimate(Callback):
    """Warn early when a fit is projected to run longer than ``limit_s``.

    After ``n_steps`` timed training batches (the first batch, which pays
    for warm-up, is not timed) the mean batch time is multiplied by the
    number of training batches of the whole fit; above the limit a
    :class:`LongFitWarning` gives the estimate and the settings that would
    cut it.

    Parameters
    ----------
    hints : str
        The settings to mention (device, image size, epochs, ...).
    limit_s : float, default=3600
    n_steps : int, default=3
    """

    def __init__(self, hints, limit_s=3600.0, n_steps=3):
        self.hints = hints
        self.limit_s = limit_s
        self.n_steps = n_steps

    def initialize(self):
        self._per_epoch = None
        self._times = []
        self._start = None
        self._seen = 0
        self._done = False
        return self

    def on_epoch_begin(self, net, dataset_train=None, **kwargs):
        if self._per_epoch is None and dataset_train is not None:
            self._per_epoch = math.ceil(len(dataset_train) / net.batch_size)
            self._epochs = net.max_epochs - (len(net.history) - 1)

    def on_batch_begin(self, net, training=None, **kwargs):
        if training and not self._done:
            self._start = time.perf_counter()

    def on_batch_end(self, net, training=None, **kwargs):
        if not training or self._done or self._start is None:
            return
        self._seen += 1
        if self._seen > 1:
            self._times.append(time.perf_counter() - self._start)
        if len(self._times) >= self.n_steps:
            self._done = True
            total = (self._per_epoch or 1) * max(1, self._epochs)
            projected = float(np.mean(self._times)) * total
            if projected > self.limit_s:
                warnings.warn(
                    f"This fit is projected to take about {projected / 3600:.1f} h "
                    f"({np.mean(self._times):.2f} s per batch x {total} batches on "
                    f"{net.device}). To cut it: {self.hints}.",
                    LongFitWarning,
                    stacklevel=2,
                )


def _speed_hints(estimator):
    """The settings that would shorten a detector's fit, for :class:`FitTimeEstimate`."""
    params = estimator.get_params()
    hints = []
    if torch.device(estimator.device_).type == "cpu":
        hints.append("a GPU (device='cuda')")
    if "image_size" in params:
        hints.append(f"a smaller image_size (now {params['image_size']})")
    hints.append(f"fewer max_epochs (now {params['max_epochs']})")
    hints.append("early stopping on validation_fraction")
    if params.get("backbone") == "vgg19" or params.get("teacher") == "resnet18":
        hints.append("the offline EfficientNet-Lite0 backbone")
    return ", ".join(hints)


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
    for i, cb in enumerate(estimator.callbacks or () if training else ()):
        callbacks.append(cb if isinstance(cb, tuple) else (f"user_{i}", cb))
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
        lr=estimator.lr,
        max_epochs=estimator.max_epochs,
        batch_size=estimator.batch_size,
        device=estimator.device_,
        train_split=train_split,
        iterator_train__shuffle=True,
        callbacks=callbacks,
        # verbose=1: one progress bar; >= 2 adds skorch's per-epoch table.
        verbose=int(estimator.verbose >= 2),
    )
    params.update(kwargs)
    return net_class(**params)
