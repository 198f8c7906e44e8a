"""Split-then-merge (STM, SAMRefiner; SPEC section 3): semantic masks to refinable objects.

A semantic mask gives one class per pixel, but SAM refines one object at a time.
STM splits each class into its 8-connected components, drops specks, and merges
components back greedily when together they still look like one compact object:
with inclusive box areas Bi, Bj, pixel counts Ai, Aj and U the (inclusive) area of
the box enclosing both, group j joins group i when

    Bi + Bj > mu * U   and   (Ai + Aj) / U > min(mu, min(Ai / Bi, Aj / Bj) - 0.1).

The first condition keeps the boxes from being far apart relative to their
size; the second asks the union to fill its box about as well as the parts fill
theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_samrefine.labels.objects import ObjectMask, object_slices
from napari_samrefine.labels.values import label_plane

__all__ = ["split_then_merge", "should_merge"]

_EIGHT = np.ones((3, 3), dtype=bool)


def should_merge(
    box_i: tuple[int, int, int, int],
    area_i: int,
    box_j: tuple[int, int, int, int],
    area_j: int,
    mu: float = 0.5,
) -> bool:
    """STM's merge rule for two groups of one class.

    Parameters
    ----------
    box_i, box_j : (int, int, int, int)
        Inclusive (y0, x0, y1, x1) boxes.
    area_i, area_j : int
        Pixel counts.
    mu : float
        Merge threshold (0.5 in the paper).

    Returns
    -------
    bool

    Examples
    --------
    >>> should_merge((0, 0, 4, 4), 25, (0, 8, 4, 12), 25)   # 3 px apart
    True
    >>> should_merge((0, 0, 4, 4), 25, (0, 20, 4, 24), 25)  # 15 px apart
    False
    """
    b_i = _box_area(box_i)
    b_j = _box_area(box_j)
    union = _box_area(_enclose(box_i, box_j))
    if union <= 0:  # cannot happen with inclusive boxes; a guard against degenerate input
        return False
    return b_i + b_j > mu * union and (area_i + area_j) / union > min(
        mu, min(area_i / b_i, area_j / b_j) - 0.1
    )


def _box_area(box) -> int:
    y0, x0, y1, x1 = box
    return (y1 - y0 + 1) * (x1 - x0 + 1)


def _enclose(a, b) -> tuple[int, int, int, int]:
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


@dataclass
class _Group:
    box: tuple[int, int, int, int]  # inclusive (y0, x0, y1, x1), crop coordinates
    area: int
    members: list[int] = field(default_factory=list)  # component labels


def _merge_components(groups: list[_Group], mu: float) -> list[_Group]:
    """Greedy merge: for i in order, absorb every later group j that passes the rule."""
    alive = [True] * len(groups)
    for i, gi in enumerate(groups):
        if not alive[i]:
            continue
        for j in range(i + 1, len(groups)):
            gj = groups[j]
            if alive[j] and should_merge(gi.box, gi.area, gj.box, gj.area, mu):
                gi.box = _enclose(gi.box, gj.box)
                gi.area += gj.area
                gi.members += gj.members
                alive[j] = False
    return [g for g, keep in zip(groups, alive, strict=True) if keep]


def split_then_merge(mask: np.ndarray, min_size: int = 5, mu: float = 0.5) -> list[ObjectMask]:
    """Split a semantic label image into objects to refine, one per merged group.

    Parameters
    ----------
    mask : numpy.ndarray
        2D semantic label image: each pixel holds its class id, 0 is background.
    min_size : int
        When a class has more than one component, components with fewer pixels are
        dropped (a class that is a single speck is kept).
    mu : float
        Merge threshold of the rule (see the module docs), 0.5 in the paper.

    Returns
    -------
    list of ObjectMask
        ``label_id`` is the class id; classes in increasing order, groups in the
        order of their first component (row-major order of its first pixel). Each
        group's crop is its tight box and holds only its components' pixels.

    Examples
    --------
    >>> import numpy as np
    >>> sem = np.zeros((20, 40), np.uint8)
    >>> sem[2:8, 2:8] = 1; sem[2:8, 10:16] = 1   # two close blobs of class 1
    >>> sem[2:8, 34:40] = 1                      # a far one
    >>> sem[15:18, 2:4] = 2
    >>> [(o.label_id, o.bbox) for o in split_then_merge(sem)]
    [(1, (2, 2, 8, 16)), (1, (2, 34, 8, 40)), (2, (15, 2, 18, 4))]
    """
    mask = label_plane(mask, "The semantic mask")
    out: list[ObjectMask] = []
    for class_id, sl in object_slices(mask).items():
        oy, ox = sl[0].start, sl[1].start
        components, n = ndi.label(mask[sl] == mask.dtype.type(class_id), structure=_EIGHT)
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        groups = []
        for k, csl in enumerate(ndi.find_objects(components), start=1):
            if n > 1 and sizes[k] < min_size:
                continue
            box = (csl[0].start, csl[1].start, csl[0].stop - 1, csl[1].stop - 1)
            groups.append(_Group(box, int(sizes[k]), [k]))
        for g in _merge_components(groups, mu):
            y0, x0, y1, x1 = g.box
            crop = np.isin(components[y0 : y1 + 1, x0 : x1 + 1], g.members)
            out.append(ObjectMask(class_id, crop, (oy + y0, ox + x0), mask.shape))
    return out
