"""Torch devices: which ones work here, and checking a user's choice against them."""

from __future__ import annotations

import torch

__all__ = ["available_devices", "resolve_device"]


def available_devices() -> list[str]:
    """Torch devices usable here, in the order ``device="auto"`` prefers them.

    Returns
    -------
    list of str
        ``"cuda:0"``, ``"cuda:1"``, ... if CUDA is available, then ``"mps"`` if
        Apple's Metal backend is, then ``"cpu"`` (always last).
    """
    devices = []
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return [*devices, "cpu"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Check a device request against the machine.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` (the first of :func:`available_devices`), or e.g. ``"cpu"``,
        ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    Returns
    -------
    torch.device

    Raises
    ------
    ValueError
        If the device is malformed or not available; the message lists those available.
    """
    available = available_devices()
    if isinstance(device, str) and device == "auto":
        return torch.device(available[0])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(
            f"{device!r} is not a device name. Use 'auto' or one of: {', '.join(available)}."
        ) from err
    if dev.type == "cuda":
        ok = torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count()
    else:
        ok = dev.type in ("cpu", "mps") and dev.type in available or str(dev) in available
    if not ok:
        raise ValueError(
            f"Device {str(dev)!r} is not available on this machine. Available: "
            f"{', '.join(available)} (or 'auto')."
        )
    return dev
