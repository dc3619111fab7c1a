"""Training from napari layers or a folder: training pairs from an image and a Labels layer,
the training data, and :class:`TrainingJob`, which runs the training in a thread."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ._axes import COLOUR

__all__ = ["DEFAULT_REPRESENTATION", "NETWORKS", "training_pairs_from_layers", "training_data", "TrainingJob"]


#: the representation the Train widget starts with: flows, the representation of the best bundled
#: models (`nuclei`, `cells`, `nuclei-flows`)
DEFAULT_REPRESENTATION = "flows"

#: backbone presets offered by the train widget (None: the library default)
NETWORKS = {
    "small (U-Net depth 2, width 16)": {"depth": 2, "width": 16},
    "default (U-Net depth 3, width 32)": None,
    "tiny (U-Net depth 1, width 8; for tests)": {"depth": 1, "width": 8},
}


def training_pairs_from_layers(image: np.ndarray, labels: np.ndarray, axes: str,
                               channel: int | str | None = None,
                               volume: bool = False) -> tuple[list, list[str], int]:
    """``(pairs, names, in_channels)`` for training from an image layer with ``axes``
    and a Labels layer: for 2D training T and Z planes become separate samples (planes
    without any label are skipped: not annotated); with ``volume`` (3D training) the Z axis
    stays: each T frame is one ZYX volume. With a C axis, ``channel`` says what the model
    gets: None every channel (``in_channels`` of them), an index that one channel,
    :data:`COLOUR` 3 colour channels (RGB kept, alpha dropped; a grey image repeated:
    :func:`cellseg.train.general.to_rgb3`)."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    axes = axes.upper()
    if len(axes) != image.ndim:
        raise ValueError(f"axes {axes!r} do not fit the image of shape {image.shape}")
    shape0 = image.shape
    if "C" in axes and channel is not None and channel != COLOUR:
        c = axes.index("C")
        if not 0 <= int(channel) < image.shape[c]:
            raise ValueError(f"channel {channel} of an image with {image.shape[c]} channels (axes {axes!r})")
        image = np.take(image, int(channel), axis=c)
        axes = axes.replace("C", "")
    if volume and channel == COLOUR:
        raise ValueError("3D models take grey or multi-channel volumes, not RGB colour")
    if "C" in axes:  # channels first in each sample: (C, Y, X), or (C, Z, Y, X) for volumes
        c = axes.index("C")
        nsp = 3 if volume and "Z" in axes else 2
        image = np.moveaxis(image, c, -(nsp + 1))
        axes = axes.replace("C", "")
        axes = axes[:-nsp] + "C" + axes[-nsp:]
    spatial_axes = "".join(a for a in axes if a != "C")
    if labels.shape != tuple(image.shape[i] for i, a in enumerate(axes) if a != "C"):
        raise ValueError(f"labels of shape {labels.shape} do not match the image of shape {shape0} "
                         f"(axes {axes!r})")
    if volume and "Z" not in spatial_axes:
        raise ValueError(f"a 3D model trains on volumes: the image has no Z axis (axes {axes!r})")
    n_frame = len(spatial_axes) - (3 if volume else 2)
    pairs, names = [], []
    for idx in np.ndindex(*labels.shape[:n_frame]):
        lab = labels[idx]
        if n_frame and not lab.any():
            continue
        pairs.append((image[idx], lab))
        names.append("layer[" + ",".join(f"{a}={i}" for a, i in zip(spatial_axes, idx)) + "]" if n_frame
                     else "layer")
    if not pairs:
        raise ValueError("the labels layer has no labelled objects")
    if channel == COLOUR:
        from cellseg.train.general import to_rgb3

        pairs = [(to_rgb3(img, "CYX" if img.ndim == 3 else "YX", nm), lab) for (img, lab), nm in zip(pairs, names)]
    in_channels = pairs[0][0].shape[0] if pairs[0][0].ndim == (4 if volume else 3) else 1
    return pairs, names, in_channels


