"""What a SAM-family model was trained to see: its model profile.

Models of the SAM family share one architecture but not one habit. SAM and
micro-sam were trained with points, boxes and mask prompts, normalise images
with SAM's pixel mean and standard deviation, and their IoU head ranks the
three multimask candidates. LiteMedSAM was trained on boxes only, expects each
image min-max normalised to [0, 1], and its IoU head predicts about the same
value for every candidate. A :class:`ModelProfile` records these habits; the
registry carries one per model, :func:`~napari_samrefine.models.loading.load_sam`
records it for the loaded model (:func:`set_model_profile`), and refinement, the
judge and the widgets take their defaults from it (:func:`model_profile`). The
record is kept beside the model, never as an attribute on it: a model built in
code, or a copy (``copy.deepcopy``), has SAM's profile until one is set.
"""

from __future__ import annotations

import threading
import warnings
import weakref
from dataclasses import dataclass
from typing import Literal

from napari_samrefine.models.source import model_source

__all__ = [
    "PROMPT_KINDS",
    "RefineDefaults",
    "ModelProfile",
    "SAM_PROFILE",
    "BOX_ONLY_MINMAX_PROFILE",
    "model_profile",
    "resolve_prompt_use",
    "set_model_profile",
    "untrained_prompts",
]

PROMPT_KINDS = ("points", "box", "mask")
"""Prompt kinds a SAM decoder takes: points (positive and negative), box, mask."""


@dataclass(frozen=True)
class RefineDefaults:
    """The refinement settings that measured best for a model, and where they were measured.

    :func:`~napari_samrefine.refine` takes ``iterations``, ``keep`` and ``scale="auto"``
    from these when they are not given. Changing one needs the table that chose it
    (docs/benchmarks.md); ``source`` names that table.

    Attributes
    ----------
    iterations : int
        Cascade iterations T.
    cebox : float or None
        The CEBox lambda of ``cebox="auto"`` in instance mode (None: the tight box).
    keep : {"refined", "better"}
        The keep policy (:mod:`napari_samrefine.quality.keep`).
    keep_min_iou : float
        The agreement threshold of ``keep="better"``: the refined mask is kept when
        its IoU with the coarse mask is at least this.
    object_size : (float, float) or None
        The object side (longer side of its box), in pixels of the model's input,
        at which the model refines best: ``scale="auto"`` zooms each object into
        this range (:mod:`napari_samrefine.pipeline.scale`). None: not measured,
        and ``scale="auto"`` shows the model the image at its own size, as
        ``scale=None`` does.
    max_scale : float
        The largest zoom ``scale="auto"`` uses.
    native_too : bool
        Whether ``scale="auto"`` also refines each zoomed object at zoom 1 and keeps,
        per object, the one of the two masks that agrees more with the coarse mask
        (its IoU with it; :func:`~napari_samrefine.pipeline.scale.choose_view`).
    source : str
        Where the numbers come from, for humans.
    adaptor_note : str
        What a SAMRefiner++ IoU adaptor measured for this model, when it makes its
        masks worse (one line, shown by the adaption widget, by the refine widget
        when it refines with an adaptor, and by ``napari-samrefine adapt``); empty
        when nothing to warn about was measured.
    """

    iterations: int = 5
    cebox: float | None = 0.1
    keep: Literal["refined", "better"] = "refined"
    keep_min_iou: float = 0.7
    object_size: tuple[float, float] | None = None
    max_scale: float = 4.0
    native_too: bool = False
    source: str = (
        "the SAMRefiner paper's settings (T=5, CEBox 0.1, every prompt kind, the refined mask); "
        "not measured here: SAM's weights cannot be downloaded on the machines that measured."
    )
    adaptor_note: str = ""

    def __post_init__(self):
        if self.keep not in ("refined", "better"):
            raise ValueError(f"keep must be 'refined' or 'better', got {self.keep!r}.")
        if self.object_size is not None and not 0 < self.object_size[0] <= self.object_size[1]:
            raise ValueError(f"object_size must be (low, high) with 0 < low <= high, got {self.object_size!r}.")
        if not (self.iterations >= 1 and self.max_scale >= 1):
            raise ValueError("iterations and max_scale must be at least 1.")


