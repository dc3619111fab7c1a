"""Training data of the general models: several annotated sources brought to one object size.

Every image is read with its axes, turned into 3 channels (grey repeated, RGB kept,
alpha dropped), normalized per channel (percentiles) and resampled so that the
median equivalent diameter of its annotated objects is the model's object size
(:mod:`cellseg.scale`; labels keep their ids). Each source keeps a fixed test
split, chosen by name with a seed, that nothing but the final figures uses.

Sources (folders under the data root, see its README for terms):

``general-nuclei``
    DSB 2018 stage1_train (fluorescence, brightfield and colour tags of its
    index, each split 10% test with seed 2018, then 10% validation with seed
    2019 — the fluorescence test split is the one of the ``nuclei-*`` models),
    the two H&E nucleus sets (20% test, seed 2018; 15% of the rest validate,
    seed 2019), and Fluo-N2DL-HeLa's 4 gold-truth frames (test only: their
    annotation is not exhaustive).
``general-cells``
    DIC-C2DH-HeLa silver truth (sequence 01 frames 0-71 train, 72-83 validate,
    sequence 02 test) and Usiigaci NIH/3T3 phase contrast (the authors' 5
    validation images test; their training sets 41-45 validate, 1-40 train).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cellseg.labels import keep_largest_parts

from .dataset import DataError, TrainingData, TrainingSample, check_pair, normalize_sample, to_channels_first

__all__ = ["load_general", "to_rgb3", "rescale_sample", "match_object_size", "training_object_size",
           "GENERAL_SOURCES"]

GENERAL_SOURCES = {
    "general-nuclei": ["dsb-fluorescence", "dsb-brightfield", "dsb-color", "he-kong", "he-miccai2015",
                       "fluo-n2dl-hela"],
    "general-cells": ["dic-hela", "usiigaci-phase"],
}
_DSB = "DSB2018-stage1-train-fixed"
_DSB_TAGS = {"dsb-fluorescence": "fluorescence", "dsb-brightfield": "brightfield",
             "dsb-color": "color (histology/brightfield)"}
_FOLDERS = {"he-kong": "Kong_GBM_TCGA_HE_nuclei", "he-miccai2015": "MICCAI2015_CPM_HE_nuclei",
            "usiigaci-phase": "Usiigaci_NIH3T3_phase", "dic-hela": "DIC-C2DH-HeLa",
            "fluo-n2dl-hela": "Fluo-N2DL-HeLa"}
#: the scale factor of one training image is kept within these bounds
_MIN_FACTOR, _MAX_FACTOR = 0.2, 5.0


def to_rgb3(data: np.ndarray, axes: str, name: str) -> np.ndarray:
    """``float32 (3, Y, X)``: a grey image repeated, RGB kept, RGBA without alpha
    (:func:`cellseg.train.dataset.to_channels_first` for a 3-channel model; ``S`` is read as ``C``)."""
    axes = axes.upper().replace("S", "C")
    if any(a not in "CYX" for a in axes):
        raise DataError(f"{name}: a 2D image is needed, got axes {axes!r} with shape {np.shape(data)}")
    return to_channels_first(data, axes, 2, 3, name)


def rescale_sample(name: str, image: np.ndarray, labels: np.ndarray, diameter: float) -> tuple[TrainingSample, float]:
    """The sample resampled so its objects' median equivalent diameter is ``diameter`` px."""
    from cellseg.scale import median_diameter, resize_labels, scaled_shape, zoom_image

    d = median_diameter(labels, exclude_border=True)
    f = 1.0 if not d else float(np.clip(diameter / d, _MIN_FACTOR, _MAX_FACTOR))
    if abs(f - 1.0) < 1e-3:
        return TrainingSample(name, image, labels), 1.0
    shape = scaled_shape(labels.shape, f)
    img = zoom_image(image, f, spatial_ndim=2)
    lab = resize_labels(labels, shape).astype(np.int32)
    return TrainingSample(name, img, lab), f


