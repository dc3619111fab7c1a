"""Networks (U-Net / Res-U-Net, 2D and 3D), heads, :class:`CellsegModel` and the
registry of bundled pretrained models.

Names are resolved lazily (PEP 562): ``import cellseg.models`` does not import
torch; the registry functions (``list_models``, ``model_info``...) never do.
"""
from __future__ import annotations

from cellseg._lazy import lazy_exports

_EXPORTS = {
    "BackboneConfig": "unet",
    "UNet": "unet",
    "Heads": "heads",
    "Network": "module",
    "CellsegModel": "model",
    "ModelFormatError": "config",
    "make_config": "config",
    "load_model": "loading",
    "resolve_device": "device",
    "list_models": "registry",
    "model_info": "registry",
    "model_card": "registry",
    "load_pretrained": "registry",
    "default_model_name": "registry",
    "register_model": "registry",
    "UnknownModelError": "registry",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
