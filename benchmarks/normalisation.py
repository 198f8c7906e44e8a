"""Does a model's input normalisation matter? LiteMedSAM with min-max vs SAM's mean/std input.

For every DSB2018 image of ../shared/data, each true nucleus is refined from
its own tight box (the true labels are the "coarse" labels; ``refine`` with
the box prompt only, one iteration, no CEBox, no tiling, single-mask output)
twice: with LiteMedSAM's profile (the resized image min-max normalised to
[0, 1]) and with the same profile but SAM's pixel mean/std normalisation.
Prints each image's mean object IoU with the truth and the mean over images.

    python benchmarks/normalisation.py            # about 5 minutes on two CPU cores
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

import napari_samrefine as nsr
from napari_samrefine.evaluation.metrics import object_ious
from napari_samrefine.models.profile import set_model_profile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dsb2018"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA, help="the dsb2018 folder")
    parser.add_argument("--max-images", type=int, default=None)
    args = parser.parse_args()
    sam = nsr.load_sam("medsam_lite", device="cpu")
    minmax = nsr.model_profile(sam)
    profiles = {"min-max": minmax, "SAM mean/std": replace(minmax, normalization="sam")}
    index = json.loads((args.data / "index.json").read_text())[: args.max_images]
    rows = []
    print("| image | modality | objects | " + " | ".join(profiles) + " |")
    print("|---|---|---|" + "---|" * len(profiles))
    for entry in index:
        image = np.asarray(Image.open(args.data / "images" / f"{entry['file']}.png"))
        truth = tifffile.imread(args.data / "labels" / f"{entry['file']}.tif")
        scores = []
        for profile in profiles.values():
            set_model_profile(sam, profile)
            result = nsr.refine(image, truth, sam, iterations=1, cebox=None, tile=None,
                                embedding_cache=None)
            scores.append(float(object_ious(result.labels, truth).iou.mean()))
        rows.append(scores)
        cells = " | ".join(f"{s:.3f}" for s in scores)
        print(f"| {entry['file']} | {entry['modality']} | {entry['n_objects']} | {cells} |", flush=True)
    means = " | ".join(f"{m:.3f}" for m in np.mean(rows, axis=0))
    print(f"| mean over {len(rows)} images | | | {means} |")


if __name__ == "__main__":
    main()
