"""Load a SAM checkpoint onto a device, its architecture read off the weights.

:func:`load_sam` takes a registry name (downloaded and hash-checked by
:mod:`~napari_samrefine.sam.registry`, or found inside an installed package) or
the path of a local checkpoint of any file name. The file is read with
``torch.load(weights_only=True)``; the architecture (ViT or TinyViT encoder,
image size, decoder ...) is inferred from tensor shapes by
:func:`~napari_samrefine.sam.architecture.infer_sam_config`, so Meta's
ViT-B/L/H, micro-sam's fine-tuned models, MobileSAM, LiteMedSAM and small test
models all load through the same code, without a model-type argument. The
loaded model carries its :class:`~napari_samrefine.sam.profile.ModelProfile`.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import pooch
import torch
from segment_anything.modeling import Sam

from .architecture import CheckpointError, build_sam, infer_sam_config
from .profile import BOX_ONLY_MINMAX_PROFILE, SAM_PROFILE, ModelProfile
from .registry import (
    ModelEntry,
    fetch_checkpoint,
    find_model_by_hash,
    get_model,
    list_models,
)

__all__ = [
    "CheckpointError",
    "available_devices",
    "load_sam",
    "read_sam_state_dict",
    "resolve_device",
]

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar", ".pkl")
# the first tensor of a ViT (SAM, micro-sam) and of a TinyViT (MobileSAM, LiteMedSAM) encoder
_ENCODER_KEYS = ("image_encoder.patch_embed.proj.weight", "image_encoder.patch_embed.seq.0.c.weight")


def _torch_load(path: Path, weights_only: bool):
    return torch.load(path, map_location="cpu", weights_only=weights_only)


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return CheckpointError(
        f"Cannot read {path} as a PyTorch checkpoint: the file is truncated, corrupted or "
        f"not a checkpoint ({first[:200]}). Download or copy it again."
    )


def _extract_state_dict(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a SAM state dict.")
    for key in ("model_state", "state_dict", "model"):  # micro-sam, lightning, generic wrappers
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, Mapping):
            obj = inner
            break
    state = {}
    for key, value in obj.items():
        if not (isinstance(key, str) and isinstance(value, torch.Tensor)):
            continue
        for prefix in ("module.", "sam."):  # DistributedDataParallel, micro-sam's trainer
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value
    if not any(key in state for key in _ENCODER_KEYS):
        sample = ", ".join(list(state)[:4]) or "no tensors"
        raise CheckpointError(
            f"{path} is not a SAM checkpoint: it has no image encoder ({' or '.join(_ENCODER_KEYS)}; "
            f"found {sample}). Pass a segment-anything, micro-sam, MobileSAM or LiteMedSAM checkpoint."
        )
    return state


def read_sam_state_dict(
    path: str | os.PathLike, *, trusted: bool = False, allow_unsafe_pickle: bool = False
) -> dict[str, torch.Tensor]:
    """Read the SAM weights of a checkpoint file, safely.

    The file is read with ``torch.load(weights_only=True)``. Only if that refuses
    the file because it holds other Python objects (a training config, ...) is it
    unpickled without that guard, and only when the file is ``trusted`` (its hash
    is in the registry) or the user opted in with ``allow_unsafe_pickle``.

    Supported layouts: a plain ``Sam`` state dict (Meta); a dict with
    ``model_state`` (micro-sam), ``state_dict`` or ``model``; keys may carry
    ``module.`` and/or ``sam.`` prefixes, which are stripped; non-tensor entries
    are ignored.

    Parameters
    ----------
    path : path-like
        The checkpoint.
    trusted : bool
        The file's hash matched a registry entry.
    allow_unsafe_pickle : bool
        Allow unpickling arbitrary objects from an untrusted file.

    Returns
    -------
    dict of str to torch.Tensor
        On the CPU, keys as in ``Sam.state_dict()``.

    Raises
    ------
    CheckpointError
        For a truncated or corrupted file, an untrusted file that needs unsafe
        unpickling, or a file without SAM weights.
    """
    path = Path(path)
    try:
        obj = _torch_load(path, weights_only=True)
    except Exception as err:
        message = str(err)
        if not (isinstance(err, pickle.UnpicklingError) and "Unsupported global" in message):
            raise _unreadable(path, err) from err
        if not (trusted or allow_unsafe_pickle):
            found = sorted(set(re.findall(r"GLOBAL (\S+) was not an allowed global", message)))
            raise CheckpointError(
                f"{path} holds Python objects besides tensors ({', '.join(found) or 'unknown'}), "
                "which the safe loader torch.load(weights_only=True) refuses: unpickling them can "
                "run arbitrary code. The file's hash matches no registered model. If you trust "
                "its source, pass allow_unsafe_pickle=True (CLI: --allow-unsafe-pickle); or "
                "re-save its weights as a plain state dict with torch.save."
            ) from err
        try:
            obj = _torch_load(path, weights_only=False)
        except Exception as err2:
            raise _unreadable(path, err2) from err2
    return _extract_state_dict(obj, path)


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


def _looks_like_path(model: str) -> bool:
    return "/" in model or "\\" in model or model.lower().endswith(_CHECKPOINT_SUFFIXES)


def _existing_file(path: str | os.PathLike) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"Checkpoint file {str(p)!r} does not exist.")
    if not p.is_file():
        raise FileNotFoundError(f"Checkpoint {str(p)!r} is a folder, not a file.")
    return p.resolve()


def load_sam(
    model: str | os.PathLike = "vit_b_lm",
    *,
    device: str | torch.device = "auto",
    checkpoint: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    allow_unsafe_pickle: bool = False,
    progressbar: bool = True,
    profile: ModelProfile | None = None,
) -> Sam:
    """Load a SAM model from the registry or from a local checkpoint.

    Parameters
    ----------
    model : str or path-like
        A registry name (see :func:`~napari_samrefine.sam.registry.list_models`),
        downloaded on first use into the cache folder and checked against its
        xxh128 hash; or the path of a local checkpoint, whatever its file name.
        A string that is a registry name means the registry entry.
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU) or an available device, see
        :func:`available_devices`.
    checkpoint : path-like, optional
        A local file to use instead of downloading ``model`` (which must then be
        a registry name): its architecture must be the entry's.
    cache_dir : path-like, optional
        Download folder; default ``$NAPARI_SAMREFINE_CACHE`` or the user's cache.
    allow_unsafe_pickle : bool
        Let a file whose hash is not in the registry be unpickled beyond tensors
        when the safe loader refuses it. Only for files from a source you trust.
    progressbar : bool
        Show a download progress bar.
    profile : ModelProfile, optional
        Override the model's profile (normalisation, prompt kinds, IoU head).
        Default: the registry entry's for a registered model or a file whose
        hash is registered; LiteMedSAM's for an unregistered LiteMedSAM-layout
        file; SAM's otherwise.

    Returns
    -------
    segment_anything.modeling.Sam
        In evaluation mode on the device, with a ``samrefine_info`` dict
        attribute: ``name`` (registry name, or the file name for an unregistered
        file), ``arch`` (``vit_b``/``vit_l``/``vit_h``/``vit_t``/``lite_medsam``/
        ``custom``), ``checkpoint`` (absolute path) and ``xxh128`` (the file's
        hash); and a ``samrefine_profile`` attribute (see
        :func:`~napari_samrefine.sam.profile.model_profile`).

    Raises
    ------
    ValueError
        For an unknown model name or an unavailable device.
    ModuleNotFoundError
        For a TinyViT model when MobileSAM's encoder code is not installed
        (the message names the ``tinyvit`` extra).
    FileNotFoundError
        For a checkpoint path that does not exist.
    ~napari_samrefine.sam.registry.ModelDownloadError
        When the download fails or does not match the registry's hash.
    CheckpointError
        For a truncated, corrupted, non-SAM or unsafe file, or a file whose
        architecture is not the registry entry's.

    Examples
    --------
    >>> sam = load_sam("vit_b_lm")  # doctest: +SKIP
    >>> sam = load_sam("/data/models/sam_vit_b_01ec64.pth", device="cpu")  # doctest: +SKIP
    >>> sam.samrefine_info["arch"]  # doctest: +SKIP
    'vit_b'
    """
    dev = resolve_device(device)
    entry: ModelEntry | None = None
    digest: str | None = None
    if checkpoint is not None:
        if not (isinstance(model, str) and model in list_models()):
            raise ValueError(
                f"checkpoint= needs model to be a registry name (the expected model), got {model!r}; "
                "to load a file, pass its path as model alone."
            )
        entry = get_model(model)
        path = _existing_file(checkpoint)
    elif isinstance(model, str) and model in list_models():
        entry = get_model(model)
        path = fetch_checkpoint(model, cache_dir=cache_dir, progressbar=progressbar).resolve()
        digest = entry.xxh128  # verified: pooch's xxh128, or a packaged file's SHA-256
    elif isinstance(model, os.PathLike) or (isinstance(model, str) and _looks_like_path(model)):
        path = _existing_file(model)
    elif isinstance(model, str) and Path(model).expanduser().is_file():
        path = _existing_file(model)
    else:
        raise ValueError(
            f"Unknown model {model!r}: neither a registered name nor an existing file. "
            f"Registered models: {', '.join(list_models())}. A local checkpoint file also works: "
            "load_sam('/path/to/sam_vit_b_01ec64.pth')."
        )

    if digest is None:
        digest = pooch.file_hash(str(path), alg="xxh128")
    match = find_model_by_hash(digest)
    state = read_sam_state_dict(
        path, trusted=match is not None, allow_unsafe_pickle=allow_unsafe_pickle
    )
    config = infer_sam_config(state)
    expected = entry or match
    if expected is not None and config.arch != expected.arch:
        raise CheckpointError(
            f"{path} holds a {config.arch} SAM ({type(config).__name__}, input "
            f"{config.image_size} px), but model {expected.name!r} is a {expected.arch}. "
            f"Pass the right file, or pass the file alone to load it as it is."
        )
    sam = build_sam(config, state).to(dev).eval()
    if profile is None:
        if expected is not None:
            profile = expected.profile
        else:
            profile = BOX_ONLY_MINMAX_PROFILE if config.arch == "lite_medsam" else SAM_PROFILE
    sam.samrefine_profile = profile
    name = match.name if match is not None else path.name
    sam.samrefine_info = {
        "name": name,
        "arch": config.arch,
        "checkpoint": str(path),
        "xxh128": digest,
    }
    return sam
