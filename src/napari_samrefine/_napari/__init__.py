"""napari faces of the library: the only package that imports napari, magicgui or Qt."""

from ._triton import preload_triton

# napari imports this package only after its OpenGL canvas exists; see _triton.py
preload_triton()
