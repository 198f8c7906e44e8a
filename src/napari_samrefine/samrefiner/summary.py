"""What a refinement did, in words: the summary the widgets and the command line print.

A user reads "27 objects refined; 1 label id not found (999)" and "2 objects
grew more than 4x (ids 5, 9): check them", never a table of status codes.
"""

from __future__ import annotations

from napari_samrefine.samrefiner.cascade import REFINED_STATUSES

__all__ = [
    "refine_summary", "size_warnings", "count_text", "GROWTH_WARNING", "SHRINK_WARNING", "GrowthWarning",
]

GROWTH_WARNING = 4.0
"""A refined object more than this many times its coarse area is flagged ("grew more than 4x")."""
SHRINK_WARNING = 4.0
"""A refined object less than its coarse area divided by this is flagged ("shrank to under 1/4")."""


class GrowthWarning(UserWarning):
    """Refined objects grew more than :data:`GROWTH_WARNING` times their coarse area and were
    kept (``keep="refined"``): :func:`~napari_samrefine.refine` names them."""
MAX_IDS = 8  # ids listed in a summary before "..."


def count_text(n: int, noun: str) -> str:
    """"1 object", "3 objects"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _were(n: int) -> str:
    return "it was" if n == 1 else "they were"


def _numbers(values) -> str:
    """"5", "5, 9", "1, 2, ..., 8, …"."""
    values = list(values)
    more = ", …" if len(values) > MAX_IDS else ""
    return ", ".join(str(v) for v in values[:MAX_IDS]) + more


def _id_list(rows) -> str:
    """"id 5", "ids 5, 9" (with the plane on stacks: "id 5 (plane 2)")."""
    ids = []
    for row in rows.itertuples():
        plane = row.plane
        on_plane = plane is not None and plane == plane  # None or NaN on 2D
        where = ", ".join(str(int(p)) for p in plane) if isinstance(plane, tuple) else (
            str(int(plane)) if on_plane else "")
        ids.append(f"{int(row.label_id)}" + (f" (plane {where})" if where else ""))
    return f"id{'s' if len(ids) > 1 else ''} {_numbers(ids)}"


def size_warnings(table, grew: float = GROWTH_WARNING, shrank: float = SHRINK_WARNING) -> list[str]:
    """Sentences about refined objects whose area changed suspiciously (grew or shrank a lot).

    Parameters
    ----------
    table : pandas.DataFrame
        ``RefineResult.table()``: ``status``, ``coarse_area``, ``refined_area``, ...
    grew, shrank : float
        Flag objects whose refined area is more than ``grew`` times, or less than
        ``1 / shrank`` of, their coarse area (default :data:`GROWTH_WARNING`,
        :data:`SHRINK_WARNING`).

    Returns
    -------
    list of str
        E.g. ``["2 objects grew more than 4x (ids 5, 9): check them."]``; empty
        when no object did.
    """
    done = table[table["status"].isin(REFINED_STATUSES) & (table["coarse_area"] > 0)]
    ratio = done["refined_area"] / done["coarse_area"]
    out = []
    for rows, what in (
        (done[ratio > grew], f"grew more than {grew:g}x"),
        (done[ratio < 1 / shrank], f"shrank to less than 1/{shrank:g} of their area"),
    ):
        if len(rows):
            one = len(rows) == 1
            what = what.replace("their", "its") if one else what
            out.append(
                f"{count_text(len(rows), 'object')} {what} ({_id_list(rows)}): "
                f"check {'it' if one else 'them'}."
            )
    return out


def refine_summary(table, mode: str = "instance", labels_name: str | None = None) -> tuple[str, list[str]]:
    """What a refinement did, in words: a headline and the notes that go with it.

    Parameters
    ----------
    table : pandas.DataFrame
        ``RefineResult.table()``.
    mode : {"instance", "semantic"}
    labels_name : str, optional
        The coarse labels' name, for "label 999 is not in 'nuclei coarse'".

    Returns
    -------
    headline : str
        "27 objects refined", "1 object refined (id 5)", "No object was refined:
        label 999 is not in 'nuclei coarse'".
    notes : list of str
        Label ids not found, objects kept as they were and why; the size warnings
        are :func:`size_warnings`.
    """
    noun, kind = ("object", "label") if mode == "instance" else ("region", "class")
    status = table["status"]
    refined = table[status.isin(REFINED_STATUSES)]
    empty = table[status == "empty-output"]
    # an id missing from some planes of a stack but found in others is not "not found"
    found = set(table.loc[status != "empty-input", "label_id"])
    missing = sorted({int(i) for i in table.loc[status == "empty-input", "label_id"]} - found)
    skipped = int((status == "skipped").sum())
    specks = int((status == "specks").sum())
    kept_previous = int((status == "kept-previous").sum())
    notes = []
    if missing and len(refined):
        notes.append(f"{count_text(len(missing), kind + ' id')} not found ({_numbers(missing)})")
    if len(empty):
        notes.append(
            f"{count_text(len(empty), noun)} kept as {_were(len(empty))} "
            f"(SAM's mask came out empty: {_id_list(empty)})"
        )
    kept_coarse = table[status == "kept-coarse"]
    if len(kept_coarse):
        notes.append(
            f"{count_text(len(kept_coarse), noun)} kept {'its' if len(kept_coarse) == 1 else 'their'} "
            f"coarse mask (keep='better': the refined mask agreed too little with it: "
            f"{_id_list(kept_coarse)})"
        )
    if kept_previous:
        notes.append(
            f"{count_text(kept_previous, 'refined ' + noun)} kept the mask of an earlier iteration "
            "(SAM's last one came out empty)"
        )
    if specks:
        notes.append(f"{count_text(specks, 'class')} left as {_were(specks)} (only specks, too small to refine)")
    if skipped and (len(refined) or not missing):  # beside "label 999 is not in ...", noise
        others = "other object" if mode == "instance" else "other class"
        notes.append(f"{count_text(skipped, others)} left as {_were(skipped)} (not chosen)")
    if len(refined):
        headline = f"{count_text(len(refined), noun)} refined"
        planes = {int(p) for p in refined["plane"] if p is not None and p == p}
        ids = sorted({int(i) for i in refined["label_id"]})
        if len(ids) <= 3 and len(refined) < len(table):  # a chosen few: name them
            one, many = ("id", "ids") if mode == "instance" else ("class", "classes")
            headline += f" ({one if len(ids) == 1 else many} {_numbers(ids)})"
        if len(planes) > 1:
            headline += f" in {len(planes)} planes"
    elif missing:
        which = f"{kind} {missing[0]} is" if len(missing) == 1 else f"{kind}s {_numbers(missing)} are"
        headline = f"No {noun} was refined: {which} not in {labels_name!r}" if labels_name else (
            f"No {noun} was refined: {which} not in the labels"
        )
    else:
        headline = f"No {noun} was refined"
    return headline, notes
