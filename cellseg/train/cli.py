"""``cellseg train``: argparse front end of :func:`cellseg.train.fit` (no algorithm here).

Importing this module is cheap (no torch); :func:`run` imports the training code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]

_REPS = ("stardist", "flows", "distance", "offsets")
#: the names of cellseg.train.losses.HEAD_LOSSES (kept here so that building the parser needs no torch)
_LOSSES = ("bce", "weighted_bce", "dice", "focal", "soft_iou")


def _kv(item: str):
    if "=" not in item:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {item!r}")
    k, v = item.split("=", 1)
    import json

    try:
        val = json.loads(v)
    except ValueError:
        val = v
    return k.strip(), val


def _anisotropy(text: str) -> tuple[float, dict | None]:
    """``--anisotropy``: ``Z`` (a ratio) or ``Z,Y,X`` (a voxel size) -> ``(Z / X, voxel size or None)``."""
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or three numbers Z,Y,X, got {text!r}") from None
    if len(vals) not in (1, 3) or not all(v > 0 and v < float("inf") for v in vals):
        raise argparse.ArgumentTypeError(f"expected a positive number or three positive numbers Z,Y,X, got {text!r}")
    if len(vals) == 1:
        return vals[0], None
    z, y, x = vals
    if abs(y - x) > 1e-3 * x:
        raise argparse.ArgumentTypeError(f"Y ({y:g}) and X ({x:g}) must be equal: 3D models take square pixels in YX")
    return z / x, {"Z": z, "Y": y, "X": x}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``cellseg train`` options to ``parser``."""
    g = parser.add_argument_group("data")
    g.add_argument("--representation", "-r", choices=_REPS, default=None,
                   help="instance representation to learn (required unless --fine-tune)")
    g.add_argument("--rep-config", type=_kv, action="append", default=[], metavar="NAME=VALUE",
                   help="representation option, e.g. n_rays=64 or mode=omnipose (repeatable)")
    g.add_argument("--data", required=True,
                   help="training data: a CTC dataset folder (01/, 01_ST/SEG...) or an images/ + masks/ folder; "
                        "2D images train a 2D model, 3D (ZYX) volumes with 3D masks a 3D model")
    g.add_argument("--anisotropy", type=_anisotropy, default=None, metavar="Z[,Y,X]",
                   help="3D data: the Z step over the Y/X pixel size (e.g. 2.5), or the voxel size Z,Y,X (e.g. "
                        "1.0,0.4,0.4 µm); default: from the voxel size the TIFF files record (ImageJ spacing, "
                        "OME PhysicalSizeZ/X), else 1. Shapes the targets and the decoding of every 3D "
                        "representation and is stored in the model")
    g.add_argument("--sequences", nargs="+", default=None, help="CTC sequences to train on (default: all with truth)")
    g.add_argument("--truth", default="ST", choices=("GT", "ST", "auto"), help="CTC truth (default ST)")
    g.add_argument("--modality", default=None,
                   help="DSB 2018 layout: keep images of this index.csv modality tag (e.g. fluorescence)")
    g.add_argument("--val-data", default=None, help="validation data (same layouts as --data)")
    g.add_argument("--val-sequences", nargs="+", default=None, help="CTC sequences of --val-data")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="split this fraction of --data off for validation (default 0.1 when --val-data is absent)")
    g.add_argument("--pmin", type=float, default=1.0, help="normalization lower percentile (default 1)")
    g.add_argument("--pmax", type=float, default=99.8, help="normalization upper percentile (default 99.8)")

    g = parser.add_argument_group("DenoiSeg: joint denoising (Noise2Void) and segmentation")
    g.add_argument("--denoise", action="store_true",
                   help="grow a denoising head beside the segmentation heads and train it on every image with "
                        "Noise2Void masking (segmentation losses on annotated images only); the model can then "
                        "denoise ('cellseg denoise', Segmenter(denoise=True))")
    g.add_argument("--unlabeled", default=None, metavar="DIR",
                   help="folder of images without masks (its images/ subfolder when it has one) that train the "
                        "denoising head (needs --denoise)")
    g.add_argument("--denoise-weight", type=float, default=0.5, metavar="W",
                   help="weight of the denoising loss: total = (1 - W) * segmentation + W * denoising "
                        "(DenoiSeg's alpha = 1 - W; default 0.5)")
    g.add_argument("--labeled-fraction", type=float, default=0.5, metavar="P",
                   help="with --unlabeled: probability that a training patch comes from an annotated image "
                        "(default 0.5)")

    g = parser.add_argument_group("model")
    g.add_argument("--out", required=True, help="where to write the trained model (.pt)")
    g.add_argument("--checkpoint-dir", default=None,
                   help="checkpoint folder (default: OUT without .pt + '_checkpoints')")
    g.add_argument("--fine-tune", default=None, metavar="MODEL", help="start from this model (path or bundled name)")
    g.add_argument("--keep-scale", action="store_true",
                   help="with --fine-tune: train on the images at their own scale; by default a model that "
                        "resamples images to its object size (diameter 'auto': the general models nuclei and "
                        "cells) gets every training and validation image resampled so its objects' median "
                        "diameter is the model's, as its own training data were")
    g.add_argument("--backbone", choices=("unet", "resunet"), default="unet")
    g.add_argument("--depth", type=int, default=3)
    g.add_argument("--width", type=int, default=32, help="channels of the first level")
    g.add_argument("--norm", choices=("batch", "group", "instance", "none"), default="batch")
    g.add_argument("--dropout", type=float, default=0.0)
    g.add_argument("--conv-after", type=int, default=0, help="channels of a shared 3x3 conv before the heads")
    g.add_argument("--half", action="store_true", help="store the final model with float16 weights")

    g = parser.add_argument_group("schedule")
    g.add_argument("--epochs", type=int, default=50)
    g.add_argument("--steps-per-epoch", type=int, default=100)
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--patch-size", type=int, nargs="+", default=None,
                   help="one size or one per axis (Z Y X for volumes); default 128 for 2D images, for 3D 64 in Y/X "
                        "and 64 / anisotropy in Z (at least 16); with --fine-tune the patch size the model was "
                        "trained with (256 for the general cells model)")
    g.add_argument("--lr", type=float, default=3e-4)
    g.add_argument("--weight-decay", type=float, default=1e-4)
    g.add_argument("--schedule", choices=("cosine", "plateau", "constant"), default="cosine")
    g.add_argument("--warmup-steps", type=int, default=0)
    g.add_argument("--no-augment", action="store_true", help="plain crops, no augmentation")
    g.add_argument("--loss", default="default", metavar="NAME",
                   help="loss of the probability / foreground head (StarDist prob, flows cell probability, "
                        "distance fg; regression heads keep theirs): default (the representation's own BCE), "
                        f"{', '.join(_LOSSES)}, or a sum such as bce+dice; offsets takes only default")
    g.add_argument("--val-max-images", type=int, default=None, help="validate each epoch on at most N images")
    g.add_argument("--tune-thresholds", action=argparse.BooleanOptionalAction, default=True,
                   help="tune decode thresholds on the validation data at the end (default on)")
    g.add_argument("--tune-metric", choices=("map", "ap50", "seg"), default="map")
    g.add_argument("--tune-augment", choices=("off", "on", "auto"), default="off",
                   help="test-time augmentation (8 flips/transposes per image): off, on, or auto (tune both ways "
                        "on the validation data, keep the better; the choice becomes the model's default)")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto (CUDA, else Apple MPS, else CPU), cpu, cuda, cuda:1, mps")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    g.add_argument("--checkpoint-minutes", type=float, default=10.0)
    g.add_argument("--quiet", action="store_true")


