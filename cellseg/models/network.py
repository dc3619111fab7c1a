"""The network (backbone + heads) and :class:`CellsegModel` (config + network + representation).

Model config
------------
A model is a JSON-able dict plus weights::

    {
      "format_version": 1,
      "backbone": {"name": "unet", "ndim": 2, "depth": 3, "width": 32, ...},
      "representation": {"name": "stardist", "config": {"n_rays": 32}},
      "in_channels": 1,
      "ndim": 2,
      "axes": "YX",
      "normalization": {"pmin": 1.0, "pmax": 99.8},
      "thresholds": {"prob_thresh": 0.5, "nms_thresh": 0.4},
      "augment": false,   (optional: test-time augmentation by default, see CellsegModel.predict)
      "denoise": true,    (optional, default false: a DenoiSeg denoising head "denoised" beside
                           the representation's heads, see cellseg.train.denoiseg)
      "training": {...free-form record: data, split, schedule, metrics...}
    }

Building a network from a config is deterministic: the weights are initialised
from ``backbone["seed"]`` inside a forked torch RNG (the global RNG is untouched).

Model file
----------
One ``.pt`` file written by :meth:`CellsegModel.save` and read by
:meth:`CellsegModel.load` with ``torch.load(weights_only=True)`` (no pickled
code is ever executed)::

    {"format": "cellseg-model", "format_version": 1,
     "config": "<the config as a JSON string>",
     "weights_dtype": "float32" | "float16",
     "state_dict": {name: tensor}}

``save(path, half=True)`` stores floating weights as float16 (half the size;
they are cast back to float32 on load). Training checkpoints use the same file
with an extra ``"training_state"`` entry, so a checkpoint is also a model file.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from cellseg import representations
from cellseg.representations.base import Decoded, HeadSpec, Representation

from .heads import DENOISE_HEAD, Heads, activate, denoise_head
from .unet import BackboneConfig, build_backbone, receptive_field_extent

__all__ = [
    "FORMAT_VERSION",
    "ModelFormatError",
    "Network",
    "CellsegModel",
    "make_config",
    "validate_config",
    "load_model",
    "resolve_device",
]

FORMAT_VERSION = 1
_FILE_FORMAT = "cellseg-model"
_TOP_KEYS = {
    "format_version", "backbone", "representation", "in_channels", "ndim", "axes",
    "normalization", "thresholds", "training", "name", "description", "augment", "object_size",
    "image_stats", "denoise",
}


class ModelFormatError(ValueError):
    """A model file or config that cannot be used (wrong version, bad keys, mismatched weights)."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when available, else Apple's MPS, else CPU; ``"cpu"``,
    ``"cuda"``, ``"cuda:N"`` or ``"mps"`` otherwise. A device this machine lacks is a
    ``ValueError`` that says which devices it has (never a traceback from torch)."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if _mps_available() else "cpu")
    have = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (["mps"] if _mps_available() else [])
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps "
                         f"(this machine has: {', '.join(have)})") from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available on this machine "
                             f"(it has: {', '.join(have)}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not _mps_available():
        raise ValueError(f"device {device!r} requested but Apple's MPS is not available on this machine "
                         f"(it has: {', '.join(have)}); use --device cpu or auto")
    return dev


def make_config(
    representation: Representation | str | Mapping[str, Any],
    backbone: BackboneConfig | Mapping[str, Any] | None = None,
    in_channels: int = 1,
    normalization: Mapping[str, float] | None = None,
    thresholds: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """Assemble and validate a model config (see the module docstring)."""
    rep = _rep_from(representation)
    if isinstance(backbone, BackboneConfig):
        bb = backbone.to_dict()
    else:
        bb = BackboneConfig.from_dict(backbone).to_dict()
    ndim = bb["ndim"]
    cfg: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "backbone": bb,
        "representation": {"name": rep.name, "config": rep.config()},
        "in_channels": int(in_channels),
        "ndim": ndim,
        "axes": ("C" if in_channels > 1 else "") + ("ZYX" if ndim == 3 else "YX"),
        "normalization": dict(normalization or {"pmin": 1.0, "pmax": 99.8}),
        "thresholds": _jsonable(dataclasses.asdict(rep.params(dict(thresholds or {})))),
        "training": dict(training or {}),
    }
    if name:
        cfg["name"] = str(name)
    validate_config(cfg)
    return cfg


