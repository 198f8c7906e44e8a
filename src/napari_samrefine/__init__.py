"""napari-samrefine: refine coarse segmentations with SAM (SAMRefiner), in napari, scripts and the CLI.

The public API is listed, with the module each name comes from, in
``__init__.pyi``: type checkers and IDEs read it, and :mod:`lazy_loader` reads
it at run time, so each submodule is imported on first use and
``import napari_samrefine`` never imports torch, napari or Qt.
"""

import lazy_loader

__version__ = "0.1.0"  # the one version source (pyproject.toml reads it)

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
__all__ = sorted({*__all__, "__version__"})
