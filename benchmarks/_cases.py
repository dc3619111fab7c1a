"""Benchmark cases shared by every representation benchmark.

``make_cases(quick=False) -> list[Case]``: ground-truth label images (int32)
and, where one exists, the matching raw image (float32, not normalised):

* ``synth-1024``  synthetic 1024x1024, 500 star-convex touching cells (seed 0)
* ``synth-2048``  synthetic 2048x2048, 2000 cells (seed 1; not in ``quick``)
* ``dsb-fluo-*``  DSB2018 fluorescence masks (the ones with most nuclei)
* ``dic-st``      DIC-C2DH-HeLa silver-truth frame (01_ST/SEG/man_seg000.tif)
* ``fluo-gt``     Fluo-N2DL-HeLa gold-truth frame (01_GT/SEG/man_seg013.tif)

Real cases are read from ``$CELLSEG_DATA`` (default ``../shared/data``); when it
is absent they are skipped with a printed note. The data is never copied.

``ap(y_true, y_pred)`` gives AP at IoU 0.5 and 0.75 (TP/(TP+FP+FN) after
one-to-one matching, the DSB 2018 / StarDist convention) through
``cellseg.metrics.matching`` when available, else a small local fallback.
"""
from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

__all__ = ["Case", "make_cases", "data_dir", "ap", "median_time"]


_CASE_NAMES = ("synth-1024", "synth-2048", "dsb-fluo-", "dic-st", "fluo-gt")


@dataclass
class Case:
    name: str
    labels: np.ndarray  # int32 ground truth, 0 = background
    image: np.ndarray | None = None  # float32 raw image (same YX shape) or None
    note: str = ""

    @property
    def n_objects(self) -> int:
        return int(np.unique(self.labels).size - (1 if (self.labels == 0).any() else 0))


def data_dir() -> Path:
    return Path(os.environ.get("CELLSEG_DATA", REPO.parent / "shared" / "data")).resolve()


def _synthetic(name, shape, n, seed) -> Case:
    from cellseg.datasets.synthetic import synthetic_cells

    img, lab = synthetic_cells(shape, n_cells=n, seed=seed)
    return Case(name, np.ascontiguousarray(lab, np.int32), img, f"synthetic {shape[0]}x{shape[1]}, {n} cells")


