"""Import the peers (stardist, cellpose) for side-by-side benchmarks and parity tests.

cellpose 4 imports torchvision at module level (only its training augmentation
uses it), and PyPI's torchvision does not load beside the CPU torch wheel we pin.
cellpose is therefore installed with ``--no-deps`` (see install.sh --bench) and,
*only here*, inert placeholder modules stand in for torchvision before
``cellpose.dynamics`` is imported. Nothing of torchvision is ever called by the
functions we compare against (``labels_to_flows``, ``masks_to_flows``,
``compute_masks``).
"""
from __future__ import annotations

import importlib
import sys
import types


def _placeholder(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__["__cellseg_placeholder__"] = True

    def __getattr__(attr):  # anything looked up is an inert callable
        if attr.startswith("__"):
            raise AttributeError(attr)
        return lambda *a, **k: None

    mod.__getattr__ = __getattr__  # type: ignore[attr-defined]
    return mod


def cellpose_dynamics():
    """Return ``cellpose.dynamics`` or raise ImportError with the reason."""
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in (
            "torchvision",
            "torchvision.transforms",
            "torchvision.transforms.functional",
            "torchvision.transforms._functional_tensor",
            "torchvision.transforms.v2",
            "torchvision.ops",
        ):
            if name not in sys.modules or getattr(sys.modules[name], "__cellseg_placeholder__", False):
                sys.modules[name] = _placeholder(name)
    return importlib.import_module("cellpose.dynamics")


def stardist_modules():
    """Return (stardist.nms, stardist.geometry, stardist.matching)."""
    nms = importlib.import_module("stardist.nms")
    geometry = importlib.import_module("stardist.geometry")
    matching = importlib.import_module("stardist.matching")
    return nms, geometry, matching
