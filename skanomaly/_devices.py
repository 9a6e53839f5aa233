"""Devices, seeding and float32 arithmetic of training and inference."""

from __future__ import annotations

import contextlib
import os

import torch

__all__ = ["SUPPORTED_DEVICE_TYPES", "float32_mode", "resolve_device", "runtime_device",
           "seeded"]


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

    On CUDA the block also runs under
    ``torch.use_deterministic_algorithms(True, warn_only=True)``: cuDNN's
    deterministic flag alone left SCADN's same-seed fits differing by 4e-3
    in score on an H100 (``benchmarks/gpu_check.py``), and 0 with it.  An
    operation that has no deterministic CUDA implementation warns instead
    of failing.  cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` for deterministic
    results; it is set to ``":4096:8"`` when unset (it only takes effect if
    no cuBLAS work ran in the process before).
    """
    devices = []
    dev = torch.device(device)
    if dev.type == "cuda":
        devices = [dev.index if dev.index is not None else torch.cuda.current_device()]
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    cudnn = torch.backends.cudnn
    saved = (cudnn.deterministic, cudnn.benchmark)
    saved_algorithms = (torch.are_deterministic_algorithms_enabled(),
                        torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        with torch.random.fork_rng(devices=devices):
            cudnn.deterministic, cudnn.benchmark = True, False
            if devices:
                torch.use_deterministic_algorithms(True, warn_only=True)
            torch.manual_seed(seed)
            yield
    finally:
        cudnn.deterministic, cudnn.benchmark = saved
        torch.use_deterministic_algorithms(saved_algorithms[0], warn_only=saved_algorithms[1])


@contextlib.contextmanager
def float32_mode(tf32=False):
    """Run a block in IEEE float32 (``tf32=False``) or TF32 (``tf32=True``) for
    cuDNN convolutions and CUDA matrix products.

    On Ampere and newer GPUs cuDNN convolutions default to TF32 (10-bit
    mantissa) arithmetic.  Measured on an H100 (``benchmarks/gpu_check.py``):
    a GPU-fitted IGDDetector scored on the GPU with TF32 differed from the
    same model scored on the CPU by up to 24 % of the map's range (0.03 at
    the 99.9th percentile; MS-SSIM divides by small local variances), and by
    5e-7 in score without TF32.  ``precision="float32"`` therefore means
    IEEE float32 at inference, and ``precision="tf32"`` (``tf32=True``)
    turns TF32 on for both, for speed: without TF32 the H100 scored SCADN at
    512 px several times slower.  Both flags are restored on exit; on the
    CPU they have no effect.
    """
    cudnn = torch.backends.cudnn
    matmul = torch.backends.cuda.matmul
    saved = (cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.allow_tf32 = bool(tf32)
        matmul.allow_tf32 = bool(tf32)
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = saved
