"""What each widget field means, in plain words: the fields' tooltips.

docs/napari.md describes every field with these same sentences (a GUI test
checks that each tooltip appears there word for word), so change both together.
"""

from __future__ import annotations

from napari_samrefine.judge.fss_seggpt import DEFAULT_MODEL
from napari_samrefine.pipeline.options import DEFAULTS

__all__ = ["HELP", "JUDGE_HELP", "TEACH_HELP", "set_help"]

HELP = {
    # layers
    "image": "The image SAM looks at: grey, RGB or multichannel, 2D or a stack, the same size as the labels.",
    "coarse labels": (
        "The masks to refine: a Labels layer from a threshold, cellpose, stardist or a brush. "
        "It is not changed unless output is in place."
    ),
    "prompt labels": "The Labels layer whose objects' prompts are shown; on a stack, the plane the viewer shows.",
    "box image": "The image the labels belong to; needed only to grow the boxes.",
    # what to refine
    "mode": (
        "Instances: each label value is one object. Semantic classes: each value is a class "
        "whose separate pieces are refined one by one and merged back (split-then-merge)."
    ),
    "objects": "All objects, or only the label selected in the labels layer (the label the brush paints with).",
    "planes": (
        "On a stack: only the plane the viewer shows, every plane of the time point it shows "
        "(4D stacks), or every plane. Each plane is refined on its own; 2D layers have one plane."
    ),
    # prompts
    "points": "Give SAM a point inside each object, where the object is thickest.",
    "negative point": "Give SAM a point outside each object but inside its box: what to leave out.",
    "box": "Give SAM each object's box (grown into similar-looking surroundings when box growth is above 0).",
    "mask prompt": "Give SAM a soft copy of each coarse mask: strong along its middle, fading towards its edge.",
    "grow boxes": (
        "Grow each box into surroundings that look like the object, as refinement does "
        "(CEBox); needs the image and a model."
    ),
    "box growth": (
        "How readily a box side moves out into pixels that look like the object (context-aware "
        "elastic box, CEBox lambda): the fraction of similar pixels it takes. "
        f"{DEFAULTS.cebox_lambda:g} by default; 0 keeps the tight box."
    ),
    "iterations": (
        "Rounds of refinement: each round prompts SAM with the previous round's mask; objects "
        "that stop changing leave early. 'model default' (the default) takes the number "
        "measured best for the chosen model."
    ),
    "keep": (
        "Which mask each refined object keeps: 'refined', SAM's (as the SAMRefiner paper does), "
        "or 'better', the coarse mask where SAM's overlaps it too little, an estimate made "
        "without ground truth that the refinement made it worse (status kept-coarse). "
        "'model default' (the default) takes the policy measured best for the chosen model."
    ),
    "object scale": (
        "How much each object is zoomed for the model. 'auto' (the default) zooms each object "
        "to the size the chosen model refines best (where that size is measured); a number "
        "zooms every object that many times (it is refined in a window of the model's input "
        "size divided by it); 'none' gives the model the whole image (or its tiles)."
    ),
    # output
    "output": (
        "A new layer '<labels> refined' (default), or in place: the labels layer itself, as one "
        "undo step (Ctrl+Z restores the coarse labels)."
    ),
    "IoU adaptor": (
        "Optional: a .pt file saved by the IoU adaption widget; it tunes how SAM picks among its "
        "candidate masks for your images."
    ),
    # the model
    "model": (
        "The SAM model: a registry model is downloaded into the cache on first use (the list "
        "says which are there already); 'local file...' takes a checkpoint you copied by hand."
    ),
    "checkpoint": "A SAM checkpoint file (.pt or .pth) copied by hand; used when the model is 'local file...'.",
    "device": (
        "Where SAM runs: cuda (an NVIDIA GPU), mps (an Apple GPU) or cpu. Only devices that "
        "work on this machine are listed."
    ),
    # IoU adaption
    "training image": "An image to adapt to, with its coarse labels below; add as many pairs as you like.",
    "training labels": "The coarse labels of that image (no ground truth is needed).",
    "pairs": "The image and labels pairs to train on; select some and press Remove to drop them.",
    "image folder": "Or train on a folder of images instead of layers ...",
    "label folder": "... with their coarse labels in this folder, matched by file name.",
    "epochs": "Passes over the training objects; 1 by default.",
    "save adaptor to": "The .pt file to write the adaptor to, for the refine widget's IoU adaptor field.",
}
"""Tooltip of each field, by a short key (usually the field's label)."""

