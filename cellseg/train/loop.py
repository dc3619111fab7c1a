"""The training loop: :func:`fit` and :class:`TrainConfig`.

One step = a batch of augmented patches (:class:`~cellseg.train.dataset.PatchSampler`)
→ network → the representation's loss on the raw outputs → AdamW. The random
state of step ``(epoch, step)`` is derived from ``(seed, epoch, step)`` alone,
so a run resumed from any checkpoint continues exactly as the uninterrupted run
would (on the same device and thread count).

Validation (every ``val_every`` epochs): the network runs once per validation
image; the loss against the cached, un-augmented targets and, after decoding
with the model's current thresholds, AP@0.5 (TP/FP/FN pooled over the images)
mean AP over IoU 0.5:0.95 and CTC SEG (pooled over the reference objects) are recorded.

Checkpoints in ``out_dir``:

* ``last.pt``  — model file + ``training_state`` (optimizer, scheduler, epoch,
  step, history, elapsed time); written every ``checkpoint_minutes`` and at the
  end of every epoch; ``fit(..., resume=True)`` continues from it.
* ``best.pt``  — model file of the epoch with the best validation mAP (mean AP
  over IoU 0.5:0.95; ties broken by AP@0.5, then by the validation loss), or of the
  lowest training loss without validation.
* ``model.pt`` — the final model (best weights, tuned thresholds), written at the end.
* ``history.json`` — per-epoch figures.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypedDict

import numpy as np
import torch

from cellseg import representations
from cellseg._files import atomic_write
from cellseg.models.config import make_config
from cellseg.models.device import resolve_device
from cellseg.models.model import CellsegModel
from cellseg.models.modelfile import read_model_file
from cellseg.models.unet import BackboneConfig

from .augment import AugmentConfig
from .dataset import DataError, PatchSampler, TrainingData, load_training_data
from .losses import head_loss_fn, representation_loss
from .tune import tune_thresholds

if TYPE_CHECKING:
    from .denoiseg import JointLoss, JointSampler

__all__ = ["TrainConfig", "fit", "evaluate_model", "StopTraining", "TrainingWarning"]

SCHEDULES = ("cosine", "plateau", "constant")


class _LossSums(TypedDict):
    """Running sums of the current epoch's step losses (``parts``: per loss term)."""

    n: int
    loss: float
    parts: dict[str, float]


class _TrainState(TypedDict):
    """Where a run stands; ``last.pt`` stores it as its ``training_state`` (with the optimizer's)."""

    epoch: int
    step: int
    #: score of the best epoch so far (compared as tuples)
    best: list[float]
    history: list[dict[str, Any]]
    elapsed: float
    acc: _LossSums


class TrainingWarning(UserWarning):
    """A trained model that is probably useless (its validation finds no object); the message is
    also stored in ``model.config["training"]["warnings"]``."""


class StopTraining(Exception):
    """Raise from a callback (or return ``False``) to stop after the current step; a checkpoint is written."""


