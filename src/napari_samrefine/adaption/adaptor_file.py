"""The IoU adaptor's file: a few kilobytes read with ``torch.load(weights_only=True)``.

Everything in a file is checked on load (keys, metadata types, tensor shapes and
values); anything unexpected is refused with a message that says how to make a
good file. Writes are atomic (:func:`napari_samrefine.io.atomic_path`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from napari_samrefine.io import atomic_path, load_weights_only

__all__ = ["read_adaptor_file", "write_adaptor_file", "FORMAT", "FORMAT_VERSION"]

FORMAT = "napari-samrefine/iou-adaptor"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 16 * 1024 * 1024

# metadata keys and the types a file may hold for them (checked on load)
_META_TYPES: dict[str, tuple[type, ...]] = {
    "base_model": (str,),
    "architecture": (str,),
    "checkpoint_hash": (str,),
    "fingerprint": (str,),
    "rank": (int,),
    "scale": (float,),
    "in_features": (int,),
    "out_features": (int,),
    "created": (str,),
    "package_version": (str,),
    "n_images": (int,),
    "n_objects": (int,),
    "n_steps": (int,),
    "epochs": (int,),
    "seed": (int,),
    "margin": (float,),
    "loss_before": (float,),
    "loss_after": (float,),
    "train_top1_before": (float,),
    "train_top1_after": (float,),
    "loss_history": (list,),
}


def write_adaptor_file(
    down: torch.Tensor, up: torch.Tensor, metadata: dict, path: str | os.PathLike
) -> Path:
    """Write an adaptor's LoRA tensors and metadata to ``path`` atomically.

    See :meth:`~napari_samrefine.adaption.adaptor.IoUAdaptor.save`.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "lora_down": down.clone(),
        "lora_up": up.clone(),
        "metadata": _plain_metadata(metadata),
    }
    # a unique temporary file next to ``path``, moved over it in one step: two
    # saves at once (threads, processes) never share or mix a file
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _plain_metadata(meta: dict) -> dict:
    """Metadata as the plain types ``torch.load(weights_only=True)`` accepts."""
    out = {}
    for key, types in _META_TYPES.items():
        value = meta.get(key)
        if types == (list,):
            out[key] = [float(v) for v in (value or [])]
        elif types == (int,):
            out[key] = int(value or 0)
        elif types == (float,):
            out[key] = float("nan") if value is None else float(value)
        else:
            out[key] = "" if value is None else str(value)
    return out


def _refuse(path, problem: str) -> ValueError:
    return ValueError(
        f"{path} is not a valid napari-samrefine IoU adaptor ({problem}). It may be damaged, "
        "tampered with, or another kind of file: train a new adaptor with adapt_iou_head "
        "(or `napari-samrefine adapt`) and save it with adaptor.save(path)."
    )


def read_adaptor_file(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Read and check an adaptor file written by :func:`write_adaptor_file`, safely.

    The file is read with ``torch.load(weights_only=True)``, so no arbitrary
    object is ever unpickled; its structure, tensor shapes and metadata types are
    then checked, and anything unexpected is refused.

    Parameters
    ----------
    path : str or path-like
        The adaptor file.

    Returns
    -------
    down, up : torch.Tensor
        The LoRA tensors.
    metadata : dict

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not an adaptor, is damaged or was tampered with.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No IoU adaptor file at {path}.")
    data = load_weights_only(path, MAX_FILE_BYTES, lambda problem: _refuse(path, problem),
                             "far more than an adaptor's few kilobytes")
    expected = {"format", "format_version", "lora_down", "lora_up", "metadata"}
    if not isinstance(data, dict) or set(data) != expected:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise _refuse(path, f"unexpected content {keys}")
    if data["format"] != FORMAT:
        raise _refuse(path, f"format {data['format']!r}")
    if data["format_version"] != FORMAT_VERSION:
        raise _refuse(
            path, f"format version {data['format_version']!r}; this version reads {FORMAT_VERSION}"
        )
    meta = data["metadata"]
    if not isinstance(meta, dict) or set(meta) != set(_META_TYPES):
        extra = sorted(set(meta) - set(_META_TYPES)) if isinstance(meta, dict) else []
        missing = sorted(set(_META_TYPES) - set(meta)) if isinstance(meta, dict) else []
        raise _refuse(path, f"metadata keys: unexpected {extra}, missing {missing}")
    for key, types in _META_TYPES.items():
        value = meta[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise _refuse(path, f"metadata {key!r} is a {type(value).__name__}")
        if types == (list,) and not all(isinstance(v, float) for v in value):
            raise _refuse(path, f"metadata {key!r} holds non-numbers")
    down, up = data["lora_down"], data["lora_up"]
    rank, n_in, n_out = meta["rank"], meta["in_features"], meta["out_features"]
    for name, t, shape in (("lora_down", down, (rank, n_in)), ("lora_up", up, (n_out, rank))):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            raise _refuse(path, f"{name} is not a float32 tensor")
        if tuple(t.shape) != shape:
            raise _refuse(path, f"{name} has shape {tuple(t.shape)}, metadata says {shape}")
        if not torch.isfinite(t).all():
            raise _refuse(path, f"{name} holds NaN or infinite values")
    if rank < 1 or not math.isfinite(meta["scale"]):
        raise _refuse(path, f"rank {rank}, scale {meta['scale']}")
    if not meta["fingerprint"]:
        raise _refuse(path, "no base-model fingerprint")
    return down, up, meta


