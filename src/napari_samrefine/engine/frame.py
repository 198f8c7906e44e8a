"""Geometry between the original image frame, SAM's padded input frame and the low-res frame.

SAM resizes an image so that its long side equals the encoder's input size
(1024 for the published models), pads it bottom/right to a square, and its mask
decoder works on a low-res grid (256 x 256 for the published models). Every
resize in this chain is a bilinear interpolation with ``align_corners=False``
and no antialiasing, which is a linear map applied separably to rows and
columns. :class:`SamFrame` keeps those maps as small matrices so that any
rectangle of the original frame can be mapped to or from the low-res frame
without building a full-size array (the memory of a per-object computation
then scales with the object's box, not with the image).

Each output row or column of such a map draws on a few consecutive inputs
only (2 for one bilinear resize, a few more for the chains above), so the maps
are built and applied as :class:`~napari_samrefine.engine.resize.Band` s: the
weights of each resize are computed directly and the chains are composed band
by band, so memory is O(H + W) whatever the image size (a 50 000 px side
included); a map is applied as a gather of its inputs and a weighted sum.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from napari_samrefine.engine.resize import Band, bilinear_band

__all__ = ["SamFrame", "Band", "resize_longest_side_shape"]


def resize_longest_side_shape(height: int, width: int, long_side: int) -> tuple[int, int]:
    """Return the (height, width) SAM resizes an image to (``ResizeLongestSide``).

    Parameters
    ----------
    height, width : int
        Original image size.
    long_side : int
        Target length of the longer side (the encoder's ``img_size``).

    Returns
    -------
    tuple of int
        The resized (height, width), rounded as segment-anything rounds them.
    """
    scale = long_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


@dataclass(frozen=True)
class SamFrame:
    """Sizes and resize maps of one image as SAM sees it.

    Parameters
    ----------
    original_size : tuple of int
        (H, W) of the image in its original frame.
    image_size : int
        SAM's square input size (``sam.image_encoder.img_size``; 1024 for the
        published models).
    lowres_size : int
        Side of the low-res mask frame (``sam.prompt_encoder.mask_input_size``;
        256 for the published models).
    embedding_size : int
        Side of the image embedding grid (64 for the published models).

    Notes
    -----
    Row maps are named ``*_rows`` and act on the first axis, column maps
    ``*_cols`` on the second; each is a (n_out, n_in) matrix, so a crop
    ``[y0:y1, x0:x1]`` of a mapped array is ``rows[y0:y1] @ X @ cols[x0:x1].T``.
    The maps are kept as bands (:meth:`band`, a few kB per 1000 px); the dense
    properties are built from them on first use and cached (``from_lowres_rows``
    of a 50 000 px image is 50 000 x 256 float32, 51 MB), so code that works per
    object uses the bands.
    """

    original_size: tuple[int, int]
    image_size: int = 1024
    lowres_size: int = 256
    embedding_size: int = 64
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_sam(cls, sam, original_size: tuple[int, int]) -> SamFrame:
        """Build the frame of an image of ``original_size`` for a loaded ``Sam`` model."""
        emb = sam.prompt_encoder.image_embedding_size
        return cls(
            original_size=(int(original_size[0]), int(original_size[1])),
            image_size=int(sam.image_encoder.img_size),
            lowres_size=int(sam.prompt_encoder.mask_input_size[0]),
            embedding_size=int(emb[0]),
        )

    @cached_property
    def input_size(self) -> tuple[int, int]:
        """(h', w'): the resized, unpadded image inside SAM's square frame."""
        return resize_longest_side_shape(*self.original_size, self.image_size)

    @cached_property
    def scale(self) -> tuple[float, float]:
        """(sy, sx) factors from original to SAM-frame coordinates (``apply_coords``)."""
        (h, w), (nh, nw) = self.original_size, self.input_size
        return nh / h, nw / w

    @cached_property
    def valid_embedding_size(self) -> tuple[int, int]:
        """Rows and columns of the embedding grid that cover image, not padding (rounded up)."""
        nh, nw = self.input_size
        g, s = self.embedding_size, self.image_size
        return int(np.ceil(nh * g / s)), int(np.ceil(nw * g / s))

    def _band(self, key: str) -> Band:
        axis = 0 if key.endswith("rows") else 1
        n_orig, n_in = self.original_size[axis], self.input_size[axis]
        s, low = self.image_size, self.lowres_size
        if key.startswith("to_lowres"):
            # original -> resized (n_in) -> pad to s (zeros) -> low-res
            pad = bilinear_band(s, low).take_cols(n_in)
            return pad @ bilinear_band(n_orig, n_in)
        if key.startswith("from_lowres"):
            # low-res -> s (SAM frame) -> crop n_in -> original
            up = bilinear_band(low, s).take_rows(n_in)
            return bilinear_band(n_in, n_orig) @ up
        if key.startswith("from_embedding"):
            gh, gw = self.valid_embedding_size
            return bilinear_band((gh, gw)[axis], n_orig)
        raise KeyError(key)

    def _matrix(self, key: str) -> np.ndarray:
        dense_key = f"dense_{key}"
        if dense_key not in self._cache:
            self._cache[dense_key] = self.band(key).to_dense()
        return self._cache[dense_key]

    @property
    def to_lowres_rows(self) -> np.ndarray:
        """(lowres, H) map of rows, original frame to low-res frame (pad rows weigh 0)."""
        return self._matrix("to_lowres_rows")

    @property
    def to_lowres_cols(self) -> np.ndarray:
        """(lowres, W) map of columns, original frame to low-res frame."""
        return self._matrix("to_lowres_cols")

    @property
    def from_lowres_rows(self) -> np.ndarray:
        """(H, lowres) map of rows, low-res frame to original frame (``postprocess_masks``)."""
        return self._matrix("from_lowres_rows")

    @property
    def from_lowres_cols(self) -> np.ndarray:
        """(W, lowres) map of columns, low-res frame to original frame."""
        return self._matrix("from_lowres_cols")

    @property
    def from_embedding_rows(self) -> np.ndarray:
        """(H, gh) map of rows, valid embedding grid to original frame."""
        return self._matrix("from_embedding_rows")

    @property
    def from_embedding_cols(self) -> np.ndarray:
        """(W, gw) map of columns, valid embedding grid to original frame."""
        return self._matrix("from_embedding_cols")

    def band(self, key: str) -> Band:
        """One of the frame's maps as a :class:`~napari_samrefine.engine.resize.Band` (cached).

        Parameters
        ----------
        key : str
            The map's property name: "to_lowres_rows", "to_lowres_cols",
            "from_lowres_rows", "from_lowres_cols", "from_embedding_rows" or
            "from_embedding_cols".
        """
        band_key = f"band_{key}"
        if band_key not in self._cache:
            self._cache[band_key] = self._band(key)
        return self._cache[band_key]

    def _nonzero(self, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Cached :meth:`Band.nonzero_range` of a map: rows used, first and last column."""
        nz_key = f"nonzero_{key}"
        if nz_key not in self._cache:
            self._cache[nz_key] = self.band(key).nonzero_range()
        return self._cache[nz_key]

    def _support(self, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """First and last low-res row (axis 0) or column each original row or column draws on."""
        _, first, last = self._nonzero("from_lowres_rows" if axis == 0 else "from_lowres_cols")
        return first, last

    def _reach(self, key: str, lo: int, hi: int) -> tuple[int, int] | None:
        """Half-open range of low-res rows (or columns) that original rows lo:hi weigh in."""
        used, first, last = self._nonzero(key)
        hit = np.flatnonzero(used & (first < hi) & (last >= lo))
        return None if hit.size == 0 else (int(hit[0]), int(hit[-1]) + 1)

    def lowres_extent(self, lowres_mask: np.ndarray) -> tuple[int, int, int, int] | None:
        """Half-open (y0, x0, y1, x1) of the original frame where logits can be positive.

        Upsampled logits are convex combinations of low-res logits, so an
        original-frame pixel can only be positive if one of the low-res pixels it
        draws on is. The returned box holds every such pixel; computing the
        upsampled logits inside it and thresholding at 0 therefore gives exactly
        the full-frame result.

        Parameters
        ----------
        lowres_mask : array (L, L) of bool
            Where the low-res logits are positive.

        Returns
        -------
        tuple of int or None
            None when no low-res logit is positive.
        """
        rows = np.flatnonzero(lowres_mask.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(lowres_mask.any(axis=0))
        out = []
        for axis, (lo, hi) in enumerate(((rows[0], rows[-1]), (cols[0], cols[-1]))):
            first, last = self._support(axis)
            hit = np.flatnonzero((last >= lo) & (first <= hi))
            if hit.size == 0:  # positive only in SAM's padding
                return None
            out.append((int(hit[0]), int(hit[-1]) + 1))
        (y0, y1), (x0, x1) = out
        return y0, x0, y1, x1

    def lowres_to_original(
        self, lowres: np.ndarray | torch.Tensor, box: tuple[int, int, int, int] | None = None
    ) -> np.ndarray:
        """Upsample low-res logits to the original frame, optionally only inside a box.

        Parameters
        ----------
        lowres : array (lowres, lowres)
            Logits in the low-res frame.
        box : (y0, x0, y1, x1), optional
            Half-open crop of the original frame to compute; the whole image if None.

        Returns
        -------
        numpy.ndarray
            float32 logits of shape (y1 - y0, x1 - x0), equal (to float rounding)
            to segment-anything's ``postprocess_masks`` cropped to the box.
        """
        box = box if box is not None else (0, 0, *self.original_size)
        low = lowres.detach().float().cpu().numpy() if torch.is_tensor(lowres) else lowres
        return self.lowres_crop_to_original(low, (0, 0), box)

    def lowres_support(self, box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        """Half-open (r0, c0, r1, c1) of the low-res pixels that an original-frame box draws on.

        Upsampled logits inside ``box`` depend only on this crop of the low-res
        logits (see :meth:`lowres_crop_to_original`).
        """
        y0, x0, y1, x1 = box
        (fr, lr), (fc, lc) = self._support(0), self._support(1)
        return (int(fr[y0:y1].min()), int(fc[x0:x1].min()),
                int(lr[y0:y1].max()) + 1, int(lc[x0:x1].max()) + 1)

    def lowres_crop_to_original(
        self, crop: np.ndarray, offset: tuple[int, int], box: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Upsample a crop of low-res logits to an original-frame box.

        Equal (to float rounding) to :meth:`lowres_to_original` of the full low-res
        logits when ``crop`` covers :meth:`lowres_support` of ``box``.

        Parameters
        ----------
        crop : array (h, w)
            Low-res logits at rows ``offset[0]:offset[0] + h`` and columns
            ``offset[1]:offset[1] + w``.
        offset : (int, int)
            Position of the crop in the low-res frame.
        box : (y0, x0, y1, x1)
            Half-open box of the original frame to compute.

        Returns
        -------
        numpy.ndarray
            float32 (y1 - y0, x1 - x0).
        """
        y0, x0, y1, x1 = box
        r0, c0 = offset
        crop = np.asarray(crop, dtype=np.float32)
        # columns first, on the small crop; then whole rows are gathered (contiguous copies)
        t = self.band("from_lowres_cols").apply(crop.T, (x0, x1), c0)
        t = np.ascontiguousarray(t.T)
        return self.band("from_lowres_rows").apply(t, (y0, y1), r0)

    def original_crop_to_lowres(
        self, crop: np.ndarray, offset: tuple[int, int] = (0, 0)
    ) -> tuple[np.ndarray, tuple[int, int]] | None:
        """Resize a crop of an original-frame map (zero outside the crop) to the low-res frame.

        Only the low-res rows and columns the crop weighs in are computed: the
        result equals resizing the full-frame array to the resized-image size,
        zero-padding it to SAM's square frame and resizing to the low-res frame,
        cropped to those rows and columns (to float rounding); everywhere else
        that full result is 0. A thin crop may weigh in no low-res row or column
        (SAM's resizes do not antialias).

        Parameters
        ----------
        crop : array (h, w)
            Values of the map inside the crop (bool or float).
        offset : (y0, x0)
            Position of the crop's top-left pixel in the original frame.

        Returns
        -------
        (values, (r0, c0)) or None
            float32 ``values`` at low-res rows ``r0:r0 + values.shape[0]`` and
            columns ``c0:c0 + values.shape[1]``; None when the crop reaches no
            low-res pixel.
        """
        y0, x0 = offset
        h, w = np.shape(crop)
        rows = self._reach("to_lowres_rows", y0, y0 + h)
        cols = self._reach("to_lowres_cols", x0, x0 + w)
        if rows is None or cols is None:
            return None
        t = self.band("to_lowres_rows").apply(np.asarray(crop), rows, y0)
        t = self.band("to_lowres_cols").apply(np.ascontiguousarray(t.T), cols, x0)
        return t.T, (rows[0], cols[0])