def match_object_size(data: TrainingData, diameter: float) -> tuple[TrainingData, dict[str, float]]:
    """``data`` with every 2D image resampled so that the median equivalent diameter of its
    annotated objects (those clear of the image border, see :func:`cellseg.scale.median_diameter`)
    is ``diameter`` px, as the general models' training data are; and the factor used per
    sample name (> 1 enlarges; kept within 0.2-5; 1 for an image without objects).

    Fine-tuning a model that records an object size (``config["object_size"]``) goes through
    this, so that the network keeps seeing objects of the size it learnt and
    ``diameter="auto"`` resamples new images to the size it was fine-tuned on.
    """
    if data.ndim != 2:
        raise DataError(f"{data.source}: resampling to an object size takes 2D images, got {data.ndim}D")
    samples, factors = [], {}
    for s in data.samples:
        r, f = rescale_sample(s.name, s.image, s.labels, diameter)
        if f != 1.0:
            r.labels, _ = keep_largest_parts(r.labels)  # resampling thin parts can cut them
        r.pixel_size = (None if s.pixel_size is None else
                        {k: (v if k == "Z" or v is None else float(v) / f) for k, v in s.pixel_size.items()})
        samples.append(r)
        factors[s.name] = round(f, 4)
    out = TrainingData(samples, data.ndim, data.in_channels, data.normalization, data.source, check=False)
    for attr in ("sample_weights",):  # optional attributes, per sample: they carry over
        if hasattr(data, attr):
            setattr(out, attr, getattr(data, attr))
    return out, factors


def training_object_size(data: TrainingData) -> dict[str, Any] | None:
    """The object size record of a model trained on ``data`` at its own scale:
    ``{"diameter": median over the images of their objects' median equivalent diameter (px),
    "pixel_size": µm/px when every image records the same Y/X pixel size (within 5%) else None,
    "default": "off"}``, or None for 3D data or data without objects.

    With it, a model trained on a lab's images takes ``diameter=D`` or ``"auto"`` for images
    at another magnification; ``"off"`` (segment at the image's own scale) stays its default.
    """
    from cellseg.scale import median_diameter

    if data.ndim != 2:
        return None
    ds = [d for d in (median_diameter(s.labels, exclude_border=True) for s in data.samples) if d]
    if not ds:
        return None
    ps: float | None = None
    sizes: list[float] = []
    for s in data.samples:
        p = s.pixel_size or {}
        y, x = p.get("Y"), p.get("X")
        if not (y and x) or abs(float(y) - float(x)) > 0.05 * max(float(y), float(x)):
            sizes = []
            break
        sizes.append(0.5 * (float(y) + float(x)))
    if sizes and max(sizes) <= 1.05 * min(sizes):
        ps = round(float(np.median(sizes)), 6)
    return {"diameter": round(float(np.median(ds)), 3), "pixel_size": ps, "default": "off"}


def _folder_parts(ds, source: str, test_frac: float, val_frac: float) -> dict[str, list[tuple[str, Path, Path]]]:
    """Test split by name (seed 2018), then validation from the rest (seed 2019), as items."""
    rest, test = ds.split(test_frac, seed=2018)
    train, val = ds.subset(rest).split(val_frac, seed=2019)
    parts = {"train": train, "val": val, "test": test}
    return {k: [(f"{source}/{n}", ds.image_path(n), ds.mask_path(n)) for n in v] for k, v in parts.items()}


def _source_items(source: str, root: Path) -> tuple[dict[str, list[tuple[str, Path, Path]]], str]:
    """``({"train"|"val"|"test": [(name, image_path, mask_path)]}, rule)`` of one source."""
    from cellseg.datasets import CTCDataset, FolderDataset

    if source in _DSB_TAGS:
        ds = FolderDataset.dsb2018(root / _DSB, modality=_DSB_TAGS[source])
        rule = "test FolderDataset.split(0.1, seed=2018) of the tag's names, val split(0.1, seed=2019) of the rest"
        return _folder_parts(ds, source, 0.1, 0.1), rule
    if source in ("he-kong", "he-miccai2015"):
        ds = FolderDataset(root / _FOLDERS[source])
        rule = "20% test (seed 2018), 15% of the rest validate (seed 2019), by name"
        return _folder_parts(ds, source, 0.2, 0.15), rule
    if source == "usiigaci-phase":
        ds = FolderDataset(root / _FOLDERS[source])
        num = {n: int(re.sub(r"\D", "", n) or -1) for n in ds.names}
        test = [n for n in ds.names if n.startswith("val_")]
        val = [n for n in ds.names if n.startswith("train_") and num[n] >= 41]
        train = [n for n in ds.names if n.startswith("train_") and num[n] < 41]
        rule = "test: the authors' validation sets 46-50; validate: training sets 41-45; train: sets 1-40"
        parts = {"train": train, "val": val, "test": test}
        return {k: [(f"{source}/{n}", ds.image_path(n), ds.mask_path(n)) for n in v] for k, v in parts.items()}, rule
    if source == "dic-hela":
        ctc = CTCDataset(root / _FOLDERS[source])
        parts = {"train": [], "val": [], "test": []}
        for seq in ("01", "02"):
            for fr in ctc.pairs(seq, truth="ST"):
                part = "test" if seq == "02" else ("val" if fr.t >= 72 else "train")
                parts[part].append((f"{source}/{seq}/t{fr.t:03d}", fr.image_path, fr.label_path))
        return parts, "sequence 01 frames 0-71 train, 72-83 validate; sequence 02 (84 frames) test"
    if source == "fluo-n2dl-hela":
        ctc = CTCDataset(root / _FOLDERS[source])
        items = [(f"{source}/01/t{fr.t:03d}", fr.image_path, fr.label_path) for fr in ctc.pairs("01", truth="GT")]
        return {"train": [], "val": [], "test": items}, "all gold-truth frames of sequence 01 test (not exhaustive)"
    raise ValueError(f"unknown source {source!r}")  # pragma: no cover


