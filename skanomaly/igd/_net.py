"""IGD's training on the shared skorch glue: the net, its callbacks, and distillation.

:class:`IGDNet` trains the auto-encoders (``module_``) and their ACAI
critics (``critic_``, a skorch-registered module with its own optimizer
``optimizer_critic_``).  Its default callbacks ``"e_step"``
(:class:`GaussianEStep`) and ``"lr_schedule"`` (:class:`PolynomialLRDecay`)
carry the parts of the method that run between training steps.
:func:`distill` pre-trains the encoders from a teacher with a
:class:`DistillationNet` per branch, built by :func:`~skanomaly._training.make_net`
like every other net of the library.
"""

from __future__ import annotations


import torch
from skorch.callbacks import Callback
from skorch.dataset import unpack_data
from skorch.utils import TeeGenerator, to_device

from .._docstrings import fill_doc
from .._schedules import BatchLRSchedule
from .._training import (
    SECOND_NETWORK_PARAMETERS_DOC,
    UnsupervisedNet,
    check_fit_cancelled,
    make_net,
)
from .losses import (
    DistillationLoss,
    autoencoder_loss,
    critic_loss,
    gaussian_from_moments,
    gsvdd_loss,
    interpolate_latents,
    sample_alpha,
)
from .torch_model import DistillationStudent, IGDCritics, patch_starts

__all__ = [
    "IGDNet",
    "GaussianEStep",
    "PolynomialLRDecay",
    "DistillationNet",
    "DistillationSamples",
    "distill",
    "CRITIC_GAMMA",
    "POLY_POWER",
    "KD_LR",
    "KD_WEIGHT_DECAY",
]

#: ``gamma`` of eq. 5 (ACAI's): the critic sees ``gamma x + (1 - gamma) x_hat`` with target 0.
CRITIC_GAMMA = 0.2
#: Power of the polynomial learning-rate decay (the authors' code).
POLY_POWER = 0.9
#: Adam learning rate and weight decay of the distillation (the paper's).
KD_LR = 1e-4
KD_WEIGHT_DECAY = 1e-5


# --------------------------------------------------------------------------- callbacks
class GaussianEStep(Callback):
    """The E-step of IGD: re-estimate each branch's Gaussian SVDD ``(mu, sigma^2)``.

    Runs before epoch 1, before every ``interval``-th epoch after it, and
    once when training ends, on all training inputs (images for the global
    branch, their patches for the local one, in chunks of ``batch_size``),
    with the networks in eval mode.  The training dataset is held only while
    training runs.

    Parameters
    ----------
    interval : int, default=10
        Epochs between E-steps.
    kappa : float, default=0.5
        Scale of the variance estimate (:func:`~skanomaly.igd.losses.gaussian_from_moments`).
    """

    def __init__(self, interval=10, kappa=0.5):
        self.interval = interval
        self.kappa = kappa

    def initialize(self):
        self._dataset = None
        return self

    def on_train_begin(self, net, X=None, y=None, **kwargs):
        self._dataset = None

    def on_epoch_begin(self, net, dataset_train=None, dataset_valid=None, **kwargs):
        self._dataset = dataset_train
        if (len(net.history) - 1) % self.interval == 0:
            self.e_step(net, dataset_train)

    def on_train_end(self, net, X=None, y=None, **kwargs):
        dataset, self._dataset = self._dataset, None
        if dataset is not None:
            self.e_step(net, dataset)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_dataset"] = None
        return state

    @torch.no_grad()
    def e_step(self, net, dataset):
        """Set every branch's ``(mu, sigma^2)`` from the embeddings of ``dataset``.

        Parameters
        ----------
        net : IGDNet
        dataset : torch Dataset
            The training images.
        """
        module = net.module_
        was_training = module.training
        module.eval()
        moments = {name: [0.0, 0.0, 0] for name, _ in module.branches()}
        for batch in net.get_iterator(dataset, training=False):
            check_fit_cancelled()  # a cancelled Dask fit stops here too
            x = to_device(unpack_data(batch)[0], net.device)
            for name, branch in module.branches():
                for chunk in net.branch_chunks(name, module.branch_input(name, x)):
                    z = branch.encoder(chunk).double()
                    acc = moments[name]
                    acc[0] = acc[0] + z.sum(0)
                    acc[1] = acc[1] + (z**2).sum()
                    acc[2] += len(z)
        for name, branch in module.branches():
            mu, sigma2 = gaussian_from_moments(*moments[name], kappa=self.kappa)
            branch.mu.copy_(mu)
            branch.sigma2.copy_(sigma2)
        module.train(was_training)


