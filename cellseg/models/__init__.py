"""Networks (U-Net / Res-U-Net, 2D and 3D), heads, :class:`CellsegModel` and the
registry of bundled pretrained models.

Names are resolved lazily (PEP 562): ``import cellseg.models`` does not import
torch; the registry functions (``list_models``, ``model_info``...) never do.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "BackboneConfig": "unet",
    "UNet": "unet",
    "Heads": "heads",
    "Network": "network",
    "CellsegModel": "network",
    "ModelFormatError": "network",
    "make_config": "network",
    "load_model": "network",
    "resolve_device": "network",
    "list_models": "registry",
    "model_info": "registry",
    "model_card": "registry",
    "load_pretrained": "registry",
    "default_model_name": "registry",
    "register_model": "registry",
    "UnknownModelError": "registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module 'cellseg.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