@dataclass
class TrainConfig:
    """Schedule and sampling of a training run (recorded in the model config)."""

    epochs: int = 100
    steps_per_epoch: int = 100
    batch_size: int = 8
    patch_size: int | tuple[int, ...] = 128
    lr: float = 3e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # "cosine" (per step, to min_lr_factor·lr), "plateau" (on val mAP) or "constant"
    warmup_steps: int = 0
    min_lr_factor: float = 0.01
    plateau_patience: int = 10
    plateau_factor: float = 0.5
    grad_clip: float | None = 10.0
    fg_prob: float = 0.9
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0
    val_every: int = 1
    val_max_images: int | None = None  # validate on the first N validation images (all when None)
    checkpoint_minutes: float = 10.0
    num_threads: int | None = None  # torch.set_num_threads for the run (None: leave as is)
    tune_thresholds: bool = True  # tune decode thresholds on the validation set at the end
    tune_metric: str = "map"  # "map" (mean AP over IoU 0.5:0.9), "ap50" or "seg"
    tune_time_limit: float | None = None  # seconds for the threshold search (None: no limit)
    #: test-time augmentation at the end: "off", "on", or "auto" (tuned both ways, the better
    #: validation score decides; the choice becomes the model's default)
    tune_augment: str = "off"
    verbose: bool = True
    #: mixed precision for the training forward pass: "auto" (bfloat16 where the device
    #: supports it: CUDA, or CPUs with AVX512-BF16/AMX, about 2x faster on CPU), "bf16", or "off".
    #: Losses are always computed in float32; inference stays float32.
    amp: str = "auto"
    #: channels-last memory layout for 2D training (faster oneDNN convolutions on CPU)
    channels_last: bool = True
    #: loss of the probability / foreground head: "default" (the representation's own, a BCE),
    #: "bce", "weighted_bce" (class-balanced), "dice", "focal", "soft_iou" (Jaccard), or a sum of
    #: different ones such as "bce+dice" (:data:`cellseg.train.losses.HEAD_LOSSES`). It replaces
    #: the BCE of StarDist's prob, the flows' cell probability and the distance map's fg head;
    #: regression heads keep their losses; offsets (seediness is a regression) take only "default".
    loss: str = "default"
    #: DenoiSeg (:mod:`cellseg.train.denoiseg`): grow a denoising head and train it with
    #: Noise2Void masking on every patch, beside the segmentation heads (trained on annotated
    #: patches only); ``fit(..., unlabeled=...)`` adds images without masks
    denoise: bool = False
    #: weight of the denoising loss: ``total = (1 - w) * segmentation + w * denoising``
    #: (DenoiSeg's alpha is ``1 - w``; 0.5 as in the paper)
    denoise_weight: float = 0.5
    #: fraction of the pixels of each patch that Noise2Void masks, and the radius of the
    #: window their replacement is drawn from
    n2v_fraction: float = 0.02
    n2v_radius: int = 2
    #: with unlabelled images: the probability that a patch comes from an annotated image
    labeled_fraction: float = 0.5
    #: fine-tuning a model that records an object size (``config["object_size"]``): resample
    #: every training and validation image so that its objects' median diameter is the model's
    #: (:func:`cellseg.train.general.match_object_size`). ``None``: when the model resamples
    #: images by default (``object_size["default"] == "auto"``: the general models); ``True``:
    #: whenever it records a size; ``False``: never (train at the images' own scale)
    match_object_size: bool | None = None

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "batch_size", "val_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"TrainConfig.{name} must be a positive integer, got {v!r}")
        if self.amp not in ("auto", "bf16", "off"):
            raise ValueError(f"TrainConfig.amp must be 'auto', 'bf16' or 'off', got {self.amp!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.tune_augment not in ("off", "on", "auto"):
            raise ValueError(f"TrainConfig.tune_augment must be 'off', 'on' or 'auto', got {self.tune_augment!r}")
        try:
            head_loss_fn(self.loss)
        except ValueError as exc:
            raise ValueError(f"TrainConfig.loss: {exc}") from None
        if isinstance(self.augment, Mapping):
            self.augment = AugmentConfig.from_dict(self.augment)
        if not isinstance(self.denoise, (bool, np.bool_)):
            raise ValueError(f"TrainConfig.denoise must be True or False, got {self.denoise!r}")
        if not 0.0 <= float(self.denoise_weight) <= 1.0:
            raise ValueError(f"TrainConfig.denoise_weight must be in [0, 1], got {self.denoise_weight}")
        if not 0.0 < float(self.n2v_fraction) <= 0.5:
            raise ValueError(f"TrainConfig.n2v_fraction must be in (0, 0.5], got {self.n2v_fraction}")
        if not isinstance(self.n2v_radius, (int, np.integer)) or self.n2v_radius < 1:
            raise ValueError(f"TrainConfig.n2v_radius must be a positive integer, got {self.n2v_radius!r}")
        if not 0.0 < float(self.labeled_fraction) <= 1.0:
            raise ValueError(f"TrainConfig.labeled_fraction must be in (0, 1], got {self.labeled_fraction}")
        if self.match_object_size not in (None, True, False):
            raise ValueError("TrainConfig.match_object_size must be None, True or False, "
                             f"got {self.match_object_size!r}")
        ps = (self.patch_size,) if isinstance(self.patch_size, (int, np.integer)) else tuple(self.patch_size)
        if not all(int(p) >= 1 for p in ps):
            raise ValueError(f"TrainConfig.patch_size must be positive, got {self.patch_size!r}")

    def patch_shape(self, ndim: int, div_by: int) -> tuple[int, ...]:
        ps = self.patch_size
        shape = (int(ps),) * ndim if isinstance(ps, (int, np.integer)) else tuple(int(p) for p in ps)
        if len(shape) != ndim:
            raise ValueError(f"patch_size {ps!r} does not have {ndim} axes")
        bad = [p for p in shape if p % div_by]
        if bad:
            raise ValueError(f"patch_size {shape} must be divisible by {div_by} (2**depth of the backbone)")
        return shape

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainConfig":
        d = dict(d)
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise ValueError(f"unknown TrainConfig option(s) {unknown}; valid names are {sorted(valid)}")
        if isinstance(d.get("patch_size"), list):
            d["patch_size"] = tuple(d["patch_size"])
        return cls(**d)


# ----------------------------------------------------------------------------- helpers
def _as_data(data, rep_ndim: int, in_channels: int, normalization, what: str) -> TrainingData:
    if isinstance(data, TrainingData):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_training_data(data, ndim=rep_ndim, in_channels=in_channels, normalization=normalization)
    if isinstance(data, Sequence) or hasattr(data, "__iter__"):
        return TrainingData.from_arrays(list(data), ndim=rep_ndim, in_channels=in_channels,
                                        normalization=normalization, source=what)
    raise TypeError(f"{what} must be TrainingData, a folder path or a list of (image, labels), "
                    f"got {type(data).__name__}")


def _cpu_has_bf16() -> bool:
    """True on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX)."""
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _autocast(cfg: "TrainConfig", dev: torch.device):
    """The autocast context for a training forward pass (a null context when off)."""
    import contextlib

    if cfg.amp == "off":
        return contextlib.nullcontext()
    if dev.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    if dev.type == "cpu" and (cfg.amp == "bf16" or _cpu_has_bf16()):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _step_seed(seed: int, epoch: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, step]).generate_state(1, np.uint64)[0] >> 1)


