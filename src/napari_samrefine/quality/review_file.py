"""A review's decisions saved to and read from a CSV table.

The "Review refinement" widget's *Save decisions* writes the review table
(:func:`~.review.review_table`'s columns, one row per object, and the name of
the layer it was made from) with :func:`write_decisions`; *Load decisions*
reads it back with :func:`read_decisions` and merges it into a review with
:func:`merge_decisions`, which refuses a table of another layer (ids or planes
that are not objects of the review). A script applies the same table with
:func:`~.review.apply_decisions` (``decisions_by_key(read_decisions(path))``).
The edited prompts an object was refined again from go into the table too
(their points, box and mask prompt strength; not a painted mask prompt), and
:func:`saved_prompts` gives them back as ``refine(..., prompts=...)`` takes them.
Pure pandas; the file is written atomically (:func:`napari_samrefine.io.atomic_path`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from napari_samrefine.io import atomic_path
from napari_samrefine.quality.review import (
    DECISIONS,
    ESTIMATES,
    REVIEW_COLUMNS,
    object_key,
    sort_review,
)
from napari_samrefine.samrefiner.prompts import ObjectPrompts, excavate_prompts

__all__ = [
    "write_decisions", "read_decisions", "decisions_by_key", "merge_decisions", "review_rows", "saved_prompts",
]

PROMPT_COLUMNS = ("prompt_points", "prompt_box", "prompt_strength")
"""The columns of an object's edited prompts: points ``"x y label; ..."``, box
``"x1 y1 x2 y2"``, the mask prompt's strength; empty for objects without."""

FILE_COLUMNS = ("label_id", "plane", "decision")
"""The columns a decisions table must have (the others are for the person reading it)."""


def _plane_text(plane) -> str:
    plane = object_key(plane, 0)[0]
    if plane is None:
        return ""
    return str(plane) if np.isscalar(plane) else f"({', '.join(str(v) for v in plane)})"


def _prompt_cells(prompts: ObjectPrompts | None) -> tuple[str, str, str]:
    if prompts is None:
        return "", "", ""
    points = "; ".join(f"{x:g} {y:g} {int(k)}" for (x, y), k in
                       zip(np.asarray(prompts.points, float), prompts.point_labels, strict=True))
    return points, " ".join(str(int(v)) for v in prompts.box), f"{float(prompts.strength):g}"


def write_decisions(path: str | Path, rows: pd.DataFrame, layer_name: str | None = None,
                    prompts: Mapping[tuple, ObjectPrompts] | None = None) -> Path:
    """Write a review's rows and decisions to a CSV file, atomically.

    Parameters
    ----------
    path : str or pathlib.Path
        The CSV file (its folder is created if needed; an existing file is replaced).
    rows : pandas.DataFrame
        :func:`~.review.review_table`'s rows with the decisions made.
    layer_name : str, optional
        The refined layer's name, written in a ``layer`` column (a table loaded
        into another layer is named in the message).
    prompts : mapping, optional
        ``{(plane, label_id): ObjectPrompts}``: the edited prompts objects were
        refined again from, written in the :data:`PROMPT_COLUMNS`.

    Returns
    -------
    pathlib.Path
    """
    missing = [c for c in FILE_COLUMNS if c not in rows]
    if missing:
        raise ValueError(f"the rows have no {missing} column: pass review_table()'s rows")
    table = rows[[c for c in REVIEW_COLUMNS if c in rows]].copy()
    table["plane"] = [_plane_text(p) for p in table["plane"]]
    if layer_name is not None:
        table["layer"] = layer_name
    if prompts:
        cells = [_prompt_cells(prompts.get(object_key(p, i))) for p, i in
                 zip(rows["plane"], rows["label_id"], strict=True)]
        for k, column in enumerate(PROMPT_COLUMNS):
            table[column] = [c[k] for c in cells]
    path = Path(path)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return path


