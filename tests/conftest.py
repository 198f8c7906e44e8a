"""Shared fixtures: the tiny SAM and real images with labels from tests/data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _data import DSB2018, STARDIST

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _private_cache_folder(tmp_path_factory):
    """Every test, and every process it starts, caches in a temporary folder, never the user's.

    ``NAPARI_SAMREFINE_CACHE`` holds downloaded checkpoints and the disk tier of
    the embedding cache (``default_cache``, which reads it at each use); the
    ``cache`` fixture moves it again for one test. The user's size limit of the
    disk tier is ignored (the default applies).
    """
    from napari_samrefine.engine.disk_cache import LIMIT_ENV
    from napari_samrefine.models.download import CACHE_ENV

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("napari-samrefine-cache")))
        mp.delenv(LIMIT_ENV, raising=False)
        yield


@pytest.fixture(autouse=True)
def _fresh_model_cache():
    """Each test starts and ends with an empty process-wide model cache (``load_sam``'s)."""
    from napari_samrefine.models.cache import clear_model_cache

    clear_model_cache()
    yield
    clear_model_cache()


@pytest.fixture(scope="session")
def sam():
    from napari_samrefine.testing import tiny_sam

    return tiny_sam(seed=0)


class EncoderPasses:
    """Counts real forward passes of the image encoder (a forward hook, not a mock)."""

    def __init__(self, model):
        self.n = 0
        self.handle = model.image_encoder.register_forward_hook(self._hook)

    def _hook(self, *args):
        self.n += 1

    def close(self):
        self.handle.remove()


@pytest.fixture()
def checkpoint(tmp_path, sam):
    """The session tiny SAM saved as a plain state dict under a name that says nothing."""
    path = tmp_path / "my model.pth"
    torch.save(sam.state_dict(), path)
    return path


@pytest.fixture()
def encoder_passes(sam):
    """Counter of the session tiny SAM's encoder passes during one test."""
    counter = EncoderPasses(sam)
    yield counter
    counter.close()


@pytest.fixture(scope="session")
def dsb_pair():
    """A DSB2018 fluorescence image (256 x 256 uint8 grey, 27 nuclei) and its instance labels."""
    import tifffile
    from PIL import Image

    image = np.asarray(Image.open(DSB2018 / "images" / "00071198d059.png"))
    labels = tifffile.imread(DSB2018 / "labels" / "00071198d059.tif")
    if image.ndim == 3:
        image = image[..., 0]
    assert len(np.unique(labels)) == 28
    return image, labels


@pytest.fixture(scope="session")
def stained_pair():
    """A crop of a stained brightfield DSB2018 image (uint8 RGB) with its labels."""
    import json

    import tifffile
    from PIL import Image

    index = json.loads((DSB2018 / "index.json").read_text())
    entry = next(e for e in index if e["modality"] == "brightfield_stained_purple")
    image = np.asarray(Image.open(DSB2018 / "images" / f"{entry['file']}.png"))[..., :3]
    labels = tifffile.imread(DSB2018 / "labels" / f"{entry['file']}.tif")
    return image[:96, :96].copy(), labels[:96, :96].copy()


@pytest.fixture(scope="session")
def stardist_stack():
    """A 4-plane crop of StarDist's synthetic 3D stack (float image) and its labels."""
    import tifffile

    image = tifffile.imread(STARDIST / "img3d.tif")
    labels = tifffile.imread(STARDIST / "mask3d.tif")
    return image[12:16].copy(), labels[12:16].copy()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache folder (NAPARI_SAMREFINE_CACHE) and no proxy for 127.0.0.1."""
    from napari_samrefine.models.download import CACHE_ENV

    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    return folder