def _read_tif(p: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(str(p))


def _dsb_cases(root: Path, k: int) -> list[Case]:
    idx = root / "index.csv"
    with open(idx, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["kind_heuristic"] == "fluorescence"]
    rows.sort(key=lambda r: (-int(r["n_nuclei"]), r["id"]))
    out = []
    for r in rows[:k]:
        lab = _read_tif(root / "masks" / f"{r['id']}.tif").astype(np.int32)
        img = None
        png = root / "images" / f"{r['id']}.png"
        if png.exists():
            try:
                from PIL import Image

                img = np.asarray(Image.open(png))[..., 0].astype(np.float32)
            except Exception:  # the image is optional
                img = None
        out.append(Case(f"dsb-fluo-{r['id'][:6]}", lab, img, f"DSB2018 fluorescence {lab.shape}"))
    return out


def make_cases(quick: bool = False, verbose: bool = True, names=None) -> list[Case]:
    """Benchmark cases (see module docstring); ``quick`` keeps one synthetic and two real ones.

    ``names``: if given, only the cases whose name starts with one of these
    strings (``"dsb-fluo"`` selects all DSB cases); the others are not built.
    """
    if names is not None:
        names = tuple(names)
        unknown = [n for n in names if not any(k.startswith(n) for k in _CASE_NAMES)]
        if unknown:
            raise ValueError(f"unknown case names {unknown}; choose from {list(_CASE_NAMES)}")

    def want(name: str) -> bool:
        return names is None or any(name.startswith(n) for n in names)

    cases = [_synthetic("synth-1024", (1024, 1024), 500, 0)] if want("synth-1024") else []
    if not quick and want("synth-2048"):
        cases.append(_synthetic("synth-2048", (2048, 2048), 2000, 1))
    d = data_dir()
    if not d.is_dir():
        if verbose:
            print(f"note: real data not found at {d} (set CELLSEG_DATA); real cases skipped", file=sys.stderr)
        return cases
    dsb = d / "DSB2018-stage1-train-fixed"
    if not want("dsb-fluo-"):
        pass
    elif (dsb / "index.csv").exists():
        cases += _dsb_cases(dsb, 1 if quick else 3)
    elif verbose:
        print(f"note: {dsb} missing; DSB cases skipped", file=sys.stderr)
    dic = d / "DIC-C2DH-HeLa"
    if not want("dic-st"):
        pass
    elif (dic / "01_ST" / "SEG" / "man_seg000.tif").exists():
        lab = _read_tif(dic / "01_ST" / "SEG" / "man_seg000.tif").astype(np.int32)
        raw = dic / "01" / "t000.tif"
        img = _read_tif(raw).astype(np.float32) if raw.exists() else None
        cases.append(Case("dic-st", lab, img, "DIC-C2DH-HeLa 01 silver truth t000"))
    elif verbose:
        print(f"note: {dic} silver truth missing; DIC case skipped", file=sys.stderr)
    fluo = d / "Fluo-N2DL-HeLa"
    if quick or not want("fluo-gt"):
        pass
    elif (fluo / "01_GT" / "SEG" / "man_seg013.tif").exists():
        lab = _read_tif(fluo / "01_GT" / "SEG" / "man_seg013.tif").astype(np.int32)
        raw = fluo / "01" / "t013.tif"
        img = _read_tif(raw).astype(np.float32) if raw.exists() else None
        cases.append(Case("fluo-gt", lab, img, "Fluo-N2DL-HeLa 01 gold truth t013"))
    elif verbose:
        print(f"note: {fluo} gold truth missing; Fluo-N2DL case skipped", file=sys.stderr)
    return cases


# ----------------------------------------------------------------------------- metrics


def _ap_fallback(y_true: np.ndarray, y_pred: np.ndarray, thresholds) -> list[float]:
    from scipy.optimize import linear_sum_assignment

    t = np.asarray(y_true).ravel().astype(np.int64)
    p = np.asarray(y_pred).ravel().astype(np.int64)
    ti, t_inv = np.unique(t, return_inverse=True)
    pi, p_inv = np.unique(p, return_inverse=True)
    overlap = np.zeros((ti.size, pi.size), np.int64)
    np.add.at(overlap, (t_inv, p_inv), 1)
    area_t, area_p = overlap.sum(1), overlap.sum(0)
    keep_t, keep_p = ti != 0, pi != 0
    overlap = overlap[keep_t][:, keep_p]
    area_t, area_p = area_t[keep_t], area_p[keep_p]
    n_t, n_p = overlap.shape
    out = []
    for th in thresholds:
        if n_t == 0 and n_p == 0:
            out.append(1.0)
            continue
        if n_t == 0 or n_p == 0:
            out.append(0.0)
            continue
        iou = overlap / (area_t[:, None] + area_p[None, :] - overlap)
        r, c = linear_sum_assignment(-(iou * (iou >= th)))
        tp = int(np.count_nonzero(iou[r, c] >= th))
        out.append(tp / (n_t + n_p - tp))
    return out


def ap(y_true: np.ndarray, y_pred: np.ndarray, thresholds=(0.5, 0.75)) -> list[float]:
    """AP at each IoU threshold (TP/(TP+FP+FN), one-to-one matching)."""
    try:
        from cellseg.metrics import matching  # type: ignore
    except Exception:
        return _ap_fallback(y_true, y_pred, thresholds)
    return [float(matching(y_true, y_pred, thresh=th).accuracy) for th in thresholds]


def median_time(fn, repeat: int) -> tuple[float, object]:
    """Median wall time of ``repeat`` calls of ``fn()`` and its last result."""
    import time

    times, res = [], None
    for _ in range(max(1, int(repeat))):
        t0 = time.perf_counter()
        res = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), res


def alternate(fa, fb, repeat: int, warm: bool = True):
    """Run ``fa`` (ours) and ``fb`` (the peer, or None) alternately ``repeat`` times;
    return (median seconds of fa, median of fb or None, last result of fa, last of fb).

    ``warm``: one untimed call of each first (the first call on a new image
    size pays one-off costs -- fresh memory, lazily built tables -- that
    otherwise land in the median of a few repeats)."""
    import time

    ta, tb, ra, rb = [], [], None, None
    if warm:
        fa()
        if fb is not None:
            fb()
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        ra = fa()
        ta.append(time.perf_counter() - t0)
        if fb is not None:
            t0 = time.perf_counter()
            rb = fb()
            tb.append(time.perf_counter() - t0)
    return float(np.median(ta)), (float(np.median(tb)) if tb else None), ra, rb