def read_decisions(path: str | Path) -> pd.DataFrame:
    """Read a decisions table written by :func:`write_decisions` (or by hand).

    Parameters
    ----------
    path : str or pathlib.Path
        A CSV file with the columns ``label_id``, ``plane`` (empty for 2D, ``3``
        or ``(1, 2)`` in a stack) and ``decision`` (one of
        :data:`~.review.DECISIONS`); other columns are kept as text.

    Returns
    -------
    pandas.DataFrame
        ``label_id`` as int64, ``plane`` as None, an int or a tuple, ``decision``
        as text ("" for none), one row per object.

    Raises
    ------
    FileNotFoundError
        For a path that is not a file.
    ValueError
        For a table without those columns, with ids that are not whole numbers,
        unknown decisions, or an object listed twice, naming the problem.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No such decisions table: {path}")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ValueError(f"{path.name} is not a CSV table ({err}): save the decisions from the "
                         "review widget (Save decisions) or write_decisions().") from err
    missing = [c for c in FILE_COLUMNS if c not in table]
    if missing:
        raise ValueError(f"{path.name} has no {missing} column: a decisions table has the columns "
                         f"{list(FILE_COLUMNS)} (Save decisions in the review widget writes them).")
    ids = pd.to_numeric(table["label_id"].str.strip(), errors="coerce")
    bad = table["label_id"][ids.isna() | (ids % 1 != 0) | (ids < 1)]
    if len(bad):
        raise ValueError(f"{path.name}: label_id {bad.iloc[0]!r} (row {bad.index[0] + 2}) is not an "
                         "object id (a whole number above 0).")
    try:
        planes = [object_key(p.strip(), 0)[0] for p in table["plane"]]
    except ValueError as err:
        raise ValueError(f"{path.name}: a plane is not an index ('', '3' or '(1, 2)'): {err}") from err
    decisions = table["decision"].str.strip()
    unknown = sorted(set(decisions) - set(DECISIONS))
    if unknown:
        raise ValueError(f"{path.name}: unknown decisions {unknown}; a decision is one of {DECISIONS}.")
    out = table.copy()
    out["label_id"], out["plane"], out["decision"] = ids.astype(np.int64), planes, decisions
    keys = [object_key(p, i) for p, i in zip(out["plane"], out["label_id"], strict=True)]
    seen: set = set()
    for key in keys:
        if key in seen:
            raise ValueError(f"{path.name} lists object {key[1]}" + ("" if key[0] is None else
                             f" of plane {key[0]}") + " twice: one row per object.")
        seen.add(key)
    return out.reset_index(drop=True)


def decisions_by_key(table: pd.DataFrame) -> dict[tuple, str]:
    """``{(plane, label_id): decision}`` of a decisions table (for :func:`~.review.apply_decisions`)."""
    return {object_key(p, i): str(d) for p, i, d in
            table[["plane", "label_id", "decision"]].itertuples(index=False)}


def review_rows(table: pd.DataFrame) -> pd.DataFrame:
    """A decisions table as a review's rows (labels opened without their table: the file is it).

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`read_decisions`' table.

    Returns
    -------
    pandas.DataFrame
        :data:`~.review.REVIEW_COLUMNS`, worst first: the estimates and the area
        ratio as numbers (NaN where empty or missing), the status as written
        ("ok" for a table without one).
    """
    out = pd.DataFrame({"label_id": table["label_id"], "plane": table["plane"]})
    for column in ("iou_coarse", "area_ratio", *ESTIMATES[1:]):
        out[column] = (pd.to_numeric(table[column], errors="coerce").astype(float) if column in table
                       else np.nan)
    out["status"] = table["status"].astype(str) if "status" in table else "ok"
    out["decision"] = table["decision"]
    return sort_review(out[list(REVIEW_COLUMNS)])


def merge_decisions(rows: pd.DataFrame, table: pd.DataFrame, name: str = "the table",
                    layer_name: str = "the layer") -> pd.DataFrame:
    """The review's rows with the decisions of ``table`` (:func:`read_decisions`).

    Objects the table does not list keep their decision.

    Parameters
    ----------
    rows : pandas.DataFrame
        :func:`~.review.review_table`'s rows.
    table : pandas.DataFrame
        A decisions table.
    name, layer_name : str
        The table's and the layer's names, for the messages.

    Returns
    -------
    pandas.DataFrame
        A copy of ``rows``.

    Raises
    ------
    ValueError
        When the table lists objects the review has not (another layer's table,
        or a stack's table for a 2D layer or the other way round).
    """
    ours = [object_key(p, i) for p, i in zip(rows["plane"], rows["label_id"], strict=True)]
    given = decisions_by_key(table)
    unknown = [k for k in given if k not in set(ours)]
    if unknown:
        what = ", ".join(str(i) if p is None else f"{i} (plane {p})" for p, i in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        saved = ""
        if "layer" in table and len(table) and str(table["layer"].iloc[0]) not in ("", layer_name):
            saved = f" It was saved from {str(table['layer'].iloc[0])!r}."
        raise ValueError(f"{name} lists objects that {layer_name} has not: {what}{more}.{saved} "
                         "Load it into the refined layer it was saved from.")
    out = rows.copy()
    out["decision"] = [given.get(k, d) for k, d in zip(ours, out["decision"], strict=True)]
    return out


def _numbers(text: str, what: str, label_id) -> np.ndarray:
    try:
        return np.array([float(v) for v in text.replace(";", " ").split()])
    except ValueError as err:
        raise ValueError(f"object {label_id}'s {what} {text!r} are not numbers") from err


def saved_prompts(table: pd.DataFrame, coarse) -> dict[tuple, ObjectPrompts]:
    """The edited prompts a decisions table holds, as ``refine(..., prompts=...)`` takes them.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`read_decisions`' table.
    coarse : numpy.ndarray
        The coarse labels the refinement was made from (2D or a stack): each
        object's Gaussian mask prompt is mined from its coarse mask again.

    Returns
    -------
    dict
        ``{(plane, label_id): ObjectPrompts}`` of the objects with saved prompts
        (points, box, strength from the table); ``{label_id: prompts}`` of a 2D
        table is ``{k[1]: v for k, v in saved.items()}``.
    """
    if "prompt_box" not in table:
        return {}
    coarse = np.asarray(coarse)
    out = {}
    for _, row in table.iterrows():
        if not str(row["prompt_box"]).strip():
            continue
        key = object_key(row["plane"], row["label_id"])
        lead = () if key[0] is None else ((key[0],) if np.isscalar(key[0]) else tuple(key[0]))
        (base,) = excavate_prompts(coarse[lead], label_ids=[key[1]], cebox=None)
        points = _numbers(str(row.get("prompt_points", "")), "prompt points", key[1]).reshape(-1, 3)
        box = _numbers(str(row["prompt_box"]), "prompt box", key[1]).astype(np.int64)
        if box.shape != (4,):
            raise ValueError(f"object {key[1]}'s prompt box {row['prompt_box']!r} is not x1 y1 x2 y2")
        strength = str(row.get("prompt_strength", "")).strip()
        out[key] = replace(base, points=points[:, :2], point_labels=points[:, 2].astype(np.int64),
                           box=box, expanded=bool((box != base.tight_box).any()),
                           strength=float(strength) if strength else base.strength)
    return out
