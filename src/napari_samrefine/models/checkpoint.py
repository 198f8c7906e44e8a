"""Reading a SAM checkpoint file into a state dict, safely.

Files are read with ``torch.load(weights_only=True)``; the layouts of Meta's
SAM, micro-sam (``model_state``, ``sam.`` keys), MobileSAM and LiteMedSAM are
recognised by their first encoder tensor, so no model-type argument is needed.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
from collections.abc import Mapping
from pathlib import Path

import pooch
import torch

from napari_samrefine.models.state_dict import CheckpointError

__all__ = ["CHECKPOINT_SUFFIXES", "checkpoint_digest", "read_sam_state_dict"]

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".tar", ".pkl")
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


_DIGESTS: dict[tuple, str] = {}
_DIGESTS_LOCK = threading.Lock()
_DIGESTS_MAX = 256


def checkpoint_digest(path: str | os.PathLike) -> str:
    """xxh128 hex digest of a file, hashed once per process while the file is unchanged.

    The digest is kept under the file's path, size, modification and change
    times and inode: a file written again (other content) is hashed again.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    str
        32 hexadecimal digits, as ``pooch.file_hash(path, alg="xxh128")``.
    """
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    with _DIGESTS_LOCK:
        digest = _DIGESTS.get(key)
    if digest is None:
        digest = pooch.file_hash(str(path), alg="xxh128")
        with _DIGESTS_LOCK:
            if len(_DIGESTS) >= _DIGESTS_MAX:
                _DIGESTS.clear()
            _DIGESTS[key] = digest
    return digest