def _rep_from(spec) -> Representation:
    if isinstance(spec, Representation):
        return spec
    if isinstance(spec, str):
        return representations.get(spec)
    if isinstance(spec, Mapping):
        return representations.get(spec["name"], **dict(spec.get("config", {})))
    raise TypeError(f"representation must be a Representation, a name or a mapping, got {type(spec).__name__}")


def validate_config(cfg: Mapping[str, Any], source: str = "model config") -> None:
    """Raise :class:`ModelFormatError` naming ``source`` when ``cfg`` is not a usable model config."""
    if not isinstance(cfg, Mapping):
        raise ModelFormatError(f"{source}: the config must be a JSON object, got {type(cfg).__name__}")
    version = cfg.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"{source}: unsupported model format_version {version!r}; this cellseg reads version {FORMAT_VERSION}"
        )
    unknown = sorted(set(cfg) - _TOP_KEYS)
    if unknown:
        raise ModelFormatError(f"{source}: unknown config key(s) {unknown}; valid keys are {sorted(_TOP_KEYS)}")
    for key in ("backbone", "representation", "in_channels"):
        if key not in cfg:
            raise ModelFormatError(f"{source}: missing config key {key!r}")
    try:
        bb = BackboneConfig.from_dict(cfg["backbone"])
    except (ValueError, TypeError) as exc:
        raise ModelFormatError(f"{source}: backbone: {exc}") from None
    rep = cfg["representation"]
    if not isinstance(rep, Mapping) or "name" not in rep:
        raise ModelFormatError(f"{source}: 'representation' must be an object with a 'name'")
    if rep["name"] not in representations.available():
        raise ModelFormatError(
            f"{source}: unknown representation {rep['name']!r}; choose from {representations.available()}"
        )
    if not isinstance(cfg["in_channels"], int) or cfg["in_channels"] < 1:
        raise ModelFormatError(f"{source}: in_channels must be a positive integer, got {cfg['in_channels']!r}")
    if "ndim" in cfg and cfg["ndim"] != bb.ndim:
        raise ModelFormatError(f"{source}: ndim {cfg['ndim']} disagrees with backbone ndim {bb.ndim}")
    norm = cfg.get("normalization", {})
    if not isinstance(norm, Mapping) or not set(norm) <= {"pmin", "pmax"}:
        raise ModelFormatError(f"{source}: normalization must be an object with 'pmin' and 'pmax', got {norm!r}")
    if norm and not (0 <= float(norm.get("pmin", 1)) < float(norm.get("pmax", 99.8)) <= 100):
        raise ModelFormatError(f"{source}: normalization needs 0 <= pmin < pmax <= 100, got {dict(norm)}")
    if not isinstance(cfg.get("thresholds", {}), Mapping):
        raise ModelFormatError(f"{source}: thresholds must be an object")
    if not isinstance(cfg.get("augment", False), bool):
        raise ModelFormatError(f"{source}: augment must be true or false, got {cfg['augment']!r}")
    if not isinstance(cfg.get("denoise", False), bool):
        raise ModelFormatError(f"{source}: denoise must be true or false, got {cfg['denoise']!r}")