def _load(path, sequences, truth, modality, ndim, in_channels, norm):
    """The training data of ``path``; what the loader changed in it (objects annotated in separate
    parts, :class:`DataWarning`) is said in ``note:`` lines, at most three and a count."""
    import warnings

    from .dataset import DataError, DataWarning, TrainingData, load_training_data

    p = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        if modality:
            if not (p / "images").is_dir():
                raise DataError(f"{p}: --modality needs an images/ + masks/ folder with index.csv")
            data = TrainingData.dsb2018(p, modality=modality, normalization=norm)
        else:
            data = load_training_data(p, sequences=sequences, truth=truth, ndim=ndim, in_channels=in_channels,
                                      normalization=norm)
    notes = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    for w in caught:
        if not issubclass(w.category, DataWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    for n in notes[:3]:
        print(f"note: {n}", file=sys.stderr)
    if len(notes) > 3:
        print(f"note: ... and in {len(notes) - 3} more label images of {p}", file=sys.stderr)
    return data


def _patch_size(given, ndim: int, depth: int, anisotropy: float):
    """``--patch-size`` as TrainConfig takes it; without it 128 (2D), or 64 in Y/X and
    ``64 / anisotropy`` in Z (3D), multiples of ``2**depth``."""
    if given:
        return given[0] if len(given) == 1 else tuple(given)
    if ndim == 2:
        return 128
    div = 2 ** int(depth)
    yx = max(div, 64 // div * div)
    z = max(16, div, int(round(64 / float(anisotropy) / div)) * div)
    z = -(-z // div) * div
    return (z, yx, yx)


def _data_kind(train) -> str:
    n = len(train)
    return (f"{n} {'ZYX volume' if train.ndim == 3 else 'YX image'}{'s' if n != 1 else ''}")


def _representation(name: str, rep_cfg: dict, train, anisotropy):
    """The representation for ``train``'s dimensionality and anisotropy, and the record of
    where the anisotropy came from (None for 2D data)."""
    import sys

    from cellseg import representations

    from .dataset import data_anisotropy

    ndim = train.ndim
    want = rep_cfg.pop("ndim", None)
    if want is not None and want != ndim:
        raise ValueError(f"--rep-config ndim={want}: the training data are {ndim}D ({train.source}: "
                         f"{_data_kind(train)})")
    if ndim == 2:
        if anisotropy is not None or "anisotropy" in rep_cfg:
            raise ValueError(f"--anisotropy applies to 3D (ZYX) data; {train.source} holds {_data_kind(train)}")
        return representations.get(name, **rep_cfg), None
    file_a, voxel = data_anisotropy(train)
    if anisotropy is not None:
        a, vs = anisotropy
        if "anisotropy" in rep_cfg and abs(float(rep_cfg["anisotropy"]) - a) > 1e-6 * a:
            raise ValueError(f"--anisotropy {a:g} and --rep-config anisotropy={rep_cfg['anisotropy']} disagree")
        rep_cfg.pop("anisotropy", None)
        if file_a is not None and abs(file_a - a) > 0.01 * a:
            print(f"warning: --anisotropy {a:g} overrides the voxel size the files record (Z step {file_a:g} "
                  f"pixels: {voxel})", file=sys.stderr)
        source, voxel = "--anisotropy", vs
    elif "anisotropy" in rep_cfg:
        a, source, voxel = float(rep_cfg.pop("anisotropy")), "--rep-config", None
    elif file_a is not None:
        a, source = file_a, "files"
    else:
        a, source = 1.0, "default (the files record no voxel size)"
    rep = representations.get(name, ndim=3, anisotropy=a, **rep_cfg)
    rec = {"value": a, "source": source}
    if voxel:
        rec["voxel_size_um"] = voxel
    return rep, rec


def _check_fine_tune_anisotropy(rep, train):
    """Fine-tuning a 3D model: the files' voxel size should match the model's anisotropy (a warning)."""
    import sys

    from .dataset import data_anisotropy

    if train.ndim != 3:
        return None
    file_a, _ = data_anisotropy(train)
    a = float(getattr(rep, "anisotropy", 1.0))
    if file_a is not None and abs(file_a - a) > 0.01 * a:
        print(f"warning: the model was trained with a Z step of {a:g} pixels, the files record {file_a:g}; "
              "resample the volumes to the model's voxel shape for best results", file=sys.stderr)
    return {"value": a, "source": "fine-tuned model"}


def _os_message(exc: OSError) -> str:
    if exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def run(args: argparse.Namespace) -> int:
    """Run ``cellseg train``; returns the exit code (2 for bad input, with the reason on stderr)."""
    try:
        from cellseg.models import load_model
        from cellseg.models.network import ModelFormatError

        from .augment import AugmentConfig
        from .dataset import DataError
        from .loop import TrainConfig, fit
    except ImportError as exc:  # pragma: no cover
        print(f"error: training needs torch ({exc})", file=sys.stderr)
        return 2

    out = Path(args.out)
    if args.unlabeled and not args.denoise:
        print("error: --unlabeled images train the denoising head only: add --denoise", file=sys.stderr)
        return 2
    if args.keep_scale and not args.fine_tune:
        print("error: --keep-scale applies to fine-tuning a model (--fine-tune MODEL); a new model is trained "
              "at the images' own scale", file=sys.stderr)
        return 2
    if out.suffix != ".pt":
        print(f"error: --out must name a .pt file, got {out}", file=sys.stderr)
        return 2
    from cellseg.models.network import resolve_device

    try:  # a device this machine lacks: say so before loading any data
        resolve_device(args.device)
    except ValueError as exc:
        print(f"error: --device: {exc}", file=sys.stderr)
        return 2
    ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out.with_name(out.stem + "_checkpoints")
    from cellseg._files import OutputError, check_output_dir, remove_stale_temporaries

    try:  # a read-only folder or a path below a file: say so before loading data and training
        if out.is_dir():
            raise OutputError(f"--out {out} is a folder; name the model file to write (.pt)")
        check_output_dir(out.parent, "folder of --out")
        check_output_dir(ckpt, "checkpoint folder")
    except OutputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for folder in (out.parent, ckpt):  # temporary files a killed earlier run left behind
        remove_stale_temporaries(folder)
    try:
        model = None
        if args.fine_tune:
            model = load_model(args.fine_tune)
            rep = model.representation
            if args.representation and args.representation != rep.name:
                raise ValueError(f"--representation {args.representation} differs from the fine-tuned "
                                 f"model's {rep.name}")
            ndim, in_ch = model.ndim, model.in_channels
            norm = model.config["normalization"]
            if args.anisotropy is not None:
                raise ValueError(f"--anisotropy: the model to fine-tune keeps its own (Z step "
                                 f"{getattr(rep, 'anisotropy', 1.0):g} pixels); leave --anisotropy out")
        else:
            if not args.representation:
                raise ValueError("--representation is required (or --fine-tune MODEL)")
            rep_cfg = dict(args.rep_config)
            ndim, in_ch = None, 1  # the data decide 2D or 3D
            norm = {"pmin": args.pmin, "pmax": args.pmax}
        train = _load(args.data, args.sequences, args.truth, args.modality, ndim, in_ch, norm)
        if model is None:
            ndim = train.ndim
            rep, aniso = _representation(args.representation, rep_cfg, train, args.anisotropy)
        else:
            aniso = _check_fine_tune_anisotropy(rep, train)
        backbone = {"name": args.backbone, "depth": args.depth, "width": args.width, "norm": args.norm,
                    "dropout": args.dropout, "conv_after": args.conv_after, "ndim": ndim, "seed": args.seed}
        given_patch = args.patch_size
        if not given_patch and model is not None:  # fine-tuning: the patch size the model was trained with
            ps = ((model.config.get("training") or {}).get("train_config") or {}).get("patch_size")
            given_patch = None if not ps else ([int(ps)] if isinstance(ps, (int, float)) else [int(p) for p in ps])
        patch = _patch_size(given_patch, ndim, args.depth if model is None else
                            model.network.backbone_config.depth, getattr(rep, "anisotropy", 1.0))
        cfg = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
                          patch_size=patch, lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule,
                          warmup_steps=args.warmup_steps, seed=args.seed, val_max_images=args.val_max_images,
                          checkpoint_minutes=args.checkpoint_minutes, num_threads=args.threads,
                          tune_thresholds=args.tune_thresholds, tune_metric=args.tune_metric,
                          tune_augment=args.tune_augment, loss=args.loss, denoise=args.denoise,
                          denoise_weight=args.denoise_weight, labeled_fraction=args.labeled_fraction,
                          augment=AugmentConfig.none() if args.no_augment else AugmentConfig(),
                          match_object_size=False if args.keep_scale else None, verbose=not args.quiet)
        val = None
        val_fraction = None
        if args.val_data:
            val = _load(args.val_data, args.val_sequences, args.truth, None, ndim, in_ch, train.normalization)
        else:
            val_fraction = 0.1 if args.val_fraction is None else args.val_fraction
            if val_fraction <= 0 or len(train) < 2:
                val_fraction = None
        import warnings

        from .loop import TrainingWarning

        with warnings.catch_warnings():  # said below, after the model is saved
            warnings.filterwarnings("ignore", category=TrainingWarning)
            result = fit(rep, train, val=val, config=cfg, out_dir=ckpt, resume=args.resume, device=args.device,
                         backbone=backbone, model=model, val_fraction=val_fraction, name=out.stem,
                         unlabeled=args.unlabeled)
    except (DataError, ModelFormatError, ValueError, FileNotFoundError, FileExistsError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted; continue with --resume (checkpoints in {ckpt})", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, folder gone read-only... while training
        print(f"error: {_os_message(exc)}; continue with --resume once it can be written (checkpoints in "
              f"{ckpt})", file=sys.stderr)
        return 1
    if aniso is not None:  # where the Z step came from (the value itself is the representation's)
        result.config["training"]["anisotropy"] = aniso
    if result.config["training"].get("stopped_early"):
        print(f"training stopped; continue with --resume (checkpoints in {ckpt})", file=sys.stderr)
        return 1
    try:
        result.save(out, half=args.half)
    except OSError as exc:
        print(f"error: {_os_message(exc)}; the trained model is also in {ckpt / 'model.pt'}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"saved {out} (thresholds {result.thresholds})", file=sys.stderr)
    for msg in result.config["training"].get("warnings") or ():
        print(f"warning: {out}: {msg}", file=sys.stderr)
    return 0
