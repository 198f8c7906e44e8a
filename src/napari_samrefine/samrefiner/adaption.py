"""SAMRefiner++ IoU adaption: teach SAM's IoU head to pick the candidate that fits the data.

SAM proposes three candidate masks per prompt and keeps the one its IoU head
rates best. IoU adaption (SPEC section 4) trains a rank-4 LoRA on the last
linear layer of that head, with no annotations: on the user's own images, each
coarse object's tight box is decoded, the candidate that overlaps the coarse
mask most is the positive, and a pairwise margin ranking loss pushes its score
above the other two. Everything else in SAM stays frozen, so the masks SAM
generates never change; only the choice among the three does.

The adaptor is a small object (the two LoRA tensors plus metadata naming the
base model). :meth:`IoUAdaptor.applied` plugs it into a model for the duration
of a ``with`` block; :meth:`IoUAdaptor.save` / :func:`load_iou_adaptor` store it
as a file of a few kilobytes that is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch
import xxhash

from .._progress import ProgressCallback, report
from ..io import atomic_path
from ..sam.embedding import EmbeddingCache, default_cache
from .candidates import collect_candidates, iou_head_last_layer, plan_planes
from .lora import LoRALinear, init_lora, lora_delta
from .selection import SelectionReport, evaluate_selection, top1_correct

__all__ = [
    "IoUAdaptor",
    "AdaptorMismatchError",
    "adapt_iou_head",
    "load_iou_adaptor",
    "evaluate_selection",
    "SelectionReport",
    "ranking_loss",
    "model_identity",
]

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


class AdaptorMismatchError(ValueError):
    """The IoU adaptor was trained for another SAM model than the one given."""


# ----------------------------------------------------------------------------- identity


def _info_value(info, *keys) -> str:
    for key in keys:
        value = info.get(key) if isinstance(info, dict) else getattr(info, key, None)
        if value:
            return str(value)
    return ""


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
        A model; ``sam.samrefine_info`` (set by :func:`napari_samrefine.load_sam`)
        supplies the registry name, architecture and checkpoint hash when present.
    fingerprint : bool
        Compute the decoder fingerprint (else it is an empty string).

    Returns
    -------
    dict
        ``base_model``, ``architecture``, ``checkpoint_hash`` (empty strings when
        unknown) and ``fingerprint`` (:func:`decoder_fingerprint`).
    """
    iou_head_last_layer(sam)  # refuses a model with an adaptor plugged in
    info = getattr(sam, "samrefine_info", None) or {}
    return {
        "base_model": _info_value(info, "name", "model_name", "base_model"),
        "architecture": _info_value(info, "arch", "architecture", "model_type"),
        "checkpoint_hash": _info_value(
            info, "checkpoint_hash", "hash", "known_hash", "xxh128", "sha256"
        ),
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


# ----------------------------------------------------------------------------- adaptor


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
            "package_version": _package_version(),
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
        wrapped by a :class:`~napari_samrefine.samrefiner.lora.LoRALinear`; on exit,
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

    # -- file ---------------------------------------------------------------------------

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
        path = Path(path)
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "lora_down": self.down.clone(),
            "lora_up": self.up.clone(),
            "metadata": _plain_metadata(self.metadata),
        }
        # a unique temporary file next to ``path``, moved over it in one step: two
        # saves at once (threads, processes) never share or mix a file
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
        return path


def _package_version() -> str:
    from .. import __version__

    return str(__version__)


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


