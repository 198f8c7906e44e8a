"""Image embeddings: one encoder pass per image and model, cached in memory and on disk.

:func:`embed_image` runs the encoder; :class:`EmbeddingCache` keeps its results
under :func:`image_key` (image content, model weights), in memory and, for
:data:`default_cache`, on disk (:mod:`napari_samrefine.engine.disk_cache`), so
reopening an image in another session costs no encoder pass.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import xxhash
from segment_anything.utils.transforms import ResizeLongestSide

from napari_samrefine.engine.disk_cache import DiskEmbeddingCache
from napari_samrefine.engine.frame import SamFrame
from napari_samrefine.models.fast_encoder import fast_encoder_key
from napari_samrefine.models.info import weights_digest
from napari_samrefine.models.profile import model_profile

__all__ = [
    "EMBEDDING_VERSION",
    "EmbeddingCache",
    "ImageEmbedding",
    "default_cache",
    "embed_image",
    "encoder_input",
    "image_key",
    "model_key",
]


@dataclass(frozen=True)
class ImageEmbedding:
    """SAM's embedding of one image (or tile) and the frame it was computed in.

    Attributes
    ----------
    features : torch.Tensor
        (1, C, g, g) encoder output on the model's device.
    frame : SamFrame
        Geometry of the image in SAM's frames.
    key : str
        Content hash of the encoded uint8 image plus model identity, the cache
        key (:func:`image_key`).
    """

    features: torch.Tensor
    frame: SamFrame
    key: str

    def valid_features(self) -> np.ndarray:
        """float32 (C, gh, gw) features of the grid cells that cover the image, on the CPU."""
        gh, gw = self.frame.valid_embedding_size
        return self.features[0, :, :gh, :gw].detach().float().cpu().numpy()


EMBEDDING_VERSION = 1
"""Version of what :func:`embed_image` computes, part of every cache key: bump it when
the computation changes, so that embeddings stored on disk by older code are never read."""


def model_key(sam) -> str:
    """Identity of what a model's encoder computes, for cache keys: same key, same embedding.

    A hash of the encoder's weights and class, SAM's pixel mean and standard
    deviation, the input size, the normalisation of the model's profile, the
    fast-encoder options (:func:`~napari_samrefine.models.fast_encoder.fast_encoder_key`),
    the device, the torch version and :data:`EMBEDDING_VERSION`. Two models with
    the same weights share embeddings, in memory and on disk, across processes;
    a model whose weights change gets a new key.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam

    Returns
    -------
    str
        32 hexadecimal digits.
    """
    encoder = sam.image_encoder
    parts = (
        weights_digest(sam),
        f"{type(encoder).__module__}.{type(encoder).__qualname__}",
        str(int(encoder.img_size)),
        model_profile(sam).normalization,
        fast_encoder_key(sam),
        str(sam.device),
        torch.__version__,
        str(EMBEDDING_VERSION),
    )
    return xxhash.xxh3_128("|".join(parts).encode()).hexdigest()


def image_key(rgb: np.ndarray, sam) -> str:
    """Cache key of a uint8 RGB image for a model: ``<content hash>-<H>x<W>-<model_key>``.

    A tile is an image of its own (its pixels are hashed), so each tile has its key.
    """
    h = xxhash.xxh3_128(np.ascontiguousarray(rgb).data).hexdigest()
    return f"{h}-{rgb.shape[0]}x{rgb.shape[1]}-{model_key(sam)}"


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(
            f"embed_image expects a uint8 (H, W, 3) image, got {got}; "
            "convert it with napari_samrefine.to_sam_rgb(image)."
        )


def embed_image(sam, rgb: np.ndarray) -> ImageEmbedding:
    """Run SAM's image encoder once on a uint8 H x W x 3 image.

    Resizing is segment-anything's ``ResizeLongestSide``. Normalisation follows
    the model's profile (:func:`~napari_samrefine.models.profile.model_profile`):
    SAM's ``Sam.preprocess`` (pixel mean and standard deviation, then zero
    padding), so that the embedding equals ``SamPredictor.set_image``'s; or,
    for "minmax" models (LiteMedSAM), the resized image scaled to [0, 1] by its
    own minimum and maximum, then zero padding.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model (any size; sizes are read off it).
    rgb : numpy.ndarray
        uint8 (H, W, 3) image, e.g. from :func:`~napari_samrefine.engine.preprocess.to_sam_rgb`.

    Returns
    -------
    ImageEmbedding
    """
    _check_rgb(rgb)
    return _encode(sam, rgb, image_key(rgb, sam))


def encoder_input(sam, rgb: np.ndarray) -> tuple[torch.Tensor, SamFrame]:
    """What SAM's image encoder is given for a uint8 (H, W, 3) image, and the image's frame.

    The resizing and normalisation :func:`embed_image` describes; a (1, 3, S, S)
    float tensor on the model's device (S: the encoder's input size).
    """
    _check_rgb(rgb)
    frame = SamFrame.from_sam(sam, rgb.shape[:2])
    resized = ResizeLongestSide(frame.image_size).apply_image(rgb)
    x = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()[None].float()
    if model_profile(sam).normalization == "minmax":
        return minmax_padded(x, frame.image_size), frame
    return sam.preprocess(x), frame


@torch.no_grad()
def _encode(sam, rgb: np.ndarray, key: str) -> ImageEmbedding:
    x, frame = encoder_input(sam, rgb)
    return ImageEmbedding(features=sam.image_encoder(x), frame=frame, key=key)


def minmax_padded(x: torch.Tensor, size: int) -> torch.Tensor:
    """Scale a (1, 3, h, w) image to [0, 1] by its minimum and maximum; zero-pad to size x size."""
    lo, hi = x.min(), x.max()
    x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    return torch.nn.functional.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))


class EmbeddingCache:
    """A thread-safe cache of image embeddings keyed by image content and model: memory, then disk.

    :meth:`get` looks in memory (an LRU of ``max_items``), then on disk (if
    ``disk`` is set), and runs the encoder only when both miss, storing the
    result in both. Keys are :func:`image_key`: the image's content and size and
    the model's weights (:func:`model_key`), so an embedding on disk is found again
    by another process with the same model, and never given to another model.

    Parameters
    ----------
    max_items : int
        Embeddings kept in memory; the least recently used is dropped first. An
        embedding of the published models is 4 MB; the default holds the 25
        tiles of a 4096 x 4096 image.
    disk : DiskEmbeddingCache, path-like, bool or None
        The disk tier: a :class:`~napari_samrefine.engine.disk_cache.DiskEmbeddingCache`;
        a folder (one with the default size limit); True for the default folder
        (``embeddings`` in the cache folder that ``NAPARI_SAMREFINE_CACHE``
        moves, read at each use) and limit; None or False (the default) for
        memory only. :data:`default_cache`, the default of ``refine``, the
        widgets, the judge and the command line, uses True.

    Attributes
    ----------
    hits, disk_hits, misses : int
        Embeddings found in memory, found on disk, and computed (one encoder
        pass each).

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> cache = EmbeddingCache()  # memory only
    >>> rgb = np.zeros((64, 48, 3), np.uint8)
    >>> emb = cache.get(tiny_sam(), rgb)
    >>> emb is cache.get(tiny_sam(), rgb.copy()), cache.misses, cache.hits
    (True, 1, 1)
    """

    def __init__(
        self,
        max_items: int = 32,
        disk: DiskEmbeddingCache | str | os.PathLike | bool | None = None,
    ):
        self.max_items = max_items
        self.disk = _disk_tier(disk)
        self._items: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.disk_hits = 0
        self.misses = 0

    def get(self, sam, rgb: np.ndarray) -> ImageEmbedding:
        """The embedding of ``rgb`` for ``sam``: from memory, else from disk, else computed.

        Parameters
        ----------
        sam : segment_anything.modeling.Sam
        rgb : numpy.ndarray
            uint8 (H, W, 3) image (or tile).

        Returns
        -------
        ImageEmbedding
        """
        _check_rgb(rgb)
        key = image_key(rgb, sam)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        emb = self._from_disk(sam, key)
        computed = emb is None
        if computed:
            emb = _encode(sam, rgb, key)
            if self.disk is not None:
                self.disk.write(key, emb.features, emb.frame)
        with self._lock:
            self.misses += computed
            self._items[key] = emb
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return emb

    def _from_disk(self, sam, key: str) -> ImageEmbedding | None:
        """The embedding stored on disk under ``key`` (a disk hit), or None."""
        found = None if self.disk is None else self.disk.read(key, sam.device)
        if found is None:
            return None
        features, frame = found
        if frame != SamFrame.from_sam(sam, frame.original_size):
            return None  # cannot happen for a key of this model; a miss rather than a wrong frame
        with self._lock:
            self.disk_hits += 1
        return ImageEmbedding(features=features, frame=frame, key=key)

    def clear(self) -> None:
        """Drop every embedding held in memory; the disk tier's files stay.

        :func:`~napari_samrefine.engine.disk_cache.clear_embedding_cache` removes those.
        """
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


def _disk_tier(disk) -> DiskEmbeddingCache | None:
    if disk is None or disk is False:
        return None
    if disk is True:
        return DiskEmbeddingCache()
    if isinstance(disk, DiskEmbeddingCache):
        return disk
    if isinstance(disk, (str, os.PathLike)):
        return DiskEmbeddingCache(disk)
    raise TypeError(
        f"disk must be a DiskEmbeddingCache, a folder, True (the default folder) or None "
        f"(memory only), got {type(disk).__name__}."
    )


default_cache = EmbeddingCache(disk=True)
"""The cache that refinement, the widgets, the judge and the command line share by default:
32 embeddings in memory, and the disk tier in ``<cache folder>/embeddings`` (see
:mod:`napari_samrefine.engine.disk_cache`)."""
