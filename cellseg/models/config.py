"""The model config: a JSON-able dict that fixes the network and how its outputs are decoded.

::

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
      "training": {...free-form record: data, split, schedule, metrics...},
      "objects": "nuclei",  (optional: what the model segments, "nuclei" or "cells"; a
                             nuclei model given an image of several named channels takes
                             the one named for a nuclear stain, see cellseg.segmenter)
    }

Building a network from a config is deterministic: the weights are initialised
from ``backbone["seed"]`` inside a forked torch RNG (the global RNG is untouched).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from cellseg import representations
from cellseg.representations.base import Representation

from .unet import BackboneConfig

__all__ = ["FORMAT_VERSION", "ModelFormatError", "make_config", "validate_config", "representation_from", "jsonable"]

FORMAT_VERSION = 1
_TOP_KEYS = {
    "format_version", "backbone", "representation", "in_channels", "ndim", "axes",
    "normalization", "thresholds", "training", "name", "description", "augment", "object_size",
    "image_stats", "denoise", "objects",
}


class ModelFormatError(ValueError):
    """A model file or config that cannot be used (wrong version, bad keys, mismatched weights)."""


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
    rep = representation_from(representation)
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
        "thresholds": jsonable(dataclasses.asdict(rep.params(dict(thresholds or {})))),
        "training": dict(training or {}),
    }
    if name:
        cfg["name"] = str(name)
    validate_config(cfg)
    return cfg


def representation_from(spec: Representation | str | Mapping[str, Any]) -> Representation:
    """The representation of a config's ``"representation"`` entry (``{"name", "config"}``),
    of a name, or ``spec`` itself when it is one."""
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


def jsonable(obj: Any) -> Any:
    """``obj`` with mapping keys as strings, tuples as lists, numpy scalars as Python
    numbers and non-finite floats as None (what ``json.dumps`` writes as standard JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