def roundtrip_label_sets(d: Path, dsb: str | None = "fluorescence") -> dict[str, list[Path]]:
    """Ground-truth label files of the round-trip benchmarks, by set name.

    ``dsb``: ``"fluorescence"`` adds ``dsb-fluo``, ``"all"`` adds ``dsb-all`` and
    ``dsb-fluo``, ``None`` leaves DSB 2018 out. Then ``dic-st`` (DIC-C2DH-HeLa
    silver truth of 01 and 02) and ``fluo-n2dl-gt`` (Fluo-N2DL-HeLa gold truth);
    sets whose folders are absent are left out.
    """
    sets: dict[str, list[Path]] = {}
    root = d / "DSB2018-stage1-train-fixed"
    if dsb and (root / "index.csv").exists():
        with open(root / "index.csv", newline="") as f:
            rows = sorted(csv.DictReader(f), key=lambda r: r["id"])
        if dsb == "all":
            sets["dsb-all"] = [root / "masks" / f"{r['id']}.tif" for r in rows]
        sets["dsb-fluo"] = [root / "masks" / f"{r['id']}.tif" for r in rows if r["kind_heuristic"] == "fluorescence"]
    for seq in ("01", "02"):
        p = d / "DIC-C2DH-HeLa" / f"{seq}_ST" / "SEG"
        if p.is_dir():
            sets.setdefault("dic-st", []).extend(sorted(p.glob("man_seg*.tif")))
    p = d / "Fluo-N2DL-HeLa" / "01_GT" / "SEG"
    if p.is_dir():
        sets["fluo-n2dl-gt"] = sorted(p.glob("man_seg*.tif"))
    return sets


def without_multi_piece(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(y_true', y_pred', k)``: ground-truth ids made of several disconnected
    pieces (8-connectivity; no decoder outputs such an object) set to 0, with
    the predicted objects lying mostly (> 50%) on them; ``k`` = ids removed.
    A second round-trip figure on the objects a decoder can reproduce."""
    from scipy import ndimage as ndi

    gt = np.asarray(y_true).astype(np.int32, copy=True)
    pr = np.asarray(y_pred).astype(np.int32, copy=True)
    multi = []
    for i, sl in enumerate(ndi.find_objects(gt), start=1):
        if sl is not None and ndi.label(gt[sl] == i, structure=np.ones((3,) * gt.ndim))[1] > 1:
            multi.append(i)
    if not multi:
        return gt, pr, 0
    bad = np.zeros(gt.max() + 1, bool)
    bad[multi] = True
    on_bad = bad[gt]
    area = np.bincount(pr.ravel())
    inside = np.bincount(pr[on_bad], minlength=area.size)
    drop = inside > 0.5 * area
    drop[0] = False
    gt[on_bad] = 0
    pr[drop[pr]] = 0
    return gt, pr, len(multi)


def roundtrip_scores(files: list[Path], decode, max_per_set: int | None = None) -> tuple[list, list, list]:
    """``(files, ap50s, ap75s)`` of ``decode(labels)`` against each label file
    (the first ``max_per_set`` files when given)."""
    import tifffile

    files = files[:max_per_set] if max_per_set else files
    a50, a75 = [], []
    for f in files:
        lab = tifffile.imread(str(f)).astype(np.int32)
        x, y = ap(lab, decode(lab))
        a50.append(x)
        a75.append(y)
    return files, a50, a75


def cytoplasm_stain(labels: np.ndarray, seed: int = 0, grow: int = 8) -> np.ndarray:
    """A cytoplasm stain for a fluorescence composite, uint8: the nuclei of ``labels`` grown by
    ``grow`` px into cells (``skimage.segmentation.expand_labels``), each at its own brightness
    (0.2-0.9), with a smooth texture and a little noise."""
    from scipy import ndimage as ndi
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(seed)
    cells = expand_labels(labels, grow)
    gain = np.concatenate([[0.0], rng.uniform(0.2, 0.9, int(labels.max()))])[cells]
    c = ndi.gaussian_filter(gain * ndi.gaussian_filter(rng.random(labels.shape), 2) * 2, 1.5)
    return (np.clip(c + 0.03 * rng.random(labels.shape), 0, 1) * 255).astype(np.uint8)
