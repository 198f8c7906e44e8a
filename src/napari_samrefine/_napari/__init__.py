"""napari faces of the library: the only package that imports napari, magicgui or Qt."""
