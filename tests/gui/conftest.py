"""Fixtures of the GUI tests: a viewer with the nuclei sample."""

import pytest


@pytest.fixture()
def viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    return viewer
