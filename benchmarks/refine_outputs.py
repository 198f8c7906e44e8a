"""Save refine's outputs on the bundled data, or compare two saved runs exactly.

Runs ``refine`` with a tiny random-weight SAM (``napari_samrefine.testing.tiny_sam``)
on the StarDist images of tests/data in several configurations (instance,
semantic, ``label_ids``, 3D planes, boolean and 0/255 binary masks with
``binary="components"`` and ``"one"``, ``tile=128`` on a 256 px image, float
image with uint64 ids near 2**46) and saves the labels, the table, the prompts
and the progress calls. Comparing two saves (e.g. before and after a change to
the code) prints, per configuration, whether each is exactly equal.

    python benchmarks/refine_outputs.py save before.pkl     # on the old code
    python benchmarks/refine_outputs.py save after.pkl      # on the new code
    python benchmarks/refine_outputs.py compare before.pkl after.pkl

Takes about half a minute on 2 CPU threads. Progress messages may change
wording between versions; labels, tables and prompts should not.
"""

from __future__ import annotations

import argparse
import pickle
import warnings
from pathlib import Path

import numpy as np
import tifffile

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "stardist"


def cases() -> dict:
    img2, lab2 = tifffile.imread(DATA / "img2d.tif"), tifffile.imread(DATA / "mask2d.tif")
    img3, lab3 = tifffile.imread(DATA / "img3d.tif"), tifffile.imread(DATA / "mask3d.tif")
    i256, l256 = img2[:256, :256], lab2[:256, :256]
    classes = (l256 > 0).astype(np.uint8) * 3 + ((l256 % 2 == 1) & (l256 > 0))
    return {
        "instance": (i256, l256, {}),
        "instance 512, T=2": (img2, lab2, {"iterations": 2}),
        "semantic": (i256, classes, {"mode": "semantic"}),
        "label_ids": (i256, l256, {"label_ids": [3, 5, 99, int(l256.max())]}),
        "3D planes": (img3[..., :128, :128], lab3[..., :128, :128], {"planes": [1, 3], "iterations": 2}),
        "bool mask": (i256, l256 > 0, {}),
        "0/255 mask": (i256, (l256 > 0).astype(np.uint8) * 255, {}),
        "bool mask, one": (i256, l256 > 0, {"binary": "one"}),
        "tile=128": (i256, l256, {"tile": 128}),
        "tile=128 semantic": (i256, (l256 > 0).astype(np.uint16), {"tile": 128, "mode": "semantic"}),
        "float image, uint64 ids": (i256.astype(np.float32) * 3.3, l256.astype(np.uint64) * 2**40,
                                    {"iterations": 2}),
    }


def save(path: str) -> None:
    import napari_samrefine as nsr
    from napari_samrefine.engine.embedding import EmbeddingCache
    from napari_samrefine.testing import tiny_sam

    sam = tiny_sam()
    out = {}
    for name, (image, labels, options) in cases().items():
        calls: list = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = nsr.refine(image, labels, sam, embedding_cache=EmbeddingCache(),
                                progress=lambda *a, _c=calls: _c.append(a), **options)
        prompts = [
            None if p is None else {f: getattr(p, f) for f in p.__dataclass_fields__}
            for p in result.prompts
        ]
        out[name] = dict(labels=np.asarray(result.labels), table=result.table(),
                         prompts=prompts, progress=calls)
        print(f"{name}: {len(result.objects)} objects")
    with open(path, "wb") as f:
        pickle.dump(out, f)


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return (isinstance(b, np.ndarray) and a.dtype == b.dtype
                and np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if hasattr(a, "equals"):
        return a.equals(b)
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    return a == b


def compare(before: str, after: str) -> None:
    with open(before, "rb") as f:
        a = pickle.load(f)
    with open(after, "rb") as f:
        b = pickle.load(f)
    print("| configuration | labels | table | prompts | progress |\n|---|---|---|---|---|")
    for name in a:
        same = ["same" if _equal(a[name][k], b[name][k]) else "DIFFERENT"
                for k in ("labels", "table", "prompts", "progress")]
        print(f"| {name} | " + " | ".join(same) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("save").add_argument("path")
    cmp = sub.add_parser("compare")
    cmp.add_argument("before")
    cmp.add_argument("after")
    args = parser.parse_args()
    if args.command == "save":
        save(args.path)
    else:
        compare(args.before, args.after)


if __name__ == "__main__":
    main()
