"""A model: config + network + representation, and what it does with an image
(prediction with optional test-time augmentation, decoding) and with its file."""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cellseg.representations.base import Decoded

from . import inference
from .config import ModelFormatError, jsonable, representation_from, validate_config
from .device import resolve_device
from .heads import DENOISE_HEAD
from .modelfile import make_payload, matched_weights, payload_config, read_model_file, save_model_file
from .module import Network
from .unet import receptive_field_extent

__all__ = ["CellsegModel"]


class CellsegModel:
    """A trained (or freshly initialised) model: config + :class:`Network` + representation.

    Attributes
    ----------
    config : dict, the model config (see :mod:`cellseg.models.config`)
    network : :class:`Network` (a torch module, on :attr:`device`)
    representation : the :class:`~cellseg.representations.Representation`
    thresholds : dict of decode parameters used by default in :meth:`decode`
    """

    def __init__(self, config: Mapping[str, Any], network: Network | None = None, device: Any = "auto",
                 source: str = "model config"):
        cfg: dict[str, Any] = copy.deepcopy(dict(config))
        validate_config(cfg, source)
        cfg.setdefault("ndim", cfg["backbone"].get("ndim", 2))
        cfg.setdefault("normalization", {"pmin": 1.0, "pmax": 99.8})
        cfg.setdefault("thresholds", {})
        cfg.setdefault("training", {})
        self.config: dict[str, Any] = cfg
        self.representation = representation_from(cfg["representation"])
        # validate the stored thresholds once (unknown names raise)
        try:
            self.representation.params(dict(cfg["thresholds"]))
        except TypeError as exc:
            raise ModelFormatError(f"{source}: thresholds: {exc}") from None
        self.network = network if network is not None else Network(cfg)
        self.device = resolve_device(device)
        self.network.to(self.device)

    # -- properties -----------------------------------------------------------------
    @property
    def name(self) -> str | None:
        return self.config.get("name")

    @property
    def ndim(self) -> int:
        return int(self.config["ndim"])

    @property
    def in_channels(self) -> int:
        return int(self.config["in_channels"])

    @property
    def denoises(self) -> bool:
        """True when the model has a denoising head (``config["denoise"]``); its output is
        ``predict(image)["denoised"]``, normalized intensities like the input."""
        return bool(self.config.get("denoise", False))

    @property
    def thresholds(self) -> dict[str, Any]:
        return dict(self.config["thresholds"])

    @thresholds.setter
    def thresholds(self, value: Mapping[str, Any]) -> None:
        params = self.representation.params(dict(value))
        self.config["thresholds"] = jsonable(dataclasses.asdict(params))

    @property
    def normalization(self) -> tuple[float, float]:
        n = self.config["normalization"]
        return float(n.get("pmin", 1.0)), float(n.get("pmax", 99.8))

    @property
    def div_by(self) -> int:
        """Spatial sizes fed to the network must be multiples of this (``2**depth``)."""
        return self.network.div_by

    @property
    def receptive_field(self) -> int:
        """Size (pixels, odd) of a window centred on any output pixel that holds every input
        pixel the output depends on; tiles need an overlap of ``receptive_field // 2`` per side
        to reproduce the untiled output exactly."""
        return 2 * receptive_field_extent(self.network.backbone_config) + 1

    def to(self, device) -> "CellsegModel":
        self.device = resolve_device(device)
        self.network.to(self.device)
        return self

    def __repr__(self) -> str:
        bb = self.network.backbone_config
        return (f"CellsegModel(name={self.name!r}, representation={self.representation!r}, "
                f"backbone={bb.name}(ndim={bb.ndim}, depth={bb.depth}, width={bb.width}), device={self.device})")

    # -- inference ------------------------------------------------------------------
    def _as_input(self, image: np.ndarray) -> np.ndarray:
        x = np.asarray(image)
        if not (np.issubdtype(x.dtype, np.floating) or x.dtype == bool):
            raise TypeError(
                f"predict expects an already normalized float image, got dtype {x.dtype}; "
                "normalize it first (cellseg.preprocess.normalize_percentile)"
            )
        nd = self.ndim
        if x.ndim == nd:
            x = x[None]
        if x.ndim != nd + 1:
            want = "(Y, X) or (C, Y, X)" if nd == 2 else "(Z, Y, X) or (C, Z, Y, X)"
            raise ValueError(f"a {nd}D model expects an image of shape {want}, got {x.shape}")
        if x.shape[0] != self.in_channels:
            raise ValueError(f"the model takes {self.in_channels} channel(s), the image has {x.shape[0]} "
                             f"(shape {x.shape})")
        if min(x.shape[1:]) < 1:
            raise ValueError(f"empty image of shape {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("the image contains NaN or infinite values")
        return np.ascontiguousarray(x, dtype=np.float32)

    @property
    def augment(self) -> bool:
        """Default of :meth:`predict`'s ``augment`` (``config["augment"]``, set by threshold tuning
        when test-time augmentation scored better on the validation data)."""
        return bool(self.config.get("augment", False))

    def augmentations(self) -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
        """The transforms averaged by test-time augmentation, as ``(perm, flips)`` (see
        :meth:`~cellseg.representations.base.Representation.channel_map`): the 8 symmetries
        of the square in the Y/X plane (identity first; rows and columns reversed and
        swapped); 3D models keep Z as it is."""
        nd = self.ndim
        out = []
        for swap in (False, True):
            for fy in (False, True):
                for fx in (False, True):
                    perm = tuple(range(nd - 2)) + ((nd - 1, nd - 2) if swap else (nd - 2, nd - 1))
                    out.append((perm, (False,) * (nd - 2) + (fy, fx)))
        return out

    def _forward(self, x: np.ndarray, backend: str = "torch", precision: str = "fp32") -> dict[str, np.ndarray]:
        """Activated outputs (numpy float32, ``(C, *spatial)``) of one padded input ``(C, *spatial)``,
        run by the engine of a resolved ``backend``/``precision`` (:mod:`cellseg.models.inference`)."""
        return inference.engine_for(self, backend, precision)(x)

    def _run(self, x: np.ndarray, path: tuple[str, str]) -> dict[str, np.ndarray]:
        # the reference path calls _forward(x) as it always did (tests replace it with a stand-in)
        return self._forward(x) if tuple(path) == ("torch", "fp32") else self._forward(x, *path)

    def inference_path(self, backend: str | None = None, precision: str | None = None) -> tuple[str, str]:
        """The ``(backend, precision)`` that runs for a request on this model's device
        (``None``/``"auto"``: the default path, see :func:`cellseg.models.inference.resolve`)."""
        auto = inference.check(backend, precision) == ("auto", "auto")
        return inference.resolve(backend, precision, self.device, int8_default=auto and inference.int8_is_default(self))

    def predict(self, image: np.ndarray, augment: bool | None = None, backend: str = "torch",
                precision: str = "fp32") -> dict[str, np.ndarray]:
        """Activated head outputs ``{head: float32 (C, *spatial)}`` for one normalized image.

        ``image`` is ``(Y, X)``/``(C, Y, X)`` for 2D models, ``(Z, Y, X)``/``(C, Z, Y, X)`` for 3D.
        It is padded at the end of each axis (reflection) to a multiple of :attr:`div_by`
        and the outputs are cropped back.

        ``augment`` (default :attr:`augment`): test-time augmentation, the mean of the
        outputs for the 8 transforms of :meth:`augmentations`, each mapped back to the
        image's frame (vector components and StarDist rays follow the axes); 8 network
        runs instead of one.

        ``backend``/``precision``: what runs the network (:mod:`cellseg.models.inference`):
        eager torch fp32 by default here (the reference, what training validates with);
        ``"auto"`` picks the device's default path, as :class:`~cellseg.Segmenter` does.
        """
        path = self.inference_path(backend, precision)
        x = self._as_input(image)
        spatial = x.shape[1:]
        d = self.div_by
        pad = [(0, 0)] + [(0, (-s) % d) for s in spatial]
        if any(p[1] for p in pad):
            x = np.pad(x, pad, mode="reflect" if min(spatial) > 1 else "edge")
        crop = (slice(None),) + tuple(slice(0, s) for s in spatial)
        if not (self.augment if augment is None else augment):
            return {k: np.ascontiguousarray(v[crop]) for k, v in self._run(x, path).items()}
        return {k: np.ascontiguousarray(v[crop])
                for k, v in self._predict_augmented(x, self.augmentations(), path).items()}

    def _predict_augmented(self, x: np.ndarray, transforms, path=("torch", "fp32")) -> dict[str, np.ndarray]:
        rep = self.representation
        acc: dict[str, np.ndarray] = {}
        for perm, flips in transforms:
            axes = (0,) + tuple(1 + p for p in perm)
            flipped = tuple(1 + a for a, f in enumerate(flips) if f)
            xt = np.transpose(x, axes)
            if flipped:
                xt = np.flip(xt, flipped)
            inv = (0,) + tuple(1 + int(i) for i in np.argsort(perm))
            for head, o in self._run(xt, path).items():
                if flipped:
                    o = np.flip(o, flipped)
                o = np.transpose(o, inv)
                if head == DENOISE_HEAD:  # intensities: the channels stay as they are
                    src, sign = np.arange(o.shape[0]), np.ones(o.shape[0], np.float32)
                else:
                    src, sign = rep.channel_map(head, perm, flips)
                o = o[src] * sign.reshape((-1,) + (1,) * (o.ndim - 1))
                if head in acc:
                    acc[head] += o
                else:
                    acc[head] = o.astype(np.float32, copy=True)
        n = np.float32(len(transforms))
        return {k: v / n for k, v in acc.items()}

    def decode(self, outputs: Mapping[str, np.ndarray], params: Any = None, **overrides) -> Decoded:
        """Decode head outputs with the tuned thresholds as defaults, updated by ``params``/``overrides``."""
        base = dict(self.config["thresholds"])
        if params is not None:
            base.update(params if isinstance(params, Mapping) else dataclasses.asdict(params))
        return self.representation.decode(outputs, self.representation.params(base, **overrides))

    def segment(self, image: np.ndarray, augment: bool | None = None, **overrides) -> Decoded:
        """``decode(predict(image, augment))`` for an already normalized image (no tiling)."""
        return self.decode(self.predict(image, augment=augment), **overrides)

    # -- persistence ----------------------------------------------------------------
    def state(self, half: bool = False) -> dict[str, Any]:
        """The content of the model file (see :mod:`cellseg.models.modelfile`)."""
        return make_payload(self.config, self.network.state_dict(), half=half)

    def save(self, path: str | os.PathLike, half: bool = False, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the model to one ``.pt`` file (atomic). ``half=True`` stores float16 weights."""
        payload = self.state(half=half)
        if extra:
            payload.update(extra)
        return save_model_file(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, device: Any = "auto") -> "CellsegModel":
        """Read a model file written by :meth:`save` (or a training checkpoint)."""
        payload = read_model_file(path)
        return cls.from_payload(payload, device=device, source=str(path))

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], device: Any = "auto", source: str = "model") -> "CellsegModel":
        """The model of a model file's content (:func:`~cellseg.models.modelfile.read_model_file`)."""
        model = cls(payload_config(payload, source), device="cpu", source=source)
        sd = matched_weights(payload["state_dict"], model.network.state_dict(), source)
        model.network.load_state_dict(sd, strict=True)
        return model.to(device)
