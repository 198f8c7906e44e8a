"""A taught model's file: the weights teaching changed, over a base model it names.

:func:`~napari_samrefine.teach.finetune.finetune` changes SAM's prompt
encoder and mask decoder, and with ``lora_rank`` the low-rank adaptors of the
image encoder's attention (:mod:`~napari_samrefine.models.lora`); without
them the image encoder, and so every embedding, stays the base model's. Its
file holds those tensors, the base model's identity
(:func:`base_identity`) and what teaching was (options, training images by
hash, validation numbers) as JSON text: a few megabytes, read with
``torch.load(weights_only=True)`` and checked key by key, written atomically.

:func:`apply_finetune` builds the taught model from a base model: a copy of the
base that shares its image encoder (no memory for a second one; with adaptors,
a copy of its modules over the same weights) with the file's weights in its
prompt encoder and mask decoder, the prompts it was taught with
and its measured defaults in its profile. ``load_sam(base, finetune=FILE)`` calls it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path

import torch
import xxhash

from napari_samrefine.io import atomic_path, load_weights_only
from napari_samrefine.models.lora import adapted_encoder, is_lora_weight
from napari_samrefine.models.profile import (
    PROMPT_KINDS,
    RefineDefaults,
    model_profile,
    set_model_profile,
)
from napari_samrefine.models.source import ModelSource, model_source, set_model_source

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "TAUGHT_PREFIXES",
    "FinetuneFile",
    "apply_finetune",
    "base_identity",
    "read_finetune_file",
    "taught_weights",
    "write_finetune_file",
]

FORMAT = "napari-samrefine/finetune"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 256 * 1024 * 1024
TAUGHT_PREFIXES = ("prompt_encoder.", "mask_decoder.")
"""The parts of a SAM model that teaching changes (in the image encoder, only adaptors)."""


def _is_taught(name: str) -> bool:
    return name.startswith(TAUGHT_PREFIXES) or is_lora_weight(name)

# metadata keys a file must hold, and their JSON types
_META_TYPES: dict[str, tuple[type, ...]] = {
    "base_model": (str,),
    "architecture": (str,),
    "base_identity": (str,),
    "prompts": (list,),
    "defaults": (dict,),
    "images": (list,),
    "options": (dict,),
    "validation": (dict,),
    "created": (str,),
    "package_version": (str,),
}


@dataclasses.dataclass(frozen=True)
class FinetuneFile:
    """What a taught model's file holds.

    Attributes
    ----------
    weights : dict of str to torch.Tensor
        The taught tensors, by their name in the model's ``state_dict``
        (under :data:`TAUGHT_PREFIXES`, and the image encoder's adaptors if taught).
    metadata : dict
        ``base_model`` (name), ``architecture``, ``base_identity``
        (:func:`base_identity` of the model it was taught from), ``prompts``
        (the prompt kinds it was taught with), ``defaults`` (fields of
        :class:`~napari_samrefine.models.profile.RefineDefaults`), ``images``
        (hashes of the training images and labels), ``options`` (teaching
        options), ``validation`` (numbers per epoch), ``created``,
        ``package_version``.
    """

    weights: dict
    metadata: dict


def base_identity(sam) -> str:
    """What a taught file must be applied to: the base model's checkpoint hash, or its weights'.

    A model that :func:`~napari_samrefine.models.loading.load_sam` read is
    named by its file's xxh128 (``"file:<hash>"``), whatever the file's path; a
    model built in code by a hash of all its weights (``"weights:<hash>"``).
    A taught model's identity is its base's.
    """
    source = model_source(sam)
    if source is not None and (source.base_xxh128 or source.xxh128):
        return f"file:{source.base_xxh128 or source.xxh128}"
    if getattr(sam, "taught_from", None):
        return sam.taught_from
    h = xxhash.xxh3_128()
    for name, t in sam.state_dict().items():
        values = t.detach().to("cpu").contiguous()
        h.update(f"{name}|{values.dtype}|{tuple(values.shape)}|".encode())
        h.update(values.numpy().tobytes())
    return f"weights:{h.hexdigest()}"


def taught_weights(sam) -> dict:
    """A copy of the tensors of ``sam`` that teaching changes, by ``state_dict`` name (CPU)."""
    return {k: v.detach().to("cpu").clone() for k, v in sam.state_dict().items() if _is_taught(k)}


def write_finetune_file(weights: dict, metadata: dict, path: str | os.PathLike) -> Path:
    """Write a taught model's file atomically (a partial file never exists at ``path``).

    Parameters
    ----------
    weights : dict of str to torch.Tensor
        As :func:`taught_weights` returns.
    metadata : dict
        The keys of :class:`FinetuneFile` ``metadata``; JSON-serialisable.
    path : str or path-like

    Returns
    -------
    pathlib.Path
    """
    missing = sorted(set(_META_TYPES) - set(metadata))
    if missing:
        raise ValueError(f"metadata lacks {missing}")
    bad = sorted(k for k in weights if not _is_taught(k))
    if bad:
        raise ValueError(f"only prompt-encoder, mask-decoder and adaptor weights are written, not {bad[:3]}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights": {k: v.detach().to("cpu").float().contiguous().clone() for k, v in weights.items()},
        "metadata": json.dumps({k: metadata[k] for k in _META_TYPES}, sort_keys=True),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _refuse(path, problem: str) -> ValueError:
    return ValueError(
        f"{path} is not a valid napari-samrefine taught-model file ({problem}). It may be "
        "damaged, tampered with, or another kind of file: teach the model again with "
        "finetune(...) or `napari-samrefine finetune`."
    )


def read_finetune_file(path: str | os.PathLike) -> FinetuneFile:
    """Read and check a taught model's file, safely (``torch.load(weights_only=True)``).

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not a taught-model file, is damaged or was tampered with.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No taught-model file at {path}.")
    data = load_weights_only(path, MAX_FILE_BYTES, lambda problem: _refuse(path, problem),
                             "more than any SAM decoder")
    expected = {"format", "format_version", "weights", "metadata"}
    if not isinstance(data, dict) or set(data) != expected:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise _refuse(path, f"unexpected content {keys}")
    if data["format"] != FORMAT:
        raise _refuse(path, f"format {data['format']!r}")
    if data["format_version"] != FORMAT_VERSION:
        raise _refuse(path, f"format version {data['format_version']!r}; this version reads {FORMAT_VERSION}")
    try:
        meta = json.loads(data["metadata"])
    except (TypeError, ValueError):
        raise _refuse(path, "its metadata is not JSON text") from None
    if not isinstance(meta, dict) or set(meta) != set(_META_TYPES):
        got = set(meta) if isinstance(meta, dict) else set()
        raise _refuse(path, f"metadata keys: unexpected {sorted(got - set(_META_TYPES))}, "
                            f"missing {sorted(set(_META_TYPES) - got)}")
    for key, types in _META_TYPES.items():
        if not isinstance(meta[key], types):
            raise _refuse(path, f"metadata {key!r} is a {type(meta[key]).__name__}")
    if not meta["prompts"] or any(p not in PROMPT_KINDS for p in meta["prompts"]):
        raise _refuse(path, f"prompts {meta['prompts']!r}")
    weights = data["weights"]
    if not isinstance(weights, dict) or not weights:
        raise _refuse(path, "no weights")
    for name, t in weights.items():
        if not isinstance(name, str) or not _is_taught(name):
            raise _refuse(path, f"weight {name!r} is not a prompt-encoder, mask-decoder or adaptor weight")
        if not isinstance(t, torch.Tensor) or t.dtype != torch.float32:
            raise _refuse(path, f"weight {name!r} is not a float32 tensor")
        if not torch.isfinite(t).all():
            raise _refuse(path, f"weight {name!r} holds NaN or infinite values")
    return FinetuneFile(weights=weights, metadata=meta)


def _digest(path: Path) -> str:
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _taught_defaults(base: RefineDefaults, chosen: dict) -> RefineDefaults:
    known = {f.name for f in dataclasses.fields(RefineDefaults)}
    values = {k: v for k, v in chosen.items() if k in known}
    if "object_size" in values and values["object_size"] is not None:
        values["object_size"] = tuple(float(v) for v in values["object_size"])
    return dataclasses.replace(base, **values)


def _lora_options(meta: dict) -> tuple[int, float]:
    """The adaptors' rank and scale a file's options name."""
    rank, scale = meta["options"].get("lora_rank"), meta["options"].get("lora_scale")
    if not isinstance(rank, int) or rank < 1 or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"The taught file holds image-encoder adaptors but its options give rank {rank!r} "
                         f"and scale {scale!r}; teach the model again.")
    return rank, float(scale)