def _lr_lambda(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule != "cosine":
            return 1.0
        t = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps))
        return cfg.min_lr_factor + (1 - cfg.min_lr_factor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def _to_tensors(x: np.ndarray, targets: Mapping[str, np.ndarray],
                device) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    return (torch.from_numpy(x).to(device),
            {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(device) for k, v in targets.items()})


class _Validator:
    """Caches validation images and un-augmented targets; one network run per image."""

    def __init__(self, data: TrainingData, rep, max_images: int | None):
        self.samples = data.samples[:max_images] if max_images else list(data.samples)
        self.rep = rep
        self.targets = [rep.encode(s.labels) for s in self.samples]

    def run(self, model: CellsegModel, loss_fn) -> dict[str, float]:
        from cellseg.metrics import average_precision, pool_seg, seg_score

        net = model.network
        was = net.training
        net.eval()
        losses, preds, segs, n_obj = [], [], [], 0
        try:
            for s, tgt in zip(self.samples, self.targets):
                x = s.image
                spatial = x.shape[1:]
                pad = [(0, 0)] + [(0, (-n) % model.div_by) for n in spatial]
                xp = np.pad(x, pad, mode="reflect") if any(p[1] for p in pad) else x
                crop = (slice(None), slice(None)) + tuple(slice(0, n) for n in spatial)
                with torch.no_grad():
                    raw = net(torch.from_numpy(np.ascontiguousarray(xp[None])).to(model.device))
                    raw = {k: v[crop] for k, v in raw.items()}
                    t = {k: torch.from_numpy(np.ascontiguousarray(v[None], dtype=np.float32)).to(model.device)
                         for k, v in tgt.items()}
                    total, _ = loss_fn(raw, t)
                    act = net.activate(raw)
                losses.append(float(total))
                outputs = {k: v[0].float().cpu().numpy() for k, v in act.items()}
                pred = model.decode(outputs).labels
                n_obj += int(np.count_nonzero(np.unique(pred)))
                preds.append(pred)
                segs.append(seg_score(s.labels, pred))
        finally:
            net.train(was)
        ap = average_precision([s.labels for s in self.samples], preds)  # IoU 0.5:0.05:0.95, pooled
        return {"val_loss": float(np.mean(losses)), "val_ap50": float(ap.ap[0]), "val_map": float(ap.mean_ap),
                "val_seg": float(pool_seg(segs).seg), "val_objects": n_obj}


def _metric(res, key: str) -> float:
    if isinstance(res, Mapping):
        return float(res[key])
    return float(getattr(res, key))


def _emit(callback, event: dict[str, Any]) -> None:
    if callback is None:
        return
    if callback(event) is False:
        raise StopTraining(f"stopped by the callback at {event.get('event')}")


def _log(cfg: TrainConfig, msg: str) -> None:
    if cfg.verbose:
        print(msg, file=sys.stderr, flush=True)


def _write_history(out: Path, history: list) -> None:
    text = json.dumps(history, indent=1)
    atomic_write(out / "history.json", lambda tmp: tmp.write_text(text))


# ----------------------------------------------------------------------------- fit

def fit(
    representation,
    train,
    val=None,
    config: TrainConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    resume: bool = False,
    device: Any = "auto",
    callback: Callable[[dict[str, Any]], Any] | None = None,
    backbone: BackboneConfig | Mapping[str, Any] | None = None,
    model: CellsegModel | None = None,
    val_fraction: float | None = None,
    normalization: Mapping[str, float] | None = None,
    name: str | None = None,
    unlabeled=None,
) -> CellsegModel:
    """Train a model and return it (best validation weights, tuned thresholds).

    Parameters
    ----------
    representation : a Representation or its name (``"stardist"``...); ignored when ``model`` is given.
    train, val : :class:`TrainingData`, a folder (CTC or images/masks) or a list of raw
        ``(image, labels)`` pairs (normalized here with ``normalization``).
    config : :class:`TrainConfig`.
    out_dir : where checkpoints go (``last.pt``, ``best.pt``, ``model.pt``, ``history.json``);
        ``None`` keeps everything in memory (no resume).
    resume : continue from ``out_dir/last.pt`` (optimizer, scheduler, epoch, step, history).
    device : ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    callback : called with event dicts (``{"event": "step"|"epoch"|"checkpoint"|"done", ...}``);
        returning ``False`` (or raising :class:`StopTraining`) stops the run after a checkpoint.
    backbone : backbone options for a new model (see :class:`cellseg.models.BackboneConfig`).
    model : an existing :class:`CellsegModel` to fine-tune.
    val_fraction : split a validation set off ``train`` when ``val`` is None.
    unlabeled : images without masks for DenoiSeg (``config.denoise``): an
        :class:`~cellseg.train.denoiseg.UnlabeledData`, a folder of images or a list of raw
        images; they train the denoising head only (see :mod:`cellseg.train.denoiseg`).
    """
    cfg = config or TrainConfig()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    dev = resolve_device(device)
    if model is not None:
        rep = model.representation
        bb = model.network.backbone_config
    else:
        rep = representations.get(representation) if isinstance(representation, str) else representation
        bb = backbone if isinstance(backbone, BackboneConfig) else BackboneConfig.from_dict(backbone)
    if bb.ndim not in getattr(rep, "ndims", (2,)):
        raise ValueError(f"representation {rep.name!r} supports {rep.ndims}D, the backbone is {bb.ndim}D")
    norm = dict(normalization or (model.config["normalization"] if model is not None else {"pmin": 1.0, "pmax": 99.8}))
    in_ch = model.in_channels if model is not None else None
    train = _as_data(train, bb.ndim, in_ch or 1, norm, "train")
    if in_ch is None:
        in_ch = train.in_channels
    if train.in_channels != in_ch:
        raise DataError(f"the training data has {train.in_channels} channels, the model takes {in_ch}")
    if val is None and val_fraction:
        train, val = train.split(val_fraction, seed=cfg.seed)
    if val is not None:
        val = _as_data(val, bb.ndim, in_ch, train.normalization, "val")
        overlap = sorted(set(train.names) & set(val.names)) if train.source == val.source else []
        if overlap:
            raise DataError(f"{len(overlap)} sample(s) are in both the training and validation sets, "
                            f"e.g. {overlap[:3]}")
    resampled = None
    size = (model.config.get("object_size") or {}) if model is not None else {}
    match = size.get("default") == "auto" if cfg.match_object_size is None else bool(cfg.match_object_size)
    if size.get("diameter") and match and bb.ndim == 2 and not getattr(train, "object_size", None):
        # fine-tuning a model that records an object size: bring the objects to that size, as its
        # own training data were, so it keeps seeing what it learnt and diameter="auto" holds
        from .general import match_object_size

        d0 = float(size["diameter"])
        train, factors = match_object_size(train, d0)
        if val is not None:
            val, vf = match_object_size(val, d0)
            factors = {**factors, **vf}
        resampled = {"diameter": d0, "factors": factors}
        f = np.array(list(factors.values()))
        _log(cfg, f"images resampled to the model's object size ({d0:g} px): factors {f.min():.2f}-{f.max():.2f} "
                  f"(median {np.median(f):.2f})")
    if unlabeled is not None and not cfg.denoise:
        raise ValueError("unlabelled images train the denoising head only: set TrainConfig(denoise=True) "
                         "(cellseg train --denoise)")
    if model is not None and cfg.denoise != model.denoises:
        what = "has no denoising head" if cfg.denoise else "has a denoising head"
        raise ValueError(f"the model to fine-tune ({model.name or 'unnamed'}) {what}; "
                         f"{'train a new model with --denoise' if cfg.denoise else 'fine-tune it with --denoise'}")
    if unlabeled is not None:
        from .denoiseg import UnlabeledData, load_unlabeled

        if isinstance(unlabeled, (str, os.PathLike)):
            unlabeled = load_unlabeled(unlabeled, ndim=bb.ndim, in_channels=in_ch,
                                       normalization=train.normalization)
        elif not isinstance(unlabeled, UnlabeledData):
            unlabeled = UnlabeledData.from_arrays(list(unlabeled), ndim=bb.ndim, in_channels=in_ch,
                                                  normalization=train.normalization)
        if unlabeled.in_channels != in_ch:
            raise DataError(f"the unlabelled images have {unlabeled.in_channels} channels, the model takes {in_ch}")

    training_record = {
        "train_config": cfg.to_dict(),
        "train_data": {"source": train.source, "n_images": len(train), "names": train.names},
        "val_data": None if val is None else {"source": val.source, "n_images": len(val), "names": val.names},
    }
    if unlabeled is not None:
        training_record["unlabeled_data"] = {"source": unlabeled.source, "n_images": len(unlabeled),
                                             "names": unlabeled.names}
    if model is None:
        mcfg = make_config(rep, bb, in_channels=in_ch, normalization=train.normalization,
                           training=training_record, name=name)
        if cfg.denoise:
            mcfg["denoise"] = True
        model = CellsegModel(mcfg, device=dev)
        if getattr(train, "object_size", None):
            model.config["object_size"] = dict(train.object_size)
        else:  # the training data's own object size: diameter=D / "auto" then work with this model
            from .general import training_object_size

            own = training_object_size(train)
            if own:
                model.config["object_size"] = own
        from cellseg.qc import training_image_stats

        # the range of simple image statistics of the training data, behind the "unlike the training
        # data" warning (cellseg.qc)
        model.config["image_stats"] = training_image_stats(s.image for s in train.samples)
    else:
        if resampled is not None:
            training_record["object_size_resampling"] = resampled
        model.config["training"] = {**training_record, "fine_tuned_from": model.config.get("training", {})}
        if model.config.get("image_stats"):  # the ranges behind the "unlike the training data" warning
            from cellseg.qc import merge_image_stats, training_image_stats

            model.config["image_stats"] = merge_image_stats(model.config["image_stats"],
                                                            training_image_stats(s.image for s in train.samples))
        if name:
            model.config["name"] = name
        model.to(dev)
    net = model.network
    channels_last = bool(cfg.channels_last and model.ndim == 2)
    if channels_last:
        # Module.to takes memory_format (documented); torch's overloads of it leave it out
        net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    patch = cfg.patch_shape(bb.ndim, model.div_by)
    # "default" asks for the representation's own loss as it always was
    loss_fn = representation_loss(rep) if cfg.loss == "default" else representation_loss(rep, head_loss=cfg.loss)
    sampler = PatchSampler(train, rep, patch, cfg.augment, cfg.fg_prob)
    joint: JointSampler | None = None
    joint_loss: JointLoss | None = None
    if cfg.denoise:
        from .denoiseg import JointLoss, JointSampler

        joint = JointSampler(sampler, unlabeled, cfg.labeled_fraction, cfg.n2v_fraction, cfg.n2v_radius)
        joint_loss = JointLoss(loss_fn, cfg.denoise_weight)
    validator = _Validator(val, rep, cfg.val_max_images) if val is not None else None

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total_steps))
    plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=cfg.plateau_factor,
                                                          patience=cfg.plateau_patience)
               if cfg.schedule == "plateau" else None)

    out = Path(out_dir) if out_dir is not None else None
    state: _TrainState = {"epoch": 0, "step": 0, "best": [-math.inf], "history": [], "elapsed": 0.0,
                          "acc": {"n": 0, "loss": 0.0, "parts": {}}}
    best_state = None
    if not resume and out is not None and (out / "last.pt").exists():
        raise FileExistsError(f"{out} already holds a training checkpoint (last.pt); resume it with resume=True "
                              "(--resume) or choose another output folder")
    if resume:
        if out is None:
            raise ValueError("resume=True needs out_dir")
        last = out / "last.pt"
        if not last.exists():
            raise FileNotFoundError(f"cannot resume: {last} does not exist")
        payload = read_model_file(last)
        ckpt = CellsegModel.from_payload(payload, device="cpu", source=str(last))
        def _canon(d):  # compare as stored: JSON turns tuples into lists
            return json.loads(json.dumps(d, sort_keys=True))

        if _canon(ckpt.config["representation"]) != _canon(model.config["representation"]) or \
                _canon(ckpt.config["backbone"]) != _canon(model.config["backbone"]):
            raise ValueError(f"{last}: the checkpoint's representation/backbone differ from this run's; "
                             "use another out_dir or the same settings")
        ckpt_loss = ckpt.config.get("training", {}).get("train_config", {}).get("loss", "default")
        if ckpt_loss != cfg.loss:
            raise ValueError(f"{last}: the checkpoint was trained with loss {ckpt_loss!r}, this run asks for "
                             f"{cfg.loss!r}; resume with loss {ckpt_loss!r} (--loss {ckpt_loss}) or use another "
                             "out_dir")
        if ckpt.denoises != model.denoises:
            raise ValueError(f"{last}: the checkpoint was trained {'with' if ckpt.denoises else 'without'} the "
                             f"denoising head, this run {'asks for' if model.denoises else 'has'} "
                             f"{'it' if model.denoises else 'none'}; resume with the same --denoise setting or use "
                             "another out_dir")
        ts = payload.get("training_state")
        if not isinstance(ts, Mapping):
            raise ValueError(f"{last}: not a training checkpoint (no training_state)")
        net.load_state_dict(ckpt.network.state_dict())
        model.config["thresholds"] = ckpt.config["thresholds"]
        opt.load_state_dict(ts["optimizer"])
        sched.load_state_dict(ts["scheduler"])
        if plateau is not None and ts.get("plateau") is not None:
            plateau.load_state_dict(ts["plateau"])
        state["epoch"], state["step"], state["best"] = ts["epoch"], ts["step"], ts["best"]
        state["history"], state["elapsed"], state["acc"] = ts["history"], ts["elapsed"], ts["acc"]
        if "best_epoch" in ckpt.config["training"]:
            model.config["training"]["best_epoch"] = ckpt.config["training"]["best_epoch"]
        if (out / "best.pt").exists():
            best_state = CellsegModel.load(out / "best.pt", device="cpu").network.state_dict()
        _log(cfg, f"resuming from {last}: epoch {state['epoch'] + 1}, step {state['step']}")

    def save_last():
        if out is None:
            return
        ts = {"epoch": state["epoch"], "step": state["step"], "best": state["best"], "history": state["history"],
              "elapsed": state["elapsed"], "acc": state["acc"], "optimizer": opt.state_dict(),
              "scheduler": sched.state_dict(), "plateau": None if plateau is None else plateau.state_dict()}
        model.save(out / "last.pt", extra={"training_state": ts})
        _write_history(out, state["history"])
        _emit(callback, {"event": "checkpoint", "path": str(out / "last.pt"), "epoch": state["epoch"],
                         "step": state["step"]})

    t_start = time.perf_counter() - state["elapsed"]
    t_ckpt = time.perf_counter()
    stopped = False
    n_train, n_val = len(train), len(validator.samples) if validator else 0
    _log(cfg, f"training {rep.name} on {n_train} image{'s' if n_train != 1 else ''} ({train.source}); "
              f"{f'validating on {n_val}' if validator else 'no validation'}; "
              f"{cfg.epochs} epochs x {cfg.steps_per_epoch} steps, batch {cfg.batch_size}, patch {patch}, "
              f"device {dev}, {cfg.num_threads or torch.get_num_threads()} threads")
    try:
        while state["epoch"] < cfg.epochs:
            epoch = state["epoch"]
            net.train()
            while state["step"] < cfg.steps_per_epoch:
                step = state["step"]
                seed = _step_seed(cfg.seed, epoch, step)
                rng = np.random.default_rng(seed)
                torch.manual_seed(seed)
                if joint is not None:  # DenoiSeg: masked patches, annotated flags, clean targets
                    x, tg, extra = joint.batch(rng, cfg.batch_size)
                else:
                    x, tg = sampler.batch(rng, cfg.batch_size)
                xt, tt = _to_tensors(x, tg, dev)
                if cfg.num_threads and torch.get_num_threads() != cfg.num_threads:
                    # numba's parallel kernels (target encoding) reset the OpenMP thread count
                    torch.set_num_threads(int(cfg.num_threads))
                if channels_last:
                    xt = xt.contiguous(memory_format=torch.channels_last)
                with _autocast(cfg, dev):
                    raw = net(xt)
                raw = {k: v.float() for k, v in raw.items()}
                total, parts = loss_fn(raw, tt) if joint_loss is None else joint_loss(raw, tt, extra)
                if not torch.isfinite(total):
                    raise FloatingPointError(f"loss became {total.item()} at epoch {epoch + 1} step {step + 1}; "
                                             "lower the learning rate")
                opt.zero_grad(set_to_none=True)
                total.backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                opt.step()
                if cfg.schedule != "plateau" or epoch * cfg.steps_per_epoch + step < cfg.warmup_steps:
                    sched.step()  # the plateau schedule owns the lr after the warm-up
                acc = state["acc"]
                acc["n"] += 1
                loss_value = total.item()
                acc["loss"] += loss_value
                for k, v in parts.items():
                    acc["parts"][k] = acc["parts"].get(k, 0.0) + float(v)
                state["step"] += 1
                state["elapsed"] = time.perf_counter() - t_start
                _emit(callback, {"event": "step", "epoch": epoch + 1, "step": step + 1,
                                 "steps_per_epoch": cfg.steps_per_epoch, "loss": loss_value})
                if out is not None and time.perf_counter() - t_ckpt > 60 * cfg.checkpoint_minutes:
                    save_last()
                    t_ckpt = time.perf_counter()
            # ---- end of epoch
            acc = state["acc"]
            rec: dict[str, Any] = {"epoch": epoch + 1, "loss": acc["loss"] / max(1, acc["n"]),
                   **{f"loss_{k}": v / max(1, acc["n"]) for k, v in acc["parts"].items()},
                   "lr": opt.param_groups[0]["lr"]}
            if validator is not None and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                rec.update(validator.run(model, loss_fn))
                # best = highest val mAP, ties broken by AP@0.5, then by the lower validation loss
                score: list[float] | None = [rec["val_map"], rec["val_ap50"], -rec["val_loss"]]
                if plateau is not None:
                    plateau.step(rec["val_map"])
            else:
                score = [-rec["loss"]] if validator is None else None
            rec["time"] = time.perf_counter() - t_start
            state["history"].append(rec)
            improved = False
            if score is not None and tuple(score) > tuple(state["best"]):
                improved = True
                state["best"] = score
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                model.config["training"]["best_epoch"] = epoch + 1
                if out is not None:
                    model.save(out / "best.pt")
            state["epoch"] += 1
            state["step"] = 0
            state["acc"] = {"n": 0, "loss": 0.0, "parts": {}}
            state["elapsed"] = time.perf_counter() - t_start
            _log(cfg, _epoch_line(rec, cfg.epochs, improved))
            save_last()
            t_ckpt = time.perf_counter()
            _emit(callback, {"event": "epoch", **rec})
    except StopTraining as exc:
        stopped = True
        _log(cfg, f"{exc}; writing a checkpoint")
        save_last()

    if best_state is not None:
        net.load_state_dict(best_state)
    model.config["training"]["history"] = state["history"]
    model.config["training"]["train_seconds"] = round(state["elapsed"], 1)
    model.config["training"]["stopped_early"] = stopped
    if not stopped and cfg.tune_thresholds and validator is not None:
        res = tune_thresholds(model, [s.image for s in val.samples], [s.labels for s in val.samples],
                              metric=cfg.tune_metric, verbose=cfg.verbose, time_limit=cfg.tune_time_limit,
                              augment=cfg.tune_augment)
        model.config["training"]["tuning"] = {"metric": cfg.tune_metric, "score": res.score,
                                              "thresholds": res.params, "n_images": len(val),
                                              "evaluations": len(res.table), "truncated": res.truncated,
                                              "augment": res.augment, "augment_scores": res.augment_scores}
    if not stopped and validator is not None:
        msg = _useless_model_message(state["history"], model.config["training"], len(validator.samples))
        model.config["training"]["warnings"] = [msg] if msg else []
        if msg:
            import warnings

            warnings.warn(msg, TrainingWarning, stacklevel=2)
    if out is not None and not stopped:
        model.save(out / "model.pt")
        _write_history(out, state["history"])
    _emit(callback, {"event": "done", "stopped": stopped, "history": state["history"]})
    return model