def load_general(kind: str, root, diameter: float, normalization: Mapping[str, float],
                 max_images: int | None = None,
                 verbose: bool = False) -> tuple[dict[str, TrainingData], dict[str, Any]]:
    """Train/val/test :class:`TrainingData` (3 channels, resampled to ``diameter``) and the split record."""
    from cellseg import io

    root = Path(root)
    samples: dict[str, list[TrainingSample]] = {"train": [], "val": [], "test": []}
    split: dict[str, Any] = {"dataset": f"{kind}: " + ", ".join(GENERAL_SOURCES[kind]), "object_diameter": diameter,
                             "sources": {}, "factors": {}, "train": [], "val": [], "test": []}
    for source in GENERAL_SOURCES[kind]:
        if not (root / (_DSB if source in _DSB_TAGS else _FOLDERS[source])).is_dir():
            raise DataError(f"{root}: source {source} not found")
        parts, rule = _source_items(source, root)
        split["sources"][source] = {"rule": rule, **{k: len(v) for k, v in parts.items()}}
        for part, items in parts.items():
            if max_images:
                items = items[:max_images]
            for name, ip, lp in items:
                im = io.read_image(ip)
                x = to_rgb3(im.data, im.axes, str(ip))
                lab = check_pair(x, io.read_labels(lp), str(lp), 2, trim=False)
                lab, removed = keep_largest_parts(lab)
                x = normalize_sample(x, normalization["pmin"], normalization["pmax"], str(ip))
                s, f = rescale_sample(name, x, lab, diameter)
                s.labels, removed2 = keep_largest_parts(s.labels)  # resampling thin parts can cut them
                if removed + removed2:
                    split.setdefault("fragments_removed_px", {})[name] = removed + removed2
                samples[part].append(s)
                split[part].append(name)
                split["factors"][name] = round(f, 4)
        if verbose:
            print(f"{source}: {split['sources'][source]}", flush=True)
    split["test_rule"] = "per source, see 'sources'"
    split["val_rule"] = "per source, see 'sources'"
    out = {}
    for part in ("val", "test"):  # round-robin over sources: the first N validation images cover them all
        by_src: dict[str, list[TrainingSample]] = {}
        for s in samples[part]:
            by_src.setdefault(s.name.split("/")[0], []).append(s)
        queues = list(by_src.values())
        samples[part] = [q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues if i < len(q)]
    for part, ss in samples.items():
        td = TrainingData(ss, 2, 3, normalization, f"{root} ({kind}, {part})", check=part == "train")
        if part == "train" and ss:
            # each source's patches in proportion to the square root of its pixel count (not the count):
            # large sources still dominate, small ones (H&E) are seen often enough
            src = [s.name.split("/")[0] for s in ss]
            area = {k: sum(float(np.prod(s.shape)) for s, k2 in zip(ss, src) if k2 == k) for k in set(src)}
            # optional attribute, read with getattr (TrainingData does not declare it)
            td.sample_weights = np.array([area[k] ** 0.5 / area[k] for k in src])  # type: ignore[attr-defined]
            split["source_patch_share"] = {k: round(area[k] ** 0.5 / sum(a ** 0.5 for a in area.values()), 3)
                                           for k in sorted(area)}
        td.object_size = {  # type: ignore[attr-defined]  # optional attribute, as sample_weights
            "diameter": float(diameter), "pixel_size": None, "default": "auto"}
        out[part] = td
    return out, split