@dataclass(frozen=True)
class ModelProfile:
    """A model's input normalisation, the prompts it was trained with, and its IoU head.

    Attributes
    ----------
    normalization : {"sam", "minmax"}
        "sam": the uint8 RGB image minus SAM's pixel mean, divided by its standard
        deviation. "minmax": the resized image scaled to [0, 1] by its own
        minimum and maximum (LiteMedSAM). Both zero-pad to the square input.
    prompts : tuple of str
        Prompt kinds the model was trained with, a subset of ``("points",
        "box", "mask")``; refinement uses exactly these by default.
    multimask : bool
        Whether the IoU head ranks the multimask candidates usefully. If not,
        the model's single-mask output is used.
    note : str
        Where these facts come from, for humans (docs, GUI tooltips).
    defaults : RefineDefaults
        The refinement settings that measured best for this model.
    """

    normalization: Literal["sam", "minmax"] = "sam"
    prompts: tuple[str, ...] = PROMPT_KINDS
    multimask: bool = True
    note: str = ""
    defaults: RefineDefaults = RefineDefaults()

    def __post_init__(self):
        if self.normalization not in ("sam", "minmax"):
            raise ValueError(
                f"normalization must be 'sam' or 'minmax', got {self.normalization!r}."
            )
        unknown = [p for p in self.prompts if p not in PROMPT_KINDS]
        if unknown or not self.prompts:
            raise ValueError(
                f"prompts must be a non-empty subset of {PROMPT_KINDS}, got {self.prompts!r}."
            )

    def trained_with(self, kind: str) -> bool:
        """Whether the model was trained with prompts of ``kind`` ("points", "box" or "mask")."""
        return kind in self.prompts

    def summary(self) -> str:
        """One line for humans, e.g. ``"box prompts only; min-max input; single mask"``."""
        prompts = ", ".join(self.prompts)
        norm = "SAM mean/std input" if self.normalization == "sam" else "min-max input"
        head = "multimask chosen by predicted IoU" if self.multimask else "single mask"
        return f"prompts: {prompts}; {norm}; {head}"


SAM_PROFILE = ModelProfile(
    note="Segment Anything and its fine-tunes (micro-sam, MobileSAM): trained with points, "
    "boxes and mask prompts; SAM's pixel statistics; multimask output ranked by the IoU head."
)
"""The profile of SAM, MobileSAM and micro-sam models, and of unregistered files."""

BOX_ONLY_MINMAX_PROFILE = ModelProfile(
    normalization="minmax",
    prompts=("box",),
    multimask=False,
    note="LiteMedSAM: trained on box prompts only with single-mask output; images min-max "
    "normalised to [0, 1]; its multimask IoU predictions are flat (about 0.25).",
    defaults=RefineDefaults(
        iterations=1,
        keep="better",
        keep_min_iou=0.7,
        object_size=(64.0, 128.0),
        max_scale=2.0,
        native_too=True,
        source="docs/benchmarks.md: 'Mask quality with LiteMedSAM per coarse-mask kind' "
        "(1 iteration beats 5 for every kind) and 'Keep or replace: label-free signals' "
        "(keep the refined mask where its IoU with the coarse one is >= 0.7).",
        adaptor_note="Measured: an IoU adaptor makes LiteMedSAM's masks worse (mean IoU with the "
        "truth 0.706 -> 0.637 on 1740 DSB2018/StarDist nuclei, 1 iteration): with an adaptor the "
        "decoder picks among three candidates instead of LiteMedSAM's single mask. Refine without "
        "one (docs/benchmarks.md, 'SAMRefiner++ IoU adaptor with LiteMedSAM').",
    ),
)
"""The profile of LiteMedSAM."""


