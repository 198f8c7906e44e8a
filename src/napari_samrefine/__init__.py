"""napari-samrefine: refine coarse segmentations with SAM (SAMRefiner), in napari, scripts and the CLI.

The public API is re-exported here; submodules are imported lazily so that
``import napari_samrefine`` stays cheap and never imports napari or Qt.
"""

from __future__ import annotations

import importlib

from ._progress import Cancelled

__version__ = "0.1.0"

_LAZY = {
    "refine": ".samrefiner.refiner",
    "RefineResult": ".samrefiner.refiner",
    "excavate_prompts": ".samrefiner.prompts",
    "ObjectPrompts": ".samrefiner.prompts",
    "split_then_merge": ".samrefiner.stm",
    "load_sam": ".sam.loading",
    "list_models": ".sam.registry",
    "ModelProfile": ".sam.profile",
    "model_profile": ".sam.profile",
    "tiny_sam": ".testing",
    "adapt_iou_head": ".samrefiner.adaption",
    "load_iou_adaptor": ".samrefiner.adaption",
    "IoUAdaptor": ".samrefiner.adaption",
    "evaluate_selection": ".samrefiner.adaption",
    "judge_refinement": ".judge",
    "refine_layers": "._napari.scripting",
}

__all__ = ["Cancelled", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'napari_samrefine' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