def _useless_model_message(history: Sequence[Mapping[str, Any]], training: Mapping[str, Any],
                           n_images: int) -> str | None:
    """What to tell the user when the kept weights find no object in the validation images, or
    none that matches one (AP@0.5 = 0), and tuning the thresholds did not help; else None."""
    best = training.get("best_epoch")
    rec = next((r for r in reversed(history) if r.get("epoch") == best and "val_ap50" in r), None)
    tuning = training.get("tuning") or {}
    if rec is None or rec["val_ap50"] > 0 or (tuning.get("score") or 0) > 0:
        return None
    imgs = f"{n_images} validation image{'s' if n_images != 1 else ''}"
    n = rec.get("val_objects")  # absent from the history of runs before it was recorded
    if n == 0:
        found = f"finds no object in the {imgs}"
    elif n is None:
        found = f"finds no object that matches an annotated one in the {imgs} (AP@0.5 = 0)"
    else:
        found = (f"finds {n} object{'s' if n != 1 else ''} in the {imgs}, none of which matches an annotated "
                 "one (AP@0.5 = 0)")
    return (f"the trained model {found}{' even with tuned thresholds' if tuning else ''}: it is probably useless. "
            "Train longer (more epochs or steps), check that the masks are instance labels of these images, "
            "or fine-tune a bundled model (--fine-tune)")