class Network(nn.Module):
    """Backbone + heads. ``forward(x) -> {head: raw}``; ``activate(raw) -> {head: activated}``.

    ``config`` is a model config (or any mapping with ``backbone`` and
    ``in_channels`` plus ``representation``); pass ``heads`` to build the
    heads from explicit :class:`HeadSpec` objects instead of the representation.
    """

    def __init__(self, config: Mapping[str, Any], heads: tuple[HeadSpec, ...] | None = None):
        super().__init__()
        bb = BackboneConfig.from_dict(config["backbone"])
        if heads is None:
            rep = _rep_from(config["representation"])
            grid = getattr(rep, "grid", None)  # StarDist's output subsampling (a tuple), if any
            if isinstance(grid, (int, tuple, list)) and any(int(g) != 1 for g in np.atleast_1d(grid)):
                raise ModelFormatError(
                    f"representation {rep!r}: subsampled outputs (grid={grid}) are not supported by the "
                    "cellseg networks; use grid=1"
                )
            if bb.ndim not in getattr(rep, "ndims", (bb.ndim,)) or getattr(rep, "ndim", bb.ndim) != bb.ndim:
                raise ModelFormatError(f"representation {rep.name!r} supports {rep.ndims}D, the backbone is {bb.ndim}D")
            heads = rep.heads()
            if config.get("denoise", False):  # DenoiSeg: one denoised channel per input channel
                heads = (*heads, denoise_head(int(config.get("in_channels", 1))))
        self.backbone_config = bb
        self.head_specs = tuple(heads)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(bb.seed))
            self.backbone = build_backbone(bb, int(config.get("in_channels", 1)))
            self.heads = Heads(bb.ndim, self.backbone.out_channels, self.head_specs)

    @property
    def ndim(self) -> int:
        return self.backbone_config.ndim

    @property
    def in_channels(self) -> int:
        return self.backbone.in_channels

    @property
    def div_by(self) -> int:
        return self.backbone.div_by

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads(self.backbone(x))

    def activate(self, raw: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return activate(raw, self.head_specs)


class CellsegModel:
    """A trained (or freshly initialised) model: config + :class:`Network` + representation.

    Attributes
    ----------
    config : dict, the model config (see :mod:`cellseg.models.network`)
    network : :class:`Network` (a torch module, on :attr:`device`)
    representation : the :class:`~cellseg.representations.Representation`
    thresholds : dict of decode parameters used by default in :meth:`decode`
    """

    def __init__(self, config: Mapping[str, Any], network: Network | None = None, device: Any = "auto",
                 source: str = "model config"):
        config = copy.deepcopy(dict(config))
        validate_config(config, source)
        config.setdefault("ndim", config["backbone"].get("ndim", 2))
        config.setdefault("normalization", {"pmin": 1.0, "pmax": 99.8})
        config.setdefault("thresholds", {})
        config.setdefault("training", {})
        self.config = config
        self.representation = _rep_from(config["representation"])
        # validate the stored thresholds once (unknown names raise)
        try:
            self.representation.params(dict(config["thresholds"]))
        except TypeError as exc:
            raise ModelFormatError(f"{source}: thresholds: {exc}") from None
        self.network = network if network is not None else Network(config)
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
        self.config["thresholds"] = _jsonable(dataclasses.asdict(params))

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
        from .inference import engine_for

        return engine_for(self, backend, precision)(x)

    def _run(self, x: np.ndarray, path: tuple[str, str]) -> dict[str, np.ndarray]:
        # the reference path calls _forward(x) as it always did (tests replace it with a stand-in)
        return self._forward(x) if tuple(path) == ("torch", "fp32") else self._forward(x, *path)

    def inference_path(self, backend: str | None = None, precision: str | None = None) -> tuple[str, str]:
        """The ``(backend, precision)`` that runs for a request on this model's device
        (``None``/``"auto"``: the default path, see :func:`cellseg.models.inference.resolve`)."""
        from .inference import check, int8_is_default, resolve

        auto = check(backend, precision) == ("auto", "auto")
        return resolve(backend, precision, self.device, int8_default=auto and int8_is_default(self))

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
        sd = {}
        for k, v in self.network.state_dict().items():
            v = v.detach().cpu()
            if half and v.is_floating_point():
                v = v.half()
            sd[k] = v.clone(memory_format=torch.contiguous_format)  # same bytes whatever the layout used
        return {
            "format": _FILE_FORMAT,
            "format_version": FORMAT_VERSION,
            "config": json.dumps(_jsonable(self.config), sort_keys=True),
            "weights_dtype": "float16" if half else "float32",
            "state_dict": sd,
        }

    def save(self, path: str | os.PathLike, half: bool = False, extra: Mapping[str, Any] | None = None) -> Path:
        """Write the model to one ``.pt`` file (atomic). ``half=True`` stores float16 weights."""
        payload = self.state(half=half)
        if extra:
            payload.update(extra)
        return _atomic_save(payload, Path(path))

    @classmethod
    def load(cls, path: str | os.PathLike, device: Any = "auto") -> "CellsegModel":
        """Read a model file written by :meth:`save` (or a training checkpoint)."""
        payload = read_model_file(path)
        return cls.from_payload(payload, device=device, source=str(path))

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], device: Any = "auto", source: str = "model") -> "CellsegModel":
        try:
            config = json.loads(payload["config"])
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"{source}: the stored config is not valid JSON ({exc})") from None
        model = cls(config, device="cpu", source=source)
        sd = payload["state_dict"]
        if not isinstance(sd, Mapping):
            raise ModelFormatError(f"{source}: 'state_dict' is not a mapping")
        own = model.network.state_dict()
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        shapes = [f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
        if missing or unexpected or shapes:
            parts = []
            if missing:
                parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[:3]}")
            if unexpected:
                parts.append(f"unexpected {len(unexpected)} tensor(s) e.g. {unexpected[:3]}")
            if shapes:
                parts.append(f"shape mismatch e.g. {shapes[:3]}")
            raise ModelFormatError(f"{source}: the weights do not match the config: " + "; ".join(parts))
        sd = {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items()}
        model.network.load_state_dict(sd, strict=True)
        return model.to(device)


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load`` a model/checkpoint file safely and check its header."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file {p} does not exist")
    if p.is_dir():
        raise ModelFormatError(f"{p} is a folder; a cellseg model is one .pt file")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for bad files
        # never relay torch's advice to load with weights_only=False: that runs code from the file
        if "weights only load failed" in str(exc).lower():
            why = ("it holds pickled Python objects, such as a whole network saved with torch.save(module), "
                   "which cellseg does not load")
        elif p.stat().st_size == 0:
            why = "the file is empty"
        else:
            first = (str(exc).strip().splitlines() or [""])[0][:120]
            why = f"not a readable PyTorch file: {type(exc).__name__}{': ' + first if first else ''}"
        raise ModelFormatError(f"{p}: not a cellseg model file ({why}); cellseg models are the .pt files that "
                               "'cellseg train' and CellsegModel.save write") from None
    if not isinstance(payload, dict) or payload.get("format") != _FILE_FORMAT:
        raise ModelFormatError(f"{p}: not a cellseg model file (no 'format': '{_FILE_FORMAT}' header)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"{p}: model file format_version {version!r} is not supported; this cellseg reads version {FORMAT_VERSION}"
        )
    for key in ("config", "state_dict"):
        if key not in payload:
            raise ModelFormatError(f"{p}: model file lacks {key!r}")
    return payload


