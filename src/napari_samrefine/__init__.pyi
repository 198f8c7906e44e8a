# The public API. lazy_loader reads these imports at run time (each submodule is
# imported on first use, so `import napari_samrefine` stays cheap and never
# imports torch, napari or Qt); type checkers and IDEs read them as they are.
from ._napari.scripting import (
    adapt_layers,
    decide_objects,
    excavate_layers,
    judge_layers,
    refine_layers,
    rerefine_object,
)
from ._progress import Cancelled
from .adaption.adaptor import AdaptorMismatchError, IoUAdaptor, load_iou_adaptor
from .adaption.selection import SelectionReport, evaluate_selection
from .adaption.training import adapt_iou_head
from .batch.many import batch_summary, refine_many
from .engine.disk_cache import clear_embedding_cache
from .engine.embedding import EmbeddingCache, ImageEmbedding, embed_image
from .engine.preprocess import to_sam_rgb
from .judge.jfs import judge_refinement
from .judge.result import JudgeResult
from .models.cache import clear_model_cache
from .models.info import ModelInfo, model_info
from .models.loading import load_sam
from .models.profile import ModelProfile, model_profile
from .models.registry import list_models, register_model
from .pipeline.options import RefineOptions
from .pipeline.refiner import RefineResult, refine
from .samrefiner.prompts import ObjectPrompts, excavate_prompts
from .samrefiner.stm import split_then_merge
from .teach.finetune import Taught, TeachOptions, finetune
from .testing import tiny_sam

__version__: str

__all__ = [
    "AdaptorMismatchError",
    "Cancelled",
    "EmbeddingCache",
    "ImageEmbedding",
    "IoUAdaptor",
    "JudgeResult",
    "ModelInfo",
    "ModelProfile",
    "ObjectPrompts",
    "RefineOptions",
    "RefineResult",
    "SelectionReport",
    "Taught",
    "TeachOptions",
    "__version__",
    "adapt_iou_head",
    "adapt_layers",
    "batch_summary",
    "clear_embedding_cache",
    "clear_model_cache",
    "decide_objects",
    "embed_image",
    "evaluate_selection",
    "excavate_layers",
    "excavate_prompts",
    "finetune",
    "judge_layers",
    "judge_refinement",
    "list_models",
    "load_iou_adaptor",
    "load_sam",
    "model_info",
    "model_profile",
    "refine",
    "refine_layers",
    "refine_many",
    "register_model",
    "rerefine_object",
    "split_then_merge",
    "tiny_sam",
    "to_sam_rgb",
]
