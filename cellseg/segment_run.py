"""``cellseg segment`` from start to end: :func:`run_segment` with a :class:`SegmentOptions`.

The steps, in order, each said before any work when it refuses the run (exit status 2):
inputs are listed (:func:`cellseg.io.expand_inputs`) and given output names
(:func:`cellseg.batch.output_names`); the options are checked against the inputs, the
device and the model (decode parameters, normalization, diameter, tile); the output folder
is checked and cleared of an interrupted run's temporary files; outputs made with other
settings are refused (:class:`cellseg.batch.RunRecord`); the inputs that go block-wise are
planned (:func:`plan_blockwise`). Then the batch runs (:func:`cellseg.batch.run_batch`),
the CTC layout is written when asked, and a summary line ends the run. Exit status: 0 when
every input was segmented or skipped, 1 when one failed, was not found or was not attempted,
130 when interrupted.

Every line goes through a :class:`Reporter` (the command line's draws progress bars);
:class:`PrintReporter` prints plain lines.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    from .batch import FileResult
    from .blockrun import BlockEvent, BlockPlan
    from .segmenter import Progress, Segmenter

__all__ = ["SegmentOptions", "Reporter", "PrintReporter", "SegmentUsageError", "run_segment", "plan_blockwise",
           "cli_message", "parse_value"]


class SegmentUsageError(ValueError):
    """An option written wrongly (``--param`` without ``=``): the command line exits with it."""


@dataclass(frozen=True)
class SegmentOptions:
    """What ``cellseg segment`` was asked to do (its options, by the same names)."""

    inputs: tuple[str, ...]
    out: str
    model: str | None = None
    #: ``--param NAME=VALUE`` items as given
    param: tuple[str, ...] = ()
    #: the decode-parameter flags given (``{"--prob-thresh": 0.6}``), in the order of
    #: :func:`cellseg.representations._params.cli_flags`
    decode_flags: Mapping[str, float] = field(default_factory=dict)
    tile: int | tuple[int, ...] | None = None
    augment: bool | None = None
    diameter: str | None = None
    pixel_size: float | None = None
    norm: tuple[float, float] | None = None
    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"
    norm_transform: str = "linear"
    flat_field: str = "auto"
    noise_filter: str = "auto"
    axes: str | None = None
    channel: str | None = None
    link: bool = False
    ctc: str | None = None
    csv: bool = True
    overlay: bool = True
    overwrite: bool = False
    workers: int | None = None
    scheduler: str | None = None
    block_size: int | None = None
    block_margin: int | None = None
    no_blockwise: bool = False
    level: int = 0
    output_format: str | None = None
    labels_name: str = "cellseg"


class Reporter(Protocol):
    """Where :func:`run_segment` says things."""

    def print(self, text: str, err: bool = False) -> None:
        """A line outside the batch (before it starts, after it ends): stderr when ``err``."""

    def begin(self, n_files: int) -> None:
        """The batch of ``n_files`` inputs starts."""

    def say(self, text: str, err: bool = False) -> None:
        """A line while the batch runs."""

    def progress(self, event: Progress | BlockEvent) -> None:
        """Progress within the file being segmented."""

    def file_done(self, lines: Sequence[tuple[str, bool]]) -> None:
        """A file is finished: its lines ``(text, to stderr)``."""

    def end(self) -> None:
        """The batch ended (or was interrupted)."""


class PrintReporter:
    """A :class:`Reporter` that prints every line and no progress."""

    def print(self, text: str, err: bool = False) -> None:
        print(text, file=sys.stderr if err else sys.stdout)

    def begin(self, n_files: int) -> None:
        pass

    def say(self, text: str, err: bool = False) -> None:
        print(text, file=sys.stderr if err else sys.stdout, flush=True)

    def progress(self, event: Progress | BlockEvent) -> None:
        pass

    def file_done(self, lines: Sequence[tuple[str, bool]]) -> None:
        for text, err in lines:
            self.say(text, err)

    def end(self) -> None:
        pass


# -- messages ---------------------------------------------------------------------
_CLI_HINTS = (
    ("Pass axes=", "--axes", "on the command line: --axes ZYX for a Z stack, --axes TYX for time"),
    ("choose one with channel=", "--channel", "on the command line: --channel INDEX or --channel NAME"),
)
#: keyword arguments named by library messages, and the option that sets them
_CLI_NAMES = (("pass allow_missing=True", "pass --allow-missing"),
              ("pass axes='ZYX' (a Z stack) or axes='TYX' (time)", "pass --axes ZYX (a Z stack) or --axes TYX (time)"),
              ("choose one with channel= (index", "choose one with --channel (an index"))


def cli_message(msg: str) -> str:
    """Library messages name keyword arguments (``axes=``, ``channel=``); on the command line
    say which option to use instead."""
    for needle, option in _CLI_NAMES:
        msg = msg.replace(needle, option)
    for needle, option, hint in _CLI_HINTS:
        if needle in msg and option not in msg:
            msg = f"{msg} -- {hint}"
    return msg


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def duration(s: float) -> str:
    """``42 s``, ``12 min`` or ``2.5 h``."""
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def parse_value(v: str) -> Any:
    """A ``--param`` value: a bool, None, an int, a float, or the string itself."""
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def _decode_overrides(items: Sequence[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SegmentUsageError(f"--param expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        params[k.strip()] = parse_value(v.strip())
    return params


def _counts(r: FileResult, link: bool) -> str:
    """What the ``done`` line counts: objects, and for a T stack the frames, the objects counted
    frame by frame (one CSV row each) and, with --link, the cells tracked over the frames."""
    if r.n_frames <= 1:
        return f"{r.n_objects} object{'s' if r.n_objects != 1 else ''}"
    per = f"{r.frame_objects} object{'s' if r.frame_objects != 1 else ''} in {r.n_frames} frames (one CSV row each)"
    return f"{per}, {r.n_objects} cell{'s' if r.n_objects != 1 else ''} tracked over the frames" if link else per


def _blockwise_text(r: FileResult) -> str:
    """What the ``done`` line says about a block-wise run."""
    b = r.blockwise
    if not b:
        return ""
    parts = [f"block-wise, {plural(b['blocks'], 'block')} of {b['block']} px (margin {b['margin']} px, network "
             f"tiles of {b['tile']} px)"]
    if b["reused"]:
        parts.append(f"{b['reused']} of them done by the interrupted earlier run")
    if b["cut"]:
        parts.append(f"{b['cut']} cut by a block edge")
    if b.get("overlay_step") and b["overlay_step"] > 1:
        parts.append(f"overlay downsampled 1/{b['overlay_step']}")
    return " (" + "; ".join(parts) + ")"


# -- block-wise planning ----------------------------------------------------------
def plan_blockwise(opts: SegmentOptions, files: Sequence[Path], seg: Segmenter, settings: dict,
                   reporter: Reporter | None = None) -> dict[str, BlockPlan]:
    """The :class:`cellseg.blockrun.BlockPlan` of each input that goes block-wise: every TIFF and
    OME-Zarr input with ``block_size``, else those of more than
    :data:`cellseg.blockrun.BLOCKWISE_ABOVE_PX` per frame (a note says so, and why); none with
    ``no_blockwise``. Settings that cannot work raise ``ValueError`` (before any work); a file
    that cannot go block-wise gets a plan with its error when block-wise was asked for, else a
    note that it is loaded whole."""
    from . import blockrun
    from .batch import resolve_output_format
    from .blockrun import (
        BlockPlan,
        BlockwiseError,
        block_segmenter,
        check_block_size,
        default_margin,
        network_context,
        probe,
    )
    from .io import TIFF_SUFFIXES
    from .omezarr import is_zarr

    say = (reporter or PrintReporter()).print
    if opts.no_blockwise and (opts.block_size is not None or opts.block_margin is not None):
        raise ValueError("--no-blockwise contradicts --block-size/--block-margin: give one or the other")
    if opts.no_blockwise:
        return {}
    if opts.block_size is not None and opts.block_size < 1:
        raise ValueError(f"--block-size must be a number of pixels >= 1, got {opts.block_size}")
    if opts.block_margin is not None and opts.block_margin < 0:
        raise ValueError(f"--block-margin must be >= 0 pixels, got {opts.block_margin}")
    above = blockrun.BLOCKWISE_ABOVE_PX
    bseg = block_segmenter(seg) if seg.spatial_ndim == 2 else None
    block = opts.block_size if opts.block_size is not None else blockrun.DEFAULT_BLOCK
    if bseg is not None:  # at the model's own object size; a file whose objects differ is checked again
        margin = opts.block_margin if opts.block_margin is not None else default_margin(bseg)
        check_block_size(block, margin, network_context(bseg))
    explicit = opts.block_size is not None
    from .segmenter import segments_nuclei

    nuclear = segments_nuclei(seg)
    plans: dict[str, BlockPlan] = {}
    for f in files:
        f = Path(f)
        if not explicit and not (f.suffix.lower() in TIFF_SUFFIXES or is_zarr(f)):
            continue
        px: int | None = None
        try:
            if bseg is None:
                raise BlockwiseError(f"{f}: block-wise runs segment 2D images; this model segments 3D volumes")
            src = probe(f, level=opts.level, axes=opts.axes, channel=opts.channel, nuclear=nuclear)
            px = src.shape[0] * src.shape[1]
            if resolve_output_format(f, opts.output_format) == "zarr" and not is_zarr(f):
                raise ValueError(f"{f}: block-wise runs write the labels of a TIFF input as a TIFF; drop "
                                 "--output-format zarr (or convert the image to OME-Zarr first)")
        except (ValueError, OSError) as exc:
            px = px or getattr(exc, "frame_px", None)
            if explicit:
                plans[str(f)] = BlockPlan(block, opts.block_margin, error=str(exc), settings=settings)
            elif px and px > above:
                say(f"note: {f}: {px / 1e6:.0f} Mpx per frame, over the {above / 1e6:.0f} Mpx above "
                    f"which cellseg segments block-wise, but it is loaded whole: "
                    f"{str(exc).removeprefix(f'{f}: ')}", err=True)
            continue
        if explicit:
            plans[str(f)] = BlockPlan(block, opts.block_margin, settings=settings)
        elif px > above:
            plans[str(f)] = BlockPlan(block, opts.block_margin, auto=True, settings=settings)
            say(f"note: {f}: {src.shape[0]} x {src.shape[1]} = {px / 1e6:.0f} Mpx per frame, over the "
                f"{above / 1e6:.0f} Mpx above which cellseg segments block-wise (never loading the "
                f"image whole): blocks of {block} px (--block-size N sets the size, --no-blockwise loads it "
                f"whole)", err=True)
    if plans and opts.ctc:
        raise ValueError("--ctc writes its masks from whole label images and block-wise runs are for images too "
                         "large for that: drop --ctc, or --no-blockwise")
    return plans


# -- the run ----------------------------------------------------------------------
def run_segment(opts: SegmentOptions, reporter: Reporter | None = None) -> int:
    """Run ``cellseg segment`` with ``opts``, saying everything through ``reporter`` (default:
    :class:`PrintReporter`); returns the exit status. ``--param`` items without ``=`` raise
    :class:`SegmentUsageError`."""
    rep_out: Reporter = reporter if reporter is not None else PrintReporter()
    out = rep_out.print

    def error(msg: str) -> int:
        out(f"error: {msg}", err=True)
        return 2

    from ._files import OutputError, check_output_dir, remove_stale_temporaries
    from .batch import (
        RunRecord,
        SegmenterSpec,
        output_names,
        output_paths,
        resolve_output_format,
        run_batch,
        run_settings,
        split_name,
    )
    from .io import SkippedEntries, expand_inputs
    from .models import default_model_name, load_model
    from .omezarr import is_zarr

    left_out: list[SkippedEntries] = []
    files, missing = expand_inputs(opts.inputs, skipped=left_out, samples=True)
    for m in missing:
        out(f"error: {m}", err=True)
    if left_out:  # once for all folders
        n_sub = sum(len(s) for _, s, _ in left_out)
        other = [f for _, _, o in left_out for f in o]
        kinds = sorted({f.suffix.lower() or "(no extension)" for f in other})
        kinds_text = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
        parts = ([plural(n_sub, "subfolder")] if n_sub else []) + (
            [f"{plural(len(other), 'file')} of other types ({kinds_text})"] if other else [])
        out(f"note: left out {' and '.join(parts)} in the input folder{'s' if len(left_out) > 1 else ''}: only "
            ".tif, .tiff, .png and .jpg/.jpeg files directly in a folder are segmented (for subfolders give them, or a "
            "pattern such as 'DIR/**/*.tif')", err=True)
    if not files:
        return error("no input files")
    out_dir = Path(opts.out)
    try:  # inputs with the same stem get distinct output names, or are refused, before any work
        out_names = output_names(files)
    except ValueError as exc:
        return error(str(exc))
    renamed = [(f, n) for f, n in zip(files, out_names) if n != split_name(Path(f).name)[0]]
    if renamed:
        out(f"note: {len(renamed)} inputs share a file name with another input; their outputs keep "
            f"their folder (and extension) to stay apart:", err=True)
        for f, n in renamed:
            out(f"  {f} -> {out_dir / n}_labels.tif", err=True)

    if opts.level < 0:
        return error(f"--level must be >= 0 (0: the full resolution), got {opts.level}")
    if opts.level and not any(is_zarr(f) for f in files):
        return error("--level applies to OME-Zarr inputs, and none was given")
    if not opts.labels_name or opts.labels_name.startswith(".") or any(c in opts.labels_name for c in "/\\"):
        return error(f"--labels-name {opts.labels_name!r}: give a plain name (no '/', not starting with '.')")
    if opts.ctc and any(resolve_output_format(f, opts.output_format) == "zarr" for f in files):
        return error("--ctc writes its masks from label TIFFs: add --output-format tiff")
    model_name = opts.model or default_model_name()
    try:
        from .models.inference import resolve
        from .models.network import resolve_device

        device = resolve_device(opts.device)  # a device this machine lacks: an error before any work
        resolve(opts.backend, opts.precision, device)  # a backend/precision that cannot run there, too
        model = load_model(model_name)  # fail early with a clear message
    except (ValueError, FileNotFoundError, KeyError) as exc:
        return error(str(exc))
    params = _decode_overrides(opts.param)
    origin = {k: f"--param {k}={v}" for k, v in params.items()}  # how the user set each parameter
    rep = model.representation
    from .representations._params import cli_aliases

    aliases = cli_aliases(rep)  # flag -> the field it sets for this model (from the Params declarations)
    for flag, v in opts.decode_flags.items():
        name = aliases.get(flag)
        if name is None:
            return error(f"{flag} does not apply to a {rep.name} model "
                         f"(its parameters: {sorted(rep.Params.__dataclass_fields__)})")
        params[name] = v
        origin[name] = f"{flag} {v:g}"
    try:  # the ranges are the representation's (its Params dataclass): checked before any work
        rep.params(dict(model.thresholds or {}), **params)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        where = next((o for k, o in origin.items() if msg.startswith(f"{k} ")), None)
        return error(f"{where}: {msg}" if where else f"{model_name}: {msg}")
    if opts.norm is not None and not 0 <= opts.norm[0] < opts.norm[1] <= 100:
        return error(f"--norm needs 0 <= PMIN < PMAX <= 100, got {opts.norm[0]:g} {opts.norm[1]:g}")
    from .segmenter import Segmenter, SegmenterError

    try:  # check --diameter / --pixel-size / --tile against the model before any work
        from .tiling import check_tile

        seg = Segmenter(model, diameter=opts.diameter, pixel_size=opts.pixel_size)
        if opts.precision == "int8":  # int8 needs activation ranges for this model: say so before any work
            from .models.inference import int8_ranges

            if int8_ranges(model) is None:
                raise SegmenterError(f"--precision int8: {model_name} has no int8 activation ranges (the bundled "
                                     "models ship them; for another model measure them with "
                                     "cellseg.models.inference.calibrate in Python), or use --precision fp32")
        try:
            check_tile(opts.tile, seg.default_margin(), int(model.div_by))
        except ValueError as exc:
            raise SegmenterError(f"--tile: {exc}") from None
    except SegmenterError as exc:
        return error(str(exc))
    spec = SegmenterSpec(model=str(model_name), params=tuple(sorted(params.items())), tile=opts.tile,
                         augment=opts.augment, diameter=opts.diameter, pixel_size=opts.pixel_size,
                         transform=opts.norm_transform, flat_field=opts.flat_field,
                         noise_filter=opts.noise_filter, device=opts.device,
                         backend=opts.backend, precision=opts.precision,
                         normalize=opts.norm or None)
    try:  # a read-only folder, or -o naming a file or a path below one: say so before any work
        check_output_dir(out_dir)
    except OutputError as exc:
        return error(str(exc))
    folders = {out_dir} | {out_dir / Path(n).parent for n in out_names}
    if opts.ctc:
        folders.add(out_dir / f"{opts.ctc}_RES")
    stale = [p for d in sorted(folders) for p in remove_stale_temporaries(d)]
    if stale:
        out(f"note: removed {len(stale)} temporary file{'s' if len(stale) != 1 else ''} that an interrupted "
            f"earlier run left in {out_dir}", err=True)
    # outputs made with other settings (model, parameters...) are not skipped as a resume would
    settings = run_settings(spec, model, axes=opts.axes, channel=opts.channel, link=opts.link, level=opts.level)
    record = RunRecord(out_dir)
    name_of = {str(f): n for f, n in zip(files, out_names)}
    input_of = {n: f for f, n in zip(files, out_names)}
    if not opts.overwrite:
        clash = record.conflicts(out_names, settings,
                                 lambda n: output_paths(input_of[n], out_dir, name=n, output_format=opts.output_format,
                                                        labels_name=opts.labels_name)["labels"].exists())
        if clash:
            diffs = sorted({d for ds in clash.values() for d in ds})
            shown = ", ".join(list(clash)[:3]) + (", ..." if len(clash) > 3 else "")
            out(f"error: {out_dir} holds the outputs of {len(clash)} of these inputs ({shown}) made with other "
                f"settings (see {record.path.name}):", err=True)
            for d in diffs:
                out(f"  {d}", err=True)
            out("use --overwrite to redo them with the new settings, or choose another output folder (-o)", err=True)
            return 2
    try:  # which inputs go block-wise (asked, or by size): said before any work
        plans = plan_blockwise(opts, files, seg, settings, rep_out)
    except ValueError as exc:
        return error(str(exc))

    failed = 0
    finished: list[FileResult] = []  # results so far, for the message on Ctrl-C

    def on_result(r: FileResult) -> None:
        nonlocal failed
        finished.append(r)
        lines = [(f"warning: {r.input}: {w}", True) for w in r.warnings]
        if r.status == "failed":
            failed += 1
            msg = f"FAILED {cli_message(r.message)}"
        elif r.status == "skipped":
            known = record.recorded(name_of.get(r.input, "")) is not None
            msg = (f"skipped {r.input}: outputs exist, made with the same settings (--overwrite redoes them)" if known
                   else f"skipped {r.input}: outputs exist, made by a run that did not record its settings "
                        f"(--overwrite redoes them)")
        else:
            record.set(name_of[r.input], settings)
            msg = f"done {r.input}: {_counts(r, opts.link)}{_blockwise_text(r)} -> {r.outputs['labels']}"
        rep_out.file_done(lines + [(msg, False)])

    def save_record() -> None:
        try:
            record.flush()
        except OSError as exc:
            out(f"warning: cannot write {record.path}: {exc.strerror or exc}; a rerun cannot tell which "
                "settings made these outputs", err=True)

    rep_out.begin(len(files))
    try:
        results = run_batch(spec, files, out_dir, workers=opts.workers, scheduler=opts.scheduler,
                            on_result=on_result, progress=rep_out.progress, names=out_names, axes=opts.axes,
                            channel=opts.channel, overwrite=opts.overwrite, csv=opts.csv, overlay=opts.overlay,
                            link=opts.link, level=opts.level, output_format=opts.output_format,
                            labels_name=opts.labels_name, blockwise=plans)
    except KeyboardInterrupt:
        rep_out.end()
        save_record()
        n_finished = len(finished)
        out(f"interrupted after {n_finished} file{'s' if n_finished != 1 else ''} of {len(files)}; rerun the same "
            f"command to resume (finished files are kept and skipped; no file is half-written"
            + ("; a block-wise run goes on from its last finished block" if plans else "") + ")", err=True)
        return 130
    rep_out.end()
    save_record()
    n_left = len(files) - len(results)
    fatal = next((r for r in results if r.fatal), None)
    if fatal is not None:
        out(f"stopped after a write failure that concerns the whole output folder "
            f"({fatal.message.split(': ', 1)[-1]}); {n_left} input{'s' if n_left != 1 else ''} not attempted. "
            "Free space or choose another -o, then rerun: finished files are kept and skipped", err=True)
    if opts.ctc:
        from .batch import write_ctc_results

        try:
            write_ctc_results(results, out_dir, opts.ctc)
        except OSError as exc:
            out(f"FAILED writing the CTC results: cannot write {exc.filename or out_dir}: "
                f"{exc.strerror or exc}", err=True)
            failed += 1
        except ValueError as exc:
            out(f"FAILED writing the CTC results: {exc}", err=True)
            failed += 1
    n_done = sum(r.status == "done" for r in results)
    n_skip = sum(r.status == "skipped" for r in results)
    out(f"{n_done} segmented, {n_skip} skipped, {failed} failed, {len(missing)} not found"
        + (f", {n_left} not attempted" if n_left else "") + f"; outputs in {out_dir}")
    return 1 if (failed or missing or n_left) else 0
