"""The SAMRefiner++ IoU adaptor: a LoRA on SAM's IoU head, and the base model it belongs to.

An adaptor (SPEC section 4) is two small LoRA tensors for the last linear layer
of SAM's IoU head plus metadata naming the base model (:func:`model_identity`).
:meth:`IoUAdaptor.applied` plugs it into a model for the duration of a ``with``
block; :meth:`IoUAdaptor.check_model` refuses a model it was not trained on.
Training is in :mod:`.adaption`, the file format in :mod:`.adaptor_file`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import xxhash

from napari_samrefine import __version__
from napari_samrefine.adaption.adaptor_file import read_adaptor_file, write_adaptor_file
from napari_samrefine.adaption.candidates import iou_head_last_layer
from napari_samrefine.adaption.lora import LoRALinear, init_lora
from napari_samrefine.models.info import model_info

__all__ = [
    "IoUAdaptor",
    "AdaptorMismatchError",
    "load_iou_adaptor",
    "model_identity",
    "decoder_fingerprint",
]


class AdaptorMismatchError(ValueError):
    """The IoU adaptor was trained for another SAM model than the one given."""


def decoder_fingerprint(sam) -> str:
    """xxh128 of SAM's mask decoder weights (names, shapes and float32 values).

    The IoU head's input depends on the whole decoder, so the whole decoder
    (about 4 M parameters for every published SAM) identifies what an adaptor
    was trained on.
    """
    h = xxhash.xxh3_128()
    for name, tensor in sorted(sam.mask_decoder.state_dict().items()):
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def model_identity(sam, fingerprint: bool = True) -> dict[str, str]:
    """What an adaptor records about its base model.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        A model; its :func:`~napari_samrefine.models.info.model_info` supplies
        the registry name and checkpoint hash (models from
        :func:`napari_samrefine.load_sam`) and the architecture.
    fingerprint : bool
        Compute the decoder fingerprint (else it is an empty string).

    Returns
    -------
    dict
        ``base_model``, ``architecture``, ``checkpoint_hash`` (empty strings when
        unknown) and ``fingerprint`` (:func:`decoder_fingerprint`).
    """
    iou_head_last_layer(sam)  # refuses a model with an adaptor plugged in
    info = model_info(sam)
    return {
        "base_model": info.name or "",
        "architecture": info.arch,
        "checkpoint_hash": info.xxh128 or "",
        "fingerprint": decoder_fingerprint(sam) if fingerprint else "",
    }


def _describe(meta: dict) -> str:
    name = meta.get("base_model") or "an unnamed model"
    parts = [repr(name) if meta.get("base_model") else name]
    if meta.get("architecture"):
        parts.append(f"({meta['architecture']})")
    if meta.get("checkpoint_hash"):
        parts.append(f"checkpoint {meta['checkpoint_hash'][:16]}")
    if meta.get("fingerprint"):
        parts.append(f"decoder fingerprint {meta['fingerprint'][:12]}")
    return " ".join(parts)


class IoUAdaptor:
    """A trained SAMRefiner++ LoRA for the last linear layer of SAM's IoU head.

    Parameters
    ----------
    down : torch.Tensor
        (rank, in_features) LoRA down-projection.
    up : torch.Tensor
        (out_features, rank) LoRA up-projection.
    metadata : dict
        Base model identity (:func:`model_identity`), rank, scale, creation date,
        package version and the training summary.

    Notes
    -----
    Use :func:`adapt_iou_head` to train one and :func:`load_iou_adaptor` to load
    a saved one; pass it to ``napari_samrefine.refine(..., iou_adaptor=adaptor)``.
    """

    def __init__(self, down: torch.Tensor, up: torch.Tensor, metadata: dict):
        self.down = down.detach().to("cpu", torch.float32).contiguous()
        self.up = up.detach().to("cpu", torch.float32).contiguous()
        self.metadata = dict(metadata)

    @classmethod
    def untrained(cls, sam, rank: int = 4, seed: int = 0) -> IoUAdaptor:
        """A fresh adaptor for ``sam`` (zero up-projection: selection as without adaptor)."""
        layer = iou_head_last_layer(sam)
        down, up = init_lora(
            layer.in_features, layer.out_features, rank, torch.Generator().manual_seed(seed)
        )
        meta = {
            **model_identity(sam),
            "rank": int(rank),
            "scale": 1.0,
            "in_features": int(layer.in_features),
            "out_features": int(layer.out_features),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "package_version": __version__,
            "n_images": 0,
            "n_objects": 0,
            "n_steps": 0,
            "epochs": 0,
            "seed": int(seed),
            "margin": 0.02,
            "loss_before": float("nan"),
            "loss_after": float("nan"),
            "train_top1_before": float("nan"),
            "train_top1_after": float("nan"),
            "loss_history": [],
        }
        return cls(down, up, meta)

    @property
    def rank(self) -> int:
        """Rank of the LoRA update."""
        return int(self.down.shape[0])

    @property
    def scale(self) -> float:
        """Factor of the LoRA update (alpha / rank)."""
        return float(self.metadata.get("scale", 1.0))

    def __repr__(self) -> str:
        m = self.metadata
        return (
            f"IoUAdaptor(rank={self.rank}, base={_describe(m)}, objects={m.get('n_objects')}, "
            f"steps={m.get('n_steps')}, created={m.get('created')!r})"
        )

    # -- model matching ---------------------------------------------------------------

    def check_model(self, sam) -> None:
        """Refuse a model that is not the one this adaptor was trained on.

        The checkpoint hash decides when both the adaptor and the model know
        theirs (models from :func:`napari_samrefine.load_sam`); otherwise the
        fingerprint of the mask decoder's weights must match.

        Raises
        ------
        AdaptorMismatchError
            With both models' identities and what to do.
        """
        layer = iou_head_last_layer(sam)
        if (layer.in_features, layer.out_features) != (self.down.shape[1], self.up.shape[0]):
            raise AdaptorMismatchError(
                f"This IoU adaptor fits an IoU head of {self.down.shape[1]} -> {self.up.shape[0]} "
                f"features, but the model's is {layer.in_features} -> {layer.out_features}: it "
                f"was trained for {_describe(self.metadata)}. Load that model, or train a new "
                "adaptor for this one with adapt_iou_head."
            )
        mine = self.metadata
        theirs = model_identity(sam, fingerprint=False)
        if mine.get("checkpoint_hash") and theirs["checkpoint_hash"]:
            same = mine["checkpoint_hash"] == theirs["checkpoint_hash"]
        else:
            theirs["fingerprint"] = decoder_fingerprint(sam)
            same = mine.get("fingerprint") == theirs["fingerprint"]
        if not same:
            raise AdaptorMismatchError(
                f"This IoU adaptor was trained for {_describe(mine)}, but the model given is "
                f"{_describe(theirs)}. An adaptor only fits the exact model it was trained on: "
                "load that model, or train a new adaptor for this one with adapt_iou_head."
            )

    @contextlib.contextmanager
    def applied(self, sam) -> Iterator[LoRALinear]:
        """Plug the adaptor into ``sam``'s IoU head for the duration of a ``with`` block.

        The last linear layer of ``sam.mask_decoder.iou_prediction_head`` is
        wrapped by a :class:`~napari_samrefine.adaption.lora.LoRALinear`; on exit,
        even after an exception, the original module object is put back.

        Parameters
        ----------
        sam : segment_anything.modeling.Sam
            The model the adaptor was trained for (checked first).

        Yields
        ------
        LoRALinear
            The wrapping layer.

        Raises
        ------
        AdaptorMismatchError
            If ``sam`` is another model than the adaptor's base model.
        RuntimeError
            If an adaptor is already applied to ``sam``.

        Examples
        --------
        >>> with adaptor.applied(sam):  # doctest: +SKIP
        ...     masks, scores = sam.mask_decoder(...)
        """
        self.check_model(sam)
        layers = sam.mask_decoder.iou_prediction_head.layers
        original = layers[-1]
        wrapped = LoRALinear(original, self.down, self.up, self.scale)
        layers[-1] = wrapped
        try:
            yield wrapped
        finally:
            layers[-1] = original

    def save(self, path: str | os.PathLike) -> Path:
        """Write the adaptor (LoRA tensors and metadata only; a few kilobytes).

        Parameters
        ----------
        path : str or path-like
            Target file, conventionally ``*.pt``; its folder is created if needed.
            The adaptor is written to a uniquely named temporary file next to it
            and moved over it in one step, so a failed save leaves an existing
            file as it was, and saves running at the same time never collide.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        return write_adaptor_file(self.down, self.up, self.metadata, path)


def load_iou_adaptor(path: str | os.PathLike) -> IoUAdaptor:
    """Load an IoU adaptor saved by :meth:`IoUAdaptor.save`, safely.

    The file is read with ``torch.load(weights_only=True)``, so no arbitrary
    object is ever unpickled; its structure, tensor shapes and metadata types are
    then checked, and anything unexpected is refused
    (:func:`~napari_samrefine.adaption.adaptor_file.read_adaptor_file`).

    Parameters
    ----------
    path : str or path-like
        The adaptor file.

    Returns
    -------
    IoUAdaptor

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If the file is not an adaptor, is damaged or was tampered with.
    """
    return IoUAdaptor(*read_adaptor_file(path))
