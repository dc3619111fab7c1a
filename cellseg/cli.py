"""Command line: ``cellseg segment | evaluate | train | denoise | models | download``.

A thin shell over the library: argument parsing, progress bars, exit codes.
"""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .cli_args import parse_tile
from .segment_run import SegmentOptions, SegmentUsageError, duration, run_segment
from .segment_run import cli_message as _cli_message

if TYPE_CHECKING:
    import numpy as np

    from .blockrun import BlockEvent
    from .segmenter import Progress

    _SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

__all__ = ["main"]


# -- segment ----------------------------------------------------------------------
def _add_segment(sub: _SubParsers) -> None:
    p = sub.add_parser(
        "segment",
        help="segment TIFF/PNG images and stacks, and OME-Zarr images",
        description="Segment images: one label TIFF per input (named after its stem, same axes), "
        "a per-object CSV and a PNG overlay (each object tinted and outlined in its own colour; of a stack, "
        "the first T frame and the middle Z slice); OUT/cellseg_run.json records the model and parameters "
        "of every output, and a rerun with other ones is refused unless --overwrite. Inputs are files, "
        "OME-Zarr images (labels into their labels/ group; see --output-format), folders (their "
        ".tif/.tiff/.png/.jpg files and OME-Zarr images, not other subfolders), glob patterns or "
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
    p.add_argument("--tile", type=parse_tile, default=None,
                   help="tile size in pixels, e.g. 512 or 256,512; 0: the whole image at once, whatever its "
                        "size. Default: a frame of more than 4 Mpx (after resampling to the model's object "
                        "size) goes through the network in equal tiles of at most 4 Mpx with their context, a "
                        "smaller one at once; the labels are the same (block-wise runs, by default or with 0: "
                        "each block in equal tiles of at most 1024 px plus the context). A tile must be larger "
                        "than twice the model's context margin, and a smaller one is refused with the minimum")
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
    p.add_argument("--flat-field", default="auto", choices=("auto", "on", "off"),
                   help="correct uneven illumination (a gradient, a vignette) by dividing each frame by its "
                        "illumination (a smooth surface through its background): auto (default) corrects frames "
                        "with a bright background (brightfield, H&E and other stains) and not fluorescence; on: "
                        "every frame; off: none. Whole frames only: block-wise runs do not correct")
    p.add_argument("--noise-filter", default="auto", choices=("auto", "on", "off"),
                   help="filter pixel-wise noise (non-local means) before the network: auto (default) filters "
                        "noisy fluorescence (a dark background, noise above 3%% of the intensity range) and not "
                        "transmitted light; on: every frame (noisy phase contrast, brightfield); off: none. "
                        "Whole frames only: block-wise runs do not filter")
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


class _TerminalReporter:
    """Lines on stdout/stderr and, unless ``quiet``, progress bars: one for the files (when
    ``file_bar``), one for the frames of a stack and one for the tiles of a frame; block-wise runs
    print a line per block."""

    def __init__(self, quiet: bool, file_bar: bool):
        self.quiet = quiet
        self.file_bar = file_bar and not quiet
        self.bar: Any = None
        self.sub_bars: dict[str, Any] = {}  # "frame" (T/Z stacks), "tile" (tiled runs): the file being segmented

    def print(self, text: str, err: bool = False) -> None:
        print(text, file=sys.stderr if err else sys.stdout)

    def begin(self, n_files: int) -> None:
        if self.file_bar:
            from tqdm import tqdm

            self.bar = tqdm(total=n_files, unit="file", desc="files", position=0)

    def say(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        if self.bar is not None:
            self.bar.write(text, file=stream)
        else:
            print(text, file=stream, flush=True)

    def _close_sub_bars(self) -> None:
        for key in ("tile", "frame"):
            b = self.sub_bars.pop(key, None)
            if b is not None:
                b.close()

    def progress(self, ev: Progress | BlockEvent) -> None:
        if self.quiet:
            return
        from tqdm import tqdm

        from .blockrun import BlockEvent

        if isinstance(ev, BlockEvent):  # block-wise runs: a line per block (they take long) on stderr
            if ev.stage == "block":
                left = (f", ~{duration(ev.seconds / ev.new * (ev.total - ev.done))} left" if ev.new and
                        ev.done < ev.total else "")
                self.say(f"  block {ev.done}/{ev.total} of {ev.input}: {ev.n_objects} objects so far "
                         f"({duration(ev.seconds)}{left})", err=True)
            else:
                self.say(f"  {ev.message}", err=True)
            return
        sub_bars = self.sub_bars
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

    def file_done(self, lines: Sequence[tuple[str, bool]]) -> None:
        self._close_sub_bars()
        for text, err in lines:
            self.say(text, err)
        if self.bar is not None:
            self.bar.update(1)

    def end(self) -> None:
        self._close_sub_bars()
        if self.bar is not None:
            self.bar.close()


def _cmd_segment(args: argparse.Namespace) -> int:
    from .representations._params import cli_flags

    flags = {flag: v for flag in cli_flags() if (v := getattr(args, flag[2:].replace("-", "_"))) is not None}
    opts = SegmentOptions(
        inputs=tuple(args.inputs), out=args.out, model=args.model, param=tuple(args.param), decode_flags=flags,
        tile=args.tile, augment=args.augment, diameter=args.diameter, pixel_size=args.pixel_size,
        norm=(args.norm[0], args.norm[1]) if args.norm is not None else None, device=args.device,
        backend=args.backend, precision=args.precision, norm_transform=args.norm_transform,
        flat_field=args.flat_field, noise_filter=args.noise_filter, axes=args.axes,
        channel=args.channel, link=args.link, ctc=args.ctc, csv=not args.no_csv, overlay=not args.no_overlay,
        overwrite=args.overwrite, workers=args.workers, scheduler=args.scheduler, block_size=args.block_size,
        block_margin=args.block_margin, no_blockwise=args.no_blockwise, level=args.level,
        output_format=args.output_format, labels_name=args.labels_name)
    reporter = _TerminalReporter(args.quiet, file_bar=not args.workers and not args.scheduler)
    try:
        return run_segment(opts, reporter)
    except SegmentUsageError as exc:
        raise SystemExit(f"cellseg segment: {exc}") from None


# -- evaluate ---------------------------------------------------------------------
def _add_evaluate(sub: _SubParsers) -> None:
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


def _cmd_evaluate(args: argparse.Namespace) -> int:
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

    def items() -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
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
def _add_models(sub: _SubParsers) -> None:
    p = sub.add_parser("models", help="list the bundled pretrained models (the default one marked)")
    p.set_defaults(func=_cmd_models)


def _cmd_models(args: argparse.Namespace) -> int:
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


def _add_download(sub: _SubParsers) -> None:
    p = sub.add_parser("download", help="download a public dataset into the cache (CTC, DSB 2018, BBBC039)")
    p.add_argument("name", nargs="?", help="dataset name; omit to list them")
    p.add_argument("--cache", default=None, help="cache folder (default $CELLSEG_CACHE or ~/.cache/cellseg)")
    p.add_argument("--force", action="store_true", help="download and unpack again even when cached")
    p.set_defaults(func=_cmd_download)


def _cmd_download(args: argparse.Namespace) -> int:
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


def _add_train(sub: _SubParsers) -> None:
    try:
        from .train import cli as train_cli
    except ImportError:  # pragma: no cover - training extras always installed with torch
        return
    p = sub.add_parser("train", help="train or fine-tune a model on annotated images")
    train_cli.add_arguments(p)
    p.set_defaults(func=train_cli.run)


def _add_denoise(sub: _SubParsers) -> None:
    from ._denoise_cli import add_parser

    add_parser(sub)


def _add_export(sub: _SubParsers) -> None:
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
    """Run the ``cellseg`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C outside the places that say more (segment's batch, train)
        print(f"cellseg {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