class PolynomialLRDecay(BatchLRSchedule):
    """Decay learning rates polynomially to 0 over the training batches.

    The ``t``-th training batch (from 0) of a fit with ``T`` batches in all
    (``ceil(n_train / batch_size) * max_epochs``) runs with its learning
    rate scaled by ``(1 - t / T) ** power`` (composing with other
    schedulers, see :class:`~skanomaly._schedules.BatchLRSchedule`).

    Parameters
    ----------
    power : float, default=0.9
        The exponent (the authors' code: 0.9).
    optimizers : sequence of str, default=("optimizer", "optimizer_critic")
        Names of the net's optimizers to decay (without the trailing ``_``).
    """

    def __init__(self, power=POLY_POWER, optimizers=("optimizer", "optimizer_critic")):
        super().__init__(optimizers=optimizers)
        self.power = power

    def factor(self, t):
        """The scale ``(1 - t / T) ** power`` of batch ``t``."""
        return max(0.0, 1.0 - t / self.total_steps_) ** self.power


# --------------------------------------------------------------------------- the net
@fill_doc(parameters=SECOND_NETWORK_PARAMETERS_DOC.format(name="critic", default="IGDCritics"))
class IGDNet(UnsupervisedNet):
    """skorch net for IGD: EM over the Gaussian SVDD, critic/auto-encoder alternation.

    ``module_`` is an :class:`~skanomaly.igd.torch_model.IGDModel`,
    ``critic_`` an :class:`~skanomaly.igd.torch_model.IGDCritics` (built
    from ``critic`` and the ``critic__*`` parameters), ``optimizer_`` trains
    the auto-encoders and ``optimizer_critic_`` (``optimizer_critic__*``;
    learning rate ``lr`` unless set) the critics.  All are skorch
    components, reachable through :meth:`set_params`.

    Each training batch of images gives one step per branch: the global
    branch on the images, the local branch on all their 32 x 32 patches in
    shuffled chunks of ``batch_size`` patches.  A step is the M-step of the
    paper: the auto-encoder minimises eq. 6 + eq. 7, then the critic eq. 5 on
    the same interpolants (detached).  ``on_grad_computed`` is notified after
    each backward pass, before its optimizer steps: with the auto-encoders'
    parameters, then with the critics', so that callbacks such as
    :class:`skorch.callbacks.GradientNormClipping` act on both.
    ``train_loss`` is the auto-encoder loss summed over branches;
    ``critic_loss`` is recorded per batch.  Validation computes ``l_m + l_h``
    (the criterion) in the same chunks of patches.

    Default callbacks (after skorch's own):

    ``"e_step"``
        :class:`GaussianEStep`; set its parameters with
        ``callbacks__e_step__interval`` and ``callbacks__e_step__kappa``.
    ``"lr_schedule"``
        :class:`PolynomialLRDecay` of both optimizers.  A callback in
        ``callbacks`` named ``"lr_schedule"`` replaces it (``None`` keeps the
        learning rates constant).

    [parameters]
    **kwargs
        Further :class:`skorch.NeuralNet` parameters.
    """

    def __init__(self, module, criterion, *args, critic=IGDCritics, optimizer_critic=torch.optim.Adam, **kwargs):
        self.critic = critic
        self.optimizer_critic = optimizer_critic
        super().__init__(module, criterion, *args, **kwargs)

    # --------------------------------------------------------------- components
    def initialize_module(self):
        super().initialize_module()
        self.critic_ = self.initialized_instance(self.critic, self.get_params_for("critic"))
        return self

    def initialize_optimizer(self, *args, **kwargs):
        # Each optimizer sees only its own module: the auto-encoder's loss
        # back-propagates into the critic, which must not follow it.
        groups, kw = self.get_params_for_optimizer("optimizer", self.module_.named_parameters())
        kw.setdefault("lr", self.lr)
        self.optimizer_ = self.optimizer(*groups, **kw)
        groups, kw = self.get_params_for_optimizer("optimizer_critic", self.critic_.named_parameters())
        kw.setdefault("lr", self.lr)
        self.optimizer_critic_ = self.optimizer_critic(*groups, **kw)
        return self

    def get_default_callbacks(self):
        replaced = {item[0] for item in self.callbacks or () if isinstance(item, (tuple, list))}
        own = [("e_step", GaussianEStep())]
        if "lr_schedule" not in replaced:
            own.append(("lr_schedule", PolynomialLRDecay()))
        return [*super().get_default_callbacks(), *own]

    # ------------------------------------------------------------------- chunks
    def branch_chunks(self, name, xb, shuffle=False):
        """The pieces a branch's inputs are processed in.

        Parameters
        ----------
        name : {"global", "local"}
        xb : Tensor
            The branch's inputs for a batch of images (``branch_input``).
        shuffle : bool, default=False
            Shuffle the local branch's patches first (training).

        Returns
        -------
        chunks : sequence of Tensor
            The images at once for the global branch; the patches in chunks
            of ``batch_size`` for the local one.
        """
        if name != "local":
            return (xb,)
        if shuffle:
            xb = xb[torch.randperm(len(xb), device=xb.device)]
        return xb.split(max(1, int(self.batch_size)))

    # ---------------------------------------------------------------- the steps
    def _notify_grads(self, module, batch):
        self.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(module.named_parameters()),
            batch=batch,
            training=True,
        )

    def _branch_step(self, name, branch, x, batch=None):
        """One M-step on a batch of branch inputs: auto-encoder, then critic."""
        critic = self.critic_.critic(name)
        z, x_hat = branch(x)
        reconstruction = self.criterion_.reconstruction(name, x, x_hat)
        alpha = sample_alpha(len(x), device=x.device, dtype=x.dtype)
        x_alpha = branch.decoder(interpolate_latents(z, alpha))
        d_alpha = critic(x_alpha)
        h_loss = gsvdd_loss(z, branch.mu, branch.sigma2)
        loss = autoencoder_loss(reconstruction, d_alpha, self.criterion_.lam) + h_loss.mean()
        self.optimizer_.zero_grad(set_to_none=True)
        loss.backward()
        self._notify_grads(self.module_, batch)
        self.optimizer_.step()

        mix = CRITIC_GAMMA * x + (1.0 - CRITIC_GAMMA) * x_hat.detach()
        d_loss = critic_loss(critic(x_alpha.detach()), alpha, critic(mix))
        self.optimizer_critic_.zero_grad(set_to_none=True)
        d_loss.backward()
        self._notify_grads(self.critic_, batch)
        self.optimizer_critic_.step()
        return loss.detach(), d_loss.detach()

    def train_step(self, batch, **fit_params):
        self._set_training(True)
        x = to_device(unpack_data(batch)[0], self.device)
        module = self.module_
        total = x.new_zeros(())
        critic_total = x.new_zeros(())
        for name, branch in module.branches():
            chunks = self.branch_chunks(name, module.branch_input(name, x), shuffle=True)
            losses = [self._branch_step(name, branch, chunk, batch) for chunk in chunks]
            total = total + torch.stack([a for a, _ in losses]).mean()
            critic_total = critic_total + torch.stack([b for _, b in losses]).mean()
        self.history.record_batch("critic_loss", float(critic_total))
        return {"loss": total, "y_pred": None}

    def validation_step(self, batch, **fit_params):
        """The criterion (``l_m + l_h`` summed over branches) on held-out images.

        The local branch's patches go through the network in chunks of
        ``batch_size``, as in training, so validation needs no more memory;
        each chunk's mean is weighted by its share of the patches.
        """
        self._set_training(False)
        x = to_device(unpack_data(batch)[0], self.device)
        module = self.module_
        total = x.new_zeros(())
        with torch.no_grad():
            for name, branch in module.branches():
                xb = module.branch_input(name, x)
                for chunk in self.branch_chunks(name, xb):
                    z, x_hat = branch(chunk)
                    y_pred = {name: (chunk, z, x_hat, gsvdd_loss(z, branch.mu, branch.sigma2))}
                    total = total + self.get_loss(y_pred, None, X=chunk) * (len(chunk) / len(xb))
        return {"loss": total, "y_pred": None}


