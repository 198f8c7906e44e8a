"""The paper's defaults of SAMRefiner, each written once, and the check of the prompt options.

:mod:`.prompts`, :mod:`.cebox` and :mod:`.cascade` take their defaults from here,
and so do :class:`~napari_samrefine.pipeline.options.RefineOptions` and, through
it, :func:`~napari_samrefine.refine`, the command line and the widgets. Changing
a value here changes it everywhere (SPEC.md and docs/deviations.md say why each
value is what it is).
"""

from __future__ import annotations

import math
import numbers

__all__ = [
    "ITERATIONS",
    "CONVERGENCE",
    "BATCH_SIZE",
    "STRENGTH",
    "GAMMA",
    "CEBOX_LAMBDA",
    "NEGATIVE_POINT",
    "prompt_option_problems",
]

ITERATIONS = 5
"""Cascade iterations T (SPEC section 1; the reference code's default)."""

CONVERGENCE = 0.99
"""An object leaves the cascade once its mask's IoU with the previous iteration reaches this."""

BATCH_SIZE = 32
"""Objects per decoder call (bounds memory; the masks do not depend on it)."""

STRENGTH = 15.0
"""Amplitude w of the Gaussian mask prompt (SPEC section 2: the paper's; the reference
code passes 30)."""

GAMMA = 4.0
"""Span gamma of the Gaussian map ``exp(-(D+ - max D+)^2 / max(|M| / gamma, 1))``
(SPEC section 2; the reference code's)."""

CEBOX_LAMBDA = 0.1
"""CEBox's lambda (SPEC section 2): a box side moves out when more than this fraction
of its strip is similar to the object. On by default in instance mode."""

NEGATIVE_POINT = True
"""Whether a negative point is mined when the box holds background (SPEC section 2)."""


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def prompt_option_problems(cebox, strength, gamma, *, auto: bool = False) -> list[str]:
    """What is wrong with the prompt options ``cebox``, ``strength`` and ``gamma``, in words.

    The one check of these options: :func:`~napari_samrefine.excavate_prompts`
    and :class:`~napari_samrefine.pipeline.options.RefineOptions` use it.

    Parameters
    ----------
    cebox : float, None or "auto"
        CEBox's lambda, a fraction in [0, 1]; None keeps the tight box.
    strength, gamma : float
        Positive, finite numbers.
    auto : bool
        Whether ``cebox="auto"`` is allowed (refine's options).

    Returns
    -------
    list of str
        One sentence per bad option; empty when all are valid.

    Examples
    --------
    >>> prompt_option_problems(0.1, 15.0, 4.0)
    []
    >>> prompt_option_problems(None, -1, 4.0)
    ['strength must be a positive number (15 by default), got -1']
    """
    problems = []
    allowed = "'auto', None" if auto else "None"
    if not (cebox is None or (auto and cebox == "auto") or (_finite(cebox) and 0 <= cebox <= 1)):
        problems.append(
            f"cebox must be {allowed} or a fraction in [0, 1] ({CEBOX_LAMBDA:g} by default), "
            f"got {cebox!r}"
        )
    if not (_finite(strength) and strength > 0):
        problems.append(
            f"strength must be a positive number ({STRENGTH:g} by default), got {strength!r}"
        )
    if not (_finite(gamma) and gamma > 0):
        problems.append(f"gamma must be a positive number ({GAMMA:g} by default), got {gamma!r}")
    return problems