def _atomic_save(payload: Mapping[str, Any], path: Path) -> Path:
    from .._files import atomic_write

    return atomic_write(path, lambda tmp: torch.save(dict(payload), tmp))


def _jsonable(obj):
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def load_model(name_or_path: str | os.PathLike, device: Any = "auto") -> CellsegModel:
    """A model file path, a ``.zip`` bioimage.io package that :func:`cellseg.export.export_bioimageio`
    wrote, or the name of a bundled model (see :func:`cellseg.models.list_models`).

    An argument that looks like a path (a ``PathLike``, or a string with a folder
    separator or a suffix such as ``.pt``) is a file; a bare name is a bundled
    model when one has that name, so a file or folder of that name in the current
    folder does not hide it (write ``./name`` for the file); otherwise an existing
    file of that name is loaded."""
    s = os.fspath(name_or_path)
    p = Path(s)
    if p.suffix.lower() == ".zip":  # a bioimage.io package written by cellseg export
        from cellseg.export import load_bioimageio

        return load_bioimageio(p, device=device)
    seps = {os.sep, "/"} | ({os.altsep} if os.altsep else set())
    if not isinstance(name_or_path, str) or any(c in s for c in seps) or p.suffix:
        return CellsegModel.load(p, device=device)
    from .registry import list_models, load_pretrained

    if s not in list_models() and p.exists():
        return CellsegModel.load(p, device=device)
    return load_pretrained(s, device=device)
