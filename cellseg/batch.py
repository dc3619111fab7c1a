"""Batch segmentation of files: one label TIFF (+ CSV, + PNG overlay) per input.

* Inputs are files, folders (their .tif/.tiff/.png/.jpg files and OME-Zarr images) or glob
  patterns; an OME-Zarr image (a folder, see :mod:`cellseg.omezarr`) is one input.
* OME-Zarr inputs are read at one resolution level (``level``, default 0) with the pixel
  sizes of their metadata, and their labels go into the image's own ``labels/<name>``
  group (``output_format="zarr"``, their default) or into a label TIFF (``"tiff"``);
  TIFF/PNG inputs with ``output_format="zarr"`` get a new OME-Zarr holding the image
  and its labels, ``OUT/<name>.ome.zarr``.
* Outputs are named after the input's stem (:func:`output_names`); inputs whose
  stems are equal (``a/img.tif``, ``a/img.png``, ``b/img.tif``) keep their
  folder, relative to the folder the clashing inputs share, under the output
  folder (``a/img``, ``b/img``) and, within one folder, their extension
  (``a/img_tif``, ``a/img_png``), so no two inputs write the same file; names
  that would still clash are refused before any work. An output that already
  exists is skipped unless ``overwrite`` (so an interrupted batch resumes where it
  stopped). Every file is written under a temporary name and renamed when
  complete (``cellseg._files.atomic_write``): there is never a half-written output.
* A bad input is reported by name and the batch goes on; the caller turns any
  failure into a non-zero exit status. A write failure names the output path; one
  that concerns the whole output location (disk full, quota, read-only file
  system) stops the batch, since every later file would fail too.
* The settings that made the outputs (model fingerprint, decode parameters,
  normalization, object size, axes, channel, linking) are recorded per output in
  ``OUT/cellseg_run.json`` (:class:`RunRecord`), so a rerun with another model or
  other parameters is told apart from a resume: ``cellseg segment`` refuses it
  (naming what changed) unless ``--overwrite``.
* ``workers=N`` runs files on a local Dask cluster; ``scheduler=ADDRESS`` sends
  them to an existing Dask cluster. Workers build the segmenter themselves from
  a picklable :class:`SegmenterSpec`, once per process.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Hashable, Iterable, Mapping, Sequence

import numpy as np

from .io import INPUT_SUFFIXES, expand_inputs

if TYPE_CHECKING:
    from .blockrun import BlockEvent, BlockPlan
    from .models.model import CellsegModel
    from .segmenter import Predictor, Progress, Segmenter

    #: what ``progress`` callbacks get: a Segmenter's events, or a block-wise run's
    ProgressCallback = Callable[[Progress | BlockEvent], None]

__all__ = ["SegmenterSpec", "FileResult", "expand_inputs", "output_names", "output_paths", "segment_file",
           "run_batch", "run_settings", "RunRecord", "RUN_RECORD", "OUTPUT_FORMATS", "resolve_output_format"]

#: inputs are listed by :func:`cellseg.io.expand_inputs` (also importable from here)
IMAGE_SUFFIXES = INPUT_SUFFIXES


@dataclass(frozen=True)
class SegmenterSpec:
    """Everything needed to build a Segmenter in another process."""

    model: str
    params: tuple[tuple[str, Any], ...] = ()  # ((name, value), ...)
    tile: int | Sequence[int] | None = None
    normalize: tuple[float, float] | None = None
    augment: bool | None = None  # None: the model's choice
    diameter: float | str | None = None  # px, "auto", "off"; None: the model's choice
    pixel_size: float | None = None  # µm/px for every input (None: from each file)
    transform: str = "linear"  # intensity transform after normalization (Segmenter.transform)
    flat_field: str = "auto"  # correction for uneven illumination (Segmenter.flat_field)
    noise_filter: str = "auto"  # filtering of pixel-wise noise (Segmenter.noise_filter)
    device: str = "auto"  # where the network runs (models.device.resolve_device); not in the run record
    #: what runs the network (models.inference): fp32 paths are not in the run record (same labels to
    #: float rounding); bf16 and int8 are
    backend: str = "auto"
    precision: str = "auto"

    def build(self) -> Segmenter:
        from .segmenter import Segmenter

        return Segmenter.from_pretrained(self.model, params=dict(self.params) or None, tile=self.tile,
                                         normalize=self.normalize, augment=self.augment,
                                         diameter=self.diameter, pixel_size=self.pixel_size,
                                         transform=self.transform, flat_field=self.flat_field,
                                         noise_filter=self.noise_filter,
                                         device=self.device,
                                         backend=self.backend, precision=self.precision)


@dataclass
class FileResult:
    """What happened to one input file: its status, the outputs written and the objects found."""

    input: str
    status: str  # "done", "skipped", "failed"
    outputs: dict[str, str] = field(default_factory=dict)
    #: distinct ids in the labels (for a T stack with ``link``: cells tracked over the frames)
    n_objects: int = 0
    #: frames of a T stack (1 without a T axis), and the objects counted frame by frame (the CSV's rows)
    n_frames: int = 1
    frame_objects: int = 0
    message: str = ""
    #: what the segmenter wants the user to know about this result (``SegmentationResult.warnings``)
    warnings: list[str] = field(default_factory=list)
    #: a write failure of the whole output location (disk full, quota, read-only): the batch stops
    fatal: bool = False
    #: a block-wise run (:mod:`cellseg.blockrun`): blocks, blocks reused from an interrupted run,
    #: block size, margin, overlay downsampling, objects cut by a block edge, chosen by size
    blockwise: dict[str, Any] | None = None


_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png", ".jpeg", ".jpg", ".ome.zarr", ".zarr")


def split_name(name: str) -> tuple[str, str]:
    """``(stem, extension tag)``: ``img.ome.tif`` -> ``("img", "ome_tif")``."""
    for suf in _SUFFIXES:
        if name.lower().endswith(suf):
            return name[: -len(suf)], suf[1:].replace(".", "_").lower()
    return name, ""


def output_names(files: Sequence[str | Path]) -> list[str]:
    """The output name of each input, relative to the output folder (``/``-separated).

    An input's stem, unless another input has the same stem: then the inputs of
    that stem keep their folders relative to the folder they share (``a/img``,
    ``b/img``), and those in one folder keep their extension too (``img_tif``,
    ``img_png``). Raises ``ValueError`` listing the inputs when names would still
    clash (an input ``img_tif.tif`` beside ``img.tif`` and ``img.png``).
    """
    paths = [Path(f) for f in files]
    parsed = [split_name(f.name) for f in paths]
    names = [stem for stem, _ in parsed]
    groups: dict[str, list[int]] = {}
    for i, (stem, _) in enumerate(parsed):
        groups.setdefault(stem, []).append(i)
    for stem, idx in groups.items():
        if len(idx) < 2:
            continue
        parents = [os.path.normpath(paths[i].absolute().parent) for i in idx]
        try:
            common = os.path.commonpath(parents)
        except ValueError:  # different drives
            common = None
        rels = [Path(os.path.relpath(p, common)).as_posix() if common else Path(p).as_posix().lstrip("/")
                for p in parents]
        for i, rel in zip(idx, rels):
            base = stem if rels.count(rel) == 1 else f"{stem}_{parsed[i][1]}"
            names[i] = base if rel == "." else f"{rel}/{base}"
    first: dict[str, Path] = {}
    clashes = []
    for f, n in zip(paths, names):
        if n in first:
            clashes.append(f"{first[n]} and {f} (both {n}_labels.tif)")
        else:
            first[n] = f
    if clashes:
        raise ValueError("inputs whose outputs would have the same name: " + "; ".join(clashes)
                         + " -- rename them or segment them into different output folders")
    return names


OUTPUT_FORMATS = ("zarr", "tiff")


def resolve_output_format(inp: Path, fmt: str | None = None) -> str:
    """The labels format of input ``inp``: ``fmt``, or by default ``"zarr"`` for an OME-Zarr
    input and ``"tiff"`` for other inputs."""
    from .omezarr import is_zarr

    if fmt is None:
        return "zarr" if is_zarr(inp) else "tiff"
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"output format {fmt!r}: choose one of {OUTPUT_FORMATS}")
    return fmt


def output_paths(inp: Path, out_dir: Path, csv: bool = True, overlay: bool = True,
                 name: str | None = None, output_format: str | None = None,
                 labels_name: str = "cellseg") -> dict[str, Path]:
    """The output files of input ``inp``: ``name`` (default: the input's stem, see
    :func:`output_names`) + ``_labels.tif``, ``_objects.csv``, ``_overlay.png``.

    With zarr output the labels are the group ``INPUT/labels/<labels_name>`` of an
    OME-Zarr input, or a new OME-Zarr ``OUT/<name>.ome.zarr`` (image and labels) for
    other inputs (see :func:`resolve_output_format` for the default)."""
    from .omezarr import is_zarr, labels_path

    stem = name if name is not None else split_name(Path(inp).name)[0]
    fmt = resolve_output_format(Path(inp), output_format)
    if fmt == "zarr":
        labels = labels_path(inp, labels_name) if is_zarr(inp) else out_dir / f"{stem}.ome.zarr"
    else:
        labels = out_dir / f"{stem}_labels.tif"
    out = {"labels": labels}
    if csv:
        out["csv"] = out_dir / f"{stem}_objects.csv"
    if overlay:
        out["overlay"] = out_dir / f"{stem}_overlay.png"
    return out


def _overlay_frame(image: np.ndarray, labels: np.ndarray, axes: str) -> tuple[np.ndarray, np.ndarray]:
    """A 2D view for the PNG: first T frame, middle Z slice."""
    img, lab, ax = image, labels, axes
    for a in "TZ":
        if a in ax:
            i = ax.index(a)
            k = 0 if a == "T" else lab.shape[i] // 2
            img, lab = np.take(img, k, axis=i), np.take(lab, k, axis=i)
            ax = ax.replace(a, "")
    return img, lab


RUN_RECORD = "cellseg_run.json"


def model_fingerprint(model: CellsegModel) -> str:
    """sha256 of a model's config and weights: equal for the same model wherever its file lies."""
    import hashlib
    import json

    h = hashlib.sha256(json.dumps(model.config, sort_keys=True, default=str).encode())
    for k, v in sorted(model.network.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def run_settings(spec: SegmenterSpec, model: CellsegModel, axes: str | None = None, channel: int | str | None = None,
                 link: bool = False, level: int = 0) -> dict[str, Any]:
    """The settings that determine the outputs of a batch, as plain JSON values: the model (its
    name and a fingerprint of its config and weights), the decode parameters in full (the model's
    thresholds with the overrides of ``spec``), normalization and intensity transform, test-time
    augmentation, object size, pixel size, axes, channel and linking (``None``: the model's or
    the file's own), the flat-field correction, the noise filter and the OME-Zarr resolution level
    when they are not the defaults (``"auto"``, 0). Tiling is left out:
    tiled and untiled runs give the same labels."""
    import dataclasses

    from .models.config import jsonable as _jsonable

    rep = model.representation
    decode = dataclasses.asdict(rep.params(dict(model.thresholds or {}), **dict(spec.params)))
    out = {
        "model": spec.model, "model_sha256": model_fingerprint(model), "representation": rep.name,
        "decode": decode, "normalize": list(spec.normalize) if spec.normalize else None,
        "transform": getattr(spec, "transform", "linear"),
        "augment": spec.augment, "diameter": spec.diameter, "pixel_size": spec.pixel_size,
        "axes": axes, "channel": channel, "link": bool(link),
    }
    if level:
        out["level"] = int(level)
    flat = getattr(spec, "flat_field", "auto")
    if flat != "auto":  # recorded when not the default, so records of earlier runs keep their id
        out["flat_field"] = flat
    noise = getattr(spec, "noise_filter", "auto")
    if noise != "auto":
        out["noise_filter"] = noise
    precision = getattr(spec, "precision", "auto")
    if precision not in ("auto", "fp32", None):  # bf16 and int8 give (slightly) other labels than fp32
        out["precision"] = precision
    return _jsonable(out)


def settings_id(settings: dict) -> str:
    """A short id of a :func:`run_settings` dict: the first 12 hex digits of its sha256."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def settings_differences(old: dict, new: dict) -> list[str]:
    """What changed between two :func:`run_settings`, one line per setting."""
    out = []
    other_rep = old.get("representation") != new.get("representation")
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if k == "model_sha256" or a == b or (k == "decode" and other_rep):
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k} {n}: was {a.get(n)!r}, now {b.get(n)!r}" for n in sorted(set(a) | set(b))
                    if a.get(n) != b.get(n)]
        else:
            out.append(f"{k}: was {a!r}, now {b!r}")
    if old.get("model_sha256") != new.get("model_sha256") and old.get("model") == new.get("model"):
        out.append(f"model: {new.get('model')!r} is not the model of that name used then (other weights or config)")
    return out


class RunRecord:
    """The settings each output in an output folder was made with (``OUT/cellseg_run.json``).

    ``{"format": "cellseg-run-record", "settings": {id: {...}}, "outputs": {name: id}}``
    with the settings of :func:`run_settings` and the cellseg version. Written
    atomically, at most every ``interval`` seconds while a batch runs
    (:meth:`set`) and by :meth:`flush`. An output without an entry (written
    before records existed, or the record deleted) has unknown settings.
    """

    FORMAT = "cellseg-run-record"

    def __init__(self, out_dir: str | Path, interval: float = 2.0):
        import json

        self.path = Path(out_dir) / RUN_RECORD
        self.interval = interval
        self.settings: dict[str, dict] = {}
        self.outputs: dict[str, str] = {}
        self._dirty = False
        self._last = 0.0
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict) and data.get("format") == self.FORMAT:
            self.settings = {str(k): v for k, v in (data.get("settings") or {}).items() if isinstance(v, dict)}
            self.outputs = {str(k): str(v) for k, v in (data.get("outputs") or {}).items()
                            if str(v) in self.settings}

    def recorded(self, name: str) -> dict | None:
        """The settings output ``name`` was made with (without the version), or None when unknown."""
        sid = self.outputs.get(name)
        if sid is None:
            return None
        return {k: v for k, v in self.settings[sid].items() if k != "cellseg"}

    def conflicts(self, names: Sequence[str], settings: dict, existing: Callable[[str], bool]) -> dict[str, list]:
        """``{name: differences}`` for the outputs in ``names`` that exist (``existing(name)``) and were
        made with other settings than ``settings``."""
        out = {}
        for n in names:
            old = self.recorded(n)
            if old is not None and old != settings and existing(n):
                out[n] = settings_differences(old, settings)
        return out

    def set(self, name: str, settings: dict) -> None:
        """Record that output ``name`` was made with ``settings``; written now and then."""
        import time

        from . import __version__

        sid = settings_id(settings)
        if sid not in self.settings:
            self.settings[sid] = {"cellseg": __version__, **settings}
        if self.outputs.get(name) != sid:
            self.outputs[name] = sid
            self._dirty = True
        if self._dirty and time.monotonic() - self._last >= self.interval:
            self.flush()

    def flush(self) -> None:
        """Write the record (atomically) when it changed."""
        import json
        import time

        from ._files import atomic_write

        if not self._dirty:
            return
        used = set(self.outputs.values())
        data = {"format": self.FORMAT, "settings": {k: v for k, v in self.settings.items() if k in used},
                "outputs": dict(sorted(self.outputs.items()))}
        text = json.dumps(data, indent=1, sort_keys=False) + "\n"
        atomic_write(self.path, lambda tmp: tmp.write_text(text))
        self._dirty = False
        self._last = time.monotonic()


#: the end of the hint for a stack read as channels (the CLI names its option instead)
AXES_HINT = "pass axes='ZYX' (a Z stack) or axes='TYX' (time)"


def _match_channel(channel: int | str | None, names: Sequence[str] | None) -> int | str | None:
    """A channel name as the file spells it when it matches ``channel`` ignoring case (``dapi``
    for ``DAPI``) and no name matches exactly; anything else unchanged."""
    if not isinstance(channel, str) or not names or channel in names or channel.lstrip("-").isdigit():
        return channel
    hits = [n for n in names if str(n).casefold() == channel.casefold()]
    return hits[0] if len(hits) == 1 else channel


def _within_float32(data: np.ndarray) -> np.ndarray:
    """Float data whose finite values exceed the float32 range (the network's precision) scaled
    by a power of two into it: exact, and percentile normalization makes the scale irrelevant."""
    if data.dtype.kind != "f" or data.dtype.itemsize <= 4:
        return data
    top = float(np.abs(data).max())
    if top <= 1e37:
        return data
    return data * 2.0 ** -np.frexp(top)[1]


def _z_step_warning(model: Predictor | None, axes: str, pixel_size: Mapping[str, float] | None) -> str | None:
    """What to say when a 3D model segments a volume whose voxel shape (Z step over the X
    pixel size, from the file) differs by more than 10 % from the one it was trained with."""
    cfg = getattr(model, "config", None) or {}
    ps = pixel_size or {}
    if int(cfg.get("ndim", 2)) != 3 or "Z" not in axes or not (ps.get("Z") and ps.get("X")):
        return None
    trained = float(getattr(getattr(model, "representation", None), "anisotropy", 1.0))
    step = float(ps["Z"]) / float(ps["X"])
    if abs(step - trained) <= 0.1 * trained:
        return None
    return (f"the model was trained on volumes with a Z step of {trained:g} pixels; this file's is {step:.3g} "
            f"(voxel {float(ps['Z']):g} x {float(ps['X']):g} µm): resample Z by {step / trained:.3g} for results "
            "like the model's")


def segment_file(
    segmenter: Segmenter,
    path: str | Path,
    out_dir: str | Path,
    axes: str | None = None,
    channel: int | str | None = None,
    overwrite: bool = False,
    csv: bool = True,
    overlay: bool = True,
    link: bool = False,
    progress: ProgressCallback | None = None,
    name: str | None = None,
    level: int = 0,
    output_format: str | None = None,
    labels_name: str = "cellseg",
    blockwise: BlockPlan | None = None,
    client: Any = None,
    spec: "SegmenterSpec | None" = None,
) -> FileResult:
    """Segment one file and write its outputs (named ``name``, default the input's stem;
    see :func:`output_names`); never raises for a bad input or a failed write.

    OME-Zarr inputs are read at resolution ``level``; ``output_format`` (``"zarr"`` or
    ``"tiff"``, default by input: see :func:`resolve_output_format`) and ``labels_name``
    (the label group's name) choose where the labels go (:func:`output_paths`).
    ``blockwise`` (a :class:`cellseg.blockrun.BlockPlan`) segments the file block by block,
    never loading it whole, resuming an interrupted run (:mod:`cellseg.blockrun`); its
    blocks run on the Dask ``client`` when given (workers build ``spec``)."""
    from . import io, omezarr
    from .measure import object_table, table_columns, write_csv
    from .visualize import overlay as make_overlay
    from .visualize import save_png

    path = Path(path)
    out_dir = Path(out_dir)
    try:
        fmt = resolve_output_format(path, output_format)
        outs = output_paths(path, out_dir, csv=csv, overlay=overlay, name=name, output_format=fmt,
                            labels_name=labels_name)
    except ValueError as exc:
        return FileResult(str(path), "failed", message=f"{path}: {exc}")
    if not overwrite and all(p.exists() for p in outs.values()):
        return FileResult(str(path), "skipped", {k: str(v) for k, v in outs.items()},
                          message="outputs exist (use --overwrite to redo)")
    if blockwise is not None:
        return _segment_blockwise(segmenter, path, out_dir, blockwise, outs, fmt, axes=axes, channel=channel,
                                  overwrite=overwrite, level=level, labels_name=labels_name, progress=progress,
                                  client=client, spec=spec)
    img = source = None
    try:
        if omezarr.is_zarr(path):
            source = omezarr.open_image(path)
            img = source.read(level, axes=axes)
        else:
            img = io.read_image(path, axes=axes)
        channel = _match_channel(channel, img.channel_names)
        data = img.data
        if data.size == 0:
            raise ValueError("the image is empty (size 0)")
        if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
            raise ValueError(f"unsupported pixel type {data.dtype}")
        # NaN/inf pixels (the border of a registered image) are missing data: filled before anything sees
        # them (the measurements and the overlay too), label 0 there
        data, missing = io.fill_nonfinite(data, img.axes, where=str(path))
        img.data = data
        if np.all(data == data.flat[0]):
            raise ValueError("the image is constant (every pixel has the same value): nothing to segment")
        data = _within_float32(data)
        ps = img.pixel_size or {}
        gen = segmenter.iter_segment(data, axes=img.axes, channel=channel, channel_names=img.channel_names,
                                     link=link, pixel_size=ps.get("X") or ps.get("Y"))
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                res = stop.value
                break
            if progress is not None:
                progress(ev)
        if missing is not None:
            res.warnings.insert(0, io.clear_missing(res.labels, res.axes, missing, img.axes))
    except Exception as exc:  # a bad file is reported by name; the batch goes on
        msg = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError, KeyError)):
            msg = f"{type(exc).__name__}: {msg}\n{traceback.format_exc(limit=3)}"
        if not msg.startswith(str(path)):
            msg = f"{path}: {msg}"
        if (img is not None and axes is None and channel is None and img.axes == "CYX" and not img.channel_names
                and "channel" in msg):  # a plain or planar stack that tifffile calls colour samples (SYX)
            msg += (f"; if its {img.data.shape[0]} planes are Z slices or time points rather than channels, "
                    f"{AXES_HINT}")
        return FileResult(str(path), "failed", message=msg)
    warnings = [str(w) for w in (getattr(res, "warnings", None) or [])]
    if axes is not None and img.file_axes and img.file_axes != img.axes:
        warnings.insert(0, f"the given axes {img.axes} override the axes the file declares ({img.file_axes})")
    z_note = _z_step_warning(getattr(segmenter, "model", None), img.axes, ps)
    if z_note:
        warnings.append(z_note)
    # intensity image without C for measurements: the channel the segmenter took (given, or chosen by
    # name or colour), else the mean of the channels it took together
    inten = img.data
    if "C" in img.axes:
        c = img.axes.index("C")
        inten = inten.mean(axis=c) if res.channel is None else np.take(inten, res.channel, axis=c)
    n_frames, frame_objects = 1, res.n_objects
    if "T" in res.axes:
        t_ax = res.axes.index("T")
        n_frames = res.labels.shape[t_ax]
        frame_objects = sum(int(np.count_nonzero(np.unique(np.take(res.labels, t, axis=t_ax))))
                            for t in range(n_frames))
    try:
        if fmt == "zarr" and source is not None:
            omezarr.write_labels(source, res.labels, res.axes, name=labels_name, level=level, overwrite=True)
        elif fmt == "zarr":
            omezarr.write_image(outs["labels"], img, res.labels, res.axes, name=labels_name, overwrite=True)
        else:
            io.write_labels(outs["labels"], res.labels, axes=res.axes, pixel_size=img.pixel_size,
                            frame_interval=img.frame_interval if "T" in res.axes else None)
        if csv:
            pix = dict(img.pixel_size or {})
            given = getattr(segmenter, "pixel_size", None)  # µm/px for every input, over the file's
            if given:
                pix.update(Y=given, X=given)
            rows = object_table(res.labels, res.axes, inten, res.scores(), pixel_size=pix)
            write_csv(outs["csv"], rows, columns=table_columns(res.axes, pix))
        if overlay:
            i2, l2 = _overlay_frame(inten, res.labels, res.axes)
            save_png(outs["overlay"], make_overlay(i2, l2))
    except OSError as exc:  # full disk, read-only folder...: name the file, the batch decides whether to go on
        from ._files import LOCATION_ERRNOS

        where = exc.filename or (outs["labels"] if fmt == "zarr" else out_dir)
        # labels written into an OME-Zarr input: its store, not the output folder, is what failed
        in_place = fmt == "zarr" and source is not None and Path(str(where)).is_relative_to(path)
        return FileResult(str(path), "failed", message=f"{path}: cannot write {where}: {exc.strerror or exc}",
                          warnings=warnings, fatal=exc.errno in LOCATION_ERRNOS and not in_place)
    except ValueError as exc:  # labels that do not fit an OME-Zarr, a bad label-group name...
        return FileResult(str(path), "failed", message=f"{path}: cannot write {outs['labels']}: {exc}",
                          warnings=warnings)
    return FileResult(str(path), "done", {k: str(v) for k, v in outs.items()}, n_objects=res.n_objects,
                      n_frames=n_frames, frame_objects=frame_objects, warnings=warnings)


def _segment_blockwise(segmenter: Segmenter, path: Path, out_dir: Path, plan: BlockPlan, outs: dict[str, Path],
                       fmt: str, **kwargs: Any) -> FileResult:
    """:func:`cellseg.blockrun.segment_file_blockwise`, its errors as a failed result naming the file."""
    from ._files import LOCATION_ERRNOS
    from .blockrun import segment_file_blockwise

    try:
        result = segment_file_blockwise(segmenter, path, out_dir, plan, outs, fmt, **kwargs)
        for option, what in (("flat_field", "correct uneven illumination"), ("noise_filter", "filter noise")):
            if getattr(segmenter, option, "auto") == "on" and result.status == "done":
                flag = "--" + option.replace("_", "-")
                result.warnings.insert(0, f"block-wise runs do not {what} ({flag} on): segment the file whole "
                                          "(--no-blockwise) for that")
        return result
    except Exception as exc:  # a bad file, a failed write: reported by name, the batch goes on
        msg = str(exc) or type(exc).__name__
        if not isinstance(exc, (ValueError, OSError, KeyError)):
            msg = f"{type(exc).__name__}: {msg}\n{traceback.format_exc(limit=3)}"
        elif isinstance(exc, OSError) and exc.filename and str(exc.filename) not in msg:
            msg = f"cannot write {exc.filename}: {exc.strerror or msg}"
        if not msg.startswith(str(path)):
            msg = f"{path}: {msg}"
        fatal = isinstance(exc, OSError) and exc.errno in LOCATION_ERRNOS and not (
            fmt == "zarr" and Path(str(exc.filename or "")).is_relative_to(path))
        return FileResult(str(path), "failed", message=msg, fatal=fatal)


#: what a Dask worker process keeps between tasks, by key: its segmenters (:func:`worker_segmenter`) and open inputs
WORKER_CACHE: dict[Hashable, Segmenter] = {}


def worker_segmenter(key: Hashable, build: Callable[[], Segmenter]) -> Segmenter:
    """The segmenter cached under ``key`` in this Dask worker process, built by ``build()`` on first
    use (with one torch thread per worker process: no oversubscription)."""
    seg = WORKER_CACHE.get(key)
    if seg is None:
        try:
            import torch

            torch.set_num_threads(1)
        except Exception:
            pass
        seg = WORKER_CACHE[key] = build()
    return seg


def _segment_on_worker(spec: SegmenterSpec, path: str, out_dir: str, kwargs: dict[str, Any]) -> FileResult:
    return segment_file(worker_segmenter(spec, spec.build), path, out_dir, **kwargs)


def run_batch(
    spec: SegmenterSpec,
    files: Iterable[Path],
    out_dir: str | Path,
    workers: int | None = None,
    scheduler: str | None = None,
    on_result: Callable[[FileResult], None] | None = None,
    progress: ProgressCallback | None = None,
    names: Sequence[str] | None = None,
    blockwise: Mapping[str, BlockPlan] | None = None,
    **kwargs: Any,
) -> list[FileResult]:
    """Segment ``files`` in this process, on a local Dask cluster (``workers``) or
    on an existing one (``scheduler``).

    ``names``: output names (default :func:`output_names`, which raises ``ValueError``
    before any work when names clash). A result with ``fatal`` set (the output
    location cannot be written: disk full, quota, read-only) stops the batch: the
    files not yet started get no result, so ``len(result) < len(files)``.
    ``blockwise`` maps input paths (``str(file)``) to a :class:`cellseg.blockrun.BlockPlan`:
    those files are segmented block by block (:mod:`cellseg.blockrun`); with Dask their
    blocks, not the files, are the cluster's tasks (after the other files).
    """
    files = [Path(f) for f in files]
    names = output_names(files) if names is None else list(names)
    if len(names) != len(files):
        raise ValueError(f"{len(names)} output names for {len(files)} files")
    blockwise = dict(blockwise or {})
    results: list[FileResult] = []
    if not workers and not scheduler:
        seg = spec.build()
        for f, n in zip(files, names):
            r = segment_file(seg, f, out_dir, progress=progress, name=n, blockwise=blockwise.get(str(f)), **kwargs)
            results.append(r)
            if on_result:
                on_result(r)
            if r.fatal:
                break
        return results
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        cluster = LocalCluster(n_workers=int(workers or 0), threads_per_worker=1, processes=True,
                               dashboard_address=None, host="127.0.0.1")
        client = Client(cluster)
    try:
        futs = [client.submit(_segment_on_worker, spec, str(f), str(out_dir), {**kwargs, "name": n}, pure=False)
                for f, n in zip(files, names) if str(f) not in blockwise]
        by_input = {}
        stop = False
        for fut in as_completed(futs):
            r = fut.result()
            by_input[r.input] = r
            if on_result:
                on_result(r)
            if r.fatal:
                client.cancel([f for f in futs if not f.done()])
                stop = True
                break
        block_seg: Segmenter | None = None
        for f, n in zip(files, names):  # block-wise files: their blocks are the tasks, written here in order
            if stop or str(f) not in blockwise:
                continue
            block_seg = block_seg or spec.build()
            r = segment_file(block_seg, f, out_dir, progress=progress, name=n, blockwise=blockwise[str(f)],
                             client=client, spec=spec, **kwargs)
            by_input[r.input] = r
            if on_result:
                on_result(r)
            stop = r.fatal
        results = [by_input[str(f)] for f in files if str(f) in by_input]
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results


def write_ctc_results(results: Sequence[FileResult], out_dir: str | Path, seq: str) -> list[Path]:
    """Write the CTC result layout ``out_dir/SEQ_RES/maskNNN.tif`` from finished results.

    A 2D input named like ``tNNN.tif`` becomes ``maskNNN.tif``; a T stack gives one
    mask per frame (``mask000.tif`` ...). Other inputs are numbered in order. Two
    inputs that would write the same mask (two T stacks, or ``a/t000.tif`` and
    ``b/t000.tif``: the layout holds one sequence) raise ``ValueError`` naming them
    instead of overwriting the first one's mask.
    """
    import re

    from . import io

    res_dir = Path(out_dir) / f"{seq}_RES"
    written = []
    owner: dict[Path, str] = {}
    counter = 0

    def claim(p: Path, inp: str) -> None:
        if p in owner:
            raise ValueError(f"{inp} and {owner[p]} would both write {p}: the CTC layout {res_dir} holds one "
                             "sequence (one T stack, or one tNNN.tif per frame); give each sequence its own --ctc SEQ "
                             "and output folder")
        owner[p] = inp

    for r in results:
        if r.status not in ("done", "skipped") or "labels" not in r.outputs:
            continue
        lab_path = Path(r.outputs["labels"])
        if not lab_path.exists():
            continue
        img = io.read_image(lab_path)
        data, axes = img.data, img.axes
        m = re.fullmatch(r"t(\d+)", Path(r.input).name.split(".")[0])
        if "T" in axes:
            t_ax = axes.index("T")
            ndig = max(3, len(str(data.shape[t_ax] - 1)))
            for t in range(data.shape[t_ax]):
                p = res_dir / f"mask{t:0{ndig}d}.tif"
                claim(p, r.input)
                io.write_labels(p, np.take(data, t, axis=t_ax).astype(np.int32), axes=axes.replace("T", ""))
                written.append(p)
        else:
            if m:
                num = m.group(1)
            else:
                num = f"{counter:03d}"
                counter += 1
            p = res_dir / f"mask{num}.tif"
            claim(p, r.input)
            io.write_labels(p, data.astype(np.int32), axes=axes)
            written.append(p)
    return written