_PROFILES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def set_model_profile(sam, profile: ModelProfile | None) -> None:
    """Give ``sam`` a profile (``load_sam`` does), or go back to SAM's with None.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        Any model, e.g. one built in code.
    profile : ModelProfile or None

    Examples
    --------
    >>> from napari_samrefine.testing import tiny_sam
    >>> sam = tiny_sam()
    >>> set_model_profile(sam, BOX_ONLY_MINMAX_PROFILE)
    >>> model_profile(sam).prompts
    ('box',)
    """
    if profile is not None and not isinstance(profile, ModelProfile):
        raise TypeError(f"profile must be a ModelProfile or None, got {type(profile).__name__}.")
    with _LOCK:
        if profile is None:
            _PROFILES.pop(sam, None)
        else:
            _PROFILES[sam] = profile


def model_profile(sam) -> ModelProfile:
    """The profile of a model: the one ``load_sam`` or :func:`set_model_profile` gave it, else SAM's.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        Any model; one built in code (e.g. :func:`~napari_samrefine.testing.tiny_sam`)
        gets :data:`SAM_PROFILE` unless :func:`set_model_profile` gave it another.

    Returns
    -------
    ModelProfile
    """
    try:
        with _LOCK:
            return _PROFILES.get(sam, SAM_PROFILE)
    except TypeError:  # not a model (no weak reference to it): nothing recorded
        return SAM_PROFILE


def _model_name(sam) -> str:
    source = model_source(sam)
    return source.name if source is not None else "this model"


def untrained_prompts(profile: ModelProfile | None, switches: dict) -> list[str]:
    """Prompt kinds switched on that a model of ``profile`` was not trained with.

    Parameters
    ----------
    profile : ModelProfile or None
        The model's profile; None (unknown, e.g. a file not loaded yet) gives none.
    switches : dict
        ``use_points``, ``use_box``, ``use_mask`` (missing keys count as off).

    Returns
    -------
    list of str
        Among "points", "box" and "mask".
    """
    if profile is None:
        return []
    kinds = {"use_points": "points", "use_box": "box", "use_mask": "mask"}
    return [kind for key, kind in kinds.items() if switches.get(key) and not profile.trained_with(kind)]


def resolve_prompt_use(
    sam,
    *,
    use_points: bool | None = None,
    use_box: bool | None = None,
    use_mask: bool | None = None,
    use_negative_point: bool | None = None,
) -> dict[str, bool]:
    """Fill unset prompt switches from the model's profile; warn about forced untrained ones.

    Parameters
    ----------
    sam : segment_anything.modeling.Sam
        The model whose :func:`model_profile` gives the defaults.
    use_points, use_box, use_mask, use_negative_point : bool or None
        None takes the profile's choice: a prompt kind is used exactly when the
        model was trained with it, and the negative point goes with the points.
        True or False is kept; True for a kind the model was not trained with
        issues a :class:`UserWarning` that names it.

    Returns
    -------
    dict
        ``use_points``, ``use_box``, ``use_mask``, ``use_negative_point`` as bools.
    """
    profile = model_profile(sam)
    chosen = {"use_points": (use_points, "points"), "use_box": (use_box, "box"),
              "use_mask": (use_mask, "mask")}
    out = {key: profile.trained_with(kind) if value is None else bool(value)
           for key, (value, kind) in chosen.items()}
    # the negative point goes with the points unless set on its own
    out["use_negative_point"] = out["use_points"] if use_negative_point is None else bool(
        use_negative_point
    )
    forced = untrained_prompts(profile, {k: v for k, (v, _) in chosen.items()})
    if forced:
        warnings.warn(
            f"{_model_name(sam)} was not trained with {' and '.join(forced)} "
            f"prompts ({profile.summary()}); they are used because you asked for them, and "
            "its masks may get worse.",
            UserWarning,
            stacklevel=3,
        )
    return out
