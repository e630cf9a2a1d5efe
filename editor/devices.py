"""Which device to run on: ``--device`` checked against this torch and machine before any model loads."""

from __future__ import annotations

from .errors import ModelLoadError


def default_device() -> str:
    """cuda when this torch sees a GPU, else cpu."""
    import torch  # heavy: not on the CLI's start-up path

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None = None) -> str:
    """The device to run on: ``device`` checked against this torch and machine, else :func:`default_device`.

    Every entry point that takes ``--device`` resolves it here, before any model is loaded, so that an unknown
    name (``tpu``) or a device this torch cannot use (``cuda`` on a CPU-only build) is one line naming the fix
    instead of an error from deep inside torch."""
    import torch  # heavy: not on the CLI's start-up path

    if device is None or not str(device).strip():
        return default_device()
    name = str(device).strip()
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ModelLoadError(f"unknown device {name!r}; use cpu, cuda or cuda:N") from None
    if dev.type == "cpu":
        return name
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this torch is built without CUDA" if torch.version.cuda is None
                   else "no CUDA GPU is visible (driver or CUDA_VISIBLE_DEVICES)")
            raise ModelLoadError(f"device {name!r} is not available: {why}; use --device cpu, or install a CUDA "
                                 "build of torch on a machine with an NVIDIA GPU")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(f"device {name!r} does not exist: this machine has {count} CUDA GPU(s) "
                                 f"(cuda:0 … cuda:{count - 1})")
        return name
    if dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ModelLoadError(f"device {name!r} is not available on this machine; use --device cpu")
        return name
    raise ModelLoadError(f"device {name!r} is not supported by p2pz; use cpu or cuda")