def training_data(pairs: Sequence, names: Sequence[str] | None = None, ndim: int = 2, in_channels: int = 1,
                  normalization: dict | None = None, source: str = "napari layers"):
    """:class:`cellseg.train.TrainingData` from raw ``(image, labels)`` pairs (images
    ``(Y, X)`` or ``(C, Y, X)``) for a model taking ``in_channels`` channels
    (:meth:`TrainingData.from_arrays`).

    For a 3-channel model a grey image is repeated and RGBA loses its alpha
    (:func:`cellseg.train.general.to_rgb3`). A constant channel of a colour image (no
    red, say) reads as background (0) and the others are normalized, as the Segmenter
    reads it (a constant channel cannot be normalized on its own)."""
    from cellseg.train import TrainingData, TrainingSample

    pairs = list(pairs)
    names = list(names) if names is not None else [f"{source}[{i}]" for i in range(len(pairs))]
    if in_channels == 3 and ndim == 2:
        from cellseg.train.general import to_rgb3

        def rgb3(img, name):
            img = np.asarray(img)
            if img.ndim == 2 or (img.ndim == 3 and img.shape[0] in (1, 4)):
                return to_rgb3(img, "YX" if img.ndim == 2 else "CYX", name)
            return img  # 3 channels already, or a mismatch TrainingData names

        pairs = [(rgb3(img, nm), lab) for (img, lab), nm in zip(pairs, names)]
    norm = dict(normalization or {"pmin": 1.0, "pmax": 99.8})
    plain, samples = [], {}
    for i, ((img, lab), nm) in enumerate(zip(pairs, names)):
        x = np.asarray(img)
        if in_channels > 1 and x.ndim == ndim + 1 and x.shape[0] == in_channels:
            flat = x.reshape(x.shape[0], -1)
            const = np.all(flat == flat[:, :1], axis=1)
            if const.any() and not const.all():
                one = TrainingData.from_arrays([(x[~const], lab)], [nm], ndim=ndim, in_channels=int((~const).sum()),
                                               normalization=norm, source=source).samples[0]
                full = np.zeros((x.shape[0],) + one.image.shape[1:], np.float32)
                full[~const] = one.image
                samples[i] = TrainingSample(nm, full, one.labels)
                continue
        plain.append(i)
    if plain:
        done = TrainingData.from_arrays([pairs[i] for i in plain], [names[i] for i in plain], ndim=ndim,
                                        in_channels=in_channels, normalization=norm, source=source)
        samples.update(zip(plain, done.samples))
    return TrainingData([samples[i] for i in range(len(pairs))], ndim, in_channels, norm, source)


