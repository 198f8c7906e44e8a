"""napari faces of the library: the only package that imports napari, magicgui or Qt."""

try:
    import magicgui  # noqa: F401
    import napari  # noqa: F401
    import qtpy  # noqa: F401
except ImportError as err:  # a core-only install: one line that names the fix
    raise ImportError(
        f"The napari widgets of napari-samrefine need napari, magicgui, qtpy and a Qt binding "
        f"({err.name or 'a Qt binding'} is missing): pip install 'napari-samrefine[qt]' (or "
        "'[napari]' where a Qt binding is installed already)."
    ) from None

from napari_samrefine._napari._triton import guard_triton  # noqa: E402

# before or after napari's OpenGL canvas exists (a script may import a module of this
# package before it makes the viewer): triton is loaded safely either way; see _triton.py
guard_triton()
