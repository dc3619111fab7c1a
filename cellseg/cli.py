"""Command line: ``cellseg segment | evaluate | train | denoise | models | download``.

A thin shell over the library: argument parsing, progress bars, exit codes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _parse_value(v: str):
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


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _tile(v: str | None):
    """``--tile``: ``512``, ``256,512`` or ``256x512``; ``0`` means the whole image at once."""
    if v is None:
        return None
    try:
        parts = [int(p) for p in v.lower().replace("x", ",").split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size in pixels such as 512 or 256,512 (0: no tiling), "
                                         f"got {v!r}") from None
    if not parts or any(p < 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected sizes >= 0 in pixels (0: no tiling), got {v!r}")
    if all(p == 0 for p in parts):
        return None
    return parts[0] if len(parts) == 1 else tuple(parts)


def _resolve_inputs(inputs: list[str]) -> list[str]:
    out = []
    for s in inputs:
        if s.startswith("sample:"):
            from .datasets.samples import sample_path

            out.append(str(sample_path(s.split(":", 1)[1])))
        else:
            out.append(s)
    return out


# -- segment ----------------------------------------------------------------------
def _add_segment(sub):
    p = sub.add_parser(
        "segment",
        help="segment TIFF/PNG images and stacks, and OME-Zarr images",
        description="Segment images: one label TIFF per input (named after its stem, same axes), "
        "a per-object CSV and a PNG overlay (each object tinted and outlined in its own colour; of a stack, "
        "the first T frame and the middle Z slice); OUT/cellseg_run.json records the model and parameters "
        "of every output, and a rerun with other ones is refused unless --overwrite. Inputs are files, "
        "OME-Zarr images (labels into their labels/ group; see --output-format), folders (their "
        ".tif/.tiff/.png files and OME-Zarr images, not other subfolders), glob patterns or "
        "sample:NAME for a bundled sample. Inputs with the same stem (a/img.tif, a/img.png, b/img.tif) "
        "keep their folder under OUT (OUT/a/..., OUT/b/...) and, within one folder, their extension "
        "(img_tif_labels.tif, img_png_labels.tif); this is said before any work. The output folder is "
        "checked before any work; a file that cannot be written is reported as FAILED with its path, and "
        "a full or read-only disk stops the batch (rerun to resume).",
    )
    p.add_argument("inputs", nargs="+", help="files, folders, globs, or sample:NAME")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--model", default=None,
                   help="bundled model name, or a model file: a path with a folder separator or a suffix such as "
                        ".pt, or a bioimage.io package that 'cellseg export' wrote (.zip) (a bundled name wins "
                        "over a file or folder of that name in the current folder: write "
                        "./NAME for it; default: the best bundled nuclei model)")
    from .representations._params import cli_flags

    for flag, spec in cli_flags().items():  # declared by the representations' Params (their ``cli``)
        p.add_argument(flag, type=spec["type"], default=None, help=spec["help"].replace("%", "%%"))
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="any other decode parameter of the model's representation (repeatable)")
    p.add_argument("--tile", type=_tile, default=None,
                   help="tile size in pixels, e.g. 512 or 256,512 (default, or 0: the whole image at once; "
                        "block-wise runs: each block in equal tiles of at most 1024 px plus the context); a "
                        "tile must be larger than twice the model's context margin, and a smaller one is "
                        "refused with the minimum")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time augmentation: average the network over the 8 flips/transposes of the image "
                        "(8x the network time; default: the model's choice)")
    p.add_argument("--diameter", default=None, metavar="D|auto|off",
                   help="object diameter in the images (px): they are resampled to the model's object size and "
                        "the labels mapped back; 'auto' estimates it per file (stack); 'off' segments at the "
                        "image's own scale (default: the model's choice, see 'cellseg models')")
    p.add_argument("--pixel-size", type=float, default=None, metavar="UM",
                   help="pixel size in µm, for files that do not record it (used with models that know "
                        "their object size in µm, and for the µm columns of the CSV)")
    p.add_argument("--norm", nargs=2, type=float, default=None, metavar=("PMIN", "PMAX"),
                   help="intensity normalization percentiles (default: the model's, usually 1 99.8); a "
                        "lower PMAX (e.g. 99) brightens dim objects next to very bright ones")
    p.add_argument("--device", default="auto",
                   help="where the network runs: auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"),
                   help="what runs the network: torch, onnx (ONNX Runtime, CPU only) or auto (default: onnx on "
                        "the CPU when onnxruntime is installed, torch on a GPU; see docs/speed.md)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "int8"),
                   help="arithmetic of the network: fp32, bf16 (torch; fast on CPUs with AVX-512 BF16), int8 "
                        "(onnx; models with int8 ranges) or auto (default: int8 where it was checked to keep "
                        "the model's accuracy, as for nuclei; else fp32)")
    p.add_argument("--norm-transform", default="linear", choices=("linear", "sqrt", "log"),
                   help="intensity transform after the normalization: sqrt or log lift dim objects next to "
                        "very bright ones (default: linear)")
    p.add_argument("--axes", default=None, help="axes of the input when the file does not say (e.g. ZYX, TYX, YXC)")
    p.add_argument("--channel", default=None, help="channel index or name for multi-channel images")
    p.add_argument("--link", action="store_true", help="T stacks: keep ids of cells across frames (IoU linking)")
    p.add_argument("--ctc", metavar="SEQ", default=None,
                   help="also write the CTC result layout OUT/SEQ_RES/maskNNN.tif (T stacks: one file per frame)")
    p.add_argument("--no-csv", action="store_true", help="do not write the per-object CSV")
    p.add_argument("--no-overlay", action="store_true", help="do not write the PNG overlay")
    p.add_argument("--overwrite", action="store_true",
                   help="redo inputs whose outputs already exist (without it they are skipped, so a rerun resumes; "
                        "outputs made with another model or other parameters, as recorded in OUT/cellseg_run.json, "
                        "are refused before any work)")
    p.add_argument("--workers", type=int, default=None,
                   help="run files on a local Dask cluster with N workers (the blocks of block-wise runs, see "
                        "--block-size)")
    p.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler (tcp://host:8786)")
    p.add_argument("--block-size", type=int, default=None, metavar="N",
                   help="segment each input block by block, N px a side (each block read with a margin of "
                        "context), never loading it whole: a TIFF is memory-mapped (or read by strips or tiles "
                        "when compressed), an OME-Zarr read chunk by chunk. Each object has one owner block, ids "
                        "are unique. The labels are written block by block (an uncompressed uint32 TIFF, or the "
                        "OME-Zarr's labels group, its lower levels sampled band by band), the CSV is measured "
                        "block by block from the finished labels and the overlay is downsampled to at most "
                        "2048 px a side. Progress is printed per block; a run that was interrupted, even killed, "
                        "resumes from its last finished block when the same command is run again. With "
                        "--workers/--scheduler the blocks are the Dask tasks. One 2D image per file (pick a "
                        "channel with --channel); Z and T stacks are not supported block-wise. Without this "
                        "option, an input of more than 64 Mpx per frame goes block-wise by default (blocks of "
                        "2048 px), which is said in a message")
    p.add_argument("--block-margin", type=int, default=None, metavar="PX",
                   help="block-wise runs: context read around each block (default: the network's context plus "
                        "two object diameters, rounded up to 16 px; objects larger than the margin may be cut "
                        "by a block edge and are marked in the CSV); a block must be at least twice its margin")
    p.add_argument("--no-blockwise", action="store_true",
                   help="never segment block-wise: load every input whole, however large")
    p.add_argument("--level", type=int, default=0, metavar="N",
                   help="OME-Zarr inputs: the resolution level to segment (default 0, the full resolution); "
                        "its pixel sizes come from the metadata")
    p.add_argument("--output-format", choices=("zarr", "tiff"), default=None,
                   help="where the labels go: zarr writes them into an OME-Zarr input's labels/NAME group "
                        "(TIFF/PNG inputs: a new OUT/STEM.ome.zarr holding image and labels), tiff writes "
                        "OUT/STEM_labels.tif (default: zarr for OME-Zarr inputs, tiff for the others)")
    p.add_argument("--labels-name", default="cellseg", metavar="NAME",
                   help="name of the label image in an OME-Zarr's labels/ group (default: cellseg)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_segment)


_CLI_HINTS = (
    ("Pass axes=", "--axes", "on the command line: --axes ZYX for a Z stack, --axes TYX for time"),
    ("choose one with channel=", "--channel", "on the command line: --channel INDEX or --channel NAME"),
)
#: keyword arguments named by library messages, and the option that sets them
_CLI_NAMES = (("pass allow_missing=True", "pass --allow-missing"),
              ("pass axes='ZYX' (a Z stack) or axes='TYX' (time)", "pass --axes ZYX (a Z stack) or --axes TYX (time)"),
              ("choose one with channel= (index", "choose one with --channel (an index"))


def _cli_message(msg: str) -> str:
    """Library messages name keyword arguments (``axes=``, ``channel=``); on the command line
    say which option to use instead."""
    for needle, option in _CLI_NAMES:
        msg = msg.replace(needle, option)
    for needle, option, hint in _CLI_HINTS:
        if needle in msg and option not in msg:
            msg = f"{msg} -- {hint}"
    return msg


def _decode_overrides(args) -> dict:
    params = {}
    for item in args.param:
        if "=" not in item:
            raise SystemExit(f"cellseg segment: --param expects NAME=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        params[k.strip()] = _parse_value(v.strip())
    return params


def _counts(r, link: bool) -> str:
    """What the ``done`` line counts: objects, and for a T stack the frames, the objects counted
    frame by frame (one CSV row each) and, with --link, the cells tracked over the frames."""
    if r.n_frames <= 1:
        return f"{r.n_objects} object{'s' if r.n_objects != 1 else ''}"
    per = f"{r.frame_objects} object{'s' if r.frame_objects != 1 else ''} in {r.n_frames} frames (one CSV row each)"
    return f"{per}, {r.n_objects} cell{'s' if r.n_objects != 1 else ''} tracked over the frames" if link else per


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.0f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _blockwise_text(r) -> str:
    """What the ``done`` line says about a block-wise run."""
    b = getattr(r, "blockwise", None)
    if not b:
        return ""
    parts = [f"block-wise, {_plural(b['blocks'], 'block')} of {b['block']} px (margin {b['margin']} px, network "
             f"tiles of {b['tile']} px)"]
    if b["reused"]:
        parts.append(f"{b['reused']} of them done by the interrupted earlier run")
    if b["cut"]:
        parts.append(f"{b['cut']} cut by a block edge")
    if b.get("overlay_step") and b["overlay_step"] > 1:
        parts.append(f"overlay downsampled 1/{b['overlay_step']}")
    return " (" + "; ".join(parts) + ")"


def _plan_blockwise(args, files, seg, settings) -> dict:
    """The :class:`cellseg.blockrun.BlockPlan` of each input that goes block-wise: every TIFF and
    OME-Zarr input with ``--block-size``, else those of more than
    :data:`cellseg.blockrun.BLOCKWISE_ABOVE_PX` per frame (a note says so, and why); none with
    ``--no-blockwise``. Settings that cannot work raise ``ValueError`` (before any work); a file
    that cannot go block-wise gets a plan with its error when block-wise was asked for, else a
    note that it is loaded whole."""
    from .batch import resolve_output_format
    from .blockrun import (
        BLOCKWISE_ABOVE_PX,
        DEFAULT_BLOCK,
        BlockPlan,
        block_segmenter,
        check_block_size,
        default_margin,
        network_context,
        probe,
    )
    from .io import TIFF_SUFFIXES
    from .omezarr import is_zarr

    if args.no_blockwise and (args.block_size is not None or args.block_margin is not None):
        raise ValueError("--no-blockwise contradicts --block-size/--block-margin: give one or the other")
    if args.no_blockwise:
        return {}
    if args.block_size is not None and args.block_size < 1:
        raise ValueError(f"--block-size must be a number of pixels >= 1, got {args.block_size}")
    if args.block_margin is not None and args.block_margin < 0:
        raise ValueError(f"--block-margin must be >= 0 pixels, got {args.block_margin}")
    bseg = block_segmenter(seg) if seg.spatial_ndim == 2 else None
    block = args.block_size if args.block_size is not None else DEFAULT_BLOCK
    if bseg is not None:  # at the model's own object size; a file whose objects differ is checked again
        margin = args.block_margin if args.block_margin is not None else default_margin(bseg)
        check_block_size(block, margin, network_context(bseg))
    explicit = args.block_size is not None
    plans: dict = {}
    for f in files:
        f = Path(f)
        if not explicit and not (f.suffix.lower() in TIFF_SUFFIXES or is_zarr(f)):
            continue
        px = None
        try:
            if bseg is None:
                from .blockrun import BlockwiseError

                raise BlockwiseError(f"{f}: block-wise runs segment 2D images; this model segments 3D volumes")
            src = probe(f, level=args.level, axes=args.axes, channel=args.channel)
            px = src.shape[0] * src.shape[1]
            if resolve_output_format(f, args.output_format) == "zarr" and not is_zarr(f):
                raise ValueError(f"{f}: block-wise runs write the labels of a TIFF input as a TIFF; drop "
                                 "--output-format zarr (or convert the image to OME-Zarr first)")
        except (ValueError, OSError) as exc:
            px = px or getattr(exc, "frame_px", None)
            if explicit:
                plans[str(f)] = BlockPlan(block, args.block_margin, error=str(exc), settings=settings)
            elif px and px > BLOCKWISE_ABOVE_PX:
                print(f"note: {f}: {px / 1e6:.0f} Mpx per frame, over the {BLOCKWISE_ABOVE_PX / 1e6:.0f} Mpx above "
                      f"which cellseg segments block-wise, but it is loaded whole: "
                      f"{str(exc).removeprefix(f'{f}: ')}", file=sys.stderr)
            continue
        if explicit:
            plans[str(f)] = BlockPlan(block, args.block_margin, settings=settings)
        elif px > BLOCKWISE_ABOVE_PX:
            plans[str(f)] = BlockPlan(block, args.block_margin, auto=True, settings=settings)
            print(f"note: {f}: {src.shape[0]} x {src.shape[1]} = {px / 1e6:.0f} Mpx per frame, over the "
                  f"{BLOCKWISE_ABOVE_PX / 1e6:.0f} Mpx above which cellseg segments block-wise (never loading the "
                  f"image whole): blocks of {block} px (--block-size N sets the size, --no-blockwise loads it "
                  f"whole)", file=sys.stderr)
    if plans and args.ctc:
        raise ValueError("--ctc writes its masks from whole label images and block-wise runs are for images too "
                         "large for that: drop --ctc, or --no-blockwise")
    return plans


def _cmd_segment(args) -> int:
    from ._files import OutputError, check_output_dir, remove_stale_temporaries
    from .batch import (
        RunRecord,
        SegmenterSpec,
        _split_name,
        expand_inputs,
        output_names,
        output_paths,
        run_batch,
        run_settings,
    )
    from .models import default_model_name, load_model

    left_out: list = []
    files, missing = expand_inputs(_resolve_inputs(args.inputs), skipped=left_out)
    for m in missing:
        print(f"error: {m}", file=sys.stderr)
    if left_out:  # once for all folders
        n_sub = sum(len(s) for _, s, _ in left_out)
        other = [f for _, _, o in left_out for f in o]
        kinds = sorted({f.suffix.lower() or "(no extension)" for f in other})
        kinds_text = ", ".join(kinds[:5]) + (", ..." if len(kinds) > 5 else "")
        parts = ([_plural(n_sub, "subfolder")] if n_sub else []) + (
            [f"{_plural(len(other), 'file')} of other types ({kinds_text})"] if other else [])
        print(f"note: left out {' and '.join(parts)} in the input folder{'s' if len(left_out) > 1 else ''}: only "
              ".tif, .tiff and .png files directly in a folder are segmented (for subfolders give them, or a "
              "pattern such as 'DIR/**/*.tif')", file=sys.stderr)
    if not files:
        print("error: no input files", file=sys.stderr)
        return 2
    out_dir = Path(args.out)
    try:  # inputs with the same stem get distinct output names, or are refused, before any work
        out_names = output_names(files)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    renamed = [(f, n) for f, n in zip(files, out_names) if n != _split_name(Path(f).name)[0]]
    if renamed:
        print(f"note: {len(renamed)} inputs share a file name with another input; their outputs keep "
              f"their folder (and extension) to stay apart:", file=sys.stderr)
        for f, n in renamed:
            print(f"  {f} -> {out_dir / n}_labels.tif", file=sys.stderr)
    from .batch import resolve_output_format
    from .omezarr import is_zarr

    if args.level < 0:
        print(f"error: --level must be >= 0 (0: the full resolution), got {args.level}", file=sys.stderr)
        return 2
    if args.level and not any(is_zarr(f) for f in files):
        print("error: --level applies to OME-Zarr inputs, and none was given", file=sys.stderr)
        return 2
    if not args.labels_name or args.labels_name.startswith(".") or any(c in args.labels_name for c in "/\\"):
        print(f"error: --labels-name {args.labels_name!r}: give a plain name (no '/', not starting with '.')",
              file=sys.stderr)
        return 2
    if args.ctc and any(resolve_output_format(f, args.output_format) == "zarr" for f in files):
        print("error: --ctc writes its masks from label TIFFs: add --output-format tiff", file=sys.stderr)
        return 2
    model_name = args.model or default_model_name()
    try:
        from .models.inference import resolve
        from .models.network import resolve_device

        device = resolve_device(args.device)  # a device this machine lacks: an error before any work
        resolve(args.backend, args.precision, device)  # a backend/precision that cannot run there, too
        model = load_model(model_name)  # fail early with a clear message
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    params = _decode_overrides(args)
    origin = {k: f"--param {k}={v}" for k, v in params.items()}  # how the user set each parameter
    rep = model.representation
    from .representations._params import cli_aliases, cli_flags

    aliases = cli_aliases(rep)  # flag -> the field it sets for this model (from the Params declarations)
    for flag in cli_flags():
        v = getattr(args, flag[2:].replace("-", "_"))
        if v is None:
            continue
        name = aliases.get(flag)
        if name is None:
            print(f"error: {flag} does not apply to a {rep.name} model "
                  f"(its parameters: {sorted(rep.Params.__dataclass_fields__)})", file=sys.stderr)
            return 2
        params[name] = v
        origin[name] = f"{flag} {v:g}"
    try:  # the ranges are the representation's (its Params dataclass): checked before any work
        rep.params(dict(model.thresholds or {}), **params)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        where = next((o for k, o in origin.items() if msg.startswith(f"{k} ")), None)
        print(f"error: {where}: {msg}" if where else f"error: {model_name}: {msg}", file=sys.stderr)
        return 2
    if args.norm is not None and not 0 <= args.norm[0] < args.norm[1] <= 100:
        print(f"error: --norm needs 0 <= PMIN < PMAX <= 100, got {args.norm[0]:g} {args.norm[1]:g}", file=sys.stderr)
        return 2
    try:  # check --diameter / --pixel-size / --tile against the model before any work
        from .segmenter import Segmenter, SegmenterError
        from .tiling import check_tile

        seg = Segmenter(model, diameter=args.diameter, pixel_size=args.pixel_size)
        if args.precision == "int8":  # int8 needs activation ranges for this model: say so before any work
            from .models.inference import int8_ranges

            if int8_ranges(model) is None:
                raise SegmenterError(f"--precision int8: {model_name} has no int8 activation ranges (the bundled "
                                     "models ship them; for another model measure them with "
                                     "cellseg.models.inference.calibrate in Python), or use --precision fp32")
        try:
            check_tile(args.tile, seg.default_margin(), int(getattr(model, "div_by", 1)))
        except ValueError as exc:
            raise SegmenterError(f"--tile: {exc}") from None
    except SegmenterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    spec = SegmenterSpec(model=str(model_name), params=tuple(sorted(params.items())), tile=args.tile,
                         augment=args.augment, diameter=args.diameter, pixel_size=args.pixel_size,
                         transform=args.norm_transform, device=args.device, backend=args.backend,
                         precision=args.precision,
                         normalize=tuple(args.norm) if args.norm else None)
    try:  # a read-only folder, or -o naming a file or a path below one: say so before any work
        check_output_dir(out_dir)
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folders = {out_dir} | {out_dir / Path(n).parent for n in out_names}
    if args.ctc:
        folders.add(out_dir / f"{args.ctc}_RES")
    stale = [p for d in sorted(folders) for p in remove_stale_temporaries(d)]
    if stale:
        print(f"note: removed {len(stale)} temporary file{'s' if len(stale) != 1 else ''} that an interrupted "
              f"earlier run left in {out_dir}", file=sys.stderr)
    # outputs made with other settings (model, parameters...) are not skipped as a resume would
    settings = run_settings(spec, model, axes=args.axes, channel=args.channel, link=args.link, level=args.level)
    record = RunRecord(out_dir)
    name_of = {str(f): n for f, n in zip(files, out_names)}
    input_of = {n: f for f, n in zip(files, out_names)}
    if not args.overwrite:
        clash = record.conflicts(out_names, settings,
                                 lambda n: output_paths(input_of[n], out_dir, name=n, output_format=args.output_format,
                                                        labels_name=args.labels_name)["labels"].exists())
        if clash:
            diffs = sorted({d for ds in clash.values() for d in ds})
            shown = ", ".join(list(clash)[:3]) + (", ..." if len(clash) > 3 else "")
            print(f"error: {out_dir} holds the outputs of {len(clash)} of these inputs ({shown}) made with other "
                  f"settings (see {record.path.name}):", file=sys.stderr)
            for d in diffs:
                print(f"  {d}", file=sys.stderr)
            print("use --overwrite to redo them with the new settings, or choose another output folder (-o)",
                  file=sys.stderr)
            return 2
    try:  # which inputs go block-wise (asked, or by size): said before any work
        plans = _plan_blockwise(args, files, seg, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .blockrun import BlockEvent

    kwargs = dict(axes=args.axes, channel=args.channel, overwrite=args.overwrite, csv=not args.no_csv,
                  overlay=not args.no_overlay, link=args.link, level=args.level, output_format=args.output_format,
                  labels_name=args.labels_name, blockwise=plans)
    bar = None
    if not args.quiet and not args.workers and not args.scheduler:
        from tqdm import tqdm

        bar = tqdm(total=len(files), unit="file", desc="files", position=0)
    sub_bars: dict = {}  # "frame" (T/Z stacks), "tile" (tiled runs): the file being segmented

    def close_sub_bars():
        for key in ("tile", "frame"):
            b = sub_bars.pop(key, None)
            if b is not None:
                b.close()

    def progress(ev):
        if args.quiet:
            return
        from tqdm import tqdm

        if isinstance(ev, BlockEvent):  # block-wise runs: a line per block (they take long) on stderr
            if ev.stage == "block":
                left = (f", ~{_duration(ev.seconds / ev.new * (ev.total - ev.done))} left" if ev.new and
                        ev.done < ev.total else "")
                say(f"  block {ev.done}/{ev.total} of {ev.input}: {ev.n_objects} objects so far "
                    f"({_duration(ev.seconds)}{left})", err=True)
            else:
                say(f"  {ev.message}", err=True)
            return

        if ev.n_frames > 1:
            fb = sub_bars.get("frame")
            if fb is None or fb.total != ev.n_frames:
                if fb is not None:
                    fb.close()
                fb = sub_bars["frame"] = tqdm(total=ev.n_frames, unit="frame", desc="frames", position=1,
                                              leave=False)
            if ev.stage == "decode":
                fb.update(ev.frame + 1 - fb.n)
        if ev.stage == "predict" and ev.total > 1:
            b = sub_bars.get("tile")
            if b is None or b.total != ev.total or ev.done == 1:
                if b is not None:
                    b.close()
                desc = f"frame {ev.frame + 1}/{ev.n_frames} tiles" if ev.n_frames > 1 else "tiles"
                b = sub_bars["tile"] = tqdm(total=ev.total, unit="tile", desc=desc,
                                            position=2 if ev.n_frames > 1 else 1, leave=False)
            b.update(ev.done - b.n)

    failed = 0

    def say(msg: str, err: bool = False):
        stream = sys.stderr if err else sys.stdout
        if bar is not None:
            bar.write(msg, file=stream)
        else:
            print(msg, file=stream, flush=True)

    def on_result(r):
        nonlocal failed
        close_sub_bars()
        for w in r.warnings:
            say(f"warning: {r.input}: {w}", err=True)
        if r.status == "failed":
            failed += 1
            msg = f"FAILED {_cli_message(r.message)}"
        elif r.status == "skipped":
            known = record.recorded(name_of.get(r.input, "")) is not None
            msg = (f"skipped {r.input}: outputs exist, made with the same settings (--overwrite redoes them)" if known
                   else f"skipped {r.input}: outputs exist, made by a run that did not record its settings "
                        f"(--overwrite redoes them)")
        else:
            record.set(name_of[r.input], settings)
            msg = f"done {r.input}: {_counts(r, args.link)}{_blockwise_text(r)} -> {r.outputs['labels']}"
        say(msg)
        if bar is not None:
            bar.update(1)

    finished: list = []  # results so far, for the message on Ctrl-C

    def save_record():
        try:
            record.flush()
        except OSError as exc:
            print(f"warning: cannot write {record.path}: {exc.strerror or exc}; a rerun cannot tell which "
                  "settings made these outputs", file=sys.stderr)

    def on_result_kept(r):
        finished.append(r)
        on_result(r)

    try:
        results = run_batch(spec, files, out_dir, workers=args.workers, scheduler=args.scheduler,
                            on_result=on_result_kept, progress=progress, names=out_names, **kwargs)
    except KeyboardInterrupt:
        close_sub_bars()
        if bar is not None:
            bar.close()
        save_record()
        n = len(finished)
        print(f"interrupted after {n} file{'s' if n != 1 else ''} of {len(files)}; rerun the same command to "
              f"resume (finished files are kept and skipped; no file is half-written"
              + ("; a block-wise run goes on from its last finished block" if plans else "") + ")",
              file=sys.stderr)
        return 130
    close_sub_bars()
    if bar is not None:
        bar.close()
    save_record()
    n_left = len(files) - len(results)
    fatal = next((r for r in results if r.fatal), None)
    if fatal is not None:
        print(f"stopped after a write failure that concerns the whole output folder "
              f"({fatal.message.split(': ', 1)[-1]}); {n_left} input{'s' if n_left != 1 else ''} not attempted. "
              "Free space or choose another -o, then rerun: finished files are kept and skipped", file=sys.stderr)
    if args.ctc:
        from .batch import write_ctc_results

        try:
            write_ctc_results(results, out_dir, args.ctc)
        except OSError as exc:
            print(f"FAILED writing the CTC results: cannot write {exc.filename or out_dir}: "
                  f"{exc.strerror or exc}", file=sys.stderr)
            failed += 1
        except ValueError as exc:
            print(f"FAILED writing the CTC results: {exc}", file=sys.stderr)
            failed += 1
    n_done = sum(r.status == "done" for r in results)
    n_skip = sum(r.status == "skipped" for r in results)
    print(f"{n_done} segmented, {n_skip} skipped, {failed} failed, {len(missing)} not found"
          + (f", {n_left} not attempted" if n_left else "") + f"; outputs in {out_dir}")
    return 1 if (failed or missing or n_left) else 0


# -- evaluate ---------------------------------------------------------------------
def _add_evaluate(sub):
    p = sub.add_parser(
        "evaluate",
        help="compare predicted labels with ground truth",
        description="GT_DIR is a CTC truth folder (NN_GT or NN_ST, with SEG/man_segNNN.tif) and PRED_DIR a "
        "CTC result folder (NN_RES with maskNNN.tif), or both are plain folders of label images paired by "
        "file stem: the prediction for X.tif is X.tif or X_labels.tif, so the output folder of 'cellseg "
        "segment' can be given as it is (its overlays and CSV tables are ignored). Prints AP at IoU "
        "0.5/0.75/0.9, mean AP over 0.5:0.95 (AP = TP/(TP+FP+FN)), F1, panoptic quality and the CTC SEG "
        "measure. Label images must hold instance labels (one id per object): binary or semantic masks "
        "(one id made of several separate blobs) are refused, naming the file.",
    )
    p.add_argument("gt_dir")
    p.add_argument("pred_dir")
    p.add_argument("--json", default=None, help="write all figures as JSON to this file")
    p.add_argument("--allow-missing", action="store_true",
                   help="score a ground-truth file without prediction as an empty prediction (listed in a "
                        "warning); it is still an error when no file has a prediction")
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args) -> int:
    import warnings

    from .datasets import pair_label_folders
    from .io import read_labels
    from .labels import check_not_binary, mask_stats
    from .metrics import evaluate

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pairs = pair_label_folders(args.gt_dir, args.pred_dir, allow_missing=args.allow_missing)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {_cli_message(str(exc))}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {_cli_message(str(w.message))}", file=sys.stderr)

    stats: dict[str, list] = {"gt": [], "pred": []}  # binary or semantic masks are refused

    def items():
        import numpy as np

        for name, g, p in pairs:
            gt = read_labels(g)
            pred = np.zeros_like(gt) if p is None else read_labels(p)
            if pred.shape != gt.shape:
                raise ValueError(f"{p}: shape {pred.shape} differs from the ground truth {g} {gt.shape}")
            stats["gt"].append(mask_stats(gt, str(g)))
            if p is not None:
                stats["pred"].append(mask_stats(pred, str(p)))
            yield name, gt, pred

    try:
        report = evaluate(items())
        check_not_binary(stats["gt"], "ground-truth label images")
        check_not_binary(stats["pred"], "predicted label images")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format_table())
    if args.json:
        report.to_json(args.json)
        print(f"wrote {args.json}")
    return 0


# -- models / download / train ----------------------------------------------------
def _add_models(sub):
    p = sub.add_parser("models", help="list the bundled pretrained models (the default one marked)")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args) -> int:
    from .models import default_model_name, list_models, model_info

    names = list_models()
    if not names:
        print("no bundled models")
        return 0
    default = default_model_name()
    for n in names:
        info = model_info(n)
        label = f"{n} (default)" if n == default else n
        print(f"{label:24s} {info.get('summary', '')}")
    print("(default): used when 'cellseg segment' is given no --model")
    return 0


def _add_download(sub):
    p = sub.add_parser("download", help="download a public dataset into the cache (CTC, DSB 2018, BBBC039)")
    p.add_argument("name", nargs="?", help="dataset name; omit to list them")
    p.add_argument("--cache", default=None, help="cache folder (default $CELLSEG_CACHE or ~/.cache/cellseg)")
    p.add_argument("--force", action="store_true", help="download and unpack again even when cached")
    p.set_defaults(func=_cmd_download)


def _cmd_download(args) -> int:
    from .datasets import download as dl

    if not args.name:
        for name in dl.list_datasets():
            print(name)
        return 0
    try:
        path = dl.download(args.name, cache=args.cache, force=args.force)
    except (ValueError, OSError, dl.DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


def _add_train(sub):
    try:
        from .train import _cli as train_cli
    except ImportError:  # pragma: no cover - training extras always installed with torch
        return
    p = sub.add_parser("train", help="train or fine-tune a model on annotated images")
    train_cli.add_arguments(p)
    p.set_defaults(func=train_cli.run)


def _add_denoise(sub):
    from ._denoise_cli import add_parser

    add_parser(sub)


def _add_export(sub):
    from .export import add_parser

    add_parser(sub)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="cellseg", description="Instance segmentation of cells in microscopy images.")
    parser.add_argument("--version", action="version", version=f"cellseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_segment(sub)
    _add_evaluate(sub)
    _add_train(sub)
    _add_denoise(sub)
    _add_models(sub)
    _add_export(sub)
    _add_download(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside the places that say more (segment's batch, train)
        print(f"cellseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