def _epoch_line(rec: Mapping[str, Any], epochs: int, improved: bool) -> str:
    parts = [f"epoch {rec['epoch']}/{epochs}", f"loss {rec['loss']:.4f}"]
    sub = [f"{k[5:]} {v:.3f}" for k, v in rec.items() if k.startswith("loss_")]
    if sub:
        parts[-1] += " (" + ", ".join(sub) + ")"
    if "val_loss" in rec:
        parts += [f"val_loss {rec['val_loss']:.4f}", f"AP50 {rec['val_ap50']:.3f}", f"mAP {rec['val_map']:.3f}",
                  f"SEG {rec['val_seg']:.3f}"]
    parts += [f"lr {rec['lr']:.2e}", f"{rec['time']:.0f}s"]
    return "  ".join(parts) + ("  *" if improved else "")


def evaluate_model(model: CellsegModel, data: TrainingData, params: Mapping[str, Any] | None = None,
                   iou_thresholds: Sequence[float] = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))) -> dict[str, Any]:
    """Test figures of ``model`` on normalized ``data``: AP at each IoU threshold (dataset-level,
    TP/(TP+FP+FN) over all images), mean AP 0.5:0.95, F1@0.5, precision/recall@0.5 and mean SEG."""
    from cellseg.metrics import matching_dataset, pool_seg, seg_score

    preds, trues, segs = [], [], []
    for s in data.samples:
        pred = model.decode(model.predict(s.image), params).labels
        preds.append(pred)
        trues.append(s.labels)
        segs.append(seg_score(s.labels, pred))
    res: dict[str, Any] = {"n_images": len(data), "iou_thresholds": [float(t) for t in iou_thresholds]}
    ms = matching_dataset(trues, preds, thresh=[float(t) for t in iou_thresholds])
    aps = [_metric(m, "accuracy") for m in ms]
    for t, m in zip(iou_thresholds, ms):
        if abs(t - 0.5) < 1e-9:
            res["f1_50"] = _metric(m, "f1")
            res["precision_50"] = _metric(m, "precision")
            res["recall_50"] = _metric(m, "recall")
    res["ap"] = aps
    for t, a in zip(iou_thresholds, aps):
        res[f"ap{int(round(t * 100))}"] = a
    res["map_50_95"] = float(np.mean(aps))
    res["seg"] = float(pool_seg(segs).seg)
    return res
