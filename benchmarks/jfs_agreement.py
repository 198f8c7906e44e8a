"""How often do JFS verdicts agree with the truth? (real SAM-family weights)

For every image of the project's data (dsb2018 and the two StarDist 2D
images) a coarse mask is synthesised (superpixel defects, IoU with the truth
in [0.75, 0.85], seed 0), a few objects per image are sampled (seeded) and
refined once with ``napari_samrefine.refine`` (the model's default prompts;
``label_ids=`` the sampled objects, which gives them the masks a refinement
of every object gives, since objects are refined independently), and
``judge_refinement`` judges them under every feature masking and k asked for.
The support is another image of the same data set and modality (the next one
in index order, cyclically; for StarDist the other StarDist image) with its
true labels. One embedding cache per image is shared by every
masking and k, so each crop is encoded once.

Truth of an object: "improved" when IoU(refined, truth) > IoU(coarse, truth),
"degraded" when lower, "same" on a tie. Per (masking, k) the script prints the
share of each verdict, the agreement (decided verdicts whose sign matches the
truth, with a Wilson 95 % interval), the accuracy over all objects (uncertain
counts as wrong), the "always improved" baseline, and the mean IoU with the
truth of the coarse, refined, accepted (refined where the verdict is improved)
and oracle (best of coarse / refined) objects.

    OMP_NUM_THREADS=1 python benchmarks/jfs_agreement.py --objects-per-image 2 \
        --output jfs_rows.csv
    python benchmarks/jfs_agreement.py --summarize jfs_rows.csv   # tables from a saved CSV
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (nan, nan when n = 0)."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def modalities(root: Path) -> dict[tuple[str, str], str]:
    """(dataset, image name) -> modality (dsb2018's index.json; StarDist is one modality)."""
    out = {}
    index = root / "dsb2018" / "index.json"
    if index.is_file():
        for entry in json.loads(index.read_text()):
            out[("dsb2018", entry["file"])] = entry["modality"]
    return out


def support_of(i: int, pairs, modality) -> int:
    """Index of the next pair (cyclically) of the same data set and modality, other than i."""
    n = len(pairs)
    for step in range(1, n):
        j = (i + step) % n
        if pairs[j].dataset == pairs[i].dataset and modality(j) == modality(i):
            return j
    raise ValueError(f"No support image of the same data set and modality for {pairs[i].name}.")


def per_object_iou(labels: np.ndarray, truth: np.ndarray) -> dict[int, float]:
    from napari_samrefine.evaluation.metrics import object_ious

    s = object_ious(labels, truth)
    return dict(zip(s.label_ids.tolist(), s.iou.tolist(), strict=True))


def summarize(rows: pd.DataFrame) -> str:
    """The markdown tables of the results."""
    from napari_samrefine.evaluation.benchmark import to_markdown

    first = rows.drop_duplicates(["dataset", "image", "label_id"])
    n = len(first)
    truth_counts = first["truth"].value_counts()
    base = pd.DataFrame(
        [
            {
                "objects": n,
                "images": first[["dataset", "image"]].drop_duplicates().shape[0],
                "truly improved": int(truth_counts.get("improved", 0)),
                "truly degraded": int(truth_counts.get("degraded", 0)),
                "same": int(truth_counts.get("same", 0)),
                "IoU coarse": first["iou_truth_coarse"].mean(),
                "IoU refined": first["iou_truth_refined"].mean(),
                "IoU oracle": np.maximum(
                    first["iou_truth_coarse"], first["iou_truth_refined"]
                ).mean(),
                "IoU(Mc, Mr) >= 0.95": int((first["iou_coarse_refined"] >= 0.95).sum()),
            }
        ]
    )

    table, reasons = [], []
    for (masking, k), g in rows.groupby(["masking", "k"], sort=False):
        decided = g[g["verdict"].isin(["improved", "degraded"]) & (g["truth"] != "same")]
        hits = int((decided["verdict"] == decided["truth"]).sum())
        lo, hi = wilson(hits, len(decided))
        correct = int((g["verdict"] == g["truth"]).sum())
        share = g["verdict"].value_counts(normalize=True)
        table.append(
            {
                "masking": masking,
                "k": int(k),
                "objects": len(g),
                "improved": share.get("improved", 0.0),
                "degraded": share.get("degraded", 0.0),
                "uncertain": share.get("uncertain", 0.0),
                "could not judge": share.get("could not judge", 0.0),
                "agreement": f"{hits / len(decided):.2f} ({hits}/{len(decided)})"
                if len(decided)
                else "-",
                "95% CI": f"{lo:.2f}-{hi:.2f}" if len(decided) else "-",
                "always-improved on decided": (decided["truth"] == "improved").mean()
                if len(decided)
                else math.nan,
                "accuracy": correct / len(g),
                "IoU coarse": g["iou_truth_coarse"].mean(),
                "IoU refined": g["iou_truth_refined"].mean(),
                "IoU accepted": g["iou_truth_accepted"].mean(),
                "IoU oracle": np.maximum(g["iou_truth_coarse"], g["iou_truth_refined"]).mean(),
            }
        )
        unc = g[g["verdict"].isin(["uncertain", "could not judge"])]["reason"].value_counts()
        reasons.append({"masking": masking, "k": int(k), **{r: int(c) for r, c in unc.items()}})
    reasons = pd.DataFrame(reasons).fillna(0)
    for c in reasons.columns[2:]:
        reasons[c] = reasons[c].astype(int)
    out = [
        "Sampled objects and the truth (base rate):", "", to_markdown(base), "",
        "Verdicts against the truth per (masking, k):", "", to_markdown(pd.DataFrame(table), ".2f"), "",
        "Why uncertain or not judged (objects):", "", to_markdown(reasons), "",
    ]  # fmt: skip
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with dsb2018/ and stardist/"
    )
    parser.add_argument("--datasets", nargs="+", default=["dsb2018", "stardist"])
    parser.add_argument("--max-images", type=int, default=None, help="query images per data set")
    parser.add_argument("--objects-per-image", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0, help="coarse masks and object sampling")
    parser.add_argument("--model", default="medsam_lite")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--maskings", nargs="+", default=["fm", "im", "hm"])
    parser.add_argument("--k", nargs="+", type=int, default=[1, 3])
    parser.add_argument("--cache-items", type=int, default=4096, help="embedding cache per image")
    parser.add_argument("--output", type=Path, default=None, help="CSV of per-object rows")
    parser.add_argument(
        "--summarize", type=Path, default=None, help="print the tables of a saved CSV"
    )
    args = parser.parse_args(argv)

    if args.summarize is not None:
        print(summarize(pd.read_csv(args.summarize)))
        return 0

    import torch

    import napari_samrefine as nsr
    from napari_samrefine.engine.embedding import EmbeddingCache
    from napari_samrefine.evaluation.benchmark import load_pairs
    from napari_samrefine.evaluation.defects import synthesize_coarse_labels

    torch.set_num_threads(1)
    start = time.perf_counter()
    pairs = load_pairs(args.data, args.datasets)
    known = modalities(args.data)

    def modality(i: int) -> str:
        return known.get((pairs[i].dataset, pairs[i].name), pairs[i].dataset)

    queries, seen = [], {}
    for i, p in enumerate(pairs):
        seen[p.dataset] = seen.get(p.dataset, 0) + 1
        if args.max_images is None or seen[p.dataset] <= args.max_images:
            queries.append(i)

    sam = nsr.load_sam(args.model, device=args.device)
    rows, timings = [], []
    for qi, i in enumerate(queries):
        t0 = time.perf_counter()
        pair = pairs[i]
        support = pairs[support_of(i, pairs, modality)]
        truth = pair.labels
        coarse = synthesize_coarse_labels(pair.image, truth, seed=args.seed).labels
        ids = np.unique(coarse)
        ids = ids[ids != 0]
        rng = np.random.default_rng([args.seed, zlib.crc32(f"{pair.dataset}/{pair.name}".encode())])
        chosen = sorted(
            int(v)
            for v in rng.choice(ids, size=min(args.objects_per_image, len(ids)), replace=False)
        )
        # objects are refined independently: refining only the sampled ones gives them the
        # masks a whole-image refinement gives (checked), at a fraction of the cost
        # the refined mask itself (keep="refined"): the judge, not the keep policy, decides
        refined = nsr.refine(pair.image, coarse, sam, label_ids=chosen, keep="refined").labels
        t_refine = time.perf_counter() - t0
        iou_c, iou_r = per_object_iou(coarse, truth), per_object_iou(refined, truth)

        cache = EmbeddingCache(max_items=args.cache_items)
        for masking in args.maskings:
            for k in sorted(args.k, reverse=True):
                result = nsr.judge_refinement(
                    pair.image, coarse, refined, support.image, support.labels,
                    sam=sam, masking=masking, k=k, label_ids=chosen, embedding_cache=cache,
                )  # fmt: skip
                iou_a = per_object_iou(result.accepted, truth)
                for rec in result.table().to_dict("records"):
                    lid = int(rec["label_id"])
                    c, r = iou_c.get(lid, 0.0), iou_r.get(lid, 0.0)
                    rows.append({
                        "dataset": pair.dataset, "image": pair.name, "modality": modality(i),
                        "support": support.name, "label_id": lid, "masking": masking, "k": k,
                        "verdict": rec["verdict"], "reason": rec["reason"], "status": rec["status"],
                        "delta": rec["delta"], "delta_soft": rec["delta_soft"], "e1": rec["e1"],
                        "e2": rec["e2"], "agreement": rec["agreement"],
                        "iou_coarse_refined": rec["iou_coarse_refined"],
                        "iou_truth_coarse": c, "iou_truth_refined": r,
                        "iou_truth_accepted": iou_a.get(lid, 0.0),
                        "truth": "improved" if r > c else "degraded" if r < c else "same",
                    })  # fmt: skip
        elapsed = time.perf_counter() - t0
        timings.append({"image": pair.name, "objects": len(chosen), "refine_s": t_refine,
                        "judge_s": elapsed - t_refine, "encoder_passes": cache.misses})  # fmt: skip
        print(
            f"[{qi + 1}/{len(queries)}] {pair.dataset}/{pair.name} ({modality(i)}, support "
            f"{support.name}): {len(chosen)} objects, refine {t_refine:.1f} s, judge "
            f"{elapsed - t_refine:.1f} s, {cache.misses} encoder passes, total "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        if args.output is not None:
            pd.DataFrame(rows).to_csv(args.output, index=False)

    df = pd.DataFrame(rows)
    t = pd.DataFrame(timings)
    wall = time.perf_counter() - start
    print(summarize(df))
    print(
        f"Wall time {wall:.0f} s for {len(queries)} images and {int(t['objects'].sum())} objects "
        f"({wall / max(int(t['objects'].sum()), 1):.1f} s per object; refine {t['refine_s'].sum():.0f} s, "
        f"judge {t['judge_s'].sum():.0f} s, {int(t['encoder_passes'].sum())} encoder passes in the judge)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