# ----------------------------------------------------------------------- distillation
class DistillationNet(UnsupervisedNet):
    """skorch net distilling one branch: ``module_`` the student, ``criterion_`` eq. 10.

    ``module_`` is a :class:`~skanomaly.igd.torch_model.DistillationStudent`
    and ``criterion_`` a :class:`~skanomaly.igd.losses.DistillationLoss`
    holding the frozen teacher.  Only the student's parameters are learnable
    (optimised, reported to ``on_grad_computed`` and checked for divergence).
    """

    def get_all_learnable_params(self):
        yield from self.module_.named_parameters()


class DistillationSamples(torch.utils.data.Dataset):
    """The inputs of the distillation steps, drawn in advance; item ``k`` is one input.

    Parameters
    ----------
    images : Tensor of shape (n, C, S, S) or WorkingSizeImages
        Training images in [0, 1]: a tensor, or a dataset whose ``image(i)``
        reads image ``i`` (a ``(C, S, S)`` tensor) when an input needs it.
    index : Tensor of int
        ``(m,)`` image indices (whole images), or ``(m, 3)`` rows of (image,
        top, left) pixel offsets of ``patch_size`` patches.
    patch_size : int or None, default=None
        Side of the patches; None for whole images.

    Notes
    -----
    Items are RGB (one channel repeated) float32 tensors, paired with a
    placeholder target as skorch expects.
    """

    def __init__(self, images, index, patch_size=None):
        self.images = images
        self.index = index
        self.patch_size = patch_size

    def __len__(self):
        return len(self.index)

    def _image(self, i):
        if isinstance(self.images, torch.Tensor):
            return self.images[i]
        return self.images.image(i)

    def __getitem__(self, k):
        if self.patch_size is None:
            x = self._image(int(self.index[k]))
        else:
            i, r, c = (int(v) for v in self.index[k])
            p = self.patch_size
            x = self._image(i)[:, r : r + p, c : c + p]
        if x.shape[0] == 1:
            x = x.expand(3, -1, -1)
        return x, torch.zeros(())


