"""Image embeddings: one encoder pass per image, cached while the image is unchanged."""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
import xxhash
from segment_anything.utils.transforms import ResizeLongestSide

from .fast_encoder import fast_encoder_key
from .frame import SamFrame
from .profile import model_profile

__all__ = ["ImageEmbedding", "embed_image", "EmbeddingCache", "default_cache"]


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
        Content hash of the encoded uint8 image (plus model identity), the cache key.
    """

    features: torch.Tensor
    frame: SamFrame
    key: str

    def valid_features(self) -> np.ndarray:
        """float32 (C, gh, gw) features of the grid cells that cover the image, on the CPU."""
        gh, gw = self.frame.valid_embedding_size
        return self.features[0, :, :gh, :gw].detach().float().cpu().numpy()


def _model_id(sam) -> str:
    # a token stored on the model, so that a new model that reuses a freed id() never
    # receives a stale embedding
    uid = getattr(sam, "_samrefine_uid", None)
    if uid is None:
        uid = uuid.uuid4().hex
        sam._samrefine_uid = uid
    return uid


def image_key(rgb: np.ndarray, sam) -> str:
    """Cache key of a uint8 RGB image for a model: content hash, shape, model and encoder path."""
    h = xxhash.xxh3_128(np.ascontiguousarray(rgb).tobytes()).hexdigest()
    return f"{h}-{rgb.shape}-{_model_id(sam)}-{fast_encoder_key(sam)}"


@torch.no_grad()
def embed_image(sam, rgb: np.ndarray) -> ImageEmbedding:
    """Run SAM's image encoder once on a uint8 H x W x 3 image.

    Resizing is segment-anything's ``ResizeLongestSide``. Normalisation follows
    the model's profile (:func:`~napari_samrefine.sam.profile.model_profile`):
    SAM's ``Sam.preprocess`` (pixel mean and standard deviation, then zero
    padding), so that the embedding equals ``SamPredictor.set_image``'s; or,
    for "minmax" models (LiteMedSAM), the resized image scaled to [0, 1] by its
    own minimum and maximum, then zero padding.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model (any size; sizes are read off it).
    rgb : numpy.ndarray
        uint8 (H, W, 3) image, e.g. from :func:`~napari_samrefine.sam.preprocess.to_sam_rgb`.

    Returns
    -------
    ImageEmbedding
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"embed_image expects a uint8 (H, W, 3) image, got {rgb.dtype} {rgb.shape}")
    frame = SamFrame.from_sam(sam, rgb.shape[:2])
    resized = ResizeLongestSide(frame.image_size).apply_image(rgb)
    x = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()[None].float()
    if model_profile(sam).normalization == "minmax":
        x = minmax_padded(x, frame.image_size)
    else:
        x = sam.preprocess(x)
    features = sam.image_encoder(x)
    return ImageEmbedding(features=features, frame=frame, key=image_key(rgb, sam))


def minmax_padded(x: torch.Tensor, size: int) -> torch.Tensor:
    """Scale a (1, 3, h, w) image to [0, 1] by its minimum and maximum; zero-pad to size x size."""
    lo, hi = x.min(), x.max()
    x = (x - lo) / torch.clamp(hi - lo, min=1e-8)
    return torch.nn.functional.pad(x, (0, size - x.shape[-1], 0, size - x.shape[-2]))


class EmbeddingCache:
    """A small, thread-safe LRU cache of image embeddings keyed by image content and model.

    Parameters
    ----------
    max_items : int
        Embeddings kept; the least recently used is dropped first. An embedding
        of the published models is 4 MB; the default holds the 25 tiles of a
        4096 x 4096 image.
    """

    def __init__(self, max_items: int = 32):
        self.max_items = max_items
        self._items: OrderedDict[str, ImageEmbedding] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, sam, rgb: np.ndarray) -> ImageEmbedding:
        """Return the embedding of ``rgb`` for ``sam``, computing it only on a miss."""
        key = image_key(rgb, sam)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
        emb = embed_image(sam, rgb)
        with self._lock:
            self.misses += 1
            self._items[key] = emb
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return emb

    def clear(self) -> None:
        """Drop every cached embedding."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


default_cache = EmbeddingCache()
