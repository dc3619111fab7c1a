"""Instance representations: each owns encode (targets) and decode (labels)."""
from __future__ import annotations

from .base import Decoded, HeadSpec, Representation, make_params

__all__ = ["Decoded", "HeadSpec", "Representation", "make_params", "get", "available"]

#: the representations :func:`get` builds by name: ``{name: (module, class)}``
REGISTRY = {
    "distance": ("cellseg.representations.distance", "DistanceMap"),
    "stardist": ("cellseg.representations.stardist", "StarDist"),
    "flows": ("cellseg.representations.flows", "Flows"),
    "offsets": ("cellseg.representations.offsets", "Offsets"),
}
#: classes that a registered name builds from its configuration (``get("stardist", ndim=3)``)
VARIANTS = {
    "stardist3d": ("cellseg.representations.stardist3d", "StarDist3D"),
}


def available() -> list[str]:
    """Names accepted by :func:`get`."""
    return sorted(REGISTRY)


def get(name: str, **config) -> Representation:
    """Build a representation by name (``distance``, ``stardist``, ``flows``, ``offsets``)."""
    import importlib

    if isinstance(name, Representation):
        return name
    try:
        mod, cls = REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown representation {name!r}; choose from {available()}") from None
    return getattr(importlib.import_module(mod), cls)(**config)