def load_iou_adaptor(path: str | os.PathLike) -> IoUAdaptor:
    """Load an IoU adaptor saved by :meth:`IoUAdaptor.save`, safely.

    The file is read with ``torch.load(weights_only=True)``, so no arbitrary
    object is ever unpickled; its structure, tensor shapes and metadata types are
    then checked, and anything unexpected is refused.

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
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No IoU adaptor file at {path}.")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise _refuse(path, f"{size} bytes, far more than an adaptor's few kilobytes")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # whatever the safe loader refuses is refused
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _refuse(path, f"it cannot be read safely: {first}") from None
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
    return IoUAdaptor(down, up, meta)


# ----------------------------------------------------------------------------- training


def ranking_loss(scores: torch.Tensor, targets: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Pairwise margin ranking loss of SAMRefiner++ (SPEC section 4), per sample.

    For each sample the positive is the candidate with the highest target
    (ties: the lowest index); the loss is the sum over the negatives of
    ``max(0, margin - (s_pos - s_neg))``. A candidate whose target equals the
    positive's is not a negative (no order to learn between equal candidates).

    Parameters
    ----------
    scores : torch.Tensor
        (N, 3) predicted IoU of the candidates.
    targets : torch.Tensor
        (N, 3) IoU of the candidates with the coarse mask.
    margin : float
        m (0.02).

    Returns
    -------
    torch.Tensor
        (N,) losses.
    """
    targets = targets.to(scores.device, scores.dtype)
    pos = torch.argmax(targets, dim=1, keepdim=True)
    s_pos = torch.gather(scores, 1, pos)
    t_pos = torch.gather(targets, 1, pos)
    negative = targets < t_pos
    hinge = torch.clamp(margin - (s_pos - scores), min=0.0)
    return (hinge * negative).sum(dim=1)


