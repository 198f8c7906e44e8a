"""Macro: refine every image/labels pair open in napari and save the results.

Run it from napari's console (``%run examples/refine_open_images.py``) or as a
script. Pairs are found by name: an Image layer "X" and a Labels layer "X coarse".
"""

from pathlib import Path

import tifffile

import napari_samrefine as nsr


def refine_open_images(viewer, sam, out_dir, suffix=" coarse", **refine_kwargs):
    """Refine each Labels layer named "<image> coarse" against its image; save TIFFs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = []
    images = [layer for layer in viewer.layers if layer._type_string == "image"]
    for image in images:
        coarse_name = image.name + suffix
        if coarse_name not in viewer.layers:
            continue
        refined = nsr.refine_layers(viewer, image=image.name, labels=coarse_name, sam=sam, **refine_kwargs)
        path = out_dir / f"{image.name}_refined.tif"
        tifffile.imwrite(path, refined.data)
        refined.metadata["samrefine_table"].to_csv(path.with_suffix(".csv"), index=False)
        saved.append(path)
    return saved


if __name__ == "__main__":
    import napari

    viewer = napari.Viewer()
    viewer.open_sample("napari-samrefine", "nuclei")
    sam = nsr.load_sam("vit_b_lm")  # or nsr.load_sam("/path/to/checkpoint.pth")
    for path in refine_open_images(viewer, sam, "refined"):
        print("saved", path)
    napari.run()
