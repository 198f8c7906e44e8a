"""SegGPT few-shot segmentation for JFS (the JFS paper's model; optional ``seggpt`` extra).

Uses transformers' ``SegGptForImageSegmentation``. In JFS the query image and
its mask are SegGPT's *prompt* and the support image is SegGPT's *input*:

* ``images`` = the support crop, ``prompt_images`` = the query crop,
  ``prompt_masks`` = the query mask as a class map with ``num_labels=1`` (the
  processor paints class 1 white; a bare 0/1 mask would be read as a nearly
  black, i.e. empty, prompt);
* one prompt per call with ``feature_ensemble=False``: E1 and E2 are never
  batched together, since feature ensembling would average the coarse and the
  refined prompt;
* the output's lower half is the prediction, un-normalised to [0, 1]: the mean
  over RGB is the foreground probability (class 1 is white, background black,
  so ``p > 0.5`` is exactly the processor's nearest-palette-colour rule),
  resized bilinearly to the support crop.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SegGptFSS", "load_seggpt"]

DEFAULT_MODEL = "BAAI/seggpt-vit-large"


def _offline() -> bool:
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:  # pragma: no cover - transformers always brings huggingface_hub
        pass
    flags = (os.environ.get(v, "") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def load_seggpt(
    model: str | os.PathLike = DEFAULT_MODEL, *, device: str = "cpu", local_files_only=None
):
    """Load a SegGPT model and its image processor, offline-safe.

    Parameters
    ----------
    model : str or path
        A local folder written by ``save_pretrained`` (always works offline) or a
        Hugging Face hub id.
    device : str
        Torch device for the model.
    local_files_only : bool, optional
        For a hub id: only use the local Hugging Face cache. By default the cache
        is tried first and a download is attempted only when the hub is not
        declared offline (``HF_HUB_OFFLINE=1``).

    Returns
    -------
    (model, processor)
        ``SegGptForImageSegmentation`` in eval mode and ``SegGptImageProcessor``.

    Raises
    ------
    ImportError
        When transformers is missing (install ``napari-samrefine[seggpt]``).
    OSError
        When a hub id is neither cached nor downloadable, with the way out.
    """
    try:
        from transformers import SegGptForImageSegmentation, SegGptImageProcessor
    except ImportError as err:
        raise ImportError(
            "The SegGPT backend needs transformers: pip install 'napari-samrefine[seggpt]' "
            "(or pip install 'transformers>=4.40')."
        ) from err
    path = Path(os.fspath(model)).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise OSError(
                f"{path} is not a SegGPT model folder (no config.json): pass the folder "
                "written by save_pretrained, or a Hugging Face hub id."
            )
        source, tries = str(path), [True]
    else:
        source = str(model)
        if local_files_only is None:
            tries = [True] if _offline() else [True, False]
        else:
            tries = [bool(local_files_only)]
    error = None
    for local_only in tries:
        try:
            net = SegGptForImageSegmentation.from_pretrained(source, local_files_only=local_only)
            processor = SegGptImageProcessor.from_pretrained(source, local_files_only=local_only)
            return net.to(device).eval(), processor
        except OSError as err:
            error = err
    how = (
        "could not be downloaded"
        if False in tries
        else "downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True)"
    )
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    raise OSError(
        f"SegGPT model {source!r} is not in the local Hugging Face cache and {how} "
        f"({first_line}). Pass the path of a folder written by save_pretrained instead: on a "
        f"machine with internet run SegGptForImageSegmentation.from_pretrained({source!r})"
        f".save_pretrained(FOLDER) and SegGptImageProcessor.from_pretrained({source!r})"
        ".save_pretrained(FOLDER), then copy FOLDER here."
    ) from error


class SegGptFSS:
    """Few-shot segmentation with SegGPT (Wang et al. 2023), as in the JFS paper.

    Parameters
    ----------
    model : str, path, or (model, processor)
        What :func:`load_seggpt` loads, or an already loaded pair.
    device : str
        Torch device when loading.
    local_files_only : bool, optional
        See :func:`load_seggpt`.
    """

    def __init__(self, model=DEFAULT_MODEL, *, device: str = "cpu", local_files_only=None):
        if isinstance(model, tuple):
            self.model, self.processor = model
        else:
            self.model, self.processor = load_seggpt(
                model, device=device, local_files_only=local_files_only
            )

    def prepare(
        self, query_image: np.ndarray, query_mask: np.ndarray, support_image: np.ndarray
    ) -> dict:
        """The processor's tensors: support as ``images``, query as ``prompt_images``, mask with num_labels=1."""
        mask = np.asarray(query_mask, dtype=bool).astype(np.int64)
        return self.processor(
            images=np.asarray(support_image),
            prompt_images=np.asarray(query_image),
            prompt_masks=mask,
            num_labels=1,
            return_tensors="pt",
        )

    @torch.no_grad()
    def predict(
        self, query_image: np.ndarray, query_mask: np.ndarray, support_image: np.ndarray
    ) -> np.ndarray:
        """Foreground probability over ``support_image`` (see the module doc)."""
        inputs = self.prepare(query_image, query_mask, support_image)
        device = next(self.model.parameters()).device
        inputs = {name: t.to(device) for name, t in inputs.items()}
        out = self.model(**inputs, feature_ensemble=False, embedding_type="instance")
        pred = out.pred_masks[:, :, out.pred_masks.shape[2] // 2 :, :]
        std = torch.tensor(self.processor.image_std, device=device).view(1, 3, 1, 1)
        mean = torch.tensor(self.processor.image_mean, device=device).view(1, 3, 1, 1)
        prob = (pred * std + mean).clamp(0.0, 1.0).mean(dim=1, keepdim=True)
        size = tuple(np.asarray(support_image).shape[:2])
        prob = F.interpolate(prob.float(), size=size, mode="bilinear", align_corners=False)
        return prob[0, 0].clamp(0.0, 1.0).cpu().numpy()