JUDGE_HELP = {
    "query image": "The image whose objects are judged: 2D, RGB or a stack (the plane the "
    "viewer shows is judged).",
    "coarse labels": "The labels before refinement (a Labels layer the size of the query "
    "image; 0 is background). Each object is judged against the refined object with the "
    "same label value.",
    "refined labels": "The refinement of the coarse labels, with the same label values (as "
    "SAM refine writes them). Its selected label is the object judged with objects "
    "'selected label'. The verdict and accepted layers are drawn over it.",
    "objects": "Which objects to judge: 'all objects' of the displayed plane (default), or "
    "only the selected label of the refined labels layer (one object: the quickest run).",
    "support image": "An image of the same kind of objects with trusted labels (e.g. a field "
    "you corrected by hand); its displayed plane is used.",
    "support labels": "The trusted labels of the support image (0 is background).",
    "add support pair": "Add the support image and labels above to the list; each judged "
    "object uses the k support objects closest in size from all pairs.",
    "support pairs": "The support pairs the judge uses (if none is added, the pair in the two "
    "fields above).",
    "remove support pairs": "Remove the pairs selected in the list.",
    "backend": "The few-shot segmentation model: 'sam' (default) runs PerSAM-style on the SAM "
    "model below, nothing more to download; 'seggpt' runs SegGPT, the JFS paper's model "
    "(the seggpt extra, 370 M parameters, on the CPU).",
    "SegGPT model": f"A folder written by save_pretrained (works offline), or a Hugging Face "
    f"hub id (default {DEFAULT_MODEL}: 370 M parameters, about 1.5 GB, downloaded once into "
    "the Hugging Face cache, which needs network the first time).",
    "masking": "How SAM describes the object under its mask (sam backend). HM, hybrid "
    "(default): the image's features under the mask, those that are not positive replaced by "
    "the features of the object encoded alone. FM, feature: the image's features under the "
    "mask (1 encoder pass per object: the quickest). IM, input: the image blanked outside "
    "the mask, encoded again. HM and IM take 3 encoder passes per object.",
    "tau": "The margin of a verdict, in IoU (0 to 1, default 0.02): improved when the "
    "prediction made from the refined mask matches the support labels better than the one "
    "from the coarse mask by more than tau, degraded when worse by more than tau, else "
    "uncertain (also when the two masks are nearly the same).",
    "k (supports per object)": "Support objects per judged object (k-shot), the k closest in "
    "size over all pairs; each adds predictions and, on a CPU, time. Default 3 (JFS's k) on "
    "a GPU, 1 on a CPU to keep runs short.",
    "show SMP": "Also show SMP1 and SMP2, the predictions made from the coarse and from the "
    "refined mask, as 0-1 probability images over each support image.",
    "table CSV": "The file 'Save table' writes the per-object table to (comma-separated; "
    ".csv is added when the name has no suffix).",
    "save table": "Write the last run's per-object table to the CSV file.",
    "verdicts": "The colours of the verdict layer; hover over an object in the viewer to read "
    "its verdict in the status bar.",
    "judge": "Judge the objects (in the background; the status line says how long it takes).",
    "cancel": "Stop the run; no layer is changed.",
}
"""Tooltips of the JFS judge widget's fields and buttons, by a short key."""


def set_help(widget, key: str) -> None:
    """Give ``widget`` the tooltip ``HELP[key]``."""
    widget.tooltip = HELP[key]

TEACH_HELP = {
    "image": "An image whose labels you corrected, with those labels below; add as many pairs as you like.",
    "corrected labels": "The corrected (true) instance labels of that image: what the model learns to answer.",
    "pairs": "The image and labels pairs to teach on; select some and press Remove to drop them.",
    "epochs": "At most this many passes over the training objects; teaching stops earlier when "
    "the validation IoU stops improving, and the best epoch is kept.",
    "turns and flips": "Also teach on the 8 turns and flips of each window: more examples "
    "from the same images, longer teaching.",
    "max minutes": "Stop after this many minutes of training, keeping the best epoch so far "
    "(0: no limit).",
    "encoder adaptors (rank)": "0: only the decoder learns (the embeddings are computed once). "
    "Above 0: the image encoder learns too, through low-rank adaptors of this rank in its "
    "attention; each step encodes its window again, which is slow without a GPU.",
    "save taught model to": "The .pt file to write the taught model to; it is then offered "
    "in every model field as '<base> + <file name>'.",
    "log": "One line per epoch: the training loss and the validation IoU, beside the coarse masks' own.",
}
"""Tooltips of the "Teach the model" widget's fields, by a short key."""
