"""Where a network runs: the torch device a request names (``auto``, ``cpu``, ``cuda[:N]``, ``mps``)."""
from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when available, else Apple's MPS, else CPU; ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or ``"mps"`` otherwise. A device this machine lacks is a
    ``ValueError`` that says which devices it has (never a traceback from torch)."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    have = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if _mps_available() else [])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps "
                         f"(this machine has: {', '.join(have)})") from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine "
                             f"(it has: {', '.join(have)}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} requested but Apple's MPS is not available on this machine "
                         f"(it has: {', '.join(have)}); use --device cpu or auto")
    return dev
