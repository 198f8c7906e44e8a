"""Quality benchmark: synthesised coarse masks refined by SAMRefiner configurations and baselines.

For each image / label pair, coarse labels are synthesised from the truth
(:func:`~napari_samrefine.evaluation.defects.synthesize_coarse_labels`, SPEC section 7),
then refined by :func:`napari_samrefine.refine` under several prompt
configurations (the paper's Table 1 ablation, with and without CEBox, and
semantic mode with split-then-merge) and by the weight-free baselines of
:mod:`napari_samrefine.evaluation.baselines`. Every result is scored against the truth.

The command line runs it as ``napari-samrefine benchmark --data DIR``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from napari_samrefine._progress import ProgressCallback, report
from napari_samrefine.evaluation.baselines import CLASSICAL_METHODS, refine_classical
from napari_samrefine.evaluation.defects import synthesize_coarse_labels
from napari_samrefine.evaluation.metrics import boundary_iou, iou, object_ious
from napari_samrefine.samrefiner.defaults import CEBOX_LAMBDA

__all__ = [
    "BenchmarkPair",
    "CONFIGURATIONS",
    "DEFAULT_CONFIGURATIONS",
    "load_pairs",
    "run_benchmark",
    "summarize",
    "to_markdown",
]

#: refine() keyword arguments of each named configuration. "point" is the
#: positive point plus the negative point; "+CEBox" is the context-aware box
#: (the paper's lambda, :data:`~napari_samrefine.samrefiner.defaults.CEBOX_LAMBDA`), the
#: other box configurations use the tight box. Every
#: configuration sets its prompts explicitly, whatever the model's profile;
#: "semantic STM" uses the profile's prompts.
CONFIGURATIONS: dict[str, dict] = {
    "point": dict(use_points=True, use_box=False, use_mask=False, cebox=None),
    "box": dict(use_points=False, use_box=True, use_mask=False, cebox=None),
    "box+CEBox": dict(use_points=False, use_box=True, use_mask=False, cebox=CEBOX_LAMBDA),
    "mask": dict(use_points=False, use_box=False, use_mask=True, cebox=None),
    "point+box": dict(use_points=True, use_box=True, use_mask=False, cebox=None),
    "box+mask": dict(use_points=False, use_box=True, use_mask=True, cebox=None),
    "point+box+mask": dict(use_points=True, use_box=True, use_mask=True, cebox=None),
    "point+box+mask+CEBox": dict(use_points=True, use_box=True, use_mask=True, cebox=CEBOX_LAMBDA),
    "semantic STM": dict(mode="semantic"),
}
DEFAULT_CONFIGURATIONS: tuple[str, ...] = tuple(CONFIGURATIONS)
DEFAULT_BASELINES: tuple[str, ...] = ("identity", "random_walker")


@dataclass(frozen=True)
class BenchmarkPair:
    """One image with its true instance labels.

    Attributes
    ----------
    dataset : str
        Name of the data set (a table row group).
    name : str
        Name of the image.
    image : numpy.ndarray
        2D grey or (H, W, 3|4) colour image.
    labels : numpy.ndarray
        2D integer instance labels (0 = background).
    """

    dataset: str
    name: str
    image: np.ndarray
    labels: np.ndarray


def load_pairs(
    root: str | Path,
    datasets: Sequence[str] = ("dsb2018", "stardist"),
    *,
    include_3d: bool = False,
    max_images: int | None = None,
) -> list[BenchmarkPair]:
    """Read the project's benchmark data (``shared/data``: dsb2018 and stardist).

    Parameters
    ----------
    root : str or Path
        Folder holding ``dsb2018/`` (``index.json``, ``images/*.png``,
        ``labels/*.tif``) and ``stardist/`` (``img2d.tif`` / ``mask2d.tif``,
        ``tests_img2d.tif`` / ``tests_mask2d.tif``, ``img3d.tif`` / ``mask3d.tif``).
    datasets : sequence of str
        Which of "dsb2018" and "stardist" to read.
    include_3d : bool
        Also add the planes of StarDist's synthetic 3D stack that hold objects
        (as the data set "stardist-3d").
    max_images : int, optional
        At most this many images per data set (for quick runs).

    Returns
    -------
    list of BenchmarkPair
    """
    import tifffile
    from PIL import Image

    root = Path(root)
    unknown = set(datasets) - {"dsb2018", "stardist"}
    if unknown:
        raise ValueError(f"Unknown data sets {sorted(unknown)}: choose from dsb2018, stardist.")
    pairs: list[BenchmarkPair] = []
    if "dsb2018" in datasets:
        folder = root / "dsb2018"
        if not (folder / "index.json").is_file():
            raise FileNotFoundError(f"{folder / 'index.json'} not found: pass the folder that holds dsb2018/.")
        index = json.loads((folder / "index.json").read_text())[:max_images]
        for entry in index:
            with Image.open(folder / "images" / f"{entry['file']}.png") as im:
                image = np.asarray(im)
            labels = tifffile.imread(folder / "labels" / f"{entry['file']}.tif")
            pairs.append(BenchmarkPair("dsb2018", entry["file"], image, labels))
    if "stardist" in datasets:
        folder = root / "stardist"
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} not found: pass the folder that holds stardist/.")
        found = []
        for img, lab in (("img2d", "mask2d"), ("tests_img2d", "tests_mask2d")):
            found.append(BenchmarkPair(
                "stardist", img, tifffile.imread(folder / f"{img}.tif"), tifffile.imread(folder / f"{lab}.tif")
            ))
        pairs.extend(found[:max_images])
        if include_3d:
            stack = tifffile.imread(folder / "img3d.tif")
            masks = tifffile.imread(folder / "mask3d.tif")
            planes = [z for z in range(len(masks)) if masks[z].any()][:max_images]
            pairs.extend(BenchmarkPair("stardist-3d", f"img3d[{z}]", stack[z], masks[z]) for z in planes)
    return pairs


def _scores(
    refined: np.ndarray, coarse: np.ndarray, truth: np.ndarray, semantic: bool
) -> dict[str, float]:
    """Mean object IoU / boundary IoU (or foreground IoU in semantic mode) before and after."""
    fg_true = truth > 0
    out = {
        "coarse_miou": iou(coarse > 0, fg_true),
        "refined_miou": iou(refined > 0, fg_true),
    }
    if semantic:
        out.update(
            coarse_iou=out["coarse_miou"],
            refined_iou=out["refined_miou"],
            coarse_biou=boundary_iou(coarse > 0, fg_true),
            refined_biou=boundary_iou(refined > 0, fg_true),
        )
    else:
        before = object_ious(coarse, truth)
        after = object_ious(refined, truth)
        out.update(
            coarse_iou=float(before.iou.mean()),
            refined_iou=float(after.iou.mean()),
            coarse_biou=float(before.boundary_iou.mean()),
            refined_biou=float(after.boundary_iou.mean()),
        )
    return out


def run_benchmark(
    pairs: Iterable[BenchmarkPair | tuple],
    *,
    sam=None,
    configurations: Sequence[str] | Mapping[str, dict] | None = DEFAULT_CONFIGURATIONS,
    baselines: Sequence[str] = DEFAULT_BASELINES,
    iou_range: tuple[float, float] = (0.75, 0.85),
    seed: int = 0,
    refine_kwargs: Mapping | None = None,
    progress: ProgressCallback | None = None,
) -> pd.DataFrame:
    """Synthesise coarse masks, refine them every way asked, and score against the truth.

    Parameters
    ----------
    pairs : iterable of BenchmarkPair or (dataset, image, labels) tuples
        Images with true 2D instance labels.
    sam : Sam, str or path, optional
        The SAM model (or a registry name / checkpoint path, loaded once). Needed
        when ``configurations`` is not empty.
    configurations : sequence of names, mapping of name to refine() kwargs, or None
        SAMRefiner configurations; names refer to :data:`CONFIGURATIONS`. None or
        an empty sequence runs the baselines only.
    baselines : sequence of str
        Weight-free methods of :func:`~napari_samrefine.baselines.refine_classical`.
    iou_range : (float, float)
        IoU window of the synthesised coarse objects.
    seed : int
        Seed of the coarse-mask synthesis.
    refine_kwargs : mapping, optional
        Extra keyword arguments for every refine() call (e.g. ``iterations``,
        ``device``); a configuration's own settings take precedence.
    progress : callable, optional
        ``progress(done, total, message)``; raise :class:`~napari_samrefine.Cancelled` to stop.

    Returns
    -------
    pandas.DataFrame
        One row per image and method: dataset, image, method, kind ("SAMRefiner"
        or "baseline"), n_objects, coarse_in_window (fraction of coarse objects
        whose IoU reached the window), coarse_iou / refined_iou and coarse_biou /
        refined_biou (mean over objects of the IoU / boundary IoU with their true
        object; in semantic mode the foreground IoU / boundary IoU),
        coarse_miou / refined_miou (foreground IoU, i.e. semantic mIoU with one
        class, for every method), time_image_s (wall time of the refinement
        including the image encoding) and time_object_ms.
    """
    if configurations is None:
        configs: dict[str, dict] = {}
    elif isinstance(configurations, Mapping):
        configs = dict(configurations)
    else:
        unknown = [c for c in configurations if c not in CONFIGURATIONS]
        if unknown:
            raise ValueError(f"Unknown configurations {unknown}: choose from {', '.join(CONFIGURATIONS)}.")
        configs = {c: CONFIGURATIONS[c] for c in configurations}
    bad = [b for b in baselines if b not in CLASSICAL_METHODS]
    if bad:
        raise ValueError(f"Unknown baselines {bad}: choose from {', '.join(CLASSICAL_METHODS)}.")
    if configs:
        if sam is None:
            raise ValueError("SAMRefiner configurations need a model: pass sam=... (or configurations=None).")
        from napari_samrefine.models.loading import resolve_sam
        from napari_samrefine.pipeline.refiner import refine

        sam = resolve_sam(sam)
    pairs = [p if isinstance(p, BenchmarkPair) else BenchmarkPair(p[0], str(i), p[1], p[2])
             for i, p in enumerate(pairs)]
    extra = dict(refine_kwargs or {})
    total = len(pairs) * (len(configs) + len(baselines))
    done = 0
    rows = []
    for pair in pairs:
        truth = np.asarray(pair.labels)
        coarse = synthesize_coarse_labels(pair.image, truth, iou_range=iou_range, seed=seed)
        n = len(coarse.label_ids)
        base = dict(dataset=pair.dataset, image=pair.name, n_objects=n,
                    coarse_in_window=float(coarse.in_window.mean()) if n else 1.0)
        jobs = [(name, "SAMRefiner") for name in configs] + [(b, "baseline") for b in baselines]
        for name, kind in jobs:
            report(progress, done, total, f"{pair.name}: {name}")
            semantic = kind == "SAMRefiner" and configs[name].get("mode") == "semantic"
            start = time.perf_counter()
            if kind == "baseline":
                refined = refine_classical(pair.image, coarse.labels, name)
            else:
                # semantic mode refines one class (all foreground) with split-then-merge
                labels_in = (coarse.labels > 0).astype(coarse.labels.dtype) if semantic else coarse.labels
                kwargs = {**extra, "embedding_cache": None, **configs[name]}
                refined = refine(pair.image, labels_in, sam, **kwargs).labels
            seconds = time.perf_counter() - start
            rows.append(dict(
                base, method=name, kind=kind,
                **_scores(refined, coarse.labels, truth, semantic),
                time_image_s=seconds, time_object_ms=1000.0 * seconds / max(n, 1),
            ))
            done += 1
    report(progress, done, total, "done")
    columns = ["dataset", "image", "method", "kind", "n_objects", "coarse_in_window",
               "coarse_iou", "refined_iou", "coarse_biou", "refined_biou",
               "coarse_miou", "refined_miou", "time_image_s", "time_object_ms"]
    return pd.DataFrame(rows, columns=columns)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """One row per data set and method: object-weighted means of the per-image scores.

    Object-level columns (coarse/refined IoU and boundary IoU) are weighted by the
    images' object counts, mIoU and time per image are plain means over images,
    and time per object is the total time over the total object count.
    """
    out = []
    for (dataset, method), g in df.groupby(["dataset", "method"], sort=False):
        w = g["n_objects"].to_numpy(dtype=float)
        w = w if w.sum() > 0 else np.ones_like(w)
        row = dict(dataset=dataset, method=method, images=len(g), objects=int(g["n_objects"].sum()))
        for col in ("coarse_iou", "refined_iou", "coarse_biou", "refined_biou"):
            row[col] = float(np.average(g[col], weights=w))
        row["coarse_miou"] = float(g["coarse_miou"].mean())
        row["refined_miou"] = float(g["refined_miou"].mean())
        row["time_image_s"] = float(g["time_image_s"].mean())
        row["time_object_ms"] = 1000.0 * float(g["time_image_s"].sum()) / max(int(g["n_objects"].sum()), 1)
        out.append(row)
    return pd.DataFrame(out)


def to_markdown(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    """A DataFrame as a GitHub markdown table (no extra dependency)."""
    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return format(float(v), floatfmt)
        return str(v)

    lines = ["| " + " | ".join(map(str, df.columns)) + " |",
             "|" + "|".join("---" for _ in df.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
