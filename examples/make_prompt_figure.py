"""Make docs/images/prompts.png: the prompts SAMRefiner mines from coarse nuclei masks.

Panels, for a crop of the bundled sample: (1) the image with the coarse masks'
outlines, tight boxes, positive (green) and negative (magenta) points; (2) the
distance map D+ of the coarse masks; (3) the Gaussian mask prompts G; (4) the mask
input SAM receives for the largest nucleus, a crop of its 256 x 256 low-res frame
(for the published 1024-px models): -15 (black) off the object, up to +15 on it.
No model is needed. Run: ``python examples/make_prompt_figure.py``.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries

from napari_samrefine._napari.sample_data import load_nuclei
from napari_samrefine.samrefiner.prompts import excavate_prompts

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "prompts.png"
ZOOM = 4
Y0, X0, SIZE = 150, 60, 100


def to_rgb(grey: np.ndarray) -> np.ndarray:
    g = grey.astype(float)
    g = (255 * (g - g.min()) / max(np.ptp(g), 1e-9)).astype(np.uint8)
    return np.repeat(g[..., None], 3, -1)


def enlarge(rgb: np.ndarray) -> Image.Image:
    return Image.fromarray(rgb).resize((rgb.shape[1] * ZOOM, rgb.shape[0] * ZOOM), Image.NEAREST)


image, coarse = load_nuclei()
crop = (slice(Y0, Y0 + SIZE), slice(X0, X0 + SIZE))
img, lab = image[crop], coarse[crop]
prompts = excavate_prompts(lab, cebox=None)

# 1: image, outlines, boxes, points
rgb = to_rgb(img)
rgb[find_boundaries(lab, mode="inner")] = (255, 200, 0)
panel1 = enlarge(rgb)
draw = ImageDraw.Draw(panel1)
for p in prompts:
    x1, y1, x2, y2 = p.tight_box
    draw.rectangle([x1 * ZOOM, y1 * ZOOM, (x2 + 1) * ZOOM - 1, (y2 + 1) * ZOOM - 1], outline=(255, 220, 0))
    for (x, y), label in zip(p.points, p.point_labels, strict=True):
        c = (30, 230, 60) if label == 1 else (255, 30, 200)
        cx, cy = (x + 0.5) * ZOOM, (y + 0.5) * ZOOM
        draw.ellipse([cx - 6, cy - 6, cx + 6, cy + 6], fill=c, outline=(0, 0, 0))

# 2: distance map D+ of each object (the image border is not background)
dist = np.zeros(lab.shape, float)
for i in np.unique(lab)[1:]:
    dist = np.maximum(dist, ndi.distance_transform_edt(lab == i))
panel2 = enlarge(to_rgb(dist))

# 3: Gaussian mask prompts
gauss = np.max([p.gaussian_full(lab.shape) for p in prompts], axis=0)
g8 = (255 * gauss).astype(np.uint8)
panel3 = enlarge(np.stack([g8, (0.6 * g8).astype(np.uint8), np.zeros_like(g8)], -1))

# 4: mask input of the largest object, in SAM's low-res frame of the whole image
full = excavate_prompts(coarse, cebox=None)
big = max(full, key=lambda p: p.gaussian.size)
m = big.mask_input
rows, cols = np.nonzero(m > 0)
r0, c0 = max(rows.min() - 8, 0), max(cols.min() - 8, 0)
side = max(rows.max() - r0, cols.max() - c0) + 9
m = m[r0 : r0 + side, c0 : c0 + side]  # the object's neighbourhood in the 256 x 256 frame
m8 = ((m - m.min()) / max(np.ptp(m), 1e-9) * 255).astype(np.uint8)
panel4 = Image.fromarray(to_rgb(m8)).resize((SIZE * ZOOM, SIZE * ZOOM), Image.NEAREST)

W = SIZE * ZOOM
figure = Image.new("RGB", (4 * W + 30, W), (255, 255, 255))
for i, panel in enumerate([panel1, panel2, panel3, panel4]):
    figure.paste(panel, (i * (W + 10), 0))
OUT.parent.mkdir(parents=True, exist_ok=True)
figure.save(OUT, optimize=True)
print("saved", OUT)
