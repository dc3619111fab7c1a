"""The Cell Tracking Challenge (CTC) folder layout.

A CTC dataset folder (``DIC-C2DH-HeLa/``) holds, per sequence ``NN``::

    NN/tTTT.tif              raw frames (``tTTTT.tif`` with 4 digits for long sequences)
    NN_GT/SEG/man_segTTT.tif gold segmentation truth, sparse in time
    NN_ST/SEG/man_segTTT.tif silver truth (machine-made, dense), when provided
    NN_RES/maskTTT.tif       results (written by :func:`write_result`)

3D gold truth is sometimes given as single annotated slices,
``man_seg_TTT_ZZZ.tif`` (or ``man_segTTT_ZZZ.tif``). Those files are not full
label volumes and are **skipped** by :meth:`CTCDataset.pairs` and
:func:`pair_label_folders` (they are listed in :attr:`CTCDataset.skipped`).

Label files are read with :func:`cellseg.io.read_labels` (int32, validated).
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cellseg import io

__all__ = [
    "CTCDataset",
    "CTCFrame",
    "DatasetError",
    "MissingFolderError",
    "PairingError",
    "write_result",
    "pair_label_folders",
    "LABEL_SUFFIXES",
]

#: an image file of a CTC sequence folder (``t000.tif``); group 1 is the frame number
FRAME_RE = re.compile(r"^t(\d{3,4})\.tiff?$", re.IGNORECASE)
_SEG_RE = re.compile(r"^man_seg(\d{3,4})\.tiff?$", re.IGNORECASE)
_SEG_SLICE_RE = re.compile(r"^man_seg_?(\d{3,4})_(\d{3,4})\.tiff?$", re.IGNORECASE)
_MASK_RE = re.compile(r"^mask(\d{3,4})\.tiff?$", re.IGNORECASE)
#: the name of a CTC sequence folder (``01``, ``02``, ...)
SEQ_RE = re.compile(r"^\d{2,}$")
LABEL_SUFFIXES = (".tif", ".tiff", ".png")
TRUTHS = ("GT", "ST")


class DatasetError(ValueError):
    """A dataset folder that does not have the expected layout."""


class MissingFolderError(DatasetError, FileNotFoundError):
    """A folder the layout needs does not exist."""


class PairingError(DatasetError):
    """Ground-truth and prediction files that cannot be paired."""


def short_listing(names, limit: int = 15) -> str:
    """``names`` joined by commas, the first ``limit`` of them and a count of the rest."""
    names = list(names)
    shown = ", ".join(str(n) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def need_dir(path: Path, what: str) -> Path:
    """``path`` when it is a folder; else a :class:`DatasetError` naming it as ``what``."""
    if not path.exists():
        raise MissingFolderError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DatasetError(f"{path}: {what} is not a folder")
    return path


@dataclass(frozen=True)
class CTCFrame:
    """One annotated frame: sequence, time point, image file, label file."""

    seq: str
    t: int
    image_path: Path
    label_path: Path
    axes: str | None = None  # axes of the raw frames when the files do not say (3D CTC sets: "ZYX")

    def read_image(self, axes: str | None = None) -> io.ImageData:
        return io.read_image(self.image_path, axes=axes or self.axes)

    def read_labels(self) -> np.ndarray:
        return io.read_labels(self.label_path)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """``(image array, int32 labels)``; raises if their shapes differ."""
        img = self.read_image().data
        lab = self.read_labels()
        if img.shape != lab.shape:
            raise DatasetError(
                f"{self.label_path}: labels of shape {lab.shape} do not match image {self.image_path} "
                f"of shape {img.shape}"
            )
        return img, lab


class CTCDataset:
    """A CTC dataset folder (sequences ``01/``, ``02/``... with their truths).

    Attributes: ``root``, ``name`` (the folder name), ``sequences`` (sorted
    sequence names, e.g. ``['01', '02']``) and ``skipped`` (3D slice
    annotations ignored so far by :meth:`pairs`). ``axes`` is passed to
    :func:`cellseg.io.read_image` for the raw frames: CTC 3D frames are plain
    multi-page TIFFs whose axes the files do not state, so give ``axes="ZYX"``
    for 3D sets.
    """

    def __init__(self, root, axes: str | None = None):
        self.axes = axes
        self.root = need_dir(Path(root), "CTC dataset folder")
        self.name = self.root.resolve().name
        seqs = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir() and SEQ_RE.match(d.name) and any(FRAME_RE.match(f.name) for f in d.iterdir()):
                seqs.append(d.name)
        if not seqs:
            raise DatasetError(
                f"{self.root}: no CTC sequences found (expected folders like 01/ and 02/ holding t000.tif ...)"
            )
        self.sequences: list[str] = seqs
        self.skipped: list[Path] = []

    def __repr__(self):
        return f"CTCDataset({str(self.root)!r}, sequences={self.sequences})"

    def _seq(self, seq) -> str:
        s = f"{int(seq):02d}" if isinstance(seq, (int, np.integer)) else str(seq)
        if s not in self.sequences:
            raise DatasetError(f"{self.root}: no sequence {s!r}; available: {self.sequences}")
        return s

    def frames(self, seq) -> list[tuple[int, Path]]:
        """All raw frames of a sequence as sorted ``(t, path)`` pairs."""
        s = self._seq(seq)
        out = []
        for f in (self.root / s).iterdir():
            m = FRAME_RE.match(f.name)
            if m:
                out.append((int(m.group(1)), f))
        out.sort()
        ts = [t for t, _ in out]
        if len(set(ts)) != len(ts):
            dup = sorted({t for t in ts if ts.count(t) > 1})
            raise DatasetError(f"{self.root / s}: several files for frame(s) {dup} (e.g. t001.tif and t0001.tif)")
        return out

    def truth_dir(self, seq, truth: str) -> Path:
        """``root/NN_GT/SEG`` or ``root/NN_ST/SEG`` (not checked)."""
        if truth not in TRUTHS:
            raise ValueError(f"truth must be one of {TRUTHS} or 'auto', got {truth!r}")
        return self.root / f"{self._seq(seq)}_{truth}" / "SEG"

    def truths(self, seq) -> list[str]:
        """The truths ('GT', 'ST') that have segmentation files for ``seq``."""
        out = []
        for tr in TRUTHS:
            d = self.truth_dir(seq, tr)
            if d.is_dir() and any(_SEG_RE.match(f.name) for f in d.iterdir()):
                out.append(tr)
        return out

    def pairs(self, seq, truth: str = "auto") -> list[CTCFrame]:
        """Annotated frames of ``seq`` with their labels, sorted by time.

        ``truth``: ``"GT"`` (gold), ``"ST"`` (silver) or ``"auto"`` (GT when the
        sequence has gold segmentation files, else ST). Only frames that have
        that truth are returned. A truth file without its raw frame raises
        :class:`DatasetError`; a missing truth folder raises
        :class:`MissingFolderError` naming it.
        """
        s = self._seq(seq)
        if truth == "auto":
            have = self.truths(s)
            if not have:
                raise MissingFolderError(
                    f"{self.root}: sequence {s} has no segmentation truth "
                    f"(looked for {self.truth_dir(s, 'GT')} and {self.truth_dir(s, 'ST')})"
                )
            truth = have[0]
        seg = need_dir(self.truth_dir(s, truth), f"{truth} segmentation folder of sequence {s}")
        images = dict(self.frames(s))
        out = []
        for f in sorted(seg.iterdir()):
            m = _SEG_RE.match(f.name)
            if m is None:
                if _SEG_SLICE_RE.match(f.name) and f not in self.skipped:
                    self.skipped.append(f)
                continue
            t = int(m.group(1))
            if t not in images:
                raise DatasetError(f"{f}: annotated frame {t} has no raw image in {self.root / s}")
            out.append(CTCFrame(seq=s, t=t, image_path=images[t], label_path=f, axes=self.axes))
        if not out:
            raise DatasetError(
                f"{seg}: no full-frame label files man_segTTT.tif"
                + (" (only 3D slice annotations man_seg_TTT_ZZZ.tif, which are not supported)" if self.skipped else "")
            )
        out.sort(key=lambda fr: fr.t)
        return out

    def all_pairs(self, truth: str = "auto") -> list[CTCFrame]:
        """:meth:`pairs` over every sequence that has the requested truth."""
        out = []
        for s in self.sequences:
            if truth == "auto" and not self.truths(s):
                continue
            if truth in TRUTHS and not self.truth_dir(s, truth).is_dir():
                continue
            out.extend(self.pairs(s, truth))
        if not out:
            raise DatasetError(f"{self.root}: no sequence has {truth} segmentation truth")
        return out


def write_result(out_root, seq, t: int, labels, ndigits: int = 3) -> Path:
    """Write ``out_root/NN_RES/maskTTT.tif`` (uint16, as the CTC tools expect), atomically.

    ``labels``: int label image (2D, or 3D ``ZYX``); ids must fit into uint16.
    Returns the path written.
    """
    if ndigits not in (3, 4):
        raise ValueError(f"ndigits must be 3 or 4, got {ndigits}")
    t = int(t)
    if not 0 <= t < 10**ndigits:
        raise ValueError(f"frame number {t} does not fit into {ndigits} digits")
    s = f"{int(seq):02d}" if isinstance(seq, (int, np.integer)) else str(seq)
    if not SEQ_RE.match(s):
        raise ValueError(f"sequence must look like '01', got {seq!r}")
    path = Path(out_root) / f"{s}_RES" / f"mask{t:0{ndigits}d}.tif"
    arr = np.asarray(labels)
    if arr.ndim not in (2, 3):
        raise io.LabelError(f"{path}: CTC results are 2D or 3D label images, got shape {arr.shape}")
    return io.write_labels(path, arr, axes="YX" if arr.ndim == 2 else "ZYX", dtype=np.uint16)


# --------------------------------------------------------------------------- pairing folders


def _ctc_truth_folder(d: Path) -> Path | None:
    seg = d / "SEG"
    if seg.is_dir():
        return seg
    if any(_SEG_RE.match(f.name) or _SEG_SLICE_RE.match(f.name) for f in d.iterdir()):
        return d
    return None


def _by_number(folder: Path, rx: re.Pattern) -> dict[int, Path]:
    out: dict[int, Path] = {}
    for f in sorted(folder.iterdir()):
        m = rx.match(f.name)
        if m:
            t = int(m.group(1))
            if t in out:
                raise PairingError(f"{folder}: two files for frame {t}: {out[t].name} and {f.name}")
            out[t] = f
    return out


def _by_stem(folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in LABEL_SUFFIXES:
            if f.stem in out:
                raise PairingError(f"{folder}: two files with the name {f.stem!r}: {out[f.stem].name} and {f.name}")
            out[f.stem] = f
    return out


def _plain_predictions(gkeys: dict[str, Path], found: dict[str, Path], folder: Path) -> dict[str, Path]:
    """Predictions of a plain folder keyed like the ground truth: ``X`` or ``X_labels`` (what
    ``cellseg segment`` writes) for ground truth ``X``; its ``*_overlay.png`` pictures are dropped."""
    out: dict[str, Path] = {}
    used = set()
    for k in gkeys:
        cands = [s for s in (k, f"{k}_labels") if s in found]
        if len(cands) == 2:
            raise PairingError(f"{folder}: two predictions for {gkeys[k].name}: "
                               f"{found[cands[0]].name} and {found[cands[1]].name}")
        if cands:
            out[k] = found[cands[0]]
            used.add(cands[0])
    for s, f in found.items():
        if s in used or (s.endswith("_overlay") and f.suffix.lower() == ".png"):
            continue
        out.setdefault(s, f)  # no ground truth: reported as extra
    return out


def pair_label_folders(gt_dir, pred_dir, allow_missing: bool = False) -> list[tuple[str, Path, Path | None]]:
    """Pair ground-truth and predicted label files for evaluation.

    Two layouts are recognised:

    * CTC: ``gt_dir`` is a truth folder (``NN_GT`` / ``NN_ST``, or its ``SEG``
      subfolder) with ``man_segTTT.tif``; ``pred_dir`` is a result folder
      (``NN_RES``) with ``maskTTT.tif``. Files are paired by frame number and
      named ``"TTT"`` (3 digits at least). 3D slice annotations are skipped.
    * plain: both are folders of label images (.tif/.tiff/.png) paired by file
      stem. The prediction for ``X.tif`` is ``X.*`` or ``X_labels.*``, what
      ``cellseg segment`` writes (its overlay pictures ``*_overlay.png`` and
      tables are never taken as predictions).

    Ground-truth files without a prediction raise :class:`PairingError`
    listing them, unless ``allow_missing`` is true, in which case they are
    paired with ``None`` (an empty prediction: every object is missed) with a
    ``UserWarning`` that lists them. When no ground-truth file has a prediction
    at all, :class:`PairingError` is raised even with ``allow_missing`` (there
    is nothing to score: most likely the wrong folder or naming).
    Predictions without ground truth are ignored with a ``UserWarning`` that
    lists them. Returns ``[(name, gt_path, pred_path_or_None), ...]``.
    """
    gt = need_dir(Path(gt_dir), "ground-truth folder")
    pred = need_dir(Path(pred_dir), "prediction folder")
    seg = _ctc_truth_folder(gt)
    if seg is not None:
        g = _by_number(seg, _SEG_RE)
        if not g:
            raise PairingError(
                f"{seg}: no full-frame label files man_segTTT.tif (3D slice annotations are not supported)"
            )
        p = _by_number(pred, _MASK_RE)
        if not p:
            raise PairingError(
                f"{pred}: no CTC result files maskTTT.tif, but {gt} is a CTC truth folder "
                "(for plain folders of label images, give two plain folders)"
            )
        gkeys = {f"{t:03d}": path for t, path in g.items()}
        pkeys = {f"{t:03d}": path for t, path in p.items()}
        gt_where, pred_where = seg, pred
        naming = "maskTTT.tif for man_segTTT.tif"
    else:
        gkeys = _by_stem(gt)
        if not gkeys:
            raise PairingError(f"{gt}: no label images (.tif, .tiff, .png)")
        pkeys = _plain_predictions(gkeys, _by_stem(pred), pred)
        gt_where, pred_where = gt, pred
        naming = "X.tif or X_labels.tif for X.tif, by file stem"
    missing = [k for k in gkeys if k not in pkeys]
    extra = [k for k in pkeys if k not in gkeys]
    if len(missing) == len(gkeys):
        which = "the ground-truth file" if len(gkeys) == 1 else f"none of the {len(gkeys)} ground-truth files"
        msg = (f"{which} in {gt_where} has {'no' if len(gkeys) == 1 else 'a'} prediction in {pred_where} "
               f"(paired as {naming})")
        if extra:
            msg += f"; the predictions there: {short_listing(pkeys[k].name for k in extra)}"
        raise PairingError(msg)
    if missing and not allow_missing:
        msg = (
            f"{len(missing)} of {len(gkeys)} ground-truth files in {gt_where} have no prediction in {pred_where}: "
            f"{short_listing(gkeys[k].name for k in missing)}"
        )
        if extra:
            msg += f"; {len(extra)} prediction(s) have no ground truth: {short_listing(pkeys[k].name for k in extra)}"
        raise PairingError(msg + " (pass allow_missing=True to score missing predictions as empty)")
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(gkeys)} ground-truth files in {gt_where} have no prediction in {pred_where} "
            f"and are scored as empty predictions: {short_listing(gkeys[k].name for k in missing)}",
            UserWarning,
            stacklevel=2,
        )
    if extra:
        warnings.warn(
            f"{len(extra)} prediction(s) in {pred_where} have no ground truth in {gt_where} and are ignored: "
            f"{short_listing(pkeys[k].name for k in extra)}",
            UserWarning,
            stacklevel=2,
        )
    return [(k, gkeys[k], pkeys.get(k)) for k in sorted(gkeys)]