def _image_plan(n, iterations, batch_size):
    """Image indices of every distillation step: shuffled epochs, full batches.

    Each step takes the next ``min(batch_size, n)`` images of a random
    permutation; a new permutation starts when too few are left.
    """
    take = min(batch_size, n)
    index = torch.empty(iterations * take, dtype=torch.int64)
    order, cursor = torch.randperm(n), 0
    for it in range(iterations):
        if cursor + take > n:
            order, cursor = torch.randperm(n), 0
        index[it * take : (it + 1) * take] = order[cursor : cursor + take]
        cursor += take
    return index, take


def _patch_plan(n, iterations, batch_size, starts):
    """(image, top, left) of every distillation patch: uniform over images and grid positions."""
    starts = torch.as_tensor(starts)
    index = torch.empty(iterations, batch_size, 3, dtype=torch.int32)
    for it in range(iterations):
        index[it, :, 0] = torch.randint(n, (batch_size,))
        index[it, :, 1] = starts[torch.randint(len(starts), (batch_size,))]
        index[it, :, 2] = starts[torch.randint(len(starts), (batch_size,))]
    return index.view(-1, 3)


def distill(estimator, model, teacher, images, *, iterations, lr=KD_LR, weight_decay=KD_WEIGHT_DECAY):
    """Knowledge-distillation pre-training of each branch's encoder (eq. 10), then freeze it.

    Each of the ``iterations`` steps takes ``batch_size`` inputs: training
    images (shuffled, epoch after epoch) for the global branch, random
    32 x 32 grid patches of random training images for the local one.  The
    student's pooled features (through the branch's ``kd_head``) regress the
    teacher's with Adam (lr 1e-4, weight decay 1e-5, the paper's settings).
    Afterwards the encoder's convolutional part is frozen; its final linear
    projection to ``latent_dim`` trains with IGD.

    Each branch trains through a :class:`DistillationNet` built by
    :func:`~skanomaly._training.make_net` from the estimator's settings
    (device, ``verbose``: progress output, and the divergence guard) with
    one epoch of ``iterations`` batches; the estimator's ``callbacks`` are
    left out (they are meant for the IGD training: a validation-monitoring
    or checkpointing callback would fail or be overwritten here).  The
    inputs are drawn before the epoch starts, and the net's data loader
    draws its seed from a generator of its own, so torch's global random
    stream is consumed as by a plain training loop.

    Parameters
    ----------
    estimator : IGDDetector
        Supplies ``batch_size`` (inputs per step; at most ``n`` for the
        global branch), ``device_``, ``verbose`` and the rest of
        :func:`~skanomaly._training.make_net`'s settings.
    model : IGDModel
        Its branches' encoders are trained in place.
    teacher : nn.Module
        :class:`~skanomaly.igd.torch_model.TeacherFeatures`, on ``device``.
    images : Tensor of shape (n, C, S, S) or WorkingSizeImages
        Training images at the working size, in [0, 1], on the CPU (a
        dataset reads each one when a step needs it).
    iterations : int
        Steps per branch.
    lr : float, default=KD_LR
    weight_decay : float, default=KD_WEIGHT_DECAY

    Returns
    -------
    losses : dict
        Per branch, the mean distillation loss over the first and the last
        ``min(50, iterations // 2)`` steps (at least one): ``{name: (first, last)}``.
    """
    n = len(images)
    batch_size = int(estimator.batch_size)
    result = {}
    for name, branch in model.branches():
        if name == "global":
            index, per_step = _image_plan(n, iterations, batch_size)
            samples = DistillationSamples(images, index)
        else:
            # Earlier versions drew (and never used) a permutation here; drawing
            # it keeps the random stream, so a seed gives the same model.
            torch.randperm(n)
            starts = patch_starts(images.shape[-1], model.patch_size, model.patch_stride)
            index, per_step = _patch_plan(n, iterations, batch_size, starts), batch_size
            samples = DistillationSamples(images, index, model.patch_size)
        net = make_net(
            estimator,
            module=DistillationStudent(model, name),
            criterion=DistillationLoss(teacher),
            net_class=DistillationNet,
            lr=lr,
            max_epochs=1,
            batch_size=per_step,
            train_split=None,
            optimizer__weight_decay=weight_decay,
            iterator_train__shuffle=False,
            iterator_train__generator=torch.Generator(),
            training=False,
            desc=f"{type(estimator).__name__} distillation ({name})",
        )
        net.fit(samples)
        history = list(net.history[-1, "batches", :, "train_loss"])
        k = max(1, min(50, iterations // 2))
        result[name] = (sum(history[:k]) / k, sum(history[-k:]) / k)
        branch.freeze_backbone()
    return result