def adapt_iou_head(
    sam,
    images,
    labels,
    *,
    rank: int = 4,
    margin: float = 0.02,
    lr: float = 0.01,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    accumulate: int = 5,
    milestones: tuple[int, ...] = (60, 100),
    epochs: int = 1,
    seed: int = 0,
    channel: int | str | None = None,
    channel_axis: int | None = None,
    percentiles: tuple[float, float] = (1.0, 99.8),
    batch_size: int = 32,
    device: str = "auto",
    embedding_cache: EmbeddingCache | None = default_cache,
    progress: ProgressCallback | None = None,
) -> IoUAdaptor:
    """Train a SAMRefiner++ IoU adaptor on coarse masks alone (self-boosted, no annotations).

    Every object of every image is one sample. Its tight box is decoded once
    (multimask output); the IoU of each of the three candidates with the coarse
    mask is the target, and the best candidate is the positive. A rank-``rank``
    LoRA on the last linear layer of the IoU head (zero-initialised
    up-projection; everything else frozen) is trained with the pairwise margin
    ranking loss by SGD, the gradient accumulated over ``accumulate`` samples,
    the learning rate divided by 10 after the optimizer steps in ``milestones``.

    The model is not modified: its parameters, gradients and modules are left
    exactly as they were.

    Parameters
    ----------
    sam : Sam, str or path
        The model to adapt, a registry name or a checkpoint file.
    images, labels : array or list of arrays
        The user's images and their coarse labels: one pair, or lists of pairs
        (2D, or stacks whose planes are used one by one).
    rank : int
        LoRA rank (4).
    margin : float
        Ranking margin m (0.02).
    lr, momentum, weight_decay : float
        SGD settings (0.01, 0.9, 5e-4).
    accumulate : int
        Samples per optimizer step (5). A last, shorter group also makes a step.
    milestones : tuple of int
        Optimizer steps after which the learning rate is multiplied by 0.1.
    epochs : int
        Passes over the samples (1).
    seed : int
        Seed of the LoRA initialisation and of the sample order (0).
    channel, channel_axis, percentiles
        How images become SAM's RGB input (as in :func:`napari_samrefine.refine`).
    batch_size : int
        Objects per decoder call (bounds memory only).
    device : str
        Device for a model loaded by name.
    embedding_cache : EmbeddingCache or None
        Where image embeddings are kept (one encoder pass per image).
    progress : callable, optional
        ``progress(done, total, message)``; raise
        :class:`napari_samrefine.Cancelled` in it to stop (nothing is changed).

    Returns
    -------
    IoUAdaptor
        With ``metadata`` holding the base model's identity and the training
        summary (loss and top-1 agreement with the coarse-IoU argmax before and
        after, on the training objects); ``save(path)`` writes it.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_samrefine import adapt_iou_head
    >>> from napari_samrefine.testing import tiny_sam
    >>> image = np.zeros((64, 64), np.uint8); image[10:30, 10:30] = 200
    >>> coarse = np.zeros((64, 64), np.uint16); coarse[12:28, 8:31] = 1
    >>> adaptor = adapt_iou_head(tiny_sam(), image, coarse)
    >>> adaptor.rank, adaptor.metadata["n_objects"]
    (4, 1)
    """
    from .refiner import resolve_sam

    if rank < 1 or accumulate < 1 or epochs < 1:
        raise ValueError(
            f"rank, accumulate and epochs must be at least 1 (got {rank}, {accumulate}, {epochs})."
        )
    sam = resolve_sam(sam, device)
    planes = plan_planes(images, labels, channel_axis=channel_axis)
    n_objects = sum(len(p.objects) for p in planes)
    if n_objects == 0:
        raise ValueError("The labels hold no object: IoU adaption needs coarse masks to learn from.")
    steps_per_epoch = math.ceil(n_objects / accumulate)
    total = len(planes) + steps_per_epoch * epochs
    done = 0
    report(progress, done, total, "decoding objects")

    def step(message: str) -> None:
        nonlocal done
        done += 1
        report(progress, done, total, message)

    adaptor = IoUAdaptor.untrained(sam, rank=rank, seed=seed)
    cands = collect_candidates(
        sam, planes, prompts="box", channel=channel, percentiles=percentiles,
        batch_size=batch_size, embedding_cache=embedding_cache, step=step,
    )
    dev = cands.hidden.device
    targets = torch.as_tensor(cands.coarse_iou, dtype=torch.float32, device=dev)
    down = torch.nn.Parameter(adaptor.down.to(dev))
    up = torch.nn.Parameter(adaptor.up.to(dev))
    scale = adaptor.scale
    optimizer = torch.optim.SGD([down, up], lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma=0.1)
    generator = torch.Generator().manual_seed(seed)  # sample order

    with torch.no_grad():
        base_scores = torch.as_tensor(cands.scores, device=dev)
        loss_before = ranking_loss(base_scores, targets, margin).mean().item()
    history = []
    n_steps = 0
    for epoch in range(epochs):
        order = torch.randperm(n_objects, generator=generator).to(dev)
        for start in range(0, n_objects, accumulate):
            idx = order[start : start + accumulate]
            optimizer.zero_grad(set_to_none=True)
            scores = base_scores[idx] + lora_delta(cands.hidden[idx], down, up, scale)[:, 1:]
            losses = ranking_loss(scores, targets[idx], margin)
            (losses.sum() / accumulate).backward()
            optimizer.step()
            scheduler.step()
            n_steps += 1
            history.append(float(losses.mean().item()))
            step(f"epoch {epoch + 1}/{epochs}, step {n_steps}: loss {history[-1]:.4f}")

    with torch.no_grad():
        adapted = base_scores + lora_delta(cands.hidden, down, up, scale)[:, 1:]
        loss_after = ranking_loss(adapted, targets, margin).mean().item()
        top1_before = float(top1_correct(cands.scores, cands.coarse_iou).mean())
        top1_after = float(top1_correct(adapted.cpu().numpy(), cands.coarse_iou).mean())
    meta = dict(adaptor.metadata)
    meta.update(
        n_images=len({p.pair for p in planes}),
        n_objects=n_objects,
        n_steps=n_steps,
        epochs=epochs,
        margin=float(margin),
        loss_before=loss_before,
        loss_after=loss_after,
        train_top1_before=top1_before,
        train_top1_after=top1_after,
        loss_history=history,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return IoUAdaptor(down.detach(), up.detach(), meta)
