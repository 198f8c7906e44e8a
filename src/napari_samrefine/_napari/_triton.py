"""Load triton safely inside a napari process that already drew with OpenGL.

segment-anything imports torchvision, which imports ``torch._dynamo``, which
imports triton when it is installed (the default CUDA builds of torch bring
it). triton's native library carries its own copy of LLVM. On machines whose
OpenGL is Mesa's software renderer (llvmpipe: remote desktops, virtual
machines, Xvfb, CI), Mesa has loaded *its* LLVM by the time napari shows a
canvas, and loading triton's library then resolves symbols against Mesa's
copy and crashes the process (a segmentation fault, no message) as soon as a
widget of this plugin is docked. Loading triton with ``RTLD_DEEPBIND`` makes
its library bind to its own symbols first; triton then loads normally.

This is done only where the clash can happen: triton installed and not yet
imported, an LLVM library already mapped into the process (``/proc/self/maps``),
and ``RTLD_DEEPBIND`` available (a glibc flag: Linux). Everywhere else triton
is left to load the usual way, when torch asks for it.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from pathlib import Path

__all__ = ["preload_triton"]


def preload_triton() -> bool:
    """Import triton with its native library bound to its own symbols.

    Returns
    -------
    bool
        True if this call imported triton, False if there was nothing to do or
        the import failed (torch then runs without triton, as it does where
        triton is missing).
    """
    deepbind = getattr(os, "RTLD_DEEPBIND", None)
    if deepbind is None or "triton" in sys.modules or not llvm_mapped():
        return False
    if importlib.util.find_spec("triton") is None:
        return False
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | deepbind)
    try:
        importlib.import_module("triton")
    except Exception:  # a broken triton must not stop the plugin: torch copes without it
        return False
    finally:
        sys.setdlopenflags(flags)
    return True


def llvm_mapped() -> bool:
    """Whether a shared LLVM library (e.g. Mesa's llvmpipe) is loaded in this process."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return False
    return re.search(r"/libLLVM[^/\s]*\.so", maps) is not None
