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

import importlib.util
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


def _in_cache(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds the model's config (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id: not in the cache
        return False


def _hub_problem(repo_id: str, timeout: float) -> str | None:
    """Why ``repo_id`` cannot be downloaded now (unreachable hub, no such model), else None.

    One request with a short timeout and no retries, so that an offline machine
    fails in seconds instead of retrying for half a minute.
    """
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import HfHubHTTPError, HFValidationError, RepositoryNotFoundError

    try:
        HfApi().model_info(repo_id, timeout=timeout)
    except HFValidationError:
        return "it is neither a folder here nor a valid hub id"
    except RepositoryNotFoundError:
        return f"the Hugging Face hub has no model {repo_id!r} (or it is private)"
    except HfHubHTTPError:  # reachable (e.g. gated, needs a token): the download says more
        return None
    except Exception as err:  # network errors of requests or httpx, timeouts, invalid ids
        return f"the Hugging Face hub ({constants.ENDPOINT}) cannot be reached ({type(err).__name__})"
    return None


def load_seggpt(
    model: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str = "cpu",
    local_files_only: bool | None = None,
    timeout: float = 5.0,
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
        declared offline (``HF_HUB_OFFLINE=1``) and answers within ``timeout``.
    timeout : float
        Seconds to wait for the hub before a download (default 5).

    Returns
    -------
    (model, processor)
        ``SegGptForImageSegmentation`` in eval mode and ``SegGptImageProcessor``.

    Raises
    ------
    ImportError
        When transformers is missing (install ``napari-samrefine[seggpt]``).
    OSError
        When a hub id is neither cached nor downloadable: at once (within
        ``timeout``), in one sentence that names the way out.
    """
    need = (
        "The SegGPT backend needs transformers: pip install 'napari-samrefine[seggpt]' "
        "(or pip install 'transformers>=4.40')."
    )
    if importlib.util.find_spec("transformers") is None:  # before the (slow) model checks
        raise ImportError(need)
    path = Path(os.fspath(model)).expanduser()
    source, local_only = str(model), True
    if path.exists():
        if not (path / "config.json").is_file():
            raise OSError(
                f"{path} is not a SegGPT model folder (no config.json): pass the folder "
                "written by save_pretrained, or a Hugging Face hub id."
            )
        source = str(path)
    elif not _in_cache(source):
        offline = _offline() if local_files_only is None else bool(local_files_only)
        if offline:
            problem = "downloads are off (HF_HUB_OFFLINE=1 or local_files_only=True)"
            fix = "turn downloads on"
        else:
            problem = _hub_problem(source, timeout)
            unreachable = problem is not None and "cannot be reached" in problem
            fix = "connect to the network" if unreachable else "check the path or id"
        if problem:
            raise OSError(
                f"SegGPT model {source!r} is not in the local Hugging Face cache and {problem}: "
                "pass the path of a folder written by save_pretrained (on a machine with "
                "internet, SegGptForImageSegmentation and SegGptImageProcessor"
                f".from_pretrained({source!r}).save_pretrained(FOLDER)), or {fix}."
            )
        local_only = False
    try:  # imported only now: transformers takes seconds to import
        from transformers import SegGptForImageSegmentation, SegGptImageProcessor
    except ImportError as err:
        raise ImportError(need) from err
    try:
        net = SegGptForImageSegmentation.from_pretrained(source, local_files_only=local_only)
        processor = SegGptImageProcessor.from_pretrained(source, local_files_only=local_only)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(
            f"SegGPT model {source!r} could not be loaded ({first}): pass a folder written by "
            "save_pretrained, or a Hugging Face hub id of a SegGPT model."
        ) from err
    return net.to(device).eval(), processor


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

    def __init__(
        self, model=DEFAULT_MODEL, *, device: str = "cpu", local_files_only: bool | None = None
    ):
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