def apply_finetune(sam, taught: FinetuneFile | str | os.PathLike, *, name: str | None = None):
    """The taught model: ``sam`` with a taught file's prompt-encoder, mask-decoder and adaptor weights.

    ``sam`` itself is not changed. The result shares ``sam``'s image encoder
    (same embeddings, no second copy in memory), or with the file's adaptors
    an adapted copy over the same weights (its own embeddings); its profile is ``sam``'s with
    the taught prompt kinds, single-mask output and the file's defaults; its
    source names the base and the file.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The base model the file was taught from.
    taught : FinetuneFile or path-like
        The file, or what :func:`read_finetune_file` read from it.
    name : str, optional
        The taught model's name (default: ``"<base>+<file name>"``).

    Raises
    ------
    ValueError
        When ``sam`` is not the model the file was taught from (the message
        names both), or the file's weights do not fit it.
    """
    path = None
    if not isinstance(taught, FinetuneFile):
        path = Path(taught)
        taught = read_finetune_file(path)
    meta = taught.metadata
    mine = base_identity(sam)
    if mine != meta["base_identity"]:
        source = model_source(sam)
        given = source.name if source is not None else "a model built in code"
        raise ValueError(
            f"This taught model was taught from {meta['base_model']!r} ({meta['base_identity']}); "
            f"the base model given is {given!r} ({mine}). Load it over its own base: "
            f"load_sam({meta['base_model']!r}, finetune=...)."
        )
    # a copy that shares the image encoder: deepcopy's memo maps it to itself
    out = copy.deepcopy(sam, memo={id(sam.image_encoder): sam.image_encoder})
    adaptors = {k for k in taught.weights if is_lora_weight(k)}
    if adaptors:
        out.image_encoder = adapted_encoder(sam.image_encoder, *_lora_options(meta))
    state = out.state_dict()
    wrong = [k for k, t in taught.weights.items() if k not in state or tuple(state[k].shape) != tuple(t.shape)]
    wrong += sorted({k for k in state if is_lora_weight(k)} - adaptors)
    if wrong:
        raise ValueError(f"The taught weights {wrong[:3]} do not fit the base model's layers.")
    device = next(out.mask_decoder.parameters()).device
    out.load_state_dict({k: t.to(device) for k, t in taught.weights.items()}, strict=False)
    out.eval()
    base_profile = model_profile(sam)
    prompts = tuple(p for p in PROMPT_KINDS if p in meta["prompts"])
    set_model_profile(out, dataclasses.replace(
        base_profile, prompts=prompts, multimask=False,
        note=f"{meta['base_model']} taught to refine ({', '.join(prompts)} prompts).",
        defaults=_taught_defaults(base_profile.defaults, meta["defaults"]),
    ))
    source = model_source(sam)
    label = name or f"{meta['base_model']}+{path.name if path is not None else 'taught'}"
    set_model_source(out, ModelSource(
        label, meta["architecture"],
        checkpoint=str(path.resolve()) if path is not None else None,
        xxh128=_digest(path) if path is not None else None,
        base_xxh128=(source.base_xxh128 or source.xxh128) if source is not None else None,
        base_name=meta["base_model"],
    ))
    if source is None or not source.xxh128:
        out.taught_from = mine  # a code-built base: its identity is kept for base_identity
    return out
