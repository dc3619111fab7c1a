"""The model file: one ``.pt`` file that holds a model config and its weights.

Written by :meth:`CellsegModel.save <cellseg.models.CellsegModel.save>` and read by
:meth:`CellsegModel.load <cellseg.models.CellsegModel.load>` with
``torch.load(weights_only=True)`` (no pickled code is ever executed)::

    {"format": "cellseg-model", "format_version": 1,
     "config": "<the config as a JSON string>",
     "weights_dtype": "float32" | "float16",
     "state_dict": {name: tensor}}

``save(path, half=True)`` stores floating weights as float16 (half the size;
they are cast back to float32 on load). Training checkpoints use the same file
with an extra ``"training_state"`` entry, so a checkpoint is also a model file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .._files import atomic_write
from .config import FORMAT_VERSION, ModelFormatError, jsonable

__all__ = ["FILE_FORMAT", "make_payload", "payload_config", "matched_weights", "read_model_file",
           "save_model_file"]

FILE_FORMAT = "cellseg-model"


def make_payload(config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor],
                 half: bool = False) -> dict[str, Any]:
    """The content of a model file: the config as JSON and the weights on the CPU
    (floating ones as float16 when ``half``)."""
    sd = {}
    for k, v in state_dict.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        sd[k] = v.clone(memory_format=torch.contiguous_format)  # same bytes whatever the layout used
    return {
        "format": FILE_FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(jsonable(config), sort_keys=True),
        "weights_dtype": "float16" if half else "float32",
        "state_dict": sd,
    }


def payload_config(payload: Mapping[str, Any], source: str = "model") -> Any:
    """The config stored in a model file's content, parsed from JSON (not validated here)."""
    try:
        return json.loads(payload["config"])
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{source}: the stored config is not valid JSON ({exc})") from None


def matched_weights(sd: Any, own: Mapping[str, torch.Tensor], source: str = "model") -> dict[str, torch.Tensor]:
    """The stored weights ``sd`` checked against the network's own state dict ``own`` (same
    names, same shapes), floating ones cast to the network's dtypes."""
    if not isinstance(sd, Mapping):
        raise ModelFormatError(f"{source}: 'state_dict' is not a mapping")
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
    return {k: (v.to(own[k].dtype) if v.is_floating_point() else v) for k, v in sd.items()}


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
    if not isinstance(payload, dict) or payload.get("format") != FILE_FORMAT:
        raise ModelFormatError(f"{p}: not a cellseg model file (no 'format': '{FILE_FORMAT}' header)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFormatError(
            f"{p}: model file format_version {version!r} is not supported; this cellseg reads version {FORMAT_VERSION}"
        )
    for key in ("config", "state_dict"):
        if key not in payload:
            raise ModelFormatError(f"{p}: model file lacks {key!r}")
    return payload


def save_model_file(payload: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a model file's content to ``path`` (atomic)."""
    return atomic_write(Path(path), lambda tmp: torch.save(dict(payload), tmp))