class TrainingJob:
    """Train (or fine-tune) a model in a background thread and report progress.

    :meth:`run` is a generator for a napari thread worker: it yields progress dicts
    (``event``, ``fraction``, ``message`` and the training figures: ``loss``,
    ``val_loss``, ``val_ap50``...) and returns the path of the saved model. Stop
    with :meth:`stop` (the run stops after the current step; nothing is saved).

    ``data``: a list of raw ``(image, labels)`` pairs (see
    :func:`training_pairs_from_layers`) or a folder (``images/`` + ``masks/`` or the
    CTC layout; 2D or 3D as its label images are, with the anisotropy of the voxel size
    its files record).

    ``ndim``: 3 trains a 3D model on ``(Z, Y, X)`` volumes (pairs made with
    ``volume=True``) with ``anisotropy`` (Z step over the Y/X pixel size); a fine-tuned
    model keeps its own.
    """

    def __init__(self, data, out_path: str | os.PathLike, representation: str = DEFAULT_REPRESENTATION,
                 start: str | None = None, epochs: int = 10, steps_per_epoch: int = 20, patch_size: int = 128,
                 batch_size: int = 4, network: dict | None = None, names: Sequence[str] | None = None,
                 in_channels: int = 1, val_fraction: float = 0.2, seed: int = 0, denoise: bool = False,
                 unlabeled: str | os.PathLike | None = None, ndim: int = 2, anisotropy: float = 1.0):
        self.data = data
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim!r}")
        if not (anisotropy > 0 and np.isfinite(anisotropy)):
            raise ValueError(f"the Z step (anisotropy) must be a positive number, got {anisotropy!r}")
        self.ndim, self.anisotropy = int(ndim), float(anisotropy)
        self.out_path = Path(out_path)
        if self.out_path.suffix != ".pt":
            raise ValueError(f"save the model as a .pt file, got {self.out_path.name}")
        self.representation = representation
        self.start = start
        self.epochs, self.steps_per_epoch = int(epochs), int(steps_per_epoch)
        self.patch_size, self.batch_size = int(patch_size), int(batch_size)
        self.network = network
        self.names = names
        self.in_channels = int(in_channels)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        # DenoiSeg: a denoising head, trained on every image and on the unlabelled folder's images
        self.denoise = bool(denoise)
        self.unlabeled = Path(unlabeled) if unlabeled else None
        if self.unlabeled is not None and not self.denoise:
            raise ValueError("unlabelled images train the denoising head only: tick 'denoise'")
        if self.unlabeled is not None and not self.unlabeled.is_dir():
            raise ValueError(f"{self.unlabeled} is not a folder")
        import threading

        self._stop = threading.Event()
        self.model = None
        self.history: list[dict] = []

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def _fit(self, emit):
        from cellseg import representations
        from cellseg.models import BackboneConfig, load_model
        from cellseg.train import TrainConfig, fit
        from cellseg.train.dataset import data_anisotropy, load_training_data

        model = load_model(self.start) if self.start else None  # a fresh copy: fit trains in place
        ndim = int(model.config.get("ndim", 2)) if model is not None else self.ndim
        anisotropy = self.anisotropy
        norm = model.config.get("normalization") if model is not None else None
        depth = (model.network.backbone_config if model is not None else BackboneConfig.from_dict(self.network)).depth
        div = 2 ** int(depth)
        if isinstance(self.data, (str, os.PathLike)):
            # a folder: 2D or 3D as its label images are, the Z step from its files' voxel size
            data = load_training_data(self.data, ndim=ndim if model is not None else None, normalization=norm)
            if model is None:
                ndim = data.ndim
                anisotropy = data_anisotropy(data)[0] or 1.0
        else:
            in_channels = int(model.config.get("in_channels", 1)) if model is not None else self.in_channels
            data = training_data(self.data, names=self.names, ndim=ndim, in_channels=in_channels,
                                 normalization=norm, source="napari layers")
        n_images = len(data)
        # the patch: the chosen size in Y/X, that size over the Z step in Z (3D)
        size = [self.patch_size] * ndim
        if ndim == 3:
            size[0] = max(16, int(round(self.patch_size / anisotropy)))
        if not isinstance(self.data, (str, os.PathLike)):  # layers: within the smallest sample
            size = np.minimum(size, np.min([s.labels.shape for s in data.samples], axis=0))
        patch = tuple(max(div, int(p) // div * div) for p in size)
        patch = patch[0] if len(set(patch)) == 1 else patch
        val_fraction = self.val_fraction if n_images >= 3 else None
        cfg = TrainConfig(epochs=self.epochs, steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size,
                          patch_size=patch, seed=self.seed, verbose=False, denoise=self.denoise)
        rep, backbone = self.representation, self.network
        if model is None and ndim == 3:
            rep = representations.get(self.representation, ndim=3, anisotropy=anisotropy)
            backbone = {**dict(self.network or {}), "ndim": 3}
        return fit(rep, data, config=cfg, model=model, backbone=backbone,
                   val_fraction=val_fraction, callback=emit, name=self.out_path.stem, unlabeled=self.unlabeled)

    def run(self) -> Iterator[dict]:
        import queue
        import threading

        q: queue.Queue = queue.Queue()
        total = max(1, self.epochs * self.steps_per_epoch)
        result: dict = {}

        def emit(ev):
            q.put(dict(ev))
            if ev.get("event") in ("step", "epoch"):  # returning False stops fit after a checkpoint
                return not self._stop.is_set()
            return None

        def target():
            try:
                result["model"] = self._fit(emit)
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                result["error"] = exc
            finally:
                q.put(None)

        th = threading.Thread(target=target, name="cellseg-train", daemon=True)
        th.start()
        completed = False
        try:
            while True:
                ev = q.get()
                if ev is None:
                    completed = True
                    break
                yield self._describe(ev, total)
        finally:
            if not completed:  # the consumer gave up: stop the run after its current step
                self._stop.set()
            th.join()
        if "error" in result:
            raise result["error"]
        model = result["model"]
        if self._stop.is_set() or model.config.get("training", {}).get("stopped_early"):
            return None
        self.model = model
        model.save(self.out_path)
        return str(self.out_path)

    def _describe(self, ev: dict, total: int) -> dict:
        kind = ev.get("event")
        if kind == "step":
            done = (ev["epoch"] - 1) * ev["steps_per_epoch"] + ev["step"]
            ev["fraction"] = min(1.0, done / total)
            ev["message"] = (f"epoch {ev['epoch']}/{self.epochs} step {ev['step']}/{ev['steps_per_epoch']}"
                             f"  loss {ev['loss']:.4f}")
        elif kind == "epoch":
            self.history.append(ev)
            ev["fraction"] = min(1.0, ev["epoch"] * self.steps_per_epoch / total)
            msg = f"epoch {ev['epoch']}/{self.epochs}  loss {ev['loss']:.4f}"
            if "val_ap50" in ev:
                msg += f"  val loss {ev['val_loss']:.4f}  AP50 {ev['val_ap50']:.3f}  SEG {ev['val_seg']:.3f}"
            ev["summary"] = msg  # the history line: no "finishing" once finished
            if ev["epoch"] == self.epochs:
                msg += "  (finishing…)"
            ev["message"] = msg
        elif kind == "done":
            ev["fraction"] = 1.0
            ev["message"] = "stopped" if ev.get("stopped") else "finished"
        else:
            ev["fraction"] = None
            ev["message"] = str(kind)
        return ev
