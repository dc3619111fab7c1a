"""``cellseg denoise``: argparse front end of :func:`cellseg.denoise.denoise_image` (no algorithm here).

Importing this module is cheap (no numpy, no torch); :func:`run` imports the library.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "denoise",
        help="write denoised images with a model that has a denoising head (cellseg train --denoise)",
        description="Denoise images with the DenoiSeg head of a model trained with 'cellseg train --denoise': one "
                    "float32 TIFF per input, OUT/<stem>_denoised.tif, with the input's shape and axes and its "
                    "intensity units (the normalization undone). Inputs are files, folders (their .tif/.tiff/.png/.jpg "
                    "files) or globs. Existing outputs are skipped unless --overwrite; a file that fails is "
                    "reported by name and the others go on. A model without a denoising head is an error.",
    )
    p.add_argument("inputs", nargs="+", help="files, folders or globs")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--model", required=True, help="a model file (.pt) trained with --denoise")
    p.add_argument("--axes", default=None, help="axes of the input when the file does not say (e.g. ZYX, TYX)")
    p.add_argument("--tile", default=None,
                   help="tile size in pixels, e.g. 512; 0: the whole image at once (default: images of more than "
                        "4 Mpx go through the network in tiles of at most 4 Mpx with their context)")
    p.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose output exists")
    p.add_argument("-q", "--quiet", action="store_true", help="print only failures")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    """``cellseg denoise``: 0 when every input was written (or skipped), 1 when one failed,
    2 for unusable arguments (a model without a denoising head, no input, a bad output folder)."""
    from . import io
    from ._files import OutputError, check_output_dir, remove_stale_temporaries
    from .batch import expand_inputs
    from .cli_args import parse_tile
    from .denoise import check_denoises, denoise_image
    from .models import load_model
    from .segmenter import Segmenter

    def err(msg: str) -> int:
        print(f"error: {msg}", file=sys.stderr)
        return 2

    try:
        tile = parse_tile(args.tile)
    except argparse.ArgumentTypeError as exc:
        return err(f"--tile: {exc}")
    files, missing = expand_inputs(args.inputs)
    if missing:
        return err("no input matches " + ", ".join(missing))
    if not files:
        return err("no input files")
    out_dir = Path(args.out)
    try:
        check_output_dir(out_dir, "output folder")
    except OutputError as exc:
        return err(str(exc))
    remove_stale_temporaries(out_dir)
    targets: dict[Path, Path] = {}
    for f in files:
        t = out_dir / f"{Path(f).stem}_denoised.tif"
        if t in targets:
            return err(f"{f} and {targets[t]} would both write {t}; denoise them into different folders")
        targets[t] = Path(f)
    try:
        model = load_model(args.model, device=args.device)
        check_denoises(model, str(args.model))
        seg = Segmenter(model, tile=tile, diameter="off")
    except (ValueError, FileNotFoundError) as exc:
        return err(str(exc))
    failed = done = skipped = 0
    for t, f in targets.items():
        if t.exists() and not args.overwrite:
            skipped += 1
            if not args.quiet:
                print(f"skip {f}: {t} exists (--overwrite to redo)", file=sys.stderr)
            continue
        try:
            im = io.read_image(f, axes=args.axes)
            den = denoise_image(model, im.data, axes=im.axes, segmenter=seg)
            canon = "".join(a for a in "TZCYX" if a in im.axes)
            io.write_image(t, io.transpose_axes(den, im.axes, canon), canon, pixel_size=im.pixel_size,
                           channel_names=im.channel_names, frame_interval=im.frame_interval)
        except (ValueError, OSError) as exc:
            failed += 1
            print(f"FAILED {f}: {exc}", file=sys.stderr)
            continue
        done += 1
        if not args.quiet:
            print(f"{f} -> {t}", file=sys.stderr)
    if not args.quiet or failed:
        print(f"denoised {done} file(s), skipped {skipped}, failed {failed}", file=sys.stderr)
    return 1 if failed else 0
