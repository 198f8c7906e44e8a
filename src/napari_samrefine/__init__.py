"""napari-samrefine: refine coarse segmentations with SAM (SAMRefiner), in napari, scripts and the CLI.

The public API is re-exported here; submodules are imported lazily so that
``import napari_samrefine`` stays cheap and never imports napari or Qt.
"""

from __future__ import annotations

import importlib

from ._progress import Cancelled
from .refine.refiner import refine  # TEMP: until the subpackage is renamed (name clash)

__version__ = "0.1.0"

_LAZY = {
    "RefineResult": ".refine.refiner",
    "excavate_prompts": ".refine.prompts",
    "ObjectPrompts": ".refine.prompts",
    "split_then_merge": ".refine.stm",
    "load_sam": ".sam.loading",
    "list_models": ".sam.registry",
    "tiny_sam": ".testing",
    "adapt_iou_head": ".refine.adaption",
    "load_iou_adaptor": ".refine.adaption",
    "evaluate_selection": ".refine.adaption",
    "judge_refinement": ".judge",
    "refine_layers": "._napari.scripting",
}

__all__ = ["Cancelled", "__version__", "refine", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'napari_samrefine' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
