"""JFS: judging a refinement with few-shot segmentation (SPEC section 5).

``judge_refinement`` is the entry point; the FSS backends are
:class:`PerSamFSS` (SAM, PerSAM-style, FM / IM / HM masking),
:class:`SegGptFSS` (optional ``seggpt`` extra) and :class:`MaskTransferFSS`
(shape prior), all following the :class:`FewShotSegmenter` protocol.
"""

from __future__ import annotations

from napari_samrefine.judge.fss import FewShotSegmenter, MaskTransferFSS
from napari_samrefine.judge.fss_sam import PerSamFSS
from napari_samrefine.judge.jfs import BACKENDS, judge_refinement
from napari_samrefine.judge.masking import MASKING_MODES
from napari_samrefine.judge.result import JudgeResult, ObjectJudgement, SupportPrediction
from napari_samrefine.judge.verdicts import (
    DEGRADED,
    IMPROVED,
    UNCERTAIN,
    UNJUDGED,
    VERDICT_CODES,
    SupportScore,
    Verdict,
)

__all__ = [
    "judge_refinement",
    "JudgeResult",
    "ObjectJudgement",
    "SupportPrediction",
    "SupportScore",
    "Verdict",
    "FewShotSegmenter",
    "PerSamFSS",
    "MaskTransferFSS",
    "SegGptFSS",
    "BACKENDS",
    "MASKING_MODES",
    "IMPROVED",
    "DEGRADED",
    "UNCERTAIN",
    "UNJUDGED",
    "VERDICT_CODES",
]


def __getattr__(name: str):
    # SegGPT needs the optional transformers only when used
    if name == "SegGptFSS":
        from napari_samrefine.judge.fss_seggpt import SegGptFSS

        return SegGptFSS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
