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

Whether LLVM is mapped must be asked when triton is imported, not when this
package is: a script that imports a module of this package (the sample data,
say) before it creates the viewer imports this package before any canvas
exists, and triton only later, when a widget is docked. :func:`guard_triton`
therefore puts a finder at the front of ``sys.meta_path`` that, whenever
triton is imported, imports it with ``RTLD_DEEPBIND`` if an LLVM library is
mapped at that moment (and the usual way otherwise), whatever the order of
imports and viewers.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import re
import sys
from pathlib import Path

__all__ = ["preload_triton", "guard_triton", "llvm_mapped"]


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


class _DeepBindLoader(importlib.abc.Loader):
    """triton's own loader, run with ``RTLD_DEEPBIND`` while an LLVM library is mapped."""

    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):  # everything else (resources, code) is triton's loader's
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        flags = sys.getdlopenflags()
        if llvm_mapped():  # asked now, at triton's import: a canvas may have appeared since
            sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            self._loader.exec_module(module)
        finally:
            sys.setdlopenflags(flags)


class _TritonFinder(importlib.abc.MetaPathFinder):
    """Finds triton as the other finders do, and gives it :class:`_DeepBindLoader`."""

    def find_spec(self, name, path=None, target=None):
        if name != "triton":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _DeepBindLoader(spec.loader)
                return spec
        return None


def guard_triton() -> bool:
    """Make every later import of triton safe in a process that draws with Mesa's LLVM.

    Imports triton at once (:func:`preload_triton`) when an LLVM library is
    mapped already; otherwise puts a finder at the front of ``sys.meta_path``
    that imports triton with ``RTLD_DEEPBIND`` if, when triton is imported, an
    LLVM library is mapped by then. Nothing is done without ``RTLD_DEEPBIND``
    (not Linux) or when triton is imported already. Calling it again does
    nothing more.

    Returns
    -------
    bool
        True if triton is guarded (imported here, or the finder is in place).
    """
    if getattr(os, "RTLD_DEEPBIND", None) is None or "triton" in sys.modules:
        return False
    if preload_triton():
        return True
    if not any(isinstance(f, _TritonFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TritonFinder())
    return True
